//! The job table: jobs, their tasks and leases, in memory, with every change
//! that matters written to the object store first, so a coordinator started
//! again over the same root picks up where the last one stopped.
//!
//! Records under `jobs/<job_id>/` (see `osprey_store::layout`): `job.json`
//! (written at submission), `tasks.json` (once the inputs are listed),
//! `done/<task>.json` (a task's end, after its output was ingested),
//! `final.json` (the job's end). Leases and attempt counts live only in
//! memory: after a restart every unfinished task is simply queued again, and
//! a retried task's output is written put-if-absent under a key derived from
//! the task, so nothing is duplicated.
//!
//! Finished jobs do not stay in memory forever: [`JobTable::prunable`] picks
//! those beyond the newest `max_finished_jobs_in_memory` that ended longer
//! than `finished_jobs_memory_seconds` ago, the coordinator writes their
//! summary into `final.json` and drops them ([`JobTable::remove_pruned`]);
//! from then on they are read back from the store (`crate::job_store`).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use osprey_api::{
    JobError, JobKind, JobSpec, JobState, JobStatus, Lease, MediaSettings, Role, TaskCounts, TaskSegment, TaskSpec,
};
use osprey_core::Modality;
use osprey_index::OperatingPoint;
use serde::{Deserialize, Serialize};

/// `jobs/<id>/job.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub spec: JobSpec,
    /// Who submitted it (key digest) and with what role.
    pub key_id: String,
    pub role: Role,
    pub created_at_ms: i64,
}

/// `jobs/<id>/done/<task>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub ok: bool,
    pub error: Option<String>,
    pub frames: u64,
    pub templates: u64,
    pub attempts: u32,
}

/// `jobs/<id>/final.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalRecord {
    pub state: JobState,
    pub finished_at_ms: i64,
    /// The job's task counts, frames, templates and errors when it was
    /// recorded, so a job no longer in memory is shown without reading its
    /// task records (absent in records written before pruning existed, and
    /// in a cancelled job's record until it is pruned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<JobSummary>,
}

/// What `GET /v1/jobs/{id}` shows of a finished job beyond its records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSummary {
    pub tasks: TaskCounts,
    pub frames: u64,
    pub templates: u64,
    pub errors: Vec<JobError>,
}

#[derive(Debug, Clone)]
enum TaskState {
    Queued,
    Leased {
        lease_id: String,
        worker: String,
        deadline: Instant,
    },
    /// Completed by a worker; its output is being ingested.
    Ingesting,
    Done,
    Failed,
}

#[derive(Debug)]
struct Task {
    spec: TaskSpec,
    state: TaskState,
    attempts: u32,
    frames: u64,
    templates: u64,
    error: Option<String>,
}

/// One job in memory.
#[derive(Debug)]
pub struct Job {
    pub record: JobRecord,
    tasks: Option<Vec<Task>>,
    errors: Vec<JobError>,
    cancelled: bool,
    finished: Option<FinalRecord>,
    finalizing: bool,
    /// A search job's threshold per modality, fixed at its first ingest.
    pub operating_points: HashMap<Modality, OperatingPoint>,
    /// A fused search job's calibrated fused thresholds, fixed at its first
    /// fused ingest (`Some(None)`: not calibrated, per-modality thresholds decide).
    pub fused_thresholds: Option<Option<osprey_index::FusedThresholds>>,
}

/// What the caller must do after a task ended for good.
#[derive(Debug)]
pub enum TaskEnd {
    /// Nothing more.
    Nothing,
    /// Every task of the job ended: finish it.
    FinishJob(String),
}

/// A task whose lease ran out for the last time.
#[derive(Debug)]
pub struct Expired {
    pub spec: TaskSpec,
    pub attempts: u32,
}

/// The lease check's answer.
pub enum LeaseCheck {
    Ok { cancelled: bool },
    UnknownTask,
    Lost,
}

