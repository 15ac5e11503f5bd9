//! Preparing a corpus for training: its texts (sentences or documents), the train/test
//! split, the tokenizer (trained or given) and every text as token ids — cached in the
//! per-user cache directory (`~/.cache/gptdash/corpora`), so a second run on a large
//! corpus starts training in seconds.
//!
//! Two cache entries, each keyed by a SHA-256 of everything that decides it:
//! - `<key>.tokenizer.json`, the BPE trained on the corpus: the corpus text, the data
//!   settings (mode, lower-casing, train fraction) and the vocabulary size;
//! - `<key>.ids`, the token ids of each split: the corpus text, the data settings and the
//!   tokenizer itself, so a resumed run (which brings its checkpoint's tokenizer) hits it.
//!
//! The key hashes the decoded text, so a `.gz` and a plain copy share entries; an edited
//! file misses. Ids are stored as u16 when the vocabulary fits, else u32. Entries are
//! written to a temporary file and renamed into place; an unreadable entry is a miss.
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::config::{DataMode, DataSettings};
use crate::data::corpus::{split_documents, split_sentences, split_train_test, Corpus};
use crate::data::tokenizer::TextTokenizer;

/// The corpus as training needs it.
pub struct Prepared {
    pub tokenizer: TextTokenizer,
    /// Every text of each split as token ids (no framing: that is the data mode's job).
    pub train: Vec<Vec<u32>>,
    pub test: Vec<Vec<u32>>,
    /// Whether the ids came from the cache.
    pub cached: bool,
}

/// The corpus's texts as the data settings ask for them: sentences, or one document per
/// line; split Penn-Treebank style and lower-cased when asked.
pub fn texts(corpus: &Corpus, data: &DataSettings) -> Vec<String> {
    let texts = match data.mode {
        DataMode::Documents => split_documents(&corpus.text),
        DataMode::Sentences | DataMode::Pack => split_sentences(&corpus.text),
    };
    let form = crate::data::normalize::TextForm::of(data);
    texts.into_iter().map(|t| form.apply(&t)).collect()
}

