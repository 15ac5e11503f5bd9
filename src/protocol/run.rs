//! The first line of a run's history: what kind of run it is, when it started and the
//! settings it ran with (what `gptdash runs diff` compares).
use serde::{Deserialize, Serialize};

use crate::config::{FinetuneSettings, Settings};

/// A language model trained on a corpus, or a classifier fine-tuned on SST-2.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, strum::Display,
)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    #[strum(serialize = "language model")]
    LanguageModel,
    #[strum(serialize = "classifier")]
    Classifier,
}

/// Written at the start of a run (and again each time it is resumed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub kind: RunKind,
    /// Seconds since the Unix epoch.
    pub started: u64,
    /// A language model's settings (every section, as the run resolved them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Box<Settings>>,
    /// A classifier's fine-tuning settings (`base` names the model it started from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<Box<FinetuneSettings>>,
    /// The run continues from a checkpoint of itself at this step (0: a fresh start).
    #[serde(default)]
    pub resumed_at: u64,
}

impl RunRecord {
    /// Now, in seconds since the Unix epoch.
    pub fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}
