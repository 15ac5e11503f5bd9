//! The Train tab watching a run that trains elsewhere (`gptdash watch`): what the
//! stream has said so far, and where its checkpoints are.
use std::path::{Path, PathBuf};

use crate::protocol::{Event, RunStart};
use crate::watch::{Parsed, Source, StreamStatus};

/// Malformed lines logged one by one; later ones are only counted.
pub(crate) const LOGGED_MALFORMED: u64 = 5;

/// Where the watched run is, as its events tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display)]
pub enum RunPhase {
    /// No `start` yet.
    #[strum(serialize = "waiting for a run")]
    Waiting,
    #[strum(serialize = "training")]
    Training,
    #[strum(serialize = "fine-tuning")]
    FineTuning,
    #[strum(serialize = "finished")]
    Finished,
    /// Stopped early (`interrupted`).
    #[strum(serialize = "stopped")]
    Stopped,
    #[strum(serialize = "diverged")]
    Diverged,
}

/// A stream being watched, and what it has said.
#[derive(Debug, Clone, PartialEq)]
pub struct Watching {
    /// The stream's name (a file, or standard input).
    pub source: String,
    /// Where relative checkpoint paths are looked for when they are not relative to the
    /// working directory: the followed file's folder.
    pub folder: Option<PathBuf>,
    pub status: StreamStatus,
    pub run: RunPhase,
    /// Events shown; well-formed events not shown (fine-tuning, benchmarks, unknown
    /// names); lines that are not events.
    pub events: u64,
    pub ignored: u64,
    pub malformed: u64,
    /// The last malformed line: its number and what was wrong.
    pub last_malformed: Option<String>,
    /// Every event of the stream so far, to save the stream as a run (`s`), up to
    /// [`KEEP_MAX`].
    pub kept: Vec<Event>,
}

/// The most events of a watched stream kept to save as a run (some hundred MiB): a
/// stream followed for days does not grow the dashboard without end.
pub(crate) const KEEP_MAX: usize = 1_000_000;

impl Watching {
    /// Keeps an event to save; the line to log when the stream reaches [`KEEP_MAX`].
    pub(crate) fn keep(&mut self, event: &Event) -> Option<String> {
        if self.kept.len() >= KEEP_MAX {
            return None;
        }
        self.kept.push(event.clone());
        (self.kept.len() == KEEP_MAX).then(|| {
            format!("the stream's first {KEEP_MAX} events are kept to save (s); later ones are shown, not kept")
        })
    }

    pub(crate) fn new(source: &Source) -> Self {
        Self {
            source: source.name(),
            folder: source.folder(),
            status: StreamStatus::Following,
            run: RunPhase::Waiting,
            events: 0,
            ignored: 0,
            kept: Vec::new(),
            malformed: 0,
            last_malformed: None,
        }
    }

    /// Counts a line; returns the event to show, if it is one, and a line for the log.
    pub(crate) fn line(&mut self, parsed: Parsed) -> (Option<Event>, Option<String>) {
        match parsed {
            Parsed::Event(event) => {
                self.events += 1;
                self.run = match (&*event, self.run) {
                    (Event::Start(RunStart::Train(_)), _) => RunPhase::Training,
                    (Event::Start(RunStart::Finetune(_)), _) => RunPhase::FineTuning,
                    (Event::Done(_), _) => RunPhase::Finished,
                    (Event::Interrupted { .. }, _) => RunPhase::Stopped,
                    (Event::Diverged { .. }, _) => RunPhase::Diverged,
                    // A stream joined after its start (tail of a file) is a run anyway.
                    (Event::Iter(_), RunPhase::Waiting) => RunPhase::Training,
                    (_, run) => run,
                };
                (Some(*event), None)
            }
            Parsed::Ignored(_) => {
                self.ignored += 1;
                (None, None)
            }
            Parsed::Malformed { line, error } => {
                self.malformed += 1;
                let text = format!("line {line}: {error}");
                self.last_malformed = Some(text.clone());
                let log = match self.malformed {
                    n if n < LOGGED_MALFORMED => Some(format!("stream {text}")),
                    LOGGED_MALFORMED => Some(format!(
                        "stream {text} (further malformed lines are only counted)"
                    )),
                    _ => None,
                };
                (None, log)
            }
        }
    }

    /// A change of the source's condition; returns a line for the log.
    pub(crate) fn status(&mut self, status: StreamStatus) -> Option<String> {
        let before = std::mem::replace(&mut self.status, status);
        (before != status).then(|| match status {
            StreamStatus::Following => format!("stream: reading {}", self.source),
            StreamStatus::Waiting => format!("stream: {} does not exist yet; waiting for it", self.source),
            StreamStatus::Truncated => format!("stream: {} was truncated; reading it from the start (the chart starts again with the next run's start)", self.source),
            StreamStatus::Replaced => format!("stream: another file took the place of {}; reading it from the start", self.source),
            StreamStatus::Ended => format!("stream: {} ended", self.source),
            StreamStatus::Unreadable => format!("stream: cannot read {}", self.source),
        })
    }

    /// Where a checkpoint the stream named is on this machine: as written (relative to
    /// the working directory), else relative to the followed file's folder.
    pub(crate) fn locate(&self, path: &Path) -> Option<PathBuf> {
        if path.is_dir() {
            return Some(path.to_path_buf());
        }
        let beside = self.folder.as_ref()?.join(path);
        (path.is_relative() && beside.is_dir()).then_some(beside)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_kept_to_save_up_to_its_bound_and_said_once() {
        let mut w = Watching::new(&crate::watch::Source::Stdin);
        let event = Event::log("x".to_string());
        let said: Vec<String> = (0..KEEP_MAX + 10).filter_map(|_| w.keep(&event)).collect();
        assert_eq!(w.kept.len(), KEEP_MAX);
        assert_eq!(said.len(), 1, "{said:?}");
    }
}
