//! `gptdash watch`: the Train tab fed by an event stream. A recorded `train --json`
//! stream with malformed and unknown lines mixed in (`tests/fixtures/watch/run.jsonl`:
//! gpt-nano on the built-in corpus, 60 steps, checkpoints to `ck`; lines 11, 22 and 45
//! are malformed, 33 and 56 well-formed events the watcher does not show, line 25 an
//! iter with fields it does not know), the same events as a live run shows them, and a
//! fine-tuning run's stream on the Classify tab.
mod common;

use gptdash::config::Settings;
use gptdash::protocol::{Command, Event, RunInfo, RunStart, StepMetrics};
use gptdash::tui::app::{App, Msg};
use gptdash::tui::view;
use gptdash::watch::{self, Parsed, Source, StreamMsg, StreamStatus};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn render(app: &App, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| view::draw(f, app)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    (0..buffer.area.height)
        .map(|y| {
            (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect()
        })
        .collect()
}

/// The app watching `source`, fed `text` as the stream reader would feed it.
fn watch_text(source: &Source, text: &[u8]) -> App {
    let mut app = App::watching(Settings::default(), source);
    let (tx, rx) = crossbeam_channel::unbounded();
    watch::read_all(text, &tx, &std::sync::atomic::AtomicBool::new(false));
    for msg in rx.try_iter() {
        assert!(app.update(Msg::Stream(msg)).is_empty());
    }
    app
}

fn recorded() -> Vec<u8> {
    std::fs::read(common::fixture("watch/run.jsonl")).unwrap()
}

fn ctrl_o() -> Msg {
    Msg::Key(crossterm::event::KeyEvent::new(
        crossterm::event::KeyCode::Char('o'),
        crossterm::event::KeyModifiers::CONTROL,
    ))
}

#[test]
fn a_recorded_stream_shows_its_run_and_counts_the_lines_it_cannot_read() {
    let app = watch_text(&Source::File("runs/run.jsonl".into()), &recorded());
    let w = app.train.watch.as_ref().unwrap();
    assert_eq!(
        (w.events, w.ignored, w.malformed),
        (74, 2, 3),
        "{:?}",
        app.shared.log
    );
    assert_eq!(w.status, StreamStatus::Ended);
    assert!(w
        .last_malformed
        .as_ref()
        .unwrap()
        .starts_with("line 45: iter:"));
    // The iter with unknown fields was read; the truncated one (line 22) was not.
    assert_eq!(app.train.losses.points.len(), 60);
    assert_eq!(app.train.last.unwrap().iter, 60);
    assert_eq!(app.train.test_losses.len(), 3);
    assert_eq!(app.train.last_saved.as_deref(), Some("ck"));
    let screen = render(&app, 140, 45).join("\n");
    for needle in [
        "gptdash watch finished",
        "60 / 60",
        "3.1661", // the last test loss
        "gpt-nano",
        "runs/run.jsonl",
        "ended",
        "74 events, 2 other",
        "line 45: iter: missing field `iter`",
        "run finished: 60 steps",
        "o open checkpoint",
    ] {
        assert!(screen.contains(needle), "{needle:?} missing:\n{screen}");
    }
    let log: Vec<&String> = app.shared.log.iter().collect();
    assert!(
        log.iter()
            .any(|l| l.starts_with("stream line 11: not JSON")),
        "{log:?}"
    );
    // No start/stop keys while watching: the run is not this process's.
    assert!(!screen.contains("start/pause/resume"), "{screen}");
    let mut app = app;
    app.show_help = true;
    let help = render(&app, 120, 40).join("\n");
    assert!(help.contains("Train (gptdash watch"), "{help}");
    assert!(help.contains("Ctrl-O"), "{help}");
    assert!(!help.contains("start / pause / resume"), "{help}");
    // The tabs that need a model say how to get one while watching.
    app.show_help = false;
    app.update(Msg::Key(crossterm::event::KeyEvent::new(
        crossterm::event::KeyCode::Char('4'),
        crossterm::event::KeyModifiers::NONE,
    )));
    let inspect = render(&app, 120, 40).join("\n");
    assert!(
        inspect.contains("no model yet: Ctrl-O loads the watched run's latest checkpoint"),
        "{inspect}"
    );
    // Another failure that happens to begin with the same words is shown as it is: the
    // dashboard goes by the event's `no_model`, not by its text.
    app.update(Msg::Worker(Event::GenerateFailed {
        request: 0,
        error: "no model yet? the prompt is empty".into(),
        no_model: false,
    }));
    assert!(!app.shared.log.back().unwrap().contains("Ctrl-O"));
    app.update(Msg::Worker(Event::GenerateFailed {
        request: 0,
        error: gptdash::worker::NoModel.to_string(),
        no_model: true,
    }));
    assert!(app.shared.log.back().unwrap().contains("Ctrl-O"));
}

/// A run's events: start, 150 steps, an evaluation every 50, checkpoints.
fn run_events() -> Vec<Event> {
    let mut events = vec![Event::Start(RunStart::Train(Box::new(RunInfo::example(
        200,
    ))))];
    for i in 1..=150u64 {
        events.push(Event::Iter(StepMetrics {
            iter: i,
            loss: 5.0 / (1.0 + i as f64 / 10.0) + 0.05 * ((i * 7) % 5) as f64,
            iter_ms: 20.0 + (i % 3) as f64,
            tokens_per_s: 9000.0 + i as f64,
            lr: 1e-3,
            grad_norm: 0.5,
            tokens: 200,
            gpu_mib: None,
        }));
        if i % 50 == 0 {
            events.push(Event::Eval {
                iter: i,
                test_loss: 1.0 + 10.0 / i as f64,
            });
            events.push(Event::Checkpoint {
                iter: i,
                path: "checkpoints/small".into(),
            });
        }
    }
    events
}

#[test]
fn watching_shows_the_same_chart_and_stats_as_the_live_run() {
    let events = run_events();
    let mut live = App::new(Settings::default());
    for e in &events {
        live.update(Msg::Worker(e.clone()));
    }
    // The same events as JSON lines, through the stream reader.
    let text: String = events.iter().map(|e| e.to_json() + "\n").collect();
    let watched = watch_text(&Source::Stdin, text.as_bytes());
    let (a, b) = (render(&live, 140, 45), render(&watched, 140, 45));
    // Chart and sparkline: the left column down to the log, cell for cell.
    let left = 140 - 38;
    let log = a.iter().position(|l| l.contains("┌ log")).unwrap();
    assert!(log > 30);
    for y in 1..log {
        let (la, lb): (String, String) = (
            a[y].chars().take(left).collect(),
            b[y].chars().take(left).collect(),
        );
        assert_eq!(la, lb, "row {y} differs");
    }
    // Stats: every line of the run's numbers and facts.
    let stats = |screen: &[String]| -> Vec<String> {
        screen
            .iter()
            .map(|l| l.chars().skip(left).collect::<String>())
            .filter(|l| {
                [
                    "step",
                    "loss",
                    "test loss",
                    "best test",
                    "ETA",
                    "ms/step",
                    "tokens/s",
                    "lr",
                    "grad norm",
                    "device",
                    "params",
                    "model",
                    "corpus ",
                ]
                .iter()
                .any(|k| l.trim_start_matches('│').starts_with(k))
            })
            .take(13) // the live run's "next run" section follows
            .collect()
    };
    let (sa, sb) = (stats(&a), stats(&b));
    assert_eq!(sa.len(), 13, "{sa:?}");
    assert_eq!(sa, sb);
    assert!(sa[0].contains("150 / 200"), "{sa:?}");
    // The gauge too.
    let gauge =
        |screen: &[String]| -> String { screen[screen.len() - 3].chars().skip(left).collect() };
    assert!(gauge(&a).contains("75%"));
    assert_eq!(gauge(&a), gauge(&b));
}

#[test]
fn another_trainers_stream_may_say_little() {
    let text = concat!(
        "{\"event\":\"start\",\"max_iters\":1000,\"preset\":\"nanoGPT gpt2\"}\n",
        "{\"event\":\"iter\",\"iter\":10,\"loss\":4.5}\n",
        "{\"event\":\"iter\",\"iter\":20,\"loss\":4.2,\"iter_ms\":300.0}\n",
    );
    let app = watch_text(&Source::Stdin, text.as_bytes());
    let screen = render(&app, 140, 45).join("\n");
    for needle in [
        "20 / 1000",
        "4.2000",
        "nanoGPT gpt2",
        "gptdash watch training",
        "ETA         4m54s",
    ] {
        assert!(screen.contains(needle), "{needle:?} missing:\n{screen}");
    }
    // Not reported: a dash, never NaN or 0.
    assert!(!screen.contains("NaN"), "{screen}");
    let stats_line = |k: &str| {
        screen
            .lines()
            .find(|l| l.contains(&format!("│{k}")))
            .unwrap()
            .to_string()
    };
    assert!(stats_line("lr ").contains("—"));
    assert!(stats_line("tokens/s").contains("—"));
    assert!(stats_line("device").contains("—"));
}

#[test]
fn ctrl_o_loads_the_checkpoint_the_stream_named_where_it_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("ck")).unwrap();
    let source = Source::File(d.join("run.jsonl"));
    // Nothing named yet.
    let mut app = watch_text(&source, b"");
    assert!(app.update(ctrl_o()).is_empty());
    assert!(app.shared.log.back().unwrap().contains("no checkpoint"));
    // Named relative to the trainer's folder, found beside the followed file.
    let line = "{\"event\":\"checkpoint\",\"iter\":30,\"path\":\"ck\"}";
    let Some(parsed) = watch::parse_line(line, 1) else {
        panic!()
    };
    app.update(Msg::Stream(StreamMsg::Line(parsed)));
    assert!(app.shared.log.back().unwrap().contains("Ctrl-O loads it"));
    assert_eq!(app.update(ctrl_o()), vec![Command::Load(d.join("ck"))]);
    // On another machine: said, nothing sent.
    let line = "{\"event\":\"checkpoint\",\"iter\":60,\"path\":\"/remote/box/ck\"}";
    app.update(Msg::Stream(StreamMsg::Line(
        watch::parse_line(line, 2).unwrap(),
    )));
    assert!(app
        .shared
        .log
        .back()
        .unwrap()
        .contains("not on this machine"));
    assert!(app.update(ctrl_o()).is_empty());
    assert!(app.shared.log.back().unwrap().contains("copy it here"));
    // Malformed lines after the fifth are counted, not logged.
    for n in 0..8 {
        app.update(Msg::Stream(StreamMsg::Line(Parsed::Malformed {
            line: 10 + n,
            error: "not JSON".into(),
        })));
    }
    let logged = app
        .shared
        .log
        .iter()
        .filter(|l| l.starts_with("stream line"))
        .count();
    assert_eq!(logged, 5);
    assert_eq!(app.train.watch.as_ref().unwrap().malformed, 8);
}

