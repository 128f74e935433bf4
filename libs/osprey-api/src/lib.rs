//! Osprey's REST API v1, as types: what clients send and get back, and the
//! worker protocol. The coordinator serves them, workers and the CLI send
//! them, and `schemas/openapi.json` is generated from them, so the three can
//! never disagree about a field.
#![warn(missing_docs)]

use osprey_core::Modality;
pub use osprey_pipeline::MediaSettings;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The header value of a JSON error: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A machine-readable code and a message for people.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// E.g. `unauthorized`, `forbidden`, `invalid_input`, `not_found`.
    pub code: String,
    /// What went wrong, naming the thing.
    pub message: String,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Search, results and SQL over templates and results.
    Reader,
    /// Also galleries, jobs and the worker protocol.
    Operator,
    /// Everything, including the audit table.
    Admin,
}

impl Role {
    /// `reader`, `operator` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses `reader`, `operator` or `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        match s.trim() {
            "reader" => Some(Role::Reader),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------- galleries

/// `POST /v1/galleries`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGallery {
    /// 1-128 ASCII letters, digits, `.`, `_` or `-`.
    pub name: String,
    /// Embedding model (default and only one shipped: `dlib-resnet-v1`).
    #[serde(default)]
    pub model: Option<String>,
    /// FAISS index factory string (default: chosen by gallery size).
    #[serde(default)]
    pub index: Option<String>,
    /// Candidates each search re-ranks by exact cosine similarity, from the
    /// float vectors kept beside a compressed index (0: none). Default: 100
    /// for compressed (product-quantised) indexes, none for the others.
    #[serde(default)]
    pub rerank: Option<usize>,
}

/// A gallery as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GallerySummary {
    /// Gallery name.
    pub name: String,
    /// Embedding model.
    pub model: String,
    /// Embedding width.
    pub dim: usize,
    /// Enrolled subjects.
    pub subjects: usize,
    /// Enrolled templates.
    pub templates: usize,
    /// FAISS index factory string.
    pub index: String,
    /// IVF lists probed per search (IVF indexes).
    pub nprobe: Option<usize>,
    /// Candidates each search re-ranks by exact score (compressed indexes).
    #[serde(default)]
    pub rerank: Option<usize>,
    /// Operating threshold (cosine), once calibrated.
    pub threshold: Option<f32>,
    /// The FPIR the threshold was calibrated for.
    pub threshold_fpir: Option<f64>,
    /// Last change (Unix milliseconds).
    pub updated_at_ms: i64,
}

/// `GET /v1/galleries/{name}`: the summary and the subject ids.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GalleryDetail {
    /// The gallery.
    #[serde(flatten)]
    pub summary: GallerySummary,
    /// Enrolled subject ids, sorted.
    pub subject_ids: Vec<String>,
}

/// `DELETE /v1/galleries/{name}/subjects/{subject_id}`: what was erased.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Erasure {
    /// The subject erased.
    pub subject_id: String,
    /// Templates removed from the index.
    pub index_templates: usize,
    /// Template rows removed from the template tables.
    pub template_rows: usize,
    /// Observation rows (per-frame boxes) of those templates removed.
    pub observation_rows: usize,
    /// Search result rows naming the subject removed.
    pub result_rows: usize,
    /// Thumbnails deleted.
    pub thumbnails: usize,
    /// Silhouette strips (body tracks) deleted.
    #[serde(default)]
    pub silhouettes: usize,
}

// ---------------------------------------------------------------- jobs

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Enrol subjects into a gallery (`subjects_from: "dirs"`).
    Enroll,
    /// Find who appears in images and videos.
    Search,
}

/// Where an enroll job takes subject ids from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SubjectsFrom {
    /// Each input is a folder holding one folder per subject, named by its id.
    Dirs,
}

