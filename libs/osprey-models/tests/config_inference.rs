//! Configurations read off checkpoints: SapiensID, BigGait and CLIP3DReID
//! recover the fixtures' `tiny` configurations from the fixture weights and
//! the published ones from the `*.keys.json` manifests of the full models
//! (shapes only: SapiensID base alone is 1.3 GB), whatever the wrapper
//! prefix; a checkpoint of another model, or with shapes no configuration
//! has, is a clear error naming the tensor.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use common::seed::{as_map, fixtures, keys_json, load_fixture, temp_dir, write_safetensors};
use osprey_core::{ErrorKind, Result};
use osprey_models::biggait::{self, BigGaitConfig, DinoConfig};
use osprey_models::checkpoint::{Checkpoint, Manifest};
use osprey_models::clip3dreid::{self, Clip3dReidConfig};
use osprey_models::sapiensid::{self, SapiensIdConfig};

type Shapes = BTreeMap<String, Vec<usize>>;

fn open(name: &str) -> Checkpoint {
    Checkpoint::open(&fixtures().join(name)).unwrap_or_else(|e| panic!("open {name}: {e}"))
}

/// A lookup over `shapes` by architecture name, also trying `prefix`.
fn lookup<'a>(shapes: &'a Shapes, prefix: &'a str) -> impl Fn(&str) -> Option<Vec<usize>> + 'a {
    move |name| shapes.get(name).or_else(|| shapes.get(&format!("{prefix}{name}"))).cloned()
}

fn manifest_shapes(m: &Manifest) -> Shapes {
    as_map(m)
}

/// Asserts that `result` failed as a corrupt checkpoint whose message names
/// every one of `needles`; returns the message.
fn expect_corrupt<T: std::fmt::Debug>(result: Result<T>, needles: &[&str]) -> String {
    let err = result.expect_err("must fail");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    for needle in needles {
        assert!(err.message().contains(needle), "`{needle}` not in: {err}");
    }
    err.message().to_string()
}

/// The fixture `name` rewritten with every name's leading `strip` (if any)
/// replaced by `prefix`, in a scratch folder (removed by the caller).
fn prefixed_copy(name: &str, strip: &str, prefix: &str, dir: &std::path::Path) -> PathBuf {
    let tensors: BTreeMap<String, Tensor> = load_fixture(name)
        .into_iter()
        .map(|(k, t)| (format!("{prefix}{}", k.strip_prefix(strip).unwrap_or(&k)), t))
        .collect();
    write_safetensors(dir, name, &tensors)
}

// ---------------------------------------------------------------------------
// SapiensID

#[test]
fn sapiensid_tiny_weights_give_tiny() {
    let ckpt = open("sapiensid_tiny.weights.safetensors");
    let cfg = SapiensIdConfig::from_checkpoint(&ckpt).unwrap();
    assert_eq!(cfg, SapiensIdConfig::tiny());
    ckpt.bind(&sapiensid::manifest(&cfg), &[], &Device::Cpu).expect("the inferred configuration binds");
}

#[test]
fn sapiensid_base_shapes_give_base() {
    // The published checkpoint stores its names under `net.`.
    let keys = keys_json("sapiensid_base.keys.json");
    let cfg = SapiensIdConfig::from_shapes(&lookup(&keys, "net.")).unwrap();
    assert_eq!(cfg, SapiensIdConfig::base());
    let unprefixed: Shapes =
        keys.iter().map(|(k, s)| (k.strip_prefix("net.").unwrap().to_string(), s.clone())).collect();
    assert_eq!(manifest_shapes(&sapiensid::manifest(&cfg)), unprefixed);
}

#[test]
fn sapiensid_other_sizes_round_trip() {
    for cfg in [
        SapiensIdConfig { emb_dim: 256, output_dim: 1024, depth: 6, num_heads: 8 },
        SapiensIdConfig { emb_dim: 768, output_dim: 512, depth: 12, num_heads: 12 },
        SapiensIdConfig { emb_dim: 64, output_dim: 256, depth: 3, num_heads: 1 },
    ] {
        let shapes = manifest_shapes(&sapiensid::manifest(&cfg));
        assert_eq!(SapiensIdConfig::from_shapes(&lookup(&shapes, "")).unwrap(), cfg);
    }
}

