//! `gptdash finetune` and `gptdash classify`: SST-2 sentiment classification.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::budget::Seat;
use crate::checkpoint::{load_model_with_dropout, Base};
use crate::classifier::{load_classifier, p_positive, Encoder, Example};
use crate::config::{FinetuneSettings, Settings};
use crate::data::sst2::{self, Split};
use crate::device::{device_name, resolve_device, set_inference_threads, set_threads};
use crate::output;
use crate::protocol::{Event, RunDone, RunStart};
use crate::train::finetune::{FinetuneOptions, Finetuner};

#[derive(Debug, Clone, Args)]
pub struct FinetuneArgs {
    /// A gptdash checkpoint to start from (its own tokenizer).
    /// Without it or --init: `[finetune] base` of the settings.
    #[arg(long, value_name = "DIR", conflicts_with = "init")]
    pub checkpoint: Option<PathBuf>,
    /// GPT-2 weights: `gpt2`, `distilgpt2`, `owner/name` (fetched through the Hugging Face
    /// cache) or a folder with config.json, model.safetensors and tokenizer.json.
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
    /// `constant`, or `linear` (warm-up over 6% of the batches, then linear decay to 0).
    #[arg(long, value_enum)]
    pub schedule: Option<crate::config::Schedule>,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    #[arg(long, value_parser = super::non_negative_f64, allow_hyphen_values = true)]
    pub weight_decay: Option<f64>,
    #[arg(long, value_parser = super::non_negative_f64, allow_hyphen_values = true)]
    pub dropout: Option<f64>,
    /// Train the classifier head only.
    #[arg(long)]
    pub freeze_body: bool,
    /// Keep the token and position embeddings as pretrained.
    #[arg(long)]
    pub freeze_embeddings: bool,
    /// Weight of an auxiliary language-modelling loss while fine-tuning (0 = off, at most 10).
    #[arg(long, value_parser = lm_weight, allow_hyphen_values = true)]
    pub lm_weight: Option<f64>,
    /// What the classifier reads: the last token's hidden state, the mean over tokens,
    /// or `prompt`: the LM's next word after --template, between --label-words.
    #[arg(long, value_enum)]
    pub readout: Option<crate::config::Readout>,
    /// With `--readout prompt`: the text appended to each sentence.
    #[arg(long, value_name = "TEXT")]
    pub template: Option<String>,
    /// With `--readout prompt`: the negative and the positive word, e.g. `terrible,great`.
    #[arg(long, value_name = "NEG,POS", value_parser = label_words)]
    pub label_words: Option<[String; 2]>,
    /// The epoch to end with: `best` (lowest validation loss) or `last`.
    #[arg(long, value_enum)]
    pub keep: Option<crate::config::Keep>,
    /// Epochs without a better validation loss before stopping (0 = never).
    #[arg(long)]
    pub patience: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seed of the stratified split (default: --seed); fix it to compare seeds on one
    /// validation set.
    #[arg(long)]
    pub split_seed: Option<u64>,
    /// Also evaluate on a whole split: `validation`.
    #[arg(long, value_name = "validation")]
    pub eval_split: Option<String>,
    /// More labelled rows for training only (TSV `sentence<TAB>label`, or parquet)
    #[arg(long, value_name = "PATH")]
    pub extra_train: Option<PathBuf>,
    /// Where the fine-tuned classifier goes: a new or empty folder, or (with
    /// --overwrite) a gptdash checkpoint to replace; never the model fine-tuned. Default:
    /// a new folder checkpoints/<source>-sst2-<YYYYMMDD>-<n>, linked from
    /// checkpoints/<source>-sst2.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Let --out replace the gptdash checkpoint it holds (never a folder with other files).
    #[arg(long, requires = "out")]
    pub overwrite: bool,
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// `--lm-weight`: a finite number in [0, MAX_LM_WEIGHT].
fn lm_weight(text: &str) -> Result<f64, String> {
    let max = crate::config::MAX_LM_WEIGHT;
    match super::non_negative_f64(text)? {
        x if x <= max => Ok(x),
        _ => Err(format!("must be in [0, {max}]")),
    }
}

/// `NEG,POS`: two different, non-empty words.
fn label_words(text: &str) -> Result<[String; 2], String> {
    match text.split(',').map(str::trim).collect::<Vec<_>>()[..] {
        [neg, pos] if !neg.is_empty() && !pos.is_empty() && neg != pos => {
            Ok([neg.to_string(), pos.to_string()])
        }
        _ => Err(format!(
            "{text:?}: want two different words, negative first, e.g. terrible,great"
        )),
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
        if let Some(v) = self.schedule {
            f.schedule = v;
        }
        if let Some(v) = self.batch_size {
            f.batch_size = v as i64;
        }
        if let Some(v) = self.weight_decay {
            f.weight_decay = v;
        }
        f.freeze_body |= self.freeze_body;
        f.freeze_embeddings |= self.freeze_embeddings;
        if let Some(v) = self.seed {
            f.seed = v;
        }
        if self.split_seed.is_some() {
            f.split_seed = self.split_seed;
        }
        if let Some(v) = self.patience {
            f.patience = v;
        }
        if let Some(v) = self.lm_weight {
            f.lm_weight = v;
        }
        if let Some(v) = self.readout {
            f.readout = v;
        }
        if let Some(v) = self.keep {
            f.keep = v;
        }
        if let Some(v) = &self.template {
            f.template = v.clone();
        }
        if let Some(v) = &self.label_words {
            f.label_words = v.clone();
        }
        if self.dropout.is_some() {
            f.dropout = self.dropout;
        }
        if let Some(v) = &self.sst2 {
            f.sst2 = v.clone();
        }
        if let Some(v) = &self.extra_train {
            f.extra_train = Some(v.display().to_string());
        }
    }
}

pub fn run(args: &FinetuneArgs, settings: Settings) -> Result<()> {
    crate::interrupt::install()?;
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
    // The base first: a missing model fails before any data is read.
    let (base, flag) = match (&args.checkpoint, &args.init) {
        (Some(dir), _) => (Base::Folder(dir.clone()), "--checkpoint"),
        (None, Some(init)) => (Base::parse(init), "--init"),
        (None, None) => (Base::parse(&f.base), "finetune.base"),
    };
    let Some((model_dir, source_name)) = base.locate().context(flag)? else {
        bail!("nothing to fine-tune: give --checkpoint DIR or --init gpt2|distilgpt2|PATH (or set base in [finetune] of config.toml)");
    };
    // The run's record names the model it started from, however it was given (runs that
    // differ only by it are not seeds of one grid point).
    match (&args.checkpoint, &args.init) {
        (Some(dir), _) => f.base = dir.display().to_string(),
        (None, Some(init)) => f.base.clone_from(init),
        (None, None) => {}
    }
    // The output next, before any work: never the model itself, never a user's folder.
    let (out, claim) = match &args.out {
        Some(out) => {
            if output::same_folder(out, &model_dir) || output::inside(out, &model_dir) {
                bail!(
                    "--out {}: is, or is inside, the model being fine-tuned ({flag}); fine-tuning never writes into its base, so its optimizer state and training record stay; choose another folder",
                    out.display()
                );
            }
            // Checked, locked (no other gptdash writes it from now on), checked again.
            output::check_target_for(out, "--out", args.overwrite, false)?;
            let lock = crate::checkpoint::OutputLock::acquire(out)?;
            output::check_target_for(out, "--out", args.overwrite, false)?;
            (out.clone(), Some((lock, None)))
        }
        None => {
            let stem = format!("{}-sst2", file_safe(&source_name));
            let parent = Path::new(crate::output::DEFAULT_PARENT);
            let (dir, lock) = output::claim_fresh(parent, &stem)?;
            (dir, Some((lock, Some(parent.join(stem)))))
        }
    };
    // Data: the first `samples` rows, then a stratified split.
    let data = sst2::load_protocol(&f, eval_validation)?;

    // Model.
    let device = resolve_device(args.device.as_deref().unwrap_or(&settings.train.device))
        .context("--device")?;
    let seat = Seat::take(settings.train.threads);
    let threads = seat.threads();
    tch::set_num_threads(threads as i32);
    let loaded = load_model_with_dropout(&model_dir, device, f.dropout)?;
    let mut run = Finetuner::new(
        loaded,
        &data.train,
        &data.val,
        FinetuneOptions::from(&f),
        out,
    )?;
    if let Some((_, Some(link))) = &claim {
        run.link_latest(link.clone());
    }
    if eval_validation {
        let file =
            sst2::locate(&data.data_dir, Split::Validation).context("--eval-split validation")?;
        run.evaluate_at_end(&sst2::read_file(&file)?)?;
    }
    let info = run.info(&data.train_file, f.samples, device_name(device), threads);
    let start = run.begin(info, &f, seat)?;
    show(args.json, f.epochs, &start)?;
    while !run.is_done() {
        // A signal: stop after this batch, keeping (and saving) the best epoch so far.
        if let Some(signal) = crate::interrupt::requested() {
            for event in run.stop()? {
                show(args.json, f.epochs, &event)?;
            }
            return Err(crate::interrupt::Interrupted(signal).into());
        }
        for event in run.advance()? {
            show(args.json, f.epochs, &event)?;
            if let Event::Diverged { message, .. } = event {
                bail!("{message}");
            }
        }
    }
    Ok(())
}

/// A model's name as a folder name: `owner/name` becomes `owner-name`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Prints a fine-tuning event: its JSON line, or a line for people.
fn show(json: bool, epochs: usize, event: &Event) -> Result<()> {
    let text = match event {
        _ if json => event.to_json(),
        Event::Start(RunStart::Finetune(i)) => format!(
            "SST-2: first {} rows of {}: train {} ({:.1}% positive), validation {} ({:.1}% positive)\nmodel: {} ({:.2}M parameters) on {}, {} threads\nsaving the classifier to {}",
            i.samples,
            i.data,
            i.train_examples,
            100.0 * i.train_positive,
            i.val_examples,
            100.0 * i.val_positive,
            i.model,
            i.params as f64 / 1e6,
            i.device,
            i.threads,
            i.out.display()
        ),
        Event::Epoch(m) => format!(
            "epoch {}/{epochs}: train loss {:.4} acc {:.3} | val loss {:.4} acc {:.3} | {:.1}s",
            m.epoch, m.train_loss, m.train_acc, m.val_loss, m.val_acc, m.secs
        ),
        Event::Done(RunDone::Finetune(d)) => {
            let mut mistakes = String::new();
            for m in d.mistakes.iter().take(5) {
                mistakes.push_str(&format!(
                    "\n  P(positive) {:.3}, truly {}: {}",
                    m.p_positive,
                    ["negative", "positive"][m.label.min(1)],
                    m.text
                ));
            }
            format!(
                "{}\nnegative: precision {:.3} recall {:.3} F1 {:.3} | positive: precision {:.3} recall {:.3} F1 {:.3} | calibration error (ECE, 10 bins) {:.3}\nmost confident mistakes:{}",
                summary_lines(d),
                d.precision[0],
                d.recall[0],
                d.f1[0],
                d.precision[1],
                d.recall[1],
                d.f1[1],
                d.ece,
                if mistakes.is_empty() { " none".into() } else { mistakes }
            )
        }
        Event::Log { message } => message.clone(),
        _ => return Ok(()),
    };
    super::print_stdout(&(text + "\n"))
}

/// The best epoch, its accuracy and confusion matrix, and where the classifier went.
fn summary_lines(d: &crate::protocol::FinetuneSummary) -> String {
    let c = d.confusion;
    format!(
        "best epoch {}: validation accuracy {:.4} (loss {:.4}){}\nconfusion (rows: true negative/positive, columns: predicted): [[{}, {}], [{}, {}]]\nclassifier saved to {} (curves in {}/curves.csv)",
        d.best_epoch,
        d.val_acc,
        d.val_loss,
        d.eval_acc
            .map(|a| format!(", whole validation split {a:.4}"))
            .unwrap_or_default(),
        c[0][0],
        c[0][1],
        c[1][0],
        c[1][1],
        d.checkpoint.display(),
        d.checkpoint.display()
    )
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["text", "file"])))]
pub struct ClassifyArgs {
    /// A classifier written by `gptdash finetune`.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// The sentence to classify.
    #[arg(long, allow_hyphen_values = true)]
    pub text: Option<String>,
    /// Classify every non-blank line of a file (`-`: standard input), in batches: one
    /// output line per input line (`P(positive)<TAB>label<TAB>text`, or JSON lines).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// Lines classified per forward pass with `--file`.
const CLASSIFY_BATCH: usize = 64;

pub fn classify(args: &ClassifyArgs, settings: Settings) -> Result<()> {
    if args.text.as_deref().is_some_and(|t| t.trim().is_empty()) {
        bail!("--text is empty; give a sentence to classify");
    }
    let device = resolve_device(args.device.as_deref().unwrap_or(&settings.train.device))
        .context("--device")?;
    if args.file.is_some() {
        // Batches of sentences are compute-bound: every core helps.
        set_threads(settings.train.threads);
    } else {
        set_inference_threads(settings.train.threads);
    }
    let (loaded, info) = load_classifier(&args.checkpoint, device)?;
    let Some(file) = &args.file else {
        let text = args.text.clone().unwrap_or_default();
        let (label, p_positive) = crate::classifier::classify(&loaded, &info.labels, &text)?;
        let read_as = crate::reading::Reading::of(&loaded).read_as(&text);
        return super::print_stdout(
            &(verdict_line(args.json, text, label, p_positive, false, read_as) + "\n"),
        );
    };
    crate::interrupt::install()?;
    let (lines, name) = spawn_line_reader(file)?;
    let encoder = Encoder::for_model(&loaded)?;
    let mut texts = Vec::new();
    let mut examples = Vec::new();
    let flush = |texts: &mut Vec<String>, examples: &mut Vec<Example>| -> Result<()> {
        let probs = p_positive(&loaded.model, examples, CLASSIFY_BATCH)?;
        let mut out = String::new();
        for (text, p) in texts.drain(..).zip(probs) {
            let label = info.labels[usize::from(p >= 0.5)].clone();
            out.push_str(&verdict_line(args.json, text, label, p, true, None));
            out.push('\n');
        }
        examples.clear();
        super::print_stdout(&out)
    };
    let mut i = 0;
    loop {
        // Lines come from their own thread, so Ctrl-C is answered while a read waits
        // (a pipe, a terminal); a pause in the input prints what is classified so far.
        let line = match lines.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(line) => line?,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                crate::interrupt::check()?;
                if !examples.is_empty() {
                    flush(&mut texts, &mut examples)?;
                }
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        crate::interrupt::check()?;
        i += 1;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let ids = encoder
            .encode(text)
            .with_context(|| format!("{name}:{i}"))?;
        examples.push(Example { ids, label: 0 });
        texts.push(text.to_string());
        if examples.len() == CLASSIFY_BATCH * 4 {
            flush(&mut texts, &mut examples)?;
        }
    }
    flush(&mut texts, &mut examples)
}

/// The longest line `classify --file` reads.
const MAX_LINE_BYTES: usize = 1 << 20;

/// The lines of `file` (`-`: standard input), read on a thread of their own into a
/// bounded channel: each at most [`MAX_LINE_BYTES`] (a device that never sends a
/// newline is an error, not a line that grows without end) and UTF-8, or an error
/// naming its line; and the name to report it by.
fn spawn_line_reader(
    file: &std::path::Path,
) -> Result<(crossbeam_channel::Receiver<Result<String>>, String)> {
    use std::io::{BufRead, Read};
    let name = if file.as_os_str() == "-" {
        "standard input".to_string()
    } else {
        file.display().to_string()
    };
    let (tx, rx) = crossbeam_channel::bounded(1024);
    let (path, shown) = (file.to_path_buf(), name.clone());
    std::thread::Builder::new()
        .name("gptdash-lines".into())
        .spawn(move || {
            let reader: Result<Box<dyn BufRead>> = if path.as_os_str() == "-" {
                Ok(Box::new(std::io::BufReader::new(std::io::stdin())))
            } else {
                std::fs::File::open(&path)
                    .map(|f| Box::new(std::io::BufReader::new(f)) as Box<dyn BufRead>)
                    .with_context(|| format!("--file: cannot open {shown}"))
            };
            let mut reader = match reader {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            for n in 1.. {
                let mut buf = Vec::new();
                let read = (&mut reader)
                    .take(MAX_LINE_BYTES as u64 + 1)
                    .read_until(b'\n', &mut buf);
                let line = match read {
                    Ok(0) => return,
                    Ok(_) if buf.len() > MAX_LINE_BYTES => Err(anyhow::anyhow!(
                        "{shown}:{n}: the line is longer than {} MB; give one sentence per line",
                        MAX_LINE_BYTES >> 20
                    )),
                    Ok(_) => String::from_utf8(buf)
                        .map_err(|_| anyhow::anyhow!("{shown}:{n}: the line is not UTF-8 text")),
                    Err(e) => {
                        Err(anyhow::Error::new(e)
                            .context(format!("{shown}:{n}: cannot read the line")))
                    }
                };
                let failed = line.is_err();
                if tx.send(line).is_err() || failed {
                    return;
                }
            }
        })
        .context("cannot start the thread that reads --file")?;
    Ok((rx, name))
}

/// One verdict as `classify` prints it: a JSON line, `label (P(positive) = p)` for
/// one sentence, or `p<TAB>label<TAB>text` for a line of a file.
/// `read_as`: the sentence as the classifier reads it, when that differs.
fn verdict_line(
    json: bool,
    text: String,
    label: String,
    p_positive: f64,
    batch: bool,
    read_as: Option<String>,
) -> String {
    if json {
        Event::Classified {
            text,
            label,
            p_positive,
            read_as,
        }
        .to_json()
    } else if batch {
        format!("{p_positive:.4}\t{label}\t{text}")
    } else {
        match read_as {
            Some(r) => {
                format!("{label} (P(positive) = {p_positive:.4})\nas the model reads it: {r}")
            }
            None => format!("{label} (P(positive) = {p_positive:.4})"),
        }
    }
}
