//! The real binary: every run's history (`events.jsonl`), `gptdash runs` and `runs diff`,
//! `gptdash sweep` stopped and started again, the thread budget two processes share, and
//! the OpenMP wait policy in force.
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{events, gptdash, stderr, stdout, write_corpus, TINY};

/// The tests that measure CPU use or thread counts run one at a time: another test's
/// training beside them would be what they measure.
fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn spawn(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gptdash"));
    c.current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
        .env("HOME", dir)
        .env_remove("XDG_CACHE_HOME") // the seats are under HOME's cache, per test
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    c.spawn().expect("the gptdash binary runs")
}

/// Lines of a history file, parsed (a torn last line is left out).
fn history(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn train_args<'a>(corpus: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "--corpus", corpus];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_run_writes_its_events_to_its_history_and_runs_lists_and_diffs_runs() {
    let _one = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let a = train_args(
        &corpus,
        &["--max-iters", "12", "--eval-interval", "5", "--json"],
    );
    let out = gptdash(dir.path(), &a);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: Vec<serde_json::Value> = events(&out)
        .into_iter()
        .filter(|e| e["event"] != "prepare")
        .collect();
    let run = printed[0]["out"].as_str().unwrap().to_string();
    let kept = history(&dir.path().join(&run).join("events.jsonl"));
    // The record first (kind, settings), then every event the run printed.
    assert_eq!(kept[0]["event"], "run");
    assert_eq!(kept[0]["kind"], "language_model");
    assert_eq!(kept[0]["settings"]["train"]["max_iters"], 12);
    assert_eq!(kept[1..], printed[..]);
    let b = train_args(
        &corpus,
        &["--max-iters", "8", "--lr", "0.003", "--seed", "7", "--json"],
    );
    assert!(gptdash(dir.path(), &b).status.success());
    // The table.
    let out = gptdash(dir.path(), &["runs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.contains("tiny-") && table.contains("finished"),
        "{table}"
    );
    assert!(table.contains("12/12") && table.contains("8/8"), "{table}");
    // JSON, sorted and filtered.
    let out = gptdash(dir.path(), &["runs", "--json", "--sort", "steps"]);
    let listed = events(&out);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["event"], "run_summary");
    assert_eq!(listed[0]["steps"], 8);
    assert_eq!(listed[1]["steps"], 12);
    assert_eq!(listed[1]["status"], "finished");
    assert_eq!(listed[1]["kind"], "language_model");
    assert!(listed[1]["best"].as_f64().unwrap() > 0.0);
    let out = gptdash(dir.path(), &["runs", "--json", "--status", "running"]);
    assert!(events(&out).is_empty());
    // The settings that differ.
    let names: Vec<String> = listed
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    let out = gptdash(dir.path(), &["runs", "diff", &names[0], &names[1]]);
    assert!(out.status.success(), "{}", stderr(&out));
    let diff = stdout(&out);
    for key in ["train.learning_rate", "train.max_iters", "train.seed"] {
        assert!(diff.contains(key), "{key}: {diff}");
    }
    assert!(!diff.contains("model.preset"), "{diff}");
    let out = gptdash(
        dir.path(),
        &["runs", "diff", &names[0], &names[1], "--json"],
    );
    let d = &events(&out)[0];
    assert_eq!(d["event"], "runs_diff");
    // Those three and eval_interval (the first run set it).
    assert_eq!(d["differ"].as_array().unwrap().len(), 4, "{d}");
    // A name that is no run is an error naming it.
    let out = gptdash(dir.path(), &["runs", "diff", &names[0], "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("run nope"), "{}", stderr(&out));
}

#[test]
fn a_killed_run_leaves_a_torn_history_that_resuming_continues() {
    let _one = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    let args = train_args(
        &corpus,
        &[
            "--max-iters",
            "100000",
            "--out",
            "checkpoints/run",
            "--json",
        ],
    );
    // save_interval 0 saves at the end only: a settings file saves every 20 steps.
    std::fs::write(dir.path().join("s.toml"), "[train]\nsave_interval = 20\n").unwrap();
    let mut full = vec!["--config", "s.toml"];
    full.extend(args);
    let mut child = spawn(dir.path(), &full, &[]);
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines {
        if line.unwrap().contains(r#""event":"checkpoint""#) {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL: no save, no end in the history
    child.wait().unwrap();
    let path = dir.path().join("checkpoints/run/events.jsonl");
    // The kill may cut the last line: add a torn one for certain.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(r#"{"event":"iter","iter":99999,"lo"#);
    std::fs::write(&path, text).unwrap();
    let listed = events(&gptdash(dir.path(), &["runs", "--json"]));
    assert_eq!(listed[0]["status"], "interrupted", "{:?}", listed[0]);
    let saved_at = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(dir.path().join("checkpoints/run/train_state.json")).unwrap(),
    )
    .unwrap()["step"]
        .as_u64()
        .unwrap();
    let out = gptdash(
        dir.path(),
        &[
            "--config",
            "s.toml",
            "train",
            "--resume",
            "checkpoints/run",
            "--max-iters",
            &(saved_at + 10).to_string(),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = events(&gptdash(dir.path(), &["runs", "--json"]));
    let r = &listed[0];
    assert_eq!(r["status"], "finished", "{r}");
    assert_eq!(r["steps"].as_u64(), Some(saved_at + 10));
    // Every step once: the steps the killed segment ran past its checkpoint are dropped.
    let per_step = 8.0 * 15.0; // at most batch × (block − 1) target tokens a step
    assert!(
        r["tokens"].as_f64().unwrap() <= per_step * (saved_at + 10) as f64,
        "{r}"
    );
    let kept = history(&path);
    let records = kept.iter().filter(|e| e["event"] == "run").count();
    assert_eq!(records, 2, "the first segment and the resumed one");
    assert!(kept
        .iter()
        .any(|e| e["event"] == "start" && e["start_iter"] == saved_at));
}

/// `s.toml` in `dir` for a sweep of tiny runs on the test corpus, `train` lines added to
/// its `[train]` section.
fn sweep_config(dir: &Path, train: &str) {
    let corpus = write_corpus(dir);
    std::fs::write(
        dir.join("s.toml"),
        format!(
            "[model]\npreset = \"gpt-nano\"\nblock_size = 16\n[train]\nbatch_size = 8\n{train}\ndevice = \"cpu\"\n[data]\ncorpus = \"{corpus}\"\n"
        ),
    )
    .unwrap();
}

#[test]
fn a_sweep_stopped_and_started_again_runs_no_member_twice() {
    let _one = exclusive();
    let dir = tempfile::tempdir().unwrap();
    sweep_config(
        dir.path(),
        "max_iters = 40\nsave_interval = 10\neval_interval = 20",
    );
    let sweep = [
        "--config",
        "s.toml",
        "sweep",
        "--set",
        "train.learning_rate=1e-3,3e-3",
        "--seeds",
        "2",
        "--out",
        "checkpoints/sw",
    ];
    // The first member finishes; the second is stopped (SIGINT) while it trains.
    let mut child = spawn(dir.path(), &sweep, &[]);
    let out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("[2/4]") && line.contains("started") {
            break;
        }
    }
    let second = dir
        .path()
        .join("checkpoints/sw/learning_rate=1e-3_seed=1338");
    let started = Instant::now();
    while !second.join("train_state.json").exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: a signal to the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen:?}");
    let first = dir
        .path()
        .join("checkpoints/sw/learning_rate=1e-3_seed=1337");
    let first_history = std::fs::read(first.join("events.jsonl")).unwrap();
    let listed = events(&gptdash(dir.path(), &["runs", "--json", "--sort", "name"]));
    let statuses: Vec<&str> = listed
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["finished", "interrupted"], "{listed:?}");
    // Started again: the finished member is skipped, the stopped one resumed.
    let mut again = sweep.to_vec();
    again.push("--json");
    let out = gptdash(dir.path(), &again);
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = events(&out);
    let ran: Vec<&str> = ev
        .iter()
        .filter(|e| e["event"] == "sweep_member")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(ran.len(), 3, "{ran:?}");
    assert!(!ran.contains(&"learning_rate=1e-3_seed=1337"), "{ran:?}");
    assert_eq!(
        std::fs::read(first.join("events.jsonl")).unwrap(),
        first_history
    );
    let resumed = history(&second.join("events.jsonl"));
    let starts: Vec<u64> = resumed
        .iter()
        .filter(|e| e["event"] == "start")
        .map(|e| e["start_iter"].as_u64().unwrap())
        .collect();
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_eq!(starts[0], 0);
    assert!(
        starts[1] >= 10,
        "resumed from its checkpoint, not from the start: {starts:?}"
    );
    // The summary: two grid points, two finished seeds each.
    let summary = ev.iter().find(|e| e["event"] == "sweep_summary").unwrap();
    let rows = summary["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["results"].as_array().unwrap().len(), 2, "{row}");
        assert!(row["std"].as_f64().unwrap() >= 0.0);
    }
    // A different grid in the same folder is refused, nothing touched.
    let out = gptdash(
        dir.path(),
        &[
            "--config",
            "s.toml",
            "sweep",
            "--set",
            "train.learning_rate=1e-2",
            "--out",
            "checkpoints/sw",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("another sweep"), "{}", stderr(&out));
}

#[test]
fn a_sweep_killed_outright_has_its_members_save_and_end() {
    let _one = exclusive();
    let dir = tempfile::tempdir().unwrap();
    sweep_config(dir.path(), "max_iters = 1000000");
    let args = [
        "--config",
        "s.toml",
        "sweep",
        "--set",
        "train.learning_rate=1e-3",
        "--out",
        "sw",
    ];
    let mut child = spawn(dir.path(), &args, &[]);
    let member = dir.path().join("sw/learning_rate=1e-3_seed=1337");
    let history_file = member.join("events.jsonl");
    let started = Instant::now();
    let trains =
        || std::fs::read_to_string(&history_file).is_ok_and(|t| t.contains(r#""event":"iter""#));
    while !trains() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(trains(), "the member never trained");
    child.kill().unwrap(); // SIGKILL: the sweep passes nothing on
    child.wait().unwrap();
    // The member is told by the kernel (its parent died), saves and ends.
    let ended = || {
        history(&history_file)
            .iter()
            .any(|e| e["event"] == "interrupted")
    };
    let killed = Instant::now();
    while !ended() && killed.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ended(), "the member ran on after its sweep was killed");
    assert!(member.join("train_state.json").is_file(), "it saved");
    // Its lock is free: the same sweep goes on with it (resumed, not run again).
    let listed = events(&gptdash(dir.path(), &["runs", "--json", "--root", "sw"]));
    let mut waited = 0;
    let mut listed = listed;
    while listed.first().is_some_and(|r| r["status"] == "running") && waited < 50 {
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
        listed = events(&gptdash(dir.path(), &["runs", "--json", "--root", "sw"]));
    }
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["status"], "interrupted", "{listed:?}");
}

/// The `threads` of a run's `start` event, and the child (its stdout read on).
fn start_threads(child: &mut Child) -> (u64, BufReader<std::process::ChildStdout>) {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no start event");
        let e: serde_json::Value = serde_json::from_str(&line).unwrap();
        if e["event"] == "start" {
            return (e["threads"].as_u64().unwrap(), out);
        }
    }
}

#[test]
fn two_runs_at_once_split_the_cores() {
    let _one = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path());
    // Four cores to split, whatever this machine has.
    let cores = [("GPTDASH_CORES", "4")];
    let long = train_args(&corpus, &["--max-iters", "1000000", "--json"]);
    let mut a = spawn(dir.path(), &long, &cores);
    let (alone, mut a_out) = start_threads(&mut a);
    assert_eq!(alone, 4, "alone, a run takes every core");
    let mut b = spawn(dir.path(), &long, &cores);
    let (with_a, _b_out) = start_threads(&mut b);
    assert_eq!(with_a, 2, "beside another run, its share");
    // The first run follows within about a second.
    let mut line = String::new();
    let started = Instant::now();
    let told = loop {
        line.clear();
        if a_out.read_line(&mut line).unwrap() == 0 || started.elapsed() > Duration::from_secs(60) {
            break None;
        }
        if line.contains("share this machine's cores") {
            break Some(line.clone());
        }
    };
    // A run with a fixed thread count is counted as that many.
    let fixed = train_args(
        &corpus,
        &["--max-iters", "1000000", "--threads", "3", "--json"],
    );
    let mut c = spawn(dir.path(), &fixed, &cores);
    let (three, _c_out) = start_threads(&mut c);
    for child in [&mut a, &mut b, &mut c] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let told = told.expect("the first run said it now shares the cores");
    assert!(told.contains("on 2 threads"), "{told}");
    assert_eq!(three, 3);
}

#[test]
fn openmp_waits_passively_unless_told_otherwise() {
    let _one = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let measure = |envs: &[(&str, &str)]| {
        let child = spawn(dir.path(), &["bench", "wait", "--json"], envs);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let e: serde_json::Value =
            serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
        let b = e.clone();
        (
            b["wait_policy"].as_str().unwrap().to_string(),
            b["cpu_per_wall"].as_f64().unwrap(),
        )
    };
    let (policy, passive) = measure(&[]);
    assert_eq!(policy, "passive", "set before libgomp read it");
    let (policy, active) = measure(&[("OMP_WAIT_POLICY", "active")]);
    assert_eq!(policy, "active", "a user's choice is kept");
    // Spinning workers burn CPU in the gaps; passive ones sleep there.
    assert!(
        active > passive + 0.3,
        "CPU per wall second: passive {passive:.2}, active {active:.2}"
    );
    // Started by naming the dynamic loader, it runs (without the exec, which would hand
    // the loader gptdash's arguments).
    let loader = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
        .into_iter()
        .find(|l| Path::new(l).exists());
    if let Some(loader) = loader {
        let out = std::process::Command::new(loader)
            .arg(env!("CARGO_BIN_EXE_gptdash"))
            .arg("--version")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("gptdash"));
    }
}
