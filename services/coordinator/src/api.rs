//! REST API v1: routes, authentication and the handlers. Every handler is
//! described for OpenAPI (`utoipa`), and `schemas/openapi.json` is generated
//! from these descriptions.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use osprey_api::*;
use osprey_core::{Error, OpenSetDecision};
use osprey_index::{Gallery, SubjectCandidate, operating_point};
use osprey_media::decode_image;
use osprey_pipeline::image_templates;
use osprey_sql::SqlSession;
use osprey_store::{AuditRow, layout};
use sha2::{Digest, Sha256};
use utoipa::OpenApi;

use crate::config::hex;
use crate::error::{ApiError, ApiResult};
use crate::service::{Caller, Coordinator};

type AppState = State<Arc<Coordinator>>;

pub(crate) const ALL: &[Role] = &[Role::Admin, Role::Operator, Role::Reader];
const OPERATE: &[Role] = &[Role::Admin, Role::Operator];

/// The API's routes over `coordinator`.
pub fn router(coordinator: Arc<Coordinator>) -> Router {
    let body_limit = coordinator.config.max_body_bytes;
    let upload_limit = coordinator.config.max_upload_bytes;
    let api = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/galleries", post(create_gallery).get(list_galleries))
        .route("/v1/galleries/{name}", get(show_gallery))
        .route("/v1/galleries/{name}/subjects/{subject_id}", delete(delete_subject))
        .route("/v1/jobs", post(submit_job).get(list_jobs))
        .route("/v1/jobs/{id}", get(job_status))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/results", get(job_results))
        .route("/v1/search", post(search).layer(DefaultBodyLimit::max(upload_limit)))
        .route("/v1/sql", post(sql))
        .route("/v1/tasks/lease", post(lease_task))
        .route("/v1/tasks/{id}/heartbeat", post(heartbeat))
        .route("/v1/tasks/{id}/complete", post(complete_task))
        .route("/v1/tasks/{id}/fail", post(fail_task))
        .layer(middleware::from_fn_with_state(Arc::clone(&coordinator), authenticate));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(api)
        .fallback(|| async { ApiError::not_found("no such route; the API is under /v1 (see schemas/openapi.json)") })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(coordinator)
}

/// Every route but `/healthz`: `Authorization: Bearer KEY`.
async fn authenticate(State(c): AppState, mut req: Request, next: Next) -> Response {
    let presented = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_key);
    let Some(presented) = presented else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing `Authorization: Bearer <API key>`")
            .into_response();
    };
    match c.caller(presented) {
        Some(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        None => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown API key").into_response(),
    }
}

/// The API key in an `Authorization: Bearer KEY` value (REST and Flight SQL).
pub(crate) fn bearer_key(value: &str) -> Option<&str> {
    value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim)
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Osprey REST API", version = "1", description = "Batch identification over video and images: galleries, jobs, open-set search, SQL. Every route but /healthz needs `Authorization: Bearer <key>`; roles are admin, operator and reader."),
    paths(
        healthz, metrics, create_gallery, list_galleries, show_gallery, delete_subject, submit_job, list_jobs, job_status,
        cancel_job, job_results, search, sql, lease_task, heartbeat, complete_task, fail_task
    ),
    components(schemas(UploadSearch)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The OpenAPI document as pretty JSON (what `schemas/openapi.json` holds).
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serialises") + "\n"
}

// ---------------------------------------------------------------- health, metrics

