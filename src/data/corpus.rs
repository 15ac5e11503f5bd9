//! Corpora: loading, sentence splitting, the in-order train/test split, examples and
//! padded batches for language-model training.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::DataMode;
use crate::data::tokenizer::TextTokenizer;
use crate::rng::{mix, SplitMix64};

/// The built-in corpus, compiled into the binary so `--corpus small` works anywhere.
pub const SMALL_CORPUS: &str = include_str!("../../data/small_simple_corpus.txt");

/// Target id the loss ignores (padding).
pub const IGNORE_INDEX: i64 = -100;

/// A corpus: its name (for display and checkpoint paths), where it came from, its text.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub name: String,
    /// `None` for the built-in corpus.
    pub path: Option<PathBuf>,
    pub text: String,
    /// What checkpoints store to find it again (`small`, a catalog name, a path);
    /// `None`: the path.
    pub named: Option<String>,
}

impl Corpus {
    /// `small` is the built-in corpus; anything else is a path to a UTF-8 text file,
    /// read through gzip when its name ends in `.gz`.
    pub fn load(spec: &str) -> Result<Self> {
        Self::load_limited(spec, corpus_limit(0))
    }

    /// [`Corpus::load`], reading at most `limit` bytes of text (see [`corpus_limit`]).
    pub fn load_limited(spec: &str, limit: u64) -> Result<Self> {
        if spec == "small" {
            return Ok(Self {
                name: "small".into(),
                path: None,
                text: SMALL_CORPUS.to_string(),
                named: None,
            });
        }
        let path = PathBuf::from(spec);
        let bytes = read_maybe_gzip(&path, limit)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            anyhow::anyhow!(
                "corpus file {} is not UTF-8 text (bad byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            )
        })?;
        if text.trim().is_empty() {
            bail!("corpus file {} is empty", path.display());
        }
        let name = corpus_name(&path);
        Ok(Self {
            name,
            path: Some(path),
            text,
            named: None,
        })
    }

    /// The value to store so the same corpus can be found again (`small` or an absolute path).
    pub fn spec(&self) -> String {
        if let Some(named) = &self.named {
            return named.clone();
        }
        match &self.path {
            None => "small".into(),
            Some(p) => std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string(),
        }
    }
}

/// The file's bytes; a `.gz` file is decompressed as it is read (all its members), and a
/// truncated or corrupt one is an error naming it. More than `limit` bytes (after
/// decompression) is an error naming the file and the limit — a device or a pipe that
/// never ends stops there — and a stop request (Ctrl-C) is honoured between chunks.
pub(crate) fn read_maybe_gzip(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read corpus file {}", path.display()))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        bail!("corpus {} is a folder; give a text file", path.display());
    }
    let gz = path.extension().is_some_and(|e| e == "gz");
    let mut reader: Box<dyn std::io::Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            file,
        )))
    } else {
        Box::new(file)
    };
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        crate::interrupt::check()?;
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if gz => {
                return Err(anyhow::Error::new(e).context(format!(
                    "corpus file {} is not a complete gzip file (truncated or corrupt)",
                    path.display()
                )))
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("cannot read corpus file {}", path.display())))
            }
        };
        if bytes.len() as u64 + n as u64 > limit {
            bail!(
                "corpus file {} holds more than {} MB of text, the limit (data.max_corpus_mb; 0 = a tenth of this machine's memory); raise data.max_corpus_mb or use a smaller file",
                path.display(),
                limit / 1_000_000
            );
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    Ok(bytes)
}

/// The most bytes of text a corpus may hold: `max_corpus_mb` MB, or with 0 a tenth of
/// the machine's physical memory (at least 256 MB).
pub fn corpus_limit(max_corpus_mb: u64) -> u64 {
    if max_corpus_mb > 0 {
        return max_corpus_mb.saturating_mul(1_000_000);
    }
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let memory = if pages > 0 && size > 0 {
        pages as u64 * size as u64
    } else {
        8 << 30
    };
    (memory / 10).max(256_000_000)
}

/// The corpus's short name: the file name without `.gz` and its extension
/// (`imdb-reviews.txt.gz` → `imdb-reviews`).
pub(crate) fn corpus_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let stem = Path::new(name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if stem.is_empty() {
        "corpus".into()
    } else {
        stem
    }
}

