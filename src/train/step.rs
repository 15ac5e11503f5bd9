//! One language-model training step (forward, loss, backward, clip, AdamW), two ways:
//!
//! - [`StepKind::Plain`]: the textbook step, as minGPT writes it: full logits, library
//!   cross-entropy, autograd for everything, per-parameter AdamW. The reference.
//! - [`StepKind::Fused`]: what gptdash trains with. Same mathematics, less memory
//!   traffic:
//!   * the LM head and cross-entropy run in row chunks through one reused buffer and
//!     compute their own gradients (softmax minus one-hot, two matrix products), so the
//!     `batch × time × vocab` logits, log-probabilities and their gradients are never
//!     allocated (each was a fresh 200 MB, page-faulted allocation per step at the
//!     benchmark size);
//!   * the token embedding's gradient is added only into the rows used by the batch;
//!   * gradients accumulate into one flat buffer that the optimizer's single fused pass
//!     reads, clips, applies and leaves zeroed ([`FlatAdamW`]).
//!
//! ## Invariants (what must change together)
//!
//! Fused, by hand, are exactly the model's top and its loss; everything below the final
//! hidden states `h` is autograd's:
//! - **Two gradients derived by hand.** With `p = softmax(h Wᵀ)` per row and `w_r` the
//!   row's loss weight: the LM head's weight gets `Σ_r w_r (p_r − onehot(y_r))ᵀ h_r`
//!   (added into `lm_head.weight`'s flat gradient, or `transformer.wte.weight`'s when the
//!   head is tied), and `h` gets `w_r (p_r − onehot(y_r)) W`, which `backward` on
//!   `sum(h · grad_h)` carries through the blocks, the final LayerNorm and the position
//!   embedding. So the top must stay *hidden → bias-free linear head → softmax
//!   cross-entropy*: a head bias, logit soft-capping, label smoothing or a z-loss must be
//!   written into [`FusedStep::chunked_loss`] as well as into [`Gpt::forward`] and
//!   [`Gpt::lm_loss`], or the two steps part.
//! - **Loss weights.** Each real target weighs `1 / (real targets in the batch)`;
//!   [`IGNORE_INDEX`] rows weigh 0 (no loss, no gradient) — the mean `lm_loss` takes.
//! - **The token embedding** is gathered from the detached table (`tok`), so autograd
//!   stops there; its gradient comes back on `tok` and is `index_add_`ed into the rows the
//!   batch used. Tied, the same flat view also receives the head's gradient: both add.
//! - **`hidden_from_embeddings` is `forward` up to the final LayerNorm** (the same code:
//!   `Gpt::hidden_states`), and dropout draws from libtorch's generator in the same order
//!   in both steps (embeddings, then each block), so one seed gives both the same masks.
//! - **Gradients accumulate into [`FlatAdamW`]'s flat buffer**, which is zero when a step
//!   starts (its pass leaves it zeroed): hand-made gradients are *added* into
//!   [`FlatAdamW::grad_of`]'s views, never assigned, and nothing else zeroes or replaces
//!   a variable's `.grad`.
//! - **Compute kind.** In bf16 the head's three products (the logits, `grad_h` and the
//!   head's gradient) run on bf16 copies and the softmax, loss and weights stay f32; the plain step's head runs in f32 (`forward`
//!   keeps it so), so in bf16 the two agree to bf16 rounding rather than to 1e-4.
//!
//! `fused_step_trains_exactly_like_the_plain_one` checks every read-out of 25 steps — the
//! loss and gradient norm of each, then the logits, every weight and both AdamW moments
//! of every parameter (as the optimizer saves them) — for the untied and the tied head at
//! chunk sizes that divide the batch and that do not, in f32 to 1e-4; in bf16 the losses,
//! norms and logits (to bf16's rounding; single weights part there, see the test).
use std::path::Path;

use anyhow::{anyhow, Result};
use tch::{nn::VarStore, Kind, Tensor};

use crate::data::corpus::IGNORE_INDEX;
use crate::model::gpt::{Gpt, LM_HEAD_WEIGHT, TOKEN_EMBEDDING_WEIGHT};
use crate::train::optim::{AdamW, AdamWConfig, FlatAdamW};

