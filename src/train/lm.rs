//! Language-model training as a run that owns its rules: [`LmTrainer::advance`] takes one
//! step and does what follows it (evaluate when due, save when due, save and summarise at
//! the end, stop on a non-finite loss), returning the events. The CLI and the dashboard's
//! worker only loop, forward the events, and decide when to pause or stop.
//!
//! **A non-finite loss** ends the run at that step, in the dashboard as headless: its
//! weights are not saved (the last checkpoint, if any, stays as it was) and a `diverged`
//! event names the step. `gptdash train` then exits with code 2; the dashboard shows the
//! error and drops the broken model.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use tch::{nn, Device, Tensor};

use crate::anatomy::WeightStat;
use crate::budget::Seat;
use crate::checkpoint::{self, CheckpointConfig, TrainState};
use crate::config::Settings;
use crate::data::corpus::{Batch, EpochOrder, Examples};
use crate::data::tokenizer::TextTokenizer;
use crate::device::device_name;
use crate::model::gpt::{parameter_count, Gpt, GptConfig};
use crate::protocol::{
    Event, ModelShape, RunDone, RunInfo, RunKind, RunRecord, RunStart, StepMetrics, TrainSummary,
};
use crate::rng::mix;
use crate::runs::History;
use crate::train::optim::AdamWConfig;
use crate::train::plan::{Output, Plan};
use crate::train::schedule::learning_rate;
use crate::train::step::{LmStep, StepKind};

mod data;
mod stats;
use data::prepare_data;
pub(crate) use data::{prepare_only, Ready};
use stats::{GpuWatch, RunStats};

/// The corpus, tokenizer, model and optimizer of one training run.
pub struct LmTrainer {
    pub settings: Settings,
    device: Device,
    /// libtorch's CPU threads (the plan's).
    threads: usize,
    pub corpus_name: String,
    /// `small` or the corpus path, as stored in checkpoints.
    corpus_spec: String,
    pub tokenizer: TextTokenizer,
    vs: nn::VarStore,
    pub model: Gpt,
    /// The optimizer and the step implementation (fused unless a test asks otherwise).
    stepper: LmStep,
    train: Examples,
    /// The training examples' order in the current epoch.
    order: EpochOrder,
    test: Examples,
    /// The evaluation batches as device tensors `(inputs, targets, real tokens)`, made
    /// on the first evaluation.
    eval_set: Option<Vec<(Tensor, Tensor, usize)>>,
    train_sentences: usize,
    test_sentences: usize,
    /// Optimizer steps taken so far.
    pub step: u64,
    best_test_loss: Option<f64>,
    last_train_loss: Option<f64>,
    /// Where the run saves its checkpoints.
    out: PathBuf,
    /// The lock on `out`, held while the run lives.
    lock: Option<checkpoint::OutputLock>,
    /// A link to point at `out` after each save there (`checkpoints/<corpus>` for a run
    /// in a folder of its own).
    latest: Option<PathBuf>,
    /// NVML readings of a CUDA run's device.
    gpu: Option<GpuWatch>,
    stats: RunStats,
    /// The loss stopped being a number; the run is over.
    diverged: bool,
    /// The weights' statistics right after initialisation (the model view's "init").
    init_stats: BTreeMap<String, WeightStat>,
    /// The run's history in its folder, from [`LmTrainer::begin`] on.
    history: Option<History>,
    /// The folder a resumed run came from (its history goes on where the run does).
    resumed_from: Option<PathBuf>,
    /// The run's share of the machine's cores (given back while paused).
    seat: Option<Seat>,
}

impl LmTrainer {
    #[cfg(test)]
    /// A fresh run of `plan`: reads the corpus, trains (or loads) the tokenizer, builds
    /// the model, claims the plan's output folder.
    pub(crate) fn new(plan: Plan) -> Result<Self> {
        Self::new_with_progress(plan, &mut |_| {})
    }

