//! Enrolment group commits: a coordinator stopped between two gallery
//! snapshots (its runtime dropped, as abruptly as a kill: no task of it runs
//! again) loses no enrolled template and adds none twice when started
//! again; the count and time triggers commit when they should.
//!
//! The workers are played by the test: it leases each task and writes the
//! task's output (synthetic 128-d templates) where a worker would, then
//! reports it complete, so the coordinator's own ingest, recovery and
//! commit code runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use osprey_api::{JobSpec, JobState, Lease, TaskCompletion};
use osprey_coordinator::{Config, Coordinator};
use osprey_index::{Gallery, uncommitted_markers};
use osprey_store::{Root, Template, layout, read_templates, write_templates};

const KEY: &str = "operator:operator-key-0123456789";
const MODEL: &str = "dlib-resnet-v1";
const DIM: usize = 128;
/// Templates each task's output holds.
const PER_TASK: usize = 3;

fn config(root: &std::path::Path, commit_templates: usize, commit_seconds: u64) -> Config {
    Config {
        root: root.display().to_string(),
        api_keys: vec![KEY.into()],
        enrol_commit_templates: commit_templates,
        enrol_commit_seconds: commit_seconds,
        ..Config::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A folder per subject under `<root>/media/<dir>/`, one (never decoded) image each.
fn subjects(root: &std::path::Path, dir: &str, names: &[&str]) {
    for s in names {
        let d = root.join("media").join(dir).join(s);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("face.jpg"), b"not decoded: the test writes the task outputs").unwrap();
    }
}

async fn submit(c: &Arc<Coordinator>, gallery: &str, dir: &str) -> String {
    let caller = c.caller(KEY.split_once(':').unwrap().1).expect("the test's key");
    let spec: JobSpec = serde_json::from_value(serde_json::json!({
        "kind": "enroll", "gallery": gallery, "inputs": [format!("media/{dir}/")], "subjects_from": "dirs"
    }))
    .unwrap();
    c.submit(spec, &caller).await.expect("job accepted")
}

/// The next task's lease, waiting for the job's inputs to be listed.
async fn lease(c: &Coordinator) -> Lease {
    let t0 = Instant::now();
    loop {
        if let Some(l) = c.lease("test-worker") {
            return l;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no task to lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A deterministic unit vector per template id.
fn embedding(id: &str) -> Vec<f32> {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    let mut v: Vec<f32> = (0..DIM)
        .map(|i| {
            h = h.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407 + i as u64);
            ((h >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// Does a worker's part of a leased enrol task: its output, then completion.
async fn work(c: &Arc<Coordinator>, root: &Root, l: &Lease) -> Vec<String> {
    let task = &l.task;
    let ids: Vec<String> = (0..PER_TASK).map(|k| format!("{}-t{k}", task.task_id)).collect();
    let templates: Vec<Template> = ids
        .iter()
        .map(|id| Template {
            template_id: id.clone(),
            gallery: Some(task.gallery.clone()),
            subject_id: task.subject_id.clone(),
            job_id: Some(task.job_id.clone()),
            task_id: Some(task.task_id.clone()),
            media_uri: Some(task.input.clone()),
            model: MODEL.into(),
            embedding: Some(embedding(id)),
            ..Default::default()
        })
        .collect();
    write_templates(root, &l.output_key, &templates, DIM, true).await.unwrap();
    let done = TaskCompletion { lease_id: l.lease_id.clone(), frames: 1, templates: PER_TASK as u64 };
    assert!(c.complete(&task.task_id, &done).await.expect("ingested"));
    ids
}

fn state(c: &Coordinator, job: &str) -> (JobState, usize) {
    let jobs = c.jobs.lock().unwrap();
    let s = jobs.get(job).expect("job in memory").status();
    (s.state, s.tasks.done)
}

async fn wait_end(c: &Coordinator, job: &str) {
    let t0 = Instant::now();
    while matches!(state(c, job).0, JobState::Queued | JobState::Running) {
        assert!(t0.elapsed() < Duration::from_secs(30), "job {job} did not end: {:?}", state(c, job));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The stored snapshot's template ids (with how often each is there).
async fn committed(root: &Root, gallery: &str) -> BTreeMap<String, usize> {
    let g = Gallery::load(root, gallery).await.unwrap();
    let mut ids = BTreeMap::new();
    for id in g.template_ids() {
        *ids.entry(id.to_string()).or_insert(0) += 1;
    }
    assert_eq!(g.len(), g.manifest().num_templates, "manifest counts the live templates");
    ids
}

/// Template rows of the gallery in the template table, by template id.
async fn table_rows(root: &Root, gallery: &str) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for o in root.glob(&format!("{}/**/*.parquet", layout::model_dir(MODEL))).await.unwrap() {
        for t in read_templates(root, &o.key).await.unwrap() {
            if t.gallery.as_deref() == Some(gallery) {
                *ids.entry(t.template_id).or_insert(0) += 1;
            }
        }
    }
    ids
}

fn once(ids: &BTreeSet<String>) -> BTreeMap<String, usize> {
    ids.iter().map(|i| (i.clone(), 1)).collect()
}

#[test]
fn a_coordinator_stopped_between_commits_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["ada", "bob", "cyd", "dee", "eve", "fay"];
    subjects(dir.path(), "people", &names);
    let root = Root::open(&dir.path().display().to_string()).unwrap();
    let mut enrolled = BTreeSet::new();

    // ---- first coordinator: 4 of 6 tasks ingested, no count or time commit
    let (job, redo) = runtime().block_on(async {
        let c = Coordinator::start(config(dir.path(), 1000, 0)).await.unwrap();
        let job = submit(&c, "people", "people").await;
        let mut last = String::new();
        for i in 0..4 {
            let l = lease(&c).await;
            enrolled.extend(work(&c, &root, &l).await);
            last = l.task.task_id.clone();
            if i == 0 {
                // The gallery's creation is committed at once.
                assert_eq!(committed(&root, "people").await.len(), PER_TASK);
            }
        }
        assert_eq!(state(&c, &job), (JobState::Running, 4));
        // Three tasks' batches are staged, not in the snapshot.
        assert_eq!(committed(&root, "people").await.len(), PER_TASK, "no snapshot before the count");
        assert_eq!(uncommitted_markers(&root, "people").await.unwrap().len(), 3);
        let in_memory = c.lock_gallery("people").await.unwrap().as_ref().unwrap().len();
        assert_eq!(in_memory, 4 * PER_TASK, "searches see every ingested template at once");
        (job, last)
    });
    // The runtime is gone: the coordinator stopped between two commits. As
    // if it had died after the last ingest but before recording the task
    // done, that record goes too: the task runs again.
    std::fs::remove_file(dir.path().join(format!("jobs/{job}/done/{redo}.json"))).unwrap();

    // ---- second coordinator: the staged batches are replayed and committed at start
    runtime().block_on(async {
        let c = Coordinator::start(config(dir.path(), 2 * PER_TASK, 0)).await.unwrap();
        assert_eq!(committed(&root, "people").await, once(&enrolled), "replayed at start, once each");
        assert!(uncommitted_markers(&root, "people").await.unwrap().is_empty(), "markers deleted by the commit");
        assert_eq!(state(&c, &job), (JobState::Running, 3));

        // The task whose done record was lost comes back; enrolling it again adds nothing.
        let l = lease(&c).await;
        assert_eq!(l.task.task_id, redo);
        let again: BTreeSet<String> = work(&c, &root, &l).await.into_iter().collect();
        assert!(again.is_subset(&enrolled));
        assert_eq!(c.lock_gallery("people").await.unwrap().as_ref().unwrap().len(), 4 * PER_TASK);
        // The fifth task: 3 templates, under the count of 6.
        let l = lease(&c).await;
        enrolled.extend(work(&c, &root, &l).await);
        assert_eq!(uncommitted_markers(&root, "people").await.unwrap().len(), 2, "the redone and the fifth");
        assert_eq!(committed(&root, "people").await.len(), 4 * PER_TASK);
        // The sixth reaches the count (and ends the job).
        let l = lease(&c).await;
        enrolled.extend(work(&c, &root, &l).await);
        wait_end(&c, &job).await;
        assert_eq!(state(&c, &job), (JobState::Completed, 6));
        let g = Gallery::load(&root, "people").await.unwrap();
        assert_eq!(g.manifest().num_subjects, names.len());
        assert!(g.manifest().threshold.is_some(), "calibrated at the job's end");
    });
    assert_eq!(enrolled.len(), names.len() * PER_TASK);
    runtime().block_on(async {
        assert_eq!(committed(&root, "people").await, once(&enrolled), "every template once");
        assert!(uncommitted_markers(&root, "people").await.unwrap().is_empty());
        assert_eq!(table_rows(&root, "people").await, once(&enrolled), "one table row each");
    });
}

#[test]
fn the_time_limit_commits_between_tasks() {
    let dir = tempfile::tempdir().unwrap();
    subjects(dir.path(), "first", &["ada", "bob"]);
    subjects(dir.path(), "second", &["cyd", "dee"]);
    let root = Root::open(&dir.path().display().to_string()).unwrap();
    runtime().block_on(async {
        let c = Coordinator::start(config(dir.path(), 1000, 1)).await.unwrap();
        let job = submit(&c, "g", "first").await;
        for _ in 0..2 {
            let l = lease(&c).await;
            work(&c, &root, &l).await;
        }
        wait_end(&c, &job).await;
        assert_eq!(committed(&root, "g").await.len(), 2 * PER_TASK);

        // One task of a second job, then nothing: the age limit commits it.
        let job = submit(&c, "g", "second").await;
        let l = lease(&c).await;
        work(&c, &root, &l).await;
        assert_eq!(uncommitted_markers(&root, "g").await.unwrap().len(), 1);
        let t0 = Instant::now();
        while committed(&root, "g").await.len() < 3 * PER_TASK {
            assert!(t0.elapsed() < Duration::from_secs(10), "no timed commit");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(uncommitted_markers(&root, "g").await.unwrap().is_empty());
        assert_eq!(state(&c, &job), (JobState::Running, 1), "before the job's end");
    });
}
