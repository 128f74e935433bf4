//! Evaluation reports: a search job scored against a truth CSV, per
//! modality and fused ([`evaluate_search`], [`SearchReport`]), read from the
//! SQL tables ([`load`]), and the HTML of search and verification reports
//! ([`search_report_html`], [`pairs_report_html`]). The CLI (`osprey eval`)
//! and the coordinator both build reports with these.

mod html;
pub mod load;
mod search;
mod truth;

pub use html::{
    Chart, PairsPage, PlotRef, data_uri, escape_html, pairs_report_html, search_charts, search_report_html,
};
pub use search::{
    CmcPoint, Contribution, Counts, DirAtFar, Failure, FnirAtFpir, Galleries, JobOperatingPoint, JobResults,
    MODALITIES, ModalityEvaluation, NotDetected, NotInJob, ProbeOutcome, ProbeRecord, RankedCandidate,
    SearchEvalOptions, SearchReport, TimedBox, evaluate_search,
};
pub use truth::{
    MediaIndex, TRUTH_POINT_TOLERANCE_MS, TruthPoint, TruthRow, csv_error, file_name, parse_truth, record_line,
};
