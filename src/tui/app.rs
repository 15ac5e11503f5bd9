//! Dashboard state and the one place it changes: [`App::update`]. A key becomes an
//! [`Action`] through the bindings in [`keys`]; the app handles the few that are its own
//! (quit, help, tabs) and hands the rest, and every worker event, to the tabs, which own
//! their behaviour. The worker is reached only through the [`Command`]s `update` returns.
use crossterm::event::{KeyEvent, KeyEventKind, KeyModifiers};

use super::keys::{self, Action, Scope};
use super::tabs::classify::ClassifyTab;
use super::tabs::generate::GenerateTab;
use super::tabs::inspect::InspectTab;
use super::tabs::runs::RunsTab;
use super::tabs::train::TrainTab;
use super::tabs::{Page, Shared, Tab};
use crate::config::Settings;
use crate::protocol::{Command, Event};
use crate::watch::{Source, StreamMsg};

/// Everything that can change the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Key(KeyEvent),
    Worker(Event),
    /// What the watched stream said (`gptdash watch`).
    Stream(StreamMsg),
    /// What the runs reader found (the Runs tab).
    Runs(crate::runs::RunsMsg),
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub shared: Shared,
    pub tab: Tab,
    pub show_help: bool,
    pub quit: bool,
    /// `q` was pressed while a run is in progress: a second `q` stops it and quits.
    pub confirm_quit: bool,
    pub train: TrainTab,
    pub generate: GenerateTab,
    pub classify: ClassifyTab,
    pub inspect: InspectTab,
    pub runs: RunsTab,
}

impl App {
    pub fn new(settings: Settings) -> Self {
        Self {
            tab: Tab::Train,
            show_help: false,
            quit: false,
            confirm_quit: false,
            train: TrainTab::new(settings.ui.log_scale, settings.ui.smoothing),
            generate: GenerateTab::new(&settings),
            classify: ClassifyTab::default(),
            inspect: InspectTab::new(settings.ui.inspect_every),
            runs: RunsTab::new(),
            shared: Shared::new(settings),
        }
    }

    /// The dashboard of `gptdash watch`: the Train tab follows `source`'s events
    /// instead of the worker's runs; the worker still loads checkpoints for the other tabs.
    pub fn watching(settings: Settings, source: &Source) -> Self {
        let mut app = Self::new(settings);
        app.train.watch = Some(super::tabs::train::watching::Watching::new(source));
        app.shared.watching = true;
        app.log(format!(
            "watching {}: the Train tab shows the run's events; Ctrl-O loads the latest checkpoint the stream names",
            source.name()
        ));
        app
    }

    pub(crate) fn log(&mut self, line: impl Into<String>) {
        self.shared.log(line);
    }

    /// The key scopes the help screen lists for the tab shown.
    pub(crate) fn help_scopes(&self) -> Vec<Scope> {
        let watching = self.train.watch.is_some();
        self.tab
            .scopes()
            .iter()
            .copied()
            .filter(|s| match s {
                Scope::Train => !watching,
                Scope::Watch => watching,
                _ => true,
            })
            .collect()
    }

    /// The tab shown.
    pub(crate) fn page(&self) -> &dyn Page {
        match self.tab {
            Tab::Train => &self.train,
            Tab::Generate => &self.generate,
            Tab::Classify => &self.classify,
            Tab::Inspect => &self.inspect,
            Tab::Runs => &self.runs,
        }
    }

    fn page_mut(&mut self) -> (&mut dyn Page, &mut Shared) {
        let page: &mut dyn Page = match self.tab {
            Tab::Train => &mut self.train,
            Tab::Generate => &mut self.generate,
            Tab::Classify => &mut self.classify,
            Tab::Inspect => &mut self.inspect,
            Tab::Runs => &mut self.runs,
        };
        (page, &mut self.shared)
    }

    /// Whether keys go to a text field (then only Ctrl-C, Tab and the field's keys act).
    #[cfg(test)]
    pub(crate) fn typing(&self) -> bool {
        self.page().scope().is_text()
    }

    /// Whether a run is in progress (training or fine-tuning, running or paused).
    pub(crate) fn run_in_progress(&self) -> bool {
        use crate::protocol::WorkerState;
        matches!(
            self.shared.state,
            WorkerState::Training | WorkerState::Paused | WorkerState::FineTuning
        )
    }

