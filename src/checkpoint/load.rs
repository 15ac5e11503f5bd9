//! A model ready for use, from a gptdash checkpoint or a Hugging Face GPT-2 folder: sizes
//! from `config.json`, the tokenizer, the weights, and every fact recorded about them
//! checked once, before memory is allocated for the model where it can be.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device};

use super::folder::recover;
use super::schema::{
    check_model_config, read_config, CheckpointConfig, CONFIG_FILE, FORMAT_VERSION, MODEL_FILE,
    TOKENIZER_FILE,
};
use super::weights::{load_checked, open_checked};
use crate::config::DataMode;
use crate::data::tokenizer::TextTokenizer;
use crate::model::gpt::{Gpt, GptConfig};

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
    pub(crate) fn describe(&self) -> String {
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
                let files = [CONFIG_FILE, TOKENIZER_FILE, MODEL_FILE];
                let dir = crate::data::hub::fetch_gpt2(id, &files).with_context(|| {
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
    recover(dir)?;
    let gpt2 = crate::model::hf::is_hf_gpt2(dir);
    let mut config = if gpt2 {
        // A folder gptdash exported says how its text was framed; others are GPT-2's.
        let provenance = crate::model::hf::read_provenance(dir);
        CheckpointConfig {
            format_version: FORMAT_VERSION,
            model: crate::model::hf::read_config(dir, 2)?,
            eot_id: None,
            corpus: match &provenance {
                Some(p) => p.corpus.clone(),
                None => format!("GPT-2 weights from {}", dir.display()),
            },
            data_mode: provenance.as_ref().map_or(DataMode::Pack, |p| p.data_mode),
            parameters: 0,
            text_form: provenance.map(|p| p.text_form).unwrap_or_default(),
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
    // What the weights were saved with names the key that was changed.
    let file = if gpt2 {
        check_model_config(&dir.join(CONFIG_FILE), &config.model)?;
        None
    } else {
        Some(open_checked(&dir.join(MODEL_FILE), &config.model)?)
    };
    check_size(dir, &config.model)?;
    let mut vs = nn::VarStore::new(device);
    let model = Gpt::new(&vs.root(), config.model);
    match &file {
        Some(file) => load_checked(&mut vs, file)?,
        None => {
            crate::model::hf::load_weights(&vs, dir)?;
            config.eot_id = tokenizer.eot_id();
            config.parameters = crate::model::gpt::parameter_count(&vs);
        }
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

/// The model's vocabulary and its tokenizer's must be the same size: a tokenizer with
/// more tokens would produce ids the model has no row for; one with fewer (another
/// model's) would silently read the text wrong.
fn check_vocabulary(dir: &Path, tokenizer: &TextTokenizer, model: &GptConfig) -> Result<()> {
    let tokens = tokenizer.vocab_size() as i64;
    if tokens > model.vocab_size {
        bail!(
            "checkpoint {}: tokenizer has {tokens} tokens but the model only {}",
            dir.display(),
            model.vocab_size
        );
    }
    if tokens < model.vocab_size {
        bail!(
            "checkpoint {}: the tokenizer has {tokens} tokens but the model {} (tokenizer.json belongs to another model)",
            dir.display(),
            model.vocab_size
        );
    }
    Ok(())
}

/// Before memory is allocated for the model: the weights file must be about as large as
/// the configuration implies (at least 2 bytes a parameter), so a `config.json` that
/// describes a much larger model fails here rather than allocating it.
fn check_size(dir: &Path, c: &GptConfig) -> Result<()> {
    let weights = dir.join(MODEL_FILE);
    let Ok(meta) = std::fs::metadata(&weights) else {
        return Ok(()); // the loader names the missing file
    };
    let (v, b, l, e) = (
        c.vocab_size as f64,
        c.block_size as f64,
        c.n_layer as f64,
        c.n_embd as f64,
    );
    let heads = if c.tie_lm_head { 1.0 } else { 2.0 };
    let parameters = heads * v * e + b * e + l * 12.0 * e * e;
    // The position table may be cropped in the file (GPT-2 folders); allow for it.
    let least = 2.0 * (parameters - b * e) * 0.9;
    if (meta.len() as f64) < least {
        bail!(
            "checkpoint {}: config.json describes a model of about {:.1}M parameters, but {} holds only {:.1} MB (the config does not describe these weights)",
            dir.display(),
            parameters / 1e6,
            weights.display(),
            meta.len() as f64 / 1e6
        );
    }
    Ok(())
}
