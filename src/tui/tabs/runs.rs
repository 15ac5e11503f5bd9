//! The Runs tab: every run under the runs roots as a list (sorted, filtered by typing),
//! space selects runs, and the selected runs' curves are overlaid on shared axes — a
//! stable colour per run, a legend, x by step, tokens or training time, smoothing with
//! the raw curve faint beneath, log scale, runs that differ only by seed as one mean
//! line with a ± std band — with the settings in which they differ as a table. Enter
//! opens a run: its model for Generate, Classify and Inspect, its history on the Train
//! tab. The files are read by [`crate::runs::follow`]'s thread; the tab says what it
//! wants ([`RunsTab::subscription`]) and takes what comes ([`RunsTab::on_runs`]).
pub(crate) mod chart;
mod view;

use std::collections::BTreeMap;
use std::path::PathBuf;

use ratatui::layout::Rect;
use ratatui::Frame;

use super::{Page, Shared};
use crate::protocol::{Command, Event};
use crate::runs::{DiffRow, Found, RunHistory, RunSummary, RunsMsg, SortKey, Subscription};
use crate::tui::input::TextInput;
use crate::tui::keys::{Action, Scope};
use chart::{ChartData, ChartOptions};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunsTab {
    /// Every run found, as last listed (running runs followed here are kept current).
    pub runs: Vec<RunSummary>,
    /// The list's cursor, an index into [`RunsTab::shown`].
    pub cursor: usize,
    /// The selected runs' folders, in the order they were selected.
    pub selected: Vec<PathBuf>,
    /// The histories of the runs followed (selected, and the one under the cursor).
    pub histories: BTreeMap<PathBuf, RunHistory>,
    pub options: ChartOptions,
    /// What the chart draws: derived from the histories and options when they change.
    pub chart: ChartData,
    /// The settings in which the selected runs differ (and the runs' names).
    pub diff: Vec<DiffRow>,
    pub diff_names: Vec<String>,
    pub sort: SortKey,
    pub reverse: bool,
    pub filter: TextInput,
    pub filtering: bool,
    /// Bumped to ask the reader for a scan now.
    pub scan: u64,
    /// The list has come at least once.
    pub listed: bool,
    pub message: Option<String>,
}

/// Colours in the runs' palette (see `theme::RUNS`).
pub(crate) const PALETTE: usize = crate::tui::theme::RUNS.len();

impl RunsTab {
    pub(crate) fn new() -> Self {
        Self {
            options: ChartOptions {
                group_seeds: true,
                ..ChartOptions::default()
            },
            ..Self::default()
        }
    }

    /// The runs the list shows: filtered by the text typed, in the chosen order.
    pub(crate) fn shown(&self) -> Vec<&RunSummary> {
        let text = self.filter.text();
        let mut shown: Vec<&RunSummary> = self
            .runs
            .iter()
            .filter(|r| text.is_empty() || r.matches(text))
            .collect();
        crate::runs::sort(&mut shown, self.sort);
        if self.reverse {
            shown.reverse();
        }
        shown
    }

    fn under_cursor(&self) -> Option<&RunSummary> {
        let shown = self.shown();
        shown
            .get(self.cursor.min(shown.len().saturating_sub(1)))
            .copied()
    }

    /// What the reader is to read for this tab (nothing while it is not shown).
    pub(crate) fn subscription(&self, visible: bool, shared: &Shared) -> Subscription {
        let mut follow = self.selected.clone();
        if let Some(r) = self.under_cursor() {
            if !follow.contains(&r.path) {
                follow.push(r.path.clone());
            }
        }
        Subscription {
            visible,
            roots: crate::runs::roots(&shared.settings.runs),
            scan: self.scan,
            follow,
        }
    }

    /// What the reader sends.
    pub(crate) fn on_runs(&mut self, msg: RunsMsg) {
        // Only the runs followed now (selected, under the cursor) are kept: a history
        // the reader no longer follows would go stale over the list's fresh rows.
        let cursor = self.under_cursor().map(|r| r.path.clone());
        self.histories
            .retain(|dir, _| self.selected.contains(dir) || cursor.as_ref() == Some(dir));
        match msg {
            RunsMsg::Listed(list) => {
                self.runs = list;
                self.listed = true;
                // Followed runs are more current than the scan.
                let followed: Vec<PathBuf> = self.histories.keys().cloned().collect();
                for dir in followed {
                    self.refresh_summary(&dir, None);
                }
            }
            RunsMsg::History(dir, history, locked) => {
                self.histories.insert(dir.clone(), *history);
                self.refresh_summary(&dir, Some(locked));
                if self.selected.contains(&dir) {
                    self.rebuild();
                }
            }
            RunsMsg::Unreadable(dir, error) => {
                self.message = Some(format!("{}: {error}", dir.display()));
            }
        }
    }

