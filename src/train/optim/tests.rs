//! Unit tests of `optim`.
use super::*;
use tch::{nn, Device};

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
    let w = (vs.root() / "w").var_copy("weight", &Tensor::from_slice(&[3.0f32, 4.0]).view([1, 2]));
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
    let model =
        crate::model::gpt::Gpt::new(&vs.root(), crate::model::gpt::GptConfig::tiny(40, 8, 2, 8));
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
    let lm = |n: &str| !crate::model::gpt::is_classifier_weight(n);
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
