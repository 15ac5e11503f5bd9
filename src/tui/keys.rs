//! Every key binding of the dashboard, as data. One list per [`Scope`] drives three
//! things: what a key does ([`action`]), the hint bar under each tab ([`Scope::hints`]) and
//! the help screen ([`help_sections`]), so they cannot disagree. (gitui's `key_list.rs`
//! is the model.)
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key asks for. Tabs handle their own actions; the first five are the app's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Quit,
    Help,
    NextTab,
    PrevTab,
    /// The tab with this number (1 is the first).
    GoTo(u8),
    // Text fields.
    Submit,
    Cancel,
    DeleteBack,
    DeleteForward,
    CursorLeft,
    CursorRight,
    CursorHome,
    CursorEnd,
    WordLeft,
    WordRight,
    DeleteWordBack,
    DeleteToStart,
    HistoryUp,
    HistoryDown,
    // Runs (Train and Classify tabs).
    StartPauseResume,
    PauseResume,
    Stop,
    Save,
    ChooseCorpus,
    OpenCheckpoint,
    /// Load the latest checkpoint of the run (watching: the last one its stream named).
    LoadLatest,
    NextPreset,
    ToggleLogScale,
    ToggleSmoothing,
    Finetune,
    NextBase,
    TypeBase,
    TypeSentence,
    ScrollUp,
    ScrollDown,
    // The Generate tab's grid and options.
    GridLeft,
    GridRight,
    GridUp,
    GridDown,
    GridHome,
    GridEnd,
    Branch,
    EditPrompt,
    Regenerate,
    TemperatureDown,
    TemperatureUp,
    FewerTokens,
    MoreTokens,
    ToggleSampling,
    TopKDown,
    TopKUp,
    NextSeed,
    // The Inspect tab.
    PrevHead,
    NextHead,
    ToggleOverview,
    NextExample,
    Refresh,
    Pin,
    ToggleDiff,
    NextView,
    PrevView,
    AblateHead,
    AblateMlp,
    AblationMode,
    RestoreAll,
    TypeCorrupted,
    // The Runs tab.
    ToggleSelect,
    ClearSelection,
    NextSort,
    NextXAxis,
    NextMetric,
    GroupSeeds,
}

/// A key: its code, and whether Ctrl is held. Shift is not told apart (`T` is `T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    pub code: KeyCode,
    pub ctrl: bool,
}

const fn key(code: KeyCode) -> Key {
    Key { code, ctrl: false }
}

const fn ch(c: char) -> Key {
    key(KeyCode::Char(c))
}

const fn ctrl(c: char) -> Key {
    ctrl_key(KeyCode::Char(c))
}

/// Ctrl with any key.
const fn ctrl_key(code: KeyCode) -> Key {
    Key { code, ctrl: true }
}

impl Key {
    fn matches(&self, event: &KeyEvent) -> bool {
        self.code == event.code && self.ctrl == event.modifiers.contains(KeyModifiers::CONTROL)
    }
}

/// Keys that do one thing (or a pair of opposite things, `t/T`), as shown to the user.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Binding {
    pub keys: &'static [(Key, Action)],
    /// How the keys are written in the hint bar and on the help screen.
    pub label: &'static str,
    /// The hint bar's short text; `None`: on the help screen only.
    pub hint: Option<&'static str>,
    /// The help screen's text.
    pub help: &'static str,
}

const fn bind(
    keys: &'static [(Key, Action)],
    label: &'static str,
    hint: Option<&'static str>,
    help: &'static str,
) -> Binding {
    Binding {
        keys,
        label,
        hint,
        help,
    }
}

/// Where keys are read: everywhere, or in one tab in one of its modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Always, even while typing.
    Always,
    /// Whenever no text field has the keys.
    Navigation,
    /// In every text field, after the field's own keys: moving, deleting, history
    /// ([`crate::tui::input::TextInput`] does what they ask).
    Editing,
    Train,
    /// The Train tab watching a stream (`gptdash watch`): the run trains elsewhere.
    Watch,
    /// Typing a corpus or checkpoint path on the Train tab.
    PathInput,
    GeneratePrompt,
    GenerateGrid,
    Classify,
    /// Typing a sentence on the Classify tab.
    SentenceInput,
    /// The Inspect tab's attention map (or its overview of every head), lens and text.
    Inspect,
    /// Typing a text to inspect.
    InspectInput,
    /// Typing the corrupted text to patch into.
    CorruptedInput,
    /// The Runs tab's list and chart.
    Runs,
    /// Typing the Runs tab's filter.
    RunsFilter,
}

