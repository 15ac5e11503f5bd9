//! The Inspect tab's drawing: the text coloured by per-token loss (or its change since
//! the pin) with the cursor's values, the attention map of one layer and head in
//! half-block cells (two query rows per character, token labels on both axes, the
//! cursor's row in another colour) or every layer × head as small maps, and the logit
//! lens grid coloured by probability. Pure functions of the tab's state; the maps write
//! cells straight into the buffer (a 64 × 64 map is 2,000 cells).
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use super::InspectTab;
use crate::protocol::{InspectReport, InspectText};
use crate::tui::tabs::Shared;
use crate::tui::theme;

/// Lens grid cell width (a token clipped to one less).
const LENS_CELL: u16 = 9;

pub fn draw(frame: &mut Frame, t: &InspectTab, shared: &Shared, area: Rect) {
    let [text, body] = Layout::vertical([Constraint::Length(7), Constraint::Min(8)]).areas(area);
    draw_text(frame, t, text);
    let Some(r) = &t.report else {
        draw_intro(frame, t, shared, body);
        return;
    };
    let [map, lens] =
        Layout::horizontal([Constraint::Percentage(56), Constraint::Percentage(44)]).areas(body);
    if t.overview {
        draw_overview(frame, t, r, map);
    } else {
        draw_map(frame, t, r, map);
    }
    draw_lens(frame, t, r, lens);
}

fn draw_intro(frame: &mut Frame, t: &InspectTab, shared: &Shared, area: Rect) {
    let mut lines = vec![
        Line::from("Look inside the model while it learns."),
        Line::from(""),
        Line::from("  attention  which earlier tokens each token reads, per layer and head"),
        Line::from("  logit lens what the model would predict after each layer"),
        Line::from(
            "  loss       how surprised it is by each token; pin (p) and train on to see it change",
        ),
        Line::from(""),
    ];
    let status = if t.waiting() {
        "inspecting…".to_string()
    } else if matches!(
        shared.state,
        crate::protocol::WorkerState::Idle | crate::protocol::WorkerState::Preparing
    ) {
        "no model yet: train one (space on tab 1) or open a checkpoint (o on tab 1)".into()
    } else {
        "r inspects the model held".into()
    };
    lines.push(Line::styled(status, theme::muted()));
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" inspect ")),
        area,
    );
}

/// The loss of token `i` (predicting it from the tokens before); none for the first.
fn loss_at(r: &InspectReport, i: usize) -> Option<f64> {
    i.checked_sub(1).and_then(|p| r.token_loss.get(p)).copied()
}

