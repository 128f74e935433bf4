//! The seed's face models through the `osprey` binary, on the reference
//! fixture's random AdaFace IR-18 weights: the mechanics only (models
//! listed, checkpoints loaded as published, MTCNN detection and alignment,
//! the model recorded in templates and galleries, 512-d embeddings with
//! their norms, probes of another model refused, loader errors), never
//! accuracy: random weights recognise no one.

mod common;

use common::{data, ok, osprey, repo, s};
use std::path::PathBuf;

fn fixture_weights() -> PathBuf {
    let dir = std::env::var_os("OSPREY_SEED_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/fixtures/seed-models"));
    let w = dir.join("adaface_ir_18.weights.f16.safetensors");
    assert!(w.is_file(), "seed fixture not found at {} (set OSPREY_SEED_FIXTURES)", w.display());
    w
}

fn face_api(person: &str, n: u32) -> PathBuf {
    data().join(format!("face-api.js/examples/images/{person}/{person}{n}.png"))
}

fn fails(args: &[&str], code: i32, needle: &str) {
    let out = osprey(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "osprey {args:?} should fail with {code}:\n{stderr}");
    assert!(stderr.contains(needle), "osprey {args:?}: expected `{needle}` in:\n{stderr}");
}

fn sql(root: &str, query: &str) -> Vec<serde_json::Value> {
    let (out, _) = ok(&["sql", "--root", root, "--format", "json", query]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn models_list_names_every_face_model() {
    let (out, _) = ok(&["models", "list", "--format", "json"]);
    let models: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = models.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["dlib-resnet-v1", "adaface-ir18", "adaface-ir50", "adaface-ir101", "vit-kprpe-small", "vit-kprpe-base"]
    );
    assert_eq!(models[0]["dim"], 128);
    assert!((models[0]["threshold"].as_f64().unwrap() - 0.91).abs() < 1e-6, "{}", models[0]);
    for m in &models[1..] {
        assert_eq!(m["dim"], 512, "{m}");
        assert_eq!(m["input_size"], 112, "{m}");
        assert!(m["threshold"].is_null(), "seed models calibrate from the gallery: {m}");
        assert_eq!(m["needs_weights_file"], true);
    }
    let (table, _) = ok(&["models", "list"]);
    assert!(table.contains("ArcFace 5-point template") && table.contains("calibrate from the gallery"), "{table}");
}

#[test]
fn adaface_embeds_aligned_crops_and_detected_faces() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = fixture_weights();
    let w = s(&weights);

    // Aligned crops: no detection, one row per crop, the norm as quality.
    let out = tmp.path().join("aligned.parquet");
    let crops = [face_api("amy", 1), face_api("howard", 1)];
    ok(&[
        "embed",
        "--aligned",
        "--model",
        "adaface-ir18",
        "--weights",
        w,
        "--out",
        s(&out),
        s(&crops[0]),
        s(&crops[1]),
    ]);
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r.model, "adaface-ir18");
        assert_eq!(r.embedding.len(), 512);
        let n: f32 = r.embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4, "unit embeddings: {n}");
        assert!(r.quality > 1.0, "the feature norm is the quality: {}", r.quality);
    }
    assert_ne!(rows[0].embedding, rows[1].embedding);

    // Whole photos: MTCNN finds the faces, each is aligned and embedded.
    let out = tmp.path().join("detected.parquet");
    let group = data().join("face_recognition/examples/two_people.jpg");
    ok(&["embed", "--model", "adaface-ir18", "--weights", w, "--out", s(&out), s(&group)]);
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 2, "two people: {rows:?}");
    for r in &rows {
        assert_eq!(r.landmarks.len(), 10, "MTCNN's five points");
        assert!(r.bbox_w > 40.0, "{r:?}");
    }

    // Errors name what is wrong and exit 2 (bad request) or 1 (a corrupt file).
    fails(
        &["embed", "--aligned", "--model", "adaface-ir18", "--out", s(&out), s(&crops[0])],
        2,
        "needs its checkpoint",
    );
    fails(
        &["embed", "--model", "adaface-ir77", "--weights", w, "--out", s(&out), s(&crops[0])],
        2,
        "unknown face model",
    );
    let bytes = std::fs::read(&weights).unwrap();
    let cut = tmp.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    fails(
        &["embed", "--aligned", "--model", "adaface-ir18", "--weights", s(&cut), "--out", s(&out), s(&crops[0])],
        1,
        "cut.safetensors",
    );
    // The right file for another architecture: the first mis-shaped tensor is named.
    fails(
        &["embed", "--aligned", "--model", "adaface-ir50", "--weights", w, "--out", s(&out), s(&crops[0])],
        1,
        "the architecture expects",
    );
}