/// Liveness: `ok` when the process answers. No key needed.
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, description = "alive", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus metrics: jobs, tasks, frames, searches, latencies.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text", body = String), (status = 401, body = ErrorBody)))]
async fn metrics(State(c): AppState, Extension(caller): Extension<Caller>) -> ApiResult<Response> {
    caller.require(ALL, "metrics")?;
    let (mut queued, mut running, mut active) = (0u64, 0u64, 0u64);
    for job in c.jobs.lock().expect("jobs lock").all() {
        let s = job.status();
        queued += s.tasks.queued as u64;
        running += s.tasks.running as u64;
        active += u64::from(!s.state.is_final());
    }
    let text = c.metrics.render(&[
        ("osprey_jobs_active", "Jobs not yet ended.", active),
        ("osprey_tasks_queued", "Tasks waiting for a worker.", queued),
        ("osprey_tasks_running", "Tasks leased to workers.", running),
    ]);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

// ---------------------------------------------------------------- galleries

/// A gallery as `GET /v1/galleries/{name}` shows it: the summary and its sorted subject ids.
pub fn gallery_detail(g: &Gallery) -> GalleryDetail {
    let mut subject_ids: Vec<String> = g.subjects().map(str::to_string).collect();
    subject_ids.sort();
    subject_ids.dedup();
    GalleryDetail { summary: gallery_summary(g.manifest()), subject_ids }
}

/// What an erasure removed, as the API reports it.
pub fn erasure_report(subject_id: String, e: &osprey_index::Erasure) -> Erasure {
    Erasure {
        subject_id,
        index_templates: e.index_templates,
        template_rows: e.template_rows,
        observation_rows: e.observation_rows,
        result_rows: e.result_rows,
        thumbnails: e.thumbnails,
        silhouettes: e.silhouettes,
    }
}

/// A gallery's manifest as the API shows it.
pub fn gallery_summary(m: &osprey_index::GalleryManifest) -> GallerySummary {
    GallerySummary {
        name: m.name.clone(),
        model: m.model.clone(),
        dim: m.dim,
        subjects: m.num_subjects,
        templates: m.num_templates,
        index: m.index_factory.clone(),
        nprobe: m.nprobe,
        threshold: m.threshold,
        threshold_fpir: m.threshold_fpir,
        updated_at_ms: m.updated_at_ms,
    }
}

/// Creates an empty gallery.
#[utoipa::path(post, path = "/v1/galleries", request_body = CreateGallery,
    responses((status = 201, body = GallerySummary), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_gallery(
    State(c): AppState,
    Extension(caller): Extension<Caller>,
    body: Result<Json<CreateGallery>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<GallerySummary>)> {
    caller.require(OPERATE, "creating a gallery")?;
    let Json(req) = body?;
    let model = req.model.unwrap_or_else(|| osprey_models::MODEL_NAME.to_string());
    let spec = osprey_models::face_model(&model)?;
    let mut guard = c.lock_gallery(&req.name).await?;
    if guard.is_some() {
        return Err(ApiError::conflict(format!("gallery `{}` exists", req.name)));
    }
    if let Some(index) = &req.index {
        check_index_factory(index)?;
    }
    let mut g = Gallery::build(&req.name, &model, spec.dim, req.index.as_deref(), Vec::new(), &[])?;
    g.save(&c.root).await?;
    let s = gallery_summary(g.manifest());
    *guard = Some(g);
    Ok((StatusCode::CREATED, Json(s)))
}

/// Refuses factory strings that are not plain FAISS descriptions or that
/// would allocate absurd structures (e.g. `IVF99999999`).
fn check_index_factory(index: &str) -> ApiResult<()> {
    let plain = !index.is_empty()
        && index.len() <= 64
        && index.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b',' | b'_' | b'.'));
    let numbers_ok = index
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty())
        .all(|n| n.len() <= 6 && n.parse::<u32>().is_ok_and(|v| v <= 65_536));
    if plain && numbers_ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("`{index}` is not a FAISS index factory string this server accepts")))
    }
}

