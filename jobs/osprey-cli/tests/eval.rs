//! `osprey eval` on real photographs, checked against independent
//! computations: `search` scores an `osprey run search` job of face-api.js
//! cast photos against a truth CSV (the numbers are recomputed here from the
//! job's rows read back with `osprey sql`), and `pairs` measures verification
//! on deepface's labelled pairs (recomputed in numpy from the embeddings, and
//! run through infra/scripts/pairs_accuracy.py).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{data, ok, osprey, repo, s};
use serde_json::Value;

fn face_api(person: &str, n: u32) -> PathBuf {
    data().join(format!("face-api.js/examples/images/{person}/{person}{n}.png"))
}

fn file_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The `src` of every `<img>` in `html`.
fn img_sources(html: &str) -> Vec<String> {
    html.split("<img")
        .skip(1)
        .map(|tag| tag.split("src=\"").nth(1).unwrap().split('"').next().unwrap().to_string())
        .collect()
}

/// How many `<img>` the gallery `<div id="{id}">` holds (up to the next heading).
fn gallery_images(html: &str, id: &str) -> usize {
    let start = html.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no gallery {id}"));
    let rest = &html[start..];
    rest[..rest.find("<h2").unwrap_or(rest.len())].matches("<img").count()
}

/// Renders `html` in headless Chromium (setup.sh installs it) and checks
/// that every image decoded (each `<img>` sets `data-loaded` on load).
fn check_images_load_in_chromium(html: &Path, expected: usize) {
    let which = Command::new("which").arg("chromium").output().expect("which runs");
    assert!(
        which.status.success(),
        "chromium is not installed: run infra/scripts/setup.sh (it installs Debian's chromium)"
    );
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"])
        .arg(format!("--user-data-dir={}", s(profile.path())))
        .arg("--dump-dom")
        .arg(format!("file://{}", s(&html.canonicalize().unwrap())))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let tags: Vec<&str> = dom.split("<img").skip(1).map(|t| t.split('>').next().unwrap()).collect();
    assert_eq!(tags.len(), expected, "{dom}");
    for t in tags {
        assert!(t.contains("data-loaded=\"true\""), "image did not load: {t}");
    }
}

