//! `gptdash bench`: speed measurements (never timed tests).
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use tch::{nn, Device, Kind, Tensor};

use crate::config::{Dtype, ModelSettings};
use crate::train::optim::AdamWConfig;
use crate::train::step::{LmStep, StepKind, DEFAULT_LOSS_CHUNK_ROWS};

use crate::data::tokenizer::TextTokenizer;
use crate::device::{device_name, resolve_device, set_threads};
use crate::generate::{generate_from, GenerateOptions};
use crate::model::gpt::{parameter_count, Gpt, GptConfig};
use crate::protocol::{BenchModel, BenchReport, Event, GenerateBench, InspectBench, TrainBench};

mod wait;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// Greedy generation with the top-6 grid on a random 6-layer/192-dim/50257-vocab model.
    Generate(GenerateBenchArgs),
    /// Training steps on random tokens (AdamW lr 5e-4, weight decay 0.1, clip 1.0,
    /// dropout 0.1): tokens/s, ms per step, final loss, peak memory, model FLOP utilisation.
    Train(TrainBenchArgs),
    /// One introspecting pass (attention, logit lens, per-token loss) over a text, turned
    /// into the report `inspect` prints, on a random gpt-mini-sized model.
    Inspect(InspectBenchArgs),
    /// CPU burnt by OpenMP's waiting threads between parallel passes (the wait policy
    /// in force, measured).
    Wait(wait::WaitBenchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct InspectBenchArgs {
    /// Tokens in the text inspected.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub tokens: u64,
    /// Timed runs (after one warm-up run); the median is reported.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub repeats: u64,
    #[arg(long, default_value_t = 6)]
    pub n_layer: i64,
    #[arg(long, default_value_t = 6)]
    pub n_head: i64,
    #[arg(long, default_value_t = 192)]
    pub n_embd: i64,
    #[arg(long, default_value_t = 50257)]
    pub vocab_size: i64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// libtorch CPU threads (0 = one per physical core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TrainBenchArgs {
    /// A model preset (gpt-nano, gpt-micro, gpt-mini, gpt2) instead of the sizes below.
    #[arg(long)]
    pub preset: Option<String>,
    #[arg(long, default_value_t = 6)]
    pub n_layer: i64,
    #[arg(long, default_value_t = 6)]
    pub n_head: i64,
    #[arg(long, default_value_t = 192)]
    pub n_embd: i64,
    #[arg(long, default_value_t = 64)]
    pub block_size: i64,
    #[arg(long, default_value_t = 50257)]
    pub vocab_size: i64,
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(i64).range(1..))]
    pub batch_size: i64,
    /// Timed steps.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub iters: u64,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Precision of the blocks' matrix products.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    pub dtype: Dtype,
    /// `fused` (what gptdash trains with) or `plain` (the textbook step, for comparison).
    #[arg(long, value_enum, default_value_t = StepKind::Fused)]
    pub step: StepKind,
    /// Rows of logits per chunk in the fused loss.
    #[arg(long, default_value_t = DEFAULT_LOSS_CHUNK_ROWS, value_parser = clap::value_parser!(i64).range(1..))]
    pub loss_chunk: i64,
    /// libtorch CPU threads (0 = one per physical core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    #[arg(long)]
    pub json: bool,
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
        BenchCommand::Train(a) => bench_train(a),
        BenchCommand::Inspect(a) => bench_inspect(a),
        BenchCommand::Wait(a) => wait::bench_wait(a),
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

/// The randomly initialised model the inference benchmarks time (no dropout), its sizes
/// checked as the flags name them.
fn inference_config(
    n_layer: i64,
    n_head: i64,
    n_embd: i64,
    vocab_size: i64,
    block_size: i64,
) -> Result<GptConfig> {
    for (flag, value) in [
        ("--n-layer", n_layer),
        ("--n-head", n_head),
        ("--n-embd", n_embd),
        ("--block-size", block_size),
    ] {
        if !(1..=1 << 20).contains(&value) {
            anyhow::bail!("{flag} must be at least 1 (got {value})");
        }
    }
    if n_embd % n_head != 0 || vocab_size < 2 {
        anyhow::bail!("--n-embd must be divisible by --n-head, and --vocab-size at least 2");
    }
    Ok(GptConfig {
        vocab_size,
        block_size,
        n_layer,
        n_head,
        n_embd,
        dropout: 0.0,
        n_classes: 2,
        layer_norm_eps: 1e-5,
        tie_lm_head: false,
    })
}

