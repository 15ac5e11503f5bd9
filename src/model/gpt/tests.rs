//! Unit tests of `gpt`.
use super::*;
use tch::Device;

fn tiny() -> GptConfig {
    GptConfig {
        vocab_size: 50,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        dropout: 0.0,
        n_classes: 2,
        layer_norm_eps: 1e-5,
        tie_lm_head: false,
    }
}

#[test]
fn dropout_drops_at_rate_p_scales_the_rest_and_follows_the_seed() {
    let _rng = crate::torch_rng_lock();
    let x = Tensor::ones([300, 1000], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    tch::manual_seed(3);
    let a = dropout(&x, 0.1, true);
    let dropped = a
        .eq(0.0)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    assert!((dropped - 0.1).abs() < 0.003, "dropped share {dropped}");
    let kept = a.masked_select(&a.ne(0.0));
    assert!((kept.min().double_value(&[]) - 1.0 / 0.9).abs() < 1e-6);
    assert!((kept.max().double_value(&[]) - 1.0 / 0.9).abs() < 1e-6);
    // The mean is preserved; neighbouring elements are not correlated.
    assert!((a.mean(Kind::Float).double_value(&[]) - 1.0).abs() < 0.01);
    let pairs = a
        .view([-1, 2])
        .eq(0.0)
        .all_dim(1, false)
        .to_kind(Kind::Float);
    let both = pairs.mean(Kind::Float).double_value(&[]);
    assert!(
        (both - 0.01).abs() < 0.002,
        "both of a pair dropped: {both}"
    );
    // Same seed, same mask; another seed, another mask.
    tch::manual_seed(3);
    let same = dropout(&x, 0.1, true);
    assert!(a.equal(&same));
    let other = dropout(&x, 0.1, true);
    assert!(!a.equal(&other));
    // The gradient is the mask; evaluation leaves the input alone.
    a.sum(Kind::Float).backward();
    assert!(x.grad().equal(&a.detach()));
    assert!(dropout(&x, 0.1, false).equal(&x));
    let half = dropout(&x.to_kind(Kind::BFloat16), 0.5, true);
    assert_eq!(half.kind(), Kind::BFloat16);
}

#[test]
fn causality_later_tokens_do_not_change_earlier_logits() {
    let _rng = crate::torch_rng_lock();
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), tiny());
    let a = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6]).view([1, 6]);
    let b = Tensor::from_slice(&[1i64, 2, 3, 40, 9, 8]).view([1, 6]);
    let la = model.forward(&a, false);
    let lb = model.forward(&b, false);
    // Positions 0..=2 share a prefix and must agree; position 3 sees a different token.
    let diff = (la.narrow(1, 0, 3) - lb.narrow(1, 0, 3))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-6, "prefix logits changed by {diff}");
    let later = (la.narrow(1, 3, 1) - lb.narrow(1, 3, 1))
        .abs()
        .max()
        .double_value(&[]);
    assert!(later > 1e-4, "a changed token should change its own logits");
}

#[test]
fn padding_changes_neither_logits_nor_loss_of_real_tokens() {
    let _rng = crate::torch_rng_lock();
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), tiny());
    let x = Tensor::from_slice(&[3i64, 7, 9, 11]).view([1, 4]);
    let y = Tensor::from_slice(&[7i64, 9, 11, 12]).view([1, 4]);
    let xp = Tensor::from_slice(&[3i64, 7, 9, 11, 0, 0, 0]).view([1, 7]);
    let yp = Tensor::from_slice(&[7i64, 9, 11, 12, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX])
        .view([1, 7]);
    let l = model.forward(&x, false);
    let lp = model.forward(&xp, false);
    let diff = (&l - lp.narrow(1, 0, 4)).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "{diff}");
    let loss = Gpt::lm_loss(&l, &y).double_value(&[]);
    let loss_p = Gpt::lm_loss(&lp, &yp).double_value(&[]);
    assert!((loss - loss_p).abs() < 1e-6, "{loss} vs {loss_p}");
}

