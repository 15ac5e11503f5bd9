//! What `gptdash export` writes, loaded by Hugging Face transformers itself
//! (`AutoModelForCausalLM`, `AutoTokenizer`) in the torch virtualenv gptdash builds
//! against: the same token ids, logits within 1e-4 and the same greedy continuation as
//! gptdash's, for a gptdash model (untied head) and a GPT-2 folder (tied head).
//!
//! Zero-ablating a head in `gptdash inspect --ablate` equals transformers with that
//! head's slice zeroed by a forward pre-hook on `attn.c_proj` (tests/python/hf_ablate.py).
//!
//! Then the hand-off the README's "Scaling out" describes: scripts/train_hf.py continues
//! training the export under `torchrun` (2 processes, DDP on the CPU) with the Trainer,
//! logging through scripts/gptdash_log.py; the events parse as `gptdash watch` reads
//! them (each once: only rank 0 writes) and gptdash loads the Trainer's checkpoint.
//!
//! transformers and accelerate are installed into that virtualenv on first use (pinned,
//! ~20 s). Where
//! libtorch is the user's own (`LIBTORCH`) and no Python has torch, the test is ignored
//! with that reason (build.rs's `has_torch_python`); in CI it runs, and fails without one.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{gptdash, stderr, tiny_checkpoint, word_tokenizer};
use gptdash::checkpoint::load_model;
use tch::{Device, Tensor};

const PACKAGES: [&str; 2] = ["transformers==5.24.0", "accelerate==1.15.0"];

/// The Python that has the torch gptdash links: the virtualenv of scripts/libtorch.sh
/// (`…/lib/pythonX/site-packages/torch` → `…/bin/python`), else a `python3` with torch.
fn torch_python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/libtorch.sh"))
        .output()
        .expect("scripts/libtorch.sh runs");
    let torch = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if let Some(venv) = torch.ancestors().nth(4) {
        let python = venv.join("bin/python");
        if python.is_file() {
            return Some(python);
        }
    }
    let has_torch = Command::new("python3")
        .args(["-c", "import torch"])
        .status()
        .is_ok_and(|s| s.success());
    has_torch.then(|| PathBuf::from("python3"))
}

fn imports_transformers(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import transformers, accelerate"])
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python with torch and transformers, installing transformers on first use (one
/// installer at a time: test binaries run in parallel).
fn python_with_transformers() -> Option<PathBuf> {
    let python = torch_python()?;
    if imports_transformers(&python) {
        return Some(python);
    }
    let lock_path = std::env::temp_dir().join("gptdash-transformers.lock");
    let lock = std::fs::File::create(&lock_path).unwrap();
    lock.lock().unwrap();
    if !imports_transformers(&python) {
        let status = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-q",
            ])
            .args(PACKAGES)
            .status()
            .expect("pip runs");
        assert!(
            status.success(),
            "pip install {PACKAGES:?} into {} failed (PyPI is needed once)",
            python.display()
        );
    }
    Some(python)
}

/// transformers' view of an exported folder (tests/python/hf_load.py).
fn hf_load(python: &Path, folder: &Path, text: &str) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/hf_load.py");
    let out = Command::new(python)
        .arg(script)
        .arg(folder)
        .arg(text)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "transformers could not load {}:\n{}",
        folder.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Compares transformers' reading of `exported` with gptdash's of `original`.
