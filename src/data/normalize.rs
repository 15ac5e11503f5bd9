//! Text normalisation to match a downstream task's text. SST-2's sentences are
//! lower-cased and split Penn-Treebank style (`it 's a charming , often affecting
//! journey .`); raw text such as IMDb reviews is not. [`ptb_split`] brings raw text to
//! that form, so a model pretrained on it sees SST-2's tokens.

use serde::{Deserialize, Serialize};

/// How a model's text was prepared before tokenizing (the `[data]` settings it was
/// trained with). Checkpoints record it, so text given to the model later (a sentence to
/// classify, fine-tuning rows) is prepared the same way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextForm {
    #[serde(default)]
    pub lowercase: bool,
    #[serde(default)]
    pub ptb_split: bool,
}

impl TextForm {
    /// The form the `[data]` settings ask for.
    pub(crate) fn of(data: &crate::config::DataSettings) -> Self {
        Self {
            lowercase: data.lowercase,
            ptb_split: data.ptb_split,
        }
    }

    /// `text` split Penn-Treebank style and lower-cased, as the form asks. Both steps
    /// leave text already in that form as it is, so SST-2's rows pass unchanged.
    pub(crate) fn apply(&self, text: &str) -> String {
        let text = if self.ptb_split {
            ptb_split(text)
        } else {
            text.to_string()
        };
        if self.lowercase {
            text.to_lowercase()
        } else {
            text
        }
    }

    /// Words for people: "lower-cased and split Penn-Treebank style", or `None`.
    pub(crate) fn describe(&self) -> Option<String> {
        let mut done = Vec::new();
        if self.lowercase {
            done.push("lower-cased");
        }
        if self.ptb_split {
            done.push("split Penn-Treebank style");
        }
        (!done.is_empty()).then(|| done.join(" and "))
    }
}

/// Splits punctuation and clitics off words as the Penn Treebank tokenizer does:
/// `It's a film, isn't it?` → `It 's a film , is n't it ?`; `"quoted"` → `` `` quoted '' ``;
/// `...` and `--` stand alone. HTML line breaks (`<br />`, IMDb's paragraph marks) become
/// spaces. Case is kept (lower-casing is its own setting).
pub fn ptb_split(text: &str) -> String {
    let text = text
        .replace("<br />", " ")
        .replace("<br/>", " ")
        .replace("<br>", " ");
    let mut out: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        split_word(word, &mut out);
    }
    out.join(" ")
}

/// Punctuation that always stands alone.
const ALONE: &[char] = &[',', ';', ':', '?', '!', '(', ')', '[', ']', '{', '}'];

fn split_word(word: &str, out: &mut Vec<String>) {
    // `...` and `--` inside a word separate its parts.
    for part in split_keeping(word, &["...", "--"]) {
        if part == "..." || part == "--" {
            out.push(part.to_string());
        } else if !part.is_empty() {
            split_piece(part, out);
        }
    }
}

/// `text` split around each of `separators`, the separators kept as parts.
fn split_keeping<'a>(text: &'a str, separators: &[&str]) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let found = separators
            .iter()
            .filter_map(|s| rest.find(s).map(|at| (at, *s)))
            .min_by_key(|(at, _)| *at);
        match found {
            Some((at, sep)) => {
                parts.push(&rest[..at]);
                parts.push(&rest[at..at + sep.len()]);
                rest = &rest[at + sep.len()..];
            }
            None => {
                parts.push(rest);
                break;
            }
        }
    }
    parts
}

fn split_piece(piece: &str, out: &mut Vec<String>) {
    let mut core = piece;
    let mut before: Vec<String> = Vec::new();
    let mut after: Vec<String> = Vec::new();
    loop {
        if let Some(rest) = core.strip_prefix('"') {
            before.push("``".into());
            core = rest;
        } else if let Some(c) = core.chars().next().filter(|c| ALONE.contains(c)) {
            before.push(c.to_string());
            core = &core[c.len_utf8()..];
        } else {
            break;
        }
    }
    loop {
        if let Some(rest) = core.strip_suffix('"') {
            after.push("''".into());
            core = rest;
        } else if let Some(c) = core.chars().last().filter(|c| ALONE.contains(c)) {
            after.push(c.to_string());
            core = &core[..core.len() - c.len_utf8()];
        } else if core.len() > 1 && core.ends_with('.') && !is_abbreviation(core) {
            after.push(".".into());
            core = &core[..core.len() - 1];
        } else {
            break;
        }
    }
    out.extend(before);
    if !core.is_empty() {
        split_clitics(core, out);
    }
    out.extend(after.into_iter().rev());
}

