//! The Train tab: start, pause, stop and save a run; choose the corpus and preset of the
//! next one; load a checkpoint; the loss chart, sparkline, stats and log ([`view`]).
//! Under `gptdash watch` it shows a run that trains elsewhere, from its event stream
//! ([`watching`]), with the same chart and stats.
mod view;
pub(crate) mod watching;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use ratatui::layout::Rect;
use ratatui::Frame;

use super::{Page, Shared};
use crate::config::PRESETS;
use crate::protocol::{Command, Event, RunDone, RunInfo, RunStart, StepMetrics, WorkerState};
use crate::tui::input::TextInput;
use crate::tui::keys::{Action, Scope};
use crate::watch::StreamMsg;
use watching::Watching;

/// Longest loss history kept; beyond it neighbouring points are merged (averaged), so
/// memory stays bounded while the chart still covers the whole run.
pub(crate) const MAX_LOSS_POINTS: usize = 1 << 17;
/// Steps shown in the sparkline.
pub(crate) const RECENT_STEPS: usize = 240;

/// Train-loss history: `(iteration, loss)`, bounded by merging neighbours.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossHistory {
    pub points: Vec<(f64, f64)>,
}

impl LossHistory {
    pub(crate) fn push(&mut self, iter: f64, loss: f64) {
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
    /// What a path is being typed for (after `c` or `o`), if one is.
    pub typing: Option<PathInput>,
    /// The corpus and checkpoint fields (each keeps its own history).
    pub corpus_input: TextInput,
    pub checkpoint_input: TextInput,
    /// The catalog of named corpora and which are on this machine, as it was when `c`
    /// opened the corpus input (shown while it is open).
    pub corpora: Vec<crate::data::catalog::Status>,
    pub last_saved: Option<String>,
    /// The data preparation under way: stage, done, total.
    pub preparing: Option<(String, u64, u64)>,
    /// The last reading of the run's GPU (CUDA runs).
    pub gpu: Option<crate::protocol::GpuStatus>,
    /// The stream watched instead of the worker's runs (`gptdash watch`).
    pub watch: Option<Watching>,
}

impl TrainTab {
    pub(crate) fn new(log_scale: bool, smoothing: f64) -> Self {
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
            typing: None,
            corpus_input: TextInput::default(),
            checkpoint_input: TextInput::default(),
            corpora: Vec::new(),
            last_saved: None,
            preparing: None,
            gpu: None,
            watch: None,
        }
    }

    /// The run's length in steps: what its start said, else (no run yet) the next run's
    /// setting; 0 when unknown (a watched stream that has not said).
    pub(crate) fn max_iters(&self, shared: &Shared) -> u64 {
        match &self.info {
            Some(i) => i.max_iters,
            None if self.watch.is_some() => 0,
            None => shared.settings.train.max_iters,
        }
    }

    /// Estimated time left, in seconds.
    pub(crate) fn eta_secs(&self) -> Option<f64> {
        let info = self.info.as_ref().filter(|i| i.max_iters > 0)?;
        let iter = self.last.map(|m| m.iter).unwrap_or(info.start_iter);
        Some(info.max_iters.saturating_sub(iter) as f64 * self.ms_per_step? / 1e3)
    }

    fn start(&mut self, info: &RunInfo, shared: &mut Shared) {
        shared.log(format!("run: {}", describe_run(info)));
        *self = Self {
            info: Some(info.clone()),
            watch: self.watch.take(),
            ..Self::new(self.log_scale, self.smoothing)
        };
    }

    /// An opened checkpoint's history: its curves, as they were when it was saved.
    fn restore(&mut self, run: &crate::protocol::RestoredRun, shared: &mut Shared) {
        let Some(RunStart::Train(info)) = &run.start else {
            return;
        };
        *self = Self {
            info: Some((**info).clone()),
            watch: self.watch.take(),
            ..Self::new(self.log_scale, self.smoothing)
        };
        for &(step, loss) in &run.train {
            self.losses.push(step as f64, loss);
            if self.recent.len() == RECENT_STEPS {
                self.recent.pop_front();
            }
            self.recent.push_back(loss);
        }
        self.test_losses = run.test.iter().map(|&(s, l)| (s as f64, l)).collect();
        self.best_test = run.test.iter().map(|p| p.1).reduce(f64::min);
        self.last_saved = Some(run.path.display().to_string());
        shared.log(format!(
            "{}: its history is on the Train tab ({} steps{})",
            run.path.display(),
            run.train.last().map_or(0, |p| p.0),
            self.best_test
                .map(|b| format!(", best test loss {b:.4}"))
                .unwrap_or_default()
        ));
    }