#[test]
fn sapiensid_prefixed_checkpoint_gives_tiny() {
    let dir = temp_dir("config-inference-sapiensid");
    // The fixture stores its names under CVLface's `net.`: bare names and a
    // Lightning-wrapped `model.net.` must read the same.
    for prefix in ["", "model.net."] {
        let path = prefixed_copy("sapiensid_tiny.weights.safetensors", "net.", prefix, &dir);
        let ckpt = Checkpoint::open(&path).unwrap();
        let cfg = SapiensIdConfig::from_checkpoint(&ckpt).unwrap();
        assert_eq!(cfg, SapiensIdConfig::tiny(), "prefix {prefix}");
        ckpt.bind(&sapiensid::manifest(&cfg), &[], &Device::Cpu).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sapiensid_shapes_no_configuration_has_are_errors() {
    let base = manifest_shapes(&sapiensid::manifest(&SapiensIdConfig::base()));
    let rpe = "rpe_module.keypoint_linear.fc.2.weight";
    let mut bad = base.clone();
    bad.insert(rpe.into(), vec![24 * 16 * 50 + 1, 512]);
    expect_corrupt(SapiensIdConfig::from_shapes(&lookup(&bad, "")), &[rpe, "heads"]);

    let mut bad = base.clone();
    bad.retain(|k, _| !k.starts_with("backbone.blocks."));
    expect_corrupt(SapiensIdConfig::from_shapes(&lookup(&bad, "")), &["backbone.blocks.0.attn.qkv.weight"]);

    let mut bad = base.clone();
    bad.insert("mask_token".into(), vec![512]);
    expect_corrupt(SapiensIdConfig::from_shapes(&lookup(&bad, "")), &["mask_token", "[512]"]);

    let mut bad = base;
    bad.insert("mask_token".into(), vec![1, 0]);
    expect_corrupt(SapiensIdConfig::from_shapes(&lookup(&bad, "")), &["mask_token"]);
}

// ---------------------------------------------------------------------------
// BigGait

#[test]
fn biggait_tiny_weights_give_tiny() {
    let ckpt = open("biggait_tiny.weights.safetensors");
    let cfg = BigGaitConfig::from_checkpoint(&ckpt).unwrap();
    assert_eq!(cfg, BigGaitConfig::tiny());
    ckpt.bind(&biggait::manifest(&cfg), &[], &Device::Cpu).expect("the inferred configuration binds");
}

#[test]
fn biggait_full_shapes_give_ccpg() {
    let keys = keys_json("biggait_full.keys.json");
    let cfg = BigGaitConfig::from_shapes(&lookup(&keys, "")).unwrap();
    assert_eq!(cfg, BigGaitConfig::ccpg());
    assert_eq!(manifest_shapes(&biggait::manifest(&cfg)), keys);
}

#[test]
fn biggait_without_the_training_classifier_keeps_the_published_classes() {
    let mut keys = keys_json("biggait_full.keys.json");
    keys.retain(|k, _| !k.starts_with(biggait::TRAINING_ONLY));
    assert_eq!(BigGaitConfig::from_shapes(&lookup(&keys, "")).unwrap(), BigGaitConfig::ccpg());

    // A classifier trained on another dataset sizes the classes.
    let mut keys = keys_json("biggait_full.keys.json");
    keys.insert(format!("{}fc_bin", biggait::TRAINING_ONLY), vec![16, 256, 5000]);
    assert_eq!(BigGaitConfig::from_shapes(&lookup(&keys, "")).unwrap().classes, 5000);
}

#[test]
fn biggait_other_backbones_round_trip() {
    // DINOv2 ViT-B/14 (12 heads of 64) under a wider GaitBase; a reduced
    // ViT-S-like backbone of depth 8 and MLP ratio 2.
    let mut vitb = BigGaitConfig::ccpg();
    vitb.dino = DinoConfig { embed_dim: 768, depth: 12, num_heads: 12, patch_size: 14, img_size: 518, mlp_ratio: 4 };
    vitb.channels = [64, 128, 256, 1024];
    vitb.fc_out = 512;
    vitb.classes = 8000;
    let mut small = BigGaitConfig::tiny();
    small.dino = DinoConfig { embed_dim: 192, depth: 8, num_heads: 6, patch_size: 16, img_size: 224, mlp_ratio: 2 };
    small.squeeze_ratio = 8;
    small.denoising_dim = 8;
    small.appearance_dim = 12;
    for cfg in [vitb, small] {
        let shapes = manifest_shapes(&biggait::manifest(&cfg));
        assert_eq!(BigGaitConfig::from_shapes(&lookup(&shapes, "")).unwrap(), cfg);
    }
}

#[test]
fn biggait_prefixed_checkpoint_gives_tiny() {
    let dir = temp_dir("config-inference-biggait");
    let path = prefixed_copy("biggait_tiny.weights.safetensors", "", "module.", &dir);
    let ckpt = Checkpoint::open(&path).unwrap();
    assert_eq!(BigGaitConfig::from_checkpoint(&ckpt).unwrap(), BigGaitConfig::tiny());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn biggait_shapes_no_configuration_has_are_errors() {
    let keys = keys_json("biggait_full.keys.json");
    let mut bad = keys.clone();
    bad.insert("backbone.pos_embed".into(), vec![1, 1000, 384]);
    expect_corrupt(BigGaitConfig::from_shapes(&lookup(&bad, "")), &["backbone.pos_embed", "square"]);

    let mut bad = keys.clone();
    bad.insert("backbone.patch_embed.proj.weight".into(), vec![384, 3, 14, 16]);
    expect_corrupt(BigGaitConfig::from_shapes(&lookup(&bad, "")), &["backbone.patch_embed.proj.weight"]);

    let mut bad = keys.clone();
    bad.insert("backbone.blocks.0.mlp.fc1.weight".into(), vec![1000, 384]);
    expect_corrupt(BigGaitConfig::from_shapes(&lookup(&bad, "")), &["backbone.blocks.0.mlp.fc1.weight"]);

    // A width that is neither a released DINOv2 nor divisible into 6 heads.
    let mut bad = keys.clone();
    bad.insert("backbone.cls_token".into(), vec![1, 1, 100]);
    bad.insert("backbone.blocks.0.mlp.fc1.weight".into(), vec![400, 100]);
    expect_corrupt(BigGaitConfig::from_shapes(&lookup(&bad, "")), &["backbone.cls_token", "heads"]);

    let mut bad = keys;
    bad.remove("gait_net.FCs.fc_bin");
    expect_corrupt(BigGaitConfig::from_shapes(&lookup(&bad, "")), &["gait_net.FCs.fc_bin", "BigGait"]);
}

// ---------------------------------------------------------------------------
// CLIP3DReID

#[test]
fn clip3dreid_tiny_weights_give_tiny() {
    let ckpt = open("clip3dreid_tiny.weights.f16.safetensors");
    let cfg = Clip3dReidConfig::from_checkpoint(&ckpt).unwrap();
    assert_eq!(cfg, Clip3dReidConfig::tiny());
    ckpt.bind(&clip3dreid::manifest(&cfg), &[], &Device::Cpu).expect("the inferred configuration binds");
}

#[test]
fn clip3dreid_full_shapes_give_full() {
    let keys = keys_json("clip3dreid_full.keys.json");
    let cfg = Clip3dReidConfig::from_shapes(&lookup(&keys, "")).unwrap();
    assert_eq!(cfg, Clip3dReidConfig::full());
    assert_eq!(manifest_shapes(&clip3dreid::manifest(&cfg)), keys);
}

#[test]
fn clip3dreid_without_classifiers_keeps_the_published_classes() {
    let mut keys = keys_json("clip3dreid_full.keys.json");
    keys.retain(|k, _| !clip3dreid::IGNORED_PREFIXES.iter().any(|p| k.starts_with(p)));
    let cfg = Clip3dReidConfig::from_shapes(&lookup(&keys, "")).unwrap();
    assert_eq!(cfg, Clip3dReidConfig::full());
    assert_eq!(manifest_shapes(&clip3dreid::inference_manifest(&cfg)), keys);
}

#[test]
fn clip3dreid_other_sizes_round_trip() {
    // TinyViT-11M's stages up to a last width of 576 (heads 32 wide), and a
    // student with 7-point windows everywhere and MLP ratio 3.
    let a = Clip3dReidConfig {
        embed_dims: [64, 128, 256, 576],
        depths: [2, 2, 6, 2],
        num_heads: [2, 4, 8, 18],
        window_sizes: [7, 7, 14, 7],
        mlp_ratio: 4.0,
        mbconv_expand_ratio: 4.0,
        num_classes: 751,
    };
    let b = Clip3dReidConfig {
        embed_dims: [96, 192, 384, 576],
        depths: [1, 3, 4, 1],
        num_heads: [3, 6, 12, 18],
        window_sizes: [7, 7, 7, 7],
        mlp_ratio: 3.0,
        mbconv_expand_ratio: 2.0,
        num_classes: 1041,
    };
    for cfg in [a, b] {
        let shapes = manifest_shapes(&clip3dreid::manifest(&cfg));
        assert_eq!(Clip3dReidConfig::from_shapes(&lookup(&shapes, "")).unwrap(), cfg);
    }
}

#[test]
fn clip3dreid_prefixed_checkpoint_gives_tiny() {
    let dir = temp_dir("config-inference-clip3dreid");
    let path = prefixed_copy("clip3dreid_tiny.weights.f16.safetensors", "", "module.", &dir);
    let ckpt = Checkpoint::open(&path).unwrap();
    assert_eq!(Clip3dReidConfig::from_checkpoint(&ckpt).unwrap(), Clip3dReidConfig::tiny());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn clip3dreid_shapes_no_configuration_has_are_errors() {
    let keys = keys_json("clip3dreid_full.keys.json");
    let biases = "student_encoder.base.layers.2.blocks.0.attn.attention_biases";
    let mut bad = keys.clone();
    bad.insert(biases.into(), vec![12, 190]);
    expect_corrupt(Clip3dReidConfig::from_shapes(&lookup(&bad, "")), &[biases, "window"]);

    let mut bad = keys;
    bad.retain(|k, _| !k.starts_with("student_encoder.base.layers.3.blocks."));
    expect_corrupt(
        Clip3dReidConfig::from_shapes(&lookup(&bad, "")),
        &["student_encoder.base.layers.3.blocks.0.attn.qkv.weight"],
    );
}

// ---------------------------------------------------------------------------
// Checkpoints of other models

#[test]
fn checkpoints_of_other_models_are_clear_errors() {
    let osnet = fixtures().join("osnet_x1_0.weights.f16.safetensors");
    let ckpt = Checkpoint::open(&osnet).unwrap();
    let file = osnet.display().to_string();
    let m = expect_corrupt(SapiensIdConfig::from_checkpoint(&ckpt), &[&file, "`mask_token`", "SapiensID"]);
    eprintln!("{m}");
    let m = expect_corrupt(BigGaitConfig::from_checkpoint(&ckpt), &[&file, "`gait_net.FCs.fc_bin`", "BigGait"]);
    eprintln!("{m}");
    let m = expect_corrupt(
        Clip3dReidConfig::from_checkpoint(&ckpt),
        &[&file, "`student_encoder.base.patch_embed.seq.2.c.weight`", "CLIP3DReID"],
    );
    eprintln!("{m}");

    // Each seed model's weights under the other two.
    let sapiens = open("sapiensid_tiny.weights.safetensors");
    let gait = open("biggait_tiny.weights.safetensors");
    let clip = open("clip3dreid_tiny.weights.f16.safetensors");
    expect_corrupt(SapiensIdConfig::from_checkpoint(&gait), &["SapiensID"]);
    expect_corrupt(SapiensIdConfig::from_checkpoint(&clip), &["SapiensID"]);
    expect_corrupt(BigGaitConfig::from_checkpoint(&sapiens), &["BigGait"]);
    expect_corrupt(BigGaitConfig::from_checkpoint(&clip), &["BigGait"]);
    expect_corrupt(Clip3dReidConfig::from_checkpoint(&sapiens), &["CLIP3DReID"]);
    expect_corrupt(Clip3dReidConfig::from_checkpoint(&gait), &["CLIP3DReID"]);
}
