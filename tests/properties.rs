//! Property tests for the parsers: whatever the input — a config file, an SST-2 TSV, a
//! corpus, a prompt — the answer is a result or an error, never a panic.
use gptdash::config::Settings;
use gptdash::data::corpus::split_sentences;
use gptdash::data::normalize::ptb_split;
use gptdash::data::sst2::read_tsv;
use gptdash::data::tokenizer::TextTokenizer;
use gptdash::generate::encode_prompt;
use gptdash::model::gpt::{Gpt, GptConfig};
use proptest::prelude::*;

/// The config's keys, with values of every TOML type, so validation (not only the
/// parser) sees odd values.
fn config_text() -> impl Strategy<Value = String> {
    let keys = prop::sample::select(vec![
        ("model", "preset"),
        ("model", "n_layer"),
        ("model", "n_head"),
        ("model", "n_embd"),
        ("model", "block_size"),
        ("model", "dropout"),
        ("train", "max_iters"),
        ("train", "batch_size"),
        ("train", "learning_rate"),
        ("train", "warmup_iters"),
        ("train", "threads"),
        ("train", "device"),
        ("train", "dtype"),
        ("train", "grad_clip"),
        ("data", "corpus"),
        ("data", "mode"),
        ("data", "vocab_size"),
        ("data", "train_fraction"),
        ("generate", "temperature"),
        ("generate", "top_k"),
        ("finetune", "samples"),
        ("finetune", "val_fraction"),
        ("finetune", "label_words"),
        ("finetune", "base"),
        ("ui", "fps"),
        ("ui", "smoothing"),
        ("ui", "inspect_every"),
        ("nonsense", "key"),
    ]);
    let value = prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        prop::num::f64::ANY.prop_map(|v| format!("{v:?}").replace("NaN", "nan")),
        any::<bool>().prop_map(|v| v.to_string()),
        "[a-z0-9 ./-]{0,12}".prop_map(|s| format!("{s:?}")),
        Just("[]".to_string()),
        Just("[\"a\", \"b\"]".to_string()),
    ];
    prop::collection::vec((keys, value), 0..6).prop_map(|pairs| {
        let mut text = String::new();
        for ((table, key), value) in pairs {
            text.push_str(&format!("[{table}]\n{key} = {value}\n"));
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_as_a_config_is_settings_or_an_error(text in "\\PC{0,200}") {
        let _ = Settings::from_toml(&text);
    }

    #[test]
    fn odd_values_for_real_keys_are_settings_or_an_error(text in config_text()) {
        // Parsing and checking never panic; what passes the check can be used: the
        // model sizes resolve (to the ones the check returns).
        if let Ok(settings) = Settings::from_toml(&text) {
            if let Ok(dims) = settings.validate() {
                prop_assert_eq!(settings.model.dims().ok(), Some(dims));
            }
        }
    }

    #[test]
    fn any_tsv_is_rows_or_an_error(body in "(\\PC{0,30}\t\\PC{0,5}\r?\n){0,8}", header in prop::sample::select(vec!["sentence\tlabel\n", "label\tsentence\n", "sentence\n", ""])) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.tsv");
        std::fs::write(&path, format!("{header}{body}")).unwrap();
        if let Ok(rows) = read_tsv(&path) {
            prop_assert!(rows.iter().all(|r| r.label <= 1));
        }
    }

    #[test]
    fn sentences_keep_every_word(text in "\\PC{0,300}") {
        let sentences = split_sentences(&text);
        let words: Vec<&str> = sentences.iter().flat_map(|s| s.split_whitespace()).collect();
        let original: Vec<&str> = text.split_whitespace().collect();
        prop_assert_eq!(words, original);
        let _ = ptb_split(&text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_prompt_is_ids_in_the_vocabulary_or_an_error(prompt in "\\PC{0,40}") {
        let tokenizer = TextTokenizer::synthetic_byte_level(300).unwrap();
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let model = Gpt::new(&vs.root(), GptConfig {
            vocab_size: 300,
            block_size: 16,
            n_layer: 1,
            n_head: 1,
            n_embd: 8,
            dropout: 0.0,
            n_classes: 2,
            layer_norm_eps: 1e-5,
            tie_lm_head: false,
        });
        if let Ok(ids) = encode_prompt(&tokenizer, &model, &prompt) {
            prop_assert!(!ids.is_empty() && ids.iter().all(|&i| i < 300));
        }
    }
}

/// Finite f64 of every kind: normal, subnormal, zero of either sign, and the extremes.
fn any_finite_f64() -> impl Strategy<Value = f64> {
    use prop::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    prop_oneof![
        NORMAL | SUBNORMAL | ZERO | POSITIVE | NEGATIVE,
        prop::sample::select(vec![
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            f64::EPSILON,
            5e-324,
            -5e-324,
            0.3622446954250336,
            0.1 + 0.2,
        ]),
    ]
    .prop_filter("finite", |v| v.is_finite())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every float gptdash writes to a file comes back with the same bits: the training
    /// state (config.json's neighbour train_state.json, whose settings hold most floats),
    /// the classifier's record, and a protocol line as `watch` reads it.
    #[test]
    fn floats_written_to_files_read_back_bit_exact(x in any_finite_f64(), y in any_finite_f64()) {
        use gptdash::checkpoint::{read_train_state, write_json, TrainState, CONFIG_FILE, STATE_FILE};
        use gptdash::protocol::Event;
        use gptdash::watch::{parse_line, Parsed};

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "{}").unwrap();
        let mut settings = Settings::default();
        settings.train.learning_rate = x;
        settings.finetune.dropout = Some(y);
        settings.ui.smoothing = y;
        let state = TrainState { step: 7, settings, best_test_loss: Some(x), last_train_loss: Some(y) };
        write_json(&dir.path().join(STATE_FILE), &state).unwrap();
        let back = read_train_state(dir.path()).unwrap();
        prop_assert_eq!(back.settings.train.learning_rate.to_bits(), x.to_bits());
        prop_assert_eq!(back.settings.finetune.dropout.map(f64::to_bits), Some(y.to_bits()));
        prop_assert_eq!(back.settings.ui.smoothing.to_bits(), y.to_bits());
        prop_assert_eq!(back.best_test_loss.map(f64::to_bits), Some(x.to_bits()));
        prop_assert_eq!(back.last_train_loss.map(f64::to_bits), Some(y.to_bits()));

        let line = Event::Eval { iter: 3, test_loss: x }.to_json();
        match parse_line(&line, 1) {
            Some(Parsed::Event(e)) => match *e {
                Event::Eval { test_loss, .. } => prop_assert_eq!(test_loss.to_bits(), x.to_bits()),
                other => prop_assert!(false, "{:?}", other),
            },
            other => prop_assert!(false, "{:?}", other),
        }

        // The classifier's record (its validation loss and accuracy).
        let info = gptdash::classifier::ClassifierInfo {
            source: "s".into(),
            best_epoch: 1,
            val: gptdash::protocol::Evaluation { loss: x, acc: y, confusion: [[1, 2], [3, 4]] },
            train_examples: 1,
            val_examples: 1,
            labels: ["negative".into(), "positive".into()],
            readout: Default::default(),
            prompt: None,
        };
        write_json(&dir.path().join(gptdash::classifier::CLASSIFIER_FILE), &info).unwrap();
        let back = gptdash::classifier::read_info(dir.path()).unwrap().unwrap();
        prop_assert_eq!(back.val.loss.to_bits(), x.to_bits());
        prop_assert_eq!(back.val.acc.to_bits(), y.to_bits());

        // The same values through the config file format (TOML), as settings are written:
        // taken into the keys' valid ranges (a rate > 0, a smoothing in [0, 1)).
        let rate = if x == 0.0 { f64::MIN_POSITIVE } else { x.abs() };
        let smoothing = y.abs().fract();
        let toml_text = format!(
            "[train]\nmin_lr = 0.0\nlearning_rate = {rate:?}\n[ui]\nsmoothing = {smoothing:?}\n"
        );
        let s = Settings::from_toml(&toml_text).unwrap();
        prop_assert_eq!(s.train.learning_rate.to_bits(), rate.to_bits());
        prop_assert_eq!(s.ui.smoothing.to_bits(), smoothing.to_bits());
    }
}
