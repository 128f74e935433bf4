//! Checkpoints as their authors publish them, checked against the
//! architecture before a single weight is used.
//!
//! Users bring the seed models' weights: AdaFace's PyTorch Lightning `.ckpt`
//! (a zip pickle whose `state_dict` keys carry `model.`, plus a `head.kernel`
//! classifier to drop), CVLface's `model.safetensors` (keys under `net.`),
//! plain PyTorch state dicts (`.pt`/`.pth`, zip or the legacy pre-1.6 layout)
//! and safetensors. Tensors may be float16, bfloat16 or float32 on disk; they
//! are widened to float32, the precision every port computes in.
//!
//! [`Checkpoint::open`] reads the file whatever its layout; [`Checkpoint::bind`]
//! matches its names against the architecture's manifest (every name and shape
//! the port consumes), finds the wrapper prefix, and fails on the first
//! missing, unexpected or mis-shaped tensor with an error that names it and
//! the file. A truncated or foreign file is an error, never a panic.

use candle_core::{DType, Device, Tensor};
use osprey_core::{Error, ErrorKind, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What a port consumes: every parameter and buffer name (without any
/// wrapper prefix) with its shape, in the architecture's own order.
pub type Manifest = Vec<(String, Vec<usize>)>;

/// Wrapper prefixes the published checkpoints put before the architecture's
/// own names, tried in this order: CVLface (`net.`), Lightning (`model.`),
/// `nn.DataParallel` (`module.`), CAFace (`aggregator.`), and combinations.
const PREFIXES: [&str; 7] = ["", "net.", "model.", "module.", "model.net.", "module.model.", "aggregator."];

/// Keys of a checkpoint's top-level dictionary that hold the state dict, when
/// the top level is not the state dict itself (Lightning: `state_dict`;
/// OpenGait: `model`; some re-id code: `net`; CLIP3DReID: `model_state_dict`).
const STATE_DICT_KEYS: [&str; 4] = ["state_dict", "model", "net", "model_state_dict"];

/// The on-disk layouts Osprey reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// Hugging Face safetensors.
    Safetensors,
    /// `torch.save` since PyTorch 1.6: a zip archive with `data.pkl` (also
    /// PyTorch Lightning `.ckpt`).
    TorchZip,
    /// `torch.save` before 1.6 (or `_use_new_zipfile_serialization=False`).
    TorchLegacy,
}

impl CheckpointFormat {
    fn name(self) -> &'static str {
        match self {
            CheckpointFormat::Safetensors => "safetensors",
            CheckpointFormat::TorchZip => "PyTorch zip checkpoint",
            CheckpointFormat::TorchLegacy => "legacy PyTorch checkpoint",
        }
    }
}

/// Every tensor of a checkpoint file, as stored (names unmodified).
pub struct Checkpoint {
    path: PathBuf,
    format: CheckpointFormat,
    tensors: BTreeMap<String, Tensor>,
}

fn corrupt(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Corrupt, format!("checkpoint {}: {msg}", path.display()))
}

