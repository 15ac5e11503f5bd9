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
    /// Per position, the top next tokens without the removal.
    #[serde(default)]
    pub base_top: Vec<Vec<TopToken>>,
}

/// One of the most probable next tokens at a position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopToken {
    pub token: String,
    pub prob: f64,
}

/// Parts to remove for a pass, numbered from 0 (the tab's ask; `--ablate` numbers from
/// 1 and is read into this).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AblationAsk {
    /// `(layer, head)`.
    pub heads: Vec<(usize, usize)>,
    pub mlps: Vec<usize>,
    /// Replace by the mean over the text instead of zeros.
    pub mean: bool,
}

/// What to patch into: the corrupted text, and the two answer tokens whose logit
/// difference is measured (unset: the clean run's top next token, and the corrupted
/// run's most probable other one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchAsk {
    pub corrupted: String,
    pub answer: Option<String>,
    pub wrong: Option<String>,
}

/// What an inspection computes besides the pass itself (each costs passes of its own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectAsk {
    pub ablation: AblationAsk,
    /// The ablation map: the loss with each head (and each MLP) removed in turn.
    pub ablation_map: bool,
    /// Direct logit attribution at every position.
    pub attribution: bool,
    /// The token attributed at the last position (unset: the model's top prediction).
    pub dla_token: Option<String>,
    pub patch: Option<PatchAsk>,
    /// The model's anatomy and a training pair (the model and data views), with which
    /// training example (wrapping).
    pub anatomy: Option<usize>,
}

/// The loss increase on the text when each part is removed alone (one pass each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AblationMap {
    /// `zero` or `mean`.
    pub mode: String,
    /// The mean per-token loss with nothing removed, in nats.
    pub base_loss: f64,
    /// `heads[layer][head]`: the mean loss with that head removed, minus `base_loss`.
    pub heads: Vec<Vec<f64>>,
    /// `mlps[layer]`: the same for that layer's MLP.
    pub mlps: Vec<f64>,
}

/// Activation patching from the clean text (the report's) into a corrupted one: the
/// logit difference `answer − wrong` at the last position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Patching {
    pub corrupted_text: String,
    pub corrupted_tokens: Vec<String>,
    pub answer: String,
    pub wrong: String,
    /// The logit difference of the clean and of the corrupted run.
    pub clean: f64,
    pub corrupted: f64,
    /// `resid[layer][position]`: the logit difference with the clean residual stream
    /// entering that block, at that position, patched into the corrupted run.
    pub resid: Vec<Vec<f64>>,
    /// `heads[layer][head]`: with the clean output of that head (every position).
    pub heads: Vec<Vec<f64>>,
}

impl Patching {
    /// `diff` normalised so 0 is the corrupted run and 1 the clean one (`None` when the
    /// two runs give the same difference, about 0.001 apart or less).
    pub fn restored(&self, diff: f64) -> Option<f64> {
        let span = self.clean - self.corrupted;
        (span.abs() > 1e-3).then(|| (diff - self.corrupted) / span)
    }
}

/// Direct logit attribution of one token at one position: what each part wrote into
/// its logit, through the final LayerNorm with its scale frozen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenAttribution {
    pub position: usize,
    /// The token attributed: the text's next token, or at the last position the
    /// model's top prediction (`predicted`) or the asked answer.
    pub token: String,
    pub predicted: bool,
    pub logit: f64,
    /// The parts' sum: embeddings + every layer's attention and MLP + the final
    /// LayerNorm's bias (equals `logit` up to rounding).
    pub sum: f64,
    pub embed_token: f64,
    pub embed_position: f64,
    /// Per layer: the attention branch (its heads and its output bias), the bias
    /// alone, and the MLP.
    pub attn: Vec<f64>,
    pub attn_bias: Vec<f64>,
    pub mlp: Vec<f64>,
    /// `heads[layer][head]`.
    pub heads: Vec<Vec<f64>>,
    pub ln_f_bias: f64,
}

impl TokenAttribution {
    /// Every part with what it wrote, largest first (heads numbered from 1).
    pub fn ranked_parts(&self) -> Vec<(String, f64)> {
        let mut parts = vec![
            ("token embedding".to_string(), self.embed_token),
            ("position embedding".to_string(), self.embed_position),
        ];
        for (l, heads) in self.heads.iter().enumerate() {
            for (h, v) in heads.iter().enumerate() {
                parts.push((format!("head {}.{}", l + 1, h + 1), *v));
            }
            if let Some(b) = self.attn_bias.get(l) {
                parts.push((format!("attention {} bias", l + 1), *b));
            }
            if let Some(m) = self.mlp.get(l) {
                parts.push((format!("MLP {}", l + 1), *m));
            }
        }
        parts.push(("final LayerNorm bias".to_string(), self.ln_f_bias));
        parts.sort_by(|x, y| y.1.abs().total_cmp(&x.1.abs()));
        parts
    }
}

/// One row of the model view: a module (`shape` empty) or one of its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnatomyRow {
    /// Indentation in the tree (0: the model).
    pub depth: usize,
    pub name: String,
    /// What the module is, as `print(model)` says it (`Linear(128 → 384)`), or for a
    /// weight what it holds.
    pub what: String,
    #[serde(default)]
    pub shape: Vec<i64>,
    pub params: i64,
    /// A weight's mean and standard deviation at initialisation (when known) and now.
    #[serde(default)]
    pub init: Option<(f64, f64)>,
    #[serde(default)]
    pub now: Option<(f64, f64)>,
}

