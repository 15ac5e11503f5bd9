//! End to end: the real binary in a tmux pane, driven by keys as a new user would.
//! `.ci/run` installs tmux when it is missing.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
}

impl Tmux {
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

fn tmux_available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn dashboard_trains_generates_and_restores_the_terminal() {
    assert!(
        tmux_available(),
        "tmux is required for this test (.ci/run installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d: &Path = dir.path();
    let tmux = Tmux {
        socket: format!("gptdash-e2e-{}", std::process::id()),
    };
    let script = format!(
        "cd {} && HOME={} XDG_CONFIG_HOME={}/cfg {}; echo EXITED:$?; stty -a > {}/stty.txt; sleep 60",
        d.display(),
        d.display(),
        d.display(),
        env!("CARGO_BIN_EXE_gptdash"),
        d.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "e2e",
        "-x",
        "150",
        "-y",
        "45",
        &script,
    ]);
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

    tmux.keys(&["q"]);
    let screen = tmux.wait_for("EXITED:", 20);
    assert!(screen.contains("EXITED:0"), "{screen}");
    assert!(
        !screen.contains("1 Train"),
        "the alternate screen was left:\n{screen}"
    );
    // stty ran in the same terminal after gptdash: raw mode is off again.
    // (The file appears before stty has written it: wait for its content.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stty = String::new();
    while !stty.contains("icanon") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        stty = std::fs::read_to_string(d.join("stty.txt")).unwrap_or_default();
    }
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
