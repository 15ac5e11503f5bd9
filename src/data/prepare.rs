//! Preparing a corpus for training: its texts (sentences or documents), the train/test
//! split, the tokenizer (trained or given) and every text as token ids — cached in the
//! per-user cache directory (`~/.cache/gptdash/corpora`), so a second run on a large
//! corpus starts training in seconds.
//!
//! Two cache entries, each keyed by a SHA-256 of everything that decides it:
//! - `<key>.tokenizer`, the BPE trained on the corpus (its JSON): the corpus text, the data
//!   settings (mode, lower-casing, train fraction) and the vocabulary size;
//! - `<key>.ids`, the token ids of each split: the corpus text, the data settings and the
//!   tokenizer itself, so a resumed run (which brings its checkpoint's tokenizer) hits it.
//!
//! The key hashes the decoded text, so a `.gz` and a plain copy share entries; an edited
//! file misses. Ids are stored as u16 when the vocabulary fits, else u32. Entries are
//! written to a temporary file and renamed into place, and end with a SHA-256 of their
//! key and bytes; an entry that is unreadable, damaged, filed under another key, not a
//! regular file, or whose ids exceed the vocabulary is a miss (rebuilt, with a note).
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::config::{DataMode, DataSettings};
use crate::data::corpus::{split_documents, split_sentences, split_train_test, Corpus};
use crate::data::tokenizer::TextTokenizer;

/// The corpus as training needs it.
pub(crate) struct Prepared {
    pub tokenizer: TextTokenizer,
    /// Every text of each split as token ids (no framing: that is the data mode's job).
    pub train: Vec<Vec<u32>>,
    pub test: Vec<Vec<u32>>,
    /// Whether the ids came from the cache.
    #[cfg(test)]
    pub cached: bool,
    /// Lines for the run's log (a damaged cache entry rebuilt).
    pub notes: Vec<String>,
}

/// The corpus's texts as the data settings ask for them: sentences, or one document per
/// line; split Penn-Treebank style and lower-cased when asked.
/// Ctrl-C is honoured between every 4,096 texts.
pub(crate) fn texts(corpus: &Corpus, data: &DataSettings) -> Result<Vec<String>> {
    let texts = match data.mode() {
        DataMode::Documents => split_documents(&corpus.text),
        DataMode::Sentences | DataMode::Pack => split_sentences(&corpus.text),
    };
    crate::interrupt::check()?;
    let form = crate::data::normalize::TextForm::of(data);
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(4096) {
        crate::interrupt::check()?;
        out.extend(chunk.iter().map(|t| form.apply(t)));
    }
    Ok(out)
}

