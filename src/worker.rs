//! The worker thread: it owns the model, tokenizer, optimizer and data, and talks to the
//! UI only through channels of plain data. Commands are read between training steps, so
//! a request made while training is answered within one step, with the current weights.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::checkpoint::{load_model, LoadedModel};
use crate::config::{DataMode, FinetuneSettings, Settings};
use crate::data::sst2;
use crate::data::tokenizer::TextTokenizer;
use crate::device::{device_name, resolve_device, set_threads};
use crate::generate::{encode_prompt, generate_from, GenerateOptions, Generation};
use crate::model::gpt::Gpt;
use crate::train::finetune::{
    class_probabilities, ClassifierInfo, EpochMetrics, Evaluation, FinetuneOptions, Finetuner,
};
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
    /// Fine-tune the model held (trained or loaded) on SST-2 as these settings say.
    StartFinetune(Box<FinetuneSettings>),
    /// P(positive) of a sentence, with the fine-tuned classifier.
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
    /// Fine-tuning the classifier on SST-2.
    FineTuning,
}

/// Facts about a run, sent once when it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub device: String,
    pub threads: usize,
    /// Precision of the matrix products: `f32` or `bf16`.
    pub dtype: &'static str,
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
    FinetuneStarted(FinetuneInfo),
    FinetuneEpoch(EpochMetrics),
    FinetuneDone {
        best_epoch: usize,
        val: Evaluation,
        path: PathBuf,
    },
    Classified {
        text: String,
        p_positive: f64,
    },
    Log(String),
    Error(String),
}

/// The data of a fine-tuning run, sent when it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneInfo {
    pub source: String,
    pub train_examples: usize,
    pub val_examples: usize,
    pub train_positive: f64,
    pub val_positive: f64,
    pub epochs: usize,
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

/// Starts the worker; checkpoints it writes on its own go under `checkpoints/`.
pub fn spawn() -> std::io::Result<WorkerHandle> {
    spawn_with_output(PathBuf::from("checkpoints"))
}

/// Starts the worker with checkpoints (end of run, fine-tuned classifier) under `out_dir`.
pub fn spawn_with_output(out_dir: PathBuf) -> std::io::Result<WorkerHandle> {
    let (command_tx, command_rx) = crossbeam_channel::unbounded();
    let (event_tx, event_rx) = crossbeam_channel::unbounded();
    let thread = std::thread::Builder::new()
        .name("gptdash-worker".into())
        .spawn(move || Worker::new(event_tx, out_dir).run(command_rx))?;
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
    Finetuning(Box<Finetuner>),
}

struct Worker {
    events: Sender<Event>,
    engine: Engine,
    state: WorkerState,
    out_dir: PathBuf,
    /// Time spent in training steps and the real tokens they saw, for the end-of-run summary.
    train_secs: f64,
    train_tokens: usize,
    /// The model held has a fine-tuned classifier head.
    classifier_ready: bool,
}

