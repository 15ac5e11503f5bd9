//! Dashboard state and the one place it changes: [`App::update`]. Views read it; the
//! worker is reached only through the [`Command`]s `update` returns.
use std::collections::VecDeque;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::config::{Settings, PRESETS};
use crate::generate::{GenerateOptions, Generation};
use crate::train::finetune::{EpochMetrics, Evaluation};
use crate::train::lm::StepMetrics;
use crate::worker::{Command, Event, FinetuneInfo, RunInfo, WorkerState};

/// Longest loss history kept; beyond it neighbouring points are merged (averaged), so
/// memory stays bounded while the chart still covers the whole run.
pub const MAX_LOSS_POINTS: usize = 1 << 17;
/// Steps shown in the sparkline.
pub const RECENT_STEPS: usize = 240;
const LOG_LINES: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Train,
    Generate,
    Classify,
}

impl Tab {
    pub const ALL: [Tab; 3] = [Tab::Train, Tab::Generate, Tab::Classify];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Train => "1 Train",
            Tab::Generate => "2 Generate",
            Tab::Classify => "3 Classify",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|&t| t == self).unwrap_or(0)
    }

    pub fn next(self) -> Tab {
        Tab::ALL[(self.index() + 1) % Tab::ALL.len()]
    }

    pub fn prev(self) -> Tab {
        Tab::ALL[(self.index() + Tab::ALL.len() - 1) % Tab::ALL.len()]
    }
}