    fn step(&mut self, m: &StepMetrics) {
        self.losses.push(m.iter as f64, m.loss);
        if self.recent.len() == RECENT_STEPS {
            self.recent.pop_front();
        }
        self.recent.push_back(m.loss);
        // Another trainer's stream may not report step times (NaN).
        if m.iter_ms.is_finite() {
            self.ms_per_step = Some(match self.ms_per_step {
                Some(ms) => 0.9 * ms + 0.1 * m.iter_ms,
                None => m.iter_ms,
            });
        }
        self.last = Some(*m);
    }

    /// A message of the watched stream (`gptdash watch`). A fine-tuning run's event is
    /// returned, for the Classify tab to show.
    pub(crate) fn on_stream(&mut self, msg: StreamMsg, shared: &mut Shared) -> Option<Event> {
        let watch = self.watch.as_mut()?;
        let event = match msg {
            StreamMsg::Status(status) => {
                if let Some(line) = watch.status(status) {
                    shared.log(line);
                }
                return None;
            }
            StreamMsg::Line(parsed) => {
                let (event, log) = watch.line(parsed);
                if let Some(line) = log {
                    shared.log(line);
                }
                event
            }
        };
        let event = event?;
        if let Some(line) = watch.keep(&event) {
            shared.log(line);
        }
        if crate::watch::is_finetuning(&event) {
            if let Event::Done(RunDone::Finetune(d)) = &event {
                if !d.checkpoint.as_os_str().is_empty() {
                    self.last_saved = Some(d.checkpoint.display().to_string());
                }
            }
            return Some(event);
        }
        match &event {
            Event::Log { message } => shared.log(format!("run: {message}")),
            Event::Error { message } => shared.log(format!("run error: {message}")),
            Event::Interrupted { iter, path } => shared.log(format!(
                "run stopped at step {iter}; checkpoint {}",
                path.display()
            )),
            Event::Diverged { iter, message, .. } => {
                shared.log(format!("run diverged at step {iter}: {message}"))
            }
            _ => {}
        }
        self.on_event(&event, shared, true);
        None
    }

    /// Where a checkpoint the run named is on this machine, if it is.
    fn locate(&self, path: &Path) -> Option<PathBuf> {
        match &self.watch {
            Some(watch) => watch.locate(path),
            None => path.is_dir().then(|| path.to_path_buf()),
        }
    }

    /// Loads the latest checkpoint the run saved (watching: the last one its stream
    /// named) into the worker, for Generate, Classify and Inspect.
    pub(crate) fn load_latest(&mut self, shared: &mut Shared) -> Vec<Command> {
        if matches!(
            shared.state,
            WorkerState::Training
                | WorkerState::Paused
                | WorkerState::Preparing
                | WorkerState::FineTuning
        ) {
            shared.log("a run is in progress here: its model is the one held");
            return Vec::new();
        }
        let Some(saved) = self.last_saved.clone() else {
            shared.log("no checkpoint has been saved yet");
            return Vec::new();
        };
        match self.locate(Path::new(&saved)) {
            Some(dir) => vec![Command::Load(dir)],
            None => {
                shared.log(format!(
                    "checkpoint {saved} is not on this machine: copy it here (scp, rsync), then Ctrl-O, or o to type where it is"
                ));
                Vec::new()
            }
        }
    }

    /// The field a path for `target` is typed into.
    fn input_for(&mut self, target: PathInput) -> &mut TextInput {
        match target {
            PathInput::Corpus => &mut self.corpus_input,
            PathInput::Checkpoint => &mut self.checkpoint_input,
        }
    }

