//! The worker thread: it owns the model, tokenizer, optimizer and data, and talks to the
//! UI only through channels of plain data. Commands are read between training steps, so
//! a request made while training is answered within one step, with the current weights.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::checkpoint::{load_model, LoadedModel};
use crate::config::{DataMode, Settings};
use crate::data::tokenizer::TextTokenizer;
use crate::device::{device_name, resolve_device, set_threads};
use crate::generate::{encode_prompt, generate_from, GenerateOptions, Generation};
use crate::model::gpt::Gpt;
use crate::train::lm::{LmTrainer, StepMetrics};

/// UI → worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Start a fresh training run with these settings (replacing any model held).
    Start(Box<Settings>),
    Pause,
    Resume,
    /// End the run; the model stays for generation.
    Stop,
    /// Save a checkpoint (to this directory, or the run's default).
    Save(Option<PathBuf>),
    /// Load a checkpoint for generation (and resume training if it has optimizer state).
    Load(PathBuf),
    /// Generate after `prompt`, first emitting `forced` tokens (branching).
    Generate {
        request: u64,
        prompt: String,
        forced: Vec<u32>,
        options: GenerateOptions,
    },
    /// Fine-tuning is a later engine; the worker answers what it needs.
    StartFinetune,
    ClassifyText(String),
    Shutdown,
}

/// What the worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Idle,
    Preparing,
    Training,
    Paused,
    /// Training reached max_iters or was stopped; a model is loaded.
    Finished,
    /// A checkpoint is loaded for generation.
    Loaded,
}

/// Facts about a run, sent once when it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub device: String,
    pub threads: usize,
    pub params: i64,
    pub vocab_size: i64,
    pub corpus: String,
    pub model: String,
    pub train_examples: usize,
    pub test_examples: usize,
    pub max_iters: u64,
    pub start_iter: u64,
}

/// Worker → UI.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    State(WorkerState),
    RunStarted(RunInfo),
    Step(StepMetrics),
    Eval {
        iter: u64,
        test_loss: f64,
    },
    Saved {
        iter: u64,
        path: PathBuf,
    },
    Generated {
        request: u64,
        prompt: String,
        generation: Generation,
    },
    GenerateFailed {
        request: u64,
        error: String,
    },
    Log(String),
    Error(String),
}

