//! One settings type for the whole program: `config.toml` (serde + toml) with a section
//! per concern, defaults for every key, model presets, and validation that names the key.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Every setting of gptdash. Sections mirror `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub model: ModelSettings,
    pub train: TrainSettings,
    pub data: DataSettings,
    pub generate: GenerateSettings,
    pub finetune: FinetuneSettings,
    pub ui: UiSettings,
    pub runs: RunsSettings,
}

/// `[runs]`: where runs are looked for (`gptdash runs`, the Runs tab), besides
/// `checkpoints/`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunsSettings {
    /// More folders holding runs (a sweep's `--out`, runs kept elsewhere).
    pub folders: Vec<PathBuf>,
}

/// `[model]`: a preset, optionally with explicit sizes on top.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    /// `gpt-nano`, `gpt-micro`, `gpt-mini`, `gpt2`, or `custom` (then all three sizes are required).
    pub preset: String,
    pub n_layer: Option<i64>,
    pub n_head: Option<i64>,
    pub n_embd: Option<i64>,
    /// Longest context the model sees, in tokens.
    pub block_size: i64,
    /// Dropout on embeddings, attention weights and residual branches.
    pub dropout: f64,
    /// Outputs of the classifier head used by fine-tuning.
    pub n_classes: i64,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            preset: "gpt-micro".into(),
            n_layer: None,
            n_head: None,
            n_embd: None,
            block_size: 64,
            dropout: 0.1,
            n_classes: 2,
        }
    }
}

/// `[train]`: the language-model training loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSettings {
    pub max_iters: u64,
    pub batch_size: i64,
    pub learning_rate: f64,
    /// Linear warm-up steps from 0 to `learning_rate`.
    pub warmup_iters: u64,
    /// Cosine decay from `learning_rate` to `min_lr` over `max_iters`.
    pub lr_decay: bool,
    pub min_lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Gradient-norm clipping threshold; 0 turns clipping off.
    pub grad_clip: f64,
    /// Mean test loss every this many steps (and at the end).
    pub eval_interval: u64,
    /// At most this many test batches per evaluation; 0 means the whole test split.
    pub eval_batches: u64,
    /// Write a checkpoint every this many steps; 0 means only at the end.
    pub save_interval: u64,
    pub seed: u64,
    /// `auto` (CUDA when available), `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// CPU threads for libtorch; 0 means one per physical core.
    pub threads: usize,
    /// What training's matrix products (blocks and LM head) compute in: `f32`, or
    /// `bf16` (f32 master weights; LayerNorms, residual stream, softmax and loss f32).
    pub dtype: Dtype,
}

/// Compute precision of training's matrix products.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Dtype {
    #[default]
    F32,
    Bf16,
}

impl Dtype {
    pub(crate) fn kind(self) -> tch::Kind {
        match self {
            Dtype::F32 => tch::Kind::Float,
            Dtype::Bf16 => tch::Kind::BFloat16,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        self.into()
    }
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            max_iters: 200,
            batch_size: 32,
            learning_rate: 1e-3,
            warmup_iters: 20,
            lr_decay: true,
            min_lr: 1e-4,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            grad_clip: 1.0,
            eval_interval: 50,
            eval_batches: 20,
            save_interval: 0,
            seed: 1337,
            device: "auto".into(),
            threads: 0,
            dtype: Dtype::F32,
        }
    }
}

