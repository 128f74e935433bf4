//! Search result rows and their Arrow form.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Int32Array, RecordBatch, StringArray};
use osprey_core::{Error, OpenSetDecision, Result, schema};

/// One (probe, rank) row of a search. A probe with no candidate at all gets
/// one row with rank 1, no subject and decision `unknown`.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResultRow {
    /// Job that ran the search.
    pub job_id: String,
    /// The probe template searched.
    pub probe_template_id: String,
    /// 1-based rank among the returned subjects.
    pub rank: i32,
    /// Candidate subject.
    pub subject_id: Option<String>,
    /// The candidate's best-scoring template.
    pub gallery_template_id: Option<String>,
    /// Cosine similarity.
    pub score: Option<f32>,
    /// Decision for the probe (the same on every rank of one probe).
    pub decision: OpenSetDecision,
    /// Threshold the decision used.
    pub threshold: f32,
}

/// Builds a result-schema batch.
pub fn results_to_batch(rows: &[SearchResultRow]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&SearchResultRow) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    RecordBatch::try_new(
        schema::result_schema(),
        vec![
            s(&|r| Some(&r.job_id)),
            s(&|r| Some(&r.probe_template_id)),
            Arc::new(rows.iter().map(|r| Some(r.rank)).collect::<Int32Array>()),
            s(&|r| r.subject_id.as_deref()),
            s(&|r| r.gallery_template_id.as_deref()),
            Arc::new(rows.iter().map(|r| r.score).collect::<Float32Array>()),
            s(&|r| Some(r.decision.as_str())),
            Arc::new(rows.iter().map(|r| Some(r.threshold)).collect::<Float32Array>()),
        ],
    )
    .map_err(|e| Error::internal(format!("cannot build result batch: {e}")))
}
