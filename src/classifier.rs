//! Sentiment classification with a model's classifier head: encoding sentences as the
//! model saw text in pretraining, batching, class probabilities, evaluation, and loading
//! a classifier written by fine-tuning. Inference only; training is `train::finetune`.
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, LoadedModel, Prompt};
use crate::config::Readout;
use crate::data::normalize::TextForm;
use crate::data::sst2::Labeled;
use crate::data::tokenizer::TextTokenizer;
use crate::model::gpt::Gpt;
use crate::protocol::{Evaluation, Mistake, ReliabilityBin};

/// Written beside a fine-tuned checkpoint's weights; its presence marks a classifier.
pub use crate::checkpoint::CLASSIFIER_FILE;

/// What `classifier.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierInfo {
    pub source: String,
    pub best_epoch: usize,
    pub val: Evaluation,
    pub train_examples: usize,
    pub val_examples: usize,
    pub labels: [String; 2],
    /// What the head reads (older classifiers: the last token).
    #[serde(default)]
    pub readout: Readout,
    /// `readout = prompt`: the template appended to each sentence, and the label words
    /// the head started from.
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub prompt: Option<Prompt>,
}

impl ClassifierInfo {
    /// Makes `loaded` read sentences as this classifier was trained to.
    pub(crate) fn apply(&self, loaded: &mut LoadedModel) {
        loaded.model.set_readout(self.readout);
        loaded.prompt = self.prompt.clone();
    }
}

/// The two SST-2 labels, in label order.
pub(crate) fn sst2_labels() -> [String; 2] {
    ["negative".into(), "positive".into()]
}

/// A tokenised sentence and its label.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Example {
    pub ids: Vec<i64>,
    pub label: i64,
}

/// Turns sentences into model inputs the way the model saw text in pretraining: models
/// trained on `<|endoftext|>`-framed sentences get that token first. A prompt
/// classifier's template follows the sentence; otherwise a framed sentence is closed by
/// `<|endoftext|>`.
pub(crate) struct Encoder<'a> {
    pub tokenizer: &'a TextTokenizer,
    pub prefix: Option<i64>,
    /// The template's tokens, the last of them the position the head reads.
    pub template: Vec<i64>,
    pub block_size: usize,
    /// How the model's pretraining text was prepared; each sentence is prepared so.
    pub form: TextForm,
}

impl Encoder<'_> {
    pub(crate) fn for_model(loaded: &LoadedModel) -> Result<Encoder<'_>> {
        let reading = crate::reading::Reading::of(loaded);
        let prefix = reading.frame.map(i64::from);
        let template = match &loaded.prompt {
            Some(prompt) => prompt_tokens(&loaded.tokenizer, prompt)?.template,
            None => Vec::new(),
        };
        let block_size = loaded.model.config.block_size as usize;
        if template.len() + usize::from(prefix.is_some()) >= block_size {
            bail!(
                "the template {:?} is {} tokens, too long for the block size {block_size}",
                loaded
                    .prompt
                    .as_ref()
                    .map(|p| p.template.as_str())
                    .unwrap_or_default(),
                template.len()
            );
        }
        Ok(Encoder {
            tokenizer: &loaded.tokenizer,
            prefix,
            template,
            block_size,
            form: reading.form,
        })
    }

    pub(crate) fn encode(&self, sentence: &str) -> Result<Vec<i64>> {
        let mut ids: Vec<i64> = self.prefix.into_iter().collect();
        let sentence = self.form.apply(sentence);
        ids.extend(self.tokenizer.encode(&sentence)?.into_iter().map(i64::from));
        if ids.is_empty() && self.template.is_empty() {
            bail!("{sentence:?} encodes to no tokens");
        }
        if !self.template.is_empty() {
            // The sentence's end is cut so that the whole template fits: the head reads
            // the template's last token.
            ids.truncate(self.block_size - self.template.len());
            ids.extend(&self.template);
            return Ok(ids);
        }
        // Framed as in pretraining: the closing <|endoftext|> is the last real token, the
        // position that has read the whole sentence (GPT-1's "extract" token).
        ids.truncate(self.block_size - usize::from(self.prefix.is_some()));
        ids.extend(self.prefix);
        Ok(ids)
    }

    pub(crate) fn examples(&self, rows: &[Labeled]) -> Result<Vec<Example>> {
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

/// A prompt in token ids: the template's, and the token each class is read from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PromptTokens {
    /// The template's tokens, then the tokens the two label words share at their start
    /// (a small vocabulary may split `" great"` into `" "` + `"great"`: the `" "` joins
    /// the template and the classes are read at the first token where the words differ).
    pub template: Vec<i64>,
    pub labels: [i64; 2],
    /// Said once in the log: how the words were read.
    pub notes: Vec<String>,
}