    /// [`LmTrainer::new`], reporting the data preparation's progress (`prepare` events).
    pub(crate) fn new_with_progress(plan: Plan, progress: &mut dyn FnMut(Event)) -> Result<Self> {
        let created = Instant::now();
        let given = match &plan.settings().data.tokenizer {
            Some(path) => {
                Some(TextTokenizer::from_file(path).context("data.tokenizer / --tokenizer")?)
            }
            None => None,
        };
        let (mut settings, device, dims, threads, output) = plan.into_parts();
        let block = settings.model.block_size as usize;
        let ready = prepare_data(&mut settings, block, given, progress)?;
        let config = GptConfig {
            vocab_size: ready.tokenizer.vocab_size() as i64,
            block_size: settings.model.block_size,
            n_layer: dims.n_layer,
            n_head: dims.n_head,
            n_embd: dims.n_embd,
            dropout: settings.model.dropout,
            n_classes: settings.model.n_classes,
            layer_norm_eps: 1e-5,
            tie_lm_head: false,
        };
        let mut run = Self::build(settings, device, threads, ready, config, created)?;
        run.claim(output)?;
        Ok(run)
    }

    /// Continues a run from a training checkpoint: same model, tokenizer, corpus, step
    /// and optimizer state. `adjust` may change loop settings (more steps, another
    /// device); model sizes and data settings always come from the checkpoint.
    pub fn resume(dir: &Path, adjust: impl FnOnce(&mut Settings)) -> Result<Self> {
        let created = Instant::now();
        let dir = &crate::output::resolve_link(dir);
        checkpoint::recover(dir)?;
        let ckpt = checkpoint::read_config(dir)?;
        let state = checkpoint::read_train_state(dir)?;
        let mut settings = state.settings.clone();
        adjust(&mut settings);
        settings.data = state.settings.data.clone();
        settings.model = state.settings.model.clone();
        settings.data.corpus = ckpt.corpus.clone();
        let origin = format!("resuming from {}", dir.display());
        let plan = Plan::new(settings, Output::Folder(dir.to_path_buf()), &origin)?;
        let (mut settings, device, _, threads, output) = plan.into_parts();
        if state.step >= settings.train.max_iters {
            bail!(
                "checkpoint {} is already at step {} of max_iters {}; pass a larger --max-iters to train further",
                dir.display(),
                state.step,
                settings.train.max_iters
            );
        }
        let tokenizer = TextTokenizer::from_file(&dir.join(checkpoint::TOKENIZER_FILE))?;
        let block = ckpt.model.block_size as usize;
        let ready = prepare_data(&mut settings, block, Some(tokenizer), &mut |_| {})
            .with_context(|| format!("the corpus of checkpoint {}", dir.display()))?;
        let mut trainer = Self::build(settings, device, threads, ready, ckpt.model, created)?;
        trainer.claim(output)?;
        let model = trainer.model.config;
        checkpoint::load_weights(&mut trainer.vs, &dir.join(checkpoint::MODEL_FILE), &model)?;
        trainer
            .stepper
            .load(&dir.join(checkpoint::OPTIMIZER_FILE), state.step)?;
        trainer.step = state.step;
        trainer.resumed_from = Some(dir.to_path_buf());
        trainer.best_test_loss = state.best_test_loss;
        trainer.last_train_loss = state.last_train_loss;
        Ok(trainer)
    }

