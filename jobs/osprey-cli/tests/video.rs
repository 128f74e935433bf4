//! Video end to end through the binary, on face_recognition's Hamilton clip:
//! `osprey run enroll` from a folder per subject, then `osprey run search`
//! over the clip (plus a photo and a corrupt video), checked against what
//! face_recognition's own video example finds in the same frames
//! (`tests/data/hamilton_reference.json`, made by
//! `infra/scripts/hamilton_reference.py` with dlib-bin 20.0.1).

mod common;

use std::path::PathBuf;

use common::{data, ok, repo, s};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    frames: Vec<RefFrame>,
}

#[derive(Deserialize)]
struct RefFrame {
    t_ms: i64,
    faces: Vec<RefFace>,
}

#[derive(Deserialize)]
struct RefFace {
    name: Option<String>,
    /// To lin-manuel-miranda and alex-lacamoire.
    distances: [f64; 2],
}

#[derive(Deserialize, Debug)]
struct Appearance {
    media: String,
    t_start_s: Option<f64>,
    t_end_s: Option<f64>,
    decision: String,
    subject: String,
}

#[test]
fn hamilton_clip_who_appears_when() {
    let examples = data().join("face_recognition/examples");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // One folder per subject, linking to the photos in ../shared/data.
    let subjects = dir.path().join("subjects");
    for person in ["lin-manuel-miranda", "alex-lacamoire"] {
        std::fs::create_dir_all(subjects.join(person)).unwrap();
        std::os::unix::fs::symlink(examples.join(format!("{person}.png")), subjects.join(person).join("photo.png"))
            .unwrap();
    }
    let (_, err) =
        ok(&["run", "enroll", "--root", s(&root), "--gallery", "hamilton", "--subjects-from-dirs", s(&subjects)]);
    assert!(err.contains("enrolled 2 templates of 2 subjects"), "{err}");
    // Enrolling the same folders again adds nothing.
    let (_, err) =
        ok(&["run", "enroll", "--root", s(&root), "--gallery", "hamilton", "--subjects-from-dirs", s(&subjects)]);
    assert!(err.contains("already enrolled"), "{err}");

    let corrupt = dir.path().join("corrupt.mp4");
    let clip = std::fs::read(examples.join("short_hamilton_clip.mp4")).unwrap();
    std::fs::write(&corrupt, &clip[..clip.len() / 3]).unwrap();
    let (out, err) = ok(&[
        "run",
        "search",
        "--root",
        s(&root),
        "--gallery",
        "hamilton",
        "--job-id",
        "hamilton-1",
        "--format",
        "json",
        // A glob (expanded by Osprey, not the shell) and a plain path.
        &format!("{}/short_hamilton_*.mp4", s(&examples)),
        s(&examples.join("biden.jpg")),
        s(&corrupt),
    ]);
    assert!(err.contains("operating threshold 0.9100"), "the default operating point is printed: {err}");
    assert!(err.contains("failed") && err.contains("corrupt.mp4"), "{err}");
    let found: Vec<Appearance> = serde_json::from_str(&out).unwrap();
    for a in &found {
        eprintln!("{a:?}");
    }
    let tracks: Vec<&Appearance> = found.iter().filter(|a| a.media.ends_with(".mp4")).collect();
    assert!(tracks.len() >= 3, "{tracks:?}");
    let biden: Vec<&Appearance> = found.iter().filter(|a| a.media.ends_with("biden.jpg")).collect();
    assert_eq!(biden.len(), 1);
    assert_eq!(biden[0].decision, "unknown", "Biden is not enrolled");

    let reference: Reference = serde_json::from_str(
        &std::fs::read_to_string(repo().join("jobs/osprey-cli/tests/data/hamilton_reference.json")).unwrap(),
    )
    .unwrap();
    // Tracks are sampled at 5 fps: a frame belongs to a track within one sampling step of its ends.
    let covers = |a: &Appearance, t_ms: i64| {
        let t = t_ms as f64 / 1000.0;
        a.t_start_s.unwrap() - 0.21 <= t && t <= a.t_end_s.unwrap() + 0.21
    };
    let named = |f: &RefFrame, who: &str| f.faces.iter().any(|x| x.name.as_deref() == Some(who));
    // Every frame face_recognition labels Lin-Manuel Miranda lies in a track matched to him.
    let mut checked = 0;
    for f in reference.frames.iter().filter(|f| named(f, "lin-manuel-miranda")) {
        let hit = tracks.iter().any(|a| a.subject == "lin-manuel-miranda" && covers(a, f.t_ms));
        assert!(hit, "frame at {} ms is Lin-Manuel Miranda in the reference; no matching track covers it", f.t_ms);
        checked += 1;
    }
    assert_eq!(checked, 78);
    for a in &tracks {
        let in_track: Vec<&RefFrame> = reference.frames.iter().filter(|f| covers(a, f.t_ms)).collect();
        // A track matched to Alex Lacamoire never spans frames the reference gives to Lin-Manuel Miranda.
        if a.subject == "alex-lacamoire" {
            assert!(!in_track.iter().any(|f| named(f, "lin-manuel-miranda")), "{a:?}");
        }
        // Tracks of the people the reference finds far from both (distance > 0.75) are unknown.
        let strangers = in_track.iter().any(|f| f.faces.iter().any(|x| x.distances.iter().all(|d| *d > 0.75)));
        if strangers && !in_track.iter().any(|f| named(f, "lin-manuel-miranda")) {
            assert_eq!(a.decision, "unknown", "{a:?}");
        }
    }

    // Who appears when, by SQL over the stored results and templates.
    let (out, _) = ok(&[
        "sql",
        "--root",
        s(&root),
        "--format",
        "csv",
        "SELECT r.subject_id, min(t.t_start_ms) AS first_ms, count(*) AS tracks, max(t.thumbnail_uri) AS thumb \
         FROM results r JOIN templates t ON r.probe_template_id = t.template_id \
         WHERE r.job_id = 'hamilton-1' AND r.rank = 1 AND r.decision = 'match' GROUP BY 1 ORDER BY 1",
    ]);
    let lmm = out.lines().find(|l| l.starts_with("lin-manuel-miranda,")).unwrap_or_else(|| panic!("{out}"));
    let thumb = lmm.rsplit(',').next().unwrap();
    let thumb = PathBuf::from(thumb.strip_prefix("file://").unwrap());
    assert_eq!(&std::fs::read(&thumb).unwrap()[..2], &[0xff, 0xd8], "thumbnail is a JPEG");
    // The corrupt video is a failure row with its error, visible in SQL.
    let (out, _) = ok(&[
        "sql",
        "--root",
        s(&root),
        "--format",
        "csv",
        "SELECT error FROM templates WHERE job_id = 'hamilton-1' AND error IS NOT NULL",
    ]);
    assert!(out.contains("corrupt.mp4") && out.contains("cannot open as video"), "{out}");

    // Every template has its observations, one per frame of its track.
    let video = examples.join("short_hamilton_clip.mp4");
    let info = osprey_media::video::VideoReader::open(&video, "hamilton").unwrap().info().clone();
    check_observations(&root, "hamilton-1", &info);

    // Erasing a subject removes their enrolled template, its thumbnail,
    // its observations and every result naming them.
    let sql_csv = |query: &str| ok(&["sql", "--root", s(&root), "--format", "csv", query]).0;
    let erased_ids = sql_csv("SELECT template_id FROM templates WHERE subject_id = 'alex-lacamoire'");
    let erased_ids: Vec<&str> = erased_ids.lines().skip(1).collect();
    assert_eq!(erased_ids.len(), 1, "{erased_ids:?}");
    let observations_of_erased = || {
        let ids = erased_ids.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(", ");
        let out = sql_csv(&format!("SELECT count(*) FROM observations WHERE template_id IN ({ids})"));
        out.lines().nth(1).unwrap().parse::<usize>().unwrap()
    };
    assert_eq!(observations_of_erased(), 1, "the enrolment photo's detection");
    let observations_before = sql_csv("SELECT count(*) FROM observations");
    let (out, _) = ok(&[
        "gallery",
        "delete-subject",
        "--root",
        s(&root),
        "--gallery",
        "hamilton",
        "--subject",
        "alex-lacamoire",
        "--format",
        "json",
    ]);
    let erasure: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(erasure["index_templates"], 1, "{out}");
    assert_eq!(erasure["thumbnails"], 1, "{out}");
    assert_eq!(erasure["observation_rows"], 1, "{out}");
    assert_eq!(observations_of_erased(), 0, "the erased template's observations are gone");
    let n = |out: &str| out.lines().nth(1).unwrap().parse::<usize>().unwrap();
    assert_eq!(n(&sql_csv("SELECT count(*) FROM observations")), n(&observations_before) - 1, "only theirs");
    let (out, _) = ok(&[
        "sql",
        "--root",
        s(&root),
        "--format",
        "csv",
        "SELECT (SELECT count(*) FROM templates WHERE subject_id = 'alex-lacamoire') + \
         (SELECT count(*) FROM results WHERE subject_id = 'alex-lacamoire') AS n",
    ]);
    assert_eq!(out.lines().nth(1), Some("0"), "{out}");
}

