//! Small drawing helpers the tabs share.
use ratatui::symbols::Marker;
use ratatui::widgets::{Dataset, GraphType};

/// A curve for a `Chart`: a braille line in `color`.
pub(crate) fn line_series<'a>(
    name: &'a str,
    color: ratatui::style::Color,
    data: &'a [(f64, f64)],
) -> Dataset<'a> {
    Dataset::default()
        .name(name)
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(ratatui::style::Style::default().fg(color))
        .data(data)
}

/// `12.3s`, `4m05s`, `1h02m`.
pub(crate) fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s < 60 {
        format!("{secs:.1}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}
