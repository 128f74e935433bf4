//! The coordinator's work behind the routes: job submission and listing,
//! leases, ingesting task outputs (enrolment into galleries, open-set search),
//! recovery after a restart, and the galleries it holds in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osprey_api::{JobKind, JobSpec, JobState, Role, TaskSegment, TaskSpec};
use osprey_core::fusion::{FusionRule, ScoreCalibration};
use osprey_core::{Error, ErrorKind, Modality, Result};
use osprey_index::{
    COMPANION_MODALITIES, EnrollOptions, FusedThresholds, FusionInput, Gallery, calibrate_fusion, fuse_persons,
    mark_uncommitted, modality_gallery, operating_point, search_probes, stage_into, store_results, store_search,
};
use osprey_models::face_model;
use osprey_pipeline::media::{self, failure_row};
use osprey_pipeline::{MediaAnalysis, MediaSettings};
use osprey_store::{
    AuditRow, PutOutcome, Root, layout, modality_part, observations_of, read_observations, read_staged_templates,
};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard};

use crate::audit::AuditLog;
use crate::config::{ApiKey, Config};
use crate::error::{ApiError, ApiResult};
use crate::jobs::{
    FinalRecord, JobRecord, JobTable, LeaseCheck, TaskEnd, TaskRecord, input_name, job_of_task, make_tasks, output_key,
};
use crate::metrics::Metrics;
use crate::search_batch::SearchBatcher;

/// The fusion rule of a search job with several modalities that names none.
pub const DEFAULT_FUSION: &str = "quality";

/// One modality index searched for a task: what its fusion needs.
struct SearchedIndex {
    modality: Modality,
    calibration: ScoreCalibration,
    threshold: f32,
    rows: Vec<osprey_store::SearchResultRow>,
}

/// Who is calling: the key's role and digest.
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    pub key_id: String,
}

impl Caller {
    /// 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role], what: &str) -> ApiResult<()> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiError::forbidden(format!(
            "{what} needs the {} role; this key is {}",
            names.join(" or "),
            self.role.as_str()
        )))
    }
}

/// A gallery held in memory, loaded on first use (`None`: not created yet
/// or not loaded).
/// Searches share it (FAISS searches a CPU index from several threads at
/// once); what changes the gallery holds it alone. The lock is fair: a
/// writer waits for the searches already running, and searches that come
/// after it wait for its write.
pub type GallerySlot = Arc<tokio::sync::RwLock<Option<Gallery>>>;

/// The coordinator.
pub struct Coordinator {
    pub config: Config,
    pub root: Root,
    pub keys: Vec<ApiKey>,
    pub jobs: Mutex<JobTable>,
    galleries: Mutex<HashMap<String, GallerySlot>>,
    pub metrics: Metrics,
    pub audit: AuditLog,
    /// Face models for image searches, by (model, checkpoint URL), loaded
    /// on first use; at most [`MAX_LOADED_MODELS`] are kept.
    analyses: tokio::sync::Mutex<Vec<(MediaSettings, Arc<MediaAnalysis>)>>,
    /// Fused thresholds by gallery, modalities, rule and FPIR, with the
    /// versions of the indexes they were calibrated on.
    fused_cache: Mutex<HashMap<String, (Vec<(i64, usize)>, Option<FusedThresholds>)>>,
    /// Where inputs may come from: the root and the allowed prefixes, as URLs.
    allowed: Vec<String>,
    /// Gathers concurrent REST searches of one index into one FAISS call.
    pub(crate) searches: SearchBatcher,
    /// Enrolled batches not in their gallery's snapshot yet (see [`crate::commits`]).
    pub(crate) uncommitted: crate::commits::Uncommitted,
}

/// Face models kept loaded for image searches (each up to a few hundred MB).
const MAX_LOADED_MODELS: usize = 3;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `path` as a `file://` URL if it is a local path, else unchanged.
fn as_url(input: &str) -> String {
    if input.contains("://") {
        return input.to_string();
    }
    let path = std::path::Path::new(input);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or(path.to_path_buf())
    };
    format!("file://{}", abs.display())
}

fn with_slash(s: String) -> String {
    if s.ends_with('/') { s } else { s + "/" }
}

impl Coordinator {
    /// Opens the root and loads every job recorded under it.
    pub async fn start(config: Config) -> Result<Arc<Coordinator>> {
        if config.root.trim().is_empty() {
            return Err(Error::invalid("no root: pass --root or set OSPREY_ROOT"));
        }
        let keys = config.keys()?;
        let root = Root::open(&config.root)?;
        let mut allowed = vec![with_slash(root.url_of(""))];
        allowed.extend(config.allowed_prefixes.iter().map(|p| with_slash(as_url(p))));
        let leftovers = config.audit_journal_dir(&root);
        let audit = AuditLog::start(root.clone(), config.audit_journal(&root), leftovers.as_deref()).await?;
        let searches = SearchBatcher::new(config.search_batching()?, config.search_threads);
        let c = Arc::new(Coordinator {
            config,
            root,
            keys,
            jobs: Mutex::new(JobTable::default()),
            galleries: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            audit,
            analyses: tokio::sync::Mutex::new(Vec::new()),
            fused_cache: Mutex::new(HashMap::new()),
            allowed,
            searches,
            uncommitted: Default::default(),
        });
        c.recover().await?;
        let reaper = Arc::clone(&c);
        tokio::spawn(async move { reaper.reap_forever().await });
        Ok(c)
    }

