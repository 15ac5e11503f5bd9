use super::*;
use crate::protocol::{RunInfo, TrainSummary};
use crate::runs::History;

fn iter(step: u64, loss: f64) -> Event {
    Event::Iter(StepMetrics {
        iter: step,
        loss,
        iter_ms: 10.0,
        tokens_per_s: 1000.0,
        lr: 1e-3,
        grad_norm: 1.0,
        tokens: 100,
        gpu_mib: None,
    })
}

fn start(at: u64) -> Event {
    let mut info = RunInfo::example(10);
    info.start_iter = at;
    Event::Start(RunStart::Train(Box::new(info)))
}

fn done(iter: u64) -> Event {
    Event::Done(RunDone::Train(TrainSummary {
        iter,
        train_loss: 1.0,
        test_loss: Some(1.5),
        best_test_loss: Some(1.5),
        tokens_per_s: 1000.0,
        step_tokens_per_s: 1000.0,
        train_s: 1.0,
        wall_s: 1.0,
        checkpoint: "x".into(),
    }))
}

#[test]
fn a_history_is_read_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = History::open(dir.path()).unwrap();
    let mut events = vec![start(0)];
    for s in 1..=4 {
        events.push(iter(s, 5.0 - s as f64));
    }
    events.push(Event::Eval {
        iter: 4,
        test_loss: 1.5,
    });
    events.push(done(4));
    h.record(&events).unwrap();
    let path = dir.path().join(crate::checkpoint::HISTORY_FILE);
    for points in [true, false] {
        let r = RunHistory::read(&path, points).unwrap();
        assert_eq!(r.steps(), 4);
        assert_eq!(r.tokens(), 400.0);
        assert!((r.train_secs() - 0.04).abs() < 1e-12);
        assert_eq!(r.test.len(), 1);
        assert_eq!(r.status(false), Status::Finished);
        assert_eq!(r.malformed, 0);
        if points {
            let losses: Vec<f64> = r.train.iter().map(|p| p.value).collect();
            assert_eq!(losses, [4.0, 3.0, 2.0, 1.0]);
            assert_eq!(r.train[3].tokens, 400.0);
        } else {
            assert!(r.train.is_empty());
        }
    }
}

#[test]
fn a_torn_last_line_is_skipped_and_the_next_writer_starts_a_new_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(crate::checkpoint::HISTORY_FILE);
    let mut text = format!("{}\n{}\n", start(0).to_json(), iter(1, 3.0).to_json());
    let torn = iter(2, 2.0).to_json();
    text.push_str(&torn[..torn.len() / 2]);
    std::fs::write(&path, &text).unwrap();
    let r = RunHistory::read(&path, true).unwrap();
    assert_eq!(r.steps(), 1, "the torn line is not read");
    assert_eq!(r.malformed, 0);
    // Killed without an end, nobody writing: interrupted; held by a writer: running.
    assert_eq!(r.status(false), Status::Interrupted);
    assert_eq!(r.status(true), Status::Running);
    // A writer continuing the run ends the torn line first: the torn half becomes one
    // malformed line, and every new line is whole.
    let mut h = History::open(dir.path()).unwrap();
    h.record(&[iter(2, 2.0)]).unwrap();
    let r = RunHistory::read(&path, true).unwrap();
    assert_eq!(r.steps(), 2);
    assert_eq!(r.malformed, 1);
}

#[test]
fn a_resumed_run_drops_what_its_interrupted_segment_did_past_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(crate::checkpoint::HISTORY_FILE);
    let mut h = History::open(dir.path()).unwrap();
    let mut events = vec![start(0)];
    for s in 1..=3 {
        events.push(iter(s, 10.0 - s as f64));
    }
    events.push(Event::Checkpoint {
        iter: 3,
        path: "x".into(),
    });
    // Steps 4 and 5 ran, then the process was killed: the checkpoint is at step 3.
    events.push(iter(4, 0.5));
    events.push(iter(5, 0.4));
    h.record(&events).unwrap();
    drop(h);
    let killed = RunHistory::read(&path, true).unwrap();
    assert_eq!(killed.steps(), 5);
    let mut h = History::open(dir.path()).unwrap();
    let mut again = vec![start(3)];
    for s in 4..=6 {
        again.push(iter(s, 7.0 - (s - 3) as f64));
    }
    again.push(done(6));
    h.record(&again).unwrap();
    for points in [true, false] {
        let r = RunHistory::read(&path, points).unwrap();
        assert_eq!(r.steps(), 6);
        assert_eq!(r.tokens(), 600.0, "each step once");
        assert_eq!(r.status(false), Status::Finished);
        if points {
            let steps: Vec<u64> = r.train.iter().map(|p| p.step).collect();
            assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
            assert_eq!(r.train[3].value, 6.0, "step 4 of the resumed segment");
        }
    }
}

#[test]
fn a_growing_history_is_read_on_from_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(crate::checkpoint::HISTORY_FILE);
    let mut h = History::open(dir.path()).unwrap();
    h.record(&[start(0), iter(1, 3.0)]).unwrap();
    let mut r = RunHistory::read(&path, true).unwrap();
    assert_eq!(r.train.len(), 1);
    assert!(!r.read_more(&path, true).unwrap(), "nothing new");
    h.record(&[iter(2, 2.0), iter(3, 1.0)]).unwrap();
    assert!(r.read_more(&path, true).unwrap());
    assert_eq!(r.train.len(), 3);
    assert_eq!(r.tokens(), 300.0);
}

