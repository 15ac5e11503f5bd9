//! Unit tests of `protocol`.
use super::*;

fn summary() -> TrainSummary {
    TrainSummary {
        iter: 200,
        train_loss: 0.86,
        test_loss: Some(0.94),
        best_test_loss: Some(0.93),
        tokens_per_s: 9046.0,
        step_tokens_per_s: 9100.0,
        train_s: 4.4,
        wall_s: 4.5,
        checkpoint: "checkpoints/small".into(),
    }
}

#[test]
fn events_serialise_flat_and_tagged_as_the_readme_shows() {
    let e = Event::Eval {
        iter: 50,
        test_loss: 1.5,
    };
    assert_eq!(e.to_json(), r#"{"event":"eval","iter":50,"test_loss":1.5}"#);
    let done: serde_json::Value =
        serde_json::from_str(&Event::Done(RunDone::Train(summary())).to_json()).unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["checkpoint"], "checkpoints/small");
    assert_eq!(done["best_test_loss"], 0.93);
    let state = Event::State {
        state: WorkerState::FineTuning,
    };
    assert_eq!(
        state.to_json(),
        r#"{"event":"state","state":"fine_tuning"}"#
    );
    assert_eq!(WorkerState::Loaded.to_string(), "model loaded");
}

#[test]
fn events_read_back_including_both_kinds_of_start_and_done() {
    let events = vec![
        Event::Done(RunDone::Train(summary())),
        Event::Done(RunDone::Finetune(FinetuneSummary {
            best_epoch: 3,
            val_acc: 0.65,
            val_loss: 0.6,
            confusion: [[1, 2], [3, 4]],
            eval_acc: None,
            checkpoint: "c".into(),
            ..Default::default()
        })),
        Event::Epoch(EpochMetrics {
            epoch: 1,
            train_loss: 0.7,
            train_acc: 0.5,
            val_loss: 0.69,
            val_acc: 0.55,
            secs: 1.0,
        }),
        Event::log("hello"),
    ];
    for e in events {
        let back: Event = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(back, e);
    }
}

#[test]
fn a_nan_loss_is_null_in_json_and_nan_when_read() {
    let e = Event::Diverged {
        iter: 3,
        loss: f64::NAN,
        message: "m".into(),
    };
    let json = e.to_json();
    assert!(json.contains(r#""loss":null"#), "{json}");
    let Event::Diverged { loss, .. } = serde_json::from_str(&json).unwrap() else {
        panic!("{json}")
    };
    assert!(loss.is_nan());
}

#[test]
fn a_nan_test_loss_reads_back_as_nan() {
    let json = Event::Eval {
        iter: 3,
        test_loss: f64::NAN,
    }
    .to_json();
    assert!(json.contains(r#""test_loss":null"#), "{json}");
    let Event::Eval { test_loss, .. } = serde_json::from_str(&json).unwrap() else {
        panic!("{json}")
    };
    assert!(test_loss.is_nan());
}
