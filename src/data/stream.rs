//! Preparing a corpus in bounded memory (`documents` mode, any size): documents are read
//! from the files in chunks, the tokenizer is trained on a bounded sample of the training
//! documents (`data.tokenizer_sample_mb`), the documents are encoded in parallel batches
//! and appended to a token file in the cache (u16 ids when the vocabulary allows), and
//! training reads its windows from that file memory-mapped. Neither preparation nor
//! training holds the text or its ids in memory, so a 2 GB corpus needs no more than a
//! 100 MB one.
//!
//! Three cache entries, in the same folder as [`crate::data::prepare`]'s:
//! - `<identity>.survey`: the files' documents' SHA-256 and count, keyed by each file's
//!   path, size, modification time and inode, so a start from the cache reads no text;
//! - `<key>.tokenizer`: the BPE trained on the sample;
//! - `<key>.tokens`: the ids. A 64-byte header (counts and the train/test split), the
//!   ids, an XXH3-128 of the ids and a SHA-256 of the entry's key, header and XXH3; on
//!   opening, the header's SHA-256, the ids' XXH3 and every id's range are checked by
//!   reading the file (not through the map, which would count the whole file as this
//!   process's memory), and any failure is a miss, rebuilt with a note.
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::config::DataSettings;
use crate::data::catalog::DocSplit;
use crate::data::corpus::SMALL_CORPUS;
use crate::data::normalize::TextForm;
use crate::data::prepare::{hex, keyed_digest, read_tagged, write_atomically, write_tagged};
use crate::data::source::CorpusSource;
use crate::data::tokenizer::TextTokenizer;
use crate::data::tokens::TokenIds;

/// The longest document (a line, or the text between two markers).
/// The tokenizer library needs some 200 times a text's size to encode it in one piece, so
/// a longer "document" (a file that is not one document per line) would bound nothing.
pub const MAX_DOCUMENT_BYTES: usize = 2 << 20;

/// Documents go to the encoder in batches of about this much text.
const BATCH_BYTES: usize = 4 << 20;

/// Bytes read, shared with the thread that reports progress.
#[derive(Clone, Default)]
struct Counter(Arc<std::sync::atomic::AtomicU64>);

