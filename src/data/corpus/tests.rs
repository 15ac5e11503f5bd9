//! Unit tests of `corpus`.
use super::*;

#[test]
fn splits_like_a_sentence_tokenizer() {
    let text = "He holds the dog. I rub\na cat!  Mr. Smith met Dr. Who, e.g. in town.\n\nA new paragraph\nwithout a period\n\nIs it? Yes. J. R. R. Tolkien wrote it.";
    let s = split_sentences(text);
    assert_eq!(
        s,
        vec![
            "He holds the dog.",
            "I rub a cat!",
            "Mr. Smith met Dr. Who, e.g. in town.",
            "A new paragraph without a period",
            "Is it?",
            "Yes.",
            "J. R. R. Tolkien wrote it.",
        ]
    );
}

#[test]
fn quotes_close_sentences() {
    let s = split_sentences("\"Stop.\" She ran. (It was late.) Then home.");
    assert_eq!(
        s,
        vec!["\"Stop.\"", "She ran.", "(It was late.)", "Then home."]
    );
}

#[test]
fn split_is_in_order_and_deterministic() {
    let sentences: Vec<String> = (0..10).map(|i| format!("S{i}.")).collect();
    let a = split_train_test(sentences.clone(), 0.8).unwrap();
    let b = split_train_test(sentences.clone(), 0.8).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.train, sentences[..8].to_vec());
    assert_eq!(a.test, sentences[8..].to_vec());
    assert!(split_train_test(vec!["One.".into()], 0.8).is_err());
}

#[test]
fn small_corpus_has_hundreds_of_short_sentences() {
    let s = split_sentences(SMALL_CORPUS);
    assert!(s.len() >= 300, "{}", s.len());
    assert!(s
        .iter()
        .all(|x| x.ends_with('.') && x.split_whitespace().count() <= 9));
    let words: std::collections::HashSet<&str> = SMALL_CORPUS
        .split_whitespace()
        .map(|w| w.trim_end_matches('.'))
        .collect();
    assert!(words.len() < 40, "{}", words.len());
}

#[test]
fn padding_marks_ignored_targets() {
    let a = vec![1, 2, 3, 4];
    let b = vec![5, 6];
    let batch = Batch::pad(&[&a, &b]);
    assert_eq!((batch.rows, batch.cols), (2, 3));
    assert_eq!(batch.inputs, vec![1, 2, 3, 5, 0, 0]);
    assert_eq!(batch.targets, vec![2, 3, 4, 6, IGNORE_INDEX, IGNORE_INDEX]);
    assert_eq!(batch.real_tokens, 4);
}

#[test]
fn train_batches_depend_only_on_step_and_seed() {
    let ex = Examples::from_rows((0..10).map(|i| vec![i, i + 1]).collect());
    assert_eq!(
        ex.train_batch(3, 4, &mut EpochOrder::new(9)),
        ex.train_batch(3, 4, &mut EpochOrder::new(9))
    );
    assert_ne!(
        ex.train_batch(3, 4, &mut EpochOrder::new(9)),
        ex.train_batch(3, 4, &mut EpochOrder::new(10))
    );
    // One epoch (steps 0..5 with batch 2) visits every example once.
    let mut order = EpochOrder::new(1);
    let mut seen: Vec<i64> = (0..5)
        .flat_map(|s| ex.train_batch(s, 2, &mut order).inputs)
        .collect();
    seen.sort();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    // A kept order gives the batches a fresh one gives, across epoch boundaries too.
    let mut kept = EpochOrder::new(5);
    for step in 0..12 {
        assert_eq!(
            ex.train_batch(step, 3, &mut kept),
            ex.train_batch(step, 3, &mut EpochOrder::new(5))
        );
    }
}

#[test]
fn missing_corpus_names_the_file() {
    let msg = format!("{:#}", Corpus::load("/no/such/corpus.txt").unwrap_err());
    assert!(msg.contains("/no/such/corpus.txt"), "{msg}");
}

