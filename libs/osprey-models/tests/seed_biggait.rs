//! BigGait (OpenGait's `BigGait__Dinov2_Gaitbase`) against the reference
//! fixture made with OpenGait's own code (random weights, a narrower DINOv2
//! and GaitBase): the port must compute the same function, intermediate by
//! intermediate, and accept the published names and layout.

mod common;

use candle_core::{DType, Device, Tensor};
use common::seed::{
    as_map, fixtures, keys_json, load_fixture, max_rel_tensor, stored, temp_dir, values, write_safetensors,
};
use osprey_models::biggait::{
    self, BigGait, BigGaitConfig, IGNORE_PREFIXES, TRAINING_ONLY, embedding_manifest, manifest,
};
use osprey_models::checkpoint::{Checkpoint, CheckpointFormat};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

fn weights_path() -> PathBuf {
    fixtures().join("biggait_tiny.weights.safetensors")
}

fn io() -> HashMap<String, Tensor> {
    load_fixture("biggait_tiny.io.safetensors")
}

fn model(ckpt: &Checkpoint) -> BigGait {
    let cfg = BigGaitConfig::tiny();
    let weights = ckpt.bind(&embedding_manifest(&cfg), IGNORE_PREFIXES, &Device::Cpu).unwrap();
    BigGait::new(&cfg, &weights, &Device::Cpu).unwrap()
}

#[test]
fn manifests_match_the_checkpoints() {
    let keys = keys_json("biggait_full.keys.json");
    assert_eq!(as_map(&manifest(&BigGaitConfig::ccpg())), keys);
    let tiny = Checkpoint::open(&weights_path()).unwrap();
    assert_eq!(as_map(&manifest(&BigGaitConfig::tiny())), stored(&tiny));
    // The embedding's manifest is the full one less the training-only BNNecks.
    let mut without = keys.clone();
    without.retain(|k, _| !k.starts_with(TRAINING_ONLY));
    assert_eq!(as_map(&embedding_manifest(&BigGaitConfig::ccpg())), without);
    assert_eq!(keys.len() - without.len(), 6);
}

#[test]
fn biggait_matches_the_reference() {
    let io = io();
    let ckpt = Checkpoint::open(&weights_path()).unwrap();
    let net = model(&ckpt);
    let (frames, ratios) = (&io["frames_u8"], &io["ratios"]);
    let trace = net.trace(frames, ratios).unwrap();

    let pairs = [
        ("pos_embed_interp", &trace.pos_embed),
        ("dino_patchtokens", &trace.patch_tokens),
        ("dino_patchtokens_mid4", &trace.patch_tokens_mid4),
        ("foreground", &trace.foreground),
        ("denoising", &trace.denoising),
        ("appearance", &trace.appearance),
        ("embedding", &trace.embedding),
    ];
    let mut worst = Vec::new();
    for (name, got) in pairs {
        let err = max_rel_tensor(got, &io[name]);
        eprintln!("BigGait: {name} {:?} max relative error {err:.2e}", got.dims());
        worst.push((name, err));
    }
    // The foreground's support decides which pixels the branches see: it must be identical.
    let (fg, want_fg) = (values(&trace.foreground), values(&io["foreground"]));
    let differing = fg.iter().zip(&want_fg).filter(|(a, b)| (**a != 0.0) != (**b != 0.0)).count();
    eprintln!("BigGait: foreground support differs at {differing} of {} pixels", fg.len());
    assert_eq!(differing, 0);
    for (name, err) in worst {
        assert!(err <= 1e-4, "{name} differs from the reference by {err:e}");
    }

    // `forward` gives the trace's embedding; u8 and float frames agree.
    let emb = net.forward(frames, ratios).unwrap();
    assert_eq!(values(&emb), values(&trace.embedding));
    let as_f32 = net.forward(&frames.to_dtype(DType::F32).unwrap(), ratios).unwrap();
    assert_eq!(values(&as_f32), values(&emb));
    // One sequence at a time gives the same embedding as the batch.
    let first = net.forward(&frames.narrow(0, 0, 1).unwrap(), &ratios.narrow(0, 0, 1).unwrap()).unwrap();
    let want = io["embedding"].narrow(0, 0, 1).unwrap();
    assert!(max_rel_tensor(&first, &want) <= 1e-4);

    // Malformed inputs are errors, not panics.
    let zeros = |shape: &[usize]| Tensor::zeros(shape, DType::U8, &Device::Cpu).unwrap();
    let r = Tensor::full(0.5f32, (2, 4), &Device::Cpu).unwrap();
    for bad in [&[2, 4, 3, 256, 256][..], &[2, 4, 1, 256, 128], &[0, 4, 3, 256, 128], &[2, 4, 256, 128]] {
        assert!(net.forward(&zeros(bad), &r).is_err(), "{bad:?}");
    }
    assert!(net.forward(&zeros(&[2, 4, 3, 256, 128]), &r.narrow(1, 0, 3).unwrap()).is_err());
    for bad_ratio in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        let r = Tensor::full(bad_ratio, (1, 1), &Device::Cpu).unwrap();
        let e = net.forward(&zeros(&[1, 1, 3, 256, 128]), &r).unwrap_err().to_string();
        assert!(e.contains("ratio"), "{e}");
    }
}