#[rustfmt::skip]
const ALWAYS: &[Binding] = &[
    // One row for both, so every key of the busiest tab still fits 80×24.
    bind(&[(ctrl('c'), Action::Quit), (ctrl('q'), Action::Quit), (ctrl('o'), Action::LoadLatest)], "Ctrl-C, Ctrl-O", None, "quit (a run is stopped, kept) · load the run's last checkpoint"),
    bind(&[(key(KeyCode::Tab), Action::NextTab), (key(KeyCode::BackTab), Action::PrevTab)], "Tab, Shift-Tab", None, "next / previous tab, even while typing"),
];

#[rustfmt::skip]
const NAVIGATION: &[Binding] = &[
    bind(&[(ch('1'), Action::GoTo(1)), (ch('2'), Action::GoTo(2)), (ch('3'), Action::GoTo(3)), (ch('4'), Action::GoTo(4)), (ch('5'), Action::GoTo(5))], "1–5", None, "switch tabs"),
    bind(&[(ch('?'), Action::Help)], "?", None, "this help (any key closes it)"),
    bind(&[(ch('q'), Action::Quit)], "q", None, "quit (asks first while a run is in progress, then stops and keeps it)"),
];

#[rustfmt::skip]
const EDITING: &[Binding] = &[
    bind(&[(key(KeyCode::Left), Action::CursorLeft), (key(KeyCode::Right), Action::CursorRight), (key(KeyCode::Home), Action::CursorHome), (key(KeyCode::End), Action::CursorEnd), (ctrl_key(KeyCode::Left), Action::WordLeft), (ctrl_key(KeyCode::Right), Action::WordRight), (key(KeyCode::Backspace), Action::DeleteBack), (key(KeyCode::Delete), Action::DeleteForward), (ctrl('w'), Action::DeleteWordBack), (ctrl_key(KeyCode::Backspace), Action::DeleteWordBack), (ctrl('u'), Action::DeleteToStart)], "←→ Home End ⌫ Del", None, "move, delete; Ctrl-←→ and Ctrl-W by word, Ctrl-U to the start"),
    bind(&[(key(KeyCode::Up), Action::HistoryUp), (key(KeyCode::Down), Action::HistoryDown)], "↑/↓", Some("history"), "earlier / later entries (then what was being typed)"),
];

#[rustfmt::skip]
const TRAIN: &[Binding] = &[
    bind(&[(ch(' '), Action::StartPauseResume)], "space", Some("start/pause/resume"), "start / pause / resume training"),
    bind(&[(ch('x'), Action::Stop)], "x", Some("stop"), "stop the run: it saves; the model stays for generation"),
    bind(&[(ch('s'), Action::Save)], "s", Some("save"), "save a checkpoint"),
    bind(&[(ch('c'), Action::ChooseCorpus)], "c", Some("corpus"), "choose the corpus: a name (the list shows which are here) or a file path"),
    bind(&[(ch('o'), Action::OpenCheckpoint)], "o", Some("open checkpoint"), "open (load) a checkpoint for generation"),
    bind(&[(ch('p'), Action::NextPreset)], "p", Some("preset"), "next model preset (gpt-nano, gpt-micro, gpt-mini, gpt2)"),
    bind(&[(ch('l'), Action::ToggleLogScale)], "l", Some("log scale"), "log-scale loss chart"),
    bind(&[(ch('e'), Action::ToggleSmoothing)], "e", Some("smoothing"), "EMA smoothing of the loss chart"),
];

