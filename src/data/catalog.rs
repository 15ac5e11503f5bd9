//! Named corpora (`--corpus imdb`): the catalog in `data/catalog.toml`, compiled in, and
//! how each entry's files become a corpus on this machine — downloaded once from the
//! Hugging Face hub (checked against the hub's size and sha256, see [`crate::data::hub`])
//! or put by hand in [`manual_dir`], then read in place (text files) or assembled once
//! into a text file in gptdash's cache (parquet).
use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::config::DataMode;

mod assemble;
#[cfg(test)]
use assemble::is_article_title;
pub use assemble::{assemble, clean, for_each_string, ARTICLE_MARKER};

/// How a corpus's text divides into documents (`documents` mode).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) enum DocSplit {
    /// One document per non-empty line, trimmed.
    Lines,
    /// Documents separated by a line holding exactly this marker (TinyStories'
    /// `<|endoftext|>`); each trimmed, empty ones skipped.
    Marker(String),
}

const CATALOG: &str = include_str!("../../data/catalog.toml");

/// How an entry's files hold text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Read {
    Text,
    Parquet,
}

/// How text becomes documents (see the catalog's header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Documents {
    Lines,
    Marker,
    Rows,
    Articles,
    Whole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Clean {
    Imdb,
}

/// One file of an entry, with its size in MB as the hub lists it (for display).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    pub path: String,
    pub mb: f64,
}

/// One named corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub name: String,
    #[serde(default)]
    pub builtin: bool,
    #[serde(default)]
    pub repo: String,
    #[serde(default)]
    pub revision: String,
    #[serde(default = "default_read")]
    pub read: Read,
    #[serde(default)]
    pub column: Option<String>,
    #[serde(default = "default_documents")]
    pub documents: Documents,
    #[serde(default)]
    pub marker: Option<String>,
    #[serde(default)]
    pub clean: Option<Clean>,
    #[serde(default)]
    pub dedup: bool,
    #[serde(default)]
    pub shuffle_seed: Option<u64>,
    pub mode: DataMode,
    pub description: String,
    pub licence: String,
    /// The text's size once read, in MB.
    pub text_mb: f64,
    #[serde(default)]
    pub files: Vec<CatalogFile>,
}

fn default_read() -> Read {
    Read::Text
}

fn default_documents() -> Documents {
    Documents::Lines
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFileToml {
    corpus: Vec<Entry>,
}

/// Parses a catalog (the built-in one is [`entries`]) and checks each entry is whole.
pub(crate) fn parse(text: &str) -> Result<Vec<Entry>> {
    let parsed: CatalogFileToml =
        toml::from_str(text).map_err(|e| anyhow!("the corpus catalog: {}", e.message()))?;
    let mut names = HashSet::new();
    for e in &parsed.corpus {
        let bad = |why: &str| anyhow!("the corpus catalog: entry `{}` {why}", e.name);
        if !names.insert(e.name.clone()) {
            return Err(bad("is listed twice"));
        }
        if e.name.is_empty() || e.name.contains(['/', '.']) {
            return Err(bad("needs a name without `/` or `.`"));
        }
        if e.builtin {
            continue;
        }
        if e.repo.split('/').count() != 2 || e.revision.is_empty() || e.files.is_empty() {
            return Err(bad("needs a repo `owner/name`, a revision and files"));
        }
        match (e.read, e.documents) {
            (Read::Text, Documents::Lines | Documents::Marker) => {}
            (Read::Parquet, Documents::Rows | Documents::Articles | Documents::Whole) => {}
            _ => return Err(bad("reads its documents in a way its files cannot hold")),
        }
        if e.read == Read::Parquet && e.column.is_none() {
            return Err(bad("reads parquet but names no column"));
        }
        if e.documents == Documents::Marker && e.marker.as_deref().is_none_or(str::is_empty) {
            return Err(bad("separates documents by a marker but names none"));
        }
        if e.read == Read::Text && (e.dedup || e.shuffle_seed.is_some() || e.clean.is_some()) {
            return Err(bad(
                "is read in place, so it cannot be cleaned, deduplicated or shuffled",
            ));
        }
    }
    Ok(parsed.corpus)
}

/// The built-in catalog.
pub(crate) fn entries() -> Vec<Entry> {
    static PARSED: std::sync::OnceLock<Vec<Entry>> = std::sync::OnceLock::new();
    // A test parses the built-in catalog, so this never fails in a released binary.
    PARSED
        .get_or_init(|| parse(CATALOG).unwrap_or_default())
        .clone()
}

/// The entry called `name`.
pub(crate) fn find(name: &str) -> Option<Entry> {
    entries().into_iter().find(|e| e.name == name)
}

/// Where a user may put an entry's files by hand (keeping the paths they have in the
/// repository): `~/.local/share/gptdash/corpora/<name>/`.
pub(crate) fn manual_dir(name: &str) -> Option<PathBuf> {
    crate::paths::data_dir().map(|d| d.join("corpora").join(name))
}

/// Where gptdash keeps assembled catalog corpora.
fn assembled_dir() -> Option<PathBuf> {
    crate::paths::cache_dir().map(|d| d.join("corpora").join("catalog"))
}

/// What a catalog corpus is on this machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Local {
    /// The files training reads, in order (text files).
    pub files: Vec<PathBuf>,
    pub docs: DocSplit,
}

