//! AdamW written over the VarStore's tensors, so its moment buffers can be saved and
//! restored (tch's `nn::Optimizer` cannot export them), plus gradient clipping: the
//! per-parameter [`AdamW`] (the reference, and the plain step's) and [`FlatAdamW`] (the
//! fused step's).
//!
//! ## FlatAdamW's invariants (what must change together)
//! - **The variables are views.** [`FlatAdamW::new`] moves every variable of the
//!   VarStore into one flat `params` buffer (`set_data`: values unchanged) and points each
//!   trained variable's `.grad` at a view of one flat `grads` buffer. Whatever replaces a
//!   variable's storage afterwards — `set_data`, moving or casting the VarStore — silently
//!   cuts it loose from the optimizer: weights are loaded *into* the variables (`copy_`,
//!   as [`crate::checkpoint::load_weights`] does), and the VarStore is on its device and in
//!   f32 before `new` (it refuses other kinds).
//! - **Layout**: weight-decayed parameters ([`decays`]) first, then the other trained
//!   ones, then those the run does not train (the `trains` predicate: a language-model
//!   run leaves the classifier head), so decay is one prefix and the update another.
//!   The saved state names each parameter's moments (`exp_avg.NAME`), so the layout is
//!   not in the file: flat and per-parameter state files are interchangeable (tested).
//! - **Gradients are zero when a step starts**: autograd accumulates into `grads`, the
//!   fused step adds its hand-made gradients into [`FlatAdamW::grad_of`]'s views, and the
//!   update pass zeroes them as it reads them. No `zero_grad` elsewhere.
//! - **Three copies of one formula**: [`AdamW::step`], the CPU pass (`adamw_pass`) and the
//!   tensor-op path (CUDA) are the same update — global-norm clipping with `1e-6` in the
//!   denominator, decoupled weight decay applied to the weight before the update, bias
//!   corrections, `eps` outside the square root. Change one, change all three;
//!   `flat_updates_match_per_parameter_adamw` compares them.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tch::{nn::VarStore, Kind, Tensor};

use crate::device::{pass_part_len, split_work};

/// The names a saved optimizer state gives each parameter's two moments
/// (`exp_avg.NAME`, `exp_avg_sq.NAME`: PyTorch's).
const EXP_AVG: &str = "exp_avg";
const EXP_AVG_SQ: &str = "exp_avg_sq";

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

struct ParamState {
    name: String,
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    decay: bool,
}

/// AdamW with decoupled weight decay on matrix weights only (not biases, LayerNorm or
/// embeddings), as minGPT/nanoGPT configure it. Parameters without a gradient are skipped.
pub(crate) struct AdamW {
    pub config: AdamWConfig,
    params: Vec<ParamState>,
    /// Optimizer steps taken (bias correction uses it).
    pub steps: u64,
}

/// Whether a parameter gets weight decay: 2-D weights of linear layers, not embeddings.
pub(crate) fn decays(name: &str, param: &Tensor) -> bool {
    param.dim() >= 2
        && name.ends_with(".weight")
        && !name.ends_with("wte.weight")
        && !name.ends_with("wpe.weight")
}

