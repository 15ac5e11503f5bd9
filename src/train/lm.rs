//! Language-model training as a step function: the caller (the CLI loop, later the
//! dashboard's worker) decides when to step, evaluate, save, pause or stop.
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use tch::{nn, Device, Tensor};

use crate::checkpoint::{self, CheckpointConfig, TrainState};
use crate::config::Settings;
use crate::data::corpus::{split_sentences, split_train_test, Batch, Corpus, EpochOrder, Examples};
use crate::data::tokenizer::TextTokenizer;
use crate::device::resolve_device;
use crate::model::gpt::{parameter_count, Gpt, GptConfig};
use crate::rng::mix;
use crate::train::optim::{learning_rate, AdamWConfig};
use crate::train::step::{LmStep, StepKind};

/// What one training step measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepMetrics {
    /// Steps completed, counting this one (1-based).
    pub iter: u64,
    /// Mean cross-entropy per real (non-padding) target token.
    pub loss: f64,
    pub iter_ms: f64,
    pub tokens_per_s: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Real target tokens in the batch.
    pub tokens: usize,
}

/// The corpus's sentences as the settings ask for them.
fn sentences(corpus: &Corpus, settings: &Settings) -> Vec<String> {
    let sentences = split_sentences(&corpus.text);
    if settings.data.lowercase {
        sentences.into_iter().map(|s| s.to_lowercase()).collect()
    } else {
        sentences
    }
}

/// The corpus, tokenizer, model and optimizer of one training run.
pub struct LmTrainer {
    pub settings: Settings,
    pub device: Device,
    pub corpus_name: String,
    /// `small` or the corpus path, as stored in checkpoints.
    pub corpus_spec: String,
    pub tokenizer: TextTokenizer,
    pub vs: nn::VarStore,
    pub model: Gpt,
    /// The optimizer and the step implementation (fused unless a test asks otherwise).
    stepper: LmStep,
    pub train: Examples,
    /// The training examples' order in the current epoch.
    order: EpochOrder,
    pub test: Examples,
    /// The evaluation batches as device tensors `(inputs, targets, real tokens)`, made
    /// on the first evaluation.
    eval_set: Option<Vec<(Tensor, Tensor, usize)>>,
    pub train_sentences: usize,
    pub test_sentences: usize,
    /// Optimizer steps taken so far.
    pub step: u64,
    pub best_test_loss: Option<f64>,
    pub last_train_loss: Option<f64>,
}

impl LmTrainer {
    /// A fresh run: reads the corpus, trains (or loads) the tokenizer, builds the model.
    pub fn new(settings: Settings) -> Result<Self> {
        settings.validate()?;
        let corpus = Corpus::load(&settings.data.corpus).context("data.corpus / --corpus")?;
        let split = split_train_test(sentences(&corpus, &settings), settings.data.train_fraction)
            .with_context(|| format!("corpus {}", corpus.name))?;
        let tokenizer = match &settings.data.tokenizer {
            Some(path) => TextTokenizer::from_file(path).context("data.tokenizer / --tokenizer")?,
            None => TextTokenizer::train_bpe(&split.train, settings.data.vocab_size)?,
        };
        let dims = settings.model.dims()?;
        let config = GptConfig {
            vocab_size: tokenizer.vocab_size() as i64,
            block_size: settings.model.block_size,
            n_layer: dims.n_layer,
            n_head: dims.n_head,
            n_embd: dims.n_embd,
            dropout: settings.model.dropout,
            n_classes: settings.model.n_classes,
            layer_norm_eps: 1e-5,
            tie_lm_head: false,
        };
        Self::build(settings, corpus, split.train, split.test, tokenizer, config)
    }

    /// Continues a run from a training checkpoint: same model, tokenizer, corpus, step
    /// and optimizer state. `adjust` may change loop settings (more steps, another
    /// device); model sizes and data settings always come from the checkpoint.
    pub fn resume(dir: &Path, adjust: impl FnOnce(&mut Settings)) -> Result<Self> {
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
        let corpus = Corpus::load(&ckpt.corpus)
            .with_context(|| format!("the corpus of checkpoint {}", dir.display()))?;
        let split = split_train_test(sentences(&corpus, &settings), settings.data.train_fraction)?;
        let mut trainer = Self::build(
            settings,
            corpus,
            split.train,
            split.test,
            tokenizer,
            ckpt.model,
        )?;
        checkpoint::load_weights(&mut trainer.vs, &dir.join(checkpoint::MODEL_FILE))?;
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
        corpus: Corpus,
        train_sentences: Vec<String>,
        test_sentences: Vec<String>,
        tokenizer: TextTokenizer,
        config: GptConfig,
    ) -> Result<Self> {
        let device = resolve_device(&settings.train.device).context("train.device / --device")?;
        let block = config.block_size as usize;
        let mode = settings.data.mode;
        let train = Examples::from_sentences(&train_sentences, &tokenizer, block, mode)?;
        let test = Examples::from_sentences(&test_sentences, &tokenizer, block, mode)?;
        if train.is_empty() {
            bail!(
                "corpus {}: no training example has two or more tokens",
                corpus.name
            );
        }
        if test.is_empty() {
            bail!("corpus {}: the test split is empty; use a larger corpus or a smaller data.train_fraction", corpus.name);
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
            corpus_name: corpus.name.clone(),
            corpus_spec: corpus.spec(),
            tokenizer,
            vs,
            model,
            stepper,
            order: EpochOrder::new(settings.train.seed),
            train,
            test,
            eval_set: None,
            train_sentences: train_sentences.len(),
            test_sentences: test_sentences.len(),
            step: 0,
            best_test_loss: None,
            last_train_loss: None,
            settings,
        })
    }

    pub fn parameters(&self) -> i64 {
        parameter_count(&self.vs)
    }

    pub fn is_done(&self) -> bool {
        self.step >= self.settings.train.max_iters
    }

    /// Whether the step just completed should be followed by an evaluation.
    pub fn eval_due(&self) -> bool {
        self.step > 0
            && (self.step.is_multiple_of(self.settings.train.eval_interval) || self.is_done())
    }

    /// Whether the step just completed should be followed by a checkpoint.
    pub fn save_due(&self) -> bool {
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
        })
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
            data_mode: self.settings.data.mode,
            parameters: self.parameters(),
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
        }
    }

    /// Writes a complete training checkpoint to `dir`, atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        checkpoint::write_atomically(dir, |tmp| {
            self.vs
                .save(tmp.join(checkpoint::MODEL_FILE))
                .map_err(|e| anyhow!("cannot write weights: {e}"))?;
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
        })
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
        let a = trainer.model.forward(&x, false);
        let b = loaded.model.forward(&x, false);
        assert_eq!((a - b).abs().max().double_value(&[]), 0.0);
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
                (m.loss - losses[4 + k]).abs() < 1e-6,
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
        s.data.mode = crate::config::DataMode::Pack;
        s.model.block_size = 8;
        let mut t = LmTrainer::new(s).unwrap();
        assert!(t.train.rows.iter().all(|r| r.len() <= 9));
        assert!(t.train.rows[..t.train.len() - 1]
            .iter()
            .all(|r| r.len() == 9));
        assert!(t.step().unwrap().loss.is_finite());
    }
}
