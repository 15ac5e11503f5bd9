//! One introspecting forward pass ([`Gpt::inspect`]) turned into plain data: the report
//! `gptdash inspect` prints and the Inspect tab draws. Tensors stay here (in the worker
//! or the headless command); the report carries strings and numbers only.
use anyhow::{anyhow, bail, Result};
use tch::{Kind, Tensor};

use crate::data::tokenizer::TextTokenizer;
use crate::model::gpt::{Ablation, AblationMode, Gpt, Inspection};
use crate::protocol::{
    AblatedLoss, AblationAsk, AblationMap, InspectAsk, InspectReport, LensCell, PatchAsk, Patching,
    PinnedLoss, TokenAttribution, TopToken,
};
use crate::reading::Reading;

fn to_vec<T>(t: &Tensor) -> Result<Vec<T>>
where
    Vec<T>: TryFrom<Tensor, Error = tch::TchError>,
{
    Vec::try_from(t.flatten(0, -1)).map_err(|e| anyhow!("{e}"))
}

/// The report of `model` on `ids`: per layer and head the attention, per layer and
/// position the lens's top token, its probability and the entropy, per position the
/// loss and rank of the actual next token and the six most probable. `text` is what the
/// ids were read from.
pub(crate) fn report(
    model: &Gpt,
    tokenizer: &TextTokenizer,
    ids: &[u32],
    text: &str,
) -> Result<InspectReport> {
    let ids64: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    plain_report(tokenizer, ids, text, &model.inspect(&ids64)?)
}

/// How many next tokens a report lists per position.
pub(crate) const TOP_K: i64 = 6;

/// The `TOP_K` most probable next tokens at each position of log-probabilities
/// `[time, vocab]`.
fn top_tokens(logp: &Tensor, tokenizer: &TextTokenizer) -> Result<Vec<Vec<TopToken>>> {
    let k = TOP_K.min(logp.size()[1]);
    let (values, at) = logp.topk(k, -1, true, true);
    let probs: Vec<f32> = to_vec(&values.exp())?;
    let at: Vec<i64> = to_vec(&at)?;
    Ok(probs
        .chunks(k as usize)
        .zip(at.chunks(k as usize))
        .map(|(p, a)| {
            p.iter()
                .zip(a)
                .map(|(&prob, &id)| TopToken {
                    token: tokenizer.display(id as u32),
                    prob: f64::from(prob),
                })
                .collect()
        })
        .collect())
}

/// The report of one pass (`seen`) over `ids`.
fn plain_report(
    tokenizer: &TextTokenizer,
    ids: &[u32],
    text: &str,
    seen: &Inspection,
) -> Result<InspectReport> {
    let mut lens = Vec::with_capacity(seen.lens.len());
    for layer in &seen.lens {
        // Log-probabilities [time, vocab]: top-1 and entropy −Σ p·log p, in f32 (a
        // double copy of a [64, 50257] tensor per layer costs more than the rest).
        let (top, at) = layer.max_dim(-1, false);
        let entropy = -(layer.exp() * layer).sum_dim_intlist(-1, false, Kind::Float);
        let top: Vec<f32> = to_vec(&top.exp())?;
        let at: Vec<i64> = to_vec(&at)?;
        let entropy: Vec<f32> = to_vec(&entropy)?;
        lens.push(
            (0..top.len())
                .map(|i| LensCell {
                    token: tokenizer.display(at[i] as u32),
                    prob: f64::from(top[i]),
                    entropy: f64::from(entropy[i]),
                })
                .collect(),
        );
    }
    let mut attention = Vec::with_capacity(seen.attention.len());
    for layer in &seen.attention {
        let size = layer.size();
        let flat: Vec<f32> = to_vec(&layer.to_kind(Kind::Float))?;
        let (heads, t) = (size[0] as usize, size[1] as usize);
        attention.push(
            (0..heads)
                .map(|h| {
                    (0..t)
                        .map(|q| flat[(h * t + q) * t..(h * t + q + 1) * t].to_vec())
                        .collect()
                })
                .collect(),
        );
    }
    let top = match seen.lens.last() {
        Some(last) => top_tokens(last, tokenizer)?,
        None => Vec::new(),
    };
    Ok(InspectReport {
        read_as: None,
        request: None,
        text: text.to_string(),
        step: None,
        tokens: ids.iter().map(|&i| tokenizer.display(i)).collect(),
        token_loss: seen.token_loss.clone(),
        token_rank: seen.token_rank.clone(),
        top,
        lens,
        attention,
        pinned: None,
        ablation: None,
        ablation_map: None,
        attribution: Vec::new(),
        patching: None,
        patch_error: None,
        anatomy: None,
    })
}

