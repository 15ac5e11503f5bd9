//! `gptdash train`: the training loop driven from the command line, with a progress bar
//! or JSON lines.
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::config::{DataMode, Dtype, Settings};
use crate::device::{device_name, set_threads};
use crate::train::lm::{LmTrainer, StepMetrics};

#[derive(Debug, Clone, Default, Args)]
pub struct TrainArgs {
    /// `small` (built-in corpus) or a path to a UTF-8 text file.
    #[arg(long, value_name = "small|PATH")]
    pub corpus: Option<String>,
    /// Model preset: gpt-nano, gpt-micro, gpt-mini, gpt2, or custom (with the sizes below).
    #[arg(long, value_name = "PRESET")]
    pub model: Option<String>,
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub n_layer: Option<i64>,
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub n_head: Option<i64>,
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub n_embd: Option<i64>,
    #[arg(long, value_parser = clap::value_parser!(i64).range(2..))]
    pub block_size: Option<i64>,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_iters: Option<u64>,
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub batch_size: Option<i64>,
    /// Peak learning rate.
    #[arg(long, value_parser = super::positive_f64, allow_hyphen_values = true)]
    pub lr: Option<f64>,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub eval_interval: Option<u64>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// libtorch CPU threads (0 = one per physical core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Precision of the blocks' matrix products: f32, or bf16 (f32 master weights).
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// `sentences` (padded, one per example) or `pack` (block-size chunks).
    #[arg(long, value_enum)]
    pub mode: Option<DataMode>,
    /// Lower-case every sentence (e.g. to match lower-cased SST-2).
    #[arg(long)]
    pub lowercase: bool,
    /// Upper bound on the trained BPE vocabulary.
    #[arg(long, value_parser = clap::value_parser!(u64).range(260..))]
    pub vocab_size: Option<u64>,
    /// Use this tokenizer.json instead of training a BPE on the corpus.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Checkpoint directory (default: checkpoints/<corpus name>, or the --resume directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue training from this checkpoint directory.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// One JSON object per line on stdout instead of a progress bar.
    #[arg(long)]
    pub json: bool,
}

impl TrainArgs {
    /// Flags that change the model or data; they cannot be combined with --resume.
    fn model_or_data_flags(&self) -> Vec<&'static str> {
        let mut flags = Vec::new();
        let checks: [(&'static str, bool); 11] = [
            ("--corpus", self.corpus.is_some()),
            ("--model", self.model.is_some()),
            ("--n-layer", self.n_layer.is_some()),
            ("--n-head", self.n_head.is_some()),
            ("--n-embd", self.n_embd.is_some()),
            ("--block-size", self.block_size.is_some()),
            ("--mode", self.mode.is_some()),
            ("--tokenizer", self.tokenizer.is_some()),
            ("--seed", self.seed.is_some()),
            ("--lowercase", self.lowercase),
            ("--vocab-size", self.vocab_size.is_some()),
        ];
        for (flag, set) in checks {
            if set {
                flags.push(flag);
            }
        }
        flags
    }

    /// Applies the training-loop flags (those allowed with --resume too).
    fn apply_loop_flags(&self, s: &mut Settings) {
        if let Some(v) = self.max_iters {
            s.train.max_iters = v;
        }
        if let Some(v) = self.batch_size {
            s.train.batch_size = v;
        }
        if let Some(v) = self.lr {
            s.train.learning_rate = v;
            s.train.min_lr = s.train.min_lr.min(v);
        }
        if let Some(v) = self.eval_interval {
            s.train.eval_interval = v;
        }
        if let Some(v) = &self.device {
            s.train.device = v.clone();
        }
        if let Some(v) = self.threads {
            s.train.threads = v;
        }
        if let Some(v) = self.dtype {
            s.train.dtype = v;
        }
    }

