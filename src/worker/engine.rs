//! What the worker holds, as one enum whose variants carry their own state.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use tch::nn;

use crate::checkpoint::{load_model, LoadedModel};
use crate::classifier::{self, sst2_labels};
use crate::config::DataMode;
use crate::data::corpus::{split_sentences, SMALL_CORPUS};
use crate::data::normalize::TextForm;
use crate::device::{device_name, resolve_device};
use crate::generate::{generate_from, GenerateOptions, Generation};
use crate::inspect::pinned_loss;
use crate::model::gpt::Gpt;
use crate::protocol::{Anatomy, Event, InspectAsk, InspectReport, InspectText, WorkerState};
use crate::reading::Reading;
use crate::train::finetune::Finetuner;
use crate::train::lm::LmTrainer;

/// A copy of the weights at one moment, kept to compare inspections against.
pub(crate) struct Pinned {
    _vs: nn::VarStore,
    pub model: Gpt,
    /// The training step it was taken at (`None`: a loaded model).
    pub step: Option<u64>,
}

/// Whether a run advances by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    Running,
    Paused,
    /// Stopped before its end; it may be resumed.
    Stopped,
}

/// What the worker holds. Each variant carries its own state: the worker's state is a
/// function of it ([`Engine::state`]).
pub(crate) enum Engine {
    Empty,
    Training(Box<LmTrainer>, Pace),
    /// A model for generation; `labels` when it is a fine-tuned classifier.
    Loaded(Box<LoadedModel>, Option<[String; 2]>),
    Finetuning(Box<Finetuner>, Pace),
}

impl Engine {
    pub(crate) fn state(&self) -> WorkerState {
        match self {
            Engine::Empty => WorkerState::Idle,
            Engine::Training(run, _) if run.is_done() => WorkerState::Finished,
            Engine::Training(_, Pace::Running) => WorkerState::Training,
            Engine::Training(_, Pace::Paused) => WorkerState::Paused,
            Engine::Training(_, Pace::Stopped) => WorkerState::Finished,
            Engine::Loaded(..) => WorkerState::Loaded,
            Engine::Finetuning(_, Pace::Running) => WorkerState::FineTuning,
            Engine::Finetuning(..) => WorkerState::Paused,
        }
    }

    pub(crate) fn pace(&mut self) -> Option<&mut Pace> {
        match self {
            Engine::Training(_, pace) | Engine::Finetuning(_, pace) => Some(pace),
            _ => None,
        }
    }