#[test]
fn a_save_carries_the_history_into_the_new_copy_and_writing_goes_on_there() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut h = History::open(&run).unwrap();
    h.record(&[start(0), iter(1, 3.0)]).unwrap();
    for _ in 0..2 {
        crate::checkpoint::write_atomically(&run, |tmp| {
            h.carry_into(tmp, true)?;
            std::fs::write(tmp.join(crate::checkpoint::CONFIG_FILE), "{}")?;
            Ok(())
        })
        .unwrap();
        h.follow();
    }
    h.record(&[iter(2, 2.0)]).unwrap();
    let r = RunHistory::read(&run.join(crate::checkpoint::HISTORY_FILE), true).unwrap();
    assert_eq!(
        r.steps(),
        2,
        "lines after the saves are in the folder now there"
    );
    // A copy elsewhere takes the history so far, and is not written to afterwards.
    let other = dir.path().join("other");
    crate::checkpoint::write_atomically(&other, |tmp| h.carry_into(tmp, false)).unwrap();
    h.record(&[iter(3, 1.0)]).unwrap();
    let copy = RunHistory::read(&other.join(crate::checkpoint::HISTORY_FILE), true).unwrap();
    assert_eq!(copy.steps(), 2);
}

#[test]
fn a_run_stopped_and_started_again_in_the_dashboard_is_not_interrupted() {
    let mut r = RunHistory::default();
    for e in [start(0), iter(1, 3.0)] {
        r.apply(e);
    }
    r.apply(Event::Interrupted {
        iter: 1,
        path: "x".into(),
    });
    r.apply(done(1));
    assert_eq!(r.status(true), Status::Interrupted);
    let wall = r.wall_secs();
    for points in [true, false] {
        let mut again = r.clone();
        again.line(iter(2, 2.0).to_json().as_bytes(), points);
        assert_eq!(again.status(true), Status::Running, "points: {points}");
        assert_eq!(again.steps(), 2);
        // The stopped part's wall time (1 s, said by its end) and the new step's 10 ms.
        assert!((again.wall_secs() - (wall + 0.01)).abs() < 1e-9);
        // Its end says the wall time since the process started: all of it, once.
        let mut end = done(2);
        if let Event::Done(RunDone::Train(s)) = &mut end {
            s.wall_s = 2.5;
        }
        again.apply(end);
        assert_eq!(again.status(false), Status::Finished);
        assert!(
            (again.wall_secs() - 2.5).abs() < 1e-9,
            "{}",
            again.wall_secs()
        );
    }
}

#[test]
fn a_history_that_cannot_follow_a_save_is_closed_and_said_so_and_the_save_lands() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut h = Some(History::open(&run).unwrap());
    h.as_mut().unwrap().record(&[start(0)]).unwrap();
    let mut carried = Ok(());
    crate::checkpoint::write_atomically(&run, |tmp| {
        // Something in the history's place: neither a link nor a copy can be made.
        std::fs::create_dir(tmp.join(crate::checkpoint::HISTORY_FILE))?;
        carried = h.as_mut().unwrap().carry_into(tmp, true);
        std::fs::remove_dir(tmp.join(crate::checkpoint::HISTORY_FILE))?;
        std::fs::write(tmp.join(crate::checkpoint::CONFIG_FILE), "{}")?;
        Ok(())
    })
    .unwrap();
    assert!(
        run.join(crate::checkpoint::CONFIG_FILE).is_file(),
        "the save landed"
    );
    h.as_mut().unwrap().carried(carried, true, &run);
    h.as_mut().unwrap().follow();
    let mut events = vec![iter(1, 3.0)];
    crate::runs::keep(&mut h, &mut events);
    assert!(h.is_none(), "closed");
    let said = events
        .iter()
        .any(|e| e.to_json().contains("is no longer written"));
    assert!(said, "{events:?}");
    // A save elsewhere that cannot take the history along is said; the run's own goes on.
    let mut h = Some(History::open(&dir.path().join("run2")).unwrap());
    let other = dir.path().join("other");
    let failed = Err(anyhow::anyhow!("disk full"));
    h.as_mut().unwrap().carried(failed, false, &other);
    let mut events = vec![iter(1, 3.0)];
    crate::runs::keep(&mut h, &mut events);
    assert!(h.is_some(), "still written");
    let said = events
        .iter()
        .any(|e| e.to_json().contains("has no copy of the run's history"));
    assert!(said, "{events:?}");
}

#[test]
fn a_line_too_long_to_be_an_event_is_one_malformed_line_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(crate::checkpoint::HISTORY_FILE);
    let mut text = format!("{}\n", start(0).to_json());
    text.push_str(&"x".repeat(3 * MAX_LINE));
    text.push('\n');
    text.push_str(&format!("{}\n", iter(1, 3.0).to_json()));
    // A torn tail as long: not read, not counted.
    text.push_str(&"y".repeat(2 * MAX_LINE));
    std::fs::write(&path, &text).unwrap();
    for points in [true, false] {
        let r = RunHistory::read(&path, points).unwrap();
        assert_eq!(r.malformed, 1);
        assert_eq!(r.steps(), 1);
        assert_eq!(r.offset, (text.len() - 2 * MAX_LINE) as u64);
    }
}
