//! Views rendered into ratatui's `TestBackend`, asserting on what is on screen.
use gptdash::config::Settings;
use gptdash::generate::{Candidate, GeneratedToken, Generation};
use gptdash::protocol::{Event, RunInfo, RunStart, StepMetrics, WorkerState};
use gptdash::tui::app::{App, Msg};
use gptdash::tui::tabs::Tab;
use gptdash::tui::view;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn render(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| view::draw(f, app)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    let mut text = String::new();
    for y in 0..buffer.area.height {
        for x in 0..buffer.area.width {
            text.push_str(buffer[(x, y)].symbol());
        }
        text.push('\n');
    }
    text
}

fn key(c: char) -> Msg {
    Msg::Key(crossterm::event::KeyEvent::new(
        crossterm::event::KeyCode::Char(c),
        crossterm::event::KeyModifiers::NONE,
    ))
}

/// Fails naming the first of `needles` that `screen` lacks.
fn shows_all(screen: &str, needles: &[&str]) {
    for needle in needles {
        assert!(screen.contains(needle), "{needle:?} missing:\n{screen}");
    }
}

fn trained_app() -> App {
    let mut app = App::new(Settings::default());
    app.update(Msg::Worker(Event::Start(RunStart::Train(Box::new(
        RunInfo {
            dtype: "bf16".into(),
            ..RunInfo::example(200)
        },
    )))));
    app.update(Msg::Worker(Event::State {
        state: WorkerState::Training,
    }));
    for i in 1..=120u64 {
        let loss = 5.0 / (1.0 + i as f64 / 10.0);
        app.update(Msg::Worker(Event::Iter(StepMetrics {
            iter: i,
            loss,
            iter_ms: 25.0,
            tokens_per_s: 8765.0,
            lr: 1e-3,
            grad_norm: 0.5,
            tokens: 200,
            gpu_mib: None,
        })));
    }
    app.update(Msg::Worker(Event::Eval {
        iter: 100,
        test_loss: 0.8309,
    }));
    app
}

#[test]
fn train_tab_shows_tabs_loss_values_and_stats() {
    let app = trained_app();
    let screen = render(&app, 140, 45);
    for title in ["1 Train", "2 Generate", "3 Classify"] {
        assert!(screen.contains(title), "{screen}");
    }
    assert!(screen.contains("120 / 200"), "{screen}");
    assert!(
        screen.contains("0.3846"),
        "the last loss, 5/(1+12):\n{screen}"
    );
    assert!(screen.contains("0.8309"), "{screen}");
    assert!(screen.contains("8765"), "{screen}");
    assert!(screen.contains("cpu (2 threads, bf16)"), "{screen}");
    assert!(screen.contains("0.88M"), "{screen}");
    assert!(screen.contains("60%"), "{screen}");
    assert!(screen.contains("ETA"), "{screen}");
    assert!(
        screen.contains("step 100: test loss 0.8309"),
        "the log pane lists events:\n{screen}"
    );
}

fn token(id: u32, text: &str, prob: f64) -> GeneratedToken {
    let alts = [
        (id, text, prob),
        (id + 1, " a", 0.15),
        (id + 2, " can", 0.1),
        (id + 3, " feed", 0.05),
        (id + 4, " like", 0.03),
        (id + 5, " see", 0.02),
    ];
    let top: Vec<Candidate> = alts
        .iter()
        .map(|&(id, t, p)| Candidate {
            id,
            text: t.into(),
            prob: p,
        })
        .collect();
    GeneratedToken::new(id, text.into(), prob, top, false)
}