    fn build(
        settings: Settings,
        device: Device,
        threads: usize,
        ready: Ready,
        config: GptConfig,
        created: Instant,
    ) -> Result<Self> {
        // A fixed thread count as asked; auto (0), this run's share of the cores.
        let seat = Seat::take(settings.train.threads);
        let threads = if settings.train.threads == 0 {
            seat.threads()
        } else {
            threads
        };
        tch::set_num_threads(threads as i32);
        let Ready {
            name,
            spec,
            tokenizer,
            train,
            test,
            train_texts: train_sentences,
            test_texts: test_sentences,
        } = ready;
        if train.is_empty() {
            bail!("corpus {name}: no training example has two or more tokens");
        }
        if test.is_empty() {
            bail!("corpus {name}: the test split is empty; use a larger corpus or a smaller data.train_fraction");
        }
        tch::manual_seed(settings.train.seed as i64);
        let vs = nn::VarStore::new(device);
        let mut model = Gpt::new(&vs.root(), config);
        let init_stats = crate::anatomy::weight_stats(&vs);
        model.set_compute_kind(settings.train.dtype.kind());
        let t = &settings.train;
        let stepper = LmStep::new(
            StepKind::Fused,
            &vs,
            AdamWConfig {
                beta1: t.beta1,
                beta2: t.beta2,
                eps: 1e-8,
                weight_decay: t.weight_decay,
            },
        )?;
        Ok(Self {
            device,
            threads,
            out: PathBuf::from(crate::output::DEFAULT_PARENT).join(&name),
            corpus_name: name,
            corpus_spec: spec,
            tokenizer,
            vs,
            model,
            stepper,
            order: EpochOrder::new(settings.train.seed),
            train,
            test,
            eval_set: None,
            train_sentences,
            test_sentences,
            step: 0,
            best_test_loss: None,
            last_train_loss: None,
            lock: None,
            latest: None,
            gpu: None,
            stats: RunStats::new(created),
            diverged: false,
            init_stats,
            history: None,
            resumed_from: None,
            seat: Some(seat),
            settings,
        })
    }

    /// Claims the plan's output folder.
    fn claim(&mut self, output: Output) -> Result<()> {
        match output {
            Output::Fresh(parent) => self.claim_fresh(&parent),
            Output::Folder(dir) => self.set_out(dir),
            #[cfg(test)]
            Output::Unclaimed => Ok(()),
        }
    }

    /// Where the run saves: `checkpoints/<corpus name>` unless set here (a resumed run:
    /// the folder it resumed from). Locks it for this run: another process writing it,
    /// or a place that cannot be written, is an error now rather than after training.
    pub(crate) fn set_out(&mut self, out: PathBuf) -> Result<()> {
        // The new lock before the old one goes (guards are counted: the same folder
        // again stays locked throughout); a link is saved through, into its run folder.
        let out = crate::output::resolve_link(&out);
        self.lock = Some(checkpoint::OutputLock::acquire(&out)?);
        self.out = out;
        self.latest = None;
        Ok(())
    }

    /// Saves into a new folder under `parent`, `<corpus name>-<YYYYMMDD>-<n>`, and
    /// links `parent/<corpus name>` to it once a checkpoint is there.
    fn claim_fresh(&mut self, parent: &Path) -> Result<()> {
        let (out, lock) = crate::output::claim_fresh(parent, &self.corpus_name)?;
        self.lock = Some(lock);
        self.out = out;
        self.latest = Some(parent.join(&self.corpus_name));
        Ok(())
    }

    pub(crate) fn out(&self) -> &Path {
        &self.out
    }

    /// Starts (or, resumed, continues) the run's history in its folder — a record of
    /// its kind and settings, then its `start` event — and returns that event. Every
    /// event [`LmTrainer::advance`] and [`LmTrainer::interrupt`] return is written there
    /// too.
    pub(crate) fn begin(&mut self) -> Result<Event> {
        // A save interrupted between its two renames is put back first: the folder
        // the history goes into must be the checkpoint's.
        checkpoint::recover(&self.out)?;
        let mut history = match &self.resumed_from {
            // Resumed in its own folder: the history goes on.
            Some(from) if crate::output::same_folder(from, &self.out) => History::open(&self.out)?,
            // Resumed into another folder: the history so far comes along (over one
            // `--overwrite` replaces).
            Some(from) => History::create_from(&self.out, &from.join(checkpoint::HISTORY_FILE))?,
            // A new run: a new history.
            None => History::create(&self.out)?,
        };
        let record = RunRecord {
            kind: RunKind::LanguageModel,
            started: RunRecord::now(),
            settings: Some(Box::new(self.settings.clone())),
            finetune: None,
            resumed_at: self.step,
        };
        let start = Event::Start(RunStart::Train(Box::new(self.info())));
        history.record(&[Event::Run(Box::new(record)), start.clone()])?;
        self.history = Some(history);
        Ok(start)
    }

