//! minGPT's GPT in `tch`, in reading order: attention, MLP, block, the model.
//!
//! Weight names follow GPT-2 (`transformer.h.0.attn.c_attn.weight`, ...), so checkpoints
//! read like Hugging Face's and the GPT-2 import is a renaming, not a re-plumbing.
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::config::Readout;
use crate::data::corpus::IGNORE_INDEX;

mod dropout;
pub(crate) use dropout::dropout;

/// The classifier head's variable path: its weights are `classifier.weight`/`.bias`.
pub(crate) const CLASSIFIER: &str = "classifier";
/// The token embedding's weight (also the LM head's when tied).
pub(crate) const TOKEN_EMBEDDING_WEIGHT: &str = "transformer.wte.weight";
/// An untied LM head's weight (GPT-2's name too).
pub(crate) const LM_HEAD_WEIGHT: &str = "lm_head.weight";

/// Whether weight `name` belongs to the classifier head (which language-model training
/// leaves alone and a GPT-2 folder does not have).
pub(crate) fn is_classifier_weight(name: &str) -> bool {
    name.strip_prefix(CLASSIFIER)
        .is_some_and(|rest| rest.starts_with('.'))
}

mod causal;
mod inspect;
pub use causal::{Attribution, HeadEffects, PatchMaps, Trace};
pub use inspect::AblationMode;
pub(crate) use inspect::{Ablation, Inspection};

/// Everything needed to build a GPT; stored in each checkpoint's `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    pub vocab_size: i64,
    pub block_size: i64,
    pub n_layer: i64,
    pub n_head: i64,
    pub n_embd: i64,
    pub dropout: f64,
    pub n_classes: i64,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// The LM head shares the token embedding matrix (GPT-2); gptdash's own models
    /// have an untied head, as minGPT.
    #[serde(default)]
    pub tie_lm_head: bool,
}

#[cfg(test)]
impl GptConfig {
    /// A small model for the tests: 2 heads, 2 classes, no dropout, an untied head.
    pub(crate) fn tiny(vocab_size: i64, block_size: i64, n_layer: i64, n_embd: i64) -> Self {
        Self {
            vocab_size,
            block_size,
            n_layer,
            n_head: 2,
            n_embd,
            dropout: 0.0,
            n_classes: 2,
            layer_norm_eps: 1e-5,
            tie_lm_head: false,
        }
    }
}

fn default_layer_norm_eps() -> f64 {
    1e-5
}

fn linear(p: nn::Path, n_in: i64, n_out: i64, std: f64, bias: bool) -> nn::Linear {
    let config = nn::LinearConfig {
        ws_init: nn::Init::Randn {
            mean: 0.0,
            stdev: std,
        },
        bs_init: bias.then_some(nn::Init::Const(0.0)),
        bias,
    };
    nn::linear(p, n_in, n_out, config)
}

/// `l` applied to `x` with its matrix product in `kind`: f32 runs the layer as it is;
/// bf16 casts the input and the (f32 master) weights for this call, so gradients still
/// reach the f32 weights. The output is in `kind`; adding it to the f32 residual stream
/// promotes it back.
fn project(l: &nn::Linear, x: &Tensor, kind: Kind) -> Tensor {
    if kind == Kind::Float {
        return l.forward(x);
    }
    let bias = l.bs.as_ref().map(|b| b.to_kind(kind));
    x.to_kind(kind).linear(&l.ws.to_kind(kind), bias.as_ref())
}

fn layer_norm(p: nn::Path, cfg: &GptConfig) -> nn::LayerNorm {
    let config = nn::LayerNormConfig {
        eps: cfg.layer_norm_eps,
        ..Default::default()
    };
    nn::layer_norm(p, vec![cfg.n_embd], config)
}

/// Softmax attention of queries `q` `[batch, heads, t, d]` at positions `start..start+t`
/// over keys and values `k`, `v` at positions `0..` (each query sees its own position
/// and those before): the heads' outputs and the probabilities. The introspecting pass
/// and causal probing (`inspect`, `causal`) compute attention with it, so alike.
fn attend_from(q: &Tensor, k: &Tensor, v: &Tensor, start: i64) -> (Tensor, Tensor) {
    let (t, n) = (q.size()[2], k.size()[2]);
    let scale = 1.0 / (q.size()[3] as f64).sqrt();
    let future = Tensor::ones([t, n], (Kind::Bool, q.device())).triu(start + 1);
    let att = (q.matmul(&k.transpose(-2, -1)) * scale)
        .masked_fill(&future, f64::NEG_INFINITY)
        .softmax(-1, Kind::Float);
    (att.to_kind(v.kind()).matmul(v), att)
}