/// `POST /v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// `enroll` or `search`.
    pub kind: JobKind,
    /// Gallery to enrol into or search.
    pub gallery: String,
    /// Object URLs, folders (ending in `/`) or globs under the root or an
    /// allowed prefix; a relative key is taken under the root.
    pub inputs: Vec<String>,
    /// Required for enroll jobs: `dirs`.
    #[serde(default)]
    pub subjects_from: Option<SubjectsFrom>,
    /// Video frames analysed: a rate in frames/s (`5`), `every:N` or `all`.
    #[serde(default, deserialize_with = "number_or_string")]
    #[schema(value_type = Option<String>, example = "5")]
    pub sample_fps: Option<String>,
    /// Image doublings before detection (0-3; default 1).
    #[serde(default)]
    pub upsample: Option<u32>,
    /// Most megapixels the detector searches per frame (default 4).
    #[serde(default)]
    pub max_detect_megapixels: Option<f64>,
    /// Where MMOD searches video frames: `every-frame` (the whole frame) or
    /// `cascade` (crops around cheap proposals and tracked faces); default:
    /// the workers' default.
    #[serde(default)]
    pub detect: Option<String>,
    /// Videos longer than this are split into tasks of this many seconds (default 300).
    #[serde(default)]
    pub segment_seconds: Option<u64>,
    /// Face model id (`osprey models list`; default `dlib-resnet-v1`). A
    /// search job must use the gallery's model.
    #[serde(default)]
    #[schema(example = "adaface-ir101")]
    pub model: Option<String>,
    /// The checkpoint of a model whose weights users bring (AdaFace, ViT +
    /// KP-RPE): a key under the root, or a URL under the root or an allowed prefix.
    #[serde(default)]
    pub weights: Option<String>,
    /// Face detector: `mmod` or `mtcnn` (default: the model's own, MMOD for
    /// dlib's model and MTCNN for the seed's).
    #[serde(default)]
    #[schema(example = "mtcnn")]
    pub detector: Option<String>,
    /// How a video track becomes one template: `mean` (default; the
    /// norm-weighted mean for AdaFace-style models) or `caface` (CAFace's
    /// learnt fusion, with `adaface-ir101`).
    #[serde(default)]
    #[schema(example = "caface")]
    pub aggregator: Option<String>,
    /// The CAFace checkpoint for `aggregator: caface`, as for `weights`.
    #[serde(default)]
    pub aggregator_weights: Option<String>,
    /// What to find and embed: `face`, `body`, `gait` (with `body`), or
    /// several (default `["face"]`). Enrolment puts each modality's
    /// templates in its own index of the gallery (`<gallery>.body`,
    /// `<gallery>.gait`); a search job searches each
    /// named modality in its index, and results say which matched.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, example = json!(["face", "body"]))]
    pub modalities: Option<Vec<Modality>>,
    /// The body model: the out-of-the-box appearance model (default,
    /// `dinov2-vits14-imgfocus-0.1.1`) or a body recogniser whose weights
    /// users bring (`osnet-x1_0`, `osnet-ain-x1_0`, `clip3dreid`,
    /// `sapiensid`).
    #[serde(default)]
    pub body_model: Option<String>,
    /// The body recogniser's checkpoint, as for `weights`.
    #[serde(default)]
    pub body_weights: Option<String>,
    /// The gait model (`gaitbase`: from silhouettes; `biggait`: from RGB
    /// crops) for `gait` among the modalities (which needs `body` too): one
    /// gait template per body track of a video; tracks with too few frames
    /// get a row with an `error`.
    #[serde(default)]
    #[schema(example = "gaitbase")]
    pub gait_model: Option<String>,
    /// The gait model's checkpoint, as for `weights`.
    #[serde(default)]
    pub gait_weights: Option<String>,
    /// Search: calibrate the threshold for this false-positive identification rate.
    #[serde(default)]
    pub fpir: Option<f64>,
    /// Search: the decision threshold (cosine); overrides `fpir`.
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Search: candidates kept per probe (default 5).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Search with several modalities: how each person's face, body and
    /// gait scores become one decision (`quality`, the default: calibrated
    /// scores weighted by each template's quality; `max`: the strongest
    /// calibrated score; `none`: per-modality results only). Fused results
    /// are rows with `fusion` set, one set per person track.
    #[serde(default)]
    #[schema(example = "quality")]
    pub fusion: Option<String>,
}

fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!("sample_fps must be a number or a string, not {other}"))),
    }
}

