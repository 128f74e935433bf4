//! People at a distance through `osprey run`: bodies found by the CenterNet
//! person detector, tracked, embedded by the out-of-the-box appearance model,
//! enrolled into the gallery's body index (`<gallery>.body`) and searched;
//! faces linked to the bodies around them; the observations table and
//! erasure covering both.
//!
//! Real data from ../shared/data: a Market-1501 person crop (identity 0001)
//! and the camera frame it was cut from, six seconds of OpenCV's vtest.avi
//! (pedestrians 70–120 px tall on a plaza), and 1.2 s of facenet-pytorch's
//! 1080p walking clip (faces and bodies together). The appearance model's
//! cosines run high for everyone (0.8–0.93 between different people), so
//! the searches use a given threshold instead of a calibrated one.

mod common;

use std::path::Path;
use std::process::Command;

use common::{data, ok, osprey, s};

fn json(out: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn sql_csv(root: &Path, query: &str) -> Vec<Vec<String>> {
    let (out, _) = ok(&["sql", "--root", s(root), "--format", "csv", query]);
    out.lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect()
}

/// `osprey run search` of `input` against gallery `g` as job `job`, with a
/// given threshold (the appearance model is not calibrated on two subjects):
/// its JSON lines.
fn search(root: &Path, job: &str, modalities: &str, input: &Path) -> Vec<serde_json::Value> {
    let (out, _) = ok(&[
        "run",
        "search",
        "--root",
        s(root),
        "--gallery",
        "g",
        "--modalities",
        modalities,
        "--threshold",
        "0.93",
        "--format",
        "json",
        "--job-id",
        job,
        s(input),
    ]);
    json(&out)
}

/// The first `seconds` of `src`, stream-copied by ffmpeg.
fn cut(src: &Path, seconds: &str, out: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i", s(src), "-t", seconds, "-c", "copy", s(out)])
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg cut {}", src.display());
}

#[test]
fn bodies_are_tracked_enrolled_searched_linked_and_erased() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let subjects = dir.path().join("subjects");
    let market = data().join("person_search_demo");
    for (subject, file) in [
        ("p0001", market.join("query/0001_c1s1_001051_00.jpg")),
        ("obama", data().join("face_recognition/examples/obama.jpg")),
    ] {
        std::fs::create_dir_all(subjects.join(subject)).unwrap();
        std::fs::copy(&file, subjects.join(subject).join(file.file_name().unwrap())).unwrap();
    }

    // Enrolment: faces into `g`, bodies into `g.body`. The Market crop is
    // itself a person crop (no face at 64×128): one body template; Obama's
    // portrait gives his face and his body.
    let (_, err) = ok(&[
        "run",
        "enroll",
        "--root",
        s(&root),
        "--gallery",
        "g",
        "--subjects-from-dirs",
        s(&subjects),
        "--modalities",
        "face,body",
    ]);
    assert!(err.contains("gallery `g.body` (dinov2-vits14-imgfocus-0.1.1): 2 subjects, 2 templates"), "{err}");
    assert!(err.contains("gallery `g` (dlib-resnet-v1): 1 subjects, 1 templates"), "{err}");
    let (show, _) = ok(&["gallery", "show", "--root", s(&root), "--gallery", "g"]);
    assert!(show.contains("g.body") && show.contains("dinov2-vits14-imgfocus-0.1.1"), "{show}");

    // The camera frame the crop was cut from: its person matches p0001, the
    // other pedestrians do not.
    let frame = market.join("data/samples/c1s1_001051.jpg");
    let found = search(&root, "market-1", "body", &frame);
    assert!(found.len() >= 4, "pedestrians in the frame: {found:?}");
    assert!(found.iter().all(|f| f["modality"] == "body"), "{found:?}");
    let matches: Vec<_> = found.iter().filter(|f| f["decision"] == "match").collect();
    assert_eq!(matches.len(), 1, "{found:?}");
    assert_eq!(matches[0]["subject"], "p0001");
    assert!(matches[0]["score"].as_f64().unwrap() > 0.95, "{:?}", matches[0]);

    // Six seconds of vtest.avi: person tracks with time ranges, per-frame
    // boxes in the observations table, thumbnails.
    let clip = dir.path().join("vtest6.avi");
    cut(&data().join("debian-opencv-doc/vtest.avi"), "6", &clip);
    let tracks = search(&root, "plaza-1", "body", &clip);
    assert!(tracks.len() >= 5, "pedestrians crossing the plaza: {tracks:?}");
    let long = tracks.iter().filter(|t| t["frames"].as_i64().unwrap() >= 10).count();
    assert!(long >= 4, "several people followed for 2 s or more: {tracks:?}");
    for t in &tracks {
        let (a, b) = (t["t_start_s"].as_f64().unwrap(), t["t_end_s"].as_f64().unwrap());
        assert!(0.0 <= a && a <= b && b <= 6.0, "{t:?}");
    }
    let rows = sql_csv(
        &root,
        "SELECT t.template_id, t.num_frames, count(o.frame) AS n, min(o.bbox.h) AS h, max(o.bbox.x + o.bbox.w) AS right, \
         max(t.person_track_id = t.template_id) AS own, max(t.thumbnail_uri) AS thumb \
         FROM templates t JOIN observations o ON o.template_id = t.template_id \
         WHERE t.job_id = 'plaza-1' AND t.modality = 'body' AND o.modality = 'body' GROUP BY 1, 2",
    );
    assert_eq!(rows.len(), tracks.len(), "{rows:?}");
    for r in &rows {
        assert_eq!(r[1], r[2], "one observation per frame of the track: {r:?}");
        assert!(r[3].parse::<f32>().unwrap() >= 32.0, "bodies are at least 32 px tall: {r:?}");
        assert!(r[4].parse::<f32>().unwrap() <= 768.0, "boxes inside the frame: {r:?}");
        assert_eq!(r[5], "true", "a body track is its own person track: {r:?}");
        let thumb = Path::new(r[6].strip_prefix("file://").unwrap()).to_path_buf();
        assert_eq!(&std::fs::read(&thumb).unwrap()[..2], &[0xff, 0xd8], "thumbnail is a JPEG");
    }

    // Faces and bodies together: each face track is linked to the body
    // track around it through person_track_id.
    let walk = dir.path().join("walk.mp4");
    cut(&data().join("facenet-pytorch/examples/video.mp4"), "1.2", &walk);
    let walk_tracks = search(&root, "walk-1", "face,body", &walk);
    let faces = walk_tracks.iter().filter(|t| t["modality"] == "face").count();
    assert!(faces >= 3 && walk_tracks.iter().any(|t| t["modality"] == "body"), "{walk_tracks:?}");
    let links = sql_csv(
        &root,
        "SELECT f.template_id, b.modality FROM templates f LEFT JOIN templates b ON f.person_track_id = b.template_id \
         WHERE f.job_id = 'walk-1' AND f.modality = 'face'",
    );
    assert_eq!(links.len(), faces);
    let linked: Vec<&String> = links.iter().filter(|l| l[1] == "body").map(|l| &l[0]).collect();
    assert!(linked.len() * 2 >= faces, "most faces sit inside a tracked body: {links:?}");
    // In frames both were seen in, the face's centre lies in its body's upper half.
    let inside = sql_csv(
        &root,
        "SELECT f.template_id, count(*) FROM templates f \
         JOIN observations fo ON fo.template_id = f.template_id \
         JOIN observations bo ON bo.template_id = f.person_track_id AND bo.frame = fo.frame AND bo.modality = 'body' \
         WHERE f.job_id = 'walk-1' AND f.modality = 'face' \
           AND fo.bbox.y + fo.bbox.h / 2 <= bo.bbox.y + bo.bbox.h / 2 \
           AND fo.bbox.y + fo.bbox.h / 2 >= bo.bbox.y \
           AND fo.bbox.x + fo.bbox.w / 2 BETWEEN bo.bbox.x AND bo.bbox.x + bo.bbox.w \
         GROUP BY 1",
    );
    for id in &linked {
        assert!(inside.iter().any(|r| &r[0] == *id), "face {id} is never inside its body: {inside:?}");
    }

    // Erasure reaches the body index and its templates too.
    let (_, _) = ok(&["gallery", "delete-subject", "--root", s(&root), "--gallery", "g", "--subject", "p0001"]);
    let left = sql_csv(&root, "SELECT count(*) FROM templates WHERE subject_id = 'p0001'");
    assert_eq!(left[0][0], "0");
    let (show, _) = ok(&["gallery", "show", "--root", s(&root), "--gallery", "g.body", "--format", "json"]);
    assert!(!show.contains("p0001") && show.contains("obama"), "{show}");
}

