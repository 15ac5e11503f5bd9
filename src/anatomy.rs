//! The model's anatomy as plain data (the Inspect tab's model and data views): the
//! module tree with each weight's shape, parameter count and statistics at
//! initialisation and now, and one training pair X → Y as the trainer makes it.
use std::collections::BTreeMap;

use tch::{nn, Kind};

use crate::config::DataMode;
use crate::data::tokenizer::TextTokenizer;
use crate::model::gpt::{Gpt, GptConfig, CLASSIFIER, LM_HEAD_WEIGHT};
use crate::protocol::{AnatomyRow, TrainingPair};

/// A weight's shape, mean and standard deviation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WeightStat {
    pub shape: Vec<i64>,
    pub mean: f64,
    pub std: f64,
}

/// Every weight of `vs` by name.
pub(crate) fn weight_stats(vs: &nn::VarStore) -> BTreeMap<String, WeightStat> {
    tch::no_grad(|| {
        vs.variables()
            .into_iter()
            .map(|(name, t)| {
                let t = t.to_kind(Kind::Double);
                let std = if t.numel() > 1 {
                    t.std(false).double_value(&[])
                } else {
                    0.0
                };
                let stat = WeightStat {
                    shape: t.size(),
                    mean: t.mean(Kind::Double).double_value(&[]),
                    std,
                };
                (name, stat)
            })
            .collect()
    })
}

/// The statistics of a fresh initialisation of `config` with `seed`, on the CPU, kept
/// for the next ask on this thread (a GPT-2-sized model takes a second to build). It
/// reseeds libtorch's generator, which training and fine-tuning reseed at every step
/// and epoch anyway.
pub(crate) fn fresh_init(config: GptConfig, seed: u64) -> BTreeMap<String, WeightStat> {
    type Kept = Option<(GptConfig, u64, BTreeMap<String, WeightStat>)>;
    thread_local! {
        static KEPT: std::cell::RefCell<Kept> = const { std::cell::RefCell::new(None) };
    }
    KEPT.with(|kept| {
        let mut kept = kept.borrow_mut();
        if let Some((c, s, stats)) = kept.as_ref() {
            if *c == config && *s == seed {
                return stats.clone();
            }
        }
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _model = Gpt::new(&vs.root(), config);
        let stats = weight_stats(&vs);
        *kept = Some((config, seed, stats.clone()));
        stats
    })
}

struct Tree<'a> {
    rows: Vec<AnatomyRow>,
    now: &'a BTreeMap<String, WeightStat>,
    init: Option<&'a BTreeMap<String, WeightStat>>,
}

impl Tree<'_> {
    /// A module row; its parameter count is its weights' sum, filled in by `weights`.
    fn module(&mut self, depth: usize, name: &str, what: String) -> usize {
        self.rows.push(AnatomyRow {
            depth,
            name: name.to_string(),
            what,
            shape: Vec::new(),
            params: 0,
            init: None,
            now: None,
        });
        self.rows.len() - 1
    }

    /// The weights `prefix.weight` and `prefix.bias` (those the model has) under the
    /// module row `at`, and its parameter count.
    fn weights(&mut self, at: usize, prefix: &str, what: [&str; 2]) {
        let depth = self.rows[at].depth + 1;
        for (part, what) in ["weight", "bias"].into_iter().zip(what) {
            let name = format!("{prefix}.{part}");
            let Some(stat) = self.now.get(&name) else {
                continue;
            };
            let params: i64 = stat.shape.iter().product();
            self.rows[at].params += params;
            let init = self
                .init
                .and_then(|i| i.get(&name))
                .map(|s| (s.mean, s.std));
            self.rows.push(AnatomyRow {
                depth,
                name: part.to_string(),
                what: what.to_string(),
                shape: stat.shape.clone(),
                params,
                init,
                now: Some((stat.mean, stat.std)),
            });
        }
    }
}

