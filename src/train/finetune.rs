//! Sentiment fine-tuning as a run: the language model with its classifier head, trained
//! batch by batch ([`Finetuner::advance`]), validated after each epoch, the best epoch kept
//! and saved at the end. The run owns its rules; the CLI and the worker only loop and
//! forward its events.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, CheckpointConfig, LoadedModel, Prompt};
use crate::classifier::{
    batch_tensors, calibration, evaluate, p_positive, per_class, prompt_tokens, sst2_labels,
    worst_mistakes, ClassifierInfo, Encoder, Example, CLASSIFIER_FILE,
};
use crate::config::{FinetuneSettings, Keep, Readout, Schedule};
use crate::data::corpus::IGNORE_INDEX;
use crate::data::sst2::{positive_share, Labeled};
use crate::model::gpt::Gpt;
use crate::protocol::{EpochMetrics, Evaluation, Event, FinetuneInfo, FinetuneSummary, RunDone};
use crate::rng::{mix, SplitMix64};
use crate::train::optim::{AdamW, AdamWConfig};

pub use crate::checkpoint::CURVES_FILE;
/// Mistakes the summary lists.
const MISTAKES: usize = 20;

#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneOptions {
    pub epochs: usize,
    pub learning_rate: f64,
    pub schedule: Schedule,
    pub batch_size: usize,
    pub weight_decay: f64,
    pub freeze_body: bool,
    /// Keep the token and position embeddings as pretrained (the rest trains).
    pub freeze_embeddings: bool,
    pub seed: u64,
    /// Stop after this many epochs without a better validation loss (0 = never).
    pub patience: usize,
    /// Weight of an auxiliary language-modelling loss on the same sentences (GPT-1's
    /// fine-tuning objective); 0 trains the classifier alone.
    pub lm_weight: f64,
    pub readout: Readout,
    /// `Readout::Prompt`: the text appended to each sentence, and the negative and
    /// positive words whose LM-head rows start the head.
    pub template: String,
    pub label_words: [String; 2],
    /// Which epoch's weights the run ends with.
    pub keep: Keep,
}