/// The asked parts (numbered from 0) as the model's ablation.
pub(crate) fn ablation_of(ask: &AblationAsk) -> Ablation {
    Ablation {
        heads: ask.heads.clone(),
        mlps: ask.mlps.clone(),
        mode: if ask.mean {
            AblationMode::Mean
        } else {
            AblationMode::Zero
        },
    }
}

fn mode_name(mode: AblationMode) -> String {
    match mode {
        AblationMode::Zero => "zero",
        AblationMode::Mean => "mean",
    }
    .into()
}

/// The model's own top next token after the text of the pass `seen`.
fn top_last(seen: &Inspection) -> Result<i64> {
    let last = seen
        .lens
        .last()
        .ok_or_else(|| anyhow!("the model has no layers"))?;
    Ok(last
        .get(last.size()[0] - 1)
        .argmax(-1, false)
        .int64_value(&[]))
}

/// Which asked input an error is about: the command line names its flag, the tab its
/// field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AskPart {
    Corrupted,
    Answer,
    Wrong,
}

/// An error in an asked input ([`AskPart`]), in words that do not name where it came
/// from.
#[derive(Debug)]
pub(crate) struct AskError {
    pub part: AskPart,
    pub message: String,
}

impl std::fmt::Display for AskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AskError {}

fn bad(part: AskPart, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(AskError {
        part,
        message: e.to_string(),
    })
}

/// What a mistake in the asked patch does: fail the whole report (the command line,
/// which exits with it), or go into it as `patch_error` beside the pass (the tab, which
/// still shows the new text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchErrors {
    Fail,
    Report,
}

/// The report of the model `reading` holds on `ids` (read from `text`) with what `ask`
/// asks: the pass under the ablation (and the losses and top tokens without it), the
/// ablation map, the attribution and the patching.
pub(crate) fn report_asked(
    reading: &Reading,
    ids: &[u32],
    text: &str,
    ask: &InspectAsk,
    patch_errors: PatchErrors,
) -> Result<InspectReport> {
    let (model, tokenizer) = (reading.model, reading.tokenizer);
    let ids64: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    let ablation = ablation_of(&ask.ablation);
    let plain = model.inspect(&ids64)?;
    let mut report = if ablation.is_empty() {
        plain_report(tokenizer, ids, text, &plain)?
    } else {
        let seen = model.inspect_ablated(&ids64, &ablation)?;
        let mut report = plain_report(tokenizer, ids, text, &seen)?;
        report.ablation = Some(AblatedLoss {
            heads: ablation
                .heads
                .iter()
                .map(|(l, h)| format!("{}.{}", l + 1, h + 1))
                .collect(),
            mlps: ablation.mlps.iter().map(|l| l + 1).collect(),
            mode: mode_name(ablation.mode),
            base_token_loss: plain.token_loss.clone(),
            base_top: match plain.lens.last() {
                Some(last) => top_tokens(last, tokenizer)?,
                None => Vec::new(),
            },
        });
        report
    };
    if ask.ablation_map {
        let effects = model.head_effects(&ids64, ablation.mode)?;
        report.ablation_map = Some(AblationMap {
            mode: mode_name(ablation.mode),
            base_loss: effects.base,
            heads: effects
                .heads
                .iter()
                .map(|l| l.iter().map(|v| v - effects.base).collect())
                .collect(),
            mlps: effects.mlps.iter().map(|v| v - effects.base).collect(),
        });
    }
    if ask.attribution {
        let last = match &ask.dla_token {
            Some(word) => i64::from(
                reading
                    .answer_id(word)
                    .map_err(|e| bad(AskPart::Answer, format!("{e:#}")))?,
            ),
            None => top_last(&plain)?,
        };
        let targets: Vec<i64> = ids64[1..].iter().copied().chain([last]).collect();
        let a = model.attribute(&model.trace(&ids64)?, &targets)?;
        let layers = a.mlp.len();
        report.attribution = (0..ids.len())
            .map(|p| TokenAttribution {
                position: p,
                token: tokenizer.display(targets[p] as u32),
                predicted: p + 1 == ids.len() && ask.dla_token.is_none(),
                logit: a.logit[p],
                sum: a.sum(p),
                embed_token: a.tok[p],
                embed_position: a.pos[p],
                attn: (0..layers)
                    .map(|l| a.heads[l].iter().map(|h| h[p]).sum::<f64>() + a.attn_bias[l][p])
                    .collect(),
                attn_bias: (0..layers).map(|l| a.attn_bias[l][p]).collect(),
                mlp: (0..layers).map(|l| a.mlp[l][p]).collect(),
                heads: a
                    .heads
                    .iter()
                    .map(|layer| layer.iter().map(|h| h[p]).collect())
                    .collect(),
                ln_f_bias: a.ln_bias[p],
            })
            .collect();
    }
    if let Some(patch) = &ask.patch {
        match patching(reading, ids, &ids64, &plain, patch) {
            Ok(p) => report.patching = Some(p),
            Err(e) => match (patch_errors, e.downcast_ref::<AskError>()) {
                (PatchErrors::Report, Some(bad)) => {
                    let field = match bad.part {
                        AskPart::Corrupted => "the corrupted text",
                        AskPart::Answer => "the answer",
                        AskPart::Wrong => "the wrong token",
                    };
                    report.patch_error = Some(format!("{field}: {}", bad.message));
                }
                _ => return Err(e),
            },
        }
    }
    Ok(report)
}