/// One training example as the model learns from it: inputs X and targets Y, Y being
/// X shifted one position left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingPair {
    /// Where the example comes from (`training example 3 of 1,024`).
    pub source: String,
    pub x: Vec<String>,
    /// `None`: padding, a target the loss ignores.
    pub y: Vec<Option<String>>,
    /// Predictions the pair trains (targets the loss counts).
    pub examples: usize,
    /// How examples are made (`sentences`: one framed sentence per row, padded; …).
    pub how: String,
}

/// The model's anatomy (the model view) and one training pair (the data view).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anatomy {
    pub params: i64,
    pub rows: Vec<AnatomyRow>,
    /// Where the initial statistics come from (or why there are none).
    pub init_from: String,
    pub pair: Option<TrainingPair>,
    /// Why there is no pair.
    #[serde(default)]
    pub no_pair: Option<String>,
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
    /// Per position, the model's six most probable next tokens.
    #[serde(default)]
    pub top: Vec<Vec<TopToken>>,
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
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ablation_map: Option<AblationMap>,
    /// Per position (`--dla`, or the tab's attribution view).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub attribution: Vec<TokenAttribution>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub patching: Option<Patching>,
    /// Why the asked patching could not be done (the tab's ask; the command line fails
    /// instead), naming the field: `the corrupted text: it is 5 tokens …`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub patch_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub anatomy: Option<Anatomy>,
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
            ablation_map: None,
            attribution: Vec::new(),
            patching: None,
            patch_error: None,
            anatomy: None,
            top: (0..tokens)
                .map(|p| {
                    (0..6)
                        .map(|k| TopToken {
                            token: words[(p + 1 + k) % words.len().max(1)].clone(),
                            prob: 0.5 / (k + 1) as f64,
                        })
                        .collect()
                })
                .collect(),
            token_loss,
            tokens: words,
            lens,
            attention,
        }
    }

    /// [`InspectReport::example`] with every probe filled in, as the causal views draw
    /// them: head 1.1 removed, the ablation map, patching into a text of the same
    /// length, every position's attribution, and a model's anatomy with a training pair.
    pub fn example_probed(tokens: usize, layers: usize, heads: usize) -> Self {
        let mut r = Self::example(tokens, layers, heads);
        let wave = |i: usize| ((i * 7 % 11) as f64 - 5.0) / 5.0;
        r.ablation = Some(AblatedLoss {
            heads: vec!["1.1".into()],
            mlps: Vec::new(),
            mode: "zero".into(),
            base_token_loss: r.token_loss.iter().map(|l| l - 0.3).collect(),
            base_top: r.top.clone(),
        });
        r.ablation_map = Some(AblationMap {
            mode: "zero".into(),
            base_loss: 2.0,
            heads: (0..layers)
                .map(|l| (0..heads).map(|h| 0.1 * wave(l * heads + h)).collect())
                .collect(),
            mlps: (0..layers).map(|l| 0.5 * wave(l)).collect(),
        });
        r.patching = Some(Patching {
            corrupted_text: "A dog sat on the mat.".into(),
            corrupted_tokens: r.tokens.clone(),
            answer: " mat".into(),
            wrong: " rug".into(),
            clean: 3.0,
            corrupted: -1.0,
            resid: (0..layers)
                .map(|l| (0..tokens).map(|p| 1.0 + 2.0 * wave(l + p)).collect())
                .collect(),
            heads: (0..layers)
                .map(|l| {
                    (0..heads)
                        .map(|h| 1.0 + 2.0 * wave(l * heads + h))
                        .collect()
                })
                .collect(),
        });
        r.attribution = (0..tokens)
            .map(|p| {
                let heads: Vec<Vec<f64>> = (0..layers)
                    .map(|l| (0..heads).map(|h| wave(p + l + h)).collect())
                    .collect();
                let attn: Vec<f64> = heads.iter().map(|h| h.iter().sum::<f64>() + 0.1).collect();
                let mlp: Vec<f64> = (0..layers).map(|l| wave(p * l)).collect();
                let sum = 0.5 + 0.2 + attn.iter().sum::<f64>() + mlp.iter().sum::<f64>() + 0.05;
                TokenAttribution {
                    position: p,
                    token: r.tokens[(p + 1) % tokens.max(1)].clone(),
                    predicted: p + 1 == tokens,
                    logit: sum,
                    sum,
                    embed_token: 0.5,
                    embed_position: 0.2,
                    attn,
                    attn_bias: vec![0.1; layers],
                    mlp,
                    heads,
                    ln_f_bias: 0.05,
                }
            })
            .collect();
        let row = |depth: usize, name: &str, shape: Vec<i64>| AnatomyRow {
            depth,
            name: name.into(),
            what: "a part".into(),
            params: if shape.is_empty() {
                0
            } else {
                shape.iter().product()
            },
            init: (!shape.is_empty()).then_some((0.0, 0.02)),
            now: (!shape.is_empty()).then_some((0.001, 0.05)),
            shape,
        };
        let mut rows = vec![row(0, "GPT", Vec::new()), row(1, "transformer", Vec::new())];
        for l in 0..layers {
            rows.push(row(2, &format!("h.{l}"), Vec::new()));
            rows.push(row(3, "attn.c_attn", Vec::new()));
            rows.push(row(4, "weight", vec![384, 128]));
            rows.push(row(4, "bias", vec![384]));
        }
        r.anatomy = Some(Anatomy {
            params: 1_000_000,
            rows,
            init_from: "init: as this run built its model (seed 1337)".into(),
            pair: Some(TrainingPair {
                source: "training example 1 of 10".into(),
                x: r.tokens.clone(),
                y: r.tokens
                    .iter()
                    .skip(1)
                    .map(|t| Some(t.clone()))
                    .chain([None])
                    .collect(),
                examples: tokens.saturating_sub(1),
                how: "sentences".into(),
            }),
            no_pair: None,
        });
        r
    }
}
