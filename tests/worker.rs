//! The worker protocol with a tiny model: commands in, the expected events out.
use std::time::{Duration, Instant};

use gptdash::config::FinetuneSettings;
use gptdash::config::Settings;
use gptdash::generate::GenerateOptions;
use gptdash::protocol::{Command, Event, RunDone, RunStart, WorkerState};
use gptdash::worker::{spawn, spawn_with, spawn_with_output, WorkerHandle};

fn tiny_settings(dir: &std::path::Path) -> Settings {
    let corpus = dir.join("tiny.txt");
    std::fs::write(
        &corpus,
        "The cat sat. The dog ran. A cat ran. A dog sat.\n".repeat(10),
    )
    .unwrap();
    let mut s = Settings::default();
    s.data.corpus = corpus.display().to_string();
    s.data.vocab_size = 300;
    s.data.cache = false; // never write to the user's cache from a test
    s.model.preset = "gpt-nano".into();
    s.model.block_size = 16;
    s.train.device = "cpu".into();
    s.train.batch_size = 4;
    s.train.max_iters = 1_000_000; // runs until stopped
    s.train.eval_interval = 1_000_000;
    s.train.threads = 1;
    s
}

/// Waits for the first event matching `want`, returning it and everything before it.
fn wait_for(w: &WorkerHandle, what: &str, want: impl Fn(&Event) -> bool) -> (Event, Vec<Event>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(e) = w.events.recv_timeout(Duration::from_millis(100)) {
            if want(&e) {
                return (e, seen);
            }
            seen.push(e);
        }
    }
    panic!("no {what} within 60 s; saw {seen:?}");
}

fn generate(request: u64) -> Command {
    Command::Generate {
        request,
        prompt: "The cat".into(),
        forced: vec![],
        options: GenerateOptions {
            max_new_tokens: 3,
            ..Default::default()
        },
    }
}

#[test]
fn start_steps_generate_while_training_pause_resume_stop_save() {
    let dir = tempfile::tempdir().unwrap();
    let w = spawn_with_output(dir.path().join("out")).unwrap();
    w.commands
        .send(Command::Start(Box::new(tiny_settings(dir.path()))))
        .unwrap();
    let (started, _) = wait_for(&w, "RunStarted", |e| {
        matches!(e, Event::Start(RunStart::Train(_)))
    });
    let Event::Start(RunStart::Train(info)) = started else {
        unreachable!()
    };
    assert_eq!(info.device, "cpu");
    assert!(info.params > 0 && info.train_examples > 0);
    wait_for(&w, "Training state", |e| {
        *e == Event::State {
            state: WorkerState::Training,
        }
    });
    let (first, _) = wait_for(&w, "a step", |e| matches!(e, Event::Iter(_)));
    let Event::Iter(first) = first else {
        unreachable!()
    };
    assert_eq!(first.iter, 1);

    // A generate request during training is answered within a step or so.
    w.commands.send(generate(7)).unwrap();
    let (answer, before) = wait_for(&w, "generation", |e| matches!(e, Event::Generated { .. }));
    let steps_before = before
        .iter()
        .filter(|e| matches!(e, Event::Iter(_)))
        .count();
    assert!(steps_before <= 2, "answered after {steps_before} steps");
    match answer {
        Event::Generated {
            request,
            generation,
            ..
        } => {
            assert_eq!(request, Some(7));
            assert_eq!(generation.tokens.len(), 3);
            assert_eq!(generation.tokens[0].top.len(), 6);
        }
        _ => unreachable!(),
    }

    // Pause really pauses: no step arrives while paused.
    w.commands.send(Command::Pause).unwrap();
    wait_for(&w, "Paused state", |e| {
        *e == Event::State {
            state: WorkerState::Paused,
        }
    });
    let quiet_until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < quiet_until {
        if let Ok(e) = w.events.recv_timeout(Duration::from_millis(50)) {
            assert!(
                !matches!(e, Event::Iter(_)),
                "a step arrived while paused: {e:?}"
            );
        }
    }
    // Generation works while paused, too.
    w.commands.send(generate(8)).unwrap();
    wait_for(&w, "generation while paused", |e| {
        matches!(
            e,
            Event::Generated {
                request: Some(8),
                ..
            }
        )
    });

    w.commands.send(Command::Resume).unwrap();
    wait_for(&w, "Training state again", |e| {
        *e == Event::State {
            state: WorkerState::Training,
        }
    });
    wait_for(&w, "a step after resume", |e| matches!(e, Event::Iter(_)));

    let ckpt = dir.path().join("ck");
    w.commands.send(Command::Save(Some(ckpt.clone()))).unwrap();
    let (saved, _) = wait_for(&w, "Saved", |e| matches!(e, Event::Checkpoint { .. }));
    assert!(matches!(saved, Event::Checkpoint { ref path, .. } if *path == ckpt));
    assert!(ckpt.join("model.safetensors").is_file());

    // Stop saves the run to its own folder (out/<corpus>-<date>-1, linked from
    // out/<corpus>) before it finishes.
    w.commands.send(Command::Stop).unwrap();
    let (stopped, _) = wait_for(&w, "Interrupted", |e| {
        matches!(e, Event::Interrupted { .. })
    });
    let Event::Interrupted { path, .. } = stopped else {
        unreachable!()
    };
    assert_eq!(
        path,
        dir.path()
            .join("out")
            .join(format!("tiny-{}-1", gptdash::output::today()))
    );
    assert!(path.join("optimizer.safetensors").is_file());
    assert!(gptdash::output::same_folder(
        &path,
        &dir.path().join("out/tiny")
    ));
    wait_for(&w, "Finished state", |e| {
        *e == Event::State {
            state: WorkerState::Finished,
        }
    });
    w.commands.send(generate(9)).unwrap();
    wait_for(&w, "generation after stop", |e| {
        matches!(
            e,
            Event::Generated {
                request: Some(9),
                ..
            }
        )
    });

    // Load the saved checkpoint and generate from it.
    w.commands.send(Command::Load(ckpt)).unwrap();
    wait_for(&w, "Loaded state", |e| {
        *e == Event::State {
            state: WorkerState::Loaded,
        }
    });
    w.commands.send(generate(10)).unwrap();
    wait_for(&w, "generation from a loaded checkpoint", |e| {
        matches!(
            e,
            Event::Generated {
                request: Some(10),
                ..
            }
        )
    });
    w.shutdown();
}

