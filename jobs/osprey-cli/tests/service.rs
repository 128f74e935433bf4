//! The coordinator and workers as separate processes over loopback HTTP,
//! with the media and the root on a real S3-compatible server: roles and
//! keys, an enrol job, a search job that survives a worker and the
//! coordinator being SIGKILLed, SQL, REST search, audit, erasure, and the
//! API fuzzed by schemathesis against schemas/openapi.json.

mod common;

#[path = "../../../libs/osprey-store/tests/support/s3_server.rs"]
mod s3_server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{data, repo};
use serde_json::{Value, json};

const ADMIN: &str = "admin-key-0123456789";
const OPERATOR: &str = "operator-key-0123456789";
const READER: &str = "reader-key-0123456789";

fn keys() -> String {
    format!("admin:{ADMIN},operator:{OPERATOR},reader:{READER}")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed (SIGKILL) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

struct Cluster {
    s3_port: u16,
    root: String,
    port: u16,
    logs: tempfile::TempDir,
}

impl Cluster {
    fn command(&self, args: &[&str], log: &str) -> Command {
        let models = std::env::var_os("OSPREY_MODELS").map(PathBuf::from).unwrap_or_else(|| repo().join("models"));
        let mut c = Command::new(env!("CARGO_BIN_EXE_osprey"));
        c.args(args)
            .env_remove("OSPREY_ROOT")
            .env("OSPREY_MODELS", models)
            .env("OSPREY_LOG", "info")
            .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", self.s3_port))
            .env("AWS_ACCESS_KEY_ID", "osprey")
            .env("AWS_SECRET_ACCESS_KEY", "osprey-secret")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.logs.path().join(log)).unwrap());
        c
    }

    fn start_coordinator(&self, log: &str) -> Proc {
        self.start_coordinator_with(log, None)
    }

    /// A coordinator reading the TOML configuration file `config` too.
    fn start_coordinator_with(&self, log: &str, config: Option<&Path>) -> Proc {
        let listen = format!("127.0.0.1:{}", self.port);
        let mut c = self.command(&["coordinator", "--root", &self.root, "--listen", &listen], log);
        c.env("OSPREY_API_KEYS", keys());
        if let Some(config) = config {
            c.env("OSPREY_CONFIG", config);
        }
        let p = Proc(c.spawn().expect("coordinator starts"));
        let api = Api::new(self.port);
        let t0 = Instant::now();
        while api.call("GET", "/healthz", None, None).0 != 200 {
            assert!(t0.elapsed() < Duration::from_secs(30), "coordinator did not come up:\n{}", self.log(log));
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn start_worker(&self, log: &str) -> Proc {
        let url = format!("http://127.0.0.1:{}", self.port);
        let mut c = self.command(&["--threads", "1", "worker", "--coordinator", &url, "--worker-id", log], log);
        c.env("OSPREY_API_KEY", OPERATOR);
        Proc(c.spawn().expect("worker starts"))
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(name)).unwrap_or_default()
    }

    fn all_logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.logs.path()).unwrap() {
            let p = e.unwrap().path();
            out += &format!("---- {}\n{}\n", p.display(), std::fs::read_to_string(&p).unwrap_or_default());
        }
        out
    }
}

/// A small blocking HTTP client for the tests.
struct Api {
    base: String,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Api {
    fn new(port: u16) -> Api {
        Api {
            base: format!("http://127.0.0.1:{port}"),
            rt: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
            http: reqwest::Client::new(),
        }
    }

    /// (status, JSON body or `Value::String` of a text body)
    fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
        self.raw(method, path, key, body.map(|b| ("application/json".to_string(), b.to_string().into_bytes())))
    }

