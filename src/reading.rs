//! How a model reads text, decided in one place: the normalisation its checkpoint
//! recorded (lower-casing, Penn-Treebank splitting) and its framing (`<|endoftext|>`
//! first, when it was trained on framed sentences or documents). Generation, inspection
//! and classification — headless and in the dashboard — encode text through [`Reading`],
//! and say so when the model reads something other than what was typed.
use anyhow::{bail, Result};

use crate::checkpoint::LoadedModel;
use crate::data::normalize::TextForm;
use crate::data::tokenizer::TextTokenizer;
use crate::generate::encode_prompt;
use crate::model::gpt::Gpt;

/// A model's way of reading text.
#[derive(Clone, Copy)]
pub(crate) struct Reading<'a> {
    pub tokenizer: &'a TextTokenizer,
    pub model: &'a Gpt,
    /// How the pretraining text was prepared; every text given to the model is too.
    pub form: TextForm,
    /// `<|endoftext|>`'s id when the model reads framed text.
    pub frame: Option<u32>,
}

impl<'a> Reading<'a> {
    /// `frames_text`: the model was trained on `<|endoftext|>`-framed text (and its
    /// tokenizer has that token).
    pub(crate) fn new(
        tokenizer: &'a TextTokenizer,
        model: &'a Gpt,
        form: TextForm,
        frames_text: bool,
    ) -> Self {
        Self {
            tokenizer,
            model,
            form,
            frame: tokenizer.eot_id().filter(|_| frames_text),
        }
    }

    /// How a loaded checkpoint reads text.
    pub(crate) fn of(loaded: &'a LoadedModel) -> Self {
        Self::new(
            &loaded.tokenizer,
            &loaded.model,
            loaded.config.text_form,
            loaded.frames_sentences(),
        )
    }

    /// `text` as the model reads it.
    pub(crate) fn prepare(&self, text: &str) -> String {
        self.form.apply(text)
    }

    /// The text the model reads, when it differs from `typed` (beyond surrounding
    /// spaces): for the screen's "as the model reads it".
    pub(crate) fn read_as(&self, typed: &str) -> Option<String> {
        let prepared = self.prepare(typed);
        (prepared.trim() != typed.trim()).then(|| prepared.trim().to_string())
    }

    /// A prompt's ids, prepared and checked (non-empty, inside the vocabulary), without
    /// the frame: generation opens its context with [`Reading::frame`] itself.
    pub(crate) fn prompt_ids(&self, text: &str) -> Result<Vec<u32>> {
        encode_prompt(self.tokenizer, self.model, &self.prepare(text))
    }

    /// The one token `word` is when it follows other text (` dog` before `dog`), as the
    /// model reads it: an answer to compare logits of. An error says how many tokens
    /// it is otherwise.
    pub(crate) fn answer_id(&self, word: &str) -> Result<u32> {
        let prepared = self.prepare(word);
        let bare = prepared.trim();
        if bare.is_empty() {
            bail!("an empty token");
        }
        let mut tries = vec![format!(" {bare}"), bare.to_string()];
        if prepared.starts_with(' ') {
            tries.reverse();
        }
        let mut pieces = Vec::new();
        for t in &tries {
            let ids = self.tokenizer.encode(t)?;
            if let [one] = ids.as_slice() {
                return Ok(*one);
            }
            if pieces.is_empty() {
                pieces = ids;
            }
        }
        let shown: Vec<String> = pieces.iter().map(|&i| self.tokenizer.display(i)).collect();
        bail!(
            "{word:?} is {} tokens for this model ({}); give one token",
            pieces.len(),
            shown.join(" ")
        )
    }

    /// A text's ids as the model reads a whole text: framed (so the first word has a
    /// loss too), at most the block size.
    pub(crate) fn framed_ids(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.prompt_ids(text)?;
        if let Some(eot) = self.frame {
            ids.insert(0, eot);
        }
        let block = self.model.config.block_size as usize;
        if ids.len() > block {
            bail!(
                "the text is {} tokens, more than the model's block size {block}; shorten it",
                ids.len()
            );
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gpt::GptConfig;

    #[test]
    fn a_lower_cased_ptb_split_model_reads_every_text_its_way() {
        let tokenizer = TextTokenizer::train_bpe(
            &["he 's great . she 's not . it is n't , is it ?".to_string()],
            300,
        )
        .unwrap();
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let model = Gpt::new(
            &vs.root(),
            GptConfig {
                vocab_size: tokenizer.vocab_size() as i64,
                block_size: 32,
                n_layer: 1,
                n_head: 1,
                n_embd: 8,
                dropout: 0.0,
                n_classes: 2,
                layer_norm_eps: 1e-5,
                tie_lm_head: false,
            },
        );
        let form = TextForm {
            lowercase: true,
            ptb_split: true,
        };
        let reading = Reading::new(&tokenizer, &model, form, true);
        assert_eq!(reading.read_as("He's great."), Some("he 's great .".into()));
        assert_eq!(reading.read_as("he 's great ."), None);
        // The typed and the prepared text give the same ids; framing only for whole texts.
        let typed = reading.prompt_ids("He's great.").unwrap();
        assert_eq!(typed, reading.prompt_ids("he 's great .").unwrap());
        assert_eq!(typed, tokenizer.encode("he 's great .").unwrap());
        let framed = reading.framed_ids("He's great.").unwrap();
        assert_eq!(framed[0], tokenizer.eot_id().unwrap());
        assert_eq!(&framed[1..], &typed[..]);
        // A raw-text model reads text as typed.
        let raw = Reading::new(&tokenizer, &model, TextForm::default(), false);
        assert_eq!(raw.read_as("He's great."), None);
        assert_eq!(raw.framed_ids("he").unwrap(), raw.prompt_ids("he").unwrap());
        assert!(reading.framed_ids(&"he ".repeat(40)).is_err());
    }
}