    /// Applies every flag on top of the settings file.
    pub fn apply(&self, s: &mut Settings) {
        if let Some(v) = &self.corpus {
            s.data.corpus = v.clone();
        }
        if let Some(v) = &self.model {
            s.model.preset = v.clone();
        }
        if self.n_layer.is_some() {
            s.model.n_layer = self.n_layer;
        }
        if self.n_head.is_some() {
            s.model.n_head = self.n_head;
        }
        if self.n_embd.is_some() {
            s.model.n_embd = self.n_embd;
        }
        if let Some(v) = self.block_size {
            s.model.block_size = v;
        }
        if let Some(v) = self.seed {
            s.train.seed = v;
        }
        if let Some(v) = self.mode {
            s.data.mode = v;
        }
        if let Some(v) = &self.tokenizer {
            s.data.tokenizer = Some(v.clone());
        }
        if self.lowercase {
            s.data.lowercase = true;
        }
        if let Some(v) = self.vocab_size {
            s.data.vocab_size = v as usize;
        }
        self.apply_loop_flags(s);
    }
}

/// Runs `gptdash train`.
pub fn run(args: &TrainArgs, settings: Settings) -> Result<()> {
    let started = Instant::now();
    let mut trainer = match &args.resume {
        Some(dir) => {
            let flags = args.model_or_data_flags();
            if !flags.is_empty() {
                bail!("{} cannot be combined with --resume: the model, data and seed come from the checkpoint", flags.join(", "));
            }
            LmTrainer::resume(dir, |s| args.apply_loop_flags(s))?
        }
        None => {
            let mut settings = settings;
            args.apply(&mut settings);
            settings
                .validate()
                .map_err(|e| e.context("invalid settings (config file and flags)"))?;
            LmTrainer::new(settings)?
        }
    };
    let threads = set_threads(trainer.settings.train.threads);
    let out = args
        .out
        .clone()
        .or_else(|| args.resume.clone())
        .unwrap_or_else(|| PathBuf::from("checkpoints").join(&trainer.corpus_name));
    let report = Reporter::new(args.json, &trainer);
    report.start(&trainer, threads, &out);

    // Ctrl-C finishes the current step, saves a checkpoint and exits; a second one quits at once.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }

    let mut recent = Vec::new();
    let mut tokens = 0usize;
    let mut step_secs = 0.0;
    let loop_start = Instant::now();
    let mut last_eval = None;
    while !trainer.is_done() && !interrupted.load(Ordering::SeqCst) {
        let m = trainer.step()?;
        if !m.loss.is_finite() {
            bail!(
                "training diverged: loss is {} at step {}; try a lower --lr",
                m.loss,
                m.iter
            );
        }
        tokens += m.tokens;
        step_secs += m.iter_ms / 1e3;
        recent.push(m.loss);
        report.iter(&m, trainer.settings.train.max_iters);
        if trainer.eval_due() {
            let test_loss = trainer.evaluate()?;
            last_eval = Some(test_loss);
            report.eval(m.iter, test_loss);
        }
        if trainer.save_due() && !trainer.is_done() {
            trainer.save(&out)?;
            report.checkpoint(m.iter, &out);
        }
    }
    trainer.save(&out)?;
    report.checkpoint(trainer.step, &out);
    if interrupted.load(Ordering::SeqCst) {
        report.interrupted(trainer.step, &out);
    }
    let tail = &recent[recent.len().saturating_sub(20)..];
    let train_loss = tail.iter().sum::<f64>() / tail.len().max(1) as f64;
    let train_secs = loop_start.elapsed().as_secs_f64();
    report.done(json!({
        "event": "done",
        "iter": trainer.step,
        "train_loss": train_loss,
        "test_loss": last_eval,
        "best_test_loss": trainer.best_test_loss,
        "tokens_per_s": tokens as f64 / train_secs.max(1e-9),
        "step_tokens_per_s": tokens as f64 / step_secs.max(1e-9),
        "train_s": train_secs,
        "wall_s": started.elapsed().as_secs_f64(),
        "checkpoint": out.display().to_string(),
    }));
    Ok(())
}

/// Human (progress bar) or JSON-lines output of a training run.
struct Reporter {
    json: bool,
    bar: Option<ProgressBar>,
}

