//! The audit trail: one row per search, whoever ran it and however.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, RecordBatch, StringArray, TimestampMillisecondArray};
use osprey_core::{Error, OpenSetDecision, Result, schema};

/// One search as the audit table records it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditRow {
    /// When, in ms since the Unix epoch (UTC).
    pub at_ms: i64,
    /// A digest naming the API key (never the key itself).
    pub key_id: String,
    /// The key's role.
    pub role: String,
    /// `rest` for a search request, `job` for a probe of a search job.
    pub source: String,
    /// The job, for job searches.
    pub job_id: Option<String>,
    /// Gallery searched.
    pub gallery: String,
    /// The probe: a template id, or a digest of the uploaded image or embedding.
    pub probe: String,
    /// Best candidate, if any.
    pub top_subject_id: Option<String>,
    /// Its score (cosine).
    pub top_score: Option<f32>,
    /// The open-set decision.
    pub decision: OpenSetDecision,
    /// The threshold it used.
    pub threshold: f32,
}

/// Builds an audit-schema batch.
pub fn audit_to_batch(rows: &[AuditRow]) -> Result<RecordBatch> {
    let strings =
        |f: &dyn Fn(&AuditRow) -> Option<&str>| -> ArrayRef { Arc::new(rows.iter().map(f).collect::<StringArray>()) };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMillisecondArray::from(rows.iter().map(|r| r.at_ms).collect::<Vec<_>>()).with_timezone("UTC"),
        ),
        strings(&|r| Some(&r.key_id)),
        strings(&|r| Some(&r.role)),
        strings(&|r| Some(&r.source)),
        strings(&|r| r.job_id.as_deref()),
        strings(&|r| Some(&r.gallery)),
        strings(&|r| Some(&r.probe)),
        strings(&|r| r.top_subject_id.as_deref()),
        Arc::new(rows.iter().map(|r| r.top_score).collect::<Float32Array>()),
        strings(&|r| Some(r.decision.as_str())),
        Arc::new(rows.iter().map(|r| Some(r.threshold)).collect::<Float32Array>()),
    ];
    RecordBatch::try_new(schema::audit_schema(), columns).map_err(|e| Error::internal(format!("audit batch: {e}")))
}
