//! `gptdash bench`: speed measurements (never timed tests).
use std::time::Instant;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use tch::{nn, Device};

use crate::data::tokenizer::TextTokenizer;
use crate::device::{device_name, resolve_device, set_threads};
use crate::generate::{generate_from, GenerateOptions};
use crate::model::gpt::{parameter_count, Gpt, GptConfig};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// Greedy generation with the top-6 grid on a random 6-layer/192-dim/50257-vocab model.
    Generate(GenerateBenchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct GenerateBenchArgs {
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub new_tokens: u64,
    /// Timed runs (after one warm-up run); the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub repeats: u64,
    #[arg(long, default_value_t = 6)]
    pub n_layer: i64,
    #[arg(long, default_value_t = 6)]
    pub n_head: i64,
    #[arg(long, default_value_t = 192)]
    pub n_embd: i64,
    #[arg(long, default_value_t = 50257)]
    pub vocab_size: i64,
    #[arg(long, default_value_t = 128)]
    pub block_size: i64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// libtorch CPU threads (0 = one per physical core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    match &args.what {
        BenchCommand::Generate(a) => bench_generate(a),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn bench_generate(a: &GenerateBenchArgs) -> Result<()> {
    let device = resolve_device(&a.device)?;
    let threads = set_threads(a.threads);
    let config = GptConfig {
        vocab_size: a.vocab_size,
        block_size: a.block_size,
        n_layer: a.n_layer,
        n_head: a.n_head,
        n_embd: a.n_embd,
        dropout: 0.0,
        n_classes: 2,
        layer_norm_eps: 1e-5,
        tie_lm_head: false,
    };
    if config.n_embd % config.n_head != 0 {
        anyhow::bail!("--n-embd must be divisible by --n-head");
    }
    let tokenizer = TextTokenizer::synthetic_byte_level(a.vocab_size as usize)?;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let model = Gpt::new(&vs.root(), config);
    let prompt: Vec<u32> = [1544u32, 290, 314, 460]
        .iter()
        .map(|&id| id % a.vocab_size as u32)
        .collect();
    let options = GenerateOptions {
        max_new_tokens: a.new_tokens as usize,
        grid: 6,
        ..Default::default()
    };

    let time = |use_cache: bool| -> Result<Vec<f64>> {
        let o = GenerateOptions {
            use_cache,
            ..options.clone()
        };
        generate_from(&model, &tokenizer, "", &prompt, &[], &o)?; // warm-up
        let mut per_token = Vec::new();
        for _ in 0..a.repeats {
            let start = Instant::now();
            let g = generate_from(&model, &tokenizer, "", &prompt, &[], &o)?;
            if device != Device::Cpu {
                tch::Cuda::synchronize(0);
            }
            per_token.push(start.elapsed().as_secs_f64() * 1e3 / g.tokens.len() as f64);
        }
        Ok(per_token)
    };
    let cached = time(true)?;
    let uncached = time(false)?;
    let (ms, ms_nc) = (median(cached.clone()), median(uncached.clone()));
    let summary = json!({
        "bench": "generate",
        "device": device_name(device),
        "threads": threads,
        "params": parameter_count(&vs),
        "model": {"n_layer": a.n_layer, "n_head": a.n_head, "n_embd": a.n_embd, "vocab_size": a.vocab_size, "block_size": a.block_size},
        "prompt_tokens": prompt.len(),
        "new_tokens": a.new_tokens,
        "grid": 6,
        "repeats": a.repeats,
        "ms_per_token": ms,
        "ms_per_token_min": cached.iter().copied().fold(f64::INFINITY, f64::min),
        "ms_per_token_no_cache": ms_nc,
        "cache_speedup": ms_nc / ms,
    });
    if a.json {
        println!("{summary}");
    } else {
        println!(
            "generate: {} layers, {} heads, {} dims, vocab {}, block {} ({:.2}M params) on {}, {} threads",
            a.n_layer,
            a.n_head,
            a.n_embd,
            a.vocab_size,
            a.block_size,
            parameter_count(&vs) as f64 / 1e6,
            device_name(device),
            threads
        );
        println!(
            "greedy, {} new tokens after a {}-token prompt, top-6 grid, median of {} runs:",
            a.new_tokens,
            prompt.len(),
            a.repeats
        );
        println!("  with KV cache     {ms:.3} ms/token");
        println!(
            "  without cache     {ms_nc:.3} ms/token  ({:.1}x slower)",
            ms_nc / ms
        );
    }
    Ok(())
}
