//! End to end: the real binary in a tmux pane, driven by keys as a new user would.
//! `.ci/run` installs tmux when it is missing.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
}

impl Tmux {
    /// A tmux server of its own (`-L name-PID`); fails when tmux is missing.
    fn new(name: &str) -> Self {
        assert!(
            tmux_available(),
            "tmux is required for this test (.ci/run installs it)"
        );
        Tmux {
            socket: format!("gptdash-{name}-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "e2e"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn text(&self, text: &str) {
        self.run(&["send-keys", "-t", "e2e", "-l", text]);
    }

    /// A 150×45 pane running `script`.
    fn start(&self, script: &str) {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            "e2e",
            "-x",
            "150",
            "-y",
            "45",
            script,
        ]);
    }

    /// The dashboard started in `d` (its own HOME and config folder), then `after` in
    /// the same pane; waits for its first tab.
    fn dashboard(&self, d: &Path, after: &str) {
        self.start(&format!(
            "cd {d} && HOME={d} XDG_CONFIG_HOME={d}/cfg {bin}; {after}; sleep 60",
            d = d.display(),
            bin = env!("CARGO_BIN_EXE_gptdash"),
        ));
        self.wait_for("1 Train", 20);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-t", "e2e", "-p"])
    }

    fn wait_for(&self, what: &str, timeout_s: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(timeout_s);
        loop {
            let screen = self.screen();
            if screen.contains(what) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("{what:?} did not appear within {timeout_s} s; screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// What `stty -a`, run in the pane after gptdash ended, wrote to `dir/stty.txt` (the
/// file appears before stty has written it: wait for its content).
fn stty_after(dir: &Path, timeout_s: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let mut stty = String::new();
    while !stty.contains("icanon") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        stty = std::fs::read_to_string(dir.join("stty.txt")).unwrap_or_default();
    }
    stty
}

fn tmux_available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
#[cfg_attr(
    not(has_tmux),
    ignore = "needs tmux, not found when the tests were built (CI installs it and runs this)"
)]
fn dashboard_trains_generates_and_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let d: &Path = dir.path();
    let tmux = Tmux::new("e2e");
    let script = format!(
        "cd {} && HOME={} XDG_CONFIG_HOME={}/cfg {}; echo EXITED:$?; stty -a > {}/stty.txt; sleep 60",
        d.display(),
        d.display(),
        d.display(),
        env!("CARGO_BIN_EXE_gptdash"),
        d.display()
    );
    tmux.start(&script);
    tmux.wait_for("1 Train", 20);

    tmux.keys(&["Space"]);
    let screen = tmux.wait_for("200 / 200", 400);
    assert!(screen.contains("test loss"), "{screen}");
    assert!(
        screen.contains("cpu (") || screen.contains("cuda"),
        "{screen}"
    );

    tmux.keys(&["2"]);
    tmux.wait_for("prompt (Enter generates", 10);
    tmux.text("He and I");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("perplexity", 30);
    assert!(screen.contains("He and I"), "{screen}");
    for rank in 1..=6 {
        assert!(
            screen.contains(&format!("#{rank} ")),
            "grid row #{rank} missing:\n{screen}"
        );
    }
    assert!(screen.contains("rest"), "{screen}");

    // Branch on the second-ranked token of the first step: the log names the forced
    // token, and the continuation now starts with it (the grid's #2 of step 1).
    let second = rank_two_of_first_step(&screen);
    assert!(
        !screen.contains(&format!("He and I{second} (")),
        "greedy decoding starts with rank 1, not {second:?}:\n{screen}"
    );
    // One key at a time: Escape followed at once by Down's escape sequence reads as Alt.
    for key in ["Escape", "Down", "Enter"] {
        tmux.keys(&[key]);
        std::thread::sleep(Duration::from_millis(300));
    }
    tmux.wait_for(&format!("He and I{second} ("), 30);
    tmux.keys(&["1"]);
    tmux.wait_for(&format!("branch: step 1 forced to \"{second}\""), 10);