/// `POST /v1/jobs` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobCreated {
    /// The new job's id.
    pub job_id: String,
    /// `queued`.
    pub state: JobState,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its inputs to be listed or for a worker.
    Queued,
    /// Tasks are being processed.
    Running,
    /// Every task succeeded.
    Completed,
    /// Every task ended; some failed (see `errors`).
    CompletedWithErrors,
    /// Nothing could be done (e.g. no inputs, every task failed).
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl JobState {
    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

/// Task counts of a job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct TaskCounts {
    /// All tasks (0 until the inputs are listed).
    pub total: usize,
    /// Succeeded.
    pub done: usize,
    /// Failed for good.
    pub failed: usize,
    /// Leased to a worker now.
    pub running: usize,
    /// Waiting for a worker.
    pub queued: usize,
}

/// One input that failed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobError {
    /// The input (object URL), with `#segment` for a part of a video.
    pub input: String,
    /// Why.
    pub message: String,
}

/// `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobStatus {
    /// The job.
    pub job_id: String,
    /// `enroll` or `search`.
    pub kind: JobKind,
    /// Its gallery.
    pub gallery: String,
    /// Where it is.
    pub state: JobState,
    /// Task counts.
    pub tasks: TaskCounts,
    /// Frames analysed so far (images count one).
    pub frames: u64,
    /// Templates made so far.
    pub templates: u64,
    /// Inputs that failed, with why.
    pub errors: Vec<JobError>,
    /// Submission time (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// End time, once ended.
    pub finished_at_ms: Option<i64>,
}

/// `GET /v1/jobs` query: filters and the page.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only jobs in this state.
    #[serde(default)]
    pub state: Option<JobState>,
    /// Only jobs of this gallery.
    #[serde(default)]
    pub gallery: Option<String>,
    /// Jobs to skip (newest first).
    #[serde(default)]
    pub offset: Option<usize>,
    /// Jobs to return (default 50, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `GET /v1/jobs`: a page of jobs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// Jobs matching the filters.
    pub total: usize,
    /// Jobs skipped before this page.
    pub offset: usize,
    /// Their statuses (as `GET /v1/jobs/{id}`, without the error list, which
    /// is counted in `tasks`).
    pub jobs: Vec<JobStatus>,
}

/// `GET /v1/jobs/{id}/results` query.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// Rows to skip.
    #[serde(default)]
    pub offset: Option<usize>,
    /// Rows to return (default 100, at most 10000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// One probe template of a search job and its best candidate.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobResult {
    /// The probe template.
    pub probe_template_id: String,
    /// Where it was found.
    pub media_uri: Option<String>,
    /// Track within a video.
    pub track_id: Option<i64>,
    /// What the probe is of (`face`, `body`): the gallery index it was
    /// searched in.
    #[serde(default)]
    pub modality: Option<String>,
    /// The person track (body track in the same segment) a face track
    /// belongs to, when people were tracked too.
    #[serde(default)]
    pub person_track_id: Option<String>,
    /// First and last time seen (ms), for video.
    pub t_start_ms: Option<i64>,
    /// Last time seen (ms).
    pub t_end_ms: Option<i64>,
    /// `match` or `unknown`.
    pub decision: String,
    /// The best candidate subject (also for `unknown`, as the nearest).
    pub subject_id: Option<String>,
    /// Its score (cosine).
    pub score: Option<f32>,
    /// The threshold used.
    pub threshold: f32,
    /// The probe's crop (face or whole person).
    pub thumbnail_uri: Option<String>,
    /// For a fused row (one per person track, its `probe_template_id` the
    /// body track's template, or the face's where no body was seen): the
    /// rule (`quality`, `max`); null for a modality's own row. A fused
    /// `score` and `threshold` are log-likelihood ratios.
    #[serde(default)]
    pub fusion: Option<String>,
    /// Fused rows: each modality's raw score for the subject and its weight
    /// in the fusion (null where the person had no such template).
    #[serde(default)]
    pub face_score: Option<f32>,
    /// See `face_score`.
    #[serde(default)]
    pub face_weight: Option<f32>,
    /// See `face_score`.
    #[serde(default)]
    pub body_score: Option<f32>,
    /// See `face_score`.
    #[serde(default)]
    pub body_weight: Option<f32>,
    /// See `face_score`.
    #[serde(default)]
    pub gait_score: Option<f32>,
    /// See `face_score`.
    #[serde(default)]
    pub gait_weight: Option<f32>,
}

