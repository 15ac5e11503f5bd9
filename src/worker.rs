//! The worker thread: it owns the model, tokenizer, optimizer and data, and talks to the
//! dashboard only through channels of plain data ([`crate::protocol`]). Commands are read
//! between training steps, so a request made while training is answered within one step,
//! with the current weights. The runs own their rules; the worker only advances them
//! and forwards their events.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::thread::JoinHandle;

use anyhow::{bail, Context};
use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::checkpoint::{load_model_with_dropout, Base};
use crate::classifier::sst2_labels;
use crate::config::{FinetuneSettings, Settings};
use crate::data::sst2;
use crate::device::{device_name, resolve_device};
use crate::protocol::{Command, Event, RunDone, WorkerState};
use crate::train::finetune::{FinetuneOptions, Finetuner};
use crate::train::lm::LmTrainer;
use crate::train::plan::{Output, Plan};

/// The dashboard's handle on the worker thread.
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
    spawn_with_output(PathBuf::from(crate::output::DEFAULT_PARENT))
}

/// Starts the worker with checkpoints (training runs, fine-tuned classifier) under `out_dir`.
pub fn spawn_with_output(out_dir: PathBuf) -> std::io::Result<WorkerHandle> {
    spawn_with(out_dir, "auto".into())
}

/// Starts the worker: checkpoints under `out_dir`, models loaded and fine-tuned on
/// `device` (`train.device`: auto, cpu, cuda, cuda:N; a training run's own settings say
/// where it trains, and become the device from then on).
pub fn spawn_with(out_dir: PathBuf, device: String) -> std::io::Result<WorkerHandle> {
    let (command_tx, command_rx) = crossbeam_channel::unbounded();
    let (event_tx, event_rx) = crossbeam_channel::unbounded();
    let thread = std::thread::Builder::new()
        .name("gptdash-worker".into())
        .spawn(move || Worker::new(event_tx, out_dir, device).run(command_rx))?;
    Ok(WorkerHandle {
        commands: command_tx,
        events: event_rx,
        thread: Some(thread),
    })
}

mod engine;

/// The dashboard's fine-tuning runs: `<out>/classifier-sst2-<date>-<n>`, linked as
/// `<out>/classifier-sst2`.
const CLASSIFIER_RUNS: &str = "classifier-sst2";

pub use engine::NoModel;
use engine::{Engine, Pace, Pinned};

struct Worker {
    events: Sender<Event>,
    engine: Engine,
    out_dir: PathBuf,
    /// `train.device`, where models are loaded and fine-tuned.
    device: String,
    /// `train.threads` of the last run started (0, auto: its share of the cores).
    threads: usize,
    /// The state the dashboard was last told, so only changes are sent.
    told: WorkerState,
    /// Weights kept to compare inspections against (the Inspect tab's pin).
    pinned: Option<Pinned>,
}

impl Worker {
    fn new(events: Sender<Event>, out_dir: PathBuf, device: String) -> Self {
        Self {
            events,
            engine: Engine::Empty,
            out_dir,
            device,
            threads: 0,
            told: WorkerState::Idle,
            pinned: None,
        }
    }

    /// Sends an event; `false` when the dashboard is gone (the worker's signal to stop).
    fn send(&self, event: Event) -> bool {
        self.events.send(event).is_ok()
    }

    fn tell(&mut self, state: WorkerState) {
        if self.told != state {
            self.told = state;
            self.send(Event::State { state });
        }
    }

    /// Tells the dashboard the state the engine is in.
    fn publish(&mut self) {
        self.tell(self.engine.state());
    }

    fn run(mut self, commands: Receiver<Command>) {
        loop {
            // A running run: take every waiting command, then one step. Otherwise sleep
            // until a command comes.
            let busy = matches!(
                self.engine.state(),
                WorkerState::Training | WorkerState::FineTuning
            );
            let command = if busy {
                match commands.try_recv() {
                    Ok(c) => Some(c),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return,
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
                None => self.guarded(Worker::advance),
            };
            self.publish();
            if !keep_going {
                return;
            }
        }
    }

    /// Runs `f`, turning an error or a panic into an error event (the dashboard stays up).
    /// An error pauses a run; a panic drops the model, which may be half-updated.
    fn guarded(&mut self, f: impl FnOnce(&mut Self) -> anyhow::Result<bool>) -> bool {
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(Ok(keep_going)) => keep_going,
            Ok(Err(e)) => {
                self.engine.pause();
                self.send(Event::error(format!("{e:#}")))
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                self.engine = Engine::Empty;
                self.send(Event::error(format!(
                    "the worker hit an internal error and dropped its model: {what}"
                )))
            }
        }
    }

    /// Sends a run's events; `false` when the dashboard is gone.
    fn forward(&self, events: Vec<Event>) -> bool {
        events.into_iter().all(|e| self.send(e))
    }