impl AdamW {
    pub(crate) fn new(vs: &VarStore, config: AdamWConfig) -> Self {
        let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        let params = vars
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, param)| ParamState {
                decay: decays(&name, &param),
                exp_avg: param.zeros_like(),
                exp_avg_sq: param.zeros_like(),
                name,
                param,
            })
            .collect();
        Self {
            config,
            params,
            steps: 0,
        }
    }

    /// Clears gradients before a backward pass.
    pub(crate) fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.param.zero_grad();
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm` (0 = no clipping);
    /// returns the norm before clipping as a 0-d tensor (no host synchronisation).
    pub(crate) fn clip_grad_norm(&self, max_norm: f64) -> Tensor {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.param.grad())
            .filter(|g| g.defined())
            .collect();
        if grads.is_empty() {
            return Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
        }
        let norms: Vec<Tensor> = grads
            .iter()
            .map(|g| g.norm().to_kind(Kind::Float))
            .collect();
        let total = Tensor::stack(&norms, 0).norm();
        if max_norm > 0.0 {
            let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
            tch::no_grad(|| {
                for mut g in grads {
                    let _ = g.g_mul_(&coef);
                }
            });
        }
        total
    }

    /// One AdamW update at learning rate `lr`.
    pub(crate) fn step(&mut self, lr: f64) {
        self.steps += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        let bias1 = 1.0 - beta1.powi(self.steps as i32);
        let bias2 = 1.0 - beta2.powi(self.steps as i32);
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.param.grad();
                if !grad.defined() {
                    continue;
                }
                if p.decay && weight_decay > 0.0 {
                    let _ = p.param.g_mul_scalar_(1.0 - lr * weight_decay);
                }
                let _ = p.exp_avg.lerp_(&grad, 1.0 - beta1);
                let _ = p.exp_avg_sq.g_mul_scalar_(beta2);
                let _ = p.exp_avg_sq.addcmul_(&(&grad * (1.0 - beta2)), &grad);
                let denom = p.exp_avg_sq.sqrt() / bias2.sqrt() + eps;
                let _ = p.param.addcdiv_(&(&p.exp_avg * (-lr / bias1)), &denom);
            }
        });
    }

    /// Saves the moment buffers as safetensors (`exp_avg.NAME`, `exp_avg_sq.NAME`).
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(2 * self.params.len());
        for p in &self.params {
            named.push((
                format!("{EXP_AVG}.{}", p.name),
                p.exp_avg.to_device(tch::Device::Cpu),
            ));
            named.push((
                format!("{EXP_AVG_SQ}.{}", p.name),
                p.exp_avg_sq.to_device(tch::Device::Cpu),
            ));
        }
        crate::model::safetensors::write_safetensors(&named, path, &[])
    }

    /// Restores moment buffers saved by [`AdamW::save`]; every parameter must be present.
    pub(crate) fn load(&mut self, path: &Path, steps: u64) -> Result<()> {
        let saved = SavedMoments::read(path)?;
        tch::no_grad(|| -> Result<()> {
            for p in &mut self.params {
                for (prefix, buffer) in [(EXP_AVG, &mut p.exp_avg), (EXP_AVG_SQ, &mut p.exp_avg_sq)]
                {
                    buffer.copy_(&saved.get(prefix, &p.name, &buffer.size())?);
                }
            }
            Ok(())
        })?;
        self.steps = steps;
        Ok(())
    }
}

/// Moment buffers read back from an optimizer state file.
struct SavedMoments<'a> {
    path: &'a Path,
    file: crate::model::safetensors::WeightsFile,
}

impl<'a> SavedMoments<'a> {
    fn read(path: &'a Path) -> Result<Self> {
        let file = crate::model::safetensors::WeightsFile::open(path)
            .with_context(|| format!("cannot read optimizer state {}", path.display()))?;
        Ok(Self { path, file })
    }

    /// Moment `prefix` (`exp_avg`/`exp_avg_sq`) of parameter `name`, which must have `shape`.
    fn get(&self, prefix: &str, name: &str, shape: &[i64]) -> Result<Tensor> {
        let key = format!("{prefix}.{name}");
        let Some(saved) = self.file.shape(&key) else {
            bail!("optimizer state {} lacks {key}", self.path.display());
        };
        if saved != shape {
            bail!(
                "optimizer state {}: {key} has shape {:?}, expected {:?}",
                self.path.display(),
                saved,
                shape
            );
        }
        self.file.tensor(&key)
    }
}

/// Where one parameter lives in [`FlatAdamW`]'s flat buffers.
struct FlatSlot {
    name: String,
    offset: i64,
    len: i64,
    shape: Vec<i64>,
}

/// AdamW over flat buffers: every parameter, its gradient and its two moments are views
/// into four contiguous 1-D tensors, so the update is one pass over memory instead of a
/// dozen kernel launches and temporaries per parameter.
///
/// On the CPU the pass is hand-written: it reads each gradient once to take the global
/// norm, then once more to clip, update both moments and the weight, and leave the
/// gradient zeroed for the next backward pass (no separate `zero_grad` fill). On CUDA
/// the same update runs as a few tensor ops over the flat buffers, without a host
/// synchronisation. Same formulas as [`AdamW`], same saved format.
///
/// Layout: weight-decayed parameters first, then the other trained ones, then the
/// parameters this run does not train (kept in the buffers so checkpoints and optimizer
/// state keep their names, never updated).
pub(crate) struct FlatAdamW {
    pub config: AdamWConfig,
    pub steps: u64,
    slots: Vec<FlatSlot>,
    params: Tensor,
    grads: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Elements `0..decayed` get weight decay.
    decayed: i64,
    /// Elements `0..trained` are updated.
    trained: i64,
}

impl FlatAdamW {
    /// Moves every variable of `vs` into one flat buffer (the variables become views of
    /// it, values unchanged) and gives each trained one a gradient view. `trains` says
    /// which parameters this run updates.
    pub(crate) fn new(
        vs: &VarStore,
        config: AdamWConfig,
        trains: impl Fn(&str) -> bool,
    ) -> Result<Self> {
        let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        let mut groups: [Vec<(String, Tensor)>; 3] = Default::default();
        for (name, t) in vars {
            let group = if !t.requires_grad() || !trains(&name) {
                2
            } else if decays(&name, &t) {
                0
            } else {
                1
            };
            groups[group].push((name, t));
        }
        let device = vs.device();
        let total: i64 = groups.iter().flatten().map(|(_, t)| t.numel() as i64).sum();
        let params = Tensor::zeros([total], (Kind::Float, device));
        let mut grads = Tensor::zeros([total], (Kind::Float, device));
        let mut slots = Vec::new();
        let mut offset = 0i64;
        let (mut decayed, mut trained) = (0, 0);
        for (group, members) in groups.iter_mut().enumerate() {
            for (name, var) in members.iter_mut() {
                if var.kind() != Kind::Float {
                    bail!(
                        "parameter {name} is {:?}; the optimizer keeps f32 weights",
                        var.kind()
                    );
                }
                let len = var.numel() as i64;
                let shape = var.size();
                tch::no_grad(|| params.narrow(0, offset, len).copy_(&var.view([-1])));
                var.set_data(&params.narrow(0, offset, len).view(shape.as_slice()));
                slots.push(FlatSlot {
                    name: name.clone(),
                    offset,
                    len,
                    shape,
                });
                offset += len;
            }
            match group {
                0 => decayed = offset,
                1 => trained = offset,
                _ => {}
            }
        }
        // Give each trained parameter a gradient (autograd allocates it on a first
        // backward through all of them), then point that gradient at its flat view:
        // backward passes accumulate into the flat buffer from then on.
        let trained_vars: Vec<&Tensor> =
            groups[0].iter().chain(&groups[1]).map(|(_, t)| t).collect();
        if !trained_vars.is_empty() {
            let touch = trained_vars
                .iter()
                .map(|t| t.sum(Kind::Float) * 0.0)
                .reduce(|a, b| a + b);
            if let Some(touch) = touch {
                touch
                    .f_backward()
                    .map_err(|e| anyhow!("cannot set up gradients: {e}"))?;
            }
            for (slot, var) in slots.iter().zip(&trained_vars) {
                let mut grad = var.grad();
                if !grad.defined() {
                    bail!("parameter {} got no gradient", slot.name);
                }
                grad.set_data(
                    &grads
                        .narrow(0, slot.offset, slot.len)
                        .view(slot.shape.as_slice()),
                );
            }
            let _ = grads.zero_();
        }
        Ok(Self {
            config,
            steps: 0,
            slots,
            exp_avg: params.zeros_like(),
            exp_avg_sq: params.zeros_like(),
            params,
            grads,
            decayed,
            trained,
        })
    }

    /// The gradient view of parameter `name` (for gradients computed by hand, which are
    /// added into it; the buffer is zero at the start of each step).
    pub(crate) fn grad_of(&self, name: &str) -> Result<Tensor> {
        let slot = self
            .slots
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| anyhow!("the optimizer has no parameter {name}"))?;
        if slot.offset >= self.trained {
            bail!("parameter {name} is not trained in this run");
        }
        Ok(self
            .grads
            .narrow(0, slot.offset, slot.len)
            .view(slot.shape.as_slice()))
    }

    /// Clips the gradients to global norm `max_norm` (0 = no clipping), applies one
    /// AdamW update at learning rate `lr` and zeroes the gradients. Returns the norm
    /// before clipping as a 0-d f32 tensor on the parameters' device.
    pub(crate) fn step(&mut self, lr: f64, max_norm: f64) -> Result<Tensor> {
        self.steps += 1;
        let c = self.config;
        let update = FlatUpdate {
            lr,
            max_norm,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            decay_factor: 1.0 - lr * c.weight_decay,
            bias1: 1.0 - c.beta1.powi(self.steps as i32),
            bias2: 1.0 - c.beta2.powi(self.steps as i32),
        };
        if self.params.device() == tch::Device::Cpu {
            self.step_cpu(&update)
        } else {
            Ok(self.step_tensor_ops(&update))
        }
    }

    fn step_tensor_ops(&mut self, u: &FlatUpdate) -> Tensor {
        let n = self.trained;
        tch::no_grad(|| {
            let mut g = self.grads.narrow(0, 0, n);
            let norm = g.norm();
            if u.max_norm > 0.0 {
                let coef = (u.max_norm / (&norm + 1e-6)).clamp_max(1.0);
                let _ = g.g_mul_(&coef);
            }
            if self.decayed > 0 && u.decay_factor != 1.0 {
                let _ = self
                    .params
                    .narrow(0, 0, self.decayed)
                    .g_mul_scalar_(u.decay_factor);
            }
            let mut m = self.exp_avg.narrow(0, 0, n);
            let mut v = self.exp_avg_sq.narrow(0, 0, n);
            let _ = m.lerp_(&g, 1.0 - u.beta1);
            let _ = v.g_mul_scalar_(u.beta2);
            let _ = v.addcmul_(&(&g * (1.0 - u.beta2)), &g);
            let denom = v.sqrt() / u.bias2.sqrt() + u.eps;
            let _ = self
                .params
                .narrow(0, 0, n)
                .addcdiv_(&(&m * (-u.lr / u.bias1)), &denom);
            let _ = g.zero_();
            norm
        })
    }

    fn step_cpu(&mut self, u: &FlatUpdate) -> Result<Tensor> {
        let n = self.trained as usize;
        let decayed = self.decayed as usize;
        for t in [&self.params, &self.grads, &self.exp_avg, &self.exp_avg_sq] {
            if !t.is_contiguous() || t.kind() != Kind::Float {
                bail!("flat optimizer buffers must be contiguous f32");
            }
        }
        // SAFETY: the four buffers are distinct, contiguous f32 CPU tensors of at least
        // `n` elements, owned by `self` and not touched by libtorch while this runs
        // (the step is called between backward passes, on the training thread).
        let (p, g, m, v) = unsafe {
            (
                std::slice::from_raw_parts_mut(self.params.data_ptr() as *mut f32, n),
                std::slice::from_raw_parts_mut(self.grads.data_ptr() as *mut f32, n),
                std::slice::from_raw_parts_mut(self.exp_avg.data_ptr() as *mut f32, n),
                std::slice::from_raw_parts_mut(self.exp_avg_sq.data_ptr() as *mut f32, n),
            )
        };
        let chunk = pass_part_len(n);
        let sum_sq: f64 = split_work(g.chunks(chunk).collect(), |part| {
            part.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>()
        })
        .into_iter()
        .sum();
        let norm = sum_sq.sqrt();
        let coef = clip_coef(u.max_norm, norm);
        let parts: Vec<_> = p
            .chunks_mut(chunk)
            .zip(g.chunks_mut(chunk))
            .zip(m.chunks_mut(chunk))
            .zip(v.chunks_mut(chunk))
            .enumerate()
            .collect();
        split_work(parts, |(i, (((p, g), m), v))| {
            // Elements of this chunk that get weight decay.
            let decay_end = decayed.saturating_sub(i * chunk).min(p.len());
            adamw_pass(p, g, m, v, decay_end, coef, *u)
        });
        Ok(Tensor::from(norm as f32))
    }

    /// Saves the moment buffers as safetensors, named as [`AdamW::save`] names them.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(2 * self.slots.len());
        for s in &self.slots {
            for (prefix, buffer) in [(EXP_AVG, &self.exp_avg), (EXP_AVG_SQ, &self.exp_avg_sq)] {
                let view = buffer.narrow(0, s.offset, s.len).view(s.shape.as_slice());
                named.push((
                    format!("{prefix}.{}", s.name),
                    view.to_device(tch::Device::Cpu),
                ));
            }
        }
        crate::model::safetensors::write_safetensors(&named, path, &[])
    }

    /// Restores moment buffers saved by [`FlatAdamW::save`] or [`AdamW::save`].
    pub(crate) fn load(&mut self, path: &Path, steps: u64) -> Result<()> {
        let saved = SavedMoments::read(path)?;
        tch::no_grad(|| -> Result<()> {
            for s in &self.slots {
                for (prefix, buffer) in [(EXP_AVG, &self.exp_avg), (EXP_AVG_SQ, &self.exp_avg_sq)] {
                    let t = saved.get(prefix, &s.name, &s.shape)?;
                    buffer.narrow(0, s.offset, s.len).copy_(&t.view([-1]));
                }
            }
            Ok(())
        })?;
        self.steps = steps;
        Ok(())
    }
}

/// The factor that scales gradients of global norm `norm` to at most `max_norm`.
fn clip_coef(max_norm: f64, norm: f64) -> f32 {
    if max_norm > 0.0 {
        (max_norm / (norm + 1e-6)).min(1.0) as f32
    } else {
        1.0
    }
}

/// The scalars of one [`FlatAdamW`] update.
#[derive(Debug, Clone, Copy)]
struct FlatUpdate {
    lr: f64,
    max_norm: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    decay_factor: f64,
    bias1: f64,
    bias2: f64,
}

/// One fused AdamW pass over a slice: clip, decay the first `decay_end` weights, update
/// the moments and the weights, zero the gradients.
fn adamw_pass(
    p: &mut [f32],
    g: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    decay_end: usize,
    coef: f32,
    u: FlatUpdate,
) {
    let w1 = (1.0 - u.beta1) as f32;
    let b2 = u.beta2 as f32;
    let w2 = (1.0 - u.beta2) as f32;
    let inv_sqrt_bias2 = (1.0 / u.bias2.sqrt()) as f32;
    let eps = u.eps as f32;
    let step = (u.lr / u.bias1) as f32;
    let decay = u.decay_factor as f32;
    for x in p[..decay_end].iter_mut() {
        *x *= decay;
    }
    for (((p, g), m), v) in p
        .iter_mut()
        .zip(g.iter_mut())
        .zip(m.iter_mut())
        .zip(v.iter_mut())
    {
        let grad = *g * coef;
        *m += w1 * (grad - *m);
        *v = *v * b2 + w2 * grad * grad;
        *p -= step * *m / (v.sqrt() * inv_sqrt_bias2 + eps);
        *g = 0.0;
    }
}

#[cfg(test)]
mod tests;
