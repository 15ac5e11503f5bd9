//! The Inspect tab: look inside the model held while it learns — one head's attention
//! map (or every layer × head as small maps), the logit lens, the text coloured by each
//! token's loss, and how that loss changed since weights were pinned ([`view`]). The tab
//! asks the worker for a fresh inspection when shown, when asked, and every
//! `ui.inspect_every` training steps while shown; one request is in flight at a time and
//! a refresh wanted meanwhile follows it (the newest weights win).
mod maps;
mod view;

use ratatui::layout::Rect;
use ratatui::Frame;

use super::{Page, Shared};
use crate::protocol::{Command, Event, InspectReport, InspectText, RunStart, WorkerState};
use crate::tui::input::TextInput;
use crate::tui::keys::{Action, Scope};

#[derive(Debug, Clone, PartialEq)]
pub struct InspectTab {
    /// The last inspection.
    pub report: Option<InspectReport>,
    /// What is inspected: a test example of the corpus, or a typed text.
    pub source: InspectText,
    /// The text box (kept when left with Esc).
    pub input: TextInput,
    pub editing: bool,
    /// Selected layer and head (from 0).
    pub layer: usize,
    pub head: usize,
    /// The token under the cursor: a query row of the map, a column of the lens.
    pub cursor: usize,
    /// Every layer × head as small maps instead of the selected one.
    pub overview: bool,
    /// Colour the text by the loss change since the pin instead of by the loss.
    pub diff: bool,
    /// Weights are pinned (as the last report says, or as just asked).
    pub pinned: bool,
    /// Refresh every this many training steps while shown (0: never by itself).
    pub every: u64,
    next_request: u64,
    in_flight: Option<u64>,
    /// A refresh was wanted while one was in flight.
    again: bool,
    pub message: Option<String>,
}

impl InspectTab {
    pub(crate) fn new(every: u64) -> Self {
        Self {
            report: None,
            source: InspectText::Corpus(0),
            input: TextInput::default(),
            editing: false,
            layer: 0,
            head: 0,
            cursor: 0,
            overview: false,
            diff: false,
            pinned: false,
            every,
            next_request: 1,
            in_flight: None,
            again: false,
            message: None,
        }
    }

    /// Asks for an inspection of the source with the current weights, unless one is in
    /// flight (then it follows that one).
    fn request(&mut self) -> Vec<Command> {
        if self.in_flight.is_some() {
            self.again = true;
            return Vec::new();
        }
        let request = self.next_request;
        self.next_request += 1;
        self.in_flight = Some(request);
        vec![Command::Inspect {
            request,
            text: self.source.clone(),
        }]
    }

    /// Whether a request is waiting for its answer.
    pub(crate) fn waiting(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Layers, heads and positions of the report (zeros without one).
    pub(crate) fn shape(&self) -> (usize, usize, usize) {
        self.report.as_ref().map_or((0, 0, 0), |r| {
            let heads = r.attention.first().map_or(0, Vec::len);
            (r.attention.len(), heads, r.tokens.len())
        })
    }

    /// Keeps layer, head and cursor inside the report.
    fn clamp(&mut self) {
        let (layers, heads, tokens) = self.shape();
        self.layer = self.layer.min(layers.saturating_sub(1));
        self.head = self.head.min(heads.saturating_sub(1));
        self.cursor = self.cursor.min(tokens.saturating_sub(1));
    }

    fn step(value: usize, forward: bool, count: usize) -> usize {
        if forward {
            (value + 1).min(count.saturating_sub(1))
        } else {
            value.saturating_sub(1)
        }
    }

    fn model_held(shared: &Shared) -> bool {
        !matches!(shared.state, WorkerState::Idle | WorkerState::Preparing)
    }
}

impl Page for InspectTab {
    fn scope(&self) -> Scope {
        if self.editing {
            Scope::InspectInput
        } else {
            Scope::Inspect
        }
    }