/// The observations of job `job_id`'s templates, against the templates and
/// the clip (`info`): each template with an embedding has one observation
/// per aggregated frame, frames strictly rising from `frame_start` to
/// `frame_end`, times matching the frame numbers at the clip's frame rate,
/// boxes on the frame, 5 landmarks each; a photo's single detection is at
/// frame 0, 0 ms. Faces are their own person tracks.
fn check_observations(root: &std::path::Path, job_id: &str, info: &osprey_media::video::VideoInfo) {
    let (out, _) = ok(&[
        "sql",
        "--root",
        s(root),
        "--format",
        "json",
        &format!(
            "SELECT t.template_id, t.person_track_id, t.media_uri, t.num_frames, t.frame_start, t.frame_end, \
             t.t_start_ms, t.t_end_ms, o.modality, o.frame, o.t_ms, o.bbox.x AS x, o.bbox.y AS y, o.bbox.w AS w, \
             o.bbox.h AS h, array_length(o.keypoints) AS points, o.quality \
             FROM templates t LEFT JOIN observations o ON o.template_id = t.template_id \
             WHERE t.job_id = '{job_id}' AND t.error IS NULL ORDER BY t.template_id, o.frame"
        ),
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let mut by_template: std::collections::BTreeMap<String, Vec<&serde_json::Value>> = Default::default();
    for r in &rows {
        by_template.entry(r["template_id"].as_str().unwrap().to_string()).or_default().push(r);
    }
    let frame_ms = 1000.0 / info.fps;
    let (mut tracks, mut photos) = (0, 0);
    for (id, obs) in &by_template {
        let t = obs[0];
        assert_eq!(t["person_track_id"].as_str(), Some(id.as_str()), "a face track is its own person track: {t}");
        assert!(obs.iter().all(|o| o["frame"].is_i64()), "template {id} has no observations: {t}");
        assert_eq!(obs.len() as i64, t["num_frames"].as_i64().unwrap(), "one observation per frame of {id}");
        for o in obs {
            assert_eq!(o["modality"], "face", "{o}");
            assert_eq!(o["points"], 5, "the 5 landmarks: {o}");
            assert!(o["quality"].as_f64().is_some_and(|q| q > 0.0), "{o}");
            assert!(o["w"].as_f64().unwrap() > 0.0 && o["h"].as_f64().unwrap() > 0.0, "{o}");
        }
        if !t["media_uri"].as_str().unwrap().ends_with(".mp4") {
            photos += 1;
            assert_eq!(obs.len(), 1, "{id}");
            assert_eq!((obs[0]["frame"].as_i64(), obs[0]["t_ms"].as_i64()), (Some(0), Some(0)), "{t}");
            continue;
        }
        tracks += 1;
        let frames: Vec<i64> = obs.iter().map(|o| o["frame"].as_i64().unwrap()).collect();
        assert!(frames.windows(2).all(|w| w[0] < w[1]), "frames of {id} rise strictly: {frames:?}");
        assert_eq!(Some(frames[0]), t["frame_start"].as_i64(), "{t}");
        assert_eq!(Some(*frames.last().unwrap()), t["frame_end"].as_i64(), "{t}");
        assert_eq!(obs[0]["t_ms"], t["t_start_ms"], "{t}");
        assert_eq!(obs.last().unwrap()["t_ms"], t["t_end_ms"], "{t}");
        for o in obs {
            let (frame, t_ms) = (o["frame"].as_i64().unwrap(), o["t_ms"].as_i64().unwrap());
            assert!(
                (t_ms as f64 - frame as f64 * frame_ms).abs() <= frame_ms / 2.0 + 1.0,
                "frame {frame} at {t_ms} ms: {o}"
            );
            // Boxes lie on the frame: dlib's detector window may reach a few pixels past an edge.
            let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| o[k].as_f64().unwrap());
            let slack = 0.1 * h;
            assert!(
                x >= -slack && y >= -slack && x + w <= info.width as f64 + slack && y + h <= info.height as f64 + slack,
                "box {x},{y} {w}x{h} outside the {}x{} frame: {o}",
                info.width,
                info.height
            );
        }
    }
    assert!(tracks >= 3 && photos == 1, "{tracks} tracks, {photos} photos");
}

#[path = "../../../libs/osprey-store/tests/support/s3_server.rs"]
mod s3_server;

/// The same jobs with the media and the root on an S3-compatible server
/// (s3s-fs over loopback): subjects listed from a URL prefix, videos matched
/// by a glob on the bucket, copied to a temporary file for FFmpeg and the
/// file removed afterwards.
#[test]
fn enrol_and_search_video_on_s3() {
    let examples = data().join("face_recognition/examples");
    let server = s3_server::start_s3("media");
    let bucket = server.dir.path().join("media");
    let put = |key: &str, from: &std::path::Path| {
        let to = bucket.join(key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    };
    put("subjects/lin-manuel-miranda/photo.png", &examples.join("lin-manuel-miranda.png"));
    put("subjects/alex-lacamoire/photo.png", &examples.join("alex-lacamoire.png"));
    put("clips/hamilton.mp4", &examples.join("short_hamilton_clip.mp4"));
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let models = std::env::var_os("OSPREY_MODELS").map(PathBuf::from).unwrap_or_else(|| repo().join("models"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_osprey"))
            .args(args)
            .env_remove("OSPREY_ROOT")
            .env("OSPREY_MODELS", models)
            .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", server.port))
            .env("AWS_ACCESS_KEY_ID", "osprey")
            .env("AWS_SECRET_ACCESS_KEY", "osprey-secret")
            .env("TMPDIR", tmp.path())
            .output()
            .expect("osprey runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "osprey {args:?} failed:\n{stderr}");
        (String::from_utf8(out.stdout).unwrap(), stderr)
    };
    let root = "s3://media/osprey";
    let (_, err) =
        run(&["run", "enroll", "--root", root, "--gallery", "g", "--subjects-from-dirs", "s3://media/subjects/"]);
    assert!(err.contains("enrolled 2 templates of 2 subjects"), "{err}");
    let (out, _) = run(&[
        "run",
        "search",
        "--root",
        root,
        "--gallery",
        "g",
        "--sample-fps",
        "1",
        "--format",
        "csv",
        "s3://media/clips/*.mp4",
    ]);
    assert!(out.lines().any(|l| l.contains("hamilton.mp4") && l.contains(",match,lin-manuel-miranda,")), "{out}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "the temporary copy is removed");
    let (out, _) = run(&[
        "sql",
        "--root",
        root,
        "--format",
        "csv",
        "SELECT count(*) FROM templates WHERE media_uri = 's3://media/clips/hamilton.mp4' AND thumbnail_uri LIKE 's3://media/osprey/thumbnails/%'",
    ]);
    let n: usize = out.lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(n >= 2, "{out}");
    assert!(bucket.join("osprey/thumbnails").read_dir().unwrap().count() >= n + 2);
}
