//! The dashboard's tabs. Each owns its state, handles its own keys (as [`Action`]s) and
//! worker events, and draws itself; [`Shared`] is what they all read: the settings of
//! the next run, the worker's state and the log.
pub(crate) mod classify;
pub(crate) mod generate;
pub(crate) mod inspect;
pub(crate) mod runs;
pub(crate) mod train;

use std::collections::VecDeque;

use ratatui::layout::Rect;
use ratatui::Frame;
use strum::{EnumCount, IntoEnumIterator};

use super::input::TextInput;
use super::keys::{Action, Scope};
use crate::config::Settings;
use crate::protocol::{Command, Event, WorkerState};

const LOG_LINES: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter, strum::EnumCount, strum::FromRepr)]
pub enum Tab {
    Train,
    Generate,
    Classify,
    Inspect,
    Runs,
}

impl Tab {
    pub(crate) fn all() -> impl Iterator<Item = Tab> {
        Tab::iter()
    }

    pub(crate) fn title(self) -> &'static str {
        match self {
            Tab::Train => "1 Train",
            Tab::Generate => "2 Generate",
            Tab::Classify => "3 Classify",
            Tab::Inspect => "4 Inspect",
            Tab::Runs => "5 Runs",
        }
    }

    pub(crate) fn next(self) -> Tab {
        Tab::from_repr((self as usize + 1) % Tab::COUNT).unwrap_or(Tab::Train)
    }

    pub(crate) fn prev(self) -> Tab {
        Tab::from_repr((self as usize + Tab::COUNT - 1) % Tab::COUNT).unwrap_or(Tab::Train)
    }

    /// The key scopes the tab reads, in help-screen order.
    pub(crate) fn scopes(self) -> &'static [Scope] {
        match self {
            Tab::Train => &[Scope::Train, Scope::Watch, Scope::PathInput],
            Tab::Generate => &[Scope::GeneratePrompt, Scope::GenerateGrid],
            Tab::Classify => &[Scope::Classify, Scope::SentenceInput, Scope::PathInput],
            Tab::Inspect => &[Scope::Inspect, Scope::InspectInput, Scope::CorruptedInput],
            Tab::Runs => &[Scope::Runs, Scope::RunsFilter],
        }
    }
}

/// What every tab reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Shared {
    /// The settings of the next run (the Train tab changes corpus and preset).
    pub settings: Settings,
    pub state: WorkerState,
    pub log: VecDeque<String>,
    /// The Train tab follows a stream (`gptdash watch`): runs train elsewhere, and the
    /// model to look at comes from the checkpoints the stream names (Ctrl-O).
    pub watching: bool,
}

impl Shared {
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            settings,
            state: WorkerState::Idle,
            log: VecDeque::new(),
            watching: false,
        }
    }

    /// How to get a model to look at, for the tabs that need one.
    pub(crate) fn how_to_get_a_model(&self) -> &'static str {
        if self.watching {
            "Ctrl-O loads the watched run's latest checkpoint (o on tab 1: another)"
        } else {
            "train one (space on tab 1) or open a checkpoint (o on tab 1)"
        }
    }

    /// A failed request's message as the dashboard shows it: the worker does not know the
    /// dashboard is watching a stream, so its "no model yet" gets the watch's way to one.
    pub(crate) fn failure(&self, error: &str, no_model: bool) -> String {
        if self.watching && no_model {
            format!("no model yet: {}", self.how_to_get_a_model())
        } else {
            error.to_string()
        }
    }

    pub(crate) fn log(&mut self, line: impl Into<String>) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(line.into());
    }
}

/// A tab's behaviour.
pub(crate) trait Page {
    /// Where its keys are read now (a text field, or the tab's commands).
    fn scope(&self) -> Scope;
    /// A key's action; returns the commands for the worker.
    fn on_action(&mut self, action: Action, shared: &mut Shared) -> Vec<Command>;
    /// The text field the keys type into now, if one is open (in a text scope): the app
    /// hands it the typed characters and the editing keys.
    fn field(&mut self) -> Option<&mut TextInput>;
    /// A worker event; `focused` when the tab is the one shown. Returns the commands it
    /// calls for (a tab that follows a run asks the worker for fresh data).
    fn on_event(&mut self, event: &Event, shared: &mut Shared, focused: bool) -> Vec<Command>;
    /// The tab is shown (switched to); returns the commands for the worker.
    fn on_focus(&mut self, _shared: &Shared) -> Vec<Command> {
        Vec::new()
    }
    fn draw(&self, frame: &mut Frame, area: Rect, shared: &Shared);
}
