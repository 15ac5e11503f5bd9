//! Causal probing (issue 25), on top of the introspecting pass: one pass that keeps every
//! activation probing reads back ([`Trace`]), runs that start part-way through the model
//! from a traced residual stream with one block's heads or MLP changed, and what they
//! measure — the loss increase when each head is removed ([`Gpt::head_effects`]),
//! activation patching from a clean run into a corrupted one ([`Gpt::patch_maps`]) and
//! direct logit attribution through the final LayerNorm ([`Gpt::attribute`]).
//!
//! Public for the criterion benchmarks (benches/probes.rs); the dashboard and
//! `gptdash inspect` reach them through `crate::inspect`.
//!
//! Every map is batched by layer: the runs that change block `l` share the stream
//! entering it, so they start there, one batch row per changed part.
use anyhow::{bail, Result};
use tch::nn::Module;
use tch::{Device, Kind, Tensor};

use super::inspect::AblationMode;
use super::{attend_from, Block, Gpt};

/// The activations of one pass over a text (batch 1, no gradients).
#[derive(Debug)]
pub struct Trace {
    pub ids: Vec<i64>,
    /// The token and the position embeddings `[1, time, n_embd]`.
    pub tok: Tensor,
    pub pos: Tensor,
    /// The residual stream entering each block and, last, leaving the last one
    /// (`n_layer + 1` of `[1, time, n_embd]`).
    pub resid: Vec<Tensor>,
    /// Per block: the heads' outputs before the output projection
    /// `[1, heads, time, head_dim]`.
    pub z: Vec<Tensor>,
    /// Per block: what the MLP adds to the residual stream `[1, time, n_embd]`.
    pub mlp: Vec<Tensor>,
    /// Per block: the attention's keys and values `[1, heads, time, head_dim]`.
    pub kv: Vec<(Tensor, Tensor)>,
}

/// What changes in the first block a run goes through: its heads' outputs before the
/// projection `[batch, heads, time, head_dim]`, its MLP's output `[batch, time, n_embd]`.
#[derive(Default)]
struct Edit<'a> {
    z: Option<&'a dyn Fn(&Tensor) -> Tensor>,
    mlp: Option<&'a dyn Fn(&Tensor) -> Tensor>,
}

/// One block written out: its output stream and the parts that made it.
struct BlockParts {
    x: Tensor,
    z: Tensor,
    mlp: Tensor,
    /// The keys and values of its attention `[batch, heads, time, head_dim]`.
    kv: (Tensor, Tensor),
}

/// Head outputs patched in: `mask` `[batch, heads, 1, 1]` says which head of which row
/// takes `with` `[1, heads, time, d]` (every position of a run) instead of its own.
struct HeadPatch<'a> {
    mask: &'a Tensor,
    with: &'a Tensor,
}

impl Block {
    fn parts(&self, x: &Tensor, edit: &Edit) -> BlockParts {
        let (q, k, v) = self.attn.heads(&self.ln_1.forward(x));
        let (mut z, _) = attend_from(&q, &k, &v, 0);
        if let Some(f) = edit.z {
            z = f(&z);
        }
        let mid = x + self.attn.merge(&z);
        let mut mlp = self.mlp.forward(&self.ln_2.forward(&mid), false);
        if let Some(f) = edit.mlp {
            mlp = f(&mlp);
        }
        BlockParts {
            x: &mid + &mlp,
            z,
            mlp,
            kv: (k, v),
        }
    }

    /// The block over the positions `start..` of a run only (`x` `[batch, t, n_embd]`),
    /// the positions before it known by their keys and values `prefix` (`[1, heads,
    /// start, d]`, the same for every row): a run changed from position `start` on is
    /// the same before it (the model is causal). With `last_only`, only the last
    /// position's output (a run's final block, read at the last position).
    fn tail(
        &self,
        x: &Tensor,
        prefix: Option<(Tensor, Tensor)>,
        patch: Option<&HeadPatch>,
        last_only: bool,
    ) -> Tensor {
        let (q, k, v) = self.attn.heads(&self.ln_1.forward(x));
        let (b, t) = (x.size()[0], x.size()[1]);
        let (k, v, start) = match prefix {
            Some((pk, pv)) => {
                let s = pk.size()[2];
                let wide = |p: Tensor| p.expand([b, -1, -1, -1], false);
                (
                    Tensor::cat(&[wide(pk), k], 2),
                    Tensor::cat(&[wide(pv), v], 2),
                    s,
                )
            }
            None => (k, v, 0),
        };
        let (x, q, first) = if last_only {
            (x.narrow(1, t - 1, 1), q.narrow(2, t - 1, 1), t - 1)
        } else {
            (x.shallow_clone(), q, 0)
        };
        let (mut z, _) = attend_from(&q, &k, &v, start + first);
        if let Some(p) = patch {
            let with = p.with.narrow(2, start + first, z.size()[2]);
            z = with.where_self(p.mask, &z);
        }
        let mid = &x + self.attn.merge(&z);
        &mid + self.mlp.forward(&self.ln_2.forward(&mid), false)
    }
}

