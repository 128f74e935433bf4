//! Reading a search job's results for evaluation from the SQL tables
//! (`results` joined to `templates`): the queries to run, and the rows they
//! return turned into [`ProbeRecord`]s and [`Failure`]s. Whoever holds a SQL
//! session (the CLI, the coordinator) runs the queries.

use std::collections::HashMap;

use arrow::array::{Array, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use osprey_core::{Error, Result};

use super::search::{Contribution, Failure, ProbeRecord, RankedCandidate, TimedBox};

/// Checks a job id before it goes into a query (letters, digits, `-`, `_`
/// and `.`, as job ids are).
fn check_job(job: &str) -> Result<()> {
    let ok = !job.is_empty()
        && job.len() <= 200
        && job.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(Error::invalid(format!("`{job}` is not a job id"))) }
}

/// The query for a job's result rows, each with its probe's modality
/// (`fused` for fused rows), media, track and thumbnail; ordered by
/// modality, probe and rank.
pub fn results_query(job: &str) -> Result<String> {
    check_job(job)?;
    Ok(format!(
        "SELECT r.probe_template_id AS probe, \
         CASE WHEN r.fusion IS NOT NULL THEN 'fused' ELSE coalesce(CAST(t.modality AS VARCHAR), 'face') END AS kind, \
         r.rank AS rnk, r.subject_id AS subject, r.score AS score, r.decision AS decision, r.threshold AS threshold, \
         r.person_track_id AS person, r.face_score AS face_score, r.face_weight AS face_weight, \
         r.body_score AS body_score, r.body_weight AS body_weight, r.gait_score AS gait_score, \
         r.gait_weight AS gait_weight, t.media_uri AS media, t.track_id AS track, \
         t.t_start_ms AS t0, t.t_end_ms AS t1, t.thumbnail_uri AS thumb \
         FROM results r LEFT JOIN templates t ON t.template_id = r.probe_template_id \
         WHERE r.job_id = '{job}' ORDER BY kind, r.probe_template_id, r.rank"
    ))
}

/// The query for the boxes of a job's templates (the `observations` of its
/// probes and persons), for truth given by points; ordered by template and
/// time.
pub fn boxes_query(job: &str) -> Result<String> {
    check_job(job)?;
    Ok(format!(
        "SELECT o.template_id AS id, o.t_ms AS t, o.bbox['x'] AS x, o.bbox['y'] AS y, o.bbox['w'] AS w, \
         o.bbox['h'] AS h FROM observations o \
         WHERE o.template_id IN (SELECT template_id FROM templates WHERE job_id = '{job}') ORDER BY id, t"
    ))
}

/// The boxes in [`boxes_query`]'s rows, by template id.
pub fn boxes_from_batches(batches: &[RecordBatch]) -> Result<HashMap<String, Vec<TimedBox>>> {
    let mut boxes: HashMap<String, Vec<TimedBox>> = HashMap::new();
    for b in batches {
        let (ids, ts) = (strings(b, "id")?, ints(b, "t")?);
        let (xs, ys, ws, hs) = (floats(b, "x")?, floats(b, "y")?, floats(b, "w")?, floats(b, "h")?);
        for i in 0..b.num_rows() {
            let (Some(id), Some(t_ms), Some(x), Some(y), Some(w), Some(h)) =
                (ids[i].clone(), ts[i], xs[i], ys[i], ws[i], hs[i])
            else {
                continue;
            };
            boxes.entry(id).or_default().push(TimedBox { t_ms, x, y, w, h });
        }
    }
    Ok(boxes)
}

/// The query for a job's templates that were not searched (inputs that
/// failed or without a face).
pub fn failures_query(job: &str) -> Result<String> {
    check_job(job)?;
    Ok(format!(
        "SELECT media_uri AS media, error FROM templates WHERE job_id = '{job}' AND error IS NOT NULL \
         AND media_uri IS NOT NULL ORDER BY media_uri"
    ))
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| Error::internal(format!("query result has no `{name}` column")))
}

