//! Fusion on real footage, the way a user would check it: four people are
//! enrolled from body crops cut from the last part of facenet-pytorch's
//! 1080p arcade clip (`tests/data/arcade/crops.csv`), then the clip's first
//! 1.6 s, where they are further away among strangers, is searched with
//! `--modalities face,body,gait` (gait is skipped: no gait model is given).
//! `osprey eval search` scores the face, body and fused decisions against a
//! truth that places each person by a point on their head
//! (`tests/data/arcade/truth.csv`).
//!
//! What this checks: the whole path a user takes (crops → enrolment with
//! gait skipped → a fused search → per-person truth → the ablation of face,
//! body and fused side by side); every enrolled person becomes a fused
//! probe, though one of them walks away from the camera, so face alone never
//! sees her; and fusion identifies at least three of the four. It does not
//! check that fusion beats face alone: on this clip it does not (see the
//! README's fusion section; the appearance model scores strangers in the
//! same scene as high as the enrolled, and which side wins moves with the
//! frames sampled).

mod common;

use std::path::Path;
use std::process::Command;

use common::{data, ok, osprey, repo, s};

fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg").args(["-nostdin", "-v", "error", "-y"]).args(args).status().expect("ffmpeg");
    assert!(status.success(), "ffmpeg {args:?}");
}

/// Cuts each crop of `crops.csv` from `clip` into `subjects/<subject>/`.
fn cut_crops(clip: &Path, crops_csv: &Path, subjects: &Path) -> usize {
    let text = std::fs::read_to_string(crops_csv).unwrap();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')).skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let [subject, t, x, y, w, h] = f[..] else { panic!("crops.csv: {line}") };
        let dir = subjects.join(subject);
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(format!("{t}.jpg"));
        ffmpeg(&["-ss", t, "-i", s(clip), "-frames:v", "1", "-vf", &format!("crop={w}:{h}:{x}:{y}"), s(&out)]);
        n += 1;
    }
    n
}

fn counts<'a>(m: &'a serde_json::Value, modality: &str) -> &'a serde_json::Value {
    &m["modalities"][modality]["counts"]
}

#[test]
fn people_enrolled_from_crops_are_searched_in_real_footage_face_body_and_fused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let clip = data().join("facenet-pytorch/examples/video.mp4");
    let arcade = repo().join("jobs/osprey-cli/tests/data/arcade");
    let subjects = dir.path().join("subjects");
    assert_eq!(cut_crops(&clip, &arcade.join("crops.csv"), &subjects), 8);
    let first = dir.path().join("first.mp4");
    ffmpeg(&["-i", s(&clip), "-t", "1.6", "-an", "-c", "copy", s(&first)]);

    // Enrolment from the crops: every crop is its subject's body (the whole
    // crop where the detector finds only part of the person); faces where
    // they are seen.
    let (_, err) = ok(&[
        "run",
        "enroll",
        "--root",
        s(&root),
        "--gallery",
        "arcade",
        "--modalities",
        "face,body,gait",
        "--subjects-from-dirs",
        s(&subjects),
    ]);
    assert!(err.contains("warning: gait is skipped: no gait model given"), "{err}");
    assert!(err.contains("gallery `arcade.body` (dinov2-vits14-imgfocus-0.1.1): 4 subjects, 8 templates"), "{err}");
    assert!(err.contains("gallery `arcade` (dlib-resnet-v1): 3 subjects"), "black_coat shows no face: {err}");

    let (_, err) = ok(&[
        "run",
        "search",
        "--root",
        s(&root),
        "--gallery",
        "arcade",
        "--modalities",
        "face,body,gait",
        "--job-id",
        "far",
        s(&first),
    ]);
    assert!(err.contains("warning: gait is skipped"), "{err}");
    assert!(err.contains("fused (quality):"), "{err}");

    let report = dir.path().join("report");
    let (out, _) = ok(&[
        "eval",
        "search",
        "--root",
        s(&root),
        "--job",
        "far",
        "--truth",
        s(&arcade.join("truth.csv")),
        "--out",
        s(&report),
    ]);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["modality_order"], serde_json::json!(["face", "body", "fused"]), "{out}");
    let (face, body, fused) = (counts(&m, "face"), counts(&m, "body"), counts(&m, "fused"));
    let n = |c: &serde_json::Value, k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k} in {c}"));
    for c in [face, body, fused] {
        assert_eq!((n(c, "truth_mated"), n(c, "truth_nonmated")), (4, 3), "{out}");
    }
    // Face alone never sees the woman walking away; every enrolled person
    // is a body and so a fused probe.
    assert!(n(face, "not_detected_mated") >= 1, "{out}");
    assert_eq!(n(body, "not_detected_mated"), 0, "{out}");
    assert_eq!(n(fused, "not_detected_mated"), 0, "{out}");
    assert!(n(fused, "hits") >= 3, "{out}");
    assert_eq!(n(fused, "hits") + n(fused, "misses"), n(fused, "mated_probes_detected"), "{out}");

    // A truth point outside every box is no person's: the report says so
    // instead of guessing.
    let stray = dir.path().join("stray.csv");
    std::fs::write(&stray, "media,subject,time_s,x,y\nfirst.mp4,red_hair,0.6,5,5\n").unwrap();
    let out = osprey(&[
        "eval",
        "search",
        "--root",
        s(&root),
        "--job",
        "far",
        "--truth",
        s(&stray),
        "--out",
        s(&dir.path().join("stray")),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("not detected"), "{text}");
}
