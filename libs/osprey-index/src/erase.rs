//! The right to erasure: a subject removed from the index *and* from every
//! table SQL reads.

use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use osprey_core::{Error, Result};
use osprey_store::{Root, decode_parquet, encode_parquet, layout};

use crate::{Gallery, Removal};

/// What [`erase_subject`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Erasure {
    /// Templates removed from the gallery index.
    pub index_templates: usize,
    /// Template rows removed from Parquet files.
    pub template_rows: usize,
    /// Search result rows naming the subject that were removed.
    pub result_rows: usize,
    /// Parquet files rewritten.
    pub files_rewritten: usize,
}

/// Removes `subject_id` from gallery `gallery`: from the FAISS index (rebuilt
/// at once for index types that cannot remove), from the template tables
/// (rows of that gallery and subject) and from search results naming it.
pub async fn erase_subject(root: &Root, gallery: &str, subject_id: &str) -> Result<Erasure> {
    let mut g = Gallery::load(root, gallery).await?;
    let removed = match g.remove_subject(subject_id)? {
        Removal::Removed(n) => n,
        Removal::Hidden(n) => {
            g.rebuild()?;
            n
        }
    };
    g.save(root).await?;
    let mut erasure = Erasure { index_templates: removed, ..Default::default() };

    for obj in root.glob(&format!("{}/**/*.parquet", layout::TEMPLATES)).await? {
        let n =
            rewrite_without(root, &obj.key, |b| rows_matching(b, &[("gallery", gallery), ("subject_id", subject_id)]))
                .await?;
        erasure.template_rows += n;
        erasure.files_rewritten += usize::from(n > 0);
    }
    for obj in root.glob(&format!("{}/**/*.parquet", layout::RESULTS)).await? {
        let n = rewrite_without(root, &obj.key, |b| rows_matching(b, &[("subject_id", subject_id)])).await?;
        erasure.result_rows += n;
        erasure.files_rewritten += usize::from(n > 0);
    }
    Ok(erasure)
}

/// Rows whose string columns all equal the given values.
fn rows_matching(batch: &RecordBatch, equal: &[(&str, &str)]) -> Vec<bool> {
    let mut keep = vec![true; batch.num_rows()];
    for (col, value) in equal {
        let Some(a) = batch.column_by_name(col) else { return vec![false; batch.num_rows()] };
        let a = a.as_string::<i32>();
        for (r, k) in keep.iter_mut().enumerate() {
            *k &= a.is_valid(r) && a.value(r) == *value;
        }
    }
    keep
}

/// Rewrites the Parquet file at `key` without the rows `matching` selects;
/// returns how many rows were dropped (0: the file is left untouched).
async fn rewrite_without(root: &Root, key: &str, matching: impl Fn(&RecordBatch) -> Vec<bool>) -> Result<usize> {
    let (schema, batches) = decode_parquet(root.get(key).await?, &root.url_of(key))?;
    let mut dropped = 0;
    let mut kept = Vec::with_capacity(batches.len());
    for b in &batches {
        let drop = matching(b);
        dropped += drop.iter().filter(|d| **d).count();
        let keep = BooleanArray::from(drop.iter().map(|d| !d).collect::<Vec<_>>());
        kept.push(filter_record_batch(b, &keep).map_err(|e| Error::internal(format!("cannot filter `{key}`: {e}")))?);
    }
    if dropped == 0 {
        return Ok(0);
    }
    if kept.iter().all(|b| b.num_rows() == 0) {
        root.delete(key).await?;
    } else {
        root.put(key, encode_parquet(Arc::clone(&schema), &kept)?).await?;
    }
    Ok(dropped)
}
