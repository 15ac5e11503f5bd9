//! Unit tests of `config`.
use super::*;

/// Parsed and checked, as a command sees settings.
fn checked(text: &str) -> Result<Settings> {
    let settings = Settings::from_toml(text)?;
    settings.validate()?;
    Ok(settings)
}

#[test]
fn shipped_recipes_parse_and_validate() {
    let text = include_str!("../../configs/imdb-sst2.toml");
    let s = checked(text).expect("configs/imdb-sst2.toml parses");
    s.validate().expect("configs/imdb-sst2.toml is valid");
    // Users have no ../shared: a shipped recipe takes the hub or a path they give.
    assert!(
        !text.contains("../shared"),
        "configs/imdb-sst2.toml needs ../shared"
    );
    assert_eq!(s.finetune.sst2, "hub");
    assert_eq!(s.data.mode, Some(DataMode::Documents));
    assert!(s.data.lowercase && s.data.ptb_split);
    // Both recipes take their corpus from the catalog.
    assert_eq!(s.data.corpus, "imdb");
    let stories = include_str!("../../configs/tinystories.toml");
    let t = checked(stories).expect("configs/tinystories.toml parses");
    t.validate().expect("configs/tinystories.toml is valid");
    assert_eq!(t.data.corpus, "tinystories");
    assert!(crate::data::catalog::find(&t.data.corpus).is_some());
}

#[test]
fn no_file_under_configs_refers_to_shared() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("../shared") && !text.contains("shared/data"),
            "{} refers to ../shared",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 2);
}

#[test]
fn shipped_config_toml_equals_the_defaults() {
    let text = include_str!("../../config.toml");
    let parsed = checked(text).expect("config.toml parses");
    assert_eq!(parsed, Settings::default());
}

#[test]
fn unknown_key_names_the_key_and_line() {
    let err = checked("[train]\nmax_iters = 5\nlearning_rat = 0.1\n").unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("learning_rat"), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");
}

#[test]
fn wrong_type_names_the_key() {
    let msg = format!(
        "{:#}",
        checked("[train]\nbatch_size = \"big\"\n").unwrap_err()
    );
    assert!(msg.contains("batch_size"), "{msg}");
    assert!(msg.contains("line 2"), "{msg}");
}

#[test]
fn impossible_values_name_the_key() {
    let cases = [
        (
            "[model]\npreset = \"custom\"\nn_layer = 2\nn_head = 3\nn_embd = 32\n",
            "model.n_embd",
        ),
        ("[train]\nbatch_size = 0\n", "train.batch_size"),
        ("[train]\nmax_iters = 0\n", "train.max_iters"),
        ("[train]\ndevice = \"tpu\"\n", "train.device"),
        ("[model]\npreset = \"gpt-huge\"\n", "model.preset"),
        ("[model]\ndropout = 1.5\n", "model.dropout"),
        ("[data]\ntrain_fraction = 1.0\n", "data.train_fraction"),
        ("[generate]\ntemperature = -1.0\n", "generate.temperature"),
        ("[generate]\ngrid = 0\n", "generate.grid"),
    ];
    for (text, key) in cases {
        let msg = format!("{:#}", checked(text).unwrap_err());
        assert!(msg.contains(key), "{text:?} gave {msg}");
    }
}

#[test]
fn the_schedule_and_label_words_are_read_and_checked() {
    let s = checked("[finetune]\nschedule = \"linear\"\nreadout = \"prompt\"\n").unwrap();
    assert_eq!(s.finetune.schedule, Schedule::Linear);
    assert_eq!(s.finetune.readout, Readout::Prompt);
    let msg = format!(
        "{:#}",
        checked("[finetune]\nlabel_words = [\"good\", \"good\"]\n").unwrap_err()
    );
    assert!(msg.contains("finetune.label_words"), "{msg}");
}

