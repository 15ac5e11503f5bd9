//! Writing a run's history: its events as JSON lines in `events.jsonl`, in the run's
//! folder, flushed after every step's events and synced with every checkpoint.
//!
//! A checkpoint save replaces the whole folder ([`crate::checkpoint::write_atomically`]);
//! the history is carried into each new copy as a hard link to the same file, so lines
//! written after the save land in the folder that is there now. Where a link cannot be
//! made (a file system without them), the history is copied and the writer reopens the
//! copy after the save ([`History::follow`]).
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::checkpoint::HISTORY_FILE;
use crate::protocol::Event;

/// An open history, appended to.
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    out: BufWriter<File>,
    /// The file's identity (device, inode), to notice a save that copied it.
    id: (u64, u64),
    /// Why the history could not follow a save: the next [`keep`] closes it and says so
    /// (the save itself goes ahead — the weights matter more than the curve).
    lost: Option<String>,
    /// Lines for the run's log, said with the next events (a save elsewhere that could
    /// not take the history along).
    notes: Vec<String>,
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

impl History {
    /// Opens `dir/events.jsonl` for appending, creating the folder (a run's folder holds
    /// its history from its first step, before its first checkpoint) and the file. A
    /// last line cut short (the process was killed while writing it) is ended, so the
    /// next line starts on a line of its own; readers skip the torn one.
    pub fn open(dir: &Path) -> Result<History> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(HISTORY_FILE);
        let mut file = crate::data::files::open_append(&path)
            .with_context(|| format!("cannot write the run's history {}", path.display()))?;
        let id = identity(&file.metadata()?);
        if !ends_with_newline(&path)? {
            file.write_all(b"\n")?;
        }
        Ok(History {
            path,
            out: BufWriter::new(file),
            id,
            lost: None,
            notes: Vec::new(),
        })
    }

    /// A new history in `dir` (created, as [`History::open`] does): one that was
    /// there — the run this one replaces with `--overwrite` — is replaced.
    pub fn create(dir: &Path) -> Result<History> {
        let path = dir.join(HISTORY_FILE);
        if path.symlink_metadata().is_ok() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot replace the history {}", path.display()))?;
        }
        Self::open(dir)
    }

    /// A new history in `dir` holding `from`'s complete lines (a run resumed into
    /// another folder takes its history along).
    pub fn create_from(dir: &Path, from: &Path) -> Result<History> {
        let mut history = Self::create(dir)?;
        if from.is_file() {
            let bytes = crate::data::files::read_regular(from, "history")?;
            let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            history.out.write_all(&bytes[..end])?;
            history.out.flush()?;
        }
        Ok(history)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the events, one line each, and hands them to the kernel (a crash of
    /// gptdash loses none; a crash of the machine loses what was not synced).
    pub fn record(&mut self, events: &[Event]) -> Result<()> {
        if let Some(why) = &self.lost {
            anyhow::bail!("{why}");
        }
        for event in events {
            if matches!(
                event,
                Event::State { .. } | Event::Prepare { .. } | Event::Generated { .. }
            ) {
                continue;
            }
            self.out.write_all(event.to_json().as_bytes())?;
            self.out.write_all(b"\n")?;
        }
        self.out
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Flushes and syncs the file to the disk.
    pub fn sync(&mut self) -> Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        Ok(())
    }

    /// Puts the history into `tmp`, a checkpoint being written: the same file linked
    /// when `tmp` replaces the history's own folder (`same_folder`), else a copy (a save
    /// elsewhere takes the history so far). An error leaves nothing half copied; the
    /// save goes on without the history, and the caller, once the save landed, calls
    /// [`History::carried`] with the outcome.
    pub fn carry_into(&mut self, tmp: &Path, same_folder: bool) -> Result<()> {
        let to = tmp.join(HISTORY_FILE);
        let carried = self
            .out
            .flush()
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                if same_folder && std::fs::hard_link(&self.path, &to).is_ok() {
                    return Ok(());
                }
                std::fs::copy(&self.path, &to).map(|_| ()).with_context(|| {
                    format!("cannot copy {} into {}", self.path.display(), tmp.display())
                })
            });
        if carried.is_err() {
            let _ = std::fs::remove_file(&to);
        }
        carried
    }

    /// After a save landed in `dir`: a history that could not be carried into its own
    /// folder's new copy is lost from then on; one that could not go with a save
    /// elsewhere is said. Either way the next [`keep`] tells the run's log.
    pub fn carried(&mut self, carried: Result<()>, same_folder: bool, dir: &Path) {
        match carried {
            Ok(()) => {}
            Err(e) if same_folder => self.lost = Some(format!("{e:#}")),
            Err(e) => self.notes.push(format!(
                "the checkpoint in {} has no copy of the run's history: {e:#}",
                dir.display()
            )),
        }
    }

    /// After a save of the history's folder: when the file there is no longer the one
    /// written (the save copied it), appends to the new one from now on; one that cannot
    /// be reopened is lost from then on (the next [`keep`] says so).
    pub fn follow(&mut self) {
        if self.lost.is_some() {
            return;
        }
        let now = std::fs::metadata(&self.path).map(|m| identity(&m));
        if now.is_ok_and(|id| id == self.id) {
            return;
        }
        let reopened = crate::data::files::open_append(&self.path)
            .with_context(|| format!("cannot write the run's history {}", self.path.display()))
            .and_then(|file| Ok((identity(&file.metadata()?), file)));
        match reopened {
            Ok((id, file)) => {
                self.id = id;
                self.out = BufWriter::new(file);
            }
            Err(e) => self.lost = Some(format!("{e:#}")),
        }
    }
}

/// Writes a run's events to its history, when it has one open: synced when the run
/// ends (done, interrupted, diverged). A history that cannot be written any more is
/// closed, with a line in the log saying so — the run goes on.
pub fn keep(history: &mut Option<History>, events: &mut Vec<Event>) {
    let Some(h) = history.as_mut() else {
        return;
    };
    events.extend(h.notes.drain(..).map(Event::log));
    let ends = events.iter().any(|e| {
        matches!(
            e,
            Event::Done(_) | Event::Interrupted { .. } | Event::Diverged { .. }
        )
    });
    let written = h
        .record(events)
        .and_then(|()| if ends { h.sync() } else { Ok(()) });
    if let Err(e) = written {
        events.push(Event::log(format!(
            "the run's history ({}) is no longer written: {e:#}",
            h.path().display()
        )));
        *history = None;
    }
}

/// Whether the file is empty or ends with a newline.
fn ends_with_newline(path: &Path) -> Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}
