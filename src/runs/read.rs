//! Reading a run's history back: the curves (train and test loss by step, tokens and
//! training time; a classifier's losses and accuracy by epoch), how the run ended, and
//! the record it started with. Read whole ([`RunHistory::read`]) or as it grows
//! ([`RunHistory::read_more`]); only complete lines count — a last line without its
//! newline is torn (the writer was killed) or still being written, and is left for later.
//!
//! A resumed run continues its history: the `start` of the resumed segment says where
//! it continues from, and the points the interrupted segment wrote past that step (work
//! after its last checkpoint, done again) are dropped.
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::protocol::Status;
use crate::protocol::{
    EpochMetrics, Event, RestoredRun, RunDone, RunKind, RunRecord, RunStart, StepMetrics,
};

/// One point of a curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The step (a classifier's: the epoch).
    pub step: u64,
    /// Target tokens trained on up to this step.
    pub tokens: f64,
    /// Training time up to this step, in seconds.
    pub secs: f64,
    pub value: f64,
}

/// The longest line of a history read: its longest, the run record, is a few KB;
/// anything longer is damage.
pub const MAX_LINE: usize = 1 << 20;

/// What a history says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunHistory {
    /// The latest record (kind, settings: a resumed run's may change its loop's).
    pub record: Option<RunRecord>,
    /// When the run first started (seconds since the Unix epoch).
    pub started: Option<u64>,
    /// The latest segment's `start`.
    pub start: Option<RunStart>,
    /// Train loss by step (a classifier's: by epoch).
    pub train: Vec<Point>,
    /// Test loss at each evaluation (a classifier's: validation loss by epoch).
    pub test: Vec<Point>,
    /// A classifier's validation accuracy by epoch.
    pub accuracy: Vec<Point>,
    pub epochs: Vec<EpochMetrics>,
    /// The latest segment's end: `done`, and whether it was interrupted or diverged.
    pub done: Option<RunDone>,
    pub interrupted: bool,
    pub diverged: bool,
    /// Lines that are not events (skipped).
    pub malformed: u64,
    /// Bytes read so far (up to the end of the last complete line).
    pub offset: u64,
    /// The last step seen, its tokens and training time so far.
    last_step: u64,
    /// (step, tokens, seconds) at each checkpoint: where a resumed segment goes on from.
    saved: Vec<(u64, f64, f64)>,
    /// Wall time of the segments before the current one, and the training time at the
    /// current segment's start.
    wall_before: f64,
    segment_from: f64,
    /// The segment's wall time before it was opened again (stopped in the dashboard and
    /// started again in the same process), counted while it is open.
    reopened_wall: f64,
    tokens: f64,
    secs: f64,
}

/// The fields of an `iter` line a summary needs (parsed without the rest).
#[derive(Deserialize)]
struct IterLite {
    iter: u64,
    #[serde(default)]
    iter_ms: Option<f64>,
    #[serde(default)]
    tokens: usize,
}

impl RunHistory {
    /// Reads a history file whole. `points: false` keeps only what a summary needs (the
    /// train curve is then empty): faster, for listing many runs.
    pub fn read(path: &Path, points: bool) -> std::io::Result<RunHistory> {
        let mut history = RunHistory::default();
        history.read_more(path, points)?;
        Ok(history)
    }

