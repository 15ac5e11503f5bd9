//! Every colour and style of the dashboard.
use ratatui::style::{Color, Modifier, Style};

pub(crate) const ACCENT: Color = Color::Cyan;
pub(crate) const TRAIN_LOSS: Color = Color::Cyan;
pub(crate) const TEST_LOSS: Color = Color::Yellow;
pub(crate) const MUTED: Color = Color::DarkGray;
pub(crate) const ERROR: Color = Color::Red;
/// The Runs tab's colours, one per run (by its name's hash, see `runs::chart`); the
/// raw curves and seed bands are drawn in [`faint`] versions of them.
pub(crate) const RUNS: [Color; 10] = [
    Color::Rgb(0, 200, 255),
    Color::Rgb(255, 210, 0),
    Color::Rgb(230, 90, 230),
    Color::Rgb(80, 220, 100),
    Color::Rgb(255, 110, 90),
    Color::Rgb(100, 150, 255),
    Color::Rgb(190, 255, 120),
    Color::Rgb(255, 150, 200),
    Color::Rgb(230, 230, 230),
    Color::Rgb(255, 160, 40),
];

/// A colour halfway to black (charts keep only a dataset's colour, not DIM).
pub(crate) fn faint(color: Color) -> Color {
    match color {
        Color::Rgb(r, g, b) => Color::Rgb(r / 5 * 2, g / 5 * 2, b / 5 * 2),
        other => other,
    }
}

pub(crate) fn title() -> Style {
    Style::default().fg(ACCENT).add_modifier(Modifier::BOLD)
}

pub(crate) fn muted() -> Style {
    Style::default().fg(MUTED)
}

pub(crate) fn error() -> Style {
    Style::default().fg(ERROR)
}

pub(crate) fn key() -> Style {
    Style::default()
        .fg(Color::Yellow)
        .add_modifier(Modifier::BOLD)
}

pub(crate) fn selected_tab() -> Style {
    Style::default()
        .fg(Color::Black)
        .bg(ACCENT)
        .add_modifier(Modifier::BOLD)
}

/// A token coloured by how sure the model was: green (sure) to red (unsure).
pub(crate) fn probability(p: f64) -> Style {
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

pub(crate) fn chosen() -> Style {
    Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
}

pub(crate) fn grid_cursor() -> Style {
    Style::default().add_modifier(Modifier::REVERSED)
}

/// A token coloured by its loss in nats: green (≤ 1) through yellow to red (≥ 6).
pub(crate) fn loss(l: f64) -> Style {
    match l {
        l if l < 1.0 => Style::default().fg(Color::Green),
        l if l < 3.0 => Style::default().fg(Color::Yellow),
        l if l < 6.0 => Style::default().fg(Color::LightRed),
        _ => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

/// A token coloured by how its loss changed since the pin: green lower, red higher,
/// grey within ±0.1 nats.
pub(crate) fn loss_change(d: f64) -> Style {
    match d {
        d if d <= -1.0 => Style::default()
            .fg(Color::Green)
            .add_modifier(Modifier::BOLD),
        d if d < -0.1 => Style::default().fg(Color::Green),
        d if d < 0.1 => Style::default().fg(Color::Gray),
        d if d < 1.0 => Style::default().fg(Color::LightRed),
        _ => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

/// Where attention is masked (a key after the query).
pub const MASKED: Color = Color::Rgb(38, 38, 38);

fn ramp(stops: &[(u8, u8, u8)], a: f32) -> Color {
    let a = if a.is_finite() {
        a.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = a * (stops.len() - 1) as f32;
    let i = (x.floor() as usize).min(stops.len() - 2);
    let t = x - i as f32;
    let mix = |u: u8, v: u8| (f32::from(u) + (f32::from(v) - f32::from(u)) * t).round() as u8;
    let (p, q) = (stops[i], stops[i + 1]);
    Color::Rgb(mix(p.0, q.0), mix(p.1, q.1), mix(p.2, q.2))
}

/// An attention weight (or a probability) in [0, 1]: black through purple and orange
/// to pale yellow (an "inferno"-like scale, readable on dark and light terminals).
pub(crate) fn heat(a: f32) -> Color {
    ramp(
        &[
            (0, 0, 4),
            (87, 16, 110),
            (188, 55, 84),
            (249, 142, 9),
            (252, 255, 164),
        ],
        a,
    )
}

/// The same for the row under the cursor: dark blue to bright cyan.
pub fn heat_cursor(a: f32) -> Color {
    ramp(&[(0, 16, 48), (0, 110, 160), (90, 255, 255)], a)
}

/// Text on a [`heat`] background: dark on the bright end.
pub(crate) fn on_heat(a: f32) -> Color {
    if a >= 0.6 {
        Color::Black
    } else {
        Color::White
    }
}
