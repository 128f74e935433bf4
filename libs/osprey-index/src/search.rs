//! Open-set search of probe templates, shared by `osprey search`, the
//! embedded batch jobs and (later) the coordinator.

use osprey_core::fusion::{FusionRule, ModalityEvidence, ScoreCalibration, fuse};
use osprey_core::{Error, Modality, OpenSetDecision, Result};
use osprey_store::{
    ModalityColumns, ObservationRow, Root, SearchResultRow, Template, encode_parquet, layout, results_to_batch,
    templates_to_batch, write_observations,
};

use crate::{Gallery, calibrate};

/// The FPIR a gallery is calibrated for when nothing else is asked.
pub const DEFAULT_FPIR: f64 = 0.01;

/// The decision threshold for a search and where it came from (printed to
/// users, so that every result can be explained).
#[derive(Debug, Clone, PartialEq)]
pub struct OperatingPoint {
    /// Cosine similarity at or above which the best subject is a match.
    pub threshold: f32,
    /// E.g. "given", "gallery's, calibrated for FPIR 0.01".
    pub source: String,
}

/// The threshold to use: `threshold` if given, else calibrated now for
/// `fpir`, else the gallery's own calibrated one, else calibrated now for
/// [`DEFAULT_FPIR`]. Calibration falls back to the model's known operating
/// point when the gallery has too few subjects to measure the FPIR.
pub async fn operating_point(
    root: &Root,
    gallery: &mut Gallery,
    threshold: Option<f32>,
    fpir: Option<f64>,
) -> Result<OperatingPoint> {
    if let Some(op) = known_operating_point(gallery, threshold, fpir)? {
        return Ok(op);
    }
    if let Some(f) = fpir {
        let t = calibrate(root, gallery, f).await?;
        return Ok(OperatingPoint { threshold: t, source: format!("calibrated now for FPIR {f}") });
    }
    let t = calibrate(root, gallery, DEFAULT_FPIR).await?;
    Ok(OperatingPoint { threshold: t, source: format!("calibrated now for the default FPIR {DEFAULT_FPIR}") })
}

/// [`operating_point`] where it needs no calibration (a given threshold,
/// the gallery's own, or the model's for a one-subject gallery), which
/// only reads the gallery; `Ok(None)`: it must calibrate now.
pub fn known_operating_point(
    gallery: &Gallery,
    threshold: Option<f32>,
    fpir: Option<f64>,
) -> Result<Option<OperatingPoint>> {
    if let Some(t) = threshold {
        if !t.is_finite() {
            return Err(Error::invalid(format!("threshold {t} is not a number")));
        }
        return Ok(Some(OperatingPoint { threshold: t, source: "given".into() }));
    }
    if let Some(f) = fpir {
        if !(f > 0.0 && f < 1.0) {
            return Err(Error::invalid(format!("FPIR {f} must be between 0 and 1")));
        }
    }
    // One subject gives no non-mated scores to calibrate from: the model's
    // own operating threshold, where it has one, stands in.
    let m = gallery.manifest();
    if m.num_subjects < 2 && m.threshold.is_none() {
        if let Some(t) = osprey_core::model_operating_threshold(&m.model) {
            return Ok(Some(OperatingPoint {
                threshold: t,
                source: format!(
                    "`{}`'s operating threshold: the gallery has {} subject(s), too few to calibrate",
                    m.model, m.num_subjects
                ),
            }));
        }
    }
    match (fpir, m.threshold) {
        (None, Some(t)) => {
            let f = m.threshold_fpir.unwrap_or(f64::NAN);
            Ok(Some(OperatingPoint { threshold: t, source: format!("gallery's, calibrated for FPIR {f}") }))
        }
        _ => Ok(None),
    }
}

