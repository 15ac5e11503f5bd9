//! The dashboard driven by keys and worker events, as `update` sees them.
use super::*;
use crate::generate::{Candidate, GeneratedToken, Generation};
use crate::protocol::{
    EpochMetrics, Evaluation, FinetuneInfo, FinetuneSummary, RunDone, RunInfo, RunStart,
    StepMetrics, WorkerState,
};
use crate::tui::tabs::train::{LossHistory, MAX_LOSS_POINTS};
use crossterm::event::KeyCode;
use crossterm::event::KeyEventState;

fn key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ch(c: char) -> Msg {
    key(KeyCode::Char(c))
}

fn app() -> App {
    App::new(Settings::default())
}

fn metrics(iter: u64, loss: f64) -> StepMetrics {
    StepMetrics {
        iter,
        loss,
        iter_ms: 10.0,
        tokens_per_s: 1000.0,
        lr: 1e-3,
        grad_norm: 1.0,
        tokens: 10,
        gpu_mib: None,
    }
}

fn generation(n: usize) -> Generation {
    let tokens = (0..n)
        .map(|i| GeneratedToken {
            id: i as u32 * 10,
            text: format!(" t{i}"),
            prob: 0.5,
            top: (0..6)
                .map(|r| Candidate {
                    id: i as u32 * 10 + r,
                    text: format!(" a{r}"),
                    prob: 0.5 / (r + 1) as f64,
                })
                .collect(),
            rest: 0.0,
            forced: false,
        })
        .collect();
    Generation {
        prompt: "He".into(),
        read_as: None,
        text: "He ...".into(),
        tokens,
        mean_logprob: -0.69,
        perplexity: 2.0,
    }
}

#[test]
fn tabs_switch_by_number_tab_and_backtab() {
    let mut a = app();
    a.update(ch('3'));
    assert_eq!(a.tab, Tab::Classify);
    a.update(key(KeyCode::Tab));
    assert_eq!(a.tab, Tab::Inspect);
    a.update(key(KeyCode::Tab));
    assert_eq!(a.tab, Tab::Runs);
    a.update(key(KeyCode::Tab));
    assert_eq!(a.tab, Tab::Train);
    a.update(key(KeyCode::BackTab));
    assert_eq!(a.tab, Tab::Runs);
    a.update(ch('5'));
    assert_eq!(a.tab, Tab::Runs);
    a.update(ch('1'));
    assert_eq!(a.tab, Tab::Train);
}

#[test]
fn q_and_ctrl_c_quit_and_stop_the_worker() {
    let mut a = app();
    assert_eq!(a.update(ch('q')), vec![Command::Shutdown]);
    assert!(a.quit);
    let mut b = app();
    b.tab = Tab::Generate; // typing: q is a letter, Ctrl-C still quits
    b.update(ch('q'));
    assert!(!b.quit);
    assert_eq!(b.generate.prompt.text(), "q");
    b.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('c'),
        KeyModifiers::CONTROL,
    )));
    assert!(b.quit);
}

#[test]
fn key_releases_are_ignored() {
    let mut a = app();
    let release = KeyEvent {
        code: KeyCode::Char('3'),
        modifiers: KeyModifiers::NONE,
        kind: KeyEventKind::Release,
        state: KeyEventState::NONE,
    };
    a.update(Msg::Key(release));
    assert_eq!(a.tab, Tab::Train);
}

#[test]
fn help_overlay_opens_and_any_key_closes_it() {
    let mut a = app();
    a.update(ch('?'));
    assert!(a.show_help);
    a.update(ch('3'));
    assert!(!a.show_help);
    assert_eq!(a.tab, Tab::Train, "the closing key does nothing else");
}

#[test]
fn space_starts_pauses_and_resumes() {
    let mut a = app();
    let cmds = a.update(ch(' '));
    assert!(matches!(cmds.as_slice(), [Command::Start(_)]));
    a.update(Msg::Worker(Event::State {
        state: WorkerState::Training,
    }));
    assert_eq!(a.update(ch(' ')), vec![Command::Pause]);
    a.update(Msg::Worker(Event::State {
        state: WorkerState::Paused,
    }));
    assert_eq!(a.update(ch(' ')), vec![Command::Resume]);
    assert_eq!(a.update(ch('x')), vec![Command::Stop]);
    assert_eq!(a.update(ch('s')), vec![Command::Save(None)]);
}

