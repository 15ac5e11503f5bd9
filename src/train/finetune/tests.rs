//! Unit tests of `finetune`.
use super::*;
use crate::classifier::{class_probabilities, load_classifier};
use crate::config::DataMode;
use crate::data::tokenizer::TextTokenizer;
use crate::model::gpt::GptConfig;
use tch::nn;

/// A LoadedModel around a freshly built model.
fn loaded_from(
    vs: nn::VarStore,
    model: Gpt,
    tokenizer: TextTokenizer,
    data_mode: DataMode,
) -> LoadedModel {
    let config = CheckpointConfig {
        format_version: checkpoint::FORMAT_VERSION,
        model: model.config,
        eot_id: tokenizer.eot_id(),
        corpus: "none".into(),
        data_mode,
        parameters: crate::model::gpt::parameter_count(&vs),
        text_form: Default::default(),
    };
    LoadedModel {
        vs,
        model,
        tokenizer,
        config,
        origin: "test".into(),
        prompt: None,
    }
}

fn synthetic_rows() -> Vec<Labeled> {
    let good = ["good", "great", "fine", "lovely", "superb", "nice"];
    let bad = ["bad", "awful", "poor", "dull", "weak", "ugly"];
    let mut rows = Vec::new();
    for i in 0..48 {
        let (words, label) = if i % 2 == 0 { (&good, 1) } else { (&bad, 0) };
        let sentence = format!("the film was {} and {}", words[i % 6], words[(i / 2) % 6]);
        rows.push(Labeled { sentence, label });
    }
    rows
}

fn tiny_model(rows: &[Labeled]) -> LoadedModel {
    let texts: Vec<String> = rows.iter().map(|r| r.sentence.clone()).collect();
    let tokenizer = TextTokenizer::train_bpe(&texts, 300).unwrap();
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let config = GptConfig::tiny(tokenizer.vocab_size() as i64, 16, 2, 32);
    let model = Gpt::new(&vs.root(), config);
    loaded_from(vs, model, tokenizer, DataMode::Sentences)
}

/// A run on `rows` saving into a temporary directory (kept while the guard lives).
fn tuner(rows: &[Labeled], options: FinetuneOptions) -> (Finetuner, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("classifier");
    let run = Finetuner::new(tiny_model(rows), rows, &rows[..8], options, out).unwrap();
    (run, dir)
}

fn options() -> FinetuneOptions {
    FinetuneOptions {
        epochs: 30,
        learning_rate: 3e-3,
        schedule: Schedule::Constant,
        batch_size: 8,
        weight_decay: 0.0,
        freeze_body: false,
        freeze_embeddings: false,
        seed: 1,
        patience: 0,
        lm_weight: 0.0,
        readout: Readout::Last,
        template: String::new(),
        label_words: ["bad".into(), "good".into()],
        keep: Keep::Best,
    }
}

#[test]
fn a_tiny_model_fits_a_separable_set() {
    let _rng = crate::torch_rng_lock();
    let rows = synthetic_rows();
    let (mut f, _out) = tuner(&rows, options());
    let mut last = None;
    while !f.is_done() {
        last = Some(f.run_epoch().unwrap());
        if last.is_some_and(|m| m.train_acc == 1.0 && m.epoch > 3) {
            break;
        }
    }
    let train = evaluate(&f.loaded.model, &f.train, 16);
    assert_eq!(train.acc, 1.0, "after {:?}", last);
    assert_eq!(train.confusion[0][1] + train.confusion[1][0], 0);
}

