use super::*;
use tch::nn;

use crate::model::gpt::{Ablation, GptConfig};

fn model() -> (nn::VarStore, Gpt) {
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let config = GptConfig {
        n_head: 4,
        ..GptConfig::tiny(50, 16, 3, 32)
    };
    let model = Gpt::new(&vs.root(), config);
    // Biases and LayerNorms away from their initial 0 and 1, so the tests see them.
    tch::no_grad(|| {
        // In name order: the same draws for the same weights every run.
        let mut weights: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        weights.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mut t) in weights {
            if name.ends_with(".bias") || name.contains("ln_") {
                let _ = t.g_add_(&(Tensor::randn_like(&t) * 0.3));
            } else {
                // Larger weights than at initialisation: texts then lead somewhere apart.
                let _ = t.g_mul_scalar_(6.0);
            }
        }
    });
    (vs, model)
}

const CLEAN: [i64; 7] = [3, 17, 4, 29, 0, 11, 42];
const CORRUPTED: [i64; 7] = [9, 17, 4, 29, 6, 11, 40];

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[test]
fn the_trace_is_the_model_s_own_pass() {
    let _rng = crate::torch_rng_lock();
    let (_vs, model) = model();
    let trace = model.trace(&CLEAN).unwrap();
    assert_eq!(trace.resid.len(), 4);
    let idx = Tensor::from_slice(&CLEAN).unsqueeze(0);
    let own = model.forward(&idx, false);
    let traced = model.lm_head.forward(&model.ln_f.forward(&trace.resid[3]));
    let diff = (own - traced).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "{diff}");
    let err = format!("{:#}", model.trace(&[1, 50]).unwrap_err());
    assert!(err.contains("vocabulary"), "{err}");
}

#[test]
fn the_ablation_map_is_one_ablated_pass_per_part() {
    let _rng = crate::torch_rng_lock();
    let (_vs, model) = model();
    for mode in [AblationMode::Zero, AblationMode::Mean] {
        let effects = model.head_effects(&CLEAN, mode).unwrap();
        let plain = model.inspect(&CLEAN).unwrap().token_loss;
        assert!((effects.base - mean(&plain)).abs() < 1e-6);
        assert_eq!(effects.heads.len(), 3);
        let mut moved = 0.0f64;
        for l in 0..3 {
            assert_eq!(effects.heads[l].len(), 4);
            for h in 0..4 {
                let one = Ablation {
                    heads: vec![(l, h)],
                    mode,
                    ..Ablation::default()
                };
                let seen = mean(&model.inspect_ablated(&CLEAN, &one).unwrap().token_loss);
                let d = (effects.heads[l][h] - seen).abs();
                assert!(d < 1e-5, "{mode:?} head {l}.{h}: {d}");
                moved = moved.max((seen - effects.base).abs());
            }
            let mlp = Ablation {
                mlps: vec![l],
                mode,
                ..Ablation::default()
            };
            let seen = mean(&model.inspect_ablated(&CLEAN, &mlp).unwrap().token_loss);
            assert!((effects.mlps[l] - seen).abs() < 1e-5, "{mode:?} MLP {l}");
        }
        assert!(moved > 1e-4, "no removal changed the loss ({mode:?})");
    }
}

#[test]
fn patching_every_position_restores_the_clean_run_and_none_changes_nothing() {
    let _rng = crate::torch_rng_lock();
    let (_vs, model) = model();
    // The clean run's two most probable next tokens.
    let idx = Tensor::from_slice(&CLEAN).unsqueeze(0);
    let (_, top) = model
        .forward(&idx, false)
        .get(0)
        .get(CLEAN.len() as i64 - 1)
        .topk(2, -1, true, true);
    let pair = (top.int64_value(&[0]), top.int64_value(&[1]));
    let (clean, corrupted) = model
        .patch_traces(&CLEAN, &CORRUPTED, pair.0, pair.1)
        .unwrap();
    let maps = model
        .patch_maps(&CLEAN, &CORRUPTED, pair.0, pair.1)
        .unwrap();
    assert!((maps.clean - maps.corrupted).abs() > 1e-4, "{maps:?}");
    let all: Vec<usize> = (0..CLEAN.len()).collect();
    for l in 0..3 {
        // The same ops on the same numbers: exactly the clean and corrupted metrics.
        let full = model
            .patch_resid(&clean, &corrupted, l, &all, pair)
            .unwrap();
        assert_eq!(full, maps.clean, "layer {l}");
        let none = model.patch_resid(&clean, &corrupted, l, &[], pair).unwrap();
        assert_eq!(none, maps.corrupted, "layer {l}");
        // Each cell of the (batched) map is its own patched run.
        assert_eq!(maps.resid[l].len(), CLEAN.len());
        for p in 0..CLEAN.len() {
            let one = model
                .patch_resid(&clean, &corrupted, l, &[p], pair)
                .unwrap();
            assert!(
                (maps.resid[l][p] - one).abs() < 1e-5,
                "layer {l} position {p}"
            );
        }
    }
    // Positions where the texts agree and nothing before differs carry nothing:
    // position 1 entering the first block is the same in both runs.
    assert!((maps.resid[0][1] - maps.corrupted).abs() < 1e-5);

    // A head's cell: the corrupted run with that head's clean output, written out.
    let manual = head_patched(&model, &clean, &CORRUPTED, 1, 2, pair);
    assert!((maps.heads[1][2] - manual).abs() < 1e-5);

    let err = format!(
        "{:#}",
        model.patch_maps(&CLEAN, &CORRUPTED[..5], 1, 2).unwrap_err()
    );
    assert!(err.contains("same length"), "{err}");
}

