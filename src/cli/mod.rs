//! Command-line interface: argument types (clap) and one module per headless command.
pub mod bench;
pub mod data;
pub mod export;
pub mod finetune;
pub mod generate;
pub mod inspect;
pub mod runs;
pub mod sweep;
pub mod train;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "gptdash",
    version,
    about = "Train, probe and fine-tune small GPT language models in a terminal"
)]
pub struct Cli {
    /// Settings file (default: ./config.toml, else ~/.config/gptdash/config.toml, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a GPT language model on a corpus (headless).
    Train(train::TrainArgs),
    /// Continue a prompt, showing each token's probability and the top alternatives.
    Generate(generate::GenerateArgs),
    /// Fine-tune a model as an SST-2 sentiment classifier.
    Finetune(finetune::FinetuneArgs),
    /// Classify a sentence with a fine-tuned classifier.
    Classify(finetune::ClassifyArgs),
    /// Look inside a model on a text: attention, logit lens, per-token loss.
    Inspect(inspect::InspectArgs),
    /// Write a model as a Hugging Face GPT-2 folder (transformers, torchrun, accelerate).
    Export(export::ExportArgs),
    /// Named corpora from the Hugging Face hub: list, get (download once), path.
    Data(data::DataArgs),
    /// Speed benchmarks.
    Bench(bench::BenchArgs),
    /// The runs under checkpoints/ (and `[runs] folders`): a table, sorted and filtered;
    /// `runs diff A B` the settings they differ in.
    Runs(runs::RunsArgs),
    /// A grid of settings (`--set KEY=V1,V2`, `--seeds N`) as runs of their own in one
    /// folder, `--parallel` at a time; started again it goes on where it stopped.
    Sweep(sweep::SweepArgs),
    /// The dashboard (also what `gptdash` alone starts).
    Tui,
    /// The dashboard's Train tab following a run that trains elsewhere: the JSON-lines
    /// events of `train --json` (or scripts/gptdash_log.py) from a file or stdin.
    Watch(WatchArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// A file to follow as it grows (it may not exist yet; truncation and rotation are
    /// followed), or - for standard input (`ssh gpu-box tail -f run.jsonl | gptdash watch -`).
    #[arg(value_name = "FILE|-", allow_hyphen_values = true)]
    pub source: String,
}

/// Settings as read, before a command puts its flags on top and checks them.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    /// Where they came from, for messages: `config file x.toml` or `built-in defaults`.
    pub origin: String,
    /// The file was named by `--config` (its errors say so).
    pub flagged: bool,
}

impl Loaded {
    /// The settings checked as they are, for commands whose flags do not change them.
    pub fn checked(self) -> Result<Settings> {
        let checked = self
            .settings
            .validate()
            .with_context(|| format!("in {}", self.origin));
        if self.flagged {
            checked.context("--config")?;
        } else {
            checked?;
        }
        Ok(self.settings)
    }
}

/// Reads the settings file chosen by `--config` or the default search (unknown keys and
/// wrong types are errors here; values are checked by the command).
pub fn load_settings(config: Option<&PathBuf>) -> Result<Loaded> {
    let file = match config {
        Some(path) => {
            let settings = Settings::from_file(path).context("--config")?;
            return Ok(Loaded {
                settings,
                origin: format!("config file {}", path.display()),
                flagged: true,
            });
        }
        None => Settings::default_file(),
    };
    Ok(match file {
        Some(path) => Loaded {
            settings: Settings::from_file(&path)?,
            origin: format!("config file {}", path.display()),
            flagged: false,
        },
        None => Loaded {
            settings: Settings::default(),
            origin: "built-in defaults".into(),
            flagged: false,
        },
    })
}

/// A clap value parser for a finite number > 0.
pub(crate) fn positive_f64(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        Ok(_) => Err("must be a number greater than 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A clap value parser for a finite number >= 0.
pub(crate) fn non_negative_f64(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x >= 0.0 && x.is_finite() => Ok(x),
        Ok(_) => Err("must be a number >= 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Rows of cells as aligned text, two spaces between columns; the columns `right(c)`
/// says are right-aligned (numbers), the others left-aligned.
pub(crate) fn aligned<S: AsRef<str>>(rows: &[Vec<S>], right: impl Fn(usize) -> bool) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.as_ref().chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                let cell = cell.as_ref();
                if right(c) {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Writes to stdout; a closed pipe (`gptdash generate ... | head -1`) is not an error.
pub(crate) fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_value_that_cannot_work_names_the_flag_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[train]\nbatch_size = 0\n").unwrap();
        let loaded = super::load_settings(Some(&path)).unwrap();
        let msg = format!("{:#}", loaded.checked().unwrap_err());
        assert!(
            msg.starts_with("--config: in config file")
                && msg.contains("bad.toml")
                && msg.contains("train.batch_size must be at least 1"),
            "{msg}"
        );
    }
}
