//! scripts/gptdash_log.py, the logger for other trainers: what it writes (driven by
//! tests/python/logger_run.py as nanoGPT's loop, a Hugging Face Trainer callback and a
//! script printing to stdout would drive it) parses, line by line, as the events
//! `gptdash watch` reads, and the watch view shows the run. Needs only python3.
use std::path::Path;
use std::process::Command;

use gptdash::config::Settings;
use gptdash::protocol::{Event, RunDone, RunStart};
use gptdash::tui::app::{App, Msg};
use gptdash::watch::{parse_line, Parsed, Source, StreamMsg};

/// Every line of `text` read as `gptdash watch` reads it; all must be events.
fn events(text: &str) -> Vec<Event> {
    text.lines()
        .enumerate()
        .map(|(i, line)| match parse_line(line, i as u64 + 1) {
            Some(Parsed::Event(e)) => *e,
            other => panic!("line {}: {line}: read as {other:?}", i + 1),
        })
        .collect()
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            Event::Start(_) => "start",
            Event::Iter(_) => "iter",
            Event::Eval { .. } => "eval",
            Event::Checkpoint { .. } => "checkpoint",
            Event::Log { .. } => "log",
            Event::Done(_) => "done",
            _ => "other",
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(has_python),
    ignore = "needs python3, not found when the tests were built (CI runs this)"
)]
fn the_python_logger_writes_the_events_watch_reads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/logger_run.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(d)
        .env_remove("RANK")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // nanoGPT's loop: start, 50 iters (2 evals and checkpoints), a log line, done.
    let text = std::fs::read_to_string(d.join("nanogpt.jsonl")).unwrap();
    let run = events(&text);
    let k = kinds(&run);
    assert_eq!(k.len(), 1 + 50 + 2 + 2 + 1 + 1, "{k:?}");
    assert_eq!((k[0], k[k.len() - 1]), ("start", "done"));
    let Event::Start(RunStart::Train(info)) = &run[0] else {
        panic!("{:?}", run[0])
    };
    assert_eq!(
        (info.max_iters, info.model.n_layer, info.params),
        (50, 12, 124_000_000)
    );
    assert_eq!(info.preset, "nanoGPT gpt2");
    let iters: Vec<_> = run
        .iter()
        .filter_map(|e| match e {
            Event::Iter(m) => Some(*m),
            _ => None,
        })
        .collect();
    assert_eq!(iters[0].iter, 1);
    assert!(iters[0].iter_ms.is_nan(), "no time before the first step");
    assert!(iters[1].iter_ms >= 0.0 && iters[1].tokens_per_s > 0.0);
    assert_eq!(iters[1].tokens, 491_520);
    assert!(iters[29].loss.is_nan(), "a NaN loss is null, read as NaN");
    assert!((iters[3].loss - 5.0).abs() < 1e-12 && (iters[3].lr - 6e-4).abs() < 1e-15);
    let Event::Done(RunDone::Train(done)) = &run[run.len() - 1] else {
        panic!()
    };
    assert_eq!(done.iter, 50);
    assert!(done.tokens_per_s > 0.0 && done.train_s > 0.0);
    // Every step's tokens count, logged or not: 50 steps × 491,520 tokens.
    let total = done.tokens_per_s * done.train_s;
    assert!((total - 50.0 * 491_520.0).abs() < 1.0, "{total}");

    // Rank 1 wrote nothing.
    assert!(!d.join("rank1.jsonl").exists());

    // The Trainer callback: start (max_steps), 4 logged losses, 2 evals and saves, done.
    let trainer = events(&std::fs::read_to_string(d.join("trainer.jsonl")).unwrap());
    assert_eq!(
        kinds(&trainer),
        [
            "start",
            "iter",
            "iter",
            "eval",
            "checkpoint",
            "iter",
            "iter",
            "eval",
            "checkpoint",
            "done"
        ]
    );
    assert!(
        matches!(&trainer[4], Event::Checkpoint { iter: 10, path } if path == Path::new("hf-out/checkpoint-10"))
    );
    let Event::Start(RunStart::Train(info)) = &trainer[0] else {
        panic!()
    };
    assert_eq!(
        (
            info.batch_size,
            info.params,
            info.model.n_layer,
            info.model.block_size
        ),
        (64, 3000, 6, 1024)
    );
    assert_eq!(
        (info.device.as_str(), info.preset.as_str()),
        ("cpu", "distilgpt2")
    );

    // Standard output.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tiny = events(&stdout);
    assert_eq!(kinds(&tiny), ["start", "iter", "iter", "iter", "done"]);
    let Event::Iter(m) = &tiny[2] else { panic!() };
    assert!((m.tokens_per_s - 10_000.0).abs() < 1e-9);

    // And the watch view shows the nanoGPT run.
    let mut app = App::watching(Settings::default(), &Source::Stdin);
    for (i, line) in text.lines().enumerate() {
        if let Some(p) = parse_line(line, i as u64 + 1) {
            app.update(Msg::Stream(StreamMsg::Line(p)));
        }
    }
    let w = app.train.watch.as_ref().unwrap();
    assert_eq!((w.events, w.malformed, w.ignored), (57, 0, 0));
    assert_eq!(app.train.last.unwrap().iter, 50);
    assert_eq!(app.train.test_losses.len(), 2);
    assert_eq!(app.train.last_saved.as_deref(), Some("out/ckpt"));
}