impl Counter {
    fn add(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
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
pub struct DocReader {
    files: Vec<PathBuf>,
    builtin: bool,
    split: DocSplit,
    next_file: usize,
    current: Option<(Box<dyn BufRead + Send>, PathBuf, u64)>,
    count: Counter,
    line: Vec<u8>,
}

impl DocReader {
    pub fn new(source: &CorpusSource) -> Self {
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
    pub fn total_bytes(&self) -> u64 {
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
            self.current = Some((Box::new(BufReader::new(reader)), "small".into(), 0));
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
    pub fn next_doc(&mut self) -> Result<Option<String>> {
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

/// What a first pass over the documents found: their SHA-256 (of each document and a
/// NUL after it) and their count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Survey {
    digest: [u8; 32],
    docs: u64,
}

/// The key of a survey: what identifies the files without reading them.
fn identity(source: &CorpusSource) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    h.update(b"gptdash survey v1\0");
    h.update(format!("{:?}", source.docs).as_bytes());
    if source.is_builtin() {
        h.update(Sha256::digest(SMALL_CORPUS.as_bytes()));
    }
    for f in &source.files {
        let path = std::fs::canonicalize(f).ok()?;
        let m = std::fs::metadata(&path).ok()?;
        h.update(path.as_os_str().as_encoded_bytes());
        h.update([0]);
        for v in [m.len(), m.ino(), m.dev()] {
            h.update(v.to_le_bytes());
        }
        h.update(m.mtime().to_le_bytes());
        h.update(m.mtime_nsec().to_le_bytes());
    }
    Some(hex(&h.finalize()))
}

fn survey(
    source: &CorpusSource,
    cache: Option<&Path>,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Survey> {
    let memo = cache.and_then(|d| identity(source).map(|k| (d.join(format!("{k}.survey")), k)));
    if let Some((path, key)) = &memo {
        if let Ok(bytes) = read_small(path) {
            if bytes.len() == 32 + 8 + 32
                && keyed_digest(key.as_bytes(), &bytes[..40]) == bytes[40..]
            {
                let mut digest = [0u8; 32];
                digest.copy_from_slice(&bytes[..32]);
                let docs = u64::from_le_bytes(bytes[32..40].try_into()?);
                return Ok(Survey { digest, docs });
            }
        }
    }
    let mut reader = DocReader::new(source);
    let total = reader.total_bytes();
    let mut h = Sha256::new();
    let mut docs = 0u64;
    progress("read", 0, total);
    while let Some(doc) = reader.next_doc()? {
        h.update(doc.as_bytes());
        h.update([0]);
        docs += 1;
        if docs.is_multiple_of(4096) {
            crate::interrupt::check()?;
            progress("read", reader.count.get(), total);
        }
    }
    progress("read", total, total);
    let s = Survey {
        digest: h.finalize().into(),
        docs,
    };
    if let Some((path, key)) = &memo {
        let mut body = s.digest.to_vec();
        body.extend_from_slice(&s.docs.to_le_bytes());
        let tag = keyed_digest(key.as_bytes(), &body);
        body.extend_from_slice(&tag);
        write_atomically(path, |w| Ok(w.write_all(&body)?));
    }
    Ok(s)
}

fn read_small(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    crate::data::files::open_regular(path, "cache entry", 1 << 20)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A corpus prepared by streaming.
pub struct Streamed {
    pub tokenizer: TextTokenizer,
    pub ids: Arc<TokenIds>,
    /// The training and test streams, `[start, end)` of `ids`.
    pub train: (usize, usize),
    pub test: (usize, usize),
    pub train_docs: usize,
    pub test_docs: usize,
    pub cached: bool,
    pub notes: Vec<String>,
    /// The token file read, when the ids are one.
    pub file: Option<PathBuf>,
}

/// The layout of a token file's 64-byte header.
const MAGIC: &[u8; 8] = b"GDTOKS\0\x01";
use crate::data::tokens::{MappedIds, HEADER};
const TRAILER: usize = 16 + 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    width: u8,
    tokens: u64,
    train_end: u64,
    test_start: u64,
    train_docs: u64,
    test_docs: u64,
}

impl Header {
    fn bytes(&self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[..8].copy_from_slice(MAGIC);
        b[8] = self.width;
        for (i, v) in [
            self.tokens,
            self.train_end,
            self.test_start,
            self.train_docs,
            self.test_docs,
        ]
        .iter()
        .enumerate()
        {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < HEADER || &b[..8] != MAGIC || !matches!(b[8], 2 | 4) {
            bail!("not a gptdash token file of this version");
        }
        let at =
            |i: usize| u64::from_le_bytes(b[16 + 8 * i..24 + 8 * i].try_into().unwrap_or([0; 8]));
        let h = Self {
            width: b[8],
            tokens: at(0),
            train_end: at(1),
            test_start: at(2),
            train_docs: at(3),
            test_docs: at(4),
        };
        if h.train_end > h.tokens || h.test_start > h.train_end || h.test_start >= h.tokens {
            bail!("its split lies outside its {} tokens", h.tokens);
        }
        Ok(h)
    }
}

/// Opens a token file, trusting nothing in it (see the module's notes).
fn open_tokens(path: &Path, key: &[u8], vocab: usize) -> Result<(Header, MappedIds)> {
    let mut file = crate::data::files::open_regular(path, "cache entry", u64::MAX)?;
    let len = file.metadata()?.len();
    let mut head = [0u8; HEADER];
    file.read_exact(&mut head)
        .context("shorter than its header")?;
    let h = Header::parse(&head)?;
    let expected = (HEADER as u64)
        .checked_add(
            h.tokens
                .checked_mul(u64::from(h.width))
                .ok_or_else(|| anyhow!("bad count"))?,
        )
        .and_then(|n| n.checked_add(TRAILER as u64))
        .ok_or_else(|| anyhow!("bad count"))?;
    if len != expected {
        bail!("it is {len} bytes, its header says {expected}");
    }
    let mut trailer = [0u8; TRAILER];
    file.seek(SeekFrom::Start(len - TRAILER as u64))?;
    file.read_exact(&mut trailer)?;
    let mut tagged = head.to_vec();
    tagged.extend_from_slice(&trailer[..16]);
    if keyed_digest(key, &tagged) != trailer[16..] {
        bail!("its checksum does not match (damaged, or filed under another key)");
    }
    // The ids, read in chunks — their XXH3 and their range — the first time this file is
    // opened; a marker beside it (keyed to the entry and to the file's size, inode and
    // modification time) then lets later starts skip the scan, whatever the disk.
    let marker = path.with_extension("verified");
    let stamp = {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata()?;
        let mut b = Vec::new();
        for v in [m.len(), m.ino(), m.dev()] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&m.mtime().to_le_bytes());
        b.extend_from_slice(&m.mtime_nsec().to_le_bytes());
        b.extend_from_slice(&(vocab as u64).to_le_bytes());
        b.extend_from_slice(&tagged);
        keyed_digest(key, &b)
    };
    if read_small(&marker).is_ok_and(|m| m == stamp) {
        return map_tokens(file, h, vocab, path);
    }
    file.seek(SeekFrom::Start(HEADER as u64))?;
    let mut left = h.tokens * u64::from(h.width);
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut max = 0u32;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        file.read_exact(&mut buf[..n])?;
        hash.update(&buf[..n]);
        let chunk_max = if h.width == 2 {
            buf[..n]
                .chunks_exact(2)
                .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
                .max()
        } else {
            buf[..n]
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .max()
        };
        max = max.max(chunk_max.unwrap_or(0));
        left -= n as u64;
    }
    if hash.digest128().to_le_bytes() != trailer[..16] {
        bail!("its ids' checksum does not match (damaged)");
    }
    if h.tokens > 0 && max as usize >= vocab {
        bail!("token id {max} is outside the vocabulary of {vocab}");
    }
    write_atomically(&marker, |w| Ok(w.write_all(&stamp)?));
    map_tokens(file, h, vocab, path)
}

fn map_tokens(
    file: std::fs::File,
    h: Header,
    vocab: usize,
    path: &Path,
) -> Result<(Header, MappedIds)> {
    // SAFETY: the file is gptdash's own cache entry, written once and renamed into place,
    // never written again (a rebuilt entry is a new file renamed over the name, which
    // leaves this map on the old one). Every id was checked once, and `extend_into`
    // clamps ids, so a file edited in place gives wrong tokens, never an out-of-range
    // index; one truncated under the map would stop the process (SIGBUS), as for any
    // program reading a file someone truncates.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    #[cfg(unix)]
    let _ = map.advise(memmap2::Advice::Random);
    Ok((
        h,
        MappedIds {
            map,
            width: usize::from(h.width),
            tokens: h.tokens as usize,
            vocab: vocab as u32,
            path: path.to_path_buf(),
        },
    ))
}

/// Prepares `source` by streaming (see the module's notes). `tokenizer` is the one to
/// use, or `None` to train a BPE of `data.vocab_size` on a sample of the training
/// documents. `cache_dir` `None` keeps the ids in a temporary file instead (deleted
/// once mapped). `progress` hears `(stage, done, total)`: `read`, `tokenizer`, `encode`
/// (bytes of the files), `cache`.
pub fn prepare_stream(
    source: &CorpusSource,
    data: &DataSettings,
    tokenizer: Option<TextTokenizer>,
    cache_dir: Option<&Path>,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Streamed> {
    let s = survey(source, cache_dir, progress)?;
    if s.docs < 2 {
        bail!(
            "corpus {} has {} document(s); at least 2 are needed for a train/test split",
            source.name,
            s.docs
        );
    }
    let n_train = crate::data::corpus::train_count(s.docs, data.train_fraction);
    let form = TextForm::of(data);
    let sample_bytes = data.tokenizer_sample_mb.saturating_mul(1 << 20) as usize;
    let mut base = Sha256::new();
    base.update(b"gptdash stream v1\0");
    base.update(s.digest);
    base.update([u8::from(data.lowercase), u8::from(data.ptb_split)]);
    base.update(data.train_fraction.to_le_bytes());
    let key = |parts: &[&[u8]]| {
        let mut h = base.clone();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        hex(&h.finalize())
    };
    let mut notes = Vec::new();
    let tokenizer = match tokenizer {
        Some(t) => t,
        None => {
            let bpe_key = key(&[
                b"bpe",
                &(data.vocab_size as u64).to_le_bytes(),
                &(sample_bytes as u64).to_le_bytes(),
            ]);
            let file = cache_dir.map(|d| d.join(format!("{bpe_key}.tokenizer")));
            let hit = file.as_deref().and_then(|f| {
                let json = read_tagged(f, bpe_key.as_bytes()).ok()?;
                TextTokenizer::from_json(&json).ok()
            });
            match hit {
                Some(t) => t,
                None => {
                    let sample = sample_docs(source, n_train, sample_bytes, form)?;
                    progress("tokenizer", 0, 1);
                    let vocab = data.vocab_size;
                    let t = crate::interrupt::interruptible("training the tokenizer", move || {
                        TextTokenizer::train_bpe(&sample, vocab)
                    })?;
                    progress("tokenizer", 1, 1);
                    if let Some(f) = &file {
                        let json = t.to_json()?;
                        write_atomically(f, |w| {
                            write_tagged(w, bpe_key.as_bytes(), json.as_bytes())
                        });
                    }
                    t
                }
            }
        }
    };
    if let Some(dir) = cache_dir {
        sweep_stale_temporaries(dir);
    }
    let ids_key = key(&[b"tokens", tokenizer.to_json()?.as_bytes()]);
    let vocab = tokenizer.vocab_size();
    if let Some(f) = cache_dir.map(|d| d.join(format!("{ids_key}.tokens"))) {
        if f.is_file() {
            progress("cache", 0, 1);
            match open_tokens(&f, ids_key.as_bytes(), vocab) {
                Ok((h, ids)) => {
                    progress("cache", 1, 1);
                    return Ok(streamed(tokenizer, h, ids, true, notes, Some(f)));
                }
                Err(e) => notes.push(format!(
                    "the cached token ids {} are damaged ({e:#}); preparing the corpus again",
                    f.display()
                )),
            }
        }
        if let Some(h) = encode_to(
            source,
            &tokenizer,
            form,
            n_train,
            s.docs,
            &f,
            ids_key.as_bytes(),
            progress,
        )? {
            progress("cache", 0, 1);
            let (_, ids) = open_tokens(&f, ids_key.as_bytes(), vocab)
                .with_context(|| format!("reading back {}", f.display()))?;
            progress("cache", 1, 1);
            return Ok(streamed(tokenizer, h, ids, false, notes, Some(f)));
        }
        notes.push(format!(
            "cannot write the token cache {}; using a temporary file",
            f.display()
        ));
    }
    // No cache: a temporary file (created exclusively, beside a name of this process's
    // own), deleted once mapped: the map keeps it alive.
    let tmp = std::env::temp_dir().join(format!(
        "gptdash-tokens-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let h = encode_to(
        source,
        &tokenizer,
        form,
        n_train,
        s.docs,
        &tmp,
        ids_key.as_bytes(),
        progress,
    )?
    .ok_or_else(|| anyhow!("cannot write a temporary token file {}", tmp.display()))?;
    let opened = open_tokens(&tmp, ids_key.as_bytes(), vocab);
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_file(tmp.with_extension("verified"));
    let (_, ids) = opened?;
    Ok(streamed(tokenizer, h, ids, false, notes, None))
}

/// Removes `*.tmp-<pid>-<n>` files of the cache folder whose process is gone (a run
/// killed while it wrote an entry); a live process's are left alone.
fn sweep_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((_, rest)) = name.rsplit_once(".tmp-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        if !alive && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

static TEMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn streamed(
    tokenizer: TextTokenizer,
    h: Header,
    ids: MappedIds,
    cached: bool,
    notes: Vec<String>,
    file: Option<PathBuf>,
) -> Streamed {
    Streamed {
        tokenizer,
        ids: Arc::new(TokenIds::Mapped(ids)),
        train: (0, h.train_end as usize),
        test: (h.test_start as usize, h.tokens as usize),
        train_docs: h.train_docs as usize,
        test_docs: h.test_docs as usize,
        cached,
        notes,
        file,
    }
}

/// The first training documents, normalised, up to `limit` bytes (at least one).
fn sample_docs(
    source: &CorpusSource,
    n_train: u64,
    limit: usize,
    form: TextForm,
) -> Result<Vec<String>> {
    let mut reader = DocReader::new(source);
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut n = 0u64;
    while n < n_train && (bytes < limit || out.is_empty()) {
        let Some(doc) = reader.next_doc()? else { break };
        n += 1;
        if n.is_multiple_of(4096) {
            crate::interrupt::check()?;
        }
        let doc = form.apply(&doc);
        bytes += doc.len();
        out.push(doc);
    }
    Ok(out)
}

/// Encodes every document into the token file `path`; `None` when it cannot be written.
/// Documents are read on a thread of their own, in batches of about [`BATCH_BYTES`],
/// while the encoder works on the one before.
#[allow(clippy::too_many_arguments)]
fn encode_to(
    source: &CorpusSource,
    tokenizer: &TextTokenizer,
    form: TextForm,
    n_train: u64,
    expected_docs: u64,
    path: &Path,
    key: &[u8],
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Option<Header>> {
    let Ok((tmp, file)) = crate::data::files::create_temp_beside(path) else {
        return Ok(None);
    };
    let result = write_tokens(
        source,
        tokenizer,
        form,
        n_train,
        expected_docs,
        file,
        key,
        progress,
    );
    match result {
        Ok(Some(h)) => match std::fs::rename(&tmp, path) {
            Ok(()) => Ok(Some(h)),
            Err(_) => {
                let _ = std::fs::remove_file(&tmp);
                Ok(None)
            }
        },
        Ok(None) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(None)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write_tokens(
    source: &CorpusSource,
    tokenizer: &TextTokenizer,
    form: TextForm,
    n_train: u64,
    expected_docs: u64,
    file: std::fs::File,
    key: &[u8],
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Option<Header>> {
    use rayon::prelude::*;
    let wide = tokenizer.vocab_size() > usize::from(u16::MAX) + 1;
    let eot = tokenizer.eot_id();
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let io = |e: std::io::Error| anyhow!("{e}");
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    let mut tokens = 0u64;
    let mut out = Vec::with_capacity(1 << 20);
    let mut push = |ids: &mut dyn Iterator<Item = u32>,
                    w: &mut std::io::BufWriter<std::fs::File>,
                    hash: &mut xxhash_rust::xxh3::Xxh3,
                    tokens: &mut u64|
     -> std::io::Result<()> {
        out.clear();
        for id in ids {
            if wide {
                out.extend_from_slice(&id.to_le_bytes());
            } else {
                out.extend_from_slice(&(id as u16).to_le_bytes());
            }
            *tokens += 1;
        }
        hash.update(&out);
        w.write_all(&out)
    };
    if w.write_all(&[0u8; HEADER]).is_err() {
        return Ok(None);
    }
    // Documents mode: the stream opens with <|endoftext|>, as GPT-2 frames documents.
    if push(&mut eot.into_iter(), &mut w, &mut hash, &mut tokens).is_err() {
        return Ok(None);
    }
    let mut reader = DocReader::new(source);
    let total = reader.total_bytes();
    let count = reader.count.clone();
    let (tx, rx) = crossbeam_channel::bounded::<Result<Vec<String>>>(2);
    let feeder = std::thread::Builder::new()
        .name("gptdash-read".into())
        .spawn(move || loop {
            let mut batch = Vec::new();
            let mut bytes = 0;
            let next = loop {
                if crate::interrupt::stop_requested() {
                    break Ok(false);
                }
                match reader.next_doc() {
                    Ok(Some(d)) => {
                        bytes += d.len();
                        batch.push(d);
                        if bytes >= BATCH_BYTES {
                            break Ok(true);
                        }
                    }
                    Ok(None) => break Ok(false),
                    Err(e) => break Err(e),
                }
            };
            let more = match next {
                Ok(more) => more,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            if !batch.is_empty() && tx.send(Ok(batch)).is_err() {
                return;
            }
            if !more {
                return;
            }
        })
        .map_err(|e| anyhow!("cannot start a thread to read the corpus: {e}"))?;
    let mut docs = 0u64;
    let mut train_end = None;
    progress("encode", 0, total);
    for batch in rx.iter() {
        crate::interrupt::check()?;
        let batch = batch?;
        let texts: Vec<String> = batch.par_iter().map(|d| form.apply(d)).collect();
        let encoded = tokenizer.encode_batch_with(&texts, |_| {})?;
        for ids in encoded {
            let framed = ids.into_iter().chain(eot);
            if push(&mut { framed }, &mut w, &mut hash, &mut tokens).is_err() {
                return Ok(None);
            }
            docs += 1;
            if docs == n_train {
                train_end = Some(tokens);
            }
        }
        progress("encode", count.get(), total);
    }
    let _ = feeder.join();
    crate::interrupt::check()?;
    let train_end = train_end.ok_or_else(|| anyhow!("the corpus changed while it was read"))?;
    if docs != expected_docs {
        bail!(
            "corpus {}: {docs} documents now, {expected_docs} when it was first read: the file changed while it was read; run again",
            source.name
        );
    }
    let h = Header {
        width: if wide { 4 } else { 2 },
        tokens,
        train_end,
        // The test stream opens with the <|endoftext|> that closed the last training
        // document, as a test split prepared on its own would.
        test_start: train_end - u64::from(eot.is_some()),
        train_docs: n_train,
        test_docs: docs - n_train,
    };
    if h.test_start >= h.tokens {
        bail!("corpus {}: the test split has no tokens", source.name);
    }
    let digest = hash.digest128().to_le_bytes();
    let head = h.bytes();
    let mut tagged = head.to_vec();
    tagged.extend_from_slice(&digest);
    let tag = keyed_digest(key, &tagged);
    let finish = (|| -> std::io::Result<()> {
        w.write_all(&digest)?;
        w.write_all(&tag)?;
        let mut file = w.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&head)?;
        file.sync_all()
    })();
    finish.map_err(io).map(|()| Some(h)).or(Ok(None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataMode;
    use crate::data::corpus::{Corpus, EpochOrder, Examples};

    fn source(dir: &Path, text: &str, split: DocSplit) -> CorpusSource {
        let path = dir.join("docs.txt");
        std::fs::write(&path, text).unwrap();
        CorpusSource {
            name: "docs".into(),
            spec: path.display().to_string(),
            files: vec![path],
            docs: split,
            mode: DataMode::Documents,
        }
    }

    fn settings() -> DataSettings {
        DataSettings {
            mode: Some(DataMode::Documents),
            vocab_size: 300,
            ..DataSettings::default()
        }
    }

    fn docs_text() -> String {
        (0..400)
            .map(|i| {
                format!(
                    "Review {i}: a {} film, {} out of ten.\n",
                    ["fine", "dull", "long"][i % 3],
                    i % 11
                )
            })
            .collect()
    }

    #[test]
    fn documents_are_read_by_lines_and_by_marker_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        let b = dir.path().join("b.txt");
        std::fs::write(
            &a,
            "One.\nTwo\n lines.\n<|endoftext|>\n\n<|endoftext|>\nThree",
        )
        .unwrap();
        std::fs::write(&b, "Four.\n<|endoftext|>\n").unwrap();
        let src = CorpusSource {
            name: "x".into(),
            spec: "x".into(),
            files: vec![a, b],
            docs: DocSplit::Marker("<|endoftext|>".into()),
            mode: DataMode::Documents,
        };
        let mut r = DocReader::new(&src);
        let mut got = Vec::new();
        while let Some(d) = r.next_doc().unwrap() {
            got.push(d);
        }
        assert_eq!(got, ["One.\nTwo\n lines.", "Three", "Four."]);
        let lines = CorpusSource {
            docs: DocSplit::Lines,
            ..src
        };
        let mut r = DocReader::new(&lines);
        let mut n = 0;
        while r.next_doc().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 8);
    }

    #[test]
    fn a_bad_byte_is_named_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.txt");
        std::fs::write(&path, b"fine\nal\xffso\n").unwrap();
        let src = CorpusSource {
            name: "bad".into(),
            spec: "bad".into(),
            files: vec![path],
            docs: DocSplit::Lines,
            mode: DataMode::Documents,
        };
        let mut r = DocReader::new(&src);
        assert_eq!(r.next_doc().unwrap().as_deref(), Some("fine"));
        let msg = format!("{:#}", r.next_doc().unwrap_err());
        assert!(msg.contains("bad.txt:2") && msg.contains("UTF-8"), "{msg}");
    }

    /// The acceptance test: the token file read memory-mapped gives the batches today's
    /// in-memory path gives, for the same corpus, tokenizer and seed.
    #[test]
    fn the_mapped_token_file_gives_the_in_memory_batches() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let text = docs_text();
        let src = source(dir.path(), &text, DocSplit::Lines);
        let data = settings();
        let streamed = prepare_stream(&src, &data, None, Some(&cache), &mut |_, _, _| {}).unwrap();
        assert!(!streamed.cached);
        assert!(matches!(*streamed.ids, TokenIds::Mapped(_)));
        // Today's path: the whole text in memory, split, the same tokenizer (the sample
        // holds every training document of a corpus this small), Examples::from_encoded.
        let corpus = Corpus::load(src.files[0].to_str().unwrap()).unwrap();
        let mem =
            crate::data::prepare::prepare(&corpus, &data, None, None, &mut |_, _, _| {}).unwrap();
        assert_eq!(
            mem.tokenizer.to_json().unwrap(),
            streamed.tokenizer.to_json().unwrap(),
            "the sample of a small corpus is all of its training text"
        );
        assert_eq!(
            (mem.train.len(), mem.test.len()),
            (streamed.train_docs, streamed.test_docs)
        );
        let eot = mem.tokenizer.eot_id();
        for block in [7, 16] {
            let train_mem =
                Examples::from_encoded(mem.train.clone(), eot, block, DataMode::Documents);
            let test_mem =
                Examples::from_encoded(mem.test.clone(), eot, block, DataMode::Documents);
            let train_map = Examples::packed(
                streamed.ids.clone(),
                streamed.train.0,
                streamed.train.1,
                block,
            );
            let test_map = Examples::packed(
                streamed.ids.clone(),
                streamed.test.0,
                streamed.test.1,
                block,
            );
            assert_eq!(train_mem.len(), train_map.len());
            assert_eq!(train_mem.target_tokens(), train_map.target_tokens());
            let (mut a, mut b) = (EpochOrder::new(1337), EpochOrder::new(1337));
            for step in 0..200 {
                assert_eq!(
                    train_mem.train_batch(step, 8, &mut a),
                    train_map.train_batch(step, 8, &mut b),
                    "step {step}"
                );
            }
            assert_eq!(test_mem.eval_batches(8, 0), test_map.eval_batches(8, 0));
        }
        // A second run starts from the cache: no text read, the same ids.
        let again = prepare_stream(&src, &data, None, Some(&cache), &mut |stage, _, _| {
            assert_ne!(stage, "read", "the survey is remembered");
            assert_ne!(stage, "encode");
        })
        .unwrap();
        assert!(again.cached);
        assert_eq!(*again.ids, *streamed.ids);
        // Without a cache, the same ids from a temporary file.
        let fresh = prepare_stream(&src, &data, None, None, &mut |_, _, _| {}).unwrap();
        assert_eq!(*fresh.ids, *streamed.ids);
        assert_eq!((fresh.train, fresh.test), (streamed.train, streamed.test));
    }

    #[test]
    fn the_tokenizer_sample_is_bounded_and_keyed() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path(), &docs_text(), DocSplit::Lines);
        let sample = sample_docs(&src, 320, 1000, TextForm::default()).unwrap();
        let bytes: usize = sample.iter().map(String::len).sum();
        assert!((1000..1100).contains(&bytes), "{bytes}");
        assert!(
            sample_docs(&src, 3, usize::MAX, TextForm::default())
                .unwrap()
                .len()
                == 3,
            "never past the training split"
        );
    }

    #[test]
    fn a_damaged_token_file_is_a_miss_rebuilt_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let src = source(dir.path(), &docs_text(), DocSplit::Lines);
        let data = settings();
        let first = prepare_stream(&src, &data, None, Some(&cache), &mut |_, _, _| {}).unwrap();
        let f = first.file.clone().unwrap();
        let mut want = Vec::new();
        first.ids.extend_into(0, first.ids.len(), &mut want);
        drop(first);
        let mut bytes = std::fs::read(&f).unwrap();
        bytes[HEADER + 10] ^= 1;
        std::fs::write(&f, &bytes).unwrap();
        let again = prepare_stream(&src, &data, None, Some(&cache), &mut |_, _, _| {}).unwrap();
        assert!(!again.cached);
        assert!(
            again.notes.iter().any(|n| n.contains("damaged")),
            "{:?}",
            again.notes
        );
        let mut got = Vec::new();
        again.ids.extend_into(0, again.ids.len(), &mut got);
        assert_eq!(got, want);
        // Truncated, or filed under another key: misses too.
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, &bytes[..bytes.len() - 1]).unwrap();
        assert!(open_tokens(&f, b"k", 300).is_err());
        std::fs::write(&f, &bytes).unwrap();
        assert!(open_tokens(&f, b"another key", 300).is_err());
        // Ids past the vocabulary of another tokenizer.
        let msg = format!(
            "{:#}",
            open_tokens(&f, f.file_stem().unwrap().to_str().unwrap().as_bytes(), 10).unwrap_err()
        );
        assert!(msg.contains("outside the vocabulary"), "{msg}");
    }

    /// A word-level tokenizer of `words` without `<|endoftext|>`.
    fn words_without_end_of_text(words: &[&str]) -> TextTokenizer {
        let mut vocab = serde_json::Map::new();
        vocab.insert("[UNK]".into(), 0.into());
        for w in words {
            let n = vocab.len();
            vocab.entry(w.to_string()).or_insert(n.into());
        }
        TextTokenizer::from_json(
            &serde_json::json!({
                "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
                "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
                "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
            })
            .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn marker_documents_across_files_in_both_widths_and_without_end_of_text() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        let b = dir.path().join("b.txt.gz");
        let mut text_a = String::new();
        for i in 0..40 {
            text_a.push_str(&format!(
                "Tom ran {i} times.\nHe was fast.\n<|endoftext|>\n"
            ));
        }
        std::fs::write(&a, &text_a).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for i in 0..15 {
            gz.write_all(format!("Anna sat {i} days.\n<|endoftext|>\n").as_bytes())
                .unwrap();
        }
        std::fs::write(&b, gz.finish().unwrap()).unwrap();
        let src = CorpusSource {
            name: "stories".into(),
            spec: "stories".into(),
            files: vec![a, b],
            docs: DocSplit::Marker("<|endoftext|>".into()),
            mode: DataMode::Documents,
        };
        let mut reader = DocReader::new(&src);
        let mut docs = Vec::new();
        while let Some(d) = reader.next_doc().unwrap() {
            docs.push(d);
        }
        assert_eq!(docs.len(), 55);
        let words: Vec<&str> = docs.iter().flat_map(|d| d.split_whitespace()).collect();
        let data = settings();
        let cache = dir.path().join("cache");
        for tok in [
            TextTokenizer::synthetic_byte_level(70_000).unwrap(),
            words_without_end_of_text(&words),
        ] {
            let s = prepare_stream(
                &src,
                &data,
                Some(tok.clone()),
                Some(&cache),
                &mut |_, _, _| {},
            )
            .unwrap();
            let n_train = 44; // round(55 * 0.8)
            assert_eq!((s.train_docs, s.test_docs), (n_train, 55 - n_train));
            let enc = tok.encode_batch(&docs).unwrap();
            for block in [5, 9] {
                let train_mem = Examples::from_encoded(
                    enc[..n_train].to_vec(),
                    tok.eot_id(),
                    block,
                    DataMode::Documents,
                );
                let test_mem = Examples::from_encoded(
                    enc[n_train..].to_vec(),
                    tok.eot_id(),
                    block,
                    DataMode::Documents,
                );
                let train = Examples::packed(s.ids.clone(), s.train.0, s.train.1, block);
                let test = Examples::packed(s.ids.clone(), s.test.0, s.test.1, block);
                let (mut x, mut y) = (EpochOrder::new(3), EpochOrder::new(3));
                for step in 0..60 {
                    assert_eq!(
                        train_mem.train_batch(step, 4, &mut x),
                        train.train_batch(step, 4, &mut y)
                    );
                }
                assert_eq!(test_mem.eval_batches(4, 0), test.eval_batches(4, 0));
            }
        }
    }

    #[test]
    fn another_tokenizer_sample_size_is_another_entry() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path(), &docs_text(), DocSplit::Lines);
        let cache = dir.path().join("cache");
        let mut data = settings();
        for mb in [1, 2, 1] {
            data.tokenizer_sample_mb = mb;
            prepare_stream(&src, &data, None, Some(&cache), &mut |_, _, _| {}).unwrap();
        }
        let entries = std::fs::read_dir(&cache)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "tokenizer")
            })
            .count();
        assert_eq!(entries, 2);
    }

    #[test]
    fn a_line_too_long_to_be_a_document_is_named_and_stale_temporaries_go() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("short\n{}\n", "word ".repeat(MAX_DOCUMENT_BYTES / 5 + 10));
        let src = source(dir.path(), &long, DocSplit::Lines);
        let mut r = DocReader::new(&src);
        assert_eq!(r.next_doc().unwrap().as_deref(), Some("short"));
        let msg = format!("{:#}", r.next_doc().unwrap_err());
        assert!(
            msg.contains("docs.txt:2") && msg.contains("one document per line"),
            "{msg}"
        );
        // A temporary file of a process that is gone goes; one of a live process stays.
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        let dead = cache.join("k.tokens.tmp-4000000-0");
        let live = cache.join(format!("k.tokens.tmp-{}-0", std::process::id()));
        let other = cache.join("k.tokens");
        for f in [&dead, &live, &other] {
            std::fs::write(f, b"x").unwrap();
        }
        sweep_stale_temporaries(&cache);
        assert!(!dead.exists() && live.exists() && other.exists());
    }

    #[test]
    fn an_edited_corpus_misses_the_survey() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let src = source(dir.path(), &docs_text(), DocSplit::Lines);
        let a = survey(&src, Some(&cache), &mut |_, _, _| {}).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // The same size, edited in place: the modification time tells.
        let src = source(
            dir.path(),
            &docs_text().replace("fine", "good"),
            DocSplit::Lines,
        );
        let b = survey(&src, Some(&cache), &mut |_, _, _| {}).unwrap();
        assert_ne!(a.digest, b.digest);
        assert_eq!(a.docs, b.docs);
        assert_eq!(survey(&src, Some(&cache), &mut |_, _, _| {}).unwrap(), b);
    }
}