    fn typed(&mut self, shared: &mut Shared) -> Vec<Command> {
        let Some(target) = self.typing.take() else {
            return Vec::new();
        };
        let path = self.input_for(target).submit().trim().to_string();
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

/// `done/total` of a preparation stage; bytes (downloads, streamed corpora) in MB.
pub(crate) fn progress_counts(stage: &str, done: u64, total: u64) -> String {
    let bytes = matches!(stage, "download" | "verify") || total >= 1 << 20;
    if bytes && matches!(stage, "download" | "verify" | "read" | "encode") {
        format!("{:.1}/{:.1} MB", done as f64 / 1e6, total as f64 / 1e6)
    } else {
        format!("{done}/{total}")
    }
}

/// The device, threads and precision, as far as they are known: `cpu (2 threads, f32)`.
pub(crate) fn device_line(info: &RunInfo) -> String {
    let mut how = Vec::new();
    if info.threads > 0 {
        how.push(format!("{} threads", info.threads));
    }
    if !info.dtype.is_empty() {
        how.push(info.dtype.clone());
    }
    if how.is_empty() {
        info.device.clone()
    } else {
        format!("{} ({})", info.device, how.join(", "))
    }
}

/// What is known of a run, in one line: all of it for gptdash's runs; another
/// trainer's stream may say little (empty and zero fields are left out).
pub(crate) fn describe_run(info: &RunInfo) -> String {
    let mut head = Vec::new();
    if !info.preset.is_empty() {
        head.push(info.preset.clone());
    }
    if info.model.n_layer > 0 {
        head.push(format!(
            "({}L {}H {}d)",
            info.model.n_layer, info.model.n_head, info.model.n_embd
        ));
    }
    if !info.device.is_empty() {
        head.push(format!("on {}", device_line(info)));
    }
    let mut parts = vec![head.join(" ")];
    if info.params > 0 {
        parts.push(format!("{:.2}M params", info.params as f64 / 1e6));
    }
    if info.vocab_size > 0 {
        parts.push(format!("vocab {}", info.vocab_size));
    }
    if info.train_examples > 0 {
        parts.push(format!(
            "{} train / {} test examples",
            info.train_examples, info.test_examples
        ));
    }
    if info.max_iters > 0 {
        parts.push(format!("{} steps", info.max_iters));
    }
    parts.retain(|p| !p.is_empty());
    if parts.is_empty() {
        "started (the stream says nothing more of it)".into()
    } else {
        parts.join(", ")
    }
}

impl Page for TrainTab {
    fn scope(&self) -> Scope {
        if self.typing.is_some() {
            Scope::PathInput
        } else if self.watch.is_some() {
            Scope::Watch
        } else {
            Scope::Train
        }
    }

    fn on_action(&mut self, action: Action, shared: &mut Shared) -> Vec<Command> {
        match action {
            Action::Submit => return self.typed(shared),
            Action::Cancel => self.typing = None,
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
            Action::Save => {
                return match &self.watch {
                    // Watching: the stream so far becomes a run of its own.
                    Some(w) if w.kept.is_empty() => {
                        shared.log("nothing to save yet: the stream has sent no event");
                        Vec::new()
                    }
                    Some(w) => vec![Command::SaveRun(w.kept.clone())],
                    None => vec![Command::Save(None)],
                };
            }
            Action::ChooseCorpus => {
                self.corpora = crate::data::catalog::entries()
                    .iter()
                    .map(|e| e.status())
                    .collect();
                self.corpus_input.set(shared.settings.data.corpus.clone());
                self.typing = Some(PathInput::Corpus);
            }
            Action::OpenCheckpoint => {
                let last = match &self.last_saved {
                    Some(saved) => self
                        .locate(Path::new(saved))
                        .map_or_else(|| saved.clone(), |p| p.display().to_string()),
                    None => format!(
                        "{}/{}",
                        crate::output::DEFAULT_PARENT,
                        crate::config::BUILTIN_CORPUS
                    ),
                };
                self.checkpoint_input.set(last);
                self.typing = Some(PathInput::Checkpoint);
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

    fn field(&mut self) -> Option<&mut TextInput> {
        let target = self.typing?;
        Some(self.input_for(target))
    }

    fn on_event(&mut self, event: &Event, shared: &mut Shared, _focused: bool) -> Vec<Command> {
        match event {
            Event::State {
                state: WorkerState::Finished,
            } => shared.log("training finished; the model is ready on the Generate tab"),
            Event::Prepare { stage, done, total } => {
                if done == total {
                    shared.log(format!(
                        "prepared: {stage} ({})",
                        progress_counts(stage, *done, *total)
                    ));
                }
                self.preparing = Some((stage.clone(), *done, *total));
            }
            Event::Start(RunStart::Train(info)) => self.start(info, shared),
            Event::Restored(run) if self.watch.is_none() => self.restore(run, shared),
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
                let here = match (&self.watch, self.locate(path)) {
                    (None, _) => "",
                    (Some(_), Some(_)) => " (Ctrl-O loads it)",
                    (Some(_), None) => " (not on this machine)",
                };
                shared.log(format!(
                    "step {iter}: checkpoint saved to {}{here}",
                    path.display()
                ));
            }
            Event::Interrupted { path, .. } => self.last_saved = Some(path.display().to_string()),
            Event::Done(RunDone::Train(s)) => {
                if !s.checkpoint.as_os_str().is_empty() {
                    self.last_saved = Some(s.checkpoint.display().to_string());
                }
                let mut line = format!("run finished: {} steps", s.iter);
                if s.train_s > 0.0 {
                    line += &format!(" in {:.1} s of training", s.train_s);
                }
                if s.tokens_per_s > 0.0 {
                    line += &format!(", {:.0} tokens/s", s.tokens_per_s);
                }
                shared.log(line);
            }
            _ => {}
        }
        Vec::new()
    }

    fn draw(&self, frame: &mut Frame, area: Rect, shared: &Shared) {
        view::draw(frame, self, shared, area);
    }
}
