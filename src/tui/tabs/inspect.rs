//! The Inspect tab: look inside the model held while it learns — one head's attention
//! map (or every layer × head as small maps), the logit lens, the text coloured by each
//! token's loss, and how that loss changed since weights were pinned; then ask it why:
//! remove heads or MLPs and see the losses and the next-token top 6 change, the map of
//! what each head's removal costs, activation patching from the text into a corrupted
//! one, direct logit attribution, and the model's anatomy and a training pair
//! ([`view`], [`probes`], [`anatomy`]). The tab asks the worker for a fresh inspection
//! when shown, when asked, and every `ui.inspect_every` training steps while shown; one
//! request is in flight at a time and a refresh wanted meanwhile follows it (the newest
//! weights win). Each request asks only for what the view shown needs.
mod anatomy;
mod maps;
mod probes;
mod view;

use ratatui::layout::Rect;
use ratatui::Frame;

use super::{Page, Shared};
use crate::protocol::{
    AblationAsk, Command, Event, InspectAsk, InspectReport, InspectText, PatchAsk, RunStart,
    WorkerState,
};
use crate::tui::input::TextInput;
use crate::tui::keys::{Action, Scope};

/// What the tab's main pane shows (`v` cycles them in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// The selected head's attention map.
    #[default]
    Head,
    /// Every layer × head as small maps.
    Heads,
    /// The loss increase when each head or MLP is removed alone.
    Ablation,
    /// Activation patching from the text into the corrupted one.
    Patching,
    /// Direct logit attribution of the cursor's next token.
    Attribution,
    /// The module tree with shapes, parameter counts and weight statistics.
    Model,
    /// A training pair X → Y.
    Data,
}

impl View {
    const ALL: [View; 7] = [
        View::Head,
        View::Heads,
        View::Ablation,
        View::Patching,
        View::Attribution,
        View::Model,
        View::Data,
    ];