#[test]
fn eval_search_scores_a_job_against_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let root = s(&root);

    // Enrol four people from three photos each.
    let subjects = tmp.path().join("subjects");
    for person in ["amy", "bernadette", "howard", "leonard"] {
        std::fs::create_dir_all(subjects.join(person)).unwrap();
        for n in 1..=3 {
            std::fs::copy(face_api(person, n), subjects.join(person).join(format!("{person}{n}.png"))).unwrap();
        }
    }
    ok(&["run", "enroll", "--root", root, "--gallery", "people", "--subjects-from-dirs", s(&subjects)]);

    // Probes: held-out photos of enrolled people, a heavily blurred one, one
    // too small for a face to be found, and people not enrolled.
    let amy = image::open(face_api("amy", 5)).unwrap();
    let blurred = tmp.path().join("amy_blurred.png");
    amy.blur(6.0).save(&blurred).unwrap();
    let tiny = tmp.path().join("amy_tiny.png");
    amy.resize_exact(24, 24, image::imageops::FilterType::Triangle).save(&tiny).unwrap();
    let mut probes = vec![
        face_api("amy", 4),
        face_api("amy", 5),
        face_api("bernadette", 4),
        face_api("howard", 4),
        face_api("leonard", 5),
        blurred.clone(),
        tiny.clone(),
    ];
    probes.extend(["penny", "raj", "sheldon", "stuart"].map(|p| face_api(p, 1)));
    let mut args = vec!["run", "search", "--root", root, "--gallery", "people", "--job-id", "eval-1"];
    // A threshold that lets some strangers through, so the report shows false matches.
    args.extend(["--threshold", "0.9"]);
    args.extend(probes.iter().map(|p| s(p)));
    ok(&args);

    // Truth by each matching rule: whole path, path suffix, file name.
    let truth = tmp.path().join("truth.csv");
    let amy4 = face_api("amy", 4);
    std::fs::write(
        &truth,
        format!(
            "media,subject\n{},amy\namy/amy5.png,amy\nbernadette4.png,bernadette\nhoward4.png,howard\n\
             leonard5.png,leonard\namy_blurred.png,amy\namy_tiny.png,amy\npenny1.png,unknown\nraj1.png,unknown\n\
             sheldon/sheldon1.png,unknown\nstuart1.png,UNKNOWN\nnot_searched.png,raj\n",
            s(&amy4)
        ),
    )
    .unwrap();
    let out = tmp.path().join("report");
    let (summary, log) =
        ok(&["eval", "search", "--root", root, "--job", "eval-1", "--truth", s(&truth), "--out", s(&out)]);
    eprintln!("{summary}{log}");
    assert!(summary.contains("rank-1 rate") && summary.contains("report.html"), "{summary}");
    assert!(log.contains("1 of 12 truth rows name no media"), "{log}");
    let m = read_json(&out.join("metrics.json"));

    // The job's rows, read back independently, and scored here.
    let (rows, _) = ok(&[
        "sql",
        "--root",
        root,
        "--format",
        "json",
        "SELECT t.media_uri, r.probe_template_id, r.rank, r.subject_id, r.score, r.decision, r.threshold \
         FROM results r JOIN templates t ON t.template_id = r.probe_template_id WHERE r.job_id = 'eval-1'",
    ]);
    let rows: Vec<Value> = serde_json::from_str(&rows).unwrap();
    let truth_of: HashMap<&str, Option<&str>> = [
        ("amy4.png", Some("amy")),
        ("amy5.png", Some("amy")),
        ("bernadette4.png", Some("bernadette")),
        ("howard4.png", Some("howard")),
        ("leonard5.png", Some("leonard")),
        ("amy_blurred.png", Some("amy")),
        ("amy_tiny.png", Some("amy")),
        ("penny1.png", None),
        ("raj1.png", None),
        ("sheldon1.png", None),
        ("stuart1.png", None),
    ]
    .into();
    // Per probe: truth, rank-1 (subject, score, decision), threshold.
    let mut by_probe: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for r in &rows {
        by_probe.entry(r["probe_template_id"].as_str().unwrap()).or_default().push(r);
    }
    let (mut mated, mut nonmated, mut rank1) = (0usize, 0usize, 0usize);
    let (mut hits, mut misses, mut false_matches) = (0u64, 0u64, 0u64);
    let mut nonmated_tops: Vec<f32> = Vec::new();
    let mut mate_scores_at_rank1: Vec<f32> = Vec::new();
    let mut thresholds = Vec::new();
    for probe in by_probe.values() {
        let top = probe.iter().find(|r| r["rank"] == 1).unwrap();
        let media = file_name(top["media_uri"].as_str().unwrap());
        let truth = truth_of[media];
        let subject = top["subject_id"].as_str();
        let score = top["score"].as_f64().unwrap() as f32;
        let matched = top["decision"] == "match";
        thresholds.push(top["threshold"].as_f64().unwrap() as f32);
        match truth {
            Some(t) => {
                mated += 1;
                if subject == Some(t) {
                    rank1 += 1;
                    mate_scores_at_rank1.push(score);
                }
                if matched && subject == Some(t) { hits += 1 } else { misses += 1 }
            }
            None => {
                nonmated += 1;
                nonmated_tops.push(score);
                if matched {
                    false_matches += 1;
                }
            }
        }
    }
    // amy_tiny.png has no face: a mated search that misses.
    assert!(!rows.iter().any(|r| r["media_uri"].as_str().unwrap().ends_with("amy_tiny.png")));
    let mated_total = mated + 1;
    assert_eq!((mated, nonmated), (6, 4), "{rows:?}");
    let c = &m["counts"];
    assert_eq!(c["mated_searches"], mated_total);
    assert_eq!(c["nonmated_searches"], nonmated);
    assert_eq!(c["not_detected_mated"], 1);
    assert_eq!(c["truth_not_in_job"], 1);
    assert_eq!((c["hits"].as_u64(), c["misses"].as_u64()), (Some(hits), Some(misses)));
    assert_eq!(c["false_matches"].as_u64(), Some(false_matches));
    let close = |a: &Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-12;
    assert!(close(&m["rank1"], rank1 as f64 / mated_total as f64), "{}", m["rank1"]);
    let op = &m["operating_point"];
    assert!(thresholds.iter().all(|&t| t == 0.9f32));
    assert_eq!(op["threshold"].as_f64().unwrap() as f32, 0.9f32);
    assert!(close(&op["fnir"], (mated_total - hits as usize) as f64 / mated_total as f64), "{op}");
    assert!(close(&op["fpir"], false_matches as f64 / nonmated as f64), "{op}");
    // With 4 non-mated searches, FPIR 0.1 allows no alarm: the threshold
    // sits just above the highest non-mated score, and a mate must beat it.
    let top_nonmated = nonmated_tops.iter().copied().fold(f32::MIN, f32::max);
    let point = m["fnir_at_fpir"].as_array().unwrap().iter().find(|p| p["target_fpir"] == 0.1).unwrap();
    assert_eq!(point["threshold"].as_f64().unwrap() as f32, top_nonmated.next_up());
    let beat = mate_scores_at_rank1.iter().filter(|&&s| s > top_nonmated).count();
    assert!(close(&point["fnir"], (mated_total - beat) as f64 / mated_total as f64), "{point}");
    assert_eq!(m["cmc"].as_array().unwrap().len(), 20);
    assert!(!m["det"].as_array().unwrap().is_empty());
    // Some of each kind, so the galleries below are exercised.
    assert!(hits >= 3 && false_matches >= 1 && misses >= 1, "hits {hits}, misses {misses}, false {false_matches}");

    // The plots decode at their size; every image the report shows exists.
    for png in ["cmc.png", "det.png"] {
        let img = image::open(out.join(png)).unwrap();
        assert_eq!((img.width(), img.height()), (800, 500), "{png}");
    }
    let report = out.join("report.html");
    let html = std::fs::read_to_string(&report).unwrap();
    let sources = img_sources(&html);
    for src in &sources {
        assert!(!src.contains("://") && out.join(src).is_file(), "missing {src}");
    }
    assert_eq!(gallery_images(&html, "hit"), hits as usize);
    assert_eq!(gallery_images(&html, "miss"), misses as usize);
    assert_eq!(gallery_images(&html, "false"), false_matches as usize);
    let thumbs = std::fs::read_dir(out.join("thumbs")).unwrap().count();
    assert_eq!(thumbs as u64, hits + misses + false_matches);
    assert_eq!(sources.len(), thumbs + 2);
    assert!(html.contains("amy_tiny.png"), "the undetected media is listed");
    check_images_load_in_chromium(&report, sources.len());

    // The coordinator serves the same report over REST.
    check_served_report(root, "eval-1", &truth, &m, &tmp.path().join("coordinator.log"));

    // Bad requests: exit code 2 and a message that names the problem.
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "media,subject\namy4.png,amy\npenny1.png,unknown,extra\n").unwrap();
    let run = osprey(&["eval", "search", "--root", root, "--job", "eval-1", "--truth", s(&bad), "--out", s(&out)]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.csv line 3"), "{err}");
    let run =
        osprey(&["eval", "search", "--root", root, "--job", "no-such-job", "--truth", s(&truth), "--out", s(&out)]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("job `no-such-job` has no search results"), "{err}");
    let strangers = tmp.path().join("strangers.csv");
    std::fs::write(&strangers, "media,subject\nsomeone_else.jpg,amy\n").unwrap();
    let run =
        osprey(&["eval", "search", "--root", root, "--job", "eval-1", "--truth", s(&strangers), "--out", s(&out)]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("none of the 1 media"), "{err}");
}

