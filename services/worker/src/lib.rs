//! The Osprey worker: a stateless loop that leases a task from the
//! coordinator, turns its input (an image, a video or one segment of one)
//! into templates, writes them to the object store under the key the lease
//! names (put-if-absent), and reports back. It heartbeats while it works and
//! retries with backoff while the coordinator is unreachable, so
//! coordinators and workers can be restarted independently. A heartbeat
//! answered "stop" (the job was cancelled) stops a video's analysis before
//! its next frame ([`osprey_pipeline::cancel`]); the task is then reported
//! failed without retry, and the worker leases its next task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use osprey_api::{Heartbeat, JobKind, Lease, LeaseRequest, TaskAck, TaskCompletion, TaskFailure, TaskSpec};
use osprey_core::{Error, ErrorKind, Modality, Result};
use osprey_index::COMPANION_MODALITIES;
use osprey_media::video::Segment;
use osprey_pipeline::media::{media_template_id, observation_rows, put_thumbnails, subject_tracks, template_row};
use osprey_pipeline::{MediaAnalysis, VideoPlan};
use osprey_store::{
    ObservationRow, Root, Template, layout, modality_part, read_staged_templates, write_observations, write_templates,
};
use reqwest::StatusCode;

/// How a worker reaches its coordinator.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// E.g. `http://127.0.0.1:8080`.
    pub coordinator: String,
    /// An operator or admin key.
    pub api_key: String,
    /// Names this worker in the coordinator's logs.
    pub worker_id: String,
    /// Wait between polls when no task is queued.
    pub idle_poll: Duration,
}

/// A worker's HTTP client.
struct Client {
    http: reqwest::Client,
    config: WorkerConfig,
}