fn same_as_gptdash(python: &Path, original: &Path, exported: &Path, text: &str, tied: bool) {
    let hf = hf_load(python, exported, text);
    assert_eq!(hf["model"], "GPT2LMHeadModel", "{}", hf["model"]);
    assert_eq!(hf["tied"], tied);
    assert_eq!(hf["eos_token"], "<|endoftext|>");
    let loaded = load_model(original, Device::Cpu).unwrap();
    let ids: Vec<i64> = loaded
        .tokenizer
        .encode(text)
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    let hf_ids: Vec<i64> = serde_json::from_value(hf["ids"].clone()).unwrap();
    assert_eq!(hf_ids, ids, "token ids of {text:?}");
    assert_eq!(hf["decoded"], text);
    let want: Vec<Vec<f32>> = serde_json::from_value(hf["logits"].clone()).unwrap();
    let want = Tensor::from_slice2(&want);
    let x = Tensor::from_slice(&ids).view([1, -1]);
    let got = tch::no_grad(|| loaded.model.forward(&x, false)).squeeze_dim(0);
    let diff = (&got - &want).abs().max().double_value(&[]);
    assert!(diff <= 1e-4, "logits differ from transformers' by {diff}");
    // Greedy continuation, gptdash's forward against transformers' generate (which
    // stops at the end-of-text token, as generation_config.json says).
    // Two implementations may break a near-tie differently: at the first token where
    // they part, gptdash's top two logits must be within 1e-4 (then nothing after it
    // can be compared).
    let eot = loaded.tokenizer.eot_id().map(i64::from);
    let generated: Vec<i64> = serde_json::from_value(hf["generated"].clone()).unwrap();
    let mut seq = ids.clone();
    for _ in 0..4 {
        let x = Tensor::from_slice(&seq).view([1, -1]);
        let last = tch::no_grad(|| loaded.model.forward(&x, false)).select(1, seq.len() as i64 - 1);
        let (top, top_ids) = last.topk(2, -1, true, true);
        let next = top_ids.int64_value(&[0, 0]);
        if generated.get(seq.len()) != Some(&next) {
            let gap = top.double_value(&[0, 0]) - top.double_value(&[0, 1]);
            assert!(
                gap < 1e-4 && generated.get(seq.len()) == Some(&top_ids.int64_value(&[0, 1])),
                "greedy continuation: gptdash {next}, transformers {:?} (top-2 gap {gap})",
                generated.get(seq.len())
            );
            return;
        }
        seq.push(next);
        if Some(next) == eot {
            break;
        }
    }
    assert_eq!(generated, seq, "greedy continuation");
}

