//! The Osprey coordinator: takes batch jobs over REST, splits them into
//! tasks that stateless workers lease, ingests what the workers write
//! (enrolment into FAISS galleries, open-set search into result tables),
//! answers searches and SQL, and keeps an audit row for every search.
//!
//! Object storage is the source of truth: job manifests, task completions,
//! templates, results and gallery snapshots all live under the root, so a
//! coordinator killed at any moment and started again resumes every
//! unfinished job (see [`jobs`]).

mod api;
mod audit;
mod commits;
mod config;
mod error;
mod flight;
mod job_store;
pub mod jobs;
mod metrics;
mod search_batch;
mod service;

use std::future::Future;
use std::sync::Arc;

pub use api::{ApiDoc, erasure_report, gallery_detail, gallery_summary, openapi_json, router};
pub use config::{ApiKey, Config};
pub use flight::serve_flight_sql;
pub use service::{Coordinator, MediaSettingsOf};

/// Serves the API on `listener` until `shutdown` resolves, then stops
/// taking requests and lets those in flight finish.
pub async fn serve(
    coordinator: Arc<Coordinator>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> osprey_core::Result<()> {
    let addr = listener.local_addr().map_err(|e| osprey_core::Error::internal(e.to_string()))?;
    tracing::info!("coordinator listening on http://{addr} over {}", coordinator.root.url());
    let c = Arc::clone(&coordinator);
    axum::serve(listener, router(coordinator))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| osprey_core::Error::internal(format!("server: {e}")))?;
    // The journal's last rows into the audit table before the process ends.
    c.audit.flush().await
}
