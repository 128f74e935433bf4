//! The right to erasure: a subject removed from the index *and* from every
//! table SQL reads: templates, their per-frame observations, results, the
//! thumbnails and the silhouette strips.

use std::collections::HashSet;
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
    /// Observation rows (per-frame boxes) of the removed templates removed.
    pub observation_rows: usize,
    /// Search result rows naming the subject that were removed.
    pub result_rows: usize,
    /// Thumbnails (face crops) of the removed templates deleted.
    pub thumbnails: usize,
    /// Silhouette strips (body tracks) of the removed templates deleted.
    pub silhouettes: usize,
    /// Parquet files rewritten.
    pub files_rewritten: usize,
}

/// Removes `subject_id` from gallery `gallery`: from the FAISS index (rebuilt
/// at once for index types that cannot remove), from the template tables
/// (rows of that gallery and subject), from the observations of those
/// templates, and from search results naming it. The subject's templates
/// of other modalities, in the indexes beside the gallery (`<gallery>.body`,
/// see [`crate::modality_gallery`]), are erased too; the counts add up.
pub async fn erase_subject(root: &Root, gallery: &str, subject_id: &str) -> Result<Erasure> {
    // The subject may be enrolled in any of the gallery's modality indexes;
    // a body-only enrolment made `<gallery>.body` and no face index at all.
    // With none of them there, the face index's `NotFound` is the answer.
    let mut total = Erasure::default();
    let mut first_error = None;
    let mut found = false;
    let names = std::iter::once(gallery.to_string())
        .chain(crate::COMPANION_MODALITIES.iter().map(|&m| crate::modality_gallery(gallery, m)));
    for name in names {
        match erase_from(root, &name, subject_id).await {
            Ok(e) => {
                found = true;
                total.add(&e);
            }
            Err(e) if e.kind() == osprey_core::ErrorKind::NotFound => {
                first_error.get_or_insert(e);
            }
            Err(e) => return Err(e.context(format!("erasing `{subject_id}` from `{name}`"))),
        }
    }
    match (found, first_error) {
        (false, Some(e)) => Err(e),
        _ => Ok(total),
    }
}

impl Erasure {
    fn add(&mut self, o: &Erasure) {
        self.index_templates += o.index_templates;
        self.template_rows += o.template_rows;
        self.observation_rows += o.observation_rows;
        self.result_rows += o.result_rows;
        self.thumbnails += o.thumbnails;
        self.silhouettes += o.silhouettes;
        self.files_rewritten += o.files_rewritten;
    }
}

/// [`erase_subject`] from one index and its templates.
async fn erase_from(root: &Root, gallery: &str, subject_id: &str) -> Result<Erasure> {
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

    let mut erased = HashSet::new();
    for obj in root.glob(&format!("{}/**/*.parquet", layout::TEMPLATES)).await? {
        let ids =
            rewrite_without(root, &obj.key, |b| rows_matching(b, &[("gallery", gallery), ("subject_id", subject_id)]))
                .await?;
        erasure.template_rows += ids.len();
        erasure.files_rewritten += usize::from(!ids.is_empty());
        for id in ids.into_iter().flatten() {
            let key = format!("{}/{id}.jpg", layout::THUMBNAILS);
            if root.exists(&key).await? {
                root.delete(&key).await?;
                erasure.thumbnails += 1;
            }
            let strip = format!("{}/{id}.png", layout::SILHOUETTES);
            if root.exists(&strip).await? {
                root.delete(&strip).await?;
                erasure.silhouettes += 1;
            }
            erased.insert(id);
        }
    }
    if !erased.is_empty() {
        for obj in root.glob(&format!("{}/**/*.parquet", layout::OBSERVATIONS)).await? {
            let n = rewrite_without(root, &obj.key, |b| rows_of_templates(b, &erased)).await?.len();
            erasure.observation_rows += n;
            erasure.files_rewritten += usize::from(n > 0);
        }
    }
    for obj in root.glob(&format!("{}/**/*.parquet", layout::RESULTS)).await? {
        let n = rewrite_without(root, &obj.key, |b| rows_matching(b, &[("subject_id", subject_id)])).await?.len();
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

/// Rows whose `template_id` is one of `ids`.
fn rows_of_templates(batch: &RecordBatch, ids: &HashSet<String>) -> Vec<bool> {
    let Some(a) = batch.column_by_name("template_id") else { return vec![false; batch.num_rows()] };
    let a = a.as_string::<i32>();
    (0..batch.num_rows()).map(|r| a.is_valid(r) && ids.contains(a.value(r))).collect()
}

/// Rewrites the Parquet file at `key` without the rows `matching` selects;
/// returns the `template_id` of each dropped row (`None` where the table has
/// none); nothing dropped leaves the file untouched.
async fn rewrite_without(
    root: &Root,
    key: &str,
    matching: impl Fn(&RecordBatch) -> Vec<bool>,
) -> Result<Vec<Option<String>>> {
    let (schema, batches) = decode_parquet(root.get(key).await?, &root.url_of(key))?;
    let mut dropped = Vec::new();
    let mut kept = Vec::with_capacity(batches.len());
    for b in &batches {
        let drop = matching(b);
        let ids = b.column_by_name("template_id").map(|a| a.as_string::<i32>().clone());
        for (r, _) in drop.iter().enumerate().filter(|(_, d)| **d) {
            dropped.push(ids.as_ref().filter(|a| a.is_valid(r)).map(|a| a.value(r).to_string()));
        }
        let keep = BooleanArray::from(drop.iter().map(|d| !d).collect::<Vec<_>>());
        kept.push(filter_record_batch(b, &keep).map_err(|e| Error::internal(format!("cannot filter `{key}`: {e}")))?);
    }
    if dropped.is_empty() {
        return Ok(dropped);
    }
    if kept.iter().all(|b| b.num_rows() == 0) {
        root.delete(key).await?;
    } else {
        root.put(key, encode_parquet(Arc::clone(&schema), &kept)?).await?;
    }
    Ok(dropped)
}
