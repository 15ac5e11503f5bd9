//! The Train tab: start, pause, stop and save a run; choose the corpus and preset of the
//! next one; load a checkpoint; the loss chart, sparkline, stats and log ([`view`]).
mod view;

use std::collections::VecDeque;

use ratatui::layout::Rect;
use ratatui::Frame;

pub use view::{downsample, smooth};

use super::{Page, Shared};
use crate::config::PRESETS;
use crate::protocol::{Command, Event, RunDone, RunInfo, RunStart, StepMetrics, WorkerState};
use crate::tui::keys::{Action, Scope};

/// Longest loss history kept; beyond it neighbouring points are merged (averaged), so
/// memory stays bounded while the chart still covers the whole run.
pub const MAX_LOSS_POINTS: usize = 1 << 17;
/// Steps shown in the sparkline.
pub const RECENT_STEPS: usize = 240;

/// Train-loss history: `(iteration, loss)`, bounded by merging neighbours.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossHistory {
    pub points: Vec<(f64, f64)>,
}

impl LossHistory {
    pub fn push(&mut self, iter: f64, loss: f64) {
        self.points.push((iter, loss));
        if self.points.len() > MAX_LOSS_POINTS {
            self.points = self
                .points
                .chunks(2)
                .map(|c| {
                    let n = c.len() as f64;
                    (
                        c.iter().map(|p| p.0).sum::<f64>() / n,
                        c.iter().map(|p| p.1).sum::<f64>() / n,
                    )
                })
                .collect();
        }
    }
}

/// What a path typed on the Train tab is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathInput {
    /// The corpus of the next run (`small` or a file).
    Corpus,
    /// A checkpoint directory to load for generation.
    Checkpoint,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainTab {
    pub info: Option<RunInfo>,
    pub losses: LossHistory,
    pub test_losses: Vec<(f64, f64)>,
    pub recent: VecDeque<f64>,
    pub last: Option<StepMetrics>,
    /// Smoothed milliseconds per step, for the ETA.
    pub ms_per_step: Option<f64>,
    pub best_test: Option<f64>,
    pub log_scale: bool,
    pub smoothing: f64,
    /// A path being typed (after `c` or `o`), if any.
    pub input: Option<(PathInput, String)>,
    pub last_saved: Option<String>,
    /// The data preparation under way: stage, done, total.
    pub preparing: Option<(String, u64, u64)>,
    /// The last reading of the run's GPU (CUDA runs).
    pub gpu: Option<crate::protocol::GpuStatus>,
}

impl TrainTab {
    pub fn new(log_scale: bool, smoothing: f64) -> Self {
        Self {
            info: None,
            losses: LossHistory::default(),
            test_losses: Vec::new(),
            recent: VecDeque::with_capacity(RECENT_STEPS),
            last: None,
            ms_per_step: None,
            best_test: None,
            log_scale,
            smoothing,
            input: None,
            last_saved: None,
            preparing: None,
            gpu: None,
        }
    }

    /// Estimated time left, in seconds.
    pub fn eta_secs(&self) -> Option<f64> {
        let info = self.info.as_ref()?;
        let iter = self.last.map(|m| m.iter).unwrap_or(info.start_iter);
        Some(info.max_iters.saturating_sub(iter) as f64 * self.ms_per_step? / 1e3)
    }

    fn start(&mut self, info: &RunInfo, shared: &mut Shared) {
        shared.log(format!(
            "run: {} ({}L {}H {}d) on {} ({} threads, {}), {:.2}M params, vocab {}, {} train / {} test examples",
            info.preset,
            info.model.n_layer,
            info.model.n_head,
            info.model.n_embd,
            info.device,
            info.threads,
            info.dtype,
            info.params as f64 / 1e6,
            info.vocab_size,
            info.train_examples,
            info.test_examples
        ));
        *self = Self {
            info: Some(info.clone()),
            ..Self::new(self.log_scale, self.smoothing)
        };
    }

    fn step(&mut self, m: &StepMetrics) {
        self.losses.push(m.iter as f64, m.loss);
        if self.recent.len() == RECENT_STEPS {
            self.recent.pop_front();
        }
        self.recent.push_back(m.loss);
        self.ms_per_step = Some(match self.ms_per_step {
            Some(ms) => 0.9 * ms + 0.1 * m.iter_ms,
            None => m.iter_ms,
        });
        self.last = Some(*m);
    }