    fn on_action(&mut self, action: Action, _shared: &mut Shared) -> Vec<Command> {
        let (layers, heads, tokens) = self.shape();
        match action {
            Action::GridLeft | Action::GridRight if self.overview => {
                self.head = Self::step(self.head, action == Action::GridRight, heads);
            }
            Action::GridLeft | Action::GridRight => {
                self.cursor = Self::step(self.cursor, action == Action::GridRight, tokens);
            }
            Action::GridHome => self.cursor = 0,
            Action::GridEnd => self.cursor = tokens.saturating_sub(1),
            Action::GridUp | Action::GridDown => {
                self.layer = Self::step(self.layer, action == Action::GridDown, layers);
            }
            Action::PrevHead | Action::NextHead => {
                self.head = Self::step(self.head, action == Action::NextHead, heads);
            }
            Action::ToggleOverview => self.overview = !self.overview,
            Action::EditPrompt => {
                if self.input.text().is_empty() {
                    if let Some(r) = &self.report {
                        self.input.set(r.text.clone());
                    }
                }
                self.editing = true;
            }
            Action::Submit => {
                let text = self.input.submit().trim().to_string();
                self.editing = false;
                if !text.is_empty() {
                    self.source = InspectText::Typed(text);
                    self.cursor = 0;
                    return self.request();
                }
            }
            Action::Cancel => self.editing = false,
            Action::NextExample => {
                self.source = match self.source {
                    InspectText::Corpus(n) => InspectText::Corpus(n + 1),
                    InspectText::Typed(_) => InspectText::Corpus(0),
                };
                self.cursor = 0;
                return self.request();
            }
            Action::Refresh => return self.request(),
            Action::Pin => {
                self.pinned = !self.pinned;
                if !self.pinned {
                    self.diff = false;
                }
                let mut commands = vec![Command::Pin(self.pinned)];
                commands.extend(self.request());
                return commands;
            }
            Action::ToggleDiff => {
                if self.pinned {
                    self.diff = !self.diff;
                } else {
                    self.message = Some("pin the weights first (p), then train on".into());
                }
            }
            _ => {}
        }
        Vec::new()
    }

    fn field(&mut self) -> Option<&mut TextInput> {
        self.editing.then_some(&mut self.input)
    }

    fn on_event(&mut self, event: &Event, shared: &mut Shared, focused: bool) -> Vec<Command> {
        match event {
            Event::Inspected(report) if report.request.is_some() => {
                if report.request == self.in_flight {
                    self.in_flight = None;
                }
                self.pinned = report.pinned.is_some();
                self.diff &= self.pinned;
                // A new text starts with the cursor on its last token (it sees them all).
                let same_text = self.report.as_ref().map(|r| &r.tokens) == Some(&report.tokens);
                if !same_text {
                    self.cursor = report.tokens.len().saturating_sub(1);
                }
                self.report = Some(report.as_ref().clone());
                self.message = None;
                self.clamp();
                if std::mem::take(&mut self.again) && focused {
                    return self.request();
                }
            }
            Event::InspectFailed {
                request,
                error,
                no_model,
            } => {
                if Some(*request) == self.in_flight {
                    self.in_flight = None;
                }
                self.again = false;
                self.message = Some(shared.failure(error, *no_model));
            }
            Event::Start(RunStart::Train(_)) => {
                // A new model: the old report and pin no longer describe it.
                self.report = None;
                self.pinned = false;
                self.diff = false;
                self.message = None;
            }
            Event::Iter(m) if focused && self.every > 0 && m.iter % self.every == 0 => {
                return self.request();
            }
            Event::State {
                state: WorkerState::Finished | WorkerState::Loaded,
            } if focused && Self::model_held(shared) => return self.request(),
            _ => {}
        }
        Vec::new()
    }

    fn on_focus(&mut self, shared: &Shared) -> Vec<Command> {
        if Self::model_held(shared) {
            self.request()
        } else {
            Vec::new()
        }
    }

    fn draw(&self, frame: &mut Frame, area: Rect, shared: &Shared) {
        view::draw(frame, self, shared, area);
    }
}

#[cfg(test)]
mod tests;
