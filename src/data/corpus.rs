//! Corpora: loading, sentence splitting, the in-order train/test split, examples and
//! padded batches for language-model training.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::{DataMode, BUILTIN_CORPUS};
#[cfg(test)]
use crate::data::tokenizer::TextTokenizer;
use crate::rng::{mix, SplitMix64};

/// The built-in corpus, compiled into the binary so `--corpus small` works anywhere.
pub(crate) const SMALL_CORPUS: &str = include_str!("../../data/small_simple_corpus.txt");

/// Target id the loss ignores (padding).
pub(crate) const IGNORE_INDEX: i64 = -100;

/// A corpus: its name (for display and checkpoint paths), where it came from, its text.
#[derive(Debug, Clone)]
pub(crate) struct Corpus {
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
    pub(crate) fn load(spec: &str) -> Result<Self> {
        Self::load_limited(spec, corpus_limit(0))
    }

    /// [`Corpus::load`], reading at most `limit` bytes of text (see [`corpus_limit`]).
    pub(crate) fn load_limited(spec: &str, limit: u64) -> Result<Self> {
        if spec == BUILTIN_CORPUS {
            return Ok(Self {
                name: BUILTIN_CORPUS.into(),
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
    pub(crate) fn spec(&self) -> String {
        if let Some(named) = &self.named {
            return named.clone();
        }
        match &self.path {
            None => BUILTIN_CORPUS.into(),
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
pub(crate) fn corpus_limit(max_corpus_mb: u64) -> u64 {
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
pub(crate) fn split_documents(text: &str) -> Vec<String> {
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
pub(crate) struct SentenceSplit {
    pub train: Vec<String>,
    pub test: Vec<String>,
}

/// How many of `n` (≥ 2) texts, in order, are training texts: `train_fraction` of them,
/// rounded, and at least one on each side.
pub(crate) fn train_count(n: u64, train_fraction: f64) -> u64 {
    (((n as f64) * train_fraction).round() as u64).clamp(1, n - 1)
}

pub(crate) fn split_train_test(
    sentences: Vec<String>,
    train_fraction: f64,
) -> Result<SentenceSplit> {
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
pub(crate) struct Windows {
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
pub(crate) struct Examples {
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
    #[cfg(test)]
    pub(crate) fn from_sentences(
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
    pub(crate) fn from_rows(rows: Vec<Vec<i64>>) -> Self {
        Self {
            rows: Rows::Each(rows),
        }
    }

    /// The windows of `ids[start..end]` (see [`Windows`]).
    pub(crate) fn packed(
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
    pub(crate) fn from_encoded(
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

    pub(crate) fn len(&self) -> usize {
        match &self.rows {
            Rows::Each(r) => r.len(),
            Rows::Packed(w) => w.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Example `i` (`i < len()`).
    pub(crate) fn row(&self, i: usize) -> Vec<i64> {
        match &self.rows {
            Rows::Each(r) => r[i].clone(),
            Rows::Packed(w) => w.row(i),
        }
    }

    /// The length of example `i` (`i < len()`), without reading it.
    pub(crate) fn row_len(&self, i: usize) -> usize {
        match &self.rows {
            Rows::Each(r) => r[i].len(),
            Rows::Packed(w) => {
                let from = w.start + i * w.block;
                (from + w.block + 1).min(w.end) - from
            }
        }
    }

    /// Every example (for tests and small corpora).
    #[cfg(test)]
    pub(crate) fn rows(&self) -> Vec<Vec<i64>> {
        (0..self.len()).map(|i| self.row(i)).collect()
    }

    /// Number of target tokens (tokens that are predicted).
    pub(crate) fn target_tokens(&self) -> usize {
        match &self.rows {
            Rows::Each(r) => r.iter().map(|r| r.len() - 1).sum(),
            Rows::Packed(w) => w.end.saturating_sub(w.start).saturating_sub(1),
        }
    }

    /// The batch for training step `step`: examples in a fresh seeded order each epoch,
    /// computed from the step number alone so a resumed run sees the same batches.
    /// `order` keeps the current epoch's permutation between steps.
    pub(crate) fn train_batch(
        &self,
        step: u64,
        batch_size: usize,
        order: &mut EpochOrder,
    ) -> Batch {
        let n = self.len();
        let first = step as usize * batch_size;
        let picked: Vec<Vec<i64>> = (first..first + batch_size)
            .map(|k| self.row(order.indices(k / n, n)[k % n]))
            .collect();
        Batch::pad(&picked.iter().collect::<Vec<_>>())
    }

    /// Test batches in order; at most `max_batches` (0 = all).
    pub(crate) fn eval_batches(&self, batch_size: usize, max_batches: usize) -> Vec<Batch> {
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
pub(crate) struct EpochOrder {
    seed: u64,
    epoch: Option<usize>,
    order: Vec<usize>,
}

impl EpochOrder {
    pub(crate) fn new(seed: u64) -> Self {
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
pub(crate) struct Batch {
    pub inputs: Vec<i64>,
    pub targets: Vec<i64>,
    pub rows: usize,
    pub cols: usize,
    /// Number of targets that are not padding.
    pub real_tokens: usize,
}

impl Batch {
    pub(crate) fn pad(examples: &[&Vec<i64>]) -> Self {
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
mod tests;