    /// Writes events to the run's history (see [`crate::runs::keep`]).
    fn record(&mut self, events: &mut Vec<Event>) {
        crate::runs::keep(&mut self.history, events);
    }

    /// Saves a checkpoint now (the dashboard's `s`) and writes it to the history, as a
    /// save by the run's own rules is.
    pub(crate) fn save_now(&mut self) -> Result<Event> {
        let event = self.checkpoint()?;
        let mut events = vec![event.clone()];
        self.record(&mut events);
        Ok(event)
    }

    /// Saves into another folder (a checkpoint of its own, with the history so far).
    pub(crate) fn save_elsewhere(&mut self, dir: &Path) -> Result<Event> {
        self.save(dir)?;
        let event = Event::Checkpoint {
            iter: self.step,
            path: dir.to_path_buf(),
        };
        let mut events = vec![event.clone()];
        self.record(&mut events);
        Ok(event)
    }

    /// Gives the run's share of the cores back while it does not compute (paused):
    /// other runs take them. The next step takes a seat again.
    pub(crate) fn release_cpu(&mut self) {
        self.seat = None;
    }

    /// The run's facts, for its `start` event.
    pub(crate) fn info(&self) -> RunInfo {
        let threads = self.threads;
        let c = self.model.config;
        RunInfo {
            device: device_name(self.device),
            threads,
            dtype: self.settings.train.dtype.name().into(),
            params: self.parameters(),
            vocab_size: c.vocab_size,
            train_examples: self.train.len(),
            test_examples: self.test.len(),
            train_tokens: self.train.target_tokens(),
            train_sentences: self.train_sentences,
            test_sentences: self.test_sentences,
            corpus: self.corpus_spec.clone(),
            corpus_name: self.corpus_name.clone(),
            mode: self.settings.data.mode(),
            preset: self.settings.model.preset.clone(),
            model: ModelShape {
                n_layer: c.n_layer,
                n_head: c.n_head,
                n_embd: c.n_embd,
                block_size: c.block_size,
                dropout: c.dropout,
            },
            max_iters: self.settings.train.max_iters,
            batch_size: self.settings.train.batch_size,
            start_iter: self.step,
            out: self.out.clone(),
        }
    }

    /// One training step and what the run's rules make of it: `iter`; `eval` when due;
    /// a `checkpoint` when `save_interval` says so; at `max_iters` the final checkpoint and
    /// `done`. A non-finite loss gives `diverged` and ends the run without saving.
    pub(crate) fn advance(&mut self) -> Result<Vec<Event>> {
        let started = Instant::now();
        let result = self.advance_inner(started);
        self.stats.busy_secs += started.elapsed().as_secs_f64();
        let mut events = result?;
        if !self.is_done() {
            self.share_cpu(&mut events);
        }
        self.record(&mut events);
        Ok(events)
    }

    /// Takes the run's seat again after a pause or stop, and follows its share of the
    /// cores as other runs come and go.
    fn share_cpu(&mut self, events: &mut Vec<Event>) {
        let seat = match self.seat.take() {
            Some(seat) => seat,
            // Back from a pause: a seat again, and its share now.
            None => {
                let seat = Seat::take(self.settings.train.threads);
                if seat.threads() != self.threads {
                    self.threads = seat.threads();
                    tch::set_num_threads(self.threads as i32);
                }
                seat
            }
        };
        let seat = self.seat.insert(seat);
        if let Some(threads) = seat.rebalance() {
            self.threads = threads;
            events.push(Event::log(format!(
                "{} other gptdash runs share this machine's cores: training on {threads} threads now",
                seat.others()
            )));
        }
    }

