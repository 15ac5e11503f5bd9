//! What a checkpoint folder holds: the file names, and the JSON records with their
//! checks (`config.json`'s [`CheckpointConfig`], `train_state.json`'s [`TrainState`]).
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::{DataMode, Settings};
use crate::data::normalize::TextForm;
use crate::model::gpt::GptConfig;

pub use crate::model::CONFIG_FILE;
pub(crate) use crate::model::{MODEL_FILE, TOKENIZER_FILE};
pub(crate) const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "train_state.json";

/// A fine-tuned classifier's record (head, read-out, validation result).
pub const CLASSIFIER_FILE: &str = "classifier.json";
/// A fine-tuning run's per-epoch losses and accuracies.
pub(crate) const CURVES_FILE: &str = "curves.csv";
/// A run's history: its events as JSON lines (see [`crate::runs`]), carried into every
/// new copy of its folder.
pub const HISTORY_FILE: &str = "events.jsonl";
/// Inside a checkpoint being written, the last file: its presence says every other file
/// was written and synced.
pub(crate) const COMPLETE: &str = ".complete";

/// The files `gptdash export` writes beside a checkpoint's own.
pub(crate) const EXPORT_FILES: &[&str] = &[
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];

/// Every file a gptdash checkpoint (a training run's or a classifier's) may hold.
pub(crate) const CHECKPOINT_FILES: &[&str] = &[
    MODEL_FILE,
    OPTIMIZER_FILE,
    CONFIG_FILE,
    TOKENIZER_FILE,
    STATE_FILE,
    CLASSIFIER_FILE,
    CURVES_FILE,
    HISTORY_FILE,
    COMPLETE,
];

/// Layout version of `config.json`.
pub(crate) const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    pub format_version: u32,
    pub model: GptConfig,
    /// End-of-text token id, if the tokenizer has one.
    pub eot_id: Option<u32>,
    /// `small` or the corpus file the model was trained on.
    pub corpus: String,
    pub data_mode: DataMode,
    pub parameters: i64,
    /// How text was prepared before tokenizing (lower-cased, PTB-split); text given to
    /// the model later is prepared the same way. Older checkpoints lack it: then the
    /// training settings beside them say (see [`read_config`]).
    #[serde(default)]
    pub text_form: TextForm,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: u64,
    pub settings: Settings,
    pub best_test_loss: Option<f64>,
    pub last_train_loss: Option<f64>,
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid gptdash file", path.display()))
}

fn require_checkpoint_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!(
            "checkpoint {} does not exist (expected a directory written by `gptdash train`)",
            dir.display()
        );
    }
    let config = dir.join(CONFIG_FILE);
    if !config.is_file() {
        bail!(
            "{} is not a gptdash checkpoint: it has no {CONFIG_FILE}",
            dir.display()
        );
    }
    Ok(())
}

pub(crate) fn read_config(dir: &Path) -> Result<CheckpointConfig> {
    require_checkpoint_dir(dir)?;
    let path = dir.join(CONFIG_FILE);
    let value: serde_json::Value = read_json(&path)?;
    let recorded_form = value.get("text_form").is_some();
    let mut config: CheckpointConfig = serde_json::from_value(value)
        .with_context(|| format!("{} is not a valid gptdash file", path.display()))?;
    // Written before the text form was recorded: the training settings saved beside
    // the weights say how the text was prepared.
    if !recorded_form {
        if let Ok(state) = read_train_state(dir) {
            config.text_form = TextForm::of(&state.settings.data);
        }
    }
    if config.format_version > FORMAT_VERSION {
        bail!(
            "checkpoint {} has format version {}, newer than this gptdash understands ({FORMAT_VERSION})",
            dir.display(),
            config.format_version
        );
    }
    check_model_config(&path, &config.model)?;
    if let Some(eot) = config
        .eot_id
        .filter(|&e| i64::from(e) >= config.model.vocab_size)
    {
        bail!(
            "{}: eot_id {eot} is outside the vocabulary of {}",
            path.display(),
            config.model.vocab_size
        );
    }
    Ok(config)
}

pub fn read_train_state(dir: &Path) -> Result<TrainState> {
    require_checkpoint_dir(dir)?;
    let path = dir.join(STATE_FILE);
    if !path.is_file() {
        bail!(
            "checkpoint {} has no {STATE_FILE}, so training cannot resume from it",
            dir.display()
        );
    }
    read_json(&path)
}

/// A model configuration that can be built at all: sizes positive and consistent,
/// LayerNorm epsilon and dropout in range, nothing so large it could only be a typo.
pub(crate) fn check_model_config(path: &Path, c: &GptConfig) -> Result<()> {
    let bad =
        |key: &str, what: &str| -> Result<()> { bail!("{}: model.{key} {what}", path.display()) };
    for (key, value, max) in [
        ("vocab_size", c.vocab_size, 1 << 22),
        ("block_size", c.block_size, 1 << 20),
        ("n_layer", c.n_layer, 1024),
        ("n_head", c.n_head, 1024),
        ("n_embd", c.n_embd, 1 << 16),
        ("n_classes", c.n_classes, 1 << 16),
    ] {
        if value < 1 || value > max {
            bad(key, &format!("is {value}; it must be in 1..={max}"))?;
        }
    }
    if c.vocab_size < 2 {
        bad("vocab_size", "must be at least 2")?;
    }
    if c.n_embd % c.n_head != 0 {
        bad(
            "n_embd",
            &format!("{} is not divisible by n_head {}", c.n_embd, c.n_head),
        )?;
    }
    if !(c.layer_norm_eps > 0.0 && c.layer_norm_eps <= 0.1) {
        bad(
            "layer_norm_eps",
            &format!("is {}; it must be in (0, 0.1]", c.layer_norm_eps),
        )?;
    }
    if !(0.0..1.0).contains(&c.dropout) {
        bad(
            "dropout",
            &format!("is {}; it must be in [0, 1)", c.dropout),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_foreign_directories_are_clear_errors() {
        let root = tempfile::tempdir().unwrap();
        let msg = format!(
            "{:#}",
            read_config(&root.path().join("nope")).err().unwrap()
        );
        assert!(msg.contains("does not exist"), "{msg}");
        let msg = format!("{:#}", read_config(root.path()).err().unwrap());
        assert!(msg.contains("not a gptdash checkpoint"), "{msg}");
        std::fs::write(root.path().join(CONFIG_FILE), "{\"format_version\": 1}").unwrap();
        let msg = format!("{:#}", read_config(root.path()).err().unwrap());
        assert!(msg.contains("config.json"), "{msg}");
    }
}