    fn raw(&self, method: &str, path: &str, key: Option<&str>, body: Option<(String, Vec<u8>)>) -> (u16, Value) {
        self.rt.block_on(async {
            let mut req = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            if let Some((ct, bytes)) = body {
                req = req.header("content-type", ct).body(bytes);
            }
            match req.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
                }
                Err(_) => (0, Value::Null),
            }
        })
    }

    fn sql(&self, key: &str, query: &str) -> Vec<Value> {
        let (status, body) = self.call("POST", "/v1/sql", Some(key), Some(json!({ "query": query })));
        assert_eq!(status, 200, "{query}: {body}");
        body["rows"].as_array().unwrap().clone()
    }

    /// Polls a job until it ends (or `until` holds), returning its status.
    fn wait(&self, id: &str, timeout: Duration, until: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            let (status, body) = self.call("GET", &format!("/v1/jobs/{id}"), Some(READER), None);
            if status == 200 {
                let state = body["state"].as_str().unwrap_or_default();
                if until(&body) || !matches!(state, "queued" | "running") {
                    return body;
                }
            }
            assert!(t0.elapsed() < timeout, "job {id} did not get there in {timeout:?}: {body}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn multipart(fields: &[(&str, &str)], image: &Path) -> (String, Vec<u8>) {
    let boundary = "osprey-test-boundary-7d1a";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes(),
        );
    }
    body.extend(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"probe.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
        )
        .bytes(),
    );
    body.extend(std::fs::read(image).unwrap());
    body.extend(format!("\r\n--{boundary}--\r\n").bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn base(uri: &str) -> String {
    uri.rsplit('/').next().unwrap().to_string()
}

#[test]
fn distributed_jobs_survive_killed_workers_and_coordinator() {
    let examples = data().join("face_recognition/examples");
    let s3 = s3_server::start_s3("media");
    let bucket = s3.dir.path().join("media");
    let put = |key: &str, bytes: &[u8]| {
        let to = bucket.join(key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, bytes).unwrap();
    };
    let file = |name: &str| std::fs::read(examples.join(name)).unwrap();
    put("osprey/media/subjects/obama/obama.jpg", &file("obama.jpg"));
    put("osprey/media/subjects/biden/biden.jpg", &file("biden.jpg"));
    put("osprey/media/subjects/lin-manuel-miranda/photo.png", &file("lin-manuel-miranda.png"));
    put("osprey/media/subjects/alex-lacamoire/photo.png", &file("alex-lacamoire.png"));
    for img in ["obama2.jpg", "obama-240p.jpg", "obama_small.jpg"] {
        put(&format!("osprey/media/probes/{img}"), &file(img));
    }
    put("osprey/media/probes/hamilton.mp4", &file("short_hamilton_clip.mp4"));
    let mut corrupt = file("short_hamilton_clip.mp4");
    corrupt.truncate(2000);
    put("osprey/media/probes/corrupt.mp4", &corrupt);

    let cluster = Cluster {
        s3_port: s3.port,
        root: "s3://media/osprey".into(),
        port: free_port(),
        logs: tempfile::tempdir().unwrap(),
    };
    // REST audit rows go through a local journal (an S3 root has none
    // unless configured), kept long so a SIGKILL finds rows in it.
    let config = cluster.logs.path().join("osprey.toml");
    let journal = cluster.logs.path().join("audit-journal");
    std::fs::write(
        &config,
        format!("audit_journal = {:?}\naudit_flush_seconds = 3600\n", journal.display().to_string()),
    )
    .unwrap();
    let mut coordinator = cluster.start_coordinator_with("coordinator-1.log", Some(&config));
    let api = Api::new(cluster.port);

    // ---- keys and roles, malformed requests
    assert_eq!(api.call("GET", "/v1/galleries", None, None).0, 401);
    assert_eq!(api.call("GET", "/v1/galleries", Some("not-a-key-at-all"), None).0, 401);
    let (status, body) = api.call("GET", "/metrics", None, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let enroll = json!({"kind": "enroll", "gallery": "people", "inputs": ["media/subjects/"], "subjects_from": "dirs"});
    let (status, body) = api.call("POST", "/v1/jobs", Some(READER), Some(enroll.clone()));
    assert_eq!(status, 403, "a reader cannot submit jobs: {body}");
    assert_eq!(body["error"]["code"], "forbidden");
    for outside in ["s3://media/elsewhere/", "/etc/", "media/../../etc/passwd"] {
        let spec = json!({"kind": "enroll", "gallery": "people", "inputs": [outside], "subjects_from": "dirs"});
        let (status, body) = api.call("POST", "/v1/jobs", Some(OPERATOR), Some(spec));
        assert!(status == 403 || status == 400, "{outside}: {status} {body}");
    }
    let (status, _) =
        api.raw("POST", "/v1/jobs", Some(OPERATOR), Some(("application/json".into(), b"{not json".to_vec())));
    assert_eq!(status, 400);
    let (status, body) = api.call(
        "POST",
        "/v1/jobs",
        Some(OPERATOR),
        Some(json!({"kind": "search", "gallery": "nobody", "inputs": ["media/probes/"]})),
    );
    assert_eq!(status, 404, "unknown gallery: {body}");
    assert_eq!(api.call("GET", "/v1/jobs/no-such-job", Some(READER), None).0, 404);
    assert_eq!(api.call("POST", "/v1/sql", Some(OPERATOR), Some(json!({"query": "SELECT 1"}))).0, 200);
    let (status, _) = api.call("POST", "/v1/sql", Some(OPERATOR), Some(json!({"query": "SELECT * FROM audit"})));
    assert!((400..500).contains(&status), "operators cannot read the audit table");
    let (status, body) = api.call("POST", "/v1/sql", Some(READER), Some(json!({"query": "DROP TABLE templates"})));
    assert!((400..500).contains(&status), "SQL is read-only: {status} {body}");

    // ---- enrol from a folder per subject, with two workers
    let _w1 = cluster.start_worker("worker-1.log");
    let mut w2 = cluster.start_worker("worker-2.log");
    let (status, body) = api.call("POST", "/v1/jobs", Some(OPERATOR), Some(enroll));
    assert_eq!(status, 202, "{body}");
    let enrolled = api.wait(body["job_id"].as_str().unwrap(), Duration::from_secs(300), |_| false);
    assert_eq!(enrolled["state"], "completed", "{enrolled}\n{}", cluster.all_logs());
    assert_eq!(enrolled["tasks"]["done"], 4);
    let (_, gallery) = api.call("GET", "/v1/galleries/people", Some(READER), None);
    assert_eq!(gallery["subjects"], 4, "{gallery}");
    assert_eq!(gallery["subject_ids"], json!(["alex-lacamoire", "biden", "lin-manuel-miranda", "obama"]));

    // ---- a search job over images, a video in segments and a corrupt file;
    // a worker and then the coordinator are SIGKILLed while it runs
    let search = json!({
        "kind": "search", "gallery": "people", "inputs": ["media/probes/"],
        "sample_fps": 1, "segment_seconds": 4
    });
    let (status, body) = api.call("POST", "/v1/jobs", Some(OPERATOR), Some(search));
    assert_eq!(status, 202, "{body}");
    let job_id = body["job_id"].as_str().unwrap().to_string();
    let busy = api.wait(&job_id, Duration::from_secs(120), |j| j["tasks"]["running"].as_u64() == Some(2));
    assert_eq!(busy["tasks"]["running"], 2, "both workers busy: {busy}");
    assert_eq!(busy["tasks"]["total"], 7, "3 images, 3 video segments, 1 corrupt file: {busy}");
    w2.0.kill().unwrap(); // a worker dies holding a lease
    w2.0.wait().unwrap();
    api.wait(&job_id, Duration::from_secs(300), |j| j["tasks"]["done"].as_u64() >= Some(2));
    // A REST search answered just before the kill is in the journal only.
    let obama = api.sql(READER, "SELECT embedding FROM templates WHERE subject_id = 'obama'")[0]["embedding"].clone();
    let (status, answer) =
        api.call("POST", "/v1/search", Some(READER), Some(json!({"gallery": "people", "embedding": obama})));
    assert_eq!(status, 200, "{answer}");
    let segments = || std::fs::read_dir(&journal).map(|d| d.count()).unwrap_or(0);
    assert_eq!(segments(), 1, "the search's audit row waits in the journal");
    coordinator.0.kill().unwrap(); // the coordinator dies mid-job
    coordinator.0.wait().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let _coordinator = cluster.start_coordinator_with("coordinator-2.log", Some(&config));
    assert_eq!(segments(), 0, "the next coordinator stored the journal's rows");
    let _w3 = cluster.start_worker("worker-3.log");
    let done = api.wait(&job_id, Duration::from_secs(600), |_| false);
    assert_eq!(done["state"], "completed_with_errors", "{done}\n{}", cluster.all_logs());
    assert_eq!((done["tasks"]["done"].as_u64(), done["tasks"]["failed"].as_u64()), (Some(6), Some(1)), "{done}");
    let errors = done["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{done}");
    assert!(errors[0]["input"].as_str().unwrap().ends_with("corrupt.mp4"), "{done}");
    assert!(errors[0]["message"].as_str().unwrap().contains("corrupt.mp4"), "the error names the file: {done}");
    assert!(cluster.log("coordinator-2.log").contains("resuming 1 unfinished jobs"), "{}", cluster.all_logs());

    // ---- what SQL shows: every image exactly one template, the video
    // several, the corrupt file one error row, no template twice
    let rows = api.sql(
        READER,
        &format!(
            "SELECT media_uri, count(*) AS n, count(error) AS errors, count(DISTINCT template_id) AS ids \
             FROM templates WHERE job_id = '{job_id}' GROUP BY media_uri ORDER BY media_uri"
        ),
    );
    let per_media: BTreeMap<String, (u64, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                base(r["media_uri"].as_str().unwrap()),
                (r["n"].as_u64().unwrap(), r["errors"].as_u64().unwrap(), r["ids"].as_u64().unwrap()),
            )
        })
        .collect();
    for img in ["obama2.jpg", "obama-240p.jpg", "obama_small.jpg"] {
        assert_eq!(per_media.get(img), Some(&(1, 0, 1)), "{img}: {per_media:?}");
    }
    let video = per_media["hamilton.mp4"];
    assert!(video.0 >= 2 && video.1 == 0 && video.2 == video.0, "video tracks: {per_media:?}");
    assert_eq!(per_media["corrupt.mp4"], (1, 1, 1), "{per_media:?}");

    // Staging outputs are removed once ingested (erasure need not look there).
    let outputs = bucket.join("osprey/jobs").join(&job_id).join("outputs");
    let left: Vec<_> = std::fs::read_dir(&outputs)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "parquet")).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging outputs left: {left:?}");

    // The same templates as the embedded job on the same media and settings.
    let undisturbed = undisturbed_tracks(&cluster);
    let distributed: Vec<String> = api
        .sql(
            READER,
            &format!(
                "SELECT media_uri, track_id, t_start_ms, t_end_ms, num_frames FROM templates \
                 WHERE job_id = '{job_id}' AND error IS NULL"
            ),
        )
        .iter()
        .map(|r| track_key(r))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(distributed, undisturbed, "templates differ from an undisturbed run");
    // The workers' observations: one per frame of each template, the same
    // frames and boxes as the undisturbed run's.
    let per_template = api.sql(
        READER,
        &format!(
            "SELECT t.template_id, max(t.num_frames) AS num_frames, count(o.frame) AS n FROM templates t \
             LEFT JOIN observations o ON o.template_id = t.template_id \
             WHERE t.job_id = '{job_id}' AND t.error IS NULL GROUP BY 1"
        ),
    );
    assert!(per_template.len() >= 5, "{per_template:?}");
    for r in &per_template {
        assert_eq!(r["n"], r["num_frames"], "one observation per frame: {r}");
    }
    assert_eq!(observation_keys(&api, &job_id), observation_keys(&api, "undisturbed"), "observations differ");

    // Results over REST: Obama's photos match him.
    let (status, page) = api.call("GET", &format!("/v1/jobs/{job_id}/results?limit=100"), Some(READER), None);
    assert_eq!(status, 200, "{page}");
    for r in page["rows"].as_array().unwrap() {
        if base(r["media_uri"].as_str().unwrap()).starts_with("obama") {
            assert_eq!((r["decision"].as_str(), r["subject_id"].as_str()), (Some("match"), Some("obama")), "{r}");
        }
    }
    let (status, _) = api.call("GET", &format!("/v1/jobs/{job_id}/results?limit=oops"), Some(READER), None);
    assert_eq!(status, 400);

    // ---- REST search: an upload, and 50 concurrent embedding searches
    let (ct, body) = multipart(&[("gallery", "people"), ("k", "3")], &examples.join("obama2.jpg"));
    let (status, answer) = api.raw("POST", "/v1/search", Some(READER), Some((ct, body)));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["probes"][0]["decision"], "match", "{answer}");
    assert_eq!(answer["probes"][0]["candidates"][0]["subject_id"], "obama", "{answer}");
    let embedding =
        api.sql(READER, "SELECT embedding FROM templates WHERE subject_id = 'biden'")[0]["embedding"].clone();
    let results = api.rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let req = api
                .http
                .post(format!("{}/v1/search", api.base))
                .bearer_auth(READER)
                .json(&json!({"gallery": "people", "embedding": embedding, "k": 2}));
            tasks.push(tokio::spawn(async move {
                let r = req.send().await.expect("answer");
                (r.status().as_u16(), r.json::<Value>().await.unwrap_or_default())
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    for (status, answer) in &results {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(answer["probes"][0]["candidates"][0]["subject_id"], "biden", "{answer}");
    }
    let (status, body) =
        api.call("POST", "/v1/search", Some(READER), Some(json!({"gallery": "people", "embedding": [1.0, 2.0]})));
    assert_eq!(status, 400, "wrong width: {body}");

    // ---- audit: admins see every search, readers cannot
    let audit = api.sql(ADMIN, "SELECT source, count(*) AS n FROM audit GROUP BY source ORDER BY source");
    let counts: BTreeMap<String, u64> =
        audit.iter().map(|r| (r["source"].as_str().unwrap().to_string(), r["n"].as_u64().unwrap())).collect();
    assert_eq!(counts.get("rest").copied(), Some(52), "1 before the kill, an upload and 50 embeddings: {counts:?}");
    assert!(counts.get("job").copied().unwrap_or(0) >= 5, "{counts:?}");
    let (status, _) = api.call("POST", "/v1/sql", Some(READER), Some(json!({"query": "SELECT * FROM audit"})));
    assert!((400..500).contains(&status), "readers cannot read the audit table");

    // ---- erasure
    let biden = api.sql(READER, "SELECT template_id FROM templates WHERE subject_id = 'biden'");
    let biden_observations = format!(
        "SELECT o.frame FROM observations o WHERE o.template_id = '{}'",
        biden[0]["template_id"].as_str().unwrap()
    );
    assert_eq!(api.sql(READER, &biden_observations).len(), 1, "the enrolment photo's detection");
    let (status, erased) = api.call("DELETE", "/v1/galleries/people/subjects/biden", Some(OPERATOR), None);
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["index_templates"], 1, "{erased}");
    assert_eq!(erased["observation_rows"], 1, "{erased}");
    assert!(api.sql(READER, &biden_observations).is_empty());
    let (_, gallery) = api.call("GET", "/v1/galleries/people", Some(READER), None);
    assert_eq!(gallery["subjects"], 3, "{gallery}");
    assert!(api.sql(READER, "SELECT * FROM templates WHERE subject_id = 'biden'").is_empty());
    assert_eq!(api.call("DELETE", "/v1/galleries/people/subjects/biden", Some(OPERATOR), None).0, 404);

    let (status, metrics) = api.call("GET", "/metrics", Some(READER), None);
    assert_eq!(status, 200);
    assert!(metrics.as_str().unwrap().contains("osprey_searches_total 51"), "{metrics}");
}

/// Bodies through the services: an enrol job with `modalities: [face, body]`
/// fills the gallery's body index (`people.body`), a body search job over a
/// Market-1501 camera frame and three seconds of vtest.avi finds person 0001
/// and tracks the pedestrians, results say which modality matched, and
/// erasing a subject known only by their body works from the gallery's name.
#[test]
fn body_jobs_enrol_and_search_people_through_the_services() {
    let s3 = s3_server::start_s3("media");
    let bucket = s3.dir.path().join("media");
    let put = |key: &str, from: &Path| {
        let to = bucket.join("osprey/media").join(key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    };
    let market = data().join("person_search_demo");
    put("subjects/p0001/crop.jpg", &market.join("query/0001_c1s1_001051_00.jpg"));
    put("subjects/obama/obama.jpg", &data().join("face_recognition/examples/obama.jpg"));
    put("probes/c1s1_001051.jpg", &market.join("data/samples/c1s1_001051.jpg"));
    let clip = tempfile::tempdir().unwrap();
    let plaza = clip.path().join("plaza.avi");
    let cut = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(data().join("debian-opencv-doc/vtest.avi"))
        .args(["-t", "3", "-c", "copy"])
        .arg(&plaza)
        .status()
        .expect("ffmpeg runs");
    assert!(cut.success());
    put("probes/plaza.avi", &plaza);

    let cluster = Cluster {
        s3_port: s3.port,
        root: "s3://media/osprey".into(),
        port: free_port(),
        logs: tempfile::tempdir().unwrap(),
    };
    let _coordinator = cluster.start_coordinator("coordinator.log");
    let _worker = cluster.start_worker("worker.log");
    let api = Api::new(cluster.port);

    let enroll = json!({"kind": "enroll", "gallery": "people", "inputs": ["media/subjects/"], "subjects_from": "dirs",
                        "modalities": ["face", "body"]});
    let (status, body) = api.call("POST", "/v1/jobs", Some(OPERATOR), Some(enroll));
    assert_eq!(status, 202, "{body}");
    let enrolled = api.wait(body["job_id"].as_str().unwrap(), Duration::from_secs(300), |_| false);
    assert_eq!(enrolled["state"], "completed", "{enrolled}\n{}", cluster.all_logs());
    let (_, bodies) = api.call("GET", "/v1/galleries/people.body", Some(READER), None);
    assert_eq!(bodies["subject_ids"], json!(["obama", "p0001"]), "{bodies}");
    assert_eq!(bodies["model"], "dinov2-vits14-imgfocus-0.1.1", "{bodies}");
    let (_, faces) = api.call("GET", "/v1/galleries/people", Some(READER), None);
    assert_eq!(faces["subject_ids"], json!(["obama"]), "the Market crop has no face: {faces}");

    // Options are checked at submission, with the reason.
    let bad: [(Value, u16, &str); 3] = [
        (json!({"modalities": ["body"], "gallery": "nobody"}), 404, "no gallery `nobody`"),
        (json!({"modalities": ["body"], "body_model": "osnet-x1_0"}), 400, "needs its checkpoint"),
        (json!({"modalities": ["gait"]}), 400, "modality `gait` needs `body` too"),
    ];
    for (extra, want_status, want) in bad {
        let mut spec = json!({"kind": "search", "gallery": "people", "inputs": ["media/probes/"]});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, body) = api.call("POST", "/v1/jobs", Some(OPERATOR), Some(spec.clone()));
        assert_eq!(status, want_status, "{spec}: {body}");
        assert!(body.to_string().contains(want), "{spec}: {body}");
    }

    // A body search job (the appearance model's cosines run high for
    // everyone, so the threshold is given rather than calibrated on two).
    let search = json!({"kind": "search", "gallery": "people", "inputs": ["media/probes/"], "modalities": ["body"],
                        "threshold": 0.93, "sample_fps": 5});
    let (status, body) = api.call("POST", "/v1/jobs", Some(OPERATOR), Some(search));
    assert_eq!(status, 202, "{body}");
    let job_id = body["job_id"].as_str().unwrap().to_string();
    let done = api.wait(&job_id, Duration::from_secs(600), |_| false);
    assert_eq!(done["state"], "completed", "{done}\n{}", cluster.all_logs());
    let (status, page) = api.call("GET", &format!("/v1/jobs/{job_id}/results?limit=1000"), Some(READER), None);
    assert_eq!(status, 200, "{page}");
    let rows = page["rows"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["modality"] == "body"), "{page}");
    let in_frame: Vec<&Value> =
        rows.iter().filter(|r| base(r["media_uri"].as_str().unwrap()) == "c1s1_001051.jpg").collect();
    assert!(in_frame.len() >= 4, "pedestrians in the camera frame: {page}");
    let matches: Vec<&&Value> = in_frame.iter().filter(|r| r["decision"] == "match").collect();
    assert_eq!(matches.len(), 1, "{page}");
    assert_eq!(matches[0]["subject_id"], "p0001", "{page}");
    // The plaza's pedestrians: person tracks with one observation per frame.
    let tracks = api.sql(
        READER,
        &format!(
            "SELECT t.template_id, max(t.num_frames) AS num_frames, count(o.frame) AS n FROM templates t \
             JOIN observations o ON o.template_id = t.template_id \
             WHERE t.job_id = '{job_id}' AND t.modality = 'body' AND t.media_uri LIKE '%plaza.avi' GROUP BY 1"
        ),
    );
    assert!(tracks.len() >= 3, "{tracks:?}");
    for r in &tracks {
        assert_eq!(r["n"], r["num_frames"], "one observation per frame: {r}");
    }
    let audit = api.sql(ADMIN, &format!("SELECT DISTINCT gallery FROM audit WHERE job_id = '{job_id}'"));
    assert_eq!(audit, vec![json!({"gallery": "people.body"})], "body searches are audited against the body index");
    let outputs = bucket.join("osprey/jobs").join(&job_id).join("outputs");
    let left: Vec<_> = std::fs::read_dir(&outputs)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "parquet")).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging outputs left: {left:?}");

    // Fusion in a search job: faces and bodies of the same inputs, decided
    // per person. A person seen by one modality is decided exactly as that
    // modality's own search decides; Obama's photo gives a face inside a
    // body, fused into one answer with both scores.
    put("fused/obama2.jpg", &data().join("face_recognition/examples/obama2.jpg"));
    let search = json!({"kind": "search", "gallery": "people", "inputs": ["media/fused/", "media/probes/c1s1_001051.jpg"],
                        "modalities": ["face", "body"], "threshold": 0.93, "fusion": "quality"});
    let (status, body) = api.call("POST", "/v1/jobs", Some(OPERATOR), Some(search));
    assert_eq!(status, 202, "{body}");
    let fused_job = body["job_id"].as_str().unwrap().to_string();
    let done = api.wait(&fused_job, Duration::from_secs(600), |_| false);
    assert_eq!(done["state"], "completed", "{done}\n{}", cluster.all_logs());
    let (status, page) = api.call("GET", &format!("/v1/jobs/{fused_job}/results?limit=1000"), Some(READER), None);
    assert_eq!(status, 200, "{page}");
    let rows = page["rows"].as_array().unwrap();
    let (fused, own): (Vec<&Value>, Vec<&Value>) = rows.iter().partition(|r| r["fusion"] == "quality");
    let obama: Vec<&&Value> = fused.iter().filter(|r| base(r["media_uri"].as_str().unwrap()) == "obama2.jpg").collect();
    assert_eq!(obama.len(), 1, "one person in Obama's photo: {page}");
    assert_eq!(obama[0]["subject_id"], "obama", "{page}");
    assert!(obama[0]["face_score"].as_f64().unwrap() > 0.8 && obama[0]["body_weight"].as_f64().is_some(), "{page}");
    let pedestrians: Vec<&&Value> =
        fused.iter().filter(|r| base(r["media_uri"].as_str().unwrap()) == "c1s1_001051.jpg").collect();
    assert!(pedestrians.len() >= 4, "{page}");
    for p in &pedestrians {
        let body = own.iter().find(|r| r["probe_template_id"] == p["probe_template_id"]).expect("its body row");
        assert!(p["face_score"].is_null(), "no face on a Market pedestrian: {p}");
        assert_eq!((&p["decision"], &p["subject_id"]), (&body["decision"], &body["subject_id"]), "{p} vs {body}");
    }
    let audited = api.sql(ADMIN, &format!("SELECT count(*) AS n FROM audit WHERE job_id = '{fused_job}' AND gallery = 'people' AND probe IN (SELECT probe_template_id FROM results WHERE fusion = 'quality')"));
    assert_eq!(audited[0]["n"].as_u64(), Some(fused.len() as u64), "a fused decision is audited: {audited:?}");

    // REST: one person's face and body embeddings in one search, fused.
    let embedding = |modality: &str| {
        let q =
            format!("SELECT embedding FROM templates WHERE subject_id = 'obama' AND modality = '{modality}' LIMIT 1");
        api.sql(READER, &q)[0]["embedding"].clone()
    };
    let person = json!({"gallery": "people", "threshold": 0.9, "inputs": [
        {"modality": "face", "embedding": embedding("face"), "quality": 0.9},
        {"modality": "body", "embedding": embedding("body"), "quality": 0.4}]});
    let (status, answer) = api.call("POST", "/v1/search", Some(READER), Some(person));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["probes"].as_array().unwrap().len(), 2, "{answer}");
    let fused = &answer["fused"][0];
    assert_eq!((&fused["decision"], &fused["fusion"]), (&json!("match"), &json!("quality")), "{answer}");
    assert_eq!(fused["candidates"][0]["subject_id"], "obama", "{answer}");
    assert!(fused["candidates"][0]["face_score"].as_f64().unwrap() > 0.99, "{answer}");
    assert!(fused["candidates"][0]["body_score"].as_f64().unwrap() > 0.99, "{answer}");
    for p in answer["probes"].as_array().unwrap() {
        assert_eq!(p["person"], fused["person"], "{answer}");
    }
    // Without a raw threshold the fused one is calibrated on the gallery's
    // people; two are too few for FPIR 1 %, so each modality's own decides.
    let person = json!({"gallery": "people", "inputs": [
        {"modality": "face", "embedding": embedding("face")}, {"modality": "body", "embedding": embedding("body")}]});
    let (status, answer) = api.call("POST", "/v1/search", Some(READER), Some(person));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["fused"][0]["candidates"][0]["subject_id"], "obama", "{answer}");
    // An upload searched by face and body: the face is linked to the person around it.
    let (ct, body) = multipart(
        &[("gallery", "people"), ("modalities", "face,body"), ("threshold", "0.93")],
        &data().join("face_recognition/examples/obama2.jpg"),
    );
    let (status, answer) = api.raw("POST", "/v1/search", Some(READER), Some((ct, body)));
    assert_eq!(status, 200, "{answer}");
    let probes = answer["probes"].as_array().unwrap();
    let face = probes.iter().find(|p| p["modality"] == "face").expect("a face");
    let person =
        probes.iter().find(|p| p["modality"] == "body" && p["person"] == face["person"]).expect("the face's person");
    let fused = answer["fused"].as_array().unwrap().iter().find(|f| f["person"] == person["person"]).expect("fused");
    assert_eq!(fused["candidates"][0]["subject_id"], "obama", "{answer}");
    assert!(fused["candidates"][0]["face_weight"].as_f64().is_some(), "{answer}");
    // Malformed multimodal searches are refused with the reason.
    let face = embedding("face");
    let bad = [
        (json!({"gallery": "people", "embedding": face, "inputs": []}), 400, "not both"),
        (
            json!({"gallery": "people", "inputs": [{"modality": "face", "embedding": face}, {"modality": "face", "embedding": face}]}),
            400,
            "one per modality",
        ),
        (json!({"gallery": "people", "inputs": [{"modality": "gait", "embedding": face}]}), 404, "has no gait index"),
        (
            json!({"gallery": "people", "inputs": [{"modality": "face", "embedding": face}], "fusion": "mean"}),
            400,
            "unknown fusion rule",
        ),
        (json!({"gallery": "people", "modality": "body", "embedding": face}), 400, "holds 384-d templates"),
    ];
    for (request, want_status, want) in bad {
        let (status, body) = api.call("POST", "/v1/search", Some(READER), Some(request.clone()));
        assert_eq!(status, want_status, "{request}: {body}");
        assert!(body.to_string().contains(want), "{request}: {body}");
    }

    // p0001 is only in the body index; erasing them through the gallery's name reaches it.
    let (status, erased) = api.call("DELETE", "/v1/galleries/people/subjects/p0001", Some(OPERATOR), None);
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["index_templates"], 1, "{erased}");
    let (_, bodies) = api.call("GET", "/v1/galleries/people.body", Some(READER), None);
    assert_eq!(bodies["subject_ids"], json!(["obama"]), "{bodies}");
    assert!(api.sql(READER, "SELECT * FROM templates WHERE subject_id = 'p0001'").is_empty());
    assert!(api.sql(READER, "SELECT * FROM results WHERE subject_id = 'p0001'").is_empty());
}

