//! A sweep: the grid of settings `--set KEY=V1,V2` names (× `--seeds N` seeds), each
//! point a run of its own — `train`, or `finetune` when the keys are `finetune.*` — in a
//! folder of the sweep's, and the table of results by grid point (mean ± std over seeds).
//!
//! Every member's settings are resolved and checked before anything runs; they are
//! written to `<out>/configs/<member>.toml`, so a sweep started again checks that it is
//! the same sweep, skips the members that finished and goes on with the rest.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::protocol::RunKind;
use crate::runs::RunSummary;

/// The file naming a folder as a sweep's.
pub const MANIFEST: &str = "sweep.json";
/// The folder of the members' settings files.
pub const CONFIGS: &str = "configs";

/// One `--set KEY=V1,V2,...`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    pub key: String,
    /// The values as given.
    pub values: Vec<String>,
}

impl Axis {
    /// Reads `KEY=V1,V2,...`.
    pub fn parse(arg: &str) -> Result<Axis> {
        let Some((key, values)) = arg.split_once('=') else {
            bail!("--set {arg}: give KEY=V1,V2,... (e.g. train.learning_rate=1e-3,3e-4)");
        };
        let key = key.trim();
        if key.split('.').count() != 2 || key.split('.').any(str::is_empty) {
            bail!(
                "--set {arg}: the key is section.name, as in config.toml (e.g. finetune.readout)"
            );
        }
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
        if values.iter().any(String::is_empty) {
            bail!("--set {arg}: an empty value");
        }
        Ok(Axis {
            key: key.to_string(),
            values,
        })
    }
}

/// A value as TOML reads it: a number, a boolean, an array, or else the text itself.
fn toml_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

/// The sweep as planned: kind, axes, seeds and the checkpoint fine-tuned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: RunKind,
    pub axes: Vec<Axis>,
    pub seeds: u64,
    /// The seed key the seeds go to (`train.seed` or `finetune.seed`).
    pub seed_key: String,
    /// The model fine-tuned (fine-tuning sweeps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<PathBuf>,
    pub members: Vec<String>,
}

/// One run of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Its folder's name: `learning_rate=0.001_seed=1337`.
    pub name: String,
    /// The grid point without the seed (what the summary groups by).
    pub point: Vec<(String, String)>,
    pub seed: u64,
    pub settings: Settings,
}

/// A folder-name-safe form of a value.
fn safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The grid's members, each with its settings checked. A fine-tuning sweep (`kind`
/// classifier) takes `finetune.*` keys only; a training sweep any key but `finetune.*`.
pub fn plan(base: &Settings, axes: &[Axis], seeds: u64, kind: RunKind) -> Result<Vec<Member>> {
    let seed_key = seed_key(kind);
    for axis in axes {
        let finetune = axis.key.starts_with("finetune.");
        if kind == RunKind::Classifier && !finetune {
            bail!(
                "--set {}: a fine-tuning sweep (--checkpoint) varies finetune.* keys only",
                axis.key
            );
        }
        if kind == RunKind::LanguageModel && finetune {
            bail!(
                "--set {}: finetune.* keys sweep fine-tuning; give the model to fine-tune with --checkpoint",
                axis.key
            );
        }
        if seeds > 1 && axis.key == seed_key {
            bail!("--set {seed_key} and --seeds both choose the seeds; give one of them");
        }
    }
    if let Some(twice) = axes
        .iter()
        .enumerate()
        .find(|(i, a)| axes[..*i].iter().any(|b| b.key == a.key))
    {
        bail!(
            "--set {}: named twice; give all its values in one --set",
            twice.1.key
        );
    }
    let table = toml::Value::try_from(base).context("cannot read the settings back")?;
    let first_seed = match kind {
        RunKind::LanguageModel => base.train.seed,
        RunKind::Classifier => base.finetune.seed,
    };
    // Short names for the folder: the key's last part, unless two axes share it.
    let short = |key: &str| {
        let last = key.rsplit('.').next().unwrap_or(key);
        let shared = axes
            .iter()
            .filter(|a| a.key.rsplit('.').next() == Some(last))
            .count()
            > 1;
        if shared {
            key.replace('.', "-")
        } else {
            last.to_string()
        }
    };
    let mut points: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for axis in axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                axis.values.iter().map(move |v| {
                    let mut p = p.clone();
                    p.push((axis.key.clone(), v.clone()));
                    p
                })
            })
            .collect();
    }
    let mut members = Vec::new();
    for point in points {
        for i in 0..seeds.max(1) {
            let seed = first_seed + i;
            let mut t = table.clone();
            for (key, value) in point
                .iter()
                .map(|(k, v)| (k.as_str(), toml_value(v)))
                .chain(std::iter::once((
                    seed_key,
                    toml::Value::Integer(seed as i64),
                )))
            {
                set(&mut t, key, value)?;
            }
            let settings: Settings = match t.try_into() {
                Ok(s) => s,
                Err(e) => return Err(type_error(&table, &point, e)),
            };
            settings.validate().with_context(|| {
                format!(
                    "--set {}",
                    point
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            })?;
            let mut name: Vec<String> = point
                .iter()
                .map(|(k, v)| format!("{}={}", short(k), safe(v)))
                .collect();
            name.push(format!("seed={seed}"));
            members.push(Member {
                name: name.join("_"),
                point: point.clone(),
                seed,
                settings,
            });
        }
    }
    for (i, m) in members.iter().enumerate() {
        if let Some(other) = members[..i].iter().find(|o| o.name == m.name) {
            let says = |m: &Member| {
                m.point
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            bail!(
                "--set: {} and {} would be one run ({}); give each value once, in a form that differs in letters, digits or ._-+",
                says(other),
                says(m),
                m.name
            );
        }
    }
    Ok(members)
}

/// The error for settings that do not read: the `--set` value that makes them fail,
/// tried one at a time on the base settings, named with the key.
fn type_error(base: &toml::Value, point: &[(String, String)], e: toml::de::Error) -> anyhow::Error {
    for (key, value) in point {
        let mut t = base.clone();
        if set(&mut t, key, toml_value(value)).is_err() {
            continue;
        }
        if let Err(alone) = t.try_into::<Settings>() {
            return anyhow::anyhow!("--set {key}={value}: {}", alone.message().trim());
        }
    }
    anyhow::anyhow!("--set: {}", e.message().trim())
}

/// The key the seeds go to.
pub fn seed_key(kind: RunKind) -> &'static str {
    match kind {
        RunKind::LanguageModel => "train.seed",
        RunKind::Classifier => "finetune.seed",
    }
}