    // The Inspect tab looks inside the trained model: a test sentence of the corpus, the
    // cursor on its last token; Left moves it, and what it shows follows.
    tmux.keys(&["4"]);
    let screen = tmux.wait_for("looks at:", 20);
    assert!(
        screen.contains("attention · layer 1/4 head 1/4") && screen.contains("logit lens"),
        "{screen}"
    );
    let cursor_line = |screen: &str| -> String {
        screen
            .lines()
            .find(|l| l.contains("looks at:"))
            .unwrap_or_default()
            .to_string()
    };
    let before = cursor_line(&screen);
    tmux.keys(&["Left"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = before.clone();
    while after == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        after = cursor_line(&tmux.screen());
    }
    assert_ne!(after, before, "the cursor did not move");
    tmux.keys(&["]", "Down"]);
    tmux.wait_for("layer 2/4 head 2/4", 10);
    // Remove that head: the text is coloured by the loss change, the cursor's loss and
    // next-token top 6 are shown with and without the removal.
    tmux.keys(&["a"]);
    let screen = tmux.wait_for("without the removal", 20);
    assert!(
        screen.contains("loss change from the removal") && screen.contains("not removed"),
        "{screen}"
    );
    // x puts it back.
    tmux.keys(&["x"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tmux.screen().contains("without the removal") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !tmux.screen().contains("without the removal"),
        "{}",
        tmux.screen()
    );

    tmux.keys(&["q"]);
    let screen = tmux.wait_for("EXITED:", 20);
    assert!(screen.contains("EXITED:0"), "{screen}");
    assert!(
        !screen.contains("1 Train"),
        "the alternate screen was left:\n{screen}"
    );
    // stty ran in the same terminal after gptdash: raw mode is off again.
    let stty = stty_after(d, 10);
    assert!(
        stty.contains(" icanon") && stty.contains(" echo "),
        "terminal not restored: {stty}"
    );
    assert!(
        d.join("checkpoints/small/model.safetensors").is_file(),
        "the finished run saved its checkpoint"
    );
}

/// The token text in the grid's row `#2`, first column: `│#2   " hold" 0.318 │...`.
fn rank_two_of_first_step(screen: &str) -> String {
    let row = screen
        .lines()
        .find(|l| l.contains("#2 "))
        .unwrap_or_else(|| panic!("no #2 row:\n{screen}"));
    let quoted = row.split('"').nth(1).unwrap_or_else(|| panic!("{row}"));
    quoted.to_string()
}

#[test]
fn without_a_terminal_it_points_at_the_headless_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_gptdash"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs a terminal") && err.contains("gptdash train"),
        "{err}"
    );
}

/// SIGTERM, SIGHUP, SIGINT or SIGQUIT to the dashboard while it trains: the run is saved
/// (and resumes), the terminal is restored, the exit code is 128 + the signal.
#[test]
#[cfg_attr(
    not(has_tmux),
    ignore = "needs tmux, not found when the tests were built (CI installs it and runs this)"
)]
fn a_signal_to_the_dashboard_keeps_the_run_and_restores_the_terminal() {
    for (name, number) in [("TERM", 15), ("HUP", 1), ("INT", 2), ("QUIT", 3)] {
        let dir = tempfile::tempdir().unwrap();
        let d: &Path = dir.path();
        std::fs::write(d.join("long.toml"), "[train]\nmax_iters = 1000000\n").unwrap();
        let tmux = Tmux::new(&format!("sig-{name}"));
        let script = format!(
            "cd {d} && HOME={d} XDG_CONFIG_HOME={d}/cfg sh -c 'echo $$ > {d}/pid; exec {bin} --config long.toml'; echo EXITED:$?; stty -a > {d}/stty.txt; sleep 60",
            d = d.display(),
            bin = env!("CARGO_BIN_EXE_gptdash"),
        );
        tmux.start(&script);
        tmux.wait_for("1 Train", 20);
        tmux.keys(&["Space"]);
        tmux.wait_for("gptdash training", 60);
        std::thread::sleep(Duration::from_millis(1500));
        let pid = std::fs::read_to_string(d.join("pid")).unwrap();
        let status = Command::new("kill")
            .args([&format!("-{name}"), pid.trim()])
            .status()
            .unwrap();
        assert!(status.success());
        // A hang-up may leave the pane without a terminal to print to; the exit code
        // and stty's output say what happened.
        let stty = stty_after(d, 60);
        let screen = tmux.screen();
        assert!(
            screen.contains(&format!("EXITED:{}", 128 + number)),
            "SIG{name}:\n{screen}"
        );
        assert!(
            !screen.contains("1 Train"),
            "SIG{name}: alternate screen left:\n{screen}"
        );
        assert!(
            stty.contains(" icanon") && stty.contains(" echo "),
            "SIG{name}: terminal not restored: {stty}"
        );
        resumes(d, &format!("SIG{name}"));
    }
}