#[test]
fn save_then_classify_gives_the_same_probabilities() {
    let _rng = crate::torch_rng_lock();
    let rows = synthetic_rows();
    // Every read-out is recorded and read back (the layers read-out as well).
    for readout in [Readout::Last, Readout::Layers] {
        let (mut f, _out) = tuner(
            &rows,
            FinetuneOptions {
                epochs: 3,
                readout,
                ..options()
            },
        );
        while !f.is_done() {
            f.run_epoch().unwrap();
        }
        let (epoch, eval) = f.restore_best().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let info = ClassifierInfo {
            source: "test".into(),
            best_epoch: epoch,
            val: eval,
            train_examples: 48,
            val_examples: 8,
            labels: ["negative".into(), "positive".into()],
            readout,
            prompt: None,
        };
        f.save(&dir.path().join("clf"), &info).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("clf").join(CURVES_FILE)).unwrap();
        assert_eq!(csv.lines().count(), 4);
        let before = class_probabilities(&f.loaded, "the film was great and nice").unwrap();
        let (loaded, back) = load_classifier(&dir.path().join("clf"), Device::Cpu).unwrap();
        assert_eq!(back, info);
        assert_eq!(loaded.model.readout(), readout);
        let after = class_probabilities(&loaded, "the film was great and nice").unwrap();
        assert!((before[1] - after[1]).abs() < 1e-6, "{readout:?}");
        assert!((after[0] + after[1] - 1.0).abs() < 1e-6);
    }
    let msg = format!(
        "{:#}",
        load_classifier(Path::new("/nonexistent"), Device::Cpu)
            .err()
            .unwrap()
    );
    assert!(msg.contains("does not exist"), "{msg}");
}

#[test]
fn a_prompt_readout_appends_the_template_and_starts_from_the_lm_judgement() {
    let _rng = crate::torch_rng_lock();
    let rows = synthetic_rows();
    let prompt = FinetuneOptions {
        epochs: 2,
        readout: Readout::Prompt,
        template: " so it was".into(),
        label_words: ["bad".into(), "good".into()],
        ..options()
    };
    let (mut f, _out) = tuner(&rows, prompt.clone());
    // Every example ends with the template (and whatever tokens both label words
    // start with); none is closed by <|endoftext|>.
    let tokenizer = &f.loaded.tokenizer;
    let tokens = prompt_tokens(
        tokenizer,
        &Prompt {
            template: " so it was".into(),
            label_words: ["bad".into(), "good".into()],
        },
    )
    .unwrap();
    let template = tokens.template.clone();
    let words: Vec<u32> = tokenizer.encode(" so it was").unwrap();
    assert!(template.len() >= words.len());
    let eot = i64::from(tokenizer.eot_id().unwrap());
    for e in f.train.iter().chain(&f.val) {
        assert!(e.ids.ends_with(&template), "{:?}", e.ids);
        assert_eq!(e.ids[0], eot);
    }
    // A sentence too long for the block loses its end, never the template.
    let long = "good ".repeat(40);
    let ids = Encoder::for_model(&f.loaded)
        .unwrap()
        .encode(&long)
        .unwrap();
    assert_eq!(ids.len(), 16);
    assert!(ids.ends_with(&template));
    // Before training, P(positive) is the LM's odds of " good" over " bad" after the
    // template.
    let [bad, good] = tokens.labels;
    let x = &f.train[0];
    let lm = f
        .loaded
        .model
        .forward(&Tensor::from_slice(&x.ids).unsqueeze(0), false)
        .get(0)
        .get(x.ids.len() as i64 - 1);
    let want = 1.0 / (1.0 + (lm.double_value(&[bad]) - lm.double_value(&[good])).exp());
    let p = p_positive(&f.loaded.model, &f.train[..1], 1).unwrap()[0];
    assert!((p - want).abs() < 1e-5, "{p} vs {want}");
    // The first batch reports that judgement on the validation set.
    let events = f.advance().unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Log { message } if message.contains("own judgement"))),
        "{events:?}"
    );
    // Saved and loaded back, the classifier reads sentences the same way.
    while !f.is_done() {
        f.advance().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    f.out = dir.path().join("clf");
    f.finish().unwrap();
    let (loaded, info) = load_classifier(&f.out, Device::Cpu).unwrap();
    assert_eq!(info.readout, Readout::Prompt);
    let want = Prompt {
        template: " so it was".into(),
        label_words: ["bad".into(), "good".into()],
    };
    assert_eq!(info.prompt.as_ref(), Some(&want));
    assert_eq!(loaded.prompt.as_ref(), Some(&want));
    let before = class_probabilities(&f.loaded, "the film was good").unwrap();
    let after = class_probabilities(&loaded, "the film was good").unwrap();
    assert!((before[1] - after[1]).abs() < 1e-6);
    // Label words where one is the other and more cannot tell the classes apart.
    let same = FinetuneOptions {
        label_words: ["good".into(), "good!".into()],
        ..prompt
    };
    let err = Finetuner::new(
        tiny_model(&rows),
        &rows,
        &rows[..8],
        same,
        PathBuf::from("never-written"),
    )
    .err()
    .unwrap();
    assert!(format!("{err:#}").contains("label_words"), "{err:#}");
}

