//! Enrolment: templates in, a committed gallery out.
//!
//! [`enroll`] and [`enroll_into`] write a template batch and commit the
//! gallery snapshot at once (the CLI's imports). [`stage_into`] writes the
//! batch and adds it to the in-memory index only: the coordinator commits
//! many staged batches in one snapshot (see [`crate::commit()`]).

use std::collections::HashSet;
use std::time::Instant;

use osprey_core::{Error, ErrorKind, Result};
use osprey_store::{ObservationRow, PutOutcome, Root, Template, layout, write_observations, write_templates};

use crate::Gallery;

/// How to build or extend a gallery from templates.
#[derive(Debug, Clone, Default)]
pub struct EnrollOptions {
    /// FAISS factory string; `None` picks one by gallery size.
    pub index_factory: Option<String>,
    /// IVF lists to probe; `None` keeps the default for the index.
    pub nprobe: Option<usize>,
    /// Candidates re-ranked by exact score per search, fixed when the
    /// gallery is created (`Some(0)`: none; `None`: the index's default,
    /// [`crate::default_rerank`]); for an existing gallery, a new depth
    /// (it must have been created re-ranking).
    pub rerank: Option<usize>,
    /// Calibrate the threshold for this FPIR from the gallery's own
    /// non-mated scores (needs at least two subjects).
    pub calibrate_fpir: Option<f64>,
}

/// Wall time of each phase of one enrolment, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct EnrollTimes {
    /// Checking every template (model, subject, gallery, embedding).
    pub validate: f64,
    /// Writing the template (and observation) Parquet files.
    pub write_templates: f64,
    /// Training the index (IVF and PQ indexes; 0 for flat ones or an index
    /// already trained).
    pub train: f64,
    /// Adding the vectors to the index.
    pub add: f64,
    /// Calibrating the threshold from non-mated scores.
    pub calibrate: f64,
    /// Writing the snapshot: index, id map and manifest.
    pub snapshot: f64,
}

/// The checked rows of a template batch: one model and width, each with
/// a subject and an embedding.
pub(crate) struct Rows {
    pub model: String,
    pub dim: usize,
    /// `ids.len() * dim` floats.
    pub vectors: Vec<f32>,
    /// (template, subject) per row.
    pub ids: Vec<(String, String)>,
}

/// Checks `templates` for gallery `name` (one model and width, each with a
/// subject and a valid embedding, all marked for `name`).
pub(crate) fn check_rows(name: &str, templates: &[Template]) -> Result<Rows> {
    let first = templates.first().ok_or_else(|| Error::invalid("nothing to enrol: no templates"))?;
    let model = first.model.clone();
    layout::check_name("model", &model)?;
    let dim = first.embedding.as_ref().map(Vec::len).ok_or_else(|| Error::invalid("template 0 has no embedding"))?;
    let mut vectors = Vec::with_capacity(templates.len() * dim);
    let mut ids = Vec::with_capacity(templates.len());
    for (i, t) in templates.iter().enumerate() {
        let what = || format!("template {i} (`{}`)", t.template_id);
        if t.model != model {
            return Err(Error::invalid(format!("{} is of model `{}`, the batch is `{model}`", what(), t.model)));
        }
        let subject = t
            .subject_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::invalid(format!("{} has no subject_id", what())))?;
        if t.gallery.as_deref() != Some(name) {
            return Err(Error::invalid(format!("{} is not marked for gallery `{name}`", what())));
        }
        let e = t.embedding.as_ref().ok_or_else(|| Error::invalid(format!("{} has no embedding", what())))?;
        osprey_core::validate_embedding(e, dim, &what())?;
        vectors.extend_from_slice(e);
        ids.push((t.template_id.clone(), subject));
    }
    Ok(Rows { model, dim, vectors, ids })
}

/// Refuses rows of another model or width than `gallery`'s.
pub(crate) fn check_fits(gallery: Option<&Gallery>, name: &str, rows: &Rows) -> Result<()> {
    if let Some(g) = gallery {
        let m = g.manifest();
        if m.model != rows.model || m.dim != rows.dim {
            return Err(Error::invalid(format!(
                "gallery `{name}` holds {}-d `{}` templates; these are {}-d `{}`",
                m.dim, m.model, rows.dim, rows.model
            )));
        }
    }
    Ok(())
}

