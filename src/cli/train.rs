//! `gptdash train`: the training loop driven from the command line, with a progress bar
//! or JSON lines.
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{DataMode, Dtype, Settings};
use crate::output;
use crate::protocol::{Event, RunDone, RunInfo, RunStart};
use crate::train::lm::LmTrainer;
use crate::train::plan::{Output, Plan};

#[derive(Debug, Clone, Default, Args)]
pub struct TrainArgs {
    /// `small` (built-in corpus), a corpus name from `gptdash data list` (imdb,
    /// tinystories, ...: downloaded from the Hugging Face hub the first time), or a path
    /// to a UTF-8 text file (`./imdb` for a file called like a corpus).
    #[arg(long, value_name = "small|NAME|PATH")]
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
    /// `sentences` (padded, one per example), `pack` (block-size chunks) or `documents`
    /// (one document per line, framed by <|endoftext|>, packed).
    #[arg(long, value_enum)]
    pub mode: Option<DataMode>,
    /// Lower-case every sentence (e.g. to match lower-cased SST-2).
    #[arg(long)]
    pub lowercase: bool,
    /// Split punctuation and clitics Penn-Treebank style, as SST-2's text is.
    #[arg(long)]
    pub ptb_split: bool,
    /// Upper bound on the trained BPE vocabulary.
    #[arg(long, value_parser = clap::value_parser!(u64).range(260..))]
    pub vocab_size: Option<u64>,
    /// Use this tokenizer.json instead of training a BPE on the corpus.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Checkpoint directory: new, empty, or (with --overwrite) a gptdash checkpoint to
    /// replace. Default: a new folder checkpoints/<corpus name>-<YYYYMMDD>-<n>, with
    /// checkpoints/<corpus name> linked to it; with --resume, the resumed folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Let --out replace the gptdash checkpoint it holds (never a folder with other files).
    #[arg(long, requires = "out")]
    pub overwrite: bool,
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
        let checks: [(&'static str, bool); 12] = [
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
            ("--ptb-split", self.ptb_split),
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
    pub(crate) fn apply(&self, s: &mut Settings) {
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
            s.data.mode = Some(v);
        }
        if let Some(v) = &self.tokenizer {
            s.data.tokenizer = Some(v.clone());
        }
        if self.lowercase {
            s.data.lowercase = true;
        }
        if self.ptb_split {
            s.data.ptb_split = true;
        }
        if let Some(v) = self.vocab_size {
            s.data.vocab_size = v as usize;
        }
        self.apply_loop_flags(s);
    }
}

/// How a run begins: from a checkpoint, or from its plan.
enum Start<'a> {
    Resume(&'a std::path::Path),
    Fresh(Box<Plan>),
}

/// Runs `gptdash train`: advances the run and shows its events.
pub fn run(args: &TrainArgs, loaded: super::Loaded) -> Result<()> {
    crate::interrupt::install()?;
    // A fresh run's settings (the file with the flags on top) are checked first, before
    // anything is written; a resumed run's come from its checkpoint.
    let start = match &args.resume {
        Some(dir) => Start::Resume(dir),
        None => {
            let mut settings = loaded.settings;
            args.apply(&mut settings);
            let output = match &args.out {
                Some(out) => Output::Folder(out.clone()),
                None => Output::Fresh(output::DEFAULT_PARENT.into()),
            };
            let origin = format!("{} and flags", loaded.origin);
            Start::Fresh(Box::new(Plan::new(settings, output, &origin)?))
        }
    };
    // Where the run will write is settled before any work: a folder it would destroy is
    // refused now, not after training.
    let _out_lock = match (&args.out, &args.resume) {
        (Some(out), Some(resumed)) if output::same_folder(out, resumed) => {
            output::preflight(out, "--out")?;
            None
        }
        (Some(out), _) => {
            // Checked, locked (no other gptdash writes it from now on), checked again.
            output::check_target(out, "--out", args.overwrite)?;
            let lock = crate::checkpoint::OutputLock::acquire(out)?;
            output::check_target(out, "--out", args.overwrite)?;
            Some(lock)
        }
        (None, Some(resumed)) => {
            output::preflight(resumed, "--resume")?;
            None
        }
        (None, None) => None,
    };
    let mut run = match start {
        Start::Resume(dir) => {
            let flags = args.model_or_data_flags();
            if !flags.is_empty() {
                bail!("{} cannot be combined with --resume: the model, data and seed come from the checkpoint", flags.join(", "));
            }
            let mut run = LmTrainer::resume(dir, |s| args.apply_loop_flags(s))?;
            if let Some(out) = &args.out {
                // Another folder (or the resumed one again: its lock is counted).
                run.set_out(out.clone())?;
            }
            run
        }
        Start::Fresh(plan) => {
            let bar = (!args.json).then(|| {
                let bar = ProgressBar::new(1);
                bar.set_style(bar_style("{pos}/{len}"));
                bar
            });
            let mut stage_now = String::new();
            let run = LmTrainer::new_with_progress(*plan, &mut |event| match &bar {
                None => print_event(&event),
                Some(bar) => match event {
                    Event::Prepare { stage, done, total } => {
                        if stage != stage_now {
                            // Downloads (and the streaming stages) count bytes.
                            let bytes = matches!(stage.as_str(), "download" | "verify")
                                || (total > 1 << 20 && matches!(stage.as_str(), "read" | "encode"));
                            bar.set_style(bar_style(if bytes {
                                "{bytes}/{total_bytes} {bytes_per_sec} {eta}"
                            } else {
                                "{pos}/{len}"
                            }));
                            stage_now = stage.clone();
                        }
                        bar.set_message(stage);
                        bar.set_length(total);
                        bar.set_position(done);
                    }
                    // A line for the log (a damaged cache entry rebuilt), above the bar.
                    Event::Log { message } => bar.suspend(|| println!("{message}")),
                    _ => {}
                },
            });
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            run?
        }
    };
    let report = Reporter::new(args.json, run.settings.train.max_iters, run.step);
    report.show(&run.begin()?);

    // A signal (Ctrl-C, SIGTERM, SIGHUP, SIGQUIT) finishes the current step, saves a
    // checkpoint and exits with 128 + its number; a second one quits at once.
    while !run.is_done() && crate::interrupt::requested().is_none() {
        for event in run.advance()? {
            report.show(&event);
            if let Event::Diverged { message, .. } = event {
                bail!("{message}");
            }
        }
    }
    if let Some(signal) = crate::interrupt::requested() {
        if !run.is_done() {
            for event in run.interrupt()? {
                report.show(&event);
            }
        }
        return Err(crate::interrupt::Interrupted(signal).into());
    }
    Ok(())
}

/// The progress bar's style, with `counts` after the bar.
fn bar_style(counts: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "preparing the corpus: {{msg}} {{bar:30.cyan/blue}} {counts}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// One event as a JSON line on stdout, flushed.
fn print_event(event: &Event) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", event.to_json());
    let _ = out.flush();
}

/// Human (progress bar) or JSON-lines output of a training run's events.
struct Reporter {
    json: bool,
    bar: Option<ProgressBar>,
    max_iters: u64,
}

impl Reporter {
    fn new(json: bool, max_iters: u64, start: u64) -> Self {
        let bar = (!json).then(|| {
            let bar = ProgressBar::new(max_iters);
            bar.set_style(
                ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} {msg} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("█▉▊▋▌▍▎▏ "),
            );
            bar.set_position(start);
            bar
        });
        Self {
            json,
            bar,
            max_iters,
        }
    }