/// The seed's body and gait recognisers through the services, on the
/// reference fixtures' random weights (the mechanics, never accuracy): an
/// enrol job with `body_model: osnet-x1_0` and `gait_model: gaitbase` makes
/// one index per modality with that model's templates, gait templates come
/// from body tracks' silhouettes and link to them by `person_track_id`, and
/// a search job of the same walk finds the walker's own gait template (the
/// same silhouettes give the same template, whatever the weights).
#[test]
fn gait_and_body_recognisers_run_in_service_jobs() {
    let s3 = s3_server::start_s3("media");
    let bucket = s3.dir.path().join("media");
    let put = |key: &str, from: &Path| {
        let to = bucket.join("osprey").join(key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    };
    put("weights/osnet.safetensors", &common::seed_fixture("osnet_x1_0.weights.f16.safetensors"));
    put("weights/gaitbase.safetensors", &common::seed_fixture("gaitbase.weights.f16.safetensors"));
    // One person walking indoors in front of a still camera, 6 s.
    let walk = data().join("All-in-One-Gait/history_Inputvideos/demo3.mp4");
    put("media/subjects/walker/walk.mp4", &walk);
    put("media/probes/walk.mp4", &walk);

    let cluster = Cluster {
        s3_port: s3.port,
        root: "s3://media/osprey".into(),
        port: free_port(),
        logs: tempfile::tempdir().unwrap(),
    };
    let _coordinator = cluster.start_coordinator("coordinator.log");
    let _worker = cluster.start_worker("worker.log");
    let api = Api::new(cluster.port);
    let models = json!({"modalities": ["body", "gait"], "sample_fps": "every:2",
                        "body_model": "osnet-x1_0", "body_weights": "weights/osnet.safetensors",
                        "gait_model": "gaitbase", "gait_weights": "weights/gaitbase.safetensors"});
    let with_models = |spec: Value| {
        let mut spec = spec;
        spec.as_object_mut().unwrap().extend(models.as_object().unwrap().clone());
        spec
    };

    let enroll = with_models(json!({"kind": "enroll", "gallery": "walkers", "inputs": ["media/subjects/"],
                                    "subjects_from": "dirs"}));
    let (status, body) = api.call("POST", "/v1/jobs", Some(OPERATOR), Some(enroll));
    assert_eq!(status, 202, "{body}");
    let enrolled = api.wait(body["job_id"].as_str().unwrap(), Duration::from_secs(600), |_| false);
    assert_eq!(enrolled["state"], "completed", "{enrolled}\n{}", cluster.all_logs());
    for (gallery, model, dim) in [("walkers.body", "osnet-x1_0", 512), ("walkers.gait", "gaitbase", 4096)] {
        let (status, g) = api.call("GET", &format!("/v1/galleries/{gallery}"), Some(READER), None);
        assert_eq!(status, 200, "{gallery}: {g}");
        assert_eq!((g["model"].as_str(), g["dim"].as_u64()), (Some(model), Some(dim)), "{g}");
        assert_eq!(g["subject_ids"], json!(["walker"]), "{g}");
    }
    // Each gait template belongs to an enrolled body track of the walker.
    let linked = api.sql(
        READER,
        "SELECT g.num_frames, g.quality, b.silhouette_frames FROM templates g \
         JOIN templates b ON b.template_id = g.person_track_id \
         WHERE g.modality = 'gait' AND b.modality = 'body' AND g.subject_id = 'walker'",
    );
    assert!(!linked.is_empty(), "gait templates link to their body tracks");
    for r in &linked {
        let used = r["num_frames"].as_i64().unwrap();
        assert!(used >= 25 && used <= r["silhouette_frames"].as_i64().unwrap(), "{r}");
        assert!(r["quality"].as_f64().unwrap() > 0.0, "{r}");
    }

    // A gait search needs a gallery with a gait index of the same model.
    let wrong = with_models(json!({"kind": "search", "gallery": "walkers", "inputs": ["media/probes/"]}));
    let mut wrong = wrong;
    wrong["body_model"] = json!(null);
    wrong["body_weights"] = json!(null);
    let (status, body) = api.call("POST", "/v1/jobs", Some(OPERATOR), Some(wrong));
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("set `body_model` to `osnet-x1_0`"), "{body}");

    let search = with_models(json!({"kind": "search", "gallery": "walkers", "inputs": ["media/probes/"],
                                    "threshold": 0.5}));
    let (status, body) = api.call("POST", "/v1/jobs", Some(OPERATOR), Some(search));
    assert_eq!(status, 202, "{body}");
    let job_id = body["job_id"].as_str().unwrap().to_string();
    let done = api.wait(&job_id, Duration::from_secs(600), |_| false);
    assert_eq!(done["state"], "completed", "{done}\n{}", cluster.all_logs());
    let (status, page) = api.call("GET", &format!("/v1/jobs/{job_id}/results?limit=1000"), Some(READER), None);
    assert_eq!(status, 200, "{page}");
    let rows = page["rows"].as_array().unwrap();
    let gait: Vec<&Value> = rows.iter().filter(|r| r["modality"] == "gait").collect();
    assert!(!gait.is_empty(), "gait results: {page}");
    let best = gait.iter().map(|r| r["score"].as_f64().unwrap()).fold(f64::MIN, f64::max);
    assert!(best > 0.999, "the same walk gives the same gait template: {page}");
    assert!(gait.iter().any(|r| r["subject_id"] == "walker" && r["decision"] == "match"), "{page}");
    assert!(rows.iter().any(|r| r["modality"] == "body"), "body results too: {page}");
    // Body tracks too short for gait are recorded with the reason.
    let probes = api.sql(
        READER,
        &format!(
            "SELECT modality, model, error, embedding IS NULL AS empty FROM templates WHERE job_id = '{job_id}' \
             AND modality = 'gait'"
        ),
    );
    for r in &probes {
        assert_eq!(r["model"], "gaitbase", "{r}");
        assert_eq!(r["empty"].as_bool(), Some(!r["error"].is_null()), "an error or an embedding: {r}");
    }
    let audit = api.sql(ADMIN, &format!("SELECT DISTINCT gallery FROM audit WHERE job_id = '{job_id}' ORDER BY 1"));
    // Each index's searches, and the fused decisions against the gallery's name.
    let want = ["walkers", "walkers.body", "walkers.gait"].map(|g| json!({"gallery": g}));
    assert_eq!(audit, want.to_vec());
}