/// Every job in memory, in submission order, and a count of the finished
/// jobs dropped from memory (they live on in the store).
#[derive(Debug, Default)]
pub struct JobTable {
    jobs: Vec<Job>,
    by_id: HashMap<String, usize>,
    pub pruned: PrunedJobs,
}

/// What memory keeps of the finished jobs it dropped: counts by gallery and
/// end state (so listings know their totals without reading the store) and
/// the newest one's creation (listing pages of jobs created after it never
/// read the store). A few bytes per gallery and state, not per job.
#[derive(Debug, Default)]
pub struct PrunedJobs {
    /// `(gallery, end state, jobs)`; one entry per gallery and state.
    counts: Vec<(String, JobState, usize)>,
    /// `(created_at_ms, job_id)` of the newest job pruned.
    pub newest: Option<(i64, String)>,
}

impl PrunedJobs {
    /// Counts one more pruned job.
    pub fn add(&mut self, job_id: &str, gallery: &str, state: JobState, created_at_ms: i64) {
        match self.counts.iter_mut().find(|(g, s, _)| g == gallery && *s == state) {
            Some((_, _, n)) => *n += 1,
            None => self.counts.push((gallery.to_string(), state, 1)),
        }
        let key = (created_at_ms, job_id.to_string());
        if self.newest.as_ref().is_none_or(|n| key > *n) {
            self.newest = Some(key);
        }
    }

    /// Pruned jobs in `state` (any: `None`) of `gallery` (any: `None`).
    pub fn count(&self, state: Option<JobState>, gallery: Option<&str>) -> usize {
        self.counts
            .iter()
            .filter(|(g, s, _)| state.is_none_or(|w| *s == w) && gallery.is_none_or(|w| g == w))
            .map(|(_, _, n)| n)
            .sum()
    }

    pub fn total(&self) -> usize {
        self.count(None, None)
    }
}

/// Which of these finished jobs (`(job_id, finished_at_ms)`) leave memory:
/// all but the `keep` that finished last, except those that finished less
/// than `keep_for_ms` before `now_ms`.
pub fn beyond_retention(mut ended: Vec<(String, i64)>, keep: usize, keep_for_ms: i64, now_ms: i64) -> Vec<String> {
    ended.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    ended.into_iter().skip(keep).filter(|(_, at)| *at <= now_ms - keep_for_ms).map(|(id, _)| id).collect()
}

/// A task id: `<job_id>.<n>`; unique across jobs.
pub fn task_id(job_id: &str, n: usize) -> String {
    format!("{job_id}.{n:05}")
}

/// The job of a task id.
pub fn job_of_task(task_id: &str) -> Option<&str> {
    task_id.rsplit_once('.').map(|(j, _)| j)
}

/// The task's display name in errors: its input, `#segment N` for a part of a video.
pub fn input_name(spec: &TaskSpec) -> String {
    match spec.segment {
        Some(s) => format!("{}#segment{}", spec.input, s.index),
        None => spec.input.clone(),
    }
}

impl JobTable {
    /// Adds a job (new, or recovered with its tasks and ends).
    pub fn insert(
        &mut self,
        record: JobRecord,
        tasks: Option<Vec<TaskSpec>>,
        ended: &HashMap<String, TaskRecord>,
        cancelled: bool,
        finished: Option<FinalRecord>,
    ) {
        let job = Job::new(record, tasks, ended, cancelled, finished);
        self.by_id.insert(job.record.job_id.clone(), self.jobs.len());
        self.jobs.push(job);
    }

    /// Jobs in memory.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The finished jobs that should leave memory (see [`beyond_retention`]),
    /// each with its end record carrying its summary, to be written before
    /// [`JobTable::remove_pruned`]. A job still finishing, or a cancelled job
    /// whose tasks a worker still holds, stays.
    pub fn prunable(&self, keep: usize, keep_for_ms: i64, now_ms: i64) -> Vec<(String, FinalRecord)> {
        let ended = self
            .jobs
            .iter()
            .filter(|j| j.is_settled())
            .filter_map(|j| j.finished.as_ref().map(|f| (j.record.job_id.clone(), f.finished_at_ms)))
            .collect();
        beyond_retention(ended, keep, keep_for_ms, now_ms)
            .into_iter()
            .filter_map(|id| self.get(&id).and_then(Job::final_record).map(|r| (id, r)))
            .collect()
    }