    /// One step of the run held, and what its events mean for what the worker holds.
    fn advance(&mut self) -> anyhow::Result<bool> {
        let events = match &mut self.engine {
            Engine::Training(run, _) => run.advance()?,
            Engine::Finetuning(run, _) => run.advance()?,
            _ => return Ok(true),
        };
        let diverged = events.iter().find_map(|e| match e {
            Event::Diverged { message, .. } => Some(message.clone()),
            _ => None,
        });
        if let Some(message) = diverged {
            // The weights hold NaNs: nothing worth generating from or saving.
            self.engine = Engine::Empty;
            return Ok(self.forward(events) && self.send(Event::error(message)));
        }
        if matches!(&self.engine, Engine::Finetuning(run, _) if run.is_done()) {
            return Ok(self.end_finetune(events));
        }
        Ok(self.forward(events))
    }

    fn handle(&mut self, command: Command) -> anyhow::Result<bool> {
        match command {
            Command::Start(settings) => self.start(*settings),
            Command::Pause => {
                self.engine.pause();
                Ok(true)
            }
            Command::Resume => {
                Ok(self.engine.resume() || self.send(Event::log("nothing to resume")))
            }
            Command::Stop => Ok(match &mut self.engine {
                Engine::Finetuning(run, _) => {
                    let events = run.stop()?;
                    self.end_finetune(events)
                }
                Engine::Training(run, pace) if *pace != Pace::Stopped && !run.is_done() => {
                    let events = run.interrupt()?;
                    *pace = Pace::Stopped;
                    self.forward(events)
                        && self.send(Event::log(
                            "training stopped and saved; the model stays loaded for generation (space resumes)",
                        ))
                }
                _ => true,
            }),
            Command::Save(dir) => {
                let saved = self.engine.save(dir)?;
                Ok(self.send(saved))
            }
            Command::Load(dir) => {
                // Opening another model drops the one held: never one still training.
                if let Some(message) = self.still_training() {
                    return Ok(self.send(Event::error(format!(
                        "{message}; then open {}",
                        dir.display()
                    ))));
                }
                self.tell(WorkerState::Preparing);
                let (engine, message) = Engine::load(&dir, &self.device)?;
                self.engine = engine;
                self.unpin();
                let alive = self.send(Event::log(message));
                // Its history, when it has one: the curves come back on the Train tab.
                let history =
                    crate::output::resolve_link(&dir).join(crate::checkpoint::HISTORY_FILE);
                if let Ok(h) = crate::runs::RunHistory::read(&history, true) {
                    let restored = crate::protocol::RestoredRun::of(dir.clone(), &h);
                    return Ok(alive && self.send(Event::Restored(Box::new(restored))));
                }
                Ok(alive)
            }
            Command::Generate {
                request,
                prompt,
                forced,
                options,
            } => {
                let event = match catch_unwind(AssertUnwindSafe(|| {
                    self.engine.generate(&prompt, &forced, &options)
                })) {
                    Ok(Ok(generation)) => Event::Generated {
                        request: Some(request),
                        generation,
                    },
                    Ok(Err(e)) => Event::GenerateFailed {
                        request,
                        no_model: e.downcast_ref::<NoModel>().is_some(),
                        error: format!("{e:#}"),
                    },
                    Err(_) => Event::GenerateFailed {
                        request,
                        error: "generation hit an internal error".into(),
                        no_model: false,
                    },
                };
                Ok(self.send(event))
            }
            Command::StartFinetune(settings) => self.start_finetune(*settings),
            Command::ClassifyText(text) => Ok(self.send(self.engine.classify(text)?)),
            Command::Inspect { request, text, ask } => {
                let event = match catch_unwind(AssertUnwindSafe(|| {
                    self.engine.inspect(&text, &ask, self.pinned.as_ref())
                })) {
                    Ok(Ok(mut report)) => {
                        report.request = Some(request);
                        Event::Inspected(Box::new(report))
                    }
                    Ok(Err(e)) => Event::InspectFailed {
                        request,
                        no_model: e.downcast_ref::<NoModel>().is_some(),
                        error: format!("{e:#}"),
                    },
                    Err(_) => Event::InspectFailed {
                        request,
                        error: "inspection hit an internal error".into(),
                        no_model: false,
                    },
                };
                Ok(self.send(event))
            }
            Command::Pin(true) => {
                let pin = self.engine.pin()?;
                let at = pin
                    .step
                    .map_or_else(|| "of the model held".into(), |s| format!("at step {s}"));
                self.pinned = Some(pin);
                Ok(self.send(Event::log(format!(
                    "pinned the weights {at}: the Inspect tab compares each token's loss with them"
                ))))
            }
            Command::Pin(false) => {
                self.pinned = None;
                Ok(self.send(Event::log("unpinned the weights")))
            }
            Command::SaveRun(events) => {
                let (dir, _lock) = crate::output::claim_fresh(&self.out_dir, "watched")?;
                let mut history = crate::runs::History::open(&dir)?;
                history.record(&events)?;
                history.sync()?;
                Ok(self.send(Event::log(format!(
                    "saved the watched stream as a run: {} ({} events; the Runs tab lists it)",
                    dir.display(),
                    events.len()
                ))))
            }
            Command::Shutdown => Ok(false),
        }
    }

