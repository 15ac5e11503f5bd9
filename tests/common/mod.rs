//! Helpers shared by the integration tests: run the real binary in a scratch directory.
#![allow(dead_code)]
use std::path::Path;
use std::process::{Command, Output};

pub fn gptdash(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gptdash"))
        .current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg-config")) // never read the developer's own config
        .env("HOME", dir)
        .env("COLUMNS", "120")
        .args(args)
        .output()
        .expect("the gptdash binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn events(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

pub fn write_corpus(dir: &Path) -> String {
    let text =
        "The cat sat. The dog ran. A cat ran. A dog sat. The cat ran. The dog sat.\n".repeat(8);
    std::fs::write(dir.join("tiny.txt"), text).unwrap();
    "tiny.txt".into()
}

pub const TINY: &[&str] = &[
    "--model",
    "gpt-nano",
    "--block-size",
    "16",
    "--batch-size",
    "8",
    "--device",
    "cpu",
];

/// Fails unless the command fails with exit code 2 and a stderr naming every needle, without a panic.
pub fn expect_error(dir: &Path, args: &[&str], needles: &[&str]) {
    let out = gptdash(dir, args);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} should exit with 2:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr lacks {n:?}:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// Trains a tiny checkpoint at `dir/ck` and returns its path relative to `dir`.
pub fn tiny_checkpoint(dir: &Path) -> String {
    let corpus = write_corpus(dir);
    let mut args = vec![
        "train",
        "--corpus",
        &corpus,
        "--max-iters",
        "30",
        "--out",
        "ck",
        "--json",
    ];
    args.extend_from_slice(TINY);
    let out = gptdash(dir, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    "ck".into()
}
