//! The `?` overlay: the keys that work everywhere and the active tab's, from the one
//! list of bindings in [`crate::tui::keys`].
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use crate::tui::keys::{help_sections, Scope};
use crate::tui::theme;

/// The overlay for a tab whose keys are read in `scopes`.
pub(crate) fn draw(frame: &mut Frame, area: Rect, scopes: &[Scope]) {
    let sections = help_sections(scopes);
    // Blank lines between sections only where they fit (80×24 shows every key).
    let rows: usize = sections.iter().map(|(_, b)| b.len() + 1).sum();
    let spaced = rows + sections.len() + 1 < area.height as usize;
    let mut lines: Vec<Line> = Vec::new();
    for (title, bindings) in sections {
        if spaced && !lines.is_empty() {
            lines.push(Line::from(""));
        }
        lines.push(Line::from(Span::styled(title, theme::title())));
        for b in bindings {
            lines.push(Line::from(vec![
                Span::styled(format!("{:>16}  ", b.label), theme::key()),
                Span::raw(b.help),
            ]));
        }
    }
    let width = 78.min(area.width);
    let height = (lines.len() as u16 + 2).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
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
