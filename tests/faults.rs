//! Fault injection on the real binary: signals, a save killed at each of its steps, two
//! writers, places that cannot be written, checkpoints whose config.json lies, runs too
//! big for memory. Each must end with a clear message and an exit code, never a panic,
//! and leave a checkpoint that loads.
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The tests of this file run in parallel, each starting busy processes; the one that
/// times how fast Ctrl-C ends a process runs alone (the write side), so what it
/// measures is gptdash's response, not the other tests' load.
static MACHINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared_machine() -> std::sync::RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}

/// `gptdash args` running in `dir`, stdout piped (JSON lines), stderr to a file.
fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gptdash"));
    command
        .current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
        .env("HOME", dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("the gptdash binary runs")
}

/// Reads `child`'s JSON lines until one has `event == want`; returns the lines read.
fn read_until(child: &mut Child, want: &str) -> Vec<serde_json::Value> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let want = want.to_string();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut lines = BufReader::new(out).lines();
        while let Some(Ok(line)) = lines.next() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let hit = v["event"] == want.as_str();
            seen.push(v);
            if hit {
                break;
            }
        }
        let _ = tx.send(seen);
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the event within 120 s")
}

fn wait(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a child's pid with a valid signal number.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

fn long_train(out: &str) -> Vec<&str> {
    let mut args = vec![
        "train",
        "--corpus",
        "tiny.txt",
        "--max-iters",
        "1000000",
        "--out",
        out,
        "--json",
    ];
    args.extend_from_slice(TINY);
    args
}

fn step_of(dir: &Path, ck: &str) -> u64 {
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(ck).join("train_state.json")).unwrap(),
    )
    .unwrap();
    state["step"].as_u64().unwrap()
}

/// Loads `ck` the way a user would: a generation from it must work.
fn loads(dir: &Path, ck: &str) {
    let out = gptdash(
        dir,
        &[
            "generate",
            "--checkpoint",
            ck,
            "--prompt",
            "The cat",
            "--max-new-tokens",
            "2",
        ],
    );
    assert!(out.status.success(), "{ck} does not load: {}", stderr(&out));
}

#[test]
fn every_stop_signal_saves_a_resumable_checkpoint_and_exits_128_plus_it() {
    let _machine = shared_machine();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_corpus(d);
    for (sig, code) in [
        (libc::SIGINT, 130),
        (libc::SIGTERM, 143),
        (libc::SIGHUP, 129),
        (libc::SIGQUIT, 131),
    ] {
        let ck = format!("ck{sig}");
        let mut child = spawn(d, &long_train(&ck), &[]);
        read_until(&mut child, "iter");
        signal(&child, sig);
        let status = wait(&mut child);
        let err = std::fs::read_to_string(d.join("stderr.txt")).unwrap();
        assert_eq!(status.code(), Some(code), "signal {sig}: {err}");
        assert!(err.contains("stopped by"), "{err}");
        loads(d, &ck);
        // Resuming continues from the saved step.
        let step = step_of(d, &ck);
        let more = (step + 3).to_string();
        let out = gptdash(
            d,
            &["train", "--resume", &ck, "--max-iters", &more, "--json"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let last = events(&out).pop().unwrap();
        assert_eq!(last["event"], "done");
        assert_eq!(last["iter"].as_u64(), Some(step + 3));
    }
}

/// The crash tests drive the save-fault hook, which only exists with the feature: without
/// it they must not pass by being left out.
#[cfg(not(feature = "fault-injection"))]
#[test]
fn the_crash_tests_need_the_fault_injection_feature() {
    panic!(
        "tests/faults.rs's crash tests need `--features fault-injection` (make test turns it on)"
    );
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_save_killed_at_any_point_leaves_a_checkpoint_that_loads() {
    let _machine = shared_machine();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_checkpoint(d);
    for point in ["written", "synced", "aside", "renamed"] {
        let before = step_of(d, "ck");
        let target = (before + 2).to_string();
        // The run's final save is killed (SIGKILL) at `point`.
        let mut child = spawn(
            d,
            &["train", "--resume", "ck", "--max-iters", &target, "--json"],
            &[("GPTDASH_FAULT_SAVE", point)],
        );
        let status = wait(&mut child);
        assert_eq!(status.code(), None, "{point}: killed by a signal");
        // The path loads (recovered if the kill fell between the renames): the previous
        // checkpoint, or the new one once it was complete.
        loads(d, "ck");
        let after = step_of(d, "ck");
        match point {
            // Before the swap the previous checkpoint is in place; from the first rename on,
            // the new one (complete, so recovery promotes it) is.
            "written" | "synced" => assert_eq!(after, before, "{point}"),
            "aside" | "renamed" => assert_eq!(after, before + 2, "{point}"),
            _ => unreachable!(),
        }
        let leftovers: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".ck.") && n != ".ck.lock")
            .collect();
        // The next save cleans whatever the kill left.
        let next = (after + 1).to_string();
        let out = gptdash(
            d,
            &["train", "--resume", "ck", "--max-iters", &next, "--json"],
        );
        assert!(out.status.success(), "{point}: {}", stderr(&out));
        let left: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".ck.") && n != ".ck.lock")
            .collect();
        assert!(
            left.is_empty(),
            "{point}: stale {left:?} (after the kill: {leftovers:?})"
        );
    }
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_save_that_cannot_replace_its_folder_is_kept_beside_it_and_said_where() {
    let _machine = shared_machine();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_checkpoint(d);
    let before = step_of(d, "ck");
    let target = (before + 2).to_string();
    // The previous checkpoint cannot be moved aside (as a mount point cannot be renamed).
    let mut child = spawn(
        d,
        &["train", "--resume", "ck", "--max-iters", &target, "--json"],
        &[("GPTDASH_FAULT_SAVE", "swap")],
    );
    let status = wait(&mut child);
    let err = std::fs::read_to_string(d.join("stderr.txt")).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("the checkpoint was saved to") && err.contains("ck-saved-1"),
        "{err}"
    );
    // The finished run is there, complete, and the previous checkpoint is untouched.
    assert_eq!(step_of(d, "ck-saved-1"), before + 2);
    loads(d, "ck-saved-1");
    assert_eq!(step_of(d, "ck"), before);
    loads(d, "ck");
}

