//! Where runs write, so that nothing a user made is destroyed. A run writes only into a
//! folder that is new, empty, or a checkpoint of the run being resumed; a gptdash
//! checkpoint is replaced only when asked (`--overwrite`), a folder holding anything else
//! never. By default every run gets a new folder, `checkpoints/<name>-<YYYYMMDD>-<n>`,
//! and `checkpoints/<name>` becomes a link to the latest one (unless a real folder of
//! that name is there, which is left alone).
use std::path::{Path, PathBuf};

/// Where runs save when no output folder is given (relative to the working directory).
pub(crate) const DEFAULT_PARENT: &str = "checkpoints";

use anyhow::{bail, Context, Result};

pub(crate) use crate::checkpoint::{replaceable, resolve_link};
use crate::checkpoint::{siblings, OutputLock, CHECKPOINT_FILES, CONFIG_FILE, HISTORY_FILE};

/// What a folder holds, as far as writing into it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    Missing,
    /// A file (or something else that is not a folder) is there.
    NotAFolder,
    /// A link to nothing: where it points.
    BrokenLink(PathBuf),
    Empty,
    /// A gptdash checkpoint and nothing else.
    Checkpoint,
    /// Only a run's history: a run that saved no checkpoint (killed before its first).
    History,
    /// Anything else: the first few names in it.
    Other(Vec<String>),
}

/// Looks at `dir` without changing it.
pub(crate) fn survey(dir: &Path) -> Result<Found> {
    if !dir.exists() {
        return Ok(match std::fs::read_link(dir) {
            Ok(target) => Found::BrokenLink(target),
            Err(_) => Found::Missing,
        });
    }
    if !dir.is_dir() {
        return Ok(Found::NotAFolder);
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        names.push((name, is_file));
    }
    if names.is_empty() {
        return Ok(Found::Empty);
    }
    let ours = names
        .iter()
        .all(|(name, is_file)| *is_file && CHECKPOINT_FILES.contains(&name.as_str()));
    let config = dir.join(CONFIG_FILE);
    let has_record = std::fs::read_to_string(&config)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get("format_version").is_some() && v.get("model").is_some());
    if ours && has_record {
        return Ok(Found::Checkpoint);
    }
    if ours && names.iter().all(|(n, _)| n == HISTORY_FILE) && is_run_history(dir) {
        return Ok(Found::History);
    }
    names.sort();
    let mut shown: Vec<String> = names
        .iter()
        .filter(|(n, f)| !(*f && CHECKPOINT_FILES.contains(&n.as_str())))
        .map(|(n, f)| if *f { n.clone() } else { format!("{n}/") })
        .collect();
    if shown.is_empty() {
        // Only checkpoint file names, but no gptdash record in config.json (or, alone,
        // an events.jsonl that is not a run's history).
        let name = if names.iter().any(|(n, _)| n == CONFIG_FILE) {
            CONFIG_FILE
        } else {
            names[0].0.as_str()
        };
        shown.push(format!("{name} that gptdash did not write"));
    }
    let more = shown.len().saturating_sub(4);
    shown.truncate(4);
    if more > 0 {
        shown.push(format!("and {more} more"));
    }
    Ok(Found::Other(shown))
}

/// Whether `dir`'s `events.jsonl` is a gptdash run's history: empty (a run killed before
/// its first line), beginning with the `run` record gptdash writes first (whole, or torn
/// by a kill), or a first line that is a gptdash event — an object naming its `event` —
/// (an older gptdash's history, a watched stream saved as a run). A user's own file of
/// that name is not.
fn is_run_history(dir: &Path) -> bool {
    use std::io::Read;
    const RECORD: &[u8] = br#"{"event":"run","#;
    let Ok(file) = crate::data::files::open_regular(&dir.join(HISTORY_FILE), "history", u64::MAX)
    else {
        return false;
    };
    let mut head = Vec::new();
    if file.take(1 << 20).read_to_end(&mut head).is_err() {
        return false;
    }
    let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
    head.is_empty()
        || first.starts_with(RECORD)
        || serde_json::from_slice::<serde_json::Value>(first)
            .is_ok_and(|v| v.get("event").is_some_and(serde_json::Value::is_string))
}