    /// Drops these finished jobs from memory (their end records, with
    /// summaries, are in the store), counting them in [`JobTable::pruned`].
    pub fn remove_pruned(&mut self, ids: &[String]) {
        let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut dropped = Vec::new();
        self.jobs.retain(|j| {
            let go = ids.contains(j.record.job_id.as_str()) && j.is_settled() && j.finished.is_some();
            if go {
                dropped.push((
                    j.record.job_id.clone(),
                    j.record.spec.gallery.clone(),
                    j.status().state,
                    j.record.created_at_ms,
                ));
            }
            !go
        });
        for (id, gallery, state, created) in dropped {
            self.pruned.add(&id, &gallery, state, created);
        }
        self.by_id = self.jobs.iter().enumerate().map(|(i, j)| (j.record.job_id.clone(), i)).collect();
    }

    pub fn get(&self, job_id: &str) -> Option<&Job> {
        self.by_id.get(job_id).map(|i| &self.jobs[*i])
    }

    pub fn get_mut(&mut self, job_id: &str) -> Option<&mut Job> {
        self.by_id.get(job_id).map(|i| &mut self.jobs[*i])
    }

    /// Every job, oldest first.
    pub fn all(&self) -> impl Iterator<Item = &Job> {
        self.jobs.iter()
    }

    /// Leases the oldest queued task of the oldest job that has one.
    pub fn lease(&mut self, worker: &str, lease: Duration, root: &str) -> Option<Lease> {
        for job in self.jobs.iter_mut().filter(|j| j.finished.is_none() && !j.cancelled) {
            let Some(tasks) = job.tasks.as_mut() else { continue };
            if let Some(task) = tasks.iter_mut().find(|t| matches!(t.state, TaskState::Queued)) {
                task.attempts += 1;
                let lease_id = uuid::Uuid::new_v4().simple().to_string();
                task.state = TaskState::Leased {
                    lease_id: lease_id.clone(),
                    worker: worker.to_string(),
                    deadline: Instant::now() + lease,
                };
                return Some(Lease {
                    lease_id,
                    lease_seconds: lease.as_secs(),
                    attempt: task.attempts,
                    root: root.to_string(),
                    output_key: output_key(&task.spec),
                    task: task.spec.clone(),
                });
            }
        }
        None
    }

    fn task_mut(&mut self, task_id: &str) -> Option<(&mut Task, bool)> {
        let job = self.get_mut(job_of_task(task_id)?)?;
        let cancelled = job.cancelled || job.finished.is_some();
        let task = job.tasks.as_mut()?.iter_mut().find(|t| t.spec.task_id == task_id)?;
        Some((task, cancelled))
    }

    /// Checks that `lease_id` holds `task_id` now; a heartbeat (`extend`)
    /// moves its deadline.
    pub fn check_lease(&mut self, task_id: &str, lease_id: &str, extend: Option<Duration>) -> LeaseCheck {
        let Some((task, cancelled)) = self.task_mut(task_id) else { return LeaseCheck::UnknownTask };
        match &mut task.state {
            TaskState::Leased { lease_id: held, deadline, .. } if *held == lease_id => {
                if let Some(d) = extend {
                    *deadline = Instant::now() + d;
                }
                LeaseCheck::Ok { cancelled }
            }
            _ => LeaseCheck::Lost,
        }
    }

    /// Marks a leased task as being ingested (so its lease cannot expire
    /// meanwhile) and returns its spec.
    pub fn start_ingest(&mut self, task_id: &str, lease_id: &str) -> Result<TaskSpec, LeaseCheck> {
        match self.check_lease(task_id, lease_id, None) {
            LeaseCheck::Ok { .. } => {}
            other => return Err(other),
        }
        let (task, _) = self.task_mut(task_id).expect("checked above");
        task.state = TaskState::Ingesting;
        Ok(task.spec.clone())
    }