#[rustfmt::skip]
const WATCH: &[Binding] = &[
    bind(&[(ch('o'), Action::OpenCheckpoint)], "o", Some("open checkpoint"), "open (load) a checkpoint for Generate, Classify and Inspect: the stream's latest is filled in (Ctrl-O loads it at once)"),
    bind(&[(ch('s'), Action::Save)], "s", Some("save as a run"), "save the stream so far as a run of its own (checkpoints/watched-<date>-N): the Runs tab and gptdash runs list it"),
    bind(&[(ch('l'), Action::ToggleLogScale)], "l", Some("log scale"), "log-scale loss chart"),
    bind(&[(ch('e'), Action::ToggleSmoothing)], "e", Some("smoothing"), "EMA smoothing of the loss chart"),
];

#[rustfmt::skip]
const PATH_INPUT: &[Binding] = &[
    bind(&[(key(KeyCode::Enter), Action::Submit)], "Enter", Some("use this path"), "use the path typed"),
    bind(&[(key(KeyCode::Esc), Action::Cancel)], "Esc", Some("cancel"), "cancel"),
];

#[rustfmt::skip]
const GENERATE_PROMPT: &[Binding] = &[
    bind(&[(key(KeyCode::Enter), Action::Submit)], "Enter", Some("generate"), "generate after the prompt"),
    bind(&[(key(KeyCode::Esc), Action::Cancel)], "Esc", Some("to grid"), "leave the prompt, move over the grid"),
];

#[rustfmt::skip]
const GENERATE_GRID: &[Binding] = &[
    bind(&[(key(KeyCode::Left), Action::GridLeft), (key(KeyCode::Right), Action::GridRight), (key(KeyCode::Up), Action::GridUp), (key(KeyCode::Down), Action::GridDown), (key(KeyCode::Home), Action::GridHome), (key(KeyCode::End), Action::GridEnd)], "←→↑↓", Some("grid"), "move the grid cursor (Home, End: first, last token)"),
    bind(&[(key(KeyCode::Enter), Action::Branch)], "Enter", Some("branch here"), "branch: regenerate with the token under the cursor"),
    bind(&[(ch('i'), Action::EditPrompt), (ch('/'), Action::EditPrompt), (ch('e'), Action::EditPrompt)], "i", Some("edit prompt"), "edit the prompt (also / and e)"),
    bind(&[(ch('g'), Action::Regenerate)], "g", Some("regenerate"), "regenerate the prompt"),
    bind(&[(ch('t'), Action::TemperatureDown), (ch('T'), Action::TemperatureUp)], "t/T", Some("temp"), "temperature − / +"),
    bind(&[(ch('n'), Action::FewerTokens), (ch('N'), Action::MoreTokens)], "n/N", Some("tokens"), "max new tokens − / +"),
    bind(&[(ch('m'), Action::ToggleSampling)], "m", Some("greedy/sample"), "greedy ↔ sample"),
    bind(&[(ch('k'), Action::TopKDown), (ch('K'), Action::TopKUp)], "k/K", Some("top-k"), "top-k − / + (below 1: off)"),
    bind(&[(ch('r'), Action::NextSeed)], "r", Some("seed"), "next sampling seed"),
];

#[rustfmt::skip]
const CLASSIFY: &[Binding] = &[
    bind(&[(ch('f'), Action::Finetune)], "f", Some("fine-tune on SST-2"), "fine-tune the base on SST-2 ([finetune] in config.toml)"),
    bind(&[(ch('b'), Action::NextBase), (ch('B'), Action::TypeBase)], "b/B", Some("base"), "what to fine-tune: b cycles the model held, gpt2, distilgpt2; B types a checkpoint folder or hub id"),
    bind(&[(ch(' '), Action::PauseResume)], "space", Some("pause/resume"), "pause or resume fine-tuning"),
    bind(&[(ch('x'), Action::Stop)], "x", Some("stop"), "stop fine-tuning (keeps and saves the best epoch)"),
    bind(&[(ch('i'), Action::TypeSentence), (ch('/'), Action::TypeSentence), (key(KeyCode::Enter), Action::TypeSentence)], "i", Some("classify a sentence"), "type a sentence (also / and Enter)"),
    bind(&[(key(KeyCode::Up), Action::ScrollUp), (key(KeyCode::Down), Action::ScrollDown)], "↑/↓", Some("mistakes"), "scroll the most confident mistakes"),
];