    fn next(self, forward: bool) -> View {
        let i = View::ALL.iter().position(|v| *v == self).unwrap_or(0);
        let n = View::ALL.len();
        View::ALL[if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        }]
    }

    /// Whether the report has what this view draws.
    fn has(self, r: &InspectReport) -> bool {
        match self {
            View::Head | View::Heads => true,
            View::Ablation => r.ablation_map.is_some(),
            View::Patching => r.patching.is_some(),
            View::Attribution => !r.attribution.is_empty(),
            View::Model | View::Data => r.anatomy.is_some(),
        }
    }
}

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
    /// What the main pane shows.
    pub view: View,
    /// The parts removed for every pass (numbered from 0) and how.
    pub ablation: AblationAsk,
    /// The corrupted text for patching, as typed: `TEXT`, or `TEXT | ANSWER | WRONG`.
    pub corrupted: TextInput,
    pub editing_corrupted: bool,
    /// The training example the data view shows.
    pub example: usize,
    /// The model view's first row shown.
    pub scroll: usize,
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
            view: View::Head,
            ablation: AblationAsk::default(),
            corrupted: TextInput::default(),
            editing_corrupted: false,
            example: 0,
            scroll: 0,
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
            ask: self.ask(),
        }]
    }

    /// What the view shown needs besides the pass.
    pub(crate) fn ask(&self) -> InspectAsk {
        InspectAsk {
            ablation: self.ablation.clone(),
            ablation_map: self.view == View::Ablation,
            attribution: self.view == View::Attribution,
            dla_token: None,
            patch: self.patch_ask().filter(|_| self.view == View::Patching),
            anatomy: matches!(self.view, View::Model | View::Data).then_some(self.example),
        }
    }

    /// The corrupted text typed as a patch: `TEXT`, `TEXT | ANSWER` or
    /// `TEXT | ANSWER | WRONG` (unset answers: the clean run's top token, and the
    /// corrupted run's most probable other one).
    pub(crate) fn patch_ask(&self) -> Option<PatchAsk> {
        let typed = self.corrupted.text();
        let mut parts = typed.split('|').map(str::trim);
        let corrupted = parts.next().filter(|t| !t.is_empty())?.to_string();
        let word = |p: Option<&str>| p.filter(|w| !w.is_empty()).map(str::to_string);
        Some(PatchAsk {
            corrupted,
            answer: word(parts.next()),
            wrong: word(parts.next()),
        })
    }

    /// Drops what described the model held before: its report, removals, the model
    /// view's scroll and the data view's example.
    fn forget_model(&mut self) {
        self.report = None;
        self.ablation = AblationAsk::default();
        self.scroll = 0;
        self.example = 0;
        self.message = None;
    }

    /// Removes the part (or puts it back).
    fn toggle_part<T: PartialEq>(parts: &mut Vec<T>, part: T) {
        match parts.iter().position(|p| *p == part) {
            Some(i) => {
                parts.remove(i);
            }
            None => parts.push(part),
        }
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
        } else if self.editing_corrupted {
            Scope::CorruptedInput
        } else {
            Scope::Inspect
        }
    }

    fn on_action(&mut self, action: Action, _shared: &mut Shared) -> Vec<Command> {
        let (layers, heads, tokens) = self.shape();
        if self.editing_corrupted {
            match action {
                Action::Submit => {
                    // The patch stays what was typed, for the refreshes that follow.
                    let typed = self.corrupted.submit();
                    self.corrupted.set(typed);
                    self.editing_corrupted = false;
                    if self.patch_ask().is_none() {
                        return Vec::new();
                    }
                    self.view = View::Patching;
                    self.message = None;
                    return self.request();
                }
                Action::Cancel => self.editing_corrupted = false,
                _ => {}
            }
            return Vec::new();
        }
        match action {
            Action::GridLeft | Action::GridRight
                if matches!(self.view, View::Heads | View::Ablation) =>
            {
                self.head = Self::step(self.head, action == Action::GridRight, heads);
            }
            Action::GridUp | Action::GridDown if self.view == View::Model => {
                let rows = self
                    .report
                    .as_ref()
                    .and_then(|r| r.anatomy.as_ref())
                    .map_or(0, |a| a.rows.len());
                self.scroll = Self::step(self.scroll, action == Action::GridDown, rows);
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
            Action::ToggleOverview => {
                self.view = if self.view == View::Head {
                    View::Heads
                } else {
                    View::Head
                };
            }
            Action::NextView | Action::PrevView => {
                self.view = self.view.next(action == Action::NextView);
                let missing = self.report.as_ref().is_some_and(|r| !self.view.has(r));
                if self.view == View::Patching && self.patch_ask().is_none() {
                    self.message = Some(
                        "type a corrupted text of the same length (c) to patch from this one"
                            .into(),
                    );
                } else if missing {
                    return self.request();
                }
            }
            Action::AblateHead if heads > 0 => {
                Self::toggle_part(&mut self.ablation.heads, (self.layer, self.head));
                return self.request();
            }
            Action::AblateMlp if layers > 0 => {
                Self::toggle_part(&mut self.ablation.mlps, self.layer);
                return self.request();
            }
            Action::AblationMode => {
                self.ablation.mean = !self.ablation.mean;
                return self.request();
            }
            Action::RestoreAll => {
                if self.ablation.heads.is_empty() && self.ablation.mlps.is_empty() {
                    self.message = Some("nothing is removed: a removes a head, m an MLP".into());
                } else {
                    self.ablation.heads.clear();
                    self.ablation.mlps.clear();
                    return self.request();
                }
            }
            Action::TypeCorrupted => self.editing_corrupted = true,
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
            Action::NextExample if self.view == View::Data => {
                self.example += 1;
                return self.request();
            }
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
        if self.editing {
            Some(&mut self.input)
        } else if self.editing_corrupted {
            Some(&mut self.corrupted)
        } else {
            None
        }
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
                // A new model: the old report, pin and removals no longer describe it.
                self.forget_model();
                self.pinned = false;
                self.diff = false;
            }
            Event::Start(RunStart::Finetune(_)) => self.forget_model(),
            Event::State {
                state: WorkerState::Loaded,
            } => {
                // A model loaded (or a fine-tuned one kept): another model's removals
                // would name parts it may not have.
                self.forget_model();
                if focused && Self::model_held(shared) {
                    return self.request();
                }
            }
            Event::Iter(m) if focused && self.every > 0 && m.iter % self.every == 0 => {
                return self.request();
            }
            Event::State {
                state: WorkerState::Finished,
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
