//! Language-model training as a run that owns its rules: [`LmTrainer::advance`] takes one
//! step and does what follows it (evaluate when due, save when due, save and summarise at
//! the end, stop on a non-finite loss), returning the events. The CLI and the dashboard's
//! worker only loop, forward the events, and decide when to pause or stop.
//!
//! **A non-finite loss** ends the run at that step, in the dashboard as headless: its
//! weights are not saved (the last checkpoint, if any, stays as it was) and a `diverged`
//! event names the step. `gptdash train` then exits with code 2; the dashboard shows the
//! error and drops the broken model.
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use tch::{nn, Device, Tensor};

use crate::checkpoint::{self, CheckpointConfig, TrainState};
use crate::config::DataMode;
use crate::config::Settings;
use crate::data::corpus::{corpus_limit, Batch, EpochOrder, Examples};
use crate::data::prepare::{self, Prepared};
use crate::data::source::CorpusSource;
use crate::data::tokenizer::TextTokenizer;
use crate::device::{device_name, resolve_device};
use crate::model::gpt::{parameter_count, Gpt, GptConfig};
use crate::protocol::{Event, ModelShape, RunDone, RunInfo, StepMetrics, TrainSummary};
use crate::rng::mix;
use crate::train::optim::{learning_rate, AdamWConfig};
use crate::train::step::{LmStep, StepKind};

/// Prepares the corpus: from the per-user cache when it can (file corpora, `data.cache`).
/// The corpus as a run trains on it, whichever way it was prepared.
pub struct Ready {
    pub name: String,
    /// What checkpoints store to find it again.
    pub spec: String,
    pub tokenizer: TextTokenizer,
    pub train: Examples,
    pub test: Examples,
    pub train_texts: usize,
    pub test_texts: usize,
}

/// Prepares the corpus of `settings` as a run would (downloading, caching), without a
/// model: `gptdash data prepare`. The settings' data mode is settled from the corpus.
pub fn prepare_only(settings: &mut Settings, progress: &mut dyn FnMut(Event)) -> Result<Ready> {
    settings.validate()?;
    let given = match &settings.data.tokenizer {
        Some(path) => Some(TextTokenizer::from_file(path).context("data.tokenizer / --tokenizer")?),
        None => None,
    };
    let block = settings.model.block_size as usize;
    prepare_data(settings, block, given, progress)
}

/// Finds the corpus (downloading a catalog corpus the first time), settles the data
/// mode (the corpus's own when the settings name none), and prepares it: `documents`
/// mode streams it into a memory-mapped token file ([`crate::data::stream`]); the modes
/// that split sentences read the text into memory ([`prepare::prepare`]).
fn prepare_data(
    settings: &mut Settings,
    block: usize,
    tokenizer: Option<TextTokenizer>,
    progress: &mut dyn FnMut(Event),
) -> Result<Ready> {
    let spec = settings.data.corpus.clone();
    let source = crate::interrupt::interruptible_progress(
        "finding the corpus",
        move |p| CorpusSource::resolve(&spec, p),
        &mut |stage, done, total| progress(Event::prepare(stage, done, total)),
    )
    .context("data.corpus / --corpus")?;
    let mode = *settings.data.mode.get_or_insert(source.mode);
    let cache = (settings.data.cache && !source.is_builtin())
        .then(prepare::default_cache_dir)
        .flatten();
    let eot = |t: &TextTokenizer| t.eot_id();
    if mode == DataMode::Documents {
        let s = crate::data::stream::prepare_stream(
            &source,
            &settings.data,
            tokenizer,
            cache.as_deref(),
            &mut |stage, done, total| progress(Event::prepare(stage, done, total)),
        )
        .with_context(|| format!("corpus {}", source.name))?;
        for note in &s.notes {
            progress(Event::log(note.clone()));
        }
        return Ok(Ready {
            name: source.name,
            spec: source.spec,
            train: Examples::packed(s.ids.clone(), s.train.0, s.train.1, block),
            test: Examples::packed(s.ids, s.test.0, s.test.1, block),
            tokenizer: s.tokenizer,
            train_texts: s.train_docs,
            test_texts: s.test_docs,
        });
    }
    progress(Event::prepare("read", 0, 1));
    let limit = corpus_limit(settings.data.max_corpus_mb);
    let reading = source.clone();
    let corpus =
        crate::interrupt::interruptible("reading the corpus", move || reading.load_text(limit))
            .context("data.corpus / --corpus")?;
    progress(Event::prepare("read", 1, 1));
    let cache = cache.filter(|_| corpus.path.is_some());
    let prepared = prepare::prepare(
        &corpus,
        &settings.data,
        tokenizer,
        cache.as_deref(),
        &mut |stage, done, total| progress(Event::prepare(stage, done, total)),
    )?;
    for note in &prepared.notes {
        progress(Event::log(note.clone()));
    }
    let Prepared {
        tokenizer,
        train,
        test,
        ..
    } = prepared;
    let (train_texts, test_texts) = (train.len(), test.len());
    let e = eot(&tokenizer);
    Ok(Ready {
        name: corpus.name.clone(),
        spec: corpus.spec(),
        train: Examples::from_encoded(train, e, block, mode),
        test: Examples::from_encoded(test, e, block, mode),
        tokenizer,
        train_texts,
        test_texts,
    })
}

