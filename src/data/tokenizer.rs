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
pub const END_OF_TEXT: &str = "<|endoftext|>";

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
    pub fn train_bpe(texts: &[String], vocab_size: usize) -> Result<Self> {
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
        builder
            .train(&mut trainer, texts.iter())
            .map_err(|e| anyhow!("BPE training failed: {e}"))?;
        let json = builder
            .to_string(false)
            .map_err(|e| anyhow!("cannot serialise the tokenizer: {e}"))?;
        Self::from_json(&json)
    }

    /// Loads a `tokenizer.json`; errors name the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read tokenizer file {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("invalid tokenizer file {}", path.display()))
    }

    pub fn from_json(json: &str) -> Result<Self> {
        let inner = Tokenizer::from_str(json).map_err(|e| anyhow!("{e}"))?;
        let eot = inner.token_to_id(END_OF_TEXT);
        let tokenizer = Self { inner, eot };
        if tokenizer.vocab_size() == 0 {
            bail!("the tokenizer has an empty vocabulary");
        }
        Ok(tokenizer)
    }

    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| anyhow!("cannot serialise the tokenizer: {e}"))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json()?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Vocabulary size including special tokens: the model's embedding rows.
    pub fn vocab_size(&self) -> usize {
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

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow!("cannot decode {ids:?}: {e}"))
    }

    /// The raw vocabulary entry of an id (byte-level pieces look like `Ġdog`).
    pub fn piece(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::corpus::{split_sentences, SMALL_CORPUS};

    fn small_tokenizer() -> TextTokenizer {
        TextTokenizer::train_bpe(&split_sentences(SMALL_CORPUS), 2000).unwrap()
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
    fn json_round_trip_keeps_ids() {
        let tok = small_tokenizer();
        let back = TextTokenizer::from_json(&tok.to_json().unwrap()).unwrap();
        let text = "She rubs a cat and dog.";
        assert_eq!(tok.encode(text).unwrap(), back.encode(text).unwrap());
    }

    #[test]
    fn gpt2_tokenizer_when_available() {
        // The GPT-2 tokenizer lives outside the repo; the test needs it only when present.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/gpt2/tokenizer.json");
        if !path.exists() {
            eprintln!("skipping: {} not present", path.display());
            return;
        }
        let tok = TextTokenizer::from_file(&path).unwrap();
        assert_eq!(tok.encode("He and I").unwrap(), vec![1544, 290, 314]);
        assert_eq!(tok.encode("Hello world").unwrap(), vec![15496, 995]);
        assert_eq!(tok.eot_id(), Some(50256));
        assert_eq!(tok.vocab_size(), 50257);
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
