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
use crate::inspect::{ablation_of, report_asked, AskError, AskPart, PatchErrors};
use crate::model::gpt::Ablation;
use crate::protocol::{
    AblationAsk, AblationMap, Event, InspectAsk, InspectReport, PatchAsk, Patching,
    TokenAttribution, TopToken,
};
use crate::reading::Reading;

#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// A checkpoint folder (gptdash's, or a Hugging Face GPT-2 folder).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// The text to look at (at most the model's block size in tokens).
    #[arg(long, allow_hyphen_values = true, required_unless_present = "patch")]
    pub text: Option<String>,
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
    /// The loss increase when each head (and each MLP) is removed alone: a layers ×
    /// heads map, one pass per part.
    #[arg(long)]
    pub ablation_map: bool,
    /// Activation patching: the clean text (inspected) and a corrupted one of the same
    /// token length; maps of how much patching each layer's residual stream at each
    /// position, and each head, from the clean run restores its logit difference.
    #[arg(long, num_args = 2, value_names = ["CLEAN", "CORRUPTED"], allow_hyphen_values = true, conflicts_with = "text")]
    pub patch: Vec<String>,
    /// The token whose logit difference against --wrong is measured (default: the clean
    /// run's top next token); with --dla, the token attributed at the last position
    /// (default: the model's top prediction).
    #[arg(long, value_name = "TOKEN", allow_hyphen_values = true)]
    pub answer: Option<String>,
    /// The other token (default: the corrupted run's most probable one besides --answer).
    #[arg(
        long,
        value_name = "TOKEN",
        allow_hyphen_values = true,
        requires = "patch"
    )]
    pub wrong: Option<String>,
    /// Direct logit attribution: what each layer's attention and MLP, each head and the
    /// embeddings write into the next token's logit, through the final LayerNorm.
    #[arg(long)]
    pub dla: bool,
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
fn ablation(args: &InspectArgs) -> Result<AblationAsk> {
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
    Ok(AblationAsk {
        heads,
        mlps,
        mean: args.ablation == AblationArg::Mean,
    })
}

/// What the flags ask for besides the pass, and the text inspected.
fn ask(args: &InspectArgs) -> Result<(InspectAsk, String)> {
    let (text, patch) = match args.patch.as_slice() {
        [clean, corrupted] => (
            clean.clone(),
            Some(PatchAsk {
                corrupted: corrupted.clone(),
                answer: args.answer.clone(),
                wrong: args.wrong.clone(),
            }),
        ),
        _ => (args.text.clone().unwrap_or_default(), None),
    };
    if args.wrong.is_some() && patch.is_none() {
        bail!("--wrong: give it with --patch CLEAN CORRUPTED");
    }
    if args.answer.is_some() && patch.is_none() && !args.dla {
        bail!("--answer: give it with --patch or --dla");
    }
    Ok((
        InspectAsk {
            ablation: ablation(args)?,
            ablation_map: args.ablation_map,
            attribution: args.dla,
            dla_token: args.answer.clone().filter(|_| args.dla),
            patch,
            anatomy: None,
        },
        text,
    ))
}

