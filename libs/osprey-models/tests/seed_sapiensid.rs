//! SapiensID against the reference fixture made with the authors' code
//! (`shared/fixtures/seed-models`, random weights, see its README): the
//! `tiny` network's embeddings of a full-body crop and of a face close-up
//! without body keypoints, the published `base` manifest, KP-RPE being live,
//! and the loader's errors.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use common::seed::{as_map, fixtures, keys_json, load_fixture, max_rel_tensor};
use osprey_models::checkpoint::Checkpoint;
use osprey_models::sapiensid::{SapiensId, SapiensIdConfig, manifest};

/// Largest relative error tolerated: max |port - reference| / max |reference|.
const TOLERANCE: f32 = 1e-4;

fn weights_path() -> PathBuf {
    fixtures().join("sapiensid_tiny.weights.safetensors")
}

fn tiny_weights() -> HashMap<String, Tensor> {
    let ckpt = Checkpoint::open(&weights_path()).unwrap();
    ckpt.bind(&manifest(&SapiensIdConfig::tiny()), &[], &Device::Cpu).unwrap()
}

fn tiny_model(weights: &HashMap<String, Tensor>) -> SapiensId {
    SapiensId::new(&SapiensIdConfig::tiny(), weights, &Device::Cpu).expect("build tiny SapiensID")
}

fn io() -> HashMap<String, Tensor> {
    load_fixture("sapiensid_tiny.io.safetensors")
}

#[test]
fn manifests_match_the_published_names() {
    let keys: BTreeMap<String, Vec<usize>> = keys_json("sapiensid_base.keys.json")
        .into_iter()
        .map(|(k, v)| (k.strip_prefix("net.").expect("net. prefix").to_string(), v))
        .collect();
    assert_eq!(as_map(&manifest(&SapiensIdConfig::base())), keys, "base");

    let ckpt = Checkpoint::open(&weights_path()).unwrap();
    let stored: BTreeMap<String, Vec<usize>> =
        ckpt.names().map(|(k, s)| (k.strip_prefix("net.").expect("net. prefix").to_string(), s.to_vec())).collect();
    assert_eq!(as_map(&manifest(&SapiensIdConfig::tiny())), stored, "tiny");
}

#[test]
fn tiny_matches_the_reference() {
    let model = tiny_model(&tiny_weights());
    let io = io();
    let (image, keypoints, want) = (&io["image"], &io["keypoints22"], &io["embedding"]);
    let got = model.forward(image, keypoints).unwrap();
    assert_eq!(got.dims(), [2, 256]);
    for i in 0..2 {
        let err = max_rel_tensor(&got.get(i).unwrap(), &want.get(i).unwrap());
        eprintln!("SapiensID tiny, sample {i}: embedding max relative error {err:.3e}");
        assert!(err <= TOLERANCE, "sample {i}: embedding differs from the reference by {err:.3e}");
    }
    // Samples are independent of their batch-mates.
    let alone = model.forward(&image.narrow(0, 1, 1).unwrap(), &keypoints.narrow(0, 1, 1).unwrap()).unwrap();
    assert!(max_rel_tensor(&alone, &got.narrow(0, 1, 1).unwrap()) < 1e-6);
}

#[test]
fn keypoints_matter() {
    let weights = tiny_weights();
    let model = tiny_model(&weights);
    let io = io();
    let (image, keypoints) = (&io["image"], &io["keypoints22"]);
    let got = model.forward(image, keypoints).unwrap();

    // Every keypoint missing: no body or face view, no head features.
    let missing = (keypoints.ones_like().unwrap() * -1.0).unwrap();
    let dropped = model.forward(image, &missing).unwrap();
    let err = max_rel_tensor(&dropped, &got);
    eprintln!("keypoints dropped: relative change {err:.3e}");
    assert!(err > 100.0 * TOLERANCE);

    // KP-RPE alone: the same boxes and head, but a zero keypoint bias.
    let mut no_rpe = weights.clone();
    for name in ["rpe_module.keypoint_linear.fc.2.weight", "rpe_module.keypoint_linear.fc.2.bias"] {
        no_rpe.insert(name.into(), no_rpe[name].zeros_like().unwrap());
    }
    let without = tiny_model(&no_rpe).forward(image, keypoints).unwrap();
    let err = max_rel_tensor(&without, &got);
    eprintln!("KP-RPE zeroed: relative change {err:.3e}");
    assert!(err > 100.0 * TOLERANCE, "the KP-RPE bias does not change the output ({err:.3e})");
}