/// Rows of the logits computed at a time by the fused step's loss.
pub(crate) const DEFAULT_LOSS_CHUNK_ROWS: i64 = 512;

/// Which implementation of the training step to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum StepKind {
    Plain,
    Fused,
}

impl StepKind {
    pub(crate) fn name(self) -> &'static str {
        self.into()
    }
}

/// Loss and gradient norm of one step, as 0-d f32 tensors on the model's device (read
/// them when needed; reading synchronises with the device).
pub(crate) struct StepOutput {
    pub loss: Tensor,
    pub grad_norm: Tensor,
}

/// The optimizer and scratch buffers of a training run, and the step that uses them.
pub(crate) enum LmStep {
    Plain(AdamW),
    Fused(FusedStep),
}

/// State of the fused step.
pub(crate) struct FusedStep {
    optimizer: FlatAdamW,
    chunk_rows: i64,
    /// Buffers of the chunked loss, reused by every chunk of every step.
    buffers: Option<LossBuffers>,
}

/// The parameters a language-model step trains: all but the classifier head.
fn lm_trains(name: &str) -> bool {
    !crate::model::gpt::is_classifier_weight(name)
}

impl LmStep {
    /// Sets up the optimizer of `vs` (which holds `model`). For the fused step the
    /// variables move into flat buffers (values unchanged).
    pub(crate) fn new(kind: StepKind, vs: &VarStore, config: AdamWConfig) -> Result<Self> {
        Ok(match kind {
            StepKind::Plain => LmStep::Plain(AdamW::new(vs, config)),
            StepKind::Fused => LmStep::Fused(FusedStep {
                optimizer: FlatAdamW::new(vs, config, lm_trains)?,
                chunk_rows: DEFAULT_LOSS_CHUNK_ROWS,
                buffers: None,
            }),
        })
    }

    /// Rows per chunk of the fused loss (ignored by the plain step).
    pub(crate) fn with_chunk_rows(mut self, rows: i64) -> Self {
        if let LmStep::Fused(f) = &mut self {
            f.chunk_rows = rows.max(1);
            f.buffers = None;
        }
        self
    }

    /// One optimizer step of `model` on inputs `x` and targets `y` (`[batch, time]`,
    /// targets [`IGNORE_INDEX`] where there is nothing to predict), at learning rate
    /// `lr`, clipping the gradient norm to `clip` (0 = no clipping). Dropout is active.
    pub(crate) fn step(
        &mut self,
        model: &Gpt,
        x: &Tensor,
        y: &Tensor,
        lr: f64,
        clip: f64,
    ) -> Result<StepOutput> {
        match self {
            LmStep::Plain(optimizer) => {
                optimizer.zero_grad();
                let logits = model.forward(x, true);
                let loss = Gpt::lm_loss(&logits, y);
                loss.f_backward()
                    .map_err(|e| anyhow!("backward pass failed: {e}"))?;
                let grad_norm = optimizer.clip_grad_norm(clip);
                optimizer.step(lr);
                Ok(StepOutput {
                    loss: loss.detach().to_kind(Kind::Float),
                    grad_norm: grad_norm.to_kind(Kind::Float),
                })
            }
            LmStep::Fused(fused) => fused.step(model, x, y, lr, clip),
        }
    }

    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        match self {
            LmStep::Plain(o) => o.save(path),
            LmStep::Fused(f) => f.optimizer.save(path),
        }
    }

    pub(crate) fn load(&mut self, path: &Path, steps: u64) -> Result<()> {
        match self {
            LmStep::Plain(o) => o.load(path, steps),
            LmStep::Fused(f) => f.optimizer.load(path, steps),
        }
    }
}