/// An entry's state here, for `data list` and the Train tab.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub name: String,
    pub description: String,
    pub licence: String,
    pub repo: String,
    pub revision: String,
    pub mode: DataMode,
    pub download_mb: f64,
    pub text_mb: f64,
    /// `built in`, `ready` (assembled or text files present), `downloaded` (files in the
    /// hub cache, assembled on first use) or `not here`.
    pub here: &'static str,
    /// The files training reads, when they are here.
    pub path: Option<Vec<PathBuf>>,
}

impl Entry {
    pub(crate) fn download_mb(&self) -> f64 {
        let mb: f64 = self.files.iter().map(|f| f.mb).sum();
        // Two decimals, and no -0 for an entry without files.
        (mb * 100.0).round() / 100.0 + 0.0
    }

    fn docs(&self) -> DocSplit {
        match (self.read, self.documents) {
            (Read::Text, Documents::Marker) => {
                DocSplit::Marker(self.marker.clone().unwrap_or_default())
            }
            (Read::Parquet, Documents::Articles) => DocSplit::Marker(ARTICLE_MARKER.into()),
            _ => DocSplit::Lines,
        }
    }

    /// The assembled text file of a parquet entry made from `sources` (in gptdash's
    /// cache): its name holds a hash of the entry (how it is read, cleaned, deduplicated,
    /// shuffled) and of each source file's path, size and modification time, so another
    /// recipe or other files (put by hand) make another file.
    pub(crate) fn assembled_path(&self, sources: &[PathBuf]) -> Option<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let rev: String = self
            .revision
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let mut h = sha2::Sha256::new();
        h.update(serde_json::to_string(self).ok()?.as_bytes());
        for src in sources {
            let real = std::fs::canonicalize(src).ok()?;
            let m = std::fs::metadata(&real).ok()?;
            h.update(real.as_os_str().as_encoded_bytes());
            h.update(format!("\0{} {} {}\0", m.len(), m.mtime(), m.mtime_nsec()).as_bytes());
        }
        let tag: String = h.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assembled_dir().map(|d| d.join(format!("{}@{rev}-{tag}.txt", self.name)))
    }

    /// Each file of the entry where it is on this machine (the manual folder first,
    /// then the hub cache), or `None` for a file not here.
    fn sources_here(&self) -> Vec<Option<PathBuf>> {
        let manual = manual_dir(&self.name);
        self.files
            .iter()
            .map(|f| {
                manual
                    .as_ref()
                    .map(|d| d.join(&f.path))
                    .filter(|p| p.is_file())
                    .or_else(|| crate::data::hub::cached(&self.repo, &self.revision, &f.path))
            })
            .collect()
    }

    /// The corpus if it is ready to read here, without downloading or assembling.
    pub(crate) fn local(&self) -> Option<Local> {
        if self.builtin {
            return None;
        }
        match self.read {
            Read::Parquet => {
                let sources: Option<Vec<PathBuf>> = self.sources_here().into_iter().collect();
                let p = self.assembled_path(&sources?)?;
                p.is_file().then(|| Local {
                    files: vec![p],
                    docs: self.docs(),
                })
            }
            Read::Text => {
                let files: Option<Vec<PathBuf>> = self.sources_here().into_iter().collect();
                files.map(|files| Local {
                    files,
                    docs: self.docs(),
                })
            }
        }
    }

    pub(crate) fn status(&self) -> Status {
        let (here, path) = if self.builtin {
            ("built in", None)
        } else if let Some(local) = self.local() {
            ("ready", Some(local.files))
        } else if self.sources_here().iter().all(Option::is_some) {
            ("downloaded", None)
        } else {
            ("not here", None)
        };
        Status {
            name: self.name.clone(),
            description: self.description.clone(),
            licence: self.licence.clone(),
            repo: self.repo.clone(),
            revision: self.revision.clone(),
            mode: self.mode,
            download_mb: self.download_mb(),
            text_mb: self.text_mb,
            here,
            path,
        }
    }

    /// The corpus, downloading what is missing (`progress` hears `(stage, done, total)`:
    /// `download` in bytes, `assemble` in files) and assembling a parquet entry once.
    pub(crate) fn get(&self, progress: &mut dyn FnMut(&str, u64, u64)) -> Result<Local> {
        if self.builtin {
            bail!("corpus `{}` is built in: nothing to download", self.name);
        }
        // One gptdash at a time fetches and assembles a corpus; another waits here, then
        // finds the files it fetched.
        let _lock = CorpusLock::acquire(&self.name, progress)?;
        if let (Read::Parquet, Some(local)) = (self.read, self.local()) {
            return Ok(local);
        }
        let manual = manual_dir(&self.name);
        let mut sources = Vec::new();
        for file in &self.files {
            let by_hand = manual
                .as_ref()
                .map(|d| d.join(&file.path))
                .filter(|p| p.is_file());
            let path = match by_hand {
                Some(p) => p,
                // From the hub cache (checked once) or downloaded and checked.
                None => crate::data::hub::fetch_checked(
                    &self.repo,
                    &self.revision,
                    &file.path,
                    manual_dir(&self.name).map(|d| d.join(&file.path)),
                    progress,
                )
                .with_context(|| format!("corpus `{}`", self.name))?,
            };
            sources.push(path);
        }
        match self.read {
            Read::Text => Ok(Local {
                files: sources,
                docs: self.docs(),
            }),
            Read::Parquet => {
                let out = self
                    .assembled_path(&sources)
                    .ok_or_else(|| anyhow!("this platform has no cache folder for corpora"))?;
                assemble(self, &sources, &out, progress)?;
                Ok(Local {
                    files: vec![out],
                    docs: self.docs(),
                })
            }
        }
    }
}

