//! Every colour and style of the dashboard.
use ratatui::style::{Color, Modifier, Style};

pub const ACCENT: Color = Color::Cyan;
pub const TRAIN_LOSS: Color = Color::Cyan;
pub const TEST_LOSS: Color = Color::Yellow;
pub const MUTED: Color = Color::DarkGray;
pub const ERROR: Color = Color::Red;

pub fn title() -> Style {
    Style::default().fg(ACCENT).add_modifier(Modifier::BOLD)
}

pub fn muted() -> Style {
    Style::default().fg(MUTED)
}

pub fn error() -> Style {
    Style::default().fg(ERROR)
}

pub fn key() -> Style {
    Style::default()
        .fg(Color::Yellow)
        .add_modifier(Modifier::BOLD)
}

pub fn selected_tab() -> Style {
    Style::default()
        .fg(Color::Black)
        .bg(ACCENT)
        .add_modifier(Modifier::BOLD)
}

/// A token coloured by how sure the model was: green (sure) to red (unsure).
pub fn probability(p: f64) -> Style {
    let color = if p >= 0.6 {
        Color::Green
    } else if p >= 0.3 {
        Color::Yellow
    } else if p >= 0.1 {
        Color::LightRed
    } else {
        Color::Red
    };
    Style::default().fg(color)
}

pub fn chosen() -> Style {
    Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
}

pub fn grid_cursor() -> Style {
    Style::default().add_modifier(Modifier::REVERSED)
}