    /// The list's row of a followed run, from its history.
    fn refresh_summary(&mut self, dir: &PathBuf, locked: Option<bool>) {
        let (Some(h), Some(row)) = (
            self.histories.get(dir),
            self.runs.iter_mut().find(|r| &r.path == dir),
        ) else {
            return;
        };
        let locked = locked.unwrap_or(row.status == crate::runs::Status::Running);
        let found = Found {
            name: row.name.clone(),
            dir: dir.clone(),
        };
        *row = RunSummary::of_locked(&found, h, locked);
    }

    /// The chart and the settings diff of the selection, from the histories.
    fn rebuild(&mut self) {
        let runs: Vec<(String, &RunHistory, String)> = self
            .selected
            .iter()
            .filter_map(|dir| {
                let h = self.histories.get(dir)?;
                Some((self.name_of(dir), h, chart::group_key(dir, h)))
            })
            .collect();
        let built = chart::build(&runs, self.options, PALETTE);
        let records: Vec<(String, BTreeMap<String, String>)> = runs
            .iter()
            .filter_map(|(name, h, _)| {
                Some((name.clone(), crate::runs::flatten(h.record.as_ref()?)))
            })
            .collect();
        self.diff_names = records.iter().map(|r| r.0.clone()).collect();
        let flat: Vec<BTreeMap<String, String>> = records.into_iter().map(|r| r.1).collect();
        self.diff = if flat.len() >= 2 {
            crate::runs::diff(&flat)
        } else {
            Vec::new()
        };
        self.chart = built;
    }

    fn name_of(&self, dir: &PathBuf) -> String {
        self.runs
            .iter()
            .find(|r| &r.path == dir)
            .map(|r| r.name.clone())
            .unwrap_or_else(|| dir.display().to_string())
    }

    fn move_cursor(&mut self, down: bool) {
        let len = self.shown().len();
        let at = self.cursor.min(len.saturating_sub(1));
        self.cursor = if down {
            (at + 1).min(len.saturating_sub(1))
        } else {
            at.saturating_sub(1)
        };
    }
}

impl Page for RunsTab {
    fn scope(&self) -> Scope {
        if self.filtering {
            Scope::RunsFilter
        } else {
            Scope::Runs
        }
    }

    fn field(&mut self) -> Option<&mut TextInput> {
        self.filtering.then_some(&mut self.filter)
    }

    fn on_action(&mut self, action: Action, shared: &mut Shared) -> Vec<Command> {
        self.message = None;
        match action {
            Action::Submit if self.filtering => {
                self.filtering = false;
                self.cursor = 0;
            }
            Action::Cancel if self.filtering => {
                self.filtering = false;
                self.filter.set("");
            }
            Action::EditPrompt => self.filtering = true,
            Action::ScrollUp => self.move_cursor(false),
            Action::ScrollDown => self.move_cursor(true),
            Action::ToggleSelect => {
                if let Some(dir) = self.under_cursor().map(|r| r.path.clone()) {
                    match self.selected.iter().position(|d| *d == dir) {
                        Some(i) => {
                            self.selected.remove(i);
                        }
                        None => self.selected.push(dir),
                    }
                    self.rebuild();
                }
            }
            Action::ClearSelection => {
                self.selected.clear();
                self.rebuild();
            }
            Action::Branch => {
                let Some(run) = self.under_cursor() else {
                    return Vec::new();
                };
                let (name, dir) = (run.name.clone(), run.path.clone());
                shared.log(format!(
                    "opening run {name}: its model for Generate, Classify and Inspect, its history on the Train tab"
                ));
                return vec![Command::Load(dir)];
            }
            Action::NextSort => {
                (self.sort, self.reverse) = match (self.sort, self.reverse) {
                    (key, false) => (key, true),
                    (key, true) => (key.next(), false),
                };
            }
            Action::NextXAxis => {
                self.options.x = self.options.x.next();
                self.rebuild();
            }
            Action::ToggleSmoothing => {
                self.options.smoothing = self.options.smoothing.next();
                self.rebuild();
            }
            Action::ToggleLogScale => {
                self.options.log_scale = !self.options.log_scale;
                self.rebuild();
            }
            Action::NextMetric => {
                self.options.metric = self.options.metric.next();
                self.rebuild();
            }
            Action::GroupSeeds => {
                self.options.group_seeds = !self.options.group_seeds;
                self.rebuild();
            }
            Action::Refresh => self.scan += 1,
            _ => {}
        }
        Vec::new()
    }

    fn on_event(&mut self, event: &Event, _shared: &mut Shared, _focused: bool) -> Vec<Command> {
        // A run of the dashboard's own began or ended: list again.
        if matches!(event, Event::Start(_) | Event::Done(_)) {
            self.scan += 1;
        }
        Vec::new()
    }

    fn on_focus(&mut self, _shared: &Shared) -> Vec<Command> {
        self.scan += 1;
        Vec::new()
    }

    fn draw(&self, frame: &mut Frame, area: Rect, _shared: &Shared) {
        view::draw(frame, self, area);
    }
}

#[cfg(test)]
mod tests;
