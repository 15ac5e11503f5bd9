//! The tokenizer: a byte-level BPE trained on the corpus (the default), or any
//! `tokenizer.json` such as GPT-2's. Wraps the `tokenizers` crate.
use std::path::Path;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

/// GPT-2's end-of-text token; trained tokenizers get it too.
pub(crate) const END_OF_TEXT: &str = "<|endoftext|>";

#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    eot: Option<u32>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eot", &self.eot)
            .finish()
    }
}

impl TextTokenizer {
    /// Trains a GPT-2 style byte-level BPE (no prefix space) on `texts`, with
    /// `<|endoftext|>` as its one special token. Deterministic for the same input.
    pub(crate) fn train_bpe(texts: &[String], vocab_size: usize) -> Result<Self> {
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
            .build();
        let mut builder = TokenizerBuilder::<
            BPE,
            NormalizerWrapper,
            ByteLevel,
            ByteLevel,
            ByteLevelDecoder,
        >::new()
        .with_model(BPE::default())
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_post_processor(Some(ByteLevel::new(false, true, true)))
        .with_decoder(Some(ByteLevelDecoder::default()))
        .build()
        .map_err(|e| anyhow!("cannot build the BPE tokenizer: {e}"))?;
        // Merges are learned within words; one enormous "word" (a 640k-character run
        // without spaces took 100 s) is cut into pieces for training only.
        builder
            .train(&mut trainer, texts.iter().map(|t| cap_pieces(t)))
            .map_err(|e| anyhow!("BPE training failed: {e}"))?;
        let json = builder
            .to_string(false)
            .map_err(|e| anyhow!("cannot serialise the tokenizer: {e}"))?;
        Self::from_json(&json)
    }

    /// A valid byte-level BPE with exactly `vocab_size` tokens (≥ 257) whose merges are
    /// arbitrary byte pairs, the last id being `<|endoftext|>`. For benchmarks and tests
    /// that need GPT-2's vocabulary size without GPT-2's files.
    pub fn synthetic_byte_level(vocab_size: usize) -> Result<Self> {
        if vocab_size < 257 {
            bail!("a synthetic byte-level vocabulary needs at least 257 tokens");
        }
        let table = byte_to_char_table();
        let mut vocab = serde_json::Map::new();
        for (b, c) in table.iter().enumerate() {
            vocab.insert(c.to_string(), b.into());
        }
        let mut merges = Vec::new();
        'pairs: for &a in table.iter() {
            for &b in table.iter() {
                let id = vocab.len();
                if id >= vocab_size - 1 {
                    break 'pairs;
                }
                let merged = format!("{a}{b}");
                if vocab.contains_key(&merged) {
                    continue;
                }
                vocab.insert(merged, id.into());
                merges.push(serde_json::json!([a.to_string(), b.to_string()]));
            }
        }
        let eot = vocab.len();
        let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [{"id": eot, "content": END_OF_TEXT, "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": byte_level,
            "post_processor": byte_level,
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                      "vocab": vocab, "merges": merges},
        });
        Self::from_json(&json.to_string())
    }

    /// Loads a `tokenizer.json`; errors name the file.
    pub(crate) fn from_file(path: &Path) -> Result<Self> {
        let bytes = crate::data::files::read_regular(path, "tokenizer file")?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow!("tokenizer file {} is not UTF-8 JSON", path.display()))?;
        Self::from_json(&text).with_context(|| format!("invalid tokenizer file {}", path.display()))
    }

    pub(crate) fn from_json(json: &str) -> Result<Self> {
        let inner = Tokenizer::from_str(json).map_err(|e| anyhow!("{e}"))?;
        let eot = inner.token_to_id(END_OF_TEXT);
        let tokenizer = Self { inner, eot };
        let n = tokenizer.vocab_size();
        if n == 0 {
            bail!("the tokenizer has an empty vocabulary");
        }
        // The model has one embedding row per id, so ids must run 0..n without gaps.
        let largest = tokenizer
            .inner
            .get_vocab(true)
            .into_values()
            .max()
            .unwrap_or(0);
        if largest as usize >= n {
            bail!(
                "its token ids have gaps: the largest is {largest} with {n} tokens (a model needs ids 0 to {})",
                n - 1
            );
        }
        Ok(tokenizer)
    }

    pub(crate) fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| anyhow!("cannot serialise the tokenizer: {e}"))
    }

    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json()?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Vocabulary size including special tokens: the model's embedding rows.
    pub(crate) fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn eot_id(&self) -> Option<u32> {
        self.eot
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("cannot tokenize {text:?}: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    #[cfg(test)]
    /// Token ids of many texts, encoded in parallel on every core (the `tokenizers`
    /// batch API, without offsets) in chunks, so per-text encodings never pile up.
    /// The same ids as [`TextTokenizer::encode`] one by one.
    pub(crate) fn encode_batch(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        self.encode_batch_with(texts, |_| {})
    }

    /// [`TextTokenizer::encode_batch`], telling `done` the texts encoded so far after
    /// each chunk.
    pub(crate) fn encode_batch_with(
        &self,
        texts: &[String],
        mut done: impl FnMut(usize),
    ) -> Result<Vec<Vec<u32>>> {
        let mut out = Vec::with_capacity(texts.len());
        // Chunks small enough that Ctrl-C, checked between them, is answered at once.
        for chunk in texts.chunks(512) {
            crate::interrupt::check()?;
            let inputs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let encodings = self
                .inner
                .encode_batch_fast(inputs, false)
                .map_err(|e| anyhow!("cannot tokenize the corpus: {e}"))?;
            out.extend(encodings.into_iter().map(|e| e.get_ids().to_vec()));
            done(out.len());
        }
        Ok(out)
    }

    pub(crate) fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow!("cannot decode {ids:?}: {e}"))
    }

    /// A token as it should be displayed: its text with leading spaces kept, a newline
    /// as `⏎`, a tab as `⇥`, other control characters and bytes that are not valid
    /// UTF-8 on their own as `<0xNN>`. Never fails.
    pub(crate) fn display(&self, id: u32) -> String {
        let Some(piece) = self.inner.id_to_token(id) else {
            return format!("<id {id}>");
        };
        if self.inner.get_added_vocabulary().is_special_token(&piece) {
            return piece;
        }
        match byte_level_bytes(&piece) {
            Some(bytes) => display_bytes(&bytes),
            None => {
                let text = self.inner.decode(&[id], false).unwrap_or(piece);
                display_bytes(text.as_bytes())
            }
        }
    }
}