/// Searches every probe (templates with an embedding) and returns the result
/// rows: `top_k` ranked subjects per probe, each row carrying the probe's
/// decision and the threshold; a probe without candidates gets one
/// `unknown` row.
pub fn search_probes(
    gallery: &mut Gallery,
    job_id: &str,
    probes: &[&Template],
    top_k: usize,
    threshold: f32,
) -> Result<Vec<SearchResultRow>> {
    if probes.is_empty() {
        return Ok(Vec::new());
    }
    let dim = gallery.manifest().dim;
    let mut queries = Vec::with_capacity(probes.len() * dim);
    for p in probes {
        // Embeddings of different models live in unrelated spaces, even at the
        // same width: comparing them would give meaningless scores.
        if !p.model.is_empty() && p.model != gallery.manifest().model {
            return Err(Error::invalid(format!(
                "probe `{}` is a `{}` template, but gallery `{}` holds `{}` templates: search it with --model {}",
                p.template_id,
                p.model,
                gallery.manifest().name,
                gallery.manifest().model,
                gallery.manifest().model
            )));
        }
        let e = p
            .embedding
            .as_ref()
            .ok_or_else(|| Error::invalid(format!("probe `{}` has no embedding", p.template_id)))?;
        osprey_core::validate_embedding(e, dim, &format!("probe `{}`", p.template_id))?;
        queries.extend_from_slice(e);
    }
    let answers = gallery.search(&queries, top_k.max(1))?;
    Ok(result_rows(job_id, probes.iter().copied(), &answers, threshold))
}

/// The result rows of searched probes: each probe's `candidates` (one list
/// per probe, best first) ranked from 1, every row with the probe's
/// decision at `threshold`; a probe without candidates gets one `unknown`
/// row.
pub fn result_rows<'a>(
    job_id: &str,
    probes: impl IntoIterator<Item = &'a Template>,
    candidates: &[Vec<crate::SubjectCandidate>],
    threshold: f32,
) -> Vec<SearchResultRow> {
    let mut rows = Vec::new();
    for (probe, candidates) in probes.into_iter().zip(candidates) {
        let decision = Gallery::decide(candidates, threshold);
        let person = person_of(probe);
        let row = |rank: usize, c: Option<&crate::SubjectCandidate>| SearchResultRow {
            job_id: job_id.to_string(),
            probe_template_id: probe.template_id.clone(),
            rank: rank as i32,
            subject_id: c.map(|c| c.subject_id.clone()),
            gallery_template_id: c.map(|c| c.template_id.clone()),
            score: c.map(|c| c.score),
            decision,
            threshold,
            person_track_id: person.clone(),
            fusion: None,
            modalities: Default::default(),
        };
        if candidates.is_empty() {
            rows.push(row(1, None));
        }
        rows.extend(candidates.iter().enumerate().map(|(r, c)| row(r + 1, Some(c))));
    }
    rows
}

/// The person a probe template belongs to: a body template is its own
/// person (its track); a face or gait template belongs to the body track in
/// its `person_track_id`, if any.
pub fn person_of(probe: &Template) -> Option<String> {
    match probe.modality {
        Some(Modality::Body) => Some(probe.template_id.clone()),
        _ => probe.person_track_id.clone(),
    }
}

/// One searched index's part in a fused search: its modality, its score
/// calibration (an anchored one at `threshold` when the gallery has none),
/// the raw threshold its own decisions used, the probe templates searched
/// and their result rows.
pub struct FusionInput<'a> {
    /// The index's modality.
    pub modality: Modality,
    /// Its raw score → LLR mapping.
    pub calibration: ScoreCalibration,
    /// The raw threshold its own decisions used.
    pub threshold: f32,
    /// The probe templates searched in it.
    pub probes: &'a [&'a Template],
    /// Their result rows.
    pub rows: &'a [SearchResultRow],
}

/// The fused thresholds of one search, calibrated for an FPIR on the
/// gallery's own people: one per set of modalities a probe person can have
/// (face alone, face and body, …), since a person seen by more modalities
/// gets a fused score from a tighter non-mated distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedThresholds {
    /// The FPIR they were calibrated for.
    pub fpir: f64,
    /// (sorted modalities, threshold in LLR units, non-mated persons it rests on).
    pub by_modalities: Vec<(Vec<Modality>, f32, usize)>,
}

