//! One line per run: what `gptdash runs` and the Runs tab list.

use super::find::Found;
use super::read::RunHistory;
use crate::checkpoint::HISTORY_FILE;
pub use crate::protocol::RunSummary;
use crate::protocol::{RunDone, RunKind, RunStart};

impl RunSummary {
    /// What the best/last columns hold.
    pub fn metric(&self) -> &'static str {
        match self.kind {
            RunKind::LanguageModel => "test loss",
            RunKind::Classifier => "val acc",
        }
    }

    /// The run's result: a language model's best test loss, a classifier's kept
    /// epoch's validation accuracy.
    pub fn result(&self) -> Option<f64> {
        match self.kind {
            RunKind::LanguageModel => self.best,
            RunKind::Classifier => self.kept,
        }
    }

    /// The run summarised from its history (`h`, read with or without its points).
    pub fn of(found: &Found, h: &RunHistory) -> RunSummary {
        Self::of_locked(found, h, crate::checkpoint::is_being_written(&found.dir))
    }

    /// [`RunSummary::of`], told whether a process holds the run's folder (`locked`).
    pub fn of_locked(found: &Found, h: &RunHistory, locked: bool) -> RunSummary {
        let kind = h.kind();
        let (corpus, model, planned) = match &h.start {
            Some(RunStart::Train(info)) => {
                let m = &info.model;
                (
                    info.corpus_name.clone(),
                    format!("{} {}L {}H {}d", info.preset, m.n_layer, m.n_head, m.n_embd),
                    info.max_iters,
                )
            }
            Some(RunStart::Finetune(info)) => (
                format!("sst2 {} rows", info.samples),
                info.model.clone(),
                info.epochs as u64,
            ),
            None => ("?".into(), "?".into(), 0),
        };
        let (best, last) = match kind {
            RunKind::LanguageModel => {
                let losses = h.test.iter().map(|p| p.value).filter(|v| v.is_finite());
                (
                    losses.clone().reduce(f64::min),
                    h.test.last().map(|p| p.value),
                )
            }
            RunKind::Classifier => {
                let accs = h.accuracy.iter().map(|p| p.value);
                (accs.reduce(f64::max), h.accuracy.last().map(|p| p.value))
            }
        };
        let secs = h.train_secs();
        let tokens_per_s = (secs > 0.0 && h.tokens() > 0.0).then(|| h.tokens() / secs);
        let wall_s = h.wall_secs();
        RunSummary {
            name: found.name.clone(),
            path: found.dir.clone(),
            kind,
            corpus,
            model,
            steps: h.steps(),
            planned,
            tokens: h.tokens(),
            wall_s,
            tokens_per_s,
            best,
            last,
            kept: match &h.done {
                Some(RunDone::Finetune(s)) => Some(s.val_acc),
                _ => None,
            },
            status: h.status(locked),
            started: h.started,
            malformed: h.malformed,
        }
    }

    /// Reads a run's history for its summary.
    pub fn read(found: &Found) -> std::io::Result<RunSummary> {
        let h = RunHistory::read(&found.dir.join(HISTORY_FILE), false)?;
        Ok(Self::of(found, &h))
    }
}

/// The columns runs sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum SortKey {
    #[default]
    Started,
    Name,
    Kind,
    Corpus,
    Steps,
    Tokens,
    Wall,
    Speed,
    Best,
    Last,
    Status,
}

impl SortKey {
    /// The next key the Runs tab's `s` cycles to.
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Started => SortKey::Name,
            SortKey::Name => SortKey::Best,
            SortKey::Best => SortKey::Last,
            SortKey::Last => SortKey::Status,
            _ => SortKey::Started,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Started => "started",
            SortKey::Name => "name",
            SortKey::Kind => "kind",
            SortKey::Corpus => "corpus",
            SortKey::Steps => "steps",
            SortKey::Tokens => "tokens",
            SortKey::Wall => "time",
            SortKey::Speed => "tokens/s",
            SortKey::Best => "best",
            SortKey::Last => "last",
            SortKey::Status => "status",
        }
    }
}

/// Sorts runs (or references to them) by `key` (then by name; runs without the value
/// last).
pub fn sort<R: std::borrow::Borrow<RunSummary>>(runs: &mut [R], key: SortKey) {
    let num = |x: Option<f64>| x.unwrap_or(f64::INFINITY);
    runs.sort_by(|a, b| {
        let (a, b) = (a.borrow(), b.borrow());
        let by = match key {
            SortKey::Started => a.started.cmp(&b.started),
            SortKey::Name => a.name.cmp(&b.name),
            SortKey::Kind => a.kind.cmp(&b.kind),
            SortKey::Corpus => a.corpus.cmp(&b.corpus),
            SortKey::Steps => a.steps.cmp(&b.steps),
            SortKey::Tokens => a.tokens.total_cmp(&b.tokens),
            SortKey::Wall => a.wall_s.total_cmp(&b.wall_s),
            SortKey::Speed => num(a.tokens_per_s).total_cmp(&num(b.tokens_per_s)),
            SortKey::Best => num(a.best).total_cmp(&num(b.best)),
            SortKey::Last => num(a.last).total_cmp(&num(b.last)),
            SortKey::Status => a.status.cmp(&b.status),
        };
        by.then_with(|| a.name.cmp(&b.name))
    });
}

impl RunSummary {
    /// Whether the run's name, corpus or model contains `text` (any case).
    pub fn matches(&self, text: &str) -> bool {
        let t = text.to_lowercase();
        [&self.name, &self.corpus, &self.model]
            .iter()
            .any(|f| f.to_lowercase().contains(&t))
    }
}

/// Human numbers: 950, 12k, 4.5M.
pub fn count(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.1}G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}