/// `[data]`: corpus, split and tokenizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSettings {
    /// `small` (the built-in corpus), a corpus of the catalog (`gptdash data list`:
    /// `imdb`, `tinystories`, ...) or a path to a UTF-8 text file.
    pub corpus: String,
    /// Share of sentences (in file order) used for training; the rest is the test split.
    pub train_fraction: f64,
    /// `sentences`: one padded example per sentence; `pack`: block-size chunks of the token
    /// stream; `documents`: one document per line (or per catalog document), packed.
    /// Unset: the catalog corpus's own mode, else `sentences`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<DataMode>,
    /// `None` trains a byte-level BPE on the training text; a path loads that `tokenizer.json`.
    pub tokenizer: Option<PathBuf>,
    /// Vocabulary size of the trained BPE (an upper bound; small corpora stop earlier).
    pub vocab_size: usize,
    /// Lower-case every sentence (after splitting), e.g. to match lower-cased SST-2.
    pub lowercase: bool,
    /// Split punctuation and clitics off words Penn-Treebank style (`it 's a film ,`),
    /// as SST-2's text is.
    pub ptb_split: bool,
    /// Keep the prepared corpus (tokenizer and token ids) in the per-user cache.
    pub cache: bool,
    /// The most text read from a corpus file, in MB (after decompression); 0: a tenth
    /// of this machine's memory (preparing a corpus holds several times its text).
    pub max_corpus_mb: u64,
    /// `documents` mode trains its BPE on the first this many MB of the training
    /// documents (the whole training text when it is smaller).
    pub tokenizer_sample_mb: u64,
}

impl DataSettings {
    /// The data mode: as set, else `sentences` (a run's plan sets it from its corpus).
    pub(crate) fn mode(&self) -> DataMode {
        self.mode.unwrap_or(DataMode::Sentences)
    }
}

/// The built-in corpus's name (`--corpus small`, `data.corpus = "small"`).
pub const BUILTIN_CORPUS: &str = "small";

impl Default for DataSettings {
    fn default() -> Self {
        Self {
            corpus: BUILTIN_CORPUS.into(),
            train_fraction: 0.8,
            mode: None,
            tokenizer: None,
            vocab_size: 2000,
            lowercase: false,
            ptb_split: false,
            cache: true,
            max_corpus_mb: 0,
            tokenizer_sample_mb: 32,
        }
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum DataMode {
    /// One padded example per sentence, framed by `<|endoftext|>`.
    Sentences,
    /// The sentences' token stream cut into block-size chunks (the default only where
    /// nothing says: a run reported by another trainer; gptdash's default is `sentences`).
    #[default]
    Pack,
    /// One document per line (a review, an article), each framed by `<|endoftext|>` as
    /// GPT-2 frames documents, the stream packed into block-size chunks.
    Documents,
}

impl DataMode {
    pub(crate) fn name(self) -> &'static str {
        self.into()
    }

    /// Whether every example starts after `<|endoftext|>` (sentences or documents), so
    /// inference should frame its input the same way.
    pub(crate) fn frames_text(self) -> bool {
        matches!(self, DataMode::Sentences | DataMode::Documents)
    }
}

/// `[generate]`: defaults of `gptdash generate` and the Generate tab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateSettings {
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub sample: bool,
    /// 0 means no top-k filter.
    pub top_k: usize,
    pub seed: u64,
    /// Alternatives shown per generated token.
    pub grid: usize,
}

impl Default for GenerateSettings {
    fn default() -> Self {
        Self {
            max_new_tokens: 10,
            temperature: 1.0,
            sample: false,
            top_k: 0,
            seed: 42,
            grid: 6,
        }
    }
}

/// What the classifier head reads from the final hidden states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Readout {
    /// The last real token's state (GPT-1's "extract" token): it has read the whole text.
    #[default]
    Last,
    /// The mean of every real token's state.
    Mean,
    /// The language model's own judgement: `template` is appended to the sentence and
    /// the head starts as the LM head's rows of the two `label_words`, so before any
    /// fine-tuning it compares P(label word | sentence + template) (PET / LM-BFF's
    /// prompt-based fine-tuning). The head then trains as `last` does.
    Prompt,
    /// The mean over tokens of every block's output, each through the final layer norm
    /// (as the logit lens reads them) and averaged over blocks (ELMo's "all layers", with
    /// equal weights): the lower blocks' more lexical features reach the head directly.
    Layers,
}