    fn advance_inner(&mut self, started: Instant) -> Result<Vec<Event>> {
        if self.is_done() {
            bail!(
                "the run is over (step {} of {})",
                self.step,
                self.settings.train.max_iters
            );
        }
        let mut m = self.step()?;
        let gpu = GpuWatch::read(&mut self.gpu, self.device);
        m.gpu_mib = self.gpu.as_ref().and_then(|g| g.mib);
        let mut events = vec![Event::Iter(m)];
        events.extend(gpu.map(Event::Gpu));
        if !m.loss.is_finite() {
            self.diverged = true;
            events.push(Event::Diverged {
                iter: m.iter,
                loss: m.loss,
                message: format!(
                    "training diverged: loss is {} at step {}; the run stopped and that step was not saved; try a lower learning rate (--lr, train.learning_rate)",
                    m.loss, m.iter
                ),
            });
            return Ok(events);
        }
        self.stats.record(&m);
        if self.eval_due() {
            let test_loss = self.evaluate()?;
            self.stats.last_test_loss = Some(test_loss);
            events.push(Event::Eval {
                iter: m.iter,
                test_loss,
            });
        }
        if self.is_done() {
            events.extend(self.finish(started)?);
        } else if self.save_due() {
            events.push(self.checkpoint()?);
        }
        Ok(events)
    }

    /// Saves to the run's folder and reports it.
    pub(crate) fn checkpoint(&mut self) -> Result<Event> {
        let out = self.out.clone();
        self.save(&out)?;
        Ok(Event::Checkpoint {
            iter: self.step,
            path: self.out.clone(),
        })
    }

    /// Ends the run before `max_iters` (Ctrl-C, the dashboard's stop): a checkpoint to
    /// resume from, `interrupted`, and the summary. Training may continue afterwards.
    pub(crate) fn interrupt(&mut self) -> Result<Vec<Event>> {
        // Stopped: its cores go to other runs until it steps again.
        self.seat = None;
        let mut events = vec![self.checkpoint()?];
        events.push(Event::Interrupted {
            iter: self.step,
            path: self.out.clone(),
        });
        events.push(self.summary(0.0));
        self.record(&mut events);
        Ok(events)
    }

    /// The final checkpoint and the summary.
    fn finish(&mut self, advancing_since: Instant) -> Result<Vec<Event>> {
        self.seat = None;
        let checkpoint = self.checkpoint()?;
        Ok(vec![
            checkpoint,
            self.summary(advancing_since.elapsed().as_secs_f64()),
        ])
    }

    /// `done`; `pending_secs` is time of the current `advance` not yet counted.
    fn summary(&self, pending_secs: f64) -> Event {
        let s = &self.stats;
        let train_s = s.busy_secs + pending_secs;
        Event::Done(RunDone::Train(TrainSummary {
            iter: self.step,
            train_loss: s.recent.iter().sum::<f64>() / s.recent.len().max(1) as f64,
            test_loss: s.last_test_loss,
            best_test_loss: self.best_test_loss,
            tokens_per_s: s.tokens as f64 / train_s.max(1e-9),
            step_tokens_per_s: s.tokens as f64 / s.step_secs.max(1e-9),
            train_s,
            wall_s: s.created.elapsed().as_secs_f64(),
            checkpoint: self.out.clone(),
        }))
    }

    pub(crate) fn parameters(&self) -> i64 {
        parameter_count(&self.vs)
    }

    /// The weights (to copy them, e.g. to pin them for comparison).
    pub(crate) fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The weights' statistics as initialised (a resumed run builds its model with the
    /// run's seed before loading the checkpoint: the same initialisation).
    pub(crate) fn init_stats(&self) -> &BTreeMap<String, WeightStat> {
        &self.init_stats
    }