/// A request's outcome the loop acts on.
enum Reply<T> {
    Ok(T),
    NoContent,
    /// 404/409: the task is gone or went to another worker.
    Gone(String),
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.coordinator.trim_end_matches('/'))
    }

    /// POSTs `body`; retries with backoff (up to 30 s apart) while the
    /// coordinator cannot be reached or answers 5xx, until `stop` is set.
    async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        stop: &AtomicBool,
    ) -> Result<Reply<T>> {
        let mut backoff = Duration::from_millis(250);
        loop {
            let sent = self.http.post(self.url(path)).bearer_auth(&self.config.api_key).json(body).send().await;
            let wait = match sent {
                Ok(r) if r.status() == StatusCode::NO_CONTENT => return Ok(Reply::NoContent),
                Ok(r) if r.status().is_success() => {
                    return r
                        .json::<T>()
                        .await
                        .map(Reply::Ok)
                        .map_err(|e| Error::internal(format!("{path}: unreadable answer: {e}")));
                }
                Ok(r) if matches!(r.status(), StatusCode::NOT_FOUND | StatusCode::CONFLICT) => {
                    return Ok(Reply::Gone(r.text().await.unwrap_or_default()));
                }
                Ok(r) if r.status().is_client_error() => {
                    let status = r.status();
                    return Err(Error::invalid(format!("{path}: {status}: {}", r.text().await.unwrap_or_default())));
                }
                Ok(r) => format!("{}", r.status()),
                Err(e) => format!("unreachable ({e})"),
            };
            if stop.load(Ordering::Relaxed) {
                return Err(Error::internal(format!("stopping; coordinator {wait}")));
            }
            tracing::warn!("coordinator {wait}; retrying {path} in {:.1}s", backoff.as_secs_f64());
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

/// Runs the lease loop until `stop` is set (the task in hand is finished
/// first). `analysis` holds the loaded models.
pub async fn run(config: WorkerConfig, analysis: Arc<MediaAnalysis>, stop: Arc<AtomicBool>) -> Result<()> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
    let client = Arc::new(Client { http, config: config.clone() });
    tracing::info!("worker {} polling {}", config.worker_id, config.coordinator);
    while !stop.load(Ordering::Relaxed) {
        let request = LeaseRequest { worker_id: config.worker_id.clone() };
        let lease = match client.post::<_, Lease>("/v1/tasks/lease", &request, &stop).await {
            Ok(Reply::Ok(lease)) => lease,
            Ok(_) => {
                tokio::time::sleep(config.idle_poll).await;
                continue;
            }
            Err(e) if stop.load(Ordering::Relaxed) => {
                tracing::info!("{}", e.message());
                break;
            }
            Err(e) => return Err(e),
        };
        work(&client, &analysis, lease, &stop).await;
    }
    tracing::info!("worker {} stopped", config.worker_id);
    Ok(())
}

/// Does one leased task and reports its end.
async fn work(client: &Arc<Client>, analysis: &Arc<MediaAnalysis>, lease: Lease, stop: &Arc<AtomicBool>) {
    let task_id = lease.task.task_id.clone();
    let input = lease.task.input.clone();
    tracing::info!("task {task_id}: {input} (attempt {})", lease.attempt);
    let frames = Arc::new(AtomicU64::new(0));
    // Set when the coordinator says the job was cancelled.
    let cancelled = Arc::new(AtomicBool::new(false));
    let heartbeat = {
        let (client, lease_id, frames, task_id) =
            (Arc::clone(client), lease.lease_id.clone(), Arc::clone(&frames), task_id.clone());
        let cancelled = Arc::clone(&cancelled);
        let every = Duration::from_secs_f64((lease.lease_seconds as f64 / 3.0).max(0.5));
        let never = AtomicBool::new(false);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let hb = Heartbeat { lease_id: lease_id.clone(), frames: frames.load(Ordering::Relaxed) };
                match client.post::<_, TaskAck>(&format!("/v1/tasks/{task_id}/heartbeat"), &hb, &never).await {
                    // The first "stop" sets the flag (and is logged once).
                    Ok(Reply::Ok(ack)) if !ack.keep_going && !cancelled.swap(true, Ordering::Relaxed) => {
                        tracing::info!("task {task_id}: its job was cancelled; stopping at the next frame");
                    }
                    Ok(Reply::Gone(why)) => {
                        tracing::warn!("task {task_id}: lease lost: {why}");
                        break;
                    }
                    _ => {}
                }
            }
        })
    };
    let outcome = run_task(&lease, analysis, &frames, &cancelled).await;
    heartbeat.abort();
    let path;
    let reply = match outcome {
        Ok(templates) => {
            path = format!("/v1/tasks/{task_id}/complete");
            let done =
                TaskCompletion { lease_id: lease.lease_id.clone(), frames: frames.load(Ordering::Relaxed), templates };
            tracing::info!("task {task_id}: {templates} templates");
            client.post::<_, TaskAck>(&path, &done, stop).await
        }
        Err(e) => {
            path = format!("/v1/tasks/{task_id}/fail");
            // Bad input fails the same way every time; storage and other
            // errors may pass; a cancelled job's task is not tried again.
            let stopped = cancelled.load(Ordering::Relaxed);
            let retryable =
                !stopped && !matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::NotFound | ErrorKind::Corrupt);
            if stopped {
                tracing::info!(
                    "task {task_id} stopped after {} frames: {}",
                    frames.load(Ordering::Relaxed),
                    e.message()
                );
            } else {
                tracing::warn!("task {task_id} failed: {}", e.message());
            }
            let failed = TaskFailure { lease_id: lease.lease_id.clone(), error: e.message().to_string(), retryable };
            client.post::<_, TaskAck>(&path, &failed, stop).await
        }
    };
    match reply {
        Ok(Reply::Gone(why)) => tracing::warn!("task {task_id}: {path} refused: {why}"),
        Err(e) => tracing::warn!("task {task_id}: {path}: {}", e.message()),
        _ => {}
    }
}

