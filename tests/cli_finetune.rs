//! `gptdash finetune` / `classify` on the real binary, and SST-2 from a local stand-in
//! for the Hugging Face hub (`HF_ENDPOINT`); nothing here needs the internet.
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{
    events, expect_error, finetune_small, fixture, gptdash, serve, stderr, stdout, tiny_checkpoint,
    word_tokenizer, write_sst2, write_word_sst2,
};

#[test]
fn finetune_then_classify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = tiny_checkpoint(d);
    let data = write_sst2(d);
    let out = gptdash(
        d,
        &[
            "finetune",
            "--checkpoint",
            &ck,
            "--sst2",
            &data,
            "--samples",
            "40",
            "--epochs",
            "3",
            "--lr",
            "0.003",
            "--batch-size",
            "8",
            "--out",
            "clf",
            "--device",
            "cpu",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = events(&out);
    assert_eq!(ev[0]["event"], "start");
    assert_eq!(ev[0]["train_examples"], 32);
    assert_eq!(ev[0]["val_examples"], 8);
    assert_eq!(ev[0]["val_positive"], 0.5);
    let epochs: Vec<&serde_json::Value> = ev.iter().filter(|e| e["event"] == "epoch").collect();
    assert!(!epochs.is_empty() && epochs.len() <= 3);
    for e in &epochs {
        for k in ["train_loss", "train_acc", "val_loss", "val_acc"] {
            assert!(e[k].is_f64(), "{e}");
        }
    }
    let done = ev.last().unwrap();
    assert_eq!(done["event"], "done");
    assert!(done["val_acc"].as_f64().unwrap() >= 0.0);
    // The run's history names the model it started from, given by --checkpoint.
    let history = std::fs::read_to_string(d.join("clf/events.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(history.lines().next().unwrap()).unwrap();
    assert_eq!(record["event"], "run");
    assert_eq!(record["finetune"]["base"], ck.as_str(), "{record}");
    assert_eq!(done["confusion"].as_array().unwrap().len(), 2);
    // Per-class F1 agrees with the confusion matrix; ECE is a share; mistakes are wrong.
    let c: [[f64; 2]; 2] = serde_json::from_value(done["confusion"].clone()).unwrap();
    let f1 = done["f1"].as_array().unwrap();
    for k in 0..2 {
        let (tp, fp, fneg) = (c[k][k], c[1 - k][k], c[k][1 - k]);
        let want = if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + fneg)
        };
        assert!((f1[k].as_f64().unwrap() - want).abs() < 1e-9, "{done}");
    }
    let ece = done["ece"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&ece), "{done}");
    assert_eq!(done["reliability"].as_array().unwrap().len(), 10);
    let wrong = (c[0][1] + c[1][0]) as usize;
    let mistakes = done["mistakes"].as_array().unwrap();
    assert_eq!(mistakes.len(), wrong.min(20), "{done}");
    for m in mistakes {
        let p = m["p_positive"].as_f64().unwrap();
        assert_ne!(u64::from(p >= 0.5), m["label"].as_u64().unwrap(), "{m}");
    }
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "classifier.json",
        "curves.csv",
    ] {
        assert!(d.join("clf").join(f).is_file(), "{f} missing");
    }

    let out = gptdash(
        d,
        &[
            "classify",
            "--checkpoint",
            "clf",
            "--text",
            "the cat sat and it was good",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let p = v["p_positive"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    assert_eq!(v["label"], if p >= 0.5 { "positive" } else { "negative" });
    let human = gptdash(
        d,
        &["classify", "--checkpoint", "clf", "--text", "the dog ran"],
    );
    assert!(
        stdout(&human).contains("P(positive) = "),
        "{}",
        stdout(&human)
    );

    // Classify needs a fine-tuned classifier; bad inputs are clear errors.
    expect_error(
        d,
        &["classify", "--checkpoint", &ck, "--text", "hello"],
        &["no trained classifier head"],
    );
    expect_error(
        d,
        &["classify", "--checkpoint", "clf", "--text", " "],
        &["--text is empty"],
    );
    expect_error(
        d,
        &["finetune", "--checkpoint", &ck, "--sst2", "missing.tsv"],
        &["missing.tsv", "does not exist"],
    );
    std::fs::write(d.join("bad.tsv"), "sentence\tlabel\nfine\t1\nodd\tyes\n").unwrap();
    expect_error(
        d,
        &[
            "finetune",
            "--checkpoint",
            &ck,
            "--sst2",
            "bad.tsv",
            "--samples",
            "4",
        ],
        &["bad.tsv:3", "label must be 0 or 1"],
    );
    expect_error(
        d,
        &[
            "finetune",
            "--checkpoint",
            &ck,
            "--sst2",
            &data,
            "--samples",
            "400",
        ],
        &["fewer than --samples"],
    );
    expect_error(
        d,
        &[
            "finetune",
            "--checkpoint",
            &ck,
            "--sst2",
            &data,
            "--eval-split",
            "test",
        ],
        &["--eval-split"],
    );
    expect_error(d, &["finetune", "--sst2", &data], &["--checkpoint"]);
    // A path that is not there is an error naming it, never a hub id to download.
    expect_error(
        d,
        &["finetune", "--init", "./no-such-model", "--sst2", &data],
        &["--init", "no checkpoint folder at ./no-such-model"],
    );
    // Without --checkpoint or --init, `base` of [finetune] says what to fine-tune, and
    // the prompt read-out is recorded for `classify`.
    std::fs::write(
        d.join("base.toml"),
        format!("[finetune]\nbase = \"{ck}\"\nreadout = \"prompt\"\ntemplate = \" it was\"\nsamples = 40\nepochs = 1\n"),
    )
    .unwrap();
    let out = gptdash(
        d,
        &[
            "--config",
            "base.toml",
            "finetune",
            "--sst2",
            &data,
            "--out",
            "clf-base",
            "--json",
            "--device",
            "cpu",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = events(&out);
    assert!(
        ev[0]["model"].as_str().unwrap().ends_with(&ck),
        "{:?}",
        ev[0]
    );
    assert!(
        ev.iter().any(
            |e| e["event"] == "log" && e["message"].as_str().unwrap().contains("own judgement")
        ),
        "{ev:?}"
    );
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("clf-base/classifier.json")).unwrap())
            .unwrap();
    assert_eq!(info["readout"], "prompt");
    assert_eq!(info["template"], " it was");
    assert_eq!(
        info["label_words"],
        serde_json::json!(["terrible", "great"])
    );
    let out = gptdash(
        d,
        &[
            "classify",
            "--checkpoint",
            "clf-base",
            "--text",
            "the cat sat",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn gpt2_weights_from_a_folder_generate_and_fine_tune() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gpt2 = d.join("gpt2-tiny");
    std::fs::create_dir(&gpt2).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("gpt2-tiny").join(f), gpt2.join(f)).unwrap();
    }
    // Without its tokenizer the folder cannot be used, and says so.
    expect_error(
        d,
        &["generate", "--checkpoint", "gpt2-tiny", "--prompt", "w1"],
        &["tokenizer.json"],
    );
    // A tokenizer larger than the model's vocabulary is refused.
    std::fs::write(gpt2.join("tokenizer.json"), word_tokenizer(120)).unwrap();
    expect_error(
        d,
        &["generate", "--checkpoint", "gpt2-tiny", "--prompt", "w1"],
        &["tokenizer has 120 tokens but the model only 96"],
    );

    std::fs::write(gpt2.join("tokenizer.json"), word_tokenizer(96)).unwrap();
    let out = gptdash(
        d,
        &[
            "generate",
            "--checkpoint",
            "gpt2-tiny",
            "--prompt",
            "w5 w17",
            "--max-new-tokens",
            "4",
            "--json",
            "--device",
            "cpu",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["tokens"].as_array().unwrap().len(), 4);

    // inspect reads the imported GPT-2 too; its attention is transformers' (the ids of
    // attentions.json, written as words of the word tokenizer).
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("gpt2-tiny/attentions.json")).unwrap(),
    )
    .unwrap();
    let ids: Vec<u64> = serde_json::from_value(want["input_ids"].clone()).unwrap();
    let text: Vec<String> = ids.iter().map(|i| format!("w{i}")).collect();
    let out = gptdash(
        d,
        &[
            "inspect",
            "--checkpoint",
            "gpt2-tiny",
            "--text",
            &text.join(" "),
            "--json",
            "--device",
            "cpu",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let got: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(got["tokens"].as_array().unwrap().len(), ids.len());
    let flat = |v: &serde_json::Value| -> Vec<f64> {
        let mut out = Vec::new();
        let mut stack = vec![v.clone()];
        while let Some(x) = stack.pop() {
            match x {
                serde_json::Value::Array(items) => stack.extend(items.into_iter().rev()),
                other => out.push(other.as_f64().unwrap()),
            }
        }
        out
    };
    let (got, want) = (flat(&got["attention"]), flat(&want["attentions"]));
    assert_eq!(got.len(), 2 * 4 * ids.len() * ids.len());
    assert_eq!(got.len(), want.len());
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(diff < 1e-5, "attention differs from transformers by {diff}");

    write_word_sst2(&d.join("train.tsv"));
    let out = gptdash(
        d,
        &[
            "finetune",
            "--init",
            "gpt2-tiny",
            "--sst2",
            "train.tsv",
            "--samples",
            "24",
            "--epochs",
            "2",
            "--out",
            "clf",
            "--device",
            "cpu",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = gptdash(
        d,
        &[
            "classify",
            "--checkpoint",
            "clf",
            "--text",
            "w1 w2 w3",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

fn run_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gptdash"));
    cmd.current_dir(dir)
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("cfg"))
        .env_remove("HF_HUB_OFFLINE")
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn sst2_from_the_hub_through_a_local_server_then_offline_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = tiny_checkpoint(d);
    let parquet = std::fs::read(fixture("sst2/sst2/train-00000-of-00001.parquet")).unwrap();
    let (endpoint, _server) = serve(vec![(
        "/datasets/nyu-mll/glue/resolve/main/sst2/train-00000-of-00001.parquet".into(),
        parquet.clone(),
    )]);
    let hf_home = d.join("hf");
    let hf = hf_home.display().to_string();
    let args = [
        "finetune",
        "--checkpoint",
        &ck,
        "--sst2",
        "hub",
        "--samples",
        "8",
        "--val-fraction",
        "0.25",
        "--epochs",
        "1",
        "--out",
        "clf",
        "--overwrite", // each run below writes the same folder
        "--device",
        "cpu",
        "--json",
    ];

    // Offline with an empty cache: a clear error that says what to do.
    let out = run_with_env(d, &args, &[("HF_HOME", &hf), ("HF_HUB_OFFLINE", "1")]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("HF_HUB_OFFLINE")
            && err.contains("--sst2")
            && err.contains("train-00000-of-00001.parquet"),
        "{err}"
    );

    // Online through the local server: downloaded into the Hugging Face cache.
    let out = run_with_env(d, &args, &[("HF_HOME", &hf), ("HF_ENDPOINT", &endpoint)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cached = hf_home.join("hub/datasets--nyu-mll--glue/snapshots/0123456789abcdef0123456789abcdef01234567/sst2/train-00000-of-00001.parquet");
    assert_eq!(std::fs::read(&cached).unwrap(), parquet);
    let ev = events(&out);
    assert_eq!(ev[0]["train_examples"], 6);
    assert_eq!(ev[0]["val_examples"], 2);

    // Offline again: the cached copy is enough.
    let out = run_with_env(d, &args, &[("HF_HOME", &hf), ("HF_HUB_OFFLINE", "1")]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A server that is not there: the error names the endpoint and the way out.
    let empty = d.join("hf-empty").display().to_string();
    let out = run_with_env(
        d,
        &args,
        &[("HF_HOME", &empty), ("HF_ENDPOINT", "http://127.0.0.1:9")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("cannot download") && err.contains("127.0.0.1:9") && err.contains("--sst2"),
        "{err}"
    );
}

/// `classify --file` classifies every non-blank line (a file or standard input) in
/// batches, with the same P(positive) as one `--text` at a time; `--extra-train` rows
/// join the training split only; a model pretrained on lower-cased, PTB-split text gets
/// raw text prepared the same way.
#[test]
fn classify_a_file_extra_training_rows_and_prepared_text() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::tiny_checkpoint_with(d, &["--lowercase", "--ptb-split"]);
    let config = std::fs::read_to_string(d.join("ck/config.json")).unwrap();
    assert!(
        config.contains("\"lowercase\": true") && config.contains("\"ptb_split\": true"),
        "{config}"
    );
    // Exported, the form travels in the `gptdash` record; a checkpoint from before it
    // was recorded has it from the training settings beside the weights.
    let out = gptdash(d, &["export", "--checkpoint", "ck", "--hf", "hf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("hf/config.json")).unwrap()).unwrap();
    assert_eq!(hf["gptdash"]["text_form"]["ptb_split"], true, "{hf}");
    let old = d.join("old-ck");
    std::fs::create_dir(&old).unwrap();
    for entry in std::fs::read_dir(d.join("ck")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), old.join(entry.file_name())).unwrap();
    }
    let mut v: serde_json::Value = serde_json::from_str(&config).unwrap();
    v.as_object_mut().unwrap().remove("text_form");
    std::fs::write(old.join("config.json"), v.to_string()).unwrap();
    let out = gptdash(d, &["export", "--checkpoint", "old-ck", "--hf", "old-hf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("lower-cased and split Penn-Treebank style"),
        "{}",
        stdout(&out)
    );
    let data = write_sst2(d);
    std::fs::write(
        d.join("extra.tsv"),
        "sentence\tlabel\nthe cat was good\t1\nthe dog was bad\t0\nthe cat sat\t1\n",
    )
    .unwrap();
    let base = [
        "finetune",
        "--checkpoint",
        "ck",
        "--sst2",
        &data,
        "--samples",
        "40",
        "--epochs",
        "2",
        "--device",
        "cpu",
    ];
    let mut args = base.to_vec();
    args.extend(["--extra-train", "extra.tsv", "--out", "clf", "--json"]);
    let out = gptdash(d, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = events(&out);
    assert_eq!(ev[0]["train_examples"], 32 + 3, "{}", ev[0]);
    assert_eq!(ev[0]["val_examples"], 8, "{}", ev[0]);
    std::fs::write(
        d.join("bad-extra.tsv"),
        "sentence\tlabel\nfine\t1\nodd\t2\n",
    )
    .unwrap();
    let mut args = base.to_vec();
    args.extend(["--extra-train", "bad-extra.tsv"]);
    expect_error(
        d,
        &args,
        &["--extra-train", "bad-extra.tsv:3", "label must be 0 or 1"],
    );

    let one = |text: &str| -> f64 {
        let out = gptdash(
            d,
            &["classify", "--checkpoint", "clf", "--text", text, "--json"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        v["p_positive"].as_f64().unwrap()
    };
    // Raw text is prepared as the pretraining text was.
    assert_eq!(
        one("The CAT sat, and it was good!"),
        one("the cat sat , and it was good !")
    );

    let lines = [
        "the cat sat and it was good",
        "the dog ran and it was bad",
        "The dog's bad.",
    ];
    std::fs::write(
        d.join("lines.txt"),
        format!("{}\n\n   \n  {}  \n{}", lines[0], lines[1], lines[2]),
    )
    .unwrap();
    let out = gptdash(
        d,
        &["classify", "--checkpoint", "clf", "--file", "lines.txt"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let rows: Vec<Vec<&str>> = printed.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 3, "{printed}");
    for (row, text) in rows.iter().zip(lines) {
        assert_eq!(row.len(), 3, "{printed}");
        assert_eq!(row[2], text);
        let p: f64 = row[0].parse().unwrap();
        assert!((p - one(text)).abs() < 1e-4, "{printed}");
        // The label is decided on the unrounded P (printed to 4 places): only a P that
        // prints as 0.5000 may go either way.
        if (p - 0.5).abs() > 1e-4 {
            assert_eq!(row[1], if p >= 0.5 { "positive" } else { "negative" });
        }
    }
    // Standard input, as JSON lines.
    let mut child = Command::new(env!("CARGO_BIN_EXE_gptdash"))
        .current_dir(d)
        .env("XDG_CONFIG_HOME", d.join("xdg-config"))
        .env("HOME", d)
        .args(["classify", "--checkpoint", "clf", "--file", "-", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(lines.join("\n").as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let ev = events(&out);
    assert_eq!(ev.len(), 3);
    for (e, text) in ev.iter().zip(lines) {
        assert_eq!(e["event"], "classified");
        assert_eq!(e["text"], text);
    }
    expect_error(
        d,
        &["classify", "--checkpoint", "clf", "--file", "nowhere.txt"],
        &["--file", "nowhere.txt"],
    );
    expect_error(
        d,
        &["classify", "--checkpoint", "clf"],
        &["--text", "--file"],
    );
    expect_error(
        d,
        &[
            "classify",
            "--checkpoint",
            "clf",
            "--text",
            "a",
            "--file",
            "lines.txt",
        ],
        &["--file"],
    );
}

#[test]
fn finetune_never_writes_into_its_base_or_a_users_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = tiny_checkpoint(d);
    let data = write_sst2(d);
    let state_before = std::fs::read(d.join("ck/train_state.json")).unwrap();
    // --out equal to --checkpoint (also spelled another way): refused before any work,
    // even with --overwrite; the language model keeps its optimizer state.
    let base: Vec<&str> = vec![
        "finetune",
        "--checkpoint",
        &ck,
        "--sst2",
        &data,
        "--samples",
        "40",
        "--epochs",
        "1",
        "--device",
        "cpu",
    ];
    for (out, extra) in [("ck", &[][..]), ("./ck/", &["--overwrite"][..])] {
        let mut args = base.clone();
        args.extend(["--out", out]);
        args.extend_from_slice(extra);
        expect_error(
            d,
            &args,
            &["--out", "the model being fine-tuned", "--checkpoint"],
        );
    }
    assert_eq!(
        std::fs::read(d.join("ck/train_state.json")).unwrap(),
        state_before
    );
    assert!(d.join("ck/optimizer.safetensors").is_file());
    // Nor a folder inside it.
    let mut args = base.clone();
    args.extend(["--out", "ck/classifier"]);
    expect_error(d, &args, &["--out ck/classifier", "inside"]);
    assert!(!d.join("ck/classifier").exists());
    // A user's folder: refused.
    std::fs::create_dir(d.join("notes")).unwrap();
    std::fs::write(d.join("notes/todo.md"), "x").unwrap();
    let o = finetune_small(d, ["--checkpoint", &ck], &data, "1", "notes", false);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("todo.md"), "{}", stderr(&o));
    assert!(d.join("notes/todo.md").is_file());
    // A classifier written before: replaced only with --overwrite.
    let o = finetune_small(d, ["--checkpoint", &ck], &data, "1", "clf", true);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = finetune_small(d, ["--checkpoint", &ck], &data, "1", "clf", true);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    // The default: a new folder per run under checkpoints/, named in the start event,
    // with checkpoints/ck-sst2 linked to the latest.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let o = gptdash(d, &[&base[..], &["--json"]].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        let ev = events(&o);
        let out = ev[0]["out"].as_str().unwrap().to_string();
        assert!(out.starts_with("checkpoints/ck-sst2-"), "{out}");
        assert_eq!(ev.last().unwrap()["checkpoint"], out.as_str());
        seen.push(out);
    }
    assert_ne!(seen[0], seen[1]);
    for s in &seen {
        assert!(d.join(s).join("classifier.json").is_file(), "{s}");
    }
    assert_eq!(
        d.join("checkpoints/ck-sst2").canonicalize().unwrap(),
        d.join(&seen[1]).canonicalize().unwrap()
    );
}
