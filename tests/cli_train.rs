//! The real `gptdash` binary: `train` with JSON output, resume, and every config error path.
mod common;

use common::{events, expect_error, gptdash, stderr, stdout, write_corpus, TINY};

#[test]
fn train_json_reports_start_iters_eval_checkpoint_done() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let mut args = vec![
        "train",
        "--corpus",
        &corpus,
        "--max-iters",
        "12",
        "--eval-interval",
        "5",
        "--json",
    ];
    args.extend_from_slice(TINY);
    let out = gptdash(dir.path(), &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let all = events(&out);
    // The data's preparation comes first (read, tokenizer, encode, cache), then the run.
    let start = all.iter().position(|e| e["event"] != "prepare").unwrap();
    assert!(start >= 4, "{:?}", &all[..start]);
    let ev = &all[start..];
    let kinds: Vec<&str> = ev.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "start");
    assert_eq!(kinds.iter().filter(|k| **k == "iter").count(), 12);
    assert_eq!(
        kinds.iter().filter(|k| **k == "eval").count(),
        3,
        "{kinds:?}"
    ); // 5, 10, 12
    assert_eq!(*kinds.last().unwrap(), "done");
    let start = &ev[0];
    assert_eq!(start["device"], "cpu");
    assert!(start["params"].as_i64().unwrap() > 0);
    assert!(start["vocab_size"].as_i64().unwrap() > 0);
    assert!(start["train_examples"].as_i64().unwrap() > start["test_examples"].as_i64().unwrap());
    let iter = ev.iter().find(|e| e["event"] == "iter").unwrap();
    for key in ["iter", "loss", "iter_ms", "tokens_per_s", "lr"] {
        assert!(iter[key].is_number(), "iter event lacks {key}: {iter}");
    }
    // Each run has a folder of its own, said in the start event; checkpoints/tiny
    // links to the latest.
    let out_dir = start["out"].as_str().unwrap().to_string();
    assert!(
        out_dir.starts_with("checkpoints/tiny-") && out_dir.ends_with("-1"),
        "{out_dir}"
    );
    let link = dir.path().join("checkpoints/tiny");
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(
        link.canonicalize().unwrap(),
        dir.path().join(&out_dir).canonicalize().unwrap()
    );
    let ckpt = dir.path().join(&out_dir);
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "config.json",
        "tokenizer.json",
        "train_state.json",
    ] {
        assert!(ckpt.join(f).is_file(), "checkpoint lacks {f}");
    }

    // Resume continues the step count.
    let out = gptdash(
        dir.path(),
        &[
            "train",
            "--resume",
            "checkpoints/tiny",
            "--max-iters",
            "15",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = events(&out);
    assert_eq!(ev[0]["start_iter"], 12);
    let iters: Vec<i64> = ev
        .iter()
        .filter(|e| e["event"] == "iter")
        .map(|e| e["iter"].as_i64().unwrap())
        .collect();
    assert_eq!(iters, vec![13, 14, 15]);
    // Resumed through the link, the run saved into its own folder (the link stays one).
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("train_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["step"], 15);
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());

    // A second run does not overwrite the first: a new folder, and the link follows it.
    let mut args = vec!["train", "--corpus", &corpus, "--max-iters", "2", "--json"];
    args.extend_from_slice(TINY);
    let out = gptdash(dir.path(), &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = events(&out)
        .into_iter()
        .find(|e| e["event"] == "start")
        .unwrap();
    let second_dir = second["out"].as_str().unwrap().to_string();
    assert!(second_dir.ends_with("-2"), "{second_dir}");
    assert!(
        ckpt.join("train_state.json").is_file(),
        "the first run is kept"
    );
    assert_eq!(
        link.canonicalize().unwrap(),
        dir.path().join(&second_dir).canonicalize().unwrap()
    );

    // Model flags cannot change a resumed run.
    let out = gptdash(
        dir.path(),
        &[
            "train",
            "--resume",
            "checkpoints/tiny",
            "--model",
            "gpt-mini",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--model"), "{}", stderr(&out));
}

#[test]
fn an_out_folder_that_would_lose_data_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let corpus = write_corpus(d);
    let train = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--corpus",
            &corpus,
            "--max-iters",
            "3",
            "--out",
            out,
        ];
        args.extend_from_slice(TINY);
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    fn as_refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    // A folder of the user's own files and subfolders: refused, with or without
    // --overwrite, and left as it was.
    std::fs::create_dir_all(d.join("mine/photos")).unwrap();
    std::fs::write(d.join("mine/thesis.tex"), "chapter 1").unwrap();
    for extra in [&[][..], &["--overwrite"][..]] {
        let args = train("mine", extra);
        let out = gptdash(d, &as_refs(&args));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("--out mine") && err.contains("thesis.tex") && err.contains("photos/"),
            "{err}"
        );
        assert!(
            !err.contains("preparing") && stdout(&out).is_empty(),
            "no work: {err}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(d.join("mine/thesis.tex")).unwrap(),
        "chapter 1"
    );
    assert!(d.join("mine/photos").is_dir());
    // An existing checkpoint: a new run does not replace it unless --overwrite.
    let args = train("ck", &["--json"]);
    assert!(gptdash(d, &as_refs(&args)).status.success());
    let before = std::fs::read(d.join("ck/model.safetensors")).unwrap();
    expect_error(
        d,
        &as_refs(&train("ck", &[])),
        &["--out ck", "gptdash checkpoint", "--resume", "--overwrite"],
    );
    assert_eq!(
        std::fs::read(d.join("ck/model.safetensors")).unwrap(),
        before
    );
    let args = train("ck", &["--overwrite", "--seed", "5", "--json"]);
    let out = gptdash(d, &as_refs(&args));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(
        std::fs::read(d.join("ck/model.safetensors")).unwrap(),
        before
    );
    // --resume with --out elsewhere: that folder is checked too; --out the same folder is fine.
    expect_error(
        d,
        &[
            "train",
            "--resume",
            "ck",
            "--max-iters",
            "5",
            "--out",
            "mine",
        ],
        &["--out mine", "thesis.tex"],
    );
    let out = gptdash(
        d,
        &[
            "train",
            "--resume",
            "ck",
            "--max-iters",
            "4",
            "--out",
            "ck",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // A mount point holding files (here /proc) is refused before training too; an
    // empty one is refused as a mount point (output::preflight's unit test).
    expect_error(d, &as_refs(&train("/proc", &[])), &["--out /proc"]);
}

#[test]
fn a_diverging_run_stops_keeps_the_last_checkpoint_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let corpus = write_corpus(d);
    std::fs::write(d.join("c.toml"), "[train]\nsave_interval = 1\n").unwrap();
    let mut args = vec![
        "--config", "c.toml", "train", "--corpus", &corpus, "--lr", "1e30", "--out", "ck", "--json",
    ];
    args.extend_from_slice(TINY);
    let out = gptdash(d, &args);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("training diverged"),
        "{}",
        stderr(&out)
    );
    let events = events(&out);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "diverged", "{last}");
    assert!(last["loss"].is_null(), "NaN is null in JSON: {last}");
    let step = last["iter"].as_u64().unwrap();
    assert!(step >= 2, "the first step is finite: {last}");
    // The checkpoint of the step before is intact; the diverged step was not saved.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("ck/train_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["step"].as_u64(), Some(step - 1));
}

#[test]
fn preparation_reports_progress_and_a_second_run_comes_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let docs: String = (0..40)
        .map(|i| format!("Review {i}: the film was fine, wasn't it? I'd say so.\n"))
        .collect();
    std::fs::write(d.join("reviews.txt"), docs).unwrap();
    let mut args = vec![
        "train",
        "--corpus",
        "reviews.txt",
        "--mode",
        "documents",
        "--ptb-split",
        "--max-iters",
        "2",
        "--json",
    ];
    args.extend_from_slice(TINY);
    let stages = |out: &std::process::Output| -> Vec<(String, u64, u64)> {
        assert!(out.status.success(), "{}", stderr(out));
        let events = events(out);
        let start = events.iter().position(|e| e["event"] == "start").unwrap();
        assert!(events[..start].iter().all(|e| e["event"] == "prepare"));
        events[..start]
            .iter()
            .map(|e| {
                let n = |k: &str| e[k].as_u64().unwrap();
                (
                    e["stage"].as_str().unwrap().to_string(),
                    n("done"),
                    n("total"),
                )
            })
            .collect()
    };
    let cold = stages(&gptdash(d, &args));
    let names: Vec<&str> = cold.iter().map(|s| s.0.as_str()).collect();
    for stage in ["read", "tokenizer", "encode", "cache"] {
        assert!(names.contains(&stage), "{cold:?}");
    }
    // Documents mode streams: reading and encoding count the file's bytes.
    let size = std::fs::metadata(d.join("reviews.txt")).unwrap().len();
    assert!(cold.contains(&("encode".into(), size, size)), "{cold:?}");
    assert!(cold.contains(&("read".into(), size, size)), "{cold:?}");
    let warm = stages(&gptdash(d, &args));
    assert!(warm.contains(&("cache".into(), 1, 1)), "{warm:?}");
    assert!(
        !warm.iter().any(|s| s.0 == "encode" || s.0 == "tokenizer"),
        "{warm:?}"
    );
    assert!(d.join(".cache/gptdash/corpora").is_dir());
}