#[rustfmt::skip]
const SENTENCE_INPUT: &[Binding] = &[
    bind(&[(key(KeyCode::Enter), Action::Submit)], "Enter", Some("classify"), "show P(positive) of the sentence"),
    bind(&[(key(KeyCode::Esc), Action::Cancel)], "Esc", Some("leave the text box"), "leave the text box"),
];

#[rustfmt::skip]
const INSPECT: &[Binding] = &[
    bind(&[(key(KeyCode::Left), Action::GridLeft), (key(KeyCode::Right), Action::GridRight), (key(KeyCode::Home), Action::GridHome), (key(KeyCode::End), Action::GridEnd)], "←→", Some("token"), "move the cursor over the text's tokens (Home, End: first, last); in the all-heads view and the ablation map: the head"),
    bind(&[(key(KeyCode::Up), Action::GridUp), (key(KeyCode::Down), Action::GridDown)], "↑↓", Some("layer"), "previous / next layer (in the model view: scroll)"),
    bind(&[(ch('['), Action::PrevHead), (ch(']'), Action::NextHead)], "[ ]", Some("head"), "previous / next attention head"),
    bind(&[(ch('v'), Action::NextView), (ch('V'), Action::PrevView)], "v/V", Some("view"), "next / previous view: one head, all heads, ablation map, patching, attribution, model, data"),
    bind(&[(key(KeyCode::Enter), Action::ToggleOverview)], "Enter", None, "every layer × head as small maps ↔ the selected one"),
    bind(&[(ch('a'), Action::AblateHead), (ch('m'), Action::AblateMlp)], "a/m", Some("remove"), "remove the selected head (a) or the selected layer's MLP (m), or put it back: the text shows each token's loss change, the next-token box the top 6 before and after"),
    bind(&[(ch('z'), Action::AblationMode), (ch('x'), Action::RestoreAll)], "z, x", None, "z: removed parts give zeros ↔ their mean over the text; x: put every part back"),
    bind(&[(ch('c'), Action::TypeCorrupted)], "c", None, "type the corrupted text to patch into (same token length; optionally | ANSWER | WRONG)"),
    bind(&[(ch('i'), Action::EditPrompt), (ch('/'), Action::EditPrompt)], "i", Some("text"), "type the text to inspect (also /)"),
    bind(&[(ch('n'), Action::NextExample)], "n", Some("next"), "the next test example of the corpus (in the data view: the next training pair)"),
    bind(&[(ch('p'), Action::Pin)], "p", Some("pin"), "pin the current weights (or unpin): each token's loss is compared with them as training goes on"),
    bind(&[(ch('d'), Action::ToggleDiff)], "d", None, "colour the text by the loss change since the pin, or by the loss"),
    bind(&[(ch('r'), Action::Refresh)], "r", None, "inspect again with the current weights (while training it refreshes every ui.inspect_every steps)"),
];

#[rustfmt::skip]
const CORRUPTED_INPUT: &[Binding] = &[
    bind(&[(key(KeyCode::Enter), Action::Submit)], "Enter", Some("patch"), "patch from the text inspected into this one: TEXT, or TEXT | ANSWER | WRONG"),
    bind(&[(key(KeyCode::Esc), Action::Cancel)], "Esc", Some("leave the text box"), "leave the text box (the text stays)"),
];

#[rustfmt::skip]
const INSPECT_INPUT: &[Binding] = &[
    bind(&[(key(KeyCode::Enter), Action::Submit)], "Enter", Some("inspect"), "inspect the text typed"),
    bind(&[(key(KeyCode::Esc), Action::Cancel)], "Esc", Some("leave the text box"), "leave the text box (the text stays)"),
];

