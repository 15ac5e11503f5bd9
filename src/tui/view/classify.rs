//! The Classify tab: sentiment fine-tuning (its engine is a later issue; until then the
//! tab says what it needs).
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

use crate::tui::app::App;
use crate::tui::theme;

pub fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let mut lines = vec![
        Line::styled("Sentiment fine-tuning on SST-2", theme::title()),
        Line::from(""),
        Line::from(
            "Turns the language model into a classifier: the first 1200 SST-2 training sentences,",
        ),
        Line::from(
            "a stratified 960/240 train/validation split, per-epoch loss and accuracy, a confusion",
        ),
        Line::from("matrix and a box that classifies any sentence with P(positive)."),
        Line::from(""),
        Line::styled("What it needs", theme::title()),
        Line::from(
            "  • a trained model: train one on the Train tab (a larger corpus helps, e.g. the SST",
        ),
        Line::from("    train sentences), or load a checkpoint"),
        Line::from(
            "  • SST-2 data: train.tsv (GLUE) or the Hugging Face parquet files, or the hub",
        ),
        Line::from(
            "  • the fine-tuning engine, which arrives with `gptdash finetune` (not in this build)",
        ),
        Line::from(""),
        Line::from("Press f to ask the worker to start fine-tuning."),
    ];
    if let Some(message) = &app.classify.message {
        lines.push(Line::from(""));
        lines.push(Line::styled(message.clone(), theme::error()));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" Classify ")),
        area,
    );
}