#[test]
fn generate_tab_shows_the_continuation_and_six_ranked_grid_rows() {
    let mut app = App::new(Settings::default());
    app.tab = Tab::Generate;
    app.generate.prompt.set("He and I");
    app.generate.pending = Some(1);
    let generation = Generation {
        prompt: "He and I".into(),
        read_as: None,
        text: "He and I hold the dog".into(),
        tokens: vec![
            token(10, " hold", 0.3417),
            token(20, " the", 0.8383),
            token(30, " dog", 0.6415),
        ],
        mean_logprob: -0.6,
        perplexity: 1.82,
    };
    app.update(Msg::Worker(Event::Generated {
        request: Some(1),
        generation,
    }));
    let screen = render(&app, 140, 40);
    assert!(
        screen.contains("He and I hold (0.34) the (0.84) dog (0.64)"),
        "{screen}"
    );
    let lines: Vec<&str> = screen.lines().collect();
    for rank in 1..=6 {
        let row = lines
            .iter()
            .find(|l| l.contains(&format!("│#{rank} ")))
            .unwrap_or_else(|| panic!("no row #{rank}:\n{screen}"));
        let probs = row.matches(" 0.").count();
        assert_eq!(
            probs, 3,
            "row #{rank} should have a probability per column: {row}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("│#1   \" hold\" 0.342")),
        "{screen}"
    );
    assert!(lines.iter().any(|l| l.contains("│rest")), "{screen}");
}

#[test]
fn preparation_shows_in_the_gauge_and_the_log() {
    let mut app = App::new(Settings::default());
    app.update(Msg::Worker(Event::prepare("tokenizer", 1, 1)));
    app.update(Msg::Worker(Event::prepare("encode", 2048, 98_463)));
    let screen = render(&app, 140, 40);
    shows_all(
        &screen,
        &["preparing: encode 2048/98463", "prepared: tokenizer (1/1)"],
    );
    app.update(Msg::Worker(Event::Start(RunStart::Train(Box::new(
        RunInfo::example(200),
    )))));
    let screen = render(&app, 140, 40);
    assert!(!screen.contains("preparing:"), "{screen}");
}

#[test]
fn c_lists_the_named_corpora_with_sizes_and_whether_each_is_here() {
    let mut app = App::new(Settings::default());
    app.update(key('c'));
    let screen = render(&app, 140, 40);
    shows_all(
        &screen,
        &[
            " corpora ",
            "small",
            "built in",
            "imdb",
            "84 MB",
            "tinystories",
            "2.3 GB",
            "wikitext-103",
            "documents",
            "type a name",
        ],
    );
    // Typing a name sets the next run's corpus.
    for _ in 0.."small".len() {
        app.update(Msg::Key(crossterm::event::KeyEvent::new(
            crossterm::event::KeyCode::Backspace,
            crossterm::event::KeyModifiers::NONE,
        )));
    }
    for c in "imdb".chars() {
        app.update(key(c));
    }
    app.update(Msg::Key(crossterm::event::KeyEvent::new(
        crossterm::event::KeyCode::Enter,
        crossterm::event::KeyModifiers::NONE,
    )));
    let screen = render(&app, 140, 40);
    assert!(!screen.contains(" corpora "), "{screen}");
    shows_all(&screen, &["corpus set to imdb"]);
}

#[test]
fn downloads_show_in_megabytes() {
    let mut app = App::new(Settings::default());
    app.update(Msg::Worker(Event::prepare(
        "download", 12_300_000, 84_000_000,
    )));
    shows_all(
        &render(&app, 140, 40),
        &["preparing: download 12.3/84.0 MB"],
    );
}

#[test]
fn a_small_terminal_gets_a_notice_not_a_panic() {
    let app = trained_app();
    for (w, h) in [
        (40, 10),
        (79, 30),
        (100, 5),
        (80, 23),
        (60, 2),
        (50, 1),
        (1, 1),
    ] {
        let screen = render(&app, w, h);
        assert!(
            !screen.contains("1 Train"),
            "{w}x{h} drew the dashboard:\n{screen}"
        );
        let flat: String = screen.split_whitespace().collect::<Vec<_>>().join(" ");
        // The size line comes first, so even one row says what is wrong.
        let want = format!("{w}×{h}");
        if w >= 60 {
            assert!(
                flat.contains("Terminal too small") && flat.contains(&want),
                "{w}x{h}:\n{screen}"
            );
        } else if w >= 10 {
            assert!(flat.contains("Terminal"), "{w}x{h}:\n{screen}");
        }
        if h >= 2 && w >= 60 {
            assert!(flat.contains("q to quit"), "{w}x{h}:\n{screen}");
        }
    }
}

#[test]
fn help_overlay_lists_keys_and_classify_tab_says_what_it_needs() {
    let mut app = trained_app();
    app.show_help = true;
    let screen = render(&app, 120, 40);
    shows_all(
        &screen,
        &[
            "start / pause / resume training",
            "choose the corpus",
            "Everywhere",
            "Ctrl-C",
        ],
    );
    assert!(
        !screen.contains("branch"),
        "only the shown tab's keys:\n{screen}"
    );
    app.tab = Tab::Generate;
    let screen = render(&app, 120, 40);
    assert!(screen.contains("branch: regenerate"), "{screen}");
    assert!(screen.contains("temperature − / +"), "{screen}");
    // Every key of the busiest tab fits the smallest terminal.
    let small = render(&app, 80, 24);
    shows_all(
        &small,
        &[
            "Everywhere",
            "Ctrl-C",
            "earlier / later entries",
            "Ctrl-W",
            "next sampling seed",
        ],
    );
    // The hint bar comes from the same list as the help screen.
    app.show_help = false;
    app.generate.editing = false;
    let screen = render(&app, 120, 40);
    let hints = screen.lines().last().unwrap_or_default();
    assert!(
        hints.contains("Enter branch here") && hints.contains("t/T temp"),
        "{hints}"
    );
    let mut app = App::new(Settings::default());
    app.tab = Tab::Classify;
    let screen = render(&app, 120, 40);
    assert!(
        screen.contains("What it needs") && screen.contains("Press f to start"),
        "{screen}"
    );
}

#[test]
fn classify_tab_shows_curves_big_accuracy_confusion_and_p_positive() {
    use gptdash::protocol::{EpochMetrics, FinetuneInfo, FinetuneSummary, ReliabilityBin, RunDone};
    let mut app = App::new(Settings::default());
    app.tab = Tab::Classify;
    app.update(Msg::Worker(Event::Start(RunStart::Finetune(Box::new(
        FinetuneInfo {
            device: "cpu".into(),
            threads: 2,
            model: "checkpoints/small".into(),
            params: 881_922,
            data: "train.tsv".into(),
            samples: 1200,
            train_examples: 960,
            val_examples: 240,
            train_positive: 0.554,
            val_positive: 0.554,
            epochs: 5,
            out: "checkpoints/classifier-sst2-20261201-1".into(),
        },
    )))));
    // Before the first epoch the result box says so in full, wrapped, not cut off.
    let small = render(&app, 80, 24);
    let rows: Vec<Vec<char>> = small.lines().map(|l| l.chars().collect()).collect();
    let (r, c) = rows
        .iter()
        .enumerate()
        .find_map(|(r, row)| {
            let line: String = row.iter().collect();
            line.find("validation")
                .map(|byte| (r, line[..byte].chars().count()))
        })
        .unwrap_or_else(|| panic!("{small}"));
    // The box's column from there on, over the next rows, reads the whole sentence.
    let column: Vec<String> = rows[r..(r + 4).min(rows.len())]
        .iter()
        .map(|row| {
            row.iter()
                .skip(c)
                .take_while(|&&ch| ch != '│')
                .collect::<String>()
        })
        .collect();
    let joined = column
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        joined.contains("validation accuracy appears after the first epoch"),
        "{joined:?}\n{small}"
    );
    for e in 1..=3 {
        app.update(Msg::Worker(Event::Epoch(EpochMetrics {
            epoch: e,
            train_loss: 0.7 - 0.1 * e as f64,
            train_acc: 0.6 + 0.05 * e as f64,
            val_loss: 0.65 - 0.05 * e as f64,
            val_acc: 0.7 + 0.03 * e as f64,
            secs: 2.0,
        })));
    }
    app.update(Msg::Worker(Event::Done(RunDone::Finetune(
        FinetuneSummary {
            best_epoch: 3,
            val_acc: 0.8125,
            val_loss: 0.5,
            confusion: [[90, 18], [27, 105]],
            eval_acc: None,
            checkpoint: "checkpoints/classifier-sst2".into(),
            ece: 0.123,
            reliability: (0..10)
                .map(|b| ReliabilityBin {
                    lo: b as f64 / 10.0,
                    hi: (b + 1) as f64 / 10.0,
                    count: if b >= 5 { 40 } else { 0 },
                    confidence: b as f64 / 10.0 + 0.05,
                    accuracy: 0.6,
                })
                .collect(),
            ..Default::default()
        },
    ))));
    app.update(Msg::Worker(Event::Classified {
        text: "a joy".into(),
        label: "positive".into(),
        p_positive: 0.93,
        read_as: None,
    }));
    let screen = render(&app, 140, 40);
    shows_all(
        &screen,
        &[
            "accuracy per epoch",
            "loss per epoch",
            "best epoch 3",
            "train 960 (55.4% pos.)",
            "negative    90     18",
            "positive    27    105",
            "P(positive) = 0.930",
            "positive: a joy",
        ],
    );
    // 0.812 in block digits: the top rows of 0 . 8 1 2, and the bottom row with the point.
    assert!(screen.contains("███     ███  █  ███"), "{screen}");
    assert!(screen.contains("███  █  ███ ███ ███"), "{screen}");
    // The reliability diagram: titled with the ECE, the base the run fine-tuned.
    shows_all(
        &screen,
        &[
            "reliability (ECE 0.123)",
            "confidence",
            "base checkpoints/small",
        ],
    );
    let chart_rows: Vec<&str> = screen
        .lines()
        .skip_while(|l| !l.contains("reliability (ECE"))
        .take(12)
        .collect();
    assert!(
        chart_rows.iter().any(|l| l.contains('█')),
        "the bins are drawn:\n{screen}"
    );
}

