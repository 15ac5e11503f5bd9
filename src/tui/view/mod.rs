//! Drawing: pure functions of [`App`] state.
mod classify;
mod generate;
mod help;
mod train;

use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Dataset, GraphType, Paragraph, Tabs};
use ratatui::Frame;

use super::app::{App, Tab};
use super::theme;
use crate::worker::WorkerState;

/// Smallest terminal the dashboard lays out in.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = vec![
            Line::from("Terminal too small"),
            Line::from(format!(
                "{}×{}, need at least {MIN_WIDTH}×{MIN_HEIGHT}",
                area.width, area.height
            )),
            Line::from("enlarge the window, or q to quit"),
        ];
        let y = area.height.saturating_sub(3) / 2;
        let rect = Rect {
            x: area.x,
            y: area.y + y,
            width: area.width,
            height: area.height.min(3),
        };
        frame.render_widget(Paragraph::new(text).alignment(Alignment::Center), rect);
        return;
    }
    let [top, body, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_tabs(frame, app, top);
    match app.tab {
        Tab::Train => train::draw(frame, app, body),
        Tab::Generate => generate::draw(frame, app, body),
        Tab::Classify => classify::draw(frame, app, body),
    }
    frame.render_widget(Paragraph::new(key_hints(app)), bottom);
    if app.show_help {
        help::draw(frame, area);
    }
}

fn state_label(state: WorkerState) -> &'static str {
    match state {
        WorkerState::Idle => "idle",
        WorkerState::Preparing => "preparing",
        WorkerState::Training => "training",
        WorkerState::Paused => "paused",
        WorkerState::Finished => "finished",
        WorkerState::Loaded => "model loaded",
        WorkerState::FineTuning => "fine-tuning",
    }
}

fn draw_tabs(frame: &mut Frame, app: &App, area: Rect) {
    let titles: Vec<&str> = Tab::ALL.iter().map(|t| t.title()).collect();
    let selected = Tab::ALL.iter().position(|&t| t == app.tab).unwrap_or(0);
    let [left, right] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(40)]).areas(area);
    frame.render_widget(
        Tabs::new(titles)
            .select(selected)
            .highlight_style(theme::selected_tab())
            .divider("|"),
        left,
    );
    let status = Line::from(vec![
        Span::styled("gptdash ", theme::title()),
        Span::raw(state_label(app.train.state)),
        Span::styled("  ? help  q quit", theme::muted()),
    ]);
    frame.render_widget(Paragraph::new(status).alignment(Alignment::Right), right);
}

fn key_hints(app: &App) -> Line<'static> {
    let hints: &[(&str, &str)] = match app.tab {
        Tab::Train if app.train.input.is_some() => &[("Enter", "use this path"), ("Esc", "cancel")],
        Tab::Train => &[
            ("space", "start/pause/resume"),
            ("x", "stop"),
            ("s", "save"),
            ("c", "corpus"),
            ("o", "open checkpoint"),
            ("p", "preset"),
            ("l", "log scale"),
            ("e", "smoothing"),
        ],
        Tab::Generate if app.generate.editing => &[
            ("Enter", "generate"),
            ("↑/↓", "history"),
            ("Esc", "to grid"),
            ("Tab", "next tab"),
        ],
        Tab::Generate => &[
            ("←→↑↓", "grid"),
            ("Enter", "branch here"),
            ("i", "edit prompt"),
            ("g", "regenerate"),
            ("t/T", "temp"),
            ("n/N", "tokens"),
            ("m", "greedy/sample"),
            ("k/K", "top-k"),
            ("r", "seed"),
        ],
        Tab::Classify if app.classify.editing => {
            &[("Enter", "classify"), ("Esc", "leave the text box")]
        }
        Tab::Classify => &[
            ("f", "fine-tune on SST-2"),
            ("space", "pause/resume"),
            ("x", "stop"),
            ("i", "classify a sentence"),
        ],
    };
    let mut spans = Vec::new();
    for (k, what) in hints {
        spans.push(Span::styled(format!(" {k}"), theme::key()));
        spans.push(Span::raw(format!(" {what} ")));
    }
    Line::from(spans)
}

/// A curve for a `Chart`: a braille line in `color`.
pub(super) fn line_series<'a>(
    name: &'a str,
    color: ratatui::style::Color,
    data: &'a [(f64, f64)],
) -> Dataset<'a> {
    Dataset::default()
        .name(name)
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(ratatui::style::Style::default().fg(color))
        .data(data)
}

/// `12.3s`, `4m05s`, `1h02m`.
pub fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s < 60 {
        format!("{secs:.1}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}