    /// Training example `n` (wrapping) as the trainer feeds it, and how many there are.
    pub(crate) fn train_example(&self, n: usize) -> Option<(Vec<i64>, usize)> {
        let t = &self.train;
        (!t.is_empty()).then(|| (t.row(n % t.len()), t.len()))
    }

    /// How the corpus became examples.
    pub(crate) fn data_mode(&self) -> crate::config::DataMode {
        self.settings.data.mode()
    }

    /// The `n`-th test example worth looking at (at least 8 tokens when the split has
    /// such; `n` wraps), at most a block of tokens: what the Inspect tab reads by default.
    pub(crate) fn test_example(&self, n: usize) -> Option<Vec<u32>> {
        let t = &self.test;
        let long = (0..t.len()).filter(|&i| t.row_len(i) >= 8).count();
        let i = if long == 0 {
            (!t.is_empty()).then(|| n % t.len())?
        } else {
            (0..t.len()).filter(|&i| t.row_len(i) >= 8).nth(n % long)?
        };
        let block = self.model.config.block_size as usize;
        Some(t.row(i).iter().take(block).map(|&i| i as u32).collect())
    }

    /// Whether the model learns from single `<|endoftext|>`-framed sentences (`sentences`
    /// mode), so generation frames its context the same way.
    pub(crate) fn frames_sentences(&self) -> bool {
        self.settings.data.mode().frames_text()
    }

    /// At `max_iters`, or diverged.
    pub(crate) fn is_done(&self) -> bool {
        self.diverged || self.step >= self.settings.train.max_iters
    }

    /// Whether the step just completed should be followed by an evaluation.
    fn eval_due(&self) -> bool {
        self.step > 0
            && (self.step.is_multiple_of(self.settings.train.eval_interval) || self.is_done())
    }

    /// Whether the step just completed should be followed by a checkpoint.
    fn save_due(&self) -> bool {
        let every = self.settings.train.save_interval;
        every > 0 && self.step > 0 && self.step.is_multiple_of(every)
    }

    fn tensors(&self, batch: &Batch) -> (Tensor, Tensor) {
        let shape = [batch.rows as i64, batch.cols as i64];
        let x = Tensor::from_slice(&batch.inputs)
            .view(shape)
            .to_device(self.device);
        let y = Tensor::from_slice(&batch.targets)
            .view(shape)
            .to_device(self.device);
        (x, y)
    }

    /// One optimizer step on the next batch. Dropout is seeded from (seed, step), and
    /// the batch is a function of the step, so a resumed run repeats an uninterrupted one.
    pub(crate) fn step(&mut self) -> Result<StepMetrics> {
        let start = Instant::now();
        let t = &self.settings.train;
        let it = self.step;
        let lr = learning_rate(
            it,
            t.learning_rate,
            t.warmup_iters,
            t.lr_decay,
            t.min_lr,
            t.max_iters,
        );
        let batch = self
            .train
            .train_batch(it, t.batch_size as usize, &mut self.order);
        let (x, y) = self.tensors(&batch);
        tch::manual_seed((mix(t.seed, it) >> 1) as i64);

        let out = self
            .stepper
            .step(&self.model, &x, &y, lr, t.grad_clip)
            .with_context(|| format!("training step {}", it + 1))?;
        self.step += 1;

        // The one host synchronisation of a step: read loss and gradient norm together.
        let values = Tensor::stack(&[out.loss, out.grad_norm.to_device(self.device)], 0)
            .to_device(Device::Cpu);
        let values: Vec<f32> = Vec::<f32>::try_from(&values).map_err(|e| anyhow!("{e}"))?;
        let secs = start.elapsed().as_secs_f64();
        let loss = values[0] as f64;
        self.last_train_loss = Some(loss);
        Ok(StepMetrics {
            iter: self.step,
            loss,
            iter_ms: secs * 1e3,
            tokens_per_s: batch.real_tokens as f64 / secs.max(1e-9),
            lr,
            grad_norm: values[1] as f64,
            tokens: batch.real_tokens,
            gpu_mib: None,
        })
    }

