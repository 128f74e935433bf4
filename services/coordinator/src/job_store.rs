//! Jobs read back from the object store, and the pruning that makes that
//! necessary: memory keeps every unfinished job but only the finished jobs
//! that ended last (`max_finished_jobs_in_memory`, default 1000) or recently
//! (`finished_jobs_memory_seconds`, default one hour); the others are
//! dropped once their `final.json` carries their summary, and are then
//! answered from the store.
//!
//! Cost of answering for a job no longer in memory:
//! - `GET /v1/jobs/{id}` (and the existence check of `/results` and
//!   `/cancel`): two object reads (`job.json`, `final.json`). A job recorded
//!   before summaries existed also has its task list and each task's end
//!   record read.
//! - `GET /v1/jobs`: totals come from per-gallery, per-state counts kept in
//!   memory, and a page made only of jobs created after the newest pruned
//!   one (the usual first pages) is answered from memory. A page reaching
//!   further lists every object under `jobs/` once and reads the two records
//!   of each pruned job (16 at a time): fine for thousands of jobs, seconds
//!   for a hundred thousand on S3; deep pages over millions of old jobs are
//!   better asked of SQL over an export than of this route.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use osprey_api::{JobList, JobStatus, JobsQuery, TaskSpec};
use osprey_core::{Error, ErrorKind, Result};
use osprey_store::{Root, layout};

use crate::error::{ApiError, ApiResult};
use crate::jobs::{FinalRecord, Job, JobRecord, TaskRecord, beyond_retention};
use crate::service::Coordinator;

/// Pruned jobs' records read at once while listing.
const READ_CONCURRENCY: usize = 16;

async fn get_json<T: serde::de::DeserializeOwned>(root: &Root, key: &str) -> Result<Option<T>> {
    let bytes = match root.get(key).await {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::new(ErrorKind::Corrupt, format!("{}: {e}", root.url_of(key))))
}

/// A job's submission record and end record (none: not ended); `None` when
/// there is no such job.
pub async fn read_job(root: &Root, job_id: &str) -> Result<Option<(JobRecord, Option<FinalRecord>)>> {
    let Some(record) = get_json::<JobRecord>(root, &layout::job_key(job_id, "job.json")).await? else {
        return Ok(None);
    };
    let finished = get_json::<FinalRecord>(root, &layout::job_key(job_id, "final.json")).await?;
    Ok(Some((record, finished)))
}

/// A job's tasks as recorded: whether it was cancelled, its task list (none:
/// inputs not listed yet), and the end record of each task that ended.
pub async fn read_tasks(
    root: &Root,
    job_id: &str,
) -> Result<(bool, Option<Vec<TaskSpec>>, HashMap<String, TaskRecord>)> {
    let cancelled = root.exists(&layout::job_key(job_id, "cancelled")).await?;
    let tasks = get_json::<Vec<TaskSpec>>(root, &layout::job_key(job_id, "tasks.json")).await.ok().flatten();
    let mut ended = HashMap::new();
    for done in root.list(&layout::job_key(job_id, "done/")).await? {
        if let Ok(Some(r)) = get_json::<TaskRecord>(root, &done.key).await {
            let task = done.key.rsplit('/').next().unwrap_or_default().trim_end_matches(".json").to_string();
            ended.insert(task, r);
        }
    }
    Ok((cancelled, tasks, ended))
}

/// A job's status from its records in the store (see the module's costs).
pub async fn stored_status(root: &Root, job_id: &str) -> Result<Option<JobStatus>> {
    let Some((record, finished)) = read_job(root, job_id).await? else { return Ok(None) };
    if let Some(FinalRecord { state, finished_at_ms, summary: Some(s) }) = &finished {
        return Ok(Some(JobStatus {
            job_id: record.job_id.clone(),
            kind: record.spec.kind,
            gallery: record.spec.gallery.clone(),
            state: *state,
            tasks: s.tasks.clone(),
            frames: s.frames,
            templates: s.templates,
            errors: s.errors.clone(),
            created_at_ms: record.created_at_ms,
            finished_at_ms: Some(*finished_at_ms),
        }));
    }
    let (cancelled, tasks, ended) = read_tasks(root, job_id).await?;
    Ok(Some(Job::new(record, tasks, &ended, cancelled, finished).status()))
}

/// The id of every job recorded under the root (one listing of `jobs/`).
pub async fn stored_job_ids(root: &Root) -> Result<Vec<String>> {
    let found = root.glob(&format!("{}/*/job.json", layout::JOBS)).await?;
    Ok(found.into_iter().filter_map(|o| o.key.split('/').nth(1).map(str::to_string)).collect())
}

