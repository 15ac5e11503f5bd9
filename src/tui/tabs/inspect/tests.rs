use super::*;
use crate::config::Settings;
use crate::protocol::{LensCell, PinnedLoss, StepMetrics, TopToken};

fn shared(state: WorkerState) -> Shared {
    let mut s = Shared::new(Settings::default());
    s.state = state;
    s
}

/// A report of `n` tokens, `layers` × `heads`, answering `request`.
fn report(request: u64, n: usize, layers: usize, heads: usize) -> InspectReport {
    let row = |q: usize| -> Vec<f32> {
        (0..n)
            .map(|k| if k <= q { 1.0 / (q + 1) as f32 } else { 0.0 })
            .collect()
    };
    InspectReport {
        request: Some(request),
        text: "a b c".into(),
        read_as: None,
        step: Some(10),
        tokens: (0..n).map(|i| format!("t{i}")).collect(),
        token_loss: vec![1.0; n - 1],
        token_rank: vec![1; n - 1],
        lens: vec![
            vec![
                LensCell {
                    token: "x".into(),
                    prob: 0.5,
                    entropy: 1.0
                };
                n
            ];
            layers
        ],
        attention: vec![vec![(0..n).map(row).collect(); heads]; layers],
        top: vec![
            vec![TopToken {
                token: "y".into(),
                prob: 0.4
            }];
            n
        ],
        pinned: None,
        ablation: None,
        ablation_map: None,
        attribution: Vec::new(),
        patching: None,
        patch_error: None,
        anatomy: None,
    }
}

fn requests(commands: &[Command]) -> Vec<u64> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Inspect { request, .. } => Some(*request),
            _ => None,
        })
        .collect()
}

fn iter(i: u64) -> Event {
    Event::Iter(StepMetrics {
        iter: i,
        loss: 3.0,
        iter_ms: 10.0,
        tokens_per_s: 1000.0,
        lr: 1e-3,
        grad_norm: 1.0,
        tokens: 64,
        gpu_mib: None,
    })
}

#[test]
fn one_request_in_flight_and_a_refresh_wanted_meanwhile_follows_it() {
    let mut t = InspectTab::new(25);
    let mut s = shared(WorkerState::Training);
    assert!(
        t.on_focus(&shared(WorkerState::Idle)).is_empty(),
        "no model"
    );
    let first = requests(&t.on_focus(&s));
    assert_eq!(first, vec![1]);
    assert!(t.waiting());
    // A refresh due while the first is out: nothing sent yet.
    assert!(t.on_event(&iter(25), &mut s, true).is_empty());
    let follow = t.on_event(
        &Event::Inspected(Box::new(report(1, 5, 2, 3))),
        &mut s,
        true,
    );
    assert_eq!(requests(&follow), vec![2], "the wanted refresh follows");
    assert_eq!(t.shape(), (2, 3, 5));
    // Failures clear the request and show the message.
    t.on_event(
        &Event::InspectFailed {
            request: 2,
            error: "no model yet".into(),
            no_model: true,
        },
        &mut s,
        true,
    );
    assert!(!t.waiting());
    assert_eq!(t.message.as_deref(), Some("no model yet"));
    // Watching a stream, the worker's "no model yet" becomes the watch's way to one (by
    // the event's flag: another failure is shown as it is).
    s.watching = true;
    for no_model in [true, false] {
        t.on_event(
            &Event::InspectFailed {
                request: 3,
                error: "no model yet".into(),
                no_model,
            },
            &mut s,
            true,
        );
        let shown = t.message.clone().unwrap();
        assert_eq!(shown.contains("Ctrl-O loads"), no_model, "{shown}");
    }
}