#[test]
fn classify_tab_chooses_its_base_by_keys() {
    let mut app = App::new(Settings::default());
    app.update(key('3'));
    let screen = render(&app, 120, 40);
    shows_all(&screen, &["base: the model held", "b: model held / gpt2"]);
    app.update(key('b'));
    let screen = render(&app, 120, 40);
    shows_all(&screen, &["base: gpt2 (Hugging Face hub)"]);
    app.update(key('B'));
    let screen = render(&app, 120, 40);
    shows_all(
        &screen,
        &["base: a checkpoint folder or a hub model id", "gpt2█"],
    );
    // Esc leaves the base as it was.
    app.update(Msg::Key(crossterm::event::KeyEvent::new(
        crossterm::event::KeyCode::Esc,
        crossterm::event::KeyModifiers::NONE,
    )));
    assert_eq!(app.shared.settings.finetune.base, "gpt2");
    let screen = render(&app, 120, 40);
    assert!(!screen.contains("gpt2█"), "{screen}");
}

fn arrow(code: crossterm::event::KeyCode) -> Msg {
    Msg::Key(crossterm::event::KeyEvent::new(
        code,
        crossterm::event::KeyModifiers::NONE,
    ))
}

/// The Inspect tab shown after 120 steps, answering its first request with an example
/// report of `tokens` tokens, 4 layers × 4 heads.
fn inspecting_app(tokens: usize) -> App {
    use gptdash::protocol::{Command, InspectReport};
    let mut app = trained_app();
    let asked = app.update(key('4'));
    assert_eq!(app.tab, Tab::Inspect);
    assert!(
        matches!(asked[..], [Command::Inspect { request: 1, .. }]),
        "{asked:?}"
    );
    app.update(Msg::Worker(Event::Inspected(Box::new(
        InspectReport::example(tokens, 4, 4),
    ))));
    app
}

