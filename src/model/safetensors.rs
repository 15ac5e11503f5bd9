//! safetensors files (weights, optimizer moments, exports, GPT-2 folders), through the
//! `safetensors` crate: read memory-mapped ([`WeightsFile`]: the header parsed and checked
//! against the file's length once, each tensor copied from the mapping into its
//! variable), written in one pass with string metadata in the header
//! ([`write_safetensors`]).
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, TensorInfo, View};
use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};

/// A safetensors file mapped into memory, its header parsed and checked (every tensor
/// inside the file, the data exactly as long as the header says).
pub(crate) struct WeightsFile {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Where the tensor data starts (after the length and the header).
    data_start: usize,
    /// The header's string metadata.
    metadata: HashMap<String, String>,
    /// Every tensor's header entry, by name (sorted, so errors name the same one).
    tensors: BTreeMap<String, TensorInfo>,
}

impl WeightsFile {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        // Only a regular file: a pipe would block the open, a device read forever.
        let file = crate::data::files::open_regular(path, "safetensors file", u64::MAX)?;
        // SAFETY: the mapping is read-only and private to this value. gptdash replaces
        // weights files by writing a new folder and renaming it, never in place, so the
        // mapped file is not changed under it by gptdash; another program truncating it
        // meanwhile would be a fault of that program (as for any mapped reader).
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("cannot read {}", path.display()))?;
        let (header_len, header) = SafeTensors::read_metadata(&map).map_err(|e| {
            anyhow!(
                "{} is not a valid safetensors file: {}",
                path.display(),
                in_words(&e, map.len())
            )
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            data_start: 8 + header_len,
            metadata: header.metadata().clone().unwrap_or_default(),
            tensors: header
                .tensors()
                .into_iter()
                .map(|(name, info)| (name, info.clone()))
                .collect(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor's name and header entry, sorted by name.
    pub(crate) fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    /// The shape of tensor `name`, if the file has it.
    pub(crate) fn shape(&self, name: &str) -> Option<Vec<i64>> {
        self.tensors
            .get(name)
            .map(|info| info.shape.iter().map(|&d| d as i64).collect())
    }

    /// A string the header's metadata holds under `key`.
    pub(crate) fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
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
        self.tensors
            .get(name)
            .ok_or_else(|| anyhow!("{} has no tensor {name}", self.path.display()))
    }

    /// The bytes of a tensor the (validated) header describes.
    fn bytes(&self, info: &TensorInfo) -> &[u8] {
        let (start, end) = info.data_offsets;
        &self.map[self.data_start + start..self.data_start + end]
    }
}

/// A tensor as the `safetensors` writer reads it: copied to the CPU (contiguous) only
/// when its turn comes, so a GPU model is never on the host whole. A copy that fails is
/// reported through `failed` (the writer's `View` cannot return an error).
struct TensorBytes<'a> {
    tensor: &'a Tensor,
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
        let copied = self
            .tensor
            .f_to_device(Device::Cpu)
            .and_then(|t| t.f_contiguous())
            .and_then(|t| t.f_copy_data_u8(&mut bytes, t.numel()));
        if copied.is_err() {
            self.failed.set(true);
        }
        Cow::Owned(bytes)
    }

    fn data_len(&self) -> usize {
        self.tensor.numel() * self.tensor.kind().elt_size_in_bytes()
    }
}

