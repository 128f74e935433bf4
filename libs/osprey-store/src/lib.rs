//! Osprey's storage layer: one root URL on object storage holds every
//! template table, search result, gallery snapshot and manifest.
//!
//! [`Root`] opens `file://` (or a plain path), `memory://NAME` and `s3://`
//! roots behind one interface, so that the rest of Osprey never asks where its
//! data lives. Template tables are Parquet (zstd) with a fixed-width
//! `embedding` column, one embedding width per file, partitioned by model
//! ([`layout`]); each template file has its per-frame observations (boxes,
//! keypoints) in a file of the same name under `observations/`. Task outputs
//! are written with put-if-absent so that a retried task can never duplicate
//! templates.
#![warn(missing_docs)]

mod audit;
mod error;
pub mod layout;
mod observations;
mod parquet_io;
mod results;
mod root;
mod templates;

pub use audit::{AuditRow, audit_to_batch};
pub use observations::{
    Keypoint, ObservationRow, observations_from_batch, observations_of, observations_to_batch, read_observations,
    write_observations,
};
pub use parquet_io::{decode_parquet, encode_parquet, encode_parquet_uncompressed};
pub use results::{ModalityColumns, SearchResultRow, results_to_batch};
pub use root::{ObjectInfo, PutOutcome, Root};
pub use templates::{
    BBox, Template, modality_part, read_staged_templates, read_templates, templates_from_batch, templates_to_batch,
    write_templates,
};
