//! Frame time at 200×60 (target ≤ 5 ms): the Train tab with 100,000 loss points; the
//! Inspect tab with a 64 × 64 attention map (and every layer × head as small maps); the
//! Runs tab with 20 runs × 100,000 points selected (ten pairs of seeds).
use criterion::{criterion_group, criterion_main, Criterion};
use gptdash::config::Settings;
use gptdash::protocol::{Event, InspectReport, RunInfo, RunStart, StepMetrics};
use gptdash::tui::app::{App, Msg};
use gptdash::tui::view;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

/// One training step's event, 100 tokens in 20 ms.
fn step(iter: u64, loss: f64) -> Event {
    Event::Iter(StepMetrics {
        iter,
        loss,
        iter_ms: 20.0,
        tokens_per_s: 5000.0,
        lr: 1e-3,
        grad_norm: 0.7,
        tokens: 100,
        gpu_mib: None,
    })
}

fn app_with_history(points: u64) -> App {
    let mut app = App::new(Settings::default());
    app.update(Msg::Worker(Event::Start(RunStart::Train(Box::new(
        RunInfo::example(points),
    )))));
    for i in 1..=points {
        let loss = 1.5 + 4.0 / (1.0 + i as f64 / 500.0) + 0.1 * ((i as f64) * 0.37).sin();
        app.update(Msg::Worker(step(i, loss)));
        if i % 1000 == 0 {
            app.update(Msg::Worker(Event::Eval {
                iter: i,
                test_loss: loss + 0.1,
            }));
        }
    }
    app
}

fn render(c: &mut Criterion) {
    let app = app_with_history(100_000);
    let mut smooth = app.clone();
    smooth.train.smoothing = 0.9;
    smooth.train.log_scale = true;
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).expect("test backend");
    c.bench_function("train tab 200x60, 100k points", |b| {
        b.iter(|| terminal.draw(|f| view::draw(f, &app)).map(|_| ()))
    });
    c.bench_function("train tab 200x60, 100k points, EMA + log scale", |b| {
        b.iter(|| terminal.draw(|f| view::draw(f, &smooth)).map(|_| ()))
    });
}

/// The Inspect tab showing a 64-token report of a gpt-mini-shaped model (6 × 6) in its
/// `view`-th view (0: one head; `v` steps through them), every probe filled in.
fn inspecting(view: usize) -> App {
    let mut app = app_with_history(1_000);
    app.update(Msg::Worker(Event::State {
        state: gptdash::protocol::WorkerState::Finished,
    }));
    let key = |c: char| {
        Msg::Key(crossterm::event::KeyEvent::new(
            crossterm::event::KeyCode::Char(c),
            crossterm::event::KeyModifiers::NONE,
        ))
    };
    app.update(key('4'));
    for _ in 0..view {
        app.update(key('v'));
    }
    app.update(Msg::Worker(Event::Inspected(Box::new(
        InspectReport::example_probed(64, 6, 6),
    ))));
    app
}

fn render_inspect(c: &mut Criterion) {
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).expect("test backend");
    let views = [
        "64x64 map",
        "6x6 heads overview of 64 tokens",
        "ablation map",
        "patching maps",
        "attribution",
        "model",
        "data",
    ];
    for (i, name) in views.iter().enumerate() {
        let app = inspecting(i);
        c.bench_function(&format!("inspect tab 200x60, {name}"), |b| {
            b.iter(|| terminal.draw(|f| view::draw(f, &app)).map(|_| ()))
        });
    }
}

/// The Runs tab with `runs` runs of `points` steps each, all selected; runs 2k and 2k+1
/// differ only by seed (drawn as one mean line with a band) when `seeds`.
fn runs_tab(runs: usize, points: u64, seeds: bool) -> App {
    use gptdash::protocol::{RunKind, RunRecord};
    use gptdash::runs::{Found, RunHistory, RunSummary, RunsMsg};
    let key = |c: char| {
        Msg::Key(crossterm::event::KeyEvent::new(
            crossterm::event::KeyCode::Char(c),
            crossterm::event::KeyModifiers::NONE,
        ))
    };
    let mut app = App::new(Settings::default());
    app.update(key('5'));
    let mut list = Vec::new();
    let mut histories = Vec::new();
    for r in 0..runs {
        let mut settings = Settings::default();
        settings.train.learning_rate = 1e-3 * (1 + if seeds { r / 2 } else { r }) as f64;
        settings.train.seed = r as u64;
        let mut h = RunHistory::default();
        h.apply(Event::Run(Box::new(RunRecord {
            kind: RunKind::LanguageModel,
            started: 1_796_000_000 + r as u64,
            settings: Some(Box::new(settings)),
            finetune: None,
            resumed_at: 0,
        })));
        h.apply(Event::Start(RunStart::Train(Box::new(RunInfo::example(
            points,
        )))));
        for i in 1..=points {
            let loss = 1.5
                + (4.0 + r as f64 * 0.1) / (1.0 + i as f64 / 500.0)
                + 0.1 * ((i as f64) * 0.37 + r as f64).sin();
            h.apply(step(i, loss));
        }
        let found = Found {
            name: format!("sweep/lr={}_seed={r}", r / 2),
            dir: format!("checkpoints/sweep/run-{r}").into(),
        };
        list.push(RunSummary::of_locked(&found, &h, false));
        histories.push((found.dir, h));
    }
    app.update(Msg::Runs(RunsMsg::Listed(list)));
    // Selected first; the reader then sends the histories it follows.
    for _ in 0..runs {
        app.update(key(' '));
        app.update(Msg::Key(crossterm::event::KeyEvent::new(
            crossterm::event::KeyCode::Down,
            crossterm::event::KeyModifiers::NONE,
        )));
    }
    for (dir, h) in histories {
        app.update(Msg::Runs(RunsMsg::History(dir, Box::new(h), false)));
    }
    assert_eq!(app.runs.selected.len(), runs);
    app
}

fn render_runs(c: &mut Criterion) {
    let apart = runs_tab(20, 100_000, false);
    let grouped = runs_tab(20, 100_000, true);
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).expect("test backend");
    c.bench_function("runs tab 200x60, 20 runs x 100k points, EMA", |b| {
        b.iter(|| terminal.draw(|f| view::draw(f, &apart)).map(|_| ()))
    });
    c.bench_function(
        "runs tab 200x60, 10 seed pairs x 100k points (mean ± std bands)",
        |b| b.iter(|| terminal.draw(|f| view::draw(f, &grouped)).map(|_| ())),
    );
}

criterion_group!(benches, render, render_inspect, render_runs);
criterion_main!(benches);