/// Job `job_id`'s observations as sorted keys (media, track, frame, time, box).
#[test]
fn cancel_stops_a_running_video_and_pruned_jobs_are_read_from_the_store() {
    let examples = data().join("face_recognition/examples");
    let s3 = s3_server::start_s3("media");
    let bucket = s3.dir.path().join("media");
    let put = |key: &str, name: &str| {
        let to = bucket.join(key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(examples.join(name), to).unwrap();
    };
    put("osprey/media/subjects/obama/obama.jpg", "obama.jpg");
    put("osprey/media/subjects/biden/biden.jpg", "biden.jpg");
    put("osprey/media/probes/obama2.jpg", "obama2.jpg");
    put("osprey/media/clips/hamilton.mp4", "short_hamilton_clip.mp4");
    let cluster = Cluster {
        s3_port: s3.port,
        root: "s3://media/osprey".into(),
        port: free_port(),
        logs: tempfile::tempdir().unwrap(),
    };
    // Heartbeats every second; one finished job kept in memory, however recent.
    let config = cluster.logs.path().join("osprey.toml");
    std::fs::write(&config, "lease_seconds = 3\nmax_finished_jobs_in_memory = 1\nfinished_jobs_memory_seconds = 0\n")
        .unwrap();
    let mut coordinator = cluster.start_coordinator_with("coordinator-1.log", Some(&config));
    let _worker = cluster.start_worker("worker-1.log");
    let api = Api::new(cluster.port);
    let submit = |spec: Value| {
        let (status, body) = api.call("POST", "/v1/jobs", Some(OPERATOR), Some(spec));
        assert_eq!(status, 202, "{body}");
        body["job_id"].as_str().unwrap().to_string()
    };

    let enrol =
        submit(json!({"kind": "enroll", "gallery": "people", "inputs": ["media/subjects/"], "subjects_from": "dirs"}));
    let enrolled = api.wait(&enrol, Duration::from_secs(300), |_| false);
    assert_eq!(enrolled["state"], "completed", "{enrolled}\n{}", cluster.all_logs());

    // ---- a job cancelled while the worker analyses every frame of a video
    let video = submit(json!({
        "kind": "search", "gallery": "people", "inputs": ["media/clips/hamilton.mp4"],
        "sample_fps": "all", "segment_seconds": 600
    }));
    let busy = api.wait(&video, Duration::from_secs(300), |j| j["frames"].as_u64() > Some(0));
    assert_eq!(busy["state"], "running", "{busy}\n{}", cluster.all_logs());
    let (status, body) = api.call("POST", &format!("/v1/jobs/{video}/cancel"), Some(OPERATOR), None);
    assert_eq!((status, body["state"].as_str()), (200, Some("cancelled")), "{body}");
    let t0 = Instant::now();
    // (`wait` returns at once for an ended job: poll until its task stops.)
    let stopped = loop {
        let (_, j) = api.call("GET", &format!("/v1/jobs/{video}"), Some(READER), None);
        if j["tasks"]["running"] == 0 {
            break j;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "still running: {j}\n{}", cluster.all_logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(stopped["tasks"]["failed"], 1, "the task stopped: {stopped}\n{}", cluster.all_logs());
    assert!(stopped["frames"].as_u64() < Some(240), "stopped well before the clip's end: {stopped}");
    eprintln!("the cancelled task stopped {:.1} s after the cancel", t0.elapsed().as_secs_f64());
    assert!(cluster.log("worker-1.log").contains("analysis cancelled"), "{}", cluster.all_logs());
    // The worker takes the next task.
    let search = submit(json!({"kind": "search", "gallery": "people", "inputs": ["media/probes/obama2.jpg"]}));
    let searched = api.wait(&search, Duration::from_secs(120), |_| false);
    assert_eq!(searched["state"], "completed", "{searched}\n{}", cluster.all_logs());

    // ---- the two older finished jobs leave memory and are read from the store
    let t0 = Instant::now();
    loop {
        let (_, metrics) = api.call("GET", "/metrics", Some(READER), None);
        if metrics.as_str().unwrap_or_default().contains("osprey_jobs_in_memory 1\n") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "not pruned: {metrics}\n{}", cluster.all_logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let check_store = |api: &Api| {
        let (status, old) = api.call("GET", &format!("/v1/jobs/{enrol}"), Some(READER), None);
        assert_eq!(status, 200, "{old}");
        assert_eq!((old["state"].as_str(), old["tasks"]["done"].as_u64()), (Some("completed"), Some(2)), "{old}");
        assert_eq!(old["templates"], enrolled["templates"], "{old}");
        let (status, cancelled) = api.call("GET", &format!("/v1/jobs/{video}"), Some(READER), None);
        assert_eq!((status, cancelled["state"].as_str()), (200, Some("cancelled")), "{cancelled}");
        let (status, results) = api.call("GET", &format!("/v1/jobs/{video}/results"), Some(READER), None);
        assert_eq!((status, results["total"].as_u64()), (200, Some(0)), "{results}");
        let (status, again) = api.call("POST", &format!("/v1/jobs/{video}/cancel"), Some(OPERATOR), None);
        assert_eq!((status, again["state"].as_str()), (200, Some("cancelled")), "{again}");
        let ids = |q: &str| {
            let (status, list) = api.call("GET", &format!("/v1/jobs{q}"), Some(READER), None);
            assert_eq!(status, 200, "{list}");
            let ids: Vec<String> =
                list["jobs"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap().into()).collect();
            (list["total"].as_u64().unwrap(), ids)
        };
        assert_eq!(ids(""), (3, vec![search.clone(), video.clone(), enrol.clone()]));
        assert_eq!(ids("?limit=1"), (3, vec![search.clone()]));
        assert_eq!(ids("?offset=2&limit=1"), (3, vec![enrol.clone()]));
        assert_eq!(ids("?state=cancelled"), (1, vec![video.clone()]));
        assert_eq!(ids("?state=completed&gallery=people"), (2, vec![search.clone(), enrol.clone()]));
        assert_eq!(ids("?gallery=nobody"), (0, vec![]));
        assert_eq!(api.call("GET", "/v1/jobs/no-such-job", Some(READER), None).0, 404);
    };
    check_store(&api);

    // ---- a coordinator started again loads only the retained finished job
    coordinator.0.kill().unwrap();
    coordinator.0.wait().unwrap();
    let _coordinator = cluster.start_coordinator_with("coordinator-2.log", Some(&config));
    assert!(cluster.log("coordinator-2.log").contains("2 finished jobs left in the store"), "{}", cluster.all_logs());
    // A new client: the old one's pooled connection died with the coordinator.
    check_store(&Api::new(cluster.port));
}

fn observation_keys(api: &Api, job_id: &str) -> Vec<String> {
    let rows = api.sql(
        READER,
        &format!(
            "SELECT t.media_uri, t.track_id, o.frame, o.t_ms, o.bbox.x AS x, o.bbox.y AS y, o.bbox.w AS w, o.bbox.h AS h \
             FROM observations o JOIN templates t ON o.template_id = t.template_id WHERE t.job_id = '{job_id}'"
        ),
    );
    let mut keys: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} track={} frame={} t={} box={},{},{},{}",
                base(r["media_uri"].as_str().unwrap()),
                r["track_id"],
                r["frame"],
                r["t_ms"],
                r["x"],
                r["y"],
                r["w"],
                r["h"]
            )
        })
        .collect();
    keys.sort();
    keys
}

