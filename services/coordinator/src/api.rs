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
use osprey_core::fusion::{FusionRule, ScoreCalibration};
use osprey_core::{Error, Modality, OpenSetDecision};
use osprey_index::{FusionInput, Gallery, fuse_persons, modality_gallery, result_rows};
use osprey_media::decode_image;
use osprey_pipeline::MediaSettings;
use osprey_sql::SqlSession;
use osprey_store::{AuditRow, SearchResultRow, Template, layout};
use sha2::{Digest, Sha256};
use utoipa::OpenApi;

use crate::config::hex;
use crate::error::{ApiError, ApiResult};
use crate::search_batch::{SearchAnswer, SearchAsk as SearchBatchAsk};
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
        .route("/v1/jobs/{id}/report", post(job_report))
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
        cancel_job, job_results, job_report, search, sql, lease_task, heartbeat, complete_task, fail_task
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
    let (mut queued, mut running, mut active, mut in_memory) = (0u64, 0u64, 0u64, 0u64);
    for job in c.jobs.lock().expect("jobs lock").all() {
        let s = job.status();
        in_memory += 1;
        queued += s.tasks.queued as u64;
        running += s.tasks.running as u64;
        active += u64::from(!s.state.is_final());
    }
    let text = c.metrics.render(&[
        ("osprey_jobs_active", "Jobs not yet ended.", active),
        ("osprey_tasks_queued", "Tasks waiting for a worker.", queued),
        ("osprey_tasks_running", "Tasks leased to workers.", running),
        (
            "osprey_jobs_in_memory",
            "Jobs held in the coordinator's memory (finished ones beyond the retention are read from the store).",
            in_memory,
        ),
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
        rerank: m.rerank,
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
    let mut g =
        Gallery::build_reranked(&req.name, &model, spec.dim, req.index.as_deref(), req.rerank, Vec::new(), &[])?;
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
    let guard = c.read_gallery(&name).await?;
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
    if !loaded.iter().any(|g| g.has_subject(&subject_id)) {
        return Err(ApiError::not_found(format!("gallery `{name}` has no subject `{subject_id}`")));
    }
    // Erasure works on the stored snapshots: enrolled batches not in them
    // yet go in first (else they would be dropped with the in-memory copy).
    for (n, guard) in names.iter().zip(guards.iter_mut()) {
        if let Some(g) = guard.as_mut() {
            c.commit_locked(n, g, false).await?;
        }
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
    Ok(Json(crate::job_store::job_status(&c, &id).await?))
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
    // Finished jobs no longer in memory are read from the store when the
    // page reaches them (crate::job_store has the costs).
    Ok(Json(crate::job_store::list_jobs(&c, &q, offset, limit).await?))
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
    Ok(Json(crate::job_store::job_status(&c, &id).await?))
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
    // 404 for no such job (one finished long ago is read from the store).
    crate::job_store::job_status(&c, &id).await?;
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
             r.score, r.threshold, t.thumbnail_uri, r.fusion, r.face_score, r.face_weight, r.body_score, \
             r.body_weight, r.gait_score, r.gait_weight {from} \
             ORDER BY t.media_uri, t.t_start_ms, t.modality, r.fusion NULLS FIRST, r.probe_template_id \
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
    /// The image (JPEG, PNG, …); every face (and person, with `body` among
    /// `modalities`) in it is searched.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// Gallery to search.
    gallery: String,
    /// What to search, comma-separated: `face` (default), `body`, or
    /// `face,body` (each face is linked to the person whose box holds it,
    /// and each person's answers are fused).
    modalities: Option<String>,
    /// With several modalities: `quality` (default), `max` or `none`.
    fusion: Option<String>,
    /// Candidates per probe (default 5).
    k: Option<usize>,
    /// Decision threshold (the raw score of every index searched).
    threshold: Option<f32>,
    /// Calibrate each index's threshold for this FPIR.
    fpir: Option<f64>,
    /// The checkpoint of the gallery's face model when it is one whose
    /// weights users bring (AdaFace, ViT + KP-RPE): a key under the root or
    /// a URL under an allowed prefix. Not for dlib's model.
    weights: Option<String>,
    /// The checkpoint of the body index's model when users bring it
    /// (OSNet, CLIP3DReID, SapiensID), as for `weights`.
    body_weights: Option<String>,
}

/// What a search asks, from either body: the probes, each for its
/// modality's index, and the options.
struct SearchAsk {
    gallery: String,
    /// The indexes searched, in order (also those without probes: an
    /// upload without faces still answers with the face index's threshold).
    modalities: Vec<Modality>,
    probes: Vec<RestProbe>,
    fusion: Option<String>,
    k: Option<usize>,
    threshold: Option<f32>,
    fpir: Option<f64>,
}

/// One probe of a search: searched in its modality's index, fused with
/// the other probes of its person.
struct RestProbe {
    id: String,
    modality: Modality,
    embedding: Vec<f32>,
    bbox: Option<[f32; 4]>,
    quality: Option<f32>,
    /// The person it belongs to (a body probe is its own person).
    person: Option<String>,
}

/// Searches a gallery: an image upload (multipart: every face, and with
/// `modalities` every person) or embeddings (JSON: one, or one person's
/// several). Each probe is searched in its modality's index; a person with
/// several modalities also gets a fused answer. Every search is written to
/// the audit table.
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
    let ask = if content_type.starts_with("multipart/form-data") {
        let form = Multipart::from_request(req, &()).await.map_err(|e| ApiError::bad_request(e.body_text()))?;
        upload_probes(&c, form).await?
    } else if content_type.starts_with("application/json") {
        let Json(s) = Json::<EmbeddingSearch>::from_request(req, &()).await?;
        embedding_probes(s)?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json (embeddings) or multipart/form-data (an image)",
        ));
    };
    let k = ask.k.unwrap_or(5);
    if !(1..=100).contains(&k) {
        return Err(ApiError::bad_request("k must be 1 to 100"));
    }
    if ask.threshold.is_some_and(|t| !t.is_finite()) {
        return Err(ApiError::bad_request("threshold must be a number"));
    }
    let rule = FusionRule::parse_option(ask.fusion.as_deref().unwrap_or("quality"))?;
    let now = chrono::Utc::now().timestamp_millis();
    let audit_row = |gallery: &str, probe: String, r: Option<&SearchResultRow>, decision, threshold| AuditRow {
        at_ms: now,
        key_id: caller.key_id.clone(),
        role: caller.role.as_str().into(),
        source: "rest".into(),
        job_id: None,
        gallery: gallery.to_string(),
        probe,
        top_subject_id: r.and_then(|r| r.subject_id.clone()),
        top_score: r.and_then(|r| r.score),
        decision,
        threshold,
    };
    let mut audit = Vec::new();
    let mut out = Vec::new();
    let mut first_op = None;
    // Per index: its modality, calibration, threshold, probes and rows (for fusion).
    let mut searched = Vec::new();
    for &modality in &ask.modalities {
        let name = modality_gallery(&ask.gallery, modality);
        let these: Vec<Template> = ask
            .probes
            .iter()
            .filter(|p| p.modality == modality)
            .map(|p| Template {
                template_id: p.id.clone(),
                modality: Some(modality),
                embedding: Some(p.embedding.clone()),
                quality: Some(p.quality.unwrap_or(1.0)),
                person_track_id: p.person.clone(),
                ..Default::default()
            })
            .collect();
        // Searched together with the concurrent searches of this index
        // (search_batch.rs); this ask's width is checked on its own.
        let batch_ask = SearchBatchAsk {
            modality,
            embeddings: ask.probes.iter().filter(|p| p.modality == modality).map(|p| p.embedding.clone()).collect(),
            k,
            threshold: ask.threshold,
            fpir: ask.fpir,
        };
        let answer = c.searches.search(&c, &name, batch_ask).await?.ok_or_else(|| match modality {
            Modality::Face => ApiError::not_found(format!("no gallery `{}`", ask.gallery)),
            m => ApiError::not_found(format!(
                "gallery `{}` has no {m} index (`{name}`): enrol it with `modalities` naming {m}",
                ask.gallery
            )),
        })?;
        let SearchAnswer { op, calibration, candidates } = answer;
        let rows = result_rows("", &these, &candidates, op.threshold);
        for p in ask.probes.iter().filter(|p| p.modality == modality) {
            let mine: Vec<&SearchResultRow> = rows.iter().filter(|r| r.probe_template_id == p.id).collect();
            let decision = mine.first().map_or(OpenSetDecision::Unknown, |r| r.decision);
            audit.push(audit_row(&name, p.id.clone(), mine.first().copied(), decision, op.threshold));
            out.push(ProbeResult {
                modality: Some(modality.as_str().to_string()),
                bbox: p.bbox,
                quality: p.quality,
                decision: decision_str(decision),
                threshold: Some(op.threshold),
                person: p.person.clone(),
                candidates: mine
                    .iter()
                    .filter_map(|r| {
                        Some(Candidate {
                            subject_id: r.subject_id.clone()?,
                            template_id: r.gallery_template_id.clone()?,
                            score: r.score?,
                        })
                    })
                    .collect(),
            });
        }
        first_op.get_or_insert(op.clone());
        searched.push((modality, calibration, op.threshold, these, rows));
    }
    let op = first_op.ok_or_else(|| ApiError::bad_request("nothing to search"))?;
    if audit.is_empty() {
        // An upload without faces is a search too.
        audit.push(audit_row(&ask.gallery, "upload:no-face".into(), None, OpenSetDecision::Unknown, op.threshold));
    }
    let mut fused = Vec::new();
    let with_probes = searched.iter().filter(|s| !s.3.is_empty()).count();
    if let (Some(rule), true) = (rule, with_probes > 1) {
        let refs: Vec<Vec<&Template>> = searched.iter().map(|s| s.3.iter().collect()).collect();
        let inputs: Vec<FusionInput> = searched
            .iter()
            .zip(&refs)
            .map(|((modality, calibration, threshold, _, rows), probes)| FusionInput {
                modality: *modality,
                calibration: calibration.clone(),
                threshold: *threshold,
                probes,
                rows,
            })
            .collect();
        // Fused thresholds for the FPIR on the gallery's own people (kept
        // between searches until an index changes), unless a raw threshold was given.
        let calibrated = match ask.threshold {
            Some(_) => None,
            None => {
                let parts: Vec<(Modality, ScoreCalibration)> =
                    searched.iter().filter(|s| !s.3.is_empty()).map(|s| (s.0, s.1.clone())).collect();
                c.fused_thresholds_of(&ask.gallery, &parts, rule, ask.fpir).await?
            }
        };
        let rows = fuse_persons("", rule, &inputs, k, calibrated.as_ref());
        for r in rows.iter().filter(|r| r.rank == 1) {
            audit.push(audit_row(
                &ask.gallery,
                format!("fused:{}", r.probe_template_id),
                Some(r),
                r.decision,
                r.threshold,
            ));
            fused.push(FusedResult {
                person: r.probe_template_id.clone(),
                fusion: rule.as_str().to_string(),
                decision: decision_str(r.decision),
                threshold: r.threshold,
                candidates: rows
                    .iter()
                    .filter(|c| c.probe_template_id == r.probe_template_id)
                    .filter_map(|c| {
                        let m = &c.modalities;
                        Some(FusedCandidate {
                            subject_id: c.subject_id.clone()?,
                            score: c.score?,
                            face_score: m.face_score,
                            face_weight: m.face_weight,
                            body_score: m.body_score,
                            body_weight: m.body_weight,
                            gait_score: m.gait_score,
                            gait_weight: m.gait_weight,
                        })
                    })
                    .collect(),
            });
        }
    }
    c.audit.append(audit).await?;
    c.metrics.searches.inc();
    c.metrics.search_latency.observe(started.elapsed());
    Ok(Json(SearchResponse {
        gallery: ask.gallery,
        threshold: op.threshold,
        threshold_source: op.source,
        probes: out,
        fused,
    }))
}

