//! The checkpoint directory: written atomically and durably (a temporary copy synced,
//! then swapped into place), one writer at a time (a lock beside it), and put back when a
//! save was killed between its two renames ([`recover`]). A folder holding anything
//! gptdash did not write is never replaced or deleted ([`replaceable`]).
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::schema::{CHECKPOINT_FILES, COMPLETE, EXPORT_FILES};

/// Whether a save may replace (or clean up) `dir`: it is missing, or holds only plain
/// files with the names gptdash writes (a checkpoint's, a classifier's, an export's).
/// A folder with anything else — a user's notes, a subfolder — is never replaced.
pub fn replaceable(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return !dir.exists();
    };
    entries.into_iter().all(|e| {
        e.is_ok_and(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            e.file_type().is_ok_and(|t| t.is_file())
                && (CHECKPOINT_FILES.contains(&name.as_str())
                    || EXPORT_FILES.contains(&name.as_str()))
        })
    })
}

/// A link made by [`crate::output::point_latest`] resolved to the run folder it names (so a run resumed
/// through `checkpoints/<name>` saves into its own folder, not over the link); any other
/// path as it is.
pub fn resolve_link(dir: &Path) -> PathBuf {
    // `checkpoints/small/` (a shell's completion) names the link itself.
    let mut dir: PathBuf = dir.components().collect();
    // A chain of links is followed to its end (a few steps: a loop stops there too).
    for _ in 0..8 {
        match std::fs::read_link(&dir) {
            Ok(target) if target.is_relative() => {
                dir = dir
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(target)
                    .components()
                    .collect()
            }
            Ok(target) => dir = target.components().collect(),
            Err(_) => break,
        }
    }
    dir
}

/// A checkpoint directory's parent and the hidden siblings a save uses: `.NAME.tmp` (the
/// new copy being written), `.NAME.old` (the previous one, moved aside for the swap),
/// `.NAME.lock` (held by the process writing it).
pub struct Siblings {
    pub parent: PathBuf,
    pub tmp: PathBuf,
    pub old: PathBuf,
    pub lock: PathBuf,
}

pub fn siblings(dir: &Path) -> Result<Siblings> {
    let name = dir
        .file_name()
        .ok_or_else(|| anyhow!("checkpoint path {} has no directory name", dir.display()))?
        .to_string_lossy()
        .into_owned();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(Siblings {
        tmp: parent.join(format!(".{name}.tmp")),
        old: parent.join(format!(".{name}.old")),
        lock: parent.join(format!(".{name}.lock")),
        parent,
    })
}

/// Flushes a file or directory to the disk.
fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot flush {} to the disk", path.display()))
}