    /// Reads what was appended since the last read (a file that shrank — replaced — is
    /// read again from its start). Only complete lines count; memory stays bounded
    /// whatever the file holds (a line longer than [`MAX_LINE`] is one malformed line).
    pub fn read_more(&mut self, path: &Path, points: bool) -> std::io::Result<bool> {
        use std::io::BufRead;
        let mut file = crate::data::files::open_regular(path, "history", u64::MAX)
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let len = file.metadata()?.len();
        if len < self.offset {
            *self = RunHistory::default();
        }
        if len == self.offset {
            return Ok(false);
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut reader = std::io::BufReader::with_capacity(1 << 16, file.take(len - self.offset));
        let mut line = Vec::new();
        let mut too_long = false;
        let (mut read, mut complete) = (0u64, 0u64);
        loop {
            let buf = reader.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let newline = buf.iter().position(|b| *b == b'\n');
            let part = &buf[..newline.unwrap_or(buf.len())];
            if !too_long && line.len() + part.len() <= MAX_LINE {
                line.extend_from_slice(part);
            } else {
                too_long = true;
                line.clear();
            }
            let used = newline.map_or(part.len(), |i| i + 1);
            reader.consume(used);
            read += used as u64;
            if newline.is_some() {
                if too_long {
                    self.malformed += 1;
                } else {
                    self.line(&line, points);
                }
                line.clear();
                too_long = false;
                complete = read;
            }
        }
        if complete == 0 {
            return Ok(false);
        }
        self.offset += complete;
        Ok(true)
    }

    fn line(&mut self, line: &[u8], points: bool) {
        let line = line.trim_ascii();
        if line.is_empty() {
            return;
        }
        if line.starts_with(br#"{"event":"iter""#) {
            if points {
                match serde_json::from_slice::<Event>(line) {
                    Ok(Event::Iter(m)) => self.step(&m),
                    _ => self.malformed += 1,
                }
            } else {
                match serde_json::from_slice::<IterLite>(line) {
                    Ok(m) => self.advance(m.iter, m.tokens, m.iter_ms),
                    Err(_) => self.malformed += 1,
                }
            }
            return;
        }
        match serde_json::from_slice::<Event>(line) {
            Ok(event) => self.apply(event),
            Err(_) => self.malformed += 1,
        }
    }

    fn advance(&mut self, step: u64, tokens: usize, iter_ms: Option<f64>) {
        self.going_on();
        self.last_step = step;
        self.tokens += tokens as f64;
        self.secs += iter_ms.filter(|x| x.is_finite()).unwrap_or(0.0) / 1000.0;
    }

    fn step(&mut self, m: &StepMetrics) {
        self.advance(m.iter, m.tokens, Some(m.iter_ms));
        self.train.push(self.point(m.iter, m.loss));
    }

    fn point(&self, step: u64, value: f64) -> Point {
        Point {
            step,
            tokens: self.tokens,
            secs: self.secs,
            value,
        }
    }

    /// One event of the history.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Run(record) => {
                self.started = self.started.or(Some(record.started));
                self.record = Some(*record);
            }
            Event::Start(start) => {
                if self.start.is_some() {
                    self.close_segment();
                }
                if let RunStart::Train(info) = &start {
                    self.resume_at(info.start_iter);
                }
                self.segment_from = self.secs;
                self.done = None;
                self.interrupted = false;
                self.diverged = false;
                self.start = Some(start);
            }
            Event::Iter(m) => self.step(&m),
            Event::Eval { iter, test_loss } => {
                let p = self.point(iter, test_loss);
                self.test.push(p);
            }
            Event::Epoch(m) => {
                self.going_on();
                let epoch = m.epoch as u64;
                self.secs += m.secs;
                self.last_step = epoch;
                self.train.push(self.point(epoch, m.train_loss));
                self.test.push(self.point(epoch, m.val_loss));
                self.accuracy.push(self.point(epoch, m.val_acc));
                self.epochs.push(m);
            }
            Event::Checkpoint { iter, .. } => self.saved.push((iter, self.tokens, self.secs)),
            Event::Interrupted { .. } => self.interrupted = true,
            Event::Diverged { .. } => self.diverged = true,
            Event::Done(done) => self.done = Some(done),
            _ => {}
        }
    }

    /// The segment's wall time: its own when its end said it (counted from the process's
    /// start, so a reopened segment's end covers all of it), else its training time
    /// (it was killed) on top of what it had when it was opened again.
    fn segment_wall(&self) -> f64 {
        match &self.done {
            Some(RunDone::Train(s)) => s.wall_s,
            _ => self.reopened_wall + self.secs - self.segment_from,
        }
    }

    /// The segment so far counts into the wall time before the next.
    fn close_segment(&mut self) {
        self.wall_before += self.segment_wall();
        self.segment_from = self.secs;
        self.reopened_wall = 0.0;
    }

    /// A step after the run's end: a run stopped in the dashboard and started again goes
    /// on in the same process and segment, so what ended is open again.
    fn going_on(&mut self) {
        if self.done.is_some() || self.interrupted {
            self.reopened_wall = self.segment_wall();
            self.segment_from = self.secs;
            self.done = None;
            self.interrupted = false;
        }
    }

    /// A segment continues from step `at`: what an earlier one wrote past it goes.
    fn resume_at(&mut self, at: u64) {
        if self.start.is_none() {
            return;
        }
        self.train.retain(|p| p.step <= at);
        self.test.retain(|p| p.step <= at);
        self.saved.retain(|s| s.0 <= at);
        let from = self
            .saved
            .last()
            .map(|s| (s.1, s.2))
            .or_else(|| self.train.last().map(|p| (p.tokens, p.secs)));
        (self.tokens, self.secs) = from.unwrap_or((0.0, 0.0));
        self.last_step = self.last_step.min(at);
    }

    pub fn kind(&self) -> RunKind {
        match (&self.record, &self.start) {
            (Some(r), _) => r.kind,
            (None, Some(RunStart::Finetune(_))) => RunKind::Classifier,
            _ => RunKind::LanguageModel,
        }
    }

    /// The last step (a classifier's: epoch) reached.
    pub fn steps(&self) -> u64 {
        self.last_step
    }

    pub fn tokens(&self) -> f64 {
        self.tokens
    }

    /// Training time so far (the steps', a classifier's epochs'), in seconds.
    pub fn train_secs(&self) -> f64 {
        self.secs
    }

    /// Wall time over every segment: each that ended says its own (preparation and
    /// evaluation included); one killed counts its training time.
    pub fn wall_secs(&self) -> f64 {
        self.wall_before + self.segment_wall()
    }

    /// How the run stands: `running` when the history has no end and `locked` (another
    /// process holds the folder).
    pub fn status(&self, locked: bool) -> Status {
        if self.diverged {
            Status::Diverged
        } else if self.interrupted {
            Status::Interrupted
        } else if self.done.is_some() {
            Status::Finished
        } else if locked {
            Status::Running
        } else {
            Status::Interrupted
        }
    }
}

/// A history as the dashboard restores it when the run is opened.
impl RestoredRun {
    pub fn of(path: PathBuf, h: &RunHistory) -> Self {
        let points = |ps: &[Point]| ps.iter().map(|p| (p.step, p.value)).collect();
        let classifier = matches!(h.start, Some(RunStart::Finetune(_)));
        RestoredRun {
            path,
            start: h.start.clone(),
            train: if classifier {
                Vec::new()
            } else {
                points(&h.train)
            },
            test: if classifier {
                Vec::new()
            } else {
                points(&h.test)
            },
            epochs: h.epochs.clone(),
            done: h.done.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