/// `GET /v1/jobs/{id}/results`: a page of rank-1 results in media and time order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResultsPage {
    /// The job.
    pub job_id: String,
    /// Rows skipped.
    pub offset: usize,
    /// Rows in all.
    pub total: usize,
    /// This page.
    pub rows: Vec<JobResult>,
}

// ---------------------------------------------------------------- search

/// `POST /v1/search` with a JSON body: search one embedding, or one person
/// given by several (`inputs`: e.g. their face and body embeddings), each in
/// its modality's index of the gallery, fused into one decision.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingSearch {
    /// Gallery to search.
    pub gallery: String,
    /// One probe embedding (the index's width; normalised before search).
    /// Give this or `inputs`.
    #[serde(default)]
    pub embedding: Option<Vec<f32>>,
    /// The index `embedding` is searched in (default `face`: the gallery
    /// itself; `body`, `gait`: `<gallery>.body`, `<gallery>.gait`).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "body")]
    pub modality: Option<Modality>,
    /// Several templates of one person, at most one per modality: each is
    /// searched in its modality's index and, with two or more, the answers
    /// are fused (`fused` in the answer).
    #[serde(default)]
    pub inputs: Option<Vec<ProbeInput>>,
    /// How the person's modalities become one decision: `quality`
    /// (default), `max` or `none`.
    #[serde(default)]
    #[schema(example = "quality")]
    pub fusion: Option<String>,
    /// Candidates to return (default 5, at most 100).
    #[serde(default)]
    pub k: Option<usize>,
    /// Decision threshold (the raw score of every index searched);
    /// overrides `fpir`.
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Calibrate each index's threshold for this FPIR.
    #[serde(default)]
    pub fpir: Option<f64>,
}

/// One template of the person in a multimodal search.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeInput {
    /// `face`, `body` or `gait`.
    #[schema(value_type = String, example = "face")]
    pub modality: Modality,
    /// The embedding (the index's width; normalised before search).
    pub embedding: Vec<f32>,
    /// How far to trust it, 0-1 (default 1): its weight in `quality` fusion.
    #[serde(default)]
    pub quality: Option<f32>,
}

/// A candidate subject.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Candidate {
    /// Subject id.
    pub subject_id: String,
    /// The subject's best-scoring template.
    pub template_id: String,
    /// Cosine similarity.
    pub score: f32,
}

/// One probe (a face or person in an upload, or an embedding) and its answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProbeResult {
    /// Which index it was searched in (`face`, `body`, `gait`).
    #[serde(default)]
    pub modality: Option<String>,
    /// Box in the uploaded image: x, y, width, height in pixels.
    pub bbox: Option<[f32; 4]>,
    /// Quality (0-1), for uploads and inputs that give it.
    pub quality: Option<f32>,
    /// `match` or `unknown`.
    pub decision: String,
    /// The threshold this probe was decided with (its index's).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// The person it belongs to in `fused` (a face inside a body's box in
    /// an upload belongs to that body's person).
    #[serde(default)]
    pub person: Option<String>,
    /// Best first.
    pub candidates: Vec<Candidate>,
}

/// A fused candidate: the fused score (a log-likelihood ratio) and what
/// each modality said.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FusedCandidate {
    /// Subject id.
    pub subject_id: String,
    /// Fused score (log-likelihood ratio; above `threshold` is a match).
    pub score: f32,
    /// Each modality's raw score for the subject (null where absent).
    pub face_score: Option<f32>,
    /// Each modality's weight in the fusion.
    pub face_weight: Option<f32>,
    /// As `face_score`.
    pub body_score: Option<f32>,
    /// As `face_weight`.
    pub body_weight: Option<f32>,
    /// As `face_score`.
    pub gait_score: Option<f32>,
    /// As `face_weight`.
    pub gait_weight: Option<f32>,
}

/// One person's fused answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FusedResult {
    /// The person (as `person` on its probes).
    pub person: String,
    /// The rule (`quality`, `max`).
    pub fusion: String,
    /// `match` or `unknown`.
    pub decision: String,
    /// The fused threshold (log-likelihood ratio): each modality's own
    /// threshold on the same scale, weighted alike.
    pub threshold: f32,
    /// Best first.
    pub candidates: Vec<FusedCandidate>,
}