#[test]
fn watch_without_a_terminal_or_a_source_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    common::expect_error(
        dir.path(),
        &["watch", "run.jsonl"],
        &["the dashboard needs a terminal"],
    );
    // A folder is not a stream: the error says which file to give.
    std::fs::create_dir(dir.path().join("run")).unwrap();
    std::fs::write(dir.path().join("run/events.jsonl"), "").unwrap();
    common::expect_error(
        dir.path(),
        &["watch", "run"],
        &["watch run: is a folder", "gptdash watch run/events.jsonl"],
    );
    let out = common::gptdash(dir.path(), &["watch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        common::stderr(&out).contains("FILE|-"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn a_fine_tuning_stream_shows_on_the_classify_tab() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = common::tiny_checkpoint(d);
    let data = common::write_sst2(d);
    let out = common::finetune_small(d, ["--checkpoint", &ck], &data, "3", "clf", true);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let mut app = watch_text(&Source::File(d.join("ft.jsonl")), &out.stdout);
    let w = app.train.watch.as_ref().unwrap();
    assert_eq!((w.malformed, w.ignored), (0, 0));
    assert_eq!(w.run.to_string(), "finished");
    assert!((1..=3).contains(&app.classify.epochs.len()));
    let done = app
        .classify
        .done
        .clone()
        .expect("the done event reached the Classify tab");
    // Ctrl-O loads the fine-tuned classifier the stream named.
    assert_eq!(app.train.last_saved.as_deref(), Some("clf"));
    assert_eq!(app.update(ctrl_o()), vec![Command::Load(d.join("clf"))]);
    app.update(Msg::Key(crossterm::event::KeyEvent::new(
        crossterm::event::KeyCode::Char('3'),
        crossterm::event::KeyModifiers::NONE,
    )));
    let screen = render(&app, 140, 45).join("\n");
    let best = format!("best epoch {}", done.best_epoch);
    assert!(screen.contains(&best), "{best} missing:\n{screen}");
    assert!(screen.contains("train 32 (50.0% pos.)"), "{screen}");
    assert!(screen.contains("gptdash watch finished"), "{screen}");
}
