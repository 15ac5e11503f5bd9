//! [`Settings::validate`]: values that parse but cannot work, each error naming its key
//! in the file's words (`train.batch_size must be at least 1`).
use anyhow::{bail, Context, Result};

use super::{ModelDims, Readout, Settings, MAX_LM_WEIGHT};

impl Settings {
    /// Checks values that parse but cannot work; the error names the key. Returns the
    /// model's sizes it checked.
    pub fn validate(&self) -> Result<ModelDims> {
        let m = &self.model;
        let dims = m.dims()?;
        ensure_key(dims.n_layer >= 1, "model.n_layer", "must be at least 1")?;
        ensure_key(dims.n_head >= 1, "model.n_head", "must be at least 1")?;
        ensure_key(dims.n_embd >= 1, "model.n_embd", "must be at least 1")?;
        if dims.n_embd % dims.n_head != 0 {
            bail!(
                "model.n_embd ({}) must be divisible by model.n_head ({})",
                dims.n_embd,
                dims.n_head
            );
        }
        ensure_key(m.block_size >= 2, "model.block_size", "must be at least 2")?;
        ensure_key(
            (0.0..1.0).contains(&m.dropout),
            "model.dropout",
            "must be in [0, 1)",
        )?;
        ensure_key(m.n_classes >= 2, "model.n_classes", "must be at least 2")?;

        let t = &self.train;
        ensure_key(t.max_iters >= 1, "train.max_iters", "must be at least 1")?;
        ensure_key(t.batch_size >= 1, "train.batch_size", "must be at least 1")?;
        ensure_key(
            t.learning_rate > 0.0 && t.learning_rate.is_finite(),
            "train.learning_rate",
            "must be > 0",
        )?;
        ensure_key(
            t.min_lr >= 0.0 && t.min_lr <= t.learning_rate,
            "train.min_lr",
            "must be in [0, train.learning_rate]",
        )?;
        ensure_key(
            t.weight_decay >= 0.0 && t.weight_decay.is_finite(),
            "train.weight_decay",
            "must be a finite number >= 0",
        )?;
        ensure_key(
            (0.0..1.0).contains(&t.beta1),
            "train.beta1",
            "must be in [0, 1)",
        )?;
        ensure_key(
            (0.0..1.0).contains(&t.beta2),
            "train.beta2",
            "must be in [0, 1)",
        )?;
        ensure_key(
            t.grad_clip >= 0.0 && t.grad_clip.is_finite(),
            "train.grad_clip",
            "must be >= 0 (0 turns clipping off)",
        )?;
        ensure_key(
            t.eval_interval >= 1,
            "train.eval_interval",
            "must be at least 1",
        )?;
        crate::device::parse_device(&t.device).context("train.device")?;

        let d = &self.data;
        ensure_key(
            !d.corpus.trim().is_empty(),
            "data.corpus",
            "must be \"small\", a corpus name (gptdash data list) or a file path",
        )?;
        ensure_key(
            d.train_fraction > 0.0 && d.train_fraction < 1.0,
            "data.train_fraction",
            "must be in (0, 1)",
        )?;
        ensure_key(
            d.tokenizer_sample_mb >= 1,
            "data.tokenizer_sample_mb",
            "must be at least 1",
        )?;
        ensure_key(
            d.vocab_size >= 260,
            "data.vocab_size",
            "must be at least 260 (256 bytes + specials)",
        )?;

        let g = &self.generate;
        ensure_key(
            g.temperature >= 0.0 && g.temperature.is_finite(),
            "generate.temperature",
            "must be >= 0 (0 means greedy)",
        )?;
        ensure_key(g.grid >= 1, "generate.grid", "must be at least 1")?;
        ensure_key(
            g.max_new_tokens >= 1,
            "generate.max_new_tokens",
            "must be at least 1",
        )?;

        let f = &self.finetune;
        ensure_key(f.samples >= 4, "finetune.samples", "must be at least 4")?;
        ensure_key(
            f.val_fraction > 0.0 && f.val_fraction < 1.0,
            "finetune.val_fraction",
            "must be in (0, 1)",
        )?;
        ensure_key(f.epochs >= 1, "finetune.epochs", "must be at least 1")?;
        ensure_key(
            f.batch_size >= 1,
            "finetune.batch_size",
            "must be at least 1",
        )?;
        ensure_key(
            f.learning_rate > 0.0 && f.learning_rate.is_finite(),
            "finetune.learning_rate",
            "must be a finite number > 0",
        )?;
        ensure_key(
            f.weight_decay >= 0.0 && f.weight_decay.is_finite(),
            "finetune.weight_decay",
            "must be a finite number >= 0",
        )?;
        if let Some(d) = f.dropout {
            ensure_key(
                (0.0..1.0).contains(&d),
                "finetune.dropout",
                "must be in [0, 1) (leave it unset to keep the model's own)",
            )?;
        }
        ensure_key(
            (0.0..=MAX_LM_WEIGHT).contains(&f.lm_weight),
            "finetune.lm_weight",
            &format!("must be in [0, {MAX_LM_WEIGHT}] (0 turns the auxiliary loss off)"),
        )?;
        ensure_key(
            !f.template.trim().is_empty() || f.readout != Readout::Prompt,
            "finetune.template",
            "must not be empty with readout = \"prompt\"",
        )?;
        ensure_key(
            !f.sst2.trim().is_empty(),
            "finetune.sst2",
            "must be \"hub\" or a path to SST-2's train.tsv, a parquet file or a folder",
        )?;
        if let Some(extra) = &f.extra_train {
            ensure_key(
                !extra.trim().is_empty(),
                "finetune.extra_train",
                "must be a path to a TSV or parquet file (or left unset)",
            )?;
        }
        ensure_key(
            !f.base.trim().is_empty(),
            "finetune.base",
            "must be `held`, a checkpoint folder, or a hub model such as `gpt2`",
        )?;
        ensure_key(
            f.label_words.iter().all(|w| !w.trim().is_empty())
                && f.label_words[0] != f.label_words[1],
            "finetune.label_words",
            "must be two different, non-empty words (negative first)",
        )?;

        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        ensure_key(
            self.train.threads <= 4 * cpus,
            "train.threads",
            &format!(
                "is {}, more than 4 × this machine's {cpus} CPUs; use 0 (one per core) or at most {}",
                self.train.threads,
                4 * cpus
            ),
        )?;

        let u = &self.ui;
        ensure_key(u.fps >= 1 && u.fps <= 240, "ui.fps", "must be in 1..=240")?;
        ensure_key(
            (0.0..1.0).contains(&u.smoothing),
            "ui.smoothing",
            "must be in [0, 1)",
        )?;
        Ok(dims)
    }
}

fn ensure_key(ok: bool, key: &str, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        bail!("{key} {what}")
    }
}