#[rustfmt::skip]
const RUNS: &[Binding] = &[
    bind(&[(key(KeyCode::Up), Action::ScrollUp), (key(KeyCode::Down), Action::ScrollDown)], "↑↓", Some("move"), "move through the list"),
    bind(&[(ch(' '), Action::ToggleSelect), (ch('c'), Action::ClearSelection)], "space", Some("select"), "select the run (or not): the chart overlays the selected runs; c clears the selection"),
    bind(&[(key(KeyCode::Enter), Action::Branch)], "Enter", Some("open"), "open the run: its model for Generate, Classify and Inspect, its history on the Train tab"),
    bind(&[(ch('/'), Action::EditPrompt)], "/", Some("filter"), "filter the list by typing (name, corpus or model)"),
    bind(&[(ch('s'), Action::NextSort)], "s", Some("sort"), "sort by the next column (each one way, then the other)"),
    bind(&[(ch('x'), Action::NextXAxis)], "x", Some("x axis"), "x by step, tokens or training time"),
    bind(&[(ch('m'), Action::NextMetric)], "m", Some("curve"), "train loss, test (validation) loss, validation accuracy"),
    bind(&[(ch('e'), Action::ToggleSmoothing)], "e", Some("smoothing"), "smoothing: none, EMA, moving mean (the raw curve stays faint beneath)"),
    bind(&[(ch('l'), Action::ToggleLogScale)], "l", Some("log"), "log-scale y axis"),
    bind(&[(ch('g'), Action::GroupSeeds)], "g", None, "runs that differ only by seed: one mean line with a ± std band, or each apart"),
    bind(&[(ch('r'), Action::Refresh)], "r", None, "look for runs again now (every few seconds anyway while shown)"),
];

#[rustfmt::skip]
const RUNS_FILTER: &[Binding] = &[
    bind(&[(key(KeyCode::Enter), Action::Submit)], "Enter", Some("keep the filter"), "keep the filter, back to the list"),
    bind(&[(key(KeyCode::Esc), Action::Cancel)], "Esc", Some("clear"), "clear the filter"),
];

impl Scope {
    pub(crate) fn bindings(self) -> &'static [Binding] {
        match self {
            Scope::Always => ALWAYS,
            Scope::Navigation => NAVIGATION,
            Scope::Editing => EDITING,
            Scope::Train => TRAIN,
            Scope::Watch => WATCH,
            Scope::PathInput => PATH_INPUT,
            Scope::GeneratePrompt => GENERATE_PROMPT,
            Scope::GenerateGrid => GENERATE_GRID,
            Scope::Classify => CLASSIFY,
            Scope::SentenceInput => SENTENCE_INPUT,
            Scope::Inspect => INSPECT,
            Scope::InspectInput => INSPECT_INPUT,
            Scope::CorruptedInput => CORRUPTED_INPUT,
            Scope::Runs => RUNS,
            Scope::RunsFilter => RUNS_FILTER,
        }
    }

    /// A text field: unbound printable characters are typed into it, and the
    /// navigation keys (`q`, `?`, digits) are letters.
    pub(crate) fn is_text(self) -> bool {
        matches!(
            self,
            Scope::PathInput
                | Scope::GeneratePrompt
                | Scope::SentenceInput
                | Scope::InspectInput
                | Scope::CorruptedInput
                | Scope::RunsFilter
        )
    }

    pub(crate) fn title(self) -> &'static str {
        match self {
            Scope::Always | Scope::Navigation => "Everywhere",
            Scope::Editing => "Typing (every text field)",
            Scope::Train => "Train",
            Scope::Watch => "Train (gptdash watch: the run trains elsewhere)",
            Scope::PathInput => "Train (typing a path)",
            Scope::GeneratePrompt => "Generate (prompt)",
            Scope::GenerateGrid => "Generate (grid)",
            Scope::Classify => "Classify",
            Scope::SentenceInput => "Classify (typing a sentence)",
            Scope::Inspect => "Inspect",
            Scope::InspectInput => "Inspect (typing a text)",
            Scope::CorruptedInput => "Inspect (typing a corrupted text)",
            Scope::Runs => "Runs",
            Scope::RunsFilter => "Runs (typing a filter)",
        }
    }

    /// The hint bar: `(keys, what)` for the bindings that have a hint (a text field's
    /// own, then the editing keys').
    pub(crate) fn hints(self) -> impl Iterator<Item = (&'static str, &'static str)> {
        let editing: &[Binding] = if self.is_text() { EDITING } else { &[] };
        self.bindings()
            .iter()
            .chain(editing)
            .filter_map(|b| b.hint.map(|h| (b.label, h)))
    }

    /// The scopes whose keys are read in this one, first to last: the always-bindings,
    /// navigation (outside text fields), the scope's own, then (in text fields) editing.
    fn layers(self) -> impl Iterator<Item = Scope> {
        let text = self.is_text();
        let own = !matches!(self, Scope::Always | Scope::Navigation);
        [
            Some(Scope::Always),
            (!text).then_some(Scope::Navigation),
            own.then_some(self),
            text.then_some(Scope::Editing),
        ]
        .into_iter()
        .flatten()
    }
}