/// Fault injection for the tests (the `fault-injection` cargo feature, which only `make
/// test` turns on; release builds have none): `GPTDASH_FAULT_SAVE=<point>` kills the
/// process (SIGKILL, as a power cut or the OOM killer would) at that point of a save —
/// `written` (files written, not synced), `synced` (the new copy complete), `aside`
/// (between the two renames: the previous copy moved aside, the new one not yet in
/// place), `renamed` (the new copy in place, the previous not yet removed).
#[cfg(feature = "fault-injection")]
fn fault(point: &str) {
    if injected(point) {
        // SAFETY: kill(2) on our own pid with a valid signal number has no preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
fn fault(_point: &str) {}

/// With the `fault-injection` feature: `GPTDASH_FAULT_SAVE=<point>` makes that step of a
/// save fail (`swap`: the previous checkpoint cannot be moved aside, as a mount point
/// cannot), or kills the process there ([`fault`]).
#[cfg(feature = "fault-injection")]
fn injected(point: &str) -> bool {
    std::env::var("GPTDASH_FAULT_SAVE").is_ok_and(|p| p == point)
}

#[cfg(not(feature = "fault-injection"))]
fn injected(_point: &str) -> bool {
    false
}

/// The lock on a checkpoint directory: one process writes it at a time. Taken when a
/// run starts (so a second writer and an unwritable place fail before any training) and
/// held until the run ends; a save by a process that holds it goes ahead. Guards for one
/// folder in one process are counted: the lock is released when the last one drops.
#[derive(Debug)]
pub struct OutputLock {
    key: PathBuf,
}

/// The locks this process holds: the open lock file and how many guards share it.
fn held_locks(
) -> std::sync::MutexGuard<'static, std::collections::HashMap<PathBuf, (std::fs::File, usize)>> {
    type Held = std::sync::Mutex<std::collections::HashMap<PathBuf, (std::fs::File, usize)>>;
    static HELD: std::sync::OnceLock<Held> = std::sync::OnceLock::new();
    HELD.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

impl OutputLock {
    /// Locks `dir` for writing: its parent is created and must be writable, and no other
    /// process may hold it.
    pub(crate) fn acquire(dir: &Path) -> Result<Self> {
        match Self::try_acquire(dir)? {
            Ok(lock) => Ok(lock),
            Err(pid) => Err(being_written(dir, &pid)),
        }
    }

    /// [`OutputLock::acquire`], with another process holding the lock as `Ok(Err(its
    /// pid))` rather than an error.
    pub(crate) fn try_acquire(dir: &Path) -> Result<std::result::Result<Self, String>> {
        let dir = &resolve_link(dir);
        let s = siblings(dir)?;
        std::fs::create_dir_all(&s.parent)
            .with_context(|| format!("cannot create {}", s.parent.display()))?;
        if dir.is_file() {
            bail!("{} is a file, not a checkpoint directory", dir.display());
        }
        let key = lock_key(&s);
        let mut held = held_locks();
        if let Some((_, count)) = held.get_mut(&key) {
            *count += 1;
            return Ok(Ok(Self { key }));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&s.lock)
            .with_context(|| {
                format!(
                    "cannot write checkpoints to {}: {} is not writable",
                    dir.display(),
                    s.parent.display()
                )
            })?;
        // A reader that only looks (the Runs tab, `runs`, a check before a run) holds a
        // shared lock for an instant: a few tries tell it from a writer. Other threads
        // may look at the held locks meanwhile.
        drop(held);
        let mut tries = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if tries < 10 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    // Another thread of this process may have taken it meanwhile.
                    if let Some((_, count)) = held_locks().get_mut(&key) {
                        *count += 1;
                        return Ok(Ok(Self { key }));
                    }
                    let pid = std::fs::read_to_string(&s.lock).unwrap_or_default();
                    return Ok(Err(pid.trim().to_string()));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(anyhow!(e).context(format!("cannot lock {}", s.lock.display())))
                }
            }
        }
        let _ = file.set_len(0);
        let _ = (&file).write_all(std::process::id().to_string().as_bytes());
        held_locks().insert(key.clone(), (file, 1));
        Ok(Ok(Self { key }))
    }
}

impl OutputLock {
    /// Whether this process holds the lock on `dir` already.
    pub(crate) fn held_here(dir: &Path) -> bool {
        let dir = resolve_link(dir);
        siblings(&dir).is_ok_and(|s| held_locks().contains_key(&lock_key(&s)))
    }
}

/// The process id another gptdash writing `dir` wrote in its lock (`?` when it cannot be
/// read), or `None` when no other process holds the lock. Only looks.
pub(crate) fn other_writer(dir: &Path) -> Option<String> {
    let dir = resolve_link(dir);
    if OutputLock::held_here(&dir) {
        return None;
    }
    let s = siblings(&dir).ok()?;
    let file = std::fs::File::open(&s.lock).ok()?;
    match file.try_lock_shared() {
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&s.lock).unwrap_or_default();
            let pid = pid.trim();
            Some(if pid.is_empty() {
                "?".into()
            } else {
                pid.to_string()
            })
        }
        _ => None,
    }
}

/// The error for a folder another gptdash (process `pid`) is writing.
pub(crate) fn being_written(dir: &Path, pid: &str) -> anyhow::Error {
    // Read between the writer's truncate and its write: no number yet.
    let pid = if pid.is_empty() { "?" } else { pid };
    anyhow!(
        "{} is being written by another gptdash (process {pid}); wait for it to end or choose another output directory",
        dir.display()
    )
}

/// Whether a gptdash process (this one or another) holds `dir`'s lock — a run writing
/// it. Only looks: never creates the lock file.
pub(crate) fn is_being_written(dir: &Path) -> bool {
    OutputLock::held_here(dir) || other_writer(dir).is_some()
}