/// Everything that can change the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Key(KeyEvent),
    Worker(Event),
}

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
    pub state: WorkerState,
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
    /// A path being typed on the Train tab (after `c` or `o`), if any.
    pub input: Option<(PathInput, String)>,
    pub last_saved: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateTab {
    pub prompt: String,
    /// Cursor position in characters.
    pub cursor: usize,
    pub history: Vec<String>,
    pub history_pos: Option<usize>,
    /// Typing into the prompt (otherwise keys move over the grid).
    pub editing: bool,
    pub options: GenerateOptions,
    pub result: Option<Generation>,
    /// The request the shown result answers, or the one awaited.
    pub pending: Option<u64>,
    pub next_request: u64,
    /// Grid cursor: generated token (column) and rank (row).
    pub col: usize,
    pub row: usize,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClassifyTab {
    pub info: Option<FinetuneInfo>,
    pub epochs: Vec<EpochMetrics>,
    /// Best epoch, its validation result and where the classifier was saved.
    pub done: Option<(usize, Evaluation, String)>,
    /// The sentence to classify.
    pub input: String,
    pub editing: bool,
    /// The last sentence classified and its P(positive).
    pub last: Option<(String, f64)>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub settings: Settings,
    pub tab: Tab,
    pub show_help: bool,
    pub quit: bool,
    pub train: TrainTab,
    pub generate: GenerateTab,
    pub classify: ClassifyTab,
    pub log: VecDeque<String>,
}

impl App {
    pub fn new(settings: Settings) -> Self {
        // The dashboard's grid is always the top 6.
        let options = GenerateOptions {
            grid: 6,
            ..GenerateOptions::from(&settings.generate)
        };
        Self {
            tab: Tab::Train,
            show_help: false,
            quit: false,
            train: TrainTab {
                state: WorkerState::Idle,
                info: None,
                losses: LossHistory::default(),
                test_losses: Vec::new(),
                recent: VecDeque::with_capacity(RECENT_STEPS),
                last: None,
                ms_per_step: None,
                best_test: None,
                log_scale: settings.ui.log_scale,
                smoothing: settings.ui.smoothing,
                input: None,
                last_saved: None,
            },
            generate: GenerateTab {
                prompt: String::new(),
                cursor: 0,
                history: Vec::new(),
                history_pos: None,
                editing: true,
                options,
                result: None,
                pending: None,
                next_request: 1,
                col: 0,
                row: 0,
                error: None,
            },
            classify: ClassifyTab::default(),
            log: VecDeque::new(),
            settings,
        }
    }

    pub fn log(&mut self, line: impl Into<String>) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(line.into());
    }

    /// Whether keys go to a text field (then only Ctrl-C, Tab and Esc are global).
    pub fn typing(&self) -> bool {
        match self.tab {
            Tab::Generate => self.generate.editing,
            Tab::Train => self.train.input.is_some(),
            Tab::Classify => self.classify.editing,
        }
    }

    /// Estimated time left, in seconds.
    pub fn eta_secs(&self) -> Option<f64> {
        let info = self.train.info.as_ref()?;
        let iter = self.train.last.map(|m| m.iter).unwrap_or(info.start_iter);
        Some(info.max_iters.saturating_sub(iter) as f64 * self.train.ms_per_step? / 1e3)
    }

    /// Applies a message; returns the commands for the worker.
    pub fn update(&mut self, msg: Msg) -> Vec<Command> {
        match msg {
            Msg::Worker(event) => {
                self.on_event(event);
                Vec::new()
            }
            Msg::Key(key) => {
                if key.kind != KeyEventKind::Press {
                    return Vec::new();
                }
                self.on_key(key)
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::State(state) => {
                self.train.state = state;
                if state == WorkerState::Finished {
                    self.log("training finished; the model is ready on the Generate tab");
                }
            }
            Event::RunStarted(info) => {
                self.log(format!(
                    "run: {} on {} ({} threads, {}), {:.2}M params, vocab {}, {} train / {} test examples",
                    info.model,
                    info.device,
                    info.threads,
                    info.dtype,
                    info.params as f64 / 1e6,
                    info.vocab_size,
                    info.train_examples,
                    info.test_examples
                ));
                let t = &mut self.train;
                t.losses = LossHistory::default();
                t.test_losses.clear();
                t.recent.clear();
                t.last = None;
                t.ms_per_step = None;
                t.best_test = None;
                t.info = Some(info);
            }
            Event::Step(m) => {
                let t = &mut self.train;
                t.losses.push(m.iter as f64, m.loss);
                if t.recent.len() == RECENT_STEPS {
                    t.recent.pop_front();
                }
                t.recent.push_back(m.loss);
                t.ms_per_step = Some(match t.ms_per_step {
                    Some(ms) => 0.9 * ms + 0.1 * m.iter_ms,
                    None => m.iter_ms,
                });
                t.last = Some(m);
            }
            Event::Eval { iter, test_loss } => {
                self.train.test_losses.push((iter as f64, test_loss));
                if self.train.best_test.is_none_or(|b| test_loss < b) {
                    self.train.best_test = Some(test_loss);
                }
                self.log(format!("step {iter}: test loss {test_loss:.4}"));
            }
            Event::Saved { iter, path } => {
                self.train.last_saved = Some(path.display().to_string());
                self.log(format!(
                    "step {iter}: checkpoint saved to {}",
                    path.display()
                ));
            }
            Event::Generated {
                request,
                generation,
                ..
            } => {
                if self.generate.pending == Some(request) {
                    let g = &mut self.generate;
                    g.pending = None;
                    g.error = None;
                    g.col = g.col.min(generation.tokens.len().saturating_sub(1));
                    g.result = Some(generation);
                }
            }
            Event::GenerateFailed { request, error } => {
                if self.generate.pending == Some(request) {
                    self.generate.pending = None;
                    self.generate.error = Some(error.clone());
                }
                self.log(format!("generate: {error}"));
            }
            Event::FinetuneStarted(info) => {
                self.log(format!(
                    "fine-tuning on {}: train {} ({:.1}% positive), validation {} ({:.1}% positive)",
                    info.source,
                    info.train_examples,
                    100.0 * info.train_positive,
                    info.val_examples,
                    100.0 * info.val_positive
                ));
                self.classify.info = Some(info);
                self.classify.epochs.clear();
                self.classify.done = None;
                self.classify.message = None;
            }
            Event::FinetuneEpoch(m) => {
                self.log(format!(
                    "epoch {}: train loss {:.4} acc {:.3} | val loss {:.4} acc {:.3}",
                    m.epoch, m.train_loss, m.train_acc, m.val_loss, m.val_acc
                ));
                self.classify.epochs.push(m);
            }
            Event::FinetuneDone {
                best_epoch,
                val,
                path,
            } => {
                self.log(format!(
                    "fine-tuning done: best epoch {best_epoch}, validation accuracy {:.4}; saved to {}",
                    val.acc,
                    path.display()
                ));
                self.classify.done = Some((best_epoch, val, path.display().to_string()));
            }
            Event::Classified { text, p_positive } => self.classify.last = Some((text, p_positive)),
            Event::Log(line) => self.log(line),
            Event::Error(e) => {
                self.log(format!("error: {e}"));
                if self.tab == Tab::Classify {
                    self.classify.message = Some(e);
                }
            }
        }
    }

    fn on_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('q')) {
            self.quit = true;
            return vec![Command::Shutdown];
        }
        if self.show_help {
            self.show_help = false;
            return Vec::new();
        }
        match key.code {
            KeyCode::Tab => {
                self.tab = self.tab.next();
                return Vec::new();
            }
            KeyCode::BackTab => {
                self.tab = self.tab.prev();
                return Vec::new();
            }
            _ => {}
        }
        if !self.typing() {
            match key.code {
                KeyCode::Char('q') => {
                    self.quit = true;
                    return vec![Command::Shutdown];
                }
                KeyCode::Char('?') => {
                    self.show_help = true;
                    return Vec::new();
                }
                KeyCode::Char(c @ '1'..='3') => {
                    self.tab = Tab::ALL[(c as u8 - b'1') as usize];
                    return Vec::new();
                }
                _ => {}
            }
        }
        match self.tab {
            Tab::Train => self.train_key(key),
            Tab::Generate => self.generate_key(key),
            Tab::Classify => self.classify_key(key),
        }
    }

    fn train_key(&mut self, key: KeyEvent) -> Vec<Command> {
        if let Some((target, input)) = &mut self.train.input {
            match key.code {
                KeyCode::Enter => {
                    let (target, path) = (*target, input.trim().to_string());
                    self.train.input = None;
                    if path.is_empty() {
                        return Vec::new();
                    }
                    match target {
                        PathInput::Corpus => {
                            self.log(format!("corpus set to {path} (space starts a new run)"));
                            self.settings.data.corpus = path;
                        }
                        PathInput::Checkpoint => return vec![Command::Load(path.into())],
                    }
                }
                KeyCode::Esc => self.train.input = None,
                KeyCode::Backspace => {
                    input.pop();
                }
                KeyCode::Char(c) => input.push(c),
                _ => {}
            }
            return Vec::new();
        }
        let state = self.train.state;
        match key.code {
            KeyCode::Char(' ') => match state {
                WorkerState::Training => vec![Command::Pause],
                WorkerState::Paused => vec![Command::Resume],
                WorkerState::Preparing | WorkerState::FineTuning => Vec::new(),
                WorkerState::Idle | WorkerState::Finished | WorkerState::Loaded => {
                    vec![Command::Start(Box::new(self.settings.clone()))]
                }
            },
            KeyCode::Char('x') => vec![Command::Stop],
            KeyCode::Char('s') => vec![Command::Save(None)],
            KeyCode::Char('c') => {
                self.train.input = Some((PathInput::Corpus, self.settings.data.corpus.clone()));
                Vec::new()
            }
            KeyCode::Char('o') => {
                let last = self
                    .train
                    .last_saved
                    .clone()
                    .unwrap_or_else(|| "checkpoints/small".into());
                self.train.input = Some((PathInput::Checkpoint, last));
                Vec::new()
            }
            KeyCode::Char('p') => {
                let i = PRESETS
                    .iter()
                    .position(|(n, _)| *n == self.settings.model.preset);
                let next = i.map(|i| (i + 1) % PRESETS.len()).unwrap_or(0);
                self.settings.model.preset = PRESETS[next].0.to_string();
                self.log(format!(
                    "model preset {} (space starts a new run)",
                    PRESETS[next].0
                ));
                Vec::new()
            }
            KeyCode::Char('l') => {
                self.train.log_scale = !self.train.log_scale;
                Vec::new()
            }
            KeyCode::Char('e') => {
                self.train.smoothing = if self.train.smoothing > 0.0 { 0.0 } else { 0.9 };
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn request_generation(&mut self, forced: Vec<u32>, prompt: String) -> Vec<Command> {
        let g = &mut self.generate;
        let request = g.next_request;
        g.next_request += 1;
        g.pending = Some(request);
        g.error = None;
        vec![Command::Generate {
            request,
            prompt,
            forced,
            options: g.options.clone(),
        }]
    }

    fn generate_key(&mut self, key: KeyEvent) -> Vec<Command> {
        if self.generate.editing {
            return self.prompt_key(key);
        }
        let g = &mut self.generate;
        let columns = g.result.as_ref().map(|r| r.tokens.len()).unwrap_or(0);
        match key.code {
            KeyCode::Left => g.col = g.col.saturating_sub(1),
            KeyCode::Right => g.col = (g.col + 1).min(columns.saturating_sub(1)),
            KeyCode::Up => g.row = g.row.saturating_sub(1),
            KeyCode::Down => g.row = (g.row + 1).min(g.options.grid.saturating_sub(1)),
            KeyCode::Home => g.col = 0,
            KeyCode::End => g.col = columns.saturating_sub(1),
            KeyCode::Enter => return self.branch(),
            KeyCode::Char('i') | KeyCode::Char('/') | KeyCode::Char('e') => g.editing = true,
            KeyCode::Char('g') => return self.regenerate(),
            KeyCode::Char('t') => {
                g.options.temperature =
                    ((g.options.temperature - 0.1).max(0.0) * 10.0).round() / 10.0
            }
            KeyCode::Char('T') => {
                g.options.temperature =
                    ((g.options.temperature + 0.1).min(5.0) * 10.0).round() / 10.0
            }
            KeyCode::Char('n') => {
                g.options.max_new_tokens = g.options.max_new_tokens.saturating_sub(1).max(1)
            }
            KeyCode::Char('N') => {
                g.options.max_new_tokens = (g.options.max_new_tokens + 1).min(200)
            }
            KeyCode::Char('m') => g.options.sample = !g.options.sample,
            KeyCode::Char('k') => {
                g.options.top_k = match g.options.top_k {
                    Some(k) if k > 1 => Some(k - 1),
                    _ => None,
                }
            }
            KeyCode::Char('K') => {
                g.options.top_k = Some(g.options.top_k.map(|k| k + 1).unwrap_or(1))
            }
            KeyCode::Char('r') => g.options.seed = g.options.seed.wrapping_add(1),
            _ => {}
        }
        Vec::new()
    }

    fn regenerate(&mut self) -> Vec<Command> {
        let prompt = self.generate.prompt.clone();
        if prompt.trim().is_empty() {
            self.generate.error = Some("type a prompt first (i to edit)".into());
            return Vec::new();
        }
        self.request_generation(Vec::new(), prompt)
    }

    /// Regenerates with the grid cell under the cursor forced at its step.
    fn branch(&mut self) -> Vec<Command> {
        let g = &self.generate;
        let Some(result) = &g.result else {
            return Vec::new();
        };
        let Some(token) = result.tokens.get(g.col) else {
            return Vec::new();
        };
        let Some(alternative) = token.top.get(g.row) else {
            return Vec::new();
        };
        let mut forced: Vec<u32> = result.tokens[..g.col].iter().map(|t| t.id).collect();
        forced.push(alternative.id);
        let prompt = result.prompt.clone();
        self.log(format!(
            "branch: step {} forced to {:?}",
            g.col + 1,
            alternative.text
        ));
        self.request_generation(forced, prompt)
    }

    fn prompt_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let g = &mut self.generate;
        let len = g.prompt.chars().count();
        let byte_at =
            |s: &str, i: usize| s.char_indices().nth(i).map(|(b, _)| b).unwrap_or(s.len());
        match key.code {
            KeyCode::Enter => {
                let prompt = g.prompt.clone();
                if prompt.trim().is_empty() {
                    g.error = Some("the prompt is empty: type a few words, e.g. He and I".into());
                    return Vec::new();
                }
                if g.history.last() != Some(&prompt) {
                    g.history.push(prompt.clone());
                }
                g.history_pos = None;
                g.col = 0;
                g.row = 0;
                return self.request_generation(Vec::new(), prompt);
            }
            KeyCode::Esc => g.editing = false,
            KeyCode::Char(c) => {
                let at = byte_at(&g.prompt, g.cursor);
                g.prompt.insert(at, c);
                g.cursor += 1;
            }
            KeyCode::Backspace if g.cursor > 0 => {
                let at = byte_at(&g.prompt, g.cursor - 1);
                g.prompt.remove(at);
                g.cursor -= 1;
            }
            KeyCode::Delete if g.cursor < len => {
                let at = byte_at(&g.prompt, g.cursor);
                g.prompt.remove(at);
            }
            KeyCode::Left => g.cursor = g.cursor.saturating_sub(1),
            KeyCode::Right => g.cursor = (g.cursor + 1).min(len),
            KeyCode::Home => g.cursor = 0,
            KeyCode::End => g.cursor = len,
            KeyCode::Up if !g.history.is_empty() => {
                let pos = match g.history_pos {
                    Some(p) => p.saturating_sub(1),
                    None => g.history.len() - 1,
                };
                g.history_pos = Some(pos);
                g.prompt = g.history[pos].clone();
                g.cursor = g.prompt.chars().count();
            }
            KeyCode::Down => {
                if let Some(p) = g.history_pos {
                    if p + 1 < g.history.len() {
                        g.history_pos = Some(p + 1);
                        g.prompt = g.history[p + 1].clone();
                    } else {
                        g.history_pos = None;
                        g.prompt.clear();
                    }
                    g.cursor = g.prompt.chars().count();
                }
            }
            _ => {}
        }
        Vec::new()
    }

    fn classify_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let c = &mut self.classify;
        if c.editing {
            match key.code {
                KeyCode::Enter => {
                    let text = c.input.trim().to_string();
                    if !text.is_empty() {
                        return vec![Command::ClassifyText(text)];
                    }
                }
                KeyCode::Esc => c.editing = false,
                KeyCode::Backspace => {
                    c.input.pop();
                }
                KeyCode::Char(ch) => c.input.push(ch),
                _ => {}
            }
            return Vec::new();
        }
        match key.code {
            KeyCode::Char('f') => vec![Command::StartFinetune(Box::new(
                self.settings.finetune.clone(),
            ))],
            KeyCode::Char(' ') => match self.train.state {
                WorkerState::FineTuning => vec![Command::Pause],
                WorkerState::Paused => vec![Command::Resume],
                _ => Vec::new(),
            },
            KeyCode::Char('x') => vec![Command::Stop],
            KeyCode::Char('i') | KeyCode::Char('/') | KeyCode::Enter => {
                c.editing = true;
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Candidate, GeneratedToken};
    use crossterm::event::KeyEventState;

    fn key(code: KeyCode) -> Msg {
        Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn ch(c: char) -> Msg {
        key(KeyCode::Char(c))
    }

    fn app() -> App {
        App::new(Settings::default())
    }

    fn metrics(iter: u64, loss: f64) -> StepMetrics {
        StepMetrics {
            iter,
            loss,
            iter_ms: 10.0,
            tokens_per_s: 1000.0,
            lr: 1e-3,
            grad_norm: 1.0,
            tokens: 10,
        }
    }

    fn generation(n: usize) -> Generation {
        let tokens = (0..n)
            .map(|i| GeneratedToken {
                id: i as u32 * 10,
                text: format!(" t{i}"),
                prob: 0.5,
                top: (0..6)
                    .map(|r| Candidate {
                        id: i as u32 * 10 + r,
                        text: format!(" a{r}"),
                        prob: 0.5 / (r + 1) as f64,
                    })
                    .collect(),
                rest: 0.0,
                forced: false,
            })
            .collect();
        Generation {
            prompt: "He".into(),
            text: "He ...".into(),
            tokens,
            mean_logprob: -0.69,
            perplexity: 2.0,
        }
    }

    #[test]
    fn tabs_switch_by_number_tab_and_backtab() {
        let mut a = app();
        a.update(ch('3'));
        assert_eq!(a.tab, Tab::Classify);
        a.update(key(KeyCode::Tab));
        assert_eq!(a.tab, Tab::Train);
        a.update(key(KeyCode::BackTab));
        assert_eq!(a.tab, Tab::Classify);
        a.update(ch('1'));
        assert_eq!(a.tab, Tab::Train);
    }

    #[test]
    fn q_and_ctrl_c_quit_and_stop_the_worker() {
        let mut a = app();
        assert_eq!(a.update(ch('q')), vec![Command::Shutdown]);
        assert!(a.quit);
        let mut b = app();
        b.tab = Tab::Generate; // typing: q is a letter, Ctrl-C still quits
        b.update(ch('q'));
        assert!(!b.quit);
        assert_eq!(b.generate.prompt, "q");
        b.update(Msg::Key(KeyEvent::new(
            KeyCode::Char('c'),
            KeyModifiers::CONTROL,
        )));
        assert!(b.quit);
    }

    #[test]
    fn key_releases_are_ignored() {
        let mut a = app();
        let release = KeyEvent {
            code: KeyCode::Char('3'),
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Release,
            state: KeyEventState::NONE,
        };
        a.update(Msg::Key(release));
        assert_eq!(a.tab, Tab::Train);
    }

    #[test]
    fn help_overlay_opens_and_any_key_closes_it() {
        let mut a = app();
        a.update(ch('?'));
        assert!(a.show_help);
        a.update(ch('3'));
        assert!(!a.show_help);
        assert_eq!(a.tab, Tab::Train, "the closing key does nothing else");
    }

    #[test]
    fn space_starts_pauses_and_resumes() {
        let mut a = app();
        let cmds = a.update(ch(' '));
        assert!(matches!(cmds.as_slice(), [Command::Start(_)]));
        a.update(Msg::Worker(Event::State(WorkerState::Training)));
        assert_eq!(a.update(ch(' ')), vec![Command::Pause]);
        a.update(Msg::Worker(Event::State(WorkerState::Paused)));
        assert_eq!(a.update(ch(' ')), vec![Command::Resume]);
        assert_eq!(a.update(ch('x')), vec![Command::Stop]);
        assert_eq!(a.update(ch('s')), vec![Command::Save(None)]);
    }

    #[test]
    fn corpus_and_preset_choices_feed_the_next_run() {
        let mut a = app();
        a.update(ch('c'));
        assert!(a.typing());
        for _ in 0..5 {
            a.update(key(KeyCode::Backspace));
        }
        for c in "my.txt".chars() {
            a.update(ch(c));
        }
        a.update(key(KeyCode::Enter));
        assert_eq!(a.settings.data.corpus, "my.txt");
        a.update(ch('p'));
        assert_eq!(a.settings.model.preset, "gpt-mini");
        let cmds = a.update(ch(' '));
        match &cmds[0] {
            Command::Start(s) => {
                assert_eq!(s.data.corpus, "my.txt");
                assert_eq!(s.model.preset, "gpt-mini");
            }
            other => panic!("{other:?}"),
        }
        a.update(ch('c'));
        a.update(key(KeyCode::Esc));
        assert!(!a.typing());
    }

    #[test]
    fn o_loads_a_checkpoint() {
        let mut a = app();
        a.update(ch('o'));
        assert!(a.typing());
        assert_eq!(
            a.update(key(KeyCode::Enter)),
            vec![Command::Load("checkpoints/small".into())]
        );
        assert!(!a.typing());
    }

    #[test]
    fn chart_toggles() {
        let mut a = app();
        a.update(ch('l'));
        assert!(a.train.log_scale);
        a.update(ch('e'));
        assert!(a.train.smoothing > 0.0);
        a.update(ch('e'));
        assert_eq!(a.train.smoothing, 0.0);
    }

    #[test]
    fn worker_events_update_the_train_state() {
        let mut a = app();
        a.update(Msg::Worker(Event::RunStarted(RunInfo {
            device: "cpu".into(),
            threads: 2,
            dtype: "f32",
            params: 1000,
            vocab_size: 300,
            corpus: "small".into(),
            model: "gpt-nano".into(),
            train_examples: 10,
            test_examples: 2,
            max_iters: 100,
            start_iter: 0,
        })));
        for i in 1..=3 {
            a.update(Msg::Worker(Event::Step(metrics(i, 3.0 - i as f64 * 0.5))));
        }
        assert_eq!(a.train.losses.points.len(), 3);
        assert_eq!(a.train.recent.len(), 3);
        assert_eq!(a.train.last.unwrap().iter, 3);
        assert!((a.eta_secs().unwrap() - 97.0 * 10.0 / 1e3).abs() < 1e-9);
        a.update(Msg::Worker(Event::Eval {
            iter: 3,
            test_loss: 1.7,
        }));
        a.update(Msg::Worker(Event::Eval {
            iter: 6,
            test_loss: 1.9,
        }));
        assert_eq!(a.train.best_test, Some(1.7));
        assert_eq!(a.train.test_losses.len(), 2);
        a.update(Msg::Worker(Event::Saved {
            iter: 3,
            path: "checkpoints/small".into(),
        }));
        assert_eq!(a.train.last_saved.as_deref(), Some("checkpoints/small"));
        a.update(Msg::Worker(Event::State(WorkerState::Finished)));
        assert_eq!(a.train.state, WorkerState::Finished);
        a.update(Msg::Worker(Event::Log("hello".into())));
        a.update(Msg::Worker(Event::Error("bad".into())));
        assert!(a.log.iter().any(|l| l == "hello") && a.log.iter().any(|l| l == "error: bad"));
    }

    #[test]
    fn loss_history_stays_bounded() {
        let mut h = LossHistory::default();
        for i in 0..(MAX_LOSS_POINTS + 10) {
            h.push(i as f64, 1.0);
        }
        assert!(h.points.len() <= MAX_LOSS_POINTS);
        assert!(h.points.last().unwrap().0 > MAX_LOSS_POINTS as f64 - 2.0);
    }

    #[test]
    fn prompt_editing_history_and_generate_request() {
        let mut a = app();
        a.tab = Tab::Generate;
        for c in "He nd I".chars() {
            a.update(ch(c));
        }
        for _ in 0..4 {
            a.update(key(KeyCode::Left));
        }
        a.update(ch('a'));
        assert_eq!(a.generate.prompt, "He and I");
        a.update(key(KeyCode::End));
        a.update(key(KeyCode::Backspace));
        a.update(ch('I'));
        let cmds = a.update(key(KeyCode::Enter));
        match cmds.as_slice() {
            [Command::Generate {
                request,
                prompt,
                forced,
                options,
            }] => {
                assert_eq!(prompt, "He and I");
                assert!(forced.is_empty());
                assert_eq!(options.grid, 6);
                assert_eq!(a.generate.pending, Some(*request));
            }
            other => panic!("{other:?}"),
        }
        a.generate.prompt.clear();
        a.update(key(KeyCode::Up));
        assert_eq!(a.generate.prompt, "He and I");
        a.update(key(KeyCode::Down));
        assert_eq!(a.generate.prompt, "");
        assert!(a.update(key(KeyCode::Enter)).is_empty());
        assert!(a.generate.error.is_some());
    }

    #[test]
    fn results_answer_only_their_request_and_errors_show() {
        let mut a = app();
        a.generate.pending = Some(2);
        a.update(Msg::Worker(Event::Generated {
            request: 1,
            prompt: "He".into(),
            generation: generation(3),
        }));
        assert!(a.generate.result.is_none(), "a stale answer is dropped");
        a.update(Msg::Worker(Event::Generated {
            request: 2,
            prompt: "He".into(),
            generation: generation(3),
        }));
        assert_eq!(a.generate.result.as_ref().unwrap().tokens.len(), 3);
        a.generate.pending = Some(3);
        a.update(Msg::Worker(Event::GenerateFailed {
            request: 3,
            error: "no model yet".into(),
        }));
        assert_eq!(a.generate.error.as_deref(), Some("no model yet"));
        assert_eq!(a.generate.pending, None);
    }

    #[test]
    fn grid_cursor_options_and_branching() {
        let mut a = app();
        a.tab = Tab::Generate;
        a.generate.editing = false;
        a.generate.result = Some(generation(4));
        a.update(key(KeyCode::Right));
        a.update(key(KeyCode::Right));
        a.update(key(KeyCode::Down));
        assert_eq!((a.generate.col, a.generate.row), (2, 1));
        for _ in 0..10 {
            a.update(key(KeyCode::Right));
            a.update(key(KeyCode::Down));
        }
        assert_eq!((a.generate.col, a.generate.row), (3, 5));
        a.update(key(KeyCode::Left));
        let cmds = a.update(key(KeyCode::Enter));
        match cmds.as_slice() {
            [Command::Generate { forced, prompt, .. }] => {
                assert_eq!(prompt, "He");
                assert_eq!(forced, &vec![0, 10, 25]); // tokens 0 and 1, then rank 6 of step 3
            }
            other => panic!("{other:?}"),
        }
        let before = a.generate.options.clone();
        a.update(ch('T'));
        a.update(ch('N'));
        a.update(ch('m'));
        a.update(ch('K'));
        a.update(ch('r'));
        let o = &a.generate.options;
        assert!((o.temperature - (before.temperature + 0.1)).abs() < 1e-9);
        assert_eq!(o.max_new_tokens, before.max_new_tokens + 1);
        assert_eq!(o.sample, !before.sample);
        assert_eq!(o.top_k, Some(1));
        assert_eq!(o.seed, before.seed + 1);
        a.update(ch('k'));
        assert_eq!(a.generate.options.top_k, None);
        a.update(ch('i'));
        assert!(a.generate.editing);
    }

    #[test]
    fn classify_tab_fine_tunes_and_classifies() {
        let mut a = app();
        a.update(ch('3'));
        assert_eq!(
            a.update(ch('f')),
            vec![Command::StartFinetune(Box::new(
                a.settings.finetune.clone()
            ))]
        );
        a.update(Msg::Worker(Event::Error("needs SST-2".into())));
        assert_eq!(a.classify.message.as_deref(), Some("needs SST-2"));
        a.update(Msg::Worker(Event::FinetuneStarted(FinetuneInfo {
            source: "train.tsv".into(),
            train_examples: 960,
            val_examples: 240,
            train_positive: 0.55,
            val_positive: 0.55,
            epochs: 10,
        })));
        assert!(a.classify.message.is_none());
        let m = EpochMetrics {
            epoch: 1,
            train_loss: 0.6,
            train_acc: 0.6,
            val_loss: 0.55,
            val_acc: 0.7,
            secs: 3.0,
        };
        a.update(Msg::Worker(Event::FinetuneEpoch(m)));
        assert_eq!(a.classify.epochs, vec![m]);
        let val = Evaluation {
            loss: 0.5,
            acc: 0.8,
            confusion: [[90, 18], [30, 102]],
        };
        a.update(Msg::Worker(Event::FinetuneDone {
            best_epoch: 1,
            val,
            path: "checkpoints/classifier-sst2".into(),
        }));
        assert_eq!(a.classify.done.as_ref().map(|d| d.0), Some(1));
        a.update(Msg::Worker(Event::State(WorkerState::FineTuning)));
        assert_eq!(a.update(ch(' ')), vec![Command::Pause]);
        assert_eq!(a.update(ch('x')), vec![Command::Stop]);
        a.update(ch('i'));
        assert!(a.typing());
        for c in "great fun".chars() {
            a.update(ch(c));
        }
        assert_eq!(
            a.update(key(KeyCode::Enter)),
            vec![Command::ClassifyText("great fun".into())]
        );
        a.update(Msg::Worker(Event::Classified {
            text: "great fun".into(),
            p_positive: 0.9,
        }));
        assert_eq!(a.classify.last, Some(("great fun".into(), 0.9)));
        a.update(key(KeyCode::Esc));
        assert!(!a.typing());
    }
}