fn bench_generate(a: &GenerateBenchArgs) -> Result<()> {
    let device = resolve_device(&a.device)?;
    let threads = set_threads(a.threads);
    let config = inference_config(a.n_layer, a.n_head, a.n_embd, a.vocab_size, a.block_size)?;
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
    let report = GenerateBench {
        device: device_name(device),
        threads,
        params: parameter_count(&vs),
        model: BenchModel {
            n_layer: a.n_layer,
            n_head: a.n_head,
            n_embd: a.n_embd,
            vocab_size: a.vocab_size,
            block_size: a.block_size,
            tied_lm_head: None,
        },
        prompt_tokens: prompt.len(),
        new_tokens: a.new_tokens,
        grid: 6,
        repeats: a.repeats,
        ms_per_token: ms,
        ms_per_token_min: cached.iter().copied().fold(f64::INFINITY, f64::min),
        ms_per_token_no_cache: ms_nc,
        cache_speedup: ms_nc / ms,
    };
    if a.json {
        println!(
            "{}",
            Event::Bench(Box::new(BenchReport::Generate(report))).to_json()
        );
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

fn bench_inspect(a: &InspectBenchArgs) -> Result<()> {
    let device = resolve_device(&a.device)?;
    let threads = set_threads(a.threads);
    let t = a.tokens as i64;
    let config = inference_config(a.n_layer, a.n_head, a.n_embd, a.vocab_size, t)?;
    let tokenizer = TextTokenizer::synthetic_byte_level(a.vocab_size as usize)?;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let model = Gpt::new(&vs.root(), config);
    let ids: Vec<u32> = (0..a.tokens)
        .map(|i| ((i * 7919 + 13) % a.vocab_size as u64) as u32)
        .collect();
    crate::inspect::report(&model, &tokenizer, &ids, "")?; // warm-up
    let mut ms = Vec::new();
    for _ in 0..a.repeats {
        let start = Instant::now();
        let report = crate::inspect::report(&model, &tokenizer, &ids, "")?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(report);
    }
    let report = InspectBench {
        device: device_name(device),
        threads,
        params: parameter_count(&vs),
        model: BenchModel {
            n_layer: a.n_layer,
            n_head: a.n_head,
            n_embd: a.n_embd,
            vocab_size: a.vocab_size,
            block_size: t,
            tied_lm_head: None,
        },
        tokens: a.tokens,
        repeats: a.repeats,
        ms: median(ms.clone()),
        ms_min: ms.iter().copied().fold(f64::INFINITY, f64::min),
    };
    if a.json {
        println!(
            "{}",
            Event::Bench(Box::new(BenchReport::Inspect(report))).to_json()
        );
    } else {
        println!(
            "inspect: {} layers, {} heads, {} dims, vocab {} ({:.2}M params) on {}, {} threads",
            a.n_layer,
            a.n_head,
            a.n_embd,
            a.vocab_size,
            report.params as f64 / 1e6,
            report.device,
            threads
        );
        println!(
            "{} tokens: attention, logit lens (top token, probability, entropy), per-token loss, as plain data; median of {}: {:.2} ms (min {:.2})",
            a.tokens, a.repeats, report.ms, report.ms_min
        );
    }
    Ok(())
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`; `None` elsewhere).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn synchronize(device: Device) {
    if let Device::Cuda(n) = device {
        tch::Cuda::synchronize(n as i64);
    }
}

/// The machine's matrix-product throughput in `kind` (GFLOP/s): the best of a few
/// square products, large enough to reach the kernels' steady rate.
fn matmul_peak_gflops(device: Device, kind: Kind) -> f64 {
    let n: i64 = if device == Device::Cpu { 1536 } else { 8192 };
    let a = Tensor::randn([n, n], (kind, device));
    let b = Tensor::randn([n, n], (kind, device));
    let out = Tensor::empty([n, n], (kind, device));
    let _ = a.mm_out(&out, &b); // warm-up
    synchronize(device);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let _ = a.mm_out(&out, &b);
        synchronize(device);
        best = best.min(start.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

fn bench_train(a: &TrainBenchArgs) -> Result<()> {
    let device = resolve_device(&a.device).context("--device")?;
    let threads = set_threads(a.threads);
    let (n_layer, n_head, n_embd) = match &a.preset {
        Some(preset) => {
            let dims = ModelSettings {
                preset: preset.clone(),
                ..Default::default()
            }
            .dims()
            .context("--preset")?;
            (dims.n_layer, dims.n_head, dims.n_embd)
        }
        None => (a.n_layer, a.n_head, a.n_embd),
    };
    if n_layer < 1 || n_head < 1 || n_embd < 1 || n_embd % n_head != 0 {
        bail!("--n-layer, --n-head, --n-embd must be positive and --n-embd divisible by --n-head");
    }
    if a.block_size < 2 || a.vocab_size < 2 {
        bail!("--block-size and --vocab-size must be at least 2");
    }
    let config = GptConfig {
        vocab_size: a.vocab_size,
        block_size: a.block_size,
        n_layer,
        n_head,
        n_embd,
        dropout: 0.1,
        n_classes: 2,
        layer_norm_eps: 1e-5,
        tie_lm_head: false,
    };
    tch::manual_seed(a.seed);
    let vs = nn::VarStore::new(device);
    let mut model = Gpt::new(&vs.root(), config);
    model.set_compute_kind(a.dtype.kind());
    let adamw = AdamWConfig {
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut stepper = LmStep::new(a.step, &vs, adamw)?.with_chunk_rows(a.loss_chunk);
    let (lr, clip) = (5e-4, 1.0);

    // Random tokens, made before the clock starts: no data loading in the timed part.
    let total = (a.warmup + a.iters) as usize;
    let batches: Vec<(Tensor, Tensor)> = (0..total)
        .map(|_| {
            let seq = Tensor::randint(
                a.vocab_size,
                [a.batch_size, a.block_size + 1],
                (Kind::Int64, device),
            );
            (
                seq.narrow(1, 0, a.block_size).contiguous(),
                seq.narrow(1, 1, a.block_size).contiguous(),
            )
        })
        .collect();
    let mut losses = Vec::with_capacity(total);
    let mut run = |batch: &(Tensor, Tensor)| -> Result<()> {
        let out = stepper.step(&model, &batch.0, &batch.1, lr, clip)?;
        // The one read a training loop makes per step (the UI shows the loss).
        losses.push(out.loss.double_value(&[]));
        Ok(())
    };
    for batch in &batches[..a.warmup as usize] {
        run(batch)?;
    }
    synchronize(device);
    let start = Instant::now();
    for batch in &batches[a.warmup as usize..] {
        run(batch)?;
    }
    synchronize(device);
    let secs = start.elapsed().as_secs_f64();

    let tokens = (a.iters as i64 * a.batch_size * a.block_size) as f64;
    let tokens_per_s = tokens / secs;
    let params = parameter_count(&vs);
    // Parameters that take part in matrix products: all but the embedding tables
    // (looked up, not multiplied) and the unused classifier head.
    let matmul_params =
        params - model.token_embedding().numel() as i64 - a.block_size * n_embd - (n_embd * 2 + 2);
    let model_gflops = 6.0 * matmul_params as f64 * tokens_per_s / 1e9;
    let peak = matmul_peak_gflops(device, a.dtype.kind());
    let final_loss = losses.last().copied().unwrap_or(f64::NAN);
    let report = TrainBench {
        device: device_name(device),
        threads,
        dtype: a.dtype.name().into(),
        step: a.step.name().into(),
        loss_chunk: a.loss_chunk,
        model: BenchModel {
            n_layer,
            n_head,
            n_embd,
            vocab_size: a.vocab_size,
            block_size: a.block_size,
            tied_lm_head: Some(false),
        },
        params,
        matmul_params,
        batch_size: a.batch_size,
        warmup: a.warmup,
        iters: a.iters,
        tokens_per_s,
        ms_per_step: secs * 1e3 / a.iters as f64,
        first_loss: losses.first().copied(),
        final_loss,
        peak_rss_mib: peak_rss_mib(),
        gpu_mib: match device {
            tch::Device::Cuda(i) => crate::gpu::GpuMonitor::open(i)
                .read()
                .reading
                .map(|r| r.memory_used_mib),
            _ => None,
        },
        model_gflops,
        matmul_peak_gflops: peak,
        mfu: model_gflops / peak,
    };
    if a.json {
        println!(
            "{}",
            Event::Bench(Box::new(BenchReport::Train(report))).to_json()
        );
    } else {
        println!(
            "train: {n_layer} layers, {n_head} heads, {n_embd} dims, vocab {}, block {}, batch {} ({:.2}M params) on {}, {threads} threads, {} {} step",
            a.vocab_size,
            a.block_size,
            a.batch_size,
            params as f64 / 1e6,
            device_name(device),
            a.dtype.name(),
            a.step.name(),
        );
        println!(
            "  {tokens_per_s:.0} tokens/s, {:.1} ms/step over {} steps (after {} warm-up)",
            secs * 1e3 / a.iters as f64,
            a.iters,
            a.warmup
        );
        println!(
            "  loss {:.4} -> {final_loss:.4}",
            losses.first().copied().unwrap_or(f64::NAN)
        );
        if let Some(rss) = peak_rss_mib() {
            println!("  peak resident memory {rss:.0} MiB");
        }
        println!(
            "  {model_gflops:.1} GFLOP/s (6 x {:.2}M matmul params x tokens/s) of a measured {peak:.1} GFLOP/s {} matmul peak: MFU {:.1}%",
            matmul_params as f64 / 1e6,
            a.dtype.name(),
            100.0 * model_gflops / peak
        );
    }
    Ok(())
}
