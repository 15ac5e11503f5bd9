//! Checkpoints are directories, written atomically (a temp directory renamed into place):
//!
//! | file | what |
//! |---|---|
//! | `model.safetensors` | weights, GPT-2 style names |
//! | `config.json` | [`CheckpointConfig`]: model sizes, tokenizer facts, corpus |
//! | `tokenizer.json` | the tokenizer, loadable by any `tokenizers` implementation |
//! | `optimizer.safetensors` | AdamW moment buffers (training checkpoints only) |
//! | `train_state.json` | [`TrainState`]: step and settings, for exact resume |
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device};

use crate::config::{DataMode, Settings};
use crate::data::tokenizer::TextTokenizer;
use crate::model::gpt::{Gpt, GptConfig};

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const STATE_FILE: &str = "train_state.json";

/// Layout version of `config.json`.
pub const FORMAT_VERSION: u32 = 1;

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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: u64,
    pub settings: Settings,
    pub best_test_loss: Option<f64>,
    pub last_train_loss: Option<f64>,
}

/// Writes a checkpoint directory atomically: `write` fills a fresh temporary directory
/// beside `dir`, which then replaces `dir`. If anything fails, `dir` is left as it was.
pub fn write_atomically(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = dir
        .file_name()
        .ok_or_else(|| anyhow!("checkpoint path {} has no directory name", dir.display()))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let pid = std::process::id();
    let tmp = parent.join(format!(".{}.tmp-{pid}", name.to_string_lossy()));
    let old = parent.join(format!(".{}.old-{pid}", name.to_string_lossy()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!(
            "checkpoint {} was not written (the previous one is untouched)",
            dir.display()
        )));
    }
    if dir.exists() {
        if dir.is_file() {
            let _ = std::fs::remove_dir_all(&tmp);
            bail!("{} is a file, not a checkpoint directory", dir.display());
        }
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(dir, &old).with_context(|| {
            format!(
                "cannot move the previous checkpoint {} aside",
                dir.display()
            )
        })?;
        if let Err(e) = std::fs::rename(&tmp, dir) {
            let _ = std::fs::rename(&old, dir);
            return Err(anyhow!(e).context(format!(
                "cannot move the new checkpoint into {}",
                dir.display()
            )));
        }
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, dir)
            .with_context(|| format!("cannot move the new checkpoint into {}", dir.display()))?;
    }
    Ok(())
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

