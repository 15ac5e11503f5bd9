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
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::config::DataSettings;
use crate::data::corpus::SMALL_CORPUS;
use crate::data::normalize::TextForm;
use crate::data::prepare::{hex, keyed_digest, read_tagged, write_atomically, write_tagged};
use crate::data::source::CorpusSource;
use crate::data::tokenizer::TextTokenizer;
use crate::data::tokens::{MappedIds, TokenIds, HEADER};

mod file;
mod reader;
use file::{open_tokens, Header};
pub(crate) use reader::DocReader;

/// The longest document (a line, or the text between two markers).
/// The tokenizer library needs some 200 times a text's size to encode it in one piece, so
/// a longer "document" (a file that is not one document per line) would bound nothing.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 2 << 20;

/// Documents go to the encoder in batches of about this much text.
const BATCH_BYTES: usize = 4 << 20;

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

pub(super) fn read_small(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    crate::data::files::open_regular(path, "cache entry", 1 << 20)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A corpus prepared by streaming.
pub(crate) struct Streamed {
    pub tokenizer: TextTokenizer,
    pub ids: Arc<TokenIds>,
    /// The training and test streams, `[start, end)` of `ids`.
    pub train: (usize, usize),
    pub test: (usize, usize),
    pub train_docs: usize,
    pub test_docs: usize,
    /// Whether the cache answered (the tests' view).
    #[cfg(test)]
    pub cached: bool,
    pub notes: Vec<String>,
    /// The token file read, when the ids are one (the tests' view).
    #[cfg(test)]
    pub file: Option<PathBuf>,
}

/// Prepares `source` by streaming (see the module's notes). `tokenizer` is the one to
/// use, or `None` to train a BPE of `data.vocab_size` on a sample of the training
/// documents. `cache_dir` `None` keeps the ids in a temporary file instead (deleted
/// once mapped). `progress` hears `(stage, done, total)`: `read`, `tokenizer`, `encode`
/// (bytes of the files), `cache`.
pub(crate) fn prepare_stream(
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
    #[cfg(not(test))]
    let _ = (cached, file);
    Streamed {
        tokenizer,
        ids: Arc::new(TokenIds::Mapped(ids)),
        train: (0, h.train_end as usize),
        test: (h.test_start as usize, h.tokens as usize),
        train_docs: h.train_docs as usize,
        test_docs: h.test_docs as usize,
        #[cfg(test)]
        cached,
        notes,
        #[cfg(test)]
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
mod tests;
