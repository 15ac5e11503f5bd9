//! The Inspect tab's causal views: the next-token box (the cursor's top 6, before and
//! after a removal), the ablation map (layers × heads and MLPs: the loss increase when
//! each is removed alone), the patching maps (residual stream layer × position, head
//! outputs layer × head: how much of the clean result each restores) and the direct
//! logit attribution of the cursor's next token as a ranked bar list. Pure functions of
//! the tab's state.
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use super::maps::{clip, label, window};
use super::InspectTab;
use crate::protocol::{InspectReport, Patching, TopToken};
use crate::tui::theme;

/// The parts a report was computed without, as the tab numbers them.
pub(crate) fn removed(r: &InspectReport) -> String {
    let Some(a) = &r.ablation else {
        return String::new();
    };
    let mut parts: Vec<String> = a.heads.iter().map(|h| format!("head {h}")).collect();
    parts.extend(a.mlps.iter().map(|l| format!("MLP {l}")));
    format!("{} ({})", parts.join(", "), a.mode)
}

fn boxed(title: String) -> Block<'static> {
    Block::default().borders(Borders::ALL).title(title)
}

/// A centred note in an empty pane.
fn note(frame: &mut Frame, area: Rect, title: String, lines: Vec<Line<'static>>) {
    frame.render_widget(Paragraph::new(lines).block(boxed(title)), area);
}

fn top_line(t: &TopToken, width: usize) -> Vec<Span<'static>> {
    vec![
        Span::styled(
            format!("{:>5.1}% ", t.prob * 100.0),
            theme::probability(t.prob),
        ),
        Span::raw(clip(&label(&t.token), width)),
    ]
}

