//! Hugging Face GPT-2 checkpoints (`config.json` + `model.safetensors`) read into
//! gptdash's [`Gpt`], and gptdash models written as one: same block structure,
//! tanh-GELU; the LM head tied to `wte` (GPT-2) or not (`tie_word_embeddings: false`,
//! gptdash's own models, with an `lm_head.weight`).
//!
//! Names may carry the `transformer.` prefix (transformers' `save_pretrained`) or not
//! (the hub's `gpt2` files); the `attn.bias`/`attn.masked_bias` mask buffers are
//! ignored. GPT-2's `Conv1D` stores weights as `[in, out]`, so they are transposed into
//! `nn::Linear`'s `[out, in]` on the way in, and back on the way out.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

use crate::config::DataMode;
use crate::model::gpt::{is_classifier_weight, GptConfig, LM_HEAD_WEIGHT};
use crate::model::{CONFIG_FILE, MODEL_FILE};

/// The parts of a transformers `config.json` gptdash needs.
#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    vocab_size: i64,
    #[serde(alias = "n_ctx")]
    n_positions: i64,
    n_embd: i64,
    n_layer: i64,
    n_head: i64,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_activation")]
    activation_function: String,
    #[serde(default = "default_dropout")]
    resid_pdrop: f64,
    #[serde(default = "default_tied")]
    tie_word_embeddings: bool,
}

fn default_tied() -> bool {
    true
}

fn default_eps() -> f64 {
    1e-5
}
fn default_activation() -> String {
    "gelu_new".into()
}
fn default_dropout() -> f64 {
    0.1
}

/// Whether `dir` holds a Hugging Face GPT-2 checkpoint (rather than a gptdash one).
pub(crate) fn is_hf_gpt2(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(CONFIG_FILE)) else {
        return false;
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    value.get("format_version").is_none() && value.get("n_embd").is_some()
}

/// Reads `config.json` of a Hugging Face GPT-2 directory into a [`GptConfig`].
pub(crate) fn read_config(dir: &Path, n_classes: i64) -> Result<GptConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let c: HfConfig = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a GPT-2 config", path.display()))?;
    if let Some(t) = &c.model_type {
        if t != "gpt2" {
            bail!("{}: model_type {t:?} is not gpt2", path.display());
        }
    }
    if !matches!(
        c.activation_function.as_str(),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast"
    ) {
        bail!(
            "{}: activation_function {:?} is not GPT-2's tanh GELU",
            path.display(),
            c.activation_function
        );
    }
    if c.n_head <= 0 || c.n_embd % c.n_head != 0 {
        bail!(
            "{}: n_embd {} is not divisible by n_head {}",
            path.display(),
            c.n_embd,
            c.n_head
        );
    }
    Ok(GptConfig {
        vocab_size: c.vocab_size,
        block_size: c.n_positions,
        n_layer: c.n_layer,
        n_head: c.n_head,
        n_embd: c.n_embd,
        dropout: c.resid_pdrop,
        n_classes,
        layer_norm_eps: c.layer_norm_epsilon,
        tie_lm_head: c.tie_word_embeddings,
    })
}

/// gptdash's name for a Hugging Face GPT-2 tensor name, and whether it is a transposed
/// `Conv1D` weight; `None` for tensors that are not weights (mask buffers). The names
/// are the same both ways but for the `transformer.` prefix, which gptdash always has.
pub(crate) fn map_name(hf: &str) -> Option<(String, bool)> {
    if hf == LM_HEAD_WEIGHT {
        return Some((LM_HEAD_WEIGHT.into(), false));
    }
    let name = hf.strip_prefix("transformer.").unwrap_or(hf);
    if name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") {
        return None;
    }
    let conv1d = name.ends_with(".weight")
        && [
            ".attn.c_attn.",
            ".attn.c_proj.",
            ".mlp.c_fc.",
            ".mlp.c_proj.",
        ]
        .iter()
        .any(|p| name.contains(p));
    Some((format!("transformer.{name}"), conv1d))
}