    /// Records a task's end (its record already written).
    pub fn end_task(&mut self, task_id: &str, record: &TaskRecord) -> TaskEnd {
        let Some((task, _)) = self.task_mut(task_id) else { return TaskEnd::Nothing };
        task.state = if record.ok { TaskState::Done } else { TaskState::Failed };
        task.frames = record.frames;
        task.templates = record.templates;
        task.error = record.error.clone();
        let input = input_name(&task.spec);
        let job_id = job_of_task(task_id).unwrap_or_default().to_string();
        let job = self.get_mut(&job_id).expect("task's job");
        if let Some(e) = &record.error {
            job.errors.push(JobError { input, message: e.clone() });
        }
        job.end_if_done()
    }

    /// Puts a task back in the queue (a retryable failure); `false` when it
    /// used its attempts and must fail for good instead.
    pub fn requeue(&mut self, task_id: &str, max_attempts: u32) -> bool {
        let Some((task, _)) = self.task_mut(task_id) else { return true };
        if task.attempts >= max_attempts {
            return false;
        }
        task.state = TaskState::Queued;
        true
    }

    /// The attempts a task has had.
    pub fn attempts(&mut self, task_id: &str) -> u32 {
        self.task_mut(task_id).map_or(0, |(t, _)| t.attempts)
    }

    /// Leases past their deadline: requeued, or returned when out of attempts
    /// (marked ingesting meanwhile, so they are not leased again).
    pub fn expire(&mut self, now: Instant, max_attempts: u32) -> Vec<Expired> {
        let mut out = Vec::new();
        for job in &mut self.jobs {
            for task in job.tasks.iter_mut().flatten() {
                if let TaskState::Leased { deadline, worker, .. } = &task.state {
                    if *deadline <= now {
                        tracing::warn!(
                            "task {} ({}): lease of worker {worker} expired (attempt {})",
                            task.spec.task_id,
                            input_name(&task.spec),
                            task.attempts
                        );
                        if task.attempts >= max_attempts {
                            task.state = TaskState::Ingesting;
                            out.push(Expired { spec: task.spec.clone(), attempts: task.attempts });
                        } else {
                            task.state = TaskState::Queued;
                        }
                    }
                }
            }
        }
        out
    }

    /// Jobs with every task ended that still need finishing (after a restart).
    pub fn unfinished_but_done(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for job in &mut self.jobs {
            if let TaskEnd::FinishJob(id) = job.end_if_done() {
                out.push(id);
            }
        }
        out
    }

    /// Jobs whose inputs were never listed.
    pub fn unexpanded(&self) -> Vec<String> {
        self.jobs
            .iter()
            .filter(|j| j.tasks.is_none() && j.finished.is_none() && !j.cancelled)
            .map(|j| j.record.job_id.clone())
            .collect()
    }
}

impl Job {
    /// A job from its records (new, or read back from the store).
    pub fn new(
        record: JobRecord,
        tasks: Option<Vec<TaskSpec>>,
        ended: &HashMap<String, TaskRecord>,
        cancelled: bool,
        finished: Option<FinalRecord>,
    ) -> Job {
        let mut job = Job {
            record,
            tasks: None,
            errors: Vec::new(),
            cancelled,
            finished,
            finalizing: false,
            operating_points: HashMap::new(),
            fused_thresholds: None,
        };
        if let Some(tasks) = tasks {
            job.set_tasks(tasks, ended);
        }
        job
    }

    /// Whether nothing more can happen to it: not finishing, and no task
    /// leased or being ingested (a cancelled job's workers may still report).
    fn is_settled(&self) -> bool {
        !self.finalizing
            && !self.tasks.iter().flatten().any(|t| matches!(t.state, TaskState::Leased { .. } | TaskState::Ingesting))
    }

    /// A finished job's end record with its summary as of now.
    pub fn final_record(&self) -> Option<FinalRecord> {
        let f = self.finished.as_ref()?;
        Some(FinalRecord { state: f.state, finished_at_ms: f.finished_at_ms, summary: Some(self.summary()) })
    }