/// Adds the rows whose template the index lacks to `gallery` (`None`:
/// builds gallery `name` from them); returns it with the number added.
/// A template already in the index (a resumed or replayed batch) is
/// skipped, so adding a batch twice changes nothing.
pub(crate) fn add_missing(
    gallery: Option<Gallery>,
    name: &str,
    rows: &Rows,
    opts: &EnrollOptions,
    times: &mut EnrollTimes,
) -> Result<(Gallery, usize)> {
    let dim = rows.dim;
    // Which of this batch's templates the index holds: one pass over the
    // index's ids against the batch's (a set of the batch, not of the
    // whole gallery, which may hold millions).
    let batch: HashSet<&str> = rows.ids.iter().map(|(t, _)| t.as_str()).collect();
    let present: HashSet<&str> = gallery.iter().flat_map(|g| g.template_ids()).filter(|t| batch.contains(t)).collect();
    let (mut new_ids, mut new_vectors) = (Vec::with_capacity(rows.ids.len()), Vec::with_capacity(rows.vectors.len()));
    for (id, v) in rows.ids.iter().zip(rows.vectors.chunks(dim)) {
        if !present.contains(id.0.as_str()) {
            new_ids.push(id.clone());
            new_vectors.extend_from_slice(v);
        }
    }
    drop(present);
    let added = new_ids.len();
    let mut gallery = match gallery {
        Some(g) => g,
        None => {
            let factory = opts.index_factory.clone().unwrap_or_else(|| crate::auto_factory(added, dim));
            Gallery::build_reranked(name, &rows.model, dim, Some(&factory), opts.rerank, Vec::new(), &[])?
        }
    };
    if added > 0 {
        let t = Instant::now();
        gallery.train_if_needed(&new_vectors)?;
        times.train += t.elapsed().as_secs_f64();
        let t = Instant::now();
        gallery.add(new_ids, &new_vectors)?;
        times.add += t.elapsed().as_secs_f64();
    }
    Ok((gallery, added))
}

/// Enrols `templates` (all of one model and width, each with a subject) into
/// gallery `name`, creating it if it does not exist; `observations` (the
/// per-frame boxes of those templates, possibly none) go to the
/// observations table beside them.
///
/// Order of writes: the template Parquet file (put-if-absent, keyed by
/// `batch`) and its observations file, then the index snapshot, then the
/// manifest. Nothing is written before every template is validated, and both
/// files are removed again if building the index fails, so a failed import
/// leaves no trace.
pub async fn enroll(
    root: &Root,
    name: &str,
    batch: &str,
    templates: Vec<Template>,
    observations: &[ObservationRow],
    opts: &EnrollOptions,
) -> Result<Gallery> {
    Ok(enroll_timed(root, name, batch, templates, observations, opts).await?.0)
}

/// [`enroll`], with the time each phase took.
pub async fn enroll_timed(
    root: &Root,
    name: &str,
    batch: &str,
    templates: Vec<Template>,
    observations: &[ObservationRow],
    opts: &EnrollOptions,
) -> Result<(Gallery, EnrollTimes)> {
    layout::check_name("gallery", name)?;
    let existing = match Gallery::load(root, name).await {
        Ok(g) => Some(g),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut times = EnrollTimes::default();
    let (gallery, _) =
        enroll_core(root, existing, name, batch, templates, observations, opts, false, true, &mut times).await?;
    Ok((gallery, times))
}

/// Enrols `templates` (and their `observations`) into `gallery` (already
/// loaded; `None` builds gallery `name`), commits the snapshot, and returns
/// the gallery with the number of templates added. With
/// `resume`, a batch whose template file already exists is not an error: only
/// the templates the index lacks are added, so a retried enrolment (a
/// coordinator restarted between the file and the snapshot) completes instead
/// of failing or duplicating.
#[allow(clippy::too_many_arguments)]
pub async fn enroll_into(
    root: &Root,
    gallery: Option<Gallery>,
    name: &str,
    batch: &str,
    templates: Vec<Template>,
    observations: &[ObservationRow],
    opts: &EnrollOptions,
    resume: bool,
) -> Result<(Gallery, usize)> {
    let mut times = EnrollTimes::default();
    enroll_core(root, gallery, name, batch, templates, observations, opts, resume, true, &mut times).await
}

/// [`enroll_into`] without the commit: writes the template batch (and its
/// observations) and adds the templates the index lacks to the gallery in
/// memory, but neither calibrates nor writes a snapshot. The batch is
/// durable; the index is not until [`crate::commit()`] saves it, so the caller
/// must first record the batch with [`crate::mark_uncommitted`] (a restart
/// replays it from there). Resumes like [`enroll_into`] with `resume`.
#[allow(clippy::too_many_arguments)]
pub async fn stage_into(
    root: &Root,
    gallery: Option<Gallery>,
    name: &str,
    batch: &str,
    templates: Vec<Template>,
    observations: &[ObservationRow],
    opts: &EnrollOptions,
    resume: bool,
) -> Result<(Gallery, usize)> {
    let mut times = EnrollTimes::default();
    enroll_core(root, gallery, name, batch, templates, observations, opts, resume, false, &mut times).await
}

#[allow(clippy::too_many_arguments)]
async fn enroll_core(
    root: &Root,
    gallery: Option<Gallery>,
    name: &str,
    batch: &str,
    templates: Vec<Template>,
    observations: &[ObservationRow],
    opts: &EnrollOptions,
    resume: bool,
    commit: bool,
    times: &mut EnrollTimes,
) -> Result<(Gallery, usize)> {
    layout::check_name("gallery", name)?;
    layout::check_name("batch", batch)?;
    let t = Instant::now();
    let rows = check_rows(name, &templates)?;
    check_fits(gallery.as_ref(), name, &rows)?;
    times.validate = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let key = layout::template_file(&rows.model, batch);
    let written = write_templates(root, &key, &templates, rows.dim, true).await?;
    if written == PutOutcome::AlreadyExists && !resume {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("template batch `{}` was already written; enrol it under a new batch id", root.url_of(&key)),
        ));
    }
    let observations_key = layout::observation_file(&rows.model, batch);
    let observations_written = if observations.is_empty() {
        PutOutcome::AlreadyExists
    } else {
        match write_observations(root, &observations_key, observations, true).await {
            Ok(w) => w,
            Err(e) => {
                if written == PutOutcome::Created {
                    root.delete(&key).await.ok();
                }
                return Err(e);
            }
        }
    };
    times.write_templates = t.elapsed().as_secs_f64();
    let built = async {
        let existed = gallery.is_some();
        let (mut gallery, added) = add_missing(gallery, name, &rows, opts, times)?;
        if existed && added == 0 {
            // Every template is in the index already: nothing to commit.
            return Ok((gallery, 0));
        }
        if let Some(nprobe) = opts.nprobe {
            gallery.set_nprobe(nprobe)?;
        }
        if let Some(depth) = opts.rerank {
            gallery.set_rerank(depth)?;
        }
        if !commit {
            return Ok((gallery, added));
        }
        if let Some(fpir) = opts.calibrate_fpir
            && gallery.manifest().num_subjects >= 2
        {
            let t = Instant::now();
            let subjects: Vec<String> = rows.ids.iter().map(|(_, s)| s.clone()).collect();
            let template_ids: Vec<String> = rows.ids.iter().map(|(t, _)| t.clone()).collect();
            let (sample, subjects, template_ids) =
                sample_rows(&rows.vectors, &subjects, &template_ids, rows.dim, CALIBRATION_PROBES);
            let scores = gallery.nonmated_scores_of(&sample, &subjects)?;
            gallery.set_calibrated(&scores, fpir)?;
            gallery.calibrate_scores(&sample, &subjects, &template_ids, &scores)?;
            times.calibrate = t.elapsed().as_secs_f64();
        }
        let t = Instant::now();
        gallery.save(root).await?;
        times.snapshot = t.elapsed().as_secs_f64();
        Ok::<_, Error>((gallery, added))
    }
    .await;
    if built.is_err() {
        if written == PutOutcome::Created {
            root.delete(&key).await.ok();
        }
        if observations_written == PutOutcome::Created {
            root.delete(&observations_key).await.ok();
        }
    }
    built
}
/// How many enrolled templates calibration searches at most.
const CALIBRATION_PROBES: usize = 20_000;

