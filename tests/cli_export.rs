//! `gptdash export --hf`: a Hugging Face GPT-2 folder that gptdash loads back (`--init`,
//! `--checkpoint`) with the same logits — from a gptdash checkpoint (untied LM head), a
//! GPT-2 folder (tied head) and a fine-tuned classifier (the head is left out, and said
//! so). `tests/hf_transformers.rs` loads the same folders with transformers.
mod common;

use std::path::Path;

use common::{
    events, expect_error, finetune_small, fixture, gptdash, stderr, stdout, tiny_checkpoint,
    word_tokenizer, write_sst2,
};
use gptdash::checkpoint::{load_model, Base};
use tch::{Device, Tensor};

/// The model's logits for `ids` (one sequence).
fn logits(dir: &Path, ids: &[i64]) -> Tensor {
    let loaded = load_model(dir, Device::Cpu).unwrap();
    tch::no_grad(|| {
        loaded
            .model
            .forward(&Tensor::from_slice(ids).view([1, -1]), false)
    })
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

/// The safetensors header of a file: tensor name → entry, and `__metadata__`.
fn header(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + len]).unwrap()
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn export(dir: &Path, checkpoint: &str, out: &str) -> serde_json::Value {
    let o = gptdash(
        dir,
        &["export", "--checkpoint", checkpoint, "--hf", out, "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let ev = events(&o);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["event"], "exported");
    ev[0].clone()
}

#[test]
fn export_then_init_gives_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = tiny_checkpoint(d);
    let done = export(d, &ck, "hf");
    assert_eq!(done["path"], "hf");
    assert_eq!(done["tied_lm_head"], false);
    assert!(done["left_out"].as_array().unwrap().is_empty(), "{done}");
    assert!(done["notes"][0].as_str().unwrap().contains("<|endoftext|>"));
    let out = d.join("hf");
    for f in done["files"].as_array().unwrap() {
        assert!(out.join(f.as_str().unwrap()).is_file(), "{f} missing");
    }
    // transformers' GPT2Config, with gptdash's record beside it.
    let config = json_file(&out.join("config.json"));
    assert_eq!(config["model_type"], "gpt2");
    assert_eq!(config["architectures"][0], "GPT2LMHeadModel");
    assert_eq!(config["activation_function"], "gelu_new");
    assert_eq!(config["tie_word_embeddings"], false);
    assert_eq!(config["n_positions"], 16);
    assert_eq!(config["gptdash"]["data_mode"], "sentences");
    assert!(config.get("format_version").is_none());
    let special = json_file(&out.join("special_tokens_map.json"));
    assert_eq!(special["eos_token"], "<|endoftext|>");
    // GPT-2's layout: Conv1D weights [in, out], an untied head as lm_head.weight.
    let h = header(&out.join("model.safetensors"));
    assert_eq!(h["__metadata__"]["format"], "pt");
    let n_embd = config["n_embd"].as_i64().unwrap();
    assert_eq!(
        h["transformer.h.0.attn.c_attn.weight"]["shape"],
        serde_json::json!([n_embd, 3 * n_embd])
    );
    assert_eq!(
        h["transformer.h.0.mlp.c_proj.weight"]["shape"],
        serde_json::json!([4 * n_embd, n_embd])
    );
    assert_eq!(
        h["lm_head.weight"]["shape"],
        serde_json::json!([config["vocab_size"], n_embd])
    );
    assert!(h.get("classifier.weight").is_none());
    assert_eq!(h["transformer.h.0.attn.c_attn.weight"]["dtype"], "F32");

    // Back in through --init's path: the same logits, the text framed the same way.
    let Some((back, _)) = Base::parse(out.to_str().unwrap()).locate().unwrap() else {
        panic!("the export is a folder")
    };
    let ids: Vec<i64> = vec![0, 3, 5, 7, 2, 9, 11, 4];
    let diff = max_diff(&logits(&d.join(&ck), &ids), &logits(&back, &ids));
    assert!(diff <= 1e-6, "logits differ by {diff}");
    let original = load_model(&d.join(&ck), Device::Cpu).unwrap();
    let loaded = load_model(&back, Device::Cpu).unwrap();
    assert!(loaded.frames_sentences() && original.frames_sentences());
    assert_eq!(loaded.config.corpus, original.config.corpus);

    // Generation from the export is the original's, token for token.
    let generate = |checkpoint: &str| {
        let o = gptdash(
            d,
            &[
                "generate",
                "--checkpoint",
                checkpoint,
                "--prompt",
                "The cat",
                "--max-new-tokens",
                "8",
                "--json",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let ev = events(&o);
        ev[0]["tokens"].clone()
    };
    assert_eq!(generate(&ck), generate("hf"));

    // Fine-tuning starts from it with --init.
    let data = write_sst2(d);
    let o = finetune_small(d, ["--init", "./hf"], &data, "1", "clf", true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(events(&o).last().unwrap()["event"], "done");
}

/// The tiny GPT-2 fixture (as transformers saved it) with a word tokenizer, at `dir/gpt2`.
pub fn gpt2_folder(dir: &Path) -> std::path::PathBuf {
    let gpt2 = dir.join("gpt2");
    std::fs::create_dir(&gpt2).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("gpt2-tiny").join(f), gpt2.join(f)).unwrap();
    }
    std::fs::write(gpt2.join("tokenizer.json"), word_tokenizer(96)).unwrap();
    gpt2
}

#[test]
fn a_gpt2_folder_exports_with_its_tied_head() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let source = gpt2_folder(d);
    let done = export(d, "gpt2", "hf");
    assert_eq!(done["tied_lm_head"], true);
    let out = d.join("hf");
    assert_eq!(
        json_file(&out.join("config.json"))["tie_word_embeddings"],
        true
    );
    // Tied, as save_pretrained writes it: no separate head.
    assert!(header(&out.join("model.safetensors"))
        .get("lm_head.weight")
        .is_none());
    let ids: Vec<i64> = vec![1, 2, 3, 4, 5, 6];
    let diff = max_diff(&logits(&source, &ids), &logits(&out, &ids));
    assert!(diff <= 1e-6, "logits differ by {diff}");
}

#[test]
fn a_classifier_exports_its_language_model_and_names_the_head_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = tiny_checkpoint(d);
    let data = write_sst2(d);
    let o = finetune_small(d, ["--checkpoint", &ck], &data, "1", "clf", false);
    assert!(o.status.success(), "{}", stderr(&o));
    // Human output names it too.
    let o = gptdash(d, &["export", "--checkpoint", "clf", "--hf", "hf"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("left out: the classifier head"), "{text}");
    assert!(text.contains("GPT2LMHeadModel.from_pretrained"), "{text}");
    let ids: Vec<i64> = vec![0, 3, 5, 7];
    let diff = max_diff(&logits(&d.join("clf"), &ids), &logits(&d.join("hf"), &ids));
    assert!(diff <= 1e-6, "logits differ by {diff}");
    let done = export(d, "clf", "hf");
    let left = done["left_out"][0].as_str().unwrap();
    assert!(left.contains("classifier.weight"), "{left}");
}

#[test]
fn destinations_that_are_not_exports_are_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = tiny_checkpoint(d);
    // A user's folder with something in it is never replaced.
    std::fs::create_dir(d.join("mine")).unwrap();
    std::fs::write(d.join("mine/notes.txt"), "keep me").unwrap();
    expect_error(
        d,
        &["export", "--checkpoint", &ck, "--hf", "mine"],
        &["--hf mine", "not an earlier gptdash export"],
    );
    assert_eq!(
        std::fs::read_to_string(d.join("mine/notes.txt")).unwrap(),
        "keep me"
    );
    // An empty folder, then the same export again (replaced).
    std::fs::create_dir(d.join("empty")).unwrap();
    export(d, &ck, "empty");
    export(d, &ck, "empty");
    // An export with more in it (a Trainer's checkpoint keeps the gptdash record beside
    // its optimizer state) is not ours to replace.
    std::fs::write(d.join("empty/optimizer.pt"), "state").unwrap();
    expect_error(
        d,
        &["export", "--checkpoint", &ck, "--hf", "empty"],
        &["not an earlier gptdash export"],
    );
    assert!(d.join("empty/optimizer.pt").is_file());
    expect_error(
        d,
        &["export", "--checkpoint", &ck, "--hf", &ck],
        &["is the checkpoint being exported"],
    );
    expect_error(
        d,
        &["export", "--checkpoint", &ck, "--hf", "mine/notes.txt"],
        &["is a file"],
    );
    expect_error(
        d,
        &["export", "--checkpoint", "missing", "--hf", "out"],
        &["missing"],
    );
    assert!(!d.join("out").exists());
}
