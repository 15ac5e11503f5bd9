//! What the parts of gptdash say to each other: the [`Command`]s the dashboard sends its
//! worker, and the [`Event`]s every run reports. The same events reach the dashboard over
//! a channel and the terminal as the `--json` lines of the headless commands (serialised
//! as one object tagged by `event`), so a script, a test and the dashboard all read one
//! schema. Plain data only: no tensors cross a thread.
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::{DataMode, FinetuneSettings, Settings};
use crate::generate::{GenerateOptions, Generation};

mod inspect;
mod run;
pub use inspect::{
    AblatedLoss, AblationAsk, AblationMap, Anatomy, AnatomyRow, InspectAsk, InspectReport,
    InspectText, LensCell, PatchAsk, Patching, PinnedLoss, TokenAttribution, TopToken,
    TrainingPair,
};
pub use run::{DiffRow, PointResult, RestoredRun, RunKind, RunRecord, RunSummary, Status};

/// Dashboard → worker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Command {
    /// Start a fresh training run with these settings (replacing any model held).
    Start(Box<Settings>),
    Pause,
    Resume,
    /// End the run early: it saves a checkpoint; the model stays for generation.
    Stop,
    /// Save a checkpoint (to this directory, or the run's own).
    Save(Option<PathBuf>),
    /// Load a checkpoint for generation (and classification, if it is a classifier).
    Load(PathBuf),
    /// Generate after `prompt`, first emitting `forced` tokens (branching).
    Generate {
        request: u64,
        prompt: String,
        forced: Vec<u32>,
        options: GenerateOptions,
    },
    /// Fine-tune the model held (trained or loaded) on SST-2 as these settings say.
    StartFinetune(Box<FinetuneSettings>),
    /// P(positive) of a sentence, with the fine-tuned classifier.
    ClassifyText(String),
    /// One introspecting pass over a text with the current weights (`Inspected` or
    /// `InspectFailed` answers, with the same `request`).
    Inspect {
        request: u64,
        text: InspectText,
        ask: InspectAsk,
    },
    /// Save these events (a watched stream's) as a run of their own under the runs
    /// root.
    SaveRun(Vec<Event>),
    /// Keep a copy of the current weights (`true`) to compare later inspections with, or
    /// drop it.
    Pin(bool),
    Shutdown,
}

/// What the worker is doing.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::Display,
)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    #[strum(serialize = "idle")]
    Idle,
    #[strum(serialize = "preparing")]
    Preparing,
    #[strum(serialize = "training")]
    Training,
    #[strum(serialize = "paused")]
    Paused,
    /// Training reached max_iters or was stopped; a model is loaded.
    #[strum(serialize = "finished")]
    Finished,
    /// A checkpoint is loaded for generation.
    #[strum(serialize = "model loaded")]
    Loaded,
    /// Fine-tuning the classifier on SST-2.
    #[strum(serialize = "fine-tuning")]
    FineTuning,
}

/// Model sizes, as a run reports them (another trainer's stream may leave some out: 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelShape {
    pub n_layer: i64,
    pub n_head: i64,
    pub n_embd: i64,
    pub block_size: i64,
    pub dropout: f64,
}

/// Facts about a language-model training run, reported once when it starts. A stream
/// from another trainer may leave out any of them (empty, 0: not reported).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunInfo {
    pub device: String,
    pub threads: usize,
    /// Precision of the matrix products: `f32` or `bf16`.
    pub dtype: String,
    pub params: i64,
    pub vocab_size: i64,
    pub train_examples: usize,
    pub test_examples: usize,
    /// Real target tokens in the training split.
    pub train_tokens: usize,
    pub train_sentences: usize,
    pub test_sentences: usize,
    /// `small` or the corpus path.
    pub corpus: String,
    /// The corpus's short name (the file stem).
    pub corpus_name: String,
    pub mode: DataMode,
    pub preset: String,
    pub model: ModelShape,
    pub max_iters: u64,
    pub batch_size: i64,
    /// The step the run starts from (more than 0 when resumed).
    pub start_iter: u64,
    /// Where the run saves its checkpoints.
    pub out: PathBuf,
}