    /// Quits, first stopping a run in progress so it is kept: a training run saves a
    /// resumable checkpoint, fine-tuning keeps and saves its best epoch.
    pub(crate) fn stop_and_quit(&mut self) -> Vec<Command> {
        self.quit = true;
        if self.run_in_progress() {
            vec![Command::Stop, Command::Shutdown]
        } else {
            vec![Command::Shutdown]
        }
    }

    /// Applies a message; returns the commands for the worker.
    pub fn update(&mut self, msg: Msg) -> Vec<Command> {
        match msg {
            Msg::Worker(event) => self.on_event(event),
            // The Train tab reads the stream; a fine-tuning run's events go on to the
            // Classify tab.
            Msg::Stream(msg) => match self.train.on_stream(msg, &mut self.shared) {
                Some(event) => {
                    let focused = self.tab == Tab::Classify;
                    self.classify.on_event(&event, &mut self.shared, focused)
                }
                None => Vec::new(),
            },
            Msg::Runs(msg) => {
                self.runs.on_runs(msg);
                Vec::new()
            }
            Msg::Key(key) if key.kind == KeyEventKind::Press => self.on_key(key),
            Msg::Key(_) => Vec::new(),
        }
    }

    fn on_event(&mut self, event: Event) -> Vec<Command> {
        match &event {
            Event::State { state } => self.shared.state = *state,
            Event::Log { message } => self.shared.log(message.clone()),
            Event::Error { message } => self.shared.log(format!("error: {message}")),
            _ => {}
        }
        let shown = self.tab;
        let shared = &mut self.shared;
        let mut commands = self.train.on_event(&event, shared, shown == Tab::Train);
        commands.extend(
            self.generate
                .on_event(&event, shared, shown == Tab::Generate),
        );
        commands.extend(
            self.classify
                .on_event(&event, shared, shown == Tab::Classify),
        );
        commands.extend(self.inspect.on_event(&event, shared, shown == Tab::Inspect));
        commands.extend(self.runs.on_event(&event, shared, shown == Tab::Runs));
        commands
    }

    /// What the runs reader is to read for the Runs tab now.
    pub fn runs_subscription(&self) -> crate::runs::Subscription {
        self.runs.subscription(self.tab == Tab::Runs, &self.shared)
    }

    /// Shows `tab`; it may ask the worker for what it shows.
    fn switch_to(&mut self, tab: Tab) -> Vec<Command> {
        if tab == self.tab {
            return Vec::new();
        }
        self.tab = tab;
        let (page, shared) = self.page_mut();
        page.on_focus(shared)
    }

    fn on_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let action = keys::action(self.page().scope(), &key);
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if self.show_help && !(ctrl && action == Some(Action::Quit)) {
            self.show_help = false;
            return Vec::new();
        }
        let confirmed = std::mem::take(&mut self.confirm_quit);
        match action {
            // q during a run asks first; Ctrl-C (and q again) stop the run, keeping it.
            Some(Action::Quit) if !ctrl && !confirmed && self.run_in_progress() => {
                self.confirm_quit = true;
                Vec::new()
            }
            Some(Action::Quit) => self.stop_and_quit(),
            Some(Action::Help) => {
                self.show_help = true;
                Vec::new()
            }
            Some(Action::LoadLatest) => self.train.load_latest(&mut self.shared),
            Some(Action::NextTab) => self.switch_to(self.tab.next()),
            Some(Action::PrevTab) => self.switch_to(self.tab.prev()),
            Some(Action::GoTo(number)) => self.switch_to(
                Tab::from_repr(usize::from(number).saturating_sub(1)).unwrap_or(self.tab),
            ),
            Some(action) => {
                let (page, shared) = self.page_mut();
                // An open text field takes the editing keys; the tab the rest.
                if page.field().is_some_and(|field| field.edit(action)) {
                    return Vec::new();
                }
                page.on_action(action, shared)
            }
            None => {
                if let crossterm::event::KeyCode::Char(c) = key.code {
                    // Control characters (an escape sequence pasted into a prompt) never
                    // reach a text field, so they are never drawn raw to the terminal.
                    if !ctrl && !c.is_control() {
                        if let Some(field) = self.page_mut().0.field() {
                            field.insert(c);
                        }
                    }
                }
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests;