/// The GPU monitor of a CUDA run: when it last read, and the memory in use then.
struct GpuWatch {
    monitor: crate::gpu::GpuMonitor,
    last: Option<Instant>,
    mib: Option<f64>,
}

/// The corpus, tokenizer, model and optimizer of one training run.
pub struct LmTrainer {
    pub settings: Settings,
    device: Device,
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
}

/// What the run's summary needs: recent losses, tokens and time.
struct RunStats {
    /// When the run was set up (corpus, tokenizer and model included).
    created: Instant,
    /// The last 20 training losses.
    recent: VecDeque<f64>,
    last_test_loss: Option<f64>,
    tokens: usize,
    /// Seconds inside training steps only, and inside `advance` as a whole.
    step_secs: f64,
    busy_secs: f64,
}

impl RunStats {
    const RECENT: usize = 20;

    fn new(created: Instant) -> Self {
        Self {
            created,
            recent: VecDeque::with_capacity(Self::RECENT),
            last_test_loss: None,
            tokens: 0,
            step_secs: 0.0,
            busy_secs: 0.0,
        }
    }

    fn record(&mut self, m: &StepMetrics) {
        if self.recent.len() == Self::RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(m.loss);
        self.tokens += m.tokens;
        self.step_secs += m.iter_ms / 1e3;
    }
}

impl LmTrainer {
    /// A fresh run: reads the corpus, trains (or loads) the tokenizer, builds the model.
    pub fn new(settings: Settings) -> Result<Self> {
        Self::new_with_progress(settings, &mut |_| {})
    }

    /// [`LmTrainer::new`], reporting the data preparation's progress (`prepare` events).
    pub fn new_with_progress(settings: Settings, progress: &mut dyn FnMut(Event)) -> Result<Self> {
        let created = Instant::now();
        settings.validate()?;
        let on_cpu = resolve_device(&settings.train.device).context("train.device / --device")?
            == Device::Cpu;
        crate::train::memory::check(&settings, on_cpu)?;
        let given = match &settings.data.tokenizer {
            Some(path) => {
                Some(TextTokenizer::from_file(path).context("data.tokenizer / --tokenizer")?)
            }
            None => None,
        };
        let mut settings = settings;
        let block = settings.model.block_size as usize;
        let ready = prepare_data(&mut settings, block, given, progress)?;
        let dims = settings.model.dims()?;
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
        Self::build(settings, ready, config, created)
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
        settings
            .validate()
            .with_context(|| format!("resuming from {}", dir.display()))?;
        if state.step >= settings.train.max_iters {
            bail!(
                "checkpoint {} is already at step {} of max_iters {}; pass a larger --max-iters to train further",
                dir.display(),
                state.step,
                settings.train.max_iters
            );
        }
        let tokenizer = TextTokenizer::from_file(&dir.join(checkpoint::TOKENIZER_FILE))?;
        settings.data.corpus = ckpt.corpus.clone();
        let block = ckpt.model.block_size as usize;
        let ready = prepare_data(&mut settings, block, Some(tokenizer), &mut |_| {})
            .with_context(|| format!("the corpus of checkpoint {}", dir.display()))?;
        let mut trainer = Self::build(settings, ready, ckpt.model, created)?;
        trainer.set_out(dir.to_path_buf())?;
        let model = trainer.model.config;
        checkpoint::load_weights(
            &mut trainer.vs,
            &dir.join(checkpoint::MODEL_FILE),
            Some(&model),
        )?;
        trainer
            .stepper
            .load(&dir.join(checkpoint::OPTIMIZER_FILE), state.step)?;
        trainer.step = state.step;
        trainer.best_test_loss = state.best_test_loss;
        trainer.last_train_loss = state.last_train_loss;
        Ok(trainer)
    }

