//! The Inspect tab's grids, drawn straight into the buffer (a 64 × 64 map is 2,000
//! cells): one head's attention map in half-block cells, every layer × head as small
//! maps, and the logit lens grid. Pure functions of the report and the cursor.
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use unicode_width::UnicodeWidthStr;

use crate::protocol::InspectReport;
use crate::tui::theme;

/// Lens grid cell width (a token clipped to one less).
const LENS_CELL: u16 = 9;

/// `s` cut to `width` columns, with `…` when cut.
pub(crate) fn clip(s: &str, width: usize) -> String {
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
pub(crate) fn label(token: &str) -> String {
    token.replace(' ', "·")
}

/// The first of `capacity` consecutive items shown out of `count`, so `at` is visible
/// (centred when the items do not all fit).
pub(crate) fn window(at: usize, count: usize, capacity: usize) -> usize {
    if count <= capacity || capacity == 0 {
        0
    } else {
        at.saturating_sub(capacity / 2).min(count - capacity)
    }
}

/// A map cell's colour: masked keys grey, the cursor's row in its own scale.
fn cell_colour(att: &[Vec<f32>], q: usize, k: usize, cursor: usize) -> Color {
    match att.get(q).and_then(|row| row.get(k)) {
        Some(&a) if k <= q => {
            if q == cursor {
                theme::heat_cursor(a)
            } else {
                theme::heat(a)
            }
        }
        Some(_) => theme::MASKED,
        None => Color::Reset,
    }
}

/// The heatmap of one head: rows are queries, columns keys, each weight a square of
/// `scale` × `scale` pixels (as large as the area allows, up to 8), two pixel rows per
/// character (`▀` takes the upper pixel's colour as foreground, the lower one's as
/// background). Labels on the left (each query where its rows start) and under the map
/// (keys, written downwards); below, where the cursor's query looks most.
pub(crate) fn render_map(
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
                None => Color::Reset,
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

/// Every layer (rows) × head (columns) as a small map, each pixel the largest weight of
/// the block of query × key cells it covers; the selected one in the cursor's colours.
pub(crate) fn render_overview(
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