/// The ids of `prompt` for `tokenizer`. Each label word is taken as the next word after
/// the template (a space before it); if the words share their first tokens those join
/// the template. Words that are the same, or one a token-prefix of the other, are an
/// error naming `finetune.label_words`.
pub(crate) fn prompt_tokens(tokenizer: &TextTokenizer, prompt: &Prompt) -> Result<PromptTokens> {
    let mut template: Vec<i64> = tokenizer
        .encode(&prompt.template)?
        .into_iter()
        .map(i64::from)
        .collect();
    let words = prompt
        .label_words
        .iter()
        .map(|w| {
            let ids = tokenizer.encode(&format!(" {}", w.trim()))?;
            Ok(ids.into_iter().map(i64::from).collect::<Vec<_>>())
        })
        .collect::<Result<Vec<_>>>()?;
    let shared = words[0]
        .iter()
        .zip(&words[1])
        .take_while(|(a, b)| a == b)
        .count();
    let (Some(&neg), Some(&pos)) = (words[0].get(shared), words[1].get(shared)) else {
        bail!(
            "finetune.label_words: {:?} and {:?} are the same tokens, or one starts the other, for this tokenizer; pick two words that differ",
            prompt.label_words[0],
            prompt.label_words[1]
        );
    };
    let mut notes = Vec::new();
    if shared > 0 {
        let text: Vec<String> = words[0][..shared]
            .iter()
            .map(|&t| tokenizer.display(t as u32))
            .collect();
        notes.push(format!(
            "the label words start with the same token(s) {text:?} for this tokenizer: those follow the template, and the classes are read at the next token"
        ));
    }
    template.extend_from_slice(&words[0][..shared]);
    for (word, ids) in prompt.label_words.iter().zip(&words) {
        if ids.len() > shared + 1 {
            notes.push(format!(
                "label word {word:?} is {} tokens for this tokenizer; {:?} stands for it",
                ids.len(),
                tokenizer.display(ids[shared] as u32)
            ));
        }
    }
    Ok(PromptTokens {
        template,
        labels: [neg, pos],
        notes,
    })
}

/// Right-padded ids `[rows, longest]`, lengths and labels for a slice of examples.
pub(crate) fn batch_tensors(examples: &[&Example], device: Device) -> (Tensor, Tensor, Tensor) {
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

/// Runs the classifier over `examples` in batches (no dropout, no gradients), handing
/// each batch's examples and logits `[rows, classes]` to `f`.
fn for_each_batch(
    model: &Gpt,
    examples: &[Example],
    batch_size: usize,
    mut f: impl FnMut(&[Example], &Tensor, &Tensor) -> Result<()>,
) -> Result<()> {
    let device = model.device();
    tch::no_grad(|| {
        for chunk in examples.chunks(batch_size.max(1)) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let (ids, lengths, labels) = batch_tensors(&refs, device);
            f(chunk, &model.classify(&ids, &lengths, false), &labels)?;
        }
        Ok(())
    })
}

/// Loss, accuracy and confusion matrix of `model` on `examples` (no dropout, no gradients).
pub(crate) fn evaluate(model: &Gpt, examples: &[Example], batch_size: usize) -> Evaluation {
    let mut confusion = [[0usize; 2]; 2];
    let mut loss_sum = 0.0;
    let _ = for_each_batch(model, examples, batch_size, |chunk, logits, labels| {
        loss_sum += logits.cross_entropy_for_logits(labels).double_value(&[]) * chunk.len() as f64;
        let predicted: Vec<i64> =
            Vec::try_from(logits.argmax(-1, false).to_device(Device::Cpu)).unwrap_or_default();
        for (e, p) in chunk.iter().zip(predicted) {
            confusion[e.label.clamp(0, 1) as usize][p.clamp(0, 1) as usize] += 1;
        }
        Ok(())
    });
    let n = examples.len().max(1) as f64;
    Evaluation {
        loss: loss_sum / n,
        acc: (confusion[0][0] + confusion[1][1]) as f64 / n,
        confusion,
    }
}

