//! Body keypoints end to end: the first two seconds of OpenCV's `vtest.avi`
//! at 5 frames/s through `process_video` with CenterNet, the appearance
//! model and MoveNet Lightning give body tracks whose every observation
//! carries the 17 COCO keypoints with scores, and the observations table's
//! rows carry them too (x, y in frame pixels, score); a still that is a
//! person crop gets them as well.

use std::path::PathBuf;
use std::sync::Arc;

use osprey_core::Modality;
use osprey_media::video::{Sampling, Segment};
use osprey_models::appearance::AppearanceEmbedder;
use osprey_models::centernet::PersonDetector;
use osprey_pipeline::body::load_pose;
use osprey_pipeline::media::observation_rows;
use osprey_pipeline::{BodyAnalyzer, BodyOptions, VideoOptions, process_video};

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("OSPREY_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../../shared/data"));
    assert!(dir.is_dir(), "test data not found at {} (set OSPREY_DATA)", dir.display());
    dir
}

fn models() -> PathBuf {
    std::env::var_os("OSPREY_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../models"))
}

#[test]
fn body_observations_carry_17_scored_keypoints() {
    let dev = candle_core::Device::Cpu;
    let pose = load_pose(&models(), &dev).unwrap().expect("pose model (run infra/scripts/fetch-models.sh)");
    let body = BodyAnalyzer {
        detector: Arc::new(PersonDetector::load(&models(), &dev).expect("person detector")),
        embedder: Arc::new(AppearanceEmbedder::load(&models(), &dev).expect("appearance model")),
        pose: Some(pose),
        options: BodyOptions::default(),
    };
    // A still that is itself a person crop (Market-1501 query, 64×128):
    // keypoints too, inside the image, the head above the ankles.
    let query = image::open(data_dir().join("person_search_demo/query/0001_c1s1_001051_00.jpg")).unwrap().to_rgb8();
    let still = body.whole_crop(&query).unwrap().expect("a person crop");
    assert_eq!((still.landmarks.len(), still.landmark_scores.len()), (34, 17));
    let (nose_y, ankle_y) = (still.landmarks[1], still.landmarks[2 * 15 + 1].max(still.landmarks[2 * 16 + 1]));
    assert!(nose_y < ankle_y, "nose at y {nose_y}, ankles at {ankle_y}");

    let path = data_dir().join("debian-opencv-doc/vtest.avi");
    let options = VideoOptions {
        sampling: Sampling::Fps(5.0),
        segment: Segment { start_ms: 0, end_ms: 2000 },
        gait_frames: false,
    };
    let out = process_video(&[&body], &path, "vtest.avi", options, &|_| {}).unwrap();
    let bodies: Vec<_> = out.templates.iter().filter(|t| t.modality == Modality::Body).collect();
    assert!(bodies.len() >= 3, "{} body tracks", bodies.len());
    let mut visible = 0usize;
    let mut total = 0usize;
    for t in &bodies {
        for p in &t.points {
            assert_eq!(p.landmarks.len(), 34, "17 x, y pairs");
            assert_eq!(p.landmark_scores.len(), 17);
            assert!(p.landmark_scores.iter().all(|s| (0.0..=1.0).contains(s)), "{:?}", p.landmark_scores);
            // Keypoints lie around the person's box (the crop is 1.25× its
            // longer side).
            let (cx, cy) = (p.bbox.x + p.bbox.w / 2.0, p.bbox.y + p.bbox.h / 2.0);
            let reach = 0.63 * p.bbox.w.max(p.bbox.h) + 1.0;
            for xy in p.landmarks.chunks_exact(2) {
                assert!((xy[0] - cx).abs() <= reach && (xy[1] - cy).abs() <= reach, "{xy:?} outside {:?}", p.bbox);
            }
            visible += p.landmark_scores.iter().filter(|&&s| s >= 0.3).count();
            total += 17;
        }
        let rows = observation_rows("t", t);
        assert_eq!(rows.len(), t.points.len());
        for (row, p) in rows.iter().zip(&t.points) {
            let kp = row.keypoints.as_ref().expect("keypoints in the observations table");
            assert_eq!(kp.len(), 17);
            for (k, (got, s)) in kp.iter().zip(&p.landmark_scores).enumerate() {
                assert_eq!(got.score, Some(*s), "keypoint {k}");
                assert_eq!((got.x, got.y), (p.landmarks[2 * k], p.landmarks[2 * k + 1]));
            }
        }
    }
    // Pedestrians in plain view: most keypoints are visible.
    assert!(visible as f64 > 0.5 * total as f64, "{visible} of {total} keypoints visible");
}