    /// The SQL session `caller` may query: with the `audit` table for
    /// admins, after the audit journal's rows were moved into it (so an
    /// admin reads every search answered so far).
    pub async fn sql_session(&self, caller: &Caller) -> Result<osprey_sql::SqlSession> {
        let admin = caller.role == Role::Admin;
        if admin {
            self.audit.flush().await?;
        }
        osprey_sql::SqlSession::open_with(&self.root, admin).await
    }

    /// The caller of a bearer key, if it is one of ours.
    pub fn caller(&self, presented: &str) -> Option<Caller> {
        self.keys.iter().find(|k| k.matches(presented)).map(|k| Caller { role: k.role, key_id: k.key_id.clone() })
    }

    // ------------------------------------------------------------ galleries

    pub fn gallery_slot(&self, name: &str) -> GallerySlot {
        let mut map = self.galleries.lock().expect("galleries lock");
        Arc::clone(map.entry(name.to_string()).or_default())
    }

    /// Locks gallery `name` for changing it, loading it if needed (its
    /// snapshot and the enrolled batches not in it yet, see
    /// [`crate::commits`]); `None` inside when it does not exist.
    pub async fn lock_gallery(&self, name: &str) -> Result<OwnedRwLockWriteGuard<Option<Gallery>>> {
        layout::check_name("gallery", name)?;
        let mut guard = self.gallery_slot(name).write_owned().await;
        if guard.is_none() {
            *guard = self.load_gallery(name).await?;
        }
        Ok(guard)
    }

    /// Locks gallery `name` for reading (searches of it run at once),
    /// loading it first if needed; `None` inside when it does not exist.
    pub async fn read_gallery(&self, name: &str) -> Result<OwnedRwLockReadGuard<Option<Gallery>>> {
        layout::check_name("gallery", name)?;
        let guard = self.gallery_slot(name).read_owned().await;
        if guard.is_some() {
            return Ok(guard);
        }
        drop(guard);
        Ok(self.lock_gallery(name).await?.downgrade())
    }

    /// Forgets a gallery's in-memory copy (it is read again on next use).
    pub fn forget_gallery(&self, name: &str) {
        self.galleries.lock().expect("galleries lock").remove(name);
    }

    /// The models of `settings` (checkpoints given as URLs already resolved
    /// under the root or an allowed prefix), loaded on the first image
    /// search that needs them and kept for the next.
    pub async fn analysis(&self, settings: MediaSettings) -> Result<Arc<MediaAnalysis>> {
        // Held while loading, so concurrent first searches load once.
        let mut loaded = self.analyses.lock().await;
        if let Some((_, a)) = loaded.iter().find(|(k, _)| *k == settings) {
            return Ok(Arc::clone(a));
        }
        let key = settings.clone();
        let models = self.config.models.clone();
        let analysis = tokio::task::spawn_blocking(move || MediaAnalysis::load(&settings, models.as_deref()))
            .await
            .map_err(|e| Error::internal(format!("model loading panicked: {e}")))??;
        let analysis = Arc::new(analysis);
        if loaded.len() >= MAX_LOADED_MODELS {
            loaded.remove(0);
        }
        loaded.push((key, Arc::clone(&analysis)));
        Ok(analysis)
    }

    // ------------------------------------------------------------ submission

    /// Resolves an input to a URL under the root or an allowed prefix: a
    /// relative key is taken under the root; anything else must start with
    /// one of them (no `..` anywhere).
    pub fn resolve_input(&self, input: &str) -> ApiResult<String> {
        let input = input.trim();
        if input.is_empty() {
            return Err(ApiError::bad_request("an input is empty"));
        }
        if input.starts_with('@') {
            return Err(ApiError::bad_request(format!("`{input}`: @lists are read by the CLI, not the server")));
        }
        if input.split(['/', '\\']).any(|seg| seg == "..") {
            return Err(ApiError::forbidden(format!("input `{input}` climbs out of its folder with `..`")));
        }
        let is_absolute = input.contains("://") || input.starts_with('/');
        let url = if is_absolute { as_url(input) } else { self.root.url_of(input) };
        let url = if input.ends_with('/') && !url.ends_with('/') { url + "/" } else { url };
        if self.allowed.iter().any(|a| url.starts_with(a.as_str()) || with_slash(url.clone()) == *a) {
            Ok(url)
        } else {
            Err(ApiError::forbidden(format!(
                "input `{input}` is outside the root ({}) and the allowed prefixes",
                self.root.url()
            )))
        }
    }