#[test]
fn bad_inputs_are_errors() {
    let model = tiny_model(&tiny_weights());
    let io = io();
    let (image, keypoints) = (&io["image"], &io["keypoints22"]);
    let small = image.narrow(2, 0, 320).unwrap();
    let err = model.forward(&small, keypoints).expect_err("wrong image size must fail");
    assert!(err.to_string().contains("images are [2, 3, 320, 384]"), "{err}");
    let five = keypoints.narrow(1, 17, 5).unwrap();
    let err = model.forward(image, &five).expect_err("5 keypoints must fail");
    assert!(err.to_string().contains("keypoints are [2, 5, 2]"), "{err}");
    let one = keypoints.narrow(0, 0, 1).unwrap();
    assert!(model.forward(image, &one).is_err(), "batch mismatch must fail");

    // A weight map with a mis-shaped tensor (bypassing the checkpoint binder).
    let mut weights = tiny_weights();
    weights.insert("head.query_pos_emb".into(), Tensor::zeros((1, 75, 64), DType::F32, &Device::Cpu).unwrap());
    let err = SapiensId::new(&SapiensIdConfig::tiny(), &weights, &Device::Cpu).err().expect("must fail");
    assert!(err.to_string().contains("head.query_pos_emb"), "{err}");
    weights.remove("backbone.blocks.1.attn.qkv.weight");
    let err = SapiensId::new(&SapiensIdConfig::tiny(), &weights, &Device::Cpu).err().expect("must fail");
    assert!(err.to_string().contains("backbone.blocks.1.attn.qkv.weight"), "{err}");
}

/// A scratch file in the system's temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("osprey-sapiensid-{}-{name}", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn loader_errors_name_the_tensor_or_file() {
    let stored = candle_core::safetensors::load(weights_path(), &Device::Cpu).unwrap();
    let cfg = manifest(&SapiensIdConfig::tiny());

    // Renamed tensor.
    let renamed = TempFile::new("renamed.safetensors");
    let mut t = stored.clone();
    let v = t.remove("net.head.attn.q_proj.weight").unwrap();
    t.insert("net.head.attn.q_proj.weights".into(), v);
    candle_core::safetensors::save(&t, &renamed.0).unwrap();
    let err = Checkpoint::open(&renamed.0).unwrap().bind(&cfg, &[], &Device::Cpu).expect_err("must fail");
    assert!(err.to_string().contains("net.head.attn.q_proj.weights"), "{err}");
    assert!(err.to_string().contains(&renamed.0.display().to_string()), "{err}");

    // Reshaped tensor.
    let reshaped = TempFile::new("reshaped.safetensors");
    let mut t = stored.clone();
    t.insert("net.rpe_module.keypoint_linear.fc.2.bias".into(), Tensor::zeros(399, DType::F32, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&t, &reshaped.0).unwrap();
    let err = Checkpoint::open(&reshaped.0).unwrap().bind(&cfg, &[], &Device::Cpu).expect_err("must fail");
    assert!(err.to_string().contains("net.rpe_module.keypoint_linear.fc.2.bias"), "{err}");
    assert!(err.to_string().contains("[399]"), "{err}");

    // Truncated file.
    let truncated = TempFile::new("truncated.safetensors");
    let bytes = std::fs::read(weights_path()).unwrap();
    std::fs::write(&truncated.0, &bytes[..bytes.len() / 2]).unwrap();
    let err = Checkpoint::open(&truncated.0).err().expect("must fail");
    assert!(err.to_string().contains(&truncated.0.display().to_string()), "{err}");
}