    /// A new model replaces the one held: weights pinned from the old one go.
    fn unpin(&mut self) {
        if self.pinned.take().is_some() {
            self.send(Event::log("the pinned weights were dropped with the model"));
        }
    }

    /// The run held, when it is still going (training or paused, not stopped): it is
    /// not to be dropped or taken. The refusal is an error event that leaves the run as
    /// it was (an `Err` would pause it).
    fn still_training(&self) -> Option<String> {
        match &self.engine {
            Engine::Training(run, pace) if !run.is_done() && *pace != Pace::Stopped => Some(format!(
                "the model is still training (step {} of {}); press x to stop and save the run first (it can be resumed later)",
                run.step, run.settings.train.max_iters
            )),
            _ => None,
        }
    }

    fn start(&mut self, settings: Settings) -> anyhow::Result<bool> {
        if let Some(message) = self.still_training() {
            return Ok(self.send(Event::error(message)));
        }
        self.device = settings.train.device.clone();
        self.threads = settings.train.threads;
        self.engine = Engine::Empty;
        self.unpin();
        self.tell(WorkerState::Preparing);
        self.send(Event::log(format!(
            "preparing corpus {} and model {}",
            settings.data.corpus, settings.model.preset
        )));
        let plan = Plan::new(
            settings,
            Output::Fresh(self.out_dir.clone()),
            "the dashboard's settings",
        )?;
        let tx = self.events.clone();
        let mut run = LmTrainer::new_with_progress(plan, &mut |e| {
            let _ = tx.send(e);
        })?;
        let alive = self.send(run.begin()?);
        self.engine = Engine::Training(Box::new(run), Pace::Running);
        Ok(alive)
    }

    fn start_finetune(&mut self, settings: FinetuneSettings) -> anyhow::Result<bool> {
        // The run held is kept: fine-tuning (of it, or of another base that would replace
        // it) waits until it is over or stopped — and so saved, optimizer state and all.
        if let Some(message) = self.still_training() {
            return Ok(self.send(Event::error(format!(
                "{message}; then f fine-tunes a copy of it"
            ))));
        }
        let base = Base::parse(&settings.base);
        // The classifier's folder first: nothing is taken from the engine until it is set.
        let (out, _lock) = crate::output::claim_fresh(&self.out_dir, CLASSIFIER_RUNS)?;
        let loaded = match base.locate()? {
            // Another base: the model held gives way.
            Some((dir, _)) => {
                self.tell(WorkerState::Preparing);
                self.unpin();
                let device = resolve_device(&self.device).context("train.device")?;
                self.send(Event::log(format!("fine-tuning base: {}", base.describe())));
                load_model_with_dropout(&dir, device, settings.dropout)?
            }
            None => match std::mem::replace(&mut self.engine, Engine::Empty) {
                Engine::Training(run, _) => run.into_loaded(),
                Engine::Loaded(model, _) => *model,
                Engine::Finetuning(run, _) => run.loaded,
                Engine::Empty => bail!(
                    "no model to fine-tune: train one on the Train tab, load a checkpoint, or choose another base (b on the Classify tab)"
                ),
            },
        };
        // Until the new run is set up the model stays available for generation.
        self.engine = Engine::Loaded(Box::new(loaded), None);
        self.tell(WorkerState::Preparing);
        let data = sst2::load_protocol(&settings, false)?;
        let Engine::Loaded(loaded, _) = std::mem::replace(&mut self.engine, Engine::Empty) else {
            bail!("the model went away while fine-tuning was being set up");
        };
        let device = device_name(loaded.model.device());
        let options = FinetuneOptions::from(&settings);
        // The run's record names the model it started from: the one held, by its origin.
        let mut recorded = settings.clone();
        if matches!(base, Base::Held) {
            recorded.base = format!("{} (held)", loaded.origin);
        }
        let mut run = Finetuner::new(*loaded, &data.train, &data.val, options, out)?;
        run.link_latest(self.out_dir.join(CLASSIFIER_RUNS));
        let seat = crate::budget::Seat::take(self.threads);
        tch::set_num_threads(seat.threads() as i32);
        let info = run.info(&data.train_file, settings.samples, device, seat.threads());
        let start = run.begin(info, &recorded, seat)?;
        self.engine = Engine::Finetuning(Box::new(run), Pace::Running);
        Ok(self.send(start))
    }

    /// Forwards the end of a fine-tuning run and keeps its model (a classifier when the
    /// run saved one) for generation and classification.
    fn end_finetune(&mut self, events: Vec<Event>) -> bool {
        let saved = events
            .iter()
            .any(|e| matches!(e, Event::Done(RunDone::Finetune(_))));
        if let Engine::Finetuning(run, _) = std::mem::replace(&mut self.engine, Engine::Empty) {
            let labels = saved.then(sst2_labels);
            self.engine = Engine::Loaded(Box::new(run.loaded), labels);
        }
        self.forward(events)
    }
}