/// How the fine-tuning learning rate moves over the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The same rate for every batch.
    #[default]
    Constant,
    /// Warm up linearly over the first 6% of the batches, then fall linearly to zero at
    /// the last (GPT-1's and BERT's fine-tuning schedule).
    Linear,
}

/// Which epoch a fine-tuning run keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// The epoch with the lowest validation loss (its weights are restored at the end).
    #[default]
    Best,
    /// The last epoch: a fixed number of epochs, no choice made on the validation set.
    Last,
}

/// `[finetune] base` for the model the dashboard holds.
pub(crate) const HELD_BASE: &str = "held";

/// `[finetune]`: SST-2 sentiment fine-tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneSettings {
    /// Rows taken from the start of the SST-2 train split.
    pub samples: usize,
    pub val_fraction: f64,
    pub epochs: usize,
    pub learning_rate: f64,
    /// `constant`, or `linear`: warm-up then linear decay to zero.
    pub schedule: Schedule,
    pub batch_size: i64,
    pub weight_decay: f64,
    pub freeze_body: bool,
    /// Keep the token and position embeddings as pretrained.
    pub freeze_embeddings: bool,
    /// Seeds the head's initialisation, the batch order and dropout.
    pub seed: u64,
    /// Seeds the stratified train/validation split; unset: `seed`. Fix it to compare
    /// fine-tuning seeds on one validation set.
    pub split_seed: Option<u64>,
    /// Stop after this many epochs without a better validation loss; 0 = never.
    pub patience: usize,
    /// Dropout while fine-tuning; unset keeps the model's own.
    pub dropout: Option<f64>,
    /// Weight of an auxiliary language-modelling loss while fine-tuning; 0 = off.
    pub lm_weight: f64,
    /// What the classifier reads: the last token's hidden state, or the mean over tokens.
    pub readout: Readout,
    /// The epoch the run ends with: the one with the best validation loss, or the last.
    pub keep: Keep,
    /// `readout = "prompt"`: the text appended to each sentence, written as the model's
    /// pretraining text was normalised (SST-2 style: lower case, punctuation split).
    pub template: String,
    /// `readout = "prompt"`: the words for the negative and the positive class, whose
    /// LM-head rows start the classifier (the first token of a word that is several).
    pub label_words: [String; 2],
    /// Where SST-2 comes from: `hub`, or a TSV/parquet file or a folder holding them.
    pub sst2: String,
    /// What is fine-tuned: `held` (the dashboard's model; headless `finetune` then needs
    /// `--checkpoint` or `--init`), a checkpoint folder, or a Hugging Face GPT-2 model
    /// (`gpt2`, `distilgpt2`, `owner/name`), fetched through the hub cache.
    pub base: String,
    /// More labelled rows for training only (a TSV `sentence<TAB>label` or a parquet
    /// file): your own examples, or pseudo-labels from a classifier. They never enter the
    /// validation split.
    pub extra_train: Option<String>,
}

impl Default for FinetuneSettings {
    fn default() -> Self {
        Self {
            samples: 1200,
            val_fraction: 0.2,
            epochs: 8,
            learning_rate: 1e-3,
            schedule: Schedule::Constant,
            batch_size: 16,
            weight_decay: 0.01,
            freeze_body: false,
            freeze_embeddings: false,
            seed: 1337,
            split_seed: None,
            patience: 0,
            dropout: Some(0.1),
            lm_weight: 0.0,
            readout: Readout::Mean,
            keep: Keep::Last,
            template: " . in short , this movie is".into(),
            label_words: ["terrible".into(), "great".into()],
            sst2: "hub".into(),
            base: HELD_BASE.into(),
            extra_train: None,
        }
    }
}

/// `[ui]`: the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiSettings {
    /// Frames per second at most.
    pub fps: u32,
    pub log_scale: bool,
    /// EMA smoothing of the loss chart, 0 (off) to <1.
    pub smoothing: f64,
    /// While training, the Inspect tab (when shown) inspects again every this many
    /// steps; 0: only when asked (r).
    pub inspect_every: u64,
}