    /// Checks and records a job; its inputs are listed in the background.
    pub async fn submit(self: &Arc<Self>, mut spec: JobSpec, caller: &Caller) -> ApiResult<String> {
        layout::check_name("gallery", &spec.gallery)?;
        if spec.inputs.is_empty() {
            return Err(ApiError::bad_request("a job needs at least one input"));
        }
        if spec.inputs.len() > 10_000 {
            return Err(ApiError::bad_request("at most 10000 inputs per job; use folders or globs"));
        }
        spec.inputs = spec.inputs.iter().map(|i| self.resolve_input(i)).collect::<ApiResult<_>>()?;
        // A checkpoint is read by the workers like an input: under the root
        // or an allowed prefix only.
        spec.weights = spec.weights.as_deref().map(|w| self.resolve_input(w)).transpose()?;
        spec.aggregator_weights = spec.aggregator_weights.as_deref().map(|w| self.resolve_input(w)).transpose()?;
        spec.body_weights = spec.body_weights.as_deref().map(|w| self.resolve_input(w)).transpose()?;
        spec.gait_weights = spec.gait_weights.as_deref().map(|w| self.resolve_input(w)).transpose()?;
        spec.media_settings().validate()?;
        match spec.kind {
            JobKind::Enroll if spec.subjects_from.is_none() => {
                return Err(ApiError::bad_request(
                    "enroll jobs need `subjects_from`: \"dirs\" (each input a folder of one folder per subject)",
                ));
            }
            JobKind::Search => {
                let media = spec.media_settings();
                for &modality in &media.modalities {
                    let name = modality_gallery(&spec.gallery, modality);
                    let model = media.model_of(modality);
                    let option = match modality {
                        Modality::Face => "model",
                        Modality::Body => "body_model",
                        Modality::Gait => "gait_model",
                    };
                    let guard = self.read_gallery(&name).await?;
                    let Some(g) = guard.as_ref() else {
                        // Released first: erasure takes the base gallery's lock before its companions'.
                        drop(guard);
                        if modality == Modality::Face || self.read_gallery(&spec.gallery).await?.is_none() {
                            return Err(ApiError::not_found(format!("no gallery `{}`", spec.gallery)));
                        }
                        return Err(ApiError::not_found(format!(
                            "gallery `{}` has no {modality} index (`{name}`): enrol it with `modalities` naming {modality}",
                            spec.gallery
                        )));
                    };
                    if g.manifest().model != model {
                        let what = if modality == Modality::Face { String::new() } else { format!("{modality} ") };
                        return Err(ApiError::bad_request(format!(
                            "gallery `{name}` holds `{}` {what}templates; this job would make `{model}` probes (set `{option}` to `{}`)",
                            g.manifest().model,
                            g.manifest().model
                        )));
                    }
                }
                if let Some(k) = spec.top_k {
                    if !(1..=100).contains(&k) {
                        return Err(ApiError::bad_request("top_k must be 1 to 100"));
                    }
                }
                if let Some(f) = spec.fpir {
                    if !(f > 0.0 && f < 1.0) {
                        return Err(ApiError::bad_request(format!("fpir {f} must be between 0 and 1")));
                    }
                }
                if spec.threshold.is_some_and(|t| !t.is_finite()) {
                    return Err(ApiError::bad_request("threshold must be a number"));
                }
                if let Some(f) = &spec.fusion {
                    FusionRule::parse_option(f)?;
                }
            }
            JobKind::Enroll if spec.fusion.is_some() => {
                return Err(ApiError::bad_request("`fusion` is for search jobs (how a person's modalities decide)"));
            }
            JobKind::Enroll => {}
        }
        let job_id = uuid::Uuid::new_v4().to_string();
        let record = JobRecord {
            job_id: job_id.clone(),
            spec,
            key_id: caller.key_id.clone(),
            role: caller.role,
            created_at_ms: now_ms(),
        };
        put_json(&self.root, &layout::job_key(&job_id, "job.json"), &record).await?;
        self.jobs.lock().expect("jobs lock").insert(record, None, &HashMap::new(), false, None);
        self.metrics.jobs_submitted.inc();
        tracing::info!("job {job_id} submitted by {}", caller.key_id);
        let me = Arc::clone(self);
        let id = job_id.clone();
        tokio::spawn(async move { me.expand(&id).await });
        Ok(job_id)
    }

