//! Drawing the frame around the tabs: the tab bar with the worker's state, the active
//! tab (each tab draws itself), the key hints and the help overlay. Pure functions of
//! [`App`] state.
mod help;

use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs};
use ratatui::Frame;

use super::app::App;
use super::tabs::Tab;
use super::theme;

/// Smallest terminal the dashboard lays out in.
pub(crate) const MIN_WIDTH: u16 = 80;
pub(crate) const MIN_HEIGHT: u16 = 24;

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        draw_too_small(frame, area);
        return;
    }
    let [top, body, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_tabs(frame, app, top);
    app.page().draw(frame, body, &app.shared);
    frame.render_widget(Paragraph::new(key_hints(app)), bottom);
    if app.show_help {
        help::draw(frame, area, &app.help_scopes());
    }
}

/// What a terminal below the minimum shows: as much of the message as fits, the size
/// line first when only one line fits.
fn draw_too_small(frame: &mut Frame, area: Rect) {
    let size = Line::from(format!(
        "Terminal too small: {}×{}, need at least {MIN_WIDTH}×{MIN_HEIGHT}",
        area.width, area.height
    ));
    let quit = Line::from("enlarge the window, or q to quit");
    let text = if area.height >= 2 {
        vec![size, quit]
    } else {
        vec![size]
    };
    let height = (text.len() as u16).min(area.height);
    let rect = Rect {
        x: area.x,
        y: area.y + area.height.saturating_sub(height) / 2,
        width: area.width,
        height,
    };
    frame.render_widget(
        Paragraph::new(text)
            .alignment(Alignment::Center)
            .wrap(ratatui::widgets::Wrap { trim: true }),
        rect,
    );
}

fn draw_tabs(frame: &mut Frame, app: &App, area: Rect) {
    let titles: Vec<&str> = Tab::all().map(Tab::title).collect();
    let state: &'static str = app.shared.state.into();
    let status = match &app.train.watch {
        // Watching: the run's phase, and the model held here once one is loaded.
        Some(watch) => {
            let mut spans = vec![
                Span::styled("gptdash watch ", theme::title()),
                Span::raw(watch.run.to_string()),
            ];
            if app.shared.state != crate::protocol::WorkerState::Idle {
                spans.push(Span::styled(format!(" · {state}"), theme::muted()));
            }
            spans.push(Span::styled("  ? help  q quit", theme::muted()));
            Line::from(spans)
        }
        None => Line::from(vec![
            Span::styled("gptdash ", theme::title()),
            Span::raw(state),
            Span::styled("  ? help  q quit", theme::muted()),
        ]),
    };
    let [left, right] = Layout::horizontal([
        Constraint::Min(0),
        Constraint::Length(status.width().max(40) as u16),
    ])
    .areas(area);
    frame.render_widget(
        Tabs::new(titles)
            .select(app.tab as usize)
            .highlight_style(theme::selected_tab())
            .divider("|"),
        left,
    );
    frame.render_widget(Paragraph::new(status).alignment(Alignment::Right), right);
}

/// The hint bar: the bindings of the active tab's current key scope (or the question
/// that `q` during a run asks).
fn key_hints(app: &App) -> Line<'static> {
    if app.confirm_quit {
        return Line::from(vec![
            Span::styled(" a run is in progress: ", theme::error()),
            Span::styled("q", theme::key()),
            Span::raw(" stops it (training saves a checkpoint, fine-tuning keeps its best epoch) and quits; any other key carries on"),
        ]);
    }
    let mut spans = Vec::new();
    for (k, what) in app.page().scope().hints() {
        spans.push(Span::styled(format!(" {k}"), theme::key()));
        spans.push(Span::raw(format!(" {what} ")));
    }
    Line::from(spans)
}