/// The UI's handle on the worker thread.
pub struct WorkerHandle {
    pub commands: Sender<Command>,
    pub events: Receiver<Event>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Stops the worker and waits for it.
    pub fn shutdown(mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn spawn() -> std::io::Result<WorkerHandle> {
    let (command_tx, command_rx) = crossbeam_channel::unbounded();
    let (event_tx, event_rx) = crossbeam_channel::unbounded();
    let thread = std::thread::Builder::new()
        .name("gptdash-worker".into())
        .spawn(move || Worker::new(event_tx).run(command_rx))?;
    Ok(WorkerHandle {
        commands: command_tx,
        events: event_rx,
        thread: Some(thread),
    })
}

enum Engine {
    Empty,
    Training(Box<LmTrainer>),
    Loaded(Box<LoadedModel>),
}

struct Worker {
    events: Sender<Event>,
    engine: Engine,
    state: WorkerState,
    out_dir: PathBuf,
    /// Time spent in training steps and the real tokens they saw, for the end-of-run summary.
    train_secs: f64,
    train_tokens: usize,
}

impl Worker {
    fn new(events: Sender<Event>) -> Self {
        Self {
            events,
            engine: Engine::Empty,
            state: WorkerState::Idle,
            out_dir: PathBuf::from("checkpoints"),
            train_secs: 0.0,
            train_tokens: 0,
        }
    }

    /// Sends an event; `false` when the UI is gone (the worker's signal to stop).
    fn send(&self, event: Event) -> bool {
        self.events.send(event).is_ok()
    }

    fn set_state(&mut self, state: WorkerState) {
        if self.state != state {
            self.state = state;
            self.send(Event::State(state));
        }
    }

    fn run(mut self, commands: Receiver<Command>) {
        loop {
            // Training: take every waiting command, then one step. Otherwise: sleep until a command.
            let command = if self.state == WorkerState::Training {
                match commands.try_recv() {
                    Ok(c) => Some(c),
                    Err(crossbeam_channel::TryRecvError::Empty) => None,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => return,
                }
            } else {
                match commands.recv() {
                    Ok(c) => Some(c),
                    Err(_) => return,
                }
            };
            let keep_going = match command {
                Some(Command::Shutdown) => return,
                Some(c) => self.guarded(|w| w.handle(c)),
                None => self.guarded(|w| w.train_step()),
            };
            if !keep_going {
                return;
            }
        }
    }

    /// Runs `f`, turning an error or a panic into an error event (the UI stays up).
    fn guarded(&mut self, f: impl FnOnce(&mut Self) -> anyhow::Result<bool>) -> bool {
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(Ok(keep_going)) => keep_going,
            Ok(Err(e)) => {
                if self.state == WorkerState::Training || self.state == WorkerState::Preparing {
                    let next = if matches!(self.engine, Engine::Training(_)) {
                        WorkerState::Paused
                    } else {
                        WorkerState::Idle
                    };
                    self.set_state(next);
                }
                self.send(Event::Error(format!("{e:#}")))
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                self.engine = Engine::Empty;
                self.set_state(WorkerState::Idle);
                self.send(Event::Error(format!(
                    "the worker hit an internal error and dropped its model: {what}"
                )))
            }
        }
    }

    fn handle(&mut self, command: Command) -> anyhow::Result<bool> {
        match command {
            Command::Start(settings) => self.start(*settings),
            Command::Pause => {
                if self.state == WorkerState::Training {
                    self.set_state(WorkerState::Paused);
                }
                Ok(true)
            }
            Command::Resume => {
                match (&self.engine, self.state) {
                    (Engine::Training(t), WorkerState::Paused) if !t.is_done() => {
                        self.set_state(WorkerState::Training)
                    }
                    (Engine::Training(t), WorkerState::Finished) if !t.is_done() => {
                        self.set_state(WorkerState::Training)
                    }
                    _ => {
                        self.send(Event::Log("nothing to resume".into()));
                    }
                }
                Ok(true)
            }
            Command::Stop => {
                if matches!(self.state, WorkerState::Training | WorkerState::Paused) {
                    self.set_state(WorkerState::Finished);
                    self.send(Event::Log(
                        "training stopped; the model stays loaded for generation".into(),
                    ));
                }
                Ok(true)
            }
            Command::Save(dir) => {
                match &self.engine {
                    Engine::Training(t) => {
                        let dir = dir.unwrap_or_else(|| self.out_dir.join(&t.corpus_name));
                        t.save(&dir)?;
                        let iter = t.step;
                        self.send(Event::Saved { iter, path: dir });
                    }
                    Engine::Loaded(_) => anyhow::bail!("a loaded checkpoint is already saved"),
                    Engine::Empty => anyhow::bail!("nothing to save: start training first"),
                }
                Ok(true)
            }
            Command::Load(dir) => {
                self.set_state(WorkerState::Preparing);
                let device = resolve_device("auto")?;
                let loaded = load_model(&dir, device)?;
                self.send(Event::Log(format!(
                    "loaded {} ({:.2}M parameters) on {}",
                    dir.display(),
                    loaded.config.parameters as f64 / 1e6,
                    device_name(device)
                )));
                self.engine = Engine::Loaded(Box::new(loaded));
                self.set_state(WorkerState::Loaded);
                Ok(true)
            }
            Command::Generate {
                request,
                prompt,
                forced,
                options,
            } => {
                let event = match catch_unwind(AssertUnwindSafe(|| {
                    self.generate(&prompt, &forced, &options)
                })) {
                    Ok(Ok(generation)) => Event::Generated {
                        request,
                        prompt,
                        generation,
                    },
                    Ok(Err(e)) => Event::GenerateFailed {
                        request,
                        error: format!("{e:#}"),
                    },
                    Err(_) => Event::GenerateFailed {
                        request,
                        error: "generation hit an internal error".into(),
                    },
                };
                Ok(self.send(event))
            }
            Command::StartFinetune | Command::ClassifyText(_) => {
                anyhow::bail!("sentiment fine-tuning is not available yet: it arrives with the SST-2 engine (finetune issue)")
            }
            Command::Shutdown => Ok(false),
        }
    }

    fn start(&mut self, settings: Settings) -> anyhow::Result<bool> {
        self.engine = Engine::Empty;
        self.set_state(WorkerState::Preparing);
        self.send(Event::Log(format!(
            "preparing corpus {} and model {}",
            settings.data.corpus, settings.model.preset
        )));
        let threads = set_threads(settings.train.threads);
        let trainer = LmTrainer::new(settings)?;
        let c = trainer.model.config;
        let info = RunInfo {
            device: device_name(trainer.device),
            threads,
            params: trainer.parameters(),
            vocab_size: c.vocab_size,
            corpus: trainer.corpus_name.clone(),
            model: format!(
                "{} ({}L {}H {}d)",
                trainer.settings.model.preset, c.n_layer, c.n_head, c.n_embd
            ),
            train_examples: trainer.train.len(),
            test_examples: trainer.test.len(),
            max_iters: trainer.settings.train.max_iters,
            start_iter: trainer.step,
        };
        self.engine = Engine::Training(Box::new(trainer));
        self.train_secs = 0.0;
        self.train_tokens = 0;
        self.send(Event::RunStarted(info));
        self.set_state(WorkerState::Training);
        Ok(true)
    }

    fn train_step(&mut self) -> anyhow::Result<bool> {
        let Engine::Training(trainer) = &mut self.engine else {
            self.set_state(WorkerState::Idle);
            return Ok(true);
        };
        let started = std::time::Instant::now();
        let metrics = trainer.step()?;
        self.train_secs += started.elapsed().as_secs_f64();
        self.train_tokens += metrics.tokens;
        let eval = if trainer.eval_due() {
            Some(trainer.evaluate()?)
        } else {
            None
        };
        let done = trainer.is_done();
        let iter = trainer.step;
        let save_path =
            (done || trainer.save_due()).then(|| self.out_dir.join(&trainer.corpus_name));
        if let Some(path) = &save_path {
            trainer.save(path)?;
        }
        let mut alive = self.send(Event::Step(metrics));
        if !metrics.loss.is_finite() {
            self.set_state(WorkerState::Paused);
            return Ok(self.send(Event::Error(format!(
                "loss is {} at step {}: training paused (try a lower learning rate)",
                metrics.loss, metrics.iter
            ))));
        }
        if let Some(test_loss) = eval {
            alive &= self.send(Event::Eval { iter, test_loss });
        }
        if let Some(path) = save_path {
            alive &= self.send(Event::Saved { iter, path });
        }
        if done {
            alive &= self.send(Event::Log(format!(
                "run finished: {iter} steps in {:.1} s of training, {:.0} tokens/s",
                self.train_secs,
                self.train_tokens as f64 / self.train_secs.max(1e-9)
            )));
            self.set_state(WorkerState::Finished);
        }
        Ok(alive)
    }

    fn model(&self) -> anyhow::Result<(&Gpt, &TextTokenizer, bool)> {
        match &self.engine {
            Engine::Training(t) => Ok((
                &t.model,
                &t.tokenizer,
                t.settings.data.mode == DataMode::Sentences,
            )),
            Engine::Loaded(l) => Ok((
                &l.model,
                &l.tokenizer,
                l.config.data_mode == DataMode::Sentences,
            )),
            Engine::Empty => anyhow::bail!(
                "no model yet: start training (space on the Train tab) or load a checkpoint"
            ),
        }
    }

    fn generate(
        &self,
        prompt: &str,
        forced: &[u32],
        options: &GenerateOptions,
    ) -> anyhow::Result<Generation> {
        let (model, tokenizer, sentences) = self.model()?;
        let ids = encode_prompt(tokenizer, model, prompt)?;
        let options = GenerateOptions {
            sentence_context: sentences,
            ..options.clone()
        };
        generate_from(model, tokenizer, prompt, &ids, forced, &options)
    }
}
