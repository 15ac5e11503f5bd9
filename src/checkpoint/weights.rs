//! safetensors files (weights, optimizer moments, exports), through the `safetensors`
//! crate: read memory-mapped ([`WeightsFile`]: the header parsed and checked against the
//! file's length once, each tensor copied from the mapping straight into its variable),
//! written in one pass with string metadata in the header ([`write_safetensors`]).
//!
//! gptdash records the model configuration the weights were saved with in the header
//! (`gptdash.model`), so a `config.json` edited afterwards (head count, LayerNorm epsilon
//! — what tensor shapes cannot show) is caught on load ([`check_recorded`]).
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, Metadata, TensorInfo, View};
use safetensors::SafeTensors;
use tch::{nn, Device, Kind, Tensor};

use super::schema::CONFIG_FILE;
use crate::model::gpt::GptConfig;

/// The safetensors metadata key under which gptdash records the model configuration
/// the weights were saved with.
const MODEL_METADATA: &str = "gptdash.model";

/// A safetensors file mapped into memory, its header parsed and checked (every tensor
/// inside the file, the data exactly as long as the header says).
pub(crate) struct WeightsFile {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Where the tensor data starts (after the length and the header).
    data_start: usize,
    header: Metadata,
}

impl WeightsFile {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: the mapping is read-only and private to this value. gptdash replaces
        // weights files by writing a new folder and renaming it, never in place, so the
        // mapped file is not changed under it by gptdash; another program truncating it
        // meanwhile would be a fault of that program (as for any mapped reader).
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("cannot read {}", path.display()))?;
        let (header_len, header) = SafeTensors::read_metadata(&map).map_err(|e| {
            anyhow!(
                "{} is not a valid safetensors file ({e:?}; truncated or damaged?)",
                path.display()
            )
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            data_start: 8 + header_len,
            header,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor's name and header entry.
    pub(crate) fn tensors(&self) -> HashMap<String, &TensorInfo> {
        self.header.tensors()
    }

    /// The shape of tensor `name`, if the file has it.
    pub(crate) fn shape(&self, name: &str) -> Option<Vec<i64>> {
        self.header
            .tensors()
            .get(name)
            .map(|info| info.shape.iter().map(|&d| d as i64).collect())
    }

    /// A string the header's metadata holds under `key`.
    pub(crate) fn metadata(&self, key: &str) -> Option<&str> {
        self.header
            .metadata()
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    /// Tensor `name` as a new CPU tensor.
    pub(crate) fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self.info(name)?;
        let kind = Kind::try_from(info.dtype)
            .map_err(|e| anyhow!("{}: tensor {name}: {e}", self.path.display()))?;
        let shape: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
        Tensor::f_from_data_size(self.bytes(info), &shape, kind)
            .map_err(|e| anyhow!("{}: tensor {name}: {e}", self.path.display()))
    }

    /// Copies tensor `name` into `var` (converted to its kind and device); the shapes
    /// must agree.
    pub(crate) fn copy_into(&self, name: &str, var: &mut Tensor) -> Result<()> {
        let source = self.tensor(name)?;
        if source.size() != var.size() {
            bail!(
                "{}: tensor {name} has shape {:?}, expected {:?}",
                self.path.display(),
                source.size(),
                var.size()
            );
        }
        tch::no_grad(|| var.f_copy_(&source))
            .map_err(|e| anyhow!("cannot load {name} from {}: {e}", self.path.display()))
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.header
            .tensors()
            .get(name)
            .copied()
            .ok_or_else(|| anyhow!("{} has no tensor {name}", self.path.display()))
    }

    /// The bytes of a tensor the (validated) header describes.
    fn bytes(&self, info: &TensorInfo) -> &[u8] {
        let (start, end) = info.data_offsets;
        &self.map[self.data_start + start..self.data_start + end]
    }
}

/// A CPU tensor as the `safetensors` writer reads it. A copy that fails (it cannot for
/// the contiguous CPU tensors [`write_safetensors`] makes) is reported through `failed`.
struct TensorBytes<'a> {
    tensor: Tensor,
    dtype: Dtype,
    shape: Vec<usize>,
    failed: &'a Cell<bool>,
}