/// Multi-head causal self-attention: one fused q/k/v projection and an output projection.
#[derive(Debug)]
pub(crate) struct CausalSelfAttention {
    c_attn: nn::Linear,
    c_proj: nn::Linear,
    n_head: i64,
    n_embd: i64,
    dropout: f64,
    /// Kind of the matrix products (see [`Gpt::set_compute_kind`]).
    kind: Kind,
}

impl CausalSelfAttention {
    fn new(p: nn::Path, cfg: &GptConfig) -> Self {
        let residual_std = 0.02 / (2.0 * cfg.n_layer as f64).sqrt();
        Self {
            c_attn: linear(&p / "c_attn", cfg.n_embd, 3 * cfg.n_embd, 0.02, true),
            c_proj: linear(&p / "c_proj", cfg.n_embd, cfg.n_embd, residual_std, true),
            n_head: cfg.n_head,
            n_embd: cfg.n_embd,
            dropout: cfg.dropout,
            kind: Kind::Float,
        }
    }

    /// Queries, keys and values `[batch, heads, time, head_dim]` of `x` `[batch, time, channels]`.
    fn heads(&self, x: &Tensor) -> (Tensor, Tensor, Tensor) {
        let size = x.size();
        let (b, t) = (size[0], size[1]);
        let head_dim = self.n_embd / self.n_head;
        let qkv = project(&self.c_attn, x, self.kind).split(self.n_embd, 2);
        let split = |z: &Tensor| z.view([b, t, self.n_head, head_dim]).transpose(1, 2);
        (split(&qkv[0]), split(&qkv[1]), split(&qkv[2]))
    }

    /// Joins the heads of `y` `[batch, heads, time, head_dim]` and projects them back.
    fn merge(&self, y: &Tensor) -> Tensor {
        let size = y.size();
        let (b, t) = (size[0], size[2]);
        let y = y.transpose(1, 2).contiguous().view([b, t, self.n_embd]);
        project(&self.c_proj, &y, self.kind)
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let (q, k, v) = self.heads(x);
        let p = if train { self.dropout } else { 0.0 };
        let cpu = q.device() == tch::Device::Cpu;
        let y = if cpu && (p > 0.0 || q.kind() == Kind::BFloat16) {
            // libtorch's CPU attention kernels have no dropout and fall back to these
            // same steps, with the slow mask; written out, they use ours. In bf16 its
            // fused CPU kernel is also ~20% slower per training step than these steps
            // (gpt-mini, block 64: 6.3k vs 7.9k tokens/s), so bf16 takes them too; the
            // softmax runs in f32 either way.
            let t = q.size()[2];
            let scale = 1.0 / (q.size()[3] as f64).sqrt();
            let future = Tensor::ones([t, t], (Kind::Bool, q.device())).triu(1);
            let att = (q.matmul(&k.transpose(-2, -1)) * scale)
                .masked_fill(&future, f64::NEG_INFINITY)
                .softmax(-1, Kind::Float)
                .to_kind(q.kind());
            dropout(&att, p, train).matmul(&v)
        } else {
            Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, p, true, None, false)
        };
        dropout(&self.merge(&y), self.dropout, train)
    }

    /// Inference with a key/value cache: `x` holds the new positions only. With an empty
    /// cache any number of positions (causal); with a filled cache exactly one, which
    /// attends to every cached position.
    fn forward_cached(&self, x: &Tensor, cache: &mut Option<(Tensor, Tensor)>) -> Tensor {
        let (q, k, v) = self.heads(x);
        let (k, v, causal) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2), Tensor::cat(&[pv, v], 2), false),
            None => (k, v, true),
        };
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            causal,
            None,
            false,
        );
        *cache = Some((k, v));
        self.merge(&y)
    }
}

/// The feed-forward part of a block: 4× expansion, tanh-GELU, projection back.
#[derive(Debug)]
pub(crate) struct Mlp {
    c_fc: nn::Linear,
    c_proj: nn::Linear,
    dropout: f64,
    kind: Kind,
}