impl FusedThresholds {
    /// The threshold for a person with exactly these modalities, if it was calibrated.
    pub fn for_modalities(&self, modalities: &[Modality]) -> Option<f32> {
        let mut key = modalities.to_vec();
        key.sort();
        key.dedup();
        self.by_modalities.iter().find(|(m, ..)| *m == key).map(|(_, t, _)| *t)
    }
}

/// Subjects sampled for the fused calibration (evenly over the sorted ids).
pub const FUSION_CALIBRATION_SUBJECTS: usize = 4000;

/// Calibrates fused thresholds for `target_fpir` (else the first index's
/// calibrated FPIR, else [`DEFAULT_FPIR`]) from the gallery itself:
/// each sampled subject, with one enrolled template per modality index it
/// is in, is a probe person searched against everyone else (its own
/// candidates removed: a non-mated search), its calibrated scores fused by
/// `rule` with equal weights. For each set of modalities (each non-empty
/// subset of `indexes`' modalities) the persons having all of them give
/// non-mated fused scores, and the threshold is placed at the FPIR quantile
/// ([`osprey_core::threshold_for_fpir`]) where at least
/// [`osprey_core::MIN_ALARMS_FOR_CALIBRATION`] alarms support it; sets with
/// fewer persons are left out (their persons are decided by the
/// per-modality thresholds, see [`fuse_persons`]). `indexes`: each
/// modality's gallery and calibration. Indexes that cannot give their
/// enrolled vectors back exactly (PQ without re-ranking, IVF with flat
/// codes once templates were removed from it) give an error.
pub fn calibrate_fusion(
    indexes: &mut [(Modality, &mut Gallery, ScoreCalibration)],
    rule: FusionRule,
    target_fpir: Option<f64>,
) -> Result<FusedThresholds> {
    let target_fpir = target_fpir
        .or_else(|| indexes.first().and_then(|(_, g, _)| g.manifest().threshold_fpir))
        .unwrap_or(DEFAULT_FPIR);
    let mut subjects: Vec<String> = indexes
        .iter()
        .flat_map(|(_, g, _)| g.subjects().map(str::to_string).collect::<Vec<_>>())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let step = subjects.len().div_ceil(FUSION_CALIBRATION_SUBJECTS).max(1);
    subjects = subjects.into_iter().step_by(step).collect();
    // subject → each modality's evidence (non-mated candidates only).
    let mut evidence: std::collections::HashMap<&str, Vec<ModalityEvidence>> = Default::default();
    for (modality, gallery, calibration) in indexes.iter_mut() {
        let dim = gallery.manifest().dim;
        let (mut queries, mut owners) = (Vec::new(), Vec::new());
        let names: Vec<&str> = subjects.iter().map(String::as_str).collect();
        for (s, v) in names.iter().zip(gallery.subject_vectors(&names)?) {
            if let Some(v) = v {
                queries.extend_from_slice(&v);
                owners.push(*s);
            }
        }
        if owners.is_empty() {
            continue;
        }
        debug_assert_eq!(queries.len(), owners.len() * dim);
        // One more than kept, so that dropping the subject itself leaves the rest.
        let answers = gallery.search(&queries, 6)?;
        for (owner, candidates) in owners.into_iter().zip(answers) {
            evidence.entry(owner).or_default().push(ModalityEvidence {
                modality: *modality,
                quality: 1.0,
                calibration: calibration.clone(),
                candidates: candidates
                    .into_iter()
                    .filter(|c| c.subject_id != owner)
                    .map(|c| (c.subject_id, c.score))
                    .collect(),
            });
        }
    }
    let modalities: Vec<Modality> = indexes.iter().map(|(m, ..)| *m).collect();
    let mut by_modalities = Vec::new();
    for mask in 1u32..(1 << modalities.len()) {
        let mut set: Vec<Modality> =
            (0..modalities.len()).filter(|i| mask & (1 << i) != 0).map(|i| modalities[i]).collect();
        set.sort();
        let mut scores = Vec::new();
        for parts in evidence.values() {
            let chosen: Vec<ModalityEvidence> = parts.iter().filter(|e| set.contains(&e.modality)).cloned().collect();
            if chosen.len() != set.len() || chosen.iter().any(|e| e.candidates.is_empty()) {
                continue;
            }
            if let Some(top) = fuse(rule, &chosen, 1).first() {
                scores.push(top.score);
            }
        }
        let enough = scores.len() as f64 * target_fpir >= osprey_core::MIN_ALARMS_FOR_CALIBRATION;
        if let (true, Some(t)) = (enough, osprey_core::threshold_for_fpir(&scores, target_fpir)) {
            by_modalities.push((set, t, scores.len()));
        }
    }
    Ok(FusedThresholds { fpir: target_fpir, by_modalities })
}