#[test]
fn errors_arrive_as_events_and_the_worker_survives() {
    let w = spawn().unwrap();
    w.commands.send(generate(1)).unwrap();
    let (e, _) = wait_for(&w, "GenerateFailed", |e| {
        matches!(e, Event::GenerateFailed { .. })
    });
    assert!(
        matches!(e, Event::GenerateFailed { request: 1, no_model: true, ref error } if error.contains("no model"))
    );

    let mut bad = Settings::default();
    bad.data.corpus = "/no/such/corpus.txt".into();
    bad.train.device = "cpu".into();
    w.commands.send(Command::Start(Box::new(bad))).unwrap();
    let (e, _) = wait_for(&w, "Error", |e| matches!(e, Event::Error { .. }));
    assert!(
        matches!(e, Event::Error { message: ref m } if m.contains("/no/such/corpus.txt")),
        "{e:?}"
    );

    w.commands.send(Command::Save(None)).unwrap();
    wait_for(
        &w,
        "Error for save without a model",
        |e| matches!(e, Event::Error { message: m } if m.contains("nothing to save")),
    );
    w.commands
        .send(Command::StartFinetune(Box::default()))
        .unwrap();
    wait_for(
        &w,
        "Error for fine-tuning",
        |e| matches!(e, Event::Error { message: m } if m.contains("no model to fine-tune")),
    );
    w.commands
        .send(Command::ClassifyText("fine".into()))
        .unwrap();
    wait_for(
        &w,
        "Error for classify",
        |e| matches!(e, Event::Error { message: m } if m.contains("no classifier yet")),
    );

    // Still alive: a good run starts.
    let dir = tempfile::tempdir().unwrap();
    w.commands
        .send(Command::Start(Box::new(tiny_settings(dir.path()))))
        .unwrap();
    wait_for(&w, "a step", |e| matches!(e, Event::Iter(_)));
    w.shutdown();
}