#[test]
fn corpus_and_preset_choices_feed_the_next_run() {
    let mut a = app();
    a.update(ch('c'));
    assert!(a.typing());
    for _ in 0..5 {
        a.update(key(KeyCode::Backspace));
    }
    for c in "my.txt".chars() {
        a.update(ch(c));
    }
    a.update(key(KeyCode::Enter));
    assert_eq!(a.shared.settings.data.corpus, "my.txt");
    a.update(ch('p'));
    assert_eq!(a.shared.settings.model.preset, "gpt-mini");
    let cmds = a.update(ch(' '));
    match &cmds[0] {
        Command::Start(s) => {
            assert_eq!(s.data.corpus, "my.txt");
            assert_eq!(s.model.preset, "gpt-mini");
        }
        other => panic!("{other:?}"),
    }
    a.update(ch('c'));
    a.update(key(KeyCode::Esc));
    assert!(!a.typing());
}

#[test]
fn o_loads_a_checkpoint() {
    let mut a = app();
    a.update(ch('o'));
    assert!(a.typing());
    assert_eq!(
        a.update(key(KeyCode::Enter)),
        vec![Command::Load("checkpoints/small".into())]
    );
    assert!(!a.typing());
}

#[test]
fn chart_toggles() {
    let mut a = app();
    a.update(ch('l'));
    assert!(a.train.log_scale);
    a.update(ch('e'));
    assert!(a.train.smoothing > 0.0);
    a.update(ch('e'));
    assert_eq!(a.train.smoothing, 0.0);
}

#[test]
fn worker_events_update_the_train_state() {
    let mut a = app();
    a.update(Msg::Worker(Event::Start(RunStart::Train(Box::new(
        RunInfo::example(100),
    )))));
    for i in 1..=3 {
        a.update(Msg::Worker(Event::Iter(metrics(i, 3.0 - i as f64 * 0.5))));
    }
    assert_eq!(a.train.losses.points.len(), 3);
    assert_eq!(a.train.recent.len(), 3);
    assert_eq!(a.train.last.unwrap().iter, 3);
    assert!((a.train.eta_secs().unwrap() - 97.0 * 10.0 / 1e3).abs() < 1e-9);
    a.update(Msg::Worker(Event::Eval {
        iter: 3,
        test_loss: 1.7,
    }));
    a.update(Msg::Worker(Event::Eval {
        iter: 6,
        test_loss: 1.9,
    }));
    assert_eq!(a.train.best_test, Some(1.7));
    assert_eq!(a.train.test_losses.len(), 2);
    a.update(Msg::Worker(Event::Checkpoint {
        iter: 3,
        path: "checkpoints/small".into(),
    }));
    assert_eq!(a.train.last_saved.as_deref(), Some("checkpoints/small"));
    a.update(Msg::Worker(Event::State {
        state: WorkerState::Finished,
    }));
    assert_eq!(a.shared.state, WorkerState::Finished);
    a.update(Msg::Worker(Event::log("hello")));
    a.update(Msg::Worker(Event::error("bad")));
    assert!(
        a.shared.log.iter().any(|l| l == "hello") && a.shared.log.iter().any(|l| l == "error: bad")
    );
}

#[test]
fn loss_history_stays_bounded() {
    let mut h = LossHistory::default();
    for i in 0..(MAX_LOSS_POINTS + 10) {
        h.push(i as f64, 1.0);
    }
    assert!(h.points.len() <= MAX_LOSS_POINTS);
    assert!(h.points.last().unwrap().0 > MAX_LOSS_POINTS as f64 - 2.0);
}

#[test]
fn prompt_editing_history_and_generate_request() {
    let mut a = app();
    a.tab = Tab::Generate;
    for c in "He nd I".chars() {
        a.update(ch(c));
    }
    for _ in 0..4 {
        a.update(key(KeyCode::Left));
    }
    a.update(ch('a'));
    assert_eq!(a.generate.prompt.text(), "He and I");
    a.update(key(KeyCode::End));
    a.update(key(KeyCode::Backspace));
    a.update(ch('I'));
    let cmds = a.update(key(KeyCode::Enter));
    match cmds.as_slice() {
        [Command::Generate {
            request,
            prompt,
            forced,
            options,
        }] => {
            assert_eq!(prompt, "He and I");
            assert!(forced.is_empty());
            assert_eq!(options.grid, 6);
            assert_eq!(a.generate.pending, Some(*request));
        }
        other => panic!("{other:?}"),
    }
    a.generate.prompt.set("");
    a.update(key(KeyCode::Up));
    assert_eq!(a.generate.prompt.text(), "He and I");
    a.update(key(KeyCode::Down));
    assert_eq!(a.generate.prompt.text(), "");
    assert!(a.update(key(KeyCode::Enter)).is_empty());
    assert!(a.generate.error.is_some());
}