#[test]
fn inspect_tab_draws_map_lens_and_text_and_follows_the_cursor() {
    use crossterm::event::KeyCode;
    use gptdash::tui::theme;
    let mut app = inspecting_app(12);
    let screen = render(&app, 200, 60);
    shows_all(
        &screen,
        &[
            "4 Inspect",
            "text: test example 1 of the corpus · step 100",
            "The cat sat on the mat.",
            "#12 \" the\"  loss 1.50 nats, rank 2  pinned (step 50) 2.20, Δ -0.70",
            "attention · layer 1/4 head 1/4",
            "\" the\" looks at:  \" the\" 0.57  \" on\" 0.34",
            "logit lens",
            "after \" the\" (#12), layer by layer",
            "L4",
            "next",
            "[ ] head",
        ],
    );
    // Heatmap cells: half blocks, and the cursor's row in its own colours.
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).unwrap();
    terminal.draw(|f| view::draw(f, &app)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    let cells: Vec<_> = buffer
        .content()
        .iter()
        .filter(|c| c.symbol() == "▀")
        .collect();
    assert!(cells.len() > 100, "{} half-block cells", cells.len());
    assert!(cells
        .iter()
        .any(|c| c.fg == theme::heat_cursor(0.0) || c.bg == theme::heat_cursor(0.0)));
    assert!(cells.iter().any(|c| c.fg == theme::MASKED));

    // Left moves the cursor: the values shown are the new token's.
    app.update(arrow(KeyCode::Left));
    let screen = render(&app, 200, 60);
    shows_all(&screen, &["#11 \" on\"", "\" on\" looks at:"]);
    // Head 2 of layer 3 looks one token back.
    app.update(key(']'));
    app.update(arrow(KeyCode::Down));
    app.update(arrow(KeyCode::Down));
    let screen = render(&app, 200, 60);
    shows_all(
        &screen,
        &["layer 3/4 head 2/4", "\" on\" looks at:  \" sat\" 0.42"],
    );
    // The overview: every layer and head, the selected one named.
    app.update(key('v'));
    let screen = render(&app, 200, 60);
    shows_all(
        &screen,
        &["every layer × head (selected: layer 3 head 2", "H4", "L4"],
    );
    // d colours by the change since the pin; the title says so.
    app.update(key('d'));
    let screen = render(&app, 200, 60);
    shows_all(&screen, &["colour: loss change since the pin"]);
    // It still lays out at the smallest size.
    let small = render(&app, 80, 24);
    shows_all(&small, &["attention", "logit lens"]);
}

