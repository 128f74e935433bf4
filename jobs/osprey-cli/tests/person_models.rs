//! The body and gait models through `osprey embed`, on the reference
//! fixtures' random weights (full-size OSNet x1.0 and GaitBase, made with
//! the authors' code): the mechanics only (checkpoints loaded as published,
//! crops resized and sequences pretreated, one template per crop or
//! sequence with its modality and model, unit embeddings, clear errors for
//! unusable input), never accuracy: random weights recognise no one. The
//! ports' exactness is tested in osprey-models against the fixtures.

mod common;

use common::{data, ok, osprey, s};
use std::path::PathBuf;

use common::seed_fixture as fixture;

#[derive(Debug)]
struct Row {
    modality: String,
    model: String,
    subject: Option<String>,
    embedding: Option<Vec<f32>>,
    frames: Option<i32>,
    error: Option<String>,
}

fn read_rows(parquet: &std::path::Path) -> Vec<Row> {
    let bytes = std::fs::read(parquet).unwrap();
    let (_, batches) = osprey_store::decode_parquet(bytes.into(), s(parquet)).unwrap();
    batches
        .iter()
        .flat_map(|b| osprey_store::templates_from_batch(b).unwrap())
        .map(|t| Row {
            modality: t.modality.map(|m| m.as_str().to_string()).unwrap_or_default(),
            model: t.model,
            subject: t.subject_id,
            embedding: t.embedding,
            frames: t.num_frames,
            error: t.error,
        })
        .collect()
}

fn unit(e: &[f32]) -> bool {
    (e.iter().map(|v| v * v).sum::<f32>().sqrt() - 1.0).abs() < 1e-4
}

#[test]
fn osnet_embeds_person_crops() {
    let tmp = tempfile::tempdir().unwrap();
    let crops = data().join("person_search_demo/query");
    let broken = tmp.path().join("broken.jpg");
    std::fs::write(&broken, b"not a jpeg").unwrap();
    let out = tmp.path().join("bodies.parquet");
    let weights = fixture("osnet_x1_0.weights.f16.safetensors");
    ok(&[
        "embed",
        "--modality",
        "body",
        "--model",
        "osnet-x1_0",
        "--weights",
        s(&weights),
        "--out",
        s(&out),
        "--crops",
        s(&crops),
        s(&broken),
    ]);
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let good: Vec<&Row> = rows.iter().filter(|r| r.embedding.is_some()).collect();
    assert_eq!(good.len(), 2, "{rows:?}");
    for r in &good {
        assert_eq!((r.modality.as_str(), r.model.as_str()), ("body", "osnet-x1_0"));
        let e = r.embedding.as_ref().unwrap();
        assert_eq!(e.len(), 512);
        assert!(unit(e));
    }
    assert_ne!(good[0].embedding, good[1].embedding);
    let bad = rows.iter().find(|r| r.embedding.is_none()).unwrap();
    assert!(bad.error.as_deref().unwrap_or("").contains("broken.jpg"), "{bad:?}");

    // The AIN variant's weights do not fit osnet-x1_0: refused, naming a tensor.
    let ain = fixture("osnet_ain_x1_0.weights.f16.safetensors");
    let out = osprey(&["embed", "--model", "osnet-x1_0", "--weights", s(&ain), "--out", s(&out), s(&crops)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("tensor `"), "{err}");
}

#[test]
fn sapiensid_embeds_person_crops_with_their_keypoints() {
    let tmp = tempfile::tempdir().unwrap();
    let crops = data().join("person_search_demo/query");
    let out = tmp.path().join("bodies.parquet");
    let weights = fixture("sapiensid_tiny.weights.safetensors");
    ok(&[
        "embed",
        "--modality",
        "body",
        "--model",
        "sapiensid",
        "--weights",
        s(&weights),
        "--out",
        s(&out),
        "--crops",
        s(&crops),
    ]);
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!((r.modality.as_str(), r.model.as_str()), ("body", "sapiensid"));
        let e = r.embedding.as_ref().unwrap();
        // The fixture's configuration, read from the checkpoint's shapes.
        assert_eq!(e.len(), 256);
        assert!(unit(e));
    }
    assert_ne!(rows[0].embedding, rows[1].embedding);
}