fn cast_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("cannot read a query column: {e}"))
}

fn strings(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let c = cast(column(batch, name)?, &DataType::Utf8).map_err(cast_err)?;
    let a = c.as_any().downcast_ref::<StringArray>().ok_or_else(|| cast_err("not strings"))?;
    Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string())).collect())
}

fn ints(batch: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>> {
    let c = cast(column(batch, name)?, &DataType::Int64).map_err(cast_err)?;
    let a = c.as_any().downcast_ref::<Int64Array>().ok_or_else(|| cast_err("not integers"))?;
    Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))).collect())
}

fn floats(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f32>>> {
    let c = cast(column(batch, name)?, &DataType::Float32).map_err(cast_err)?;
    let a = c.as_any().downcast_ref::<Float32Array>().ok_or_else(|| cast_err("not floats"))?;
    Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))).collect())
}

/// The probes in [`results_query`]'s rows, and the ids of probes whose
/// template row is missing (skipped).
pub fn probes_from_batches(batches: &[RecordBatch]) -> Result<(Vec<ProbeRecord>, Vec<String>)> {
    let mut probes: Vec<ProbeRecord> = Vec::new();
    let mut orphans = std::collections::BTreeSet::new();
    for b in batches {
        let (ids, kinds, ranks, subjects) =
            (strings(b, "probe")?, strings(b, "kind")?, ints(b, "rnk")?, strings(b, "subject")?);
        let (scores, decisions, thresholds, persons) =
            (floats(b, "score")?, strings(b, "decision")?, floats(b, "threshold")?, strings(b, "person")?);
        let (media, tracks, t0, t1, thumbs) =
            (strings(b, "media")?, ints(b, "track")?, ints(b, "t0")?, ints(b, "t1")?, strings(b, "thumb")?);
        let parts = [
            ("face", floats(b, "face_score")?, floats(b, "face_weight")?),
            ("body", floats(b, "body_score")?, floats(b, "body_weight")?),
            ("gait", floats(b, "gait_score")?, floats(b, "gait_weight")?),
        ];
        for i in 0..b.num_rows() {
            let id = ids[i].clone().unwrap_or_default();
            let kind = kinds[i].clone().unwrap_or_else(|| "face".into());
            let Some(m) = media[i].clone() else {
                orphans.insert(id);
                continue;
            };
            if probes.last().is_none_or(|p| p.template_id != id || p.modality != kind) {
                let contributions = parts
                    .iter()
                    .filter_map(|(name, score, weight)| {
                        Some(Contribution { modality: name.to_string(), score: score[i]?, weight: weight[i] })
                    })
                    .collect();
                probes.push(ProbeRecord {
                    template_id: id,
                    modality: kind,
                    media: m,
                    track: tracks[i],
                    t_start_ms: t0[i],
                    t_end_ms: t1[i],
                    thumbnail_uri: thumbs[i].clone(),
                    decision: decisions[i].clone(),
                    threshold: thresholds[i],
                    candidates: Vec::new(),
                    person_track_id: persons[i].clone(),
                    contributions,
                });
            }
            let p = probes.last_mut().expect("pushed above");
            let rank = ranks[i].unwrap_or(0) as i32;
            if let (Some(s), Some(score)) = (subjects[i].clone(), scores[i])
                && p.candidates.last().is_none_or(|c| c.rank != rank)
            {
                p.candidates.push(RankedCandidate { rank, subject_id: s, score });
            }
        }
    }
    Ok((probes, orphans.into_iter().collect()))
}

/// The failures in [`failures_query`]'s rows.
pub fn failures_from_batches(batches: &[RecordBatch]) -> Result<Vec<Failure>> {
    let mut failures = Vec::new();
    for b in batches {
        let (media, errors) = (strings(b, "media")?, strings(b, "error")?);
        for (m, e) in media.into_iter().zip(errors) {
            failures.push(Failure { media: m.unwrap_or_default(), error: e });
        }
    }
    Ok(failures)
}
