//! Sentiment fine-tuning: the language model with its classifier head, reading the last
//! real token of each sentence, trained epoch by epoch with the best epoch kept.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, CheckpointConfig, LoadedModel};
use crate::config::FinetuneSettings;
use crate::data::corpus::IGNORE_INDEX;
use crate::data::sst2::Labeled;
use crate::data::tokenizer::TextTokenizer;
use crate::model::gpt::Gpt;
use crate::rng::{mix, SplitMix64};
use crate::train::optim::{AdamW, AdamWConfig};

/// Written beside a fine-tuned checkpoint's weights; its presence marks a classifier.
pub const CLASSIFIER_FILE: &str = "classifier.json";
pub const CURVES_FILE: &str = "curves.csv";

#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneOptions {
    pub epochs: usize,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub weight_decay: f64,
    pub freeze_body: bool,
    pub seed: u64,
    /// Stop after this many epochs without a better validation loss (0 = never).
    pub patience: usize,
    /// Weight of an auxiliary language-modelling loss on the same sentences (GPT-1's
    /// fine-tuning objective); 0 trains the classifier alone.
    pub lm_weight: f64,
}

impl From<&FinetuneSettings> for FinetuneOptions {
    fn from(f: &FinetuneSettings) -> Self {
        Self {
            epochs: f.epochs,
            learning_rate: f.learning_rate,
            batch_size: f.batch_size as usize,
            weight_decay: f.weight_decay,
            freeze_body: f.freeze_body,
            seed: f.seed,
            patience: f.patience,
            lm_weight: f.lm_weight,
        }
    }
}

/// A tokenised sentence and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub ids: Vec<i64>,
    pub label: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub loss: f64,
    pub acc: f64,
    /// `confusion[true label][predicted label]`.
    pub confusion: [[usize; 2]; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub secs: f64,
}

/// What `classifier.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierInfo {
    pub source: String,
    pub best_epoch: usize,
    pub val: Evaluation,
    pub train_examples: usize,
    pub val_examples: usize,
    pub labels: [String; 2],
}

/// Turns sentences into model inputs the way the model saw text in pretraining: models
/// trained on `<|endoftext|>`-framed sentences get that token first.
pub struct Encoder<'a> {
    pub tokenizer: &'a TextTokenizer,
    pub prefix: Option<i64>,
    pub block_size: usize,
}

impl Encoder<'_> {
    pub fn for_model(loaded: &LoadedModel) -> Encoder<'_> {
        let prefix = loaded
            .tokenizer
            .eot_id()
            .map(i64::from)
            .filter(|_| loaded.frames_sentences());
        Encoder {
            tokenizer: &loaded.tokenizer,
            prefix,
            block_size: loaded.model.config.block_size as usize,
        }
    }

    pub fn encode(&self, sentence: &str) -> Result<Vec<i64>> {
        let mut ids: Vec<i64> = self.prefix.into_iter().collect();
        ids.extend(self.tokenizer.encode(sentence)?.into_iter().map(i64::from));
        if ids.is_empty() {
            bail!("{sentence:?} encodes to no tokens");
        }
        // Framed as in pretraining: the closing <|endoftext|> is the last real token, the
        // position that has read the whole sentence (GPT-1's "extract" token).
        ids.truncate(self.block_size - usize::from(self.prefix.is_some()));
        ids.extend(self.prefix);
        Ok(ids)
    }

    pub fn examples(&self, rows: &[Labeled]) -> Result<Vec<Example>> {
        rows.iter()
            .map(|r| {
                Ok(Example {
                    ids: self.encode(&r.sentence)?,
                    label: r.label as i64,
                })
            })
            .collect()
    }
}

/// Right-padded ids `[rows, longest]`, lengths and labels for a slice of examples.
fn batch_tensors(examples: &[&Example], device: Device) -> (Tensor, Tensor, Tensor) {
    let cols = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    let mut ids = vec![0i64; examples.len() * cols];
    for (r, e) in examples.iter().enumerate() {
        ids[r * cols..r * cols + e.ids.len()].copy_from_slice(&e.ids);
    }
    let lengths: Vec<i64> = examples.iter().map(|e| e.ids.len() as i64).collect();
    let labels: Vec<i64> = examples.iter().map(|e| e.label).collect();
    (
        Tensor::from_slice(&ids)
            .view([examples.len() as i64, cols as i64])
            .to_device(device),
        Tensor::from_slice(&lengths).to_device(device),
        Tensor::from_slice(&labels).to_device(device),
    )
}