#[test]
fn body_options_are_checked_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let photo = data().join("face_recognition/examples/obama.jpg");
    let subjects = dir.path().join("subjects");
    std::fs::create_dir_all(subjects.join("obama")).unwrap();
    std::fs::copy(&photo, subjects.join("obama/obama.jpg")).unwrap();
    ok(&["run", "enroll", "--root", s(&root), "--gallery", "faces", "--subjects-from-dirs", s(&subjects)]);
    let cases: [(&[&str], &str); 7] = [
        (&["--modalities", "body"], "has no body index (`faces.body`)"),
        (&["--modalities", "gait"], "modality `gait` needs `body` too"),
        (&["--modalities", "body,gait"], "gait is skipped: no gait model given"),
        (&["--modalities", "body,gait", "--gait-model", "gaitbase"], "needs its checkpoint: pass --gait-weights"),
        (&["--modalities", "body,gait", "--gait-model", "osnet-x1_0", "--gait-weights", "w.pt"], "not a gait model"),
        (&["--modalities", "body", "--gait-model", "gaitbase"], "need `gait` in --modalities"),
        (&["--modalities", "body", "--body-model", "osnet-x1_0"], "needs its checkpoint: pass --body-weights"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["run", "search", "--root", s(&root), "--gallery", "faces", "--threshold", "0.9"];
        args.extend_from_slice(extra);
        args.push(s(&photo));
        let out = osprey(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{extra:?}: {err}");
    }
}
