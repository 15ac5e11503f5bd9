//! `gptdash finetune` and `gptdash classify`: SST-2 sentiment classification.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use crate::checkpoint::load_model_with_dropout;
use crate::config::{FinetuneSettings, Settings};
use crate::data::sst2::{self, positive_share, Split};
use crate::device::{device_name, resolve_device, set_threads};
use crate::train::finetune::{
    class_probabilities, evaluate, load_classifier, ClassifierInfo, Encoder, FinetuneOptions,
    Finetuner,
};

#[derive(Debug, Clone, Args)]
pub struct FinetuneArgs {
    /// A gptdash checkpoint to start from (its own tokenizer).
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "init",
        required_unless_present = "init"
    )]
    pub checkpoint: Option<PathBuf>,
    /// GPT-2 weights: `gpt2`, `distilgpt2` (fetched through the Hugging Face cache) or a folder
    /// with config.json, model.safetensors and tokenizer.json.
    #[arg(long, value_name = "NAME|PATH")]
    pub init: Option<String>,
    /// `hub`, or train.tsv / a parquet file / a folder holding SST-2.
    #[arg(long, value_name = "PATH|hub")]
    pub sst2: Option<String>,
    /// Rows taken from the start of the train split.
    #[arg(long, value_parser = clap::value_parser!(u64).range(4..))]
    pub samples: Option<u64>,
    #[arg(long, value_parser = super::positive_f64)]
    pub val_fraction: Option<f64>,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: Option<u64>,
    #[arg(long, value_parser = super::positive_f64, allow_hyphen_values = true)]
    pub lr: Option<f64>,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    #[arg(long, value_parser = super::non_negative_f64)]
    pub weight_decay: Option<f64>,
    #[arg(long, value_parser = super::non_negative_f64)]
    pub dropout: Option<f64>,
    /// Train the classifier head only.
    #[arg(long)]
    pub freeze_body: bool,
    /// Weight of an auxiliary language-modelling loss while fine-tuning (0 = off).
    #[arg(long, value_parser = super::non_negative_f64)]
    pub lm_weight: Option<f64>,
    /// Epochs without a better validation loss before stopping (0 = never).
    #[arg(long)]
    pub patience: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also evaluate on a whole split: `validation`.
    #[arg(long, value_name = "validation")]
    pub eval_split: Option<String>,
    /// Where the fine-tuned classifier goes (default: <source>-sst2 under checkpoints/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub json: bool,
}

fn emit(json_mode: bool, value: serde_json::Value, human: String) {
    if json_mode {
        println!("{value}");
    } else {
        println!("{human}");
    }
}

impl FinetuneArgs {
    /// Applies the flags on top of the `[finetune]` settings.
    fn apply(&self, f: &mut FinetuneSettings) {
        if let Some(v) = self.samples {
            f.samples = v as usize;
        }
        if let Some(v) = self.val_fraction {
            f.val_fraction = v;
        }
        if let Some(v) = self.epochs {
            f.epochs = v as usize;
        }
        if let Some(v) = self.lr {
            f.learning_rate = v;
        }
        if let Some(v) = self.batch_size {
            f.batch_size = v as i64;
        }
        if let Some(v) = self.weight_decay {
            f.weight_decay = v;
        }
        f.freeze_body |= self.freeze_body;
        if let Some(v) = self.seed {
            f.seed = v;
        }
        if let Some(v) = self.patience {
            f.patience = v;
        }
        if let Some(v) = self.lm_weight {
            f.lm_weight = v;
        }
        if self.dropout.is_some() {
            f.dropout = self.dropout;
        }
        if let Some(v) = &self.sst2 {
            f.sst2 = v.clone();
        }
    }
}