/// Next-token targets of right-padded rows, [`IGNORE_INDEX`] past each row's end.
fn lm_targets(examples: &[&Example], device: Device) -> Tensor {
    let cols = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    let mut targets = vec![IGNORE_INDEX; examples.len() * cols];
    for (r, e) in examples.iter().enumerate() {
        let n = e.ids.len() - 1;
        targets[r * cols..r * cols + n].copy_from_slice(&e.ids[1..]);
    }
    Tensor::from_slice(&targets)
        .view([examples.len() as i64, cols as i64])
        .to_device(device)
}

/// Loss, accuracy and confusion matrix of `model` on `examples` (no dropout, no gradients).
pub fn evaluate(model: &Gpt, examples: &[Example], batch_size: usize) -> Evaluation {
    let device = model.device();
    let mut confusion = [[0usize; 2]; 2];
    let mut loss_sum = 0.0;
    tch::no_grad(|| {
        for chunk in examples.chunks(batch_size.max(1)) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let (ids, lengths, labels) = batch_tensors(&refs, device);
            let logits = model.classify(&ids, &lengths, false);
            loss_sum +=
                logits.cross_entropy_for_logits(&labels).double_value(&[]) * chunk.len() as f64;
            let predicted: Vec<i64> =
                Vec::try_from(logits.argmax(-1, false).to_device(Device::Cpu)).unwrap_or_default();
            for (e, p) in chunk.iter().zip(predicted) {
                confusion[e.label.clamp(0, 1) as usize][p.clamp(0, 1) as usize] += 1;
            }
        }
    });
    let n = examples.len().max(1) as f64;
    Evaluation {
        loss: loss_sum / n,
        acc: (confusion[0][0] + confusion[1][1]) as f64 / n,
        confusion,
    }
}

/// Probability of each class for one sentence.
pub fn class_probabilities(loaded: &LoadedModel, sentence: &str) -> Result<Vec<f64>> {
    let ids = Encoder::for_model(loaded).encode(sentence)?;
    let example = Example { ids, label: 0 };
    let (x, lengths, _) = batch_tensors(&[&example], loaded.model.device());
    let probs = tch::no_grad(|| {
        loaded
            .model
            .classify(&x, &lengths, false)
            .softmax(-1, Kind::Float)
    });
    Vec::<f64>::try_from(probs.get(0).to_kind(Kind::Double).to_device(Device::Cpu))
        .map_err(|e| anyhow!("{e}"))
}

pub struct Finetuner {
    pub loaded: LoadedModel,
    pub options: FinetuneOptions,
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    optimizer: AdamW,
    pub epoch: usize,
    pub history: Vec<EpochMetrics>,
    best: Option<(usize, f64, Evaluation, BTreeMap<String, Tensor>)>,
    epochs_since_best: usize,
    progress: Option<EpochProgress>,
}

/// Where the current epoch stands.
struct EpochProgress {
    order: Vec<usize>,
    next: usize,
    /// Sum of batch loss × batch size, and correct predictions, kept on the device and
    /// read once at the end of the epoch (no host synchronisation per batch).
    loss_sum: Tensor,
    correct: Tensor,
    start: Instant,
}