impl FusedStep {
    fn step(
        &mut self,
        model: &Gpt,
        x: &Tensor,
        y: &Tensor,
        lr: f64,
        clip: f64,
    ) -> Result<StepOutput> {
        let size = x.size();
        let (b, t) = (size[0], size[1]);
        let c = model.config.n_embd;
        let n = b * t;
        debug_assert_eq!(y.size(), size);
        let idx = x.reshape([n]);
        let targets = y.reshape([n]);

        // Token embeddings gathered from the (detached) table; their gradient comes back
        // on `tok` and is added into the used rows only.
        let tok = tch::no_grad(|| Tensor::embedding(model.token_embedding(), x, -1, false, false))
            .set_requires_grad(true);
        let h = model.hidden_from_embeddings(&tok, true);
        let head_grad = self.optimizer.grad_of(lm_head_name(model))?;
        let (loss, grad_h) = tch::no_grad(|| {
            self.chunked_loss(
                &h.detach().view([n, c]),
                model.lm_head_weight(),
                &targets,
                &head_grad,
                model.compute_kind(),
            )
        })?;
        // Backpropagate `grad_h` through the blocks: d(sum(h * grad_h))/dh = grad_h.
        (&h * grad_h.view([b, t, c]))
            .sum(Kind::Float)
            .f_backward()
            .map_err(|e| anyhow!("backward pass failed: {e}"))?;
        let tok_grad = tok.grad();
        let mut wte_grad = self.optimizer.grad_of(TOKEN_EMBEDDING_WEIGHT)?;
        tch::no_grad(|| {
            let _ = wte_grad.index_add_(0, &idx, &tok_grad.view([n, c]));
        });
        let grad_norm = self.optimizer.step(lr, clip)?;
        Ok(StepOutput {
            loss,
            grad_norm: grad_norm.to_device(x.device()),
        })
    }

    /// Mean cross-entropy of `h @ w.T` against `targets` over the real targets, computed
    /// `chunk_rows` rows at a time. Adds the LM head's gradient into `head_grad` and
    /// returns the loss and the gradient with respect to `h`.
    fn chunked_loss(
        &mut self,
        h: &Tensor,
        w: &Tensor,
        targets: &Tensor,
        head_grad: &Tensor,
        kind: Kind,
    ) -> Result<(Tensor, Tensor)> {
        let n = h.size()[0];
        let vocab = w.size()[0];
        let rows = self.chunk_rows.min(n);
        let device = h.device();
        if !matches!(&self.buffers, Some(b) if b.probs.size() == [rows, vocab] && b.probs.device() == device && b.kind == kind)
        {
            self.buffers = Some(LossBuffers::new(rows, vocab, kind, device));
        }
        let Some(buffers) = &self.buffers else {
            return Err(anyhow!("loss buffers missing"));
        };
        // In bf16 the products run on bf16 copies; softmax and loss stay f32.
        let (h_mm, w_mm) = if kind == Kind::Float {
            (h.shallow_clone(), w.shallow_clone())
        } else {
            (h.to_kind(kind), w.to_kind(kind))
        };
        let real = targets.ne(IGNORE_INDEX).to_kind(Kind::Float);
        // Each real target weighs 1/count; padding rows weigh 0 (no loss, no gradient).
        let weight = &real / real.sum(Kind::Float).clamp_min(1.0);
        let safe_targets = targets.clamp_min(0).unsqueeze(1);
        let grad_h = Tensor::empty_like(h);
        let mut loss = Tensor::zeros([], (Kind::Float, device));
        let mut head_grad = head_grad.shallow_clone();
        let mut start = 0;
        while start < n {
            let len = rows.min(n - start);
            let hc = h_mm.narrow(0, start, len);
            let tc = safe_targets.narrow(0, start, len);
            let wc = weight.narrow(0, start, len).unsqueeze(1);
            let mut probs = buffers.probs.narrow(0, 0, len);
            match &buffers.low {
                None => {
                    let _ = hc.f_mm_out(&probs, &w_mm.tr())?;
                }
                Some(low) => {
                    let _ = hc.f_mm_out(&low.narrow(0, 0, len), &w_mm.tr())?;
                    probs.copy_(&low.narrow(0, 0, len));
                }
            }
            // Softmax in place (rows worked in cache), then the target's log-probability;
            // probabilities below f32's smallest normal count as that (a per-token loss
            // cap of 87.3 nats, far above any real loss).
            let _ = probs.f_internal_softmax_out(&probs, 1, false)?;
            let target_prob = probs
                .gather(1, &tc, false)
                .clamp_min(f32::MIN_POSITIVE as f64);
            loss -= (target_prob.log() * &wc).sum(Kind::Float);
            // Softmax minus one-hot: the gradient of the loss with respect to the logits,
            // before each row's weight.
            let _ = probs.scatter_add_(1, &tc, &buffers.minus_one.narrow(0, 0, len));
            let probs_mm = match &buffers.low {
                None => probs,
                Some(low) => {
                    let mut low = low.narrow(0, 0, len);
                    low.copy_(&probs);
                    low
                }
            };
            grad_h
                .narrow(0, start, len)
                .copy_(&(probs_mm.mm(&w_mm) * &wc));
            let scaled_h = &hc * wc.to_kind(kind);
            if kind == Kind::Float {
                let _ = head_grad.f_addmm_(&probs_mm.tr(), &scaled_h)?;
            } else {
                let _ = head_grad.f_add_(&probs_mm.tr().mm(&scaled_h))?;
            }
            start += len;
        }
        Ok((loss, grad_h))
    }
}