#[test]
fn refreshes_every_n_steps_only_while_shown() {
    let mut t = InspectTab::new(25);
    let mut s = shared(WorkerState::Training);
    assert!(t.on_event(&iter(24), &mut s, true).is_empty());
    assert!(t.on_event(&iter(25), &mut s, false).is_empty(), "not shown");
    assert_eq!(requests(&t.on_event(&iter(25), &mut s, true)), vec![1]);
    let mut never = InspectTab::new(0);
    assert!(never.on_event(&iter(25), &mut s, true).is_empty());
    // The end of a run refreshes the tab shown.
    let mut t = InspectTab::new(25);
    let mut s = shared(WorkerState::Finished);
    let finished = Event::State {
        state: WorkerState::Finished,
    };
    assert_eq!(requests(&t.on_event(&finished, &mut s, true)).len(), 1);
}

#[test]
fn keys_move_cursor_layer_and_head_within_the_report() {
    let mut t = InspectTab::new(25);
    let mut s = shared(WorkerState::Training);
    t.on_focus(&s);
    t.on_event(
        &Event::Inspected(Box::new(report(1, 5, 2, 3))),
        &mut s,
        true,
    );
    assert_eq!(t.cursor, 4, "a new text starts at its last token");
    t.on_action(Action::GridRight, &mut s);
    assert_eq!(t.cursor, 4);
    t.on_action(Action::GridLeft, &mut s);
    assert_eq!(t.cursor, 3);
    t.on_action(Action::GridHome, &mut s);
    assert_eq!(t.cursor, 0);
    for _ in 0..5 {
        t.on_action(Action::GridDown, &mut s);
        t.on_action(Action::NextHead, &mut s);
    }
    assert_eq!((t.layer, t.head), (1, 2));
    t.on_action(Action::PrevHead, &mut s);
    assert_eq!(t.head, 1);
    // In the overview ←→ choose the head; Enter (ToggleOverview) zooms.
    t.on_action(Action::ToggleOverview, &mut s);
    t.on_action(Action::GridLeft, &mut s);
    assert_eq!((t.head, t.cursor), (0, 0));
    t.on_action(Action::ToggleOverview, &mut s);
    assert_eq!(t.view, View::Head);
    // The same text again keeps the cursor; a smaller model clamps layer and head.
    t.on_action(Action::GridRight, &mut s);
    let again = requests(&t.on_action(Action::Refresh, &mut s));
    t.on_event(
        &Event::Inspected(Box::new(report(again[0], 5, 1, 1))),
        &mut s,
        true,
    );
    assert_eq!((t.cursor, t.layer, t.head), (1, 0, 0));
}

#[test]
fn typed_text_next_example_pin_and_diff() {
    let mut t = InspectTab::new(25);
    let mut s = shared(WorkerState::Loaded);
    t.on_action(Action::EditPrompt, &mut s);
    assert_eq!(t.scope(), Scope::InspectInput);
    for c in "He and I".chars() {
        t.field().unwrap().insert(c);
    }
    let sent = t.on_action(Action::Submit, &mut s);
    assert_eq!(
        sent,
        vec![Command::Inspect {
            request: 1,
            text: InspectText::Typed("He and I".into()),
            ask: InspectAsk::default(),
        }]
    );
    assert_eq!(t.scope(), Scope::Inspect);
    t.on_event(
        &Event::Inspected(Box::new(report(1, 4, 1, 1))),
        &mut s,
        true,
    );
    let sent = t.on_action(Action::NextExample, &mut s);
    assert_eq!(
        sent,
        vec![Command::Inspect {
            request: 2,
            text: InspectText::Corpus(0),
            ask: InspectAsk::default(),
        }]
    );
    t.on_event(
        &Event::Inspected(Box::new(report(2, 4, 1, 1))),
        &mut s,
        true,
    );
    // d before a pin explains; p pins and inspects again; the report confirms the pin.
    t.on_action(Action::ToggleDiff, &mut s);
    assert!(!t.diff && t.message.is_some());
    let sent = t.on_action(Action::Pin, &mut s);
    assert_eq!(sent[0], Command::Pin(true));
    assert_eq!(requests(&sent), vec![3]);
    let mut pinned = report(3, 4, 1, 1);
    pinned.pinned = Some(PinnedLoss {
        step: Some(10),
        token_loss: vec![2.0; 3],
    });
    t.on_event(&Event::Inspected(Box::new(pinned)), &mut s, true);
    assert!(t.pinned);
    t.on_action(Action::ToggleDiff, &mut s);
    assert!(t.diff);
    // A new training run drops report and pin.
    t.on_event(
        &Event::Start(RunStart::Train(Box::new(
            crate::protocol::RunInfo::example(10),
        ))),
        &mut s,
        false,
    );
    assert!(t.report.is_none() && !t.pinned && !t.diff);
}