impl Finetuner {
    pub fn new(
        loaded: LoadedModel,
        train_rows: &[Labeled],
        val_rows: &[Labeled],
        options: FinetuneOptions,
    ) -> Result<Self> {
        if options.batch_size == 0 || options.epochs == 0 {
            bail!("batch size and epochs must be at least 1");
        }
        let encoder = Encoder::for_model(&loaded);
        let train = encoder.examples(train_rows)?;
        let val = encoder.examples(val_rows)?;
        if options.freeze_body {
            for (name, t) in loaded.vs.variables() {
                if !name.starts_with("classifier.") {
                    let _ = t.set_requires_grad(false);
                }
            }
        }
        let optimizer = AdamW::new(
            &loaded.vs,
            AdamWConfig {
                weight_decay: options.weight_decay,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
        );
        Ok(Self {
            loaded,
            options,
            train,
            val,
            optimizer,
            epoch: 0,
            history: Vec::new(),
            best: None,
            epochs_since_best: 0,
            progress: None,
        })
    }

    pub fn is_done(&self) -> bool {
        self.epoch >= self.options.epochs
            || (self.options.patience > 0 && self.epochs_since_best >= self.options.patience)
    }

    /// One pass over the training examples (seeded order), then validation.
    pub fn run_epoch(&mut self) -> Result<EpochMetrics> {
        loop {
            if let Some(m) = self.step()? {
                return Ok(m);
            }
        }
    }

    /// Trains on one batch; at the end of an epoch validates and returns its metrics.
    /// (The dashboard's worker calls this, so commands are answered between batches.)
    pub fn step(&mut self) -> Result<Option<EpochMetrics>> {
        let progress = self.progress.get_or_insert_with(|| {
            let mut order: Vec<usize> = (0..self.train.len()).collect();
            SplitMix64::new(mix(self.options.seed, self.epoch as u64)).shuffle(&mut order);
            tch::manual_seed((mix(self.options.seed, 1000 + self.epoch as u64) >> 1) as i64);
            let device = self.loaded.model.device();
            EpochProgress {
                order,
                next: 0,
                loss_sum: Tensor::zeros([], (Kind::Double, device)),
                correct: Tensor::zeros([], (Kind::Int64, device)),
                start: Instant::now(),
            }
        });
        let device = self.loaded.model.device();
        let end = (progress.next + self.options.batch_size).min(progress.order.len());
        let refs: Vec<&Example> = progress.order[progress.next..end]
            .iter()
            .map(|&i| &self.train[i])
            .collect();
        progress.next = end;
        let (ids, lengths, labels) = batch_tensors(&refs, device);
        self.optimizer.zero_grad();
        let model = &self.loaded.model;
        let hidden = model.hidden(&ids, true);
        let logits = model.classify_hidden(&hidden, &lengths, true);
        let mut loss = logits.cross_entropy_for_logits(&labels);
        if self.options.lm_weight > 0.0 {
            let lm = Gpt::lm_loss(&model.lm_logits(&hidden), &lm_targets(&refs, device));
            loss = &loss + lm * self.options.lm_weight;
        }
        loss.f_backward()
            .map_err(|e| anyhow!("backward pass failed: {e}"))?;
        let _ = self.optimizer.clip_grad_norm(1.0);
        self.optimizer.step(self.options.learning_rate);
        tch::no_grad(|| {
            progress.loss_sum += loss.detach().to_kind(Kind::Double) * refs.len() as f64;
            progress.correct += logits.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64);
        });
        if progress.next < progress.order.len() {
            return Ok(None);
        }
        let Some(EpochProgress {
            loss_sum,
            correct,
            start,
            ..
        }) = self.progress.take()
        else {
            bail!("fine-tuning lost track of its epoch");
        };
        let (loss_sum, correct) = (
            loss_sum.double_value(&[]),
            correct.int64_value(&[]) as usize,
        );
        self.epoch += 1;
        let val = evaluate(
            &self.loaded.model,
            &self.val,
            self.options.batch_size.max(32),
        );
        let metrics = EpochMetrics {
            epoch: self.epoch,
            train_loss: loss_sum / self.train.len().max(1) as f64,
            train_acc: correct as f64 / self.train.len().max(1) as f64,
            val_loss: val.loss,
            val_acc: val.acc,
            secs: start.elapsed().as_secs_f64(),
        };
        if !metrics.train_loss.is_finite() {
            bail!(
                "fine-tuning diverged at epoch {} (loss {}); try a lower --lr",
                self.epoch,
                metrics.train_loss
            );
        }
        if self.best.as_ref().is_none_or(|b| val.loss < b.1) {
            let snapshot = self
                .loaded
                .vs
                .variables()
                .into_iter()
                .map(|(n, t)| (n, t.detach().copy()))
                .collect();
            self.best = Some((self.epoch, val.loss, val, snapshot));
            self.epochs_since_best = 0;
        } else {
            self.epochs_since_best += 1;
        }
        self.history.push(metrics);
        Ok(Some(metrics))
    }

