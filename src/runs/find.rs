//! Finding runs: a run is a folder holding a history (`events.jsonl`); runs are looked
//! for under the runs roots (`checkpoints/`, and the folders `[runs] folders` names),
//! in their sub-folders too (a sweep's members), never through a link (`checkpoints/
//! <corpus>` points at a run listed already) or into gptdash's hidden temporaries.
use std::path::{Path, PathBuf};

use crate::checkpoint::HISTORY_FILE;

/// How deep under a root runs are looked for (a sweep in a folder of its own: 2).
const DEPTH: usize = 3;

/// A run folder found under a root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    /// Its path relative to its root (`small-20261202-1`, `sweep-lr/lr=0.001-seed=1`).
    pub name: String,
    pub dir: PathBuf,
}

/// The runs roots: `checkpoints/` (relative to the current folder), then the folders
/// `[runs] folders` names.
pub fn roots(settings: &crate::config::RunsSettings) -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from(crate::output::DEFAULT_PARENT)];
    roots.extend(
        settings
            .folders
            .iter()
            .map(|f| crate::paths::expand_home(&f.to_string_lossy())),
    );
    roots
}

/// The runs under these roots, by name; a root that does not exist has none. A run
/// under two roots (one inside the other, or one root spelt two ways) is listed once,
/// by the first root that has it.
pub fn find(roots: &[PathBuf]) -> Vec<Found> {
    let mut found = Vec::new();
    for root in roots {
        if root.join(HISTORY_FILE).is_file() {
            // A root that is itself a run (`--root checkpoints/base`).
            let name = root.file_name().unwrap_or(root.as_os_str());
            found.push(Found {
                name: name.to_string_lossy().into_owned(),
                dir: root.clone(),
            });
        }
        walk(root, root, 0, &mut found);
    }
    let mut seen = std::collections::HashSet::new();
    found.retain(|f| seen.insert(f.dir.canonicalize().unwrap_or_else(|_| f.dir.clone())));
    found.sort();
    found
}

fn walk(root: &Path, dir: &Path, depth: usize, found: &mut Vec<Found>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        // Links are not followed: file_type does not look through them.
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        if path.join(HISTORY_FILE).is_file() {
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            found.push(Found { name, dir: path });
        } else if depth + 1 < DEPTH {
            walk(root, &path, depth + 1, found);
        }
    }
}

/// The run `what` names: a folder holding a history, or a run's name under a root (its
/// whole name, or the one run whose name ends with it).
pub fn resolve(what: &str, roots: &[PathBuf]) -> anyhow::Result<Found> {
    let path = crate::paths::expand_home(what);
    if path.join(HISTORY_FILE).is_file() {
        let dir = crate::output::resolve_link(&path);
        return Ok(Found {
            name: what.to_string(),
            dir,
        });
    }
    let all = find(roots);
    if let Some(f) = all.iter().find(|f| f.name == what) {
        return Ok(f.clone());
    }
    let ends: Vec<&Found> = all.iter().filter(|f| f.name.ends_with(what)).collect();
    match ends.as_slice() {
        [one] => Ok((*one).clone()),
        [] => anyhow::bail!(
            "run {what}: no such run folder, and no run of that name under {}; gptdash runs lists them",
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        many => anyhow::bail!(
            "run {what}: {} runs end with that name ({}); give more of it",
            many.len(),
            many.iter()
                .take(4)
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_found_once_never_through_links_or_hidden_folders() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("checkpoints");
        for run in ["a", "sweep/m1", "sweep/m2", ".a.tmp", "deep/er/still/no"] {
            std::fs::create_dir_all(root.join(run)).unwrap();
            std::fs::write(root.join(run).join(HISTORY_FILE), "").unwrap();
        }
        std::os::unix::fs::symlink(root.join("a"), root.join("latest")).unwrap();
        // One root inside another, and one spelt another way: each run once.
        let roots = [
            root.clone(),
            root.join("sweep"),
            dir.path().join("checkpoints/./sweep/.."),
        ];
        let names: Vec<String> = find(&roots).into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["a", "sweep/m1", "sweep/m2"]);
        // A root that is a run is one.
        let names: Vec<String> = find(&[root.join("a")])
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["a"]);
        let m1 = resolve("m1", &roots).unwrap();
        assert_eq!(m1.dir, root.join("sweep/m1"));
        assert!(resolve("m", &roots).is_err(), "no run's name ends with m");
    }
}