    /// Lists a job's inputs into tasks and records them.
    async fn expand(self: &Arc<Self>, job_id: &str) {
        let Some(record) = self.jobs.lock().expect("jobs lock").get(job_id).map(|j| j.record.clone()) else { return };
        let outcome = self.list_tasks(&record).await;
        let key = layout::job_key(job_id, "tasks.json");
        let tasks = match outcome {
            Ok(tasks) if tasks.is_empty() => Err(Error::invalid("no images or videos found in the inputs")),
            Ok(tasks) => match put_json_if_absent(&self.root, &key, &tasks).await {
                // Listed twice (a restart during listing): the first list wins.
                Ok(PutOutcome::AlreadyExists) => get_json::<Vec<TaskSpec>>(&self.root, &key).await,
                Ok(PutOutcome::Created) => Ok(tasks),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let end = {
            let mut table = self.jobs.lock().expect("jobs lock");
            let Some(job) = table.get_mut(job_id) else { return };
            match tasks {
                Ok(tasks) => {
                    tracing::info!("job {job_id}: {} tasks", tasks.len());
                    job.set_tasks(tasks, &HashMap::new());
                    None
                }
                Err(e) => {
                    tracing::warn!("job {job_id}: {}", e.message());
                    job.fail_expansion(e.message().to_string());
                    Some(())
                }
            }
        };
        if end.is_some() {
            self.finish_job(job_id).await;
        }
    }

    async fn list_tasks(&self, record: &JobRecord) -> Result<Vec<TaskSpec>> {
        let spec = &record.spec;
        let media = spec.media_settings();
        let mut inputs = Vec::new();
        match spec.kind {
            JobKind::Enroll => {
                for dir in &spec.inputs {
                    for (subject, input) in media::subject_inputs(dir, &|w| tracing::warn!("{w}")).await? {
                        inputs.push((input, Some(subject), Vec::new()));
                    }
                }
            }
            JobKind::Search => {
                let found = media::expand_media(&spec.inputs, &|w| tracing::warn!("{w}")).await?;
                for input in found {
                    let mut segments = Vec::new();
                    if osprey_media::is_video_path(std::path::Path::new(&input)) {
                        let (i, seconds) = (input.clone(), media.segment_seconds);
                        let rt = tokio::runtime::Handle::current();
                        let planned =
                            tokio::task::spawn_blocking(move || media::video_segments(&i, seconds, &rt)).await;
                        // A video whose header cannot be read becomes one task,
                        // which fails with the decoder's error.
                        if let Ok(Ok(planned)) = planned {
                            segments = planned
                                .iter()
                                .enumerate()
                                .map(|(index, s)| TaskSegment {
                                    index,
                                    start_ms: s.start_ms,
                                    end_ms: (s.end_ms != i64::MAX).then_some(s.end_ms),
                                })
                                .collect();
                        }
                    }
                    inputs.push((input, None, segments));
                }
            }
        }
        Ok(make_tasks(&record.job_id, spec.kind, &spec.gallery, &media, inputs))
    }

    // ------------------------------------------------------------ leases

    pub fn lease(&self, worker: &str) -> Option<osprey_api::Lease> {
        let lease = Duration::from_secs(self.config.lease_seconds.max(1));
        let out = self.jobs.lock().expect("jobs lock").lease(worker, lease, &self.root.url_of(""));
        if let Some(l) = &out {
            self.metrics.tasks_leased.inc();
            tracing::info!(
                "task {} ({}) leased to {worker}, attempt {}",
                l.task.task_id,
                input_name(&l.task),
                l.attempt
            );
        }
        out
    }

    pub fn heartbeat(&self, task_id: &str, lease_id: &str, frames: u64) -> ApiResult<bool> {
        let lease = Duration::from_secs(self.config.lease_seconds.max(1));
        let mut table = self.jobs.lock().expect("jobs lock");
        let check = table.check_lease(task_id, lease_id, Some(lease));
        let cancelled = lease_answer(check, task_id)?;
        if let Some(job) = job_of_task(task_id).and_then(|j| table.get_mut(j)) {
            job.set_live_frames(task_id, frames);
        }
        Ok(!cancelled)
    }

    /// A worker finished a task: ingest its output, then record the end.
    pub async fn complete(self: &Arc<Self>, task_id: &str, c: &osprey_api::TaskCompletion) -> ApiResult<bool> {
        let started = self.jobs.lock().expect("jobs lock").start_ingest(task_id, &c.lease_id);
        let spec = match started {
            Ok(spec) => spec,
            Err(check) => return lease_answer(check, task_id).map(|cancelled| !cancelled),
        };
        let attempts = self.jobs.lock().expect("jobs lock").attempts(task_id);
        match self.ingest(&spec).await {
            Ok(templates) => {
                let record = TaskRecord { ok: true, error: None, frames: c.frames, templates, attempts };
                self.end_task(&spec, record).await?;
                self.metrics.tasks_completed.inc();
                self.metrics.frames.add(c.frames);
                Ok(true)
            }
            Err(e) => {
                tracing::warn!("task {task_id}: cannot ingest its output: {}", e.message());
                self.retry_or_fail(&spec, &format!("cannot ingest the output: {}", e.message()), true).await?;
                Ok(true)
            }
        }
    }

    /// A worker gave up on a task.
    pub async fn fail(self: &Arc<Self>, task_id: &str, f: &osprey_api::TaskFailure) -> ApiResult<bool> {
        let started = self.jobs.lock().expect("jobs lock").start_ingest(task_id, &f.lease_id);
        let spec = match started {
            Ok(spec) => spec,
            Err(check) => return lease_answer(check, task_id).map(|cancelled| !cancelled),
        };
        let cancelled = self.jobs.lock().expect("jobs lock").get(&spec.job_id).is_some_and(|j| j.is_final());
        if cancelled {
            // Its job was cancelled: the task just ends (no error row, no retry).
            tracing::info!("task {task_id} ({}) stopped: its job was cancelled", input_name(&spec));
            let attempts = self.jobs.lock().expect("jobs lock").attempts(task_id);
            let record = TaskRecord { ok: false, error: None, frames: 0, templates: 0, attempts };
            self.end_task(&spec, record).await?;
            return Ok(true);
        }
        tracing::warn!("task {task_id} ({}) failed: {}", input_name(&spec), f.error);
        self.retry_or_fail(&spec, &f.error, f.retryable).await?;
        Ok(true)
    }

    async fn retry_or_fail(self: &Arc<Self>, spec: &TaskSpec, error: &str, retryable: bool) -> Result<()> {
        let max = self.config.max_attempts.max(1);
        if retryable && self.jobs.lock().expect("jobs lock").requeue(&spec.task_id, max) {
            self.metrics.tasks_retried.inc();
            return Ok(());
        }
        let attempts = self.jobs.lock().expect("jobs lock").attempts(&spec.task_id);
        self.fail_for_good(spec, error.to_string(), attempts).await
    }

    async fn fail_for_good(self: &Arc<Self>, spec: &TaskSpec, error: String, attempts: u32) -> Result<()> {
        if spec.kind == JobKind::Search {
            // The failure is a row of the template table, so SQL shows it.
            let scope = format!("job={}", spec.job_id);
            let index = spec.segment.map_or(usize::MAX, |s| s.index);
            let model = &spec.media.model;
            let id = media::template_id(&scope, &spec.input, index, -1, model);
            let mut row = failure_row(id, &spec.input, model, &error);
            row.job_id = Some(spec.job_id.clone());
            row.task_id = Some(spec.task_id.clone());
            // Written at the model's width: one width per model folder.
            let dim = face_model(model)?.dim;
            store_search(&self.root, &spec.job_id, &spec.task_id, model, dim, &[row], &[], &[]).await?;
        }
        let record = TaskRecord { ok: false, error: Some(error), frames: 0, templates: 0, attempts };
        self.end_task(spec, record).await?;
        self.metrics.tasks_failed.inc();
        Ok(())
    }

    async fn end_task(self: &Arc<Self>, spec: &TaskSpec, record: TaskRecord) -> Result<()> {
        put_json(&self.root, &layout::job_key(&spec.job_id, &format!("done/{}.json", spec.task_id)), &record).await?;
        // The staging copies have served: their templates and observations
        // now live in the tables (or the gallery), where erasure finds them.
        let staged = output_key(spec);
        let companions = COMPANION_MODALITIES.iter().map(|&m| layout::staged_modality(&staged, m));
        for key in [layout::staged_observations(&staged)].into_iter().chain(companions).chain([staged.clone()]) {
            if let Err(e) = self.root.delete(&key).await {
                tracing::warn!("task {}: staging output {key} left behind: {}", spec.task_id, e.message());
            }
        }
        let end = self.jobs.lock().expect("jobs lock").end_task(&spec.task_id, &record);
        if let TaskEnd::FinishJob(job_id) = end {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.finish_job(&job_id).await });
        }
        Ok(())
    }

