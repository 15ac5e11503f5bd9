//! `gptdash inspect`: one introspecting forward pass over a text — the text coloured by
//! each token's loss, the logit lens (layers × positions: the top next token and its
//! probability) and one head's attention as a character heatmap; `--json` gives all of
//! it (every layer and head).
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::checkpoint::load_model;
use crate::config::Settings;
use crate::device::{resolve_device, set_inference_threads};
use crate::inspect::report_ablated;
use crate::model::gpt::{Ablation, AblationMode};
use crate::protocol::{Event, InspectReport};
use crate::reading::Reading;

#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// A checkpoint folder (gptdash's, or a Hugging Face GPT-2 folder).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// The text to look at (at most the model's block size in tokens).
    #[arg(long, allow_hyphen_values = true)]
    pub text: String,
    /// The layer whose attention is drawn (from 1; default the last).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub layer: Option<u64>,
    /// The head drawn (from 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub head: u64,
    /// auto, cpu, cuda or cuda:N (default: the config's train.device).
    #[arg(long)]
    pub device: Option<String>,
    /// Heads to remove, LAYER.HEAD numbered from 1 (e.g. 2.3,1.1): their output is
    /// replaced before the attention's output projection.
    #[arg(long, value_name = "LAYER.HEAD[,…]", value_delimiter = ',')]
    pub ablate: Vec<String>,
    /// Layers whose MLP is removed (numbered from 1).
    #[arg(long, value_name = "LAYER[,…]", value_delimiter = ',')]
    pub ablate_mlp: Vec<u64>,
    /// What replaces a removed part's output: zeros, or its mean over the text.
    #[arg(long, value_enum, default_value_t = AblationArg::Zero)]
    pub ablation: AblationArg,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AblationArg {
    Zero,
    Mean,
}

/// `--ablate`, `--ablate-mlp` and `--ablation` as the pass's ablation (numbered from 0).
fn ablation(args: &InspectArgs) -> Result<Ablation> {
    let mut heads = Vec::new();
    for part in &args.ablate {
        let parsed = part.trim().split_once('.').and_then(|(l, h)| {
            Some((
                l.trim().parse::<usize>().ok()?,
                h.trim().parse::<usize>().ok()?,
            ))
        });
        match parsed {
            Some((l, h)) if l >= 1 && h >= 1 => heads.push((l - 1, h - 1)),
            _ => bail!(
                "--ablate {part}: give a head as LAYER.HEAD, numbered from 1 (e.g. --ablate 2.3)"
            ),
        }
    }
    let mut mlps = Vec::new();
    for &l in &args.ablate_mlp {
        if l == 0 {
            bail!("--ablate-mlp 0: layers are numbered from 1");
        }
        mlps.push(l as usize - 1);
    }
    Ok(Ablation {
        heads,
        mlps,
        mode: match args.ablation {
            AblationArg::Zero => AblationMode::Zero,
            AblationArg::Mean => AblationMode::Mean,
        },
    })
}

pub fn run(args: &InspectArgs, settings: Settings) -> Result<()> {
    let device = resolve_device(args.device.as_deref().unwrap_or(&settings.train.device))
        .context("--device")?;
    set_inference_threads(settings.train.threads);
    let loaded = load_model(&args.checkpoint, device)?;
    let reading = Reading::of(&loaded);
    let ids = reading.framed_ids(&args.text).context("--text")?;
    let (layers, heads) = (loaded.model.config.n_layer, loaded.model.config.n_head);
    let layer = args.layer.unwrap_or(layers as u64);
    if layer > layers as u64 {
        bail!("--layer {layer}: the model has {layers} layers (1 to {layers})");
    }
    if args.head > heads as u64 {
        bail!(
            "--head {}: the model has {heads} heads (1 to {heads})",
            args.head
        );
    }
    let ablation = ablation(args)?;
    ablation
        .check(layers as usize, heads as usize)
        .context(if ablation.heads.is_empty() {
            "--ablate-mlp"
        } else {
            "--ablate"
        })?;
    let mut report = report_ablated(
        &loaded.model,
        &loaded.tokenizer,
        &ids,
        &args.text,
        &ablation,
    )?;
    report.read_as = reading.read_as(&args.text);
    let text = if args.json {
        Event::Inspected(Box::new(report)).to_json() + "\n"
    } else {
        human(&report, layer as usize - 1, args.head as usize - 1)
    };
    super::print_stdout(&text)
}