/// `GET /v1/jobs/{id}`: from memory, else from the store.
pub async fn job_status(c: &Coordinator, job_id: &str) -> ApiResult<JobStatus> {
    if let Some(s) = c.jobs.lock().expect("jobs lock").get(job_id).map(Job::status) {
        return Ok(s);
    }
    stored_status(&c.root, job_id).await?.ok_or_else(|| ApiError::not_found(format!("no job `{job_id}`")))
}

/// Newest first; ids break ties so pages are stable.
fn newest_first(a: &JobStatus, b: &JobStatus) -> std::cmp::Ordering {
    b.created_at_ms.cmp(&a.created_at_ms).then_with(|| b.job_id.cmp(&a.job_id))
}

/// `GET /v1/jobs`: jobs in memory and pruned ones, filtered, newest first, a
/// page at a time (errors left out; see the module's costs).
pub async fn list_jobs(c: &Coordinator, q: &JobsQuery, offset: usize, limit: usize) -> ApiResult<JobList> {
    let wanted = |s: &JobStatus| {
        q.state.is_none_or(|want| s.state == want) && q.gallery.as_ref().is_none_or(|g| &s.gallery == g)
    };
    let (mut matching, in_memory, pruned, newest_pruned) = {
        let table = c.jobs.lock().expect("jobs lock");
        let statuses: Vec<JobStatus> = table.all().map(Job::status).collect();
        let ids: HashSet<String> = statuses.iter().map(|s| s.job_id.clone()).collect();
        let matching: Vec<JobStatus> = statuses.into_iter().filter(|s| wanted(s)).collect();
        (matching, ids, table.pruned.count(q.state, q.gallery.as_deref()), table.pruned.newest.clone())
    };
    matching.sort_by(newest_first);
    let mut total = matching.len() + pruned;
    // Jobs in memory created after every pruned one come first in any page.
    let ahead = match &newest_pruned {
        Some((created, id)) => matching.iter().take_while(|s| (s.created_at_ms, &s.job_id) > (*created, id)).count(),
        None => matching.len(),
    };
    if pruned > 0 && ahead < offset.saturating_add(limit) {
        let ids: Vec<String> =
            stored_job_ids(&c.root).await?.into_iter().filter(|id| !in_memory.contains(id)).collect();
        let root = &c.root;
        let stored: Vec<Option<JobStatus>> = futures::stream::iter(ids)
            .map(|id| async move { stored_status(root, &id).await })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        matching.extend(stored.into_iter().flatten().filter(|s| wanted(s)));
        matching.sort_by(newest_first);
        total = matching.len();
    }
    let jobs = matching
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|mut s| {
            s.errors.clear();
            s
        })
        .collect();
    Ok(JobList { total, offset, jobs })
}

/// Drops the finished jobs beyond the retention from memory, each after its
/// end record (with its summary) is written; a job whose record cannot be
/// written stays until the next try.
pub async fn prune(c: &Coordinator) {
    let keep = c.config.max_finished_jobs_in_memory;
    let keep_for_ms = (c.config.finished_jobs_memory_seconds as i64).saturating_mul(1000);
    let now = chrono::Utc::now().timestamp_millis();
    let records = c.jobs.lock().expect("jobs lock").prunable(keep, keep_for_ms, now);
    let mut written = Vec::new();
    for (job_id, record) in records {
        match put_json(&c.root, &layout::job_key(&job_id, "final.json"), &record).await {
            Ok(()) => written.push(job_id),
            Err(e) => tracing::warn!("job {job_id} stays in memory: cannot record its summary: {}", e.message()),
        }
    }
    if !written.is_empty() {
        let mut table = c.jobs.lock().expect("jobs lock");
        table.remove_pruned(&written);
        tracing::info!(
            "{} finished jobs left memory for the store ({} in memory, {} pruned)",
            written.len(),
            table.len(),
            table.pruned.total()
        );
    }
}

/// Which finished jobs found at start stay out of memory (the same rule as
/// [`prune`]).
pub fn not_loaded(c: &Coordinator, ended: Vec<(String, i64)>) -> HashSet<String> {
    let keep_for_ms = (c.config.finished_jobs_memory_seconds as i64).saturating_mul(1000);
    let now = chrono::Utc::now().timestamp_millis();
    beyond_retention(ended, c.config.max_finished_jobs_in_memory, keep_for_ms, now).into_iter().collect()
}

async fn put_json<T: serde::Serialize>(root: &Root, key: &str, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::internal(format!("{key}: {e}")))?;
    root.put(key, bytes.into()).await
}