fn decision_str(d: OpenSetDecision) -> String {
    d.as_str().to_string()
}

/// A unit copy of a JSON embedding, or why it cannot be searched.
fn unit_embedding(e: &[f32], what: &str) -> ApiResult<Vec<f32>> {
    if e.is_empty() || e.iter().any(|x| !x.is_finite()) {
        return Err(ApiError::bad_request(format!("{what} must be a non-empty list of finite numbers")));
    }
    let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        return Err(ApiError::bad_request(format!("{what} is all zeros")));
    }
    Ok(e.iter().map(|x| x / norm).collect())
}

fn digest_of(e: &[f32]) -> String {
    hex(&Sha256::digest(e.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())[..8])
}

/// The probes of a JSON search: one embedding, or one person's `inputs`.
fn embedding_probes(s: EmbeddingSearch) -> ApiResult<SearchAsk> {
    let probes = match (s.embedding, s.inputs) {
        (Some(e), None) => {
            let e = unit_embedding(&e, "embedding")?;
            let modality = s.modality.unwrap_or(Modality::Face);
            vec![RestProbe {
                id: format!("embedding:{}", digest_of(&e)),
                modality,
                embedding: e,
                bbox: None,
                quality: None,
                person: None,
            }]
        }
        (None, Some(inputs)) => {
            if s.modality.is_some() {
                return Err(ApiError::bad_request("`modality` goes with `embedding`; each of `inputs` names its own"));
            }
            if inputs.is_empty() {
                return Err(ApiError::bad_request("`inputs` is empty"));
            }
            let mut probes: Vec<RestProbe> = Vec::new();
            for (i, input) in inputs.into_iter().enumerate() {
                let what = format!("inputs[{i}].embedding");
                if probes.iter().any(|p| p.modality == input.modality) {
                    return Err(ApiError::bad_request(format!(
                        "inputs[{i}]: a second {} input; give one per modality (they are one person)",
                        input.modality
                    )));
                }
                if input.quality.is_some_and(|q| !(0.0..=1.0).contains(&q)) {
                    return Err(ApiError::bad_request(format!("inputs[{i}].quality must be 0 to 1")));
                }
                let e = unit_embedding(&input.embedding, &what)?;
                probes.push(RestProbe {
                    id: String::new(),
                    modality: input.modality,
                    embedding: e,
                    bbox: None,
                    quality: Some(input.quality.unwrap_or(1.0)),
                    person: None,
                });
            }
            // The inputs are one person: named by all their embeddings; the
            // body input (if any) is that person, the others belong to it.
            let person =
                format!("inputs:{}", digest_of(&probes.iter().flat_map(|p| p.embedding.clone()).collect::<Vec<_>>()));
            for p in &mut probes {
                p.id = match p.modality {
                    Modality::Body => person.clone(),
                    m => format!("{person}#{m}"),
                };
                p.person = Some(person.clone());
            }
            probes.sort_by_key(|p| p.modality);
            probes
        }
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give `embedding` or `inputs`, not both")),
        (None, None) => {
            return Err(ApiError::bad_request("give `embedding` (one probe) or `inputs` (one person's several)"));
        }
    };
    let mut modalities: Vec<Modality> = probes.iter().map(|p| p.modality).collect();
    modalities.dedup();
    Ok(SearchAsk {
        gallery: s.gallery,
        modalities,
        probes,
        fusion: s.fusion,
        k: s.k,
        threshold: s.threshold,
        fpir: s.fpir,
    })
}