/// `POST /v1/search` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchResponse {
    /// Gallery searched.
    pub gallery: String,
    /// The threshold used (the first index searched: the face index when
    /// faces were searched; each probe has its own).
    pub threshold: f32,
    /// Where the threshold came from.
    pub threshold_source: String,
    /// One per face or person found (uploads), per input, or one (embedding).
    pub probes: Vec<ProbeResult>,
    /// With several modalities: one fused answer per person.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fused: Vec<FusedResult>,
}

// ---------------------------------------------------------------- SQL

/// `POST /v1/sql`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// One read-only query over `templates`, `results`, `galleries` (and
    /// `audit` for admins).
    pub query: String,
}

/// `POST /v1/sql` answer in JSON.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SqlResponse {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// One object per row, keyed by column name.
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
}

// ---------------------------------------------------------------- worker protocol

/// `POST /v1/tasks/lease`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The worker, for logs and metrics.
    pub worker_id: String,
}

/// A time segment of a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskSegment {
    /// Segment number in the video.
    pub index: usize,
    /// Start (ms, inclusive).
    pub start_ms: i64,
    /// End (ms, exclusive; `null`: to the end).
    pub end_ms: Option<i64>,
}

/// One unit of work: one input, or one segment of a video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskSpec {
    /// Unique within the job.
    pub task_id: String,
    /// The job.
    pub job_id: String,
    /// Enrol or search.
    pub kind: JobKind,
    /// The gallery (enrol: marks the templates).
    pub gallery: String,
    /// Object URL of the image or video.
    pub input: String,
    /// Enrol: the subject the input shows.
    pub subject_id: Option<String>,
    /// A segment of a video (`null`: the whole input).
    pub segment: Option<TaskSegment>,
    /// Analysis settings.
    pub media: MediaSettings,
}

/// A leased task: do it, heartbeat, then complete or fail it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Lease {
    /// Names this lease in heartbeats and completion.
    pub lease_id: String,
    /// Heartbeat more often than this, or the task goes to another worker.
    pub lease_seconds: u64,
    /// Attempt number (1 on the first lease).
    pub attempt: u32,
    /// The root URL to write outputs under.
    pub root: String,
    /// Write the task's templates here (put-if-absent), relative to the root.
    pub output_key: String,
    /// The task.
    pub task: TaskSpec,
}

/// `POST /v1/tasks/{id}/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The lease.
    pub lease_id: String,
    /// Frames analysed so far in this attempt.
    #[serde(default)]
    pub frames: u64,
}

/// `POST /v1/tasks/{id}/complete`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskCompletion {
    /// The lease.
    pub lease_id: String,
    /// Frames analysed.
    pub frames: u64,
    /// Templates written to the output key.
    pub templates: u64,
}

/// `POST /v1/tasks/{id}/fail`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskFailure {
    /// The lease.
    pub lease_id: String,
    /// Why, naming the input.
    pub error: String,
    /// `false` when trying again cannot help (corrupt or unreadable input).
    pub retryable: bool,
}

/// Answer to heartbeat, complete and fail.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskAck {
    /// `false` when the job was cancelled: stop working on it.
    pub keep_going: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Task specs stored before a media field existed (here: before
    /// modalities, body and gait models, `detect`) still read, with the
    /// defaults; a misspelt field is refused.
    #[test]
    fn stored_task_specs_read_with_defaults() {
        let spec: TaskSpec = serde_json::from_value(serde_json::json!({
            "task_id": "t0", "job_id": "j", "kind": "search", "gallery": "g", "input": "file:///a.jpg",
            "subject_id": null, "segment": null,
            "media": {"sample_fps": "2", "upsample": 0, "max_detect_megapixels": 4.0, "segment_seconds": 300,
                      "model": "dlib-resnet-v1", "aggregator": "mean"}
        }))
        .unwrap();
        assert_eq!(spec.media.sample_fps, "2");
        assert_eq!(spec.media.upsample, 0);
        assert_eq!(spec.media.modalities, vec![Modality::Face]);
        assert_eq!(spec.media.detect, None);
        let misspelt = serde_json::json!({"sample_fsp": "2"});
        assert!(serde_json::from_value::<MediaSettings>(misspelt).is_err());
    }
}