#[test]
fn galleries_record_their_model_and_refuse_other_probes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let root = s(&root);
    let weights = fixture_weights();
    let w = s(&weights);
    let subjects = tmp.path().join("subjects");
    for person in ["amy", "howard"] {
        std::fs::create_dir_all(subjects.join(person)).unwrap();
        for n in 1..=2 {
            std::fs::copy(face_api(person, n), subjects.join(person).join(format!("{person}{n}.png"))).unwrap();
        }
    }
    let model = ["--model", "adaface-ir18", "--weights", w];
    let mut args = vec!["run", "enroll", "--root", root, "--gallery", "ada", "--subjects-from-dirs", s(&subjects)];
    args.extend(model);
    ok(&args);

    let (show, _) = ok(&["gallery", "show", "--root", root, "--gallery", "ada", "--format", "json"]);
    let show: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(show["model"], "adaface-ir18", "{show}");
    assert_eq!(show["dim"], 512, "{show}");
    assert_eq!(show["templates"], 4, "{show}");

    let probe = face_api("amy", 3);
    let mut args = vec!["run", "search", "--root", root, "--gallery", "ada", "--job-id", "j1", s(&probe)];
    args.extend(model);
    ok(&args);
    let rows = sql(root, "SELECT model, count(*) AS n FROM templates WHERE job_id = 'j1' GROUP BY model");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["model"], "adaface-ir18");

    // A probe of another model is refused before any work, with the fix.
    fails(&["run", "search", "--root", root, "--gallery", "ada", s(&probe)], 2, "search it with --model adaface-ir18");
}

#[derive(Debug)]
struct Row {
    model: String,
    embedding: Vec<f32>,
    quality: f32,
    landmarks: Vec<f32>,
    bbox_w: f32,
}

/// The rows with an embedding of an `osprey embed` output, in input order.
fn read_rows(parquet: &std::path::Path) -> Vec<Row> {
    let bytes = std::fs::read(parquet).unwrap();
    let (_, batches) = osprey_store::decode_parquet(bytes.into(), s(parquet)).unwrap();
    batches
        .iter()
        .flat_map(|b| osprey_store::templates_from_batch(b).unwrap())
        .filter_map(|t| {
            Some(Row {
                model: t.model,
                embedding: t.embedding?,
                quality: t.quality.unwrap_or(0.0),
                landmarks: t.landmarks.unwrap_or_default(),
                bbox_w: t.bbox.map_or(0.0, |b| b.w),
            })
        })
        .collect()
}

const OPERATOR: &str = "operator-key-0123456789";

/// `osprey serve` killed on drop.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// A service job with the seed model: the job names the model and a
/// checkpoint under the root, the in-process worker loads it, the gallery
/// records it; a checkpoint outside the root and a search with another
/// model are refused at submission.
#[test]
fn service_jobs_load_the_checkpoint_they_name() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("models")).unwrap();
    std::fs::copy(fixture_weights(), root.join("models/ir18.safetensors")).unwrap();
    for person in ["amy", "howard"] {
        let d = root.join("media/subjects").join(person);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(face_api(person, 1), d.join(format!("{person}1.png"))).unwrap();
    }
    std::fs::create_dir_all(root.join("media/probes")).unwrap();
    std::fs::copy(face_api("amy", 3), root.join("media/probes/amy3.png")).unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let models = std::env::var_os("OSPREY_MODELS").map(PathBuf::from).unwrap_or_else(|| repo().join("models"));
    let log = std::fs::File::create(tmp.path().join("serve.log")).unwrap();
    let _server = Server(
        std::process::Command::new(env!("CARGO_BIN_EXE_osprey"))
            .args(["--threads", "2", "serve", "--root", s(&root), "--listen", &listen, "--workers", "1"])
            .env_remove("OSPREY_ROOT")
            .env("OSPREY_MODELS", models)
            .env("OSPREY_API_KEYS", format!("operator:{OPERATOR}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("osprey serve starts"),
    );
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(t0.elapsed().as_secs() < 60, "osprey serve did not come up");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let server = format!("http://{listen}");
    let remote = ["--server", server.as_str(), "--api-key", OPERATOR];
    let model = ["--model", "adaface-ir18", "--weights", "models/ir18.safetensors"];
    fn with<'a>(args: &[&'a str], remote: [&'a str; 4]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend(remote);
        all
    }
    let run = |args: &[&'static str]| with(args, remote);
    let served = || std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default();

    let mut enroll = run(&["job", "submit", "enroll", "--gallery", "ada", "--watch"]);
    enroll.extend(model);
    enroll.push("media/subjects/");
    let out = osprey(&enroll);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), served());
    let (show, _) = ok(&run(&["gallery", "show", "--gallery", "ada", "--format", "json"]));
    let show: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(show["model"], "adaface-ir18", "{show}");
    assert_eq!(show["templates"], 2, "{show}");

    let mut search = run(&["job", "submit", "search", "--gallery", "ada", "--watch", "--format", "json"]);
    search.extend(model);
    search.push("media/probes/");
    let out = osprey(&search);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), served());

    fails(&run(&["job", "submit", "search", "--gallery", "ada", "media/probes/"]), 2, "holds `adaface-ir18` templates");
    let mut outside = run(&["job", "submit", "search", "--gallery", "ada", "--model", "adaface-ir18"]);
    outside.extend(["--weights", "/etc/passwd", "media/probes/"]);
    fails(&outside, 2, "outside the root");
}