/// The fields of an upload and a probe per face (and person) in its image.
async fn upload_probes(c: &Arc<Coordinator>, mut form: Multipart) -> ApiResult<SearchAsk> {
    let (mut gallery, mut k, mut threshold, mut fpir, mut image) = (None, None, None, None, None);
    let (mut weights, mut body_weights, mut modalities, mut fusion) = (None, None, None, None);
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
            "body_weights" => body_weights = Some(field.text().await?.trim().to_string()),
            "fusion" => fusion = Some(field.text().await?.trim().to_string()),
            "modalities" => {
                let text = field.text().await?;
                let mut list = Vec::new();
                for m in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                    let m: Modality = m.parse().map_err(|_| bad("`face`, `body` or `face,body`"))?;
                    if m == Modality::Gait {
                        return Err(ApiError::bad_request(
                            "gait needs a video: search a still image by `face` and `body`, or send gait embeddings as JSON `inputs`",
                        ));
                    }
                    if !list.contains(&m) {
                        list.push(m);
                    }
                }
                if list.is_empty() {
                    return Err(bad("`face`, `body` or `face,body`"));
                }
                list.sort();
                modalities = Some(list);
            }
            other => return Err(ApiError::bad_request(format!("unknown form field `{other}`"))),
        }
    }
    let gallery = gallery.ok_or_else(|| ApiError::bad_request("form field `gallery` is missing"))?;
    let image = image.ok_or_else(|| ApiError::bad_request("form field `image` (the picture) is missing"))?;
    if image.is_empty() {
        return Err(ApiError::bad_request("the uploaded image is empty"));
    }
    let modalities = modalities.unwrap_or_else(|| vec![Modality::Face]);
    let digest = hex(&Sha256::digest(&image)[..8]);
    // Each modality is embedded with its index's own model.
    let mut settings = MediaSettings { modalities: modalities.clone(), ..MediaSettings::default() };
    for &modality in &modalities {
        let name = modality_gallery(&gallery, modality);
        let model = {
            let guard = c.read_gallery(&name).await?;
            match (guard.as_ref(), modality) {
                (Some(g), _) => g.manifest().model.clone(),
                (None, Modality::Face) => return Err(ApiError::not_found(format!("no gallery `{gallery}`"))),
                (None, m) => {
                    return Err(ApiError::not_found(format!(
                        "gallery `{gallery}` has no {m} index (`{name}`): enrol it with `modalities` naming {m}"
                    )));
                }
            }
        };
        let (given, field) = match modality {
            Modality::Face => (weights.take(), "weights"),
            _ => (body_weights.take(), "body_weights"),
        };
        let needs = match modality {
            Modality::Face => osprey_models::face_model(&model)?.needs_weights_file(),
            // Every registered body model is one whose weights users bring;
            // the out-of-the-box appearance model is not among them.
            _ => osprey_models::registry::person_model(&model).is_ok(),
        };
        let given = match (given, needs) {
            (None, true) => {
                return Err(ApiError::bad_request(format!(
                    "`{name}` holds `{model}` templates: send that model's checkpoint in the form field \
                     `{field}` (a key under the root or a URL under an allowed prefix)"
                )));
            }
            (Some(_), false) => {
                return Err(ApiError::bad_request(format!(
                    "`{name}` holds `{model}` templates, which need no checkpoint: drop the form field `{field}`"
                )));
            }
            (w, _) => w.map(|w: String| c.resolve_input(&w)).transpose()?,
        };
        match modality {
            Modality::Face => (settings.model, settings.weights) = (model, given),
            _ => (settings.body_model, settings.body_weights) = (Some(model), given),
        }
    }
    for (field, left) in [("weights", weights), ("body_weights", body_weights)] {
        if left.is_some() {
            return Err(ApiError::bad_request(format!("form field `{field}` is for a modality not searched")));
        }
    }
    let analysis = c.analysis(settings).await?;
    let found = tokio::task::spawn_blocking(move || {
        let decoded = decode_image(&image, "upload")?;
        match analysis.image_templates(&decoded.image, false) {
            Err(e) if e.kind() == osprey_core::ErrorKind::NotFound => Ok(Vec::new()),
            other => other,
        }
    })
    .await
    .map_err(|e| Error::internal(format!("image analysis panicked: {e}")))??;
    let id = |modality: Modality, track: i64| match modality {
        Modality::Face => format!("upload:{digest}#{track}"),
        m => format!("upload:{digest}#{m}{track}"),
    };
    let probes = found
        .into_iter()
        .map(|t| {
            let b = t.bbox;
            let own = id(t.modality, t.track_id);
            let person = match (&t.person_track, t.modality) {
                (_, Modality::Body) => Some(own.clone()),
                (Some((track, _)), _) => Some(id(Modality::Body, *track)),
                (None, _) => None,
            };
            RestProbe {
                id: own,
                modality: t.modality,
                embedding: t.embedding,
                bbox: Some([b.x, b.y, b.w, b.h]),
                quality: Some(t.quality),
                person,
            }
        })
        .collect();
    Ok(SearchAsk { gallery, modalities, probes, fusion, k, threshold, fpir })
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
    let session = c.sql_session(&caller).await?;
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

