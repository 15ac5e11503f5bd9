//! The dashboard's one text field: every input (the Generate prompt, the Train tab's
//! corpus and checkpoint paths, the Classify sentence and base, the Inspect text) is a
//! [`TextInput`], edited by the same keys ([`crate::tui::keys::Scope::Editing`]) and
//! drawn by [`TextInput::spans`]. Plain data: tabs own one each, update it from actions,
//! and views draw it.
//!
//! Written here rather than taken from `tui-input`: that crate has no history, and its
//! key handling reads crossterm events itself, where the dashboard's keys are data
//! (`keys.rs`) that also drive the hint bar and the help screen.
use ratatui::style::Style;
use ratatui::text::Span;
use unicode_width::UnicodeWidthChar;

use crate::tui::keys::Action;
use crate::tui::theme;

/// A line of text being typed, its cursor and the entries submitted before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextInput {
    text: String,
    /// In characters, `0..=len`.
    cursor: usize,
    /// Entries submitted, oldest first (no two equal neighbours).
    history: Vec<String>,
    /// The history entry shown while browsing it (`None`: the text being typed).
    browsing: Option<usize>,
    /// What was typed before browsing began, given back past the newest entry.
    draft: String,
}

impl TextInput {
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The cursor's position in characters.
    #[cfg(test)]
    pub(crate) fn cursor(&self) -> usize {
        self.cursor
    }

    #[cfg(test)]
    pub(crate) fn history(&self) -> &[String] {
        &self.history
    }

    /// Replaces the text (the cursor at its end); the history stays.
    pub fn set(&mut self, text: impl Into<String>) {
        self.text = text.into();
        self.cursor = self.len();
        self.browsing = None;
    }

    /// Types `c` at the cursor.
    pub(crate) fn insert(&mut self, c: char) {
        let at = self.byte_at(self.cursor);
        self.text.insert(at, c);
        self.cursor += 1;
        self.browsing = None;
    }

    /// Records the text in the history (not an empty one, nor the last one again) and
    /// returns it; the text stays in the field.
    pub(crate) fn submit(&mut self) -> String {
        if !self.text.trim().is_empty() && self.history.last() != Some(&self.text) {
            self.history.push(self.text.clone());
        }
        self.browsing = None;
        self.draft.clear();
        self.text.clone()
    }

    /// Applies an editing action; `false` for an action that is not one (the tab's).
    pub(crate) fn edit(&mut self, action: Action) -> bool {
        let len = self.len();
        match action {
            Action::CursorLeft => self.cursor = self.cursor.saturating_sub(1),
            Action::CursorRight => self.cursor = (self.cursor + 1).min(len),
            Action::CursorHome => self.cursor = 0,
            Action::CursorEnd => self.cursor = len,
            Action::WordLeft => self.cursor = self.word_start(),
            Action::WordRight => self.cursor = self.word_end(),
            Action::DeleteBack => {
                if self.cursor > 0 {
                    self.delete(self.cursor - 1, self.cursor);
                }
            }
            Action::DeleteForward => {
                if self.cursor < len {
                    self.delete(self.cursor, self.cursor + 1);
                }
            }
            Action::DeleteWordBack => self.delete(self.word_start(), self.cursor),
            Action::DeleteToStart => self.delete(0, self.cursor),
            Action::HistoryUp => {
                if !self.history.is_empty() {
                    let entry = match self.browsing {
                        Some(i) => i.saturating_sub(1),
                        None => {
                            self.draft = self.text.clone();
                            self.history.len() - 1
                        }
                    };
                    self.show_entry(Some(entry));
                }
            }
            Action::HistoryDown => {
                if let Some(i) = self.browsing {
                    self.show_entry((i + 1 < self.history.len()).then_some(i + 1));
                }
            }
            _ => return false,
        }
        true
    }

