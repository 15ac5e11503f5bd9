//! One introspecting forward pass (issue 12's groundwork): per layer and head the
//! attention probabilities, per layer the logit lens (the residual stream after each
//! block read through the final LayerNorm and the LM head), per position the loss and
//! rank of the actual next token. Attention is computed explicitly here; training and
//! generation keep their fused path.
use anyhow::{bail, Result};
use tch::nn::Module;
use tch::{Kind, Tensor};

use super::{CausalSelfAttention, Gpt};

/// What one forward pass over a token sequence shows (tensors on the CPU, no gradients;
/// the worker turns them into plain data for the dashboard).
#[derive(Debug)]
pub(crate) struct Inspection {
    /// Per layer: attention probabilities `[heads, time, time]`, row = query position;
    /// each row sums to 1 and is zero above the diagonal.
    pub attention: Vec<Tensor>,
    /// Per layer: log-probabilities of the next token `[time, vocab]` read from the
    /// residual stream after that block; the last layer's are the model's own. (One
    /// tensor per layer: at GPT-2's vocabulary a stacked one is too big for the
    /// allocator to reuse, and made the pass twice as slow.)
    pub lens: Vec<Tensor>,
    /// Per layer: the attention branch's output `[time, n_embd]` (after the output
    /// projection), what the block adds to the residual stream (the tests' check that
    /// the explained attention is the model's).
    #[cfg(test)]
    pub attention_out: Vec<Tensor>,
    /// Per position but the last: −log P(actual next token), in nats.
    pub token_loss: Vec<f64>,
    /// Per position but the last: the actual next token's rank under the model (1 = top).
    pub token_rank: Vec<usize>,
}

/// How a removed part's output is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AblationMode {
    /// By zeros.
    #[default]
    Zero,
    /// By its mean over the text's positions (what it writes whatever the token). The
    /// mean takes in the later positions too, so at a position it can carry a little of
    /// what follows in the text (TransformerLens averages over a dataset instead).
    Mean,
}

/// The parts of the model removed for one pass: heads (layer, head; from 0) whose
/// output is replaced before the attention's output projection, and layers whose MLP
/// output is replaced before it is added to the residual stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Ablation {
    pub heads: Vec<(usize, usize)>,
    pub mlps: Vec<usize>,
    pub mode: AblationMode,
}

impl Ablation {
    pub(crate) fn is_empty(&self) -> bool {
        self.heads.is_empty() && self.mlps.is_empty()
    }

    /// Whether a model of `layers` × `heads` has every part named (an error names the
    /// first it lacks, numbered from 1 as the tab shows them).
    pub(crate) fn check(&self, layers: usize, heads: usize) -> Result<()> {
        for &(l, h) in &self.heads {
            if l >= layers || h >= heads {
                bail!(
                    "head {}.{}: the model has {layers} layers of {heads} heads (1.1 to {layers}.{heads})",
                    l + 1,
                    h + 1
                );
            }
        }
        if let Some(l) = self.mlps.iter().find(|&&l| l >= layers) {
            bail!(
                "MLP {}: the model has {layers} layers (1 to {layers})",
                l + 1
            );
        }
        Ok(())
    }

    /// `out` `[batch, parts, time, …]` (parts: heads) or `[batch, time, …]` (`parts`
    /// empty: the whole output) with the listed parts replaced as the mode says.
    pub(super) fn replace(&self, out: &Tensor, parts: &[usize], time_dim: i64) -> Tensor {
        let replacement = match self.mode {
            AblationMode::Zero => out.zeros_like(),
            AblationMode::Mean => out.mean_dim(time_dim, true, out.kind()).expand_as(out),
        };
        if parts.is_empty() {
            return replacement;
        }
        let n = out.size()[1];
        let mut keep = vec![1f32; n as usize];
        for &p in parts {
            keep[p] = 0.0;
        }
        let mut shape = vec![1i64; out.dim()];
        shape[1] = n;
        let keep = Tensor::from_slice(&keep)
            .view(shape.as_slice())
            .to_kind(out.kind())
            .to_device(out.device());
        out * &keep + replacement * (1.0 - &keep)
    }
}