fn pinned_at(r: &InspectReport, i: usize) -> Option<f64> {
    let pinned = r.pinned.as_ref()?;
    i.checked_sub(1)
        .and_then(|p| pinned.token_loss.get(p))
        .copied()
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

fn clip(s: &str, width: usize) -> String {
    if s.width() <= width {
        return s.to_string();
    }
    let mut out = String::new();
    for c in s.chars() {
        if out.width() + 1 >= width {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
}

/// A token as a label: its spaces shown as `·`.
fn label(token: &str) -> String {
    token.replace(' ', "·")
}

/// The first of `capacity` consecutive items shown out of `count`, so `at` is visible
/// (centred when the items do not all fit).
fn window(at: usize, count: usize, capacity: usize) -> usize {
    if count <= capacity || capacity == 0 {
        0
    } else {
        at.saturating_sub(capacity / 2).min(count - capacity)
    }
}

fn draw_text(frame: &mut Frame, t: &InspectTab, area: Rect) {
    let block = Block::default().borders(Borders::ALL);
    if t.editing {
        let line = Line::from(vec![
            Span::raw(t.input.clone()),
            Span::styled(" ", theme::grid_cursor()),
        ]);
        frame.render_widget(
            Paragraph::new(line).wrap(Wrap { trim: false }).block(
                block
                    .title(" text to inspect (Enter inspects, Esc leaves) ")
                    .border_style(theme::key()),
            ),
            area,
        );
        return;
    }
    let Some(r) = &t.report else {
        let what = match &t.message {
            Some(m) => Line::styled(m.clone(), theme::error()),
            None => Line::styled("nothing inspected yet", theme::muted()),
        };
        frame.render_widget(Paragraph::new(what).block(block.title(" text ")), area);
        return;
    };
    let source = match &t.source {
        InspectText::Corpus(n) => format!("test example {} of the corpus", n + 1),
        InspectText::Typed(_) => "typed text".into(),
    };
    let step = r.step.map(|s| format!(" · step {s}")).unwrap_or_default();
    let colouring = if t.diff {
        "colour: loss change since the pin (green lower)"
    } else {
        "colour: loss (green low, red high)"
    };
    let title = format!(" text: {source}{step} · {colouring} ");
    let inner = block.inner(area);
    frame.render_widget(block.title(title), area);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    // Tokens laid out in lines, wrapped between tokens; the lines around the cursor shown.
    let width = inner.width as usize;
    let mut lines: Vec<Vec<Span>> = vec![Vec::new()];
    let mut used = 0;
    let mut cursor_line = 0;
    for (i, token) in r.tokens.iter().enumerate() {
        let w = token.width().max(1);
        if used + w > width && used > 0 {
            lines.push(Vec::new());
            used = 0;
        }
        let mut style = match (t.diff, loss_at(r, i), pinned_at(r, i)) {
            (true, Some(now), Some(then)) => theme::loss_change(now - then),
            (_, Some(now), _) => theme::loss(now),
            _ => theme::muted(),
        };
        if i == t.cursor {
            style = style.add_modifier(Modifier::REVERSED);
            cursor_line = lines.len() - 1;
        }
        let shown = if token.is_empty() { " " } else { token };
        if let Some(line) = lines.last_mut() {
            line.push(Span::styled(shown.to_string(), style));
        }
        used += w;
    }
    let rows = (inner.height as usize).saturating_sub(1).max(1);
    let first = window(cursor_line, lines.len(), rows);
    let mut shown: Vec<Line> = lines
        .into_iter()
        .skip(first)
        .take(rows)
        .map(Line::from)
        .collect();
    while shown.len() < rows {
        shown.push(Line::from(""));
    }
    shown.push(cursor_info(t, r));
    frame.render_widget(Paragraph::new(shown), inner);
}

/// The values under the cursor, then the text's means.
fn cursor_info(t: &InspectTab, r: &InspectReport) -> Line<'static> {
    let c = t.cursor;
    let token = r.tokens.get(c).cloned().unwrap_or_default();
    let mut spans = vec![Span::styled(
        format!("#{} {token:?}", c + 1),
        theme::title(),
    )];
    match (
        loss_at(r, c),
        c.checked_sub(1).and_then(|p| r.token_rank.get(p)),
    ) {
        (Some(l), Some(rank)) => {
            // −log P rounds to −0 (or a hair below) when P is 1: shown as 0.
            let l = if l <= 0.0 { 0.0 } else { l };
            spans.push(Span::raw("  loss "));
            spans.push(Span::styled(format!("{l:.2}"), theme::loss(l)));
            spans.push(Span::raw(format!(" nats, rank {rank}")));
            if let (Some(then), Some(pin)) = (pinned_at(r, c), &r.pinned) {
                let at = pin.step.map(|s| format!(" (step {s})")).unwrap_or_default();
                spans.push(Span::raw(format!("  pinned{at} {then:.2}, Δ ")));
                spans.push(Span::styled(
                    format!("{:+.2}", l - then),
                    theme::loss_change(l - then),
                ));
            }
        }
        _ => spans.push(Span::styled(
            "  (the first token has no loss)",
            theme::muted(),
        )),
    }
    if let Some(m) = mean(&r.token_loss) {
        spans.push(Span::styled(format!("   mean {m:.2}"), theme::muted()));
        if let Some(p) = r.pinned.as_ref().and_then(|p| mean(&p.token_loss)) {
            spans.push(Span::styled(format!(", pinned {p:.2}"), theme::muted()));
        }
    }
    if t.waiting() {
        spans.push(Span::styled("   inspecting…", theme::muted()));
    }
    if let Some(m) = &t.message {
        spans.push(Span::styled(format!("   {m}"), theme::error()));
    }
    Line::from(spans)
}

/// A map cell's colour: masked keys grey, the cursor's row in its own scale.
fn cell_colour(att: &[Vec<f32>], q: usize, k: usize, cursor: usize) -> ratatui::style::Color {
    match att.get(q).and_then(|row| row.get(k)) {
        Some(&a) if k <= q => {
            if q == cursor {
                theme::heat_cursor(a)
            } else {
                theme::heat(a)
            }
        }
        Some(_) => theme::MASKED,
        None => ratatui::style::Color::Reset,
    }
}

fn draw_map(frame: &mut Frame, t: &InspectTab, r: &InspectReport, area: Rect) {
    let (layer, head) = (t.layer, t.head);
    let title = format!(
        " attention · layer {}/{} head {}/{} (↑↓ layer, [ ] head, v all) ",
        layer + 1,
        r.attention.len(),
        head + 1,
        r.attention.first().map_or(0, Vec::len)
    );
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(att) = r.attention.get(layer).and_then(|l| l.get(head)) else {
        return;
    };
    render_map(frame.buffer_mut(), inner, att, &r.tokens, t.cursor);
}

/// The heatmap of one head: rows are queries, columns keys, each weight a square of
/// `scale` × `scale` pixels (as large as the area allows, up to 8), two pixel rows per
/// character (`▀` takes the upper pixel's colour as foreground, the lower one's as
/// background). Labels on the left (each query where its rows start) and under the map
/// (keys, written downwards); below, where the cursor's query looks most.
pub fn render_map(
    buf: &mut Buffer,
    area: Rect,
    att: &[Vec<f32>],
    tokens: &[String],
    cursor: usize,
) {
    let n = tokens.len().min(att.len());
    if area.width < 8 || area.height < 4 || n == 0 {
        return;
    }
    let label_w = (area.width / 4).clamp(6, 16);
    let xlabel_rows: u16 = if area.height >= 14 { 4 } else { 2 };
    let map_h = area.height - xlabel_rows - 1;
    let map_w = area.width - label_w;
    let scale = (map_w as usize / n).min(2 * map_h as usize / n).clamp(1, 8);
    let (cap_q, cap_k) = (2 * map_h as usize / scale, map_w as usize / scale);
    let q0 = window(cursor, n, cap_q);
    // Keys: the diagonal near the cursor stays in view.
    let k0 = window(cursor, n, cap_k);
    let query_of = |py: usize| Some(q0 + py / scale).filter(|&q| q < n && q < q0 + cap_q);
    let half = (label_w as usize - 1) / 2;
    for line in 0..map_h {
        let (upper, lower) = (query_of(2 * line as usize), query_of(2 * line as usize + 1));
        let Some(qa) = upper else {
            break;
        };
        let y = area.y + line;
        // Labels: the queries whose rows start on this line, the cursor's reversed.
        let starts: Vec<usize> = [
            (qa, 2 * line as usize),
            (lower.unwrap_or(n), 2 * line as usize + 1),
        ]
        .into_iter()
        .filter(|&(q, py)| q < n && py % scale == 0)
        .map(|(q, _)| q)
        .collect();
        let width = if starts.len() == 2 {
            half
        } else {
            label_w as usize - 1
        };
        let mut x = area.x;
        for q in starts {
            let text = format!("{:<width$}", clip(&label(&tokens[q]), width));
            let style = if q == cursor {
                theme::grid_cursor()
            } else {
                theme::muted()
            };
            buf.set_stringn(x, y, &text, width, style);
            x += width as u16 + 1;
        }
        for j in 0..map_w {
            let k = k0 + j as usize / scale;
            if k >= n || j as usize >= cap_k * scale {
                break;
            }
            let top = cell_colour(att, qa, k, cursor);
            let bottom = match lower {
                Some(qb) => cell_colour(att, qb, k, cursor),
                None => ratatui::style::Color::Reset,
            };
            if let Some(cell) = buf.cell_mut((area.x + label_w + j, y)) {
                cell.set_symbol("▀").set_fg(top).set_bg(bottom);
            }
        }
    }
    // Key labels from each key's first column: downwards when a key is one column wide.
    let labels_y = area.y + map_h;
    for (k, token) in tokens.iter().enumerate().take(n).skip(k0).take(cap_k) {
        let x = area.x + label_w + ((k - k0) * scale) as u16;
        let style = if k == cursor {
            theme::title()
        } else {
            theme::muted()
        };
        // Under its columns (one left blank between keys), line after line.
        let chunk = scale.saturating_sub(1).max(1);
        let text: Vec<char> = label(token.trim_start()).chars().collect();
        for (row, part) in text.chunks(chunk).take(xlabel_rows as usize).enumerate() {
            for (i, &c) in part.iter().enumerate() {
                if let Some(cell) = buf.cell_mut((x + i as u16, labels_y + row as u16)) {
                    cell.set_char(c).set_style(style);
                }
            }
        }
    }
    // Where the cursor's query looks most.
    if let Some(row) = att.get(cursor) {
        let mut top: Vec<(usize, f32)> = row.iter().copied().enumerate().take(cursor + 1).collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut text = format!("{} looks at:", clip(&format!("{:?}", tokens[cursor]), 14));
        for (k, a) in top.iter().take(4) {
            text.push_str(&format!("  {:?} {a:.2}", tokens[*k]));
        }
        buf.set_stringn(
            area.x,
            area.y + area.height - 1,
            &text,
            area.width as usize,
            theme::title(),
        );
    }
}

fn draw_overview(frame: &mut Frame, t: &InspectTab, r: &InspectReport, area: Rect) {
    let title = format!(
        " attention · every layer × head (selected: layer {} head {}; Enter zooms) ",
        t.layer + 1,
        t.head + 1
    );
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    render_overview(frame.buffer_mut(), inner, &r.attention, t.layer, t.head);
}

/// Every layer (rows) × head (columns) as a small map, each pixel the largest weight of
/// the block of query × key cells it covers; the selected one in the cursor's colours.
pub fn render_overview(
    buf: &mut Buffer,
    area: Rect,
    attention: &[Vec<Vec<Vec<f32>>>],
    layer: usize,
    head: usize,
) {
    let layers = attention.len();
    let heads = attention.first().map_or(0, Vec::len);
    let n = attention
        .first()
        .and_then(|l| l.first())
        .map_or(0, Vec::len);
    if layers == 0 || heads == 0 || n == 0 || area.width < 8 || area.height < 3 {
        return;
    }
    let left: u16 = 4;
    let cell_w = ((area.width - left) / heads as u16).max(2);
    let cell_h = ((area.height - 1) / layers as u16).max(1);
    for h in 0..heads {
        let x = area.x + left + h as u16 * cell_w;
        let style = if h == head {
            theme::grid_cursor()
        } else {
            theme::muted()
        };
        buf.set_stringn(x, area.y, format!("H{}", h + 1), cell_w as usize - 1, style);
    }
    // A gap between maps when there is room for one.
    let (px_w, lines) = (
        (cell_w - 1) as usize,
        if cell_h >= 3 { cell_h - 1 } else { cell_h },
    );
    let px_h = 2 * lines as usize;
    for (l, maps) in attention.iter().enumerate() {
        let y0 = area.y + 1 + l as u16 * cell_h;
        if y0 >= area.y + area.height {
            break;
        }
        let style = if l == layer {
            theme::grid_cursor()
        } else {
            theme::muted()
        };
        buf.set_stringn(area.x, y0, format!("L{}", l + 1), left as usize - 1, style);
        for (h, att) in maps.iter().enumerate() {
            let x0 = area.x + left + h as u16 * cell_w;
            let selected = l == layer && h == head;
            let pixel = |py: usize, px: usize| -> f32 {
                let (q_lo, k_lo) = (py * n / px_h, px * n / px_w);
                let q_hi = ((py + 1) * n / px_h).max(q_lo + 1).min(n);
                let k_hi = ((px + 1) * n / px_w).max(k_lo + 1).min(n);
                let mut most = 0.0f32;
                for row in &att[q_lo..q_hi] {
                    for &a in &row[k_lo..k_hi] {
                        most = most.max(a);
                    }
                }
                most
            };
            let colour = |a: f32| {
                if selected {
                    theme::heat_cursor(a)
                } else {
                    theme::heat(a)
                }
            };
            for line in 0..lines {
                let y = y0 + line;
                if y >= area.y + area.height {
                    break;
                }
                for px in 0..px_w {
                    let top = pixel(2 * line as usize, px);
                    let bottom = pixel(2 * line as usize + 1, px);
                    if let Some(cell) = buf.cell_mut((x0 + px as u16, y)) {
                        cell.set_symbol("▀")
                            .set_fg(colour(top))
                            .set_bg(colour(bottom));
                    }
                }
            }
        }
    }
}

fn draw_lens(frame: &mut Frame, t: &InspectTab, r: &InspectReport, area: Rect) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" logit lens: the next token after each layer (colour: P) ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    render_lens(frame.buffer_mut(), inner, r, t.cursor, t.layer);
}

/// Rows: the input token, each layer's top next token (background by its probability),
/// the actual next token; columns: positions around the cursor. Below, the cursor's
/// column with probabilities and entropies.
pub fn render_lens(buf: &mut Buffer, area: Rect, r: &InspectReport, cursor: usize, layer: usize) {
    let n = r.tokens.len();
    let layers = r.lens.len();
    let left: u16 = 6;
    if n == 0 || area.width < left + LENS_CELL || area.height < 3 {
        return;
    }
    let columns = ((area.width - left) / LENS_CELL) as usize;
    let p0 = window(cursor, n, columns);
    let put = |buf: &mut Buffer, x: u16, y: u16, text: &str, width: usize, style: Style| {
        if y < area.y + area.height {
            buf.set_stringn(x, y, text, width, style);
        }
    };
    let w = LENS_CELL as usize - 1;
    put(buf, area.x, area.y, "token", 5, theme::muted());
    let next_y = area.y + 1 + layers as u16;
    put(buf, area.x, next_y, "next", 5, theme::muted());
    for l in 0..layers {
        let style = if l == layer {
            theme::title()
        } else {
            theme::muted()
        };
        put(
            buf,
            area.x,
            area.y + 1 + l as u16,
            &format!("L{}", l + 1),
            5,
            style,
        );
    }
    for c in 0..columns {
        let p = p0 + c;
        if p >= n {
            break;
        }
        let x = area.x + left + c as u16 * LENS_CELL;
        let head = if p == cursor {
            theme::grid_cursor()
        } else {
            Style::default()
        };
        put(
            buf,
            x,
            area.y,
            &format!("{:<w$}", clip(&label(&r.tokens[p]), w)),
            w,
            head,
        );
        for (l, cells) in r.lens.iter().enumerate() {
            if let Some(cell) = cells.get(p) {
                let prob = cell.prob as f32;
                let style = Style::default()
                    .bg(theme::heat(prob))
                    .fg(theme::on_heat(prob));
                let text = format!("{:<w$}", clip(&label(&cell.token), w));
                put(buf, x, area.y + 1 + l as u16, &text, w, style);
            }
        }
        if let Some(next) = r.tokens.get(p + 1) {
            let hit = r.lens.last().and_then(|c| c.get(p)).map(|c| &c.token) == Some(next);
            let style = if hit {
                Style::default().fg(ratatui::style::Color::Green)
            } else {
                theme::muted()
            };
            put(buf, x, next_y, &clip(&label(next), w), w, style);
        }
    }
    // The cursor's column in numbers.
    let mut y = next_y + 2;
    if y < area.y + area.height {
        let text = format!(
            "after {:?} (#{}), layer by layer: top token, P, entropy",
            r.tokens[cursor.min(n - 1)],
            cursor + 1
        );
        put(buf, area.x, y, &text, area.width as usize, theme::title());
        y += 1;
    }
    for (l, cells) in r.lens.iter().enumerate() {
        if y >= area.y + area.height {
            break;
        }
        if let Some(cell) = cells.get(cursor) {
            let text = format!(
                "L{:<3} {:<14} {:>6.3}  {:>5.2} nats",
                l + 1,
                clip(&format!("{:?}", cell.token), 14),
                cell.prob,
                cell.entropy
            );
            let style = if l == layer {
                theme::title()
            } else {
                Style::default()
            };
            put(buf, area.x, y, &text, area.width as usize, style);
        }
        y += 1;
    }
}