#[test]
fn fine_tunes_the_trained_model_live_and_classifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let w = spawn_with_output(d.join("out")).unwrap();
    let mut settings = tiny_settings(d);
    settings.train.max_iters = 20;
    w.commands.send(Command::Start(Box::new(settings))).unwrap();
    wait_for(&w, "Finished", |e| {
        *e == Event::State {
            state: WorkerState::Finished,
        }
    });

    let mut tsv = String::from("sentence\tlabel\n");
    for i in 0..30 {
        tsv.push_str(if i % 2 == 0 {
            "The cat sat. \t1\n"
        } else {
            "A dog ran. \t0\n"
        });
    }
    std::fs::write(d.join("train.tsv"), tsv).unwrap();
    let finetune = FinetuneSettings {
        sst2: d.join("train.tsv").display().to_string(),
        samples: 30,
        epochs: 2,
        batch_size: 4,
        learning_rate: 3e-3,
        ..Default::default()
    };
    w.commands
        .send(Command::StartFinetune(Box::new(finetune)))
        .unwrap();
    let (started, _) = wait_for(&w, "FinetuneStarted", |e| {
        matches!(e, Event::Start(RunStart::Finetune(_)))
    });
    let Event::Start(RunStart::Finetune(info)) = started else {
        unreachable!()
    };
    assert_eq!((info.train_examples, info.val_examples), (24, 6));
    assert_eq!(info.val_positive, 0.5);
    // Generation still answers while fine-tuning.
    w.commands.send(generate(3)).unwrap();
    let (_, before) = wait_for(&w, "FinetuneDone", |e| {
        matches!(e, Event::Done(RunDone::Finetune(_)))
    });
    assert!(
        before.iter().any(|e| matches!(
            e,
            Event::Generated {
                request: Some(3),
                ..
            }
        )),
        "{before:?}"
    );
    assert_eq!(
        before
            .iter()
            .filter(|e| matches!(e, Event::Epoch(_)))
            .count(),
        2
    );
    assert!(d.join("out/classifier-sst2/classifier.json").is_file());
    w.commands
        .send(Command::ClassifyText("The cat sat.".into()))
        .unwrap();
    let (c, _) = wait_for(&w, "Classified", |e| matches!(e, Event::Classified { .. }));
    assert!(matches!(c, Event::Classified { p_positive, .. } if (0.0..=1.0).contains(&p_positive)));
    w.shutdown();
}

#[test]
fn a_diverging_run_ends_and_drops_its_model_as_headless_runs_do() {
    let dir = tempfile::tempdir().unwrap();
    let w = spawn_with_output(dir.path().join("out")).unwrap();
    let mut settings = tiny_settings(dir.path());
    settings.train.learning_rate = 1e30;
    settings.train.min_lr = 1e29;
    w.commands.send(Command::Start(Box::new(settings))).unwrap();
    let (diverged, before) = wait_for(&w, "Diverged", |e| matches!(e, Event::Diverged { .. }));
    let Event::Diverged { iter, loss, .. } = diverged else {
        unreachable!()
    };
    assert!(!loss.is_finite());
    let steps = before
        .iter()
        .filter(|e| matches!(e, Event::Iter(_)))
        .count() as u64;
    assert_eq!(steps, iter, "the run stops at the step that diverged");
    wait_for(
        &w,
        "the error",
        |e| matches!(e, Event::Error { message } if message.contains("lower learning rate")),
    );
    wait_for(&w, "Idle", |e| {
        *e == Event::State {
            state: WorkerState::Idle,
        }
    });
    // The output folder was locked (and so created) at the start; no checkpoint in it.
    assert!(
        !dir.path().join("out/tiny").exists(),
        "nothing of the broken run is saved"
    );
    w.commands.send(generate(1)).unwrap();
    wait_for(
        &w,
        "no model",
        |e| matches!(e, Event::GenerateFailed { error, .. } if error.contains("no model")),
    );
    w.shutdown();
}

fn inspected(w: &WorkerHandle, request: u64) -> gptdash::protocol::InspectReport {
    let (event, _) = wait_for(w, "an inspection", |e| match e {
        Event::Inspected(r) => r.request == Some(request),
        Event::InspectFailed { request: r, .. } => *r == request,
        _ => false,
    });
    match event {
        Event::Inspected(r) => *r,
        other => panic!("inspection {request} failed: {other:?}"),
    }
}