/// Sets `section.name` in a settings table (an unknown section or key is an error that
/// names it).
fn set(table: &mut toml::Value, key: &str, value: toml::Value) -> Result<()> {
    let (section, name) = key.split_once('.').unwrap_or((key, ""));
    let Some(t) = table.as_table_mut() else {
        bail!("the settings are not a table");
    };
    let section_table = t
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(Default::default()));
    let Some(section_table) = section_table.as_table_mut() else {
        bail!("--set {key}: {section} is not a section of the settings");
    };
    section_table.insert(name.to_string(), value);
    Ok(())
}

/// Claims `out` for the sweep: a new or empty folder, or this same sweep's (then the
/// members' settings must be as written). Writes the manifest and the members'
/// settings files.
pub fn prepare(out: &Path, manifest: &Manifest, members: &[Member]) -> Result<bool> {
    let path = out.join(MANIFEST);
    let resumed = path.is_file();
    if resumed {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let before: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a gptdash sweep manifest", path.display()))?;
        if before != *manifest {
            bail!(
                "--out {}: holds another sweep ({} members, {}); give a new folder, or the same --set, --seeds and --checkpoint to go on with it",
                out.display(),
                before.members.len(),
                before
                    .axes
                    .iter()
                    .map(|a| format!("{}={}", a.key, a.values.join(",")))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    } else if out.exists() {
        let empty = std::fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "--out {}: the folder holds files and is not a sweep's; give a new or empty folder (nothing was written)",
                out.display()
            );
        }
    }
    let configs = out.join(CONFIGS);
    std::fs::create_dir_all(&configs)
        .with_context(|| format!("cannot create {}", configs.display()))?;
    for m in members {
        let file = configs.join(format!("{}.toml", m.name));
        let text = toml::to_string(&m.settings).context("cannot write a member's settings")?;
        if resumed && file.is_file() {
            let before = std::fs::read_to_string(&file).unwrap_or_default();
            if before != text {
                bail!(
                    "--out {}: member {} was run with other settings ({}); the settings file or a default changed — give a new folder",
                    out.display(),
                    m.name,
                    file.display()
                );
            }
        } else {
            std::fs::write(&file, text)
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
    }
    if !resumed {
        let text = serde_json::to_string_pretty(manifest)?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(resumed)
}

pub use crate::protocol::PointResult;

/// Mean and sample standard deviation.
pub fn mean_std(xs: &[f64]) -> (Option<f64>, Option<f64>) {
    if xs.is_empty() {
        return (None, None);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let std = (xs.len() > 1)
        .then(|| (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (Some(mean), std)
}

/// The members' results by grid point, in the grid's order.
pub fn summarize(members: &[Member], runs: &BTreeMap<String, RunSummary>) -> Vec<PointResult> {
    let mut rows: Vec<PointResult> = Vec::new();
    for m in members {
        let point: Vec<String> = m.point.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let idx = match rows.iter().position(|r| r.point == point) {
            Some(i) => i,
            None => {
                rows.push(PointResult {
                    point,
                    results: Vec::new(),
                    mean: None,
                    std: None,
                    unfinished: 0,
                });
                rows.len() - 1
            }
        };
        let result = runs
            .get(&m.name)
            .filter(|r| r.status == crate::runs::Status::Finished)
            .and_then(RunSummary::result);
        match result {
            Some(x) => rows[idx].results.push(x),
            None => rows[idx].unfinished += 1,
        }
    }
    for r in &mut rows {
        (r.mean, r.std) = mean_std(&r.results);
    }
    rows
}

#[cfg(test)]
mod tests;