fn track_key(r: &Value) -> String {
    format!(
        "{} track={} {}-{} frames={}",
        base(r["media_uri"].as_str().unwrap()),
        r["track_id"],
        r["t_start_ms"],
        r["t_end_ms"],
        r["num_frames"]
    )
}

/// The same search run by the embedded `osprey run search` (one process,
/// nothing killed), as sorted track keys.
fn undisturbed_tracks(cluster: &Cluster) -> Vec<String> {
    let out = cluster
        .command(
            &[
                "run",
                "search",
                "--root",
                &cluster.root,
                "--gallery",
                "people",
                "--sample-fps",
                "1",
                "--segment-seconds",
                "4",
                "--format",
                "json",
                "--job-id",
                "undisturbed",
                "s3://media/osprey/media/probes/",
            ],
            "undisturbed.log",
        )
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success() || !out.stdout.is_empty(), "{}", cluster.log("undisturbed.log"));
    let api = Api::new(cluster.port);
    let rows = api.sql(
        READER,
        "SELECT media_uri, track_id, t_start_ms, t_end_ms, num_frames FROM templates \
         WHERE job_id = 'undisturbed' AND error IS NULL",
    );
    let keys: std::collections::BTreeSet<String> = rows.iter().map(track_key).collect();
    keys.into_iter().collect()
}

