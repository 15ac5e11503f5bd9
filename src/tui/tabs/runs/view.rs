//! Drawing the Runs tab: the list (left), the chart of the selected runs (right), and
//! under the chart the legend and the settings that differ. A pure function of the
//! tab's state; the chart's series are computed already ([`super::chart`]).
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Borders, Cell, Chart, Dataset, GraphType, Paragraph, Row, Table,
};
use ratatui::Frame;

use super::RunsTab;
use crate::protocol::RunKind;
use crate::runs::Status;
use crate::tui::theme;

pub(crate) fn draw(frame: &mut Frame, t: &RunsTab, area: Rect) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(42), Constraint::Percentage(58)]).areas(area);
    draw_list(frame, t, left);
    let [chart, below] =
        Layout::vertical([Constraint::Percentage(62), Constraint::Percentage(38)]).areas(right);
    draw_chart(frame, t, chart);
    let [legend, diff] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(below);
    draw_legend(frame, t, legend);
    draw_diff(frame, t, diff);
}

/// The end of `text` in at most `width` characters, `…` marking a cut.
pub(crate) fn tail(text: &str, width: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= width {
        return text.to_string();
    }
    let keep = width.saturating_sub(1);
    std::iter::once('…')
        .chain(chars[chars.len() - keep..].iter().copied())
        .collect()
}

fn status_style(s: Status) -> Style {
    match s {
        Status::Running => Style::default().fg(ratatui::style::Color::Green),
        Status::Finished => Style::default(),
        Status::Interrupted => Style::default().fg(ratatui::style::Color::Yellow),
        Status::Diverged => theme::error(),
    }
}

/// The colour the chart gives a selected run (its series', for a seed group's member).
fn color_of(t: &RunsTab, name: &str) -> Option<ratatui::style::Color> {
    let series = t
        .chart
        .series
        .iter()
        .find(|s| s.label == name || s.label.starts_with(&format!("{name} +")))?;
    Some(theme::RUNS[series.color % theme::RUNS.len()])
}

fn draw_list(frame: &mut Frame, t: &RunsTab, area: Rect) {
    let shown = t.shown();
    let title = format!(
        " runs ({}{}) · sort {}{} {}",
        shown.len(),
        if shown.len() != t.runs.len() {
            format!(" of {}", t.runs.len())
        } else {
            String::new()
        },
        t.sort.name(),
        if t.reverse { " ↓" } else { " ↑" },
        if t.filtering || !t.filter.text().is_empty() {
            format!("· filter \"{}\" ", t.filter.text())
        } else {
            String::new()
        }
    );
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if shown.is_empty() {
        let text = if !t.listed {
            "looking for runs…".to_string()
        } else if t.runs.is_empty() {
            "no runs yet under checkpoints/ (or [runs] folders): train one (tab 1, or gptdash train / sweep)".into()
        } else {
            "no run matches the filter".into()
        };
        frame.render_widget(
            Paragraph::new(text)
                .style(theme::muted())
                .wrap(ratatui::widgets::Wrap { trim: true }),
            inner,
        );
        return;
    }
    let height = inner.height.saturating_sub(1) as usize;
    let cursor = t.cursor.min(shown.len() - 1);
    let first = cursor.saturating_sub(height.saturating_sub(1));
    let header = Row::new(["", "run", "status", "steps", "best", "last"]).style(theme::muted());
    // The run column: what the others leave (a sweep member's name ends with what
    // tells it from the others, so a long name loses its start).
    let name_width = (inner.width as usize)
        .saturating_sub(1 + 11 + 11 + 6 + 6 + 5)
        .max(12);
    let rows: Vec<Row> = shown
        .iter()
        .enumerate()
        .skip(first)
        .take(height)
        .map(|(i, r)| {
            let selected = t.selected.contains(&r.path);
            let mark = match (selected, color_of(t, &r.name)) {
                (true, Some(c)) => Span::styled("●", Style::default().fg(c)),
                (true, None) => Span::raw("●"),
                _ => Span::raw(" "),
            };
            let metric = |x: Option<f64>| match (x, r.kind) {
                (None, _) => "-".to_string(),
                (Some(v), RunKind::LanguageModel) => format!("{v:.3}"),
                (Some(v), RunKind::Classifier) => format!("{:.1}%", v * 100.0),
            };
            let unit = if r.kind == RunKind::Classifier {
                "ep"
            } else {
                ""
            };
            let row = Row::new(vec![
                Cell::from(mark),
                Cell::from(tail(&r.name, name_width)),
                Cell::from(Span::styled(r.status.to_string(), status_style(r.status))),
                Cell::from(format!("{}/{}{unit}", r.steps, r.planned)),
                Cell::from(metric(r.best)),
                Cell::from(metric(r.last)),
            ]);
            if i == cursor {
                row.style(theme::grid_cursor())
            } else {
                row
            }
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(1),
            Constraint::Min(12),
            Constraint::Length(11),
            Constraint::Length(11),
            Constraint::Length(6),
            Constraint::Length(6),
        ],
    )
    .header(header);
    frame.render_widget(table, inner);
}

