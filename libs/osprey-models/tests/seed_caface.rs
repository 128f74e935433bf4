//! The CAFace aggregator port against the reference fixtures of
//! `shared/fixtures/seed-models` (upstream PyTorch code, random weights, CPU,
//! eval; see that folder's README): `caface.weights.safetensors` holds the
//! aggregator's weights without the checkpoint's `aggregator.` prefix,
//! `caface.io.safetensors` the inputs (`features`, `style_raw`), the
//! intermediate `style_compact` and the outputs (`aggregated`, `weights`).

mod common;

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use common::seed::{as_map, keys_json, load_fixture, max_rel_tensor};
use osprey_models::caface::{CafaceAggregator, FrameFeature, expected_shapes, style_statistics};

/// Prefix of the aggregator's keys in a CAFace checkpoint and the manifest.
const PREFIX: &str = "aggregator.";

#[test]
fn expected_shapes_match_manifest_and_weights() {
    let ours = as_map(&expected_shapes());

    let manifest: BTreeMap<String, Vec<usize>> = keys_json("caface.keys.json")
        .into_iter()
        .map(|(k, v)| (k.strip_prefix(PREFIX).unwrap_or_else(|| panic!("{k} lacks {PREFIX}")).to_string(), v))
        .collect();
    assert_eq!(ours, manifest);

    let stored: BTreeMap<String, Vec<usize>> =
        load_fixture("caface.weights.safetensors").into_iter().map(|(k, t)| (k, t.dims().to_vec())).collect();
    assert_eq!(ours, stored);
}

#[test]
fn matches_reference_outputs() {
    let model = CafaceAggregator::new(&load_fixture("caface.weights.safetensors")).unwrap();
    let io = load_fixture("caface.io.safetensors");

    let style = model.compress_style(&io["style_raw"]).unwrap();
    let (aggregated, weights) = model.aggregate(&io["features"], &io["style_raw"]).unwrap();

    let errors = [
        ("style_compact", max_rel_tensor(&style.unsqueeze(0).unwrap(), &io["style_compact"])),
        ("aggregated", max_rel_tensor(&aggregated, &io["aggregated"])),
        ("weights", max_rel_tensor(&weights, &io["weights"])),
    ];
    for (name, err) in errors {
        eprintln!("{name}: max relative error {err:.3e}");
    }
    for (name, err) in errors {
        assert!(err <= 1e-4, "{name}: relative error {err:e} > 1e-4");
    }
}

#[test]
fn missing_or_misshapen_weight_is_an_error() {
    let mut weights = load_fixture("caface.weights.safetensors");
    let name = "fusion_net.clustering_layer.cluster_block.assign.k_proj.bias";
    let bias = weights.remove(name).unwrap();
    let err = CafaceAggregator::new(&weights).err().expect("missing key accepted").to_string();
    assert!(err.contains(name), "{err}");

    weights.insert(name.to_string(), bias.narrow(0, 0, 8).unwrap());
    let err = CafaceAggregator::new(&weights).err().expect("wrong shape accepted").to_string();
    assert!(err.contains(name), "{err}");
}

/// Mean and unbiased std per (frame, channel) over H×W, against a direct
/// f64 computation on an irregular map.
#[test]
fn style_statistics_are_mean_and_unbiased_std() {
    let map = |t: usize, c: usize, h: usize, w: usize| {
        let values: Vec<f32> = (0..t * c * h * w).map(|i| ((i * 7919 % 1013) as f32 / 101.0).sin() * 3.0).collect();
        (Tensor::from_vec(values.clone(), (t, c, h, w), &Device::Cpu).unwrap(), values)
    };
    let (b3, v3) = map(2, 128, 4, 3);
    let (b5, v5) = map(2, 256, 2, 2);
    let got = style_statistics(&b3, &b5).unwrap();
    assert_eq!(got.dims(), [2, 384, 2]);
    let got = got.to_vec3::<f32>().unwrap();

    for (frame, stats) in got.iter().enumerate() {
        for (channel, ms) in stats.iter().enumerate() {
            // (map values, channels of that map, channel within it, H*W)
            let (values, channels, c, n) =
                if channel < 128 { (&v3, 128, channel, 12) } else { (&v5, 256, channel - 128, 4) };
            let first = (frame * channels + c) * n;
            let xs: Vec<f64> = values[first..first + n].iter().map(|&v| v as f64).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let std = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
            assert!((ms[0] as f64 - mean).abs() < 1e-5, "mean {frame},{channel}: {} vs {mean}", ms[0]);
            assert!((ms[1] as f64 - std).abs() < 1e-5, "std {frame},{channel}: {} vs {std}", ms[1]);
        }
    }
    assert!(style_statistics(&b5, &b3).is_err(), "swapped blocks accepted");
}

/// The track-level entry point: a CAFace checkpoint as published (tensors
/// under `aggregator.`, beside a backbone's `model.` tensors) loads through
/// the checkpoint reader, and fusing the fixture's frames one by one (unit
/// feature, norm, flattened style statistics) gives the reference template.
#[test]
fn loads_a_published_checkpoint_and_fuses_a_track() {
    let mut published: HashMap<String, Tensor> =
        load_fixture("caface.weights.safetensors").into_iter().map(|(k, t)| (format!("{PREFIX}{k}"), t)).collect();
    published
        .insert("model.input_layer.0.weight".into(), Tensor::zeros((64, 3, 3, 3), DType::F32, &Device::Cpu).unwrap());
    let path = std::env::temp_dir().join(format!("osprey-caface-{}.safetensors", std::process::id()));
    candle_core::safetensors::save(&published, &path).unwrap();
    let model = CafaceAggregator::load(&path, &Device::Cpu);
    std::fs::remove_file(&path).ok();
    let model = model.unwrap();

    let io = load_fixture("caface.io.safetensors");
    let features: Vec<Vec<f32>> = io["features"].squeeze(0).unwrap().to_vec2().unwrap();
    let styles: Vec<Vec<f32>> = io["style_raw"].flatten_from(1).unwrap().to_vec2().unwrap();
    let units: Vec<(Vec<f32>, f32)> = features
        .iter()
        .map(|f| {
            let norm = f.iter().map(|v| v * v).sum::<f32>().sqrt();
            (f.iter().map(|v| v / norm).collect(), norm)
        })
        .collect();
    let frames: Vec<FrameFeature<'_>> =
        units.iter().zip(&styles).map(|((unit, norm), style)| FrameFeature { unit, norm: *norm, style }).collect();
    let fused = model.fuse_track(&frames, &Device::Cpu).unwrap();

    let mut want: Vec<f32> = io["aggregated"].flatten_all().unwrap().to_vec1().unwrap();
    let norm = want.iter().map(|v| v * v).sum::<f32>().sqrt();
    want.iter_mut().for_each(|v| *v /= norm);
    let err = fused.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("fused track: max abs error {err:.3e} (unit vectors)");
    assert!(err <= 1e-4, "fused template differs from the reference by {err:e}");

    // Malformed frames are errors, not panics.
    let short = [FrameFeature { unit: &units[0].0[..100], norm: 1.0, style: &styles[0] }];
    assert!(model.fuse_track(&short, &Device::Cpu).is_err());
    assert!(model.fuse_track(&[], &Device::Cpu).is_err());
}