/// Whether `dir` lies inside the folder `outer` (at any depth; `outer` must exist).
pub(crate) fn inside(dir: &Path, outer: &Path) -> bool {
    let Ok(outer) = outer.canonicalize() else {
        return false;
    };
    // The nearest part of `dir` that exists, made canonical, then the rest of it.
    let mut existing = dir.to_path_buf();
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p.to_path_buf(),
            _ => existing = PathBuf::from("."),
        }
    }
    existing
        .canonicalize()
        .is_ok_and(|e| (e.starts_with(&outer) && e != outer) || (e == outer && dir != existing))
}

/// Whether two paths name the same folder (both must exist to be the same).
pub fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Refuses, before any work, an output folder a run would destroy: one holding anything
/// but a gptdash checkpoint, and a checkpoint unless `overwrite`. `what` names the
/// folder in the user's words: a flag (`--out`), whose message then names the flags
/// that help, or a dashboard action (`save to`). Then the [`preflight`] checks.
pub(crate) fn check_target(dir: &Path, what: &str, overwrite: bool) -> Result<()> {
    check_target_for(dir, what, overwrite, true)
}

/// [`check_target`]; `resumable`: the command can continue a run (`train --resume`),
/// so the message offers it.
pub(crate) fn check_target_for(
    dir: &Path,
    what: &str,
    overwrite: bool,
    resumable: bool,
) -> Result<()> {
    let flags = what.starts_with("--");
    // A run another gptdash is writing is named as such, whatever it holds so far.
    if let Some(pid) = crate::checkpoint::folder::other_writer(dir) {
        return Err(crate::checkpoint::folder::being_written(dir, &pid));
    }
    match survey(dir)? {
        Found::Missing | Found::Empty => {}
        Found::Checkpoint | Found::History if overwrite => {}
        Found::History => bail!(
            "{what} {}: holds the history of a run that saved no checkpoint; choose a new folder{} (nothing was written)",
            dir.display(),
            if flags { ", or pass --overwrite to start again there" } else { "" }
        ),
        Found::Checkpoint if flags => bail!(
            "{what} {}: holds a gptdash checkpoint; choose a new folder,{} or pass --overwrite to replace it (nothing was written)",
            dir.display(),
            if resumable { " continue that run with --resume," } else { "" }
        ),
        Found::Checkpoint => bail!(
            "{what} {}: holds a gptdash checkpoint, which the dashboard never replaces; choose a new folder (nothing was written)",
            dir.display()
        ),
        Found::NotAFolder => bail!(
            "{what} {}: is a file, not a folder; choose a new folder (nothing was written)",
            dir.display()
        ),
        Found::BrokenLink(target) => bail!(
            "{what} {}: is a link to {}, which does not exist; remove the link or choose another folder (nothing was written)",
            dir.display(),
            target.display()
        ),
        Found::Other(names) => bail!(
            "{what} {}: the folder holds {} — not a gptdash checkpoint; choose a new or empty folder (nothing was written{})",
            dir.display(),
            names.join(", "),
            if flags { "; --overwrite replaces gptdash checkpoints only" } else { "" }
        ),
    }
    preflight(dir, what)
}

/// Checks that a save into `dir` can land: its parent can be written (a save writes a
/// sibling `.NAME.tmp` and renames it into place), and `dir` is not a mount point (which
/// cannot be renamed, so could not be replaced).
pub(crate) fn preflight(dir: &Path, what: &str) -> Result<()> {
    if dir.is_dir() && is_mount_point(dir) {
        bail!(
            "{what} {}: is a mount point, and a save replaces its folder by renaming, which a mount point does not allow; give a folder inside it, e.g. {}",
            dir.display(),
            dir.join("run").display()
        );
    }
    let s = siblings(dir).with_context(|| format!("{what} {}", dir.display()))?;
    let parent = &s.parent;
    // The hidden folders a save uses beside it must be gptdash's own (or absent): a
    // user's `.NAME.old` is never adopted or removed, so it would stop the final save.
    for hidden in [&s.tmp, &s.old] {
        if hidden.symlink_metadata().is_ok() && !(hidden.is_dir() && replaceable(hidden)) {
            bail!(
                "{what} {}: {} beside it holds files gptdash did not write, and a save needs that name; move it elsewhere (nothing was written)",
                dir.display(),
                hidden.display()
            );
        }
    }
    if parent.exists() && !parent.is_dir() {
        bail!(
            "{what} {}: {} is a file, not a folder; move it or give another place",
            dir.display(),
            parent.display()
        );
    }
    std::fs::create_dir_all(parent).with_context(|| {
        format!(
            "{what} {}: cannot create {}",
            dir.display(),
            parent.display()
        )
    })?;
    let probe = s
        .tmp
        .with_extension(format!("probe-{}", std::process::id()));
    std::fs::create_dir(&probe).with_context(|| {
        format!(
            "{what} {}: {} is not writable (a save writes beside the folder)",
            dir.display(),
            parent.display()
        )
    })?;
    let _ = std::fs::remove_dir(&probe);
    Ok(())
}

