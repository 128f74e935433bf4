//! Batched concurrent REST search against a real coordinator over loopback
//! HTTP: many concurrent searches (batched into shared FAISS calls) each get
//! the answer a search of the same probe alone gets, and a probe of the
//! wrong width fails alone among good ones.

use std::sync::Arc;

use osprey_store::{Root, Template};
use serde_json::{Value, json};

const KEY: &str = "admin-key-0123456789";
const DIM: usize = 128;

/// Deterministic unit vectors: `subjects` random centres, each row its
/// subject's centre plus noise (splitmix64 → Box–Muller).
struct Vectors(u64);

impl Vectors {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    fn unit(&mut self, around: Option<&[f32]>, noise: f32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIM).map(|i| around.map_or(0.0, |c| c[i]) + noise * self.normal()).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }
}

struct Server {
    search: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _root: tempfile::TempDir,
}

/// A coordinator over a fresh root holding gallery `g` (Flat index, 3000
/// templates of 300 subjects, calibrated), and the probes to search it
/// (near enrolled subjects and not).
async fn start(wait_us: u64, max_batch: usize) -> (Server, Vec<Vec<f32>>) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::open(&dir.path().display().to_string()).unwrap();
    let mut rng = Vectors(7);
    let centres: Vec<Vec<f32>> = (0..300).map(|_| rng.unit(None, 1.0)).collect();
    let templates: Vec<Template> = (0..3000)
        .map(|i| Template {
            template_id: format!("t{i}"),
            gallery: Some("g".into()),
            subject_id: Some(format!("s{:03}", i % 300)),
            model: osprey_models::MODEL_NAME.into(),
            embedding: Some(rng.unit(Some(&centres[i % 300]), 0.08)),
            ..Default::default()
        })
        .collect();
    let opts = osprey_index::EnrollOptions {
        index_factory: Some("Flat".into()),
        calibrate_fpir: Some(0.01),
        ..Default::default()
    };
    osprey_index::enroll(&root, "g", "batch", templates, &[], &opts).await.unwrap();
    let probes: Vec<Vec<f32>> = (0..96)
        .map(|i| if i % 3 == 2 { rng.unit(None, 1.0) } else { rng.unit(Some(&centres[i * 7 % 300]), 0.1) })
        .collect();

    let config = osprey_coordinator::Config {
        root: root.url().to_string(),
        api_keys: vec![format!("admin:{KEY}")],
        search_batch_wait_us: wait_us,
        search_batch_max: max_batch,
        ..Default::default()
    };
    let coordinator = osprey_coordinator::Coordinator::start(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let search = format!("http://{}/v1/search", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(osprey_coordinator::serve(coordinator, listener, async move {
        stopped.await.ok();
    }));
    let server = Server { search, http: reqwest::Client::new(), stop: Some(stop), _root: dir };
    (server, probes)
}

impl Server {
    async fn search(&self, body: Value) -> (u16, Value) {
        let r = self.http.post(&self.search).bearer_auth(KEY).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            s.send(()).ok();
        }
    }
}

/// The body of probe `i`'s search: `k` and the threshold vary so that one
/// batch holds several `k` (several FAISS calls) and operating points.
fn ask(i: usize, probe: &[f32]) -> Value {
    let k = [1, 3, 5, 10][i % 4];
    let mut body = json!({"gallery": "g", "embedding": probe, "k": k});
    if i.is_multiple_of(5) {
        body["threshold"] = json!(0.3);
    }
    body
}

/// Whether two answers to one probe agree: the same decision, threshold and
/// candidates (subjects and templates in order; scores to float rounding,
/// since FAISS may compute a batch through BLAS and a lone probe without).
fn same_answer(a: &Value, b: &Value) -> Result<(), String> {
    let (pa, pb) = (&a["probes"][0], &b["probes"][0]);
    if a["threshold"] != b["threshold"] || pa["decision"] != pb["decision"] {
        return Err(format!("decision or threshold differ:\n{a}\n{b}"));
    }
    let (ca, cb) = (pa["candidates"].as_array().unwrap(), pb["candidates"].as_array().unwrap());
    if ca.len() != cb.len() {
        return Err(format!("candidate counts differ:\n{a}\n{b}"));
    }
    for (x, y) in ca.iter().zip(cb) {
        let close = (x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs() < 1e-4;
        if x["subject_id"] != y["subject_id"] || x["template_id"] != y["template_id"] || !close {
            return Err(format!("candidates differ:\n{a}\n{b}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_searches_get_the_answers_of_lone_searches() {
    // A long gathering window, so concurrent searches surely share batches.
    let (server, probes) = start(50_000, 64).await;
    let mut alone = Vec::new();
    for (i, p) in probes.iter().enumerate() {
        let (status, body) = server.search(ask(i, p)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["probes"][0]["candidates"].as_array().unwrap().len(), [1, 3, 5, 10][i % 4]);
        alone.push(body);
    }
    assert!(alone.iter().any(|b| b["probes"][0]["decision"] == "match"));
    assert!(alone.iter().any(|b| b["probes"][0]["decision"] == "unknown"));
    let server = Arc::new(server);
    for round in 0..3 {
        let tasks: Vec<_> = probes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (server, body) = (Arc::clone(&server), ask(i, p));
                tokio::spawn(async move { server.search(body).await })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            let (status, body) = t.await.unwrap();
            assert_eq!(status, 200, "{body}");
            if let Err(e) = same_answer(&body, &alone[i]) {
                panic!("round {round}, probe {i}: the concurrent answer is not the lone one: {e}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_probe_fails_alone_in_its_batch() {
    let (server, probes) = start(50_000, 64).await;
    let server = Arc::new(server);
    let mut alone = Vec::new();
    for (i, p) in probes.iter().take(24).enumerate() {
        alone.push(server.search(ask(i, p)).await.1);
    }
    // 24 good probes, one 64-wide probe and one for a gallery that does not
    // exist, all at once.
    let mut bodies: Vec<Value> = probes.iter().take(24).enumerate().map(|(i, p)| ask(i, p)).collect();
    bodies.insert(11, json!({"gallery": "g", "embedding": &probes[0][..64], "k": 5}));
    bodies.insert(17, json!({"gallery": "nowhere", "embedding": &probes[0], "k": 5}));
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let server = Arc::clone(&server);
            tokio::spawn(async move { server.search(body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let (bad_status, bad) = answers.remove(11);
    assert_eq!(bad_status, 400, "{bad}");
    let message = bad["error"]["message"].as_str().unwrap();
    assert!(message.contains("64 values") && message.contains("128-d"), "{message}");
    let (missing_status, missing) = answers.remove(16);
    assert_eq!(missing_status, 404, "{missing}");
    assert!(missing["error"]["message"].as_str().unwrap().contains("no gallery `nowhere`"), "{missing}");
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "probe {i}: {body}");
        same_answer(body, &alone[i]).unwrap_or_else(|e| panic!("probe {i}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_batching_the_answers_are_the_same() {
    // search_batch_max 1: every search is its own batch.
    let (server, probes) = start(0, 1).await;
    let server = Arc::new(server);
    let mut alone = Vec::new();
    for (i, p) in probes.iter().take(16).enumerate() {
        alone.push(server.search(ask(i, p)).await.1);
    }
    let tasks: Vec<_> = probes
        .iter()
        .take(16)
        .enumerate()
        .map(|(i, p)| {
            let (server, body) = (Arc::clone(&server), ask(i, p));
            tokio::spawn(async move { server.search(body).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        same_answer(&body, &alone[i]).unwrap_or_else(|e| panic!("probe {i}: {e}"));
    }
}
