//! The `?` overlay: every key.
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use crate::tui::theme;

pub const KEYS: &[(&str, &str)] = &[
    ("1 2 3, Tab, Shift-Tab", "switch tabs"),
    ("?", "this help (any key closes it)"),
    ("q, Ctrl-C", "quit (the worker stops cleanly)"),
    ("", ""),
    ("Train", ""),
    ("space", "start / pause / resume training"),
    ("x", "stop the run (the model stays for generation)"),
    ("s", "save a checkpoint"),
    ("c", "choose the corpus: small or a file path"),
    ("o", "open (load) a checkpoint for generation"),
    (
        "p",
        "next model preset (gpt-nano, gpt-micro, gpt-mini, gpt2)",
    ),
    ("l", "log-scale loss chart"),
    ("e", "EMA smoothing of the loss chart"),
    ("", ""),
    ("Generate (prompt)", ""),
    ("Enter", "generate; ←→ Home End move; ↑↓ history"),
    ("Esc", "leave the prompt, move over the grid"),
    ("Generate (grid)", ""),
    ("←→↑↓ Home End", "move the grid cursor"),
    (
        "Enter",
        "branch: regenerate with the token under the cursor",
    ),
    ("i / e", "edit the prompt; g regenerates"),
    ("t T / n N", "temperature − + / max new tokens − +"),
    ("m / k K / r", "greedy↔sample / top-k − + / next seed"),
    ("", ""),
    ("Classify", ""),
    (
        "f",
        "fine-tune the current model on SST-2 ([finetune] in config.toml)",
    ),
    ("space / x", "pause or resume / stop (keeps the best epoch)"),
    ("i, Enter", "type a sentence; Enter shows P(positive)"),
];

pub fn draw(frame: &mut Frame, area: Rect) {
    let width = 72.min(area.width);
    let height = (KEYS.len() as u16 + 2).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            if what.is_empty() {
                Line::from(Span::styled(k.to_string(), theme::title()))
            } else {
                Line::from(vec![
                    Span::styled(format!("{k:>22}  "), theme::key()),
                    Span::raw(what.to_string()),
                ])
            }
        })
        .collect();
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" keys ")
                .title_style(theme::title()),
        ),
        rect,
    );
}