/// P(positive) of every example (no dropout, no gradients).
pub(crate) fn p_positive(model: &Gpt, examples: &[Example], batch_size: usize) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(examples.len());
    for_each_batch(model, examples, batch_size, |_, logits, _| {
        let probs = logits
            .softmax(-1, Kind::Double)
            .select(1, 1)
            .to_device(Device::Cpu);
        out.extend(Vec::<f64>::try_from(probs).map_err(|e| anyhow!("{e}"))?);
        Ok(())
    })?;
    Ok(out)
}

/// Precision, recall and F1 of each class from `confusion[true][predicted]` (0 where a
/// ratio has nothing to count).
pub(crate) fn per_class(confusion: &[[usize; 2]; 2]) -> ([f64; 2], [f64; 2], [f64; 2]) {
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let mut precision = [0.0; 2];
    let mut recall = [0.0; 2];
    let mut f1 = [0.0; 2];
    for c in 0..2 {
        let right = confusion[c][c];
        precision[c] = ratio(right, confusion[0][c] + confusion[1][c]);
        recall[c] = ratio(right, confusion[c][0] + confusion[c][1]);
        let sum = precision[c] + recall[c];
        f1[c] = if sum == 0.0 {
            0.0
        } else {
            2.0 * precision[c] * recall[c] / sum
        };
    }
    (precision, recall, f1)
}

/// Expected calibration error over `bins` equal-width bins of confidence (the predicted
/// class's probability), and the bins themselves (a reliability diagram).
pub(crate) fn calibration(
    p_positive: &[f64],
    labels: &[i64],
    bins: usize,
) -> (f64, Vec<ReliabilityBin>) {
    let mut table: Vec<ReliabilityBin> = (0..bins)
        .map(|b| ReliabilityBin {
            lo: b as f64 / bins as f64,
            hi: (b + 1) as f64 / bins as f64,
            count: 0,
            confidence: 0.0,
            accuracy: 0.0,
        })
        .collect();
    for (&p, &label) in p_positive.iter().zip(labels) {
        let predicted = i64::from(p >= 0.5);
        let confidence = if predicted == 1 { p } else { 1.0 - p };
        let b = ((confidence * bins as f64) as usize).min(bins - 1);
        table[b].count += 1;
        table[b].confidence += confidence;
        table[b].accuracy += f64::from(u8::from(predicted == label));
    }
    let n = p_positive.len().max(1) as f64;
    let mut ece = 0.0;
    for bin in &mut table {
        if bin.count > 0 {
            bin.confidence /= bin.count as f64;
            bin.accuracy /= bin.count as f64;
            ece += bin.count as f64 / n * (bin.accuracy - bin.confidence).abs();
        }
    }
    (ece, table)
}

/// The `most` most confident wrong predictions, most confident first.
pub(crate) fn worst_mistakes(
    texts: &[String],
    labels: &[i64],
    p_positive: &[f64],
    most: usize,
) -> Vec<Mistake> {
    let mut wrong: Vec<Mistake> = texts
        .iter()
        .zip(labels)
        .zip(p_positive)
        .filter(|((_, &label), &p)| i64::from(p >= 0.5) != label)
        .map(|((text, &label), &p)| Mistake {
            text: text.clone(),
            label: label.clamp(0, 1) as usize,
            p_positive: p,
        })
        .collect();
    let confidence = |m: &Mistake| (m.p_positive - 0.5).abs();
    wrong.sort_by(|a, b| confidence(b).total_cmp(&confidence(a)));
    wrong.truncate(most);
    wrong
}