/// Splits, tokenizes and encodes `corpus`; `tokenizer` is the one to use, or `None` to
/// train a BPE of `data.vocab_size` on the training split. `cache_dir` `None` turns the
/// cache off. `progress` hears `(stage, done, total)`: `tokenizer`, `encode`, `cache`.
pub(crate) fn prepare(
    corpus: &Corpus,
    data: &DataSettings,
    tokenizer: Option<TextTokenizer>,
    cache_dir: Option<&Path>,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Prepared> {
    let base = base_key(corpus, data);
    let bpe_key = hex(&base(&[b"bpe", &(data.vocab_size as u64).to_le_bytes()]));
    let tokenizer_file = cache_dir.map(|d| d.join(format!("{bpe_key}.tokenizer")));
    let mut split = None;
    let tokenizer = match tokenizer {
        Some(t) => t,
        None => match tokenizer_file
            .as_deref()
            .and_then(|f| read_tagged(f, bpe_key.as_bytes()).ok())
            .and_then(|json| TextTokenizer::from_json(&json).ok())
        {
            Some(t) => t,
            None => {
                let (train_texts, test_texts) = split_texts(corpus, data)?;
                progress("tokenizer", 0, 1);
                // The library's training has no stopping point: it runs on a thread of
                // its own, left behind on Ctrl-C.
                let vocab_size = data.vocab_size;
                let (train_texts, t) =
                    crate::interrupt::interruptible("training the tokenizer", move || {
                        let t = TextTokenizer::train_bpe(&train_texts, vocab_size)?;
                        Ok((train_texts, t))
                    })?;
                let s = (train_texts, test_texts);
                progress("tokenizer", 1, 1);
                if let Some(f) = &tokenizer_file {
                    let json = t.to_json()?;
                    write_atomically(f, |w| write_tagged(w, bpe_key.as_bytes(), json.as_bytes()));
                }
                split = Some(s);
                t
            }
        },
    };
    let tokenizer_json = tokenizer.to_json()?;
    let ids_key = hex(&base(&[b"ids", tokenizer_json.as_bytes()]));
    let ids_file = cache_dir.map(|d| d.join(format!("{ids_key}.ids")));
    let mut notes = Vec::new();
    if let Some(f) = ids_file.as_deref().filter(|f| f.is_file()) {
        match read_ids(f, tokenizer.vocab_size(), ids_key.as_bytes()) {
            Ok((train, test)) => {
                progress("cache", 1, 1);
                return Ok(Prepared {
                    tokenizer,
                    train,
                    test,
                    #[cfg(test)]
                    cached: true,
                    notes,
                });
            }
            Err(e) => notes.push(format!(
                "the cached token ids {} are damaged ({e:#}); preparing the corpus again",
                f.display()
            )),
        }
    }
    let (train_texts, test_texts) = match split {
        Some(s) => s,
        None => split_texts(corpus, data)?,
    };
    let total = (train_texts.len() + test_texts.len()) as u64;
    let n_train = train_texts.len() as u64;
    progress("encode", 0, total);
    let train =
        tokenizer.encode_batch_with(&train_texts, |n| progress("encode", n as u64, total))?;
    crate::interrupt::check()?;
    let test = tokenizer.encode_batch_with(&test_texts, |n| {
        progress("encode", n_train + n as u64, total)
    })?;
    if let Some(f) = &ids_file {
        progress("cache", 0, 1);
        let wide = tokenizer.vocab_size() > usize::from(u16::MAX) + 1;
        write_atomically(f, |w| write_ids(w, ids_key.as_bytes(), &train, &test, wide));
        progress("cache", 1, 1);
    }
    Ok(Prepared {
        tokenizer,
        train,
        test,
        #[cfg(test)]
        cached: false,
        notes,
    })
}

fn split_texts(corpus: &Corpus, data: &DataSettings) -> Result<(Vec<String>, Vec<String>)> {
    let split = split_train_test(texts(corpus, data)?, data.train_fraction)
        .with_context(|| format!("corpus {}", corpus.name))?;
    Ok((split.train, split.test))
}

/// A function that hashes the corpus text and the data settings, then `parts`.
fn base_key(corpus: &Corpus, data: &DataSettings) -> impl Fn(&[&[u8]]) -> [u8; 32] {
    let mut base = Sha256::new();
    base.update(b"gptdash corpus cache v1\0");
    base.update(Sha256::digest(corpus.text.as_bytes()));
    base.update(data.mode().name().as_bytes());
    base.update([u8::from(data.lowercase), u8::from(data.ptb_split)]);
    base.update(data.train_fraction.to_le_bytes());
    move |parts: &[&[u8]]| {
        let mut h = base.clone();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        h.finalize().into()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `path` through a temporary file renamed into place; whether it was written. A
/// cache that cannot be written is not an error: the run goes on without it.
pub(crate) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> Result<()>,
) -> bool {
    let Ok((tmp, file)) = crate::data::files::create_temp_beside(path) else {
        return false;
    };
    let result = (|| -> Result<()> {
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        w.into_inner().map_err(|e| anyhow!("{e}"))?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.is_ok()
}

const MAGIC: &[u8; 8] = b"GDIDS\0\0\x03";

/// The SHA-256 an entry ends with: of its key (the name it is filed under), then its
/// bytes — so an entry copied under another key is a miss too.
pub(crate) fn keyed_digest(key: &[u8], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(body);
    h.finalize().into()
}

/// A tokenizer entry: its JSON, then [`keyed_digest`].
pub(crate) fn write_tagged(w: &mut impl Write, key: &[u8], json: &[u8]) -> Result<()> {
    w.write_all(json)?;
    w.write_all(&keyed_digest(key, json))?;
    Ok(())
}

/// The bytes of a cache entry: a regular file only (a pipe or a device put in its place
/// is not read).
fn read_entry(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    crate::data::files::open_regular(path, "cache entry", u64::MAX)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A tokenizer entry's JSON, when its digest matches `key`.
pub(crate) fn read_tagged(path: &Path, key: &[u8]) -> Result<String> {
    let bytes = read_entry(path)?;
    let Some(body_len) = bytes.len().checked_sub(32) else {
        bail!("shorter than its checksum");
    };
    let (body, digest) = bytes.split_at(body_len);
    if keyed_digest(key, body) != digest {
        bail!("its checksum does not match");
    }
    Ok(String::from_utf8(body.to_vec())?)
}

/// `MAGIC`, id width (2 or 4), then for each split: text count (u64), each text's
/// length (u32), the ids (little-endian); last, [`keyed_digest`] of everything before.
fn write_ids(
    w: &mut impl Write,
    key: &[u8],
    train: &[Vec<u32>],
    test: &[Vec<u32>],
    wide: bool,
) -> Result<()> {
    let mut hash = Sha256::new();
    hash.update((key.len() as u64).to_le_bytes());
    hash.update(key);
    let mut w = Hashing { inner: w, hash };
    w.write_all(MAGIC)?;
    w.write_all(&[if wide { 4 } else { 2 }])?;
    for split in [train, test] {
        w.write_all(&(split.len() as u64).to_le_bytes())?;
        for ids in split {
            w.write_all(&(ids.len() as u32).to_le_bytes())?;
        }
        for ids in split {
            for &id in ids {
                if wide {
                    w.write_all(&id.to_le_bytes())?;
                } else {
                    w.write_all(&(id as u16).to_le_bytes())?;
                }
            }
        }
    }
    let digest: [u8; 32] = w.hash.finalize().into();
    w.inner.write_all(&digest)?;
    Ok(())
}

/// A writer that hashes what passes through it.
struct Hashing<'a, W: Write> {
    inner: &'a mut W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

type Splits = (Vec<Vec<u32>>, Vec<Vec<u32>>);

/// Reads a cache entry, trusting nothing in it: the checksum must match, every length
/// must fit in the file before anything is allocated, and every id must be below
/// `vocab_size`. Any failure is an error (the caller treats it as a miss).
fn read_ids(path: &Path, vocab_size: usize, key: &[u8]) -> Result<Splits> {
    let bytes = read_entry(path)?;
    let Some(body_len) = bytes.len().checked_sub(32) else {
        bail!("shorter than its checksum");
    };
    let (body, digest) = bytes.split_at(body_len);
    if keyed_digest(key, body) != digest {
        bail!("its checksum does not match (damaged, or filed under another key)");
    }
    if body.len() < 9 || &body[..8] != MAGIC || !matches!(body[8], 2 | 4) {
        bail!("not a gptdash ids file of this version");
    }
    let width = body[8] as usize;
    let mut at = 9usize;
    let mut take = |n: usize| -> Result<&[u8]> {
        let end = at
            .checked_add(n)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| anyhow!("lengths past the end of the file"))?;
        let part = &body[at..end];
        at = end;
        Ok(part)
    };
    let mut splits = Vec::with_capacity(2);
    for _ in 0..2 {
        let n = u64::from_le_bytes(take(8)?.try_into()?);
        let n = usize::try_from(n)?;
        let lengths = take(n.checked_mul(4).ok_or_else(|| anyhow!("bad count"))?)?;
        let lengths: Vec<usize> = lengths
            .chunks_exact(4)
            .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)
            .collect();
        let mut split = Vec::with_capacity(n);
        for len in lengths {
            let raw = take(
                len.checked_mul(width)
                    .ok_or_else(|| anyhow!("bad length"))?,
            )?;
            let ids: Vec<u32> = if width == 2 {
                raw.chunks_exact(2)
                    .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
                    .collect()
            } else {
                raw.chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            };
            if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab_size) {
                bail!("token id {bad} is outside the vocabulary of {vocab_size}");
            }
            split.push(ids);
        }
        splits.push(split);
    }
    if at != body.len() {
        bail!("trailing bytes");
    }
    let test = splits.pop().unwrap_or_default();
    let train = splits.pop().unwrap_or_default();
    Ok((train, test))
}

/// The per-user cache folder for prepared corpora, if the platform has one.
pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    crate::paths::cache_dir().map(|d| d.join("corpora"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(dir: &Path, text: &str) -> Corpus {
        let path = dir.join("docs.txt");
        std::fs::write(&path, text).unwrap();
        Corpus::load(path.to_str().unwrap()).unwrap()
    }

    fn settings() -> DataSettings {
        DataSettings {
            mode: Some(DataMode::Documents),
            vocab_size: 300,
            ..DataSettings::default()
        }
    }

    const DOCS: &str =
        "A fine film.\nDull and long!\nI laughed a lot.\nTen out of ten.\nNot again.\n";

    #[test]
    fn a_second_run_hits_the_cache_and_an_edited_corpus_misses_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let c = corpus(dir.path(), DOCS);
        let first = prepare(&c, &settings(), None, Some(&cache), &mut |_, _, _| {}).unwrap();
        assert!(!first.cached);
        let second = prepare(&c, &settings(), None, Some(&cache), &mut |_, _, _| {}).unwrap();
        assert!(second.cached);
        assert_eq!((&first.train, &first.test), (&second.train, &second.test));
        assert_eq!(
            first.tokenizer.to_json().unwrap(),
            second.tokenizer.to_json().unwrap()
        );
        // Without a cache, the same ids.
        let fresh = prepare(&c, &settings(), None, None, &mut |_, _, _| {}).unwrap();
        assert_eq!((&fresh.train, &fresh.test), (&first.train, &first.test));
        // An edited corpus, or other settings, miss.
        let edited = corpus(dir.path(), &DOCS.replace("fine", "fun"));
        assert!(
            !prepare(&edited, &settings(), None, Some(&cache), &mut |_, _, _| {})
                .unwrap()
                .cached
        );
        let lower = DataSettings {
            lowercase: true,
            ..settings()
        };
        assert!(
            !prepare(&c, &lower, None, Some(&cache), &mut |_, _, _| {})
                .unwrap()
                .cached
        );
        // A given tokenizer keys the ids by itself: the trained one hits, another misses.
        let again = prepare(
            &c,
            &settings(),
            Some(first.tokenizer.clone()),
            Some(&cache),
            &mut |_, _, _| {},
        )
        .unwrap();
        assert!(again.cached);
        let other = TextTokenizer::train_bpe(&["something else entirely".into()], 280).unwrap();
        assert!(
            !prepare(
                &c,
                &settings(),
                Some(other),
                Some(&cache),
                &mut |_, _, _| {}
            )
            .unwrap()
            .cached
        );
    }

    #[test]
    fn ids_round_trip_in_both_widths_and_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let train = vec![vec![1, 2, 65_535], vec![], vec![7]];
        let test = vec![vec![3, 4]];
        for wide in [false, true] {
            let path = dir.path().join(format!("x{wide}.ids"));
            write_atomically(&path, |w| write_ids(w, b"k", &train, &test, wide));
            assert_eq!(
                read_ids(&path, 65_536, b"k").unwrap(),
                (train.clone(), test.clone())
            );
            let size = std::fs::metadata(&path).unwrap().len();
            assert_eq!(size, 9 + 8 + 12 + 8 + 4 + 6 * if wide { 4 } else { 2 } + 32);
            // Ids past the vocabulary: the entry is for another tokenizer, or damaged.
            let msg = format!("{:#}", read_ids(&path, 1000, b"k").unwrap_err());
            assert!(msg.contains("65535") && msg.contains("1000"), "{msg}");
        }
        let wide_ids = vec![vec![70_000u32]];
        let path = dir.path().join("w.ids");
        write_atomically(&path, |w| write_ids(w, b"k", &wide_ids, &[], true));
        assert_eq!(read_ids(&path, 70_001, b"k").unwrap().0, wide_ids);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(
            read_ids(&path, 70_001, b"k").is_err(),
            "a truncated entry is not read"
        );
        // One flipped bit anywhere fails the checksum.
        let mut flipped = bytes.clone();
        flipped[12] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let msg = format!("{:#}", read_ids(&path, 70_001, b"k").unwrap_err());
        assert!(msg.contains("checksum"), "{msg}");
        // A huge count with a matching checksum (a hostile file) allocates nothing.
        let mut body = MAGIC.to_vec();
        body.push(2);
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        let digest = keyed_digest(b"k", &body);
        body.extend_from_slice(&digest);
        std::fs::write(&path, &body).unwrap();
        assert!(read_ids(&path, 70_001, b"k").is_err());
    }

    #[test]
    fn a_damaged_cache_entry_is_rebuilt_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let c = corpus(dir.path(), DOCS);
        let first = prepare(&c, &settings(), None, Some(&cache), &mut |_, _, _| {}).unwrap();
        let entry = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "ids"))
            .unwrap();
        // The right ids filed under another key (an entry copied over this one): a miss.
        let key = entry.file_stem().unwrap().to_str().unwrap().to_string();
        write_atomically(&entry, |w| {
            write_ids(w, b"another key", &first.train, &first.test, false)
        });
        let swapped = prepare(&c, &settings(), None, Some(&cache), &mut |_, _, _| {}).unwrap();
        assert!(!swapped.cached, "{:?}", swapped.notes);
        assert!(swapped.notes.iter().any(|n| n.contains("another key")));
        // Ids out of range written with a valid checksum: only the range check sees it.
        let wide = vec![vec![1_000_000u32]];
        write_atomically(&entry, |w| write_ids(w, key.as_bytes(), &wide, &wide, true));
        let again = prepare(&c, &settings(), None, Some(&cache), &mut |_, _, _| {}).unwrap();
        assert!(!again.cached);
        assert_eq!((&again.train, &again.test), (&first.train, &first.test));
        assert!(
            again
                .notes
                .iter()
                .any(|n| n.contains("damaged") && n.contains("outside the vocabulary")),
            "{:?}",
            again.notes
        );
        // Rebuilt: the next run hits it.
        let third = prepare(&c, &settings(), None, Some(&cache), &mut |_, _, _| {}).unwrap();
        assert!(third.cached && third.notes.is_empty());
    }
}