impl Reporter {
    fn new(json: bool, trainer: &LmTrainer) -> Self {
        let bar = (!json).then(|| {
            let bar = ProgressBar::new(trainer.settings.train.max_iters);
            bar.set_style(
                ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} {msg} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("█▉▊▋▌▍▎▏ "),
            );
            bar.set_position(trainer.step);
            bar
        });
        Self { json, bar }
    }

    fn line(&self, value: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }

    fn say(&self, text: String) {
        // Printed above the bar (and printed at all when stderr is not a terminal,
        // where the bar itself stays hidden).
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{text}")),
            None => println!("{text}"),
        }
    }

    fn start(&self, t: &LmTrainer, threads: usize, out: &std::path::Path) {
        let c = t.model.config;
        let device = device_name(t.device);
        if self.json {
            self.line(json!({
                "event": "start",
                "device": device,
                "threads": threads,
                "dtype": t.settings.train.dtype.name(),
                "params": t.parameters(),
                "vocab_size": c.vocab_size,
                "train_examples": t.train.len(),
                "test_examples": t.test.len(),
                "train_tokens": t.train.target_tokens(),
                "corpus": t.corpus_spec,
                "model": {"n_layer": c.n_layer, "n_head": c.n_head, "n_embd": c.n_embd, "block_size": c.block_size, "dropout": c.dropout},
                "max_iters": t.settings.train.max_iters,
                "batch_size": t.settings.train.batch_size,
                "start_iter": t.step,
                "out": out.display().to_string(),
            }));
        } else {
            self.say(format!(
                "device {device}, {threads} CPU threads, {} matrix products",
                t.settings.train.dtype.name()
            ));
            self.say(format!(
                "corpus {}: {} train / {} test sentences, {} / {} examples ({} mode), {} train tokens",
                t.corpus_name,
                t.train_sentences,
                t.test_sentences,
                t.train.len(),
                t.test.len(),
                match t.settings.data.mode {
                    DataMode::Sentences => "sentences",
                    DataMode::Pack => "pack",
                },
                t.train.target_tokens()
            ));
            self.say(format!(
                "model: {} layers, {} heads, {} dims, block {}, vocab {} — {:.2}M parameters",
                c.n_layer,
                c.n_head,
                c.n_embd,
                c.block_size,
                c.vocab_size,
                t.parameters() as f64 / 1e6
            ));
            if t.step > 0 {
                self.say(format!("resuming at step {}", t.step));
            }
        }
    }

    fn iter(&self, m: &StepMetrics, max_iters: u64) {
        if self.json {
            self.line(json!({
                "event": "iter", "iter": m.iter, "loss": m.loss, "iter_ms": m.iter_ms,
                "tokens_per_s": m.tokens_per_s, "lr": m.lr, "grad_norm": m.grad_norm,
            }));
        } else if let Some(bar) = &self.bar {
            bar.set_position(m.iter.min(max_iters));
            bar.set_message(format!(
                "loss {:.4} | {:.0} tok/s | lr {:.2e}",
                m.loss, m.tokens_per_s, m.lr
            ));
        }
    }

    fn eval(&self, iter: u64, test_loss: f64) {
        if self.json {
            self.line(json!({"event": "eval", "iter": iter, "test_loss": test_loss}));
        } else {
            self.say(format!("step {iter}: test loss {test_loss:.4}"));
        }
    }

    fn checkpoint(&self, iter: u64, path: &std::path::Path) {
        if self.json {
            self.line(
                json!({"event": "checkpoint", "iter": iter, "path": path.display().to_string()}),
            );
        } else {
            self.say(format!(
                "step {iter}: checkpoint saved to {}",
                path.display()
            ));
        }
    }

    fn interrupted(&self, iter: u64, path: &std::path::Path) {
        if self.json {
            self.line(
                json!({"event": "interrupted", "iter": iter, "path": path.display().to_string()}),
            );
        } else {
            self.say(format!(
                "interrupted at step {iter}; continue with: gptdash train --resume {}",
                path.display()
            ));
        }
    }

    fn done(&self, summary: serde_json::Value) {
        if self.json {
            self.line(summary);
            return;
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let f = |k: &str| {
            summary[k]
                .as_f64()
                .map(|x| format!("{x:.4}"))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "done: {} steps, train loss {} (mean of last 20), test loss {}, {:.0} tokens/s, {:.1}s",
            summary["iter"],
            f("train_loss"),
            f("test_loss"),
            summary["tokens_per_s"].as_f64().unwrap_or(0.0),
            summary["wall_s"].as_f64().unwrap_or(0.0)
        );
    }
}