/// Copies the weights of a Hugging Face GPT-2 directory into `vs`, a [`Gpt`] built from
/// [`read_config`]; every weight must be present with the right shape. The classifier head
/// keeps its fresh initialisation.
pub(crate) fn load_weights(vs: &nn::VarStore, dir: &Path) -> Result<()> {
    let path = dir.join(MODEL_FILE);
    if !path.is_file() {
        bail!(
            "{} has no model.safetensors (only safetensors GPT-2 checkpoints are read)",
            dir.display()
        );
    }
    let file = crate::model::safetensors::WeightsFile::open(&path)?;
    let names: Vec<String> = file.tensors().keys().cloned().collect();
    let mut vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let mut loaded = 0usize;
    tch::no_grad(|| -> Result<()> {
        for hf_name in &names {
            let Some((name, transpose)) = map_name(hf_name) else {
                continue;
            };
            let Some(var) = vars.get_mut(&name) else {
                if name == LM_HEAD_WEIGHT {
                    continue; // a tied head saved anyway: it is `wte`
                }
                bail!("{}: unexpected tensor {hf_name}", path.display());
            };
            let tensor = file.tensor(hf_name)?;
            let source = if transpose {
                tensor.transpose(0, 1)
            } else {
                tensor.shallow_clone()
            };
            if source.size() != var.size() {
                bail!(
                    "{}: {hf_name} has shape {:?}, the model expects {:?}",
                    path.display(),
                    tensor.size(),
                    var.size()
                );
            }
            var.copy_(&source.to_kind(var.kind()));
            loaded += 1;
        }
        Ok(())
    })?;
    let expected = vars.keys().filter(|n| !is_classifier_weight(n)).count();
    if loaded != expected {
        let present: std::collections::HashSet<String> = names
            .iter()
            .filter_map(|n| map_name(n).map(|m| m.0))
            .collect();
        let missing: Vec<&String> = vars
            .keys()
            .filter(|n| !is_classifier_weight(n) && !present.contains(*n))
            .take(5)
            .collect();
        bail!("{}: missing weights, e.g. {missing:?}", path.display());
    }
    Ok(())
}

/// What an exported `config.json` keeps of gptdash's own checkpoint under the key
/// `gptdash` (transformers keeps keys it does not know), so `--init` reads the folder
/// back as it was trained: how text was framed, and where the model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Provenance {
    /// The gptdash checkpoint exported.
    pub source: String,
    /// `small` or the corpus file the model was trained on.
    pub corpus: String,
    pub data_mode: DataMode,
    /// How the training text was prepared (lower-cased, PTB-split), so a model read back
    /// prepares its inputs the same way.
    #[serde(default)]
    pub text_form: crate::data::normalize::TextForm,
    /// gptdash's version that wrote the folder.
    pub version: String,
}

/// The `gptdash` record of an exported folder, if it has one.
pub(crate) fn read_provenance(dir: &Path) -> Option<Provenance> {
    let text = std::fs::read_to_string(dir.join(CONFIG_FILE)).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    serde_json::from_value(value.get("gptdash")?.clone()).ok()
}

/// transformers' `GPT2Config` for a gptdash model, as `config.json` holds it:
/// `GPT2LMHeadModel`, tanh GELU, one dropout rate for residual, embedding and attention
/// dropout; `<|endoftext|>` (when the tokenizer has it) as begin and end of text.
pub(crate) fn config_json(
    model: &GptConfig,
    eot_id: Option<u32>,
    provenance: &Provenance,
) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": model.vocab_size,
        "n_positions": model.block_size,
        "n_embd": model.n_embd,
        "n_layer": model.n_layer,
        "n_head": model.n_head,
        "n_inner": null,
        "activation_function": "gelu_new",
        "resid_pdrop": model.dropout,
        "embd_pdrop": model.dropout,
        "attn_pdrop": model.dropout,
        "layer_norm_epsilon": model.layer_norm_eps,
        "initializer_range": 0.02,
        "scale_attn_weights": true,
        "scale_attn_by_inverse_layer_idx": false,
        "reorder_and_upcast_attn": false,
        "tie_word_embeddings": model.tie_lm_head,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "use_cache": true,
        "torch_dtype": "float32",
        "gptdash": provenance,
    })
}

