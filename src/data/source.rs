//! Where a corpus is, before any of it is read: `small`, a catalog name (fetched the
//! first time) or a file, and how its text divides into documents.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::{DataMode, BUILTIN_CORPUS};
use crate::data::catalog::DocSplit;
use crate::data::corpus::{corpus_name, Corpus};

/// Whether the first MB of a text file (decompressed) holds a line that is exactly
/// `<|endoftext|>`: documents separated so, not one per line.
fn has_marker_lines(path: &Path) -> bool {
    use std::io::{BufRead, Read};
    let Ok(file) = crate::data::files::open_regular(path, "corpus file", u64::MAX) else {
        return false;
    };
    let reader: Box<dyn std::io::Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            file,
        )))
    } else {
        Box::new(file)
    };
    std::io::BufReader::new(reader.take(1 << 20))
        .lines()
        .map_while(|l| l.ok())
        .any(|l| l.trim() == crate::data::catalog::ARTICLE_MARKER)
}

/// Where a corpus is, before any of it is read: the built-in text, or files read in order.
#[derive(Debug, Clone)]
pub(crate) struct CorpusSource {
    pub name: String,
    /// What checkpoints store (`small`, a catalog name, an absolute path).
    pub spec: String,
    /// The files, in order; empty for the built-in corpus.
    pub files: Vec<PathBuf>,
    pub docs: DocSplit,
    /// The data mode the corpus trains in when the settings name none.
    pub mode: DataMode,
}

impl CorpusSource {
    /// `small`, a catalog name (downloaded and assembled on first use: `progress` hears
    /// `download`, `verify` and `assemble`), or a path to a text file (`.gz` read through
    /// gzip). Reads no text.
    pub(crate) fn resolve(spec: &str, progress: &mut dyn FnMut(&str, u64, u64)) -> Result<Self> {
        if spec == BUILTIN_CORPUS {
            return Ok(Self {
                name: BUILTIN_CORPUS.into(),
                spec: BUILTIN_CORPUS.into(),
                files: Vec::new(),
                docs: DocSplit::Lines,
                mode: DataMode::Sentences,
            });
        }
        if let Some(entry) = crate::data::catalog::find(spec) {
            let local = entry.get(progress)?;
            return Ok(Self {
                name: entry.name.clone(),
                spec: entry.name.clone(),
                files: local.files,
                docs: local.docs,
                mode: entry.mode,
            });
        }
        let path = PathBuf::from(spec);
        let meta = std::fs::metadata(&path).with_context(|| {
            format!(
                "cannot read corpus file {} (not a file, nor a corpus gptdash knows: gptdash data list)",
                path.display()
            )
        })?;
        if meta.is_dir() {
            bail!("corpus {} is a folder; give a text file", path.display());
        }
        // A file in TinyStories' form (documents between `<|endoftext|>` lines) is read so.
        let docs = if has_marker_lines(&path) {
            DocSplit::Marker(crate::data::catalog::ARTICLE_MARKER.into())
        } else {
            DocSplit::Lines
        };
        Ok(Self {
            name: corpus_name(&path),
            spec: std::fs::canonicalize(&path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string(),
            files: vec![path],
            docs,
            mode: DataMode::Sentences,
        })
    }

    pub(crate) fn is_builtin(&self) -> bool {
        self.files.is_empty()
    }

    /// The whole text in memory (modes that split sentences), at most `limit` bytes.
    pub(crate) fn load_text(&self, limit: u64) -> Result<Corpus> {
        if self.is_builtin() {
            return Corpus::load(BUILTIN_CORPUS);
        }
        let mut text = String::new();
        for f in &self.files {
            let left = limit.saturating_sub(text.len() as u64);
            let part = Corpus::load_limited(&f.display().to_string(), left)?;
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&part.text);
        }
        Ok(Corpus {
            name: self.name.clone(),
            path: self.files.first().cloned(),
            text,
            named: Some(self.spec.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_documents_between_end_of_text_lines_is_read_so() {
        let dir = tempfile::tempdir().unwrap();
        let stories = dir.path().join("stories.txt");
        std::fs::write(
            &stories,
            "Tom ran.\nHe was fast.\n<|endoftext|>\nAnna sat.\n",
        )
        .unwrap();
        let plain = dir.path().join("plain.txt");
        std::fs::write(&plain, "A fine film.\nDull and long!\n").unwrap();
        let src = |p: &Path| CorpusSource::resolve(p.to_str().unwrap(), &mut |_, _, _| {}).unwrap();
        assert_eq!(src(&stories).docs, DocSplit::Marker("<|endoftext|>".into()));
        assert_eq!(src(&plain).docs, DocSplit::Lines);
    }
}
