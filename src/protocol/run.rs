//! The first line of a run's history: what kind of run it is, when it started and the
//! settings it ran with (what `gptdash runs diff` compares).
use serde::{Deserialize, Serialize};

use std::path::PathBuf;

use crate::config::{FinetuneSettings, Settings};
use crate::protocol::{EpochMetrics, RunDone, RunStart};

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

/// A run's history as the dashboard restores it when the run is opened: its start, its
/// curves (a resumed run's segments joined) and its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoredRun {
    pub path: PathBuf,
    pub start: Option<RunStart>,
    /// Train loss by step.
    pub train: Vec<(u64, f64)>,
    /// Test loss by step.
    pub test: Vec<(u64, f64)>,
    /// A fine-tuning run's epochs.
    pub epochs: Vec<EpochMetrics>,
    pub done: Option<RunDone>,
}

/// One row of a sweep's summary: a grid point, its members' results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointResult {
    /// `key=value` of each axis.
    pub point: Vec<String>,
    /// The result per member (best test loss; a classifier's kept validation accuracy),
    /// finished members only.
    pub results: Vec<f64>,
    pub mean: Option<f64>,
    /// The sample standard deviation (n − 1), with two results or more.
    pub std: Option<f64>,
    /// Members not finished (running, interrupted, diverged).
    pub unfinished: usize,
}

/// How a run stands, from its history and its folder's lock.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, strum::Display,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[strum(serialize = "running")]
    Running,
    #[strum(serialize = "finished")]
    Finished,
    /// Stopped early (a signal, `x`), or killed: the history ends without its end.
    #[strum(serialize = "interrupted")]
    Interrupted,
    #[strum(serialize = "diverged")]
    Diverged,
}

/// A run, summarised from its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub name: String,
    pub path: PathBuf,
    pub kind: RunKind,
    /// The corpus (a classifier's: its SST-2 data).
    pub corpus: String,
    /// The model preset and sizes (a classifier's: the model it started from).
    pub model: String,
    /// Steps taken (a classifier's: epochs).
    pub steps: u64,
    /// Steps (epochs) planned.
    pub planned: u64,
    pub tokens: f64,
    /// Wall time, every segment of a resumed run together.
    pub wall_s: f64,
    /// Tokens per second of the training steps.
    pub tokens_per_s: Option<f64>,
    /// Best and last test loss (a classifier's: validation accuracy).
    pub best: Option<f64>,
    pub last: Option<f64>,
    /// A finished classifier's kept epoch's validation accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<f64>,
    pub status: Status,
    /// Seconds since the Unix epoch.
    pub started: Option<u64>,
    /// Lines of the history that are not events.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub malformed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One setting that differs: its key and each run's value (`-` where a run has none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffRow {
    pub key: String,
    pub values: Vec<String>,
}