#[test]
fn every_finetune_range_is_checked_in_the_files_words() {
    let cases = [
        "samples = 2",
        "val_fraction = 0.0",
        "val_fraction = 1.0",
        "epochs = 0",
        "batch_size = 0",
        "learning_rate = 0.0",
        "learning_rate = -1e-3",
        "learning_rate = nan",
        "learning_rate = inf",
        "weight_decay = -1.0",
        "weight_decay = nan",
        "dropout = 1.5",
        "dropout = -0.1",
        "dropout = nan",
        "lm_weight = -1.0",
        "lm_weight = nan",
        "lm_weight = 1e9",
        "lm_weight = inf",
        "base = \" \"",
        "sst2 = \"\"",
        "extra_train = \"\"",
        "label_words = [\"good\", \"\"]",
    ];
    for case in cases {
        let key = case.split(' ').next().unwrap();
        let msg = format!(
            "{:#}",
            checked(&format!("[finetune]\n{case}\n")).unwrap_err()
        );
        assert!(msg.contains(&format!("finetune.{key}")), "{case}: {msg}");
        assert!(!msg.contains("--"), "{case}: a key, not a flag: {msg}");
    }
    let msg = format!(
        "{:#}",
        checked("[finetune]\nreadout = \"prompt\"\ntemplate = \" \"\n").unwrap_err()
    );
    assert!(msg.contains("finetune.template"), "{msg}");
    for ok in [
        "lm_weight = 10.0",
        "dropout = 0.0",
        "weight_decay = 0.0",
        "lm_weight = 0.5",
    ] {
        checked(&format!("[finetune]\n{ok}\n")).unwrap();
    }
    // Non-finite values elsewhere are errors too.
    for (case, key) in [
        ("[train]\nweight_decay = inf\n", "train.weight_decay"),
        ("[train]\ngrad_clip = nan\n", "train.grad_clip"),
        ("[generate]\ntemperature = inf\n", "generate.temperature"),
        ("[train]\nlearning_rate = nan\n", "train.learning_rate"),
    ] {
        let msg = format!("{:#}", checked(case).unwrap_err());
        assert!(msg.contains(key), "{case}: {msg}");
    }
}

#[test]
fn toml_errors_are_one_line_with_the_key_and_the_reason() {
    let msg = format!(
        "{:#}",
        checked("[finetune]\nepochs = 3\nlearning_rat = 0.1\n").unwrap_err()
    );
    assert!(!msg.contains('\n'), "{msg}");
    assert!(
        msg.starts_with("line 3 (learning_rat = 0.1): unknown field `learning_rat`"),
        "{msg}"
    );
    // The list of valid keys is complete.
    let keys = serde_json::to_value(FinetuneSettings::default()).unwrap();
    for key in keys.as_object().unwrap().keys() {
        assert!(
            msg.contains(&format!("`{key}`")),
            "{key} missing from {msg}"
        );
    }
    let msg = format!(
        "{:#}",
        checked("[train]\nbatch_size = \"big\"\n").unwrap_err()
    );
    assert!(
        !msg.contains('\n') && msg.contains("line 2 (batch_size = \"big\")"),
        "{msg}"
    );
    let msg = format!("{:#}", checked("[train\n").unwrap_err());
    assert!(!msg.contains('\n') && msg.contains("line 1"), "{msg}");
}

#[test]
fn dtype_is_f32_or_bf16() {
    let s = checked("[train]\ndtype = \"bf16\"\n").unwrap();
    assert_eq!(s.train.dtype, Dtype::Bf16);
    assert_eq!(s.train.dtype.kind(), tch::Kind::BFloat16);
    let msg = format!("{:#}", checked("[train]\ndtype = \"f16\"\n").unwrap_err());
    assert!(msg.contains("dtype") && msg.contains("line 2"), "{msg}");
    assert!(msg.contains("bf16"), "the message lists the choices: {msg}");
}

#[test]
fn unknown_section_is_an_error() {
    let msg = format!("{:#}", checked("[trian]\nmax_iters = 5\n").unwrap_err());
    assert!(msg.contains("trian"), "{msg}");
}

#[test]
fn presets_and_overrides() {
    let mut m = ModelSettings {
        preset: "gpt-nano".into(),
        ..Default::default()
    };
    assert_eq!(
        m.dims().unwrap(),
        ModelDims {
            n_layer: 3,
            n_head: 3,
            n_embd: 48
        }
    );
    m.n_layer = Some(5);
    assert_eq!(m.dims().unwrap().n_layer, 5);
    let gpt2 = ModelSettings {
        preset: "gpt2".into(),
        ..Default::default()
    };
    assert_eq!(
        gpt2.dims().unwrap(),
        ModelDims {
            n_layer: 12,
            n_head: 12,
            n_embd: 768
        }
    );
}

#[test]
fn from_file_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[train]\nbatch_size = \"many\"\n").unwrap();
    let msg = format!("{:#}", Settings::from_file(&path).unwrap_err());
    assert!(
        msg.contains("bad.toml") && msg.contains("line 2 (batch_size = \"many\")"),
        "{msg}"
    );
    let missing = format!(
        "{:#}",
        Settings::from_file(&dir.path().join("nope.toml")).unwrap_err()
    );
    assert!(missing.contains("nope.toml"), "{missing}");
}