/// Lists the galleries.
#[utoipa::path(get, path = "/v1/galleries", responses((status = 200, body = Vec<GallerySummary>), (status = 401, body = ErrorBody)))]
async fn list_galleries(
    State(c): AppState,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<GallerySummary>>> {
    caller.require(ALL, "listing galleries")?;
    let manifests = osprey_index::list_galleries(&c.root).await?;
    Ok(Json(manifests.iter().map(gallery_summary).collect()))
}

/// A gallery: counts, index type, operating threshold and subject ids.
#[utoipa::path(get, path = "/v1/galleries/{name}", params(("name" = String, Path, description = "gallery")),
    responses((status = 200, body = GalleryDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn show_gallery(
    State(c): AppState,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<GalleryDetail>> {
    caller.require(ALL, "reading a gallery")?;
    let guard = c.lock_gallery(&name).await?;
    let g = guard.as_ref().ok_or_else(|| ApiError::not_found(format!("no gallery `{name}`")))?;
    Ok(Json(gallery_detail(g)))
}

/// Erases a subject: from the index, the template tables, search results and thumbnails.
#[utoipa::path(delete, path = "/v1/galleries/{name}/subjects/{subject_id}",
    params(("name" = String, Path, description = "gallery"), ("subject_id" = String, Path, description = "subject")),
    responses((status = 200, body = Erasure), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_subject(
    State(c): AppState,
    Extension(caller): Extension<Caller>,
    Path((name, subject_id)): Path<(String, String)>,
) -> ApiResult<Json<Erasure>> {
    caller.require(OPERATE, "erasing a subject")?;
    layout::check_name("subject", &subject_id)?;
    // The gallery and its other modalities' indexes (`<name>.body`): the
    // subject may be enrolled in any of them, and erasure covers all.
    let names: Vec<String> = std::iter::once(name.clone())
        .chain(osprey_index::COMPANION_MODALITIES.iter().map(|&m| osprey_index::modality_gallery(&name, m)))
        .collect();
    let mut guards = Vec::new();
    for n in &names {
        guards.push(c.lock_gallery(n).await?);
    }
    let loaded: Vec<&Gallery> = guards.iter().filter_map(|g| g.as_ref()).collect();
    if loaded.is_empty() {
        return Err(ApiError::not_found(format!("no gallery `{name}`")));
    }
    if !loaded.iter().any(|g| g.subjects().any(|s| s == subject_id)) {
        return Err(ApiError::not_found(format!("gallery `{name}` has no subject `{subject_id}`")));
    }
    let e = osprey_index::erase_subject(&c.root, &name, &subject_id).await?;
    // Read again from the erased snapshots.
    for mut guard in guards {
        *guard = None;
    }
    for n in &names {
        c.forget_gallery(n);
    }
    tracing::info!("subject {subject_id} erased from {name} by {}", caller.key_id);
    Ok(Json(erasure_report(subject_id, &e)))
}

// ---------------------------------------------------------------- jobs

/// Submits a batch job; its inputs are listed in the background.
#[utoipa::path(post, path = "/v1/jobs", request_body = JobSpec,
    responses((status = 202, body = JobCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn submit_job(
    State(c): AppState,
    Extension(caller): Extension<Caller>,
    body: Result<Json<JobSpec>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<JobCreated>)> {
    caller.require(OPERATE, "submitting a job")?;
    let Json(spec) = body?;
    let job_id = c.submit(spec, &caller).await?;
    Ok((StatusCode::ACCEPTED, Json(JobCreated { job_id, state: JobState::Queued })))
}

fn check_job_id(id: &str) -> ApiResult<()> {
    layout::check_name("job", id).map_err(ApiError::from)
}

/// A job's state, task counts, frames and errors.
#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = JobStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn job_status(
    State(c): AppState,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobStatus>> {
    caller.require(ALL, "reading a job")?;
    check_job_id(&id)?;
    let table = c.jobs.lock().expect("jobs lock");
    let job = table.get(&id).ok_or_else(|| ApiError::not_found(format!("no job `{id}`")))?;
    Ok(Json(job.status()))
}

/// Lists jobs, newest first, filtered by state and gallery, a page at a time.
#[utoipa::path(get, path = "/v1/jobs", params(JobsQuery),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_jobs(
    State(c): AppState,
    Extension(caller): Extension<Caller>,
    query: Result<Query<JobsQuery>, QueryRejection>,
) -> ApiResult<Json<JobList>> {
    caller.require(ALL, "listing jobs")?;
    let Query(q) = query?;
    let (offset, limit) = (q.offset.unwrap_or(0), q.limit.unwrap_or(50));
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit must be 1 to 1000"));
    }
    let table = c.jobs.lock().expect("jobs lock");
    let mut matching: Vec<JobStatus> = table
        .all()
        .map(|j| j.status())
        .filter(|s| q.state.is_none_or(|want| s.state == want))
        .filter(|s| q.gallery.as_ref().is_none_or(|g| &s.gallery == g))
        .collect();
    drop(table);
    // Newest first; ids break ties so pages are stable.
    matching.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then_with(|| b.job_id.cmp(&a.job_id)));
    let total = matching.len();
    let jobs = matching
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|mut s| {
            s.errors.clear();
            s
        })
        .collect();
    Ok(Json(JobList { total, offset, jobs }))
}

/// Cancels a job: queued tasks are dropped, running ones told to stop.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = JobStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn cancel_job(
    State(c): AppState,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobStatus>> {
    caller.require(OPERATE, "cancelling a job")?;
    check_job_id(&id)?;
    c.cancel(&id).await?;
    let table = c.jobs.lock().expect("jobs lock");
    Ok(Json(table.get(&id).map(|j| j.status()).ok_or_else(|| ApiError::not_found(format!("no job `{id}`")))?))
}

/// A page of a search job's rank-1 results, in media and time order.
#[utoipa::path(get, path = "/v1/jobs/{id}/results", params(("id" = String, Path, description = "job id"), ResultsQuery),
    responses((status = 200, body = ResultsPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn job_results(
    State(c): AppState,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<ResultsQuery>, QueryRejection>,
) -> ApiResult<Json<ResultsPage>> {
    caller.require(ALL, "reading results")?;
    check_job_id(&id)?;
    let Query(q) = query?;
    let (offset, limit) = (q.offset.unwrap_or(0), q.limit.unwrap_or(100));
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::bad_request("limit must be 1 to 10000"));
    }
    if c.jobs.lock().expect("jobs lock").get(&id).is_none() {
        return Err(ApiError::not_found(format!("no job `{id}`")));
    }
    let session = SqlSession::open(&c.root).await?;
    let from = format!(
        "FROM results r JOIN templates t ON r.probe_template_id = t.template_id WHERE r.job_id = '{id}' AND r.rank = 1"
    );
    let total = session.query(&format!("SELECT count(*) AS n {from}")).await?;
    let total = json_rows(&total)?.first().and_then(|r| r.get("n")).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
    let batches = session
        .query(&format!(
            "SELECT r.probe_template_id, t.media_uri, t.track_id, t.modality, t.person_track_id, t.t_start_ms, \
             t.t_end_ms, r.decision, r.subject_id, \
             r.score, r.threshold, t.thumbnail_uri {from} ORDER BY t.media_uri, t.t_start_ms, t.modality, r.probe_template_id \
             LIMIT {limit} OFFSET {offset}"
        ))
        .await?;
    let rows = json_rows(&batches)?
        .into_iter()
        .map(|r| serde_json::from_value(serde_json::Value::Object(r)))
        .collect::<Result<Vec<JobResult>, _>>()
        .map_err(|e| Error::internal(format!("result rows: {e}")))?;
    Ok(Json(ResultsPage { job_id: id, offset, total, rows }))
}

// ---------------------------------------------------------------- search

/// `POST /v1/search` as a multipart form.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct UploadSearch {
    /// The image (JPEG, PNG, …); every face in it is searched.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// Gallery to search.
    gallery: String,
    /// Candidates per face (default 5).
    k: Option<usize>,
    /// Decision threshold (cosine).
    threshold: Option<f32>,
    /// Calibrate the threshold for this FPIR.
    fpir: Option<f64>,
    /// The checkpoint of the gallery's model when it is one whose weights
    /// users bring (AdaFace, ViT + KP-RPE): a key under the root or a URL
    /// under an allowed prefix. Not for dlib's model.
    weights: Option<String>,
}

/// Searches a gallery: an image upload (multipart: every face) or one
/// embedding (JSON). Every search is written to the audit table.
#[utoipa::path(post, path = "/v1/search",
    request_body(content((EmbeddingSearch = "application/json"), (UploadSearch = "multipart/form-data"))),
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
async fn search(
    State(c): AppState,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> ApiResult<Json<SearchResponse>> {
    caller.require(ALL, "searching")?;
    let started = Instant::now();
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (gallery, k, threshold, fpir, probes) = if content_type.starts_with("multipart/form-data") {
        let form = Multipart::from_request(req, &()).await.map_err(|e| ApiError::bad_request(e.body_text()))?;
        upload_probes(&c, form).await?
    } else if content_type.starts_with("application/json") {
        let Json(s) = Json::<EmbeddingSearch>::from_request(req, &()).await?;
        if s.embedding.is_empty() || s.embedding.iter().any(|x| !x.is_finite()) {
            return Err(ApiError::bad_request("embedding must be a non-empty list of finite numbers"));
        }
        let mut e = s.embedding;
        let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm == 0.0 {
            return Err(ApiError::bad_request("embedding is all zeros"));
        }
        e.iter_mut().for_each(|x| *x /= norm);
        let digest = hex(&Sha256::digest(e.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())[..8]);
        (s.gallery, s.k, s.threshold, s.fpir, vec![(format!("embedding:{digest}"), e, None, None)])
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json (an embedding) or multipart/form-data (an image)",
        ));
    };
    let k = k.unwrap_or(5);
    if !(1..=100).contains(&k) {
        return Err(ApiError::bad_request("k must be 1 to 100"));
    }
    if threshold.is_some_and(|t| !t.is_finite()) {
        return Err(ApiError::bad_request("threshold must be a number"));
    }
    let mut guard = c.lock_gallery(&gallery).await?;
    let g = guard.as_mut().ok_or_else(|| ApiError::not_found(format!("no gallery `{gallery}`")))?;
    let dim = g.manifest().dim;
    if let Some((_, e, _, _)) = probes.iter().find(|p| p.1.len() != dim) {
        return Err(ApiError::bad_request(format!(
            "embedding has {} values; gallery `{gallery}` holds {dim}-d templates",
            e.len()
        )));
    }
    let op = operating_point(&c.root, g, threshold, fpir).await?;
    let queries: Vec<f32> = probes.iter().flat_map(|p| p.1.iter().copied()).collect();
    let answers = if probes.is_empty() { Vec::new() } else { g.search(&queries, k)? };
    drop(guard);
    let now = chrono::Utc::now().timestamp_millis();
    let mut audit = Vec::new();
    let mut out = Vec::new();
    for ((probe, _, bbox, quality), candidates) in probes.into_iter().zip(answers) {
        let decision = Gallery::decide(&candidates, op.threshold);
        let top: Option<&SubjectCandidate> = candidates.first();
        audit.push(AuditRow {
            at_ms: now,
            key_id: caller.key_id.clone(),
            role: caller.role.as_str().into(),
            source: "rest".into(),
            job_id: None,
            gallery: gallery.clone(),
            probe,
            top_subject_id: top.map(|t| t.subject_id.clone()),
            top_score: top.map(|t| t.score),
            decision,
            threshold: op.threshold,
        });
        out.push(ProbeResult {
            bbox,
            quality,
            decision: decision_str(decision),
            candidates: candidates
                .into_iter()
                .map(|c| Candidate { subject_id: c.subject_id, template_id: c.template_id, score: c.score })
                .collect(),
        });
    }
    if audit.is_empty() {
        // An upload without faces is a search too.
        audit.push(AuditRow {
            at_ms: now,
            key_id: caller.key_id.clone(),
            role: caller.role.as_str().into(),
            source: "rest".into(),
            job_id: None,
            gallery: gallery.clone(),
            probe: "upload:no-face".into(),
            top_subject_id: None,
            top_score: None,
            decision: OpenSetDecision::Unknown,
            threshold: op.threshold,
        });
    }
    c.audit.append(audit).await?;
    c.metrics.searches.inc();
    c.metrics.search_latency.observe(started.elapsed());
    Ok(Json(SearchResponse { gallery, threshold: op.threshold, threshold_source: op.source, probes: out }))
}

fn decision_str(d: OpenSetDecision) -> String {
    d.as_str().to_string()
}

type Probe = (String, Vec<f32>, Option<[f32; 4]>, Option<f32>);

/// The fields of an upload and a probe per face in its image.
async fn upload_probes(
    c: &Arc<Coordinator>,
    mut form: Multipart,
) -> ApiResult<(String, Option<usize>, Option<f32>, Option<f64>, Vec<Probe>)> {
    let (mut gallery, mut k, mut threshold, mut fpir, mut image, mut weights) = (None, None, None, None, None, None);
    while let Some(field) = form.next_field().await? {
        let name = field.name().unwrap_or_default().to_string();
        let bad = |what: &str| ApiError::bad_request(format!("form field `{name}` must be {what}"));
        match name.as_str() {
            "image" => image = Some(field.bytes().await?),
            "gallery" => gallery = Some(field.text().await?),
            "k" => k = Some(field.text().await?.trim().parse().map_err(|_| bad("a count"))?),
            "threshold" => threshold = Some(field.text().await?.trim().parse().map_err(|_| bad("a number"))?),
            "fpir" => fpir = Some(field.text().await?.trim().parse().map_err(|_| bad("a number"))?),
            "weights" => weights = Some(field.text().await?.trim().to_string()),
            other => return Err(ApiError::bad_request(format!("unknown form field `{other}`"))),
        }
    }
    let gallery = gallery.ok_or_else(|| ApiError::bad_request("form field `gallery` is missing"))?;
    let image = image.ok_or_else(|| ApiError::bad_request("form field `image` (the picture) is missing"))?;
    if image.is_empty() {
        return Err(ApiError::bad_request("the uploaded image is empty"));
    }
    let digest = hex(&Sha256::digest(&image)[..8]);
    // The faces are embedded with the gallery's own model.
    let model = {
        let guard = c.lock_gallery(&gallery).await?;
        let g = guard.as_ref().ok_or_else(|| ApiError::not_found(format!("no gallery `{gallery}`")))?;
        g.manifest().model.clone()
    };
    let spec = osprey_models::face_model(&model)?;
    let weights = match (weights, spec.needs_weights_file()) {
        (None, true) => {
            return Err(ApiError::bad_request(format!(
                "gallery `{gallery}` holds `{model}` templates: send that model's checkpoint in the form field \
                 `weights` (a key under the root or a URL under an allowed prefix)"
            )));
        }
        (Some(_), false) => {
            return Err(ApiError::bad_request(format!(
                "gallery `{gallery}` holds `{model}` templates, which need no checkpoint: drop the form field `weights`"
            )));
        }
        (w, _) => w.map(|w| c.resolve_input(&w)).transpose()?,
    };
    let analysis = c.analysis(&model, weights.as_deref()).await?;
    let faces = tokio::task::spawn_blocking(move || {
        let decoded = decode_image(&image, "upload")?;
        image_templates(analysis.analyzer(), &decoded.image)
    })
    .await
    .map_err(|e| Error::internal(format!("face analysis panicked: {e}")))??;
    let probes = faces
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let b = f.bbox;
            (format!("upload:{digest}#{i}"), f.embedding, Some([b.x, b.y, b.w, b.h]), Some(f.quality))
        })
        .collect();
    Ok((gallery, k, threshold, fpir, probes))
}

