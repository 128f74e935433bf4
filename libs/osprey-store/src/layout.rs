//! Where things live under a root. Every key is relative to the root.
//!
//! ```text
//! templates/model=<model>/<batch>.parquet     template tables (one width per model)
//! observations/model=<model>/<batch>.parquet  per-frame boxes of that batch's templates
//! results/job=<job_id>/<part>.parquet         search results
//! galleries/<name>/manifest.json              gallery metadata (the commit point)
//! galleries/<name>/index/<version>.faiss      FAISS snapshot + its id map
//! thumbnails/<template_id>.jpg                face crops
//! silhouettes/<template_id>.png               a body track's silhouettes (64×64 each, side by side)
//! audit/<part>.parquet                        one row per search
//! jobs/<job_id>/job.json                      a service job's spec (the commit point)
//! jobs/<job_id>/tasks.json                    its tasks, once expanded
//! jobs/<job_id>/outputs/<task_id>.parquet     a worker's templates for one task
//! jobs/<job_id>/outputs/<task_id>.observations.parquet   and their observations
//! jobs/<job_id>/done/<task_id>.json           a task's completion or failure
//! jobs/<job_id>/final.json                    the job's end state
//! ```

use osprey_core::{Error, Result};

/// Prefix of the template tables.
pub const TEMPLATES: &str = "templates";
/// Prefix of the observations table (per-frame boxes of the templates).
pub const OBSERVATIONS: &str = "observations";
/// Prefix of the search results.
pub const RESULTS: &str = "results";
/// Prefix of the gallery manifests and snapshots.
pub const GALLERIES: &str = "galleries";
/// Folder of template thumbnails (`<template_id>.jpg`).
pub const THUMBNAILS: &str = "thumbnails";
/// Folder of body tracks' silhouette strips (`<template_id>.png`).
pub const SILHOUETTES: &str = "silhouettes";
/// Prefix of the audit table.
pub const AUDIT: &str = "audit";
/// Prefix of the service's job manifests and task outputs.
pub const JOBS: &str = "jobs";

/// Checks that `name` can be used as a single path segment: a gallery, model,
/// job or subject name. Allowed: ASCII letters, digits, `.`, `_`, `-`, not
/// starting with `.`, at most 128 bytes.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {kind} name `{name}`: use 1-128 ASCII letters, digits, `.`, `_` or `-`, not starting with `.`"
        )))
    }
}

/// The folder of one model's template files.
pub fn model_dir(model: &str) -> String {
    format!("{TEMPLATES}/model={model}")
}

/// The key of one template file.
pub fn template_file(model: &str, batch: &str) -> String {
    format!("{}/{batch}.parquet", model_dir(model))
}

/// The key of the observations of the template file `template_file(model,
/// batch)`: the same model folder and batch name under `observations/`, so
/// every template file has its observations beside it.
pub fn observation_file(model: &str, batch: &str) -> String {
    format!("{OBSERVATIONS}/model={model}/{batch}.parquet")
}

/// Where a worker stages the observations of the templates it stages at
/// `templates_key` (a `.parquet` key): beside it, as `<stem>.observations.parquet`.
pub fn staged_observations(templates_key: &str) -> String {
    let stem = templates_key.strip_suffix(".parquet").unwrap_or(templates_key);
    format!("{stem}.observations.parquet")
}

/// Where a worker stages its templates of `modality` when that is not the
/// face (each modality's embeddings have their own width, so each its own
/// file): beside `templates_key`, as `<stem>.<modality>.parquet`. The face
/// templates (and the rows of inputs that failed) stay at `templates_key`,
/// which is written last and so commits the task.
pub fn staged_modality(templates_key: &str, modality: osprey_core::Modality) -> String {
    let stem = templates_key.strip_suffix(".parquet").unwrap_or(templates_key);
    format!("{stem}.{modality}.parquet")
}

/// The key of one result file.
pub fn result_file(job_id: &str, part: &str) -> String {
    format!("{RESULTS}/job={job_id}/{part}.parquet")
}

/// The folder of one gallery.
pub fn gallery_dir(gallery: &str) -> String {
    format!("{GALLERIES}/{gallery}")
}

/// The key of a gallery's manifest.
pub fn gallery_manifest(gallery: &str) -> String {
    format!("{}/manifest.json", gallery_dir(gallery))
}

/// A key inside one job's folder, e.g. `job_key(id, "done/t00001.json")`.
pub fn job_key(job_id: &str, rest: &str) -> String {
    format!("{JOBS}/{job_id}/{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_lie_beside_their_templates() {
        assert_eq!(template_file("m", "probes-j-0"), "templates/model=m/probes-j-0.parquet");
        assert_eq!(observation_file("m", "probes-j-0"), "observations/model=m/probes-j-0.parquet");
        assert_eq!(staged_observations("jobs/j/outputs/t1.parquet"), "jobs/j/outputs/t1.observations.parquet");
    }

    #[test]
    fn names_are_single_safe_segments() {
        for ok in ["faces", "dlib-resnet-v1", "g_2.v3"] {
            assert!(check_name("gallery", ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", ".hidden", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(check_name("gallery", bad).is_err(), "{bad}");
        }
    }
}
