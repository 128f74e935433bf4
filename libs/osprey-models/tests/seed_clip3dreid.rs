//! CLIP3DReID's student (TinyViT-21M/224, token pooling, fc 512) against the
//! reference fixture made with the authors' code (`shared/fixtures/seed-models`,
//! random weights stored as float16, see its README): the `tiny` network's
//! local and global features, of the crops and of their mirror images, and
//! the flip-summed, L2-normalised evaluation embedding; the published `full`
//! state-dict names in order; the preprocessing; the loader's errors.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::seed::{as_map, fixtures, load_fixture, max_rel_tensor, stored, temp_dir, write_safetensors};
use osprey_models::checkpoint::Checkpoint;
use osprey_models::clip3dreid::{
    Clip3dReid, Clip3dReidConfig, IGNORED_PREFIXES, inference_manifest, manifest, preprocess,
};

/// Largest relative error tolerated: max |port − reference| / max |reference|.
const TOLERANCE: f32 = 1e-4;

fn weights_path() -> PathBuf {
    fixtures().join("clip3dreid_tiny.weights.f16.safetensors")
}

fn bind(path: &Path, cfg: &Clip3dReidConfig) -> osprey_core::Result<HashMap<String, Tensor>> {
    Checkpoint::open(path)?.bind(&inference_manifest(cfg), &IGNORED_PREFIXES, &Device::Cpu)
}

fn tiny_model(path: &Path) -> Clip3dReid {
    let weights = bind(path, &Clip3dReidConfig::tiny()).unwrap();
    Clip3dReid::new(&Clip3dReidConfig::tiny(), &weights, &Device::Cpu).expect("build tiny CLIP3DReID")
}

fn io() -> HashMap<String, Tensor> {
    load_fixture("clip3dreid_tiny.io.safetensors")
}

fn check(what: &str, got: &Tensor, want: &Tensor) {
    let err = max_rel_tensor(got, want);
    eprintln!("CLIP3DReID tiny: {what} max relative error {err:.3e}");
    assert!(err <= TOLERANCE, "{what} differs from the reference by {err:.3e}");
}

/// A JSON object's entries in file order (serde_json's map would sort them).
struct Ordered(Vec<(String, Vec<usize>)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of name → shape")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Vec<usize>>()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(V)
    }
}

#[test]
fn manifests_match_the_published_names() {
    // Full: the training script's state dict, names, shapes and order.
    let text = std::fs::read_to_string(fixtures().join("clip3dreid_full.keys.json")).unwrap();
    let Ordered(published) = serde_json::from_str(&text).unwrap();
    let full = manifest(&Clip3dReidConfig::full());
    as_map(&full);
    assert_eq!(full.len(), published.len(), "full: number of entries");
    for (i, (ours, theirs)) in full.iter().zip(&published).enumerate() {
        assert_eq!(ours, theirs, "full: entry {i}");
    }
    // Everything outside the student encoder and sv_fc is training-only.
    let ignored: Vec<&str> =
        full.iter().map(|(k, _)| k.as_str()).filter(|k| IGNORED_PREFIXES.iter().any(|p| k.starts_with(p))).collect();
    assert!(ignored.iter().all(|k| !k.starts_with("student_encoder.") && !k.starts_with("sv_fc.")));
    // tv_fc, tt_fc (weight, bias); tv_bn, sv_bn (four tensors and the counter); two classifiers.
    assert_eq!(ignored.len(), 2 * 2 + 2 * 5 + 2 * 2, "{ignored:?}");
    let inference = inference_manifest(&Clip3dReidConfig::full());
    assert_eq!(inference.len() + ignored.len(), full.len());
    let params: usize = inference
        .iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    eprintln!("CLIP3DReID full: {params} parameters and buffers on the inference path");

    // Tiny: exactly the fixture's stored names and shapes.
    let ckpt = Checkpoint::open(&weights_path()).unwrap();
    assert_eq!(as_map(&manifest(&Clip3dReidConfig::tiny())), stored(&ckpt), "tiny");
}

