//! The real `gptdash generate`: human and JSON output, and every error path.
mod common;

use common::{expect_error, gptdash, stderr, stdout, tiny_checkpoint};

#[test]
fn human_output_has_probabilities_and_a_grid() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(dir.path());
    let out = gptdash(
        dir.path(),
        &[
            "generate",
            "--checkpoint",
            &ck,
            "--prompt",
            "The cat",
            "--max-new-tokens",
            "5",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("The cat"), "{text}");
    assert_eq!(
        lines[0].matches(" (0.").count() + lines[0].matches(" (1.").count(),
        5,
        "{text}"
    );
    assert!(lines[2].starts_with("step"), "{text}");
    for rank in 1..=6 {
        assert!(lines[2 + rank].starts_with(&format!("#{rank}")), "{text}");
    }
    assert!(lines[9].starts_with("rest"), "{text}");
    assert_eq!(
        lines[3].matches('*').count(),
        5,
        "greedy choices head every column:\n{text}"
    );
    assert!(text.contains("perplexity"));
}

#[test]
fn json_output_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(dir.path());
    let args = [
        "generate",
        "--checkpoint",
        &ck,
        "--prompt",
        "A dog",
        "--max-new-tokens",
        "4",
        "--grid",
        "3",
        "--json",
    ];
    let out = gptdash(dir.path(), &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["prompt"], "A dog");
    assert!(v["text"].as_str().unwrap().starts_with("A dog"));
    let tokens = v["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 4);
    for t in tokens {
        assert!(
            t["id"].is_u64() && t["text"].is_string() && t["prob"].is_f64() && t["rest"].is_f64()
        );
        let top = t["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["id"], t["id"]);
        assert!(top
            .iter()
            .all(|c| c["id"].is_u64() && c["text"].is_string() && c["prob"].is_f64()));
    }
    assert!(v["mean_logprob"].as_f64().unwrap() <= 0.0);
    assert!(v["perplexity"].as_f64().unwrap() >= 1.0);

    // --no-cache gives the same result.
    let nc = gptdash(dir.path(), &[&args[..], &["--no-cache"]].concat());
    let w: serde_json::Value = serde_json::from_str(stdout(&nc).trim()).unwrap();
    // The same tokens, up to a near-tie the two code paths (about 1e-6 apart) may break
    // differently: where they first part, the cached run's top two were within 1e-5.
    let tokens = |x: &serde_json::Value| x["tokens"].as_array().unwrap().clone();
    let (cached, uncached) = (tokens(&v), tokens(&w));
    assert_eq!(cached.len(), uncached.len());
    for (a, b) in cached.iter().zip(&uncached) {
        if a["id"] != b["id"] {
            let top = a["top"].as_array().unwrap();
            let gap = top[0]["prob"].as_f64().unwrap() - top[1]["prob"].as_f64().unwrap();
            assert!(gap < 1e-5, "cache and no cache part at {a} / {b}");
            break;
        }
        let (pa, pb) = (a["prob"].as_f64().unwrap(), b["prob"].as_f64().unwrap());
        assert!((pa - pb).abs() < 1e-5, "{a} / {b}");
    }

    // Sampling with a seed is reproducible.
    let sample = |seed: &str| {
        let o = gptdash(
            dir.path(),
            &[
                "generate",
                "--checkpoint",
                &ck,
                "--prompt",
                "A",
                "--sample",
                "--seed",
                seed,
                "--temperature",
                "1.5",
                "--json",
            ],
        );
        stdout(&o)
    };
    assert_eq!(sample("3"), sample("3"));
}

#[test]
fn a_closed_pipe_is_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(dir.path());
    let status = std::process::Command::new("sh")
        .current_dir(dir.path())
        .arg("-c")
        .arg(format!("{} generate --checkpoint {ck} --prompt 'The' --max-new-tokens 50 | head -c 1 >/dev/null", env!("CARGO_BIN_EXE_gptdash")))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&status.stderr).contains("panicked"));
}