pub fn run(args: &InspectArgs, settings: Settings) -> Result<()> {
    let device = resolve_device(args.device.as_deref().unwrap_or(&settings.train.device))
        .context("--device")?;
    set_inference_threads(settings.train.threads);
    let loaded = load_model(&args.checkpoint, device)?;
    let reading = Reading::of(&loaded);
    let (ask, text) = ask(args)?;
    let text_flag = if args.patch.is_empty() {
        "--text"
    } else {
        "--patch CLEAN"
    };
    let ids = reading.framed_ids(&text).context(text_flag)?;
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
    let ablation = ablation_of(&ask.ablation);
    let (layers_n, heads_n) = (layers as usize, heads as usize);
    let only = |heads: Vec<(usize, usize)>, mlps: Vec<usize>| Ablation {
        heads,
        mlps,
        ..ablation.clone()
    };
    only(ablation.heads.clone(), Vec::new())
        .check(layers_n, heads_n)
        .context("--ablate")?;
    only(Vec::new(), ablation.mlps.clone())
        .check(layers_n, heads_n)
        .context("--ablate-mlp")?;
    let mut report = report_asked(&reading, &ids, &text, &ask, PatchErrors::Fail).map_err(|e| {
        // Name the flag a bad token or corrupted text came from.
        match e.downcast_ref::<AskError>() {
            Some(bad) => anyhow::anyhow!(
                "{}: {}",
                match bad.part {
                    AskPart::Corrupted => "--patch CORRUPTED",
                    AskPart::Answer => "--answer",
                    AskPart::Wrong => "--wrong",
                },
                bad.message
            ),
            None => e,
        }
    })?;
    report.read_as = reading.read_as(&text);
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
    if let Some(top) = r.top.last() {
        out.push_str(&format!("next after the text: {}\n", tops(top)));
        if let Some(base) = r.ablation.as_ref().and_then(|a| a.base_top.last()) {
            out.push_str(&format!("  without the removal: {}\n", tops(base)));
        }
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
    if let Some(map) = &r.ablation_map {
        out.push_str(&ablation_map(map));
    }
    if let Some(a) = r.attribution.last() {
        out.push_str(&attribution(a));
    }
    if let Some(p) = &r.patching {
        out.push_str(&patching(p, &r.tokens));
    }
    out
}

/// Tokens with their probabilities: `" dog" 0.41, " cat" 0.20, …`.
fn tops(top: &[TopToken]) -> String {
    let parts: Vec<String> = top
        .iter()
        .map(|t| format!("{:?} {:.3}", t.token, t.prob))
        .collect();
    parts.join(", ")
}

fn ablation_map(map: &AblationMap) -> String {
    let mut out = format!(
        "\nablation map: the mean loss increase (nats) when one part is removed alone ({} ablation; {:.3} with nothing removed)\n",
        map.mode, map.base_loss
    );
    let heads = map.heads.first().map_or(0, Vec::len);
    let mut header = format!("{:<8}", "layer");
    for h in 0..heads {
        header.push_str(&format!("{:>9}", format!("head {}", h + 1)));
    }
    header.push_str(&format!("{:>9}", "MLP"));
    out.push_str(&header);
    out.push('\n');
    for (l, row) in map.heads.iter().enumerate() {
        let mut line = format!("{:<8}", l + 1);
        for v in row {
            line.push_str(&format!("{v:>+9.3}"));
        }
        if let Some(m) = map.mlps.get(l) {
            line.push_str(&format!("{m:>+9.3}"));
        }
        out.push_str(&line);
        out.push('\n');
    }
    let worst = map
        .heads
        .iter()
        .enumerate()
        .flat_map(|(l, row)| row.iter().enumerate().map(move |(h, v)| (l, h, *v)))
        .max_by(|a, b| a.2.total_cmp(&b.2));
    if let Some((l, h, v)) = worst {
        out.push_str(&format!(
            "the head that matters most here: {}.{} ({v:+.3})\n",
            l + 1,
            h + 1
        ));
    }
    out
}

fn attribution(a: &TokenAttribution) -> String {
    let what = if a.predicted {
        "the model's top prediction"
    } else {
        "the next token"
    };
    let mut out = format!(
        "\ndirect logit attribution of {:?} ({what}) after position {}: logit {:.3}\n",
        a.token, a.position, a.logit
    );
    let layers: Vec<String> = (0..a.mlp.len())
        .map(|l| {
            format!(
                "{}: attention {:+.3}, MLP {:+.3}",
                l + 1,
                a.attn[l],
                a.mlp[l]
            )
        })
        .collect();
    out.push_str(&format!("per layer  {}\n", layers.join("; ")));
    let parts = a.ranked_parts();
    let scale = parts.first().map_or(1.0, |p| p.1.abs()).max(1e-9);
    for (name, v) in parts.iter().take(12) {
        let bar = "█".repeat(((v.abs() / scale) * 24.0).round() as usize);
        out.push_str(&format!("  {name:<22}{v:>+9.3} {bar}\n"));
    }
    if parts.len() > 12 {
        out.push_str(&format!(
            "  … {} smaller parts (--json has all)\n",
            parts.len() - 12
        ));
    }
    out.push_str(&format!(
        "the parts sum to {:.4} (the logit {:.4}; off by {:.1e})\n",
        a.sum,
        a.logit,
        (a.sum - a.logit).abs()
    ));
    out
}

fn patching(p: &Patching, tokens: &[String]) -> String {
    let mut out = format!(
        "\nactivation patching into {:?}: logit({:?}) − logit({:?}) at the last position is {:.3} clean, {:.3} corrupted\n",
        p.corrupted_text, p.answer, p.wrong, p.clean, p.corrupted
    );
    let fmt = |d: f64| match p.restored(d) {
        Some(r) => format!("{r:>7.2}"),
        None => format!("{d:>7.2}"),
    };
    if p.restored(p.clean).is_some() {
        out.push_str("restored (0 = the corrupted run, 1 = the clean one)\n");
    } else {
        out.push_str("the two runs give the same difference: raw logit differences follow\n");
    }
    out.push_str("residual stream entering each layer, at each position:\n");
    let mut header = format!("{:<8}", "layer");
    for t in tokens {
        header.push_str(&format!(" {:>7}", clip(&format!("{t:?}"), 7)));
    }
    out.push_str(header.trim_end());
    out.push('\n');
    for (l, row) in p.resid.iter().enumerate() {
        let cells: String = row.iter().map(|&d| format!(" {}", fmt(d))).collect();
        out.push_str(&format!("{:<8}{cells}\n", l + 1));
    }
    out.push_str("each head's output (every position):\n");
    let heads = p.heads.first().map_or(0, Vec::len);
    let mut header = format!("{:<8}", "layer");
    for h in 0..heads {
        header.push_str(&format!(" {:>7}", format!("head {}", h + 1)));
    }
    out.push_str(&header);
    out.push('\n');
    for (l, row) in p.heads.iter().enumerate() {
        let cells: String = row.iter().map(|&d| format!(" {}", fmt(d))).collect();
        out.push_str(&format!("{:<8}{cells}\n", l + 1));
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