#[test]
fn results_answer_only_their_request_and_errors_show() {
    let mut a = app();
    a.generate.pending = Some(2);
    a.update(Msg::Worker(Event::Generated {
        request: Some(1),
        generation: generation(3),
    }));
    assert!(a.generate.result.is_none(), "a stale answer is dropped");
    a.update(Msg::Worker(Event::Generated {
        request: Some(2),
        generation: generation(3),
    }));
    assert_eq!(a.generate.result.as_ref().unwrap().tokens.len(), 3);
    a.generate.pending = Some(3);
    a.update(Msg::Worker(Event::GenerateFailed {
        request: 3,
        error: "no model yet".into(),
        no_model: true,
    }));
    assert_eq!(a.generate.error.as_deref(), Some("no model yet"));
    assert_eq!(a.generate.pending, None);
}

#[test]
fn grid_cursor_options_and_branching() {
    let mut a = app();
    a.tab = Tab::Generate;
    a.generate.editing = false;
    a.generate.result = Some(generation(4));
    a.update(key(KeyCode::Right));
    a.update(key(KeyCode::Right));
    a.update(key(KeyCode::Down));
    assert_eq!((a.generate.col, a.generate.row), (2, 1));
    for _ in 0..10 {
        a.update(key(KeyCode::Right));
        a.update(key(KeyCode::Down));
    }
    assert_eq!((a.generate.col, a.generate.row), (3, 5));
    a.update(key(KeyCode::Left));
    let cmds = a.update(key(KeyCode::Enter));
    match cmds.as_slice() {
        [Command::Generate { forced, prompt, .. }] => {
            assert_eq!(prompt, "He");
            assert_eq!(forced, &vec![0, 10, 25]); // tokens 0 and 1, then rank 6 of step 3
        }
        other => panic!("{other:?}"),
    }
    let before = a.generate.options.clone();
    a.update(ch('T'));
    a.update(ch('N'));
    a.update(ch('m'));
    a.update(ch('K'));
    a.update(ch('r'));
    let o = &a.generate.options;
    assert!((o.temperature - (before.temperature + 0.1)).abs() < 1e-9);
    assert_eq!(o.max_new_tokens, before.max_new_tokens + 1);
    assert_eq!(o.sample, !before.sample);
    assert_eq!(o.top_k, Some(1));
    assert_eq!(o.seed, before.seed + 1);
    a.update(ch('k'));
    assert_eq!(a.generate.options.top_k, None);
    a.update(ch('i'));
    assert!(a.generate.editing);
}

#[test]
fn classify_tab_fine_tunes_and_classifies() {
    let mut a = app();
    a.update(ch('3'));
    assert_eq!(
        a.update(ch('f')),
        vec![Command::StartFinetune(Box::new(
            a.shared.settings.finetune.clone()
        ))]
    );
    a.update(Msg::Worker(Event::error("needs SST-2")));
    assert_eq!(a.classify.message.as_deref(), Some("needs SST-2"));
    a.update(Msg::Worker(Event::Start(RunStart::Finetune(Box::new(
        FinetuneInfo {
            device: "cpu".into(),
            threads: 2,
            model: "checkpoints/small".into(),
            params: 1000,
            data: "train.tsv".into(),
            samples: 1200,
            train_examples: 960,
            val_examples: 240,
            train_positive: 0.55,
            val_positive: 0.55,
            epochs: 10,
            out: "checkpoints/classifier-sst2-20261201-1".into(),
        },
    )))));
    assert!(a.classify.message.is_none());
    let m = EpochMetrics {
        epoch: 1,
        train_loss: 0.6,
        train_acc: 0.6,
        val_loss: 0.55,
        val_acc: 0.7,
        secs: 3.0,
    };
    a.update(Msg::Worker(Event::Epoch(m)));
    assert_eq!(a.classify.epochs, vec![m]);
    let val = Evaluation {
        loss: 0.5,
        acc: 0.8,
        confusion: [[90, 18], [30, 102]],
    };
    a.update(Msg::Worker(Event::Done(RunDone::Finetune(
        FinetuneSummary {
            best_epoch: 1,
            val_acc: val.acc,
            val_loss: val.loss,
            confusion: val.confusion,
            eval_acc: None,
            checkpoint: "checkpoints/classifier-sst2".into(),
            ..Default::default()
        },
    ))));
    assert_eq!(a.classify.done.as_ref().map(|d| d.best_epoch), Some(1));
    a.update(Msg::Worker(Event::State {
        state: WorkerState::FineTuning,
    }));
    assert_eq!(a.update(ch(' ')), vec![Command::Pause]);
    assert_eq!(a.update(ch('x')), vec![Command::Stop]);
    a.update(ch('i'));
    assert!(a.typing());
    for c in "great fun".chars() {
        a.update(ch(c));
    }
    assert_eq!(
        a.update(key(KeyCode::Enter)),
        vec![Command::ClassifyText("great fun".into())]
    );
    a.update(Msg::Worker(Event::Classified {
        text: "great fun".into(),
        label: "positive".into(),
        p_positive: 0.9,
        read_as: None,
    }));
    assert_eq!(a.classify.last, Some(("great fun".into(), 0.9)));
    a.update(key(KeyCode::Esc));
    assert!(!a.typing());
}

