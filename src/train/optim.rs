//! AdamW written over the VarStore's tensors, so its moment buffers can be saved and
//! restored (tch's `nn::Optimizer` cannot export them), plus gradient clipping and the
//! learning-rate schedule.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tch::{nn::VarStore, Kind, Tensor};

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
        let saved: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("cannot read optimizer state {}", path.display()))?
            .into_iter()
            .collect();
        tch::no_grad(|| -> Result<()> {
            for p in &mut self.params {
                for (prefix, buffer) in [
                    ("exp_avg", &mut p.exp_avg),
                    ("exp_avg_sq", &mut p.exp_avg_sq),
                ] {
                    let key = format!("{prefix}.{}", p.name);
                    let Some(t) = saved.get(&key) else {
                        bail!("optimizer state {} lacks {key}", path.display());
                    };
                    if t.size() != buffer.size() {
                        bail!(
                            "optimizer state {}: {key} has shape {:?}, expected {:?}",
                            path.display(),
                            t.size(),
                            buffer.size()
                        );
                    }
                    buffer.copy_(t);
                }
            }
            Ok(())
        })?;
        self.steps = steps;
        Ok(())
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
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = crate::model::gpt::Gpt::new(
            &vs.root(),
            crate::model::gpt::GptConfig {
                vocab_size: 10,
                block_size: 4,
                n_layer: 1,
                n_head: 1,
                n_embd: 4,
                dropout: 0.0,
                n_classes: 2,
                layer_norm_eps: 1e-5,
                tie_lm_head: false,
            },
        );
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
}