    /// Puts the best epoch's weights back; returns that epoch and its validation result.
    pub fn restore_best(&mut self) -> Option<(usize, Evaluation)> {
        let (epoch, _, eval, snapshot) = self.best.as_ref()?;
        tch::no_grad(|| {
            for (name, mut var) in self.loaded.vs.variables() {
                if let Some(saved) = snapshot.get(&name) {
                    var.copy_(saved);
                }
            }
        });
        Some((*epoch, *eval))
    }

    /// Saves the classifier as a checkpoint directory (atomically), with `curves.csv`
    /// and `classifier.json`.
    pub fn save(&self, dir: &Path, info: &ClassifierInfo) -> Result<()> {
        let config = CheckpointConfig {
            parameters: crate::model::gpt::parameter_count(&self.loaded.vs),
            ..self.loaded.config.clone()
        };
        checkpoint::write_atomically(dir, |tmp| {
            self.loaded
                .vs
                .save(tmp.join(checkpoint::MODEL_FILE))
                .map_err(|e| anyhow!("cannot write weights: {e}"))?;
            self.loaded
                .tokenizer
                .save(&tmp.join(checkpoint::TOKENIZER_FILE))?;
            checkpoint::write_json(&tmp.join(checkpoint::CONFIG_FILE), &config)?;
            checkpoint::write_json(&tmp.join(CLASSIFIER_FILE), info)?;
            let mut csv = String::from("epoch,train_loss,train_acc,val_loss,val_acc,secs\n");
            for m in &self.history {
                csv.push_str(&format!(
                    "{},{:.6},{:.6},{:.6},{:.6},{:.3}\n",
                    m.epoch, m.train_loss, m.train_acc, m.val_loss, m.val_acc, m.secs
                ));
            }
            std::fs::write(tmp.join(CURVES_FILE), csv)?;
            Ok(())
        })
    }
}