impl RunInfo {
    /// An example run (gpt-micro on the built-in corpus, on the CPU), for the tests and
    /// benchmarks of the views.
    pub fn example(max_iters: u64) -> Self {
        Self {
            device: "cpu".into(),
            threads: 2,
            dtype: "f32".into(),
            params: 881_922,
            vocab_size: 313,
            train_examples: 320,
            test_examples: 80,
            train_tokens: 2172,
            train_sentences: 320,
            test_sentences: 80,
            corpus: "small".into(),
            corpus_name: "small".into(),
            mode: DataMode::Sentences,
            preset: "gpt-micro".into(),
            model: ModelShape {
                n_layer: 4,
                n_head: 4,
                n_embd: 128,
                block_size: 64,
                dropout: 0.1,
            },
            max_iters,
            batch_size: 32,
            start_iter: 0,
            out: "checkpoints/small".into(),
        }
    }
}

/// Facts about a fine-tuning run, reported once when it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneInfo {
    pub device: String,
    pub threads: usize,
    /// Where the model came from (a checkpoint folder, a hub name, a training run).
    pub model: String,
    pub params: i64,
    /// The SST-2 file the rows were read from.
    pub data: String,
    /// Rows taken from the start of the train split.
    pub samples: usize,
    pub train_examples: usize,
    pub val_examples: usize,
    pub train_positive: f64,
    pub val_positive: f64,
    pub epochs: usize,
    /// Where the classifier will be saved (older streams: not said).
    #[serde(default)]
    pub out: PathBuf,
}

/// What one training step measured. A stream from another trainer (`gptdash watch`,
/// `scripts/gptdash_log.py`) may send `iter` and `loss` alone: the rest then reads as
/// NaN (not reported) and 0 tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Steps completed, counting this one (1-based).
    pub iter: u64,
    /// Mean cross-entropy per real (non-padding) target token.
    #[serde(deserialize_with = "nan_when_null")]
    pub loss: f64,
    #[serde(deserialize_with = "nan_when_null", default = "nan")]
    pub iter_ms: f64,
    #[serde(deserialize_with = "nan_when_null", default = "nan")]
    pub tokens_per_s: f64,
    #[serde(deserialize_with = "nan_when_null", default = "nan")]
    pub lr: f64,
    /// Global gradient norm before clipping.
    #[serde(deserialize_with = "nan_when_null", default = "nan")]
    pub grad_norm: f64,
    /// Real target tokens in the batch.
    #[serde(default)]
    pub tokens: usize,
    /// GPU memory in use (MiB, NVML) when the run is on CUDA and a reading was taken.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gpu_mib: Option<f64>,
}

fn nan() -> f64 {
    f64::NAN
}

/// One reading of a CUDA device (NVML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuReading {
    pub name: String,
    /// Percent of the last sample period a kernel ran.
    pub utilization: Option<u32>,
    pub memory_used_mib: f64,
    pub memory_total_mib: f64,
    pub temperature_c: Option<u32>,
    pub power_w: Option<f64>,
}

/// The GPU panel's content: a reading, or why there is none (no NVML, no device).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuStatus {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reading: Option<GpuReading>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unavailable: Option<String>,
}

/// A classifier's loss, accuracy and confusion matrix on a set of sentences.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub loss: f64,
    pub acc: f64,
    /// `confusion[true label][predicted label]`.
    pub confusion: [[usize; 2]; 2],
}

/// One fine-tuning epoch: training pass, then validation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    #[serde(deserialize_with = "nan_when_null")]
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub secs: f64,
}

/// The end of a language-model training run (another trainer's stream may leave out
/// any of it: 0 or empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainSummary {
    pub iter: u64,
    /// Mean training loss of the last 20 steps.
    pub train_loss: f64,
    /// The last evaluation's test loss.
    pub test_loss: Option<f64>,
    pub best_test_loss: Option<f64>,
    /// Real tokens over the run's busy time (steps, evaluations, saves).
    pub tokens_per_s: f64,
    /// Real tokens over the time spent in training steps only.
    pub step_tokens_per_s: f64,
    /// Seconds the run spent working (pauses excluded).
    pub train_s: f64,
    /// Seconds since the run was set up (corpus and tokenizer included).
    pub wall_s: f64,
    pub checkpoint: PathBuf,
}

/// One bin of a reliability diagram: predictions whose confidence fell in `[lo, hi)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
    /// Mean confidence (probability of the predicted class) in the bin.
    pub confidence: f64,
    /// Share of the bin's predictions that were right.
    pub accuracy: f64,
}