#[test]
fn human_output_names_device_and_threads() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let mut args = vec![
        "train",
        "--corpus",
        &corpus,
        "--max-iters",
        "3",
        "--threads",
        "1",
        "--out",
        "ck",
    ];
    args.extend_from_slice(TINY);
    let out = gptdash(dir.path(), &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("device cpu, 1 CPU threads"), "{text}");
    assert!(text.contains("done: 3 steps"), "{text}");
    assert!(dir.path().join("ck/model.safetensors").is_file());
}

#[test]
fn config_errors_name_the_key_flag_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("unknown.toml"), "[train]\nmax_iter = 5\n").unwrap();
    expect_error(
        d,
        &["train", "--config", "unknown.toml"],
        &["unknown.toml", "max_iter", "line 2"],
    );
    std::fs::write(d.join("type.toml"), "[model]\nblock_size = \"long\"\n").unwrap();
    expect_error(
        d,
        &["train", "--config", "type.toml"],
        &["type.toml", "block_size"],
    );
    std::fs::write(
        d.join("heads.toml"),
        "[model]\npreset = \"custom\"\nn_layer = 2\nn_head = 5\nn_embd = 48\n",
    )
    .unwrap();
    expect_error(
        d,
        &["train", "--config", "heads.toml"],
        &["heads.toml", "model.n_embd", "model.n_head"],
    );
    std::fs::write(d.join("batch.toml"), "[train]\nbatch_size = 0\n").unwrap();
    expect_error(
        d,
        &["train", "--config", "batch.toml"],
        &["batch.toml", "train.batch_size"],
    );
    expect_error(d, &["train", "--config", "missing.toml"], &["missing.toml"]);
    expect_error(d, &["train", "--batch-size", "0"], &["--batch-size"]);
    expect_error(d, &["train", "--lr", "-1"], &["--lr"]);
    expect_error(
        d,
        &["train", "--n-head", "5", "--device", "cpu"],
        &["model.n_embd", "model.n_head"],
    );
    expect_error(
        d,
        &["train", "--corpus", "no/such/file.txt", "--device", "cpu"],
        &["no/such/file.txt", "--corpus"],
    );
    expect_error(d, &["train", "--device", "tpu"], &["tpu"]);
    expect_error(
        d,
        &["train", "--model", "gpt-huge"],
        &["gpt-huge", "model.preset"],
    );
    expect_error(
        d,
        &["train", "--resume", "nowhere"],
        &["nowhere", "does not exist"],
    );
    // A local config.toml is read when --config is absent.
    std::fs::write(d.join("config.toml"), "[data]\ncorpus = 7\n").unwrap();
    expect_error(d, &["train"], &["config.toml", "corpus"]);
}

