//! `gptdash generate`: text with each token's probability, then the top-N grid.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use unicode_width::UnicodeWidthStr;

use crate::checkpoint::load_model;
use crate::config::Settings;
use crate::device::{resolve_device, set_inference_threads};
use crate::generate::{generate_from, GenerateOptions, Generation};
use crate::protocol::Event;
use crate::reading::Reading;

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Checkpoint directory written by `gptdash train`.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Text to continue.
    #[arg(long, allow_hyphen_values = true)]
    pub prompt: String,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_new_tokens: Option<u64>,
    /// Softmax temperature, >= 0 (0 = greedy).
    #[arg(long, value_parser = super::non_negative_f64, allow_hyphen_values = true)]
    pub temperature: Option<f64>,
    /// Sample instead of taking the most probable token (greedy, the default).
    #[arg(long)]
    pub sample: bool,
    /// Sample among the K most probable tokens only.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub top_k: Option<u64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Alternatives shown per generated token.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub grid: Option<u64>,
    /// Re-run the whole context for every token instead of using the key/value cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Stop after an end-of-text token.
    #[arg(long)]
    pub stop_at_eot: bool,
    /// auto, cpu, cuda or cuda:N (default: the config's train.device).
    #[arg(long)]
    pub device: Option<String>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

impl GenerateArgs {
    pub(crate) fn options(&self, settings: &Settings) -> GenerateOptions {
        let defaults = GenerateOptions::from(&settings.generate);
        GenerateOptions {
            max_new_tokens: self
                .max_new_tokens
                .map_or(defaults.max_new_tokens, |n| n as usize),
            temperature: self.temperature.unwrap_or(defaults.temperature),
            sample: self.sample || defaults.sample,
            top_k: self.top_k.map(|k| k as usize).or(defaults.top_k),
            seed: self.seed.unwrap_or(defaults.seed),
            grid: self.grid.map_or(defaults.grid, |n| n as usize),
            stop_at_eot: self.stop_at_eot,
            use_cache: !self.no_cache,
            sentence_context: false,
        }
    }
}

pub fn run(args: &GenerateArgs, settings: Settings) -> Result<()> {
    crate::interrupt::install()?;
    let options = args.options(&settings);
    options.validate()?;
    let device = resolve_device(args.device.as_deref().unwrap_or(&settings.train.device))
        .context("--device")?;
    set_inference_threads(settings.train.threads);
    let loaded = load_model(&args.checkpoint, device)?;
    let reading = Reading::of(&loaded);
    let ids = reading.prompt_ids(&args.prompt)?;
    let options = GenerateOptions {
        sentence_context: reading.frame.is_some(),
        ..options
    };
    let mut generation = generate_from(
        &loaded.model,
        &loaded.tokenizer,
        &args.prompt,
        &ids,
        &[],
        &options,
    )?;
    generation.read_as = reading.read_as(&args.prompt);
    let text = if args.json {
        Event::Generated {
            request: None,
            generation,
        }
        .to_json()
            + "\n"
    } else {
        format!(
            "{}{}\n\n{}mean log-probability {:.4}, perplexity {:.3} over {} tokens\n",
            generation
                .read_as
                .as_ref()
                .map(|r| format!("as the model reads it: {r}\n"))
                .unwrap_or_default(),
            annotated_text(&generation),
            grid_table(&generation, terminal_width()),
            generation.mean_logprob,
            generation.perplexity,
            generation.tokens.len()
        )
    };
    super::print_stdout(&text)?;
    // Stopped by a signal: what was generated is printed; the exit code says it stopped.
    crate::interrupt::check()
}

/// `He and I can (0.3781) hold (0.6837) ...`: the prompt, then each token and its probability.
pub(crate) fn annotated_text(g: &Generation) -> String {
    let mut out = g.prompt.clone();
    for t in &g.tokens {
        out.push_str(&format!("{} ({:.4})", t.text, t.prob));
    }
    out
}

fn terminal_width() -> usize {
    if let Some(cols) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return cols;
    }
    crossterm::terminal::size()
        .map(|(w, _)| w as usize)
        .unwrap_or(120)
        .max(40)
}