impl View for TensorBytes<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let mut bytes = vec![0u8; self.data_len()];
        if self
            .tensor
            .f_copy_data_u8(&mut bytes, self.tensor.numel())
            .is_err()
        {
            self.failed.set(true);
        }
        Cow::Owned(bytes)
    }

    fn data_len(&self) -> usize {
        self.tensor.numel() * self.tensor.kind().elt_size_in_bytes()
    }
}

/// Writes `tensors` as a safetensors file with string `metadata` in its header, in one
/// pass (each tensor copied to the CPU on its turn).
pub(crate) fn write_safetensors(
    tensors: &[(String, Tensor)],
    path: &Path,
    metadata: &[(&str, String)],
) -> Result<()> {
    let failed = Cell::new(false);
    let views = tensors
        .iter()
        .map(|(name, t)| {
            let tensor = t.to_device(Device::Cpu).contiguous();
            let dtype = Dtype::try_from(tensor.kind())
                .map_err(|e| anyhow!("cannot write {name} to {}: {e}", path.display()))?;
            let shape = tensor.size().iter().map(|&d| d as usize).collect();
            Ok((
                name.as_str(),
                TensorBytes {
                    tensor,
                    dtype,
                    shape,
                    failed: &failed,
                },
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect();
    let metadata = (!metadata.is_empty()).then_some(metadata);
    safetensors::serialize_to_file(views, &metadata, path)
        .map_err(|e| anyhow!("cannot write {}: {e:?}", path.display()))?;
    if failed.get() {
        bail!(
            "cannot write {}: a tensor could not be copied",
            path.display()
        );
    }
    Ok(())
}

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
pub(crate) fn check_recorded(file: &WeightsFile, config: &Path, said: &GptConfig) -> Result<()> {
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
    if !path.is_file() {
        bail!("missing weights file {}", path.display());
    }
    let file = WeightsFile::open(path)?;
    check_recorded(&file, &path.with_file_name(CONFIG_FILE), model)?;
    load_checked(vs, &file)
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

    fn config() -> GptConfig {
        GptConfig {
            vocab_size: 11,
            block_size: 4,
            n_layer: 1,
            n_head: 2,
            n_embd: 8,
            dropout: 0.0,
            n_classes: 2,
            layer_norm_eps: 1e-5,
            tie_lm_head: false,
        }
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
        // Both files hold the data 8-byte aligned, as safetensors' writer keeps it.
        assert_eq!(file.data_start % 8, 0);
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
            msg.contains("cut.safetensors") && msg.contains("truncated"),
            "{msg}"
        );
        // config.json says 4 heads; the weights were saved with 2.
        let said = GptConfig {
            n_head: 4,
            ..config()
        };
        let mut vs = nn::VarStore::new(Device::Cpu);
        let _model = crate::model::gpt::Gpt::new(&vs.root(), said);
        let msg = format!("{:#}", load_weights(&mut vs, &path, &said).unwrap_err());
        assert!(
            msg.contains("model.n_head = 4") && msg.contains("saved with 2"),
            "{msg}"
        );
        // Weights with no recorded configuration, for a model with more layers: a
        // tensor the file does not have.
        let file = WeightsFile::open(&path).unwrap();
        let named: Vec<(String, Tensor)> = file
            .tensors()
            .into_keys()
            .map(|name| {
                let t = file.tensor(&name).unwrap();
                (name, t)
            })
            .collect();
        let bare = dir.path().join("bare.safetensors");
        write_safetensors(&named, &bare, &[]).unwrap();
        assert!(WeightsFile::open(&bare)
            .unwrap()
            .metadata(MODEL_METADATA)
            .is_none());
        let said = GptConfig {
            n_layer: 2,
            ..config()
        };
        let mut vs = nn::VarStore::new(Device::Cpu);
        let _model = crate::model::gpt::Gpt::new(&vs.root(), said);
        let msg = format!("{:#}", load_weights(&mut vs, &bare, &said).unwrap_err());
        assert!(msg.contains("has no tensor transformer.h.1."), "{msg}");
    }
}