/// The module tree of a GPT as `print(model)` lists it, with where its skip
/// connections and its two heads are, and the statistics of each weight.
pub(crate) fn rows(
    config: &GptConfig,
    now: &BTreeMap<String, WeightStat>,
    init: Option<&BTreeMap<String, WeightStat>>,
) -> Vec<AnatomyRow> {
    let (c, v) = (config.n_embd, config.vocab_size);
    let mut tree = Tree {
        rows: Vec::new(),
        now,
        init,
    };
    let top = tree.module(0, "GPT", "the whole model".into());
    let t = tree.module(
        1,
        "transformer",
        "embeddings, blocks, final LayerNorm".into(),
    );
    let wte = tree.module(
        2,
        "wte",
        format!("Embedding({v}, {c}): a vector per token id"),
    );
    tree.weights(wte, "transformer.wte", ["one row per token", ""]);
    let wpe = tree.module(
        2,
        "wpe",
        format!(
            "Embedding({}, {c}): a vector per position, added",
            config.block_size
        ),
    );
    tree.weights(wpe, "transformer.wpe", ["one row per position", ""]);
    let head_dim = c / config.n_head.max(1);
    for l in 0..config.n_layer {
        let p = format!("transformer.h.{l}");
        let block = tree.module(
            2,
            &format!("h.{l}"),
            "Block — skip connections: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))".into(),
        );
        let parts: [(&str, String, [&str; 2]); 6] = [
            (
                "ln_1",
                format!("LayerNorm({c}) before attention"),
                ["scale γ", "shift β"],
            ),
            (
                "attn.c_attn",
                format!(
                    "Linear({c} → {}): queries, keys, values of {} heads × {head_dim}",
                    3 * c,
                    config.n_head
                ),
                ["", ""],
            ),
            (
                "attn.c_proj",
                format!("Linear({c} → {c}): the heads' output projection, into the stream"),
                ["", ""],
            ),
            (
                "ln_2",
                format!("LayerNorm({c}) before the MLP"),
                ["scale γ", "shift β"],
            ),
            (
                "mlp.c_fc",
                format!("Linear({c} → {}), then GELU", 4 * c),
                ["", ""],
            ),
            (
                "mlp.c_proj",
                format!("Linear({} → {c}): back into the stream", 4 * c),
                ["", ""],
            ),
        ];
        for (name, what, weights) in parts {
            let at = tree.module(3, name, what);
            tree.weights(at, &format!("{p}.{name}"), weights);
            tree.rows[block].params += tree.rows[at].params;
        }
    }
    let ln_f = tree.module(2, "ln_f", format!("LayerNorm({c}), final"));
    tree.weights(ln_f, "transformer.ln_f", ["scale γ", "shift β"]);
    let lm_what = if now.contains_key(LM_HEAD_WEIGHT) {
        format!("Linear({c} → {v}, no bias): LM head, next-token logits")
    } else {
        format!("Linear({c} → {v}, no bias): LM head, tied to wte (its weight is wte's)")
    };
    let lm = tree.module(1, "lm_head", lm_what);
    tree.weights(lm, "lm_head", ["one row per token", ""]);
    let cls = tree.module(
        1,
        CLASSIFIER,
        format!(
            "Linear({c} → {}): classifier head, read at the last token (fine-tuning)",
            config.n_classes
        ),
    );
    tree.weights(cls, CLASSIFIER, ["one row per class", ""]);
    // Module totals: each level's children.
    let children = |rows: &[AnatomyRow], at: usize| -> i64 {
        let depth = rows[at].depth;
        rows[at + 1..]
            .iter()
            .take_while(|r| r.depth > depth)
            .filter(|r| r.depth == depth + 1)
            .map(|r| r.params)
            .sum()
    };
    tree.rows[t].params = children(&tree.rows, t);
    tree.rows[top].params = children(&tree.rows, top);
    tree.rows
}

/// Training row `row` (token ids, at most block + 1) as the trainer feeds it: X is all
/// but the last token, Y all but the first; a batch pads shorter rows to its longest
/// (inputs with 0, targets with the index the loss ignores), shown up to `pad` columns.
pub(crate) fn pair(
    tokenizer: &TextTokenizer,
    row: &[i64],
    mode: DataMode,
    pad: usize,
    source: String,
) -> TrainingPair {
    let shown = |&i: &i64| tokenizer.display(i as u32);
    let n = row.len().saturating_sub(1);
    let mut x: Vec<String> = row.iter().take(n).map(shown).collect();
    let mut y: Vec<Option<String>> = row.iter().skip(1).map(|i| Some(shown(i))).collect();
    for _ in 0..pad {
        x.push(tokenizer.display(0));
        y.push(None);
    }
    let how = match mode {
        DataMode::Sentences => {
            "sentences: one sentence per row, framed by <|endoftext|> when the tokenizer has it; a batch pads rows to its longest (inputs 0, targets ignored)"
        }
        DataMode::Pack => {
            "pack: block-size windows of the texts' token stream, each text followed by <|endoftext|>; no padding"
        }
        DataMode::Documents => {
            "documents: block-size windows of the stream that starts with <|endoftext|>; no padding"
        }
    };
    TrainingPair {
        source,
        x,
        y,
        examples: n,
        how: how.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_counts_every_parameter_and_knows_both_heads() {
        let _rng = crate::torch_rng_lock();
        let config = GptConfig {
            n_head: 2,
            ..GptConfig::tiny(40, 8, 2, 16)
        };
        tch::manual_seed(3);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let _model = Gpt::new(&vs.root(), config);
        let init = fresh_init(config, 3);
        let now = weight_stats(&vs);
        // The same seed on the same device: the same initial weights.
        assert_eq!(init, now);
        let rows = rows(&config, &now, Some(&init));
        assert_eq!(rows[0].params, crate::model::gpt::parameter_count(&vs));
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        for want in ["wte", "wpe", "h.0", "h.1", "ln_f", "lm_head", "classifier"] {
            assert!(names.contains(&want), "{want} missing: {names:?}");
        }
        let c_attn = rows.iter().position(|r| r.name == "attn.c_attn").unwrap();
        assert_eq!(rows[c_attn].params, 16 * 48 + 48);
        assert_eq!(rows[c_attn + 1].shape, vec![48, 16]);
        let (mean, std) = rows[c_attn + 1].now.unwrap();
        assert!(
            mean.abs() < 0.01 && (std - 0.02).abs() < 0.005,
            "{mean} {std}"
        );
        assert!(rows.iter().any(|r| r.what.contains("skip connections")));
        assert!(rows.iter().any(|r| r.what.contains("LM head")));
        assert!(rows.iter().any(|r| r.what.contains("classifier head")));
    }

    #[test]
    fn a_pair_is_the_row_shifted_by_one_with_padding_ignored() {
        let tokenizer = TextTokenizer::synthetic_byte_level(300).unwrap();
        let p = pair(
            &tokenizer,
            &[5, 6, 7, 8],
            DataMode::Sentences,
            2,
            "x".into(),
        );
        assert_eq!(p.x.len(), 5);
        assert_eq!(p.y.len(), 5);
        assert_eq!(p.examples, 3);
        assert_eq!(p.y[0].as_deref(), Some(p.x[1].as_str()));
        assert_eq!(p.y[2], Some(tokenizer.display(8)));
        assert_eq!(p.y[3], None);
    }
}
