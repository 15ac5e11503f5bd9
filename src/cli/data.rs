//! `gptdash data list|get|path`: the named corpora of the catalog, what is on this
//! machine, downloading one, and where its files are.
use std::io::Write;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::catalog::{self, Entry};
use crate::protocol::Event;

#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DataCommand {
    /// The corpora gptdash knows by name, their sizes, and whether each is here.
    List {
        /// One JSON object per corpus, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Download a corpus from the Hugging Face hub (once; resumed if interrupted) and
    /// make it ready to train on.
    Get {
        /// A corpus name (gptdash data list).
        name: String,
        /// Progress and the result as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Prepare a corpus for training as `train` would (download, tokenizer, token ids in
    /// the cache) without training: the next run on it starts in seconds.
    Prepare(PrepareArgs),
    /// Where a corpus's files are on this machine (exit 1 when it is not here).
    Path {
        /// A corpus name (gptdash data list).
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct PrepareArgs {
    /// `small`, a corpus name, or a text file (default: the config's data.corpus).
    #[arg(long, value_name = "small|NAME|PATH")]
    pub corpus: Option<String>,
    /// Use this tokenizer.json instead of training a BPE on the corpus.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<std::path::PathBuf>,
    #[arg(long, value_enum)]
    pub mode: Option<crate::config::DataMode>,
    #[arg(long, value_parser = clap::value_parser!(u64).range(260..))]
    pub vocab_size: Option<u64>,
    /// Prepare without the per-user cache (a measurement of a cold start).
    #[arg(long)]
    pub no_cache: bool,
    /// Progress and the summary as JSON lines.
    #[arg(long)]
    pub json: bool,
}

fn entry(name: &str) -> Result<Entry> {
    match catalog::find(name) {
        Some(e) => Ok(e),
        None => {
            let names: Vec<String> = catalog::entries().into_iter().map(|e| e.name).collect();
            bail!(
                "NAME: no corpus called `{name}`; gptdash knows {} (a file of your own: --corpus PATH)",
                names.join(", ")
            )
        }
    }
}

use catalog::size_text as mb;

pub fn run(args: &DataArgs, loaded: super::Loaded) -> Result<()> {
    // Ctrl-C (or SIGTERM, SIGHUP) stops a download or a preparation at its next check,
    // so it removes its temporary files; a download resumes next time.
    crate::interrupt::install()?;
    match &args.command {
        DataCommand::Prepare(p) => prepare(p, loaded),
        DataCommand::List { json } => list(*json),
        DataCommand::Get { name, json } => get(name, *json),
        DataCommand::Path { name, json } => path(name, *json),
    }
}

fn list(json: bool) -> Result<()> {
    let mut text = String::new();
    if !json {
        text.push_str(&format!(
            "{:<14} {:<10} {:>9} {:>9}  {:<10} {}\n",
            "name", "here", "download", "text", "mode", "description"
        ));
    }
    for e in catalog::entries() {
        let s = e.status();
        if json {
            text.push_str(&serde_json::to_string(&s)?);
            text.push('\n');
        } else {
            let download = if e.builtin {
                "-".into()
            } else {
                mb(s.download_mb)
            };
            text.push_str(&format!(
                "{:<14} {:<10} {:>9} {:>9}  {:<10} {}\n",
                s.name,
                s.here,
                download,
                mb(s.text_mb),
                s.mode.name(),
                s.description
            ));
        }
    }
    if !json {
        text.push_str(
            "\ngptdash data get NAME downloads one (the Hugging Face hub: HF_ENDPOINT, HF_HOME, HF_TOKEN);\n\
             train on it with --corpus NAME, or on any text file with --corpus PATH.\n",
        );
    }
    super::print_stdout(&text)
}

fn get(name: &str, json: bool) -> Result<()> {
    let e = entry(name)?;
    if e.builtin {
        let msg = format!("corpus `{name}` is built in: nothing to download");
        return if json {
            super::print_stdout(&format!(
                "{}\n",
                serde_json::json!({"event": "corpus", "name": name, "here": "built in", "path": null})
            ))
        } else {
            super::print_stdout(&format!("{msg}\n"))
        };
    }
    let bar = (!json).then(|| ProgressBar::new(0));
    let mut stage_now = String::new();
    let mut progress = |stage: &str, done: u64, total: u64| match &bar {
        None => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", Event::prepare(stage, done, total).to_json());
            let _ = out.flush();
        }
        Some(bar) => {
            if stage != stage_now {
                stage_now = stage.to_string();
                let template = match stage {
                    "download" | "verify" => {
                        "{msg:>9} {bar:30.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} {eta}"
                    }
                    _ => "{msg:>9} {bar:30.cyan/blue} {pos}/{len}",
                };
                bar.set_style(
                    ProgressStyle::with_template(template)
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_message(stage.to_string());
            }
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let what = e.clone();
    let local = crate::interrupt::interruptible_progress(
        "downloading the corpus",
        move |p| what.get(p),
        &mut progress,
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let local = local?;
    if json {
        super::print_stdout(&format!(
            "{}\n",
            serde_json::json!({"event": "corpus", "name": name, "here": "ready", "path": local.files})
        ))
    } else {
        let files: Vec<String> = local
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        super::print_stdout(&format!(
            "corpus `{name}` is ready: {}\ntrain on it: gptdash train --corpus {name}\n",
            files.join(", ")
        ))
    }
}

fn path(name: &str, json: bool) -> Result<()> {
    let e = entry(name)?;
    let s = e.status();
    if json {
        super::print_stdout(&format!("{}\n", serde_json::to_string(&s)?))?;
    }
    if e.builtin {
        if !json {
            super::print_stdout("built in (data/small_simple_corpus.txt in the binary)\n")?;
        }
        return Ok(());
    }
    match &s.path {
        Some(files) => {
            if !json {
                let lines: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                super::print_stdout(&format!("{}\n", lines.join("\n")))?;
            }
            Ok(())
        }
        None => {
            let manual = catalog::manual_dir(name)
                .map(|d| format!(" (or put its files under {} by hand)", d.display()))
                .unwrap_or_default();
            if !json {
                eprintln!(
                    "corpus `{name}` is {}: gptdash data get {name} downloads it{manual}",
                    if s.here == "downloaded" {
                        "downloaded but not assembled yet"
                    } else {
                        "not on this machine"
                    }
                );
            }
            std::process::exit(1)
        }
    }
}

fn prepare(args: &PrepareArgs, loaded: super::Loaded) -> Result<()> {
    let mut settings = loaded.settings;
    if let Some(c) = &args.corpus {
        settings.data.corpus = c.clone();
    }
    if let Some(t) = &args.tokenizer {
        settings.data.tokenizer = Some(t.clone());
    }
    if let Some(m) = args.mode {
        settings.data.mode = Some(m);
    }
    if let Some(v) = args.vocab_size {
        settings.data.vocab_size = v as usize;
    }
    if args.no_cache {
        settings.data.cache = false;
    }
    settings
        .validate()
        .with_context(|| format!("invalid settings ({} and flags)", loaded.origin))?;
    let started = std::time::Instant::now();
    let bar = (!args.json).then(|| ProgressBar::new(0));
    let mut stage_now = String::new();
    let ready = crate::train::lm::prepare_only(&mut settings, &mut |event| match (&bar, &event) {
        (None, _) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", event.to_json());
            let _ = out.flush();
        }
        (Some(bar), Event::Prepare { stage, done, total }) => {
            if *stage != stage_now {
                stage_now = stage.clone();
                bar.set_style(
                    ProgressStyle::with_template("{msg:>9} {bar:30.cyan/blue} {pos}/{len}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_message(stage.clone());
            }
            bar.set_length(*total);
            bar.set_position(*done);
        }
        (Some(bar), Event::Log { message }) => bar.suspend(|| println!("{message}")),
        _ => {}
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let ready = ready?;
    let secs = started.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "event": "prepared",
        "corpus": ready.name,
        "mode": settings.data.mode().name(),
        "vocab_size": ready.tokenizer.vocab_size(),
        "train_texts": ready.train_texts,
        "test_texts": ready.test_texts,
        "train_tokens": ready.train.target_tokens() + 1,
        "test_tokens": ready.test.target_tokens() + 1,
        "seconds": secs,
    });
    if args.json {
        super::print_stdout(&format!("{summary}\n"))
    } else {
        super::print_stdout(&format!(
            "corpus {}: {} train / {} test texts, {} / {} tokens ({} mode, vocabulary {}), prepared in {secs:.1} s\n",
            ready.name,
            ready.train_texts,
            ready.test_texts,
            ready.train.target_tokens() + 1,
            ready.test.target_tokens() + 1,
            settings.data.mode().name(),
            ready.tokenizer.vocab_size()
        ))
    }
}
