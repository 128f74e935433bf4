//! Silhouettes from background subtraction on real footage.
//!
//! * The Rust mixture model against OpenCV's `BackgroundSubtractorMOG2` on
//!   every frame of OpenCV's static-camera sample `vtest.avi`:
//!   `infra/scripts/silhouette_reference.py` recorded OpenCV 4.10's masks
//!   of ten frames and its foreground share on every frame
//!   (`tests/data/silhouette_vtest_*`).
//! * Real person tracks (CenterNet + the appearance model through
//!   `process_video`) on vtest.avi get silhouettes that look like people,
//!   stored as PNG strips that read back.
//! * A hand-held clip (facenet-pytorch's walking video) gets none.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use osprey_media::video::{Sampling, Segment, VideoReader};
use osprey_models::appearance::AppearanceEmbedder;
use osprey_models::centernet::PersonDetector;
use osprey_models::gait_pretreat::{SIZE, cut};
use osprey_pipeline::silhouette::{BackgroundConfig, BackgroundModel, FOREGROUND, SHADOW, decode_strip};
use osprey_pipeline::{BodyAnalyzer, BodyOptions, VideoOptions, process_video};
use serde::Deserialize;

/// Least IoU of our foreground (255) with OpenCV's on each checkpoint frame.
/// Measured: 1 (identical masks: the same algorithm and float32 arithmetic
/// in the same order); the margin allows for another compiler's or CPU's
/// float rounding flipping pixels near a threshold.
const MIN_IOU: f64 = 0.99;
/// Most pixels per checkpoint frame whose label (background, shadow,
/// foreground) differs from OpenCV's, as a share (measured: 0).
const MAX_LABEL_DIFF: f64 = 0.001;
/// Largest mean difference of the per-frame foreground and shadow shares
/// over all frames (measured: 0).
const MAX_SHARE_DIFF: f64 = 0.0001;

const ALL: Segment = Segment { start_ms: 0, end_ms: i64::MAX };

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("OSPREY_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../../shared/data"));
    assert!(dir.is_dir(), "test data not found at {} (set OSPREY_DATA)", dir.display());
    dir
}

fn vtest() -> PathBuf {
    data_dir().join("debian-opencv-doc/vtest.avi")
}

#[derive(Deserialize)]
struct Reference {
    frame_size: [usize; 2],
    frames: usize,
    /// Per frame: [foreground share, shadow share].
    foreground_shadow_share: Vec<[f64; 2]>,
    checkpoints: Vec<Checkpoint>,
    masks_png: String,
}

#[derive(Deserialize)]
struct Checkpoint {
    frame: i64,
    rgb_fnv1a64: String,
}

fn fnv1a64(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}")
}

#[test]
fn background_masks_agree_with_opencv_mog2_on_vtest() {
    let data = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("tests/data");
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(data.join("silhouette_vtest_reference.json")).unwrap()).unwrap();
    let masks = image::open(data.join(&reference.masks_png)).unwrap().to_luma8();
    let [w, h] = reference.frame_size;
    assert_eq!((masks.width() as usize, masks.height() as usize), (w, h * reference.checkpoints.len()));

    let mut model = BackgroundModel::new(w, h, BackgroundConfig::default()).unwrap();
    let mut mask = vec![0u8; w * h];
    let mut reader = VideoReader::open(&vtest(), "vtest.avi").unwrap();
    let mut shares = Vec::new();
    let mut checked = 0;
    reader
        .decode(ALL, Sampling::All, |f| {
            model.apply(f.image.as_raw(), &mut mask).unwrap();
            let fg = mask.iter().filter(|&&v| v == FOREGROUND).count() as f64 / (w * h) as f64;
            let shadow = mask.iter().filter(|&&v| v == SHADOW).count() as f64 / (w * h) as f64;
            shares.push([fg, shadow]);
            if let Some(i) = reference.checkpoints.iter().position(|c| c.frame == f.index) {
                let c = &reference.checkpoints[i];
                assert_eq!(fnv1a64(f.image.as_raw()), c.rgb_fnv1a64, "frame {}: not the reference's pixels", c.frame);
                let theirs = &masks.as_raw()[i * w * h..(i + 1) * w * h];
                let (mut inter, mut union, mut same) = (0usize, 0usize, 0usize);
                for (&a, &b) in mask.iter().zip(theirs) {
                    let (fa, fb) = (a == FOREGROUND, b == FOREGROUND);
                    inter += usize::from(fa && fb);
                    union += usize::from(fa || fb);
                    same += usize::from(a == b);
                }
                let iou = inter as f64 / union.max(1) as f64;
                let differ = w * h - same;
                eprintln!("frame {}: foreground IoU {iou:.6}, {differ} pixels labelled otherwise", c.frame);
                assert!(iou >= MIN_IOU, "frame {}: foreground IoU with OpenCV {iou:.4}", c.frame);
                assert!(
                    differ as f64 <= MAX_LABEL_DIFF * (w * h) as f64,
                    "frame {}: {differ} pixels labelled otherwise than OpenCV",
                    c.frame
                );
                checked += 1;
            }
            Ok(true)
        })
        .unwrap();
    assert_eq!(checked, reference.checkpoints.len());
    assert_eq!(shares.len(), reference.frames);
    let n = shares.len() as f64;
    let diff = |k: usize| {
        shares.iter().zip(&reference.foreground_shadow_share).map(|(a, b)| (a[k] - b[k]).abs()).sum::<f64>() / n
    };
    let (fg_diff, shadow_diff) = (diff(0), diff(1));
    eprintln!("mean |Δ share| over {n} frames: foreground {fg_diff:.6}, shadow {shadow_diff:.6}");
    assert!(fg_diff <= MAX_SHARE_DIFF && shadow_diff <= MAX_SHARE_DIFF, "{fg_diff} {shadow_diff}");
}

