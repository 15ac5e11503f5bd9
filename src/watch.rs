//! `gptdash watch`: the events of a run that trains elsewhere — gptdash's own
//! `train --json` lines, or another trainer's through `scripts/gptdash_log.py` — read
//! from standard input or by following a file as it grows. The reader runs on its own
//! thread and sends [`StreamMsg`]s; the dashboard's Train tab shows the events as it
//! shows its own worker's. A line that is not an event is counted and shown, never
//! fatal; fields the dashboard does not know are ignored.
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::protocol::{Event, RunDone, RunStart};

/// Longest line read; a longer one is reported as malformed and skipped.
pub(crate) const MAX_LINE: usize = 1 << 20;

/// Where the events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stdin,
    /// A file followed as it grows (`tail -F`): it may not exist yet, and may be
    /// truncated or replaced while watched.
    File(PathBuf),
}

impl Source {
    /// `-` is standard input; anything else a file.
    pub fn parse(arg: &str) -> Source {
        if arg == "-" {
            Source::Stdin
        } else {
            Source::File(crate::paths::expand_home(arg))
        }
    }

    /// A source that can never be a stream is refused before the dashboard starts: a
    /// folder (the run's `run.jsonl` inside it is meant).
    pub fn check(&self) -> anyhow::Result<()> {
        if let Source::File(path) = self {
            if path.is_dir() {
                let hint = std::fs::read_dir(path)
                    .ok()
                    .and_then(|entries| {
                        entries
                            .filter_map(|e| e.ok().map(|e| e.path()))
                            .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
                    })
                    .unwrap_or_else(|| path.join("run.jsonl"));
                anyhow::bail!(
                    "watch {}: is a folder, not a stream of events; give the JSON-lines file a run writes, e.g. gptdash watch {}",
                    path.display(),
                    hint.display()
                );
            }
        }
        Ok(())
    }

    pub(crate) fn name(&self) -> String {
        match self {
            Source::Stdin => "standard input".into(),
            Source::File(path) => path.display().to_string(),
        }
    }

    /// The folder a relative checkpoint path in the stream may be relative to.
    pub(crate) fn folder(&self) -> Option<PathBuf> {
        match self {
            Source::Stdin => None,
            Source::File(path) => path.parent().map(Path::to_path_buf),
        }
    }
}

/// One line of the stream, read.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A run's event, for the Train tab (training) or the Classify tab (fine-tuning).
    Event(Box<Event>),
    /// A well-formed event the watcher does not show (generation, a benchmark, the
    /// dashboard's own), or one it does not know: its name.
    Ignored(String),
    /// Not an event: the line's number and what is wrong with it.
    Malformed { line: u64, error: String },
}

/// What the reader thread reports.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamMsg {
    Line(Parsed),
    Status(StreamStatus),
}

/// The source's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display)]
pub enum StreamStatus {
    /// Reading (a file: following it).
    #[strum(serialize = "following")]
    Following,
    /// The file does not exist (yet).
    #[strum(serialize = "waiting for the file")]
    Waiting,
    /// The file shrank: read again from its start.
    #[strum(serialize = "truncated, read from the start")]
    Truncated,
    /// Another file took the path (rotated): read from its start.
    #[strum(serialize = "replaced, read from the start")]
    Replaced,
    /// Standard input ended.
    #[strum(serialize = "ended")]
    Ended,
    /// The source cannot be read.
    #[strum(serialize = "unreadable")]
    Unreadable,
}

/// Reads one line of the stream; `None` for a blank one. Only the `event` name and the
/// fields the event needs are read; other fields are ignored.
pub fn parse_line(text: &str, line: u64) -> Option<Parsed> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let malformed = |error: String| Parsed::Malformed { line, error };
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Some(malformed(format!("not JSON: {e}"))),
    };
    let Some(name) = value
        .get("event")
        .and_then(|e| e.as_str())
        .map(String::from)
    else {
        return Some(malformed("no \"event\" name".into()));
    };
    if !SHOWN.contains(&name.as_str()) {
        return Some(Parsed::Ignored(name));
    }
    match serde_json::from_value(value) {
        Ok(e) => Some(Parsed::Event(Box::new(e))),
        Err(e) => Some(malformed(format!("{name}: {e}"))),
    }
}

/// Whether an event belongs to a fine-tuning run (the Classify tab shows those).
pub(crate) fn is_finetuning(event: &Event) -> bool {
    matches!(
        event,
        Event::Start(RunStart::Finetune(_)) | Event::Epoch(_) | Event::Done(RunDone::Finetune(_))
    )
}

/// The events of a run that the dashboard shows: a training run's on the Train tab, a
/// fine-tuning run's (start, epoch, done) on the Classify tab.
const SHOWN: &[&str] = &[
    "prepare",
    "start",
    "iter",
    "gpu",
    "eval",
    "checkpoint",
    "epoch",
    "diverged",
    "interrupted",
    "done",
    "log",
    "error",
];

/// Cuts bytes into lines, however they arrive; a line longer than [`MAX_LINE`] is
/// reported (once) and skipped up to its end.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    partial: Vec<u8>,
    overlong: bool,
    /// Lines seen so far (the next line's number is this + 1).
    pub count: u64,
}