/// The cursor's six most probable next tokens (and, with parts removed, without the
/// removal beside them).
pub(crate) fn draw_next(frame: &mut Frame, t: &InspectTab, r: &InspectReport, area: Rect) {
    let token = r.tokens.get(t.cursor).map(|s| label(s)).unwrap_or_default();
    let base = r.ablation.as_ref().and_then(|a| a.base_top.get(t.cursor));
    let title = match base {
        Some(_) => format!(
            " next after #{} {token}: removed │ not removed ",
            t.cursor + 1
        ),
        None => format!(" next after #{} {token} ", t.cursor + 1),
    };
    let block = boxed(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(top) = r.top.get(t.cursor) else {
        return;
    };
    let half = usize::from(inner.width / 2).saturating_sub(8).max(4);
    let lines: Vec<Line> = (0..top.len().max(base.map_or(0, Vec::len)))
        .map(|k| {
            let mut spans = match top.get(k) {
                Some(tok) => top_line(tok, half),
                None => Vec::new(),
            };
            if let Some(b) = base.and_then(|b| b.get(k)) {
                let used: usize = spans.iter().map(|s| s.width()).sum();
                let pad = usize::from(inner.width / 2).saturating_sub(used).max(1);
                spans.push(Span::styled(
                    format!("{}│ ", " ".repeat(pad)),
                    theme::muted(),
                ));
                spans.extend(top_line(b, half));
            }
            Line::from(spans)
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

/// Said where a view computes on the whole model while parts are removed elsewhere.
fn intact(t: &InspectTab) -> &'static str {
    if t.ablation.heads.is_empty() && t.ablation.mlps.is_empty() {
        ""
    } else {
        " · on the whole model: removals (a, m) apply to the text and the next-token box"
    }
}

const CELL: u16 = 8;

/// The loss increase when each head (and each layer's MLP) is removed alone.
pub(crate) fn draw_ablation_map(frame: &mut Frame, t: &InspectTab, r: &InspectReport, area: Rect) {
    let Some(map) = &r.ablation_map else {
        note(
            frame,
            area,
            " ablation map ".into(),
            vec![Line::styled(
                if t.waiting() {
                    "removing each head in turn…"
                } else {
                    "r computes it"
                },
                theme::muted(),
            )],
        );
        return;
    };
    let title = format!(
        " ablation map · loss increase (nats) when one part is removed ({}) · none removed {:.3} ",
        map.mode, map.base_loss
    );
    let block = boxed(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let heads = map.heads.first().map_or(0, Vec::len);
    let removed_heads = &t.ablation.heads;
    let mut lines = Vec::new();
    let mut header = vec![Span::styled(format!("{:<7}", "layer"), theme::muted())];
    // The heads that fit, around the selected one; the MLP column always.
    let fit = (usize::from(inner.width.saturating_sub(7 + CELL)) / usize::from(CELL)).max(1);
    let first = window(t.head, heads, fit);
    let shown = first..(first + fit).min(heads);
    for h in shown.clone() {
        header.push(Span::styled(
            format!("{:>8}", format!("head {}", h + 1)),
            theme::muted(),
        ));
    }
    header.push(Span::styled(format!("{:>8}", "MLP"), theme::muted()));
    lines.push(Line::from(header));
    for (l, row) in map.heads.iter().enumerate() {
        let mut spans = vec![Span::raw(format!("{:<7}", l + 1))];
        for h in shown.clone() {
            let v = row[h];
            let mark = if removed_heads.contains(&(l, h)) {
                "×"
            } else {
                " "
            };
            let mut style = theme::loss_change(v);
            if (l, h) == (t.layer, t.head) {
                style = style.add_modifier(Modifier::REVERSED);
            }
            spans.push(Span::styled(format!("{v:>+7.3}{mark}"), style));
        }
        if let Some(&m) = map.mlps.get(l) {
            let mark = if t.ablation.mlps.contains(&l) {
                "×"
            } else {
                " "
            };
            spans.push(Span::styled(
                format!("{m:>+7.3}{mark}"),
                theme::loss_change(m),
            ));
        }
        lines.push(Line::from(spans));
    }
    lines.push(Line::from(""));
    let most = map
        .heads
        .iter()
        .enumerate()
        .flat_map(|(l, row)| row.iter().enumerate().map(move |(h, v)| (l, h, *v)))
        .max_by(|a, b| a.2.total_cmp(&b.2));
    if let Some((l, h, v)) = most {
        lines.push(Line::from(format!(
            "matters most on this text: head {}.{} ({v:+.3})",
            l + 1,
            h + 1
        )));
    }
    lines.push(Line::styled(
        "a removes the selected head (×), m its layer's MLP, z zero ↔ mean",
        theme::muted(),
    ));
    frame.render_widget(Paragraph::new(lines), inner);
}

/// A restored fraction's cell: its value on a colour from the corrupted (dark) to the
/// clean (bright) end.
fn restored_cell(p: &Patching, diff: f64, width: usize, selected: bool) -> Span<'static> {
    let (text, a) = match p.restored(diff) {
        Some(f) => (format!("{f:>w$.2}", w = width), f as f32),
        None => (format!("{diff:>w$.1}", w = width), 0.0),
    };
    let mut style = Style::default()
        .bg(theme::heat(a))
        .fg(theme::on_heat(a.clamp(0.0, 1.0)));
    if selected {
        style = style.add_modifier(Modifier::BOLD | Modifier::UNDERLINED);
    }
    Span::styled(text, style)
}

/// Both patching maps: the residual stream entering each layer at each position, and
/// each head's output.
pub(crate) fn draw_patching(frame: &mut Frame, t: &InspectTab, r: &InspectReport, area: Rect) {
    let Some(p) = &r.patching else {
        let mut lines = vec![
            Line::from("Patch activations from the text into a corrupted one of the same length"),
            Line::from("(He holds the dog / She holds the cat) and see which layer and position"),
            Line::from("carry what the answer needs."),
            Line::from(""),
        ];
        if let Some(e) = &r.patch_error {
            lines.push(Line::styled(e.clone(), theme::error()));
        }
        lines.push(Line::styled(
            match t.patch_ask() {
                Some(_) if t.waiting() => "patching…".to_string(),
                Some(ask) => format!("into {:?}: r patches", ask.corrupted),
                None => "c types the corrupted text (TEXT, or TEXT | ANSWER | WRONG)".into(),
            },
            theme::muted(),
        ));
        note(frame, area, " activation patching ".into(), lines);
        return;
    };
    let scale = if p.restored(p.clean).is_some() {
        "restored: 0 corrupted … 1 clean"
    } else {
        "both runs give the same difference: raw logit differences"
    };
    let title = format!(
        " patching into {:?} · logit({}) − logit({}): clean {:.2}, corrupted {:.2} · {scale} ",
        clip(&p.corrupted_text, 24),
        label(&p.answer),
        label(&p.wrong),
        p.clean,
        p.corrupted
    );
    let block = boxed(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let layers = p.resid.len() as u16;
    let [top, bottom] = Layout::vertical([
        Constraint::Length(layers + 2),
        Constraint::Min(layers.min(8) + 2),
    ])
    .areas(inner);
    // Residual stream: layer × position, windowed around the cursor.
    let width = 6usize;
    let fit = (usize::from(top.width.saturating_sub(7)) / (width + 1)).max(1);
    let tokens = r.tokens.len();
    let first = window(t.cursor, tokens, fit);
    let shown = first..(first + fit).min(tokens);
    let mut lines = vec![Line::styled(
        "residual stream entering each layer, at each position",
        theme::title(),
    )];
    let mut header = vec![Span::styled(format!("{:<7}", "layer"), theme::muted())];
    for i in shown.clone() {
        let mut style = theme::muted();
        if i == t.cursor {
            style = style.add_modifier(Modifier::REVERSED);
        }
        header.push(Span::styled(
            format!("{:>w$} ", clip(&label(&r.tokens[i]), width), w = width),
            style,
        ));
    }
    lines.push(Line::from(header));
    for (l, row) in p.resid.iter().enumerate() {
        let mut spans = vec![Span::raw(format!("{:<7}", l + 1))];
        for i in shown.clone() {
            if let Some(&d) = row.get(i) {
                spans.push(restored_cell(p, d, width, i == t.cursor));
                spans.push(Span::raw(" "));
            }
        }
        lines.push(Line::from(spans));
    }
    frame.render_widget(Paragraph::new(lines), top);
    // Heads: layer × head.
    let heads = p.heads.first().map_or(0, Vec::len);
    let fit = (usize::from(bottom.width.saturating_sub(7)) / (width + 1)).max(1);
    let first = window(t.head, heads, fit);
    let shown = first..(first + fit).min(heads);
    let mut lines = vec![Line::styled(
        format!("each head's output (every position){}", intact(t)),
        theme::title(),
    )];
    let mut header = vec![Span::styled(format!("{:<7}", "layer"), theme::muted())];
    for h in shown.clone() {
        header.push(Span::styled(
            format!("{:>w$} ", format!("h{}", h + 1), w = width),
            theme::muted(),
        ));
    }
    lines.push(Line::from(header));
    for (l, row) in p.heads.iter().enumerate() {
        let mut spans = vec![Span::raw(format!("{:<7}", l + 1))];
        for h in shown.clone() {
            if let Some(&d) = row.get(h) {
                spans.push(restored_cell(p, d, width, (l, h) == (t.layer, t.head)));
                spans.push(Span::raw(" "));
            }
        }
        lines.push(Line::from(spans));
    }
    frame.render_widget(Paragraph::new(lines), bottom);
}

/// What each part wrote into the cursor's next-token logit, largest first.
pub(crate) fn draw_attribution(frame: &mut Frame, t: &InspectTab, r: &InspectReport, area: Rect) {
    let Some(a) = r.attribution.get(t.cursor) else {
        note(
            frame,
            area,
            " direct logit attribution ".into(),
            vec![Line::styled(
                if t.waiting() {
                    "attributing…"
                } else {
                    "r computes it"
                },
                theme::muted(),
            )],
        );
        return;
    };
    let what = if a.predicted {
        "the model's top prediction"
    } else {
        "the next token"
    };
    let title = format!(
        " attribution of {} ({what}) after #{} · logit {:.3} = parts {:.3} ",
        label(&a.token),
        t.cursor + 1,
        a.logit,
        a.sum
    );
    let block = boxed(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let mut lines: Vec<Line> = Vec::new();
    let per_layer: Vec<String> = (0..a.mlp.len())
        .map(|l| format!("{} attn {:+.2} mlp {:+.2}", l + 1, a.attn[l], a.mlp[l]))
        .collect();
    lines.push(Line::styled(
        clip(
            &format!("layers  {}", per_layer.join(" · ")),
            usize::from(inner.width),
        ),
        theme::muted(),
    ));
    let parts = a.ranked_parts();
    let scale = parts.first().map_or(1.0, |p| p.1.abs()).max(1e-9);
    let room = usize::from(inner.height).saturating_sub(3);
    let bar_room = usize::from(inner.width).saturating_sub(32).max(4);
    for (name, v) in parts.iter().take(room) {
        let n = ((v.abs() / scale) * bar_room as f64).round() as usize;
        let colour = if *v >= 0.0 {
            theme::probability(1.0)
        } else {
            theme::probability(0.0)
        };
        lines.push(Line::from(vec![
            Span::raw(format!("{:<21}{v:>+9.3} ", clip(name, 20))),
            Span::styled("█".repeat(n.max(usize::from(v.abs() > 0.0))), colour),
        ]));
    }
    lines.push(Line::styled(
        format!(
            "checked: the {} parts sum to the logit within {:.1e} (final LayerNorm's scale frozen){}",
            parts.len(),
            (a.sum - a.logit).abs(),
            intact(t)
        ),
        theme::muted(),
    ));
    frame.render_widget(Paragraph::new(lines), inner);
}