/// What `event` does in `scope`, the first of its [layers](Scope::layers) that binds it.
pub(crate) fn action(scope: Scope, event: &KeyEvent) -> Option<Action> {
    scope
        .layers()
        .flat_map(|s| s.bindings())
        .flat_map(|b| b.keys)
        .find(|(k, _)| k.matches(event))
        .map(|(_, a)| *a)
}

/// The help screen for a tab that reads `scopes`: the keys that work everywhere, then
/// the tab's.
pub(crate) fn help_sections(scopes: &[Scope]) -> Vec<(&'static str, Vec<&'static Binding>)> {
    let everywhere = ALWAYS.iter().chain(NAVIGATION).collect();
    let mut sections = vec![(Scope::Always.title(), everywhere)];
    for scope in scopes {
        sections.push((scope.title(), scope.bindings().iter().collect()));
    }
    if scopes.iter().any(|s| s.is_text()) {
        sections.push((Scope::Editing.title(), EDITING.iter().collect()));
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Scope; 15] = [
        Scope::Always,
        Scope::Navigation,
        Scope::Editing,
        Scope::Train,
        Scope::Watch,
        Scope::PathInput,
        Scope::GeneratePrompt,
        Scope::GenerateGrid,
        Scope::Classify,
        Scope::SentenceInput,
        Scope::Inspect,
        Scope::InspectInput,
        Scope::CorruptedInput,
        Scope::Runs,
        Scope::RunsFilter,
    ];

    #[test]
    fn no_key_means_two_things_where_it_is_read() {
        for scope in ALL {
            let mut layers: Vec<Scope> = scope.layers().collect();
            layers.dedup();
            let keys: Vec<Key> = layers
                .iter()
                .flat_map(|s| s.bindings())
                .flat_map(|b| b.keys.iter().map(|(k, _)| *k))
                .collect();
            for (i, k) in keys.iter().enumerate() {
                assert!(!keys[i + 1..].contains(k), "{k:?} bound twice in {scope:?}");
            }
        }
    }

    #[test]
    fn every_tab_scope_has_hints_and_help_text() {
        for scope in &ALL[3..] {
            assert!(scope.hints().count() >= 2, "{scope:?}");
            assert!(scope.bindings().iter().all(|b| !b.help.is_empty()));
        }
    }

    #[test]
    fn text_fields_take_q_and_digits_as_letters() {
        let q = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        assert_eq!(action(Scope::Train, &q), Some(Action::Quit));
        assert_eq!(action(Scope::GeneratePrompt, &q), None);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(action(Scope::GeneratePrompt, &ctrl_c), Some(Action::Quit));
        let c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::NONE);
        assert_eq!(action(Scope::Train, &c), Some(Action::ChooseCorpus));
        // Every text field edits with the same keys.
        let ctrl_left = KeyEvent::new(KeyCode::Left, KeyModifiers::CONTROL);
        let ctrl_w = KeyEvent::new(KeyCode::Char('w'), KeyModifiers::CONTROL);
        for field in ALL.iter().filter(|s| s.is_text()) {
            assert_eq!(
                action(*field, &ctrl_left),
                Some(Action::WordLeft),
                "{field:?}"
            );
            assert_eq!(
                action(*field, &ctrl_w),
                Some(Action::DeleteWordBack),
                "{field:?}"
            );
        }
        assert_eq!(action(Scope::Train, &ctrl_w), None);
        let upper_t = KeyEvent::new(KeyCode::Char('T'), KeyModifiers::SHIFT);
        assert_eq!(
            action(Scope::GenerateGrid, &upper_t),
            Some(Action::TemperatureUp)
        );
    }
}