/// Fused result rows ([`osprey_core::fusion`]): one set per probe person.
/// A person is a body track with the face and gait templates linked to it
/// (a face with no person is a person of its own); of several templates of
/// one modality (a body track holding several face tracks) the best quality
/// speaks for it. Each candidate subject gets a row with the fused score
/// (an LLR), the rule, and each modality's raw score and weight.
///
/// The threshold: with `calibrated` fused thresholds, the one for the
/// person's set of modalities ([`calibrate_fusion`]: placed for an FPIR on
/// the gallery's own people). Otherwise, or for a set not calibrated (too
/// few people in the gallery have it), each modality's own threshold on the
/// same scale, weighted alike (`Σ w·llr(threshold)`): a person with one
/// modality is then decided exactly as that modality's own search decides,
/// and with several the decision is a quality-weighted vote of how far each
/// modality's score lies above or below its own operating point.
pub fn fuse_persons(
    job_id: &str,
    rule: FusionRule,
    inputs: &[FusionInput],
    top_k: usize,
    calibrated: Option<&FusedThresholds>,
) -> Vec<SearchResultRow> {
    // person → modality → (probe template id, quality), best quality kept.
    let mut persons: std::collections::BTreeMap<String, (Option<String>, Vec<(usize, String, f32)>)> =
        Default::default();
    for (i, input) in inputs.iter().enumerate() {
        for p in input.probes {
            let person = person_of(p);
            let key = person.clone().unwrap_or_else(|| p.template_id.clone());
            let quality = p.quality.unwrap_or(0.0);
            let entry = persons.entry(key).or_insert_with(|| (person, Vec::new()));
            match entry.1.iter_mut().find(|(m, _, _)| *m == i) {
                Some(best) if best.2 >= quality => {}
                Some(best) => *best = (i, p.template_id.clone(), quality),
                None => entry.1.push((i, p.template_id.clone(), quality)),
            }
        }
    }
    // Each input's candidate rows by probe, grouped once.
    let by_probe: Vec<std::collections::HashMap<&str, Vec<&SearchResultRow>>> = inputs
        .iter()
        .map(|input| {
            let mut m: std::collections::HashMap<&str, Vec<&SearchResultRow>> = Default::default();
            for r in input.rows.iter().filter(|r| r.subject_id.is_some()) {
                m.entry(r.probe_template_id.as_str()).or_default().push(r);
            }
            m
        })
        .collect();
    let mut out = Vec::new();
    for (key, (person, parts)) in persons {
        let evidence: Vec<ModalityEvidence> = parts
            .iter()
            .map(|(i, probe, quality)| {
                let input = &inputs[*i];
                let mut ranked: Vec<&SearchResultRow> = by_probe[*i].get(probe.as_str()).cloned().unwrap_or_default();
                ranked.sort_by_key(|r| r.rank);
                ModalityEvidence {
                    modality: input.modality,
                    quality: *quality,
                    calibration: input.calibration.clone(),
                    candidates: ranked.iter().filter_map(|r| Some((r.subject_id.clone()?, r.score?))).collect(),
                }
            })
            .collect();
        let fused = fuse(rule, &evidence, top_k);
        let threshold_of = |c: &osprey_core::fusion::FusedCandidate| -> f32 {
            c.modalities
                .iter()
                .map(|m| {
                    let input = inputs.iter().find(|i| i.modality == m.modality).expect("an input per modality");
                    m.weight * input.calibration.llr(input.threshold)
                })
                .sum()
        };
        let base = SearchResultRow {
            job_id: job_id.to_string(),
            probe_template_id: key.clone(),
            rank: 1,
            subject_id: None,
            gallery_template_id: None,
            score: None,
            decision: OpenSetDecision::Unknown,
            threshold: 0.0,
            person_track_id: person.clone(),
            fusion: Some(rule.as_str().to_string()),
            modalities: Default::default(),
        };
        let Some(top) = fused.first() else {
            out.push(base);
            continue;
        };
        let present: Vec<Modality> = parts.iter().map(|(i, ..)| inputs[*i].modality).collect();
        let threshold = calibrated.and_then(|c| c.for_modalities(&present)).unwrap_or_else(|| threshold_of(top));
        let decision = osprey_core::decide(Some(top.score), threshold);
        for (rank, c) in fused.iter().enumerate() {
            let mut m = ModalityColumns::default();
            for part in &c.modalities {
                let (score, weight) = match part.modality {
                    Modality::Face => (&mut m.face_score, &mut m.face_weight),
                    Modality::Body => (&mut m.body_score, &mut m.body_weight),
                    Modality::Gait => (&mut m.gait_score, &mut m.gait_weight),
                };
                *score = Some(part.score);
                *weight = Some(part.weight);
            }
            out.push(SearchResultRow {
                rank: rank as i32 + 1,
                subject_id: Some(c.subject_id.clone()),
                score: Some(c.score),
                decision,
                threshold,
                modalities: m,
                ..base.clone()
            });
        }
    }
    out
}

