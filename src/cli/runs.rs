//! `gptdash runs`: every run under the runs roots as a table (or `--json` lines), sorted
//! and filtered; `gptdash runs diff A B [C…]`: the settings in which runs differ.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};

use crate::config::Settings;
use crate::protocol::{Event, RunKind};
use crate::runs::{self, DiffRow, RunHistory, RunSummary, SortKey, Status};

#[derive(Debug, Clone, Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub action: Option<RunsAction>,
    /// Order by this column.
    #[arg(long, value_enum, default_value_t = SortKey::Started)]
    pub sort: SortKey,
    /// Reverse the order.
    #[arg(long)]
    pub reverse: bool,
    /// Only runs of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Only runs in this state.
    #[arg(long, value_enum)]
    pub status: Option<Status>,
    /// Only runs whose name, corpus or model contains this text.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
    /// Another folder to look for runs in (besides checkpoints/ and `[runs] folders`).
    #[arg(long, value_name = "DIR")]
    pub root: Vec<PathBuf>,
    /// One JSON object per run (`run_summary` events) instead of the table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum RunsAction {
    /// The settings in which these runs differ (names as `gptdash runs` lists them, or
    /// folders).
    Diff {
        #[arg(required = true, num_args = 2.., value_name = "RUN")]
        runs: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    #[value(name = "lm")]
    LanguageModel,
    Classifier,
}

impl ValueEnum for Status {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            Status::Running,
            Status::Finished,
            Status::Interrupted,
            Status::Diverged,
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let name: &'static str = match self {
            Status::Running => "running",
            Status::Finished => "finished",
            Status::Interrupted => "interrupted",
            Status::Diverged => "diverged",
        };
        Some(clap::builder::PossibleValue::new(name))
    }
}

pub fn run(args: &RunsArgs, settings: Settings) -> Result<()> {
    let mut roots = runs::roots(&settings.runs);
    for root in &args.root {
        // A folder the user names must be one (a typo would look like no runs).
        if !root.is_dir() {
            bail!(
                "--root {}: {}",
                root.display(),
                if root.exists() {
                    "is not a folder; give the folder that holds the runs"
                } else {
                    "no such folder"
                }
            );
        }
        roots.push(root.clone());
    }
    match &args.action {
        Some(RunsAction::Diff { runs }) => diff(runs, &roots, args.json),
        None => list(args, &roots),
    }
}

/// The runs under `roots`, summarised (a history that cannot be read is left out, with
/// a line on stderr).
pub fn summaries(roots: &[PathBuf]) -> Vec<RunSummary> {
    let found = runs::find(roots);
    let read = |f: &runs::Found| match RunSummary::read(f) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("{}: cannot read its history: {e}", f.dir.display());
            None
        }
    };
    use rayon::prelude::*;
    found.par_iter().filter_map(read).collect()
}

/// Sorts and filters as the flags say.
pub fn select(mut all: Vec<RunSummary>, args: &RunsArgs) -> Vec<RunSummary> {
    all.retain(|r| {
        args.kind.is_none_or(|k| {
            r.kind
                == match k {
                    KindArg::LanguageModel => RunKind::LanguageModel,
                    KindArg::Classifier => RunKind::Classifier,
                }
        }) && args.status.is_none_or(|s| r.status == s)
            && args.filter.as_ref().is_none_or(|t| r.matches(t))
    });
    runs::sort(&mut all, args.sort);
    if args.reverse {
        all.reverse();
    }
    all
}