impl Lines {
    /// The lines completed by `bytes`: their text, or why it cannot be read.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<(u64, Result<String, String>)> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.take(&rest[..end], true, &mut out);
            rest = &rest[end + 1..];
        }
        self.take(rest, false, &mut out);
        out
    }

    /// The last line when the stream ends without a newline.
    pub(crate) fn finish(&mut self) -> Vec<(u64, Result<String, String>)> {
        let mut out = Vec::new();
        if !self.partial.is_empty() || self.overlong {
            self.take(&[], true, &mut out);
        }
        out
    }

    /// Forgets a line in progress (the file was truncated or replaced).
    pub(crate) fn reset(&mut self) {
        self.partial.clear();
        self.overlong = false;
    }

    fn take(&mut self, bytes: &[u8], ends: bool, out: &mut Vec<(u64, Result<String, String>)>) {
        if !self.overlong {
            self.partial.extend_from_slice(bytes);
            if self.partial.len() > MAX_LINE {
                self.partial = Vec::new();
                self.overlong = true;
            }
        }
        if !ends {
            return;
        }
        self.count += 1;
        let line = std::mem::take(&mut self.partial);
        let read = if std::mem::take(&mut self.overlong) {
            Err(format!("longer than {} MiB, skipped", MAX_LINE >> 20))
        } else {
            String::from_utf8(line).map_err(|_| "not UTF-8 text".to_string())
        };
        out.push((self.count, read));
    }
}

/// Stops the reader thread when dropped (a followed file's reader polls it; a blocked
/// read of standard input ends with the process).
pub(crate) struct StreamHandle {
    stop: Arc<AtomicBool>,
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How often a followed file is looked at when nothing new was in it.
pub(crate) const POLL: Duration = Duration::from_millis(200);

/// Starts reading `source` on its own thread, sending what it reads to `tx`.
pub(crate) fn spawn(source: Source, tx: Sender<StreamMsg>) -> std::io::Result<StreamHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("gptdash-stream".into())
        .spawn(move || match source {
            Source::Stdin => read_all(std::io::stdin().lock(), &tx, &flag),
            Source::File(path) => follow(&path, &tx, &flag, POLL),
        })?;
    Ok(StreamHandle { stop })
}

/// Sends the lines of `lines` read; `false` when the dashboard is gone.
fn send_lines(tx: &Sender<StreamMsg>, lines: Vec<(u64, Result<String, String>)>) -> bool {
    for (number, read) in lines {
        let parsed = match read {
            Ok(text) => parse_line(&text, number),
            Err(error) => Some(Parsed::Malformed {
                line: number,
                error,
            }),
        };
        if let Some(p) = parsed {
            if tx.send(StreamMsg::Line(p)).is_err() {
                return false;
            }
        }
    }
    true
}

/// Reads a stream to its end (standard input, a pipe).
pub fn read_all(mut input: impl Read, tx: &Sender<StreamMsg>, stop: &AtomicBool) {
    let mut lines = Lines::default();
    let mut buf = vec![0u8; 64 << 10];
    let _ = tx.send(StreamMsg::Status(StreamStatus::Following));
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if !send_lines(tx, lines.feed(&buf[..n])) {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                let _ = tx.send(StreamMsg::Status(StreamStatus::Unreadable));
                return;
            }
        }
    }
    if send_lines(tx, lines.finish()) {
        let _ = tx.send(StreamMsg::Status(StreamStatus::Ended));
    }
}

/// The identity of a file (device and inode), to notice that another file took a path.
fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Follows `path` as `tail -F` does, until `stop`: waits for it to exist, reads what is
/// appended, starts again from the top when it is truncated or replaced.
pub(crate) fn follow(path: &Path, tx: &Sender<StreamMsg>, stop: &AtomicBool, poll: Duration) {
    let mut open: Option<(std::fs::File, (u64, u64), u64)> = None;
    let mut lines = Lines::default();
    let mut buf = vec![0u8; 64 << 10];
    let mut told: Option<StreamStatus> = None;
    // Says a condition once, when it changes; `false` when the dashboard is gone.
    let tell = |told: &mut Option<StreamStatus>, status: StreamStatus| -> bool {
        if *told == Some(status) {
            return true;
        }
        *told = Some(status);
        tx.send(StreamMsg::Status(status)).is_ok()
    };
    while !stop.load(Ordering::Relaxed) {
        let Some((file, id, pos)) = &mut open else {
            match std::fs::File::open(path).and_then(|f| Ok((f.metadata()?, f))) {
                Ok((meta, file)) if meta.is_file() => {
                    open = Some((file, identity(&meta), 0));
                    lines.reset();
                    if !tell(&mut told, StreamStatus::Following) {
                        return;
                    }
                    continue;
                }
                Ok(_) => {
                    if !tell(&mut told, StreamStatus::Unreadable) {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !tell(&mut told, StreamStatus::Waiting) {
                        return;
                    }
                }
                Err(_) => {
                    if !tell(&mut told, StreamStatus::Unreadable) {
                        return;
                    }
                }
            }
            std::thread::sleep(poll);
            continue;
        };
        match file.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                *pos += n as u64;
                if !tell(&mut told, StreamStatus::Following)
                    || !send_lines(tx, lines.feed(&buf[..n]))
                {
                    return;
                }
                continue; // more may be waiting
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                open = None;
                if !tell(&mut told, StreamStatus::Unreadable) {
                    return;
                }
                std::thread::sleep(poll);
                continue;
            }
        }
        // At the end of what is there: was the file truncated, or replaced?
        match std::fs::metadata(path) {
            Ok(meta) if identity(&meta) != *id => {
                open = None;
                if !tell(&mut told, StreamStatus::Replaced) {
                    return;
                }
                continue;
            }
            Ok(meta) if meta.len() < *pos => {
                if file.seek(SeekFrom::Start(0)).is_err() {
                    open = None;
                    continue;
                }
                *pos = 0;
                lines.reset();
                if !tell(&mut told, StreamStatus::Truncated) {
                    return;
                }
                continue;
            }
            // Deleted: keep the open file (it may still be written); a new file at the
            // path is noticed as a replacement.
            _ => {}
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests;
