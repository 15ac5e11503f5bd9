//! The Classify tab's base choice drives fine-tuning: the tab's keys (`b` cycles to
//! `gpt2`, `B` types a checkpoint folder) make the command, a real worker runs it. The
//! hub is a local stand-in (`HF_ENDPOINT`) serving the tiny GPT-2 fixture; nothing here
//! needs the internet. One test in its own binary: it sets the process's environment.
mod common;

use std::time::{Duration, Instant};

use common::{fixture, serve, tiny_checkpoint, word_tokenizer, write_word_sst2};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use gptdash::config::Settings;
use gptdash::protocol::{Command, Event, RunDone, RunStart};
use gptdash::tui::app::{App, Msg};
use gptdash::tui::tabs::Tab;
use gptdash::worker::{spawn_with_output, WorkerHandle};

fn key(app: &mut App, code: KeyCode) -> Vec<Command> {
    app.update(Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

/// Sends the commands, forwards the worker's events to the app until the run is done,
/// and returns the run's `start` facts (what it fine-tuned) and its `done` summary.
fn finetune(app: &mut App, w: &WorkerHandle, commands: Vec<Command>) -> (String, f64) {
    assert!(
        matches!(commands.as_slice(), [Command::StartFinetune(_)]),
        "{commands:?}"
    );
    for c in commands {
        w.commands.send(c).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut model = None;
    while Instant::now() < deadline {
        let Ok(e) = w.events.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        app.update(Msg::Worker(e.clone()));
        match e {
            Event::Start(RunStart::Finetune(info)) => model = Some(info.model.clone()),
            Event::Done(RunDone::Finetune(d)) => {
                return (model.expect("a start before done"), d.val_acc);
            }
            Event::Error { message } => panic!("{message}"),
            _ => {}
        }
    }
    panic!(
        "no fine-tuning done within 120 s; log: {:?}",
        app.shared.log
    );
}

#[test]
fn the_classify_tabs_base_drives_fine_tuning_from_the_hub_and_from_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The tiny GPT-2 on the stand-in hub, under the id `gpt2` resolves to.
    let mut files = Vec::new();
    for f in ["config.json", "model.safetensors"] {
        files.push((
            format!("/openai-community/gpt2/resolve/main/{f}"),
            std::fs::read(fixture("gpt2-tiny-hub").join(f)).unwrap(),
        ));
    }
    files.push((
        "/openai-community/gpt2/resolve/main/tokenizer.json".into(),
        word_tokenizer(96).into_bytes(),
    ));
    let (endpoint, _server) = serve(files);
    std::env::set_var("HF_ENDPOINT", &endpoint);
    std::env::set_var("HF_HOME", d.join("hf"));
    std::env::remove_var("HF_HUB_OFFLINE");

    write_word_sst2(&d.join("train.tsv"));
    let mut settings = Settings::default();
    settings.finetune.sst2 = d.join("train.tsv").display().to_string();
    settings.finetune.samples = 24;
    settings.finetune.epochs = 1;
    settings.finetune.batch_size = 4;
    settings.train.threads = 1;

    let mut app = App::new(settings);
    key(&mut app, KeyCode::Char('3'));
    assert_eq!(app.tab, Tab::Classify);
    let w = spawn_with_output(d.join("out")).unwrap();

    // b: the model held → gpt2, fetched from the (local) hub.
    assert_eq!(app.shared.settings.finetune.base, "held");
    key(&mut app, KeyCode::Char('b'));
    assert_eq!(app.shared.settings.finetune.base, "gpt2");
    let commands = key(&mut app, KeyCode::Char('f'));
    let (model, acc) = finetune(&mut app, &w, commands);
    assert!(
        model.contains("models--openai-community--gpt2"),
        "fine-tuned {model}"
    );
    assert!((0.0..=1.0).contains(&acc));
    assert!(app
        .shared
        .log
        .iter()
        .any(|l| l.contains("gpt2 (Hugging Face hub)")));

    // B: a checkpoint folder typed into the tab.
    let ck = d.join(tiny_checkpoint(d));
    key(&mut app, KeyCode::Char('B'));
    for _ in 0.."checkpoints/".len() {
        key(&mut app, KeyCode::Backspace);
    }
    for c in ck.display().to_string().chars() {
        key(&mut app, KeyCode::Char(c));
    }
    assert!(key(&mut app, KeyCode::Enter).is_empty());
    assert_eq!(app.shared.settings.finetune.base, ck.display().to_string());
    let commands = key(&mut app, KeyCode::Char('f'));
    let (model, _) = finetune(&mut app, &w, commands);
    assert_eq!(model, ck.display().to_string());
    assert!(d.join("out/classifier-sst2/classifier.json").is_file());

    // A folder that is not there: an error event naming it, and the worker lives on.
    key(&mut app, KeyCode::Char('B'));
    for _ in 0..ck.display().to_string().len() {
        key(&mut app, KeyCode::Backspace);
    }
    for c in "/no/such/model".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    for c in key(&mut app, KeyCode::Char('f')) {
        w.commands.send(c).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no error for a missing base");
        if let Ok(Event::Error { message }) = w.events.recv_timeout(Duration::from_millis(100)) {
            assert!(message.contains("/no/such/model"), "{message}");
            break;
        }
    }
    w.shutdown();
}