    fn typed(&mut self, shared: &mut Shared) -> Vec<Command> {
        let Some((target, input)) = self.input.take() else {
            return Vec::new();
        };
        let path = input.trim().to_string();
        if path.is_empty() {
            return Vec::new();
        }
        match target {
            PathInput::Corpus => {
                shared.log(format!("corpus set to {path} (space starts a new run)"));
                shared.settings.data.corpus = path;
                Vec::new()
            }
            PathInput::Checkpoint => vec![Command::Load(path.into())],
        }
    }
}

impl Page for TrainTab {
    fn scope(&self) -> Scope {
        if self.input.is_some() {
            Scope::PathInput
        } else {
            Scope::Train
        }
    }

    fn on_action(&mut self, action: Action, shared: &mut Shared) -> Vec<Command> {
        match action {
            Action::Submit => return self.typed(shared),
            Action::Cancel => self.input = None,
            Action::DeleteBack => {
                if let Some((_, input)) = &mut self.input {
                    input.pop();
                }
            }
            Action::StartPauseResume => {
                return match shared.state {
                    WorkerState::Training => vec![Command::Pause],
                    WorkerState::Paused => vec![Command::Resume],
                    WorkerState::Preparing | WorkerState::FineTuning => Vec::new(),
                    WorkerState::Idle | WorkerState::Finished | WorkerState::Loaded => {
                        vec![Command::Start(Box::new(shared.settings.clone()))]
                    }
                }
            }
            Action::Stop => return vec![Command::Stop],
            Action::Save => return vec![Command::Save(None)],
            Action::ChooseCorpus => {
                self.input = Some((PathInput::Corpus, shared.settings.data.corpus.clone()))
            }
            Action::OpenCheckpoint => {
                let last = self
                    .last_saved
                    .clone()
                    .unwrap_or_else(|| "checkpoints/small".into());
                self.input = Some((PathInput::Checkpoint, last));
            }
            Action::NextPreset => {
                let i = PRESETS
                    .iter()
                    .position(|(n, _)| *n == shared.settings.model.preset);
                let next = PRESETS[i.map(|i| (i + 1) % PRESETS.len()).unwrap_or(0)].0;
                shared.settings.model.preset = next.to_string();
                shared.log(format!("model preset {next} (space starts a new run)"));
            }
            Action::ToggleLogScale => self.log_scale = !self.log_scale,
            Action::ToggleSmoothing => {
                self.smoothing = if self.smoothing > 0.0 { 0.0 } else { 0.9 }
            }
            _ => {}
        }
        Vec::new()
    }

    fn on_char(&mut self, c: char) {
        if let Some((_, input)) = &mut self.input {
            input.push(c);
        }
    }

    fn on_event(&mut self, event: &Event, shared: &mut Shared, _focused: bool) -> Vec<Command> {
        match event {
            Event::State {
                state: WorkerState::Finished,
            } => shared.log("training finished; the model is ready on the Generate tab"),
            Event::Prepare { stage, done, total } => {
                if done == total {
                    shared.log(format!("prepared: {stage} ({done}/{total})"));
                }
                self.preparing = Some((stage.clone(), *done, *total));
            }
            Event::Start(RunStart::Train(info)) => self.start(info, shared),
            Event::Iter(m) => self.step(m),
            Event::Gpu(status) => self.gpu = Some(status.clone()),
            Event::Eval { iter, test_loss } => {
                self.test_losses.push((*iter as f64, *test_loss));
                if self.best_test.is_none_or(|b| *test_loss < b) {
                    self.best_test = Some(*test_loss);
                }
                shared.log(format!("step {iter}: test loss {test_loss:.4}"));
            }
            Event::Checkpoint { iter, path } => {
                self.last_saved = Some(path.display().to_string());
                shared.log(format!(
                    "step {iter}: checkpoint saved to {}",
                    path.display()
                ));
            }
            Event::Done(RunDone::Train(s)) => shared.log(format!(
                "run finished: {} steps in {:.1} s of training, {:.0} tokens/s",
                s.iter, s.train_s, s.tokens_per_s
            )),
            _ => {}
        }
        Vec::new()
    }

    fn draw(&self, frame: &mut Frame, area: Rect, shared: &Shared) {
        view::draw(frame, self, shared, area);
    }
}
