//! `--detect cascade` (MMOD on crops around MTCNN's proposals and the
//! tracks' expected boxes) against the exact path (`every-frame`) on the
//! opening seconds of a real clip: it must find the same faces.

use std::path::PathBuf;
use std::sync::Arc;

use osprey_media::video::{Sampling, Segment};
use osprey_models::{FaceModels, FaceOptions};
use osprey_pipeline::{FaceAnalyzer, FaceDetect, MediaTemplate, VideoOptions, process_video};

fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../..").join(rel)
}

fn model_dir() -> PathBuf {
    std::env::var_os("OSPREY_MODELS").map(PathBuf::from).unwrap_or_else(|| repo_path("models"))
}

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("OSPREY_DATA").map(PathBuf::from).unwrap_or_else(|| repo_path("../shared/data"));
    assert!(dir.is_dir(), "test data not found at {} (set OSPREY_DATA)", dir.display());
    dir
}

/// (frame, box) of every face the tracks hold.
fn faces(templates: &[MediaTemplate]) -> Vec<(i64, osprey_pipeline::BoxF, usize)> {
    templates.iter().enumerate().flat_map(|(i, t)| t.points.iter().map(move |p| (p.frame, p.bbox, i))).collect()
}

#[test]
fn cascade_finds_the_faces_the_exact_path_finds() {
    let dir = model_dir();
    let models = FaceModels::load(&dir, &candle_core::Device::Cpu).expect("dlib models (run fetch-models.sh)");
    let mtcnn = osprey_pipeline::media::load_mtcnn(&dir).expect("MTCNN (run fetch-models.sh)");
    // `osprey run`'s defaults.
    let options = FaceOptions { max_detect_pixels: 4_000_000, ..FaceOptions::default() };
    let exact = FaceAnalyzer::new(models, options);
    let cascade = exact.with_options(options).with_detect(FaceDetect::Cascade, Some(Arc::new(mtcnn)));
    assert_eq!(exact.detect, FaceDetect::EveryFrame);

    // Hamilton: two people's close-ups in the first 1.1 s (one a profile).
    let clip = data_dir().join("face_recognition/examples/short_hamilton_clip.mp4");
    let options = VideoOptions {
        sampling: Sampling::Fps(5.0),
        segment: Segment { start_ms: 0, end_ms: 1100 },
        gait_frames: false,
    };
    let run = |a: &FaceAnalyzer| process_video(&[a], &clip, "hamilton", options, &|_| {}).unwrap();
    let started = std::time::Instant::now();
    let want = run(&exact);
    let exact_s = started.elapsed().as_secs_f64();
    let got = run(&cascade);
    eprintln!(
        "{} frames: every-frame {exact_s:.2} s, cascade {:.2} s",
        want.decode.sampled,
        started.elapsed().as_secs_f64() - exact_s
    );
    let (want_faces, got_faces) = (faces(&want.templates), faces(&got.templates));
    assert!(want_faces.len() >= 5, "the exact path found only {} faces", want_faces.len());

    let mut used = vec![false; got_faces.len()];
    let mut missed = Vec::new();
    let mut tracks_found = vec![false; want.templates.len()];
    for (frame, b, track) in &want_faces {
        let hit = got_faces.iter().enumerate().position(|(j, (f, g, _))| !used[j] && f == frame && g.iou(b) >= 0.5);
        match hit {
            Some(j) => {
                used[j] = true;
                tracks_found[*track] = true;
            }
            None => missed.push((*frame, *b)),
        }
    }
    // Every exact face found again (the 2 % rule allows none to be lost
    // among this few), and every exact track.
    assert!(missed.is_empty(), "cascade missed {missed:?} of {} faces", want_faces.len());
    assert!(tracks_found.iter().all(|&f| f), "tracks lost: {tracks_found:?}");
    // And no faces the exact path does not have.
    assert_eq!(got_faces.len(), want_faces.len(), "cascade found extra faces");
}

#[test]
fn detect_setting_is_checked_and_defaults_to_the_cascade() {
    use osprey_pipeline::MediaSettings;
    let s = MediaSettings::default();
    assert_eq!(s.face_detect().unwrap(), FaceDetect::Cascade);
    let s = MediaSettings { detect: Some("every-frame".into()), ..MediaSettings::default() };
    assert_eq!(s.face_detect().unwrap(), FaceDetect::EveryFrame);
    let s = MediaSettings { detect: Some("sometimes".into()), ..MediaSettings::default() };
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("sometimes") && e.contains("every-frame") && e.contains("cascade"), "{e}");
}
