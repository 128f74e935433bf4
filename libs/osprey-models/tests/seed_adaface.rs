//! AdaFace IR against the reference fixture made with AdaFace's own `net.py`
//! (random weights, float16 on disk): the port must compute the same function,
//! and load every published depth's names and shapes.

mod common;

use candle_core::{Device, Tensor};
use common::seed::{fixtures, keys_json, max_rel, stored, temp_dir, write_safetensors};
use osprey_models::adaface::{IResNet, manifest, normalise_with_norms};
use osprey_models::checkpoint::Checkpoint;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[test]
fn manifests_match_the_published_checkpoints() {
    for (depth, file) in [(50, "adaface_ir_50.keys.json"), (101, "adaface_ir_101.keys.json")] {
        let ours: BTreeMap<String, Vec<usize>> = manifest(depth).unwrap().into_iter().collect();
        assert_eq!(ours, keys_json(file), "IR-{depth}");
    }
    let ckpt = Checkpoint::open(&fixtures().join("adaface_ir_18.weights.f16.safetensors")).unwrap();
    let ours: BTreeMap<String, Vec<usize>> = manifest(18).unwrap().into_iter().collect();
    assert_eq!(ours, stored(&ckpt));
}

#[test]
fn ir18_matches_the_reference() {
    let dir = fixtures();
    let ckpt = Checkpoint::open(&dir.join("adaface_ir_18.weights.f16.safetensors")).unwrap();
    let weights = ckpt.bind(&manifest(18).unwrap(), &["head."], &Device::Cpu).unwrap();
    let net = IResNet::new(18, &weights, &Device::Cpu).unwrap();
    let io = candle_core::safetensors::load(dir.join("adaface_ir_18.io.safetensors"), &Device::Cpu).unwrap();
    let features = net.forward(&io["image_bgr"]).unwrap();
    let (unit, norms) = normalise_with_norms(&features).unwrap();
    let want: Vec<Vec<f32>> = io["embedding"].to_vec2().unwrap();
    let want_norms: Vec<f32> = io["norm"].flatten_all().unwrap().to_vec1().unwrap();
    let got: Vec<f32> = unit.concat();
    let err = max_rel(&got, &want.concat());
    let norm_err = max_rel(&norms, &want_norms);
    eprintln!("IR-18: embedding max relative error {err:.2e}, norm {norm_err:.2e}");
    assert!(err <= 1e-4, "embedding differs from the reference by {err:e}");
    assert!(norm_err <= 1e-4, "norm differs from the reference by {norm_err:e}");
    // The tapped forward returns the same features.
    let (again, taps) = net.forward_with_taps(&io["image_bgr"], &[1, 3]).unwrap();
    assert_eq!(taps.len(), 2);
    assert_eq!(taps[1].dims(), &[2, 128, 28, 28]);
    let d: f32 = (again - &features).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert_eq!(d, 0.0);
}