/// The fused loss's reused `[rows, vocab]` buffers.
struct LossBuffers {
    kind: Kind,
    /// f32 logits, then probabilities, then their gradient.
    probs: Tensor,
    /// The same in the compute kind when that is not f32 (the matrix products' side).
    low: Option<Tensor>,
    /// `[rows, 1]` of −1: the one-hot subtracted at each row's target.
    minus_one: Tensor,
}

impl LossBuffers {
    fn new(rows: i64, vocab: i64, kind: Kind, device: tch::Device) -> Self {
        Self {
            kind,
            probs: Tensor::empty([rows, vocab], (Kind::Float, device)),
            low: (kind != Kind::Float).then(|| Tensor::empty([rows, vocab], (kind, device))),
            minus_one: Tensor::full([rows, 1], -1.0, (Kind::Float, device)),
        }
    }
}

/// Name of the LM head's weight (the token embedding when tied).
fn lm_head_name(model: &Gpt) -> &'static str {
    if model.config.tie_lm_head {
        TOKEN_EMBEDDING_WEIGHT
    } else {
        LM_HEAD_WEIGHT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gpt::GptConfig;
    use tch::{nn, Device};

    fn config(tie_lm_head: bool) -> GptConfig {
        GptConfig {
            dropout: 0.1,
            tie_lm_head,
            ..GptConfig::tiny(97, 12, 2, 16)
        }
    }

    /// Three random batches, repeated (so there is something to learn), with a few
    /// padded (ignored) targets as sentence mode makes them.
    fn batches(steps: usize) -> Vec<(Tensor, Tensor)> {
        tch::manual_seed(7);
        let distinct: Vec<(Tensor, Tensor)> = (0..3)
            .map(|i| {
                let x = Tensor::randint(97, [4, 12], (Kind::Int64, Device::Cpu));
                let y = Tensor::randint(97, [4, 12], (Kind::Int64, Device::Cpu));
                let _ = y.narrow(1, 12 - i, i).fill_(IGNORE_INDEX);
                (x, y)
            })
            .collect();
        (0..steps)
            .map(|i| {
                let (x, y) = &distinct[i % 3];
                (x.shallow_clone(), y.shallow_clone())
            })
            .collect()
    }

    /// What a run of steps leaves to compare: each step's loss and gradient norm, the
    /// logits after, and every weight and both AdamW moments of every parameter (the
    /// moments as the optimizer saves them, so the state file is compared too).
    struct Readouts {
        loss: Vec<f64>,
        norms: Vec<f64>,
        logits: Tensor,
        state: std::collections::BTreeMap<String, Tensor>,
    }

    /// `steps` steps of `kind` in `compute` from the same initialisation and dropout seeds.
    fn run(kind: StepKind, chunk_rows: i64, tie: bool, compute: Kind, steps: usize) -> Readouts {
        let data = batches(steps);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut model = Gpt::new(&vs.root(), config(tie));
        model.set_compute_kind(compute);
        let mut step = LmStep::new(kind, &vs, AdamWConfig::default())
            .unwrap()
            .with_chunk_rows(chunk_rows);
        let (mut loss, mut norms) = (Vec::new(), Vec::new());
        for (i, (x, y)) in data.iter().enumerate() {
            tch::manual_seed(100 + i as i64);
            // Clip at 0.5 so clipping is active on some steps and not on others.
            let out = step.step(&model, x, y, 3e-3, 0.5).unwrap();
            loss.push(out.loss.double_value(&[]));
            norms.push(out.grad_norm.double_value(&[]));
        }
        let logits = model.forward(&data[0].0, false);
        let mut state: std::collections::BTreeMap<String, Tensor> = vs
            .variables()
            .into_iter()
            .map(|(name, t)| (format!("weight.{name}"), t.detach().copy()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        step.save(&path).unwrap();
        let saved = crate::model::safetensors::WeightsFile::open(&path).unwrap();
        for name in saved.tensors().keys() {
            state.insert(name.clone(), saved.tensor(name).unwrap());
        }
        Readouts {
            loss,
            norms,
            logits,
            state,
        }
    }

    fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * y.abs().max(1.0),
                "{what} step {i}: {x} vs {y}"
            );
        }
    }

    /// How close the two steps must come: losses and gradient norms (relative, at least
    /// 1 absolute), the logits after (relative to their largest), the weights (absolute,
    /// at least relative to the largest) and the AdamW moments (relative to the largest);
    /// `None` compares the quantity's presence only.
    struct Tolerance {
        loss: f64,
        logits: f64,
        weights: Option<f64>,
        moments: Option<f64>,
    }

    /// Every read-out of `fused` against `plain`.
    fn assert_same(fused: &Readouts, plain: &Readouts, tol: &Tolerance, what: &str) {
        assert_close(&fused.loss, &plain.loss, tol.loss, &format!("{what}: loss"));
        assert_close(
            &fused.norms,
            &plain.norms,
            tol.loss,
            &format!("{what}: grad norm"),
        );
        let keys = |r: &Readouts| r.state.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys(fused),
            keys(plain),
            "{what}: the same parameters and moments"
        );
        let mut compared = vec![("logits".to_string(), &fused.logits, &plain.logits)];
        compared.extend(
            fused
                .state
                .iter()
                .map(|(name, t)| (name.clone(), t, &plain.state[name])),
        );
        for (name, f, p) in compared {
            let scale = p.abs().max().double_value(&[]);
            let bound = if name == "logits" {
                Some(tol.logits * scale)
            } else if name.starts_with("weight.") {
                tol.weights.map(|t| t * scale.max(1.0))
            } else {
                tol.moments.map(|t| t * scale)
            };
            let diff = (f - p).abs().max().double_value(&[]);
            if let Some(bound) = bound {
                assert!(
                    diff <= bound,
                    "{what}: {name} differs by {diff} (scale {scale})"
                );
            }
        }
    }

    #[test]
    fn fused_step_trains_exactly_like_the_plain_one() {
        let _rng = crate::torch_rng_lock();
        // In f32 the two steps agree to float rounding, every read-out. In bf16 the fused
        // head's products are bf16 and the plain one's f32: losses, norms and logits agree
        // to bf16's rounding (3 significant digits) compounded over the steps, while single
        // weights and moments part further (Adam's per-element steps turn a rounding into a
        // step of a different sign), so only their presence and layout are compared.
        let f32_tol = Tolerance {
            loss: 1e-4,
            logits: 1e-4,
            weights: Some(1e-4),
            moments: Some(1e-4),
        };
        let bf16_tol = Tolerance {
            loss: 3e-2,
            logits: 0.1,
            weights: None,
            moments: None,
        };
        for (compute, tol) in [(Kind::Float, f32_tol), (Kind::BFloat16, bf16_tol)] {
            for tie in [false, true] {
                let plain = run(StepKind::Plain, 0, tie, compute, 25);
                // 48 rows per batch: one chunk, several equal chunks, a ragged last chunk.
                for chunk in [48, 16, 20] {
                    let fused = run(StepKind::Fused, chunk, tie, compute, 25);
                    assert_same(
                        &fused,
                        &plain,
                        &tol,
                        &format!("{compute:?}, tied {tie}, chunk {chunk}"),
                    );
                }
                assert!(
                    plain.loss[24] < plain.loss[0] - 0.5,
                    "training must move: {:?}",
                    plain.loss
                );
            }
        }
    }
}