/// The per-token loss of another set of weights (a pinned copy) on the same ids: one
/// ordinary forward pass, no attention or lens.
pub fn pinned_loss(model: &Gpt, ids: &[u32], step: Option<u64>) -> Result<PinnedLoss> {
    if ids.len() < 2 {
        return Ok(PinnedLoss {
            step,
            token_loss: Vec::new(),
        });
    }
    let ids64: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    if ids64.iter().any(|&i| i >= model.config.vocab_size) {
        bail!("the pinned weights have a smaller vocabulary than this text needs");
    }
    let token_loss = tch::no_grad(|| -> Result<Vec<f64>> {
        let device = model.device();
        let n = ids64.len() as i64 - 1;
        let input = Tensor::from_slice(&ids64[..n as usize])
            .to_device(device)
            .unsqueeze(0);
        let targets = Tensor::from_slice(&ids64[1..])
            .to_device(device)
            .unsqueeze(1);
        let logp = model
            .forward(&input, false)
            .squeeze_dim(0)
            .log_softmax(-1, Kind::Float)
            .gather(1, &targets, false)
            .to_kind(Kind::Double)
            .to_device(tch::Device::Cpu);
        Ok(to_vec::<f64>(&logp)?.into_iter().map(|l| -l).collect())
    })?;
    Ok(PinnedLoss { step, token_loss })
}

/// Activation patching from `ids` (the clean text, whose plain pass is `plain`) into
/// the asked corrupted text.
fn patching(
    reading: &Reading,
    ids: &[u32],
    ids64: &[i64],
    plain: &Inspection,
    patch: &PatchAsk,
) -> Result<Patching> {
    let (model, tokenizer) = (reading.model, reading.tokenizer);
    let corrupted = reading
        .framed_ids(&patch.corrupted)
        .map_err(|e| bad(AskPart::Corrupted, format!("{e:#}")))?;
    let corrupted64: Vec<i64> = corrupted.iter().map(|&i| i64::from(i)).collect();
    if corrupted.len() != ids.len() {
        return Err(bad(
            AskPart::Corrupted,
            format!(
                "it is {} tokens and the clean text {}: patching needs the same length",
                corrupted.len(),
                ids.len()
            ),
        ));
    }
    let answer = match &patch.answer {
        Some(word) => i64::from(
            reading
                .answer_id(word)
                .map_err(|e| bad(AskPart::Answer, format!("{e:#}")))?,
        ),
        None => top_last(plain)?,
    };
    let wrong = match &patch.wrong {
        Some(word) => i64::from(
            reading
                .answer_id(word)
                .map_err(|e| bad(AskPart::Wrong, format!("{e:#}")))?,
        ),
        None => {
            // The corrupted run's most probable token other than the answer.
            let seen = model.inspect(&corrupted64)?;
            let last = seen
                .lens
                .last()
                .ok_or_else(|| anyhow!("the model has no layers"))?;
            let row = last.get(last.size()[0] - 1);
            let (_, at) = row.topk(2, -1, true, true);
            let at: Vec<i64> = to_vec(&at)?;
            at.into_iter().find(|&i| i != answer).unwrap_or(answer)
        }
    };
    if answer == wrong {
        return Err(bad(
            AskPart::Wrong,
            format!(
                "it is the answer token too ({:?}): patching measures the difference between two tokens",
                tokenizer.display(answer as u32)
            ),
        ));
    }
    let maps = model.patch_maps(ids64, &corrupted64, answer, wrong)?;
    Ok(Patching {
        corrupted_text: patch.corrupted.clone(),
        corrupted_tokens: corrupted.iter().map(|&i| tokenizer.display(i)).collect(),
        answer: tokenizer.display(answer as u32),
        wrong: tokenizer.display(wrong as u32),
        clean: maps.clean,
        corrupted: maps.corrupted,
        resid: maps.resid,
        heads: maps.heads,
    })
}
