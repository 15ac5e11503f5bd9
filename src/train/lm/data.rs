//! The corpus as a training run gets it: found (downloaded the first time), its data
//! mode settled, and prepared — streamed into a memory-mapped token file (`documents`)
//! or read into memory and split (the sentence modes), from the per-user cache when it
//! can.
use anyhow::{Context, Result};

use crate::config::{DataMode, Settings};
use crate::data::corpus::{corpus_limit, Examples};
use crate::data::prepare::{self, Prepared};
use crate::data::source::CorpusSource;
use crate::data::tokenizer::TextTokenizer;
use crate::protocol::Event;

/// Prepares the corpus: from the per-user cache when it can (file corpora, `data.cache`).
/// The corpus as a run trains on it, whichever way it was prepared.
pub(crate) struct Ready {
    pub name: String,
    /// What checkpoints store to find it again.
    pub spec: String,
    pub tokenizer: TextTokenizer,
    pub train: Examples,
    pub test: Examples,
    pub train_texts: usize,
    pub test_texts: usize,
}

/// Prepares the corpus of `settings` (checked by the caller) as a run would
/// (downloading, caching), without a model: `gptdash data prepare`. The settings' data
/// mode is settled from the corpus.
pub(crate) fn prepare_only(
    settings: &mut Settings,
    progress: &mut dyn FnMut(Event),
) -> Result<Ready> {
    let given = match &settings.data.tokenizer {
        Some(path) => Some(TextTokenizer::from_file(path).context("data.tokenizer / --tokenizer")?),
        None => None,
    };
    let block = settings.model.block_size as usize;
    prepare_data(settings, block, given, progress)
}

/// Finds the corpus (downloading a catalog corpus the first time), settles the data
/// mode (the corpus's own when the settings name none), and prepares it: `documents`
/// mode streams it into a memory-mapped token file ([`crate::data::stream`]); the modes
/// that split sentences read the text into memory ([`prepare::prepare`]).
pub(super) fn prepare_data(
    settings: &mut Settings,
    block: usize,
    tokenizer: Option<TextTokenizer>,
    progress: &mut dyn FnMut(Event),
) -> Result<Ready> {
    let spec = settings.data.corpus.clone();
    let source = crate::interrupt::interruptible_progress(
        "finding the corpus",
        move |p| CorpusSource::resolve(&spec, p),
        &mut |stage, done, total| progress(Event::prepare(stage, done, total)),
    )
    .context("data.corpus / --corpus")?;
    let mode = *settings.data.mode.get_or_insert(source.mode);
    let cache = (settings.data.cache && !source.is_builtin())
        .then(prepare::default_cache_dir)
        .flatten();
    let eot = |t: &TextTokenizer| t.eot_id();
    if mode == DataMode::Documents {
        let s = crate::data::stream::prepare_stream(
            &source,
            &settings.data,
            tokenizer,
            cache.as_deref(),
            &mut |stage, done, total| progress(Event::prepare(stage, done, total)),
        )
        .with_context(|| format!("corpus {}", source.name))?;
        for note in &s.notes {
            progress(Event::log(note.clone()));
        }
        return Ok(Ready {
            name: source.name,
            spec: source.spec,
            train: Examples::packed(s.ids.clone(), s.train.0, s.train.1, block),
            test: Examples::packed(s.ids, s.test.0, s.test.1, block),
            tokenizer: s.tokenizer,
            train_texts: s.train_docs,
            test_texts: s.test_docs,
        });
    }
    progress(Event::prepare("read", 0, 1));
    let limit = corpus_limit(settings.data.max_corpus_mb);
    let reading = source.clone();
    let corpus =
        crate::interrupt::interruptible("reading the corpus", move || reading.load_text(limit))
            .context("data.corpus / --corpus")?;
    progress(Event::prepare("read", 1, 1));
    let cache = cache.filter(|_| corpus.path.is_some());
    let prepared = prepare::prepare(
        &corpus,
        &settings.data,
        tokenizer,
        cache.as_deref(),
        &mut |stage, done, total| progress(Event::prepare(stage, done, total)),
    )?;
    for note in &prepared.notes {
        progress(Event::log(note.clone()));
    }
    let Prepared {
        tokenizer,
        train,
        test,
        ..
    } = prepared;
    let (train_texts, test_texts) = (train.len(), test.len());
    let e = eot(&tokenizer);
    Ok(Ready {
        name: corpus.name.clone(),
        spec: corpus.spec(),
        train: Examples::from_encoded(train, e, block, mode),
        test: Examples::from_encoded(test, e, block, mode),
        tokenizer,
        train_texts,
        test_texts,
    })
}
