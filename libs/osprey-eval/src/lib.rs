//! Accuracy metrics for Osprey's matchers, computed from the scores they
//! produce: verification (1:1) error rates from genuine and impostor
//! comparison scores, and open-set identification (1:N) rates from search
//! candidate lists, following the NIST FRTE 1:N definitions.
//!
//! Every score is a similarity (higher means more alike) and every decision is
//! inclusive: a comparison or search *matches* when its score is at or above
//! the threshold, exactly as [`osprey_core::decide`] rules in production, so
//! an operating point measured here is the one the service will run at.
//! Operating points are reported with the threshold that achieves them. The
//! definitions are cross-checked against independent Python implementations
//! (`pyeer`, `bob.measure`) by `tests/reference.rs`. [`plot`] draws the CMC
//! and DET charts of evaluation reports, and [`report`] builds the reports.
#![warn(missing_docs)]

mod identification;
pub mod plot;
pub mod report;
mod verification;

pub use identification::{
    Candidate, IdentificationDetPoint, IdentificationReport, OperatingPoint, Search, cmc, dir_at_far, fnir,
    fnir_at_fpir, fpir, identification_det, identification_report,
};
pub use verification::{DetPoint, Score, det_curve, eer, stratified_order, tar_at_far, verification_accuracy_kfold};