/// Writes result rows to `results/job=<job_id>/<part>.parquet`
/// (put-if-absent: a rerun never duplicates them).
pub async fn store_results(root: &Root, job_id: &str, part: &str, rows: &[SearchResultRow]) -> Result<()> {
    layout::check_name("job", job_id)?;
    let batch = results_to_batch(rows)?;
    root.put_if_absent(&layout::result_file(job_id, part), encode_parquet(batch.schema(), &[batch])?).await?;
    Ok(())
}

/// Writes a search's probe templates (all of them, failures included) to
/// the template table, their per-frame `observations` beside them, and its
/// result rows to `results/job=<job_id>/`; all put-if-absent under keys
/// derived from the job (and `part`), so a rerun of the same job never
/// duplicates rows.
#[allow(clippy::too_many_arguments)]
pub async fn store_search(
    root: &Root,
    job_id: &str,
    part: &str,
    model: &str,
    dim: usize,
    probes: &[Template],
    observations: &[ObservationRow],
    rows: &[SearchResultRow],
) -> Result<()> {
    layout::check_name("job", job_id)?;
    let batch = format!("probes-{job_id}-{part}");
    let probe_batch = templates_to_batch(probes, dim)?;
    root.put_if_absent(&layout::template_file(model, &batch), encode_parquet(probe_batch.schema(), &[probe_batch])?)
        .await?;
    if !observations.is_empty() {
        write_observations(root, &layout::observation_file(model, &batch), observations, true).await?;
    }
    store_results(root, job_id, part, rows).await
}

/// Counts (matches, unknowns) among the probe templates of `rows` (fused
/// rows, one set per person, are not counted).
pub fn count_decisions(rows: &[SearchResultRow]) -> (usize, usize) {
    let top = rows.iter().filter(|r| r.rank == 1 && r.fusion.is_none());
    let matches = top.clone().filter(|r| r.decision == OpenSetDecision::Match).count();
    (matches, top.count() - matches)
}