// ---------------------------------------------------------------- evaluation report

/// Most probes shown (with thumbnails) in each gallery of a served report.
const REPORT_GALLERY_LIMIT: usize = 100;

/// A search job's results scored against ground truth, as `osprey eval
/// search` scores them: the body is the truth CSV (`media,subject`, one row
/// per media file, `unknown` for a person not enrolled). Answers the HTML
/// report (charts and thumbnails inline), per modality and fused; with
/// `Accept: application/json`, its numbers (the CLI's `metrics.json`).
#[utoipa::path(post, path = "/v1/jobs/{id}/report", params(("id" = String, Path, description = "job id")),
    request_body(content = String, content_type = "text/csv", description = "truth CSV with the header `media,subject` (and optionally `time_s,x,y`: a point on each person)"),
    responses((status = 200, content_type = "text/html", body = String, description = "the report (JSON with Accept: application/json)"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn job_report(
    State(c): AppState,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    use osprey_eval::report::{self as eval, load};
    caller.require(ALL, "reading a job report")?;
    check_job_id(&id)?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the truth CSV is not UTF-8"))?;
    let truth = eval::parse_truth(text, "the truth CSV")?;
    let session = SqlSession::open(&c.root).await?;
    let (probes, _) = load::probes_from_batches(&session.query(&load::results_query(&id)?).await?)?;
    if probes.is_empty() {
        return Err(ApiError::not_found(format!("job `{id}` has no search results")));
    }
    let failures = load::failures_from_batches(&session.query(&load::failures_query(&id)?).await?)?;
    let boxes = match truth.iter().any(|r| r.at.is_some()) {
        true => load::boxes_from_batches(&session.query(&load::boxes_query(&id)?).await?)?,
        false => Default::default(),
    };
    let job = eval::JobResults { job_id: id.clone(), root: c.root.url().to_string(), probes, failures, boxes };
    let mut report = eval::evaluate_search(&job, &truth, "the truth CSV", &eval::SearchEvalOptions::default())?;
    let wants_json =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/json"));
    if wants_json {
        return Ok(Json(report.metrics_json()).into_response());
    }
    let (mut plots, mut notes) = (Vec::new(), Vec::new());
    for chart in eval::search_charts(&report, (800, 500)) {
        match chart.png {
            Ok(png) => plots.push(eval::PlotRef { src: eval::data_uri("image/png", &png), caption: chart.caption }),
            Err(e) => notes.push(format!("{} not drawn: {}", chart.file, e.message())),
        }
    }
    // Thumbnails inline, read from the root only (never from other URLs).
    let base = c.root.url_of("");
    let base = base.trim_end_matches('/').to_string();
    let mut inline: std::collections::HashMap<String, Option<String>> = Default::default();
    for shown in report.shown_probes_mut(REPORT_GALLERY_LIMIT) {
        if let Some(done) = inline.get(&shown.template_id) {
            shown.thumbnail = done.clone();
            continue;
        }
        let key = shown.thumbnail_uri.as_deref().and_then(|u| u.strip_prefix(base.as_str())?.strip_prefix('/'));
        let src = match key {
            Some(key) => c.root.get(key).await.ok().map(|b| eval::data_uri("image/jpeg", &b)),
            None => None,
        };
        inline.insert(shown.template_id.clone(), src.clone());
        shown.thumbnail = src;
    }
    let generated = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let html = eval::search_report_html(&report, &plots, &notes, REPORT_GALLERY_LIMIT, &generated)?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
}