/// An exclusive lock on fetching one corpus (`flock` on a file in gptdash's cache),
/// released when dropped or when the process ends.
struct CorpusLock {
    _file: Option<std::fs::File>,
}

impl CorpusLock {
    fn acquire(name: &str, progress: &mut dyn FnMut(&str, u64, u64)) -> Result<Self> {
        use std::os::fd::AsRawFd;
        let Some(dir) = assembled_dir() else {
            return Ok(Self { _file: None });
        };
        // A cache folder that cannot be made is not this step's error (a corpus read in
        // place needs none; assembling one says so itself): no lock then.
        let path = dir.join(format!("{name}.lock"));
        let Ok(file) = std::fs::create_dir_all(&dir).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        }) else {
            return Ok(Self { _file: None });
        };
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            progress("waiting", 0, 1);
            loop {
                crate::interrupt::check()?;
                std::thread::sleep(std::time::Duration::from_millis(200));
                // SAFETY: as above.
                if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                    break;
                }
            }
            progress("waiting", 1, 1);
        }
        Ok(Self { _file: Some(file) })
    }
}

/// A size in MB for people: `0.7 MB`, `84 MB`, `2.3 GB`.
pub(crate) fn size_text(mb: f64) -> String {
    if mb >= 1000.0 {
        format!("{:.1} GB", mb / 1000.0)
    } else if mb >= 10.0 {
        format!("{mb:.0} MB")
    } else {
        format!("{mb:.1} MB")
    }
}

#[cfg(test)]
mod tests;