/// The text coloured by loss, the lens table and one head's attention heatmap.
pub(crate) fn human(r: &InspectReport, layer: usize, head: usize) -> String {
    let mut out =
        String::from("per-token loss (nats; green low, red high; the first token has none):\n");
    for (i, token) in r.tokens.iter().enumerate() {
        match i.checked_sub(1).and_then(|p| r.token_loss.get(p)) {
            Some(&loss) => out.push_str(&format!("{}{token}\x1b[0m", loss_colour(loss))),
            None => out.push_str(token),
        }
    }
    if !r.token_loss.is_empty() {
        let mean = r.token_loss.iter().sum::<f64>() / r.token_loss.len() as f64;
        out.push_str(&format!(
            "\nmean loss {mean:.3} over {} predictions\n",
            r.token_loss.len()
        ));
        if let Some(a) = &r.ablation {
            let n = a.base_token_loss.len().max(1) as f64;
            let base = a.base_token_loss.iter().sum::<f64>() / n;
            let mut parts: Vec<String> = a.heads.iter().map(|h| format!("head {h}")).collect();
            parts.extend(a.mlps.iter().map(|l| format!("MLP {l}")));
            out.push_str(&format!(
                "with {} removed ({} ablation); without the removal {base:.3} ({:+.3})\n",
                parts.join(", "),
                a.mode,
                mean - base
            ));
        }
    } else {
        out.push('\n');
    }
    out.push_str("\nlogit lens: the top next token (probability) read after each layer\n");
    let mut header = format!("{:<16}{:>8}", "position", "loss");
    for l in 0..r.lens.len() {
        header.push_str(&format!(" {:<18}", format!("layer {}", l + 1)));
    }
    out.push_str(header.trim_end());
    out.push('\n');
    for (p, token) in r.tokens.iter().enumerate() {
        let loss = r
            .token_loss
            .get(p)
            .map_or_else(|| "-".into(), |l| format!("{l:.2}"));
        let mut row = format!("{:<16}{loss:>8}", clip(&format!("{p} {token:?}"), 15));
        for layer in &r.lens {
            let c = &layer[p];
            row.push_str(&format!(
                " {:<18}",
                clip(&format!("{:?} {:.2}", c.token, c.prob), 18)
            ));
        }
        out.push_str(row.trim_end());
        out.push('\n');
    }
    if let Some(att) = r.attention.get(layer).and_then(|l| l.get(head)) {
        out.push_str(&format!(
            "\nattention, layer {} head {} (rows: query, columns: key; ' ░▒▓█' = 0 … 1)\n",
            layer + 1,
            head + 1
        ));
        for (q, row) in att.iter().enumerate() {
            let cells: String = row.iter().map(|&a| shade(a)).collect();
            out.push_str(&format!(
                "{:<16}|{cells}|\n",
                clip(&format!("{q} {:?}", r.tokens[q]), 15)
            ));
        }
    }
    out
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(width - 1).collect();
        c.push('…');
        c
    }
}

/// A character for an attention weight in [0, 1].
fn shade(a: f32) -> char {
    match a {
        a if a < 0.05 => ' ',
        a if a < 0.25 => '░',
        a if a < 0.5 => '▒',
        a if a < 0.75 => '▓',
        _ => '█',
    }
}

/// An ANSI colour from green (loss ≤ 1 nat) through yellow to red (≥ 6 nats).
fn loss_colour(loss: f64) -> &'static str {
    match loss {
        l if l < 1.0 => "\x1b[32m",
        l if l < 3.0 => "\x1b[33m",
        l if l < 6.0 => "\x1b[31m",
        _ => "\x1b[1;31m",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shades_and_clipping() {
        assert_eq!(shade(0.0), ' ');
        assert_eq!(shade(1.0), '█');
        assert_eq!(shade(0.3), '▒');
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("ab", 4), "ab");
    }
}