#[test]
#[cfg_attr(
    not(has_torch_python),
    ignore = "needs a Python with torch: LIBTORCH is your own and python3 has no torch (CI runs this)"
)]
fn transformers_loads_the_export_with_the_same_logits() {
    let python = python_with_transformers().expect(
        "a Python with torch (the virtualenv of scripts/libtorch.sh, or python3 with torch)",
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A gptdash model: untied head, trained on <|endoftext|>-framed sentences.
    let ck = tiny_checkpoint(d);
    let o = gptdash(d, &["export", "--checkpoint", &ck, "--hf", "hf"]);
    assert!(o.status.success(), "{}", stderr(&o));
    same_as_gptdash(
        &python,
        &d.join(&ck),
        &d.join("hf"),
        "<|endoftext|>The cat sat. A dog",
        false,
    );
    // A GPT-2 folder (tied head) with a word-level tokenizer.
    let gpt2 = d.join("gpt2");
    std::fs::create_dir(&gpt2).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(common::fixture("gpt2-tiny").join(f), gpt2.join(f)).unwrap();
    }
    std::fs::write(gpt2.join("tokenizer.json"), word_tokenizer(96)).unwrap();
    let o = gptdash(d, &["export", "--checkpoint", "gpt2", "--hf", "hf2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    same_as_gptdash(&python, &gpt2, &d.join("hf2"), "w1 w5 w9 w20 w3", true);

    // Scaling out: the export trained on under torchrun, watched, and loaded back.
    let torchrun = python.with_file_name("torchrun");
    assert!(
        torchrun.is_file(),
        "no torchrun beside {}: torch's own launcher is needed for the hand-off",
        python.display()
    );
    let corpus = d.join("corpus.txt");
    std::fs::write(
        &corpus,
        "The cat sat. A dog ran. The dog sat.\n".repeat(200),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/train_hf.py");
    let out = Command::new(&torchrun)
        .current_dir(d)
        .env("OMP_NUM_THREADS", "1")
        .env("HF_HUB_OFFLINE", "1")
        .args(["--nproc_per_node", "2"])
        .arg(script)
        .args(["--model", "hf", "--text"])
        .arg(&corpus)
        .args([
            "--out",
            "run",
            "--events",
            "run.jsonl",
            "--steps",
            "12",
            "--batch-size",
            "4",
            "--eval-every",
            "6",
            "--save-every",
            "6",
            "--log-every",
            "2",
        ])
        .output()
        .expect("torchrun runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(d.join("run.jsonl")).unwrap();
    let mut iters = Vec::new();
    let mut names = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match gptdash::watch::parse_line(line, i as u64 + 1) {
            Some(gptdash::watch::Parsed::Event(e)) => {
                if let gptdash::protocol::Event::Iter(m) = &*e {
                    iters.push(m.iter);
                }
                names.push(serde_json::to_value(&*e).unwrap()["event"].clone());
            }
            other => panic!("line {}: {line}: {other:?}", i + 1),
        }
    }
    assert_eq!(
        iters,
        [2, 4, 6, 8, 10, 12],
        "once each, from rank 0:\n{text}"
    );
    for name in ["start", "eval", "checkpoint", "done"] {
        assert!(names.contains(&name.into()), "no {name}:\n{text}");
    }
    let back = load_model(&d.join("run/checkpoint-12"), Device::Cpu).unwrap();
    assert!(
        back.frames_sentences(),
        "the gptdash record survived the Trainer"
    );
    let o = gptdash(
        d,
        &[
            "generate",
            "--checkpoint",
            "run/checkpoint-12",
            "--prompt",
            "The",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `gptdash inspect --ablate LAYER.HEAD --json` on a GPT-2 folder against transformers
/// with that head's output zeroed by a forward pre-hook on `attn.c_proj`: per-token
/// losses with and without the removal within 1e-4.
fn ablation_matches_transformers(python: &Path, d: &Path, folder: &str, text: &str) -> f64 {
    let mut moved = 0.0f64;
    for (layer, head) in [(0, 0), (1, 2)] {
        let part = format!("{}.{}", layer + 1, head + 1);
        let o = gptdash(
            d,
            &[
                "inspect",
                "--checkpoint",
                folder,
                "--text",
                text,
                "--ablate",
                &part,
                "--json",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let ours: serde_json::Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}"));
        let tokens = ours["tokens"].as_array().unwrap();
        let frame = tokens[0] == "<|endoftext|>" && !text.starts_with("<|endoftext|>");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/hf_ablate.py");
        let out = Command::new(python)
            .arg(script)
            .arg(d.join(folder))
            .arg(text)
            .arg(if frame { "1" } else { "0" })
            .arg(layer.to_string())
            .arg(head.to_string())
            .env("HF_HUB_OFFLINE", "1")
            .env("TRANSFORMERS_VERBOSITY", "error")
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let hf: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
        assert_eq!(
            hf["ids"].as_array().unwrap().len(),
            tokens.len(),
            "{stdout}"
        );
        let floats =
            |v: &serde_json::Value| -> Vec<f64> { serde_json::from_value(v.clone()).unwrap() };
        let (ablated, plain) = (
            floats(&ours["token_loss"]),
            floats(&ours["ablation"]["base_token_loss"]),
        );
        let (hf_ablated, hf_plain) = (floats(&hf["ablated"]), floats(&hf["plain"]));
        assert_eq!(ablated.len(), hf_ablated.len());
        for p in 0..ablated.len() {
            assert!(
                (ablated[p] - hf_ablated[p]).abs() < 1e-4,
                "{folder} head {part}, position {p}: gptdash {} vs transformers {}",
                ablated[p],
                hf_ablated[p]
            );
            assert!(
                (plain[p] - hf_plain[p]).abs() < 1e-4,
                "{folder} unablated, position {p}"
            );
            moved = moved.max((ablated[p] - plain[p]).abs());
        }
    }
    moved
}

#[test]
#[cfg_attr(
    not(has_torch_python),
    ignore = "needs a Python with torch: LIBTORCH is your own and python3 has no torch (CI runs this)"
)]
fn zero_ablating_a_head_matches_transformers_with_that_head_zeroed() {
    let python = python_with_transformers().expect(
        "a Python with torch (the virtualenv of scripts/libtorch.sh, or python3 with torch)",
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A GPT-2 folder (tied head, word-level tokenizer), and a trained gptdash model
    // exported as one (untied head, framed sentences).
    let gpt2 = d.join("gpt2");
    std::fs::create_dir(&gpt2).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(common::fixture("gpt2-tiny").join(f), gpt2.join(f)).unwrap();
    }
    std::fs::write(gpt2.join("tokenizer.json"), word_tokenizer(96)).unwrap();
    // Exported, so transformers' AutoTokenizer has its tokenizer files too.
    let o = gptdash(d, &["export", "--checkpoint", "gpt2", "--hf", "hf2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let fixture = ablation_matches_transformers(&python, d, "hf2", "w1 w5 w9 w20 w3 w7");
    let ck = tiny_checkpoint(d);
    let o = gptdash(d, &["export", "--checkpoint", &ck, "--hf", "hf"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let trained = ablation_matches_transformers(&python, d, "hf", "The cat sat. A dog ran.");
    // The removals changed the losses (the comparison is not of two equal passes).
    assert!(
        fixture.max(trained) > 1e-3,
        "removals moved the losses by {fixture} and {trained}"
    );
}
