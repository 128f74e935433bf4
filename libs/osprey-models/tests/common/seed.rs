//! Helpers for the `seed_*` tests: the reference fixtures of
//! `shared/fixtures/seed-models`, scratch checkpoints and error measures.

use candle_core::{DType, Device, Tensor};
use osprey_models::checkpoint::Checkpoint;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The fixtures folder: `$OSPREY_SEED_FIXTURES`, else `shared/fixtures/seed-models`
/// beside the repository.
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("OSPREY_SEED_FIXTURES").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../../shared/fixtures/seed-models")
    });
    assert!(dir.is_dir(), "seed fixtures not found at {} (set OSPREY_SEED_FIXTURES)", dir.display());
    dir
}

/// The tensors of the safetensors fixture `name`, on the CPU.
pub fn load_fixture(name: &str) -> HashMap<String, Tensor> {
    let path = fixtures().join(name);
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("load {}: {e}", path.display()))
}

/// The `*.keys.json` fixture `name`: parameter name → shape.
pub fn keys_json(name: &str) -> BTreeMap<String, Vec<usize>> {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A manifest as a map, asserting that no name repeats.
pub fn as_map(m: &[(String, Vec<usize>)]) -> BTreeMap<String, Vec<usize>> {
    let map: BTreeMap<String, Vec<usize>> = m.iter().cloned().collect();
    assert_eq!(map.len(), m.len(), "duplicate names in the manifest");
    map
}

/// The names and shapes a checkpoint stores.
pub fn stored(ckpt: &Checkpoint) -> BTreeMap<String, Vec<usize>> {
    ckpt.names().map(|(k, s)| (k.to_string(), s.to_vec())).collect()
}

/// A tensor's elements, flattened and cast to f32.
pub fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// max |got − want| / max |want| over slices of the same length.
pub fn max_rel(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// [`max_rel`] over tensors of the same shape.
pub fn max_rel_tensor(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims(), "shape");
    max_rel(&values(got), &values(want))
}

/// Writes `tensors` as safetensors to `dir/name` and returns the path.
pub fn write_safetensors(dir: &Path, name: &str, tensors: &BTreeMap<String, Tensor>) -> PathBuf {
    let path = dir.join(name);
    let map: HashMap<String, Tensor> = tensors.clone().into_iter().collect();
    candle_core::safetensors::save(&map, &path).unwrap();
    path
}

/// Creates `osprey-{name}-{process id}` in the system's temporary directory
/// and returns it; the caller removes it.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("osprey-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The SHA-256 of `bytes`, in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