/// What `gptdash export` wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exported {
    /// The Hugging Face folder written.
    pub path: PathBuf,
    /// The checkpoint exported.
    pub source: PathBuf,
    pub params: i64,
    pub vocab_size: i64,
    pub block_size: i64,
    pub tied_lm_head: bool,
    pub files: Vec<String>,
    /// What a user of the folder should know (how the text was framed and prepared).
    pub notes: Vec<String>,
    /// What the checkpoint had that the folder does not (a classifier head).
    pub left_out: Vec<String>,
}

/// A validation sentence the classifier got wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mistake {
    pub text: String,
    /// The true label (0 negative, 1 positive).
    pub label: usize,
    pub p_positive: f64,
}

/// The end of a fine-tuning run: the best epoch's validation result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FinetuneSummary {
    pub best_epoch: usize,
    pub val_acc: f64,
    pub val_loss: f64,
    pub confusion: [[usize; 2]; 2],
    /// Per class (negative, positive), from the confusion matrix.
    #[serde(default)]
    pub precision: [f64; 2],
    #[serde(default)]
    pub recall: [f64; 2],
    #[serde(default)]
    pub f1: [f64; 2],
    /// Expected calibration error over 10 equal-width confidence bins.
    #[serde(default)]
    pub ece: f64,
    #[serde(default)]
    pub reliability: Vec<ReliabilityBin>,
    /// The most confident mistakes on the validation set, most confident first.
    #[serde(default)]
    pub mistakes: Vec<Mistake>,
    /// Accuracy on a whole extra split (`--eval-split validation`), when asked for.
    pub eval_acc: Option<f64>,
    pub checkpoint: PathBuf,
}

/// Model sizes in a benchmark report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchModel {
    pub n_layer: i64,
    pub n_head: i64,
    pub n_embd: i64,
    pub vocab_size: i64,
    pub block_size: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tied_lm_head: Option<bool>,
}

/// `gptdash bench generate`: decoding speed with and without the KV cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateBench {
    pub device: String,
    pub threads: usize,
    pub params: i64,
    pub model: BenchModel,
    pub prompt_tokens: usize,
    pub new_tokens: u64,
    pub grid: usize,
    pub repeats: u64,
    /// Median over the repeats, with the cache.
    pub ms_per_token: f64,
    pub ms_per_token_min: f64,
    pub ms_per_token_no_cache: f64,
    pub cache_speedup: f64,
}

/// `gptdash bench train`: training speed, memory and model FLOP utilisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainBench {
    pub device: String,
    pub threads: usize,
    pub dtype: String,
    pub step: String,
    pub loss_chunk: i64,
    pub model: BenchModel,
    pub params: i64,
    pub matmul_params: i64,
    pub batch_size: i64,
    pub warmup: u64,
    pub iters: u64,
    pub tokens_per_s: f64,
    pub ms_per_step: f64,
    pub first_loss: Option<f64>,
    #[serde(deserialize_with = "nan_when_null")]
    pub final_loss: f64,
    pub peak_rss_mib: Option<f64>,
    /// GPU memory in use after the timed steps (NVML; CUDA runs with a driver).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gpu_mib: Option<f64>,
    pub model_gflops: f64,
    pub matmul_peak_gflops: f64,
    pub mfu: f64,
}

/// A benchmark's result, tagged by `bench`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "bench", rename_all = "snake_case")]
pub enum BenchReport {
    Generate(GenerateBench),
    Train(TrainBench),
    Inspect(InspectBench),
    Wait(WaitBench),
}

/// `gptdash bench wait`: CPU time against wall time over parallel passes with serial
/// gaps between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitBench {
    /// `OMP_WAIT_POLICY` as libgomp read it (lower-cased), `default` when unset.
    pub wait_policy: String,
    pub threads: usize,
    pub rounds: u64,
    pub gap_us: u64,
    pub wall_s: f64,
    pub cpu_s: f64,
    pub cpu_per_wall: f64,
}

/// `gptdash bench inspect`: one introspecting pass, as the `inspect` report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectBench {
    pub device: String,
    pub threads: usize,
    pub params: i64,
    pub model: BenchModel,
    pub tokens: u64,
    pub repeats: u64,
    /// Median and fastest of the repeats, in milliseconds.
    pub ms: f64,
    pub ms_min: f64,
}

/// The first event of a run. Read fine-tuning first: its fields are all required, while
/// a training start may lack any (another trainer's stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RunStart {
    Finetune(Box<FinetuneInfo>),
    Train(Box<RunInfo>),
}

