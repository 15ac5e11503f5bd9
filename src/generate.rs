//! Generation that shows its work: for every generated token, its probability and the
//! `grid` most probable alternatives.
//!
//! **What the probabilities mean.** At each step the model's next-token logits are
//! divided by the temperature and passed through a softmax; every probability gptdash
//! reports (the chosen token's, the grid's, the "rest") comes from that distribution,
//! *before* any top-k filter, so the grid shows what the model believed. Temperature 0
//! means greedy decoding; its probabilities are those of temperature 1. Greedy decoding
//! picks the most probable token, which is therefore the grid's first row. Sampling
//! draws from the same distribution, restricted to the `top_k` most probable tokens
//! (renormalised) when `top_k` is set.
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::config::GenerateSettings;
use crate::data::tokenizer::TextTokenizer;
use crate::model::gpt::{Gpt, KvCache};
use crate::rng::SplitMix64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// ≥ 0; 0 means greedy.
    pub temperature: f64,
    /// false = greedy (argmax), as minGPT.
    pub sample: bool,
    /// Sample among the k most probable tokens only.
    pub top_k: Option<usize>,
    pub seed: u64,
    /// Alternatives reported per step.
    pub grid: usize,
    /// Stop after the end-of-text token.
    pub stop_at_eot: bool,
    /// Incremental decoding with a key/value cache.
    pub use_cache: bool,
    /// The model was trained on single sentences framed by `<|endoftext|>` (gptdash's
    /// `sentences` mode): its context starts with that token, as in training, and starts
    /// afresh after each one it generates. Off for models trained on running text.
    pub sentence_context: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 10,
            temperature: 1.0,
            sample: false,
            top_k: None,
            seed: 42,
            grid: 6,
            stop_at_eot: false,
            use_cache: true,
            sentence_context: false,
        }
    }
}

impl From<&GenerateSettings> for GenerateOptions {
    /// The `[generate]` defaults of config.toml.
    fn from(g: &GenerateSettings) -> Self {
        Self {
            max_new_tokens: g.max_new_tokens,
            temperature: g.temperature,
            sample: g.sample,
            top_k: (g.top_k > 0).then_some(g.top_k),
            seed: g.seed,
            grid: g.grid,
            ..Default::default()
        }
    }
}