#[test]
fn quitting_during_a_run_asks_first_and_keeps_the_run() {
    use crate::protocol::WorkerState;
    let mut a = app();
    // Nothing running: q quits at once.
    assert_eq!(a.update(ch('q')), vec![Command::Shutdown]);
    assert!(a.quit);

    let mut a = app();
    a.update(Msg::Worker(Event::State {
        state: WorkerState::Training,
    }));
    assert!(a.update(ch('q')).is_empty(), "q asks first");
    assert!(a.confirm_quit && !a.quit);
    // Any other key carries on.
    a.update(ch('l'));
    assert!(!a.confirm_quit && !a.quit);
    a.update(ch('q'));
    assert_eq!(a.update(ch('q')), vec![Command::Stop, Command::Shutdown]);
    assert!(a.quit);

    // Ctrl-C stops and keeps the run without asking, paused or fine-tuning too.
    for state in [WorkerState::Paused, WorkerState::FineTuning] {
        let mut a = app();
        a.update(Msg::Worker(Event::State { state }));
        let ctrl_c = Msg::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert_eq!(a.update(ctrl_c), vec![Command::Stop, Command::Shutdown]);
    }
}

#[test]
fn every_text_field_edits_with_the_same_keys_and_keeps_a_history() {
    fn with_ctrl(code: KeyCode) -> Msg {
        Msg::Key(KeyEvent::new(code, KeyModifiers::CONTROL))
    }
    type Read = fn(&App) -> String;
    // (tab, the key that opens the field, the field's text)
    let fields: [(Tab, Option<char>, Read); 6] = [
        (Tab::Generate, None, |a| a.generate.prompt.text().into()),
        (Tab::Train, Some('c'), |a| {
            a.train.corpus_input.text().into()
        }),
        (Tab::Train, Some('o'), |a| {
            a.train.checkpoint_input.text().into()
        }),
        (Tab::Classify, Some('i'), |a| a.classify.input.text().into()),
        (Tab::Classify, Some('B'), |a| {
            a.classify.base_input.text().into()
        }),
        (Tab::Inspect, Some('i'), |a| a.inspect.input.text().into()),
    ];
    for (tab, open, read) in fields {
        let mut a = app();
        a.tab = tab;
        let type_in = |a: &mut App, text: &str| {
            if let Some(k) = open {
                a.update(ch(k));
            }
            a.update(with_ctrl(KeyCode::Char('u')));
            a.update(key(KeyCode::End));
            a.update(with_ctrl(KeyCode::Char('u')));
            for c in text.chars() {
                a.update(ch(c));
            }
        };
        type_in(&mut a, "one two");
        a.update(with_ctrl(KeyCode::Char('w')));
        assert_eq!(read(&a), "one ", "{tab:?} {open:?}: Ctrl-W");
        for c in "three".chars() {
            a.update(ch(c));
        }
        a.update(with_ctrl(KeyCode::Left));
        a.update(key(KeyCode::Backspace));
        a.update(with_ctrl(KeyCode::Left));
        a.update(key(KeyCode::Delete));
        assert_eq!(read(&a), "nethree", "{tab:?} {open:?}: word jumps, delete");
        a.update(with_ctrl(KeyCode::Right));
        a.update(ch('!'));
        assert_eq!(read(&a), "nethree!", "{tab:?} {open:?}");
        // Submitted, then recalled with ↑ in a field opened again.
        a.update(key(KeyCode::Enter));
        type_in(&mut a, "x");
        a.update(key(KeyCode::Up));
        assert_eq!(read(&a), "nethree!", "{tab:?} {open:?}: history");
        a.update(key(KeyCode::Down));
        assert_eq!(read(&a), "x", "{tab:?} {open:?}: back to what was typed");
    }
}