#[test]
fn cuda_request_without_gpu_is_a_clear_error() {
    // CUDA_VISIBLE_DEVICES="" hides any GPU, so this runs on GPU machines too.
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gptdash"))
        .current_dir(dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("xdg-config"))
        .env("CUDA_VISIBLE_DEVICES", "")
        .args(["train", "--corpus", &corpus, "--device", "cuda"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("CUDA is not available"), "{err}");
}

#[test]
fn bench_train_reports_speed_loss_memory_and_mfu() {
    let dir = tempfile::tempdir().unwrap();
    let small = [
        "--n-layer",
        "1",
        "--n-head",
        "2",
        "--n-embd",
        "16",
        "--block-size",
        "8",
        "--vocab-size",
        "64",
        "--batch-size",
        "4",
        "--iters",
        "3",
        "--warmup",
        "1",
    ];
    for extra in [&[][..], &["--step", "plain"][..], &["--dtype", "bf16"][..]] {
        let mut args = vec!["bench", "train", "--json"];
        args.extend_from_slice(&small);
        args.extend_from_slice(extra);
        let out = gptdash(dir.path(), &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let lines = events(&out);
        assert_eq!(lines.len(), 1, "{}", stdout(&out));
        let r = &lines[0];
        assert_eq!(r["bench"], "train");
        for key in [
            "tokens_per_s",
            "ms_per_step",
            "final_loss",
            "matmul_peak_gflops",
            "mfu",
        ] {
            let v = r[key].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite() && v > 0.0, "{key} = {} in {r}", r[key]);
        }
        // Random tokens over 64 ids: the loss starts near ln 64.
        let first = r["first_loss"].as_f64().unwrap();
        assert!((first - 64f64.ln()).abs() < 0.5, "first loss {first}");
        assert!(r["peak_rss_mib"].as_f64().unwrap() > 10.0);
        assert_eq!(r["iters"], 3);
    }
    expect_error(
        dir.path(),
        &["bench", "train", "--n-embd", "10", "--n-head", "3"],
        &["--n-embd"],
    );
    expect_error(
        dir.path(),
        &["bench", "train", "--dtype", "f16"],
        &["--dtype"],
    );
}

#[test]
fn a_corpus_past_the_read_limit_stops_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("big.txt"), "The cat sat. ".repeat(200_000)).unwrap(); // 2.6 MB
    std::fs::write(d.join("c.toml"), "[data]\nmax_corpus_mb = 1\n").unwrap();
    expect_error(
        d,
        &[
            "--config", "c.toml", "train", "--corpus", "big.txt", "--device", "cpu",
        ],
        &["big.txt", "1 MB", "data.max_corpus_mb"],
    );
    // /dev/zero never ends: it stops at the limit too.
    expect_error(
        d,
        &[
            "--config",
            "c.toml",
            "train",
            "--corpus",
            "/dev/zero",
            "--device",
            "cpu",
        ],
        &["/dev/zero", "data.max_corpus_mb"],
    );
}