#[test]
fn initialisation_follows_gpt2() {
    let _rng = crate::torch_rng_lock();
    tch::manual_seed(2);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = GptConfig {
        n_layer: 4,
        n_embd: 64,
        n_head: 4,
        vocab_size: 500,
        ..tiny()
    };
    let _model = Gpt::new(&vs.root(), cfg);
    let vars = vs.variables();
    let std = |name: &str| vars[name].std(true).double_value(&[]);
    assert!((std("transformer.wte.weight") - 0.02).abs() < 0.002);
    assert!((std("transformer.h.0.attn.c_attn.weight") - 0.02).abs() < 0.002);
    let residual = 0.02 / (8f64).sqrt();
    assert!((std("transformer.h.3.mlp.c_proj.weight") - residual).abs() < 0.001);
    assert!((std("transformer.h.1.attn.c_proj.weight") - residual).abs() < 0.001);
    assert_eq!(
        vars["transformer.h.0.attn.c_attn.bias"]
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );
    assert_eq!(
        vars["transformer.ln_f.weight"]
            .mean(Kind::Float)
            .double_value(&[]),
        1.0
    );
    assert!(!vars.contains_key("lm_head.bias"));
    assert_eq!(vars["classifier.bias"].size(), vec![2]);
}

#[test]
fn kv_cache_gives_the_same_logits_as_a_full_forward() {
    let _rng = crate::torch_rng_lock();
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), tiny());
    let ids = [4i64, 8, 15, 16, 23, 42, 7];
    let mut cache = KvCache::new();
    let prompt = Tensor::from_slice(&ids[..3]).view([1, 3]);
    let mut got = vec![model.forward_cached(&prompt, &mut cache).unwrap()];
    for &id in &ids[3..] {
        got.push(
            model
                .forward_cached(&Tensor::from_slice(&[id]).view([1, 1]), &mut cache)
                .unwrap(),
        );
    }
    assert_eq!(cache.len(), 7);
    let full = model.forward(&Tensor::from_slice(&ids).view([1, 7]), false);
    for (k, logits) in got.iter().enumerate() {
        let want = full.select(1, 2 + k as i64);
        let diff = (logits - want).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "position {}: {diff}", 2 + k);
    }
    assert!(model
        .forward_cached(&Tensor::from_slice(&[1i64, 2]).view([1, 2]), &mut cache)
        .is_err());
}

#[test]
fn classification_reads_the_last_real_token_whatever_the_padding() {
    let _rng = crate::torch_rng_lock();
    tch::manual_seed(4);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), tiny());
    let short = Tensor::from_slice(&[3i64, 9, 4, 0, 0, 0, 0, 0]).view([1, 8]);
    let tight = Tensor::from_slice(&[3i64, 9, 4]).view([1, 3]);
    let padded_other = Tensor::from_slice(&[3i64, 9, 4, 17, 17, 17]).view([1, 6]);
    let len = Tensor::from_slice(&[3i64]);
    let a = model.classify(&short, &len, false);
    let b = model.classify(&tight, &len, false);
    let c = model.classify(&padded_other, &len, false);
    assert!((&a - &b).abs().max().double_value(&[]) < 1e-6);
    assert!((&a - &c).abs().max().double_value(&[]) < 1e-6);
    // In a batch, each row reads its own last token.
    let batch = Tensor::from_slice(&[3i64, 9, 4, 0, 5, 6, 7, 8]).view([2, 4]);
    let lens = Tensor::from_slice(&[3i64, 4]);
    let both = model.classify(&batch, &lens, false);
    assert!((both.get(0) - a.get(0)).abs().max().double_value(&[]) < 1e-6);
    assert_eq!(both.size(), vec![2, 2]);
}