/// One document per non-empty line (a review, an article), trimmed, in file order.
pub fn split_documents(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Words after which a period does not end a sentence (lower case, without the period).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "cf", "e.g", "i.e", "no",
    "fig", "vol", "inc", "ltd", "co", "corp", "gen", "col", "lt", "sgt", "capt", "rev", "hon",
    "messrs", "approx", "dept", "est", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec", "u.s", "a.m", "p.m", "ph.d",
];

/// Splits text into sentences the way a sentence tokenizer would: blank lines end
/// paragraphs, line-wrapped text is joined, and `.`, `!`, `?` end a sentence unless the
/// word is a known abbreviation (`Mr.`, `e.g.`), an initial (`J. Smith`), or the next
/// word starts in lower case. A stop request (Ctrl-C) ends it early, with part of the
/// sentences: the caller's `interrupt::check` then stops the work.
pub fn split_sentences(text: &str) -> Vec<String> {
    let mut sentences = Vec::new();
    for paragraph in paragraphs(text) {
        if crate::interrupt::stop_requested() {
            break;
        }
        split_paragraph(&paragraph, &mut sentences);
    }
    sentences
}

/// Every this many lines or words, the splitters look for a stop request.
const STOP_CHECK_EVERY: usize = 1 << 16;

fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if n % STOP_CHECK_EVERY == 0 && crate::interrupt::stop_requested() {
            break;
        }
        let line = line.trim();
        if line.is_empty() {
            if !current.is_empty() {
                out.push(current.join(" "));
                current.clear();
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        out.push(current.join(" "));
    }
    out
}

fn split_paragraph(paragraph: &str, out: &mut Vec<String>) {
    let words: Vec<&str> = paragraph.split_whitespace().collect();
    let mut current: Vec<&str> = Vec::new();
    for (i, word) in words.iter().enumerate() {
        if i % STOP_CHECK_EVERY == 0 && crate::interrupt::stop_requested() {
            return;
        }
        current.push(word);
        let next = words.get(i + 1);
        if ends_sentence(word, next.copied()) {
            out.push(current.join(" "));
            current.clear();
        }
    }
    if !current.is_empty() {
        out.push(current.join(" "));
    }
}

fn ends_sentence(word: &str, next: Option<&str>) -> bool {
    let core = word.trim_end_matches(['"', '\'', ')', ']', '\u{201d}', '\u{2019}']);
    let Some(last) = core.chars().last() else {
        return false;
    };
    if !matches!(last, '.' | '!' | '?') {
        return false;
    }
    let Some(next) = next else { return true };
    // The next sentence starts with an upper-case letter, a digit or an opening quote.
    let next_start = next.trim_start_matches(['"', '\'', '(', '[', '\u{201c}', '\u{2018}']);
    match next_start.chars().next() {
        Some(c) if c.is_lowercase() => return false,
        None => return true,
        _ => {}
    }
    if last == '.' {
        let stem = core
            .trim_end_matches('.')
            .trim_start_matches(['"', '\'', '(', '[', '\u{201c}', '\u{2018}']);
        let lower = stem.to_lowercase();
        if ABBREVIATIONS.contains(&lower.as_str()) {
            return false;
        }
        // An initial such as "J." in "J. Smith".
        let mut chars = stem.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            if c.is_uppercase() {
                return false;
            }
        }
    }
    true
}

/// Sentences in file order: the first `train_fraction` for training, the rest for testing.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceSplit {
    pub train: Vec<String>,
    pub test: Vec<String>,
}

/// How many of `n` (≥ 2) texts, in order, are training texts: `train_fraction` of them,
/// rounded, and at least one on each side.
pub fn train_count(n: u64, train_fraction: f64) -> u64 {
    (((n as f64) * train_fraction).round() as u64).clamp(1, n - 1)
}

pub fn split_train_test(sentences: Vec<String>, train_fraction: f64) -> Result<SentenceSplit> {
    if sentences.len() < 2 {
        bail!(
            "the corpus has {} sentence(s); at least 2 are needed for a train/test split",
            sentences.len()
        );
    }
    let n_train = train_count(sentences.len() as u64, train_fraction) as usize;
    let mut train = sentences;
    let test = train.split_off(n_train);
    Ok(SentenceSplit { train, test })
}