/// Loads a classifier written by [`Finetuner::save`].
pub fn load_classifier(dir: &Path, device: Device) -> Result<(LoadedModel, ClassifierInfo)> {
    let loaded = checkpoint::load_model(dir, device)?;
    let path = dir.join(CLASSIFIER_FILE);
    if !path.is_file() {
        bail!("{} has no trained classifier head ({CLASSIFIER_FILE} is missing); run `gptdash finetune` first", dir.display());
    }
    let text = std::fs::read_to_string(&path)?;
    let info: ClassifierInfo =
        serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok((loaded, info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataMode;
    use crate::model::gpt::GptConfig;
    use tch::nn;

    /// A LoadedModel around a freshly built model.
    fn loaded_from(
        vs: nn::VarStore,
        model: Gpt,
        tokenizer: TextTokenizer,
        data_mode: DataMode,
    ) -> LoadedModel {
        let config = CheckpointConfig {
            format_version: checkpoint::FORMAT_VERSION,
            model: model.config,
            eot_id: tokenizer.eot_id(),
            corpus: "none".into(),
            data_mode,
            parameters: crate::model::gpt::parameter_count(&vs),
        };
        LoadedModel {
            vs,
            model,
            tokenizer,
            config,
        }
    }

    fn synthetic_rows() -> Vec<Labeled> {
        let good = ["good", "great", "fine", "lovely", "superb", "nice"];
        let bad = ["bad", "awful", "poor", "dull", "weak", "ugly"];
        let mut rows = Vec::new();
        for i in 0..48 {
            let (words, label) = if i % 2 == 0 { (&good, 1) } else { (&bad, 0) };
            let sentence = format!("the film was {} and {}", words[i % 6], words[(i / 2) % 6]);
            rows.push(Labeled { sentence, label });
        }
        rows
    }

    fn tiny_model(rows: &[Labeled]) -> LoadedModel {
        let texts: Vec<String> = rows.iter().map(|r| r.sentence.clone()).collect();
        let tokenizer = TextTokenizer::train_bpe(&texts, 300).unwrap();
        tch::manual_seed(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let config = GptConfig {
            vocab_size: tokenizer.vocab_size() as i64,
            block_size: 16,
            n_layer: 2,
            n_head: 2,
            n_embd: 32,
            dropout: 0.0,
            n_classes: 2,
            layer_norm_eps: 1e-5,
            tie_lm_head: false,
        };
        let model = Gpt::new(&vs.root(), config);
        loaded_from(vs, model, tokenizer, DataMode::Sentences)
    }

    fn tuner(rows: &[Labeled], options: FinetuneOptions) -> Finetuner {
        Finetuner::new(tiny_model(rows), rows, &rows[..8], options).unwrap()
    }

    fn options() -> FinetuneOptions {
        FinetuneOptions {
            epochs: 30,
            learning_rate: 3e-3,
            batch_size: 8,
            weight_decay: 0.0,
            freeze_body: false,
            seed: 1,
            patience: 0,
            lm_weight: 0.0,
        }
    }

    #[test]
    fn a_tiny_model_fits_a_separable_set() {
        let _rng = crate::torch_rng_lock();
        let rows = synthetic_rows();
        let mut f = tuner(&rows, options());
        let mut last = None;
        while !f.is_done() {
            last = Some(f.run_epoch().unwrap());
            if last.is_some_and(|m| m.train_acc == 1.0 && m.epoch > 3) {
                break;
            }
        }
        let train = evaluate(&f.loaded.model, &f.train, 16);
        assert_eq!(train.acc, 1.0, "after {:?}", last);
        assert_eq!(train.confusion[0][1] + train.confusion[1][0], 0);
    }

    #[test]
    fn save_then_classify_gives_the_same_probabilities() {
        let _rng = crate::torch_rng_lock();
        let rows = synthetic_rows();
        let mut f = tuner(
            &rows,
            FinetuneOptions {
                epochs: 3,
                ..options()
            },
        );
        while !f.is_done() {
            f.run_epoch().unwrap();
        }
        let (epoch, eval) = f.restore_best().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let info = ClassifierInfo {
            source: "test".into(),
            best_epoch: epoch,
            val: eval,
            train_examples: 48,
            val_examples: 8,
            labels: ["negative".into(), "positive".into()],
        };
        f.save(&dir.path().join("clf"), &info).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("clf").join(CURVES_FILE)).unwrap();
        assert_eq!(csv.lines().count(), 4);
        let before = class_probabilities(&f.loaded, "the film was great and nice").unwrap();
        let (loaded, back) = load_classifier(&dir.path().join("clf"), Device::Cpu).unwrap();
        assert_eq!(back, info);
        let after = class_probabilities(&loaded, "the film was great and nice").unwrap();
        assert!((before[1] - after[1]).abs() < 1e-6);
        assert!((after[0] + after[1] - 1.0).abs() < 1e-6);
        let msg = format!(
            "{:#}",
            load_classifier(Path::new("/nonexistent"), Device::Cpu)
                .err()
                .unwrap()
        );
        assert!(msg.contains("does not exist"), "{msg}");
    }

    #[test]
    fn the_auxiliary_lm_loss_trains_the_lm_head_too() {
        let _rng = crate::torch_rng_lock();
        let rows = synthetic_rows();
        let head = |lm_weight: f64| {
            let o = FinetuneOptions {
                epochs: 1,
                lm_weight,
                ..options()
            };
            let mut f = tuner(&rows, o);
            let before = f.loaded.vs.variables()["lm_head.weight"].copy();
            f.run_epoch().unwrap();
            (&f.loaded.vs.variables()["lm_head.weight"] - before)
                .abs()
                .max()
                .double_value(&[])
        };
        assert_eq!(head(0.0), 0.0, "without it the LM head gets no gradient");
        assert!(head(0.5) > 0.0);
    }

    #[test]
    fn freezing_the_body_trains_only_the_head() {
        let _rng = crate::torch_rng_lock();
        let rows = synthetic_rows();
        let mut f = tuner(
            &rows,
            FinetuneOptions {
                epochs: 1,
                freeze_body: true,
                ..options()
            },
        );
        let before: BTreeMap<String, Tensor> = f
            .loaded
            .vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        f.run_epoch().unwrap();
        for (name, t) in f.loaded.vs.variables() {
            let changed = (&t - &before[&name]).abs().max().double_value(&[]) > 0.0;
            assert_eq!(changed, name.starts_with("classifier."), "{name}");
        }
    }
}