/// A corpus of `mb` MB of sentences over a few hundred made-up words.
fn write_big_corpus(path: &Path, mb: usize) {
    let words: Vec<String> = (0..400)
        .map(|i| format!("w{}{}", ["ka", "lo", "mi", "tu", "se"][i % 5], i))
        .collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut text = String::with_capacity(mb << 20);
    while text.len() < mb << 20 {
        text.push_str("The ");
        for _ in 0..8 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            text.push_str(&words[(state >> 33) as usize % words.len()]);
            text.push(' ');
        }
        text.push_str("end.\n");
    }
    std::fs::write(path, text).unwrap();
}

/// Sends SIGINT once `ready` says so of a `prepare` event, and returns the seconds from
/// the signal to the end of the process, with its exit code.
fn interrupt_when(
    child: &mut Child,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> (f64, Option<i32>) {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(out).lines();
        while let Some(Ok(line)) = lines.next() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the stage's prepare event within 120 s");
        if v["event"] == "prepare" && ready(&v) {
            break;
        }
    }
    signal(child, libc::SIGINT);
    let sent = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (sent.elapsed().as_secs_f64(), status.code());
        }
        assert!(
            sent.elapsed() < Duration::from_secs(60),
            "the process did not end"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn ctrl_c_in_each_preparation_stage_ends_within_a_second_leaving_no_partial_cache() {
    let _machine = MACHINE.write().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_big_corpus(&d.join("big.txt"), 24);
    let cache = d.join(".cache/gptdash/corpora");
    // Reading: a named pipe nobody writes blocks the read itself.
    let fifo = d.join("pipe.txt");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let stages: [(&str, &str, &[&str]); 3] = [
        ("read", "pipe.txt", &[]),
        ("tokenizer", "big.txt", &[]),
        // With a tokenizer given, the ids are encoded straight away.
        ("encode", "big.txt", &["--tokenizer", "tok.json"]),
    ];
    for (stage, corpus, extra) in stages {
        if stage == "encode" {
            write_corpus(d);
            let out = gptdash(
                d,
                &[
                    "train",
                    "--corpus",
                    "tiny.txt",
                    "--max-iters",
                    "1",
                    "--out",
                    "tokck",
                ],
            );
            assert!(out.status.success(), "{}", stderr(&out));
            std::fs::copy(d.join("tokck/tokenizer.json"), d.join("tok.json")).unwrap();
        }
        let mut args = vec![
            "train", "--corpus", corpus, "--json", "--device", "cpu", "--out", "ck-int",
        ];
        args.extend_from_slice(extra);
        let entries = || -> Vec<String> {
            std::fs::read_dir(&cache)
                .map(|r| {
                    r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let before = entries();
        let cache_home = d.join(".cache");
        let mut child = spawn(
            d,
            &args,
            &[("XDG_CACHE_HOME", cache_home.to_str().unwrap())],
        );
        let (secs, code) = interrupt_when(&mut child, |v| {
            v["stage"] == stage
                && match stage {
                    "encode" => v["done"].as_u64().is_some_and(|n| n > 0),
                    _ => true,
                }
        });
        let err = std::fs::read_to_string(d.join("stderr.txt")).unwrap();
        assert_eq!(code, Some(130), "{stage}: {err}");
        assert!(
            secs <= 1.0,
            "{stage}: the process ended {secs:.2} s after Ctrl-C"
        );
        assert!(
            !d.join("ck-int").exists(),
            "{stage}: nothing to save before training"
        );
        // No temporary, and no token ids of the interrupted corpus (a complete
        // tokenizer entry, written once its training ended, may stay).
        let partial: Vec<String> = entries()
            .into_iter()
            .filter(|n| n.contains(".tmp") || (n.ends_with(".ids") && !before.contains(n)))
            .collect();
        assert!(
            partial.is_empty(),
            "{stage}: cache entries left: {partial:?}"
        );
    }
}

#[test]
fn two_writers_and_unwritable_places_fail_before_training() {
    let _machine = shared_machine();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_corpus(d);
    let mut first = spawn(d, &long_train("shared"), &[]);
    read_until(&mut first, "iter");
    let mut second = long_train("shared");
    second.retain(|a| *a != "--json");
    expect_error(d, &second, &["shared is being written by another gptdash"]);
    signal(&first, libc::SIGTERM);
    assert_eq!(wait(&mut first).code(), Some(143));
    loads(d, "shared");

    // A file where the output's parent should be, and a place nobody can write (even root).
    std::fs::write(d.join("afile"), "").unwrap();
    for (out, needle) in [
        ("afile/ck", "afile is a file, not a folder"),
        ("/proc/gptdash-ck/x", "cannot create"),
    ] {
        let mut args = long_train(out);
        args.retain(|a| *a != "--json");
        let result = gptdash(d, &args);
        assert_eq!(result.status.code(), Some(2), "{out}: {}", stderr(&result));
        assert!(
            stderr(&result).contains(needle),
            "{out}: {}",
            stderr(&result)
        );
        assert!(!stdout(&result).contains("loss"), "{out}: it trained first");
    }
}

#[test]
fn a_config_json_that_lies_is_exit_2_naming_what_is_wrong() {
    let _machine = shared_machine();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_checkpoint(d);
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("ck/config.json")).unwrap()).unwrap();
    let vocab = original["model"]["vocab_size"].as_i64().unwrap();
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("vocab_size", (vocab + 1).into(), "tokens but the model"),
        ("vocab_size", (vocab - 1).into(), "tokens but the model"),
        ("vocab_size", 0.into(), "model.vocab_size"),
        ("vocab_size", (1i64 << 40).into(), "model.vocab_size"),
        ("block_size", 32.into(), "block_size"),
        ("block_size", 0.into(), "model.block_size"),
        ("n_layer", 4.into(), "n_layer"),
        ("n_layer", 2.into(), "n_layer"),
        ("n_layer", 0.into(), "model.n_layer"),
        ("n_head", 1.into(), "model.n_head = 1"),
        ("n_head", 5.into(), "not divisible by n_head"),
        ("n_head", (-3).into(), "model.n_head"),
        ("n_embd", 96.into(), "n_embd"),
        ("n_embd", (1i64 << 20).into(), "model.n_embd"),
        ("n_classes", 3.into(), "n_classes"),
        (
            "layer_norm_eps",
            1e-6.into(),
            "model.layer_norm_eps = 0.000001",
        ),
        ("layer_norm_eps", (-1.0).into(), "model.layer_norm_eps"),
        ("layer_norm_eps", 0.0.into(), "model.layer_norm_eps"),
        ("tie_lm_head", true.into(), "tie_lm_head"),
        ("dropout", 1.5.into(), "model.dropout"),
        ("n_head", "four".into(), "config.json"),
    ];
    for (key, value, needle) in cases {
        let mut config = original.clone();
        config["model"][key] = value.clone();
        std::fs::write(d.join("ck/config.json"), config.to_string()).unwrap();
        let out = gptdash(
            d,
            &["generate", "--checkpoint", "ck", "--prompt", "The cat"],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{key} = {value}: {err}");
        assert!(
            err.contains(needle),
            "{key} = {value}: {needle:?} missing:\n{err}"
        );
        for noise in ["panicked", "libtorch", "Exception", "stack"] {
            assert!(!err.contains(noise), "{key} = {value}: {err}");
        }
    }
    // Fields outside the model.
    for (key, value, needle) in [
        ("eot_id", serde_json::Value::from(vocab + 5), "eot_id"),
        ("format_version", 99.into(), "format version 99"),
        ("data_mode", "nonsense".into(), "config.json"),
        ("model", serde_json::Value::Null, "config.json"),
    ] {
        let mut config = original.clone();
        config[key] = value.clone();
        std::fs::write(d.join("ck/config.json"), config.to_string()).unwrap();
        let out = gptdash(
            d,
            &["generate", "--checkpoint", "ck", "--prompt", "The cat"],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{key} = {value}: {err}");
        assert!(
            err.contains(needle),
            "{key} = {value}: {needle:?} missing:\n{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // Put back, it loads again (nothing was damaged by trying).
    std::fs::write(d.join("ck/config.json"), original.to_string()).unwrap();
    loads(d, "ck");
    // Resuming checks the same way.
    let mut config = original.clone();
    config["model"]["n_head"] = 1.into();
    std::fs::write(d.join("ck/config.json"), config.to_string()).unwrap();
    expect_error(
        d,
        &["train", "--resume", "ck", "--max-iters", "40"],
        &["model.n_head"],
    );
}

#[test]
fn runs_too_big_for_memory_and_too_many_threads_are_refused_up_front() {
    let _machine = shared_machine();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_corpus(d);
    expect_error(
        d,
        &[
            "train",
            "--corpus",
            "tiny.txt",
            "--batch-size",
            "100000",
            "--block-size",
            "2048",
            "--mode",
            "pack",
        ],
        &["of memory", "--batch-size"],
    );
    expect_error(
        d,
        &["train", "--corpus", "tiny.txt", "--threads", "100000"],
        &["train.threads is 100000"],
    );
}

#[test]
fn edges_are_errors_naming_what_to_change() {
    let _machine = shared_machine();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_checkpoint(d);
    // A temperature that would overflow the logits into NaN probabilities.
    expect_error(
        d,
        &[
            "generate",
            "--checkpoint",
            "ck",
            "--prompt",
            "The cat",
            "--temperature",
            "1e-300",
        ],
        &["temperature must be 0 (greedy) or between 0.001 and 1000"],
    );
    // Zero sizes in the benchmarks.
    for flag in ["--n-layer", "--n-embd", "--block-size"] {
        expect_error(d, &["bench", "generate", flag, "0"], &[flag]);
        expect_error(d, &["bench", "inspect", flag, "0"], &[flag]);
    }
    // Fine-tuning data with one class only.
    let mut tsv = String::from("sentence\tlabel\n");
    for i in 0..12 {
        tsv.push_str(&format!("the cat sat {i}\t1\n"));
    }
    std::fs::write(d.join("one-class.tsv"), tsv).unwrap();
    expect_error(
        d,
        &[
            "finetune",
            "--checkpoint",
            "ck",
            "--sst2",
            "one-class.tsv",
            "--samples",
            "12",
            "--epochs",
            "1",
        ],
        &["one-class.tsv", "all positive", "both classes"],
    );
}

#[test]
fn a_save_that_cannot_be_written_keeps_the_previous_checkpoint() {
    let _machine = shared_machine();
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_checkpoint(d);
    let before = step_of(d, "ck");
    let target = (before + 2).to_string();
    // A disk that fills up: no file may grow past 16 KB (the weights are larger), and
    // writing past it fails with an error instead of the default SIGXFSZ.
    let mut command = Command::new(env!("CARGO_BIN_EXE_gptdash"));
    command
        .current_dir(d)
        .env("HOME", d)
        .env("XDG_CONFIG_HOME", d.join("xdg-config"))
        .args(["train", "--resume", "ck", "--max-iters", &target]);
    // SAFETY: between fork and exec only async-signal-safe calls (signal, setrlimit).
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 16 * 1024,
                rlim_max: 16 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the previous one is untouched"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    loads(d, "ck");
    assert_eq!(step_of(d, "ck"), before);
    assert!(!d.join(".ck.tmp").exists(), "the partial copy is removed");
}
