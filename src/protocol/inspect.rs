//! What the Inspect tab and `gptdash inspect --json` receive: one introspecting forward
//! pass (attention maps, logit lens, per-token loss, the pinned weights' loss).
use serde::{Deserialize, Serialize};

/// One cell of the logit lens: what the residual stream after a layer predicts next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LensCell {
    /// The most probable next token and its probability.
    pub token: String,
    pub prob: f64,
    /// Entropy of the whole next-token distribution, in nats.
    pub entropy: f64,
}

/// What to inspect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InspectText {
    /// The n-th test example of the corpus the model held was trained on (wrapping).
    Corpus(usize),
    /// A text, read as generation reads a prompt.
    Typed(String),
}

/// The per-token loss of the pinned weights on the same tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinnedLoss {
    /// The training step the weights were pinned at (`None`: a loaded model).
    pub step: Option<u64>,
    pub token_loss: Vec<f64>,
}

/// What was removed for a pass (`gptdash inspect --ablate`), and the per-token loss
/// without the removal, to compare with the report's `token_loss` (under it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AblatedLoss {
    /// Heads as `LAYER.HEAD`, numbered from 1.
    pub heads: Vec<String>,
    /// Layers whose MLP was removed, numbered from 1.
    pub mlps: Vec<usize>,
    /// `zero` or `mean` (over the text's positions).
    pub mode: String,
    pub base_token_loss: Vec<f64>,
}

/// One introspecting forward pass over a text, as plain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectReport {
    /// Pairs the report with the dashboard's ask.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request: Option<u64>,
    /// The text inspected.
    #[serde(default)]
    pub text: String,
    /// The text as the model reads it, when that differs from `text` (its checkpoint
    /// lower-cases or splits text Penn-Treebank style).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub read_as: Option<String>,
    /// The training step of the weights (`None`: a loaded or fine-tuned model).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub step: Option<u64>,
    /// The text's tokens, as the tokenizer cut them.
    pub tokens: Vec<String>,
    /// Per position but the last: −log P(actual next token) in nats, and its rank (1 = top).
    pub token_loss: Vec<f64>,
    pub token_rank: Vec<usize>,
    /// `lens[layer][position]`.
    pub lens: Vec<Vec<LensCell>>,
    /// `attention[layer][head][query][key]`, each row summing to 1.
    pub attention: Vec<Vec<Vec<Vec<f32>>>>,
    /// The pinned weights' per-token loss, when weights are pinned.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pinned: Option<PinnedLoss>,
    /// Parts removed for this pass (its `token_loss`, lens and attention are under the
    /// removal).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ablation: Option<AblatedLoss>,
}

impl InspectReport {
    /// An example report for the tests and benchmarks of the views: `tokens` words,
    /// `layers` × `heads`, head `h` looking about `h` tokens back (weights falling off
    /// as a Gaussian around there, each row summing to 1), the lens growing surer with
    /// depth, and a pinned copy that did worse.
    pub fn example(tokens: usize, layers: usize, heads: usize) -> Self {
        let words: Vec<String> = (0..tokens)
            .map(|i| ["The", " cat", " sat", " on", " the", " mat", "."][i % 7].to_string())
            .collect();
        let head = |h: usize| -> Vec<Vec<f32>> {
            (0..tokens)
                .map(|q| {
                    let w: Vec<f32> = (0..tokens)
                        .map(|k| {
                            if k > q {
                                return 0.0;
                            }
                            let d = (q - k) as f32 - h as f32;
                            (-0.5 * d * d).exp() + 1e-3
                        })
                        .collect();
                    let sum: f32 = w.iter().sum();
                    w.iter().map(|x| x / sum).collect()
                })
                .collect()
        };
        let attention = (0..layers)
            .map(|_| (0..heads).map(head).collect())
            .collect();
        let lens = (0..layers)
            .map(|l| {
                (0..tokens)
                    .map(|p| LensCell {
                        token: words[(p + 1) % words.len().max(1)].clone(),
                        prob: (l + 1) as f64 / (layers + 1) as f64,
                        entropy: 3.0 / (l + 1) as f64,
                    })
                    .collect()
            })
            .collect();
        let token_loss: Vec<f64> = (1..tokens).map(|i| 0.5 + (i % 5) as f64).collect();
        Self {
            request: Some(1),
            text: words.concat(),
            read_as: None,
            step: Some(100),
            token_rank: token_loss.iter().map(|l| 1 + *l as usize).collect(),
            pinned: Some(PinnedLoss {
                step: Some(50),
                token_loss: token_loss.iter().map(|l| l + 0.7).collect(),
            }),
            ablation: None,
            token_loss,
            tokens: words,
            lens,
            attention,
        }
    }
}