/// The loss increase on a text when each part is removed (the Inspect tab's ablation
/// map), as mean per-token losses.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadEffects {
    /// The mean loss with nothing removed.
    pub base: f64,
    /// `heads[layer][head]`: the mean loss with that head removed.
    pub heads: Vec<Vec<f64>>,
    /// `mlps[layer]`: the mean loss with that layer's MLP removed.
    pub mlps: Vec<f64>,
}

/// Activation patching from a clean run into a corrupted one of the same length: the
/// logit difference `answer − wrong` at the last position, unpatched and patched.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchMaps {
    pub clean: f64,
    pub corrupted: f64,
    /// `resid[layer][position]`: the clean residual stream entering that block at that
    /// position patched into the corrupted run.
    pub resid: Vec<Vec<f64>>,
    /// `heads[layer][head]`: the clean output of that head (every position) patched in.
    pub heads: Vec<Vec<f64>>,
}

/// Direct logit attribution: what each part of the model writes into one token's logit
/// at each position, through the final LayerNorm with its scale frozen at what that
/// position's stream gives it. Per position: the parts sum to `logit` up to rounding.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    /// The token attributed at each position, and its logit.
    pub targets: Vec<i64>,
    pub logit: Vec<f64>,
    /// The token and the position embeddings.
    pub tok: Vec<f64>,
    pub pos: Vec<f64>,
    /// `heads[layer][head][position]`.
    pub heads: Vec<Vec<Vec<f64>>>,
    /// Per layer: the attention output projection's bias (written whatever the heads do).
    pub attn_bias: Vec<Vec<f64>>,
    pub mlp: Vec<Vec<f64>>,
    /// The final LayerNorm's bias.
    pub ln_bias: Vec<f64>,
}

impl Attribution {
    /// The parts' sum at position `p` (the check against `logit[p]`).
    pub fn sum(&self, p: usize) -> f64 {
        let layers: f64 = (0..self.mlp.len())
            .map(|l| {
                self.heads[l].iter().map(|h| h[p]).sum::<f64>()
                    + self.attn_bias[l][p]
                    + self.mlp[l][p]
            })
            .sum();
        self.tok[p] + self.pos[p] + layers + self.ln_bias[p]
    }
}

fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    Vec::<f64>::try_from(
        t.to_kind(Kind::Double)
            .to_device(Device::Cpu)
            .flatten(0, -1),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// `rows × cols` values, row-major, as nested rows.
fn rows(flat: Vec<f64>, cols: usize) -> Vec<Vec<f64>> {
    flat.chunks(cols.max(1)).map(<[f64]>::to_vec).collect()
}

impl Gpt {
    /// Errors for ids the model cannot read: none, more than a block, or outside the
    /// vocabulary.
    pub(super) fn check_ids(&self, ids: &[i64]) -> Result<()> {
        let t = ids.len() as i64;
        if t == 0 || t > self.config.block_size {
            bail!(
                "inspect takes 1 to {} tokens (the block size), got {t}",
                self.config.block_size
            );
        }
        if let Some(bad) = ids.iter().find(|&&i| i < 0 || i >= self.config.vocab_size) {
            bail!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            );
        }
        Ok(())
    }

    /// One pass over `ids` keeping what probing reads back.
    pub fn trace(&self, ids: &[i64]) -> Result<Trace> {
        self.check_ids(ids)?;
        tch::no_grad(|| {
            let device = self.device();
            let idx = Tensor::from_slice(ids).to_device(device).unsqueeze(0);
            let tok = self.wte.forward(&idx);
            let pos = self
                .wpe
                .forward(&Tensor::arange(ids.len() as i64, (Kind::Int64, device)))
                .unsqueeze(0);
            let mut x = &tok + &pos;
            let (mut resid, mut z, mut mlp, mut kv) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for block in &self.h {
                let parts = block.parts(&x, &Edit::default());
                resid.push(x);
                z.push(parts.z);
                mlp.push(parts.mlp);
                kv.push(parts.kv);
                x = parts.x;
            }
            resid.push(x);
            Ok(Trace {
                ids: ids.to_vec(),
                tok,
                pos,
                resid,
                z,
                mlp,
                kv,
            })
        })
    }

    /// The residual stream leaving the last block, from `x` `[batch, time, n_embd]`
    /// entering block `start`, with `edit` applied in that block.
    fn run_from(&self, x: &Tensor, start: usize, edit: &Edit) -> Tensor {
        let mut x = x.shallow_clone();
        for (l, block) in self.h.iter().enumerate().skip(start) {
            let none = Edit::default();
            x = block.parts(&x, if l == start { edit } else { &none }).x;
        }
        x
    }

    /// The last position of the stream leaving the last block, for rows `x`
    /// `[batch, time - from, n_embd]` holding positions `from..` of the stream entering
    /// block `start` — the positions before `from` being those of `base`'s run — with
    /// `patch` applied in block `start`.
    fn run_tail(
        &self,
        x: &Tensor,
        start: usize,
        from: i64,
        base: &Trace,
        patch: Option<&HeadPatch>,
    ) -> Tensor {
        let mut x = x.shallow_clone();
        let last = self.h.len() - 1;
        for (l, block) in self.h.iter().enumerate().skip(start) {
            let prefix = (from > 0).then(|| {
                let (k, v) = &base.kv[l];
                (k.narrow(2, 0, from), v.narrow(2, 0, from))
            });
            let patch = if l == start { patch } else { None };
            x = block.tail(&x, prefix, patch, l == last);
        }
        x
    }

    /// `logit(answer) − logit(wrong)` at the last position of each row of the final
    /// stream `x` `[batch, time, n_embd]`.
    fn logit_diff(&self, x: &Tensor, answer: i64, wrong: i64) -> Result<Vec<f64>> {
        let t = x.size()[1];
        let logits = self
            .lm_head
            .forward(&self.ln_f.forward(&x.select(1, t - 1)));
        let diff = logits.select(1, answer) - logits.select(1, wrong);
        to_f64(&diff)
    }

    /// The mean next-token loss of `ids` in each row of the final stream `x`.
    fn mean_losses(&self, x: &Tensor, ids: &[i64]) -> Result<Vec<f64>> {
        let size = x.size();
        let (b, t) = (size[0], size[1]);
        if t < 2 {
            return Ok(vec![0.0; b as usize]);
        }
        let logp = self
            .lm_head
            .forward(&self.ln_f.forward(&x.narrow(1, 0, t - 1)))
            .log_softmax(-1, Kind::Float);
        let targets = Tensor::from_slice(&ids[1..])
            .to_device(x.device())
            .view([1, t - 1, 1])
            .expand([b, t - 1, 1], false);
        let loss = -logp
            .gather(2, &targets, false)
            .mean_dim(&[1i64, 2][..], false, Kind::Double);
        to_f64(&loss)
    }

    /// The mean loss on `ids` with each head, and each layer's MLP, removed in turn (one
    /// run per part) — replaced as `mode` says, as [`Gpt::inspect_ablated`] removes it.
    pub fn head_effects(&self, ids: &[i64], mode: AblationMode) -> Result<HeadEffects> {
        let trace = self.trace(ids)?;
        tch::no_grad(|| {
            let (layers, heads) = (self.h.len(), self.config.n_head);
            let device = self.device();
            let base = self.mean_losses(&trace.resid[layers], ids)?[0];
            // Row r removes head r.
            let one_each = Tensor::eye(heads, (Kind::Bool, device)).view([heads, heads, 1, 1]);
            let replace = |out: &Tensor, time_dim: i64| match mode {
                AblationMode::Zero => out.zeros_like(),
                AblationMode::Mean => out.mean_dim(time_dim, true, out.kind()).expand_as(out),
            };
            let (mut by_head, mut mlps) = (Vec::new(), Vec::new());
            for l in 0..layers {
                let x = trace.resid[l].expand([heads, -1, -1], false);
                let off = |z: &Tensor| replace(z, 2).where_self(&one_each, z);
                let edit = Edit {
                    z: Some(&off),
                    mlp: None,
                };
                by_head.push(self.mean_losses(&self.run_from(&x, l, &edit), ids)?);
                let off = |m: &Tensor| replace(m, 1);
                let edit = Edit {
                    z: None,
                    mlp: Some(&off),
                };
                mlps.push(self.mean_losses(&self.run_from(&trace.resid[l], l, &edit), ids)?[0]);
            }
            Ok(HeadEffects {
                base,
                heads: by_head,
                mlps,
            })
        })
    }

    /// Checks a clean and a corrupted text for patching and traces both.
    pub(crate) fn patch_traces(
        &self,
        clean: &[i64],
        corrupted: &[i64],
        answer: i64,
        wrong: i64,
    ) -> Result<(Trace, Trace)> {
        if clean.len() != corrupted.len() {
            bail!(
                "the clean text is {} tokens and the corrupted one {}: patching needs the same length",
                clean.len(),
                corrupted.len()
            );
        }
        if let Some(bad) = [answer, wrong]
            .into_iter()
            .find(|&i| i < 0 || i >= self.config.vocab_size)
        {
            bail!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            );
        }
        Ok((self.trace(clean)?, self.trace(corrupted)?))
    }

    /// The logit difference with the clean residual stream entering block `layer`
    /// patched into the corrupted run at `positions` (one run; every position gives
    /// the clean run back, none the corrupted one): the maps' cells, one at a time.
    #[cfg(test)]
    pub(crate) fn patch_resid(
        &self,
        clean: &Trace,
        corrupted: &Trace,
        layer: usize,
        positions: &[usize],
        (answer, wrong): (i64, i64),
    ) -> Result<f64> {
        tch::no_grad(|| {
            let t = clean.ids.len();
            let mut at = vec![false; t];
            for &p in positions {
                if let Some(a) = at.get_mut(p) {
                    *a = true;
                }
            }
            let mask = Tensor::from_slice(&at)
                .to_device(self.device())
                .view([1, t as i64, 1]);
            let x = clean.resid[layer].where_self(&mask, &corrupted.resid[layer]);
            Ok(self.logit_diff(&self.run_from(&x, layer, &Edit::default()), answer, wrong)?[0])
        })
    }

    /// Both patching maps for a clean and a corrupted text of the same length.
    pub fn patch_maps(
        &self,
        clean_ids: &[i64],
        corrupted_ids: &[i64],
        answer: i64,
        wrong: i64,
    ) -> Result<PatchMaps> {
        let (clean, corrupted) = self.patch_traces(clean_ids, corrupted_ids, answer, wrong)?;
        tch::no_grad(|| {
            let layers = self.h.len();
            let (t, heads) = (clean.ids.len() as i64, self.config.n_head);
            let device = self.device();
            let final_of = |trace: &Trace| self.logit_diff(&trace.resid[layers], answer, wrong);
            let (clean_diff, corrupted_diff) = (final_of(&clean)?[0], final_of(&corrupted)?[0]);
            // Where the runs differ, entering each block: from the first changed token on
            // (the model is causal), and not always everywhere after it. A position
            // that does not differ patches nothing: the corrupted run's metric, exactly.
            let one_head = Tensor::eye(heads, (Kind::Bool, device)).view([heads, heads, 1, 1]);
            let (mut resid, mut by_head) = (Vec::new(), Vec::new());
            for l in 0..layers {
                let differs: Vec<bool> = Vec::try_from(
                    clean.resid[l]
                        .ne_tensor(&corrupted.resid[l])
                        .any_dim(-1, false)
                        .squeeze_dim(0)
                        .to_device(Device::Cpu),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                let changed: Vec<usize> = (0..differs.len()).filter(|&p| differs[p]).collect();
                let mut row = vec![corrupted_diff; t as usize];
                // Runs patched at nearby positions go together, each run computing the
                // positions from its group's first on.
                for group in changed.chunks(8) {
                    let from = group[0] as i64;
                    let len = t - from;
                    let mut at = vec![false; group.len() * len as usize];
                    for (r, &p) in group.iter().enumerate() {
                        at[r * len as usize + p - group[0]] = true;
                    }
                    let mask = Tensor::from_slice(&at).to_device(device).view([
                        group.len() as i64,
                        len,
                        1,
                    ]);
                    let x = clean.resid[l]
                        .narrow(1, from, len)
                        .where_self(&mask, &corrupted.resid[l].narrow(1, from, len));
                    let out = self.run_tail(&x, l, from, &corrupted, None);
                    for (r, d) in self
                        .logit_diff(&out, answer, wrong)?
                        .into_iter()
                        .enumerate()
                    {
                        row[group[r]] = d;
                    }
                }
                resid.push(row);
                // A head's clean output differs from its corrupted one from the first
                // changed position on.
                by_head.push(match changed.first() {
                    Some(&first) => {
                        let from = first as i64;
                        let x = corrupted.resid[l]
                            .narrow(1, from, t - from)
                            .expand([heads, -1, -1], false);
                        let patch = HeadPatch {
                            mask: &one_head,
                            with: &clean.z[l],
                        };
                        let out = self.run_tail(&x, l, from, &corrupted, Some(&patch));
                        self.logit_diff(&out, answer, wrong)?
                    }
                    None => vec![corrupted_diff; heads as usize],
                });
            }
            Ok(PatchMaps {
                clean: clean_diff,
                corrupted: corrupted_diff,
                resid,
                heads: by_head,
            })
        })
    }

    /// Direct logit attribution of `targets[p]` at each position `p` of `trace`: each
    /// part's output, centred and scaled as the final LayerNorm does it to that
    /// position's whole stream (the scale frozen), read by the LM head's row of the
    /// token. In f32 whatever the blocks compute in.
    pub fn attribute(&self, trace: &Trace, targets: &[i64]) -> Result<Attribution> {
        let t = trace.ids.len();
        if targets.len() != t {
            bail!("{} tokens to attribute for {t} positions", targets.len());
        }
        if let Some(bad) = targets
            .iter()
            .find(|&&i| i < 0 || i >= self.config.vocab_size)
        {
            bail!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            );
        }
        tch::no_grad(|| {
            let f32 = |x: &Tensor| x.to_kind(Kind::Float);
            let layers = self.h.len();
            let device = self.device();
            let last = f32(&trace.resid[layers].squeeze_dim(0));
            let centre = |c: &Tensor| c - c.mean_dim(-1, true, Kind::Float);
            let var = centre(&last).square().mean_dim(-1, true, Kind::Float);
            let inv = (var + self.config.layer_norm_eps).rsqrt();
            let index = Tensor::from_slice(targets).to_device(device);
            let rows_u = f32(&self.lm_head.ws.index_select(0, &index));
            let gamma = self
                .ln_f
                .ws
                .as_ref()
                .map_or_else(|| rows_u.ones_like(), f32);
            // Per position: the direction a centred part is read along.
            let dir = &rows_u * gamma * inv;
            let read = |c: &Tensor| -> Result<Vec<f64>> {
                to_f64(&(centre(&f32(c)) * &dir).sum_dim_intlist(-1, false, Kind::Float))
            };
            let logits = self.lm_head.forward(&self.ln_f.forward(&last));
            let logit = to_f64(&logits.gather(1, &index.unsqueeze(1), false))?;
            let ln_bias = match &self.ln_f.bs {
                Some(b) => to_f64(&(&rows_u * f32(b)).sum_dim_intlist(-1, false, Kind::Float))?,
                None => vec![0.0; t],
            };
            let (mut heads, mut attn_bias, mut mlp) = (Vec::new(), Vec::new(), Vec::new());
            let (n_head, n_embd) = (self.config.n_head, self.config.n_embd);
            for (l, block) in self.h.iter().enumerate() {
                // c_proj: out = y Wᵀ + b, y the heads side by side: head h's share is
                // z_h W[:, h·d..(h+1)·d]ᵀ.
                let w = f32(&block.attn.c_proj.ws)
                    .view([n_embd, n_head, n_embd / n_head])
                    .permute([1, 2, 0]);
                let per_head = f32(&trace.z[l].squeeze_dim(0)).matmul(&w);
                heads.push(rows(read(&per_head)?, t));
                attn_bias.push(match &block.attn.c_proj.bs {
                    Some(b) => read(&f32(b).expand([t as i64, n_embd], false))?,
                    None => vec![0.0; t],
                });
                mlp.push(read(&trace.mlp[l].squeeze_dim(0))?);
            }
            Ok(Attribution {
                targets: targets.to_vec(),
                logit,
                tok: read(&trace.tok.squeeze_dim(0))?,
                pos: read(&trace.pos.squeeze_dim(0))?,
                heads,
                attn_bias,
                mlp,
                ln_bias,
            })
        })
    }
}

#[cfg(test)]
mod tests;