/// The inspection the app asks for last, and its request number.
fn asked(commands: &[gptdash::protocol::Command]) -> (u64, gptdash::protocol::InspectAsk) {
    use gptdash::protocol::Command;
    match commands.last() {
        Some(Command::Inspect { ask, request, .. }) => (*request, ask.clone()),
        other => panic!("no inspection asked: {other:?}"),
    }
}

#[test]
fn inspect_tab_draws_each_causal_view_and_asks_only_for_what_it_shows() {
    use gptdash::protocol::{InspectReport, PatchAsk};
    // The worker's answer: only what was asked for.
    let answer = |app: &mut App, (request, ask): (u64, gptdash::protocol::InspectAsk)| {
        let mut report = InspectReport::example_probed(12, 4, 4);
        report.request = Some(request);
        if ask.ablation.heads.is_empty() && ask.ablation.mlps.is_empty() {
            report.ablation = None;
        }
        if !ask.ablation_map {
            report.ablation_map = None;
        }
        if !ask.attribution {
            report.attribution.clear();
        }
        if ask.patch.is_none() {
            report.patching = None;
        }
        if ask.anatomy.is_none() {
            report.anatomy = None;
        }
        app.update(Msg::Worker(Event::Inspected(Box::new(report))))
    };
    let mut app = inspecting_app(12);
    // a removes the selected head: the next pass is asked without it.
    let (request, ask) = asked(&app.update(key('a')));
    assert_eq!(ask.ablation.heads, vec![(0, 0)]);
    assert!(!ask.ablation_map && !ask.attribution && ask.patch.is_none() && ask.anatomy.is_none());
    answer(&mut app, (request, ask.clone()));
    let screen = render(&app, 200, 60);
    shows_all(
        &screen,
        &[
            "colour: loss change from the removal",
            "without the removal 1.20, Δ +0.30",
            "from removing head 1.1 (zero)",
            "next after #12 ·the: removed │ not removed",
        ],
    );
    // v: all heads, then the ablation map.
    app.update(key('v'));
    let (request, ask) = asked(&app.update(key('v')));
    assert!(ask.ablation_map && !ask.attribution);
    answer(&mut app, (request, ask.clone()));
    let screen = render(&app, 200, 60);
    shows_all(
        &screen,
        &[
            "ablation map · loss increase (nats) when one part is removed (zero)",
            "head 4",
            "MLP",
            "matters most on this text: head",
        ],
    );
    // Patching needs a corrupted text first: c types it.
    let sent = app.update(key('v'));
    assert!(sent.is_empty(), "{sent:?}");
    shows_all(
        &render(&app, 200, 60),
        &["c types the corrupted text (TEXT, or TEXT | ANSWER | WRONG)"],
    );
    app.update(key('c'));
    for c in "A dog sat on the mat. | mat | rug".chars() {
        app.update(key(c));
    }
    let (request, ask) = asked(&app.update(arrow(crossterm::event::KeyCode::Enter)));
    assert_eq!(
        ask.patch,
        Some(PatchAsk {
            corrupted: "A dog sat on the mat.".into(),
            answer: Some("mat".into()),
            wrong: Some("rug".into()),
        })
    );
    answer(&mut app, (request, ask.clone()));
    let screen = render(&app, 200, 60);
    shows_all(
        &screen,
        &[
            "patching into \"A dog sat on the mat.\"",
            "clean 3.00, corrupted -1.00",
            "residual stream entering each layer, at each position",
            "each head's output (every position)",
        ],
    );
    // Attribution of the cursor's next token.
    let (request, ask) = asked(&app.update(key('v')));
    assert!(ask.attribution && ask.patch.is_none());
    answer(&mut app, (request, ask.clone()));
    let screen = render(&app, 200, 60);
    shows_all(
        &screen,
        &[
            "attribution of",
            "the model's top prediction",
            "token embedding",
            "checked: the 27 parts sum to the logit within",
        ],
    );
    // The model and the data views.
    let (request, ask) = asked(&app.update(key('v')));
    assert_eq!(ask.anatomy, Some(0));
    answer(&mut app, (request, ask.clone()));
    let screen = render(&app, 200, 60);
    shows_all(
        &screen,
        &[
            "model · 1,000,000 parameters",
            "attn.c_attn",
            "[384, 128]",
            "+0.000 ± 0.020",
        ],
    );
    app.update(key('v'));
    let screen = render(&app, 200, 60);
    shows_all(
        &screen,
        &[
            "X (input)",
            "Y (target)",
            "This pair trains 11 predictions at once",
            "-100: padding, as in a batch with a longer row",
        ],
    );
    let (request, ask) = asked(&app.update(key('n')));
    assert_eq!(ask.anatomy, Some(1));
    // Every view lays out at the smallest size.
    let mut last = (request, ask);
    for _ in 0..7 {
        let sent = app.update(key('v'));
        if !sent.is_empty() {
            last = asked(&sent);
        }
        answer(&mut app, last.clone());
        let _ = render(&app, 80, 24);
    }
}