/// An evenly spaced sample of at most `max` rows, their subjects and
/// template ids.
fn sample_rows(
    vectors: &[f32],
    subjects: &[String],
    templates: &[String],
    dim: usize,
    max: usize,
) -> (Vec<f32>, Vec<String>, Vec<String>) {
    let rows: Vec<usize> = crate::gallery::evenly_spaced(subjects.len(), max).collect();
    let sample = rows.iter().flat_map(|r| vectors[r * dim..(r + 1) * dim].iter().copied()).collect();
    let pick = |v: &[String]| rows.iter().map(|r| v[*r].clone()).collect();
    (sample, pick(subjects), pick(templates))
}

/// Calibrates `gallery`'s threshold for `target_fpir` from its own
/// non-mated scores, reading enrolled embeddings back from the template
/// tables when the index cannot reconstruct them (IVF, PQ).
pub async fn calibrate(root: &Root, gallery: &mut Gallery, target_fpir: f64) -> Result<f32> {
    match gallery.calibrate(target_fpir, CALIBRATION_PROBES) {
        Err(e) if e.message().contains("cannot reconstruct") => {}
        other => return other,
    }
    let name = gallery.manifest().name.clone();
    let dim = gallery.manifest().dim;
    let live: std::collections::HashSet<String> = gallery.template_ids().map(str::to_string).collect();
    let (mut vectors, mut subjects, mut templates) = (Vec::new(), Vec::new(), Vec::new());
    for obj in root.glob(&format!("{}/**/*.parquet", layout::model_dir(&gallery.manifest().model))).await? {
        for t in osprey_store::read_templates(root, &obj.key).await? {
            if t.gallery.as_deref() == Some(name.as_str()) && live.contains(&t.template_id) {
                if let (Some(e), Some(s)) = (t.embedding, t.subject_id) {
                    vectors.extend_from_slice(&e);
                    subjects.push(s);
                    templates.push(t.template_id);
                }
            }
        }
    }
    let (sample, subjects, templates) = sample_rows(&vectors, &subjects, &templates, dim, CALIBRATION_PROBES);
    let scores = gallery.nonmated_scores_of(&sample, &subjects)?;
    let threshold = gallery.set_calibrated(&scores, target_fpir)?;
    gallery.calibrate_scores(&sample, &subjects, &templates, &scores)?;
    Ok(threshold)
}