impl From<&FinetuneSettings> for FinetuneOptions {
    fn from(f: &FinetuneSettings) -> Self {
        Self {
            epochs: f.epochs,
            learning_rate: f.learning_rate,
            schedule: f.schedule,
            batch_size: f.batch_size as usize,
            weight_decay: f.weight_decay,
            freeze_body: f.freeze_body,
            freeze_embeddings: f.freeze_embeddings,
            seed: f.seed,
            patience: f.patience,
            lm_weight: f.lm_weight,
            readout: f.readout,
            template: f.template.clone(),
            label_words: f.label_words.clone(),
            keep: f.keep,
        }
    }
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

/// A fine-tuning run: model, examples, optimizer, and where the classifier goes.
pub struct Finetuner {
    pub loaded: LoadedModel,
    /// The validation sentences, for the summary's mistakes.
    val_texts: Vec<String>,
    /// Share of positive rows in the train and validation splits.
    positive: [f64; 2],
    options: FinetuneOptions,
    train: Vec<Example>,
    val: Vec<Example>,
    optimizer: AdamW,
    epoch: usize,
    /// Batches trained so far (the learning-rate schedule's clock).
    steps: usize,
    history: Vec<EpochMetrics>,
    /// The epoch with the lowest validation loss (its weights only when they are kept).
    best: Option<(usize, f64, Evaluation, BTreeMap<String, Tensor>)>,
    /// The last epoch and its validation result.
    last: Option<(usize, Evaluation)>,
    epochs_since_best: usize,
    progress: Option<EpochProgress>,
    /// Where [`Finetuner::finish`] saves the classifier.
    out: PathBuf,
    /// The lock on `out`, held while the run lives (a second writer fails at the start).
    _lock: checkpoint::OutputLock,
    /// A whole extra split evaluated once at the end (`--eval-split validation`).
    extra_eval: Option<Vec<Example>>,
    /// The training loss stopped being a number; the run is over.
    diverged: bool,
    /// Lines for the log, sent with the first batch's events.
    notes: Vec<String>,
    /// A link to point at `out` once the classifier is saved there.
    latest: Option<PathBuf>,
    /// The batch of the epoch whose loss was not a number.
    diverged_batch: Option<usize>,
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
        mut loaded: LoadedModel,
        train_rows: &[Labeled],
        val_rows: &[Labeled],
        options: FinetuneOptions,
        out: PathBuf,
    ) -> Result<Self> {
        if options.batch_size == 0 || options.epochs == 0 {
            bail!("batch size and epochs must be at least 1");
        }
        loaded.model.set_readout(options.readout);
        let mut notes = Vec::new();
        if options.readout == Readout::Prompt {
            let prompt = Prompt {
                template: options.template.clone(),
                label_words: options.label_words.clone(),
            };
            let tokens = prompt_tokens(&loaded.tokenizer, &prompt)?;
            notes.extend(tokens.notes);
            loaded.model.start_head_from_lm_head(&tokens.labels)?;
            loaded.prompt = Some(prompt);
        } else {
            loaded.prompt = None;
        }
        let encoder = Encoder::for_model(&loaded)?;
        let train = encoder.examples(train_rows)?;
        let val = encoder.examples(val_rows)?;
        if options.readout == Readout::Prompt {
            let before = evaluate(&loaded.model, &val, 64);
            notes.push(format!(
                "before fine-tuning, the language model's own judgement ({:?} → {} / {}): validation accuracy {:.3}",
                options.template.trim(),
                options.label_words[0],
                options.label_words[1],
                before.acc
            ));
        }
        if options.freeze_embeddings {
            for (name, t) in loaded.vs.variables() {
                if name.starts_with("transformer.wte.") || name.starts_with("transformer.wpe.") {
                    let _ = t.set_requires_grad(false);
                }
            }
        }
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
            val_texts: val_rows.iter().map(|r| r.sentence.clone()).collect(),
            positive: [positive_share(train_rows), positive_share(val_rows)],
            options,
            train,
            val,
            optimizer,
            epoch: 0,
            steps: 0,
            history: Vec::new(),
            best: None,
            last: None,
            epochs_since_best: 0,
            progress: None,
            _lock: checkpoint::OutputLock::acquire(&out)?,
            out,
            extra_eval: None,
            diverged: false,
            latest: None,
            diverged_batch: None,
            notes,
        })
    }

    /// Also evaluates the best epoch on these rows at the end (their accuracy is the
    /// summary's `eval_acc`).
    pub fn evaluate_at_end(&mut self, rows: &[Labeled]) -> Result<()> {
        self.extra_eval = Some(Encoder::for_model(&self.loaded)?.examples(rows)?);
        Ok(())
    }

    /// Points `link` at the classifier's folder once it is saved (see
    /// [`crate::output::point_latest`]).
    pub fn link_latest(&mut self, link: PathBuf) {
        self.latest = Some(link);
    }

    pub fn out(&self) -> &Path {
        &self.out
    }

    /// The run's facts, for its `start` event.
    pub fn info(
        &self,
        data: &Path,
        samples: usize,
        device: String,
        threads: usize,
    ) -> FinetuneInfo {
        FinetuneInfo {
            device,
            threads,
            model: self.loaded.origin.clone(),
            params: self.loaded.config.parameters,
            data: data.display().to_string(),
            samples,
            train_examples: self.train.len(),
            val_examples: self.val.len(),
            train_positive: self.positive[0],
            val_positive: self.positive[1],
            epochs: self.options.epochs,
            out: self.out.clone(),
        }
    }

    pub fn is_done(&self) -> bool {
        self.diverged
            || self.epoch >= self.options.epochs
            || (self.options.patience > 0 && self.epochs_since_best >= self.options.patience)
    }

    /// One batch, and whatever follows it by the run's rules: at the end of an epoch its
    /// metrics (`epoch`); when the run is over (all epochs, or `patience` epochs without a
    /// better validation loss) the best epoch restored, the classifier saved and `done`;
    /// a non-finite training loss ends the run with `diverged`, saving nothing.
    pub fn advance(&mut self) -> Result<Vec<Event>> {
        if self.is_done() {
            bail!("the fine-tuning run is over (epoch {})", self.epoch);
        }
        let mut events: Vec<Event> = self.notes.drain(..).map(Event::log).collect();
        let Some(m) = self.step()? else {
            return Ok(events);
        };
        if self.diverged {
            events.push(Event::Diverged {
                iter: m.epoch as u64,
                loss: m.train_loss,
                message: format!(
                    "fine-tuning diverged at epoch {}{} (loss {}); stopped there, nothing was saved; try a lower --lr (finetune.learning_rate)",
                    m.epoch,
                    self.diverged_batch.map(|b| format!(", batch {b}")).unwrap_or_default(),
                    m.train_loss
                ),
            });
            return Ok(events);
        }
        events.push(Event::Epoch(m));
        if self.is_done() {
            events.extend(self.finish()?);
        }
        Ok(events)
    }

    /// Ends the run (when done, or stopped early): restores the best epoch, saves the
    /// classifier to the run's folder and reports `done`. Before the first epoch has
    /// ended there is nothing to keep, and nothing is saved.
    pub fn finish(&mut self) -> Result<Vec<Event>> {
        let Some((best_epoch, val)) = self.kept() else {
            return Ok(vec![Event::log(
                "fine-tuning stopped before its first epoch ended; nothing was saved",
            )]);
        };
        let eval_acc = self
            .extra_eval
            .as_ref()
            .map(|examples| evaluate(&self.loaded.model, examples, 64).acc);
        let info = ClassifierInfo {
            source: self.loaded.origin.clone(),
            best_epoch,
            val,
            train_examples: self.train.len(),
            val_examples: self.val.len(),
            labels: sst2_labels(),
            readout: self.options.readout,
            prompt: self.loaded.prompt.clone(),
        };
        self.save(&self.out, &info)?;
        if let Some(link) = &self.latest {
            // Best effort: the classifier is saved; the link is a convenience.
            let _ = crate::output::point_latest(link, &self.out);
        }
        let labels: Vec<i64> = self.val.iter().map(|e| e.label).collect();
        let p = p_positive(&self.loaded.model, &self.val, 64)?;
        let (precision, recall, f1) = per_class(&val.confusion);
        let (ece, reliability) = calibration(&p, &labels, 10);
        Ok(vec![Event::Done(RunDone::Finetune(FinetuneSummary {
            best_epoch,
            val_acc: val.acc,
            val_loss: val.loss,
            confusion: val.confusion,
            precision,
            recall,
            f1,
            ece,
            reliability,
            mistakes: worst_mistakes(&self.val_texts, &labels, &p, MISTAKES),
            eval_acc,
            checkpoint: self.out.clone(),
        }))])
    }

    /// One pass over the training examples (seeded order), then validation, without the
    /// run's end-of-run rules (for the tests).
    #[cfg(test)]
    fn run_epoch(&mut self) -> Result<EpochMetrics> {
        loop {
            if let Some(m) = self.step()? {
                return Ok(m);
            }
        }
    }

    /// Trains on one batch; at the end of an epoch validates and returns its metrics.
    fn step(&mut self) -> Result<Option<EpochMetrics>> {
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
        let (read, hidden) = model.classifier_hidden(&ids, true);
        let logits = model.classify_hidden(&read, &lengths, true);
        let mut loss = logits.cross_entropy_for_logits(&labels);
        if self.options.lm_weight > 0.0 {
            let lm = Gpt::lm_loss(&model.lm_logits(&hidden), &lm_targets(&refs, device));
            loss = &loss + lm * self.options.lm_weight;
        }
        // A loss that is not a number stops the run at this batch, before the optimizer
        // step, so the weights held are the last finite ones (one scalar read a batch).
        let batch_loss = loss.double_value(&[]);
        if !batch_loss.is_finite() {
            let secs = progress.start.elapsed().as_secs_f64();
            self.diverged_batch = Some(end.div_ceil(self.options.batch_size));
            self.progress = None;
            self.diverged = true;
            return Ok(Some(EpochMetrics {
                epoch: self.epoch + 1,
                train_loss: batch_loss,
                train_acc: 0.0,
                val_loss: f64::NAN,
                val_acc: 0.0,
                secs,
            }));
        }
        loss.f_backward()
            .map_err(|e| anyhow!("backward pass failed: {e}"))?;
        let _ = self.optimizer.clip_grad_norm(1.0);
        let total = self.options.epochs * self.train.len().div_ceil(self.options.batch_size);
        let lr = self.options.learning_rate * self.options.schedule.factor(self.steps, total);
        self.optimizer.step(lr);
        self.steps += 1;
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
            self.diverged = true;
            return Ok(Some(metrics));
        }
        self.last = Some((self.epoch, val));
        if self.best.as_ref().is_none_or(|b| val.loss < b.1) {
            let snapshot = match self.options.keep {
                Keep::Best => self
                    .loaded
                    .vs
                    .variables()
                    .into_iter()
                    .map(|(n, t)| (n, t.detach().copy()))
                    .collect(),
                Keep::Last => BTreeMap::new(),
            };
            self.best = Some((self.epoch, val.loss, val, snapshot));
            self.epochs_since_best = 0;
        } else {
            self.epochs_since_best += 1;
        }
        self.history.push(metrics);
        Ok(Some(metrics))
    }

    /// The epoch the run ends with, and its validation result: the best one's weights
    /// put back (`keep = best`), or the last one's as they are (`keep = last`).
    pub fn kept(&mut self) -> Option<(usize, Evaluation)> {
        match self.options.keep {
            Keep::Best => self.restore_best(),
            Keep::Last => self.last,
        }
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
            checkpoint::save_weights(
                &self.loaded.vs,
                &tmp.join(checkpoint::MODEL_FILE),
                &config.model,
            )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::{class_probabilities, load_classifier};
    use crate::config::DataMode;
    use crate::data::tokenizer::TextTokenizer;
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
            text_form: Default::default(),
        };
        LoadedModel {
            vs,
            model,
            tokenizer,
            config,
            origin: "test".into(),
            prompt: None,
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

    /// A run on `rows` saving into a temporary directory (kept while the guard lives).
    fn tuner(rows: &[Labeled], options: FinetuneOptions) -> (Finetuner, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("classifier");
        let run = Finetuner::new(tiny_model(rows), rows, &rows[..8], options, out).unwrap();
        (run, dir)
    }

    fn options() -> FinetuneOptions {
        FinetuneOptions {
            epochs: 30,
            learning_rate: 3e-3,
            schedule: Schedule::Constant,
            batch_size: 8,
            weight_decay: 0.0,
            freeze_body: false,
            freeze_embeddings: false,
            seed: 1,
            patience: 0,
            lm_weight: 0.0,
            readout: Readout::Last,
            template: String::new(),
            label_words: ["bad".into(), "good".into()],
            keep: Keep::Best,
        }
    }

    #[test]
    fn a_tiny_model_fits_a_separable_set() {
        let _rng = crate::torch_rng_lock();
        let rows = synthetic_rows();
        let (mut f, _out) = tuner(&rows, options());
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
        // Every read-out is recorded and read back (the layers read-out as well).
        for readout in [Readout::Last, Readout::Layers] {
            let (mut f, _out) = tuner(
                &rows,
                FinetuneOptions {
                    epochs: 3,
                    readout,
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
                readout,
                prompt: None,
            };
            f.save(&dir.path().join("clf"), &info).unwrap();
            let csv = std::fs::read_to_string(dir.path().join("clf").join(CURVES_FILE)).unwrap();
            assert_eq!(csv.lines().count(), 4);
            let before = class_probabilities(&f.loaded, "the film was great and nice").unwrap();
            let (loaded, back) = load_classifier(&dir.path().join("clf"), Device::Cpu).unwrap();
            assert_eq!(back, info);
            assert_eq!(loaded.model.readout(), readout);
            let after = class_probabilities(&loaded, "the film was great and nice").unwrap();
            assert!((before[1] - after[1]).abs() < 1e-6, "{readout:?}");
            assert!((after[0] + after[1] - 1.0).abs() < 1e-6);
        }
        let msg = format!(
            "{:#}",
            load_classifier(Path::new("/nonexistent"), Device::Cpu)
                .err()
                .unwrap()
        );
        assert!(msg.contains("does not exist"), "{msg}");
    }

    #[test]
    fn a_prompt_readout_appends_the_template_and_starts_from_the_lm_judgement() {
        let _rng = crate::torch_rng_lock();
        let rows = synthetic_rows();
        let prompt = FinetuneOptions {
            epochs: 2,
            readout: Readout::Prompt,
            template: " so it was".into(),
            label_words: ["bad".into(), "good".into()],
            ..options()
        };
        let (mut f, _out) = tuner(&rows, prompt.clone());
        // Every example ends with the template (and whatever tokens both label words
        // start with); none is closed by <|endoftext|>.
        let tokenizer = &f.loaded.tokenizer;
        let tokens = prompt_tokens(
            tokenizer,
            &Prompt {
                template: " so it was".into(),
                label_words: ["bad".into(), "good".into()],
            },
        )
        .unwrap();
        let template = tokens.template.clone();
        let words: Vec<u32> = tokenizer.encode(" so it was").unwrap();
        assert!(template.len() >= words.len());
        let eot = i64::from(tokenizer.eot_id().unwrap());
        for e in f.train.iter().chain(&f.val) {
            assert!(e.ids.ends_with(&template), "{:?}", e.ids);
            assert_eq!(e.ids[0], eot);
        }
        // A sentence too long for the block loses its end, never the template.
        let long = "good ".repeat(40);
        let ids = Encoder::for_model(&f.loaded)
            .unwrap()
            .encode(&long)
            .unwrap();
        assert_eq!(ids.len(), 16);
        assert!(ids.ends_with(&template));
        // Before training, P(positive) is the LM's odds of " good" over " bad" after the
        // template.
        let [bad, good] = tokens.labels;
        let x = &f.train[0];
        let lm = f
            .loaded
            .model
            .forward(&Tensor::from_slice(&x.ids).unsqueeze(0), false)
            .get(0)
            .get(x.ids.len() as i64 - 1);
        let want = 1.0 / (1.0 + (lm.double_value(&[bad]) - lm.double_value(&[good])).exp());
        let p = p_positive(&f.loaded.model, &f.train[..1], 1).unwrap()[0];
        assert!((p - want).abs() < 1e-5, "{p} vs {want}");
        // The first batch reports that judgement on the validation set.
        let events = f.advance().unwrap();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Log { message } if message.contains("own judgement"))),
            "{events:?}"
        );
        // Saved and loaded back, the classifier reads sentences the same way.
        while !f.is_done() {
            f.advance().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        f.out = dir.path().join("clf");
        f.finish().unwrap();
        let (loaded, info) = load_classifier(&f.out, Device::Cpu).unwrap();
        assert_eq!(info.readout, Readout::Prompt);
        let want = Prompt {
            template: " so it was".into(),
            label_words: ["bad".into(), "good".into()],
        };
        assert_eq!(info.prompt.as_ref(), Some(&want));
        assert_eq!(loaded.prompt.as_ref(), Some(&want));
        let before = class_probabilities(&f.loaded, "the film was good").unwrap();
        let after = class_probabilities(&loaded, "the film was good").unwrap();
        assert!((before[1] - after[1]).abs() < 1e-6);
        // Label words where one is the other and more cannot tell the classes apart.
        let same = FinetuneOptions {
            label_words: ["good".into(), "good!".into()],
            ..prompt
        };
        let err = Finetuner::new(
            tiny_model(&rows),
            &rows,
            &rows[..8],
            same,
            PathBuf::from("never-written"),
        )
        .err()
        .unwrap();
        assert!(format!("{err:#}").contains("label_words"), "{err:#}");
    }

    #[test]
    fn keep_last_ends_with_the_last_epoch_and_best_with_the_lowest_loss() {
        let _rng = crate::torch_rng_lock();
        let rows = synthetic_rows();
        let dir = tempfile::tempdir().unwrap();
        for keep in [Keep::Last, Keep::Best] {
            let o = FinetuneOptions {
                epochs: 4,
                keep,
                ..options()
            };
            let out = dir.path().join(format!("{keep:?}"));
            let mut f = Finetuner::new(tiny_model(&rows), &rows, &rows[..8], o, out).unwrap();
            let mut events = Vec::new();
            while !f.is_done() {
                events.extend(f.advance().unwrap());
            }
            let epochs: Vec<EpochMetrics> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Epoch(m) => Some(*m),
                    _ => None,
                })
                .collect();
            let Some(Event::Done(RunDone::Finetune(done))) = events.last() else {
                panic!("{events:?}")
            };
            let want = match keep {
                Keep::Last => epochs[3],
                Keep::Best => *epochs
                    .iter()
                    .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss))
                    .unwrap(),
            };
            assert_eq!(done.best_epoch, want.epoch, "{keep:?}");
            assert_eq!((done.val_acc, done.val_loss), (want.val_acc, want.val_loss));
        }
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
            let (mut f, _out) = tuner(&rows, o);
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
    fn freezing_the_body_or_the_embeddings_keeps_them_as_pretrained() {
        let _rng = crate::torch_rng_lock();
        let rows = synthetic_rows();
        /// Freeze the body, freeze the embeddings, and which weights still train.
        type Case = (bool, bool, fn(&str) -> bool);
        let cases: [Case; 2] = [
            (true, false, |n| n.starts_with("classifier.")),
            // The LM head gets no gradient without the auxiliary loss either.
            (false, true, |n| {
                !(n.starts_with("transformer.wte.")
                    || n.starts_with("transformer.wpe.")
                    || n.starts_with("lm_head."))
            }),
        ];
        for (freeze_body, freeze_embeddings, trains) in cases {
            let (mut f, _out) = tuner(
                &rows,
                FinetuneOptions {
                    epochs: 1,
                    freeze_body,
                    freeze_embeddings,
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
                assert_eq!(changed, trains(&name), "{name}");
            }
        }
    }
}