#[test]
fn inspects_while_training_and_compares_with_pinned_weights() {
    use gptdash::protocol::InspectText;
    let dir = tempfile::tempdir().unwrap();
    // Nothing held yet: a clear failure, not a dead worker.
    let idle = spawn_with_output(dir.path().join("idle")).unwrap();
    idle.commands
        .send(Command::Inspect {
            request: 1,
            text: InspectText::Corpus(0),
            ask: Default::default(),
        })
        .unwrap();
    let (failed, _) = wait_for(&idle, "a failure", |e| {
        matches!(e, Event::InspectFailed { .. })
    });
    assert!(format!("{failed:?}").contains("no model yet"), "{failed:?}");
    idle.shutdown();

    let w = spawn_with_output(dir.path().join("out")).unwrap();
    let mut settings = tiny_settings(dir.path());
    settings.train.learning_rate = 3e-3;
    w.commands.send(Command::Start(Box::new(settings))).unwrap();
    wait_for(&w, "a step", |e| matches!(e, Event::Iter(_)));
    // A test example of the corpus, with the weights of the step reached.
    w.commands
        .send(Command::Inspect {
            request: 5,
            text: InspectText::Corpus(0),
            ask: Default::default(),
        })
        .unwrap();
    let first = inspected(&w, 5);
    let n = first.tokens.len();
    assert!(n >= 4, "{:?}", first.tokens);
    assert!(!first.text.is_empty() && first.step.unwrap() >= 1);
    assert_eq!(first.attention.len(), 3, "gpt-nano: 3 layers");
    assert_eq!(first.attention[0].len(), 3, "3 heads");
    assert_eq!(first.attention[2][1].len(), n);
    assert_eq!(first.lens.len(), 3);
    assert_eq!(first.token_loss.len(), n - 1);
    assert!(first.pinned.is_none());

    // Pin, train on, inspect again: the pinned losses are those of the pinned step.
    w.commands.send(Command::Pin(true)).unwrap();
    wait_for(
        &w,
        "the pin",
        |e| matches!(e, Event::Log { message } if message.starts_with("pinned the weights at step")),
    );
    let typed = InspectText::Typed("The cat sat. The dog ran.".into());
    w.commands
        .send(Command::Inspect {
            request: 6,
            text: typed.clone(),
            ask: Default::default(),
        })
        .unwrap();
    let at_pin = inspected(&w, 6);
    let pinned = at_pin.pinned.clone().expect("pinned losses");
    let pin_step = pinned.step.unwrap();
    assert_eq!(pinned.token_loss.len(), at_pin.token_loss.len());
    wait_for(
        &w,
        "30 more steps",
        |e| matches!(e, Event::Iter(m) if m.iter >= pin_step + 30),
    );
    w.commands
        .send(Command::Inspect {
            request: 7,
            text: typed,
            ask: Default::default(),
        })
        .unwrap();
    let later = inspected(&w, 7);
    let pinned_later = later.pinned.clone().expect("still pinned");
    assert_eq!(pinned_later.step, Some(pin_step));
    for (a, b) in pinned_later.token_loss.iter().zip(&pinned.token_loss) {
        assert!((a - b).abs() < 1e-5, "the pinned weights moved: {a} vs {b}");
    }
    let (now, then): (f64, f64) = (
        later.token_loss.iter().sum(),
        pinned_later.token_loss.iter().sum(),
    );
    assert!(
        now < then,
        "30 steps later the text costs {now} vs {then} at the pin"
    );

    // Everything the causal views ask for, in one request while training.
    use gptdash::protocol::{AblationAsk, InspectAsk, PatchAsk};
    w.commands
        .send(Command::Inspect {
            request: 10,
            text: InspectText::Typed("The cat sat. The dog ran.".into()),
            ask: InspectAsk {
                ablation: AblationAsk {
                    heads: vec![(0, 1)],
                    mlps: vec![2],
                    mean: false,
                },
                ablation_map: true,
                attribution: true,
                dla_token: None,
                patch: Some(PatchAsk {
                    corrupted: "The dog sat. The cat ran.".into(),
                    answer: None,
                    wrong: None,
                }),
                anatomy: Some(0),
            },
        })
        .unwrap();
    let probed = inspected(&w, 10);
    let removed = probed.ablation.as_ref().expect("the removal");
    assert_eq!(
        (removed.heads.as_slice(), removed.mlps.as_slice()),
        (&["1.2".to_string()][..], &[3][..])
    );
    assert_ne!(removed.base_token_loss, probed.token_loss);
    assert_eq!(removed.base_top.len(), probed.tokens.len());
    assert_eq!(probed.top[0].len(), 6);
    let map = probed.ablation_map.as_ref().expect("the ablation map");
    assert_eq!(
        (map.heads.len(), map.heads[0].len(), map.mlps.len()),
        (3, 3, 3)
    );
    assert_eq!(probed.attribution.len(), probed.tokens.len());
    for a in &probed.attribution {
        assert!((a.sum - a.logit).abs() < 1e-4, "{a:?}");
    }
    let patching = probed.patching.as_ref().expect("patching");
    assert_eq!(patching.resid.len(), 3);
    assert_eq!(patching.resid[0].len(), probed.tokens.len());
    assert_ne!(patching.answer, patching.wrong);
    let anatomy = probed.anatomy.as_ref().expect("the anatomy");
    assert!(anatomy.params > 0 && anatomy.rows.len() > 20);
    assert!(anatomy
        .rows
        .iter()
        .all(|r| r.shape.is_empty() || r.init.is_some()));
    let pair = anatomy.pair.as_ref().expect("a training pair");
    assert_eq!(pair.x.len(), pair.y.len());
    assert_eq!(pair.y[0].as_deref(), Some(pair.x[1].as_str()));

    // A corrupted text of another length: the pass still comes, with why no patching.
    w.commands
        .send(Command::Inspect {
            request: 11,
            text: InspectText::Typed("The cat sat.".into()),
            ask: InspectAsk {
                patch: Some(PatchAsk {
                    corrupted: "The big dog sat down.".into(),
                    answer: None,
                    wrong: None,
                }),
                ..InspectAsk::default()
            },
        })
        .unwrap();
    let short = inspected(&w, 11);
    assert!(short.patching.is_none() && !short.token_loss.is_empty());
    let why = short.patch_error.clone().unwrap_or_default();
    assert!(why.starts_with("the corrupted text: it is"), "{why}");

    // Too long for the block: a failure naming it; unpinning is said.
    w.commands
        .send(Command::Inspect {
            request: 8,
            text: InspectText::Typed("The cat sat. ".repeat(20)),
            ask: Default::default(),
        })
        .unwrap();
    let (failed, _) = wait_for(&w, "a failure", |e| {
        matches!(e, Event::InspectFailed { request: 8, .. })
    });
    assert!(format!("{failed:?}").contains("block size"), "{failed:?}");
    w.commands.send(Command::Pin(false)).unwrap();
    wait_for(
        &w,
        "unpinned",
        |e| matches!(e, Event::Log { message } if message == "unpinned the weights"),
    );
    w.commands
        .send(Command::Inspect {
            request: 9,
            text: InspectText::Corpus(1),
            ask: Default::default(),
        })
        .unwrap();
    assert!(inspected(&w, 9).pinned.is_none());
    w.shutdown();
}