/// The grid: one column per generated token, one row per rank, cells `token (p)`, the
/// chosen token marked `*`, and a last row with the probability outside the grid.
/// Columns that do not fit `width` wrap into further blocks.
pub(crate) fn grid_table(g: &Generation, width: usize) -> String {
    let ranks = g.tokens.iter().map(|t| t.top.len()).max().unwrap_or(0);
    let label_width = format!("#{ranks}").len().max("rest".len()) + 1;
    let columns: Vec<Vec<String>> = g
        .tokens
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let mut cells = vec![format!("{}", k + 1)];
            for rank in 0..ranks {
                cells.push(match t.top.get(rank) {
                    Some(c) => format!(
                        "{}{} ({:.4})",
                        if c.id == t.id { "*" } else { " " },
                        quote(&c.text),
                        c.prob
                    ),
                    None => String::new(),
                });
            }
            cells.push(format!(" {:.4}", t.rest));
            cells
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| c.iter().map(|s| s.width()).max().unwrap_or(0) + 2)
        .collect();

    let mut out = String::new();
    let mut start = 0;
    while start < columns.len() {
        let mut end = start;
        let mut used = label_width;
        while end < columns.len() && (end == start || used + widths[end] <= width) {
            used += widths[end];
            end += 1;
        }
        for row in 0..ranks + 2 {
            let label = match row {
                0 => "step".to_string(),
                r if r <= ranks => format!("#{r}"),
                _ => "rest".to_string(),
            };
            let mut line = format!("{label:<label_width$}");
            for (col, w) in columns[start..end].iter().zip(&widths[start..end]) {
                let cell = &col[row];
                line.push_str(cell);
                line.push_str(&" ".repeat(w.saturating_sub(cell.width())));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push('\n');
        start = end;
    }
    out
}

/// Token text with visible boundaries: `'␣can'` style would hide the real space, so the
/// text is shown between quotes when it starts or ends with a space.
fn quote(text: &str) -> String {
    if text.starts_with(' ') || text.ends_with(' ') || text.is_empty() {
        format!("\"{text}\"")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Candidate, GeneratedToken};

    fn token(id: u32, text: &str, prob: f64, alts: &[(u32, &str, f64)]) -> GeneratedToken {
        let top: Vec<Candidate> = alts
            .iter()
            .map(|&(id, t, p)| Candidate {
                id,
                text: t.into(),
                prob: p,
            })
            .collect();
        GeneratedToken::new(id, text.into(), prob, top, false)
    }

    fn sample() -> Generation {
        Generation {
            prompt: "He and I".into(),
            read_as: None,
            text: "He and I can hold".into(),
            tokens: vec![
                token(
                    1,
                    " can",
                    0.3781,
                    &[(1, " can", 0.3781), (2, " hold", 0.2), (3, " rub", 0.1)],
                ),
                token(
                    4,
                    " hold",
                    0.6837,
                    &[(4, " hold", 0.6837), (5, " feed", 0.1), (6, " see", 0.05)],
                ),
            ],
            mean_logprob: -0.6766,
            perplexity: 1.967,
        }
    }

    #[test]
    fn annotated_text_reads_like_the_assignment() {
        assert_eq!(
            annotated_text(&sample()),
            "He and I can (0.3781) hold (0.6837)"
        );
    }

    #[test]
    fn grid_has_one_column_per_token_and_marks_the_choice() {
        let table = grid_table(&sample(), 200);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("step") && lines[0].contains('1') && lines[0].contains('2'));
        assert!(
            lines[1].contains("*\" can\" (0.3781)") && lines[1].contains("*\" hold\" (0.6837)"),
            "{table}"
        );
        assert!(lines[2].contains(" \" hold\" (0.2000)"), "{table}");
        assert!(lines[4].starts_with("rest"));
        assert_eq!(lines.len(), 6); // header, 3 ranks, rest, blank
    }

    #[test]
    fn wide_grids_wrap_into_blocks() {
        let table = grid_table(&sample(), 30);
        let headers = table.lines().filter(|l| l.starts_with("step")).count();
        assert_eq!(headers, 2, "{table}");
    }
}