#[test]
fn tiny_matches_the_reference() {
    let model = tiny_model(&weights_path());
    let io = io();
    let image = &io["image"];
    assert_eq!(image.dims(), [2, 3, 224, 224]);

    let (global, local) = model.forward_feature(image).unwrap();
    assert_eq!(global.dims(), [2, 512]);
    assert_eq!(local.dims(), [2, 49, 576]);
    check("local_feature", &local, &io["local_feature"]);
    check("global_feature", &global, &io["global_feature"]);

    let reversed = Tensor::from_vec((0..224u32).rev().collect::<Vec<_>>(), 224, &Device::Cpu).unwrap();
    let flipped = image.index_select(&reversed, 3).unwrap();
    let (global_flip, _) = model.forward_feature(&flipped).unwrap();
    check("global_feature_flip", &global_flip, &io["global_feature_flip"]);

    let embedding = model.forward(image).unwrap();
    assert_eq!(embedding.dims(), [2, 512]);
    check("embedding", &embedding, &io["embedding"]);
    for i in 0..2 {
        check(
            &format!("embedding of sample {i} alone"),
            &model.forward(&image.narrow(0, i, 1).unwrap()).unwrap(),
            &io["embedding"].narrow(0, i, 1).unwrap(),
        );
    }

    // The u8 crops, normalised here, give the reference input and embedding.
    let u8s = io["image_u8"].permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
    let crops: Vec<Vec<u8>> = (0..2).map(|i| u8s.get(i).unwrap().flatten_all().unwrap().to_vec1().unwrap()).collect();
    let x = preprocess(&crops, &Device::Cpu).unwrap();
    let in_err = (&x - image).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    eprintln!("CLIP3DReID tiny: preprocess max abs difference {in_err:.2e}");
    assert!(in_err <= 1e-6, "preprocess differs from the reference input by {in_err:e}");
    check("embedding of the preprocessed crops", &model.forward(&x).unwrap(), &io["embedding"]);
}

#[test]
fn bad_inputs_are_errors() {
    let model = tiny_model(&weights_path());
    for shape in [vec![1, 1, 224, 224], vec![3, 224, 224], vec![1, 3, 256, 128], vec![0, 3, 224, 224]] {
        let x = Tensor::zeros(shape.as_slice(), DType::F32, &Device::Cpu).unwrap();
        let e = model.forward(&x).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("[B, 3, H, W]"), "{e}");
        let e = model.forward_feature(&x).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("[B, 3, H, W]"), "{e}");
    }
    let e = preprocess(&[vec![0u8; 10]], &Device::Cpu).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("crop 0 has 10 bytes"), "{e}");
    // Weights of the wrong configuration: an error, not a panic.
    let weights = bind(&weights_path(), &Clip3dReidConfig::tiny()).unwrap();
    let e = Clip3dReid::new(&Clip3dReidConfig::full(), &weights, &Device::Cpu).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("student_encoder.base."), "{e}");
}