#[test]
fn every_error_path_is_a_clear_message_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = tiny_checkpoint(d);
    expect_error(
        d,
        &["generate", "--checkpoint", &ck, "--prompt", ""],
        &["prompt is empty"],
    );
    expect_error(
        d,
        &["generate", "--checkpoint", &ck, "--prompt", "  "],
        &["prompt is empty"],
    );
    expect_error(
        d,
        &[
            "generate",
            "--checkpoint",
            &ck,
            "--prompt",
            "The",
            "--temperature",
            "-1",
        ],
        &["--temperature"],
    );
    expect_error(
        d,
        &[
            "generate",
            "--checkpoint",
            &ck,
            "--prompt",
            "The",
            "--grid",
            "0",
        ],
        &["--grid"],
    );
    expect_error(
        d,
        &["generate", "--checkpoint", "nowhere", "--prompt", "The"],
        &["nowhere", "does not exist"],
    );
    expect_error(
        d,
        &["generate", "--checkpoint", "tiny.txt", "--prompt", "The"],
        &["tiny.txt", "does not exist"],
    );
    std::fs::create_dir(d.join("empty")).unwrap();
    expect_error(
        d,
        &["generate", "--checkpoint", "empty", "--prompt", "The"],
        &["not a gptdash checkpoint"],
    );

    // Corrupt pieces of a checkpoint.
    let copy = |name: &str| {
        let to = d.join(name);
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(d.join(&ck)).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
        to
    };
    let bad_weights = copy("bad_weights");
    std::fs::write(bad_weights.join("model.safetensors"), b"garbage").unwrap();
    expect_error(
        d,
        &["generate", "--checkpoint", "bad_weights", "--prompt", "The"],
        &["model.safetensors"],
    );
    let bad_config = copy("bad_config");
    std::fs::write(bad_config.join("config.json"), b"{").unwrap();
    expect_error(
        d,
        &["generate", "--checkpoint", "bad_config", "--prompt", "The"],
        &["config.json"],
    );
    let bad_tok = copy("bad_tokenizer");
    std::fs::write(bad_tok.join("tokenizer.json"), b"[]").unwrap();
    expect_error(
        d,
        &[
            "generate",
            "--checkpoint",
            "bad_tokenizer",
            "--prompt",
            "The",
        ],
        &["tokenizer.json"],
    );

    // A tokenizer that cannot encode the prompt (a word-level vocabulary without an
    // unknown token).
    let word_level = copy("word_level");
    let model_vocab: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(word_level.join("config.json")).unwrap())
            .unwrap();
    let n = model_vocab["model"]["vocab_size"].as_u64().unwrap();
    // As many tokens as the model has (a smaller tokenizer is another model's: refused).
    let mut vocab = serde_json::Map::new();
    vocab.insert("The".into(), 0.into());
    vocab.insert("cat".into(), 1.into());
    for i in 2..n {
        vocab.insert(format!("w{i}"), i.into());
    }
    let tok = |vocab: serde_json::Map<String, serde_json::Value>| {
        serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
        })
        .to_string()
    };
    let mut small = serde_json::Map::new();
    small.insert("The".into(), 0.into());
    std::fs::write(word_level.join("tokenizer.json"), tok(small)).unwrap();
    expect_error(
        d,
        &["generate", "--checkpoint", "word_level", "--prompt", "The"],
        &[
            "the tokenizer has 1 tokens but the model",
            "belongs to another model",
        ],
    );
    std::fs::write(word_level.join("tokenizer.json"), tok(vocab)).unwrap();
    expect_error(
        d,
        &[
            "generate",
            "--checkpoint",
            "word_level",
            "--prompt",
            "The zebra",
        ],
        &["cannot be encoded"],
    );
}