    /// Requeues or fails tasks whose workers stopped heartbeating.
    /// Every 2 s, also drops finished jobs beyond the retention from memory.
    async fn reap_forever(self: Arc<Self>) {
        for tick in 0u64.. {
            tokio::time::sleep(Duration::from_millis(500)).await;
            self.commit_overdue();
            if tick % 4 == 3 {
                crate::job_store::prune(&self).await;
            }
            let max = self.config.max_attempts.max(1);
            let expired = self.jobs.lock().expect("jobs lock").expire(Instant::now(), max);
            for e in expired {
                let message = format!("lease expired {} times: the worker stopped responding", e.attempts);
                if let Err(err) = self.fail_for_good(&e.spec, message, e.attempts).await {
                    tracing::error!("task {}: {}", e.spec.task_id, err.message());
                }
            }
        }
    }

    // ------------------------------------------------------------ ingest

    /// Reads a task's templates and adds them to the gallery (enrol) or
    /// searches them and stores probes and results (search); their
    /// observations go beside them. Every write is keyed by the task, so
    /// ingesting twice changes nothing.
    async fn ingest(self: &Arc<Self>, spec: &TaskSpec) -> Result<u64> {
        let staged = output_key(spec);
        let templates = match read_staged_templates(&self.root, &staged, &COMPANION_MODALITIES).await {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::invalid("the worker reported success but wrote no output"));
            }
            other => other?,
        };
        // A task without observations (no template, or only failures) stages none.
        let observations = match read_observations(&self.root, &layout::staged_observations(&staged)).await {
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            other => other?,
        };
        let n = templates.len() as u64;
        // One index per modality: the face gallery itself, `<gallery>.body` beside it.
        let record = self.job_spec_record(&spec.job_id)?;
        let mut searched = Vec::new();
        for (i, modality) in spec.media.modalities.iter().copied().enumerate() {
            // The rows of inputs that failed go with the first modality.
            let these = modality_part(&templates, modality, i == 0);
            let these_obs = observations_of(&observations, &these);
            let name = modality_gallery(&spec.gallery, modality);
            match spec.kind {
                JobKind::Enroll => {
                    if these.is_empty() {
                        continue;
                    }
                    // Staged (template file written, index in memory) and
                    // marked before the task is recorded done; the snapshot
                    // is written for many tasks at once (see `crate::commits`).
                    let mut guard = self.lock_gallery(&name).await?;
                    let batch = match modality {
                        Modality::Face => format!("job-{}", spec.task_id.replace('.', "-")),
                        m => format!("job-{}-{m}", spec.task_id.replace('.', "-")),
                    };
                    let file = layout::template_file(&these[0].model, &batch);
                    let opts = EnrollOptions::default();
                    let created = guard.is_none();
                    let (g, added) =
                        stage_into(&self.root, guard.take(), &name, &batch, these, &these_obs, &opts, true).await?;
                    let g = guard.insert(g);
                    let marker = mark_uncommitted(&self.root, &name, &batch, &file).await?;
                    tracing::info!("task {}: {added} templates enrolled into `{name}`", spec.task_id);
                    // A new gallery is committed at once, so that it exists in the store.
                    self.staged(&name, g, marker, added, created).await;
                }
                JobKind::Search => {
                    searched.push(self.search_task(spec, &record, modality, &name, &these, &these_obs).await?)
                }
            }
        }
        let rule = FusionRule::parse_option(record.spec.fusion.as_deref().unwrap_or(DEFAULT_FUSION))?;
        if let (Some(rule), true) = (rule, searched.len() > 1) {
            self.fuse_task(spec, &record, rule, &templates, &searched).await?;
        }
        Ok(n)
    }

    /// Fuses a search task's per-modality results person by person
    /// ([`fuse_persons`]; a task is one input or segment, so a person's
    /// face, body and gait templates are all in it) and stores the fused
    /// rows as the task's `-fused` results part, with an audit row per
    /// person.
    async fn fuse_task(
        &self,
        spec: &TaskSpec,
        record: &JobRecord,
        rule: FusionRule,
        templates: &[osprey_store::Template],
        searched: &[SearchedIndex],
    ) -> Result<()> {
        let probes: Vec<Vec<&osprey_store::Template>> = searched
            .iter()
            .map(|s| {
                templates
                    .iter()
                    .filter(|t| t.modality.unwrap_or(Modality::Face) == s.modality && t.embedding.is_some())
                    .collect()
            })
            .collect();
        let inputs: Vec<FusionInput> = searched
            .iter()
            .zip(&probes)
            .map(|(s, probes)| FusionInput {
                modality: s.modality,
                calibration: s.calibration.clone(),
                threshold: s.threshold,
                probes,
                rows: &s.rows,
            })
            .collect();
        let calibrated = self.fused_thresholds(spec, record, rule, searched).await?;
        let fused = fuse_persons(&spec.job_id, rule, &inputs, record.spec.top_k.unwrap_or(5), calibrated.as_ref());
        let part = format!("{}-fused", spec.task_id);
        store_results(&self.root, &spec.job_id, &part, &fused).await?;
        let audit = self.audit_rows(record, &spec.job_id, &spec.gallery, &fused);
        self.audit.write_task(&part, &audit).await?;
        Ok(())
    }

    /// A fused search job's fused thresholds ([`calibrate_fusion`] for the
    /// job's FPIR, else the face index's, else the default), calibrated at
    /// its first fused ingest and kept for the job; `None` when a raw
    /// threshold was given, or the gallery cannot be calibrated (too few
    /// people: each person is then decided by its modalities' thresholds).
    async fn fused_thresholds(
        &self,
        spec: &TaskSpec,
        record: &JobRecord,
        rule: FusionRule,
        searched: &[SearchedIndex],
    ) -> Result<Option<FusedThresholds>> {
        if record.spec.threshold.is_some() {
            return Ok(None);
        }
        let cached = self.jobs.lock().expect("jobs lock").get(&spec.job_id).and_then(|j| j.fused_thresholds.clone());
        if let Some(t) = cached {
            return Ok(t);
        }
        let parts: Vec<(Modality, ScoreCalibration)> =
            searched.iter().map(|s| (s.modality, s.calibration.clone())).collect();
        let calibrated = self.fused_thresholds_of(&spec.gallery, &parts, rule, record.spec.fpir).await?;
        if let Some(j) = self.jobs.lock().expect("jobs lock").get_mut(&spec.job_id) {
            j.fused_thresholds = Some(calibrated.clone());
        }
        Ok(calibrated)
    }

    /// Fused thresholds for `gallery`'s indexes of `parts` (modality and
    /// calibration, in modality order) by [`calibrate_fusion`] for `fpir`
    /// (else the first index's calibrated FPIR, else the default: chosen
    /// there); `None`
    /// when no set of modalities has enough people, or the indexes cannot
    /// give back their vectors. Kept until one of the indexes changes.
    pub async fn fused_thresholds_of(
        &self,
        gallery: &str,
        parts: &[(Modality, ScoreCalibration)],
        rule: FusionRule,
        fpir: Option<f64>,
    ) -> Result<Option<FusedThresholds>> {
        // The indexes are locked in modality order, as every task does.
        let mut guards = Vec::new();
        for (m, _) in parts {
            guards.push(self.lock_gallery(&modality_gallery(gallery, *m)).await?);
        }
        let versions: Vec<(i64, usize)> = guards
            .iter()
            .map(|g| g.as_ref().map_or((0, 0), |g| (g.manifest().updated_at_ms, g.manifest().num_templates)))
            .collect();
        // Without an FPIR asked, the first index's calibrated one is used: part of the key.
        let first_fpir = guards.first().and_then(|g| g.as_ref()).and_then(|g| g.manifest().threshold_fpir);
        let key = format!(
            "{gallery}|{}|{}|{fpir:?}|{first_fpir:?}",
            parts.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>().join("+"),
            rule.as_str()
        );
        if let Some((v, t)) = self.fused_cache.lock().expect("fused cache lock").get(&key) {
            if *v == versions {
                return Ok(t.clone());
            }
        }
        let mut indexes: Vec<(Modality, &mut Gallery, ScoreCalibration)> = Vec::new();
        for (guard, (m, calibration)) in guards.iter_mut().zip(parts) {
            let g = guard.as_mut().ok_or_else(|| Error::not_found(format!("gallery `{gallery}` has no {m} index")))?;
            indexes.push((*m, g, calibration.clone()));
        }
        let calibrated = match calibrate_fusion(&mut indexes, rule, fpir) {
            Ok(t) if !t.by_modalities.is_empty() => Some(t),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("gallery `{gallery}`: fused thresholds not calibrated: {e}");
                None
            }
        };
        drop(indexes);
        drop(guards);
        let mut cache = self.fused_cache.lock().expect("fused cache lock");
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(key, (versions, calibrated.clone()));
        Ok(calibrated)
    }

    /// The audit rows of a job's search results: one per probe (its rank-1 row).
    fn audit_rows(
        &self,
        record: &JobRecord,
        job_id: &str,
        gallery: &str,
        rows: &[osprey_store::SearchResultRow],
    ) -> Vec<AuditRow> {
        rows.iter()
            .filter(|r| r.rank == 1)
            .map(|r| AuditRow {
                at_ms: now_ms(),
                key_id: record.key_id.clone(),
                role: record.role.as_str().to_string(),
                source: "job".into(),
                job_id: Some(job_id.to_string()),
                gallery: gallery.to_string(),
                probe: r.probe_template_id.clone(),
                top_subject_id: r.subject_id.clone(),
                top_score: r.score,
                decision: r.decision,
                threshold: r.threshold,
            })
            .collect()
    }

    /// Searches a task's probes of one modality in that modality's index of
    /// the job's gallery, and stores probes, results and audit rows.
    async fn search_task(
        &self,
        spec: &TaskSpec,
        record: &JobRecord,
        modality: Modality,
        name: &str,
        templates: &[osprey_store::Template],
        observations: &[osprey_store::ObservationRow],
    ) -> Result<SearchedIndex> {
        let mut guard = self.lock_gallery(name).await?;
        let gallery = guard.as_mut().ok_or_else(|| Error::not_found(format!("no gallery `{name}`")))?;
        // The job's threshold for this modality once (fixed at its first
        // ingest), top-k and submitter for the audit rows.
        let cached = self
            .jobs
            .lock()
            .expect("jobs lock")
            .get(&spec.job_id)
            .and_then(|j| j.operating_points.get(&modality).cloned());
        let op = match cached {
            Some(op) => op,
            None => {
                let op = operating_point(&self.root, gallery, record.spec.threshold, record.spec.fpir).await?;
                if let Some(j) = self.jobs.lock().expect("jobs lock").get_mut(&spec.job_id) {
                    j.operating_points.insert(modality, op.clone());
                }
                op
            }
        };
        let (threshold, top_k, dim) = (op.threshold, record.spec.top_k.unwrap_or(5), gallery.manifest().dim);
        let model = gallery.manifest().model.clone();
        let calibration = gallery.score_calibration_at(threshold);
        let probes: Vec<&osprey_store::Template> = templates.iter().filter(|t| t.embedding.is_some()).collect();
        let rows = search_probes(gallery, &spec.job_id, &probes, top_k, threshold)?;
        drop(guard);
        let part = match modality {
            Modality::Face => spec.task_id.clone(),
            m => format!("{}-{m}", spec.task_id),
        };
        store_search(&self.root, &spec.job_id, &part, &model, dim, templates, observations, &rows).await?;
        let audit = self.audit_rows(record, &spec.job_id, name, &rows);
        self.audit.write_task(&part, &audit).await?;
        self.metrics.probes_searched.add(audit.len() as u64);
        Ok(SearchedIndex { modality, calibration, threshold, rows })
    }

    fn job_spec_record(&self, job_id: &str) -> Result<JobRecord> {
        self.jobs
            .lock()
            .expect("jobs lock")
            .get(job_id)
            .map(|j| j.record.clone())
            .ok_or_else(|| Error::not_found(format!("no job `{job_id}`")))
    }

    /// Ends a job whose tasks all ended: calibrates an enrolled gallery's
    /// threshold, then records the end state.
    async fn finish_job(&self, job_id: &str) {
        let Some((record, state, summary)) =
            self.jobs.lock().expect("jobs lock").get(job_id).map(|j| (j.record.clone(), j.outcome(), j.summary()))
        else {
            return;
        };
        if record.spec.kind == JobKind::Enroll && state != JobState::Failed {
            if let Err(e) = self.calibrate(&record.spec).await {
                tracing::warn!("job {job_id}: gallery `{}` not calibrated: {}", record.spec.gallery, e.message());
            }
        }
        let fin = FinalRecord { state, finished_at_ms: now_ms(), summary: Some(summary) };
        if let Err(e) = put_json(&self.root, &layout::job_key(job_id, "final.json"), &fin).await {
            tracing::error!("job {job_id}: cannot record its end: {}", e.message());
        }
        tracing::info!("job {job_id} ended: {state:?}");
        self.metrics.jobs_finished.inc();
        if let Some(j) = self.jobs.lock().expect("jobs lock").get_mut(job_id) {
            j.finish(fin);
        }
    }

    /// Calibrates each of the job's modality indexes of its gallery and
    /// commits it: the snapshot holds every batch enrolled so far.
    async fn calibrate(&self, spec: &JobSpec) -> Result<()> {
        for modality in spec.media_settings().modalities {
            let name = modality_gallery(&spec.gallery, modality);
            let mut guard = self.lock_gallery(&name).await?;
            let Some(g) = guard.as_mut() else { continue };
            let mut calibrated = Ok(false);
            if g.manifest().num_subjects >= 2 {
                let (fpir, t0) = (spec.fpir.unwrap_or(osprey_index::DEFAULT_FPIR), std::time::Instant::now());
                calibrated = osprey_index::calibrate(&self.root, g, fpir).await.map(|threshold| {
                    tracing::info!(
                        "gallery `{name}`: threshold {threshold:.4} calibrated for FPIR {fpir} in {:.2} s",
                        t0.elapsed().as_secs_f64()
                    );
                    true
                });
            }
            // Committed even if calibration failed: the job's batches go in.
            self.commit_locked(&name, g, matches!(calibrated, Ok(true))).await?;
            calibrated?;
        }
        Ok(())
    }

    pub async fn cancel(&self, job_id: &str) -> ApiResult<JobState> {
        // The summary is written when the job leaves memory (its running
        // tasks may still report).
        let fin = FinalRecord { state: JobState::Cancelled, finished_at_ms: now_ms(), summary: None };
        let known = self.jobs.lock().expect("jobs lock").get(job_id).map(|j| (j.is_final(), j.status().state));
        match known {
            Some((true, state)) => return Ok(state),
            Some((false, _)) => {}
            // Not in memory: ended long ago, or no such job.
            None => return Ok(crate::job_store::job_status(self, job_id).await?.state),
        }
        self.root.put(&layout::job_key(job_id, "cancelled"), bytes::Bytes::new()).await?;
        put_json(&self.root, &layout::job_key(job_id, "final.json"), &fin).await?;
        if let Some(j) = self.jobs.lock().expect("jobs lock").get_mut(job_id) {
            j.cancel(fin);
        }
        tracing::info!("job {job_id} cancelled");
        Ok(JobState::Cancelled)
    }

    // ------------------------------------------------------------ recovery

    /// Loads every unfinished job under the root (they go on) and the
    /// finished ones within the retention (`max_finished_jobs_in_memory`,
    /// `finished_jobs_memory_seconds`); older finished jobs are only counted
    /// (two reads each) and answered from the store.
    async fn recover(self: &Arc<Self>) -> Result<()> {
        // Enrolled batches a stopped coordinator had not committed yet.
        self.recover_uncommitted().await?;
        let mut resumed = 0;
        let mut heads = Vec::new();
        for id in crate::job_store::stored_job_ids(&self.root).await? {
            match crate::job_store::read_job(&self.root, &id).await {
                Ok(Some(head)) => heads.push(head),
                Ok(None) => {}
                Err(e) => tracing::error!("skipping job {id}: {}", e.message()),
            }
        }
        let ended =
            heads.iter().filter_map(|(r, f)| f.as_ref().map(|f| (r.job_id.clone(), f.finished_at_ms))).collect();
        let not_loaded = crate::job_store::not_loaded(self, ended);
        for (record, finished) in heads {
            let id = record.job_id.clone();
            if let (true, Some(f)) = (not_loaded.contains(&id), &finished) {
                let table = &mut self.jobs.lock().expect("jobs lock");
                table.pruned.add(&id, &record.spec.gallery, f.state, record.created_at_ms);
                continue;
            }
            let (cancelled, tasks, ended) = crate::job_store::read_tasks(&self.root, &id).await?;
            resumed += usize::from(finished.is_none());
            self.jobs.lock().expect("jobs lock").insert(record, tasks, &ended, cancelled, finished);
        }
        if !not_loaded.is_empty() {
            tracing::info!("{} finished jobs left in the store, not loaded", not_loaded.len());
        }
        let (unexpanded, done) = {
            let mut table = self.jobs.lock().expect("jobs lock");
            (table.unexpanded(), table.unfinished_but_done())
        };
        for id in unexpanded {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.expand(&id).await });
        }
        for id in done {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.finish_job(&id).await });
        }
        if resumed > 0 {
            tracing::info!("resuming {resumed} unfinished jobs from {}", self.root.url());
        }
        Ok(())
    }
}

