//! Osprey's shared vocabulary: the identifiers, errors and table schemas that
//! every other crate speaks, and the open-set decision rule itself.
//!
//! Nothing here does I/O. The template and result schemas are defined once, in
//! [`schema`], and checked by a test against the JSON files in `schemas/` so
//! that the Parquet files Osprey writes and the documentation other engines
//! read from never drift apart.
#![warn(missing_docs)]

mod error;
pub mod fusion;
mod openset;
pub mod schema;
mod types;

pub use error::{Error, ErrorKind, Result};
pub use openset::{
    MIN_ALARMS_FOR_CALIBRATION, OpenSetDecision, decide, fpir_at_threshold, model_operating_threshold,
    operating_threshold, threshold_for_fpir,
};
pub use types::{Modality, l2_normalize, validate_embedding};
