//! Sentiment fine-tuning as a run: the language model with its classifier head, trained
//! batch by batch ([`Finetuner::advance`]), validated after each epoch, the best epoch kept
//! and saved at the end. The run owns its rules; the CLI and the worker only loop and
//! forward its events.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use tch::{Device, Kind, Tensor};

use crate::budget::Seat;
use crate::checkpoint::{self, CheckpointConfig, LoadedModel, Prompt};
use crate::classifier::{
    batch_tensors, calibration, evaluate, p_positive, per_class, prompt_tokens, sst2_labels,
    worst_mistakes, ClassifierInfo, Encoder, Example, CLASSIFIER_FILE,
};
use crate::config::{FinetuneSettings, Keep, Readout, Schedule};
use crate::data::corpus::IGNORE_INDEX;
use crate::data::sst2::{positive_share, Labeled};
use crate::model::gpt::Gpt;
use crate::protocol::{
    EpochMetrics, Evaluation, Event, FinetuneInfo, FinetuneSummary, RunDone, RunKind, RunRecord,
    RunStart,
};
use crate::rng::{mix, SplitMix64};
use crate::runs::History;
use crate::train::optim::{AdamW, AdamWConfig};

pub(crate) use crate::checkpoint::CURVES_FILE;
/// Mistakes the summary lists.
const MISTAKES: usize = 20;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FinetuneOptions {
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
pub(crate) struct Finetuner {
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
    /// The run's history in its folder, from [`Finetuner::begin`] on.
    log: Option<History>,
    /// The run's share of the machine's cores (given back while paused), and the
    /// threads it asked for (0: its share).
    seat: Option<Seat>,
    cpu_request: usize,
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
    pub(crate) fn new(
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
                if !crate::model::gpt::is_classifier_weight(&name) {
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
            log: None,
            seat: None,
            cpu_request: 0,
        })
    }

    /// Also evaluates the best epoch on these rows at the end (their accuracy is the
    /// summary's `eval_acc`).
    pub(crate) fn evaluate_at_end(&mut self, rows: &[Labeled]) -> Result<()> {
        self.extra_eval = Some(Encoder::for_model(&self.loaded)?.examples(rows)?);
        Ok(())
    }

    /// Points `link` at the classifier's folder once it is saved (see
    /// [`crate::output::point_latest`]).
    pub(crate) fn link_latest(&mut self, link: PathBuf) {
        self.latest = Some(link);
    }

    /// The run's facts, for its `start` event.
    pub(crate) fn info(
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

    /// Starts the run's history in its folder — a record of its settings, then its
    /// `start` event — and returns that event; `seat` is its share of the cores (taken
    /// before the model was loaded). Every event [`Finetuner::advance`] and
    /// [`Finetuner::finish`] return is written there too.
    pub(crate) fn begin(
        &mut self,
        info: FinetuneInfo,
        settings: &FinetuneSettings,
        seat: Seat,
    ) -> Result<Event> {
        // A new run: a new history (over one `--overwrite` replaces).
        let mut history = History::create(&self.out)?;
        let record = RunRecord {
            kind: RunKind::Classifier,
            started: RunRecord::now(),
            settings: None,
            finetune: Some(Box::new(settings.clone())),
            resumed_at: 0,
        };
        let start = Event::Start(RunStart::Finetune(Box::new(info)));
        history.record(&[Event::Run(Box::new(record)), start.clone()])?;
        self.log = Some(history);
        self.cpu_request = seat.requested();
        self.seat = Some(seat);
        Ok(start)
    }

    /// Gives the run's share of the cores back while paused (see
    /// [`crate::train::lm::LmTrainer::release_cpu`]).
    pub(crate) fn release_cpu(&mut self) {
        self.seat = None;
    }

    pub(crate) fn is_done(&self) -> bool {
        self.diverged
            || self.epoch >= self.options.epochs
            || (self.options.patience > 0 && self.epochs_since_best >= self.options.patience)
    }

    /// One batch, and whatever follows it by the run's rules: at the end of an epoch its
    /// metrics (`epoch`); when the run is over (all epochs, or `patience` epochs without a
    /// better validation loss) the best epoch restored, the classifier saved and `done`;
    /// a non-finite training loss ends the run with `diverged`, saving nothing.
    pub(crate) fn advance(&mut self) -> Result<Vec<Event>> {
        let mut events = self.advance_inner()?;
        if self.log.is_some() && self.seat.is_none() {
            // Back from a pause: a seat again, and its share now.
            let seat = Seat::take(self.cpu_request);
            tch::set_num_threads(seat.threads() as i32);
            self.seat = Some(seat);
        }
        if let Some(threads) = self.seat.as_mut().and_then(Seat::rebalance) {
            events.push(Event::log(format!(
                "other gptdash runs share this machine's cores: fine-tuning on {threads} threads now"
            )));
        }
        crate::runs::keep(&mut self.log, &mut events);
        Ok(events)
    }

    fn advance_inner(&mut self) -> Result<Vec<Event>> {
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
            events.extend(self.finish_inner()?);
        }
        Ok(events)
    }

    /// Ends the run (when done, or stopped early): restores the best epoch, saves the
    /// classifier to the run's folder and reports `done`. Before the first epoch has
    /// ended there is nothing to keep, and nothing is saved.
    pub(crate) fn finish(&mut self) -> Result<Vec<Event>> {
        let mut events = self.finish_inner()?;
        crate::runs::keep(&mut self.log, &mut events);
        Ok(events)
    }

    /// Stops the run before its end (a signal, the dashboard's `x`): [`Finetuner::finish`]
    /// with `interrupted` first, so its history says it did not run its course (a
    /// sweep started again runs it again).
    pub(crate) fn stop(&mut self) -> Result<Vec<Event>> {
        if self.is_done() {
            return self.finish();
        }
        let mut events = vec![Event::Interrupted {
            iter: self.epoch as u64,
            path: self.out.clone(),
        }];
        events.extend(self.finish_inner()?);
        self.seat = None;
        crate::runs::keep(&mut self.log, &mut events);
        Ok(events)
    }

    fn finish_inner(&mut self) -> Result<Vec<Event>> {
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
        let out = self.out.clone();
        self.save(&out, &info)?;
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
    pub(crate) fn kept(&mut self) -> Option<(usize, Evaluation)> {
        match self.options.keep {
            Keep::Best => self.restore_best(),
            Keep::Last => self.last,
        }
    }

    /// Puts the best epoch's weights back; returns that epoch and its validation result.
    pub(crate) fn restore_best(&mut self) -> Option<(usize, Evaluation)> {
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
    pub(crate) fn save(&mut self, dir: &Path, info: &ClassifierInfo) -> Result<()> {
        let config = CheckpointConfig {
            parameters: crate::model::gpt::parameter_count(&self.loaded.vs),
            ..self.loaded.config.clone()
        };
        let own = crate::output::same_folder(dir, &self.out);
        let mut history = self.log.take();
        let mut carried = Ok(());
        let saved = checkpoint::write_atomically(dir, |tmp| {
            if let Some(h) = history.as_mut() {
                carried = h.carry_into(tmp, own);
            }
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
        });
        if let (Some(h), true) = (history.as_mut(), saved.is_ok()) {
            h.carried(carried, own, dir);
            if own {
                // A copy in place of the file written: go on in the copy.
                h.follow();
            }
        }
        self.log = history;
        saved
    }
}

#[cfg(test)]
mod tests;
