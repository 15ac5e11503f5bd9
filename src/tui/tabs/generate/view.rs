//! The Generate tab: prompt editor, options, the coloured continuation and the top-6
//! grid with its cursor (Enter branches there).
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, Wrap};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use super::GenerateTab;
use crate::generate::Generation;
use crate::tui::theme;

/// Widest grid column, in cells.
const MAX_COLUMN: usize = 20;

pub(crate) fn draw(frame: &mut Frame, g: &GenerateTab, area: Rect) {
    let [prompt, options, output, grid] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(1),
        Constraint::Length(6),
        Constraint::Min(9),
    ])
    .areas(area);
    draw_prompt(frame, g, prompt);
    draw_options(frame, g, options);
    draw_output(frame, g, output);
    draw_grid(frame, g, grid);
}

fn draw_prompt(frame: &mut Frame, g: &GenerateTab, area: Rect) {
    let style = if g.editing {
        theme::key()
    } else {
        theme::muted()
    };
    // A prompt wider than the box scrolls sideways so the cursor stays in view.
    let inner = usize::from(area.width.saturating_sub(2));
    let line = Line::from(g.prompt.spans(inner, Style::default(), g.editing));
    let title = if g.editing {
        " prompt (Enter generates, Esc to the grid) "
    } else {
        " prompt (i to edit) "
    };
    frame.render_widget(
        Paragraph::new(line).block(
            Block::default()
                .borders(Borders::ALL)
                .title(title)
                .border_style(style),
        ),
        area,
    );
}

fn draw_options(frame: &mut Frame, g: &GenerateTab, area: Rect) {
    let o = &g.options;
    let mut spans = vec![
        Span::styled(" temperature ", theme::muted()),
        Span::raw(format!("{:.1}", o.temperature)),
        Span::styled("  max new tokens ", theme::muted()),
        Span::raw(o.max_new_tokens.to_string()),
        Span::styled("  decoding ", theme::muted()),
        Span::raw(if o.sample && o.temperature > 0.0 {
            "sample"
        } else {
            "greedy"
        }),
        Span::styled("  top-k ", theme::muted()),
        Span::raw(
            o.top_k
                .map(|k| k.to_string())
                .unwrap_or_else(|| "off".into()),
        ),
        Span::styled("  seed ", theme::muted()),
        Span::raw(o.seed.to_string()),
    ];
    if g.pending.is_some() {
        spans.push(Span::styled("  generating…", theme::key()));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_output(frame: &mut Frame, g: &GenerateTab, area: Rect) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" continuation (colour = probability) ");
    let paragraph = if let Some(error) = &g.error {
        Paragraph::new(Line::styled(error.clone(), theme::error()))
    } else if let Some(result) = &g.result {
        let mut lines = vec![continuation_line(result)];
        if let Some(read_as) = &result.read_as {
            lines.push(Line::styled(
                format!("as the model reads it: {read_as}"),
                theme::muted(),
            ));
        }
        Paragraph::new(lines)
    } else {
        Paragraph::new(Line::styled(
            "type a prompt such as \"He and I\" and press Enter",
            theme::muted(),
        ))
    };
    frame.render_widget(paragraph.wrap(Wrap { trim: false }).block(block), area);
}

/// The prompt, then each token coloured by its probability and followed by it.
pub(crate) fn continuation_line(result: &Generation) -> Line<'static> {
    let mut spans = vec![Span::styled(
        result.prompt.clone(),
        Style::default().add_modifier(ratatui::style::Modifier::BOLD),
    )];
    for t in &result.tokens {
        let style = theme::probability(t.prob);
        spans.push(Span::styled(
            t.text.clone(),
            if t.forced {
                style.add_modifier(ratatui::style::Modifier::UNDERLINED)
            } else {
                style
            },
        ));
        spans.push(Span::styled(format!(" ({:.2})", t.prob), theme::muted()));
    }
    spans.push(Span::styled(
        format!("   perplexity {:.2}", result.perplexity),
        theme::muted(),
    ));
    Line::from(spans)
}

fn cell_text(text: &str, prob: f64) -> String {
    let shown = if text.starts_with(' ') || text.ends_with(' ') {
        format!("\"{text}\"")
    } else {
        text.to_string()
    };
    format!("{shown} {prob:.3}")
}

fn draw_grid(frame: &mut Frame, g: &GenerateTab, area: Rect) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" top-6 per generated token (Enter on a cell branches there) ");
    let Some(result) = &g.result else {
        frame.render_widget(
            Paragraph::new(Line::styled(
                "the grid appears after a generation",
                theme::muted(),
            ))
            .block(block),
            area,
        );
        return;
    };
    let ranks = result.tokens.iter().map(|t| t.top.len()).max().unwrap_or(0);
    let widths: Vec<usize> = result
        .tokens
        .iter()
        .map(|t| {
            t.top
                .iter()
                .map(|c| cell_text(&c.text, c.prob).width())
                .max()
                .unwrap_or(4)
                .clamp(6, MAX_COLUMN)
        })
        .collect();
    // Scroll sideways so the cursor column is visible.
    let inner = area.width.saturating_sub(2 + 5) as usize;
    let mut first = 0;
    loop {
        let used: usize = widths[first..=g.col.min(widths.len().saturating_sub(1))]
            .iter()
            .map(|w| w + 1)
            .sum();
        if used <= inner || first >= g.col {
            break;
        }
        first += 1;
    }
    let mut last = first;
    let mut used = 0;
    while last < widths.len() && used + widths[last] < inner {
        used += widths[last] + 1;
        last += 1;
    }
    let last = last.max((first + 1).min(widths.len()));

    let header = Row::new(
        std::iter::once(Cell::from("")).chain((first..last).map(|c| {
            let t = &result.tokens[c];
            Cell::from(Span::styled(
                cell_text(&t.text, t.prob),
                theme::probability(t.prob).add_modifier(ratatui::style::Modifier::BOLD),
            ))
        })),
    );
    let mut rows = Vec::new();
    for rank in 0..ranks {
        let cells = std::iter::once(Cell::from(Span::styled(
            format!("#{}", rank + 1),
            theme::muted(),
        )))
        .chain((first..last).map(|c| {
            let t = &result.tokens[c];
            match t.top.get(rank) {
                Some(cand) => {
                    let mut style = theme::probability(cand.prob);
                    if cand.id == t.id {
                        style = style.patch(theme::chosen());
                    }
                    if c == g.col && rank == g.row && !g.editing {
                        style = style.patch(theme::grid_cursor());
                    }
                    Cell::from(Span::styled(cell_text(&cand.text, cand.prob), style))
                }
                None => Cell::from(""),
            }
        }));
        rows.push(Row::new(cells));
    }
    rows.push(Row::new(
        std::iter::once(Cell::from(Span::styled("rest", theme::muted()))).chain((first..last).map(
            |c| {
                Cell::from(Span::styled(
                    format!("{:.3}", result.tokens[c].rest),
                    theme::muted(),
                ))
            },
        )),
    ));
    let mut constraints = vec![Constraint::Length(4)];
    constraints.extend((first..last).map(|c| Constraint::Length(widths[c] as u16)));
    let scroll = if first > 0 || last < widths.len() {
        format!(" columns {}–{} of {} ", first + 1, last, widths.len())
    } else {
        String::new()
    };
    frame.render_widget(
        Table::new(rows, constraints)
            .header(header)
            .column_spacing(1)
            .block(block.title_bottom(scroll)),
        area,
    );
}