fn lease_answer(check: LeaseCheck, task_id: &str) -> ApiResult<bool> {
    match check {
        LeaseCheck::Ok { cancelled } => Ok(cancelled),
        LeaseCheck::UnknownTask => Err(ApiError::not_found(format!("no task `{task_id}`"))),
        LeaseCheck::Lost => {
            Err(ApiError::conflict(format!("task `{task_id}`: this lease expired and the task went to another worker")))
        }
    }
}

/// A job spec's media settings (what its tasks carry to the workers),
/// defaults filled in.
pub trait MediaSettingsOf {
    fn media_settings(&self) -> MediaSettings;
}

impl MediaSettingsOf for JobSpec {
    fn media_settings(&self) -> MediaSettings {
        let d = MediaSettings::default();
        MediaSettings {
            sample_fps: self.sample_fps.clone().unwrap_or(d.sample_fps),
            upsample: self.upsample.unwrap_or(d.upsample),
            max_detect_megapixels: self.max_detect_megapixels.unwrap_or(d.max_detect_megapixels),
            segment_seconds: self.segment_seconds.unwrap_or(d.segment_seconds),
            model: self.model.clone().unwrap_or(d.model),
            weights: self.weights.clone(),
            detector: self.detector.clone(),
            detect: self.detect.clone(),
            aggregator: self.aggregator.clone().unwrap_or(d.aggregator),
            aggregator_weights: self.aggregator_weights.clone(),
            modalities: self.modalities.clone().unwrap_or(d.modalities),
            body_model: self.body_model.clone(),
            body_weights: self.body_weights.clone(),
            gait_model: self.gait_model.clone(),
            gait_weights: self.gait_weights.clone(),
        }
    }
}

async fn put_json<T: serde::Serialize>(root: &Root, key: &str, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::internal(format!("{key}: {e}")))?;
    root.put(key, bytes.into()).await
}

async fn put_json_if_absent<T: serde::Serialize>(root: &Root, key: &str, value: &T) -> Result<PutOutcome> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::internal(format!("{key}: {e}")))?;
    root.put_if_absent(key, bytes.into()).await
}

async fn get_json<T: serde::de::DeserializeOwned>(root: &Root, key: &str) -> Result<T> {
    let bytes = root.get(key).await?;
    serde_json::from_slice(&bytes).map_err(|e| Error::new(ErrorKind::Corrupt, format!("{}: {e}", root.url_of(key))))
}
