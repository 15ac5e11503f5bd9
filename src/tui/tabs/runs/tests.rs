use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::Terminal;

use super::*;
use crate::config::Settings;
use crate::protocol::{RunInfo, RunKind, RunRecord, RunStart, StepMetrics};
use crate::tui::theme;

/// A finished language-model run with `settings`, its loss falling from `from`.
fn history(settings: &Settings, from: f64, steps: u64) -> RunHistory {
    let mut h = RunHistory::default();
    h.apply(Event::Run(Box::new(RunRecord {
        kind: RunKind::LanguageModel,
        started: 1_796_000_000,
        settings: Some(Box::new(settings.clone())),
        finetune: None,
        resumed_at: 0,
    })));
    h.apply(Event::Start(RunStart::Train(Box::new(RunInfo::example(
        steps,
    )))));
    for i in 1..=steps {
        h.apply(Event::Iter(StepMetrics {
            iter: i,
            loss: from / (1.0 + i as f64 / 20.0),
            iter_ms: 10.0,
            tokens_per_s: 1e4,
            lr: 1e-3,
            grad_norm: 1.0,
            tokens: 100,
            gpu_mib: None,
        }));
    }
    h
}

/// A tab listing three runs: two that differ only by seed, one with another learning
/// rate; all selected.
fn tab() -> RunsTab {
    let base = Settings::default();
    let mut seed2 = base.clone();
    seed2.train.seed = 7;
    let mut other = base.clone();
    other.train.learning_rate = 3e-3;
    let runs = [
        ("sweep/lr=1e-3_seed=1337", history(&base, 6.0, 100)),
        ("sweep/lr=1e-3_seed=7", history(&seed2, 5.0, 100)),
        ("sweep/lr=3e-3_seed=1337", history(&other, 3.0, 100)),
    ];
    let mut t = RunsTab::new();
    let list = runs
        .iter()
        .map(|(name, h)| {
            let found = Found {
                name: name.to_string(),
                dir: PathBuf::from("checkpoints").join(name),
            };
            RunSummary::of_locked(&found, h, false)
        })
        .collect();
    t.on_runs(RunsMsg::Listed(list));
    // Selected first; the reader then sends the histories it follows.
    t.sort = SortKey::Name;
    let mut shared = Shared::new(Settings::default());
    for _ in 0..3 {
        t.on_action(Action::ToggleSelect, &mut shared);
        t.on_action(Action::ScrollDown, &mut shared);
    }
    for (name, h) in runs {
        t.on_runs(RunsMsg::History(
            PathBuf::from("checkpoints").join(name),
            Box::new(h),
            false,
        ));
    }
    t
}

fn render(t: &RunsTab, width: u16, height: u16) -> ratatui::buffer::Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    let shared = Shared::new(Settings::default());
    terminal.draw(|f| t.draw(f, f.area(), &shared)).unwrap();
    terminal.backend().buffer().clone()
}

fn text(buf: &ratatui::buffer::Buffer) -> String {
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The colour of the first cell showing `needle`'s first character, on the row where
/// `needle` is.
fn color_at(buf: &ratatui::buffer::Buffer, needle: &str) -> Color {
    let screen = text(buf);
    for (y, line) in screen.lines().enumerate() {
        if let Some(col) = line.find(needle) {
            let x = line[..col].chars().count() as u16;
            return buf[(x, y as u16)].fg;
        }
    }
    panic!("{needle:?} not on screen:\n{screen}");
}

#[test]
fn seeds_are_one_series_with_a_band_and_each_series_has_its_colour_in_the_legend() {
    let t = tab();
    assert_eq!(t.chart.series.len(), 2, "the two seeds are one series");
    let group = &t.chart.series[0];
    assert_eq!(group.runs, 2);
    assert!(!group.band.is_empty());
    let buf = render(&t, 200, 60);
    let screen = text(&buf);
    assert!(screen.contains("selected (legend)"), "{screen}");
    assert!(
        screen.contains("sweep/lr=1e-3_seed=1337 +1 seeds"),
        "{screen}"
    );
    assert!(screen.contains("sweep/lr=3e-3_seed=1337"), "{screen}");
    // Each series's legend entry in its own colour, and the two differ.
    let a = color_at(&buf, "sweep/lr=1e-3_seed=1337 +1");
    let b = color_at(&buf, "━━ sweep/lr=3e-3");
    assert_eq!(a, theme::RUNS[t.chart.series[0].color]);
    assert_eq!(b, theme::RUNS[t.chart.series[1].color]);
    assert_ne!(a, b);
    // The band: faint cells of the group's colour in the chart.
    let band_cells = (0..buf.area.height)
        .flat_map(|y| (0..buf.area.width).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let c = &buf[(x, y)];
            c.fg == theme::faint(a)
        })
        .count();
    assert!(band_cells > 20, "{band_cells} band cells");
    // The line of each series is drawn in its colour too.
    let line_cells = |color: Color| {
        (0..buf.area.height)
            .flat_map(|y| (0..buf.area.width).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let c = &buf[(x, y)];
                c.fg == color && c.symbol() != " "
            })
            .count()
    };
    assert!(line_cells(a) > 20 && line_cells(b) > 20);
}

