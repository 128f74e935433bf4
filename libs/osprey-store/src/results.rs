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
    /// The person the probe belongs to: the template id of its body track
    /// (a body probe's own id; a face or gait probe's `person_track_id`),
    /// `None` for a face seen without a tracked person.
    pub person_track_id: Option<String>,
    /// For a fused row (one per person and candidate): the fusion rule;
    /// `score` and `threshold` are then log-likelihood ratios. `None` for a
    /// single-modality row.
    pub fusion: Option<String>,
    /// A fused row's per-modality raw scores and weights (`None` where the
    /// probe has no such modality).
    pub modalities: ModalityColumns,
}

/// What each modality contributed to a fused row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModalityColumns {
    /// The face index's raw score for the candidate.
    pub face_score: Option<f32>,
    /// The body index's raw score.
    pub body_score: Option<f32>,
    /// The gait index's raw score.
    pub gait_score: Option<f32>,
    /// The face's weight in the fused score (weights sum to 1).
    pub face_weight: Option<f32>,
    /// The body's weight.
    pub body_weight: Option<f32>,
    /// The gait's weight.
    pub gait_weight: Option<f32>,
}

/// Builds a result-schema batch.
pub fn results_to_batch(rows: &[SearchResultRow]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&SearchResultRow) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let f = |get: &dyn Fn(&ModalityColumns) -> Option<f32>| -> ArrayRef {
        Arc::new(rows.iter().map(|r| get(&r.modalities)).collect::<Float32Array>())
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
            s(&|r| r.person_track_id.as_deref()),
            s(&|r| r.fusion.as_deref()),
            f(&|m| m.face_score),
            f(&|m| m.body_score),
            f(&|m| m.gait_score),
            f(&|m| m.face_weight),
            f(&|m| m.body_weight),
            f(&|m| m.gait_weight),
        ],
    )
    .map_err(|e| Error::internal(format!("cannot build result batch: {e}")))
}