/// `checkpoints/small` under `d` is a resumable checkpoint: two more steps train from it.
fn resumes(d: &Path, what: &str) {
    let ck = d.join("checkpoints/small");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("train_state.json")).unwrap())
            .unwrap();
    let step = state["step"].as_u64().expect("a resumable checkpoint");
    let more = (step + 2).to_string();
    let resumed = Command::new(env!("CARGO_BIN_EXE_gptdash"))
        .current_dir(d)
        .env("HOME", d)
        .env("XDG_CONFIG_HOME", d.join("cfg"))
        .args([
            "train",
            "--resume",
            "checkpoints/small",
            "--max-iters",
            &more,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&resumed.stderr)
    );
}

#[test]
#[cfg_attr(
    not(has_tmux),
    ignore = "needs tmux, not found when the tests were built (CI installs it and runs this)"
)]
fn watch_follows_a_piped_stream_loads_its_checkpoint_and_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let d: &Path = dir.path();
    let tmux = Tmux::new("e2e-watch");
    // A real checkpoint where the recorded stream says it is (`ck`, beside the cwd).
    let out = Command::new(env!("CARGO_BIN_EXE_gptdash"))
        .current_dir(d)
        .env("HOME", d)
        .args([
            "train",
            "--corpus",
            "small",
            "--model",
            "gpt-nano",
            "--max-iters",
            "20",
            "--out",
            "ck",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/watch/run.jsonl");
    // The stream arrives through a pipe, slowly, as from `ssh box tail -f`.
    let script = format!(
        "cd {d} && (head -40 {f}; sleep 2; tail -n +41 {f}) | HOME={d} XDG_CONFIG_HOME={d}/cfg {bin} watch -; echo EXITED:$?; stty -a > {d}/stty.txt; sleep 60",
        d = d.display(),
        f = fixture.display(),
        bin = env!("CARGO_BIN_EXE_gptdash"),
    );
    tmux.start(&script);
    let screen = tmux.wait_for("gptdash watch training", 20);
    assert!(screen.contains("standard input"), "{screen}");
    let screen = tmux.wait_for("gptdash watch finished", 20);
    for needle in [
        "60 / 60",
        "74 events, 2 other",
        "ended",
        "o open checkpoint",
    ] {
        assert!(screen.contains(needle), "{needle:?} missing:\n{screen}");
    }
    // Keys still work with stdin taken by the stream: Ctrl-O loads `ck`, the Generate
    // tab generates from it.
    tmux.keys(&["C-o"]);
    tmux.wait_for("model loaded", 20);
    tmux.keys(&["2"]);
    tmux.wait_for("prompt (Enter generates", 10);
    tmux.text("The cat");
    tmux.keys(&["Enter"]);
    tmux.wait_for("perplexity", 30);
    tmux.keys(&["Tab", "Tab", "Tab", "q"]);
    let screen = tmux.wait_for("EXITED:", 20);
    assert!(screen.contains("EXITED:0"), "{screen}");
    let stty = stty_after(d, 10);
    assert!(
        stty.contains(" icanon") && stty.contains(" echo "),
        "terminal not restored: {stty}"
    );
}

/// `3` then `f` while the model trains (or is paused): the run is kept — the dashboard
/// says to press x first — and after x (stop and save) f fine-tunes a copy while the
/// run's checkpoint keeps its optimizer state and can be resumed.
#[test]
#[cfg_attr(
    not(has_tmux),
    ignore = "needs tmux, not found when the tests were built (CI installs it and runs this)"
)]
fn fine_tuning_asked_for_while_training_keeps_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d: &Path = dir.path();
    let mut tsv = String::from("sentence\tlabel\n");
    for i in 0..40 {
        tsv.push_str(if i % 2 == 0 {
            "The cat sat.\t1\n"
        } else {
            "A dog ran.\t0\n"
        });
    }
    std::fs::write(d.join("train.tsv"), tsv).unwrap();
    std::fs::write(
        d.join("config.toml"),
        "[train]\nmax_iters = 1000000\nthreads = 1\n[finetune]\nsst2 = \"train.tsv\"\nsamples = 40\nepochs = 1\n",
    )
    .unwrap();
    let tmux = Tmux::new("keep");
    tmux.dashboard(d, "echo EXITED:$?");
    tmux.keys(&["Space"]);
    tmux.wait_for("gptdash training", 60);
    tmux.keys(&["3"]);
    tmux.wait_for("Press f to start", 10);
    tmux.keys(&["f"]);
    tmux.wait_for("still training", 20);
    // Still training: the run was not taken.
    tmux.wait_for("gptdash training", 5);
    tmux.keys(&["x"]);
    tmux.wait_for("gptdash finished", 30);
    tmux.keys(&["f"]);
    let screen = tmux.wait_for("calibration error", 120);
    assert!(screen.contains("validation accuracy"), "{screen}");
    assert!(
        d.join("checkpoints/classifier-sst2/classifier.json")
            .is_file(),
        "the classifier is saved in a folder of its own, linked"
    );
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED:0", 20);
    let ck = d.join("checkpoints/small");
    assert!(ck.join("optimizer.safetensors").is_file());
    resumes(d, "fine-tuning asked for while training");
}