/// The last event of a run that ended normally (fine-tuning read first, as [`RunStart`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RunDone {
    Finetune(FinetuneSummary),
    Train(TrainSummary),
}

/// Everything a run, the worker or a headless command reports. Serialised (the `--json`
/// lines) as one object whose `event` field names the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The worker's state changed (dashboard only).
    State {
        state: WorkerState,
    },
    /// Preparing a run's data: `stage` is `read` (the corpus), `tokenizer` (BPE training),
    /// `encode` (texts tokenized, `done` of `total`) or `cache` (ids read from or written
    /// to the per-user cache).
    Prepare {
        stage: String,
        done: u64,
        total: u64,
    },
    /// A run's history begins (or a resumed run continues) with what it is.
    Run(Box<RunRecord>),
    Start(RunStart),
    /// One training step.
    Iter(StepMetrics),
    /// A reading of the run's GPU (runs on CUDA only), about once a second.
    Gpu(GpuStatus),
    /// Mean test loss after step `iter`.
    Eval {
        iter: u64,
        /// NaN in a run that diverged (written `null`).
        #[serde(deserialize_with = "nan_when_null")]
        test_loss: f64,
    },
    /// A checkpoint was written.
    Checkpoint {
        iter: u64,
        path: PathBuf,
    },
    /// One fine-tuning epoch.
    Epoch(EpochMetrics),
    /// The loss stopped being a number: the run ended at step (or epoch) `iter`, and that
    /// step's weights were not saved.
    Diverged {
        iter: u64,
        #[serde(deserialize_with = "nan_when_null")]
        loss: f64,
        message: String,
    },
    /// The run was stopped before its end (Ctrl-C, `x`): a checkpoint was written to `path`.
    Interrupted {
        iter: u64,
        path: PathBuf,
    },
    Done(RunDone),
    /// A continuation with its probabilities; `request` pairs it with the dashboard's ask.
    Generated {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        request: Option<u64>,
        #[serde(flatten)]
        generation: Generation,
    },
    GenerateFailed {
        request: u64,
        error: String,
        /// The worker holds no model yet (the error is [`crate::worker::NoModel`]'s):
        /// what the dashboard branches on, never the error's text.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        no_model: bool,
    },
    Classified {
        text: String,
        label: String,
        p_positive: f64,
        /// The sentence as the classifier reads it, when that differs from `text`.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        read_as: Option<String>,
    },
    /// What one introspecting forward pass shows (`gptdash inspect --json`).
    Inspected(Box<InspectReport>),
    InspectFailed {
        request: u64,
        error: String,
        /// The worker holds no model yet (the error is [`crate::worker::NoModel`]'s):
        /// what the dashboard branches on, never the error's text.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        no_model: bool,
    },
    /// A benchmark's result (`gptdash bench ... --json`).
    Bench(Box<BenchReport>),
    /// A Hugging Face folder was written (`gptdash export --json`).
    Exported(Box<Exported>),
    /// A checkpoint was opened: its run's history, for the Train (or Classify) tab.
    Restored(Box<RestoredRun>),
    /// One run of `gptdash runs --json`.
    RunSummary(Box<RunSummary>),
    /// A sweep's member ended (`gptdash sweep --json`): its exit code and summary.
    SweepMember {
        name: String,
        exit_code: Option<i32>,
        summary: Option<Box<RunSummary>>,
    },
    /// The sweep's results by grid point.
    SweepSummary {
        out: PathBuf,
        metric: String,
        rows: Vec<PointResult>,
    },
    /// `gptdash runs diff --json`: the settings in which the runs differ.
    RunsDiff {
        runs: Vec<String>,
        differ: Vec<DiffRow>,
    },
    Log {
        message: String,
    },
    Error {
        message: String,
    },
}

impl Event {
    pub fn prepare(stage: &str, done: u64, total: u64) -> Self {
        Event::Prepare {
            stage: stage.into(),
            done,
            total,
        }
    }

    pub(crate) fn log(message: impl Into<String>) -> Self {
        Event::Log {
            message: message.into(),
        }
    }

    pub(crate) fn error(message: impl Into<String>) -> Self {
        Event::Error {
            message: message.into(),
        }
    }

    /// The event as one JSON line (no newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            serde_json::json!({"event": "error", "message": format!("cannot serialise an event: {e}")})
                .to_string()
        })
    }
}

/// JSON has no NaN: serde_json writes a non-finite number as `null`, read back as NaN.
fn nan_when_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests;