#[test]
fn inspect_shows_loss_lens_and_attention_and_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = tiny_checkpoint(d);
    let out = gptdash(
        d,
        &[
            "inspect",
            "--checkpoint",
            &ck,
            "--text",
            "The cat sat.",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["event"], "inspected");
    let tokens = v["tokens"].as_array().unwrap().len();
    assert!(tokens >= 2);
    assert_eq!(v["token_loss"].as_array().unwrap().len(), tokens - 1);
    assert_eq!(v["token_rank"].as_array().unwrap().len(), tokens - 1);
    // gpt-nano: 3 layers × 3 heads, every row a distribution over the past.
    let attention = v["attention"].as_array().unwrap();
    assert_eq!(attention.len(), 3);
    for layer in attention {
        assert_eq!(layer.as_array().unwrap().len(), 3);
        for head in layer.as_array().unwrap() {
            for (q, row) in head.as_array().unwrap().iter().enumerate() {
                let row: Vec<f64> = row
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                assert_eq!(row.len(), tokens);
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{row:?}");
                assert!(row[q + 1..].iter().all(|&a| a == 0.0), "{row:?}");
            }
        }
    }
    let lens = v["lens"].as_array().unwrap();
    assert_eq!(lens.len(), 3);
    assert_eq!(lens[2].as_array().unwrap().len(), tokens);
    let cell = &lens[2][0];
    assert!(cell["prob"].as_f64().unwrap() > 0.0 && cell["entropy"].as_f64().unwrap() >= 0.0);

    let out = gptdash(
        d,
        &[
            "inspect",
            "--checkpoint",
            &ck,
            "--text",
            "The dog ran.",
            "--layer",
            "2",
            "--head",
            "3",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "per-token loss",
        "mean loss",
        "logit lens",
        "layer 3",
        "attention, layer 2 head 3",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    expect_error(
        d,
        &[
            "inspect",
            "--checkpoint",
            &ck,
            "--text",
            "The cat",
            "--layer",
            "9",
        ],
        &["--layer 9", "3 layers"],
    );
    // Ablation: the losses under it in token_loss, the ones without it beside.
    let inspect = |extra: &[&str]| {
        let mut args = vec![
            "inspect",
            "--checkpoint",
            &ck,
            "--text",
            "The cat sat.",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = gptdash(d, &args);
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        serde_json::from_str::<serde_json::Value>(stdout(&out).trim()).unwrap()
    };
    let losses = |v: &serde_json::Value, key: &str| -> Vec<f64> {
        serde_json::from_value(v[key].clone()).unwrap()
    };
    let plain = inspect(&[]);
    assert!(plain.get("ablation").is_none(), "{plain}");
    for extra in [
        &["--ablate", "1.2,3.3"][..],
        &["--ablate-mlp", "2"],
        &["--ablate", "2.1", "--ablation", "mean"],
    ] {
        let v = inspect(extra);
        let a = &v["ablation"];
        assert_eq!(
            losses(a, "base_token_loss"),
            losses(&plain, "token_loss"),
            "{extra:?}"
        );
        assert_ne!(
            losses(&v, "token_loss"),
            losses(&plain, "token_loss"),
            "{extra:?}"
        );
    }
    let v = inspect(&["--ablate", "1.2,3.3", "--ablate-mlp", "2"]);
    assert_eq!(v["ablation"]["heads"], serde_json::json!(["1.2", "3.3"]));
    assert_eq!(v["ablation"]["mlps"], serde_json::json!([2]));
    assert_eq!(v["ablation"]["mode"], "zero");
    let out = gptdash(
        d,
        &[
            "inspect",
            "--checkpoint",
            &ck,
            "--text",
            "The cat sat.",
            "--ablate",
            "1.1",
        ],
    );
    assert!(stdout(&out).contains("with head 1.1 removed (zero ablation); without the removal"));
    for (flag, value, needle) in [
        ("--ablate", "4.1", "head 4.1"),
        ("--ablate", "1.4", "1.1 to 3.3"),
        ("--ablate", "2", "LAYER.HEAD"),
        ("--ablate", "0.1", "numbered from 1"),
        ("--ablate-mlp", "4", "MLP 4"),
        ("--ablate-mlp", "0", "numbered from 1"),
    ] {
        expect_error(
            d,
            &[
                "inspect",
                "--checkpoint",
                &ck,
                "--text",
                "The cat",
                flag,
                value,
            ],
            &[flag, needle],
        );
    }
    expect_error(
        d,
        &[
            "inspect",
            "--checkpoint",
            &ck,
            "--text",
            "The cat",
            "--head",
            "4",
        ],
        &["--head 4", "3 heads"],
    );
    expect_error(
        d,
        &[
            "inspect",
            "--checkpoint",
            &ck,
            "--text",
            &"The cat sat. ".repeat(20),
        ],
        &["--text", "block size 16"],
    );
    expect_error(
        d,
        &["inspect", "--checkpoint", "nope", "--text", "The cat"],
        &["nope"],
    );
}

#[test]
fn bench_inspect_reports_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let out = gptdash(
        dir.path(),
        &[
            "bench",
            "inspect",
            "--tokens",
            "16",
            "--repeats",
            "2",
            "--n-layer",
            "2",
            "--n-head",
            "2",
            "--n-embd",
            "32",
            "--vocab-size",
            "300",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (v["event"].as_str(), v["bench"].as_str()),
        (Some("bench"), Some("inspect"))
    );
    assert_eq!(v["tokens"], 16);
    assert!(v["ms"].as_f64().unwrap() > 0.0);
    expect_error(
        dir.path(),
        &["bench", "inspect", "--n-embd", "10", "--n-head", "3"],
        &["--n-embd"],
    );
}

#[test]
fn a_lower_cased_ptb_split_model_reads_prompts_and_texts_its_way_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = common::tiny_checkpoint_with(d, &["--lowercase", "--ptb-split"]);
    let json = |args: &[&str]| -> serde_json::Value {
        let out = gptdash(d, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        serde_json::from_str(stdout(&out).trim()).unwrap()
    };
    let gen = |prompt: &str| {
        json(&[
            "generate",
            "--checkpoint",
            &ck,
            "--prompt",
            prompt,
            "--max-new-tokens",
            "3",
            "--json",
        ])
    };
    // Typed as a person writes, read as the model was trained: the same continuation as
    // the prepared text, and the event says how the model read it.
    let typed = gen("The Cat's.");
    let prepared = gen("the cat 's .");
    assert_eq!(typed["read_as"], "the cat 's .");
    assert!(prepared.get("read_as").is_none(), "{prepared}");
    assert_eq!(typed["tokens"], prepared["tokens"]);
    let look = |text: &str| json(&["inspect", "--checkpoint", &ck, "--text", text, "--json"]);
    let typed = look("The Dog's.");
    let prepared = look("the dog 's .");
    assert_eq!(typed["read_as"], "the dog 's .");
    assert_eq!(typed["tokens"], prepared["tokens"]);
    assert_eq!(typed["token_loss"], prepared["token_loss"]);
    // The human output says it too.
    let out = gptdash(
        d,
        &[
            "generate",
            "--checkpoint",
            &ck,
            "--prompt",
            "The Cat's.",
            "--max-new-tokens",
            "2",
        ],
    );
    assert!(
        stdout(&out).contains("as the model reads it: the cat 's ."),
        "{}",
        stdout(&out)
    );
}

#[test]
fn inspect_patches_attributes_and_maps_each_head_s_removal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = tiny_checkpoint(d);
    let run = |extra: &[&str]| -> (serde_json::Value, String) {
        let mut args = vec!["inspect", "--checkpoint", &ck];
        args.extend_from_slice(extra);
        let json = gptdash(d, &[&args[..], &["--json"]].concat());
        assert!(json.status.success(), "{extra:?}: {}", stderr(&json));
        let human = gptdash(d, &args);
        assert!(human.status.success(), "{extra:?}: {}", stderr(&human));
        (
            serde_json::from_str(stdout(&json).trim()).unwrap(),
            stdout(&human),
        )
    };
    let floats = |v: &serde_json::Value| -> Vec<f64> { serde_json::from_value(v.clone()).unwrap() };

    // Patching "The cat sat." into "The dog sat.": a layer x position and a layer x
    // head map; where nothing differs yet (the stream entering layer 1 before "cat"),
    // patching changes nothing.
    let (v, text) = run(&[
        "--patch",
        "The cat sat.",
        "The dog sat.",
        "--answer",
        "ran",
        "--wrong",
        "sat",
    ]);
    let p = &v["patching"];
    assert_eq!(p["answer"], " ran");
    assert_eq!(p["wrong"], " sat");
    let tokens = v["tokens"].as_array().unwrap().len();
    let resid = p["resid"].as_array().unwrap();
    assert_eq!(resid.len(), 3);
    let first = floats(&resid[0]);
    assert_eq!(first.len(), tokens);
    let corrupted = p["corrupted"].as_f64().unwrap();
    let changed = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .position(|t| t == " cat")
        .unwrap();
    for (i, &d) in first.iter().enumerate().take(changed) {
        assert!(
            (d - corrupted).abs() < 1e-5,
            "position {i}: {d} vs {corrupted}"
        );
    }
    assert_eq!(
        p["heads"].as_array().unwrap()[2].as_array().unwrap().len(),
        3
    );
    for needle in [
        "activation patching into \"The dog sat.\"",
        "residual stream entering each layer",
        "each head's output",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }

    // Direct logit attribution: the parts sum to the logit at every position.
    let (v, text) = run(&["--text", "The cat sat.", "--dla"]);
    let a = v["attribution"].as_array().unwrap();
    assert_eq!(a.len(), tokens);
    for part in a {
        let (sum, logit) = (
            part["sum"].as_f64().unwrap(),
            part["logit"].as_f64().unwrap(),
        );
        assert!((sum - logit).abs() < 1e-4, "{part}");
        assert_eq!(part["heads"].as_array().unwrap().len(), 3);
    }
    assert_eq!(a[tokens - 1]["predicted"], true);
    assert!(
        text.contains("direct logit attribution of") && text.contains("the parts sum to"),
        "{text}"
    );
    let (v, _) = run(&["--text", "The cat", "--dla", "--answer", "ran"]);
    let a = v["attribution"].as_array().unwrap();
    assert_eq!(a.last().unwrap()["token"], " ran");
    assert_eq!(a.last().unwrap()["predicted"], false);

    // The ablation map: every head's and MLP's removal alone.
    let (v, text) = run(&["--text", "The cat sat. A dog ran.", "--ablation-map"]);
    let map = &v["ablation_map"];
    assert_eq!(map["heads"].as_array().unwrap().len(), 3);
    assert_eq!(floats(&map["heads"][1]).len(), 3);
    assert_eq!(floats(&map["mlps"]).len(), 3);
    let base = floats(&v["token_loss"]);
    let mean = base.iter().sum::<f64>() / base.len() as f64;
    assert!((map["base_loss"].as_f64().unwrap() - mean).abs() < 1e-6);
    assert!(text.contains("the head that matters most here"), "{text}");

    // Mistakes name the flag.
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["inspect", "--checkpoint", "ck"].map(String::from).to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    for (extra, needles) in [
        (
            &["--patch", "The cat sat.", "The big dog sat down."][..],
            &["--patch CORRUPTED", "same length"][..],
        ),
        (
            &[
                "--patch",
                "The cat sat.",
                "The dog sat.",
                "--answer",
                "zq zq",
            ],
            &["--answer", "tokens"],
        ),
        (
            &[
                "--patch",
                "The cat sat.",
                "The dog sat.",
                "--answer",
                "ran",
                "--wrong",
                "ran",
            ],
            &["--wrong", "answer"],
        ),
        (
            &["--text", "The cat", "--answer", "ran"],
            &["--answer", "--patch or --dla"],
        ),
        (&["--text", "The cat", "--wrong", "ran"], &["--wrong"]),
        (&["--text", "The cat", "--patch", "A", "B"], &["--patch"]),
        (&["--patch", "The cat"], &["--patch"]),
    ] {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        expect_error(d, &a, needles);
    }
}