const REVIEWS: &str =
    "A fine film, well acted.\n\nDull and far too long!\nI laughed; I cried. Ten out of ten.\n";

fn write_gz(path: &Path, text: &str) {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    std::fs::write(path, gz.finish().unwrap()).unwrap();
}

#[test]
fn gz_and_plain_copies_give_the_same_token_ids() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("reviews.txt");
    let packed = dir.path().join("reviews.txt.gz");
    std::fs::write(&plain, REVIEWS).unwrap();
    write_gz(&packed, REVIEWS);
    let a = Corpus::load(plain.to_str().unwrap()).unwrap();
    let b = Corpus::load(packed.to_str().unwrap()).unwrap();
    assert_eq!((a.name.as_str(), b.name.as_str()), ("reviews", "reviews"));
    let tok = TextTokenizer::train_bpe(&split_documents(&a.text), 300).unwrap();
    let ids = |c: &Corpus| {
        Examples::from_sentences(&split_documents(&c.text), &tok, 8, DataMode::Documents)
            .unwrap()
            .rows()
    };
    assert_eq!(ids(&a), ids(&b));
    assert!(!ids(&a).is_empty());
}

#[test]
fn a_truncated_gz_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.txt.gz");
    write_gz(&path, &REVIEWS.repeat(50));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 12]).unwrap();
    let msg = format!("{:#}", Corpus::load(path.to_str().unwrap()).unwrap_err());
    assert!(
        msg.contains("cut.txt.gz") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn documents_are_framed_by_end_of_text_and_packed() {
    let docs = split_documents(REVIEWS);
    assert_eq!(docs.len(), 3, "{docs:?}");
    let tok = TextTokenizer::train_bpe(&docs, 300).unwrap();
    let eot = i64::from(tok.eot_id().unwrap());
    let enc = |t: &str| -> Vec<i64> { tok.encode(t).unwrap().into_iter().map(i64::from).collect() };
    let mut stream = vec![eot];
    for d in &docs {
        stream.extend(enc(d));
        stream.push(eot);
    }
    let block = 5;
    let rows = Examples::from_sentences(&docs, &tok, block, DataMode::Documents)
        .unwrap()
        .rows();
    // Windows of block + 1 overlapping by one token: every token a target once.
    for (k, row) in rows.iter().enumerate() {
        let start = k * block;
        assert_eq!(
            row[..],
            stream[start..(start + block + 1).min(stream.len())]
        );
    }
    let targets: usize = rows.iter().map(|r| r.len() - 1).sum();
    assert_eq!(targets, stream.len() - 1);
    // Pack mode does not open with <|endoftext|>; sentences mode frames each text.
    let pack = Examples::from_sentences(&docs, &tok, block, DataMode::Pack).unwrap();
    assert_eq!(pack.row(0)[0], enc(&docs[0])[0]);
    let sentences = Examples::from_sentences(&docs, &tok, 64, DataMode::Sentences).unwrap();
    assert_eq!(sentences.len(), 3);
    assert!(sentences
        .rows()
        .iter()
        .all(|r| r[0] == eot && r[r.len() - 1] == eot));
}

#[test]
fn reading_stops_at_the_limit_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.txt");
    std::fs::write(&path, "the cat sat. ".repeat(200_000)).unwrap(); // 2.6 MB
    let msg = format!(
        "{:#}",
        Corpus::load_limited(path.to_str().unwrap(), 1_000_000).unwrap_err()
    );
    assert!(
        msg.contains("big.txt") && msg.contains("1 MB") && msg.contains("data.max_corpus_mb"),
        "{msg}"
    );
    assert!(Corpus::load_limited(path.to_str().unwrap(), 3_000_000).is_ok());
    // A device that never ends stops at the limit too.
    let msg = format!(
        "{:#}",
        Corpus::load_limited("/dev/zero", 2_000_000).unwrap_err()
    );
    assert!(msg.contains("/dev/zero") && msg.contains("2 MB"), "{msg}");
    assert_eq!(corpus_limit(5), 5_000_000);
    assert!(corpus_limit(0) >= 256_000_000);
}