/// The logit difference of the corrupted run with head `h` of layer `l` giving the
/// clean run's output, every block written out in full.
fn head_patched(
    model: &Gpt,
    clean: &Trace,
    corrupted: &[i64],
    l: usize,
    h: usize,
    (answer, wrong): (i64, i64),
) -> f64 {
    let idx = Tensor::from_slice(corrupted).unsqueeze(0);
    let pos = Tensor::arange(corrupted.len() as i64, (Kind::Int64, Device::Cpu));
    tch::no_grad(|| {
        let mut x = model.wte.forward(&idx) + model.wpe.forward(&pos);
        for (at, block) in model.h.iter().enumerate() {
            let (z, _) = block.attn.attend(&block.ln_1.forward(&x));
            let z = if at == l {
                let mut heads = z.unbind(1);
                heads[h] = clean.z[l].select(1, h as i64);
                Tensor::stack(&heads, 1)
            } else {
                z
            };
            x = &x + block.attn.merge(&z);
            x = &x + block.mlp.forward(&block.ln_2.forward(&x), false);
        }
        model.logit_diff(&x, answer, wrong).unwrap()[0]
    })
}

/// The shortcuts of the patching maps — a patched run computed only from its first
/// changed position on (the earlier ones given by their keys and values), its final
/// block at the last position only, runs patched nearby batched in groups of 8 —
/// against full runs, for texts first differing in the middle and longer than a group.
#[test]
fn every_cell_of_both_maps_is_its_own_full_patched_run() {
    let _rng = crate::torch_rng_lock();
    let (_vs, model) = model();
    let clean: Vec<i64> = vec![3, 17, 4, 29, 0, 11, 42, 8, 19, 23, 5, 31, 2];
    let mut corrupted = clean.clone();
    corrupted[3] = 30;
    corrupted[11] = 7;
    let (clean_trace, corrupted_trace) = model.patch_traces(&clean, &corrupted, 0, 1).unwrap();
    let idx = Tensor::from_slice(&clean).unsqueeze(0);
    let (_, top) = model
        .forward(&idx, false)
        .get(0)
        .get(clean.len() as i64 - 1)
        .topk(2, -1, true, true);
    let pair = (top.int64_value(&[0]), top.int64_value(&[1]));
    let maps = model
        .patch_maps(&clean, &corrupted, pair.0, pair.1)
        .unwrap();
    let mut moved = 0.0f64;
    for l in 0..3 {
        for p in 0..clean.len() {
            let full = model
                .patch_resid(&clean_trace, &corrupted_trace, l, &[p], pair)
                .unwrap();
            let d = (maps.resid[l][p] - full).abs();
            assert!(
                d < 1e-5,
                "stream cell {l}, {p}: {} vs {full}",
                maps.resid[l][p]
            );
            moved = moved.max((full - maps.corrupted).abs());
        }
        for h in 0..4 {
            let full = head_patched(&model, &clean_trace, &corrupted, l, h, pair);
            let d = (maps.heads[l][h] - full).abs();
            assert!(
                d < 1e-5,
                "head cell {l}.{h}: {} vs {full}",
                maps.heads[l][h]
            );
        }
    }
    assert!(moved > 1e-3, "no patch changed the metric");
}

#[test]
fn attributions_sum_to_the_logit() {
    let _rng = crate::torch_rng_lock();
    let (_vs, model) = model();
    let trace = model.trace(&CLEAN).unwrap();
    let targets: Vec<i64> = CLEAN[1..].iter().copied().chain([7]).collect();
    let a = model.attribute(&trace, &targets).unwrap();
    let idx = Tensor::from_slice(&CLEAN).unsqueeze(0);
    let own = model.forward(&idx, false).squeeze_dim(0);
    for (p, &target) in targets.iter().enumerate() {
        let logit = own.double_value(&[p as i64, target]);
        assert!((a.logit[p] - logit).abs() < 1e-5, "position {p}");
        let gap = (a.sum(p) - a.logit[p]).abs();
        assert!(
            gap < 1e-4,
            "position {p}: the parts miss the logit by {gap}"
        );
    }
    // Nothing is zero by construction: every kind of part writes something.
    assert!(a.tok.iter().any(|v| v.abs() > 1e-4));
    assert!(a.attn_bias[0].iter().any(|v| v.abs() > 1e-4));
    assert!(a.ln_bias.iter().any(|v| v.abs() > 1e-4));
    assert_eq!(a.heads.len(), 3);
    assert_eq!(a.heads[0].len(), 4);
    assert!(model.attribute(&trace, &targets[1..]).is_err());
}