impl Checkpoint {
    /// Reads every tensor of the file at `path` onto the CPU.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let head = read_head(path)?;
        let format = sniff(&head).ok_or_else(|| {
            corrupt(path, "not a safetensors file or a PyTorch checkpoint (unrecognised first bytes)")
        })?;
        let tensors = match format {
            CheckpointFormat::Safetensors => candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| corrupt(path, format!("unreadable safetensors file: {e}")))?
                .into_iter()
                .collect(),
            CheckpointFormat::TorchZip => read_torch_zip(path)?,
            CheckpointFormat::TorchLegacy => crate::torch_legacy::load_state_dict(path, &Device::Cpu)
                .map_err(|e| corrupt(path, format!("unreadable legacy PyTorch checkpoint: {e}")))?
                .into_iter()
                .collect(),
        };
        if tensors.is_empty() {
            return Err(corrupt(path, format!("the {} holds no tensors", format.name())));
        }
        Ok(Checkpoint { path: path.to_path_buf(), format, tensors })
    }

    /// The file's layout.
    pub fn format(&self) -> CheckpointFormat {
        self.format
    }

    /// Names and shapes as stored.
    pub fn names(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.tensors.iter().map(|(k, t)| (k.as_str(), t.dims()))
    }

    /// Matches the checkpoint against `manifest` and returns the weights the
    /// port needs, as float32 on `device`, keyed by the manifest's names.
    ///
    /// `ignore` lists name prefixes (after the wrapper prefix is removed, or
    /// of names outside it) that the published files carry but inference does
    /// not use, e.g. AdaFace's `head.` classifier. BatchNorm's
    /// `num_batches_tracked` counters may be present or not.
    pub fn bind(&self, manifest: &Manifest, ignore: &[&str], device: &Device) -> Result<HashMap<String, Tensor>> {
        let prefix = self.prefix_for(manifest);
        let expected: HashMap<&str, &[usize]> = manifest.iter().map(|(k, s)| (k.as_str(), s.as_slice())).collect();
        let optional = |name: &str| name.ends_with("num_batches_tracked");
        let mut found = HashMap::with_capacity(manifest.len());
        for (stored, tensor) in &self.tensors {
            let name = stored.strip_prefix(prefix).unwrap_or(stored);
            if ignore.iter().any(|p| name.starts_with(p) || stored.starts_with(p)) {
                continue;
            }
            let Some(want) = expected.get(name) else {
                if optional(name) {
                    continue;
                }
                return Err(corrupt(
                    &self.path,
                    format!(
                        "unexpected tensor `{stored}` {:?}: the architecture has no parameter of that name{}",
                        tensor.dims(),
                        if prefix.is_empty() {
                            String::new()
                        } else {
                            format!(" (after removing the prefix `{prefix}`)")
                        }
                    ),
                ));
            };
            if tensor.dims() != *want {
                return Err(corrupt(
                    &self.path,
                    format!("tensor `{stored}` has shape {:?}, the architecture expects {want:?}", tensor.dims()),
                ));
            }
            if optional(name) {
                continue;
            }
            let t = match tensor.dtype() {
                DType::F32 => tensor.clone(),
                DType::F16 | DType::BF16 | DType::F64 => {
                    tensor.to_dtype(DType::F32).map_err(|e| corrupt(&self.path, format!("tensor `{stored}`: {e}")))?
                }
                other => {
                    return Err(corrupt(&self.path, format!("tensor `{stored}` is {other:?}, expected a float type")));
                }
            };
            let t = t.to_device(device).map_err(|e| corrupt(&self.path, format!("tensor `{stored}`: {e}")))?;
            found.insert(name.to_string(), t);
        }
        if let Some((name, shape)) = manifest.iter().find(|(k, _)| !optional(k) && !found.contains_key(k)) {
            return Err(corrupt(
                &self.path,
                format!(
                    "missing tensor `{prefix}{name}` {shape:?} ({} of {} parameters found): is this a checkpoint of this model?",
                    found.len(),
                    manifest.iter().filter(|(k, _)| !optional(k)).count()
                ),
            ));
        }
        Ok(found)
    }

    /// Reads a configuration off the stored shapes before its manifest is
    /// known: `read` looks shapes up by architecture name, with the wrapper
    /// prefix under which most of `probe` (architecture names) occur removed
    /// as [`Checkpoint::bind`] removes it (names outside it as stored). Its
    /// errors are prefixed with the file.
    pub(crate) fn read_config<T>(
        &self,
        probe: &[&str],
        read: impl FnOnce(&dyn Fn(&str) -> Option<Vec<usize>>) -> Result<T>,
    ) -> Result<T> {
        let manifest: Manifest = probe.iter().map(|k| (k.to_string(), Vec::new())).collect();
        let prefix = self.prefix_for(&manifest);
        let shapes: HashMap<&str, &[usize]> =
            self.tensors.iter().map(|(k, t)| (k.strip_prefix(prefix).unwrap_or(k), t.dims())).collect();
        read(&|name| shapes.get(name).map(|s| s.to_vec()))
            .map_err(|e| e.context(format!("checkpoint {}", self.path.display())))
    }

    /// The wrapper prefix under which most of the manifest's names occur.
    fn prefix_for(&self, manifest: &Manifest) -> &'static str {
        PREFIXES
            .iter()
            .copied()
            .max_by_key(|p| {
                // Ties go to the earlier (shorter) prefix: max_by_key keeps the last maximum.
                let hits = manifest.iter().filter(|(k, _)| self.tensors.contains_key(&format!("{p}{k}"))).count();
                (hits, std::cmp::Reverse(PREFIXES.iter().position(|q| q == p)))
            })
            .unwrap_or("")
    }
}

fn read_head(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::NotFound } else { ErrorKind::Storage };
        Error::new(kind, format!("cannot open checkpoint {}: {e}", path.display()))
    })?;
    let mut head = Vec::with_capacity(16);
    f.by_ref().take(16).read_to_end(&mut head).map_err(|e| corrupt(path, e))?;
    Ok(head)
}

