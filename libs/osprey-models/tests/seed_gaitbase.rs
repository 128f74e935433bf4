//! GaitBase (OpenGait's Baseline) against the reference fixture made with
//! OpenGait's own code (random weights, float16 on disk): the port must
//! compute the same function and accept the published names and layout.
//! Also OpenGait's silhouette pretreatment against OpenCV on real frames.

mod common;

use candle_core::{Device, Tensor};
use common::seed::{
    as_map, fixtures, keys_json, load_fixture, max_rel, sha256_hex, stored, temp_dir, write_safetensors,
};
use osprey_models::checkpoint::{Checkpoint, CheckpointFormat};
use osprey_models::gaitbase::{
    self, EMBEDDING_DIM, GaitBase, IGNORE_PREFIXES, PARTS, distance, embedding_manifest, flatten, manifest,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn weights_path() -> PathBuf {
    fixtures().join("gaitbase.weights.f16.safetensors")
}

/// The reference silhouettes [2, 12, 64, 44] and embeddings [2, 256, 16].
fn io() -> (Tensor, Vec<f32>) {
    let io = load_fixture("gaitbase.io.safetensors");
    let want = io["embedding"].flatten_all().unwrap().to_vec1().unwrap();
    (io["silhouettes"].clone(), want)
}

fn embed(ckpt: &Checkpoint, sils: &Tensor) -> Vec<f32> {
    let weights = ckpt.bind(&embedding_manifest(), IGNORE_PREFIXES, &Device::Cpu).unwrap();
    let net = GaitBase::new(&weights, &Device::Cpu).unwrap();
    let out = net.forward(sils).unwrap();
    assert_eq!(out.dims(), &[sils.dim(0).unwrap(), gaitbase::PART_DIM, PARTS]);
    out.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn manifest_matches_the_published_checkpoints() {
    let keys = keys_json("gaitbase.keys.json");
    assert_eq!(as_map(&manifest()), keys);
    let ckpt = Checkpoint::open(&weights_path()).unwrap();
    assert_eq!(stored(&ckpt), keys);
    // The embedding's manifest is the full one less the training-only BNNecks.
    let mut without: BTreeMap<String, Vec<usize>> = keys.clone();
    without.retain(|k, _| !k.starts_with(gaitbase::TRAINING_ONLY));
    assert_eq!(as_map(&embedding_manifest()), without);
    assert_eq!(keys.len() - without.len(), 6);
}

#[test]
fn gaitbase_matches_the_reference() {
    let (sils, want) = io();
    let ckpt = Checkpoint::open(&weights_path()).unwrap();
    let got = embed(&ckpt, &sils);
    let err = max_rel(&got, &want);
    eprintln!("GaitBase: embedding max relative error {err:.2e}");
    assert!(err <= 1e-4, "embedding differs from the reference by {err:e}");

    // Binding the full manifest (BNNecks included) gives the same model.
    let weights = ckpt.bind(&manifest(), &[], &Device::Cpu).unwrap();
    let net = GaitBase::new(&weights, &Device::Cpu).unwrap();
    let again: Vec<f32> = net.forward(&sils).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(again, got);

    // One sequence at a time gives the same embeddings as the batch.
    let first: Vec<f32> =
        net.forward(&sils.narrow(0, 0, 1).unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert!(max_rel(&first, &want[..EMBEDDING_DIM]) <= 1e-4);

    // Flattening keeps OpenGait's layout, and the distance is OpenGait's `euc`:
    // per strip √(‖x‖² + ‖y‖² − 2x·y), averaged over the strips.
    let emb = Tensor::from_vec(got.clone(), (2, gaitbase::PART_DIM, PARTS), &Device::Cpu).unwrap();
    let flat = flatten(&emb).unwrap();
    assert_eq!(flat.len(), 2);
    assert_eq!(flat.concat(), got);
    let (x, y) = (&want[..EMBEDDING_DIM], &want[EMBEDDING_DIM..]);
    let mut opengait = 0f64;
    for p in 0..PARTS {
        let (mut xx, mut yy, mut xy) = (0f64, 0f64, 0f64);
        for c in 0..gaitbase::PART_DIM {
            let (a, b) = (x[c * PARTS + p] as f64, y[c * PARTS + p] as f64);
            xx += a * a;
            yy += b * b;
            xy += a * b;
        }
        opengait += (xx + yy - 2.0 * xy).max(0.0).sqrt();
    }
    opengait /= PARTS as f64;
    let ours = distance(&flat[0], &flat[1]).unwrap() as f64;
    assert!((ours - opengait).abs() <= 1e-4 * opengait, "distance {ours} vs OpenGait's {opengait}");
    assert_eq!(distance(&flat[0], &flat[0]).unwrap(), 0.0);
    assert_eq!(gaitbase::similarity(&flat[0], &flat[0]).unwrap(), 1.0);
    assert!(gaitbase::similarity(&flat[0], &flat[1]).unwrap() < 1.0);
    assert!(distance(&flat[0], &flat[1][..100]).is_err());

    // Malformed inputs are errors, not panics.
    for bad in [(2, 12, 64, 64), (0, 12, 64, 44), (2, 0, 64, 44)] {
        let t = Tensor::zeros(bad, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(net.forward(&t).is_err(), "{bad:?}");
    }
    let t = Tensor::zeros((12, 64, 44), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(net.forward(&t).is_err());
}

#[test]
fn loader_names_what_is_wrong() {
    let dir = temp_dir("gaitbase-ckpt");
    let original: BTreeMap<String, Tensor> =
        candle_core::safetensors::load(weights_path(), &Device::Cpu).unwrap().into_iter().collect();
    let m = embedding_manifest();
    let bind = |p: &Path| {
        Checkpoint::open(p).and_then(|c| c.bind(&m, IGNORE_PREFIXES, &Device::Cpu)).map(|_| ()).unwrap_err().to_string()
    };

    // Without the BNNecks (a checkpoint stripped for inference) it loads too.
    let mut stripped = original.clone();
    stripped.retain(|k, _| !k.starts_with("BNNecks."));
    let p = write_safetensors(&dir, "stripped.safetensors", &stripped);
    let w = Checkpoint::open(&p).unwrap().bind(&m, IGNORE_PREFIXES, &Device::Cpu).unwrap();
    assert!(GaitBase::new(&w, &Device::Cpu).is_ok());

    let mut renamed = original.clone();
    let t = renamed.remove("Backbone.forward_block.layer3.0.conv2.weight").unwrap();
    renamed.insert("Backbone.forward_block.layer3.0.conv2.kernel".into(), t);
    let e = bind(&write_safetensors(&dir, "renamed.safetensors", &renamed));
    assert!(e.contains("Backbone.forward_block.layer3.0.conv2.kernel") && e.contains("renamed.safetensors"), "{e}");

    let mut missing = original.clone();
    missing.remove("FCs.fc_bin");
    let e = bind(&write_safetensors(&dir, "missing.safetensors", &missing));
    assert!(e.contains("missing tensor `FCs.fc_bin`"), "{e}");

    let mut reshaped = original.clone();
    let t = reshaped["FCs.fc_bin"].reshape((16, 256, 512)).unwrap();
    reshaped.insert("FCs.fc_bin".into(), t);
    let e = bind(&write_safetensors(&dir, "reshaped.safetensors", &reshaped));
    assert!(e.contains("FCs.fc_bin") && e.contains("[16, 256, 512]") && e.contains("[16, 512, 256]"), "{e}");

    let bytes = std::fs::read(weights_path()).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = Checkpoint::open(&cut).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("cut.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// OpenGait's published layout: a `torch.save` zip whose top-level dict holds
/// the state dict under `model`, beside `optimizer`, `scheduler` and
/// `iteration`; written by `infra/scripts/write_torch_checkpoint.py`.
#[test]
fn opengait_checkpoint_loads_as_published() {
    let dir = temp_dir("gaitbase-torch");
    let script = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("../../infra/scripts/write_torch_checkpoint.py");
    let out = dir.join("GaitBase_DA-60000.pt");
    let status = std::process::Command::new("python3")
        .arg(&script)
        .arg(weights_path())
        .arg(&out)
        .args(["--layout", "opengait", "--prefix", "", "--head", "0"])
        .status()
        .expect("python3 runs");
    assert!(status.success());
    let ckpt = Checkpoint::open(&out).unwrap();
    assert_eq!(ckpt.format(), CheckpointFormat::TorchZip);
    assert_eq!(ckpt.names().count(), manifest().len());
    let (sils, want) = io();
    let err = max_rel(&embed(&ckpt, &sils), &want);
    assert!(err <= 1e-4, "embedding differs from the reference by {err:e}");
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------------------
// OpenGait's silhouette pretreatment against OpenCV
// ---------------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct PretreatReference {
    opencv: String,
    frames: Vec<PretreatFrame>,
}

#[derive(serde::Deserialize)]
struct PretreatFrame {
    file: String,
    columns_from: usize,
    padded: bool,
    sha256: String,
    sum: u64,
    row_32: Vec<u8>,
}

fn data_root() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../../shared/data")
}

/// A grey PNG as (pixels, width, height), without its first `columns_from` columns.
fn read_grey(path: &Path, columns_from: usize) -> (Vec<u8>, usize, usize) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_luma8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let px = img.into_raw();
    let kept: Vec<u8> = px.chunks(w).flat_map(|row| row[columns_from..].iter().copied()).collect();
    (kept, w - columns_from, h)
}

/// Real silhouettes from OpenGait's demo, reference by
/// `infra/scripts/gait_pretreat_reference.py` (OpenCV's own INTER_CUBIC).
#[test]
fn pretreatment_matches_opencv_byte_for_byte() {
    use osprey_models::gait_pretreat::{SIZE, WIDTH, cut, pretreat_frame, pretreat_sequence, to_tensor};
    let text = std::fs::read_to_string(
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("tests/data/gait_pretreat_reference.json"),
    )
    .unwrap();
    let reference: PretreatReference = serde_json::from_str(&text).unwrap();
    let root = data_root();
    assert!(root.is_dir(), "shared data not found at {}", root.display());
    let mut differing = 0usize;
    let mut frames = Vec::new();
    for f in &reference.frames {
        let (px, w, h) = read_grey(&root.join(&f.file), f.columns_from);
        let stored = pretreat_frame(&px, w, h).unwrap().unwrap_or_else(|| panic!("{} dropped", f.file));
        let ours = cut(&stored).unwrap();
        assert_eq!(ours.len(), SIZE * WIDTH);
        let row = &ours[32 * WIDTH..33 * WIDTH];
        let bytes = row.iter().zip(&f.row_32).filter(|(a, b)| a != b).count();
        let sum: u64 = ours.iter().map(|&v| v as u64).sum();
        if sha256_hex(&ours) != f.sha256 {
            differing += 1;
            eprintln!(
                "{} (from column {}, padded {}): sha256 differs; sum {sum} vs {}, row 32: {bytes} bytes differ",
                f.file, f.columns_from, f.padded, f.sum
            );
        }
        if f.columns_from == 0 {
            frames.push((px, w, h));
        }
    }
    eprintln!(
        "pretreatment: {} of {} frames byte-identical to OpenCV {}",
        reference.frames.len() - differing,
        reference.frames.len(),
        reference.opencv
    );
    assert_eq!(differing, 0);
    assert!(reference.frames.iter().any(|f| f.padded), "the padding branch is covered");

    // A sequence, with an empty frame and a near-empty one (39 white pixels,
    // sum 9 945 ≤ 10 000) dropped, becomes the model's [1, s, 64, 44] input.
    let (w, h) = (frames[0].1, frames[0].2);
    let empty = vec![0u8; w * h];
    let mut sparse = vec![0u8; w * h];
    sparse[..39].fill(255);
    assert!(pretreat_frame(&empty, w, h).unwrap().is_none());
    assert!(pretreat_frame(&sparse, w, h).unwrap().is_none());
    let mut seq: Vec<(&[u8], usize, usize)> = frames.iter().map(|(p, w, h)| (p.as_slice(), *w, *h)).collect();
    seq.insert(1, (empty.as_slice(), w, h));
    seq.push((sparse.as_slice(), w, h));
    let out = pretreat_sequence(seq).unwrap();
    assert_eq!(out.len(), frames.len());
    let t = to_tensor(&out, &Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[1, frames.len(), SIZE, WIDTH]);
    let max: f32 = t.max_all().unwrap().to_scalar().unwrap();
    assert_eq!(max, 1.0);

    // Bad buffers are errors.
    assert!(pretreat_frame(&empty[..10], w, h).is_err());
    assert!(cut(&[0u8; 10]).is_err());
    assert!(to_tensor(&[], &Device::Cpu).is_err());
}

/// OpenCV's resize on a small synthetic image (values (37x + 91y + (xy mod 7)·29)
/// mod 256, 13×6): the SHA-256 and sum of what OpenCV 4.10 gives with its own
/// code (`cv2.ipp.setUseIPP(False)`) for an upscale whose width mixes the SIMD
/// and scalar column paths, a mixed up/down scale and a downscale.
#[test]
fn resize_cubic_matches_opencv_on_synthetic_images() {
    use osprey_models::gait_pretreat::resize_cubic;
    let (w, h) = (13usize, 6usize);
    let src: Vec<u8> =
        (0..h).flat_map(|y| (0..w).map(move |x| ((x * 37 + y * 91 + (x * y) % 7 * 29) % 256) as u8)).collect();
    for (dw, dh, sha, sum) in [
        (17, 5, "5dc2c375c7120cd9893b9cee5ee043543cc78be1b922e29b3a3a90dbd6247cc0", 10431u64),
        (9, 11, "ff955bd604d5c5e7f83de1b76312728c894e4a8615163e672e933b2ae25aadae", 12417),
        (5, 3, "4d10b3a3881bafa6a8306f906e8d4247e27df3b08d2917176b495e6447762cc8", 1639),
    ] {
        let out = resize_cubic(&src, w, h, dw, dh).unwrap();
        assert_eq!(out.iter().map(|&v| v as u64).sum::<u64>(), sum, "{dw}×{dh}");
        assert_eq!(sha256_hex(&out), sha, "{dw}×{dh}");
    }
    // Same size is the identity; empty sizes and short buffers are errors.
    assert_eq!(resize_cubic(&src, w, h, w, h).unwrap(), src);
    assert!(resize_cubic(&src, w, h, 0, 4).is_err());
    assert!(resize_cubic(&src[..7], w, h, 3, 3).is_err());
}