/// `q` while the corpus is being prepared (here read from a pipe nobody writes, so the
/// read never ends by itself) ends the dashboard within a second.
#[test]
#[cfg_attr(
    not(has_tmux),
    ignore = "needs tmux, not found when the tests were built (CI installs it and runs this)"
)]
fn q_while_preparing_ends_the_dashboard_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d: &Path = dir.path();
    let fifo = d.join("pipe.txt");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    std::fs::write(d.join("config.toml"), "[data]\ncorpus = \"pipe.txt\"\n").unwrap();
    let tmux = Tmux::new("prep");
    tmux.dashboard(
        d,
        &format!("date +%s%N > {}/ended; echo EXITED:$?", d.display()),
    );
    tmux.keys(&["Space"]);
    tmux.wait_for("preparing corpus pipe.txt", 20);
    std::thread::sleep(Duration::from_millis(500));
    let asked = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    tmux.keys(&["q"]);
    tmux.wait_for("EXITED:", 20);
    let ended: u128 = std::fs::read_to_string(d.join("ended"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let secs = (ended.saturating_sub(asked)) as f64 / 1e9;
    assert!(secs <= 1.0, "the dashboard ended {secs:.2} s after q");
}

#[test]
#[cfg_attr(
    not(has_tmux),
    ignore = "needs tmux, not found when the tests were built (CI installs it and runs this)"
)]
fn the_runs_tab_overlays_two_selected_runs_and_opens_one() {
    let dir = tempfile::tempdir().unwrap();
    let d: &Path = dir.path();
    // Two short runs that differ in their learning rate.
    let text = "The cat sat. The dog ran. A cat ran. A dog sat.\n".repeat(8);
    std::fs::write(d.join("tiny.txt"), text).unwrap();
    for (lr, out) in [("0.001", "checkpoints/slow"), ("0.01", "checkpoints/fast")] {
        let status = Command::new(env!("CARGO_BIN_EXE_gptdash"))
            .current_dir(d)
            .env("HOME", d)
            .env("XDG_CONFIG_HOME", d.join("cfg"))
            .args([
                "train",
                "--corpus",
                "tiny.txt",
                "--model",
                "gpt-nano",
                "--block-size",
                "16",
            ])
            .args([
                "--batch-size",
                "8",
                "--max-iters",
                "30",
                "--device",
                "cpu",
                "--lr",
                lr,
            ])
            .args(["--out", out, "--json"])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let tmux = Tmux::new("runs");
    tmux.dashboard(d, "true");
    tmux.keys(&["5"]);
    tmux.wait_for("runs (2)", 20);
    // Select both (whichever is listed first: both may have started in one second).
    tmux.keys(&["Space", "Down", "Space"]);
    tmux.wait_for("━━ fast", 20);
    // Each run's curve comes from the tab's reader thread, one history at a time.
    let screen = tmux.wait_for("━━ slow", 20);
    assert!(screen.contains("━━ fast"), "{screen}");
    assert!(screen.contains("train loss by step"), "{screen}");
    // The chart has drawn: braille dots inside its box.
    assert!(
        screen
            .chars()
            .any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)),
        "{screen}"
    );
    // The settings that differ: the learning rate, a row per run.
    let row = screen
        .lines()
        .find(|l| l.contains("learning_rate"))
        .unwrap_or_else(|| panic!("{screen}"));
    assert!(row.contains("run"), "{row}");
    assert!(screen.contains("0.01"), "{screen}");
    // Enter opens the run under the cursor: its history on the Train tab.
    tmux.keys(&["Enter"]);
    tmux.keys(&["1"]);
    tmux.wait_for("its history is on the Train tab (30 steps", 20);
}