#[test]
fn fine_tuning_asked_for_while_training_keeps_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let w = spawn_with_output(d.join("out")).unwrap();
    w.commands
        .send(Command::Start(Box::new(tiny_settings(d))))
        .unwrap();
    let (started, _) = wait_for(&w, "TrainStarted", |e| {
        matches!(e, Event::Start(RunStart::Train(_)))
    });
    let Event::Start(RunStart::Train(info)) = started else {
        unreachable!()
    };
    wait_for(&w, "a step", |e| matches!(e, Event::Iter(_)));
    let mut tsv = String::from("sentence\tlabel\n");
    for i in 0..30 {
        tsv.push_str(if i % 2 == 0 {
            "The cat sat.\t1\n"
        } else {
            "A dog ran.\t0\n"
        });
    }
    std::fs::write(d.join("train.tsv"), tsv).unwrap();
    let finetune = FinetuneSettings {
        sst2: d.join("train.tsv").display().to_string(),
        samples: 30,
        epochs: 1,
        batch_size: 4,
        ..Default::default()
    };
    // Training, then paused: refused with what to do; the run goes on.
    for pause in [false, true] {
        if pause {
            w.commands.send(Command::Pause).unwrap();
            wait_for(&w, "Paused", |e| {
                *e == Event::State {
                    state: WorkerState::Paused,
                }
            });
        }
        w.commands
            .send(Command::StartFinetune(Box::new(finetune.clone())))
            .unwrap();
        let (e, _) = wait_for(&w, "the refusal", |e| matches!(e, Event::Error { .. }));
        let Event::Error { message } = e else {
            unreachable!()
        };
        assert!(
            message.contains("still training") && message.contains("press x"),
            "{message}"
        );
        if !pause {
            // The refusal left the run going.
            wait_for(&w, "training on", |e| matches!(e, Event::Iter(_)));
        }
    }
    w.commands.send(Command::Resume).unwrap();
    wait_for(&w, "training again", |e| matches!(e, Event::Iter(_)));
    // Stopped (and so saved), the run's checkpoint keeps its optimizer state while a
    // copy of the model is fine-tuned.
    w.commands.send(Command::Stop).unwrap();
    let (stopped, _) = wait_for(&w, "Interrupted", |e| {
        matches!(e, Event::Interrupted { .. })
    });
    let Event::Interrupted { path, iter } = stopped else {
        unreachable!()
    };
    assert_eq!(path, info.out);
    let state_before = std::fs::read(path.join("train_state.json")).unwrap();
    w.commands
        .send(Command::StartFinetune(Box::new(finetune)))
        .unwrap();
    let (_, before) = wait_for(&w, "FinetuneDone", |e| {
        matches!(e, Event::Done(RunDone::Finetune(_)))
    });
    assert!(
        !before.iter().any(|e| matches!(e, Event::Error { .. })),
        "{before:?}"
    );
    assert_eq!(
        std::fs::read(path.join("train_state.json")).unwrap(),
        state_before
    );
    assert!(path.join("optimizer.safetensors").is_file());
    let resumed = gptdash::train::lm::LmTrainer::resume(&path, |_| {}).unwrap();
    assert_eq!(resumed.step, iter);
    w.shutdown();
}