/// schemathesis (PyPI) generates requests from schemas/openapi.json, valid
/// and malformed, for every operation and every role's key: the API must
/// answer each with a documented 2xx or 4xx, never a 5xx.
#[test]
fn api_never_answers_malformed_requests_with_a_server_error() {
    let root = tempfile::tempdir().unwrap();
    let cluster = Cluster {
        s3_port: 9, // unused: the root is local
        root: root.path().display().to_string(),
        port: free_port(),
        logs: tempfile::tempdir().unwrap(),
    };
    let _coordinator = cluster.start_coordinator("coordinator.log");
    let api = Api::new(cluster.port);
    let (status, body) = api.call("POST", "/v1/galleries", Some(OPERATOR), Some(json!({"name": "people"})));
    assert_eq!(status, 201, "{body}");
    let python = std::env::var("OSPREY_PYTHON").unwrap_or_else(|_| "python3".into());
    for key in [ADMIN, READER] {
        let out = Command::new(&python)
            .args(["-m", "schemathesis.cli", "run"])
            .arg(repo().join("schemas/openapi.json"))
            .args(["--url", &api.base, "--header", &format!("Authorization: Bearer {key}")])
            .args(["--checks", "not_a_server_error", "--max-examples", "15"])
            .args(["--generation-deterministic", "--no-color"])
            .env("SCHEMATHESIS_HOOKS", "")
            .current_dir(cluster.logs.path()) // its cache folder goes there
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run `{python}` ({e}): run infra/scripts/setup.sh and set OSPREY_PYTHON")
            });
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "schemathesis found failures:\n{text}\n{}", cluster.all_logs());
    }
}