/// Splits, tokenizes and encodes `corpus`; `tokenizer` is the one to use, or `None` to
/// train a BPE of `data.vocab_size` on the training split. `cache_dir` `None` turns the
/// cache off. `progress` hears `(stage, done, total)`: `tokenizer`, `encode`, `cache`.
pub fn prepare(
    corpus: &Corpus,
    data: &DataSettings,
    tokenizer: Option<TextTokenizer>,
    cache_dir: Option<&Path>,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Prepared> {
    let base = base_key(corpus, data);
    let bpe_key = hex(&base(&[b"bpe", &(data.vocab_size as u64).to_le_bytes()]));
    let tokenizer_file = cache_dir.map(|d| d.join(format!("{bpe_key}.tokenizer.json")));
    let mut split = None;
    let tokenizer = match tokenizer {
        Some(t) => t,
        None => match tokenizer_file
            .as_deref()
            .and_then(|f| TextTokenizer::from_file(f).ok())
        {
            Some(t) => t,
            None => {
                let s = split_texts(corpus, data)?;
                progress("tokenizer", 0, 1);
                let t = TextTokenizer::train_bpe(&s.0, data.vocab_size)?;
                crate::interrupt::check()?;
                progress("tokenizer", 1, 1);
                if let Some(f) = &tokenizer_file {
                    write_atomically(f, |w| Ok(w.write_all(t.to_json()?.as_bytes())?));
                }
                split = Some(s);
                t
            }
        },
    };
    let tokenizer_json = tokenizer.to_json()?;
    let ids_key = hex(&base(&[b"ids", tokenizer_json.as_bytes()]));
    let ids_file = cache_dir.map(|d| d.join(format!("{ids_key}.ids")));
    if let Some((train, test)) = ids_file.as_deref().and_then(|f| read_ids(f).ok()) {
        progress("cache", 1, 1);
        return Ok(Prepared {
            tokenizer,
            train,
            test,
            cached: true,
        });
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
        write_atomically(f, |w| write_ids(w, &train, &test, wide));
        progress("cache", 1, 1);
    }
    Ok(Prepared {
        tokenizer,
        train,
        test,
        cached: false,
    })
}

fn split_texts(corpus: &Corpus, data: &DataSettings) -> Result<(Vec<String>, Vec<String>)> {
    let split = split_train_test(texts(corpus, data), data.train_fraction)
        .with_context(|| format!("corpus {}", corpus.name))?;
    Ok((split.train, split.test))
}

/// A function that hashes the corpus text and the data settings, then `parts`.
fn base_key(corpus: &Corpus, data: &DataSettings) -> impl Fn(&[&[u8]]) -> [u8; 32] {
    let mut base = Sha256::new();
    base.update(b"gptdash corpus cache v1\0");
    base.update(Sha256::digest(corpus.text.as_bytes()));
    base.update(data.mode.name().as_bytes());
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `path` through a temporary file renamed into place. A cache that cannot be
/// written is not an error: the run goes on without it.
fn write_atomically(path: &Path, write: impl FnOnce(&mut BufWriter<std::fs::File>) -> Result<()>) {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
        write(&mut w)?;
        w.into_inner().map_err(|e| anyhow!("{e}"))?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

const MAGIC: &[u8; 8] = b"GDIDS\0\0\x01";

/// `MAGIC`, id width (2 or 4), then for each split: text count (u64), each text's
/// length (u32), the ids (little-endian).
fn write_ids(w: &mut impl Write, train: &[Vec<u32>], test: &[Vec<u32>], wide: bool) -> Result<()> {
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
    Ok(())
}

type Splits = (Vec<Vec<u32>>, Vec<Vec<u32>>);

fn read_ids(path: &Path) -> Result<Splits> {
    let mut r = BufReader::new(std::fs::File::open(path)?);
    let mut magic = [0u8; 9];
    r.read_exact(&mut magic)?;
    if &magic[..8] != MAGIC || !matches!(magic[8], 2 | 4) {
        bail!("{} is not a gptdash ids file", path.display());
    }
    let width = magic[8] as usize;
    let mut read_split = || -> Result<Vec<Vec<u32>>> {
        let mut n = [0u8; 8];
        r.read_exact(&mut n)?;
        let n = u64::from_le_bytes(n) as usize;
        let mut lengths = vec![0u8; n.checked_mul(4).ok_or_else(|| anyhow!("bad count"))?];
        r.read_exact(&mut lengths)?;
        let mut split = Vec::with_capacity(n);
        let mut buf = Vec::new();
        for len in lengths.chunks_exact(4) {
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            buf.resize(len * width, 0);
            r.read_exact(&mut buf)?;
            split.push(if width == 2 {
                buf.chunks_exact(2)
                    .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
                    .collect()
            } else {
                buf.chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            });
        }
        Ok(split)
    };
    let train = read_split()?;
    let test = read_split()?;
    let mut rest = [0u8; 1];
    if r.read(&mut rest)? != 0 {
        bail!("{} has trailing bytes", path.display());
    }
    Ok((train, test))
}

/// The per-user cache folder for prepared corpora, if the platform has one.
pub fn default_cache_dir() -> Option<PathBuf> {
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
            mode: DataMode::Documents,
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
            write_atomically(&path, |w| write_ids(w, &train, &test, wide));
            assert_eq!(read_ids(&path).unwrap(), (train.clone(), test.clone()));
            let size = std::fs::metadata(&path).unwrap().len();
            assert_eq!(size, 9 + 8 + 12 + 8 + 4 + 6 * if wide { 4 } else { 2 });
        }
        let wide_ids = vec![vec![70_000u32]];
        let path = dir.path().join("w.ids");
        write_atomically(&path, |w| write_ids(w, &wide_ids, &[], true));
        assert_eq!(read_ids(&path).unwrap().0, wide_ids);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(read_ids(&path).is_err(), "a truncated entry is not read");
    }
}