    /// How the language model held reads text (the model and tokenizer with it).
    fn lm(&self) -> anyhow::Result<Reading<'_>> {
        let reading = match self {
            Engine::Training(run, _) => Reading::new(
                &run.tokenizer,
                &run.model,
                TextForm::of(&run.settings.data),
                run.frames_sentences(),
            ),
            Engine::Loaded(l, _) => Reading::of(l),
            Engine::Finetuning(run, _) => Reading::of(&run.loaded),
            Engine::Empty => return Err(NoModel.into()),
        };
        Ok(reading)
    }

    /// Continues `prompt` with the model held.
    pub(crate) fn generate(
        &self,
        prompt: &str,
        forced: &[u32],
        options: &GenerateOptions,
    ) -> anyhow::Result<Generation> {
        let reading = self.lm()?;
        let (model, tokenizer) = (reading.model, reading.tokenizer);
        let ids = reading.prompt_ids(prompt)?;
        let options = GenerateOptions {
            sentence_context: reading.frame.is_some(),
            ..options.clone()
        };
        let mut generation = generate_from(model, tokenizer, prompt, &ids, forced, &options)?;
        generation.read_as = reading.read_as(prompt);
        Ok(generation)
    }

    /// The training step of the weights held (`None`: loaded or fine-tuning).
    fn step(&self) -> Option<u64> {
        match self {
            Engine::Training(run, _) => Some(run.step),
            _ => None,
        }
    }

    /// One introspecting pass over `text` with the current weights, and the pinned
    /// weights' per-token loss on the same tokens.
    pub(crate) fn inspect(
        &self,
        text: &InspectText,
        ask: &InspectAsk,
        pinned: Option<&Pinned>,
    ) -> anyhow::Result<InspectReport> {
        let reading = self.lm()?;
        let tokenizer = reading.tokenizer;
        let (ids, shown) = match text {
            InspectText::Typed(text) => (reading.framed_ids(text)?, text.clone()),
            InspectText::Corpus(n) => {
                let ids = match self {
                    Engine::Training(run, _) => run.test_example(*n),
                    _ => None,
                };
                match ids {
                    Some(ids) => {
                        let words: Vec<u32> = ids
                            .iter()
                            .copied()
                            .filter(|&i| Some(i) != tokenizer.eot_id())
                            .collect();
                        let text = tokenizer.decode(&words)?;
                        (ids, text.trim().to_string())
                    }
                    None => {
                        let text = self.corpus_sentence(*n)?;
                        (reading.framed_ids(&text)?, text)
                    }
                }
            }
        };
        let mut report = crate::inspect::report_asked(
            &reading,
            &ids,
            &shown,
            ask,
            crate::inspect::PatchErrors::Report,
        )?;
        report.read_as = match text {
            InspectText::Typed(text) => reading.read_as(text),
            InspectText::Corpus(_) => None, // already in the model's form
        };
        report.step = self.step();
        if let Some(n) = ask.anatomy {
            report.anatomy = Some(self.anatomy(n)?);
        }
        if let Some(pin) = pinned {
            report.pinned = Some(pinned_loss(&pin.model, &ids, pin.step)?);
        }
        Ok(report)
    }

    /// The model's anatomy, and training example `n` (wrapping) as a pair X → Y.
    fn anatomy(&self, n: usize) -> anyhow::Result<Anatomy> {
        let reading = self.lm()?;
        let config = reading.model.config;
        let (vs, init, init_from) = match self {
            Engine::Training(run, _) => (
                run.var_store(),
                Some(run.init_stats().clone()),
                format!(
                    "init: as this run built its model (seed {})",
                    run.settings.train.seed
                ),
            ),
            Engine::Loaded(l, _) => {
                let seed = crate::config::Settings::default().train.seed;
                (
                    &l.vs,
                    Some(crate::anatomy::fresh_init(config, seed)),
                    format!("init: a fresh initialisation of this architecture (seed {seed}, CPU); a checkpoint does not keep its own"),
                )
            }
            Engine::Finetuning(run, _) => (
                &run.loaded.vs,
                None,
                "init: not known while fine-tuning".to_string(),
            ),
            Engine::Empty => return Err(NoModel.into()),
        };
        let now = crate::anatomy::weight_stats(vs);
        let rows = crate::anatomy::rows(&config, &now, init.as_ref());
        let (pair, no_pair) = match self.training_row(n) {
            Ok((row, mode, source)) => {
                // Padding shows only where a batch can pad: a row shorter than a block.
                let pad = if mode == DataMode::Sentences && row.len() <= config.block_size as usize
                {
                    2
                } else {
                    0
                };
                (
                    Some(crate::anatomy::pair(
                        reading.tokenizer,
                        &row,
                        mode,
                        pad,
                        source,
                    )),
                    None,
                )
            }
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        Ok(Anatomy {
            params: rows.first().map_or(0, |r| r.params),
            rows,
            init_from,
            pair,
            no_pair,
        })
    }

    /// Training example `n` (wrapping) as token ids, how the corpus became examples,
    /// and where it comes from.
    fn training_row(&self, n: usize) -> anyhow::Result<(Vec<i64>, DataMode, String)> {
        match self {
            Engine::Training(run, _) => {
                let (row, count) = run
                    .train_example(n)
                    .ok_or_else(|| anyhow::anyhow!("the run has no training example"))?;
                Ok((
                    row,
                    run.data_mode(),
                    format!("training example {} of {count}", n % count.max(1) + 1),
                ))
            }
            Engine::Loaded(l, _) => {
                let reading = Reading::of(l);
                let text = self.corpus_sentence(n)?;
                let mut row: Vec<i64> = reading
                    .framed_ids(&text)?
                    .into_iter()
                    .map(i64::from)
                    .collect();
                row.extend(reading.frame.map(i64::from));
                Ok((
                    row,
                    l.config.data_mode,
                    "a sentence of the built-in corpus, framed as training frames it".into(),
                ))
            }
            _ => bail!("no training data at hand while fine-tuning"),
        }
    }

    /// A test sentence of the built-in corpus for a loaded model trained on it (other
    /// corpora are not read again for this).
    fn corpus_sentence(&self, n: usize) -> anyhow::Result<String> {
        let corpus = match self {
            Engine::Loaded(l, _) => l.config.corpus.as_str(),
            Engine::Finetuning(run, _) => run.loaded.config.corpus.as_str(),
            _ => "",
        };
        if corpus != crate::config::BUILTIN_CORPUS {
            bail!("no corpus text at hand for this model: type a text to inspect (i)");
        }
        let sentences = split_sentences(SMALL_CORPUS);
        let test = &sentences[sentences.len() * 4 / 5..];
        let long: Vec<&String> = test
            .iter()
            .filter(|s| s.split_whitespace().count() >= 4)
            .collect();
        match long.get(n % long.len().max(1)) {
            Some(s) => Ok((*s).clone()),
            None => bail!("the built-in corpus has no test sentence"),
        }
    }

    /// A copy of the current weights, to compare later inspections with.
    pub(crate) fn pin(&self) -> anyhow::Result<Pinned> {
        let model = self.lm()?.model;
        let source = match self {
            Engine::Training(run, _) => run.var_store(),
            Engine::Loaded(l, _) => &l.vs,
            Engine::Finetuning(run, _) => &run.loaded.vs,
            Engine::Empty => bail!("no model to pin"),
        };
        let mut vs = nn::VarStore::new(model.device());
        let copy = Gpt::new(&vs.root(), model.config);
        vs.copy(source)
            .map_err(|e| anyhow::anyhow!("cannot copy the weights: {e}"))?;
        Ok(Pinned {
            _vs: vs,
            model: copy,
            step: self.step(),
        })
    }

    /// Pauses a running run.
    pub(crate) fn pause(&mut self) {
        if let Some(pace @ Pace::Running) = self.pace() {
            *pace = Pace::Paused;
        }
        // A paused run leaves its cores to other runs.
        match self {
            Engine::Training(run, _) => run.release_cpu(),
            Engine::Finetuning(run, _) => run.release_cpu(),
            _ => {}
        }
    }

    /// Sets a paused or stopped run going again; `false` when there is none.
    pub(crate) fn resume(&mut self) -> bool {
        match self {
            Engine::Training(run, pace) if !run.is_done() => *pace = Pace::Running,
            Engine::Finetuning(_, pace) => *pace = Pace::Running,
            _ => return false,
        }
        true
    }

    /// A checkpoint folder loaded for generation (and classification, if it is a
    /// classifier), with a line for the log.
    pub(crate) fn load(dir: &Path, device: &str) -> anyhow::Result<(Engine, String)> {
        let device = resolve_device(device).context("train.device")?;
        let mut loaded = load_model(dir, device)?;
        let info = classifier::read_info(dir)?;
        if let Some(info) = &info {
            info.apply(&mut loaded);
        }
        let labels = info.map(|info| info.labels);
        let message = format!(
            "loaded {} ({:.2}M parameters{}) on {}",
            dir.display(),
            loaded.config.parameters as f64 / 1e6,
            if labels.is_some() {
                ", a classifier"
            } else {
                ""
            },
            device_name(device)
        );
        Ok((Engine::Loaded(Box::new(loaded), labels), message))
    }

    /// Saves the training run held: to its own folder, or to `dir`.
    pub(crate) fn save(&mut self, dir: Option<PathBuf>) -> anyhow::Result<Event> {
        match (self, dir) {
            (Engine::Training(run, _), None) => run.save_now(),
            (Engine::Training(run, _), Some(dir)) => {
                // Another folder than the run's own: only a new or empty one.
                if !crate::output::same_folder(&dir, run.out()) {
                    crate::output::check_target(&dir, "save to", false)?;
                }
                run.save_elsewhere(&dir)
            }
            (Engine::Loaded(..) | Engine::Finetuning(..), _) => {
                bail!("a loaded or fine-tuned model is saved already (see the log for its folder)")
            }
            (Engine::Empty, _) => bail!("nothing to save: start training first"),
        }
    }

    /// A sentence's label and P(positive), with the classifier held.
    pub(crate) fn classify(&self, text: String) -> anyhow::Result<Event> {
        let sst2 = sst2_labels();
        let (loaded, labels) = match self {
            Engine::Loaded(model, Some(labels)) => (model.as_ref(), labels),
            Engine::Finetuning(run, _) => (&run.loaded, &sst2),
            _ => bail!("no classifier yet: fine-tune one first (f on the Classify tab)"),
        };
        let (label, p_positive) = classifier::classify(loaded, labels, &text)?;
        Ok(Event::Classified {
            read_as: Reading::of(loaded).read_as(&text),
            text,
            label,
            p_positive,
        })
    }
}

/// What generating or inspecting answers while the worker holds no model. The dashboard
/// tells it apart by type (`no_model` in the failure events), not by its words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoModel;

impl std::fmt::Display for NoModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no model yet: start training (space on the Train tab) or load a checkpoint")
    }
}

impl std::error::Error for NoModel {}