/// Recognises a layout from the first bytes.
fn sniff(head: &[u8]) -> Option<CheckpointFormat> {
    if head.starts_with(b"PK\x03\x04") {
        return Some(CheckpointFormat::TorchZip);
    }
    // Pickle protocol 2 (`\x80\x02`) then the legacy magic number as a LONG1.
    if head.starts_with(&[0x80, 0x02, 0x8a]) {
        return Some(CheckpointFormat::TorchLegacy);
    }
    // safetensors: a little-endian u64 header length, then a JSON object.
    if head.len() >= 9 && head[8] == b'{' {
        return Some(CheckpointFormat::Safetensors);
    }
    None
}

/// A zip checkpoint's state dict: the top-level dictionary when it holds
/// tensors, else the first of [`STATE_DICT_KEYS`] that does.
///
/// candle's unpickler indexes into argument tuples without checking their
/// length, so a hostile or foreign `data.pkl` could panic inside it: the call
/// is isolated and a panic reported as a corrupt file.
fn read_torch_zip(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let read = |key: Option<&str>| -> Result<Vec<(String, Tensor)>> {
        let p = path.to_path_buf();
        let key = key.map(str::to_string);
        let outcome = std::panic::catch_unwind(move || candle_core::pickle::read_all_with_key(&p, key.as_deref()));
        match outcome {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(corrupt(path, format!("unreadable PyTorch checkpoint: {e}"))),
            Err(_) => Err(corrupt(path, "malformed pickle in the PyTorch checkpoint")),
        }
    };
    let top = read(None)?;
    if !top.is_empty() {
        return Ok(top.into_iter().collect());
    }
    for key in STATE_DICT_KEYS {
        match read(Some(key)) {
            Ok(t) if !t.is_empty() => return Ok(t.into_iter().collect()),
            _ => continue,
        }
    }
    Err(corrupt(
        path,
        format!("no tensors at the top level or under any of {STATE_DICT_KEYS:?}: is this a model checkpoint?"),
    ))
}

/// Shapes by architecture name (no wrapper prefix), from which a port reads
/// its configuration; every failure names the tensor it looked for.
pub(crate) struct ShapeReader<'a> {
    /// The model, for messages (e.g. `SapiensID`).
    pub model: &'static str,
    /// A tensor's shape by name, `None` when the checkpoint lacks it.
    pub lookup: &'a dyn Fn(&str) -> Option<Vec<usize>>,
}

impl ShapeReader<'_> {
    /// The shape of `name`, which must exist and have `rank` dimensions.
    pub fn shape(&self, name: &str, rank: usize) -> Result<Vec<usize>> {
        let shape = (self.lookup)(name).ok_or_else(|| {
            Error::new(
                ErrorKind::Corrupt,
                format!("no tensor `{name}` (with or without a wrapper prefix): is this a {} checkpoint?", self.model),
            )
        })?;
        if shape.len() != rank {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("tensor `{name}` has shape {shape:?}, a {} checkpoint has {rank} dimensions there", self.model),
            ));
        }
        Ok(shape)
    }

    /// Dimension `axis` of `name` (of `rank` dimensions), which must not be 0.
    pub fn dim(&self, name: &str, rank: usize, axis: usize) -> Result<usize> {
        let shape = self.shape(name, rank)?;
        match shape[axis] {
            0 => {
                Err(Error::new(ErrorKind::Corrupt, format!("tensor `{name}` has shape {shape:?}: an empty dimension")))
            }
            n => Ok(n),
        }
    }

    /// Whether `name` is stored.
    pub fn has(&self, name: &str) -> bool {
        (self.lookup)(name).is_some()
    }

    /// How many of `name(0)`, `name(1)`, … are stored, counting up to the
    /// first missing one (e.g. a transformer's blocks).
    pub fn count(&self, name: impl Fn(usize) -> String) -> usize {
        (0..).take_while(|&i| self.has(&name(i))).count()
    }

    /// `total / part`, which must divide exactly; `what` says what the
    /// quotient is, `name` which tensor gave `total`.
    pub fn exact_div(&self, total: usize, part: usize, what: &str, name: &str) -> Result<usize> {
        if part == 0 || !total.is_multiple_of(part) || total == 0 {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("tensor `{name}`: {total} is not a whole multiple of {part}, so {what} cannot be read from it"),
            ));
        }
        Ok(total / part)
    }

    /// The side of a square of `total` cells, which must be a non-zero
    /// perfect square; `what` and `name` as in [`ShapeReader::exact_div`].
    pub fn square_side(&self, total: usize, what: &str, name: &str) -> Result<usize> {
        let side = total.isqrt();
        if side == 0 || side * side != total {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("tensor `{name}`: {total} is not the area of a square, so {what} cannot be read from it"),
            ));
        }
        Ok(side)
    }
}