impl Mlp {
    fn new(p: nn::Path, cfg: &GptConfig) -> Self {
        let residual_std = 0.02 / (2.0 * cfg.n_layer as f64).sqrt();
        Self {
            c_fc: linear(&p / "c_fc", cfg.n_embd, 4 * cfg.n_embd, 0.02, true),
            c_proj: linear(
                &p / "c_proj",
                4 * cfg.n_embd,
                cfg.n_embd,
                residual_std,
                true,
            ),
            dropout: cfg.dropout,
            kind: Kind::Float,
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = project(&self.c_fc, x, self.kind).gelu("tanh");
        dropout(&project(&self.c_proj, &h, self.kind), self.dropout, train)
    }
}

/// A pre-LayerNorm transformer block with two residual branches.
#[derive(Debug)]
pub(crate) struct Block {
    ln_1: nn::LayerNorm,
    attn: CausalSelfAttention,
    ln_2: nn::LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn new(p: nn::Path, cfg: &GptConfig) -> Self {
        Self {
            ln_1: layer_norm(&p / "ln_1", cfg),
            attn: CausalSelfAttention::new(&p / "attn", cfg),
            ln_2: layer_norm(&p / "ln_2", cfg),
            mlp: Mlp::new(&p / "mlp", cfg),
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let x = x + self.attn.forward(&self.ln_1.forward(x), train);
        &x + self.mlp.forward(&self.ln_2.forward(&x), train)
    }

    fn forward_cached(&self, x: &Tensor, cache: &mut Option<(Tensor, Tensor)>) -> Tensor {
        let x = x + self.attn.forward_cached(&self.ln_1.forward(x), cache);
        &x + self.mlp.forward(&self.ln_2.forward(&x), false)
    }
}

/// Keys and values of every layer for the positions seen so far (inference only).
#[derive(Debug, Default)]
pub(crate) struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: i64,
}

impl KvCache {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Positions held.
    pub(crate) fn len(&self) -> i64 {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn clear(&mut self) {
        self.layers.clear();
        self.len = 0;
    }
}

/// The GPT: embeddings, blocks, final LayerNorm, LM head (no bias) and a classifier head.
#[derive(Debug)]
pub struct Gpt {
    pub config: GptConfig,
    readout: Readout,
    wte: nn::Embedding,
    wpe: nn::Embedding,
    h: Vec<Block>,
    ln_f: nn::LayerNorm,
    lm_head: nn::Linear,
    classifier: nn::Linear,
}

impl Gpt {
    /// Builds the model under `root` with minGPT/GPT-2 initialisation: N(0, 0.02)
    /// everywhere, N(0, 0.02/√(2·n_layer)) for residual projections, zero biases,
    /// unit LayerNorm.
    pub fn new(root: &nn::Path, config: GptConfig) -> Self {
        let t = root / "transformer";
        let emb = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            ..Default::default()
        };
        let wte = nn::embedding(&t / "wte", config.vocab_size, config.n_embd, emb);
        // Initialisation order is part of reproducibility: wte, wpe, blocks, ln_f, heads.
        let wpe = nn::embedding(&t / "wpe", config.block_size, config.n_embd, emb);
        let h = (0..config.n_layer)
            .map(|i| Block::new(&t / "h" / i, &config))
            .collect();
        let ln_f = layer_norm(&t / "ln_f", &config);
        let lm_head = if config.tie_lm_head {
            nn::Linear {
                ws: wte.ws.shallow_clone(),
                bs: None,
            }
        } else {
            linear(
                root / "lm_head",
                config.n_embd,
                config.vocab_size,
                0.02,
                false,
            )
        };
        Self {
            readout: Readout::Last,
            wte,
            wpe,
            h,
            ln_f,
            lm_head,
            classifier: linear(
                root / CLASSIFIER,
                config.n_embd,
                config.n_classes,
                0.02,
                true,
            ),
            config,
        }
    }

    /// Where the weights live.
    pub(crate) fn device(&self) -> tch::Device {
        self.wte.ws.device()
    }

    /// Runs the blocks' matrix products in `kind` (`Kind::Float`, the default, or
    /// `Kind::BFloat16`). Weights, LayerNorms and the residual stream stay f32. The
    /// fused training step also runs the LM head in this kind; `forward` keeps it f32.
    pub(crate) fn set_compute_kind(&mut self, kind: Kind) {
        for block in &mut self.h {
            block.attn.kind = kind;
            block.mlp.kind = kind;
        }
    }