    /// Its task counts, frames, templates and errors as of now.
    pub fn summary(&self) -> JobSummary {
        let s = self.status();
        JobSummary { tasks: s.tasks, frames: s.frames, templates: s.templates, errors: s.errors }
    }

    /// Sets the job's tasks; those with an end record are ended already.
    pub fn set_tasks(&mut self, specs: Vec<TaskSpec>, ended: &HashMap<String, TaskRecord>) {
        let mut tasks = Vec::with_capacity(specs.len());
        for spec in specs {
            let mut task = Task { spec, state: TaskState::Queued, attempts: 0, frames: 0, templates: 0, error: None };
            if let Some(r) = ended.get(&task.spec.task_id) {
                task.state = if r.ok { TaskState::Done } else { TaskState::Failed };
                task.frames = r.frames;
                task.templates = r.templates;
                task.attempts = r.attempts;
                if let Some(e) = &r.error {
                    self.errors.push(JobError { input: input_name(&task.spec), message: e.clone() });
                }
                task.error = r.error.clone();
            }
            tasks.push(task);
        }
        self.tasks = Some(tasks);
    }

    /// Ends the job without tasks (nothing to do, or listing failed).
    pub fn fail_expansion(&mut self, message: String) {
        self.errors.push(JobError { input: self.record.spec.inputs.join(", "), message });
        self.tasks = Some(Vec::new());
    }

    fn end_if_done(&mut self) -> TaskEnd {
        let Some(tasks) = &self.tasks else { return TaskEnd::Nothing };
        let all_ended = tasks.iter().all(|t| matches!(t.state, TaskState::Done | TaskState::Failed));
        if all_ended && self.finished.is_none() && !self.finalizing && !self.cancelled {
            self.finalizing = true;
            return TaskEnd::FinishJob(self.record.job_id.clone());
        }
        TaskEnd::Nothing
    }

    /// The end state from the task outcomes.
    pub fn outcome(&self) -> JobState {
        let tasks = self.tasks.as_deref().unwrap_or_default();
        let failed = tasks.iter().filter(|t| matches!(t.state, TaskState::Failed)).count();
        if tasks.is_empty() || failed == tasks.len() {
            JobState::Failed
        } else if failed > 0 || !self.errors.is_empty() {
            JobState::CompletedWithErrors
        } else {
            JobState::Completed
        }
    }

    pub fn finish(&mut self, record: FinalRecord) {
        self.finalizing = false;
        self.finished = Some(record);
    }

    pub fn cancel(&mut self, record: FinalRecord) {
        self.cancelled = true;
        self.finished = Some(record);
    }

    pub fn is_final(&self) -> bool {
        self.finished.is_some()
    }

    /// The job as `GET /v1/jobs/{id}` shows it.
    pub fn status(&self) -> JobStatus {
        let mut counts = TaskCounts::default();
        let (mut frames, mut templates) = (0, 0);
        for t in self.tasks.iter().flatten() {
            counts.total += 1;
            match t.state {
                TaskState::Queued => counts.queued += 1,
                TaskState::Leased { .. } | TaskState::Ingesting => counts.running += 1,
                TaskState::Done => counts.done += 1,
                TaskState::Failed => counts.failed += 1,
            }
            frames += t.frames;
            templates += t.templates;
        }
        let state = match &self.finished {
            Some(f) => f.state,
            None if counts.running + counts.done + counts.failed > 0 => JobState::Running,
            None => JobState::Queued,
        };
        JobStatus {
            job_id: self.record.job_id.clone(),
            kind: self.record.spec.kind,
            gallery: self.record.spec.gallery.clone(),
            state,
            tasks: counts,
            frames,
            templates,
            errors: self.errors.clone(),
            created_at_ms: self.record.created_at_ms,
            finished_at_ms: self.finished.as_ref().map(|f| f.finished_at_ms),
        }
    }