/// The language model's weights of `vs` under GPT-2's names and layouts (`Conv1D`
/// weights transposed to `[in, out]`; `lm_head.weight` only when the head is untied), in
/// f32 on the CPU. The classifier head is not part of GPT-2's LM and is left out.
pub(crate) fn export_tensors(vs: &nn::VarStore) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for (name, tensor) in vs.variables() {
            if is_classifier_weight(&name) {
                continue;
            }
            let Some((mapped, transpose)) = map_name(&name) else {
                bail!("cannot export {name}: GPT-2 has no such weight");
            };
            if mapped != name {
                bail!("cannot export {name}: GPT-2 names it {mapped}");
            }
            let t = if transpose {
                tensor.transpose(0, 1)
            } else {
                tensor.shallow_clone()
            };
            let t = t
                .to_device(tch::Device::Cpu)
                .to_kind(tch::Kind::Float)
                .contiguous();
            out.push((name, t));
        }
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_with_or_without_prefix() {
        assert_eq!(
            map_name("h.0.attn.c_attn.weight"),
            Some(("transformer.h.0.attn.c_attn.weight".into(), true))
        );
        assert_eq!(
            map_name("transformer.h.3.mlp.c_fc.bias"),
            Some(("transformer.h.3.mlp.c_fc.bias".into(), false))
        );
        assert_eq!(
            map_name("transformer.wte.weight"),
            Some(("transformer.wte.weight".into(), false))
        );
        assert_eq!(
            map_name("ln_f.weight"),
            Some(("transformer.ln_f.weight".into(), false))
        );
        assert_eq!(
            map_name("h.1.ln_2.weight"),
            Some(("transformer.h.1.ln_2.weight".into(), false))
        );
        assert_eq!(map_name("h.0.attn.bias"), None);
        assert_eq!(map_name("h.0.attn.masked_bias"), None);
        assert_eq!(
            map_name("lm_head.weight"),
            Some(("lm_head.weight".into(), false))
        );
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    use crate::model::gpt::Gpt;

    /// A model built from a GPT-2 directory, as `checkpoint::load_model` builds it.
    fn load(dir: &Path) -> Result<Gpt> {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let model = Gpt::new(&vs.root(), read_config(dir, 2)?);
        load_weights(&vs, dir)?;
        Ok(model)
    }

    #[test]
    fn logits_equal_transformers_gpt2_on_the_same_weights() {
        let _rng = crate::torch_rng_lock();
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture("gpt2-tiny/expected.json")).unwrap(),
        )
        .unwrap();
        let ids: Vec<Vec<i64>> = serde_json::from_value(expected["input_ids"].clone()).unwrap();
        let want: Vec<Vec<Vec<f64>>> = serde_json::from_value(expected["logits"].clone()).unwrap();
        for dir in ["gpt2-tiny", "gpt2-tiny-hub"] {
            assert!(is_hf_gpt2(&fixture(dir)));
            let model = load(&fixture(dir)).unwrap();
            assert!(model.config.tie_lm_head);
            let flat: Vec<i64> = ids.iter().flatten().copied().collect();
            let x = Tensor::from_slice(&flat).view([ids.len() as i64, ids[0].len() as i64]);
            let got = model.forward(&x, false);
            let mut max_diff = 0f64;
            for (b, row) in want.iter().enumerate() {
                for (t, logits) in row.iter().enumerate() {
                    for (v, &w) in logits.iter().enumerate() {
                        let g = got.double_value(&[b as i64, t as i64, v as i64]);
                        max_diff = max_diff.max((g - w).abs());
                    }
                }
            }
            assert!(
                max_diff < 1e-4,
                "{dir}: logits differ from transformers by {max_diff}"
            );
        }
    }

    #[test]
    fn attention_equals_transformers_output_attentions() {
        let _rng = crate::torch_rng_lock();
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture("gpt2-tiny/attentions.json")).unwrap(),
        )
        .unwrap();
        let ids: Vec<i64> = serde_json::from_value(expected["input_ids"].clone()).unwrap();
        // [layer][head][query][key], from GPT2LMHeadModel(..., output_attentions=True).
        let want: Vec<Vec<Vec<Vec<f64>>>> =
            serde_json::from_value(expected["attentions"].clone()).unwrap();
        let model = load(&fixture("gpt2-tiny")).unwrap();
        let seen = model.inspect(&ids).unwrap();
        assert_eq!(seen.attention.len(), want.len());
        let mut max_diff = 0f64;
        for (got, want) in seen.attention.iter().zip(&want) {
            assert_eq!(got.size(), vec![4, ids.len() as i64, ids.len() as i64]);
            for (h, rows) in want.iter().enumerate() {
                for (q, row) in rows.iter().enumerate() {
                    for (k, &w) in row.iter().enumerate() {
                        let g = got.double_value(&[h as i64, q as i64, k as i64]);
                        max_diff = max_diff.max((g - w).abs());
                    }
                }
            }
        }
        assert!(
            max_diff < 1e-5,
            "attention differs from transformers by {max_diff}"
        );
    }

    #[test]
    fn bad_gpt2_directories_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::copy(fixture("gpt2-tiny/config.json"), d.join("config.json")).unwrap();
        let msg = format!("{:#}", load(d).err().unwrap());
        assert!(msg.contains("model.safetensors"), "{msg}");
        // Weights of another size.
        let bigger = std::fs::read_to_string(fixture("gpt2-tiny/config.json"))
            .unwrap()
            .replace("\"n_embd\": 32", "\"n_embd\": 64");
        std::fs::write(d.join("config.json"), bigger).unwrap();
        std::fs::copy(
            fixture("gpt2-tiny/model.safetensors"),
            d.join("model.safetensors"),
        )
        .unwrap();
        let msg = format!("{:#}", load(d).err().unwrap());
        assert!(msg.contains("shape"), "{msg}");
    }
}