#[test]
fn loader_names_what_is_wrong() {
    let dir = temp_dir("ckpt");
    let src = fixtures().join("adaface_ir_18.weights.f16.safetensors");
    let original: BTreeMap<String, Tensor> =
        candle_core::safetensors::load(&src, &Device::Cpu).unwrap().into_iter().collect();
    let m = manifest(18).unwrap();
    let bind = |p: &std::path::Path| {
        Checkpoint::open(p).and_then(|c| c.bind(&m, &["head."], &Device::Cpu)).map(|_| ()).unwrap_err().to_string()
    };

    // Published layouts: CVLface-style `net.` and Lightning-style `model.` prefixes, with a classifier to ignore.
    for prefix in ["net.", "model."] {
        let mut t: BTreeMap<String, Tensor> =
            original.iter().map(|(k, v)| (format!("{prefix}{k}"), v.clone())).collect();
        t.insert("head.kernel".into(), Tensor::zeros((512, 10), candle_core::DType::F32, &Device::Cpu).unwrap());
        let p = write_safetensors(&dir, "prefixed.safetensors", &t);
        let w = Checkpoint::open(&p).unwrap().bind(&m, &["head."], &Device::Cpu).unwrap();
        assert!(w.contains_key("body.0.res_layer.1.weight"), "{prefix}");
    }

    let mut renamed = original.clone();
    let t = renamed.remove("body.3.res_layer.4.weight").unwrap();
    renamed.insert("body.3.res_layer.4.kernel".into(), t);
    let e = bind(&write_safetensors(&dir, "renamed.safetensors", &renamed));
    assert!(e.contains("body.3.res_layer.4.kernel") && e.contains("renamed.safetensors"), "{e}");

    let mut missing = original.clone();
    missing.remove("output_layer.3.bias");
    let e = bind(&write_safetensors(&dir, "missing.safetensors", &missing));
    assert!(e.contains("missing tensor `output_layer.3.bias`"), "{e}");

    let mut reshaped = original.clone();
    let t = reshaped["input_layer.0.weight"].reshape((64, 27)).unwrap();
    reshaped.insert("input_layer.0.weight".into(), t);
    let e = bind(&write_safetensors(&dir, "reshaped.safetensors", &reshaped));
    assert!(e.contains("input_layer.0.weight") && e.contains("[64, 27]") && e.contains("[64, 3, 3, 3]"), "{e}");

    let bytes = std::fs::read(&src).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = Checkpoint::open(&cut).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("cut.safetensors"), "{e}");

    let foreign = dir.join("foreign.ckpt");
    std::fs::write(&foreign, b"GIF89a this is not a checkpoint").unwrap();
    let e = Checkpoint::open(&foreign).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("not a safetensors file or a PyTorch checkpoint"), "{e}");

    let zip_cut = dir.join("cut.ckpt");
    std::fs::write(&zip_cut, b"PK\x03\x04 truncated zip").unwrap();
    let e = Checkpoint::open(&zip_cut).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("cut.ckpt"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// AdaFace's published layout: a PyTorch Lightning `.ckpt` (a `torch.save`
/// zip archive; the state dict under `state_dict` with `model.` names, a
/// `head.kernel` classifier, optimizer state and hyper-parameters around
/// it), and a plain zip state dict; both give the reference's embeddings.
/// The files are written by `infra/scripts/write_torch_checkpoint.py`, which
/// lays them out as `torch.save` does without needing torch.
#[test]
fn torch_checkpoints_load_as_published() {
    let dir = temp_dir("torch-ckpt");
    let fixtures = fixtures();
    let script = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("../../infra/scripts/write_torch_checkpoint.py");
    let io = candle_core::safetensors::load(fixtures.join("adaface_ir_18.io.safetensors"), &Device::Cpu).unwrap();
    let want: Vec<f32> = io["embedding"].flatten_all().unwrap().to_vec1().unwrap();
    for (name, extra) in
        [("lightning.ckpt", vec![]), ("plain.pt", vec!["--layout", "plain", "--prefix", "", "--head", "0"])]
    {
        let out = dir.join(name);
        let status = std::process::Command::new("python3")
            .arg(&script)
            .arg(fixtures.join("adaface_ir_18.weights.f16.safetensors"))
            .arg(&out)
            .args(&extra)
            .status()
            .expect("python3 runs");
        assert!(status.success());
        let ckpt = Checkpoint::open(&out).unwrap();
        assert_eq!(ckpt.format(), osprey_models::checkpoint::CheckpointFormat::TorchZip);
        let weights = ckpt.bind(&manifest(18).unwrap(), &["head."], &Device::Cpu).unwrap();
        let net = IResNet::new(18, &weights, &Device::Cpu).unwrap();
        let (unit, _) = normalise_with_norms(&net.forward(&io["image_bgr"]).unwrap()).unwrap();
        let err = max_rel(&unit.concat(), &want);
        assert!(err <= 1e-4, "{name}: embedding differs from the reference by {err:e}");
    }
    // Without the classifier ignored, the Lightning file's extra tensor is named.
    let ckpt = Checkpoint::open(&dir.join("lightning.ckpt")).unwrap();
    let e = ckpt.bind(&manifest(18).unwrap(), &[], &Device::Cpu).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("head.kernel"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