/// `don't` → `do n't`, `it's` → `it 's`, `can't` → `ca n't`, `we'll` → `we 'll`.
fn split_clitics(word: &str, out: &mut Vec<String>) {
    let lower = word.to_lowercase();
    if lower.len() > 3 && lower.ends_with("n't") {
        let at = word.len() - 3;
        out.push(word[..at].to_string());
        out.push(word[at..].to_string());
        return;
    }
    for clitic in ["'s", "'re", "'ve", "'ll", "'d", "'m"] {
        if lower.len() > clitic.len() && lower.ends_with(clitic) {
            let at = word.len() - clitic.len();
            out.push(word[..at].to_string());
            out.push(word[at..].to_string());
            return;
        }
    }
    out.push(word.to_string());
}

/// `Mr.`, `e.g.`, `U.S.`, single initials: a period that does not end a sentence.
fn is_abbreviation(word: &str) -> bool {
    let stem = word.trim_end_matches('.').to_lowercase();
    let initial = stem.chars().count() == 1 && stem.chars().all(char::is_alphabetic);
    initial
        || stem.contains('.')
        || [
            "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc",
        ]
        .contains(&stem.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sst(raw: &str) -> String {
        TextForm {
            lowercase: true,
            ptb_split: true,
        }
        .apply(raw)
    }

    #[test]
    fn a_text_form_leaves_text_already_in_it_alone() {
        let form = TextForm {
            lowercase: true,
            ptb_split: true,
        };
        // The first rows of SST-2's train split, as GLUE ships them.
        for row in [
            "hide new secretions from the parental units",
            "contains no wit , only labored gags",
            "that loves its characters and communicates something rather beautiful about human nature",
            "it 's a charming and often affecting journey . ",
            "the greatest musicians",
            "are more deeply thought through than in most ` right-thinking ' films",
            "does n't work",
        ] {
            assert_eq!(form.apply(row), row.trim(), "{row:?}");
            assert_eq!(form.apply(&form.apply(row)), form.apply(row));
        }
        let raw = "It Doesn't WORK!";
        assert_eq!(TextForm::default().apply(raw), raw);
        assert_eq!(
            TextForm {
                lowercase: true,
                ptb_split: false
            }
            .apply(raw),
            "it doesn't work!"
        );
        assert_eq!(
            TextForm {
                lowercase: false,
                ptb_split: true
            }
            .apply(raw),
            "It Does n't WORK !"
        );
        assert_eq!(
            form.describe().unwrap(),
            "lower-cased and split Penn-Treebank style"
        );
        assert_eq!(TextForm::default().describe(), None);
    }

    #[test]
    fn raw_review_text_becomes_sst_style() {
        assert_eq!(
            sst("It's a charming, often affecting journey."),
            "it 's a charming , often affecting journey ."
        );
        assert_eq!(
            sst("They don't make movies like they used to anymore"),
            "they do n't make movies like they used to anymore"
        );
        assert_eq!(
            sst("the worst -- and only -- killer website movie"),
            "the worst -- and only -- killer website movie"
        );
        assert_eq!(
            sst("the film's ending has a \"what was it all for?\""),
            "the film 's ending has a `` what was it all for ? ''"
        );
        assert_eq!(
            sst("Everything about it...okay, I'll go through this."),
            "everything about it ... okay , i 'll go through this ."
        );
        assert_eq!(
            sst("I can't. (Really!) Mr. Smith saw it in the U.S. too.<br /><br />Great!"),
            "i ca n't . ( really ! ) mr. smith saw it in the u.s. too . great !"
        );
    }

    #[test]
    fn text_already_split_is_left_as_it_is() {
        let s = "it 's about issues most adults have to face -- the real issues , i think .";
        assert_eq!(sst(s), s);
        assert_eq!(ptb_split(""), "");
    }
}