// ---------------------------------------------------------------- SQL

/// Arrow record batches as JSON objects keyed by column name.
fn json_rows(batches: &[arrow::array::RecordBatch]) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, Error> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::ArrayWriter::new(&mut buf);
        for b in batches {
            w.write(b).map_err(|e| Error::internal(format!("JSON rows: {e}")))?;
        }
        w.finish().map_err(|e| Error::internal(format!("JSON rows: {e}")))?;
    }
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&buf).map_err(|e| Error::internal(format!("JSON rows: {e}")))
}

/// Runs one read-only SQL query over `templates`, `results`, `galleries`
/// (and `audit`, for admins). JSON by default; an Arrow IPC stream with
/// `Accept: application/vnd.apache.arrow.stream`.
#[utoipa::path(post, path = "/v1/sql", request_body = SqlRequest,
    responses((status = 200, body = SqlResponse, description = "rows as JSON objects, or an Arrow IPC stream"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn sql(
    State(c): AppState,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Json<SqlRequest>, JsonRejection>,
) -> ApiResult<Response> {
    caller.require(ALL, "SQL")?;
    let started = Instant::now();
    let Json(req) = body?;
    if req.query.trim().is_empty() {
        return Err(ApiError::bad_request("query is empty"));
    }
    let session = SqlSession::open_with(&c.root, caller.role == Role::Admin).await?;
    let batches = session.query(&req.query).await?;
    c.metrics.sql_queries.inc();
    c.metrics.sql_latency.observe(started.elapsed());
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/vnd.apache.arrow.stream"));
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => Arc::new(arrow::datatypes::Schema::empty()),
    };
    if wants_arrow {
        let mut buf = Vec::new();
        {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &schema)
                .map_err(|e| Error::internal(format!("Arrow stream: {e}")))?;
            for b in &batches {
                w.write(b).map_err(|e| Error::internal(format!("Arrow stream: {e}")))?;
            }
            w.finish().map_err(|e| Error::internal(format!("Arrow stream: {e}")))?;
        }
        return Ok(([(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")], Body::from(buf)).into_response());
    }
    let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
    Ok(Json(SqlResponse { columns, rows: json_rows(&batches)? }).into_response())
}

// ---------------------------------------------------------------- worker protocol

/// Leases the next queued task (204 when there is none).
#[utoipa::path(post, path = "/v1/tasks/lease", request_body = LeaseRequest,
    responses((status = 200, body = Lease), (status = 204, description = "no task queued"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn lease_task(
    State(c): AppState,
    Extension(caller): Extension<Caller>,
    body: Result<Json<LeaseRequest>, JsonRejection>,
) -> ApiResult<Response> {
    caller.require(OPERATE, "leasing tasks")?;
    let Json(req) = body?;
    Ok(match c.lease(&req.worker_id) {
        Some(lease) => Json(lease).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// Keeps a lease alive and reports progress.
#[utoipa::path(post, path = "/v1/tasks/{id}/heartbeat", params(("id" = String, Path, description = "task id")), request_body = Heartbeat,
    responses((status = 200, body = TaskAck), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn heartbeat(
    State(c): AppState,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<Heartbeat>, JsonRejection>,
) -> ApiResult<Json<TaskAck>> {
    caller.require(OPERATE, "the worker protocol")?;
    let Json(hb) = body?;
    Ok(Json(TaskAck { keep_going: c.heartbeat(&id, &hb.lease_id, hb.frames)? }))
}

/// Completes a task: its templates are at the lease's output key.
#[utoipa::path(post, path = "/v1/tasks/{id}/complete", params(("id" = String, Path, description = "task id")), request_body = TaskCompletion,
    responses((status = 200, body = TaskAck), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn complete_task(
    State(c): AppState,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<TaskCompletion>, JsonRejection>,
) -> ApiResult<Json<TaskAck>> {
    caller.require(OPERATE, "the worker protocol")?;
    let Json(done) = body?;
    Ok(Json(TaskAck { keep_going: c.complete(&id, &done).await? }))
}

/// Fails a task: retried unless `retryable` is false or attempts ran out.
#[utoipa::path(post, path = "/v1/tasks/{id}/fail", params(("id" = String, Path, description = "task id")), request_body = TaskFailure,
    responses((status = 200, body = TaskAck), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn fail_task(
    State(c): AppState,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<TaskFailure>, JsonRejection>,
) -> ApiResult<Json<TaskAck>> {
    caller.require(OPERATE, "the worker protocol")?;
    let Json(f) = body?;
    Ok(Json(TaskAck { keep_going: c.fail(&id, &f).await? }))
}
