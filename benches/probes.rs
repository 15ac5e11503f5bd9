//! The Inspect tab's causal probes on a gpt-micro-shaped model (4 layers × 4 heads, 128
//! wide, the built-in corpus's 313-token vocabulary) over a 64-token text, on one
//! thread as `gptdash inspect` runs them (`PROBE_THREADS=2`: as many as a training
//! dashboard's worker has on a 2-core machine): the ablation map (one removal per
//! head and MLP, target ≤ 50 ms), both patching maps (≤ 200 ms), and the direct logit
//! attribution at every position; the plain traced pass beside them for scale.
use criterion::{criterion_group, criterion_main, Criterion};
use gptdash::model::gpt::{AblationMode, Gpt, GptConfig};
use tch::nn;

fn micro() -> (nn::VarStore, Gpt) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let config = GptConfig {
        vocab_size: 313,
        block_size: 64,
        n_layer: 4,
        n_head: 4,
        n_embd: 128,
        dropout: 0.0,
        n_classes: 2,
        layer_norm_eps: 1e-5,
        tie_lm_head: false,
    };
    let model = Gpt::new(&vs.root(), config);
    (vs, model)
}

fn text(shift: i64) -> Vec<i64> {
    (0..64).map(|i| (i * 37 + shift) % 313).collect()
}

fn probes(c: &mut Criterion) {
    tch::set_num_threads(
        std::env::var("PROBE_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    );
    let (_vs, model) = micro();
    let clean = text(13);
    let mut corrupted = clean.clone();
    corrupted[5] = 7;
    corrupted[40] = 99;
    c.bench_function("gpt-micro 64 tokens: traced pass", |b| {
        b.iter(|| model.trace(&clean).map(|_| ()))
    });
    c.bench_function(
        "gpt-micro 64 tokens: ablation map (16 heads + 4 MLPs)",
        |b| b.iter(|| model.head_effects(&clean, AblationMode::Zero).map(|_| ())),
    );
    c.bench_function(
        "gpt-micro 64 tokens: patching maps (4x64 stream + 4x4 heads)",
        |b| b.iter(|| model.patch_maps(&clean, &corrupted, 5, 9).map(|_| ())),
    );
    let targets: Vec<i64> = clean[1..].iter().copied().chain([3]).collect();
    c.bench_function("gpt-micro 64 tokens: attribution at every position", |b| {
        b.iter(|| {
            model
                .trace(&clean)
                .and_then(|t| model.attribute(&t, &targets))
                .map(|_| ())
        })
    });
}

criterion_group!(benches, probes);
criterion_main!(benches);
