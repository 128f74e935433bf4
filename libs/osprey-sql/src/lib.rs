//! SQL over an Osprey root, read-only, with DataFusion.
//!
//! [`SqlSession::open`] registers the root's object store with DataFusion and
//! exposes four tables — `templates` (every template Parquet file),
//! `observations` (the per-frame boxes of each template's track), `results`
//! (search results) and `galleries` (gallery manifests) — plus the
//! vector functions `cosine_similarity(a, b)`, `l2_distance(a, b)` and
//! `vector_norm(a)`. Statements that write (DDL, DML, `COPY`) are refused.
#![warn(missing_docs)]

mod session;
mod udf;

pub use session::{OutputFormat, SqlSession, format_batches};
pub use udf::{cosine_similarity_udf, l2_distance_udf, vector_norm_udf};