pub fn run(args: &FinetuneArgs, settings: Settings) -> Result<()> {
    let mut f = settings.finetune.clone();
    args.apply(&mut f);
    if !(f.val_fraction > 0.0 && f.val_fraction < 1.0) {
        bail!("--val-fraction must be in (0, 1), got {}", f.val_fraction);
    }
    if f.dropout.is_some_and(|d| d >= 1.0) {
        bail!("--dropout must be in [0, 1)");
    }
    let eval_validation = match args.eval_split.as_deref() {
        None => false,
        Some("validation") => true,
        Some(other) => {
            bail!("--eval-split: unknown split {other:?}; the one supported is `validation`")
        }
    };
    let options = FinetuneOptions::from(&f);
    let (samples, dropout) = (f.samples, f.dropout);

    // Data: the first `samples` rows, then a stratified split.
    let sst2::ProtocolData {
        data_dir,
        train_file,
        train: train_rows,
        val: val_rows,
    } = sst2::load_protocol(&f, eval_validation)?;

    // Model.
    let device = resolve_device(args.device.as_deref().unwrap_or(&settings.train.device))
        .context("--device")?;
    let threads = set_threads(settings.train.threads);
    let (model_dir, source_name) = match (&args.checkpoint, &args.init) {
        (Some(dir), _) => (dir.clone(), dir_name(dir)),
        (None, Some(init)) if Path::new(init).is_dir() => {
            (PathBuf::from(init), dir_name(Path::new(init)))
        }
        (None, Some(name)) => (crate::data::hub::fetch_gpt2(name)?, name.replace('/', "-")),
        (None, None) => bail!("give --checkpoint DIR or --init gpt2|distilgpt2|PATH"),
    };
    let loaded = load_model_with_dropout(&model_dir, device, dropout)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("checkpoints").join(format!("{source_name}-sst2")));

    emit(
        args.json,
        json!({"event": "start", "device": device_name(device), "threads": threads, "model": model_dir.display().to_string(),
               "params": loaded.config.parameters, "data": train_file.display().to_string(), "samples": samples,
               "train_examples": train_rows.len(), "val_examples": val_rows.len(),
               "train_positive": positive_share(&train_rows), "val_positive": positive_share(&val_rows)}),
        format!(
            "SST-2: first {samples} rows of {}: train {} ({:.1}% positive), validation {} ({:.1}% positive)\nmodel: {} ({:.2}M parameters) on {}, {threads} threads",
            train_file.display(),
            train_rows.len(),
            100.0 * positive_share(&train_rows),
            val_rows.len(),
            100.0 * positive_share(&val_rows),
            model_dir.display(),
            loaded.config.parameters as f64 / 1e6,
            device_name(device)
        ),
    );

    let mut tuner = Finetuner::new(loaded, &train_rows, &val_rows, options.clone())?;
    while !tuner.is_done() {
        let m = tuner.run_epoch()?;
        emit(
            args.json,
            json!({"event": "epoch", "epoch": m.epoch, "train_loss": m.train_loss, "train_acc": m.train_acc,
                   "val_loss": m.val_loss, "val_acc": m.val_acc, "secs": m.secs}),
            format!(
                "epoch {}/{}: train loss {:.4} acc {:.3} | val loss {:.4} acc {:.3} | {:.1}s",
                m.epoch, options.epochs, m.train_loss, m.train_acc, m.val_loss, m.val_acc, m.secs
            ),
        );
    }
    let Some((best_epoch, val)) = tuner.restore_best() else {
        bail!("no epoch ran")
    };
    let eval = if eval_validation {
        let file = sst2::locate(&data_dir, Split::Validation).context("--eval-split validation")?;
        let rows = sst2::read_file(&file)?;
        let examples = Encoder::for_model(&tuner.loaded).examples(&rows)?;
        Some(evaluate(&tuner.loaded.model, &examples, 64))
    } else {
        None
    };
    let info = ClassifierInfo {
        source: model_dir.display().to_string(),
        best_epoch,
        val,
        train_examples: train_rows.len(),
        val_examples: val_rows.len(),
        labels: ["negative".into(), "positive".into()],
    };
    tuner.save(&out, &info)?;
    let c = val.confusion;
    emit(
        args.json,
        json!({"event": "done", "val_acc": val.acc, "val_loss": val.loss, "best_epoch": best_epoch,
               "eval_acc": eval.map(|e| e.acc), "confusion": c, "checkpoint": out.display().to_string()}),
        format!(
            "best epoch {best_epoch}: validation accuracy {:.4} (loss {:.4}){}\nconfusion (rows: true negative/positive, columns: predicted): [[{}, {}], [{}, {}]]\nclassifier saved to {} (curves in {}/curves.csv)",
            val.acc,
            val.loss,
            eval.map(|e| format!(", whole validation split {:.4}", e.acc)).unwrap_or_default(),
            c[0][0],
            c[0][1],
            c[1][0],
            c[1][1],
            out.display(),
            out.display()
        ),
    );
    Ok(())
}

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

#[derive(Debug, Clone, Args)]
pub struct ClassifyArgs {
    /// A classifier written by `gptdash finetune`.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// The sentence to classify.
    #[arg(long, allow_hyphen_values = true)]
    pub text: String,
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn classify(args: &ClassifyArgs, settings: Settings) -> Result<()> {
    if args.text.trim().is_empty() {
        bail!("--text is empty; give a sentence to classify");
    }
    let device = resolve_device(args.device.as_deref().unwrap_or(&settings.train.device))
        .context("--device")?;
    set_threads(settings.train.threads);
    let (loaded, info) = load_classifier(&args.checkpoint, device)?;
    let probs = class_probabilities(&loaded, &args.text)?;
    let p_positive = probs.get(1).copied().unwrap_or(0.0);
    let label = if p_positive >= 0.5 {
        &info.labels[1]
    } else {
        &info.labels[0]
    };
    let text = if args.json {
        json!({"text": args.text, "label": label, "p_positive": p_positive}).to_string() + "\n"
    } else {
        format!("{label} (P(positive) = {p_positive:.4})\n")
    };
    super::print_stdout(&text)
}