/// Makes a task's templates and writes them to the lease's output key (the
/// face templates and the rows of inputs that failed), each other
/// modality's beside it ([`layout::staged_modality`]: a file per embedding
/// width) and all their observations beside that; the face file is written
/// last, so it is the commit point. Returns how many templates. An output
/// already there (an earlier attempt wrote it before its worker was lost)
/// is reported again without recomputing. Setting `cancelled` stops a
/// video's analysis before its next frame, with an error.
async fn run_task(
    lease: &Lease,
    analysis: &Arc<MediaAnalysis>,
    frames: &Arc<AtomicU64>,
    cancelled: &Arc<AtomicBool>,
) -> Result<u64> {
    let root = Root::open(&lease.root)?;
    if root.exists(&lease.output_key).await? {
        let n = read_staged_templates(&root, &lease.output_key, &COMPANION_MODALITIES).await?.len() as u64;
        tracing::info!("task {}: output already written by an earlier attempt", lease.task.task_id);
        return Ok(n);
    }
    let spec = lease.task.clone();
    let settings = spec.media.clone();
    let rt = tokio::runtime::Handle::current();
    let counter = Arc::clone(frames);
    let task_root = root.clone();
    let analysis = Arc::clone(analysis);
    let cancelled = Arc::clone(cancelled);
    let (rows, observations, thumbnails) = tokio::task::spawn_blocking(move || -> Result<_> {
        // The job's own settings; a job naming another model or checkpoint
        // than the worker's loads it here (from an object URL if need be).
        let analysis = analysis.with_settings(&settings)?;
        let plan = match spec.segment {
            Some(s) => VideoPlan::Segment {
                index: s.index,
                segment: Segment { start_ms: s.start_ms, end_ms: s.end_ms.unwrap_or(i64::MAX) },
            },
            None => VideoPlan::Whole { segment_seconds: spec.media.segment_seconds },
        };
        let largest_only = spec.kind == JobKind::Enroll;
        let on_frame = || {
            counter.fetch_add(1, Ordering::Relaxed);
        };
        let result = osprey_pipeline::cancel::with_flag(cancelled, || {
            analysis.process(&spec.input, largest_only, plan, &rt, &on_frame)
        })?;
        Ok(rows_of(&task_root, &spec, result, &|m| analysis.same_person_in(m)))
    })
    .await
    .map_err(|e| Error::internal(format!("the analysis panicked: {e}")))??;
    put_thumbnails(&root, thumbnails).await?;
    if !observations.is_empty() {
        write_observations(&root, &layout::staged_observations(&lease.output_key), &observations, true).await?;
    }
    let n = rows.len() as u64;
    for m in COMPANION_MODALITIES {
        let these = modality_part(&rows, m, false);
        if let Some(dim) = these.first().and_then(|t| t.embedding.as_ref().map(Vec::len)) {
            write_templates(&root, &layout::staged_modality(&lease.output_key, m), &these, dim, true).await?;
        }
    }
    // The face templates and the rows of inputs that failed commit the task.
    let faces = modality_part(&rows, Modality::Face, true);
    let dim = match faces.iter().find_map(|t| t.embedding.as_ref().map(Vec::len)) {
        Some(d) => d,
        None => osprey_models::face_model(&lease.task.media.model)?.dim,
    };
    write_templates(&root, &lease.output_key, &faces, dim, true).await?;
    Ok(n)
}

/// The template rows of a task's media result, their observations, and the
/// thumbnails to write.
fn rows_of(
    root: &Root,
    spec: &TaskSpec,
    result: osprey_pipeline::MediaResult,
    same_person: &dyn Fn(osprey_core::Modality) -> f32,
) -> (Vec<Template>, Vec<ObservationRow>, Vec<(String, Vec<u8>)>) {
    let mut thumbnails = Vec::new();
    let mut observations = Vec::new();
    let templates = match spec.kind {
        JobKind::Enroll if result.is_video => subject_tracks(result.templates, same_person),
        _ => result.templates,
    };
    let scope = match spec.kind {
        JobKind::Enroll => format!("gallery={}", spec.gallery),
        JobKind::Search => format!("job={}", spec.job_id),
    };
    let rows = templates
        .iter()
        .map(|(segment, t)| {
            let id = media_template_id(&scope, &spec.input, *segment, t);
            observations.extend(observation_rows(&id, t));
            let mut row = template_row(root, &scope, &spec.input, *segment, t, result.is_video, &mut thumbnails);
            row.task_id = Some(spec.task_id.clone());
            match spec.kind {
                JobKind::Enroll => {
                    row.gallery = Some(osprey_index::modality_gallery(&spec.gallery, t.modality));
                    row.subject_id = spec.subject_id.clone();
                }
                JobKind::Search => row.job_id = Some(spec.job_id.clone()),
            }
            row
        })
        .collect();
    (rows, observations, thumbnails)
}
