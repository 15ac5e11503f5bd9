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
pub const MAX_LINE: usize = 1 << 20;

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

    pub fn name(&self) -> String {
        match self {
            Source::Stdin => "standard input".into(),
            Source::File(path) => path.display().to_string(),
        }
    }

    /// The folder a relative checkpoint path in the stream may be relative to.
    pub fn folder(&self) -> Option<PathBuf> {
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
pub fn is_finetuning(event: &Event) -> bool {
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
pub struct Lines {
    partial: Vec<u8>,
    overlong: bool,
    /// Lines seen so far (the next line's number is this + 1).
    pub count: u64,
}

impl Lines {
    /// The lines completed by `bytes`: their text, or why it cannot be read.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<(u64, Result<String, String>)> {
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
    pub fn finish(&mut self) -> Vec<(u64, Result<String, String>)> {
        let mut out = Vec::new();
        if !self.partial.is_empty() || self.overlong {
            self.take(&[], true, &mut out);
        }
        out
    }

    /// Forgets a line in progress (the file was truncated or replaced).
    pub fn reset(&mut self) {
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
pub struct StreamHandle {
    stop: Arc<AtomicBool>,
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How often a followed file is looked at when nothing new was in it.
pub const POLL: Duration = Duration::from_millis(200);

/// Starts reading `source` on its own thread, sending what it reads to `tx`.
pub fn spawn(source: Source, tx: Sender<StreamMsg>) -> std::io::Result<StreamHandle> {
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
pub fn follow(path: &Path, tx: &Sender<StreamMsg>, stop: &AtomicBool, poll: Duration) {
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
mod tests {
    use super::*;
    use crate::protocol::StepMetrics;

    #[test]
    fn lines_are_cut_however_the_bytes_arrive() {
        let mut lines = Lines::default();
        assert!(lines.feed(b"{\"a\":").is_empty());
        let got = lines.feed(b"1}\n\nsecond\nthi");
        assert_eq!(
            got,
            vec![
                (1, Ok("{\"a\":1}".to_string())),
                (2, Ok(String::new())),
                (3, Ok("second".to_string()))
            ]
        );
        assert_eq!(lines.finish(), vec![(4, Ok("thi".to_string()))]);
        assert!(lines.finish().is_empty());
        let got = lines.feed(b"\xff\xfe\n");
        assert_eq!(got, vec![(5, Err("not UTF-8 text".to_string()))]);
    }

    #[test]
    fn an_overlong_line_is_reported_once_and_skipped() {
        let mut lines = Lines::default();
        let chunk = vec![b'x'; MAX_LINE / 2 + 1];
        assert!(lines.feed(&chunk).is_empty());
        assert!(lines.feed(&chunk).is_empty());
        assert!(lines.feed(&chunk).is_empty());
        let got = lines.feed(b"xx\nok\n");
        assert_eq!(got.len(), 2);
        assert!(got[0].1.as_ref().unwrap_err().contains("longer than 1 MiB"));
        assert_eq!(got[1], (2, Ok("ok".to_string())));
    }

    #[test]
    fn events_unknown_fields_and_malformed_lines() {
        // gptdash's own line, with a field it may add some day.
        let line = r#"{"event":"iter","iter":3,"loss":2.5,"iter_ms":10.0,"tokens_per_s":100.0,"lr":0.001,"grad_norm":1.0,"tokens":64,"new_field":[1,2]}"#;
        let Some(Parsed::Event(e)) = parse_line(line, 1) else {
            panic!()
        };
        let Event::Iter(m) = *e else { panic!() };
        assert_eq!((m.iter, m.loss, m.tokens), (3, 2.5, 64));
        // Another trainer's: iter and loss alone.
        let Some(Parsed::Event(e)) = parse_line(r#"{"event":"iter","iter":7,"loss":1.5}"#, 2)
        else {
            panic!()
        };
        let Event::Iter(StepMetrics {
            iter: 7,
            iter_ms,
            lr,
            tokens: 0,
            ..
        }) = *e
        else {
            panic!()
        };
        assert!(iter_ms.is_nan() && lr.is_nan());
        // A start with nothing but the step count.
        let Some(Parsed::Event(e)) = parse_line(r#"{"event":"start","max_iters":500}"#, 3) else {
            panic!()
        };
        let Event::Start(RunStart::Train(info)) = *e else {
            panic!()
        };
        assert_eq!(info.max_iters, 500);
        // Fine-tuning's start is fine-tuning's, not a training start with defaults.
        let finetune = r#"{"event":"start","device":"cpu","threads":2,"model":"m","params":1,"data":"d","samples":10,"train_examples":8,"val_examples":2,"train_positive":0.5,"val_positive":0.5,"epochs":1}"#;
        let Some(Parsed::Event(e)) = parse_line(finetune, 4) else {
            panic!()
        };
        assert!(matches!(*e, Event::Start(RunStart::Finetune(_))) && is_finetuning(&e));
        // An epoch without its fields is malformed; a benchmark is not shown.
        assert!(matches!(
            parse_line(r#"{"event":"epoch","epoch":1}"#, 5),
            Some(Parsed::Malformed { line: 5, .. })
        ));
        assert_eq!(
            parse_line(r#"{"event":"bench","bench":"generate"}"#, 5),
            Some(Parsed::Ignored("bench".into()))
        );
        assert_eq!(
            parse_line(r#"{"event":"telemetry","x":1}"#, 6),
            Some(Parsed::Ignored("telemetry".into()))
        );
        assert_eq!(parse_line("   ", 7), None);
        for (bad, why) in [
            ("not json", "not JSON"),
            (r#"{"loss":1}"#, "no \"event\""),
            (r#"{"event":"iter","loss":1}"#, "iter: missing field `iter`"),
            (r#"{"event":"eval","iter":"x","test_loss":1}"#, "eval:"),
            ("[1,2]", "no \"event\""),
        ] {
            match parse_line(bad, 9) {
                Some(Parsed::Malformed { line: 9, error }) => {
                    assert!(error.contains(why), "{bad}: {error}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    fn drain(rx: &crossbeam_channel::Receiver<StreamMsg>) -> Vec<StreamMsg> {
        let mut got = Vec::new();
        while let Ok(m) = rx.recv_timeout(Duration::from_millis(300)) {
            got.push(m);
        }
        got
    }

    fn iters(msgs: &[StreamMsg]) -> Vec<u64> {
        msgs.iter()
            .filter_map(|m| match m {
                StreamMsg::Line(Parsed::Event(e)) => match **e {
                    Event::Iter(m) => Some(m.iter),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    fn iter_line(i: u64) -> String {
        format!("{{\"event\":\"iter\",\"iter\":{i},\"loss\":1.0}}\n")
    }

    #[test]
    fn a_followed_file_may_appear_late_grow_be_truncated_and_replaced() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.jsonl");
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (path.clone(), stop.clone());
        let reader = std::thread::spawn(move || follow(&p, &tx, &s, Duration::from_millis(20)));
        assert_eq!(drain(&rx), vec![StreamMsg::Status(StreamStatus::Waiting)]);
        // It appears, and grows — a line written in two pieces is read once, whole.
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(iter_line(1).as_bytes()).unwrap();
        file.write_all(b"{\"event\":\"iter\",\"it").unwrap();
        file.flush().unwrap();
        let got = drain(&rx);
        assert_eq!(got[0], StreamMsg::Status(StreamStatus::Following));
        assert_eq!(iters(&got), vec![1]);
        file.write_all(b"er\":2,\"loss\":1.0}\ngarbage\n").unwrap();
        let got = drain(&rx);
        assert_eq!(iters(&got), vec![2]);
        assert!(got
            .iter()
            .any(|m| matches!(m, StreamMsg::Line(Parsed::Malformed { line: 3, .. }))));
        // Truncated (a new run writing the same file): read from the start.
        file.set_len(0).unwrap();
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        file.write_all(iter_line(1).as_bytes()).unwrap();
        let got = drain(&rx);
        assert!(
            got.contains(&StreamMsg::Status(StreamStatus::Truncated)),
            "{got:?}"
        );
        assert_eq!(iters(&got), vec![1]);
        // Replaced (rotated): the new file is read from its start.
        let new = dir.path().join("new.jsonl");
        std::fs::write(&new, format!("{}{}", iter_line(10), iter_line(11))).unwrap();
        std::fs::rename(&new, &path).unwrap();
        let got = drain(&rx);
        assert!(
            got.contains(&StreamMsg::Status(StreamStatus::Replaced)),
            "{got:?}"
        );
        assert_eq!(iters(&got), vec![10, 11]);
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
    }

    #[test]
    fn a_stream_is_read_to_its_end() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let input = format!(
            "{}{}{{\"event\":\"iter\",\"iter\":3,\"loss\":1}}",
            iter_line(1),
            iter_line(2)
        );
        read_all(input.as_bytes(), &tx, &AtomicBool::new(false));
        let got: Vec<StreamMsg> = rx.try_iter().collect();
        assert_eq!(iters(&got), vec![1, 2, 3]);
        assert_eq!(got.last(), Some(&StreamMsg::Status(StreamStatus::Ended)));
    }
}