    /// The field drawn into `width` columns: the text scrolled sideways so the cursor
    /// stays in view, and (when `focused`) the cursor — the character under it
    /// highlighted, or a block after the end.
    pub(crate) fn spans(&self, width: usize, style: Style, focused: bool) -> Vec<Span<'static>> {
        let chars: Vec<char> = self.text.chars().collect();
        let width = width.max(1);
        let cell = |c: &char| c.width().unwrap_or(0);
        // The first character shown: as much before the cursor as fits beside it (and
        // beside the block after the end).
        let mut first = 0;
        if focused {
            let mut used = chars.get(self.cursor).map_or(1, |c| cell(c).max(1));
            first = self.cursor;
            while first > 0 && used + cell(&chars[first - 1]) <= width {
                first -= 1;
                used += cell(&chars[first]);
            }
        }
        let mut shown = 0;
        let mut take = |range: &[char]| -> String {
            let mut out = String::new();
            for c in range {
                if shown + cell(c) > width {
                    break;
                }
                shown += cell(c);
                out.push(*c);
            }
            out
        };
        if !focused {
            return vec![Span::styled(take(&chars[first..]), style)];
        }
        let before = take(&chars[first..self.cursor]);
        let at = match chars.get(self.cursor) {
            Some(c) => Span::styled(take(std::slice::from_ref(c)), theme::grid_cursor()),
            None => Span::styled(take(&['█']), style),
        };
        let after = take(chars.get(self.cursor + 1..).unwrap_or(&[]));
        vec![Span::styled(before, style), at, Span::styled(after, style)]
    }

    fn len(&self) -> usize {
        self.text.chars().count()
    }

    fn byte_at(&self, i: usize) -> usize {
        self.text
            .char_indices()
            .nth(i)
            .map_or(self.text.len(), |(b, _)| b)
    }

    /// Removes characters `from..to`, the cursor at `from`.
    fn delete(&mut self, from: usize, to: usize) {
        let (a, b) = (self.byte_at(from), self.byte_at(to));
        self.text.replace_range(a..b, "");
        self.cursor = from;
        self.browsing = None;
    }

    /// Where the word before the cursor starts (spaces before it skipped), as readline's
    /// backward-word and Ctrl-W count it.
    fn word_start(&self) -> usize {
        let chars: Vec<char> = self.text.chars().collect();
        let mut i = self.cursor;
        while i > 0 && chars[i - 1].is_whitespace() {
            i -= 1;
        }
        while i > 0 && !chars[i - 1].is_whitespace() {
            i -= 1;
        }
        i
    }

    /// Where the word at or after the cursor ends (readline's forward-word).
    fn word_end(&self) -> usize {
        let chars: Vec<char> = self.text.chars().collect();
        let mut i = self.cursor;
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        while i < chars.len() && !chars[i].is_whitespace() {
            i += 1;
        }
        i
    }

    fn show_entry(&mut self, entry: Option<usize>) {
        self.text = match entry {
            Some(i) => self.history[i].clone(),
            None => std::mem::take(&mut self.draft),
        };
        self.cursor = self.len();
        self.browsing = entry;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> TextInput {
        let mut input = TextInput::default();
        text.chars().for_each(|c| input.insert(c));
        input
    }

    fn shown(spans: &[Span]) -> String {
        spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn cursor_moves_by_character_and_by_word_and_edits_where_it_is() {
        let mut t = typed("He holds  the dog");
        assert_eq!(t.cursor(), 17);
        t.edit(Action::WordLeft);
        assert_eq!(t.cursor(), 14, "start of `dog`");
        t.edit(Action::WordLeft);
        assert_eq!(t.cursor(), 10, "spaces skipped, start of `the`");
        t.edit(Action::WordRight);
        assert_eq!(t.cursor(), 13, "end of `the`");
        t.edit(Action::CursorHome);
        t.edit(Action::WordRight);
        assert_eq!(t.cursor(), 2);
        t.insert('!');
        assert_eq!(t.text(), "He! holds  the dog");
        t.edit(Action::DeleteBack);
        t.edit(Action::DeleteForward);
        assert_eq!(t.text(), "Heholds  the dog");
        t.edit(Action::CursorEnd);
        t.edit(Action::DeleteWordBack);
        assert_eq!(t.text(), "Heholds  the ");
        t.edit(Action::DeleteWordBack);
        assert_eq!(t.text(), "Heholds  ");
        t.edit(Action::CursorLeft);
        t.edit(Action::DeleteToStart);
        assert_eq!((t.text(), t.cursor()), (" ", 0));
        // At the edges nothing happens and nothing panics.
        for a in [
            Action::CursorLeft,
            Action::DeleteBack,
            Action::WordLeft,
            Action::DeleteWordBack,
        ] {
            assert!(t.edit(a));
        }
        t.edit(Action::CursorEnd);
        assert!(t.edit(Action::DeleteForward) && t.edit(Action::CursorRight));
        assert_eq!((t.text(), t.cursor()), (" ", 1));
        assert!(!t.edit(Action::Submit), "not an editing action");
    }

    #[test]
    fn multibyte_text_is_edited_by_character() {
        let mut t = typed("café ünï");
        t.edit(Action::CursorLeft);
        t.edit(Action::DeleteBack);
        assert_eq!(t.text(), "café üï");
        t.edit(Action::WordLeft);
        t.edit(Action::DeleteBack);
        assert_eq!(t.text(), "caféüï");
    }

    #[test]
    fn history_recalls_entries_and_gives_back_the_draft() {
        let mut t = TextInput::default();
        for entry in ["one", "two", "two", "  "] {
            t.set(entry);
            t.submit();
        }
        assert_eq!(t.history(), ["one", "two"], "no repeats, no blank entries");
        t.set("half-typed");
        t.edit(Action::HistoryUp);
        assert_eq!(t.text(), "two");
        t.edit(Action::HistoryUp);
        t.edit(Action::HistoryUp);
        assert_eq!((t.text(), t.cursor()), ("one", 3), "stops at the oldest");
        t.edit(Action::HistoryDown);
        assert_eq!(t.text(), "two");
        t.edit(Action::HistoryDown);
        assert_eq!(
            t.text(),
            "half-typed",
            "past the newest: what was being typed"
        );
        t.edit(Action::HistoryDown);
        assert_eq!(t.text(), "half-typed");
        assert_eq!(t.submit(), "half-typed");
        assert_eq!((t.text(), t.history().len()), ("half-typed", 3));
    }

    #[test]
    fn a_long_text_scrolls_so_the_cursor_stays_in_view() {
        let mut t = typed("abcdefghij");
        let style = Style::default();
        assert_eq!(shown(&t.spans(20, style, true)), "abcdefghij█");
        assert_eq!(shown(&t.spans(5, style, true)), "ghij█");
        t.edit(Action::CursorHome);
        let spans = t.spans(5, style, true);
        assert_eq!(shown(&spans), "abcde");
        assert_eq!(spans[1].content, "a", "the character under the cursor");
        assert_eq!(shown(&t.spans(5, style, false)), "abcde");
        // Wide characters count two columns.
        let t = typed("日本語");
        assert_eq!(shown(&t.spans(5, style, true)), "本語█");
    }
}