pub fn read_config(dir: &Path) -> Result<CheckpointConfig> {
    require_checkpoint_dir(dir)?;
    let config: CheckpointConfig = read_json(&dir.join(CONFIG_FILE))?;
    if config.format_version > FORMAT_VERSION {
        bail!(
            "checkpoint {} has format version {}, newer than this gptdash understands ({FORMAT_VERSION})",
            dir.display(),
            config.format_version
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

/// A model ready for inference, with its tokenizer.
pub struct LoadedModel {
    pub vs: nn::VarStore,
    pub model: Gpt,
    pub tokenizer: TextTokenizer,
    pub config: CheckpointConfig,
    /// Where it came from: a checkpoint folder, or the run that trained it.
    pub origin: String,
    /// A prompt classifier's template and label words (`Readout::Prompt`); `None` for
    /// plain models and other read-outs.
    pub prompt: Option<Prompt>,
}

/// What a prompt classifier appends to every sentence, and the words whose next-token
/// logits are its classes (negative first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    pub template: String,
    pub label_words: [String; 2],
}

impl LoadedModel {
    /// Whether the model was trained on sentences or documents framed by
    /// `<|endoftext|>` (gptdash's `sentences` and `documents` modes), so its inputs
    /// should be framed the same way.
    pub fn frames_sentences(&self) -> bool {
        self.config.data_mode.frames_text() && self.tokenizer.eot_id().is_some()
    }
}

/// A model to start from, as `[finetune] base` or `--init` name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// The model the dashboard holds.
    Held,
    /// A gptdash checkpoint or a Hugging Face GPT-2 folder.
    Folder(PathBuf),
    /// A Hugging Face model id (`gpt2`, `distilgpt2`, `owner/name`).
    Hub(String),
}

impl Base {
    /// `held`; a folder that exists, or anything written as a path (`./x`, `../x`, `/x`,
    /// `~/x`, `x/`: a missing one is an error when loaded, never a hub id); else a hub
    /// model id.
    pub fn parse(spec: &str) -> Base {
        let spec = spec.trim();
        if spec == crate::config::HELD_BASE {
            return Base::Held;
        }
        let path = Path::new(spec);
        let written_as_path = [".", "/", "~"].iter().any(|p| spec.starts_with(p))
            || spec.ends_with('/')
            || spec.matches('/').count() > 1;
        if path.is_dir() || written_as_path {
            Base::Folder(crate::paths::expand_home(spec))
        } else {
            Base::Hub(spec.to_string())
        }
    }

    /// How the log and the `start` event name it.
    pub fn describe(&self) -> String {
        match self {
            Base::Held => "the model held".into(),
            Base::Folder(dir) => dir.display().to_string(),
            Base::Hub(id) => format!("{id} (Hugging Face hub)"),
        }
    }

    /// The folder to load (a hub model is fetched into the Hugging Face cache first) and
    /// a short name for output folders; `None` for [`Base::Held`].
    pub fn locate(&self) -> Result<Option<(PathBuf, String)>> {
        Ok(match self {
            Base::Held => None,
            Base::Folder(dir) => {
                if !dir.is_dir() {
                    bail!("no checkpoint folder at {}", dir.display());
                }
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model".into());
                Some((dir.clone(), name))
            }
            Base::Hub(id) => {
                let dir = crate::data::hub::fetch_gpt2(id).with_context(|| {
                    format!(
                        "{id:?} is not a folder here, so it was taken for a Hugging Face model id"
                    )
                })?;
                Some((dir, id.replace('/', "-")))
            }
        })
    }
}

/// Loads weights and tokenizer of a checkpoint directory onto `device`: a gptdash
/// checkpoint, or a Hugging Face GPT-2 directory (`config.json`, `model.safetensors`,
/// `tokenizer.json`).
pub fn load_model(dir: &Path, device: Device) -> Result<LoadedModel> {
    load_model_with_dropout(dir, device, None)
}

/// [`load_model`] with another dropout rate (for fine-tuning); weights are unchanged.
/// The one place a model is loaded: the folder's format decides where the sizes and the
/// weights come from (`model::hf` reads GPT-2's); the rest is the same for both.
pub fn load_model_with_dropout(
    dir: &Path,
    device: Device,
    dropout: Option<f64>,
) -> Result<LoadedModel> {
    let gpt2 = crate::model::hf::is_hf_gpt2(dir);
    let mut config = if gpt2 {
        CheckpointConfig {
            format_version: FORMAT_VERSION,
            model: crate::model::hf::read_config(dir, 2)?,
            eot_id: None,
            corpus: format!("GPT-2 weights from {}", dir.display()),
            data_mode: DataMode::Pack,
            parameters: 0,
        }
    } else {
        read_config(dir)?
    };
    if let Some(d) = dropout {
        config.model.dropout = d;
    }
    let tokenizer = TextTokenizer::from_file(&dir.join(TOKENIZER_FILE)).with_context(|| {
        format!(
            "the checkpoint {} needs its {TOKENIZER_FILE}",
            dir.display()
        )
    })?;
    check_vocabulary(dir, &tokenizer, &config.model)?;
    let mut vs = nn::VarStore::new(device);
    let model = Gpt::new(&vs.root(), config.model);
    if gpt2 {
        crate::model::hf::load_weights(&vs, dir)?;
        config.eot_id = tokenizer.eot_id();
        config.parameters = crate::model::gpt::parameter_count(&vs);
    } else {
        load_weights(&mut vs, &dir.join(MODEL_FILE))?;
    }
    Ok(LoadedModel {
        vs,
        model,
        tokenizer,
        config,
        origin: dir.display().to_string(),
        prompt: None,
    })
}

fn check_vocabulary(dir: &Path, tokenizer: &TextTokenizer, model: &GptConfig) -> Result<()> {
    if tokenizer.vocab_size() as i64 > model.vocab_size {
        bail!(
            "checkpoint {}: tokenizer has {} tokens but the model only {}",
            dir.display(),
            tokenizer.vocab_size(),
            model.vocab_size
        );
    }
    Ok(())
}

pub fn load_weights(vs: &mut nn::VarStore, path: &Path) -> Result<()> {
    if !path.is_file() {
        bail!("missing weights file {}", path.display());
    }
    vs.load(path)
        .map_err(|e| anyhow!("cannot load weights from {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_or_keeps_the_previous_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        write_atomically(&dir, |tmp| Ok(std::fs::write(tmp.join("a"), "1")?)).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        // A failing write leaves the old checkpoint as it was and no temp directory behind.
        let err = write_atomically(&dir, |tmp| {
            std::fs::write(tmp.join("a"), "half")?;
            bail!("disk full")
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("untouched"));
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        // A successful write replaces it.
        write_atomically(&dir, |tmp| Ok(std::fs::write(tmp.join("b"), "2")?)).unwrap();
        assert!(!dir.join("a").exists());
        assert_eq!(std::fs::read_to_string(dir.join("b")).unwrap(), "2");
        let leftovers: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the checkpoint remains");
    }

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