#[test]
fn layers_readout_averages_every_block_through_the_final_norm() {
    let _rng = crate::torch_rng_lock();
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = Gpt::new(&vs.root(), tiny());
    assert!(model.h.len() >= 2, "the test needs several blocks");
    model.set_readout(Readout::Layers);
    let tight = Tensor::from_slice(&[3i64, 9, 4]).view([1, 3]);
    let padded = Tensor::from_slice(&[3i64, 9, 4, 17, 17]).view([1, 5]);
    let len = Tensor::from_slice(&[3i64]);
    let a = model.classify(&tight, &len, false);
    let b = model.classify(&padded, &len, false);
    assert!((&a - &b).abs().max().double_value(&[]) < 1e-6);
    // By hand: each block's output through ln_f, averaged over blocks, then tokens.
    let pos = Tensor::arange(3, (Kind::Int64, Device::Cpu));
    let mut x = model.wte.forward(&tight) + model.wpe.forward(&pos);
    let mut sum = Tensor::zeros([1, 3, model.config.n_embd], (Kind::Float, Device::Cpu));
    for block in &model.h {
        x = block.forward(&x, false);
        sum += model.ln_f.forward(&x);
    }
    let pooled = (sum / model.h.len() as f64).mean_dim(1, false, Kind::Float);
    let want = model.classifier.forward(&pooled);
    assert!((&a - &want).abs().max().double_value(&[]) < 1e-5);
    // The LM head still reads the last block alone.
    let (read, last) = model.classifier_hidden(&tight, false);
    assert!(
        (&last - model.hidden(&tight, false))
            .abs()
            .max()
            .double_value(&[])
            < 1e-6
    );
    assert!((&read - &last).abs().max().double_value(&[]) > 1e-4);
    model.set_readout(Readout::Mean);
    let mean = model.classify(&tight, &len, false);
    assert!((&a - &mean).abs().max().double_value(&[]) > 1e-6);
}

#[test]
fn mean_readout_averages_the_real_tokens_whatever_the_padding() {
    let _rng = crate::torch_rng_lock();
    tch::manual_seed(4);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = Gpt::new(&vs.root(), tiny());
    model.set_readout(Readout::Mean);
    let tight = Tensor::from_slice(&[3i64, 9, 4]).view([1, 3]);
    let padded = Tensor::from_slice(&[3i64, 9, 4, 17, 17, 17]).view([1, 6]);
    let len = Tensor::from_slice(&[3i64]);
    let a = model.classify(&tight, &len, false);
    let b = model.classify(&padded, &len, false);
    assert!((&a - &b).abs().max().double_value(&[]) < 1e-6);
    // It is the head applied to the mean of the three hidden states.
    let h = model.hidden(&tight, false).mean_dim(1, false, Kind::Float);
    let want = model.classifier.forward(&h);
    assert!((&a - &want).abs().max().double_value(&[]) < 1e-6);
    model.set_readout(Readout::Last);
    let last = model.classify(&tight, &len, false);
    assert!((&a - &last).abs().max().double_value(&[]) > 1e-6);
}

#[test]
fn a_head_started_from_the_lm_head_gives_the_lm_logits_of_the_label_tokens() {
    let _rng = crate::torch_rng_lock();
    tch::manual_seed(6);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = Gpt::new(&vs.root(), tiny());
    model.set_readout(Readout::Prompt);
    model.start_head_from_lm_head(&[11, 5]).unwrap();
    let ids = Tensor::from_slice(&[3i64, 9, 4, 17, 0, 0]).view([1, 6]);
    let len = Tensor::from_slice(&[4i64]);
    let head = model.classify(&ids, &len, false);
    let lm = model.forward(&ids, false).get(0).get(3);
    let want = Tensor::stack(&[lm.get(11), lm.get(5)], 0).unsqueeze(0);
    assert!((&head - &want).abs().max().double_value(&[]) < 1e-5);
    // So the class probabilities are the LM's next-token odds between the two words.
    let p = head.softmax(-1, Kind::Double).double_value(&[0, 1]);
    let (a, b) = (lm.double_value(&[11]), lm.double_value(&[5]));
    assert!((p - 1.0 / (1.0 + (a - b).exp())).abs() < 1e-5);
    let vocab = model.config.vocab_size;
    assert!(model.start_head_from_lm_head(&[1, vocab]).is_err());
    assert!(model.start_head_from_lm_head(&[1]).is_err());
}

#[test]
fn parameter_count_matches_the_formula() {
    let _rng = crate::torch_rng_lock();
    let vs = nn::VarStore::new(Device::Cpu);
    let c = tiny();
    let _model = Gpt::new(&vs.root(), c);
    let (v, t, e, l) = (c.vocab_size, c.block_size, c.n_embd, c.n_layer);
    let per_block =
        2 * 2 * e + (e * 3 * e + 3 * e) + (e * e + e) + (e * 4 * e + 4 * e) + (4 * e * e + e);
    let expected = v * e + t * e + l * per_block + 2 * e + e * v + e * c.n_classes + c.n_classes;
    assert_eq!(parameter_count(&vs), expected);
}
