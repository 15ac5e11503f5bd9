//! One introspecting forward pass ([`Gpt::inspect`]) turned into plain data: the report
//! `gptdash inspect` prints and the Inspect tab draws. Tensors stay here (in the worker
//! or the headless command); the report carries strings and numbers only.
use anyhow::{anyhow, bail, Result};
use tch::{Kind, Tensor};

use crate::data::tokenizer::TextTokenizer;
use crate::model::gpt::{Ablation, AblationMode, Gpt, Inspection};
use crate::protocol::{AblatedLoss, InspectReport, LensCell, PinnedLoss};

fn to_vec<T>(t: &Tensor) -> Result<Vec<T>>
where
    Vec<T>: TryFrom<Tensor, Error = tch::TchError>,
{
    Vec::try_from(t.flatten(0, -1)).map_err(|e| anyhow!("{e}"))
}

/// The report of `model` on `ids`: per layer and head the attention, per layer and
/// position the lens's top token, its probability and the entropy, per position the
/// loss and rank of the actual next token. `text` is what the ids were read from.
pub(crate) fn report(
    model: &Gpt,
    tokenizer: &TextTokenizer,
    ids: &[u32],
    text: &str,
) -> Result<InspectReport> {
    report_ablated(model, tokenizer, ids, text, &Ablation::default())
}

/// [`report`] with the parts `ablation` names removed: the losses, lens and attention
/// are under the removal, and `ablation` in the report holds the losses without it.
pub(crate) fn report_ablated(
    model: &Gpt,
    tokenizer: &TextTokenizer,
    ids: &[u32],
    text: &str,
    ablation: &Ablation,
) -> Result<InspectReport> {
    let ids64: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    let seen: Inspection = model.inspect_ablated(&ids64, ablation)?;
    let removed = if ablation.is_empty() {
        None
    } else {
        Some(AblatedLoss {
            heads: ablation
                .heads
                .iter()
                .map(|(l, h)| format!("{}.{}", l + 1, h + 1))
                .collect(),
            mlps: ablation.mlps.iter().map(|l| l + 1).collect(),
            mode: match ablation.mode {
                AblationMode::Zero => "zero",
                AblationMode::Mean => "mean",
            }
            .into(),
            base_token_loss: model.inspect(&ids64)?.token_loss,
        })
    };
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
    Ok(InspectReport {
        read_as: None,
        request: None,
        text: text.to_string(),
        step: None,
        tokens: ids.iter().map(|&i| tokenizer.display(i)).collect(),
        token_loss: seen.token_loss,
        token_rank: seen.token_rank,
        lens,
        attention,
        pinned: None,
        ablation: removed,
    })
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