    fn say(&self, text: String) {
        // Printed above the bar (and printed at all when stderr is not a terminal,
        // where the bar itself stays hidden).
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{text}")),
            None => println!("{text}"),
        }
    }

    fn show(&self, event: &Event) {
        if self.json {
            print_event(event);
            return;
        }
        match event {
            Event::Start(RunStart::Train(info)) => self.start(info),
            Event::Iter(m) => {
                if let Some(bar) = &self.bar {
                    bar.set_position(m.iter.min(self.max_iters));
                    bar.set_message(format!(
                        "loss {:.4} | {:.0} tok/s | lr {:.2e}",
                        m.loss, m.tokens_per_s, m.lr
                    ));
                }
            }
            Event::Eval { iter, test_loss } => {
                self.say(format!("step {iter}: test loss {test_loss:.4}"))
            }
            Event::Checkpoint { iter, path } => self.say(format!(
                "step {iter}: checkpoint saved to {}",
                path.display()
            )),
            Event::Interrupted { iter, path } => self.say(format!(
                "interrupted at step {iter}; continue with: gptdash train --resume {}",
                path.display()
            )),
            Event::Done(RunDone::Train(s)) => {
                if let Some(bar) = &self.bar {
                    bar.finish_and_clear();
                }
                let f = |x: Option<f64>| x.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
                println!(
                    "done: {} steps, train loss {} (mean of last 20), test loss {}, {:.0} tokens/s, {:.1}s",
                    s.iter,
                    f(Some(s.train_loss)),
                    f(s.test_loss),
                    s.tokens_per_s,
                    s.wall_s
                );
            }
            _ => {}
        }
    }

    fn start(&self, info: &RunInfo) {
        let m = &info.model;
        self.say(format!(
            "device {}, {} CPU threads, {} matrix products",
            info.device, info.threads, info.dtype
        ));
        self.say(format!(
            "corpus {}: {} train / {} test {}, {} / {} examples ({} mode), {} train tokens",
            info.corpus_name,
            info.train_sentences,
            info.test_sentences,
            if info.mode == DataMode::Documents {
                "documents"
            } else {
                "sentences"
            },
            info.train_examples,
            info.test_examples,
            info.mode.name(),
            info.train_tokens
        ));
        self.say(format!(
            "model: {} layers, {} heads, {} dims, block {}, vocab {} — {:.2}M parameters",
            m.n_layer,
            m.n_head,
            m.n_embd,
            m.block_size,
            info.vocab_size,
            info.params as f64 / 1e6
        ));
        if info.start_iter > 0 {
            self.say(format!("resuming at step {}", info.start_iter));
        }
        self.say(format!("saving checkpoints to {}", info.out.display()));
    }
}