impl Default for UiSettings {
    fn default() -> Self {
        Self {
            fps: 30,
            log_scale: false,
            smoothing: 0.0,
            inspect_every: 25,
        }
    }
}

/// Resolved sizes of a GPT.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelDims {
    pub n_layer: i64,
    pub n_head: i64,
    pub n_embd: i64,
}

/// The named model sizes, as minGPT names them.
pub(crate) const PRESETS: &[(&str, ModelDims)] = &[
    (
        "gpt-nano",
        ModelDims {
            n_layer: 3,
            n_head: 3,
            n_embd: 48,
        },
    ),
    (
        "gpt-micro",
        ModelDims {
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
        },
    ),
    (
        "gpt-mini",
        ModelDims {
            n_layer: 6,
            n_head: 6,
            n_embd: 192,
        },
    ),
    (
        "gpt2",
        ModelDims {
            n_layer: 12,
            n_head: 12,
            n_embd: 768,
        },
    ),
];

impl ModelSettings {
    /// The preset's sizes with any explicit `n_layer`/`n_head`/`n_embd` on top.
    pub fn dims(&self) -> Result<ModelDims> {
        let base = if self.preset == "custom" {
            match (self.n_layer, self.n_head, self.n_embd) {
                (Some(n_layer), Some(n_head), Some(n_embd)) => ModelDims {
                    n_layer,
                    n_head,
                    n_embd,
                },
                _ => bail!(
                    "model.preset = \"custom\" needs model.n_layer, model.n_head and model.n_embd"
                ),
            }
        } else {
            match PRESETS.iter().find(|(name, _)| *name == self.preset) {
                Some((_, dims)) => *dims,
                None => bail!(
                    "model.preset: unknown preset {:?}; expected one of {}, or \"custom\"",
                    self.preset,
                    PRESETS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        };
        Ok(ModelDims {
            n_layer: self.n_layer.unwrap_or(base.n_layer),
            n_head: self.n_head.unwrap_or(base.n_head),
            n_embd: self.n_embd.unwrap_or(base.n_embd),
        })
    }
}

impl Settings {
    /// Reads a settings file; unknown keys and wrong types are errors naming the file,
    /// line and key. Values are checked once, where the command has put its flags on top
    /// ([`Settings::validate`]: a training run's [`crate::train::plan::Plan`]).
    pub(crate) fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let settings =
            Self::from_toml(&text).with_context(|| format!("in config file {}", path.display()))?;
        Ok(settings)
    }

    /// Parses settings (unknown keys and wrong types are errors); values are not checked.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| one_line_error(text, &e))
    }

    /// The file to read when `--config` is not given: `./config.toml`, else the per-user
    /// config file, else none (built-in defaults).
    pub(crate) fn default_file() -> Option<PathBuf> {
        let local = PathBuf::from("config.toml");
        if local.is_file() {
            return Some(local);
        }
        let user = crate::paths::config_dir()?.join("config.toml");
        user.is_file().then_some(user)
    }
}

/// A TOML error in one line: where (line, and the line's text, which names the key) and
/// why, e.g. `line 3 (learning_rat = 0.1): unknown field `learning_rat`, expected one of …`.
fn one_line_error(text: &str, e: &toml::de::Error) -> anyhow::Error {
    let reason = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return anyhow::anyhow!("{reason}");
    };
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let line_no = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line: String = text[line_start..line_end].trim().chars().take(60).collect();
    if line.is_empty() {
        anyhow::anyhow!("line {line_no}: {reason}")
    } else {
        anyhow::anyhow!("line {line_no} ({line}): {reason}")
    }
}

/// The largest `[finetune] lm_weight` (and `--lm-weight`): the auxiliary loss is a
/// helper of the classification loss, not a replacement that swamps it.
pub(crate) const MAX_LM_WEIGHT: f64 = 10.0;

mod validate;

#[cfg(test)]
mod tests;
