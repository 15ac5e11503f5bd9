//! The Inspect tab's anatomy views: the model as a module tree (what `print(model)`
//! shows, with each weight's shape, parameter count, and mean ± std at initialisation
//! and now), and one training pair X → Y, aligned, with the shift and the padding the
//! loss ignores. Pure functions of the tab's state.
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use super::maps::{clip, label};
use super::InspectTab;
use crate::protocol::{Anatomy, InspectReport, TrainingPair};
use crate::tui::theme;

fn waiting(frame: &mut Frame, t: &InspectTab, area: Rect, title: &'static str) {
    let line = if t.waiting() {
        "reading the model…"
    } else {
        "r reads it"
    };
    frame.render_widget(
        Paragraph::new(Line::styled(line, theme::muted()))
            .block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

fn stat(s: Option<(f64, f64)>) -> String {
    s.map_or_else(|| "—".into(), |(m, sd)| format!("{m:+.3} ± {sd:.3}"))
}

/// Thousands separated by commas.
fn count(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The module tree, scrolled to the tab's first row.
pub(crate) fn draw_model(frame: &mut Frame, t: &InspectTab, r: &InspectReport, area: Rect) {
    let Some(a) = &r.anatomy else {
        return waiting(frame, t, area, " model ");
    };
    let title = format!(
        " model · {} parameters · {} · ↑↓ scroll ",
        count(a.params),
        a.init_from
    );
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    frame.render_widget(Paragraph::new(model_lines(a, t.scroll, inner)), inner);
}

fn model_lines(a: &Anatomy, scroll: usize, area: Rect) -> Vec<Line<'static>> {
    let width = usize::from(area.width);
    // name │ shape │ params │ init │ now │ what
    let name_w = 24;
    let mut lines = vec![Line::styled(
        format!(
            "{:<name_w$}{:>13}{:>12}  {:<17}{:<17}{}",
            "module / weight", "shape", "params", "init mean ± std", "now mean ± std", "what"
        ),
        theme::muted(),
    )];
    let rows = usize::from(area.height).saturating_sub(1);
    for row in a.rows.iter().skip(scroll).take(rows) {
        let indent = "  ".repeat(row.depth);
        let name = clip(&format!("{indent}{}", row.name), name_w - 1);
        let text = if row.shape.is_empty() {
            format!(
                "{name:<name_w$}{:>13}{:>12}  {:<34}{}",
                "",
                count(row.params),
                "",
                row.what
            )
        } else {
            let shape: Vec<String> = row.shape.iter().map(i64::to_string).collect();
            format!(
                "{name:<name_w$}{:>13}{:>12}  {:<17}{:<17}{}",
                format!("[{}]", shape.join(", ")),
                count(row.params),
                stat(row.init),
                stat(row.now),
                row.what
            )
        };
        let style = if row.shape.is_empty() {
            theme::title()
        } else {
            ratatui::style::Style::default()
        };
        lines.push(Line::styled(clip(&text, width), style));
    }
    lines
}

/// A padded target, as the loss sees it: the index it ignores.
const PAD: &str = "-100";

fn cell<'a>(y: &'a Result<String, &'a str>) -> &'a str {
    match y {
        Ok(y) => y,
        Err(pad) => pad,
    }
}

/// One training pair: X above Y, a column per position.
pub(crate) fn draw_data(frame: &mut Frame, t: &InspectTab, r: &InspectReport, area: Rect) {
    let Some(a) = &r.anatomy else {
        return waiting(frame, t, area, " data ");
    };
    let Some(pair) = &a.pair else {
        let why = a.no_pair.clone().unwrap_or_default();
        frame.render_widget(
            Paragraph::new(Line::styled(why, theme::muted()))
                .block(Block::default().borders(Borders::ALL).title(" data ")),
            area,
        );
        return;
    };
    let title = format!(" data · {} · n next pair ", pair.source);
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    frame.render_widget(
        Paragraph::new(pair_lines(pair, usize::from(inner.width))).wrap(Wrap { trim: false }),
        inner,
    );
}

fn pair_lines(pair: &TrainingPair, width: usize) -> Vec<Line<'static>> {
    let cells: Vec<(String, Result<String, &str>)> = pair
        .x
        .iter()
        .zip(&pair.y)
        .map(|(x, y)| (label(x), y.as_ref().map(|y| label(y))))
        .map(|(x, y)| (x, y.ok_or(PAD)))
        .collect();
    let mut lines = vec![
        Line::from(format!(
            "Y is X shifted one position left: at position i the model reads X[0..=i] and is scored on Y[i]. This pair trains {} predictions at once.",
            pair.examples
        )),
        Line::styled(pair.how.clone(), theme::muted()),
        Line::from(""),
    ];
    // Rows of columns that fit the width.
    let lead = 12;
    let mut start = 0;
    while start < cells.len() {
        let mut used = lead;
        let mut end = start;
        while end < cells.len() {
            let (x, y) = &cells[end];
            let w = x.width().max(cell(y).width()).min(14) + 1;
            if used + w > width && end > start {
                break;
            }
            used += w;
            end += 1;
        }
        let (mut pos, mut xs, mut ys) = (
            vec![Span::styled(
                format!("{:<lead$}", "position"),
                theme::muted(),
            )],
            vec![Span::styled(
                format!("{:<lead$}", "X (input)"),
                theme::title(),
            )],
            vec![Span::styled(
                format!("{:<lead$}", "Y (target)"),
                theme::title(),
            )],
        );
        for (i, (x, y)) in cells.iter().enumerate().take(end).skip(start) {
            let w = x.width().max(cell(y).width()).min(14);
            pos.push(Span::styled(format!("{:<w$} ", i), theme::muted()));
            let x_style = if y.is_err() {
                theme::muted()
            } else {
                ratatui::style::Style::default()
            };
            xs.push(Span::styled(format!("{:<w$} ", clip(x, w)), x_style));
            ys.push(match y {
                Ok(y) => Span::styled(format!("{:<w$} ", clip(y, w)), theme::probability(1.0)),
                Err(pad) => Span::styled(format!("{pad:<w$} "), theme::muted()),
            });
        }
        lines.push(Line::from(pos));
        lines.push(Line::from(xs));
        lines.push(Line::from(ys));
        lines.push(Line::from(""));
        start = end;
    }
    if pair.y.iter().any(Option::is_none) {
        lines.push(Line::styled(
            "-100: padding, as in a batch with a longer row (two columns shown): a target the loss ignores, its input token 0; the real positions never see it (the model is causal)",
            theme::muted(),
        ));
    }
    lines
}