/// The windows of a token stream `ids[start..end]`: window `k` is the
/// `block + 1` tokens from `start + k * block` (shorter at the end), so windows overlap by
/// one token and every token after the first is a target exactly once.
#[derive(Debug, Clone, PartialEq)]
pub struct Windows {
    pub ids: std::sync::Arc<crate::data::tokens::TokenIds>,
    pub start: usize,
    pub end: usize,
    pub block: usize,
}

impl Windows {
    fn len(&self) -> usize {
        let n = self.end.saturating_sub(self.start);
        if n < 2 {
            0
        } else {
            (n - 2) / self.block + 1
        }
    }

    fn row(&self, k: usize) -> Vec<i64> {
        let from = self.start + k * self.block;
        let to = (from + self.block + 1).min(self.end);
        let mut out = Vec::with_capacity(to - from);
        self.ids.extend_into(from, to, &mut out);
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Rows {
    /// One example per sentence (`sentences` mode).
    Each(Vec<Vec<i64>>),
    /// Windows of a packed stream (`pack`, `documents`).
    Packed(Windows),
}

/// Token examples, each at most `block_size + 1` tokens: inputs are `[..n-1]`, targets `[1..]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Examples {
    rows: Rows,
}

impl Examples {
    /// `sentences` mode: one example per sentence, truncated to `block_size + 1` tokens.
    /// When the tokenizer has an end-of-text token, it separates sentences as GPT-2
    /// separates documents: each example is `<|endoftext|> sentence <|endoftext|>`, so the
    /// model learns how sentences start and end, and what follows an end. `pack`: the
    /// texts' token stream (each followed by `<|endoftext|>`) in block-size windows.
    /// `documents`: the same stream starting with `<|endoftext|>`, so every document is
    /// framed by it on both sides, as GPT-2 trains.
    pub fn from_sentences(
        sentences: &[String],
        tokenizer: &TextTokenizer,
        block_size: usize,
        mode: DataMode,
    ) -> Result<Self> {
        Ok(Self::from_encoded(
            tokenizer.encode_batch(sentences)?,
            tokenizer.eot_id(),
            block_size,
            mode,
        ))
    }

    /// One example per row as given (each at least 2 tokens).
    pub fn from_rows(rows: Vec<Vec<i64>>) -> Self {
        Self {
            rows: Rows::Each(rows),
        }
    }

    /// The windows of `ids[start..end]` (see [`Windows`]).
    pub fn packed(
        ids: std::sync::Arc<crate::data::tokens::TokenIds>,
        start: usize,
        end: usize,
        block: usize,
    ) -> Self {
        Self {
            rows: Rows::Packed(Windows {
                ids,
                start,
                end,
                block: block.max(1),
            }),
        }
    }

    /// [`Examples::from_sentences`] from texts already encoded.
    pub fn from_encoded(
        texts: Vec<Vec<u32>>,
        eot: Option<u32>,
        block_size: usize,
        mode: DataMode,
    ) -> Self {
        match mode {
            DataMode::Sentences => {
                let eot = eot.map(i64::from);
                let rows = texts
                    .into_iter()
                    .map(|tokens| {
                        let mut ids: Vec<i64> = Vec::with_capacity(tokens.len() + 2);
                        ids.extend(eot);
                        ids.extend(tokens.into_iter().map(i64::from));
                        ids.extend(eot);
                        ids.truncate(block_size + 1);
                        ids
                    })
                    .filter(|ids| ids.len() >= 2)
                    .collect();
                Self::from_rows(rows)
            }
            DataMode::Pack | DataMode::Documents => {
                let total: usize = texts.iter().map(|t| t.len() + 1).sum::<usize>() + 1;
                let mut stream: Vec<u32> = Vec::with_capacity(total);
                if mode == DataMode::Documents {
                    stream.extend(eot);
                }
                for tokens in texts {
                    stream.extend(tokens);
                    stream.extend(eot);
                }
                let n = stream.len();
                Self::packed(
                    std::sync::Arc::new(crate::data::tokens::TokenIds::Memory(stream)),
                    0,
                    n,
                    block_size,
                )
            }
        }
    }