#[test]
fn loader_names_what_is_wrong() {
    let dir = temp_dir("biggait-ckpt");
    let original: BTreeMap<String, Tensor> =
        candle_core::safetensors::load(weights_path(), &Device::Cpu).unwrap().into_iter().collect();
    let cfg = BigGaitConfig::tiny();
    let m = manifest(&cfg);
    let bind =
        |p: &Path| Checkpoint::open(p).and_then(|c| c.bind(&m, &[], &Device::Cpu)).map(|_| ()).unwrap_err().to_string();

    // Without the BNNecks (stripped for inference) it loads with the embedding's manifest.
    let mut stripped = original.clone();
    stripped.retain(|k, _| !k.starts_with(TRAINING_ONLY));
    let p = write_safetensors(&dir, "stripped.safetensors", &stripped);
    let w = Checkpoint::open(&p).unwrap().bind(&embedding_manifest(&cfg), IGNORE_PREFIXES, &Device::Cpu).unwrap();
    assert!(BigGait::new(&cfg, &w, &Device::Cpu).is_ok());
    // The tiny weights are not the CCPG model's.
    let e = BigGait::new(&BigGaitConfig::ccpg(), &w, &Device::Cpu).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("backbone.") || e.contains("Branch") || e.contains("gait_net"), "{e}");

    let name = "backbone.blocks.2.attn.qkv.weight";
    let mut renamed = original.clone();
    let t = renamed.remove(name).unwrap();
    renamed.insert("backbone.blocks.2.attn.qkv.kernel".into(), t);
    let e = bind(&write_safetensors(&dir, "renamed.safetensors", &renamed));
    assert!(e.contains("backbone.blocks.2.attn.qkv.kernel") && e.contains("renamed.safetensors"), "{e}");

    let mut missing = original.clone();
    missing.remove("gait_net.FCs.fc_bin");
    let e = bind(&write_safetensors(&dir, "missing.safetensors", &missing));
    assert!(e.contains("missing tensor `gait_net.FCs.fc_bin`"), "{e}");

    let mut reshaped = original.clone();
    let t = reshaped["Mask_Branch.down_sampling.weight"].reshape((96, 2)).unwrap();
    reshaped.insert("Mask_Branch.down_sampling.weight".into(), t);
    let e = bind(&write_safetensors(&dir, "reshaped.safetensors", &reshaped));
    assert!(e.contains("Mask_Branch.down_sampling.weight") && e.contains("[96, 2]") && e.contains("[2, 96]"), "{e}");

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
    let dir = temp_dir("biggait-torch");
    // The repository's script; beside this file's path when the test is built
    // from another manifest directory.
    let rel = "infra/scripts/write_torch_checkpoint.py";
    let script = [
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../..").join(rel),
        Path::new(file!()).parent().unwrap_or(Path::new(".")).join("../../..").join(rel),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .expect("write_torch_checkpoint.py not found");
    let out = dir.join("BigGait__Dinov2_Gaitbase_Frame30-40000.pt");
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
    assert_eq!(stored(&ckpt), as_map(&manifest(&BigGaitConfig::tiny())));
    let io = io();
    let emb = model(&ckpt).forward(&io["frames_u8"], &io["ratios"]).unwrap();
    let err = max_rel_tensor(&emb, &io["embedding"]);
    assert!(err <= 1e-4, "embedding differs from the reference by {err:e}");
    assert_eq!(emb.dims(), &[2, biggait::BigGaitConfig::tiny().fc_out, 16]);
    std::fs::remove_dir_all(&dir).ok();
}