/// The process-wide name of a folder's lock: its lock file, with the parent canonical.
fn lock_key(s: &Siblings) -> PathBuf {
    std::fs::canonicalize(&s.parent)
        .unwrap_or_else(|_| s.parent.clone())
        .join(s.lock.file_name().unwrap_or_default())
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let mut held = held_locks();
        if let Some((_, count)) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key); // closing the file releases the lock
            }
        }
    }
}

/// Puts a checkpoint back at `dir` when a save was interrupted between its two renames:
/// the new copy if it was complete, else the previous one. `true` when it did. Call with
/// the lock held (or when no writer can be running).
fn recover_locked(dir: &Path, s: &Siblings) -> Result<bool> {
    if dir.exists() {
        return Ok(false);
    }
    // Only a copy gptdash wrote is put back: a user's `.NAME.old` stays where it is.
    let from = if s.tmp.join(COMPLETE).is_file() && replaceable(&s.tmp) {
        &s.tmp
    } else if s.old.is_dir() && replaceable(&s.old) {
        &s.old
    } else {
        return Ok(false);
    };
    std::fs::rename(from, dir).with_context(|| {
        format!(
            "cannot restore the checkpoint {} from {}",
            dir.display(),
            from.display()
        )
    })?;
    let _ = sync(&s.parent);
    Ok(true)
}

/// Restores a checkpoint whose save was interrupted (see [`write_atomically`]) before it
/// is read: `true` when it did. Waits for a writer that holds the lock.
pub fn recover(dir: &Path) -> Result<bool> {
    let dir = &resolve_link(dir);
    if dir.exists() {
        return Ok(false);
    }
    let s = siblings(dir)?;
    if !s.tmp.join(COMPLETE).is_file() && !s.old.is_dir() {
        return Ok(false);
    }
    for _ in 0..50 {
        match OutputLock::acquire(dir) {
            Ok(_lock) => return recover_locked(dir, &s),
            Err(_) if dir.exists() => return Ok(false),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    bail!(
        "{} is being written by another process; try again when it is done",
        dir.display()
    )
}

/// Writes a checkpoint directory atomically and durably: `write` fills `.NAME.tmp`
/// beside `dir`; every file is synced, then a completion marker; the previous `dir`
/// moves aside to `.NAME.old`, the new copy takes its place, the parent is synced, the
/// previous copy is removed. Killed at any instant, the path holds the previous or the
/// new checkpoint, or (between the two renames) the next [`recover`] or save puts one
/// back. If `write` fails, `dir` is left as it was. Stale temporaries are removed; the
/// directory is locked for the save unless this process holds its lock already.
pub fn write_atomically(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    // A link gptdash made (`checkpoints/<name>`) is saved through, into its run folder.
    let dir = &resolve_link(dir);
    let s = siblings(dir)?;
    let _lock = OutputLock::acquire(dir)?;
    recover_locked(dir, &s)?;
    for stale in [&s.tmp, &s.old] {
        if stale.symlink_metadata().is_ok() {
            if !stale.is_dir() || !replaceable(stale) {
                bail!(
                    "cannot save {}: {} is in the way and holds files gptdash did not write; move it elsewhere",
                    dir.display(),
                    stale.display()
                );
            }
            std::fs::remove_dir_all(stale)
                .with_context(|| format!("cannot remove the stale {}", stale.display()))?;
        }
    }
    std::fs::create_dir(&s.tmp).with_context(|| format!("cannot create {}", s.tmp.display()))?;
    let written = write(&s.tmp).and_then(|()| {
        fault("written");
        for entry in std::fs::read_dir(&s.tmp)? {
            let path = entry?.path();
            if path.is_file() {
                sync(&path)?;
            }
        }
        let marker = s.tmp.join(COMPLETE);
        std::fs::write(&marker, b"")
            .with_context(|| format!("cannot write {}", marker.display()))?;
        sync(&marker)?;
        sync(&s.tmp)
    });
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&s.tmp);
        return Err(e.context(format!(
            "checkpoint {} was not written (the previous one is untouched)",
            dir.display()
        )));
    }
    fault("synced");
    let had_previous = dir.exists();
    if had_previous {
        // Checked again now, not only when the run started: a file put into the folder
        // since (a user's notes) is never deleted with the previous checkpoint.
        let aside = if injected("swap") {
            Err(std::io::Error::other("injected failure"))
        } else if !replaceable(dir) {
            Err(std::io::Error::other(
                "it holds files gptdash did not write, which a save never deletes",
            ))
        } else {
            std::fs::rename(dir, &s.old)
        };
        if let Err(e) = aside {
            return Err(saved_beside(dir, &s, e));
        }
        fault("aside");
    }
    if let Err(e) = std::fs::rename(&s.tmp, dir) {
        if had_previous {
            let _ = std::fs::rename(&s.old, dir);
        }
        return Err(saved_beside(dir, &s, e));
    }
    sync(&s.parent)?;
    fault("renamed");
    if had_previous {
        let _ = std::fs::remove_dir_all(&s.old);
    }
    Ok(())
}

