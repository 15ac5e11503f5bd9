//! The Generate tab: a prompt with history, the continuation with each token's
//! probability, the top-6 grid with a cursor, branching from any cell, and the decoding
//! options ([`view`] draws it).
mod view;

use ratatui::layout::Rect;
use ratatui::Frame;

use super::{Page, Shared};
use crate::config::Settings;
use crate::generate::{GenerateOptions, Generation};
use crate::protocol::{Command, Event};
use crate::tui::input::TextInput;
use crate::tui::keys::{Action, Scope};

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateTab {
    /// The prompt, its cursor and the prompts generated from before.
    pub prompt: TextInput,
    /// Typing into the prompt (otherwise keys move over the grid).
    pub editing: bool,
    pub options: GenerateOptions,
    pub result: Option<Generation>,
    /// The request the shown result answers, or the one awaited.
    pub pending: Option<u64>,
    pub next_request: u64,
    /// Grid cursor: generated token (column) and rank (row).
    pub col: usize,
    pub row: usize,
    pub error: Option<String>,
}

impl GenerateTab {
    pub(crate) fn new(settings: &Settings) -> Self {
        Self {
            prompt: TextInput::default(),
            editing: true,
            // The dashboard's grid is always the top 6.
            options: GenerateOptions {
                grid: 6,
                ..GenerateOptions::from(&settings.generate)
            },
            result: None,
            pending: None,
            next_request: 1,
            col: 0,
            row: 0,
            error: None,
        }
    }

    fn request(&mut self, forced: Vec<u32>, prompt: String) -> Vec<Command> {
        let request = self.next_request;
        self.next_request += 1;
        self.pending = Some(request);
        self.error = None;
        vec![Command::Generate {
            request,
            prompt,
            forced,
            options: self.options.clone(),
        }]
    }

    fn submit(&mut self) -> Vec<Command> {
        if self.prompt.text().trim().is_empty() {
            self.error = Some("the prompt is empty: type a few words, e.g. He and I".into());
            return Vec::new();
        }
        let prompt = self.prompt.submit();
        self.col = 0;
        self.row = 0;
        self.request(Vec::new(), prompt)
    }

    fn regenerate(&mut self) -> Vec<Command> {
        let prompt = self.prompt.text().to_string();
        if prompt.trim().is_empty() {
            self.error = Some("type a prompt first (i to edit)".into());
            return Vec::new();
        }
        self.request(Vec::new(), prompt)
    }

    /// Regenerates with the grid cell under the cursor forced at its step.
    fn branch(&mut self, shared: &mut Shared) -> Vec<Command> {
        let Some(result) = &self.result else {
            return Vec::new();
        };
        let Some(alternative) = result
            .tokens
            .get(self.col)
            .and_then(|t| t.top.get(self.row))
        else {
            return Vec::new();
        };
        let mut forced: Vec<u32> = result.tokens[..self.col].iter().map(|t| t.id).collect();
        forced.push(alternative.id);
        shared.log(format!(
            "branch: step {} forced to {:?}",
            self.col + 1,
            alternative.text
        ));
        let prompt = result.prompt.clone();
        self.request(forced, prompt)
    }

    /// Keys while typing the prompt.
    fn edit(&mut self, action: Action) -> Vec<Command> {
        match action {
            Action::Submit => return self.submit(),
            Action::Cancel => self.editing = false,
            _ => {}
        }
        Vec::new()
    }
}

impl Page for GenerateTab {
    fn scope(&self) -> Scope {
        if self.editing {
            Scope::GeneratePrompt
        } else {
            Scope::GenerateGrid
        }
    }

    fn on_action(&mut self, action: Action, shared: &mut Shared) -> Vec<Command> {
        if self.editing {
            return self.edit(action);
        }
        let columns = self.result.as_ref().map(|r| r.tokens.len()).unwrap_or(0);
        let o = &mut self.options;
        match action {
            Action::GridLeft => self.col = self.col.saturating_sub(1),
            Action::GridRight => self.col = (self.col + 1).min(columns.saturating_sub(1)),
            Action::GridUp => self.row = self.row.saturating_sub(1),
            Action::GridDown => self.row = (self.row + 1).min(o.grid.saturating_sub(1)),
            Action::GridHome => self.col = 0,
            Action::GridEnd => self.col = columns.saturating_sub(1),
            Action::Branch => return self.branch(shared),
            Action::EditPrompt => self.editing = true,
            Action::Regenerate => return self.regenerate(),
            Action::TemperatureDown => {
                o.temperature = ((o.temperature - 0.1).max(0.0) * 10.0).round() / 10.0
            }
            Action::TemperatureUp => {
                o.temperature = ((o.temperature + 0.1).min(5.0) * 10.0).round() / 10.0
            }
            Action::FewerTokens => o.max_new_tokens = o.max_new_tokens.saturating_sub(1).max(1),
            Action::MoreTokens => o.max_new_tokens = (o.max_new_tokens + 1).min(200),
            Action::ToggleSampling => o.sample = !o.sample,
            Action::TopKDown => {
                o.top_k = match o.top_k {
                    Some(k) if k > 1 => Some(k - 1),
                    _ => None,
                }
            }
            Action::TopKUp => o.top_k = Some(o.top_k.map(|k| k + 1).unwrap_or(1)),
            Action::NextSeed => o.seed = o.seed.wrapping_add(1),
            _ => {}
        }
        Vec::new()
    }

    fn field(&mut self) -> Option<&mut TextInput> {
        self.editing.then_some(&mut self.prompt)
    }

    fn on_event(&mut self, event: &Event, shared: &mut Shared, _focused: bool) -> Vec<Command> {
        match event {
            Event::Generated {
                request,
                generation,
            } if request.is_some() && *request == self.pending => {
                self.pending = None;
                self.error = None;
                self.col = self.col.min(generation.tokens.len().saturating_sub(1));
                self.result = Some(generation.clone());
            }
            Event::GenerateFailed {
                request,
                error,
                no_model,
            } => {
                let error = shared.failure(error, *no_model);
                if self.pending == Some(*request) {
                    self.pending = None;
                    self.error = Some(error.clone());
                }
                shared.log(format!("generate: {error}"));
            }
            _ => {}
        }
        Vec::new()
    }

    fn draw(&self, frame: &mut Frame, area: Rect, _shared: &Shared) {
        view::draw(frame, self, area);
    }
}