/// BigGait reads folders of RGB person crops: here every fifth frame of a
/// walker's clip, and a folder too short for a gait cycle.
#[test]
fn biggait_embeds_rgb_sequences() {
    let tmp = tempfile::tempdir().unwrap();
    let walk = data().join("All-in-One-Gait/history_Inputvideos/demo3.mp4");
    let seqs = tmp.path().join("seqs");
    let long = seqs.join("walk");
    std::fs::create_dir_all(&long).unwrap();
    let status = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-i", s(&walk), "-vf", "select=not(mod(n\\,5)),scale=180:320", "-vsync", "vfr"])
        .arg(long.join("%03d.png"))
        .status()
        .unwrap();
    assert!(status.success());
    let short = seqs.join("short");
    std::fs::create_dir_all(&short).unwrap();
    for i in 1..=5 {
        std::fs::copy(long.join(format!("{i:03}.png")), short.join(format!("{i:03}.png"))).unwrap();
    }
    let out = tmp.path().join("gait.parquet");
    let weights = fixture("biggait_tiny.weights.safetensors");
    ok(&[
        "embed",
        "--modality",
        "gait",
        "--model",
        "biggait",
        "--weights",
        s(&weights),
        "--out",
        s(&out),
        "--frames",
        s(&seqs),
    ]);
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let good = rows.iter().find(|r| r.embedding.is_some()).unwrap();
    assert_eq!((good.modality.as_str(), good.model.as_str()), ("gait", "biggait"));
    assert_eq!(good.embedding.as_ref().unwrap().len(), 2048);
    assert!(unit(good.embedding.as_ref().unwrap()));
    assert_eq!(good.frames, Some(36), "{good:?}");
    let bad = rows.iter().find(|r| r.embedding.is_none()).unwrap();
    assert!(bad.error.as_deref().unwrap_or("").contains("at least 25"), "{bad:?}");

    // Silhouettes are GaitBase's input, not BigGait's.
    let out =
        osprey(&["embed", "--model", "biggait", "--weights", s(&weights), "--out", s(&out), "--silhouettes", s(&seqs)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--frames"), "{err}");
}

#[test]
fn gaitbase_embeds_silhouette_sequences() {
    let tmp = tempfile::tempdir().unwrap();
    let sils = data().join("All-in-One-Gait/OpenGait/demo/output/GaitSilhouette");
    // Two gallery walkers (59 frames each) and a sequence too short for a
    // gait cycle (its first 10 frames).
    let seqs = tmp.path().join("seqs");
    for person in ["001", "002"] {
        let d = seqs.join(person).join("walk");
        std::fs::create_dir_all(&d).unwrap();
        for f in std::fs::read_dir(sils.join("gallery").join(person).join("undefined")).unwrap() {
            let f = f.unwrap().path();
            std::os::unix::fs::symlink(&f, d.join(f.file_name().unwrap())).unwrap();
        }
    }
    let short = seqs.join("003/walk");
    std::fs::create_dir_all(&short).unwrap();
    let mut frames: Vec<PathBuf> =
        std::fs::read_dir(sils.join("gallery/003/undefined")).unwrap().map(|f| f.unwrap().path()).collect();
    frames.sort();
    for f in &frames[..10] {
        std::os::unix::fs::symlink(f, short.join(f.file_name().unwrap())).unwrap();
    }
    let out = tmp.path().join("gait.parquet");
    let weights = fixture("gaitbase.weights.f16.safetensors");
    ok(&[
        "embed",
        "--modality",
        "gait",
        "--model",
        "gaitbase",
        "--weights",
        s(&weights),
        "--subject-from-parent",
        "--out",
        s(&out),
        "--silhouettes",
        s(&seqs),
    ]);
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (r, subject) in rows.iter().zip(["001", "002", "003"]) {
        assert_eq!((r.modality.as_str(), r.model.as_str()), ("gait", "gaitbase"), "{r:?}");
        assert_eq!(r.subject.as_deref(), Some(subject), "{r:?}");
    }
    for r in &rows[..2] {
        let e = r.embedding.as_ref().expect("a template per long sequence");
        assert_eq!(e.len(), 4096);
        assert!(unit(e));
        assert!(r.frames.unwrap() >= 25, "{r:?}");
    }
    assert!(rows[2].embedding.is_none());
    assert!(rows[2].error.as_deref().unwrap().contains("at least 25"), "{:?}", rows[2]);

    // A single file is not a sequence.
    let one = frames[0].to_str().unwrap();
    let out = osprey(&["embed", "--model", "gaitbase", "--weights", s(&weights), "--out", s(&out), one]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("folders of silhouettes"));

    // A gait model reads silhouettes, not crops; a body model not silhouettes.
    let out = osprey(&[
        "embed",
        "--modality",
        "gait",
        "--model",
        "gaitbase",
        "--weights",
        s(&weights),
        "--crops",
        s(&seqs),
        "--out",
        "x.parquet",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--silhouettes"));
    let out = osprey(&[
        "embed",
        "--modality",
        "body",
        "--model",
        "gaitbase",
        "--weights",
        s(&weights),
        "--crops",
        s(&seqs),
        "--out",
        "x.parquet",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a gait model"));
}

/// `--modality body` without a model embeds crops with the out-of-the-box
/// appearance model (its files come from fetch-models.sh).
#[test]
fn body_crops_default_to_the_appearance_model() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bodies.parquet");
    let crops = data().join("person_search_demo/query");
    ok(&["embed", "--modality", "body", "--out", s(&out), "--crops", s(&crops)]);
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!((r.modality.as_str(), r.model.as_str()), ("body", "dinov2-vits14-imgfocus-0.1.1"));
        assert!(unit(r.embedding.as_ref().unwrap()));
    }
}

/// Gait templates from body tracks through `osprey run` (fixture weights:
/// the mechanics): a walker filmed by a still camera is enrolled with
/// `--modalities body,gait`, which fills `<gallery>.gait` with GaitBase
/// templates (from the track's silhouettes) linked to the body tracks, and a
/// search of the same walk finds the walker's gait template (the same
/// silhouettes give the same template, whatever the weights).
#[test]
fn gait_templates_come_from_body_tracks_in_osprey_run() {
    gait_from_body_tracks("gaitbase", "gaitbase.weights.f16.safetensors", 4096);
}

/// The same with BigGait, which reads the track's RGB person crops (the
/// tiny fixture: 128 × 16 wide).
#[test]
fn biggait_templates_come_from_body_tracks_in_osprey_run() {
    gait_from_body_tracks("biggait", "biggait_tiny.weights.safetensors", 2048);
}

fn gait_from_body_tracks(model: &str, weights: &str, dim: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let walker = tmp.path().join("subjects/walker");
    std::fs::create_dir_all(&walker).unwrap();
    let walk = data().join("All-in-One-Gait/history_Inputvideos/demo3.mp4");
    std::os::unix::fs::symlink(&walk, walker.join("walk.mp4")).unwrap();
    let weights = fixture(weights);
    let gait = ["--modalities", "body,gait", "--gait-model", model, "--gait-weights", s(&weights)];
    let mut enroll = vec!["run", "enroll", "--root", s(&root), "--gallery", "g", "--sample-fps", "every:2"];
    enroll.extend_from_slice(&gait);
    let subjects = tmp.path().join("subjects");
    enroll.extend_from_slice(&["--subjects-from-dirs", s(&subjects)]);
    ok(&enroll);
    let (out, _) = ok(&["gallery", "show", "--root", s(&root), "--gallery", "g.gait", "--format", "json"]);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((shown["model"].as_str(), shown["dim"].as_u64()), (Some(model), Some(dim)), "{shown}");

    let mut search = vec!["run", "search", "--root", s(&root), "--gallery", "g", "--sample-fps", "every:2"];
    search.extend_from_slice(&gait);
    search.extend_from_slice(&["--threshold", "0.5", "--format", "json", "--job-id", "walk", s(&walk)]);
    let (out, _) = ok(&search);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let gait_rows: Vec<&serde_json::Value> = rows.iter().filter(|r| r["modality"] == "gait").collect();
    assert!(
        gait_rows.iter().any(|r| r["best_candidate"] == "walker"
            && r["decision"] == "match"
            && r["score"].as_f64().unwrap() > 0.999),
        "{rows:?}"
    );
    // Fused persons: the walker's body track with its gait template, each
    // modality's raw score and weight given, decided from both.
    let fused: Vec<&serde_json::Value> = rows.iter().filter(|r| r["modality"] == "fused").collect();
    assert!(
        fused.iter().any(|r| r["best_candidate"] == "walker"
            && r["decision"] == "match"
            && r["fusion"] == "quality"
            && r["body_score"].is_number()
            && r["gait_score"].as_f64().unwrap_or(0.0) > 0.999
            && r["face_score"].is_null()
            && (r["body_weight"].as_f64().unwrap() + r["gait_weight"].as_f64().unwrap() - 1.0).abs() < 1e-5),
        "{fused:?}"
    );
    let (out, _) = ok(&[
        "sql",
        "--root",
        s(&root),
        "--format",
        "json",
        "SELECT count(*) AS n FROM results r JOIN templates b ON b.template_id = r.person_track_id \
         WHERE r.job_id = 'walk' AND r.fusion = 'quality' AND r.rank = 1 AND b.modality = 'body'",
    ]);
    let n: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(n[0]["n"].as_i64(), Some(fused.len() as i64), "{out}");

    // Every probe gait row is a template or says why not, and belongs to a body track.
    let (out, _) = ok(&[
        "sql",
        "--root",
        s(&root),
        "--format",
        "json",
        "SELECT g.error IS NULL AS ok, g.embedding IS NULL AS empty, b.modality AS of FROM templates g \
         LEFT JOIN templates b ON b.template_id = g.person_track_id WHERE g.modality = 'gait' AND g.job_id = 'walk'",
    ]);
    let linked: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(!linked.is_empty());
    for r in &linked {
        assert_eq!(r["of"], "body", "{r}");
        assert_ne!(r["ok"], r["empty"], "an embedding or an error: {r}");
    }
}

/// The transformer body models in `osprey run` (fixture weights: the
/// mechanics): a person crop enrolled with `--body-model` fills
/// `<gallery>.body` with that model's templates, of the width its
/// checkpoint's shapes give, and a search of the same crop finds it.
#[test]
fn transformer_body_models_enrol_and_search_in_osprey_run() {
    for (model, weights, dim) in [
        ("clip3dreid", "clip3dreid_tiny.weights.f16.safetensors", 512),
        ("sapiensid", "sapiensid_tiny.weights.safetensors", 256),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let crop = data().join("person_search_demo/query/0001_c1s1_001051_00.jpg");
        let subject = tmp.path().join("subjects/p0001");
        std::fs::create_dir_all(&subject).unwrap();
        std::fs::copy(&crop, subject.join("crop.jpg")).unwrap();
        let weights = fixture(weights);
        let body = ["--modalities", "body", "--body-model", model, "--body-weights", s(&weights)];
        let subjects = tmp.path().join("subjects");
        let mut enroll =
            vec!["run", "enroll", "--root", s(&root), "--gallery", "g", "--subjects-from-dirs", s(&subjects)];
        enroll.extend_from_slice(&body);
        ok(&enroll);
        let (out, _) = ok(&["gallery", "show", "--root", s(&root), "--gallery", "g.body", "--format", "json"]);
        let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!((shown["model"].as_str(), shown["dim"].as_u64()), (Some(model), Some(dim)), "{shown}");

        let mut search = vec!["run", "search", "--root", s(&root), "--gallery", "g", "--threshold", "0.5"];
        search.extend_from_slice(&body);
        search.extend_from_slice(&["--format", "json", s(&crop)]);
        let (out, _) = ok(&search);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert!(
            rows.iter().any(|r| r["modality"] == "body"
                && r["best_candidate"] == "p0001"
                && r["score"].as_f64().unwrap() > 0.999),
            "{model}: {rows:?}"
        );
    }
}
