//! AdamW written over the VarStore's tensors, so its moment buffers can be saved and
//! restored (tch's `nn::Optimizer` cannot export them), plus gradient clipping and the
//! learning-rate schedule.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tch::{nn::VarStore, Kind, Tensor};

use crate::device::{pass_part_len, split_work};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
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
pub struct AdamW {
    pub config: AdamWConfig,
    params: Vec<ParamState>,
    /// Optimizer steps taken (bias correction uses it).
    pub steps: u64,
}

/// Whether a parameter gets weight decay: 2-D weights of linear layers, not embeddings.
pub fn decays(name: &str, param: &Tensor) -> bool {
    param.dim() >= 2
        && name.ends_with(".weight")
        && !name.ends_with("wte.weight")
        && !name.ends_with("wpe.weight")
}

impl AdamW {
    pub fn new(vs: &VarStore, config: AdamWConfig) -> Self {
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
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.param.zero_grad();
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm` (0 = no clipping);
    /// returns the norm before clipping as a 0-d tensor (no host synchronisation).
    pub fn clip_grad_norm(&self, max_norm: f64) -> Tensor {
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
    pub fn step(&mut self, lr: f64) {
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
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(2 * self.params.len());
        for p in &self.params {
            named.push((
                format!("exp_avg.{}", p.name),
                p.exp_avg.to_device(tch::Device::Cpu),
            ));
            named.push((
                format!("exp_avg_sq.{}", p.name),
                p.exp_avg_sq.to_device(tch::Device::Cpu),
            ));
        }
        Tensor::write_safetensors(&named, path)
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
    }

    /// Restores moment buffers saved by [`AdamW::save`]; every parameter must be present.
    pub fn load(&mut self, path: &Path, steps: u64) -> Result<()> {
        let saved = SavedMoments::read(path)?;
        tch::no_grad(|| -> Result<()> {
            for p in &mut self.params {
                for (prefix, buffer) in [
                    ("exp_avg", &mut p.exp_avg),
                    ("exp_avg_sq", &mut p.exp_avg_sq),
                ] {
                    buffer.copy_(saved.get(prefix, &p.name, &buffer.size())?);
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
    tensors: BTreeMap<String, Tensor>,
}

impl<'a> SavedMoments<'a> {
    fn read(path: &'a Path) -> Result<Self> {
        let tensors = Tensor::read_safetensors(path)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("cannot read optimizer state {}", path.display()))?
            .into_iter()
            .collect();
        Ok(Self { path, tensors })
    }

    /// Moment `prefix` (`exp_avg`/`exp_avg_sq`) of parameter `name`, which must have `shape`.
    fn get(&self, prefix: &str, name: &str, shape: &[i64]) -> Result<&Tensor> {
        let key = format!("{prefix}.{name}");
        let Some(t) = self.tensors.get(&key) else {
            bail!("optimizer state {} lacks {key}", self.path.display());
        };
        if t.size() != shape {
            bail!(
                "optimizer state {}: {key} has shape {:?}, expected {:?}",
                self.path.display(),
                t.size(),
                shape
            );
        }
        Ok(t)
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
pub struct FlatAdamW {
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
    pub fn new(vs: &VarStore, config: AdamWConfig, trains: impl Fn(&str) -> bool) -> Result<Self> {
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
    pub fn grad_of(&self, name: &str) -> Result<Tensor> {
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
    pub fn step(&mut self, lr: f64, max_norm: f64) -> Result<Tensor> {
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
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(2 * self.slots.len());
        for s in &self.slots {
            for (prefix, buffer) in [("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)] {
                let view = buffer.narrow(0, s.offset, s.len).view(s.shape.as_slice());
                named.push((
                    format!("{prefix}.{}", s.name),
                    view.to_device(tch::Device::Cpu),
                ));
            }
        }
        Tensor::write_safetensors(&named, path)
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
    }

    /// Restores moment buffers saved by [`FlatAdamW::save`] or [`AdamW::save`].
    pub fn load(&mut self, path: &Path, steps: u64) -> Result<()> {
        let saved = SavedMoments::read(path)?;
        tch::no_grad(|| -> Result<()> {
            for s in &self.slots {
                for (prefix, buffer) in
                    [("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)]
                {
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

/// Learning rate at step `it` (0-based): linear warm-up, then optional cosine decay to
/// `min_lr` at `max_iters` (nanoGPT's schedule).
pub fn learning_rate(
    it: u64,
    lr: f64,
    warmup: u64,
    decay: bool,
    min_lr: f64,
    max_iters: u64,
) -> f64 {
    if it < warmup {
        return lr * (it + 1) as f64 / (warmup + 1) as f64;
    }
    if !decay || max_iters <= warmup {
        return lr;
    }
    let ratio = ((it - warmup) as f64 / (max_iters - warmup) as f64).min(1.0);
    let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
    min_lr + coeff * (lr - min_lr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    #[test]
    fn schedule_warms_up_then_decays_to_min() {
        let _rng = crate::torch_rng_lock();
        let lr = |it| learning_rate(it, 1e-3, 10, true, 1e-4, 110);
        assert!(lr(0) < lr(5) && lr(5) < lr(9));
        assert!((lr(10) - 1e-3).abs() < 1e-12);
        assert!(lr(60) < 1e-3 && lr(60) > 1e-4);
        assert!((lr(110) - 1e-4).abs() < 1e-12);
        assert_eq!(learning_rate(50, 1e-3, 0, false, 0.0, 100), 1e-3);
    }

    #[test]
    fn decay_groups() {
        let _rng = crate::torch_rng_lock();
        let (vs, _model) = small_model(0);
        let vars = vs.variables();
        let d = |n: &str| decays(n, &vars[n]);
        assert!(d("transformer.h.0.attn.c_attn.weight"));
        assert!(d("lm_head.weight"));
        assert!(!d("transformer.h.0.attn.c_attn.bias"));
        assert!(!d("transformer.h.0.ln_1.weight"));
        assert!(!d("transformer.wte.weight"));
        assert!(!d("transformer.wpe.weight"));
    }

    #[test]
    fn matches_the_adamw_formula_on_one_parameter() {
        let _rng = crate::torch_rng_lock();
        let vs = nn::VarStore::new(Device::Cpu);
        let w = (vs.root() / "layer").var_copy(
            "weight",
            &Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5]).view([2, 2]),
        );
        let mut opt = AdamW::new(
            &vs,
            AdamWConfig {
                weight_decay: 0.1,
                ..Default::default()
            },
        );
        for _ in 0..2 {
            opt.zero_grad();
            (&w * &w).sum(Kind::Float).backward();
            opt.step(0.01);
        }
        // Reference computed by hand for element w0 = 1.0 (grad 2w), two steps.
        let (b1, b2, lr, wd, eps) = (0.9f64, 0.95f64, 0.01, 0.1, 1e-8);
        let (mut x, mut m, mut v) = (1.0f64, 0.0, 0.0);
        for t in 1..=2 {
            let g = 2.0 * x;
            x *= 1.0 - lr * wd;
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            let mh = m / (1.0 - b1.powi(t));
            let vh = v / (1.0 - b2.powi(t));
            x -= lr * mh / (vh.sqrt() + eps);
        }
        let got = w.view([-1]).double_value(&[0]);
        assert!((got - x).abs() < 1e-6, "{got} vs {x}");
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let _rng = crate::torch_rng_lock();
        let vs = nn::VarStore::new(Device::Cpu);
        let w =
            (vs.root() / "w").var_copy("weight", &Tensor::from_slice(&[3.0f32, 4.0]).view([1, 2]));
        let opt = AdamW::new(&vs, AdamWConfig::default());
        (&w * &w).sum(Kind::Float).backward(); // grad = (6, 8), norm 10
        let norm = opt.clip_grad_norm(1.0).double_value(&[]);
        assert!((norm - 10.0).abs() < 1e-5);
        let clipped = w.grad().norm().double_value(&[]);
        assert!((clipped - 1.0).abs() < 1e-4, "{clipped}");
    }

    /// A small model (2 layers, 8 dims, vocabulary 40) and its var store.
    fn small_model(seed: i64) -> (nn::VarStore, crate::model::gpt::Gpt) {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = crate::model::gpt::Gpt::new(
            &vs.root(),
            crate::model::gpt::GptConfig {
                vocab_size: 40,
                block_size: 8,
                n_layer: 2,
                n_head: 2,
                n_embd: 8,
                dropout: 0.0,
                n_classes: 2,
                layer_norm_eps: 1e-5,
                tie_lm_head: false,
            },
        );
        (vs, model)
    }

    fn backward(model: &crate::model::gpt::Gpt, seed: i64) {
        tch::manual_seed(seed);
        let x = Tensor::randint(40, [3, 8], (Kind::Int64, Device::Cpu));
        let y = Tensor::randint(40, [3, 8], (Kind::Int64, Device::Cpu));
        crate::model::gpt::Gpt::lm_loss(&model.forward(&x, false), &y).backward();
    }

    /// The tensor-op update (what CUDA runs) and the hand-written CPU pass agree, and
    /// both equal per-parameter AdamW, with clipping on, over several steps.
    #[test]
    fn flat_updates_match_per_parameter_adamw() {
        let _rng = crate::torch_rng_lock();
        let config = AdamWConfig::default();
        let (vs_ref, m_ref) = small_model(1);
        let (vs_cpu, m_cpu) = small_model(1);
        let (vs_ops, m_ops) = small_model(1);
        let mut reference = AdamW::new(&vs_ref, config);
        let lm = |n: &str| !n.starts_with("classifier.");
        let mut cpu = FlatAdamW::new(&vs_cpu, config, lm).unwrap();
        let mut ops = FlatAdamW::new(&vs_ops, config, lm).unwrap();
        for step in 0..4 {
            reference.zero_grad();
            backward(&m_ref, 10 + step);
            let norm_ref = reference.clip_grad_norm(0.5).double_value(&[]);
            reference.step(0.01);
            backward(&m_cpu, 10 + step);
            let norm_cpu = cpu.step(0.01, 0.5).unwrap().double_value(&[]);
            backward(&m_ops, 10 + step);
            ops.steps += 1;
            let u = FlatUpdate {
                lr: 0.01,
                max_norm: 0.5,
                beta1: config.beta1,
                beta2: config.beta2,
                eps: config.eps,
                decay_factor: 1.0 - 0.01 * config.weight_decay,
                bias1: 1.0 - config.beta1.powi(ops.steps as i32),
                bias2: 1.0 - config.beta2.powi(ops.steps as i32),
            };
            let norm_ops = ops.step_tensor_ops(&u).double_value(&[]);
            assert!((norm_cpu - norm_ref).abs() < 1e-5 && (norm_ops - norm_ref).abs() < 1e-5);
            assert_eq!(
                ops.grads.abs().sum(Kind::Float).double_value(&[]),
                0.0,
                "gradients left zeroed"
            );
        }
        let vars = |vs: &nn::VarStore| vs.variables();
        let (r, c, o) = (vars(&vs_ref), vars(&vs_cpu), vars(&vs_ops));
        for (name, t) in &r {
            for other in [&c[name], &o[name]] {
                let diff = (t - other).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "{name} differs by {diff}");
            }
        }
        // The classifier is not trained by a language-model step.
        assert!(c["classifier.weight"].equal(&r["classifier.weight"]));
    }

    #[test]
    fn flat_and_per_parameter_state_files_are_interchangeable() {
        let _rng = crate::torch_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let config = AdamWConfig::default();
        let (vs_a, m_a) = small_model(2);
        let mut flat = FlatAdamW::new(&vs_a, config, |_| true).unwrap();
        backward(&m_a, 5);
        let _norm = flat.step(0.01, 1.0).unwrap();
        let path = dir.path().join("optim.safetensors");
        flat.save(&path).unwrap();
        let (vs_b, _m) = small_model(2);
        let mut plain = AdamW::new(&vs_b, config);
        plain.load(&path, 1).unwrap();
        let again = dir.path().join("again.safetensors");
        plain.save(&again).unwrap();
        let (vs_c, _m) = small_model(2);
        let mut flat2 = FlatAdamW::new(&vs_c, config, |_| true).unwrap();
        flat2.load(&again, 1).unwrap();
        assert!(flat2.exp_avg.equal(&flat.exp_avg) && flat2.exp_avg_sq.equal(&flat.exp_avg_sq));
        assert!(flat.exp_avg.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        let err = format!(
            "{:#}",
            FlatAdamW::new(&vs_c, config, |_| true)
                .unwrap()
                .load(&dir.path().join("none"), 1)
                .unwrap_err()
        );
        assert!(err.contains("none"), "{err}");
    }
}
