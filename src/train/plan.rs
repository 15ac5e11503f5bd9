//! A training run's plan: the settings (a config file with the flags, or the dashboard's
//! changes, on top) validated once, and everything derived from them settled before any
//! data is read or tensor allocated — the device, the model's sizes, libtorch's threads,
//! the memory the run needs against what the machine has (a run that cannot fit is
//! refused here), and where the run saves.
//!
//! `gptdash train` and the dashboard's worker each make one ([`Plan::new`]) and hand it to
//! [`crate::train::lm::LmTrainer::new`]; a resumed run makes one from its checkpoint's
//! settings. Nothing downstream validates the settings or resolves the device again.
use std::path::PathBuf;

use anyhow::{Context, Result};
use tch::Device;

use crate::config::{ModelDims, Settings};
use crate::device::{resolve_device, threads_for};
use crate::train::memory;

/// Where a run saves its checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Output {
    /// A new folder under this parent, `<corpus>-<YYYYMMDD>-<n>`, linked as
    /// `<parent>/<corpus>` once a checkpoint is there.
    Fresh(PathBuf),
    /// This folder: `--out`, or the checkpoint a run resumes.
    Folder(PathBuf),
    /// None is claimed: the run saves only where it is asked to (tests).
    #[cfg(test)]
    Unclaimed,
}

/// The settings of one training run, checked, with what follows from them.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    settings: Settings,
    device: Device,
    dims: ModelDims,
    threads: usize,
    output: Output,
}

impl Plan {
    /// Validates `settings` (errors name the key, in the context `origin`: "config file
    /// x.toml and flags") and settles the device, sizes, threads, memory and output.
    pub(crate) fn new(settings: Settings, output: Output, origin: &str) -> Result<Self> {
        let dims = settings
            .validate()
            .with_context(|| format!("invalid settings ({origin})"))?;
        let device = resolve_device(&settings.train.device).context("train.device / --device")?;
        memory::check(&settings, dims, device == Device::Cpu)?;
        Ok(Self {
            threads: threads_for(settings.train.threads),
            settings,
            device,
            dims,
            output,
        })
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The parts a run is built from.
    pub(crate) fn into_parts(self) -> (Settings, Device, ModelDims, usize, Output) {
        (
            self.settings,
            self.device,
            self.dims,
            self.threads,
            self.output,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_settles_sizes_device_and_threads_or_names_the_key() {
        let mut cpu = Settings::default();
        cpu.train.device = "cpu".into(); // "auto" would be a GPU where there is one
        let plan = Plan::new(cpu.clone(), Output::Unclaimed, "defaults").unwrap();
        let (settings, device, dims, threads, output) = plan.into_parts();
        assert_eq!(settings, cpu);
        assert_eq!(device, Device::Cpu);
        assert_eq!(dims, Settings::default().model.dims().unwrap());
        assert!(threads >= 1);
        assert_eq!(output, Output::Unclaimed);
        let mut bad = Settings::default();
        bad.train.batch_size = 0;
        let msg = format!(
            "{:#}",
            Plan::new(bad, Output::Unclaimed, "config file x.toml and flags").unwrap_err()
        );
        assert!(
            msg.contains("config file x.toml and flags") && msg.contains("train.batch_size"),
            "{msg}"
        );
    }
}
