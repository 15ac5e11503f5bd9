//! Unit tests of `stream`.
use super::*;
use crate::config::DataMode;
use crate::data::catalog::DocSplit;
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
    let mem = crate::data::prepare::prepare(&corpus, &data, None, None, &mut |_, _, _| {}).unwrap();
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
        let train_mem = Examples::from_encoded(mem.train.clone(), eot, block, DataMode::Documents);
        let test_mem = Examples::from_encoded(mem.test.clone(), eot, block, DataMode::Documents);
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