#[test]
fn the_dashboard_loads_models_on_train_device() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Train and save a tiny model, then ask a worker set to a device this machine lacks
    // (no machine has a hundredth GPU) to load it: the error names train.device.
    let w = spawn_with_output(d.join("out")).unwrap();
    let mut settings = tiny_settings(d);
    settings.train.max_iters = 2;
    w.commands.send(Command::Start(Box::new(settings))).unwrap();
    let (done, _) = wait_for(&w, "Done", |e| matches!(e, Event::Done(RunDone::Train(_))));
    let Event::Done(RunDone::Train(summary)) = done else {
        unreachable!()
    };
    w.shutdown();
    let w = spawn_with(d.join("out2"), "cuda:99".into()).unwrap();
    w.commands.send(Command::Load(summary.checkpoint)).unwrap();
    let (e, _) = wait_for(&w, "the refusal", |e| matches!(e, Event::Error { .. }));
    let Event::Error { message } = e else {
        unreachable!()
    };
    assert!(
        message.contains("train.device") && message.contains("cuda:99"),
        "{message}"
    );
    w.shutdown();
}

#[test]
fn a_run_keeps_its_history_opening_it_brings_the_curves_back_and_a_watched_stream_saves_as_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    let w = spawn_with_output(out.clone()).unwrap();
    let mut s = tiny_settings(dir.path());
    s.train.max_iters = 12;
    s.train.eval_interval = 5;
    w.commands.send(Command::Start(Box::new(s))).unwrap();
    let (done, _) = wait_for(&w, "done", |e| matches!(e, Event::Done(_)));
    let Event::Done(RunDone::Train(summary)) = done else {
        unreachable!()
    };
    let history = summary.checkpoint.join("events.jsonl");
    assert!(history.is_file(), "{}", history.display());
    // Opened again: its history comes back with it.
    w.commands
        .send(Command::Load(summary.checkpoint.clone()))
        .unwrap();
    let (restored, _) = wait_for(&w, "restored", |e| matches!(e, Event::Restored(_)));
    let Event::Restored(run) = restored else {
        unreachable!()
    };
    assert_eq!(run.train.len(), 12);
    assert_eq!(run.test.len(), 3, "{:?}", run.test); // steps 5, 10, 12
    assert!(matches!(run.start, Some(RunStart::Train(_))));
    // A watched stream's events become a run of their own.
    let events: Vec<Event> = std::fs::read_to_string(&history)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    w.commands.send(Command::SaveRun(events.clone())).unwrap();
    let (said, _) = wait_for(
        &w,
        "saved",
        |e| matches!(e, Event::Log { message } if message.contains("saved the watched stream")),
    );
    let Event::Log { message } = said else {
        unreachable!()
    };
    let saved = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("watched-")
        })
        .unwrap_or_else(|| panic!("{message}"));
    let copy = std::fs::read_to_string(saved.join("events.jsonl")).unwrap();
    assert_eq!(copy.lines().count(), events.len());
    w.shutdown();
}
