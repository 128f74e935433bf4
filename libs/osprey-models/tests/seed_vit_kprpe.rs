//! ViT-KPRPE against CVLface's PyTorch reference, on the random-weight
//! `tiny` fixture from `shared/fixtures/seed-models` (see its README): the
//! embedding with the fixture's landmarks and with every landmark moved to
//! the crop centre (which only KP-RPE sees), and the parameter manifests of
//! the published `small` and `base` checkpoints.

mod common;

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Tensor};
use common::seed::{keys_json, load_fixture, max_rel_tensor};
use osprey_models::vit_kprpe::{VitKprpe, VitKprpeConfig, expected_shapes};

/// Largest relative error tolerated: max |port - reference| / max |reference|.
const TOLERANCE: f32 = 1e-4;

/// The tiny fixture's weights, `net.` prefix stripped, cast to f32.
fn tiny_weights() -> HashMap<String, Tensor> {
    load_fixture("vit_kprpe_tiny.weights.safetensors")
        .into_iter()
        .map(|(k, v)| {
            let name = k.strip_prefix("net.").unwrap_or(&k).to_string();
            (name, v.to_dtype(DType::F32).unwrap())
        })
        .collect()
}

fn tiny_model() -> VitKprpe {
    VitKprpe::new(&VitKprpeConfig::tiny(), &tiny_weights()).expect("build tiny ViT-KPRPE")
}

#[test]
fn tiny_matches_reference_embeddings() {
    let model = tiny_model();
    let io = load_fixture("vit_kprpe_tiny.io.safetensors");
    let image = &io["image"];
    let keypoints = &io["keypoints"];

    let got = model.forward(image, keypoints).unwrap();
    let err = max_rel_tensor(&got, &io["embedding"]);
    eprintln!("embedding: max relative error {err:.3e}");
    assert!(err <= TOLERANCE, "embedding differs from the reference by {err:.3e}");

    let centred = keypoints.ones_like().unwrap().affine(0.5, 0.0).unwrap();
    let got_centred = model.forward(image, &centred).unwrap();
    let err = max_rel_tensor(&got_centred, &io["embedding_centre_keypoints"]);
    eprintln!("embedding_centre_keypoints: max relative error {err:.3e}");
    assert!(err <= TOLERANCE, "centre-keypoint embedding differs from the reference by {err:.3e}");

    // The fixture is built so that the landmarks matter; guard against a
    // port that ignores them passing by accident.
    assert!(max_rel_tensor(&got, &got_centred) > 100.0 * TOLERANCE);
}

#[test]
fn shapes_match_published_manifests() {
    for (name, cfg) in [("small", VitKprpeConfig::small()), ("base", VitKprpeConfig::base())] {
        let manifest: BTreeMap<String, Vec<usize>> = keys_json(&format!("vit_kprpe_{name}.keys.json"))
            .into_iter()
            .map(|(k, v)| (k.strip_prefix("net.").expect("net. prefix").to_string(), v))
            .collect();
        let ours = expected_shapes(&cfg);
        let ours_map: BTreeMap<String, Vec<usize>> = ours.iter().cloned().collect();
        assert_eq!(ours.len(), ours_map.len(), "{name}: duplicate names");
        assert_eq!(ours_map, manifest, "{name}: shapes differ from the manifest");
    }
}

#[test]
fn missing_weight_is_an_error() {
    let mut weights = tiny_weights();
    weights.remove("blocks.1.attn.qkv.weight");
    let err = VitKprpe::new(&VitKprpeConfig::tiny(), &weights).err().expect("must fail");
    assert!(err.to_string().contains("blocks.1.attn.qkv.weight"), "{err}");
}