impl Worker {
    fn new(events: Sender<Event>, out_dir: PathBuf) -> Self {
        Self {
            events,
            engine: Engine::Empty,
            state: WorkerState::Idle,
            out_dir,
            train_secs: 0.0,
            train_tokens: 0,
            classifier_ready: false,
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
            let busy = matches!(self.state, WorkerState::Training | WorkerState::FineTuning);
            let command = if busy {
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
                None if self.state == WorkerState::FineTuning => {
                    self.guarded(|w| w.finetune_step())
                }
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
                if matches!(self.state, WorkerState::Training | WorkerState::FineTuning) {
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
                if matches!(self.engine, Engine::Finetuning(_)) {
                    return self.finish_finetune();
                }
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
                    Engine::Loaded(_) | Engine::Finetuning(_) => {
                        anyhow::bail!("a loaded or fine-tuned model is saved already (see the log for its folder)")
                    }
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
                self.classifier_ready = dir.join(crate::train::finetune::CLASSIFIER_FILE).is_file();
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
            Command::StartFinetune(settings) => self.start_finetune(*settings),
            Command::ClassifyText(text) => {
                let loaded = match &self.engine {
                    Engine::Loaded(l) if self.classifier_ready => l.as_ref(),
                    Engine::Finetuning(f) => &f.loaded,
                    _ => anyhow::bail!(
                        "no classifier yet: fine-tune one first (f on the Classify tab)"
                    ),
                };
                let probs = class_probabilities(loaded, &text)?;
                let p_positive = probs.get(1).copied().unwrap_or(0.0);
                Ok(self.send(Event::Classified { text, p_positive }))
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
            dtype: trainer.settings.train.dtype.name(),
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

    fn start_finetune(&mut self, settings: FinetuneSettings) -> anyhow::Result<bool> {
        let loaded = match std::mem::replace(&mut self.engine, Engine::Empty) {
            Engine::Training(t) => t.into_loaded(),
            Engine::Loaded(l) => *l,
            Engine::Finetuning(f) => f.loaded,
            Engine::Empty => anyhow::bail!(
                "no model to fine-tune: train one on the Train tab or load a checkpoint first"
            ),
        };
        // Until the new run is set up the model stays available for generation.
        self.engine = Engine::Loaded(Box::new(loaded));
        self.set_state(WorkerState::Preparing);
        let data = sst2::load_protocol(&settings, false)?;
        let (train, val, file) = (data.train, data.val, data.train_file);
        let options = FinetuneOptions::from(&settings);
        let Engine::Loaded(loaded) = std::mem::replace(&mut self.engine, Engine::Empty) else {
            anyhow::bail!("the model went away while fine-tuning was being set up");
        };
        let info = FinetuneInfo {
            source: file.display().to_string(),
            train_examples: train.len(),
            val_examples: val.len(),
            train_positive: sst2::positive_share(&train),
            val_positive: sst2::positive_share(&val),
            epochs: options.epochs,
        };
        self.engine = Engine::Finetuning(Box::new(Finetuner::new(*loaded, &train, &val, options)?));
        self.classifier_ready = false;
        self.send(Event::FinetuneStarted(info));
        self.set_state(WorkerState::FineTuning);
        Ok(true)
    }

    fn finetune_step(&mut self) -> anyhow::Result<bool> {
        let Engine::Finetuning(tuner) = &mut self.engine else {
            self.set_state(WorkerState::Idle);
            return Ok(true);
        };
        let Some(metrics) = tuner.step()? else {
            return Ok(true);
        };
        let done = tuner.is_done();
        let alive = self.send(Event::FinetuneEpoch(metrics));
        if done {
            return Ok(alive && self.finish_finetune()?);
        }
        Ok(alive)
    }

    /// Restores the best epoch, saves the classifier and keeps it for classification.
    fn finish_finetune(&mut self) -> anyhow::Result<bool> {
        let Engine::Finetuning(mut tuner) = std::mem::replace(&mut self.engine, Engine::Empty)
        else {
            return Ok(true);
        };
        let Some((best_epoch, val)) = tuner.restore_best() else {
            self.engine = Engine::Loaded(Box::new(tuner.loaded));
            self.set_state(WorkerState::Loaded);
            return Ok(self.send(Event::Log(
                "fine-tuning stopped before its first epoch ended".into(),
            )));
        };
        let info = ClassifierInfo {
            source: tuner.loaded.config.corpus.clone(),
            best_epoch,
            val,
            train_examples: tuner.train.len(),
            val_examples: tuner.val.len(),
            labels: ["negative".into(), "positive".into()],
        };
        let path = self.out_dir.join("classifier-sst2");
        let saved = tuner.save(&path, &info);
        self.engine = Engine::Loaded(Box::new(tuner.loaded));
        self.classifier_ready = true;
        self.set_state(WorkerState::Loaded);
        saved?;
        Ok(self.send(Event::FinetuneDone {
            best_epoch,
            val,
            path,
        }))
    }

    fn model(&self) -> anyhow::Result<(&Gpt, &TextTokenizer, bool)> {
        match &self.engine {
            Engine::Training(t) => Ok((
                &t.model,
                &t.tokenizer,
                t.settings.data.mode == DataMode::Sentences,
            )),
            Engine::Loaded(l) => Ok((&l.model, &l.tokenizer, l.frames_sentences())),
            Engine::Finetuning(f) => Ok((
                &f.loaded.model,
                &f.loaded.tokenizer,
                f.loaded.frames_sentences(),
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