impl GenerateOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            bail!(
                "temperature must be a number >= 0 (0 means greedy), got {}",
                self.temperature
            );
        }
        // Dividing logits by a tiny temperature overflows them to infinity (NaN
        // probabilities); a huge one makes every token equally likely.
        if self.temperature != 0.0 && !(1e-3..=1e3).contains(&self.temperature) {
            bail!(
                "temperature must be 0 (greedy) or between 0.001 and 1000, got {:e}",
                self.temperature
            );
        }
        if self.grid == 0 {
            bail!("grid must be at least 1 (the number of alternatives shown per token)");
        }
        if self.max_new_tokens == 0 {
            bail!("max_new_tokens must be at least 1");
        }
        if self.top_k == Some(0) {
            bail!("top_k must be at least 1 when given");
        }
        Ok(())
    }

    fn greedy(&self) -> bool {
        !self.sample || self.temperature == 0.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub id: u32,
    /// Display text (see [`TextTokenizer::display`]).
    pub text: String,
    pub prob: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedToken {
    pub id: u32,
    pub text: String,
    /// Probability of this token at its step.
    pub prob: f64,
    /// The most probable tokens at this step, highest first.
    pub top: Vec<Candidate>,
    /// Probability mass outside `top`.
    pub rest: f64,
    /// Whether this token was forced (branching) rather than chosen by the decoder.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

impl GeneratedToken {
    /// A token and the candidates of its step; `rest` is the probability mass outside them.
    pub fn new(id: u32, text: String, prob: f64, top: Vec<Candidate>, forced: bool) -> Self {
        let in_top: f64 = top.iter().map(|c| c.prob).sum();
        Self {
            id,
            text,
            prob,
            top,
            rest: (1.0 - in_top).max(0.0),
            forced,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub prompt: String,
    /// The prompt as the model reads it, when that differs from `prompt` (its
    /// checkpoint lower-cases or splits text Penn-Treebank style).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub read_as: Option<String>,
    /// Prompt followed by the decoded continuation.
    pub text: String,
    pub tokens: Vec<GeneratedToken>,
    /// Mean natural-log probability of the generated tokens.
    pub mean_logprob: f64,
    /// exp(−mean_logprob).
    pub perplexity: f64,
}

/// Encodes a prompt for `model`; empty prompts and ids outside the model are errors.
pub fn encode_prompt(tokenizer: &TextTokenizer, model: &Gpt, prompt: &str) -> Result<Vec<u32>> {
    if prompt.trim().is_empty() {
        bail!("the prompt is empty; give a few words, e.g. --prompt \"He and I\"");
    }
    let ids = tokenizer
        .encode(prompt)
        .context("the prompt cannot be encoded")?;
    if ids.is_empty() {
        bail!("the tokenizer turns the prompt {prompt:?} into no tokens at all");
    }
    if let Some(bad) = ids.iter().find(|&&id| id as i64 >= model.config.vocab_size) {
        bail!(
            "the prompt {prompt:?} encodes to token {bad}, outside the model's vocabulary of {}",
            model.config.vocab_size
        );
    }
    Ok(ids)
}

#[cfg(test)]
/// Generates from a text prompt.
pub(crate) fn generate(
    model: &Gpt,
    tokenizer: &TextTokenizer,
    prompt: &str,
    options: &GenerateOptions,
) -> Result<Generation> {
    let ids = encode_prompt(tokenizer, model, prompt)?;
    generate_from(model, tokenizer, prompt, &ids, &[], options)
}

/// Generates after `prompt_ids`, first emitting `forced` tokens (each reported with the
/// probability the model gave it: the dashboard's "what if this token instead"), then
/// continuing with the decoder until `max_new_tokens` tokens are reported in all.
pub(crate) fn generate_from(
    model: &Gpt,
    tokenizer: &TextTokenizer,
    prompt: &str,
    prompt_ids: &[u32],
    forced: &[u32],
    options: &GenerateOptions,
) -> Result<Generation> {
    options.validate()?;
    if prompt_ids.is_empty() {
        bail!("the prompt is empty");
    }
    let device = model.device();
    let vocab = model.config.vocab_size;
    let block = model.config.block_size as usize;
    let grid = options.grid.min(vocab as usize);
    let eot = tokenizer.eot_id();
    let mut rng = SplitMix64::new(options.seed);
    let sentence_eot = eot.filter(|_| options.sentence_context).map(i64::from);
    let mut ids: Vec<i64> = sentence_eot.into_iter().collect();
    ids.extend(prompt_ids.iter().map(|&i| i as i64));
    // The context never reaches back before the last end-of-text in sentence mode.
    let mut floor = match sentence_eot {
        Some(e) => ids.iter().rposition(|&id| id == e).unwrap_or(0),
        None => 0,
    };
    let mut cache = KvCache::new();
    let mut tokens = Vec::new();

    tch::no_grad(|| -> Result<()> {
        for step in 0..options.max_new_tokens.max(forced.len()) {
            let context_start = ids.len().saturating_sub(block).max(floor);
            let logits = if !options.use_cache {
                model.forward_last(&ids_tensor(&ids[context_start..], device))
            } else if cache.is_empty() || cache.len() as usize + 1 > block {
                // Start, or the cache is full: re-compute the cropped window.
                cache.clear();
                model.forward_cached(&ids_tensor(&ids[context_start..], device), &mut cache)?
            } else {
                let last = ids.len() - 1;
                model.forward_cached(&ids_tensor(&ids[last..], device), &mut cache)?
            };
            let temperature = if options.temperature == 0.0 {
                1.0
            } else {
                options.temperature
            };
            let log_probs = (logits.squeeze_dim(0).to_kind(Kind::Float) / temperature)
                .log_softmax(-1, Kind::Float);
            let (top_lp, top_ids) = log_probs.topk(grid as i64, -1, true, true);
            if top_lp.isnan().any().int64_value(&[]) != 0 {
                bail!("the model's probabilities are not numbers at step {} (its weights may be broken)", step + 1);
            }
            let top_lp = to_f32_vec(&top_lp)?;
            let top_ids = to_i64_vec(&top_ids)?;
            let top: Vec<Candidate> = top_ids
                .iter()
                .zip(&top_lp)
                .map(|(&id, &lp)| Candidate {
                    id: id as u32,
                    text: tokenizer.display(id as u32),
                    prob: (lp as f64).exp(),
                })
                .collect();

            let (chosen, is_forced) = if let Some(&f) = forced.get(step) {
                if f as i64 >= vocab {
                    bail!("forced token {f} is outside the model's vocabulary of {vocab}");
                }
                (f as i64, true)
            } else if options.greedy() {
                (top_ids[0], false)
            } else {
                (sample(&log_probs, options.top_k, &mut rng)?, false)
            };
            let chosen_lp = match top_ids.iter().position(|&id| id == chosen) {
                Some(k) => top_lp[k] as f64,
                None => log_probs.double_value(&[chosen]),
            };
            tokens.push(GeneratedToken::new(
                chosen as u32,
                tokenizer.display(chosen as u32),
                chosen_lp.exp(),
                top,
                is_forced,
            ));
            ids.push(chosen);
            if sentence_eot == Some(chosen) {
                floor = ids.len() - 1;
                cache.clear();
            }
            if options.stop_at_eot && !is_forced && eot == Some(chosen as u32) {
                break;
            }
            // A headless command told to stop (a signal) keeps what it has.
            if crate::interrupt::requested().is_some() {
                break;
            }
        }
        Ok(())
    })?;

    let generated: Vec<u32> = tokens.iter().map(|t| t.id).collect();
    let continuation = tokenizer.decode(&generated)?;
    let mean_logprob = tokens.iter().map(|t| t.prob.ln()).sum::<f64>() / tokens.len().max(1) as f64;
    Ok(Generation {
        prompt: prompt.to_string(),
        read_as: None,
        text: format!("{prompt}{continuation}"),
        tokens,
        mean_logprob,
        perplexity: (-mean_logprob).exp(),
    })
}

fn ids_tensor(ids: &[i64], device: Device) -> Tensor {
    Tensor::from_slice(ids)
        .view([1, ids.len() as i64])
        .to_device(device)
}

fn to_f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    Vec::<f32>::try_from(&t.to_device(Device::Cpu)).map_err(|e| anyhow::anyhow!("{e}"))
}

fn to_i64_vec(t: &Tensor) -> Result<Vec<i64>> {
    Vec::<i64>::try_from(&t.to_device(Device::Cpu)).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Draws a token from `exp(log_probs)`, among the `top_k` most probable when given,
/// with gptdash's own seeded generator (reproducible, independent of libtorch's).
fn sample(log_probs: &Tensor, top_k: Option<usize>, rng: &mut SplitMix64) -> Result<i64> {
    let (lp, ids) = match top_k {
        Some(k) => {
            let (lp, ids) =
                log_probs.topk(k.min(log_probs.size()[0] as usize) as i64, -1, true, true);
            (to_f32_vec(&lp)?, to_i64_vec(&ids)?)
        }
        None => {
            let lp = to_f32_vec(log_probs)?;
            let ids = (0..lp.len() as i64).collect();
            (lp, ids)
        }
    };
    let weights: Vec<f64> = lp.iter().map(|&x| (x as f64).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut r = rng.next_f64() * total;
    for (w, id) in weights.iter().zip(&ids) {
        r -= w;
        if r < 0.0 {
            return Ok(*id);
        }
    }
    // Rounding left a sliver: take the last token with any weight.
    let last = weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
    Ok(ids[last])
}

#[cfg(test)]
mod tests;