const READER_KEY: &str = "reader-key-0123456789";

/// A coordinator over `root` answers `POST /v1/jobs/{job}/report` with the
/// truth CSV as body: the same numbers as `osprey eval search` (`cli`, its
/// metrics.json), an HTML page with its images inline, and clear refusals.
fn check_served_report(root: &str, job: &str, truth: &Path, cli: &Value, log: &Path) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let models = std::env::var_os("OSPREY_MODELS").map(PathBuf::from).unwrap_or_else(|| repo().join("models"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_osprey"))
        .args(["coordinator", "--root", root, "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("OSPREY_ROOT")
        .env("OSPREY_MODELS", models)
        .env("OSPREY_API_KEYS", format!("reader:{READER_KEY}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("coordinator starts");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            self.0.kill().ok();
            self.0.wait().ok();
        }
    }
    let _kill = Kill(&mut child);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    // (status, content type, body)
    let call = |path: &str, key: Option<&str>, accept: &str, body: Vec<u8>| -> (u16, String, String) {
        rt.block_on(async {
            let mut req =
                http.post(format!("{base}{path}")).header("content-type", "text/csv").header("accept", accept);
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            match req.body(body).send().await {
                Ok(r) => {
                    let ct =
                        r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                    (r.status().as_u16(), ct, r.text().await.unwrap_or_default())
                }
                Err(_) => (0, String::new(), String::new()),
            }
        })
    };
    let t0 = std::time::Instant::now();
    while rt.block_on(http.get(format!("{base}/healthz")).send()).is_err() {
        assert!(t0.elapsed().as_secs() < 30, "coordinator did not come up: {}", std::fs::read_to_string(log).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let csv = std::fs::read(truth).unwrap();
    let path = format!("/v1/jobs/{job}/report");

    let (status, ct, body) = call(&path, Some(READER_KEY), "application/json", csv.clone());
    assert_eq!(status, 200, "{body}");
    assert!(ct.starts_with("application/json"), "{ct}");
    let served: Value = serde_json::from_str(&body).unwrap();
    for key in ["counts", "cmc", "rank1", "fnir_at_fpir", "dir_at_far", "operating_point", "det", "not_in_job"] {
        assert_eq!(served[key], cli[key], "{key}");
    }

    let (status, ct, html) = call(&path, Some(READER_KEY), "text/html", csv.clone());
    assert_eq!(status, 200, "{html}");
    assert!(ct.starts_with("text/html"), "{ct}");
    let sources = img_sources(&html);
    assert!(sources.iter().all(|s| s.starts_with("data:image/")), "images are inline");
    assert_eq!(sources.iter().filter(|s| s.starts_with("data:image/png")).count(), 2, "CMC and DET");
    let c = &cli["counts"];
    assert_eq!(gallery_images(&html, "hit") as u64, c["hits"].as_u64().unwrap());
    assert_eq!(gallery_images(&html, "false") as u64, c["false_matches"].as_u64().unwrap());
    let rank1 = format!(
        "<tr><th>rank-1 identification rate</th><td class=\"n\">{:.4}</td></tr>",
        cli["rank1"].as_f64().unwrap()
    );
    assert!(html.contains(&rank1), "{rank1}");

    // Refusals: no key, a bad CSV (its line named), no such job.
    assert_eq!(call(&path, None, "text/html", csv.clone()).0, 401);
    let (status, _, body) = call(&path, Some(READER_KEY), "text/html", b"media,subject\na.jpg,amy,extra\n".to_vec());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("line 2"), "{body}");
    let (status, _, body) = call("/v1/jobs/no-such-job/report", Some(READER_KEY), "text/html", csv);
    assert_eq!(status, 404, "{body}");
}

/// Per kind of probe (`face`, `body`, `fused`) of a job, scored here from
/// its rows: (mated searches, non-mated searches, not detected mated,
/// rank-1 hits, stored hits, stored misses, stored false matches).
type Scored = (usize, usize, usize, usize, usize, usize, usize);

fn score_rows(rows: &[Value], truth_of: &HashMap<&str, Option<&str>>, kind: &str) -> Scored {
    let mut by_probe: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r["kind"] == kind) {
        by_probe.entry(r["probe_template_id"].as_str().unwrap()).or_default().push(r);
    }
    let (mut mated, mut nonmated, mut rank1, mut hits, mut misses, mut false_matches) = (0, 0, 0, 0, 0, 0);
    let mut seen = std::collections::BTreeSet::new();
    for probe in by_probe.values() {
        let top = probe.iter().min_by_key(|r| r["rank"].as_i64().unwrap()).unwrap();
        let media = file_name(top["media_uri"].as_str().unwrap());
        seen.insert(media);
        let subject = top["subject_id"].as_str();
        let matched = top["decision"] == "match";
        match truth_of[media] {
            Some(t) => {
                mated += 1;
                rank1 += usize::from(subject == Some(t));
                if matched && subject == Some(t) { hits += 1 } else { misses += 1 }
            }
            None => {
                nonmated += 1;
                false_matches += usize::from(matched);
            }
        }
    }
    let not_detected = truth_of.iter().filter(|(m, t)| t.is_some() && !seen.contains(*m)).count();
    (mated + not_detected, nonmated, not_detected, rank1, hits, misses, false_matches)
}

#[test]
fn eval_search_reports_each_modality_and_fused_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let root = s(&root);
    let examples = data().join("face_recognition/examples");
    let knn = examples.join("knn_examples");

    // Five people enrolled from one photo each, faces and bodies (Biden's
    // and Obama's are upper-body portraits; CenterNet finds their bodies).
    let subjects = tmp.path().join("subjects");
    for (subject, photo) in [
        ("obama", examples.join("obama.jpg")),
        ("biden", examples.join("biden.jpg")),
        ("alex_lacamoire", examples.join("alex-lacamoire.png")),
        ("kit_harington", knn.join("train/kit_harington/john1.jpeg")),
        ("rose_leslie", knn.join("train/rose_leslie/img1.jpg")),
    ] {
        std::fs::create_dir_all(subjects.join(subject)).unwrap();
        std::fs::copy(&photo, subjects.join(subject).join(photo.file_name().unwrap())).unwrap();
    }
    let (_, log) = ok(&[
        "run",
        "enroll",
        "--root",
        root,
        "--gallery",
        "people",
        "--subjects-from-dirs",
        s(&subjects),
        "--modalities",
        "face,body",
    ]);
    assert!(log.contains("gallery `people.body`"), "{log}");

    // Other photos of four of them, two strangers, and Obama too small to
    // find: searched in both indexes and fused per person.
    let tiny = tmp.path().join("obama_tiny.png");
    image::open(examples.join("obama.jpg"))
        .unwrap()
        .resize_exact(24, 24, image::imageops::FilterType::Triangle)
        .save(&tiny)
        .unwrap();
    let probes = [
        knn.join("test/obama1.jpg"),
        knn.join("train/biden/biden2.jpg"),
        knn.join("test/alex_lacamoire1.jpg"),
        knn.join("train/kit_harington/john2.jpeg"),
        examples.join("lin-manuel-miranda.png"),
        data().join("facenet-pytorch/data/test_images/paul_rudd/1.jpg"),
        tiny.clone(),
    ];
    let mut args = vec!["run", "search", "--root", root, "--gallery", "people", "--job-id", "mm-1"];
    args.extend(["--modalities", "face,body", "--threshold", "0.9"]);
    args.extend(probes.iter().map(|p| s(p)));
    ok(&args);

    let truth = tmp.path().join("truth.csv");
    std::fs::write(
        &truth,
        "media,subject\nobama1.jpg,obama\nbiden2.jpg,biden\nalex_lacamoire1.jpg,alex_lacamoire\n\
         john2.jpeg,kit_harington\nlin-manuel-miranda.png,unknown\npaul_rudd/1.jpg,unknown\nobama_tiny.png,obama\n",
    )
    .unwrap();
    let out = tmp.path().join("report");
    let (summary, log) =
        ok(&["eval", "search", "--root", root, "--job", "mm-1", "--truth", s(&truth), "--out", s(&out)]);
    eprintln!("{summary}{log}");
    let header: Vec<&str> = summary.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(header, ["face", "body", "fused"], "side by side: {summary}");
    assert!(summary.contains("rank-1 rate") && summary.contains("report.html"), "{summary}");
    let m = read_json(&out.join("metrics.json"));
    assert_eq!(m["modality_order"], serde_json::json!(["face", "body", "fused"]));

    // The job's rows, read back independently and scored here per kind.
    let (rows, _) = ok(&[
        "sql",
        "--root",
        root,
        "--format",
        "json",
        "SELECT t.media_uri, r.probe_template_id, r.rank, r.subject_id, r.decision, r.threshold, \
         CASE WHEN r.fusion IS NOT NULL THEN 'fused' ELSE t.modality END AS kind \
         FROM results r JOIN templates t ON t.template_id = r.probe_template_id WHERE r.job_id = 'mm-1'",
    ]);
    let rows: Vec<Value> = serde_json::from_str(&rows).unwrap();
    let truth_of: HashMap<&str, Option<&str>> = [
        ("obama1.jpg", Some("obama")),
        ("biden2.jpg", Some("biden")),
        ("alex_lacamoire1.jpg", Some("alex_lacamoire")),
        ("john2.jpeg", Some("kit_harington")),
        ("lin-manuel-miranda.png", None),
        ("1.jpg", None),
        ("obama_tiny.png", Some("obama")),
    ]
    .into();
    let close = |a: &Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-12;
    for kind in ["face", "body", "fused"] {
        let e = &m["modalities"][kind];
        let c = &e["counts"];
        let (mated, nonmated, not_detected, rank1, hits, misses, false_matches) = score_rows(&rows, &truth_of, kind);
        assert!(nonmated >= 1 && mated >= 4, "{kind}: {mated} mated, {nonmated} non-mated");
        assert_eq!(c["mated_searches"], mated, "{kind}");
        assert_eq!(c["nonmated_searches"], nonmated, "{kind}");
        assert_eq!(c["not_detected_mated"], not_detected, "{kind}");
        assert!(not_detected >= 1, "{kind}: the tiny photo gives no probe");
        assert_eq!((c["hits"].as_u64(), c["misses"].as_u64()), (Some(hits as u64), Some(misses as u64)), "{kind}");
        assert_eq!(c["false_matches"], false_matches, "{kind}");
        assert!(close(&e["rank1"], rank1 as f64 / mated as f64), "{kind}: {} vs {rank1}/{mated}", e["rank1"]);
        assert!(close(&e["operating_point"]["fnir"], (mated - hits) as f64 / mated as f64), "{kind}");
        assert!(close(&e["operating_point"]["fpir"], false_matches as f64 / nonmated as f64), "{kind}");
        assert_eq!(e["cmc"].as_array().unwrap().len(), 20);
        assert!(!e["det"].as_array().unwrap().is_empty(), "{kind}");
    }
    // Per-modality rows use the given threshold; fused rows one per person.
    assert_eq!(m["modalities"]["face"]["operating_point"]["threshold"].as_f64().unwrap() as f32, 0.9f32);
    assert_eq!(m["modalities"]["body"]["operating_point"]["threshold"].as_f64().unwrap() as f32, 0.9f32);
    // The top level is the face modality, as a face-only job writes it.
    assert_eq!(m["modality"], "face");
    assert_eq!(m["counts"], m["modalities"]["face"]["counts"]);
    assert_eq!(m["rank1"], m["modalities"]["face"]["rank1"]);

    // One curve per modality in each plot; a gallery per modality and kind.
    for png in ["cmc.png", "det.png"] {
        let img = image::open(out.join(png)).unwrap().to_rgb8();
        let green = img.pixels().filter(|p| p.0 == [0, 150, 0]).count();
        assert!(green > 50, "{png}: the body curve is drawn");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<tr><th></th><th>face</th><th>body</th><th>fused</th></tr>"), "summary columns");
    for kind in ["face", "body", "fused"] {
        let c = &m["modalities"][kind]["counts"];
        assert_eq!(gallery_images(&html, &format!("{kind}-hit")) as u64, c["hits"].as_u64().unwrap(), "{kind}");
        assert_eq!(gallery_images(&html, &format!("{kind}-miss")) as u64, c["misses"].as_u64().unwrap(), "{kind}");
        assert_eq!(gallery_images(&html, &format!("{kind}-false")) as u64, c["false_matches"].as_u64().unwrap());
    }
    for src in img_sources(&html) {
        assert!(!src.contains("://") && out.join(&src).is_file(), "missing {src}");
    }
}

/// An independent k-fold in numpy: scores from the Parquet embeddings, pairs
/// interleaved by class when `stratify`, consecutive folds, thresholds midway
/// between training scores with ties to the higher one. Prints
/// `mean std missing`.
const KFOLD_PY: &str = r#"
import csv, os, sys
from fractions import Fraction
import duckdb, numpy as np
parquet, pairs_csv, folds, stratify = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
rows = duckdb.sql(f"SELECT media_uri, embedding FROM read_parquet('{parquet}') WHERE embedding IS NOT NULL").fetchall()
emb = {u: np.asarray(e, dtype=np.float64) for u, e in rows}
pairs = []
for r in csv.DictReader(open(pairs_csv, newline="")):
    x, y, same = r["x"], r["y"], r["same"] == "1"
    if x in emb and y in emb:
        a, b = emb[x], emb[y]
        s = float(a @ b / (np.sqrt(a @ a) * np.sqrt(b @ b)))
    else:
        s = -np.inf
    pairs.append((s, same))
if stratify:
    n = {c: sum(1 for p in pairs if p[1] == c) for c in (True, False)}
    seen = {True: 0, False: 0}
    keyed = []
    for p in pairs:
        j = seen[p[1]]; seen[p[1]] += 1
        keyed.append((Fraction(2 * j + 1, 2 * n[p[1]]), 0 if p[1] else 1, p))
    pairs = [k[2] for k in sorted(keyed, key=lambda k: (k[0], k[1]))]
def best(train):
    train = sorted(train, key=lambda p: p[0])
    correct = sum(1 for p in train if p[1]); top, t = correct, train[0][0]
    i = 0
    while i < len(train):
        s = train[i][0]
        while i < len(train) and train[i][0] == s:
            correct += -1 if train[i][1] else 1; i += 1
        if correct >= top:
            top = correct
            if i < len(train):
                nxt = train[i][0]; m = s / 2 + nxt / 2
                t = m if (m > s and m <= nxt) else nxt
            else:
                t = float(np.nextafter(s, np.inf))
    return t
accs = []
for k in range(folds):
    lo, hi = k * len(pairs) // folds, (k + 1) * len(pairs) // folds
    t = best(pairs[:lo] + pairs[hi:])
    test = pairs[lo:hi]
    accs.append(sum(1 for s, same in test if (s >= t) == same) / len(test))
print(repr(float(np.mean(accs))), repr(float(np.std(accs))), sum(1 for p in pairs if p[0] == -np.inf))
"#;

fn python() -> String {
    std::env::var("OSPREY_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs [`KFOLD_PY`] on `osprey eval pairs`' output folder.
fn numpy_kfold(out: &Path, metrics: &Value, stratify: bool) -> (f64, f64, u64) {
    let list = out.join("pairs-for-numpy.csv");
    let mut text = String::from("x,y,same\n");
    for p in metrics["scores"].as_array().unwrap() {
        let same = if p["same"] == true { 1 } else { 0 };
        text += &format!("{},{},{same}\n", p["x"].as_str().unwrap(), p["y"].as_str().unwrap());
    }
    std::fs::write(&list, text).unwrap();
    let run = Command::new(python())
        .args(["-c", KFOLD_PY])
        .arg(out.join("embeddings.parquet"))
        .arg(&list)
        .arg(metrics["folds"].to_string())
        .arg(if stratify { "1" } else { "0" })
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): run infra/scripts/setup.sh and set OSPREY_PYTHON", python()));
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = String::from_utf8(run.stdout).unwrap();
    let f: Vec<&str> = text.split_whitespace().collect();
    (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap())
}

#[test]
fn eval_pairs_on_deepface_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = data().join("deepface/tests/unit/dataset");
    // deepface's master.csv restricted to its twelve smallest photos (66
    // pairs, 8 of the same person), plus two pairs with a faceless image.
    let keep = [
        "img5.jpg",
        "img6.jpg",
        "img8.jpg",
        "img10.jpg",
        "img11.jpg",
        "img12.jpg",
        "img14.jpg",
        "img16.jpg",
        "img17.jpg",
        "img20.jpg",
        "img21.jpg",
        "img25.jpg",
    ];
    let images = tmp.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    for f in keep {
        std::fs::copy(dataset.join(f), images.join(f)).unwrap();
    }
    image::RgbImage::from_pixel(160, 160, image::Rgb([120, 120, 120])).save(images.join("blank.jpg")).unwrap();
    let master = std::fs::read_to_string(dataset.join("master.csv")).unwrap();
    let mut lines: Vec<&str> = master
        .lines()
        .enumerate()
        .filter(|(i, l)| *i == 0 || l.split(',').take(2).all(|f| keep.contains(&f)))
        .map(|(_, l)| l.trim_end_matches('\r'))
        .collect();
    lines.extend(["img5.jpg,blank.jpg,Yes", "blank.jpg,img12.jpg,No"]);
    let pairs = tmp.path().join("pairs.csv");
    std::fs::write(&pairs, lines.join("\r\n") + "\r\n").unwrap();

    let out = tmp.path().join("out");
    // Portraits with large faces: no upsampling needed (four times faster).
    let (summary, log) =
        ok(&["eval", "pairs", "--pairs", s(&pairs), "--images", s(&images), "--upsample", "0", "--out", s(&out)]);
    eprintln!("{summary}{log}");
    let m = read_json(&out.join("metrics.json"));
    assert_eq!((m["pairs"].as_u64(), m["same"].as_u64()), (Some(68), Some(9)));
    assert_eq!((m["folds"].as_u64(), m["fold_order"].as_str()), (Some(10), Some("stratified")));
    assert_eq!(m["images"], 13);
    let no_face: Vec<&str> = m["images_without_face"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(no_face.iter().map(|f| file_name(f)).collect::<Vec<_>>(), ["blank.jpg"]);
    assert_eq!(m["pairs_with_missing_face"], 2);

    let (mean, std, missing) = numpy_kfold(&out, &m, true);
    let (accuracy, deviation) = (m["accuracy_mean"].as_f64().unwrap(), m["accuracy_std"].as_f64().unwrap());
    assert!(
        (accuracy - mean).abs() < 1e-9 && (deviation - std).abs() < 1e-9,
        "osprey {accuracy} ± {deviation}, numpy {mean} ± {std}"
    );
    assert_eq!(missing, 2);
    assert!(summary.contains(&format!("{accuracy:.4} ± {deviation:.4}")), "{summary}");
    // The EER and TAR are rates; the matched faces score well above the rest.
    let eer = m["eer"].as_f64().unwrap();
    assert!((0.0..0.5).contains(&eer), "EER {eer}");
    assert_eq!(m["tar_at_far"].as_array().unwrap().len(), 2);

    // The project's reference script on the same embeddings: it folds at
    // random, so only its counts must agree; its accuracy is printed.
    let script = repo().join("infra/scripts/pairs_accuracy.py");
    let run = Command::new(python()).arg(&script).arg(out.join("embeddings.parquet")).arg(&pairs).output().unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{text}{}", String::from_utf8_lossy(&run.stderr));
    eprintln!("pairs_accuracy.py: {text}");
    assert!(text.contains("pairs 68 (same 9, different 59), without a face 2;"), "{text}");

    let img = image::open(out.join("det.png")).unwrap();
    assert_eq!((img.width(), img.height()), (800, 500));
    let report = out.join("report.html");
    let html = std::fs::read_to_string(&report).unwrap();
    assert_eq!(img_sources(&html), ["det.png"]);
    assert!(html.contains("blank.jpg"));
    check_images_load_in_chromium(&report, 1);

    // A malformed decision names its line.
    std::fs::write(&pairs, "file_x,file_y,Decision\r\nimg5.jpg,img6.jpg,Yes\r\nimg5.jpg,img8.jpg,maybe\r\n").unwrap();
    let run = osprey(&["eval", "pairs", "--pairs", s(&pairs), "--images", s(&images)]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("line 3: Decision must be Yes or No"), "{err}");
}

#[test]
fn eval_pairs_reads_lfw_pairs_txt() {
    // An LFW-style tree (name/name_0001.jpg) of face-api.js crops, and a
    // pairs.txt of 2 folds × (3 same + 3 different).
    let tmp = tempfile::tempdir().unwrap();
    let lfw = tmp.path().join("lfw");
    let people = ["amy", "howard", "penny", "raj"];
    for person in people {
        std::fs::create_dir_all(lfw.join(person)).unwrap();
        for n in 1..=3 {
            let img = image::open(face_api(person, n)).unwrap().to_rgb8();
            img.save(lfw.join(person).join(format!("{person}_{n:04}.jpg"))).unwrap();
        }
    }
    let pairs = tmp.path().join("pairs.txt");
    std::fs::write(
        &pairs,
        "2\t3\namy\t1\t2\nhoward\t1\t3\npenny\t2\t3\namy\t1\thoward\t2\npenny\t1\traj\t1\nraj\t2\tamy\t3\n\
         raj\t1\t3\namy\t2\t3\nhoward\t2\t3\nhoward\t1\tpenny\t3\namy\t3\traj\t3\npenny\t2\thoward\t3\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let (summary, _) = ok(&["eval", "pairs", "--pairs", s(&pairs), "--images", s(&lfw), "--out", s(&out)]);
    eprintln!("{summary}");
    let m = read_json(&out.join("metrics.json"));
    assert_eq!((m["format"].as_str(), m["folds"].as_u64()), (Some("lfw-pairs"), Some(2)));
    assert_eq!((m["pairs"].as_u64(), m["same"].as_u64(), m["images"].as_u64()), (Some(12), Some(6), Some(12)));
    let (mean, std, missing) = numpy_kfold(&out, &m, false);
    assert!((m["accuracy_mean"].as_f64().unwrap() - mean).abs() < 1e-9, "{} vs {mean}", m["accuracy_mean"]);
    assert!((m["accuracy_std"].as_f64().unwrap() - std).abs() < 1e-9);
    assert_eq!(missing, 0);
    // These cast members are told apart easily.
    assert!(mean >= 0.9, "accuracy {mean}");
}