impl CausalSelfAttention {
    /// The heads' outputs before the projection `[batch, heads, time, head_dim]` and
    /// their attention probabilities `[batch, heads, time, time]`, computed explicitly.
    pub(super) fn attend(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (q, k, v) = self.heads(x);
        super::attend_from(&q, &k, &v, 0)
    }

    /// The attention branch written out: its output after the projection
    /// `[batch, time, n_embd]` and the probabilities `[batch, heads, time, time]`; the
    /// heads in `off` (from 0) replaced as `ablation` says before the projection.
    fn forward_explained(
        &self,
        x: &Tensor,
        off: &[usize],
        ablation: &Ablation,
    ) -> (Tensor, Tensor) {
        let (mut y, att) = self.attend(x);
        if !off.is_empty() {
            // y: [batch, heads, time, head_dim]
            y = ablation.replace(&y, off, 2);
        }
        (self.merge(&y), att)
    }
}

impl Gpt {
    /// Inspects the model on `ids` (1 to block-size tokens, each in the vocabulary).
    pub(crate) fn inspect(&self, ids: &[i64]) -> Result<Inspection> {
        self.inspect_ablated(ids, &Ablation::default())
    }

    /// [`Gpt::inspect`] with the parts `ablation` names removed (an error names a layer
    /// or head the model does not have, numbered from 1 as the tab shows them).
    pub(crate) fn inspect_ablated(&self, ids: &[i64], ablation: &Ablation) -> Result<Inspection> {
        ablation.check(self.config.n_layer as usize, self.config.n_head as usize)?;
        self.check_ids(ids)?;
        let t = ids.len() as i64;
        tch::no_grad(|| {
            let device = self.device();
            let idx = Tensor::from_slice(ids).to_device(device).unsqueeze(0);
            let pos = Tensor::arange(t, (Kind::Int64, device));
            let mut x = self.wte.forward(&idx) + self.wpe.forward(&pos);
            let mut attention = Vec::new();
            #[cfg(test)]
            let mut attention_out = Vec::new();
            let mut streams = Vec::new();
            for (l, block) in self.h.iter().enumerate() {
                let off: Vec<usize> = ablation
                    .heads
                    .iter()
                    .filter(|(at, _)| *at == l)
                    .map(|(_, h)| *h)
                    .collect();
                let (out, att) =
                    block
                        .attn
                        .forward_explained(&block.ln_1.forward(&x), &off, ablation);
                x = &x + &out;
                let mut mlp = block.mlp.forward(&block.ln_2.forward(&x), false);
                if ablation.mlps.contains(&l) {
                    // mlp: [batch, time, n_embd]
                    mlp = ablation.replace(&mlp, &[], 1);
                }
                x = &x + mlp;
                attention.push(att.squeeze_dim(0).to_device(tch::Device::Cpu));
                #[cfg(test)]
                attention_out.push(
                    out.squeeze_dim(0)
                        .to_kind(Kind::Float)
                        .to_device(tch::Device::Cpu),
                );
                streams.push(x.squeeze_dim(0));
            }
            let lens: Vec<Tensor> = streams
                .iter()
                .map(|x| {
                    self.lm_head
                        .forward(&self.ln_f.forward(x))
                        .log_softmax(-1, Kind::Float)
                        .to_device(tch::Device::Cpu)
                })
                .collect();
            // Loss and rank of each actual next token under the last layer (the model).
            let (mut token_loss, mut token_rank) = (Vec::new(), Vec::new());
            if let Some(last) = lens.last().filter(|_| t > 1) {
                let last = last.narrow(0, 0, t - 1);
                let targets = Tensor::from_slice(&ids[1..]).unsqueeze(1);
                let logp = last.gather(1, &targets, false);
                let above = last.gt_tensor(&logp).sum_dim_intlist(1, false, Kind::Int64);
                let logp: Vec<f64> = Vec::try_from(logp.squeeze_dim(1).to_kind(Kind::Double))?;
                let above: Vec<i64> = Vec::try_from(above)?;
                token_loss = logp.iter().map(|l| -l).collect();
                token_rank = above.iter().map(|&a| a as usize + 1).collect();
            }
            Ok(Inspection {
                attention,
                lens,
                #[cfg(test)]
                attention_out,
                token_loss,
                token_rank,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;
    use tch::Device;

    use crate::model::gpt::{Block, GptConfig};

    fn model() -> (nn::VarStore, Gpt) {
        tch::manual_seed(11);
        let vs = nn::VarStore::new(Device::Cpu);
        let config = GptConfig {
            n_head: 4,
            ..GptConfig::tiny(50, 12, 3, 32)
        };
        let model = Gpt::new(&vs.root(), config);
        (vs, model)
    }

    const IDS: [i64; 9] = [3, 17, 4, 4, 29, 0, 11, 42, 8];

    #[test]
    fn attention_rows_are_distributions_over_the_past() {
        let _rng = crate::torch_rng_lock();
        let (_vs, model) = model();
        let seen = model.inspect(&IDS).unwrap();
        assert_eq!(seen.attention.len(), 3);
        for att in &seen.attention {
            assert_eq!(att.size(), vec![4, 9, 9]);
            let sums = att.sum_dim_intlist(-1, false, Kind::Double);
            assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-6);
            let future = att.triu(1).abs().max().double_value(&[]);
            assert_eq!(future, 0.0);
        }
    }

    #[test]
    fn the_explicit_attention_reproduces_the_normal_forward_and_the_last_lens_the_model() {
        let _rng = crate::torch_rng_lock();
        let (_vs, model) = model();
        let seen = model.inspect(&IDS).unwrap();
        // Each block's attention output equals the fused path's on the same input.
        let idx = Tensor::from_slice(&IDS).unsqueeze(0);
        let pos = Tensor::arange(9, (Kind::Int64, Device::Cpu));
        let mut x = model.wte.forward(&idx) + model.wpe.forward(&pos);
        for (block, out) in model.h.iter().zip(&seen.attention_out) {
            let fused = block.attn.forward(&block.ln_1.forward(&x), false);
            let diff = (fused.squeeze_dim(0) - out).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "attention output differs by {diff}");
            x = block.forward(&x, false);
        }
        // The last layer's lens is the model's own next-token distribution.
        let own = model
            .forward(&idx, false)
            .squeeze_dim(0)
            .log_softmax(-1, Kind::Float);
        let last = &seen.lens[2];
        let diff = (&own - last).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "lens differs by {diff}");
        // Per-token loss and rank of the actual next token.
        assert_eq!(seen.token_loss.len(), 8);
        for (p, (&loss, &rank)) in seen.token_loss.iter().zip(&seen.token_rank).enumerate() {
            let row = own.get(p as i64);
            let target = IDS[p + 1];
            assert!((loss + row.double_value(&[target])).abs() < 1e-6);
            let above = (0..50)
                .filter(|&v| row.double_value(&[v]) > row.double_value(&[target]))
                .count();
            assert_eq!(rank, above + 1);
        }
        // The mean token loss is the model's LM loss on the sequence.
        let targets = Tensor::from_slice(&IDS[1..]).unsqueeze(0);
        let lm = Gpt::lm_loss(&model.forward(&idx.narrow(1, 0, 8), false), &targets);
        let mean = seen.token_loss.iter().sum::<f64>() / 8.0;
        assert!((mean - lm.double_value(&[])).abs() < 1e-5);
    }

    /// The model's per-token losses on `IDS`, from a plain forward written out block by
    /// block, `attn(l)` and `mlp(l)` saying what each branch adds.
    fn losses_with(
        model: &Gpt,
        attn: impl Fn(usize, &Block, &Tensor) -> Tensor,
        mlp: impl Fn(usize, &Block, &Tensor) -> Tensor,
    ) -> Vec<f64> {
        let idx = Tensor::from_slice(&IDS).unsqueeze(0);
        let pos = Tensor::arange(9, (Kind::Int64, Device::Cpu));
        let mut x = model.wte.forward(&idx) + model.wpe.forward(&pos);
        for (l, block) in model.h.iter().enumerate() {
            x = &x + attn(l, block, &block.ln_1.forward(&x));
            x = &x + mlp(l, block, &block.ln_2.forward(&x));
        }
        let logp = model
            .lm_head
            .forward(&model.ln_f.forward(&x))
            .squeeze_dim(0)
            .log_softmax(-1, Kind::Float);
        (0..8)
            .map(|p| -logp.double_value(&[p, IDS[p as usize + 1]]))
            .collect()
    }

    fn close(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn ablating_nothing_changes_nothing_and_zero_ablation_removes_exactly_that_part() {
        let _rng = crate::torch_rng_lock();
        let (_vs, model) = model();
        let plain = model.inspect(&IDS).unwrap().token_loss;
        let none = model.inspect_ablated(&IDS, &Ablation::default()).unwrap();
        assert_eq!(none.token_loss, plain);
        tch::no_grad(|| {
            // Every head of layer 2 off: that attention branch adds only its projection's
            // bias (the projection of zeros).
            let all_heads = Ablation {
                heads: (0..4).map(|h| (1, h)).collect(),
                ..Ablation::default()
            };
            let seen = model.inspect_ablated(&IDS, &all_heads).unwrap().token_loss;
            let manual = losses_with(
                &model,
                |l, b, x| {
                    let out = b.attn.forward(x, false);
                    if l == 1 {
                        b.attn.c_proj.forward(&out.zeros_like())
                    } else {
                        out
                    }
                },
                |_, b, x| b.mlp.forward(x, false),
            );
            assert!(close(&seen, &manual) < 1e-5, "{seen:?} vs {manual:?}");
            assert!(close(&seen, &plain) > 1e-4, "the ablation changed nothing");
            // Layer 3's MLP off.
            let mlp = Ablation {
                mlps: vec![2],
                ..Ablation::default()
            };
            let seen = model.inspect_ablated(&IDS, &mlp).unwrap().token_loss;
            let manual = losses_with(
                &model,
                |_, b, x| b.attn.forward(x, false),
                |l, b, x| {
                    let out = b.mlp.forward(x, false);
                    if l == 2 {
                        out.zeros_like()
                    } else {
                        out
                    }
                },
            );
            assert!(close(&seen, &manual) < 1e-5, "{seen:?} vs {manual:?}");
            // One head off changes the losses too.
            let one = Ablation {
                heads: vec![(0, 2)],
                ..Ablation::default()
            };
            let seen = model.inspect_ablated(&IDS, &one).unwrap().token_loss;
            assert!(close(&seen, &plain) > 1e-6);
        });
    }

    #[test]
    fn mean_ablation_on_one_position_is_no_change_and_bad_parts_are_named() {
        let _rng = crate::torch_rng_lock();
        let (_vs, model) = model();
        // On one token a part's mean over the positions is its output there.
        let mean = Ablation {
            heads: vec![(0, 1), (2, 3)],
            mlps: vec![1],
            mode: AblationMode::Mean,
        };
        let plain = model.inspect(&IDS[..1]).unwrap();
        let seen = model.inspect_ablated(&IDS[..1], &mean).unwrap();
        let diff = (&plain.lens[2] - &seen.lens[2])
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
        // Over the whole text it changes the losses.
        let plain = model.inspect(&IDS).unwrap().token_loss;
        let seen = model.inspect_ablated(&IDS, &mean).unwrap().token_loss;
        assert!(close(&seen, &plain) > 1e-6);
        let bad = |a: Ablation| format!("{:#}", model.inspect_ablated(&IDS, &a).unwrap_err());
        let err = bad(Ablation {
            heads: vec![(3, 0)],
            ..Ablation::default()
        });
        assert!(
            err.contains("head 4.1") && err.contains("1.1 to 3.4"),
            "{err}"
        );
        let err = bad(Ablation {
            mlps: vec![5],
            ..Ablation::default()
        });
        assert!(err.contains("MLP 6"), "{err}");
    }

    #[test]
    fn too_long_empty_or_unknown_tokens_are_errors() {
        let _rng = crate::torch_rng_lock();
        let (_vs, model) = model();
        assert!(model.inspect(&[]).is_err());
        assert!(model.inspect(&[1; 13]).is_err());
        let err = format!("{:#}", model.inspect(&[1, 50]).unwrap_err());
        assert!(err.contains("vocabulary"), "{err}");
        assert_eq!(model.inspect(&[5]).unwrap().token_loss.len(), 0);
    }
}
