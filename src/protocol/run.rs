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

impl RestoredRun {
    pub fn of(path: PathBuf, h: &crate::runs::RunHistory) -> Self {
        let points = |ps: &[crate::runs::Point]| ps.iter().map(|p| (p.step, p.value)).collect();
        let classifier = matches!(h.start, Some(RunStart::Finetune(_)));
        RestoredRun {
            path,
            start: h.start.clone(),
            train: if classifier {
                Vec::new()
            } else {
                points(&h.train)
            },
            test: if classifier {
                Vec::new()
            } else {
                points(&h.test)
            },
            epochs: h.epochs.clone(),
            done: h.done.clone(),
        }
    }
}
