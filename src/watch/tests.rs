//! Unit tests of `watch`.
use super::*;
use crate::protocol::StepMetrics;

#[test]
fn lines_are_cut_however_the_bytes_arrive() {
    let mut lines = Lines::default();
    assert!(lines.feed(b"{\"a\":").is_empty());
    let got = lines.feed(b"1}\n\nsecond\nthi");
    assert_eq!(
        got,
        vec![
            (1, Ok("{\"a\":1}".to_string())),
            (2, Ok(String::new())),
            (3, Ok("second".to_string()))
        ]
    );
    assert_eq!(lines.finish(), vec![(4, Ok("thi".to_string()))]);
    assert!(lines.finish().is_empty());
    let got = lines.feed(b"\xff\xfe\n");
    assert_eq!(got, vec![(5, Err("not UTF-8 text".to_string()))]);
}

#[test]
fn an_overlong_line_is_reported_once_and_skipped() {
    let mut lines = Lines::default();
    let chunk = vec![b'x'; MAX_LINE / 2 + 1];
    assert!(lines.feed(&chunk).is_empty());
    assert!(lines.feed(&chunk).is_empty());
    assert!(lines.feed(&chunk).is_empty());
    let got = lines.feed(b"xx\nok\n");
    assert_eq!(got.len(), 2);
    assert!(got[0].1.as_ref().unwrap_err().contains("longer than 1 MiB"));
    assert_eq!(got[1], (2, Ok("ok".to_string())));
}

#[test]
fn events_unknown_fields_and_malformed_lines() {
    // gptdash's own line, with a field it may add some day.
    let line = r#"{"event":"iter","iter":3,"loss":2.5,"iter_ms":10.0,"tokens_per_s":100.0,"lr":0.001,"grad_norm":1.0,"tokens":64,"new_field":[1,2]}"#;
    let Some(Parsed::Event(e)) = parse_line(line, 1) else {
        panic!()
    };
    let Event::Iter(m) = *e else { panic!() };
    assert_eq!((m.iter, m.loss, m.tokens), (3, 2.5, 64));
    // Another trainer's: iter and loss alone.
    let Some(Parsed::Event(e)) = parse_line(r#"{"event":"iter","iter":7,"loss":1.5}"#, 2) else {
        panic!()
    };
    let Event::Iter(StepMetrics {
        iter: 7,
        iter_ms,
        lr,
        tokens: 0,
        ..
    }) = *e
    else {
        panic!()
    };
    assert!(iter_ms.is_nan() && lr.is_nan());
    // A start with nothing but the step count.
    let Some(Parsed::Event(e)) = parse_line(r#"{"event":"start","max_iters":500}"#, 3) else {
        panic!()
    };
    let Event::Start(RunStart::Train(info)) = *e else {
        panic!()
    };
    assert_eq!(info.max_iters, 500);
    // Fine-tuning's start is fine-tuning's, not a training start with defaults.
    let finetune = r#"{"event":"start","device":"cpu","threads":2,"model":"m","params":1,"data":"d","samples":10,"train_examples":8,"val_examples":2,"train_positive":0.5,"val_positive":0.5,"epochs":1}"#;
    let Some(Parsed::Event(e)) = parse_line(finetune, 4) else {
        panic!()
    };
    assert!(matches!(*e, Event::Start(RunStart::Finetune(_))) && is_finetuning(&e));
    // An epoch without its fields is malformed; a benchmark is not shown.
    assert!(matches!(
        parse_line(r#"{"event":"epoch","epoch":1}"#, 5),
        Some(Parsed::Malformed { line: 5, .. })
    ));
    assert_eq!(
        parse_line(r#"{"event":"bench","bench":"generate"}"#, 5),
        Some(Parsed::Ignored("bench".into()))
    );
    assert_eq!(
        parse_line(r#"{"event":"telemetry","x":1}"#, 6),
        Some(Parsed::Ignored("telemetry".into()))
    );
    assert_eq!(parse_line("   ", 7), None);
    for (bad, why) in [
        ("not json", "not JSON"),
        (r#"{"loss":1}"#, "no \"event\""),
        (r#"{"event":"iter","loss":1}"#, "iter: missing field `iter`"),
        (r#"{"event":"eval","iter":"x","test_loss":1}"#, "eval:"),
        ("[1,2]", "no \"event\""),
    ] {
        match parse_line(bad, 9) {
            Some(Parsed::Malformed { line: 9, error }) => {
                assert!(error.contains(why), "{bad}: {error}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

fn drain(rx: &crossbeam_channel::Receiver<StreamMsg>) -> Vec<StreamMsg> {
    let mut got = Vec::new();
    while let Ok(m) = rx.recv_timeout(Duration::from_millis(300)) {
        got.push(m);
    }
    got
}

fn iters(msgs: &[StreamMsg]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|m| match m {
            StreamMsg::Line(Parsed::Event(e)) => match **e {
                Event::Iter(m) => Some(m.iter),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn iter_line(i: u64) -> String {
    format!("{{\"event\":\"iter\",\"iter\":{i},\"loss\":1.0}}\n")
}

#[test]
fn a_followed_file_may_appear_late_grow_be_truncated_and_replaced() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let (tx, rx) = crossbeam_channel::unbounded();
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s) = (path.clone(), stop.clone());
    let reader = std::thread::spawn(move || follow(&p, &tx, &s, Duration::from_millis(20)));
    assert_eq!(drain(&rx), vec![StreamMsg::Status(StreamStatus::Waiting)]);
    // It appears, and grows — a line written in two pieces is read once, whole.
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(iter_line(1).as_bytes()).unwrap();
    file.write_all(b"{\"event\":\"iter\",\"it").unwrap();
    file.flush().unwrap();
    let got = drain(&rx);
    assert_eq!(got[0], StreamMsg::Status(StreamStatus::Following));
    assert_eq!(iters(&got), vec![1]);
    file.write_all(b"er\":2,\"loss\":1.0}\ngarbage\n").unwrap();
    let got = drain(&rx);
    assert_eq!(iters(&got), vec![2]);
    assert!(got
        .iter()
        .any(|m| matches!(m, StreamMsg::Line(Parsed::Malformed { line: 3, .. }))));
    // Truncated (a new run writing the same file): read from the start.
    file.set_len(0).unwrap();
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    file.write_all(iter_line(1).as_bytes()).unwrap();
    let got = drain(&rx);
    assert!(
        got.contains(&StreamMsg::Status(StreamStatus::Truncated)),
        "{got:?}"
    );
    assert_eq!(iters(&got), vec![1]);
    // Replaced (rotated): the new file is read from its start.
    let new = dir.path().join("new.jsonl");
    std::fs::write(&new, format!("{}{}", iter_line(10), iter_line(11))).unwrap();
    std::fs::rename(&new, &path).unwrap();
    let got = drain(&rx);
    assert!(
        got.contains(&StreamMsg::Status(StreamStatus::Replaced)),
        "{got:?}"
    );
    assert_eq!(iters(&got), vec![10, 11]);
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
}

#[test]
fn a_stream_is_read_to_its_end() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let input = format!(
        "{}{}{{\"event\":\"iter\",\"iter\":3,\"loss\":1}}",
        iter_line(1),
        iter_line(2)
    );
    read_all(input.as_bytes(), &tx, &AtomicBool::new(false));
    let got: Vec<StreamMsg> = rx.try_iter().collect();
    assert_eq!(iters(&got), vec![1, 2, 3]);
    assert_eq!(got.last(), Some(&StreamMsg::Status(StreamStatus::Ended)));
}