#[test]
fn the_diff_table_names_the_settings_that_differ() {
    let t = tab();
    let keys: Vec<&str> = t.diff.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["train.learning_rate", "train.seed"]);
    let screen = text(&render(&t, 200, 60));
    assert!(screen.contains("settings that differ"), "{screen}");
    // A row per run, a column per setting.
    let header = screen
        .lines()
        .find(|l| l.contains("learning_rate") && l.contains("seed"))
        .unwrap_or_else(|| panic!("{screen}"));
    assert!(header.contains("run"), "{header}");
    // The diff is the rightmost box: the text after each line's last border.
    let row = |run: &str| {
        screen
            .lines()
            .map(|l| l.rsplit("││").next().unwrap_or(l))
            .find(|l| l.contains(run) && l.contains("0.00"))
            .unwrap_or_else(|| panic!("{run}:\n{screen}"))
            .to_string()
    };
    let a = row("lr=1e-3_seed=1337");
    assert!(a.contains("0.001") && a.contains("1337"), "{a}");
    let b = row("lr=1e-3_seed=7");
    assert!(b.contains("0.001") && b.contains(" 7"), "{b}");
    let c = row("lr=3e-3_seed=1337");
    assert!(c.contains("0.003") && c.contains("1337"), "{c}");
}

#[test]
fn the_list_filters_sorts_and_fits_80_by_24() {
    let mut t = tab();
    let mut shared = Shared::new(Settings::default());
    t.on_action(Action::EditPrompt, &mut shared);
    assert_eq!(t.scope(), Scope::RunsFilter);
    for c in "3e-3".chars() {
        t.field().unwrap().insert(c);
    }
    assert_eq!(t.shown().len(), 1);
    t.on_action(Action::Cancel, &mut shared);
    assert_eq!(t.shown().len(), 3);
    // By name, then the other way.
    t.on_action(Action::NextSort, &mut shared);
    assert!(t.reverse);
    assert_eq!(t.shown()[0].name, "sweep/lr=3e-3_seed=1337");
    let screen = text(&render(&t, 80, 24));
    assert!(screen.contains("runs (3)"), "{screen}");
    // Ungrouped, x by tokens: three series, over the tokens' range.
    t.on_action(Action::GroupSeeds, &mut shared);
    t.on_action(Action::NextXAxis, &mut shared);
    assert_eq!(t.chart.series.len(), 3);
    assert_eq!(t.chart.x_bounds[1], 10_000.0);
    // Enter opens the run under the cursor.
    let commands = t.on_action(Action::Branch, &mut shared);
    assert!(matches!(commands.as_slice(), [Command::Load(_)]));
}

#[test]
fn what_the_tab_follows_is_its_selection_and_cursor_and_only_while_shown() {
    let t = tab();
    let shared = Shared::new(Settings::default());
    let sub = t.subscription(true, &shared);
    assert!(sub.visible);
    assert_eq!(sub.follow.len(), 3);
    assert_eq!(sub.roots, vec![PathBuf::from("checkpoints")]);
    assert!(!t.subscription(false, &shared).visible);
}