    /// Updates live frame counts from a heartbeat (kept until the task ends).
    pub fn set_live_frames(&mut self, task_id: &str, frames: u64) {
        if let Some(t) = self.tasks.iter_mut().flatten().find(|t| t.spec.task_id == task_id) {
            if matches!(t.state, TaskState::Leased { .. }) {
                t.frames = frames;
            }
        }
    }
}

/// Where a task's worker writes its templates.
pub fn output_key(spec: &TaskSpec) -> String {
    osprey_store::layout::job_key(&spec.job_id, &format!("outputs/{}.parquet", spec.task_id))
}

/// The tasks of a job, from its listed inputs: `(input, subject)` pairs,
/// and for videos of search jobs their segments (when there is more than one).
pub fn make_tasks(
    job_id: &str,
    kind: JobKind,
    gallery: &str,
    media: &MediaSettings,
    inputs: Vec<(String, Option<String>, Vec<TaskSegment>)>,
) -> Vec<TaskSpec> {
    let mut out = Vec::new();
    for (input, subject_id, segments) in inputs {
        let parts: Vec<Option<TaskSegment>> =
            if segments.len() > 1 { segments.into_iter().map(Some).collect() } else { vec![None] };
        for segment in parts {
            out.push(TaskSpec {
                task_id: task_id(job_id, out.len()),
                job_id: job_id.to_string(),
                kind,
                gallery: gallery.to_string(),
                input: input.clone(),
                subject_id: subject_id.clone(),
                segment,
                media: media.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        serde_json::from_value(serde_json::json!({"kind": "search", "gallery": "g", "inputs": ["a.jpg"]})).unwrap()
    }

    fn table(n: usize) -> JobTable {
        let media = MediaSettings::default();
        let inputs = (0..n).map(|i| (format!("file:///m/{i}.jpg"), None, Vec::new())).collect();
        let tasks = make_tasks("j1", JobKind::Search, "g", &media, inputs);
        let record =
            JobRecord { job_id: "j1".into(), spec: spec(), key_id: "k".into(), role: Role::Operator, created_at_ms: 0 };
        let mut t = JobTable::default();
        t.insert(record, Some(tasks), &HashMap::new(), false, None);
        t
    }

    fn record(id: &str, created_at_ms: i64) -> JobRecord {
        JobRecord { job_id: id.into(), spec: spec(), key_id: "k".into(), role: Role::Operator, created_at_ms }
    }

    fn ended(state: JobState, at: i64) -> Option<FinalRecord> {
        Some(FinalRecord { state, finished_at_ms: at, summary: None })
    }

    #[test]
    fn retention_keeps_the_last_finished_and_the_recent() {
        let ended = |v: &[(&str, i64)]| v.iter().map(|(id, at)| (id.to_string(), *at)).collect::<Vec<_>>();
        let jobs = ended(&[("a", 100), ("b", 300), ("c", 200), ("d", 900)]);
        // The 2 that ended last stay; of the others, those within 50 ms of now (1000).
        assert_eq!(beyond_retention(jobs.clone(), 2, 0, 1000), ["c", "a"]);
        assert_eq!(beyond_retention(jobs.clone(), 2, 850, 1000), ["a"]);
        assert_eq!(beyond_retention(jobs.clone(), 0, 0, 1000).len(), 4);
        assert!(beyond_retention(jobs, 4, 0, 1000).is_empty());
    }

    #[test]
    fn finished_jobs_leave_memory_with_their_summary() {
        let mut t = table(1); // j1: running, never pruned
        t.insert(record("old", 10), Some(Vec::new()), &HashMap::new(), false, ended(JobState::Failed, 20));
        t.insert(record("new", 30), Some(Vec::new()), &HashMap::new(), false, ended(JobState::Completed, 40));
        let lease = t.lease("w", Duration::from_secs(30), "r").unwrap();
        assert!(t.prunable(2, 0, 1000).is_empty(), "two finished jobs, two kept");
        assert!(t.prunable(0, 1000, 1000).is_empty(), "both finished within the last second");
        let out = t.prunable(1, 0, 1000);
        assert_eq!(out.len(), 1);
        let (id, fin) = &out[0];
        assert_eq!(id, "old");
        let summary = fin.summary.as_ref().expect("a summary");
        assert_eq!((fin.state, summary.tasks.total), (JobState::Failed, 0));
        t.remove_pruned(&[id.clone()]);
        assert!(t.get("old").is_none());
        assert_eq!((t.len(), t.pruned.total()), (2, 1));
        assert_eq!(t.pruned.count(Some(JobState::Failed), Some("g")), 1);
        assert_eq!(t.pruned.count(Some(JobState::Completed), None), 0);
        assert_eq!(t.pruned.count(None, Some("other")), 0);
        assert_eq!(t.pruned.newest, Some((10, "old".to_string())));
        // The index still finds the jobs that stayed.
        assert_eq!(t.get("new").unwrap().record.job_id, "new");
        // A cancelled job stays while a worker holds one of its tasks.
        t.get_mut("j1").unwrap().cancel(FinalRecord { state: JobState::Cancelled, finished_at_ms: 50, summary: None });
        assert!(t.prunable(0, 0, 1000).iter().all(|(id, _)| id != "j1"), "its task is leased");
        t.start_ingest(&lease.task.task_id, &lease.lease_id).ok().unwrap();
        let stopped = TaskRecord { ok: false, error: None, frames: 3, templates: 0, attempts: 1 };
        assert!(
            matches!(t.end_task(&lease.task.task_id, &stopped), TaskEnd::Nothing),
            "a cancelled job does not finish again"
        );
        let out = t.prunable(0, 0, 1000);
        let (_, fin) = out.iter().find(|(id, _)| id == "j1").expect("now prunable");
        let summary = fin.summary.as_ref().unwrap();
        assert_eq!((fin.state, summary.tasks.failed, summary.frames), (JobState::Cancelled, 1, 3));
    }

    #[test]
    fn expired_leases_are_requeued_then_fail() {
        let mut t = table(1);
        let lease = Duration::from_secs(30);
        for attempt in 1..=3 {
            let l = t.lease("w", lease, "file:///r").expect("a task");
            assert_eq!(l.attempt, attempt);
            assert!(t.lease("w", lease, "file:///r").is_none(), "one task, leased");
            let expired = t.expire(Instant::now() + lease * 2, 3);
            assert_eq!(expired.len(), usize::from(attempt == 3));
        }
        assert!(t.lease("w", lease, "file:///r").is_none(), "out of attempts");
    }

    #[test]
    fn a_stale_lease_cannot_complete() {
        let mut t = table(2);
        let lease = Duration::from_secs(30);
        let first = t.lease("w1", lease, "r").unwrap();
        t.expire(Instant::now() + lease * 2, 3);
        let again = t.lease("w2", lease, "r").unwrap();
        assert_eq!(again.task.task_id, first.task.task_id);
        assert!(matches!(t.start_ingest(&first.task.task_id, &first.lease_id), Err(LeaseCheck::Lost)));
        assert!(t.start_ingest(&again.task.task_id, &again.lease_id).is_ok());
        let record = TaskRecord { ok: true, error: None, frames: 1, templates: 1, attempts: 2 };
        assert!(matches!(t.end_task(&again.task.task_id, &record), TaskEnd::Nothing));
        let last = t.lease("w1", lease, "r").unwrap();
        t.start_ingest(&last.task.task_id, &last.lease_id).ok().unwrap();
        let bad = TaskRecord { ok: false, error: Some("corrupt".into()), frames: 0, templates: 0, attempts: 1 };
        assert!(matches!(t.end_task(&last.task.task_id, &bad), TaskEnd::FinishJob(_)));
        let job = t.get("j1").unwrap();
        assert_eq!(job.outcome(), JobState::CompletedWithErrors);
        let status = job.status();
        assert_eq!((status.tasks.done, status.tasks.failed, status.errors.len()), (1, 1, 1));
    }
}
