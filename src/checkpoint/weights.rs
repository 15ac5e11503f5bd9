//! A checkpoint's weights: saved and loaded through [`crate::model::safetensors`]
//! (memory-mapped reads, one-pass writes, by the `safetensors` crate). gptdash records
//! the model configuration the weights were saved with in the header (`gptdash.model`),
//! so a `config.json` edited afterwards (head count, LayerNorm epsilon — what tensor
//! shapes cannot show) is caught on load ([`check_recorded`]).
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{nn, Tensor};

use super::schema::CONFIG_FILE;
use crate::model::gpt::GptConfig;
use crate::model::safetensors::{write_safetensors, WeightsFile};

/// The safetensors metadata key under which gptdash records the model configuration
/// the weights were saved with.
const MODEL_METADATA: &str = "gptdash.model";

/// Saves `vs` to `path` (safetensors) with the model configuration in the file's
/// metadata.
pub(crate) fn save_weights(vs: &nn::VarStore, path: &Path, model: &GptConfig) -> Result<()> {
    let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    write_safetensors(
        &named,
        path,
        &[(MODEL_METADATA, serde_json::to_string(model)?)],
    )
}

/// The model configuration recorded in a weights file, if gptdash recorded one.
fn recorded_model(file: &WeightsFile) -> Result<Option<GptConfig>> {
    match file.metadata(MODEL_METADATA) {
        Some(text) => Ok(Some(serde_json::from_str(text).with_context(|| {
            format!(
                "{}: the recorded model configuration is damaged",
                file.path().display()
            )
        })?)),
        None => Ok(None),
    }
}

/// Compares `config.json`'s model with the one the weights were saved with, field by
/// field (dropout is a training setting and may differ).
fn check_recorded(file: &WeightsFile, config: &Path, said: &GptConfig) -> Result<()> {
    let Some(saved) = recorded_model(file)? else {
        return Ok(());
    };
    // (key, what config.json says, what the weights were saved with)
    macro_rules! field {
        ($key:ident) => {
            (
                stringify!($key),
                said.$key.to_string(),
                saved.$key.to_string(),
            )
        };
    }
    let fields = [
        field!(vocab_size),
        field!(block_size),
        field!(n_layer),
        field!(n_head),
        field!(n_embd),
        field!(n_classes),
        field!(layer_norm_eps),
        field!(tie_lm_head),
    ];
    for (key, now, then) in fields {
        if now != then {
            bail!(
                "{} says model.{key} = {now}, but the weights in {} were saved with {then} (the config does not describe these weights)",
                config.display(),
                file.path().display()
            );
        }
    }
    Ok(())
}

/// Loads a gptdash weights file into `vs`, first checking that the model configuration
/// recorded in it is `model`'s ([`check_recorded`]), then as [`load_checked`] does.
pub(crate) fn load_weights(vs: &mut nn::VarStore, path: &Path, model: &GptConfig) -> Result<()> {
    load_checked(vs, &open_checked(path, model)?)
}

/// Opens a gptdash weights file (its header checked) whose recorded model configuration
/// is `model`'s ([`check_recorded`]).
pub(crate) fn open_checked(path: &Path, model: &GptConfig) -> Result<WeightsFile> {
    if !path.exists() {
        bail!("missing weights file {}", path.display());
    }
    let file = WeightsFile::open(path)?;
    check_recorded(&file, &path.with_file_name(CONFIG_FILE), model)?;
    Ok(file)
}

/// Copies `file` into `vs` after checking (once each) that it holds every tensor the
/// model has, of the shape its `config.json` implies, and no tensor the model does not
/// use — so a `config.json` that disagrees with the weights is an error naming the
/// tensor, never a libtorch stack trace or silently wrong numbers.
pub(crate) fn load_checked(vs: &mut nn::VarStore, file: &WeightsFile) -> Result<()> {
    let path = file.path();
    let config = path.with_file_name(CONFIG_FILE);
    let mut wanted = vs.variables();
    for (name, tensor) in &wanted {
        match file.shape(name) {
            None => bail!(
                "{} has no tensor {name}, which the model in {} needs (the config does not describe these weights)",
                path.display(),
                config.display()
            ),
            Some(shape) if shape != tensor.size() => bail!(
                "{}: tensor {name} has shape {shape:?}, but {} implies {:?} (the config does not describe these weights)",
                path.display(),
                config.display(),
                tensor.size()
            ),
            Some(_) => {}
        }
    }
    if let Some(extra) = file
        .tensors()
        .keys()
        .find(|name| !wanted.contains_key(*name))
    {
        bail!(
            "{}: tensor {extra} is not part of the model {} describes (the config does not describe these weights)",
            path.display(),
            config.display()
        );
    }
    for (name, var) in wanted.iter_mut() {
        file.copy_into(name, var)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use tch::Device;

    fn config() -> GptConfig {
        GptConfig::tiny(11, 4, 1, 8)
    }

    fn saved(dir: &Path) -> (nn::VarStore, PathBuf) {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = crate::model::gpt::Gpt::new(&vs.root(), config());
        let path = dir.join("model.safetensors");
        save_weights(&vs, &path, &config()).unwrap();
        (vs, path)
    }

    #[test]
    fn weights_round_trip_with_their_recorded_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let (vs, path) = saved(dir.path());
        let file = WeightsFile::open(&path).unwrap();
        assert_eq!(recorded_model(&file).unwrap(), Some(config()));
        let mut again = nn::VarStore::new(Device::Cpu);
        let _model = crate::model::gpt::Gpt::new(&again.root(), config());
        load_weights(&mut again, &path, &config()).unwrap();
        let (a, b) = (vs.variables(), again.variables());
        assert_eq!(a.len(), b.len());
        for (name, t) in &a {
            assert!(t.equal(&b[name]), "{name} differs after the round trip");
        }
    }

    #[test]
    fn a_truncated_file_or_another_model_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_vs, path) = saved(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.safetensors");
        std::fs::write(&cut, &bytes[..bytes.len() - 5]).unwrap();
        let msg = format!("{:#}", WeightsFile::open(&cut).err().unwrap());
        assert!(
            msg.contains("cut.safetensors") && msg.contains("do not match its header"),
            "{msg}"
        );
        // The error loading `path` into the model `config.json` describes as `said`.
        let refused = |path: &Path, said: GptConfig| {
            let mut vs = nn::VarStore::new(Device::Cpu);
            let _model = crate::model::gpt::Gpt::new(&vs.root(), said);
            format!("{:#}", load_weights(&mut vs, path, &said).unwrap_err())
        };
        // config.json says 4 heads; the weights were saved with 2.
        let msg = refused(
            &path,
            GptConfig {
                n_head: 4,
                ..config()
            },
        );
        assert!(
            msg.contains("model.n_head = 4") && msg.contains("saved with 2"),
            "{msg}"
        );
        // Weights with no recorded configuration, for a model with more layers: a
        // tensor the file does not have.
        let file = WeightsFile::open(&path).unwrap();
        let named: Vec<(String, Tensor)> = file
            .tensors()
            .keys()
            .map(|name| {
                let t = file.tensor(name).unwrap();
                (name.clone(), t)
            })
            .collect();
        let bare = dir.path().join("bare.safetensors");
        write_safetensors(&named, &bare, &[]).unwrap();
        assert!(WeightsFile::open(&bare)
            .unwrap()
            .metadata(MODEL_METADATA)
            .is_none());
        let msg = refused(
            &bare,
            GptConfig {
                n_layer: 2,
                ..config()
            },
        );
        assert!(msg.contains("has no tensor transformer.h.1."), "{msg}");
    }
}
