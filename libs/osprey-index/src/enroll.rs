//! Enrolment: templates in, a committed gallery out.

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
    layout::check_name("gallery", name)?;
    let existing = match Gallery::load(root, name).await {
        Ok(g) => Some(g),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let (gallery, _) = enroll_into(root, existing, name, batch, templates, observations, opts, false).await?;
    Ok(gallery)
}

/// Enrols `templates` (and their `observations`) into `gallery` (already
/// loaded; `None` builds gallery `name`), and returns it with the number of
/// templates added. With
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
    layout::check_name("gallery", name)?;
    layout::check_name("batch", batch)?;
    let first = templates.first().ok_or_else(|| Error::invalid("nothing to enrol: no templates"))?;
    let model = first.model.clone();
    layout::check_name("model", &model)?;
    let dim = first.embedding.as_ref().map(Vec::len).ok_or_else(|| Error::invalid("template 0 has no embedding"))?;
    let mut vectors = Vec::with_capacity(templates.len() * dim);
    let mut ids = Vec::with_capacity(templates.len());
    let mut subjects = Vec::with_capacity(templates.len());
    for (i, t) in templates.iter().enumerate() {
        let what = format!("template {i} (`{}`)", t.template_id);
        if t.model != model {
            return Err(Error::invalid(format!("{what} is of model `{}`, the batch is `{model}`", t.model)));
        }
        let subject = t
            .subject_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::invalid(format!("{what} has no subject_id")))?;
        if t.gallery.as_deref() != Some(name) {
            return Err(Error::invalid(format!("{what} is not marked for gallery `{name}`")));
        }
        let e = t.embedding.as_ref().ok_or_else(|| Error::invalid(format!("{what} has no embedding")))?;
        osprey_core::validate_embedding(e, dim, &what)?;
        vectors.extend_from_slice(e);
        subjects.push(subject.clone());
        ids.push((t.template_id.clone(), subject));
    }
    if let Some(g) = &gallery {
        let m = g.manifest();
        if m.model != model || m.dim != dim {
            return Err(Error::invalid(format!(
                "gallery `{name}` holds {}-d `{}` templates; these are {dim}-d `{model}`",
                m.dim, m.model
            )));
        }
    }

    let key = layout::template_file(&model, batch);
    let written = write_templates(root, &key, &templates, dim, true).await?;
    if written == PutOutcome::AlreadyExists && !resume {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("template batch `{}` was already written; enrol it under a new batch id", root.url_of(&key)),
        ));
    }
    let observations_key = layout::observation_file(&model, batch);
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
    // Only what the index lacks (a resumed batch may be partly in it).
    let (mut new_ids, mut new_vectors) = (Vec::with_capacity(ids.len()), Vec::with_capacity(vectors.len()));
    let present: std::collections::HashSet<&str> = gallery.iter().flat_map(|g| g.template_ids()).collect();
    for (id, v) in ids.into_iter().zip(vectors.chunks(dim)) {
        if !present.contains(id.0.as_str()) {
            new_ids.push(id);
            new_vectors.extend_from_slice(v);
        }
    }
    drop(present);
    let added = new_ids.len();
    let built = async {
        let mut gallery = match gallery {
            Some(g) if added == 0 => return Ok(g),
            Some(mut g) => {
                g.add(new_ids, &new_vectors)?;
                g
            }
            None => Gallery::build_reranked(
                name,
                &model,
                dim,
                opts.index_factory.as_deref(),
                opts.rerank,
                new_ids,
                &new_vectors,
            )?,
        };
        if let Some(nprobe) = opts.nprobe {
            gallery.set_nprobe(nprobe)?;
        }
        if let Some(depth) = opts.rerank {
            gallery.set_rerank(depth)?;
        }
        if let Some(fpir) = opts.calibrate_fpir {
            if gallery.manifest().num_subjects >= 2 {
                let template_ids: Vec<String> = templates.iter().map(|t| t.template_id.clone()).collect();
                let (sample, subjects, template_ids) =
                    sample_rows(&vectors, &subjects, &template_ids, dim, CALIBRATION_PROBES);
                let scores = gallery.nonmated_scores_of(&sample, &subjects)?;
                gallery.set_calibrated(&scores, fpir)?;
                gallery.calibrate_scores(&sample, &subjects, &template_ids, &scores)?;
            }
        }
        gallery.save(root).await?;
        Ok::<_, Error>(gallery)
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
    Ok((built?, added))
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
    let step = subjects.len().div_ceil(max.max(1)).max(1);
    let rows: Vec<usize> = (0..subjects.len()).step_by(step).collect();
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
