//! Sentiment classification with a model's classifier head: encoding sentences as the
//! model saw text in pretraining, batching, class probabilities, evaluation, and loading
//! a classifier written by fine-tuning. Inference only; training is `train::finetune`.
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, LoadedModel};
use crate::data::sst2::Labeled;
use crate::data::tokenizer::TextTokenizer;
use crate::model::gpt::Gpt;
use crate::protocol::Evaluation;

/// Written beside a fine-tuned checkpoint's weights; its presence marks a classifier.
pub const CLASSIFIER_FILE: &str = "classifier.json";

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

/// The two SST-2 labels, in label order.
pub fn sst2_labels() -> [String; 2] {
    ["negative".into(), "positive".into()]
}

/// A tokenised sentence and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub ids: Vec<i64>,
    pub label: i64,
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
pub fn batch_tensors(examples: &[&Example], device: Device) -> (Tensor, Tensor, Tensor) {
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

/// A sentence's verdict: the label and P(positive).
pub fn classify(loaded: &LoadedModel, labels: &[String; 2], text: &str) -> Result<(String, f64)> {
    let probs = class_probabilities(loaded, text)?;
    let p_positive = probs.get(1).copied().unwrap_or(0.0);
    let label = labels[usize::from(p_positive >= 0.5)].clone();
    Ok((label, p_positive))
}

/// The classifier record of a checkpoint folder, if it has one.
pub fn read_info(dir: &Path) -> Result<Option<ClassifierInfo>> {
    let path = dir.join(CLASSIFIER_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let info = serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Some(info))
}

/// Loads a classifier written by fine-tuning.
pub fn load_classifier(dir: &Path, device: Device) -> Result<(LoadedModel, ClassifierInfo)> {
    let loaded = checkpoint::load_model(dir, device)?;
    let Some(info) = read_info(dir)? else {
        bail!("{} has no trained classifier head ({CLASSIFIER_FILE} is missing); run `gptdash finetune` first", dir.display());
    };
    Ok((loaded, info))
}
