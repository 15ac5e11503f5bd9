//! The Classify tab: fine-tune the model held on SST-2 live (per-epoch curves, the
//! validation accuracy, the confusion matrix) and classify typed sentences ([`view`]).
mod view;

use ratatui::layout::Rect;
use ratatui::Frame;

use super::{Page, Shared};
use crate::checkpoint::Base;
use crate::config::HELD_BASE;
use crate::protocol::{
    Command, EpochMetrics, Event, FinetuneInfo, FinetuneSummary, RunDone, RunStart, WorkerState,
};
use crate::tui::input::TextInput;
use crate::tui::keys::{Action, Scope};

/// The bases `b` cycles through (`B` types any other).
const CHOICES: [&str; 3] = [HELD_BASE, "gpt2", "distilgpt2"];

/// Sets the base of the next fine-tuning run, and says so in the log.
fn set_base(shared: &mut Shared, base: &str) {
    shared.settings.finetune.base = base.to_string();
    shared.log(format!(
        "fine-tuning base: {} (f starts)",
        Base::parse(base).describe()
    ));
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClassifyTab {
    pub info: Option<FinetuneInfo>,
    pub epochs: Vec<EpochMetrics>,
    /// The finished run's result: best epoch, accuracy, per-class scores, calibration,
    /// mistakes, where the classifier was saved.
    pub done: Option<FinetuneSummary>,
    /// The first mistake shown (the list scrolls).
    pub mistake_row: usize,
    /// Typing a base (a checkpoint folder or a hub id) into `base_input`.
    pub typing_base: bool,
    pub base_input: TextInput,
    /// The sentence to classify.
    pub input: TextInput,
    pub editing: bool,
    /// The last sentence classified and its P(positive).
    pub last: Option<(String, f64)>,
    pub message: Option<String>,
}

impl ClassifyTab {
    /// A new run's (or an opened classifier's) view: the text fields stay as typed.
    fn reset(&mut self, info: &FinetuneInfo) {
        *self = Self {
            info: Some(info.clone()),
            typing_base: self.typing_base,
            base_input: std::mem::take(&mut self.base_input),
            input: std::mem::take(&mut self.input),
            editing: self.editing,
            last: self.last.take(),
            ..Self::default()
        };
    }
}

impl Page for ClassifyTab {
    fn scope(&self) -> Scope {
        if self.typing_base {
            Scope::PathInput
        } else if self.editing {
            Scope::SentenceInput
        } else {
            Scope::Classify
        }
    }

    fn on_action(&mut self, action: Action, shared: &mut Shared) -> Vec<Command> {
        match action {
            Action::Submit => {
                if self.typing_base {
                    self.typing_base = false;
                    let typed = self.base_input.submit();
                    if !typed.trim().is_empty() {
                        set_base(shared, typed.trim());
                    }
                    return Vec::new();
                }
                let text = self.input.submit().trim().to_string();
                if !text.is_empty() {
                    return vec![Command::ClassifyText(text)];
                }
            }
            Action::Cancel => {
                if self.typing_base {
                    self.typing_base = false;
                } else {
                    self.editing = false;
                }
            }
            Action::NextBase => {
                let now = shared.settings.finetune.base.clone();
                let at = CHOICES.iter().position(|&b| b == now);
                let next = CHOICES[at.map_or(0, |i| (i + 1) % CHOICES.len())];
                set_base(shared, next);
            }
            Action::TypeBase => {
                let now = &shared.settings.finetune.base;
                self.base_input.set(if now == HELD_BASE {
                    format!("{}/", crate::output::DEFAULT_PARENT)
                } else {
                    now.clone()
                });
                self.typing_base = true;
            }
            Action::Finetune => {
                return vec![Command::StartFinetune(Box::new(
                    shared.settings.finetune.clone(),
                ))]
            }
            Action::PauseResume => {
                return match shared.state {
                    WorkerState::FineTuning => vec![Command::Pause],
                    WorkerState::Paused => vec![Command::Resume],
                    _ => Vec::new(),
                }
            }
            Action::Stop => return vec![Command::Stop],
            Action::TypeSentence => self.editing = true,
            Action::ScrollUp => self.mistake_row = self.mistake_row.saturating_sub(1),
            Action::ScrollDown => {
                let n = self.done.as_ref().map_or(0, |d| d.mistakes.len());
                self.mistake_row = (self.mistake_row + 1).min(n.saturating_sub(1));
            }
            _ => {}
        }
        Vec::new()
    }

    fn field(&mut self) -> Option<&mut TextInput> {
        if self.typing_base {
            Some(&mut self.base_input)
        } else {
            self.editing.then_some(&mut self.input)
        }
    }

    fn on_event(&mut self, event: &Event, shared: &mut Shared, focused: bool) -> Vec<Command> {
        match event {
            Event::Start(RunStart::Finetune(info)) => {
                shared.log(format!(
                    "fine-tuning on {}: train {} ({:.1}% positive), validation {} ({:.1}% positive)",
                    info.data,
                    info.train_examples,
                    100.0 * info.train_positive,
                    info.val_examples,
                    100.0 * info.val_positive
                ));
                self.reset(info);
            }
            // An opened classifier's history: its epochs and result come back.
            Event::Restored(run) => {
                if let Some(RunStart::Finetune(info)) = &run.start {
                    self.reset(info);
                    self.epochs = run.epochs.clone();
                    if let Some(RunDone::Finetune(s)) = &run.done {
                        self.done = Some(s.clone());
                    }
                }
            }
            Event::Epoch(m) => {
                shared.log(format!(
                    "epoch {}: train loss {:.4} acc {:.3} | val loss {:.4} acc {:.3}",
                    m.epoch, m.train_loss, m.train_acc, m.val_loss, m.val_acc
                ));
                self.epochs.push(*m);
            }
            Event::Done(RunDone::Finetune(d)) => {
                shared.log(format!(
                    "fine-tuning done: best epoch {}, validation accuracy {:.4}; saved to {}",
                    d.best_epoch,
                    d.val_acc,
                    d.checkpoint.display()
                ));
                self.done = Some(d.clone());
                self.mistake_row = 0;
            }
            Event::Classified {
                text, p_positive, ..
            } => self.last = Some((text.clone(), *p_positive)),
            Event::Error { message } if focused => self.message = Some(message.clone()),
            _ => {}
        }
        Vec::new()
    }

    fn draw(&self, frame: &mut Frame, area: Rect, shared: &Shared) {
        view::draw(frame, self, shared, area);
    }
}