    /// What the blocks' matrix products compute in.
    pub(crate) fn compute_kind(&self) -> Kind {
        self.h.first().map_or(Kind::Float, |b| b.attn.kind)
    }

    /// The token embedding matrix `[vocab, n_embd]`.
    pub(crate) fn token_embedding(&self) -> &Tensor {
        &self.wte.ws
    }

    /// The LM head matrix `[vocab, n_embd]` (the token embedding when tied).
    pub(crate) fn lm_head_weight(&self) -> &Tensor {
        &self.lm_head.ws
    }

    /// Final hidden states `[batch, time, n_embd]` for token ids `[batch, time]`
    /// (time ≤ block_size).
    pub(crate) fn hidden(&self, idx: &Tensor, train: bool) -> Tensor {
        self.hidden_from_embeddings(&self.wte.forward(idx), train)
    }

    /// Final hidden states from token embeddings `[batch, time, n_embd]` already looked
    /// up (the fused training step gathers them itself to handle their gradient).
    pub(crate) fn hidden_from_embeddings(&self, tok_emb: &Tensor, train: bool) -> Tensor {
        self.hidden_states(tok_emb, train, false).0
    }

    /// Final hidden states, and with `every_block` the mean over blocks of each block's
    /// output through the final layer norm (what [`Readout::Layers`] reads).
    fn hidden_states(
        &self,
        tok_emb: &Tensor,
        train: bool,
        every_block: bool,
    ) -> (Tensor, Option<Tensor>) {
        let t = tok_emb.size()[1];
        let pos = Tensor::arange(t, (Kind::Int64, tok_emb.device()));
        let mut x = dropout(
            &(tok_emb + self.wpe.forward(&pos)),
            self.config.dropout,
            train,
        );
        let mut sum: Option<Tensor> = None;
        for (i, block) in self.h.iter().enumerate() {
            x = block.forward(&x, train);
            if every_block && i + 1 < self.h.len() {
                let normed = self.ln_f.forward(&x);
                sum = Some(match sum {
                    Some(s) => s + normed,
                    None => normed,
                });
            }
        }
        let last = self.ln_f.forward(&x);
        let mean = every_block.then(|| match sum {
            Some(s) => (s + &last) / self.h.len() as f64,
            None => last.shallow_clone(),
        });
        (last, mean)
    }

    /// The hidden states the classifier head reads (`[batch, time, n_embd]`), and the
    /// final ones the LM head reads: the same tensor unless the read-out is
    /// [`Readout::Layers`].
    pub(crate) fn classifier_hidden(&self, idx: &Tensor, train: bool) -> (Tensor, Tensor) {
        let every_block = self.readout == Readout::Layers;
        let (last, mean) = self.hidden_states(&self.wte.forward(idx), train, every_block);
        (mean.unwrap_or_else(|| last.shallow_clone()), last)
    }

    /// Next-token logits `[batch, time, vocab]`.
    pub fn forward(&self, idx: &Tensor, train: bool) -> Tensor {
        self.lm_head.forward(&self.hidden(idx, train))
    }

    /// Next-token logits `[batch, time, vocab]` from hidden states.
    pub(crate) fn lm_logits(&self, h: &Tensor) -> Tensor {
        self.lm_head.forward(h)
    }

    /// Inference: logits `[batch, vocab]` of the last position only (the LM head runs on
    /// one position, as nanoGPT does at generation time).
    pub(crate) fn forward_last(&self, idx: &Tensor) -> Tensor {
        let h = self.hidden(idx, false);
        let t = h.size()[1];
        self.lm_head.forward(&h.select(1, t - 1))
    }