/// Writes `tensors` as a safetensors file with string `metadata` in its header, in one
/// pass (each tensor copied to the CPU on its turn). On failure no file is left.
pub(crate) fn write_safetensors(
    tensors: &[(String, Tensor)],
    path: &Path,
    metadata: &[(&str, String)],
) -> Result<()> {
    let failed = Cell::new(false);
    let views = tensors
        .iter()
        .map(|(name, tensor)| {
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
    let written = match safetensors::serialize_to_file(views, &metadata, path) {
        Err(safetensors::SafeTensorError::IoError(e)) => Err(anyhow!(e)),
        Err(e) => Err(anyhow!("{e:?}")),
        Ok(()) if failed.get() => Err(anyhow!("a tensor could not be copied to the CPU")),
        Ok(()) => Ok(()),
    };
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        return Err(e.context(format!("cannot write {}", path.display())));
    }
    Ok(())
}

/// Why a file is not a safetensors file, in words (`len`: the file's size).
fn in_words(e: &safetensors::SafeTensorError, len: usize) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall | E::InvalidHeaderLength => format!(
            "its header does not fit in its {len} bytes (truncated, or not a safetensors file)"
        ),
        E::HeaderTooLarge => "its header is over 100 MB (damaged)".into(),
        E::InvalidHeader | E::InvalidHeaderStart | E::InvalidHeaderDeserialization => {
            "its header is not the JSON a safetensors file starts with (damaged)".into()
        }
        E::MetadataIncompleteBuffer => format!(
            "its {len} bytes do not match its header (shorter, longer or with gaps: truncated or damaged?)"
        ),
        E::InvalidOffset(name) => {
            format!("tensor {name} does not lie where the header says (truncated or damaged?)")
        }
        E::TensorInvalidInfo | E::InvalidTensorView(..) | E::ValidationOverflow => {
            "a tensor's shape, type and size disagree (damaged)".into()
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_of_every_kind_round_trip_with_metadata_and_aligned_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let tensors = vec![
            ("a".to_string(), Tensor::from_slice(&[1.5f32, -2.0, 3.25])),
            (
                "b".to_string(),
                Tensor::from_slice(&[7i64, -9]).view([2, 1]),
            ),
            (
                "c".to_string(),
                Tensor::from_slice(&[0.5f32, 0.25]).to_kind(Kind::BFloat16),
            ),
            // Not contiguous: written as its values.
            (
                "d".to_string(),
                Tensor::from_slice(&[1f32, 2., 3., 4.]).view([2, 2]).tr(),
            ),
        ];
        write_safetensors(&tensors, &path, &[("k", "v".into())]).unwrap();
        let file = WeightsFile::open(&path).unwrap();
        assert_eq!(file.data_start % 8, 0, "the data starts 8-byte aligned");
        assert_eq!(file.metadata("k"), Some("v"));
        assert_eq!(file.tensors().len(), 4);
        for (name, t) in &tensors {
            let back = file.tensor(name).unwrap();
            assert_eq!(back.kind(), t.kind(), "{name}");
            assert!(back.equal(&t.contiguous()), "{name}");
            assert_eq!(file.shape(name), Some(t.size()));
        }
        let mut into = Tensor::zeros([3], (Kind::Double, Device::Cpu));
        file.copy_into("a", &mut into).unwrap();
        assert_eq!(Vec::<f64>::try_from(&into).unwrap(), [1.5, -2.0, 3.25]);
        let mut wrong = Tensor::zeros([4], (Kind::Float, Device::Cpu));
        let msg = format!("{:#}", file.copy_into("a", &mut wrong).unwrap_err());
        assert!(msg.contains("tensor a has shape [3]"), "{msg}");
        assert!(format!("{:#}", file.tensor("zz").unwrap_err()).contains("has no tensor zz"));
        // Not a safetensors file at all, or longer than its header says.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, [bytes.as_slice(), b"\xde\xad"].concat()).unwrap();
        let msg = format!("{:#}", WeightsFile::open(&path).err().unwrap());
        assert!(msg.contains("do not match its header"), "{msg}");
        std::fs::write(&path, b"garbage").unwrap();
        let msg = format!("{:#}", WeightsFile::open(&path).err().unwrap());
        assert!(msg.contains("not a valid safetensors file"), "{msg}");
        // A folder or a pipe in its place is refused at once (a pipe's open would block).
        let folder = dir.path().join("folder.safetensors");
        std::fs::create_dir(&folder).unwrap();
        let pipe = dir.path().join("pipe.safetensors");
        let c_path = std::ffi::CString::new(pipe.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) with a valid NUL-terminated path and a mode.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        for not_a_file in [folder, pipe] {
            let msg = format!("{:#}", WeightsFile::open(&not_a_file).err().unwrap());
            assert!(msg.contains("is not a regular file"), "{msg}");
        }
    }
}