    /// Mean loss per real token over the test split (at most `train.eval_batches` batches).
    /// The batches are padded and moved to the device once, on the first evaluation;
    /// the losses are summed on the device and read once.
    pub(crate) fn evaluate(&mut self) -> Result<f64> {
        if self.eval_set.is_none() {
            let t = &self.settings.train;
            let set = self
                .test
                .eval_batches(t.batch_size as usize, t.eval_batches as usize)
                .iter()
                .map(|batch| {
                    let (x, y) = self.tensors(batch);
                    (x, y, batch.real_tokens)
                })
                .collect();
            self.eval_set = Some(set);
        }
        let set = self.eval_set.as_deref().unwrap_or_default();
        let count: usize = set.iter().map(|(_, _, tokens)| tokens).sum();
        let total = tch::no_grad(|| {
            set.iter()
                .map(|(x, y, tokens)| {
                    Gpt::lm_loss(&self.model.forward(x, false), y).to_kind(tch::Kind::Double)
                        * *tokens as f64
                })
                .reduce(|a, b| a + b)
                .map_or(0.0, |sum| sum.double_value(&[]))
        });
        let mean = total / count.max(1) as f64;
        if mean.is_finite() && self.best_test_loss.is_none_or(|best| mean < best) {
            self.best_test_loss = Some(mean);
        }
        Ok(mean)
    }

    pub(crate) fn checkpoint_config(&self) -> CheckpointConfig {
        CheckpointConfig {
            format_version: checkpoint::FORMAT_VERSION,
            model: self.model.config,
            eot_id: self.tokenizer.eot_id(),
            corpus: self.corpus_spec.clone(),
            data_mode: self.settings.data.mode(),
            parameters: self.parameters(),
            text_form: crate::data::normalize::TextForm::of(&self.settings.data),
        }
    }

    /// The trained model and tokenizer, without the optimizer and data (for fine-tuning).
    pub(crate) fn into_loaded(self) -> checkpoint::LoadedModel {
        let config = self.checkpoint_config();
        checkpoint::LoadedModel {
            vs: self.vs,
            model: self.model,
            tokenizer: self.tokenizer,
            config,
            origin: format!("the model trained on {}", self.corpus_spec),
            prompt: None,
        }
    }

    /// Writes a complete training checkpoint to `dir`, atomically.
    pub(crate) fn save(&mut self, dir: &Path) -> Result<()> {
        let own = crate::output::same_folder(dir, &self.out);
        let mut history = self.history.take();
        let mut carried = Ok(());
        let saved = checkpoint::write_atomically(dir, |tmp| {
            if let Some(h) = history.as_mut() {
                carried = h.carry_into(tmp, own);
            }
            checkpoint::save_weights(
                &self.vs,
                &tmp.join(checkpoint::MODEL_FILE),
                &self.model.config,
            )?;
            self.stepper.save(&tmp.join(checkpoint::OPTIMIZER_FILE))?;
            self.tokenizer.save(&tmp.join(checkpoint::TOKENIZER_FILE))?;
            checkpoint::write_json(
                &tmp.join(checkpoint::CONFIG_FILE),
                &self.checkpoint_config(),
            )?;
            let state = TrainState {
                step: self.step,
                settings: self.settings.clone(),
                best_test_loss: self.best_test_loss,
                last_train_loss: self.last_train_loss,
            };
            checkpoint::write_json(&tmp.join(checkpoint::STATE_FILE), &state)
        });
        if let (Some(h), true) = (history.as_mut(), saved.is_ok()) {
            h.carried(carried, own, dir);
            if own {
                // A copy in place of the file written: go on in the copy.
                h.follow();
            }
        }
        self.history = history;
        saved?;
        if let Some(link) = self.latest.as_ref().filter(|_| dir == self.out) {
            // Best effort: the run is saved; the link is a convenience.
            let _ = crate::output::point_latest(link, dir);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