    /// Incremental inference: feeds `idx` (new positions) through the model using and
    /// extending `cache`, and returns the logits `[batch, vocab]` of the last position.
    /// An empty cache takes a whole prompt; a filled one exactly one new token; the
    /// total never exceeds the block size.
    pub(crate) fn forward_cached(
        &self,
        idx: &Tensor,
        cache: &mut KvCache,
    ) -> anyhow::Result<Tensor> {
        let t = idx.size()[1];
        if !cache.is_empty() && t != 1 {
            anyhow::bail!("a filled KV cache takes one new token at a time, got {t}");
        }
        if cache.len + t > self.config.block_size {
            anyhow::bail!(
                "KV cache would hold {} positions, more than the block size {}",
                cache.len + t,
                self.config.block_size
            );
        }
        if cache.layers.len() != self.h.len() {
            cache.layers = (0..self.h.len()).map(|_| None).collect();
        }
        let pos = Tensor::arange_start(cache.len, cache.len + t, (Kind::Int64, idx.device()));
        let mut x = self.wte.forward(idx) + self.wpe.forward(&pos);
        for (block, layer_cache) in self.h.iter().zip(cache.layers.iter_mut()) {
            x = block.forward_cached(&x, layer_cache);
        }
        cache.len += t;
        let h = self.ln_f.forward(&x.select(1, t - 1));
        Ok(self.lm_head.forward(&h))
    }

    /// Mean cross-entropy over the targets that are not padding ([`IGNORE_INDEX`]).
    pub(crate) fn lm_loss(logits: &Tensor, targets: &Tensor) -> Tensor {
        let v = logits.size()[2];
        logits.view([-1, v]).cross_entropy_loss::<Tensor>(
            &targets.view([-1]),
            None,
            tch::Reduction::Mean,
            IGNORE_INDEX,
            0.0,
        )
    }

    /// Classifier logits `[batch, n_classes]` read from the hidden state of the last
    /// real token of each right-padded row (`lengths[b]` real tokens in row `b`). A
    /// causal model never lets that position see the padding, so the amount of padding
    /// cannot change a prediction.
    pub(crate) fn classify(&self, idx: &Tensor, lengths: &Tensor, train: bool) -> Tensor {
        self.classify_hidden(&self.classifier_hidden(idx, train).0, lengths, train)
    }

    #[cfg(test)]
    pub(crate) fn readout(&self) -> Readout {
        self.readout
    }

    pub(crate) fn set_readout(&mut self, readout: Readout) {
        self.readout = readout;
    }

    /// Starts the classifier head as the LM head's rows `tokens` (one per class) and a
    /// zero bias: its logits are then the language model's logits of those tokens, so
    /// class probabilities are the LM's next-token judgement between them
    /// ([`Readout::Prompt`]). Out-of-vocabulary ids are an error.
    pub(crate) fn start_head_from_lm_head(&mut self, tokens: &[i64]) -> anyhow::Result<()> {
        let vocab = self.config.vocab_size;
        if tokens.len() as i64 != self.config.n_classes {
            anyhow::bail!(
                "{} label tokens for {} classes",
                tokens.len(),
                self.config.n_classes
            );
        }
        if let Some(bad) = tokens.iter().find(|&&t| t < 0 || t >= vocab) {
            anyhow::bail!("label token {bad} is outside the vocabulary of {vocab}");
        }
        let index = Tensor::from_slice(tokens).to_device(self.device());
        tch::no_grad(|| {
            self.classifier
                .ws
                .copy_(&self.lm_head.ws.index_select(0, &index));
            if let Some(bs) = &mut self.classifier.bs {
                let _ = bs.zero_();
            }
        });
        Ok(())
    }

    /// [`Gpt::classify`] from the hidden states [`Gpt::classifier_hidden`] computed.
    pub(crate) fn classify_hidden(&self, h: &Tensor, lengths: &Tensor, train: bool) -> Tensor {
        let lengths = lengths.to_device(h.device());
        let pooled = match self.readout {
            Readout::Last | Readout::Prompt => {
                let rows = Tensor::arange(h.size()[0], (Kind::Int64, h.device()));
                let last = (&lengths - 1).to_kind(Kind::Int64);
                h.index(&[Some(rows), Some(last)])
            }
            Readout::Mean | Readout::Layers => {
                let positions = Tensor::arange(h.size()[1], (Kind::Int64, h.device()));
                let mask = positions
                    .unsqueeze(0)
                    .lt_tensor(&lengths.unsqueeze(1))
                    .to_kind(h.kind())
                    .unsqueeze(-1);
                let sum = (h * &mask).sum_dim_intlist(1, false, h.kind());
                sum / mask.sum_dim_intlist(1, false, h.kind())
            }
        };
        self.classifier
            .forward(&dropout(&pooled, self.config.dropout, train))
    }
}

/// Parameters in a var store (every trainable tensor).
pub(crate) fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

#[cfg(test)]
mod tests;