#[test]
fn inspect_tab_long_texts_scroll_with_the_cursor() {
    use crossterm::event::KeyCode;
    let mut app = inspecting_app(64);
    app.update(arrow(KeyCode::Home));
    let screen = render(&app, 120, 40);
    shows_all(&screen, &["#1 \"The\"", "(the first token has no loss)"]);
    for _ in 0..40 {
        app.update(arrow(KeyCode::Right));
    }
    let screen = render(&app, 120, 40);
    shows_all(&screen, &["#41 \" mat\"", "after \" mat\" (#41)"]);
}

#[test]
fn inspect_tab_before_any_model_says_what_to_do() {
    let mut app = App::new(Settings::default());
    assert!(app.update(key('4')).is_empty(), "nothing to inspect yet");
    let screen = render(&app, 100, 30);
    shows_all(
        &screen,
        &["Look inside the model", "no model yet: train one"],
    );
}

#[test]
fn q_during_a_run_asks_in_the_hint_bar() {
    let mut app = trained_app();
    assert!(app.update(key('q')).is_empty());
    let screen = render(&app, 150, 40);
    shows_all(
        &screen,
        &["a run is in progress: q stops it (training saves a checkpoint"],
    );
    app.update(key('x'));
    let screen = render(&app, 150, 40);
    assert!(!screen.contains("a run is in progress"), "{screen}");
}

#[test]
fn a_long_prompt_scrolls_to_keep_the_cursor_in_view() {
    let mut app = App::new(Settings::default());
    app.update(key('2'));
    let long = format!("{}the very end", "word ".repeat(40));
    for c in long.chars() {
        app.update(key(c));
    }
    let screen = render(&app, 80, 24);
    shows_all(&screen, &["the very end"]);
}

/// A run on CUDA shows the GPU panel: NVML's reading, or why there is none.
#[test]
fn the_gpu_panel_shows_a_reading_or_why_there_is_none() {
    use gptdash::protocol::{GpuReading, GpuStatus};
    let mut app = App::new(Settings::default());
    app.update(Msg::Worker(Event::Start(RunStart::Train(Box::new(
        RunInfo {
            device: "cuda:0".into(),
            ..RunInfo::example(200)
        },
    )))));
    let screen = render(&app, 150, 45);
    shows_all(&screen, &[" GPU ", "waiting for a reading"]);
    app.update(Msg::Worker(Event::Gpu(GpuStatus {
        reading: Some(GpuReading {
            name: "NVIDIA H200".into(),
            utilization: Some(87),
            memory_used_mib: 12.5 * 1024.0,
            memory_total_mib: 140.0 * 1024.0,
            temperature_c: Some(61),
            power_w: Some(312.4),
        }),
        unavailable: None,
    })));
    let screen = render(&app, 150, 45);
    shows_all(
        &screen,
        &["NVIDIA H200", "87%", "12.5 / 140.0 GiB", "61 °C · 312 W"],
    );
    app.update(Msg::Worker(Event::Gpu(GpuStatus {
        reading: None,
        unavailable: Some("NVML is not available (libnvidia-ml.so not found)".into()),
    })));
    let screen = render(&app, 150, 45);
    shows_all(&screen, &["no GPU readings:", "NVML is not"]);
    // A CPU run has no panel.
    let cpu = trained_app();
    assert!(!render(&cpu, 150, 45).contains(" GPU "));
}