/// Whether `dir` is the root of a mounted filesystem.
pub(crate) fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let Some(parent) = dir.parent() else {
        return true; // `/`
    };
    match (std::fs::metadata(&dir), std::fs::metadata(parent)) {
        (Ok(d), Ok(p)) => d.dev() != p.dev() || d.ino() == p.ino(),
        _ => false,
    }
}

/// Whether `target` is a run folder name for `stem`: `<stem>-YYYYMMDD-N`.
fn is_run_folder(target: &Path, stem: &str) -> bool {
    if target.components().count() != 1 {
        return false;
    }
    let name = target.to_string_lossy();
    let Some(rest) = name.strip_prefix(stem).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    match rest.split_once('-') {
        Some((date, n)) => {
            date.len() == 8
                && date.bytes().all(|b| b.is_ascii_digit())
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Today's date (UTC) as `YYYYMMDD`.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}{m:02}{d:02}")
}

/// The proleptic Gregorian date of a day counted from 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A new run's folder under `parent`, `<stem>-<YYYYMMDD>-<n>` with the first `n` that is
/// neither on disk nor being written by another process, locked for this run.
pub(crate) fn claim_fresh(parent: &Path, stem: &str) -> Result<(PathBuf, OutputLock)> {
    if parent.exists() && !parent.is_dir() {
        bail!(
            "runs are saved under {}/, but a file of that name is here; move it, or give --out DIR",
            parent.display()
        );
    }
    let date = today();
    for n in 1..100_000 {
        let dir = parent.join(format!("{stem}-{date}-{n}"));
        if dir.symlink_metadata().is_ok() {
            continue;
        }
        // Not a name this process holds already (a run that has not saved yet).
        if OutputLock::held_here(&dir) {
            continue;
        }
        match OutputLock::try_acquire(&dir)? {
            Ok(lock) if dir.symlink_metadata().is_err() => return Ok((dir, lock)),
            _ => continue,
        }
    }
    bail!(
        "{}: no free folder name {stem}-{date}-N; clear out old runs",
        parent.display()
    )
}

/// Points `link` (`checkpoints/<stem>`) at `target`, a run folder beside it: `true` when
/// it did. A real file or folder at `link` is a user's, left alone (`false`).
pub(crate) fn point_latest(link: &Path, target: &Path) -> Result<bool> {
    let name = target
        .file_name()
        .with_context(|| format!("{} has no folder name", target.display()))?;
    let link_name = link
        .file_name()
        .with_context(|| format!("{} has no name", link.display()))?
        .to_string_lossy()
        .into_owned();
    if let Ok(meta) = link.symlink_metadata() {
        // Only a link gptdash made (to one of its run folders) is moved; anything else
        // at that name, a user's own link included, is left alone.
        let ours = meta.file_type().is_symlink()
            && std::fs::read_link(link).is_ok_and(|t| is_run_folder(&t, &link_name));
        if !ours {
            return Ok(false);
        }
    }
    let parent = link.parent().unwrap_or(Path::new("."));
    let tmp = parent.join(format!(".{link_name}.link-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(name, &tmp)
        .with_context(|| format!("cannot link {} to {}", link.display(), target.display()))?;
    std::fs::rename(&tmp, link).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot link {} to {}", link.display(), target.display())
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::MODEL_FILE;

    fn checkpoint_in(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join(CONFIG_FILE),
            r#"{"format_version": 1, "model": {}}"#,
        )
        .unwrap();
        std::fs::write(dir.join(MODEL_FILE), "w").unwrap();
    }

    #[test]
    fn folders_are_told_apart() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path();
        assert_eq!(survey(&d.join("none")).unwrap(), Found::Missing);
        std::fs::create_dir(d.join("empty")).unwrap();
        assert_eq!(survey(&d.join("empty")).unwrap(), Found::Empty);
        checkpoint_in(&d.join("ck"));
        assert_eq!(survey(&d.join("ck")).unwrap(), Found::Checkpoint);
        // A checkpoint with a file of the user's beside it is not ours to replace.
        checkpoint_in(&d.join("mixed"));
        std::fs::write(d.join("mixed/notes.txt"), "mine").unwrap();
        assert_eq!(
            survey(&d.join("mixed")).unwrap(),
            Found::Other(vec!["notes.txt".into()])
        );
        // Checkpoint names without gptdash's record.
        std::fs::create_dir(d.join("hf")).unwrap();
        std::fs::write(d.join("hf").join(CONFIG_FILE), "{}").unwrap();
        assert!(matches!(survey(&d.join("hf")).unwrap(), Found::Other(_)));
        std::fs::create_dir_all(d.join("user/sub")).unwrap();
        assert_eq!(
            survey(&d.join("user")).unwrap(),
            Found::Other(vec!["sub/".into()])
        );
        // A run's history alone (killed before its first checkpoint), and a user's own
        // file of that name.
        std::fs::create_dir(d.join("run")).unwrap();
        let record = crate::protocol::Event::Run(Box::new(crate::protocol::RunRecord {
            kind: crate::protocol::RunKind::LanguageModel,
            started: 1,
            settings: Some(Box::default()),
            finetune: None,
            resumed_at: 0,
        }));
        let torn = record.to_json();
        let start = crate::protocol::Event::Start(crate::protocol::RunStart::Train(Box::new(
            crate::protocol::RunInfo::example(10),
        )));
        for text in [
            format!("{}\n", record.to_json()),
            torn[..torn.len() / 2].to_string(),
            String::new(),
            format!("{}\n", start.to_json()),
        ] {
            std::fs::write(d.join("run").join(HISTORY_FILE), &text).unwrap();
            assert_eq!(survey(&d.join("run")).unwrap(), Found::History, "{text}");
        }
        std::fs::create_dir(d.join("log")).unwrap();
        std::fs::write(d.join("log").join(HISTORY_FILE), "{\"step\": 1}\n").unwrap();
        assert_eq!(
            survey(&d.join("log")).unwrap(),
            Found::Other(vec![format!("{HISTORY_FILE} that gptdash did not write")])
        );
    }

    #[test]
    fn targets_that_would_lose_data_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path();
        check_target(&d.join("new"), "--out", false).unwrap();
        checkpoint_in(&d.join("ck"));
        let msg = format!(
            "{:#}",
            check_target(&d.join("ck"), "--out", false).unwrap_err()
        );
        assert!(
            msg.contains("--out") && msg.contains("--overwrite"),
            "{msg}"
        );
        check_target(&d.join("ck"), "--out", true).unwrap();
        std::fs::create_dir_all(d.join("user/photos")).unwrap();
        std::fs::write(d.join("user/thesis.tex"), "x").unwrap();
        for overwrite in [false, true] {
            let msg = format!(
                "{:#}",
                check_target(&d.join("user"), "--out", overwrite).unwrap_err()
            );
            assert!(
                msg.contains("photos/") && msg.contains("thesis.tex"),
                "{msg}"
            );
        }
        assert!(d.join("user/thesis.tex").is_file());
        let file = d.join("file");
        std::fs::write(&file, "x").unwrap();
        let msg = format!("{:#}", check_target(&file, "--out", true).unwrap_err());
        assert!(msg.contains("is a file, not a folder"), "{msg}");
        std::os::unix::fs::symlink("nowhere", d.join("dangling")).unwrap();
        let msg = format!(
            "{:#}",
            check_target(&d.join("dangling"), "--out", false).unwrap_err()
        );
        assert!(
            msg.contains("is a link to nowhere, which does not exist"),
            "{msg}"
        );
        // In the dashboard's words: no flags.
        let msg = format!(
            "{:#}",
            check_target(&d.join("ck"), "save to", false).unwrap_err()
        );
        assert!(msg.contains("save to") && !msg.contains("--"), "{msg}");
    }

    #[test]
    fn a_users_hidden_folder_where_a_save_works_is_refused_up_front() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path();
        std::fs::create_dir(d.join(".run.old")).unwrap();
        std::fs::write(d.join(".run.old/backup.tar"), "x").unwrap();
        let msg = format!(
            "{:#}",
            check_target(&d.join("run"), "--out", false).unwrap_err()
        );
        assert!(msg.contains(".run.old") && msg.contains("move it"), "{msg}");
        // A file where the parent folder should be.
        std::fs::write(d.join("checkpoints"), "x").unwrap();
        let msg = format!(
            "{:#}",
            claim_fresh(&d.join("checkpoints"), "small").unwrap_err()
        );
        assert!(msg.contains("--out"), "{msg}");
        assert!(inside(&d.join("a/b"), d) && !inside(d, &d.join("a")));
        std::fs::create_dir(d.join("ck")).unwrap();
        assert!(inside(&d.join("ck/x/y"), &d.join("ck")) && !inside(&d.join("ck"), &d.join("ck")));
        // Links are followed to their end.
        std::os::unix::fs::symlink("ck", d.join("l1")).unwrap();
        std::os::unix::fs::symlink("l1", d.join("l2")).unwrap();
        assert_eq!(resolve_link(&d.join("l2")), d.join("ck"));
    }

    #[test]
    fn only_folders_of_gptdash_files_are_replaceable() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path();
        assert!(replaceable(&d.join("none")));
        checkpoint_in(&d.join("ck"));
        assert!(replaceable(&d.join("ck")));
        std::fs::write(d.join("ck/notes.txt"), "mine").unwrap();
        assert!(!replaceable(&d.join("ck")));
        std::fs::create_dir_all(d.join("sub/inner")).unwrap();
        assert!(!replaceable(&d.join("sub")));
    }

    #[test]
    fn mount_points_are_known() {
        assert!(is_mount_point(Path::new("/")));
        assert!(
            is_mount_point(Path::new("/proc")),
            "/proc is a mount on Linux"
        );
        let root = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(root.path()));
        let msg = format!("{:#}", preflight(Path::new("/proc"), "--out").unwrap_err());
        assert!(
            msg.contains("mount point") && msg.contains("/proc/run"),
            "{msg}"
        );
    }

    #[test]
    fn fresh_folders_do_not_collide_and_the_latest_link_follows() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path();
        let (a, lock_a) = claim_fresh(d, "small").unwrap();
        assert!(a
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("small-{}-", today())));
        std::fs::create_dir(&a).unwrap();
        let (b, _lock_b) = claim_fresh(d, "small").unwrap();
        assert_ne!(a, b);
        drop(lock_a);
        let link = d.join("small");
        assert!(point_latest(&link, &a).unwrap());
        assert!(same_folder(&link, &a));
        std::fs::create_dir(&b).unwrap();
        assert!(point_latest(&link, &b).unwrap());
        assert!(same_folder(&link, &b));
        assert_eq!(resolve_link(&link), b);
        assert_eq!(resolve_link(&b), b);
        // A link of the user's own is left alone, and so is a trailing slash's path.
        let theirs = d.join("theirs");
        std::os::unix::fs::symlink("/tmp", &theirs).unwrap();
        assert!(!point_latest(&theirs, &b).unwrap());
        assert_eq!(std::fs::read_link(&theirs).unwrap(), Path::new("/tmp"));
        assert_eq!(resolve_link(&d.join("small/")), b);
        // A real folder of that name is the user's.
        let real = d.join("mine");
        std::fs::create_dir(&real).unwrap();
        assert!(!point_latest(&real, &b).unwrap());
        assert!(real.is_dir() && !real.symlink_metadata().unwrap().is_symlink());
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_423), (2025, 12, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