    fn build(
        settings: Settings,
        ready: Ready,
        config: GptConfig,
        created: Instant,
    ) -> Result<Self> {
        let device = resolve_device(&settings.train.device).context("train.device / --device")?;
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
            out: PathBuf::from("checkpoints").join(&name),
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
            settings,
        })
    }

    /// Where the run saves: `checkpoints/<corpus name>` unless set here (a resumed run:
    /// the folder it resumed from). Locks it for this run: another process writing it,
    /// or a place that cannot be written, is an error now rather than after training.
    pub fn set_out(&mut self, out: PathBuf) -> Result<()> {
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
    pub fn claim_fresh(&mut self, parent: &Path) -> Result<()> {
        let (out, lock) = crate::output::claim_fresh(parent, &self.corpus_name)?;
        self.lock = Some(lock);
        self.out = out;
        self.latest = Some(parent.join(&self.corpus_name));
        Ok(())
    }

    pub fn out(&self) -> &Path {
        &self.out
    }

    /// The run's facts, for its `start` event.
    pub fn info(&self, threads: usize) -> RunInfo {
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
    pub fn advance(&mut self) -> Result<Vec<Event>> {
        let started = Instant::now();
        let result = self.advance_inner(started);
        self.stats.busy_secs += started.elapsed().as_secs_f64();
        result
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
        let gpu = self.gpu_reading();
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
    pub fn checkpoint(&self) -> Result<Event> {
        self.save(&self.out)?;
        Ok(Event::Checkpoint {
            iter: self.step,
            path: self.out.clone(),
        })
    }

    /// Ends the run before `max_iters` (Ctrl-C, the dashboard's stop): a checkpoint to
    /// resume from, `interrupted`, and the summary. Training may continue afterwards.
    pub fn interrupt(&mut self) -> Result<Vec<Event>> {
        let mut events = vec![self.checkpoint()?];
        events.push(Event::Interrupted {
            iter: self.step,
            path: self.out.clone(),
        });
        events.push(self.summary(0.0));
        Ok(events)
    }

    /// The final checkpoint and the summary.
    fn finish(&mut self, advancing_since: Instant) -> Result<Vec<Event>> {
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

    pub fn parameters(&self) -> i64 {
        parameter_count(&self.vs)
    }

    /// The weights (to copy them, e.g. to pin them for comparison).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The `n`-th test example worth looking at (at least 8 tokens when the split has
    /// such; `n` wraps), at most a block of tokens: what the Inspect tab reads by default.
    pub fn test_example(&self, n: usize) -> Option<Vec<u32>> {
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
    pub fn frames_sentences(&self) -> bool {
        self.settings.data.mode().frames_text()
    }

    /// At `max_iters`, or diverged.
    pub fn is_done(&self) -> bool {
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
    pub fn step(&mut self) -> Result<StepMetrics> {
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

    /// A reading of the run's GPU, about once a second (CUDA runs only).
    fn gpu_reading(&mut self) -> Option<crate::protocol::GpuStatus> {
        let Device::Cuda(index) = self.device else {
            return None;
        };
        let watch = self.gpu.get_or_insert_with(|| GpuWatch {
            monitor: crate::gpu::GpuMonitor::open(index),
            last: None,
            mib: None,
        });
        if watch.last.is_some_and(|t| t.elapsed().as_secs_f64() < 1.0) {
            return None;
        }
        watch.last = Some(Instant::now());
        let status = watch.monitor.read();
        watch.mib = status.reading.as_ref().map(|r| r.memory_used_mib);
        Some(status)
    }

    /// Mean loss per real token over the test split (at most `train.eval_batches` batches).
    /// The batches are padded and moved to the device once, on the first evaluation;
    /// the losses are summed on the device and read once.
    pub fn evaluate(&mut self) -> Result<f64> {
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

    pub fn checkpoint_config(&self) -> CheckpointConfig {
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
    pub fn into_loaded(self) -> checkpoint::LoadedModel {
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
    pub fn save(&self, dir: &Path) -> Result<()> {
        checkpoint::write_atomically(dir, |tmp| {
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
        })?;
        if let Some(link) = self.latest.as_ref().filter(|_| dir == self.out) {
            // Best effort: the run is saved; the link is a convenience.
            let _ = crate::output::point_latest(link, dir);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus_file(dir: &Path) -> String {
        let path = dir.join("tiny.txt");
        let text =
            "The cat sat. The dog ran. A cat ran. A dog sat. The cat ran. The dog sat.\n".repeat(6);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn tiny_settings(corpus: String) -> Settings {
        let mut s = Settings::default();
        s.data.corpus = corpus;
        s.data.vocab_size = 300;
        s.data.cache = false; // never write to the user's cache from a test
        s.model.preset = "custom".into();
        s.model.n_layer = Some(2);
        s.model.n_head = Some(2);
        s.model.n_embd = Some(32);
        s.model.block_size = 16;
        s.train.device = "cpu".into();
        s.train.batch_size = 8;
        s.train.max_iters = 40;
        s.train.warmup_iters = 2;
        s.train.learning_rate = 3e-3;
        s.train.eval_interval = 10;
        s
    }

    #[test]
    fn loss_falls_on_a_tiny_corpus() {
        let _rng = crate::torch_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let mut trainer = LmTrainer::new(tiny_settings(corpus_file(dir.path()))).unwrap();
        let first = trainer.step().unwrap();
        assert!(first.loss.is_finite() && first.tokens > 0 && first.lr > 0.0);
        let before = trainer.evaluate().unwrap();
        let mut last = first;
        while !trainer.is_done() {
            last = trainer.step().unwrap();
        }
        let after = trainer.evaluate().unwrap();
        assert_eq!(last.iter, 40);
        assert!(
            last.loss < first.loss * 0.5,
            "train loss {} -> {}",
            first.loss,
            last.loss
        );
        assert!(after < before * 0.6, "test loss {before} -> {after}");
    }

    #[test]
    fn bf16_training_tracks_f32() {
        let _rng = crate::torch_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let curve = |dtype| {
            let mut s = tiny_settings(corpus_file(dir.path()));
            s.train.dtype = dtype;
            let mut trainer = LmTrainer::new(s).unwrap();
            let mut losses = Vec::new();
            while !trainer.is_done() {
                losses.push(trainer.step().unwrap().loss);
            }
            (losses, trainer.evaluate().unwrap())
        };
        let (f32_curve, f32_test) = curve(crate::config::Dtype::F32);
        let (bf16_curve, bf16_test) = curve(crate::config::Dtype::Bf16);
        assert_ne!(f32_curve, bf16_curve, "bf16 must change the arithmetic");
        for (i, (a, b)) in f32_curve.iter().zip(&bf16_curve).enumerate() {
            assert!(
                (a - b).abs() <= 0.03 * a,
                "step {}: f32 {a} vs bf16 {b}",
                i + 1
            );
        }
        assert!(
            bf16_curve[39] < bf16_curve[0] * 0.5,
            "bf16 learns: {bf16_curve:?}"
        );
        assert!(
            (f32_test - bf16_test).abs() <= 0.03 * f32_test,
            "test loss {f32_test} vs {bf16_test}"
        );
    }

    #[test]
    fn save_then_load_gives_identical_logits() {
        let _rng = crate::torch_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let mut trainer = LmTrainer::new(tiny_settings(corpus_file(dir.path()))).unwrap();
        for _ in 0..3 {
            trainer.step().unwrap();
        }
        let ckpt = dir.path().join("ckpt");
        trainer.save(&ckpt).unwrap();
        let loaded = checkpoint::load_model(&ckpt, Device::Cpu).unwrap();
        let x = Tensor::from_slice(&[1i64, 5, 7, 3]).view([1, 4]);
        // The weights come back bit-exact; the logits within a stated tolerance, since the
        // trainer's weights are views into one flat buffer and the loaded ones separate
        // tensors, and a CPU's kernels may round the two layouts differently.
        let saved = trainer.var_store().variables();
        for (name, t) in loaded.vs.variables() {
            let ours = &saved[&name];
            assert!(ours.equal(&t), "{name} differs after the round trip");
        }
        let a = trainer.model.forward(&x, false);
        let b = loaded.model.forward(&x, false);
        assert!((a - b).abs().max().double_value(&[]) < 1e-6);
        let text = "The cat sat.";
        assert_eq!(
            loaded.tokenizer.encode(text).unwrap(),
            trainer.tokenizer.encode(text).unwrap()
        );
    }

    #[test]
    fn resume_continues_step_count_and_optimizer_state_exactly() {
        let _rng = crate::torch_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let settings = tiny_settings(corpus_file(dir.path()));
        let mut straight = LmTrainer::new(settings.clone()).unwrap();
        let losses: Vec<f64> = (0..8).map(|_| straight.step().unwrap().loss).collect();

        let mut first = LmTrainer::new(settings).unwrap();
        for _ in 0..4 {
            first.step().unwrap();
        }
        let ckpt = dir.path().join("half");
        first.save(&ckpt).unwrap();
        drop(first);
        let mut resumed = LmTrainer::resume(&ckpt, |_| {}).unwrap();
        assert_eq!(resumed.step, 4);
        let rest: Vec<StepMetrics> = (0..4).map(|_| resumed.step().unwrap()).collect();
        assert_eq!(rest[0].iter, 5);
        for (k, m) in rest.iter().enumerate() {
            assert!(
                (m.loss - losses[4 + k]).abs() < 1e-5 * losses[4 + k].abs().max(1.0),
                "step {}: {} vs {}",
                5 + k,
                m.loss,
                losses[4 + k]
            );
        }
    }

    #[test]
    fn resume_past_the_end_asks_for_more_steps() {
        let _rng = crate::torch_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let mut settings = tiny_settings(corpus_file(dir.path()));
        settings.train.max_iters = 2;
        let mut t = LmTrainer::new(settings).unwrap();
        t.step().unwrap();
        t.step().unwrap();
        let ckpt = dir.path().join("done");
        t.save(&ckpt).unwrap();
        let msg = format!("{:#}", LmTrainer::resume(&ckpt, |_| {}).err().unwrap());
        assert!(msg.contains("--max-iters"), "{msg}");
        let more = LmTrainer::resume(&ckpt, |s| s.train.max_iters = 3).unwrap();
        assert_eq!(more.step, 2);
    }

    #[test]
    fn same_seed_same_losses() {
        let _rng = crate::torch_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let settings = tiny_settings(corpus_file(dir.path()));
        let run = |s: Settings| {
            let mut t = LmTrainer::new(s).unwrap();
            (0..3).map(|_| t.step().unwrap().loss).collect::<Vec<_>>()
        };
        assert_eq!(run(settings.clone()), run(settings.clone()));
        let mut other = settings;
        other.train.seed = 7;
        assert_ne!(
            run(other.clone()),
            run(tiny_settings(other.data.corpus.clone()))
        );
    }

    #[test]
    fn missing_corpus_is_an_error_naming_the_file_and_key() {
        let _rng = crate::torch_rng_lock();
        let mut s = Settings::default();
        s.data.corpus = "/nowhere/corpus.txt".into();
        let msg = format!("{:#}", LmTrainer::new(s).err().unwrap());
        assert!(
            msg.contains("/nowhere/corpus.txt") && msg.contains("--corpus"),
            "{msg}"
        );
    }

    #[test]
    fn pack_mode_streams_block_sized_chunks() {
        let _rng = crate::torch_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let mut s = tiny_settings(corpus_file(dir.path()));
        s.data.mode = Some(crate::config::DataMode::Pack);
        s.model.block_size = 8;
        let mut t = LmTrainer::new(s).unwrap();
        assert!(t.train.rows().iter().all(|r| r.len() <= 9));
        assert!(t.train.rows()[..t.train.len() - 1]
            .iter()
            .all(|r| r.len() == 9));
        assert!(t.step().unwrap().loss.is_finite());
    }
}