/// The swap into `dir` failed: the new checkpoint, complete in `.NAME.tmp`, is moved to
/// a visible folder beside it (`NAME-saved-N`) so the run is not lost, and the error says
/// where it is.
fn saved_beside(dir: &Path, s: &Siblings, why: std::io::Error) -> anyhow::Error {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    for n in 1..10_000 {
        let beside = s.parent.join(format!("{name}-saved-{n}"));
        if beside.symlink_metadata().is_ok() {
            continue;
        }
        if std::fs::rename(&s.tmp, &beside).is_ok() {
            let _ = std::fs::remove_file(beside.join(COMPLETE));
            unshare(&beside.join(super::HISTORY_FILE));
            let _ = sync(&s.parent);
            return anyhow!(
                "cannot replace {} ({why}); the checkpoint was saved to {} instead",
                dir.display(),
                beside.display()
            );
        }
        break;
    }
    anyhow!(
        "cannot replace {} ({why}); the complete checkpoint is in {}",
        dir.display(),
        s.tmp.display()
    )
}

/// Makes `path` a file of its own when it is a hard link to another (the run's history,
/// linked into a save that ended beside its folder: the run goes on writing its own,
/// the copy beside keeps what it had). Best effort.
fn unshare(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    if !path
        .symlink_metadata()
        .is_ok_and(|m| m.is_file() && m.nlink() > 1)
    {
        return;
    }
    let mut copy = path.as_os_str().to_owned();
    copy.push(".copy");
    let copy = PathBuf::from(copy);
    if std::fs::copy(path, &copy).is_ok() && std::fs::rename(&copy, path).is_ok() {
        return;
    }
    let _ = std::fs::remove_file(&copy);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::schema::{CONFIG_FILE, MODEL_FILE};

    #[test]
    fn atomic_write_replaces_or_keeps_the_previous_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        write_atomically(&dir, |tmp| Ok(std::fs::write(tmp.join(CONFIG_FILE), "1")?)).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap(), "1");
        // A failing write leaves the old checkpoint as it was and no temp directory behind.
        let err = write_atomically(&dir, |tmp| {
            std::fs::write(tmp.join(CONFIG_FILE), "half")?;
            bail!("disk full")
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("untouched"));
        assert_eq!(std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap(), "1");
        // A successful write replaces it.
        write_atomically(&dir, |tmp| Ok(std::fs::write(tmp.join(MODEL_FILE), "2")?)).unwrap();
        assert!(!dir.join(CONFIG_FILE).exists());
        assert_eq!(std::fs::read_to_string(dir.join(MODEL_FILE)).unwrap(), "2");
        let mut leftovers: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        leftovers.sort();
        assert_eq!(
            leftovers,
            [".ckpt.lock", "ckpt"],
            "only the checkpoint (and its lock file)"
        );
        assert!(dir.join(COMPLETE).is_file());
    }

    /// The states a save killed at any instant can leave, and what the next reader finds.
    #[test]
    fn an_interrupted_save_is_recovered() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        let s = siblings(&dir).unwrap();
        let write = |path: &Path, text: &str, complete: bool| {
            std::fs::create_dir_all(path).unwrap();
            std::fs::write(path.join(CONFIG_FILE), text).unwrap();
            if complete {
                std::fs::write(path.join(COMPLETE), "").unwrap();
            }
        };
        // Between the renames: the previous copy aside, the new one complete → the new one.
        write(&s.old, "previous", true);
        write(&s.tmp, "new", true);
        assert!(recover(&dir).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap(),
            "new"
        );
        // The previous copy aside and the new one incomplete → the previous one.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&s.old).unwrap();
        write(&s.old, "previous", true);
        write(&s.tmp, "half", false);
        assert!(recover(&dir).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap(),
            "previous"
        );
        // A first save killed while writing: nothing to recover, nothing invented.
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!recover(&dir).unwrap() && !dir.exists());
        // The next save removes the stale temporary and writes normally.
        write_atomically(&dir, |tmp| {
            Ok(std::fs::write(tmp.join(CONFIG_FILE), "next")?)
        })
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap(),
            "next"
        );
        assert!(!s.tmp.exists() && !s.old.exists());
        // A complete checkpoint is left alone.
        assert!(!recover(&dir).unwrap());
    }

    #[test]
    fn a_save_never_deletes_files_it_did_not_write() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        let s = siblings(&dir).unwrap();
        write_atomically(&dir, |tmp| Ok(std::fs::write(tmp.join(CONFIG_FILE), "1")?)).unwrap();
        // A file the user put into the folder since the run started: the new checkpoint
        // goes beside it, and the error says where.
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let history = dir.join(crate::checkpoint::HISTORY_FILE);
        std::fs::write(&history, "a\n").unwrap();
        let msg = format!(
            "{:#}",
            write_atomically(&dir, |tmp| {
                // The run's history, carried by a link as a save does.
                std::fs::hard_link(&history, tmp.join(crate::checkpoint::HISTORY_FILE))?;
                Ok(std::fs::write(tmp.join(CONFIG_FILE), "2")?)
            })
            .unwrap_err()
        );
        assert!(
            msg.contains("saved to") && msg.contains("ckpt-saved-1"),
            "{msg}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
            "mine"
        );
        let beside = root.path().join("ckpt-saved-1");
        assert_eq!(
            std::fs::read_to_string(beside.join(CONFIG_FILE)).unwrap(),
            "2"
        );
        // The copy beside keeps the history so far; the run's own goes on alone.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&history)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"b\n"))
            .unwrap();
        let copy = beside.join(crate::checkpoint::HISTORY_FILE);
        assert_eq!(std::fs::read_to_string(copy).unwrap(), "a\n");
        std::fs::remove_file(&history).unwrap();
        // A user's folder where a save keeps its temporaries is neither adopted nor removed.
        std::fs::remove_file(dir.join("notes.txt")).unwrap();
        std::fs::create_dir(&s.old).unwrap();
        std::fs::write(s.old.join("thesis.tex"), "x").unwrap();
        let msg = format!(
            "{:#}",
            write_atomically(&dir, |tmp| Ok(std::fs::write(tmp.join(CONFIG_FILE), "3")?))
                .unwrap_err()
        );
        assert!(msg.contains("in the way"), "{msg}");
        assert!(s.old.join("thesis.tex").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            !recover(&dir).unwrap(),
            "a user's .ckpt.old is not put in place"
        );
        assert!(s.old.join("thesis.tex").is_file());
    }

    #[test]
    fn an_output_lock_is_reentrant_in_one_process_and_names_unwritable_places() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        let outer = OutputLock::acquire(&dir).unwrap();
        // Saves inside a run that holds the lock go ahead.
        write_atomically(&dir, |tmp| Ok(std::fs::write(tmp.join("a"), "1")?)).unwrap();
        // Guards are counted: the lock outlives an inner guard and ends with the last.
        let inner = OutputLock::acquire(&dir).unwrap();
        drop(inner);
        let lock_file = root.path().join(".out.lock");
        let probe = std::fs::File::open(&lock_file).unwrap();
        assert!(
            matches!(probe.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
            "the outer guard still holds the lock"
        );
        drop(outer);
        assert!(probe.try_lock().is_ok(), "the last guard released the lock");
        drop(probe);
        let file = root.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = format!("{:#}", OutputLock::acquire(&file).unwrap_err());
        assert!(err.contains("is a file"), "{err}");
        let err = format!(
            "{:#}",
            OutputLock::acquire(&file.join("below")).unwrap_err()
        );
        assert!(err.contains("cannot create"), "{err}");
    }
}
