//! The Inspect tab's drawing: the text coloured by per-token loss (or its change since
//! the pin) with the cursor's values, the attention map of one layer and head in
//! half-block cells (two query rows per character, token labels on both axes, the
//! cursor's row in another colour) or every layer × head as small maps, and the logit
//! lens grid coloured by probability ([`super::maps`] draws the grids). Pure functions of
//! the tab's state.
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use super::maps::{render_lens, render_map, render_overview, window};
use super::{anatomy, probes, InspectTab, View};
use crate::protocol::{InspectReport, InspectText};
use crate::tui::tabs::Shared;
use crate::tui::theme;

pub(crate) fn draw(frame: &mut Frame, t: &InspectTab, shared: &Shared, area: Rect) {
    let [text, body] = Layout::vertical([Constraint::Length(7), Constraint::Min(8)]).areas(area);
    draw_text(frame, t, text);
    let Some(r) = &t.report else {
        draw_intro(frame, t, shared, body);
        return;
    };
    match t.view {
        View::Model => return anatomy::draw_model(frame, t, r, body),
        View::Data => return anatomy::draw_data(frame, t, r, body),
        _ => {}
    }
    let [map, side] =
        Layout::horizontal([Constraint::Percentage(56), Constraint::Percentage(44)]).areas(body);
    match t.view {
        View::Heads => draw_overview(frame, t, r, map),
        View::Ablation => probes::draw_ablation_map(frame, t, r, map),
        View::Patching => probes::draw_patching(frame, t, r, map),
        View::Attribution => probes::draw_attribution(frame, t, r, map),
        _ => draw_map(frame, t, r, map),
    }
    let [next, lens] = Layout::vertical([Constraint::Length(8), Constraint::Min(3)]).areas(side);
    probes::draw_next(frame, t, r, next);
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
        Line::from(
            "  why        remove heads (a) or MLPs (m), patch from a corrupted text (c), attribute",
        ),
        Line::from(
            "             the next token's logit, see the model's anatomy and a training pair (v)",
        ),
        Line::from(""),
    ];
    let status = if t.waiting() {
        "inspecting…".to_string()
    } else if matches!(
        shared.state,
        crate::protocol::WorkerState::Idle | crate::protocol::WorkerState::Preparing
    ) {
        format!("no model yet: {}", shared.how_to_get_a_model())
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

/// The loss of token `i` without the parts the report removed.
pub(crate) fn base_at(r: &InspectReport, i: usize) -> Option<f64> {
    let a = r.ablation.as_ref()?;
    i.checked_sub(1)
        .and_then(|p| a.base_token_loss.get(p))
        .copied()
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

fn draw_text(frame: &mut Frame, t: &InspectTab, area: Rect) {
    let block = Block::default().borders(Borders::ALL);
    if t.editing || t.editing_corrupted {
        let (input, title) = if t.editing {
            (&t.input, " text to inspect (Enter inspects, Esc leaves) ")
        } else {
            (
                &t.corrupted,
                " corrupted text to patch into, as long as the text: TEXT or TEXT | ANSWER | WRONG (Enter patches) ",
            )
        };
        // The box wraps: the text scrolls only once it fills every row.
        let room =
            usize::from(area.width.saturating_sub(2)) * usize::from(area.height.saturating_sub(2));
        let line = Line::from(input.spans(room, Style::default(), true));
        frame.render_widget(
            Paragraph::new(line)
                .wrap(Wrap { trim: false })
                .block(block.title(title).border_style(theme::key())),
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
        InspectText::Typed(_) => match &r.read_as {
            // The tokens below are the model's; say how the typed text became them.
            Some(read_as) => format!("typed text, as the model reads it: {read_as}"),
            None => "typed text".into(),
        },
    };
    let step = r.step.map(|s| format!(" · step {s}")).unwrap_or_default();
    let colouring = if t.diff {
        "colour: loss change since the pin (green lower)"
    } else if r.ablation.is_some() {
        "colour: loss change from the removal (green lower)"
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
        let mut style = match (t.diff, pinned_at(r, i), base_at(r, i), loss_at(r, i)) {
            (true, Some(then), _, Some(now)) => theme::loss_change(now - then),
            (false, _, Some(base), Some(now)) => theme::loss_change(now - base),
            (_, _, _, Some(now)) => theme::loss(now),
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
            if let Some(base) = base_at(r, c) {
                spans.push(Span::raw(format!("  without the removal {base:.2}, Δ ")));
                spans.push(Span::styled(
                    format!("{:+.2}", l - base),
                    theme::loss_change(l - base),
                ));
            }
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
        if let Some(base) = r.ablation.as_ref().and_then(|a| mean(&a.base_token_loss)) {
            spans.push(Span::styled(
                format!(" ({:+.2} from removing {})", m - base, probes::removed(r)),
                theme::muted(),
            ));
        }
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

fn draw_lens(frame: &mut Frame, t: &InspectTab, r: &InspectReport, area: Rect) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" logit lens: the next token after each layer (colour: P) ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    render_lens(frame.buffer_mut(), inner, r, t.cursor, t.layer);
}