#[test]
fn loader_names_what_is_wrong() {
    let dir = temp_dir("clip3dreid-broken");
    let cfg = Clip3dReidConfig::tiny();
    let original: BTreeMap<String, Tensor> =
        candle_core::safetensors::load(weights_path(), &Device::Cpu).unwrap().into_iter().collect();
    let err = |p: &Path| bind(p, &cfg).map(|_| ()).unwrap_err().to_string();

    // A renamed tensor: the stray name is reported.
    let mut renamed = original.clone();
    let t = renamed.remove("student_encoder.base.layers.2.blocks.1.attn.qkv.weight").unwrap();
    renamed.insert("student_encoder.base.layers.2.blocks.1.attn.qkv.kernel".into(), t);
    let e = err(&write_safetensors(&dir, "renamed.safetensors", &renamed));
    assert!(e.contains("layers.2.blocks.1.attn.qkv.kernel") && e.contains("renamed.safetensors"), "{e}");

    // A missing tensor.
    let mut missing = original.clone();
    missing.remove("student_encoder.proj");
    let e = err(&write_safetensors(&dir, "missing.safetensors", &missing));
    assert!(e.contains("missing tensor `student_encoder.proj`") && e.contains("missing.safetensors"), "{e}");

    // A reshaped tensor.
    let mut reshaped = original.clone();
    let name = "student_encoder.base.layers.1.blocks.0.attn.attention_biases";
    reshaped.insert(name.into(), reshaped[name].reshape((1, 98)).unwrap());
    let e = err(&write_safetensors(&dir, "reshaped.safetensors", &reshaped));
    assert!(
        e.contains(name) && e.contains("[1, 98]") && e.contains("[2, 49]") && e.contains("reshaped.safetensors"),
        "{e}"
    );

    // A file cut in half.
    let bytes = std::fs::read(weights_path()).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = err(&cut);
    assert!(e.contains("cut.safetensors"), "{e}");

    // The full model's manifest against the tiny weights.
    let e = Checkpoint::open(&weights_path())
        .and_then(|c| c.bind(&inference_manifest(&Clip3dReidConfig::full()), &IGNORED_PREFIXES, &Device::Cpu))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("has shape") || e.contains("unexpected tensor"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The published geometry (widths 96…576, depths 2, 2, 6, 2, 3…18 heads)
/// builds from random weights of the full manifest's shapes and runs to a
/// unit-norm embedding.
#[test]
fn full_geometry_runs() {
    let cfg = Clip3dReidConfig::full();
    let weights: HashMap<String, Tensor> = inference_manifest(&cfg)
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(k, shape)| {
            let t = if k.ends_with("running_var") {
                Tensor::ones(shape.as_slice(), DType::F32, &Device::Cpu)
            } else {
                Tensor::randn(0f32, 0.05, shape.as_slice(), &Device::Cpu)
            };
            (k, t.unwrap())
        })
        .collect();
    let model = Clip3dReid::new(&cfg, &weights, &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 3, 224, 224), &Device::Cpu).unwrap();
    let (global, local) = model.forward_feature(&x).unwrap();
    assert_eq!(global.dims(), [1, 512]);
    assert_eq!(local.dims(), [1, 49, 576]);
    let e = model.forward(&x).unwrap();
    let norm = e.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");
}

/// The fixture exercises the attention biases: without them the embedding
/// moves far beyond the tolerance.
#[test]
fn attention_biases_matter() {
    let cfg = Clip3dReidConfig::tiny();
    let mut weights = bind(&weights_path(), &cfg).unwrap();
    for (k, v) in weights.iter_mut() {
        if k.ends_with("attention_biases") {
            *v = v.zeros_like().unwrap();
        }
    }
    let model = Clip3dReid::new(&cfg, &weights, &Device::Cpu).unwrap();
    let io = io();
    let err = max_rel_tensor(&model.forward(&io["image"]).unwrap(), &io["embedding"]);
    eprintln!("CLIP3DReID tiny: embedding without attention biases differs by {err:.3e}");
    assert!(err > 100.0 * TOLERANCE, "{err:e}");
}

/// A `nn.DataParallel` state dict (`module.` names) whose classifiers are
/// sized for another training set and without the teacher layers loads and
/// gives the reference embedding.
#[test]
fn wrapped_state_dict_with_other_classifiers_loads() {
    let dir = temp_dir("clip3dreid-module");
    let mut module: BTreeMap<String, Tensor> = candle_core::safetensors::load(weights_path(), &Device::Cpu)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.starts_with("student_encoder.") || k.starts_with("sv_fc."))
        .map(|(k, v)| (format!("module.{k}"), v))
        .collect();
    for head in ["classifier", "classifier_teacher"] {
        module.insert(
            format!("module.{head}.classifier.weight"),
            Tensor::zeros((150, 512), DType::F16, &Device::Cpu).unwrap(),
        );
        module.insert(format!("module.{head}.classifier.bias"), Tensor::zeros(150, DType::F16, &Device::Cpu).unwrap());
    }
    let path = write_safetensors(&dir, "module.safetensors", &module);
    let model = tiny_model(&path);
    let io = io();
    let err = max_rel_tensor(&model.forward(&io["image"]).unwrap(), &io["embedding"]);
    assert!(err <= TOLERANCE, "embedding from the module. state dict differs by {err:e}");
    std::fs::remove_dir_all(&dir).ok();
}