fn draw_chart(frame: &mut Frame, t: &RunsTab, area: Rect) {
    let o = &t.options;
    let title = format!(
        " {} by {} · {}{}{} ",
        o.metric.name(),
        o.x.name(),
        o.smoothing.name(),
        if o.log_scale { " · log scale" } else { "" },
        if o.group_seeds { "" } else { " · seeds apart" }
    );
    let block = Block::default().borders(Borders::ALL).title(title);
    if t.chart.series.is_empty() {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let text = if t.selected.is_empty() {
            "space selects runs: their curves are drawn here"
        } else {
            "the selected runs have no points of this curve yet (m: another curve)"
        };
        frame.render_widget(Paragraph::new(text).style(theme::muted()), inner);
        return;
    }
    let mut datasets = Vec::new();
    for s in &t.chart.series {
        let color = theme::RUNS[s.color % theme::RUNS.len()];
        if !s.band.is_empty() {
            datasets.push(
                Dataset::default()
                    .marker(Marker::Braille)
                    .graph_type(GraphType::Line)
                    .style(Style::default().fg(theme::faint(color)))
                    .data(&s.band),
            );
        }
        if !s.raw.is_empty() {
            datasets.push(
                Dataset::default()
                    .marker(Marker::Braille)
                    .graph_type(GraphType::Scatter)
                    .style(Style::default().fg(theme::faint(color)))
                    .data(&s.raw),
            );
        }
    }
    // The lines last: drawn over the raw curves and bands.
    for s in &t.chart.series {
        let color = theme::RUNS[s.color % theme::RUNS.len()];
        datasets.push(
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(color))
                .data(&s.line),
        );
    }
    let [x0, x1] = t.chart.x_bounds;
    let [y0, y1] = t.chart.y_bounds;
    let x_label = crate::runs::count;
    let y_label = |v: f64| {
        if o.log_scale {
            format!("{:.3}", 10f64.powf(v))
        } else {
            format!("{v:.3}")
        }
    };
    let chart = Chart::new(datasets)
        .block(block)
        .x_axis(
            Axis::default()
                .bounds([x0, x1])
                .labels(vec![
                    Span::raw(x_label(x0)),
                    Span::raw(x_label((x0 + x1) / 2.0)),
                    Span::raw(x_label(x1)),
                ])
                .style(theme::muted()),
        )
        .y_axis(
            Axis::default()
                .bounds([y0, y1])
                .labels(vec![
                    Span::raw(y_label(y0)),
                    Span::raw(y_label((y0 + y1) / 2.0)),
                    Span::raw(y_label(y1)),
                ])
                .style(theme::muted()),
        );
    frame.render_widget(chart, area);
}

fn draw_legend(frame: &mut Frame, t: &RunsTab, area: Rect) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" selected (legend) ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let mut lines: Vec<Line> = t
        .chart
        .series
        .iter()
        .map(|s| {
            let color = theme::RUNS[s.color % theme::RUNS.len()];
            let mark = if s.runs > 1 { "▓▓ " } else { "━━ " };
            let last = s.line.last().map(|p| {
                if t.options.log_scale {
                    10f64.powf(p.1)
                } else {
                    p.1
                }
            });
            let room = (inner.width as usize).saturating_sub(3 + 10);
            Line::from(vec![
                Span::styled(mark, Style::default().fg(color)),
                Span::styled(tail(&s.label, room), Style::default().fg(color)),
                Span::styled(
                    last.map(|v| format!("  {v:.4}")).unwrap_or_default(),
                    theme::muted(),
                ),
            ])
        })
        .collect();
    if lines.is_empty() {
        lines.push(Line::styled("nothing selected", theme::muted()));
    }
    if let Some(message) = &t.message {
        lines.push(Line::styled(message.clone(), theme::error()));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_diff(frame: &mut Frame, t: &RunsTab, area: Rect) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" settings that differ ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if t.diff_names.len() < 2 {
        frame.render_widget(
            Paragraph::new("select two runs or more to compare their settings")
                .style(theme::muted())
                .wrap(ratatui::widgets::Wrap { trim: true }),
            inner,
        );
        return;
    }
    if t.diff.is_empty() {
        frame.render_widget(
            Paragraph::new("the same settings").style(theme::muted()),
            inner,
        );
        return;
    }
    // A row per run, a column per setting that differs (its key's last part when
    // that is unique): sweeps differ in a few keys and have many runs.
    let short = |key: &str| {
        let last = key.rsplit('.').next().unwrap_or(key);
        let unique = t
            .diff
            .iter()
            .filter(|d| d.key.rsplit('.').next() == Some(last))
            .count()
            == 1;
        if unique {
            last.to_string()
        } else {
            key.to_string()
        }
    };
    let keys: Vec<String> = t.diff.iter().map(|d| short(&d.key)).collect();
    let col = |i: usize| {
        t.diff[i]
            .values
            .iter()
            .map(|v| v.chars().count())
            .chain(std::iter::once(keys[i].chars().count()))
            .max()
            .unwrap_or(4) as u16
    };
    let mut widths: Vec<Constraint> = (0..t.diff.len())
        .map(|i| Constraint::Length(col(i)))
        .collect();
    let used: u16 = (0..t.diff.len()).map(|i| col(i) + 1).sum();
    let name_width = inner.width.saturating_sub(used).max(8);
    widths.insert(0, Constraint::Length(name_width));
    let header = Row::new(
        std::iter::once(Cell::from("run")).chain(keys.iter().map(|k| Cell::from(k.clone()))),
    )
    .style(theme::muted());
    let rows: Vec<Row> = t
        .diff_names
        .iter()
        .enumerate()
        .map(|(r, name)| {
            let style = color_of(t, name)
                .map(|c| Style::default().fg(c))
                .unwrap_or_default();
            Row::new(
                std::iter::once(Cell::from(Span::styled(
                    tail(name, name_width as usize),
                    style,
                )))
                .chain(t.diff.iter().map(|d| Cell::from(d.values[r].clone()))),
            )
        })
        .collect();
    frame.render_widget(Table::new(rows, widths).header(header), inner);
}
