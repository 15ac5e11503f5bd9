//! [`DocReader`]: a corpus source's documents one at a time, read in chunks from its
//! files (plain or gzip, one document per line or between `<|endoftext|>` lines), the
//! bytes read counted for the progress report.
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};

use super::MAX_DOCUMENT_BYTES;
use crate::data::catalog::DocSplit;
use crate::data::corpus::SMALL_CORPUS;
use crate::data::source::CorpusSource;

/// Bytes read, shared with the thread that reports progress.
#[derive(Clone, Default)]
pub(super) struct Counter(Arc<std::sync::atomic::AtomicU64>);

impl Counter {
    pub(super) fn add(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    pub(super) fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct Counting<R> {
    inner: R,
    count: Counter,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.add(n as u64);
        Ok(n)
    }
}

/// The documents of a corpus source, one at a time, read in chunks from its files.
pub(crate) struct DocReader {
    files: Vec<PathBuf>,
    builtin: bool,
    split: DocSplit,
    next_file: usize,
    current: Option<(Box<dyn BufRead + Send>, PathBuf, u64)>,
    pub(super) count: Counter,
    line: Vec<u8>,
}

impl DocReader {
    pub(crate) fn new(source: &CorpusSource) -> Self {
        Self {
            files: source.files.clone(),
            builtin: source.is_builtin(),
            split: source.docs.clone(),
            next_file: 0,
            current: None,
            count: Counter::default(),
            line: Vec::new(),
        }
    }

    /// The bytes of the files themselves (compressed ones as stored), for progress.
    pub(crate) fn total_bytes(&self) -> u64 {
        if self.builtin {
            return SMALL_CORPUS.len() as u64;
        }
        self.files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    }

    fn open_next(&mut self) -> Result<bool> {
        if self.builtin {
            if self.next_file > 0 {
                return Ok(false);
            }
            self.next_file = 1;
            let reader = Counting {
                inner: SMALL_CORPUS.as_bytes(),
                count: self.count.clone(),
            };
            self.current = Some((
                Box::new(BufReader::new(reader)),
                crate::config::BUILTIN_CORPUS.into(),
                0,
            ));
            return Ok(true);
        }
        let Some(path) = self.files.get(self.next_file).cloned() else {
            return Ok(false);
        };
        self.next_file += 1;
        let file = crate::data::files::open_regular(&path, "corpus file", u64::MAX)?;
        let counted = Counting {
            inner: file,
            count: self.count.clone(),
        };
        let reader: Box<dyn BufRead + Send> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(BufReader::with_capacity(
                1 << 20,
                flate2::read::MultiGzDecoder::new(BufReader::new(counted)),
            ))
        } else {
            Box::new(BufReader::with_capacity(1 << 20, counted))
        };
        self.current = Some((reader, path, 0));
        Ok(true)
    }

    /// The next line of the current file (without its line end), or `None` at its end.
    fn next_line(&mut self) -> Result<Option<String>> {
        let Some((reader, path, line_no)) = self.current.as_mut() else {
            return Ok(None);
        };
        self.line.clear();
        let n = reader
            .by_ref()
            .take(MAX_DOCUMENT_BYTES as u64 + 1)
            .read_until(b'\n', &mut self.line)
            .map_err(|e| {
                let what = if path.extension().is_some_and(|e| e == "gz") {
                    "is not a complete gzip file (truncated or corrupt)"
                } else {
                    "cannot be read"
                };
                anyhow::Error::new(e).context(format!("corpus file {} {what}", path.display()))
            })?;
        if n == 0 {
            return Ok(None);
        }
        *line_no += 1;
        if self.line.len() > MAX_DOCUMENT_BYTES {
            bail!(
                "{}:{line_no}: a line longer than {} MB; documents mode reads one document per line (or between <|endoftext|> lines): split the file into documents, or use --mode pack",
                path.display(),
                MAX_DOCUMENT_BYTES >> 20
            );
        }
        while matches!(self.line.last(), Some(b'\n' | b'\r')) {
            self.line.pop();
        }
        match std::str::from_utf8(&self.line) {
            Ok(s) => Ok(Some(s.to_string())),
            Err(e) => bail!(
                "{}:{line_no}: not UTF-8 text (bad byte at column {}); save the file as UTF-8",
                path.display(),
                e.valid_up_to() + 1
            ),
        }
    }

    /// The next document, or `None` after the last.
    pub(crate) fn next_doc(&mut self) -> Result<Option<String>> {
        let mut doc = String::new();
        loop {
            if self.current.is_none() && !self.open_next()? {
                let doc = doc.trim();
                return Ok((!doc.is_empty()).then(|| doc.to_string()));
            }
            let Some(line) = self.next_line()? else {
                self.current = None;
                // A file ends a document (files are read in order, each whole).
                if matches!(self.split, DocSplit::Marker(_)) && !doc.trim().is_empty() {
                    return Ok(Some(doc.trim().to_string()));
                }
                doc.clear();
                continue;
            };
            match &self.split {
                DocSplit::Lines => {
                    let t = line.trim();
                    if !t.is_empty() {
                        return Ok(Some(t.to_string()));
                    }
                }
                DocSplit::Marker(marker) => {
                    if line.trim() == marker {
                        let t = doc.trim();
                        if !t.is_empty() {
                            return Ok(Some(t.to_string()));
                        }
                        doc.clear();
                    } else {
                        if !doc.is_empty() {
                            doc.push('\n');
                        }
                        doc.push_str(&line);
                        if doc.len() > MAX_DOCUMENT_BYTES {
                            bail!(
                                "corpus {}: a document longer than {} MB (no `{marker}` line)",
                                self.current
                                    .as_ref()
                                    .map(|c| c.1.display().to_string())
                                    .unwrap_or_default(),
                                MAX_DOCUMENT_BYTES >> 20
                            );
                        }
                    }
                }
            }
        }
    }
}