#[test]
fn keep_last_ends_with_the_last_epoch_and_best_with_the_lowest_loss() {
    let _rng = crate::torch_rng_lock();
    let rows = synthetic_rows();
    let dir = tempfile::tempdir().unwrap();
    for keep in [Keep::Last, Keep::Best] {
        let o = FinetuneOptions {
            epochs: 4,
            keep,
            ..options()
        };
        let out = dir.path().join(format!("{keep:?}"));
        let mut f = Finetuner::new(tiny_model(&rows), &rows, &rows[..8], o, out).unwrap();
        let mut events = Vec::new();
        while !f.is_done() {
            events.extend(f.advance().unwrap());
        }
        let epochs: Vec<EpochMetrics> = events
            .iter()
            .filter_map(|e| match e {
                Event::Epoch(m) => Some(*m),
                _ => None,
            })
            .collect();
        let Some(Event::Done(RunDone::Finetune(done))) = events.last() else {
            panic!("{events:?}")
        };
        let want = match keep {
            Keep::Last => epochs[3],
            Keep::Best => *epochs
                .iter()
                .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss))
                .unwrap(),
        };
        assert_eq!(done.best_epoch, want.epoch, "{keep:?}");
        assert_eq!((done.val_acc, done.val_loss), (want.val_acc, want.val_loss));
    }
}

#[test]
fn the_auxiliary_lm_loss_trains_the_lm_head_too() {
    let _rng = crate::torch_rng_lock();
    let rows = synthetic_rows();
    let head = |lm_weight: f64| {
        let o = FinetuneOptions {
            epochs: 1,
            lm_weight,
            ..options()
        };
        let (mut f, _out) = tuner(&rows, o);
        let before = f.loaded.vs.variables()["lm_head.weight"].copy();
        f.run_epoch().unwrap();
        (&f.loaded.vs.variables()["lm_head.weight"] - before)
            .abs()
            .max()
            .double_value(&[])
    };
    assert_eq!(head(0.0), 0.0, "without it the LM head gets no gradient");
    assert!(head(0.5) > 0.0);
}

#[test]
fn freezing_the_body_or_the_embeddings_keeps_them_as_pretrained() {
    let _rng = crate::torch_rng_lock();
    let rows = synthetic_rows();
    /// Freeze the body, freeze the embeddings, and which weights still train.
    type Case = (bool, bool, fn(&str) -> bool);
    let cases: [Case; 2] = [
        (true, false, crate::model::gpt::is_classifier_weight),
        // The LM head gets no gradient without the auxiliary loss either.
        (false, true, |n| {
            !(n.starts_with("transformer.wte.")
                || n.starts_with("transformer.wpe.")
                || n.starts_with("lm_head."))
        }),
    ];
    for (freeze_body, freeze_embeddings, trains) in cases {
        let (mut f, _out) = tuner(
            &rows,
            FinetuneOptions {
                epochs: 1,
                freeze_body,
                freeze_embeddings,
                ..options()
            },
        );
        let before: BTreeMap<String, Tensor> = f
            .loaded
            .vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        f.run_epoch().unwrap();
        for (name, t) in f.loaded.vs.variables() {
            let changed = (&t - &before[&name]).abs().max().double_value(&[]) > 0.0;
            assert_eq!(changed, trains(&name), "{name}");
        }
    }
}