    pub fn len(&self) -> usize {
        match &self.rows {
            Rows::Each(r) => r.len(),
            Rows::Packed(w) => w.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Example `i` (`i < len()`).
    pub fn row(&self, i: usize) -> Vec<i64> {
        match &self.rows {
            Rows::Each(r) => r[i].clone(),
            Rows::Packed(w) => w.row(i),
        }
    }

    /// The length of example `i` (`i < len()`), without reading it.
    pub fn row_len(&self, i: usize) -> usize {
        match &self.rows {
            Rows::Each(r) => r[i].len(),
            Rows::Packed(w) => {
                let from = w.start + i * w.block;
                (from + w.block + 1).min(w.end) - from
            }
        }
    }

    /// Every example (for tests and small corpora).
    pub fn rows(&self) -> Vec<Vec<i64>> {
        (0..self.len()).map(|i| self.row(i)).collect()
    }

    /// Number of target tokens (tokens that are predicted).
    pub fn target_tokens(&self) -> usize {
        match &self.rows {
            Rows::Each(r) => r.iter().map(|r| r.len() - 1).sum(),
            Rows::Packed(w) => w.end.saturating_sub(w.start).saturating_sub(1),
        }
    }

    /// The batch for training step `step`: examples in a fresh seeded order each epoch,
    /// computed from the step number alone so a resumed run sees the same batches.
    /// `order` keeps the current epoch's permutation between steps.
    pub fn train_batch(&self, step: u64, batch_size: usize, order: &mut EpochOrder) -> Batch {
        let n = self.len();
        let first = step as usize * batch_size;
        let picked: Vec<Vec<i64>> = (first..first + batch_size)
            .map(|k| self.row(order.indices(k / n, n)[k % n]))
            .collect();
        Batch::pad(&picked.iter().collect::<Vec<_>>())
    }

    /// Test batches in order; at most `max_batches` (0 = all).
    pub fn eval_batches(&self, batch_size: usize, max_batches: usize) -> Vec<Batch> {
        let limit = if max_batches == 0 {
            usize::MAX
        } else {
            max_batches
        };
        let n = self.len();
        (0..n)
            .step_by(batch_size.max(1))
            .take(limit)
            .map(|first| {
                let rows: Vec<Vec<i64>> = (first..(first + batch_size).min(n))
                    .map(|i| self.row(i))
                    .collect();
                Batch::pad(&rows.iter().collect::<Vec<_>>())
            })
            .collect()
    }
}

/// The seeded permutation of the examples for one epoch, rebuilt only when the epoch
/// changes (not on every step).
#[derive(Debug, Clone)]
pub struct EpochOrder {
    seed: u64,
    epoch: Option<usize>,
    order: Vec<usize>,
}

impl EpochOrder {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            epoch: None,
            order: Vec::new(),
        }
    }

    /// The order of `n` examples in `epoch`.
    fn indices(&mut self, epoch: usize, n: usize) -> &[usize] {
        if self.epoch != Some(epoch) || self.order.len() != n {
            self.order = (0..n).collect();
            SplitMix64::new(mix(self.seed, epoch as u64)).shuffle(&mut self.order);
            self.epoch = Some(epoch);
        }
        &self.order
    }
}

/// A right-padded batch as plain data: `inputs` and `targets` are `rows × cols`, row
/// major; padded targets are [`IGNORE_INDEX`] and padded inputs 0 (a causal model never
/// lets a real position see a later padded one).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub inputs: Vec<i64>,
    pub targets: Vec<i64>,
    pub rows: usize,
    pub cols: usize,
    /// Number of targets that are not padding.
    pub real_tokens: usize,
}

impl Batch {
    pub fn pad(examples: &[&Vec<i64>]) -> Self {
        let rows = examples.len();
        let cols = examples.iter().map(|e| e.len() - 1).max().unwrap_or(0);
        let mut inputs = vec![0i64; rows * cols];
        let mut targets = vec![IGNORE_INDEX; rows * cols];
        let mut real_tokens = 0;
        for (r, ex) in examples.iter().enumerate() {
            let n = ex.len() - 1;
            inputs[r * cols..r * cols + n].copy_from_slice(&ex[..n]);
            targets[r * cols..r * cols + n].copy_from_slice(&ex[1..]);
            real_tokens += n;
        }
        Self {
            inputs,
            targets,
            rows,
            cols,
            real_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
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
        let enc =
            |t: &str| -> Vec<i64> { tok.encode(t).unwrap().into_iter().map(i64::from).collect() };
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
}
