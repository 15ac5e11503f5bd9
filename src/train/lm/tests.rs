//! Unit tests of `lm`.
use super::*;

fn corpus_file(dir: &Path) -> String {
    let path = dir.join("tiny.txt");
    let text =
        "The cat sat. The dog ran. A cat ran. A dog sat. The cat ran. The dog sat.\n".repeat(6);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A run of `settings` that saves only where a test says.
fn trainer(settings: Settings) -> Result<LmTrainer> {
    LmTrainer::new(Plan::new(settings, Output::Unclaimed, "test settings")?)
}

fn tiny_settings(corpus: String) -> Settings {
    let mut s = Settings::default();
    s.data.corpus = corpus;
    s.data.vocab_size = 300;
    s.data.cache = false; // never write to the user's cache from a test
    s.model.preset = "custom".into();
    s.model.n_layer = Some(2);
    s.model.n_head = Some(2);
    s.model.n_embd = Some(32);
    s.model.block_size = 16;
    s.train.device = "cpu".into();
    s.train.batch_size = 8;
    s.train.max_iters = 40;
    s.train.warmup_iters = 2;
    s.train.learning_rate = 3e-3;
    s.train.eval_interval = 10;
    s
}

#[test]
fn loss_falls_on_a_tiny_corpus() {
    let _rng = crate::torch_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = trainer(tiny_settings(corpus_file(dir.path()))).unwrap();
    let first = trainer.step().unwrap();
    assert!(first.loss.is_finite() && first.tokens > 0 && first.lr > 0.0);
    let before = trainer.evaluate().unwrap();
    let mut last = first;
    while !trainer.is_done() {
        last = trainer.step().unwrap();
    }
    let after = trainer.evaluate().unwrap();
    assert_eq!(last.iter, 40);
    assert!(
        last.loss < first.loss * 0.5,
        "train loss {} -> {}",
        first.loss,
        last.loss
    );
    assert!(after < before * 0.6, "test loss {before} -> {after}");
}

#[test]
fn bf16_training_tracks_f32() {
    let _rng = crate::torch_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let curve = |dtype| {
        let mut s = tiny_settings(corpus_file(dir.path()));
        s.train.dtype = dtype;
        let mut trainer = trainer(s).unwrap();
        let mut losses = Vec::new();
        while !trainer.is_done() {
            losses.push(trainer.step().unwrap().loss);
        }
        (losses, trainer.evaluate().unwrap())
    };
    let (f32_curve, f32_test) = curve(crate::config::Dtype::F32);
    let (bf16_curve, bf16_test) = curve(crate::config::Dtype::Bf16);
    assert_ne!(f32_curve, bf16_curve, "bf16 must change the arithmetic");
    for (i, (a, b)) in f32_curve.iter().zip(&bf16_curve).enumerate() {
        assert!(
            (a - b).abs() <= 0.03 * a,
            "step {}: f32 {a} vs bf16 {b}",
            i + 1
        );
    }
    assert!(
        bf16_curve[39] < bf16_curve[0] * 0.5,
        "bf16 learns: {bf16_curve:?}"
    );
    assert!(
        (f32_test - bf16_test).abs() <= 0.03 * f32_test,
        "test loss {f32_test} vs {bf16_test}"
    );
}

#[test]
fn save_then_load_gives_identical_logits() {
    let _rng = crate::torch_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = trainer(tiny_settings(corpus_file(dir.path()))).unwrap();
    for _ in 0..3 {
        trainer.step().unwrap();
    }
    let ckpt = dir.path().join("ckpt");
    trainer.save(&ckpt).unwrap();
    let loaded = checkpoint::load_model(&ckpt, Device::Cpu).unwrap();
    let x = Tensor::from_slice(&[1i64, 5, 7, 3]).view([1, 4]);
    // The weights come back bit-exact; the logits within a stated tolerance, since the
    // trainer's weights are views into one flat buffer and the loaded ones separate
    // tensors, and a CPU's kernels may round the two layouts differently.
    let saved = trainer.var_store().variables();
    for (name, t) in loaded.vs.variables() {
        let ours = &saved[&name];
        assert!(ours.equal(&t), "{name} differs after the round trip");
    }
    let a = trainer.model.forward(&x, false);
    let b = loaded.model.forward(&x, false);
    assert!((a - b).abs().max().double_value(&[]) < 1e-6);
    let text = "The cat sat.";
    assert_eq!(
        loaded.tokenizer.encode(text).unwrap(),
        trainer.tokenizer.encode(text).unwrap()
    );
}

#[test]
fn resume_continues_step_count_and_optimizer_state_exactly() {
    let _rng = crate::torch_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let settings = tiny_settings(corpus_file(dir.path()));
    let mut straight = trainer(settings.clone()).unwrap();
    let losses: Vec<f64> = (0..8).map(|_| straight.step().unwrap().loss).collect();

    let mut first = trainer(settings).unwrap();
    for _ in 0..4 {
        first.step().unwrap();
    }
    let ckpt = dir.path().join("half");
    first.save(&ckpt).unwrap();
    drop(first);
    let mut resumed = LmTrainer::resume(&ckpt, |_| {}).unwrap();
    assert_eq!(resumed.step, 4);
    let rest: Vec<StepMetrics> = (0..4).map(|_| resumed.step().unwrap()).collect();
    assert_eq!(rest[0].iter, 5);
    for (k, m) in rest.iter().enumerate() {
        assert!(
            (m.loss - losses[4 + k]).abs() < 1e-5 * losses[4 + k].abs().max(1.0),
            "step {}: {} vs {}",
            5 + k,
            m.loss,
            losses[4 + k]
        );
    }
}

#[test]
fn resume_past_the_end_asks_for_more_steps() {
    let _rng = crate::torch_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = tiny_settings(corpus_file(dir.path()));
    settings.train.max_iters = 2;
    let mut t = trainer(settings).unwrap();
    t.step().unwrap();
    t.step().unwrap();
    let ckpt = dir.path().join("done");
    t.save(&ckpt).unwrap();
    let msg = format!("{:#}", LmTrainer::resume(&ckpt, |_| {}).err().unwrap());
    assert!(msg.contains("--max-iters"), "{msg}");
    let more = LmTrainer::resume(&ckpt, |s| s.train.max_iters = 3).unwrap();
    assert_eq!(more.step, 2);
}

#[test]
fn same_seed_same_losses() {
    let _rng = crate::torch_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let settings = tiny_settings(corpus_file(dir.path()));
    let run = |s: Settings| {
        let mut t = trainer(s).unwrap();
        (0..3).map(|_| t.step().unwrap().loss).collect::<Vec<_>>()
    };
    assert_eq!(run(settings.clone()), run(settings.clone()));
    let mut other = settings;
    other.train.seed = 7;
    assert_ne!(
        run(other.clone()),
        run(tiny_settings(other.data.corpus.clone()))
    );
}

#[test]
fn missing_corpus_is_an_error_naming_the_file_and_key() {
    let _rng = crate::torch_rng_lock();
    let mut s = Settings::default();
    s.data.corpus = "/nowhere/corpus.txt".into();
    let msg = format!("{:#}", trainer(s).err().unwrap());
    assert!(
        msg.contains("/nowhere/corpus.txt") && msg.contains("--corpus"),
        "{msg}"
    );
}

#[test]
fn pack_mode_streams_block_sized_chunks() {
    let _rng = crate::torch_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut s = tiny_settings(corpus_file(dir.path()));
    s.data.mode = Some(crate::config::DataMode::Pack);
    s.model.block_size = 8;
    let mut t = trainer(s).unwrap();
    assert!(t.train.rows().iter().all(|r| r.len() <= 9));
    assert!(t.train.rows()[..t.train.len() - 1]
        .iter()
        .all(|r| r.len() == 9));
    assert!(t.step().unwrap().loss.is_finite());
}
