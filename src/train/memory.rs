//! Will a training run fit in memory? An estimate of its peak, made before any data is
//! read or tensor allocated, against what the machine (or its cgroup) has available:
//! a run that cannot fit is refused with the flags to change, instead of growing until
//! the machine swaps or the kernel kills it.
use anyhow::{bail, Result};

use crate::config::{ModelDims, Settings};

/// Bytes a training step of `settings` needs at its peak, roughly: weights, gradients
/// and AdamW's two moments (16 bytes a parameter), activations kept for the backward
/// pass (Korthikanti et al.'s 34·C + 5·H·T elements per token and layer, at 4 bytes),
/// and the LM head's logits and their gradient.
pub(crate) fn estimate(settings: &Settings, dims: ModelDims) -> f64 {
    let (c, h, l) = (dims.n_embd as f64, dims.n_head as f64, dims.n_layer as f64);
    let v = settings.data.vocab_size as f64;
    let t = settings.model.block_size as f64;
    let b = settings.train.batch_size as f64;
    let parameters = 2.0 * v * c + t * c + l * 12.0 * c * c;
    let states = 16.0 * parameters;
    let activations = b * t * l * (34.0 * c + 5.0 * h * t) * 4.0 / 2.0;
    let logits = 2.0 * b * t * v * 4.0;
    states + activations + logits
}

/// Memory available to this process: the kernel's MemAvailable, or less when a cgroup
/// (a container) limits it. `None` when neither can be read.
pub(crate) fn available() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let system = meminfo.as_deref().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb * 1024.0)
    });
    let read = |p: &str| -> Option<f64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let cgroup = match (
        read("/sys/fs/cgroup/memory.max"),
        read("/sys/fs/cgroup/memory.current"),
    ) {
        (Some(max), Some(current)) => Some((max - current).max(0.0)),
        _ => None,
    };
    match (system, cgroup) {
        (Some(s), Some(c)) => Some(s.min(c)),
        (s, c) => s.or(c),
    }
}

fn gb(bytes: f64) -> String {
    format!("{:.1} GB", bytes / 1e9)
}

/// Refuses a CPU run whose estimate exceeds 90% of the memory available.
pub(crate) fn check(settings: &Settings, dims: ModelDims, on_cpu: bool) -> Result<()> {
    if !on_cpu {
        return Ok(());
    }
    let need = estimate(settings, dims);
    let Some(have) = available() else {
        return Ok(());
    };
    if need > 0.9 * have {
        bail!(
            "this run needs about {} of memory (batch {} × block {} on {}), but {} is available; \
             lower --batch-size or --block-size (train.batch_size, model.block_size) or choose a smaller model (--model, model.preset)",
            gb(need),
            settings.train.batch_size,
            settings.model.block_size,
            settings.model.preset,
            gb(have)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_run_is_small_and_the_issue_example_is_tens_of_gigabytes() {
        let s = Settings::default();
        let dims = s.model.dims().unwrap();
        assert!(estimate(&s, dims) < 1e9, "{}", estimate(&s, dims));
        let mut big = Settings::default();
        big.train.batch_size = 512;
        big.model.block_size = 512;
        let need = estimate(&big, dims);
        assert!(need > 30e9 && need < 60e9, "{need}");
        assert!(available().is_some_and(|a| a > 0.0));
    }
}