mod drawing {
    use ratatui::buffer::Buffer;
    use ratatui::layout::Rect;
    use ratatui::style::Modifier;

    use super::super::maps::{render_lens, render_map, render_overview};
    use super::report;
    use crate::tui::theme;

    /// A previous-token head over 4 tokens (the first looks at itself).
    fn previous_token() -> Vec<Vec<f32>> {
        (0..4)
            .map(|q| {
                (0..4)
                    .map(|k| if k + 1 == q || q + k == 0 { 1.0 } else { 0.0 })
                    .collect()
            })
            .collect()
    }

    fn row(buf: &Buffer, y: u16) -> String {
        (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect()
    }

    #[test]
    fn heatmap_cells_labels_and_cursor() {
        // 24 × 12: labels 6 wide, 9 map lines, 2 label rows; each weight 4 × 4 pixels.
        let area = Rect::new(0, 0, 24, 12);
        let mut buf = Buffer::empty(area);
        let tokens: Vec<String> = ["He", " and", " I", " hold"].map(String::from).into();
        render_map(&mut buf, area, &previous_token(), &tokens, 2);
        let cell = |k: u16, q: u16| &buf[(6 + 4 * k, 2 * q)];
        // Query 1 → key 0 at full weight; key 1 nothing; key 3 is in its future (masked).
        assert_eq!(cell(0, 1).symbol(), "▀");
        assert_eq!(cell(0, 1).fg, theme::heat(1.0));
        assert_eq!(cell(0, 1).bg, theme::heat(1.0));
        assert_eq!(cell(1, 1).fg, theme::heat(0.0));
        assert_eq!(cell(3, 1).fg, theme::MASKED);
        // The cursor's row (query 2) in the cursor's colours.
        assert_eq!(cell(1, 2).fg, theme::heat_cursor(1.0));
        assert_eq!(cell(0, 2).fg, theme::heat_cursor(0.0));
        // Query labels where each query's rows start; the cursor's reversed.
        assert!(row(&buf, 2).starts_with("·and "), "{:?}", row(&buf, 2));
        assert!(
            row(&buf, 3).starts_with("      "),
            "no label on a query's 2nd line"
        );
        assert!(buf[(0, 4)].modifier.contains(Modifier::REVERSED));
        assert!(!buf[(0, 2)].modifier.contains(Modifier::REVERSED));
        // Key labels under the map, from each key's first column, 3 characters a line.
        assert_eq!(&row(&buf, 9)[6..], "He  and I   hol   ");
        assert_eq!(&row(&buf, 10)[6..18], " ".repeat(12));
        assert!(row(&buf, 10)[18..].starts_with('d'));
        // Where the cursor looks.
        assert!(
            row(&buf, 11).starts_with("\" I\" looks at:  \" and\" 1"),
            "{:?}",
            row(&buf, 11)
        );
    }

    #[test]
    fn long_texts_scroll_to_the_cursor() {
        let n = 64;
        let att: Vec<Vec<f32>> = (0..n)
            .map(|q| (0..n).map(|k| if k == q { 1.0 } else { 0.0 }).collect())
            .collect();
        let tokens: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
        // 30 map columns, 10 map lines: 30 keys and 20 queries around the cursor.
        let area = Rect::new(0, 0, 40, 13);
        let mut buf = Buffer::empty(area);
        render_map(&mut buf, area, &att, &tokens, 50);
        let labels: String = (0..10).map(|y| row(&buf, y)[..10].to_string()).collect();
        assert!(
            labels.contains("w50") && !labels.contains("w1 "),
            "{labels}"
        );
        // The diagonal cell of the cursor is in view and in the cursor's colour.
        let found = (0..10).any(|y| (10..40).any(|x| buf[(x, y)].fg == theme::heat_cursor(1.0)));
        assert!(found);
    }

    #[test]
    fn overview_draws_every_layer_and_head_and_marks_the_selected() {
        let r = report(1, 8, 3, 4);
        let area = Rect::new(0, 0, 60, 20);
        let mut buf = Buffer::empty(area);
        render_overview(&mut buf, area, &r.attention, 1, 2);
        let header = row(&buf, 0);
        for h in 1..=4 {
            assert!(header.contains(&format!("H{h}")), "{header}");
        }
        let left: String = (0..20).map(|y| row(&buf, y)[..3].to_string()).collect();
        for l in 1..=3 {
            assert!(left.contains(&format!("L{l}")), "{left}");
        }
        // Selected layer 2, head 3: its map in the cursor's colours, the others not.
        let cursor_cells = (0..20)
            .flat_map(|y| (0..60).map(move |x| (x, y)))
            .filter(|&p| buf[p].symbol() == "▀" && buf[p].fg == theme::heat_cursor(1.0))
            .count();
        assert!(cursor_cells > 0);
        let first_map = &buf[(4, 1)];
        assert_eq!(first_map.symbol(), "▀");
        assert_ne!(first_map.fg, theme::heat_cursor(1.0));
    }

    #[test]
    fn lens_grid_shows_tokens_predictions_and_the_cursor_column() {
        let r = report(1, 5, 2, 1);
        let area = Rect::new(0, 0, 60, 12);
        let mut buf = Buffer::empty(area);
        render_lens(&mut buf, area, &r, 3, 1);
        assert!(
            row(&buf, 0).starts_with("token t0       t1"),
            "{}",
            row(&buf, 0)
        );
        assert!(row(&buf, 1).starts_with("L1    x "));
        assert!(row(&buf, 3).starts_with("next  t1 "));
        // The probability colours the cell; the cursor's input token is reversed.
        assert_eq!(buf[(6, 1)].bg, theme::heat(0.5));
        assert!(buf[(6 + 3 * 9, 0)].modifier.contains(Modifier::REVERSED));
        assert!(row(&buf, 5).contains("after \"t3\" (#4)"));
        assert!(row(&buf, 7).starts_with("L2   \"x\""));
    }
}

#[test]
fn twelve_by_twelve_heads_fit_the_overview() {
    use ratatui::buffer::Buffer;
    use ratatui::layout::Rect;
    let r = InspectReport::example(64, 12, 12);
    // The overview's share of a 200 × 60 terminal.
    let area = Rect::new(0, 0, 110, 50);
    let mut buf = Buffer::empty(area);
    maps::render_overview(&mut buf, area, &r.attention, 11, 11);
    let text: String = (0..50)
        .map(|y| (0..110).map(|x| buf[(x, y)].symbol()).collect::<String>() + "\n")
        .collect();
    assert!(text.lines().next().unwrap().contains("H12"), "{text}");
    assert!(text.contains("L12"), "{text}");
    let maps = buf.content().iter().filter(|c| c.symbol() == "▀").count();
    assert!(maps >= 144 * 8, "{maps} cells for 144 maps");
}

#[test]
fn removals_are_asked_with_every_pass_and_forgotten_with_the_model() {
    let mut t = InspectTab::new(25);
    let mut s = shared(WorkerState::Loaded);
    t.on_focus(&s);
    t.on_event(
        &Event::Inspected(Box::new(report(1, 5, 2, 3))),
        &mut s,
        true,
    );
    // a removes the selected head, m the layer's MLP, z switches to mean; each asks again.
    t.on_action(Action::GridDown, &mut s);
    t.on_action(Action::NextHead, &mut s);
    let sent = t.on_action(Action::AblateHead, &mut s);
    t.on_event(
        &Event::Inspected(Box::new(report(2, 5, 2, 3))),
        &mut s,
        true,
    );
    let sent2 = t.on_action(Action::AblateMlp, &mut s);
    t.on_event(
        &Event::Inspected(Box::new(report(3, 5, 2, 3))),
        &mut s,
        true,
    );
    let sent3 = t.on_action(Action::AblationMode, &mut s);
    let ask = |c: &[Command]| match c.last() {
        Some(Command::Inspect { ask, .. }) => ask.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(ask(&sent).ablation.heads, vec![(1, 1)]);
    assert_eq!(ask(&sent2).ablation.mlps, vec![1]);
    assert!(ask(&sent3).ablation.mean);
    t.on_event(
        &Event::Inspected(Box::new(report(4, 5, 2, 3))),
        &mut s,
        true,
    );
    // The same key again puts the head back; x puts everything back.
    let again = t.on_action(Action::AblateHead, &mut s);
    assert!(ask(&again).ablation.heads.is_empty());
    t.on_event(
        &Event::Inspected(Box::new(report(5, 5, 2, 3))),
        &mut s,
        true,
    );
    let back = t.on_action(Action::RestoreAll, &mut s);
    assert!(ask(&back).ablation.mlps.is_empty());
    t.on_event(
        &Event::Inspected(Box::new(report(6, 5, 2, 3))),
        &mut s,
        true,
    );
    assert!(t.on_action(Action::RestoreAll, &mut s).is_empty());
    assert!(t
        .message
        .as_deref()
        .unwrap_or("")
        .contains("nothing is removed"));
    // Another model loaded: its parts are not the old one's.
    t.on_action(Action::AblateHead, &mut s);
    t.on_event(
        &Event::Inspected(Box::new(report(7, 5, 2, 3))),
        &mut s,
        true,
    );
    let reloaded = t.on_event(
        &Event::State {
            state: WorkerState::Loaded,
        },
        &mut s,
        true,
    );
    assert!(t.ablation.heads.is_empty() && t.report.is_none());
    assert!(ask(&reloaded).ablation.heads.is_empty());
}

#[test]
fn the_corrupted_text_is_typed_once_and_kept_for_the_refreshes() {
    let mut t = InspectTab::new(25);
    let mut s = shared(WorkerState::Loaded);
    t.on_focus(&s);
    t.on_event(
        &Event::Inspected(Box::new(report(1, 5, 1, 1))),
        &mut s,
        true,
    );
    t.on_action(Action::TypeCorrupted, &mut s);
    assert_eq!(t.scope(), Scope::CorruptedInput);
    for c in "A dog ran | ran |sat".chars() {
        t.field().unwrap().insert(c);
    }
    let sent = t.on_action(Action::Submit, &mut s);
    assert_eq!(t.view, View::Patching);
    let Some(Command::Inspect { ask, .. }) = sent.last() else {
        panic!("{sent:?}")
    };
    assert_eq!(
        ask.patch,
        Some(PatchAsk {
            corrupted: "A dog ran".into(),
            answer: Some("ran".into()),
            wrong: Some("sat".into()),
        })
    );
    assert_eq!(t.corrupted.text(), "A dog ran | ran |sat");
    // Empty: no patch asked, nothing sent.
    t.on_event(
        &Event::Inspected(Box::new(report(2, 5, 1, 1))),
        &mut s,
        true,
    );
    t.on_action(Action::TypeCorrupted, &mut s);
    t.field().unwrap().set("  ");
    assert!(t.on_action(Action::Submit, &mut s).is_empty());
    assert!(t.patch_ask().is_none());
}