/// Probability of each class for one sentence.
pub(crate) fn class_probabilities(loaded: &LoadedModel, sentence: &str) -> Result<Vec<f64>> {
    let ids = Encoder::for_model(loaded)?.encode(sentence)?;
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
pub(crate) fn classify(
    loaded: &LoadedModel,
    labels: &[String; 2],
    text: &str,
) -> Result<(String, f64)> {
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
pub(crate) fn load_classifier(dir: &Path, device: Device) -> Result<(LoadedModel, ClassifierInfo)> {
    let mut loaded = checkpoint::load_model(dir, device)?;
    let Some(info) = read_info(dir)? else {
        bail!("{} has no trained classifier head ({CLASSIFIER_FILE} is missing); run `gptdash finetune` first", dir.display());
    };
    info.apply(&mut loaded);
    Ok((loaded, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_recall_and_f1_by_hand() {
        // 90 true negatives, 18 negatives called positive, 27 positives called negative,
        // 105 true positives.
        let (p, r, f) = per_class(&[[90, 18], [27, 105]]);
        assert!((p[0] - 90.0 / 117.0).abs() < 1e-12 && (p[1] - 105.0 / 123.0).abs() < 1e-12);
        assert!((r[0] - 90.0 / 108.0).abs() < 1e-12 && (r[1] - 105.0 / 132.0).abs() < 1e-12);
        let f1 = |p: f64, r: f64| 2.0 * p * r / (p + r);
        assert!((f[0] - f1(90.0 / 117.0, 90.0 / 108.0)).abs() < 1e-12);
        assert!((f[1] - f1(105.0 / 123.0, 105.0 / 132.0)).abs() < 1e-12);
        // A class never predicted: precision and F1 0, not NaN.
        let (p, _, f) = per_class(&[[0, 10], [0, 10]]);
        assert_eq!((p[0], f[0]), (0.0, 0.0));
    }

    #[test]
    fn label_words_that_share_a_first_token_are_read_where_they_differ() {
        let texts: Vec<String> = vec!["the cat sat on the mat".into(); 4];
        let tokenizer = TextTokenizer::train_bpe(&texts, 300).unwrap();
        let ids = |t: &str| -> Vec<i64> {
            tokenizer
                .encode(t)
                .unwrap()
                .into_iter()
                .map(i64::from)
                .collect()
        };
        // Neither word is in this tiny vocabulary: both start with the bare space.
        let (great, terrible) = (ids(" great"), ids(" terrible"));
        assert_eq!(great[0], terrible[0]);
        let prompt = Prompt {
            template: " it was".into(),
            label_words: ["terrible".into(), "great".into()],
        };
        let t = prompt_tokens(&tokenizer, &prompt).unwrap();
        let mut want = ids(" it was");
        want.push(great[0]);
        assert_eq!(t.template, want);
        assert_eq!(t.labels, [terrible[1], great[1]]);
        assert!(
            t.notes.iter().any(|n| n.contains("same token")),
            "{:?}",
            t.notes
        );
        // Words in the vocabulary are one token each, read right after the template.
        let cat = Prompt {
            template: " it was".into(),
            label_words: ["mat".into(), "cat".into()],
        };
        let t = prompt_tokens(&tokenizer, &cat).unwrap();
        assert_eq!(t.template, ids(" it was"));
        assert_eq!(t.labels, [ids(" mat")[0], ids(" cat")[0]]);
        // The same word twice, or one word the start of the other, is an error.
        for words in [["cat", "cat"], ["cat", "cats"]] {
            let p = Prompt {
                template: " it was".into(),
                label_words: words.map(String::from),
            };
            let err = format!("{:#}", prompt_tokens(&tokenizer, &p).unwrap_err());
            assert!(err.contains("finetune.label_words"), "{err}");
        }
    }

    #[test]
    fn calibration_error_by_hand() {
        // Confidences 0.95 (right), 0.95 (wrong), 0.65 (right), 0.75 (right: p = 0.25 → negative).
        let p = [0.95, 0.95, 0.65, 0.25];
        let labels = [1, 0, 1, 0];
        let (ece, bins) = calibration(&p, &labels, 10);
        // Bin [0.9,1): 2 predictions, confidence 0.95, accuracy 0.5 → |0.5-0.95| = 0.45.
        // Bin [0.6,0.7): 1, 0.65 vs 1.0 → 0.35. Bin [0.7,0.8): 1, 0.75 vs 1.0 → 0.25.
        let want = 2.0 / 4.0 * 0.45 + 1.0 / 4.0 * 0.35 + 1.0 / 4.0 * 0.25;
        assert!((ece - want).abs() < 1e-12, "{ece} vs {want}");
        assert_eq!(bins[9].count, 2);
        assert_eq!(bins.iter().map(|b| b.count).sum::<usize>(), 4);
        let texts: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let worst = worst_mistakes(&texts, &labels, &p, 5);
        assert_eq!(worst.len(), 1);
        assert_eq!((worst[0].text.as_str(), worst[0].label), ("b", 0));
    }
}