/// GPT-2's byte-level alphabet: each byte is written as one printable character.
fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            b as char
        } else {
            let c = char::from_u32(next).unwrap_or('?');
            next += 1;
            c
        };
    }
    table
}

/// The bytes behind a byte-level BPE piece, or `None` if the piece is not byte-level.
fn byte_level_bytes(piece: &str) -> Option<Vec<u8>> {
    use std::sync::OnceLock;
    static INVERSE: OnceLock<std::collections::HashMap<char, u8>> = OnceLock::new();
    let inverse = INVERSE.get_or_init(|| {
        byte_to_char_table()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect()
    });
    piece.chars().map(|c| inverse.get(&c).copied()).collect()
}

/// Shows bytes as text: valid UTF-8 runs as characters (control characters made
/// visible), invalid bytes as `<0xNN>`.
pub(crate) fn display_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push('⏎'),
                '\t' => out.push('⇥'),
                '\r' => out.push_str("<0x0D>"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("<0x{b:02X}>"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("<0x{b:02X}>"));
        }
    }
    out
}

/// The longest run without whitespace that BPE training sees.
pub(crate) const MAX_PIECE: usize = 64;

/// `text` with every run of more than [`MAX_PIECE`] non-space characters cut by spaces
/// (borrowed unchanged when there is none): BPE training is slow on long runs and
/// learns nothing useful from them.
pub(crate) fn cap_pieces(text: &str) -> std::borrow::Cow<'_, str> {
    let mut run = 0;
    if text.chars().all(|c| {
        run = if c.is_whitespace() { 0 } else { run + 1 };
        run <= MAX_PIECE
    }) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + text.len() / MAX_PIECE);
    let mut run = 0;
    for c in text.chars() {
        if c.is_whitespace() {
            run = 0;
        } else {
            if run == MAX_PIECE {
                out.push(' ');
                run = 0;
            }
            run += 1;
        }
        out.push(c);
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_runs_are_cut_for_training_only() {
        assert!(matches!(cap_pieces("a b c"), std::borrow::Cow::Borrowed(_)));
        let long = "x".repeat(150);
        let text = format!("The {long} sat.");
        let cut = cap_pieces(&text);
        let pieces: Vec<&str> = cut.split_whitespace().collect();
        assert_eq!(pieces[1].len(), MAX_PIECE);
        assert_eq!(pieces.concat(), format!("The{long}sat."));
        assert!(pieces.iter().all(|p| p.chars().count() <= MAX_PIECE));
    }
    use crate::data::corpus::{split_sentences, SMALL_CORPUS};

    fn small_tokenizer() -> TextTokenizer {
        TextTokenizer::train_bpe(&split_sentences(SMALL_CORPUS), 2000).unwrap()
    }

    #[test]
    fn a_tokenizer_whose_ids_have_gaps_is_an_error_not_a_crash() {
        // Every id shifted by 100,000: the model would index past its embedding rows.
        let json: serde_json::Value =
            serde_json::from_str(&small_tokenizer().to_json().unwrap()).unwrap();
        let mut shifted = json.clone();
        let vocab = shifted["model"]["vocab"].as_object_mut().unwrap();
        for v in vocab.values_mut() {
            *v = serde_json::json!(v.as_u64().unwrap() + 100_000);
        }
        if let Some(added) = shifted["added_tokens"].as_array_mut() {
            for t in added {
                t["id"] = serde_json::json!(t["id"].as_u64().unwrap() + 100_000);
            }
        }
        let msg = format!(
            "{:#}",
            TextTokenizer::from_json(&shifted.to_string())
                .err()
                .unwrap()
        );
        assert!(msg.contains("gaps") && msg.len() < 300, "{msg}");
    }

    #[test]
    fn trained_bpe_round_trips_any_text() {
        let tok = small_tokenizer();
        for text in [
            "He holds the dog.",
            "She can hold the cat and dog.",
            "Zebras jump — 42 times! ✓\tok\n",
        ] {
            let ids = tok.encode(text).unwrap();
            assert_eq!(tok.decode(&ids).unwrap(), text);
        }
    }

    #[test]
    fn trained_bpe_learns_the_corpus_words() {
        let tok = small_tokenizer();
        // Frequent words become single tokens; the special token is in the vocabulary.
        assert_eq!(tok.encode("He holds the dog.").unwrap().len(), 5);
        assert!(tok.eot_id().is_some());
        assert!(tok.vocab_size() < 2000);
        let again = small_tokenizer();
        assert_eq!(
            tok.to_json().unwrap(),
            again.to_json().unwrap(),
            "training is deterministic"
        );
    }

    #[test]
    fn batch_encoding_gives_the_ids_of_one_by_one_encoding() {
        let tok = small_tokenizer();
        let texts: Vec<String> = split_sentences(SMALL_CORPUS)
            .into_iter()
            .chain(["Ünïcödé — “quotes” and\ttabs\n".to_string(), String::new()])
            .collect();
        let one_by_one: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t).unwrap()).collect();
        assert_eq!(tok.encode_batch(&texts).unwrap(), one_by_one);
    }

    #[test]
    fn json_round_trip_keeps_ids() {
        let tok = small_tokenizer();
        let back = TextTokenizer::from_json(&tok.to_json().unwrap()).unwrap();
        let text = "She rubs a cat and dog.";
        assert_eq!(tok.encode(text).unwrap(), back.encode(text).unwrap());
    }

    #[test]
    #[ignore = "needs ../shared/data/gpt2/tokenizer.json, outside the repo: cargo test -- --ignored"]
    fn gpt2_tokenizer_ids_match_openai() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/gpt2/tokenizer.json");
        let tok = TextTokenizer::from_file(&path).unwrap();
        assert_eq!(tok.encode("He and I").unwrap(), vec![1544, 290, 314]);
        assert_eq!(tok.encode("Hello world").unwrap(), vec![15496, 995]);
        assert_eq!(tok.eot_id(), Some(50256));
        assert_eq!(tok.vocab_size(), 50257);
    }

    #[test]
    fn special_pieces_are_displayed_faithfully() {
        assert_eq!(display_bytes(b" dog"), " dog");
        assert_eq!(display_bytes(b"a\nb\tc"), "a⏎b⇥c");
        assert_eq!(display_bytes(&[0xE2]), "<0xE2>");
        assert_eq!(display_bytes(&[0xE2, 0x80]), "<0xE2><0x80>");
        assert_eq!(display_bytes("—".as_bytes()), "—");
        assert_eq!(display_bytes(&[0x07]), "<0x07>");
        // Through a trained byte-level tokenizer: every single-byte token displays.
        let tok = small_tokenizer();
        let ids = tok.encode("a\n\t—").unwrap();
        let shown: Vec<String> = ids.iter().map(|&i| tok.display(i)).collect();
        assert_eq!(shown.concat(), "a⏎⇥<0xE2><0x80><0x94>", "{shown:?}");
        let dog = tok.encode(" dog").unwrap();
        assert_eq!(tok.display(dog[0]), " dog");
        assert_eq!(tok.display(tok.eot_id().unwrap()), END_OF_TEXT);
        assert_eq!(tok.display(999_999), "<id 999999>");
        for id in 0..tok.vocab_size() as u32 {
            let _ = tok.display(id); // never panics
        }
    }

    #[test]
    fn synthetic_tokenizer_has_the_requested_size() {
        let tok = TextTokenizer::synthetic_byte_level(50257).unwrap();
        assert_eq!(tok.vocab_size(), 50257);
        assert_eq!(tok.eot_id(), Some(50256));
        let ids = tok.encode("He and I").unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), "He and I");
    }

    #[test]
    fn bad_tokenizer_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, "{ not json").unwrap();
        let msg = format!("{:#}", TextTokenizer::from_file(&path).unwrap_err());
        assert!(msg.contains("tokenizer.json"), "{msg}");
    }
}