fn models() -> PathBuf {
    std::env::var_os("OSPREY_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../models"))
}

fn body() -> &'static BodyAnalyzer {
    static B: OnceLock<BodyAnalyzer> = OnceLock::new();
    B.get_or_init(|| {
        let dev = candle_core::Device::Cpu;
        BodyAnalyzer {
            detector: Arc::new(PersonDetector::load(&models(), &dev).expect("person detector (run fetch-models.sh)")),
            embedder: Arc::new(AppearanceEmbedder::load(&models(), &dev).expect("appearance model")),
            pose: None,
            options: BodyOptions::default(),
        }
    })
}

/// Body tracks of the first `seconds` of `path` at 5 frames/s.
fn tracks(path: &Path, seconds: i64) -> osprey_pipeline::VideoOutput {
    let segment = Segment { start_ms: 0, end_ms: seconds * 1000 };
    let options = VideoOptions { sampling: Sampling::Fps(5.0), segment, gait_frames: false };
    process_video(&[body()], path, &path.display().to_string(), options, &|_| {}).unwrap()
}

#[test]
fn pedestrian_tracks_get_silhouettes_that_look_like_people() {
    let out = tracks(&vtest(), 8);
    let mut with = 0;
    let mut frames = 0;
    for t in &out.templates {
        let Some(strip) = &t.silhouettes else { continue };
        with += 1;
        let images = decode_strip(&strip.png, "strip").unwrap();
        assert_eq!(images.len(), strip.frames.len());
        assert!(strip.frames.windows(2).all(|w| w[0] < w[1]), "frames in time order: {:?}", strip.frames);
        let seen: Vec<i64> = t.points.iter().map(|p| p.frame).collect();
        assert!(strip.frames.iter().all(|f| seen.contains(f)), "silhouettes come from the track's frames");
        for (img, f) in images.iter().zip(&strip.frames) {
            assert_eq!(img.len(), SIZE * SIZE);
            let model = cut(img).unwrap();
            // OpenGait's crop: the person spans the 64 rows.
            let row_on = |y: usize| img[y * SIZE..(y + 1) * SIZE].iter().any(|&v| v > 0);
            assert!(row_on(0) && row_on(SIZE - 1), "track {} frame {f}: the silhouette fills the rows", t.track_id);
            let share = model.iter().filter(|&&v| v >= 128).count() as f64 / model.len() as f64;
            assert!((0.08..=0.7).contains(&share), "track {} frame {f}: foreground share {share:.3}", t.track_id);
            // A person is taller than wide: most columns of the 64-wide
            // window are empty.
            let cols_on = (0..SIZE).filter(|&x| (0..SIZE).any(|y| img[y * SIZE + x] > 0)).count();
            assert!(cols_on < 48, "track {} frame {f}: {cols_on} columns hold foreground", t.track_id);
            frames += 1;
        }
    }
    eprintln!("{with} of {} tracks have silhouettes, {frames} frames in all", out.templates.len());
    assert!(with >= 4, "most pedestrians get silhouettes: {with} of {}", out.templates.len());
    let long = out.templates.iter().filter_map(|t| t.silhouettes.as_ref()).filter(|s| s.frames.len() >= 15).count();
    assert!(long >= 2, "people followed for 3 s or more have 15 or more silhouettes");
}

#[test]
fn a_hand_held_camera_gives_no_silhouettes() {
    // The camera walks backwards in front of the people: the whole scene moves.
    let path = data_dir().join("facenet-pytorch/examples/video.mp4");
    let out = tracks(&path, 4);
    assert!(!out.templates.is_empty(), "people are tracked");
    assert!(out.templates.iter().all(|t| t.silhouettes.is_none()), "no silhouettes from a moving camera");
}