fn list(args: &RunsArgs, roots: &[PathBuf]) -> Result<()> {
    let all = summaries(roots);
    let total = all.len();
    let shown = select(all, args);
    if args.json {
        for r in shown {
            let _ = super::print_stdout(&format!("{}\n", Event::RunSummary(Box::new(r)).to_json()));
        }
        return Ok(());
    }
    if shown.is_empty() && total > 0 {
        return super::print_stdout(&format!(
            "none of the {total} runs found matches --kind, --status and --filter as given\n"
        ));
    }
    if shown.is_empty() {
        return super::print_stdout(&format!(
            "no runs under {} (a run is a folder with its events.jsonl; gptdash train makes one; --root DIR or [runs] folders look elsewhere)\n",
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    super::print_stdout(&table(&shown))?;
    Ok(())
}

/// 42s, 3m05s, 2h10m.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s < 60 {
        format!("{:.1}s", secs.max(0.0))
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// `YYYY-MM-DD HH:MM` (UTC).
pub fn date(unix: Option<u64>) -> String {
    let Some(t) = unix else {
        return "-".into();
    };
    let (y, m, d) = crate::output::civil_from_days((t / 86_400) as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        (t % 86_400) / 3600,
        (t % 3600) / 60
    )
}

fn metric(r: &RunSummary, x: Option<f64>) -> String {
    match (x, r.kind) {
        (None, _) => "-".into(),
        (Some(v), RunKind::LanguageModel) => format!("{v:.4}"),
        (Some(v), RunKind::Classifier) => format!("{v:.3}"),
    }
}

/// The rows of the table, as text cells (a header first).
pub fn rows(runs: &[RunSummary]) -> Vec<[String; 12]> {
    let mut rows = vec![[
        "name", "kind", "corpus", "model", "steps", "tokens", "time", "tok/s", "best", "last",
        "status", "started",
    ]
    .map(String::from)];
    for r in runs {
        let unit = match r.kind {
            RunKind::LanguageModel => "",
            RunKind::Classifier => " ep",
        };
        rows.push([
            r.name.clone(),
            match r.kind {
                RunKind::LanguageModel => "lm".into(),
                RunKind::Classifier => "classifier".into(),
            },
            r.corpus.clone(),
            r.model.clone(),
            format!("{}/{}{unit}", r.steps, r.planned),
            if r.tokens > 0.0 {
                runs::count(r.tokens)
            } else {
                "-".into()
            },
            duration(r.wall_s),
            r.tokens_per_s.map_or("-".into(), runs::count),
            metric(r, r.best),
            metric(r, r.last),
            r.status.to_string(),
            date(r.started),
        ]);
    }
    rows
}

fn table(runs: &[RunSummary]) -> String {
    let rows = rows(runs);
    // Numbers to the right, words to the left.
    let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    let mut out = super::aligned(&rows, |c| (4..10).contains(&c));
    out.push_str("best/last: test loss (lm), validation accuracy (classifier); time: wall time; tok/s: of the training steps\n");
    out
}

fn diff(names: &[String], roots: &[PathBuf], json: bool) -> Result<()> {
    let mut found = Vec::new();
    for name in names {
        found.push(runs::resolve(name, roots)?);
    }
    let mut flat = Vec::new();
    for f in &found {
        let h = RunHistory::read(&f.dir.join(crate::checkpoint::HISTORY_FILE), false)
            .map_err(|e| anyhow::anyhow!("{}: cannot read its history: {e}", f.dir.display()))?;
        let Some(record) = &h.record else {
            bail!(
                "run {}: its history has no settings record (written by an older gptdash?)",
                f.name
            );
        };
        flat.push(runs::flatten(record));
    }
    let rows = runs::diff(&flat);
    let names: Vec<String> = found.iter().map(|f| f.name.clone()).collect();
    if json {
        let _ = super::print_stdout(&format!(
            "{}\n",
            Event::RunsDiff {
                runs: names,
                differ: rows
            }
            .to_json()
        ));
        return Ok(());
    }
    super::print_stdout(&diff_table(&names, &rows))?;
    Ok(())
}

/// The diff as text: a row per differing key, a column per run.
pub fn diff_table(names: &[String], rows: &[DiffRow]) -> String {
    if rows.is_empty() {
        return format!("{} runs with the same settings\n", names.len());
    }
    let mut grid = vec![std::iter::once("setting".to_string())
        .chain(names.iter().cloned())
        .collect::<Vec<_>>()];
    for r in rows {
        grid.push(
            std::iter::once(r.key.clone())
                .chain(r.values.iter().cloned())
                .collect(),
        );
    }
    super::aligned(&grid, |_| false)
}
