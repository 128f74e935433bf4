//! A search job's results scored against ground truth, for each modality
//! the job searched (face, body, gait) and for its fused per-person rows.
//!
//! What a *probe* is depends on the modality: a face track (or a still
//! image's face) for `face`, a body track for `body`, a gait template (of a
//! body track) for `gait`, and a person (the fused rows, one set per
//! `person_track_id`) for `fused`. Every probe takes the subject of the
//! truth row naming its media file, or, where the truth places people by a
//! point (`time_s,x,y`), of the row whose point lies in the probe's box (or
//! its person's) nearest that time. A truth row that no probe of a modality
//! takes counts, for that modality, as *not detected*: a miss when it is
//! mated, and no search at all when it is not (it could not alarm). So every
//! modality is scored against the same truth rows.

use std::collections::{BTreeSet, HashMap};

use osprey_core::{Error, OpenSetDecision, Result};
use serde::Serialize;
use serde_json::Value;

use super::truth::{MediaIndex, TRUTH_POINT_TOLERANCE_MS, TruthPoint, TruthRow};
use crate::{Candidate, IdentificationDetPoint, Search};

/// The kinds of probe a job's results can hold, in report order.
pub const MODALITIES: [&str; 4] = ["face", "body", "gait", "fused"];

/// A candidate of a probe's stored result rows.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedCandidate {
    /// 1-based rank.
    pub rank: i32,
    /// The gallery subject.
    pub subject_id: String,
    /// Its score (a cosine similarity; for fused rows an LLR).
    pub score: f32,
}

/// What one modality contributed to a fused row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contribution {
    /// `face`, `body` or `gait`.
    pub modality: String,
    /// Its raw score for the candidate.
    pub score: f32,
    /// Its weight in the fused score.
    pub weight: Option<f32>,
}

/// One probe of a job with its stored results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeRecord {
    /// The probe template (for a fused probe, its person's template).
    pub template_id: String,
    /// One of [`MODALITIES`].
    pub modality: String,
    /// The media file it was found in.
    pub media: String,
    /// Its track in a video.
    pub track: Option<i64>,
    /// Where its track starts in the video, in milliseconds.
    pub t_start_ms: Option<i64>,
    /// Where its track ends, in milliseconds.
    pub t_end_ms: Option<i64>,
    /// The stored thumbnail's URL.
    pub thumbnail_uri: Option<String>,
    /// The stored decision (`match` or `unknown`).
    pub decision: Option<String>,
    /// The threshold the decision used.
    pub threshold: Option<f32>,
    /// Candidates by rank; a row without a subject (an empty gallery) is
    /// left out.
    pub candidates: Vec<RankedCandidate>,
    /// The person the probe belongs to.
    pub person_track_id: Option<String>,
    /// For a fused probe: what each modality contributed to its top candidate.
    pub contributions: Vec<Contribution>,
}

impl ProbeRecord {
    fn top(&self) -> Option<&RankedCandidate> {
        self.candidates.first()
    }
    fn is_match(&self) -> bool {
        self.decision.as_deref() == Some(OpenSetDecision::Match.as_str())
    }
}

/// A template of the job that was not searched: an input that failed or
/// in which nothing was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Its media file.
    pub media: String,
    /// Why.
    pub error: Option<String>,
}

/// Where a template's face or body was in one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedBox {
    /// The frame's time, in milliseconds.
    pub t_ms: i64,
    /// Left edge, in pixels.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width.
    pub w: f32,
    /// Height.
    pub h: f32,
}

impl TimedBox {
    fn holds(&self, p: &TruthPoint) -> bool {
        (self.x..=self.x + self.w).contains(&p.x) && (self.y..=self.y + self.h).contains(&p.y)
    }
}

/// A search job's stored results, as the evaluation needs them.
#[derive(Debug, Clone, Default)]
pub struct JobResults {
    /// The job.
    pub job_id: String,
    /// Where it is stored (shown in the report).
    pub root: String,
    /// Its searched probes, of every modality.
    pub probes: Vec<ProbeRecord>,
    /// Its templates that were not searched.
    pub failures: Vec<Failure>,
    /// The boxes of its templates by template id, in time order (needed
    /// only for truth given by points).
    pub boxes: HashMap<String, Vec<TimedBox>>,
}

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchEvalOptions {
    /// FPIR targets to report FNIR (and DIR) at.
    pub fpir: Vec<f64>,
    /// Ranks of the CMC: 1 to this.
    pub max_rank: usize,
}

impl Default for SearchEvalOptions {
    fn default() -> Self {
        Self { fpir: vec![0.001, 0.01, 0.1], max_rank: 20 }
    }
}

/// How many of what, for one modality.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Truth rows in the file.
    pub truth_rows: usize,
    /// Of them, naming an enrolled subject.
    pub truth_mated: usize,
    /// Of them, `unknown`.
    pub truth_nonmated: usize,
    /// Truth rows naming no media of the job.
    pub truth_not_in_job: usize,
    /// Mated truth rows no probe of this modality took.
    pub not_detected_mated: usize,
    /// Non-mated truth rows no probe of this modality took.
    pub not_detected_nonmated: usize,
    /// The job's probes of this modality.
    pub job_probe_templates: usize,
    /// Of them, without a truth row (in media without one, or in no truth point's box; ignored).
    pub probes_without_truth: usize,
    /// Mated searches: probes plus mated media not detected.
    pub mated_searches: usize,
    /// Mated probes.
    pub mated_probes_detected: usize,
    /// Non-mated searches (probes).
    pub nonmated_searches: usize,
    /// Mated probes matched to their own subject by the stored decision.
    pub hits: usize,
    /// Mated probes left unknown or matched to someone else.
    pub misses: usize,
    /// Non-mated probes that matched someone.
    pub false_matches: usize,
}

/// One CMC point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CmcPoint {
    /// The rank.
    pub rank: usize,
    /// The share of mated searches whose mate is within it.
    pub rate: f64,
}

/// FNIR (rank 1) at an FPIR target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FnirAtFpir {
    /// The FPIR asked for.
    pub target_fpir: f64,
    /// The FPIR reached.
    pub fpir: f64,
    /// FNIR there.
    pub fnir: f64,
    /// The threshold.
    pub threshold: f32,
}

/// DIR at a FAR (FPIR) target and rank.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DirAtFar {
    /// The FAR (FPIR) asked for.
    pub far: f64,
    /// The rank.
    pub rank: usize,
    /// The detection and identification rate.
    pub dir: f64,
    /// The threshold.
    pub threshold: f32,
}

/// The job's own operating point, from its stored thresholds and decisions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobOperatingPoint {
    /// The threshold, when every probe used the same one.
    pub threshold: Option<f32>,
    /// The thresholds used, when they differ (fused rows: one per person).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Vec<f32>>,
    /// FNIR (rank 1) there.
    pub fnir: Option<f64>,
    /// FPIR there.
    pub fpir: Option<f64>,
    /// Where the numbers come from.
    pub source: String,
}

/// A probe of one of the report's galleries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeOutcome {
    /// The probe template.
    pub template_id: String,
    /// Its media.
    pub media: String,
    /// Its track in a video.
    pub track: Option<i64>,
    /// Track start, in milliseconds.
    pub t_start_ms: Option<i64>,
    /// Track end, in milliseconds.
    pub t_end_ms: Option<i64>,
    /// The truth: a subject, `None` when not enrolled.
    pub truth: Option<String>,
    /// The stored decision.
    pub decision: Option<String>,
    /// The top candidate.
    pub candidate: Option<String>,
    /// Its score.
    pub score: Option<f32>,
    /// The decision's threshold.
    pub threshold: Option<f32>,
    /// Where the report shows its thumbnail from (set by whoever writes the
    /// report: a file beside it, a URL, a data URI).
    pub thumbnail: Option<String>,
    /// A fused probe's per-modality scores and weights for its top candidate.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contributions: Vec<Contribution>,
    /// The stored thumbnail's URL.
    #[serde(skip)]
    pub thumbnail_uri: Option<String>,
}

/// The three galleries of a modality.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Galleries {
    /// Mated probes matched to their own subject at the job's threshold.
    pub hits: Vec<ProbeOutcome>,
    /// Mated probes left unknown or matched to someone else.
    pub misses: Vec<ProbeOutcome>,
    /// Probes of people not enrolled that matched someone.
    pub false_matches: Vec<ProbeOutcome>,
}

/// A truth row no probe of a modality took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotDetected {
    /// Its line in the truth file.
    pub line: u64,
    /// The job's media it names.
    pub media: String,
    /// Its subject, `None` when not enrolled.
    pub truth: Option<String>,
    /// The job's error for the media, if it recorded one.
    pub error: Option<String>,
}

/// A truth row naming no media of the job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotInJob {
    /// Its line.
    pub line: u64,
    /// The media it names.
    pub media: String,
}

/// Everything measured for one modality (or the fused rows).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModalityEvaluation {
    /// One of [`MODALITIES`].
    pub modality: String,
    /// Counts.
    pub counts: Counts,
    /// The CMC, ranks 1 to the maximum; empty without mated searches.
    pub cmc: Vec<CmcPoint>,
    /// The rank-1 rate.
    pub rank1: Option<f64>,
    /// FNIR at each FPIR target (needs mated and non-mated searches).
    pub fnir_at_fpir: Vec<FnirAtFpir>,
    /// DIR at each FAR target, at rank 1 and the maximum rank.
    pub dir_at_far: Vec<DirAtFar>,
    /// The job's own operating point.
    pub operating_point: JobOperatingPoint,
    /// The DET curve at rank 1 (needs mated and non-mated searches).
    pub det: Vec<IdentificationDetPoint>,
    /// Hits, misses and false matches.
    pub galleries: Galleries,
    /// Truth rows whose media gave no probe of this modality.
    pub not_detected: Vec<NotDetected>,
}

/// A search job scored against ground truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchReport {
    /// The job.
    pub job_id: String,
    /// Where it is stored.
    pub root: String,
    /// The truth file's name.
    pub truth: String,
    /// The CMC's maximum rank.
    pub max_rank: usize,
    /// Each modality the job has probes of, in [`MODALITIES`] order (at
    /// least one).
    pub modalities: Vec<ModalityEvaluation>,
    /// Truth rows naming no media of the job.
    pub not_in_job: Vec<NotInJob>,
    /// Warnings and notes for the user (one line each, e.g. `warning: …`).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl SearchReport {
    /// Whether it has more than one modality.
    pub fn is_multimodal(&self) -> bool {
        self.modalities.len() > 1
    }

    /// The report as `metrics.json` holds it: the first modality's numbers
    /// at the top level (with `job_id`, `root`, `truth`, `modality` and
    /// `not_in_job`), as a single-modality job has always been written, and
    /// with several modalities also `modalities`: each one's numbers by name
    /// (`face`, `body`, `gait`, `fused`), and `modality_order`.
    pub fn metrics_json(&self) -> Value {
        let mut top = serde_json::to_value(&self.modalities[0]).expect("serialisable");
        let object = top.as_object_mut().expect("a struct");
        object.insert("job_id".into(), self.job_id.clone().into());
        object.insert("root".into(), self.root.clone().into());
        object.insert("truth".into(), self.truth.clone().into());
        object.insert("not_in_job".into(), serde_json::to_value(&self.not_in_job).expect("serialisable"));
        if self.is_multimodal() {
            let by_name: serde_json::Map<String, Value> = self
                .modalities
                .iter()
                .map(|m| (m.modality.clone(), serde_json::to_value(m).expect("serialisable")))
                .collect();
            object.insert("modalities".into(), Value::Object(by_name));
            let order: Vec<&str> = self.modalities.iter().map(|m| m.modality.as_str()).collect();
            object.insert("modality_order".into(), serde_json::to_value(order).expect("serialisable"));
        }
        top
    }

    /// The gallery probes a report shows (the first `limit` of each gallery
    /// of each modality), to fill their `thumbnail`.
    pub fn shown_probes_mut(&mut self, limit: usize) -> impl Iterator<Item = &mut ProbeOutcome> {
        self.modalities.iter_mut().flat_map(move |m| {
            let g = &mut m.galleries;
            g.hits
                .iter_mut()
                .take(limit)
                .chain(g.misses.iter_mut().take(limit))
                .chain(g.false_matches.iter_mut().take(limit))
        })
    }
}

/// Scores `job` against `truth` (read from the file `truth_name`), for each
/// modality the job has probes of. Errors (invalid input) when a truth row
/// names several media of the job, when two rows name the same media, when
/// no row names any, or when nothing is left to evaluate.
pub fn evaluate_search(
    job: &JobResults,
    truth: &[TruthRow],
    truth_name: &str,
    options: &SearchEvalOptions,
) -> Result<SearchReport> {
    if options.max_rank == 0 {
        return Err(Error::invalid("the CMC's maximum rank must be at least 1"));
    }
    if let Some(f) = options.fpir.iter().find(|f| !(0.0..=1.0).contains(*f)) {
        return Err(Error::invalid(format!("FPIR {f} is not a rate between 0 and 1")));
    }
    if truth.is_empty() {
        return Err(Error::invalid(format!("{truth_name} has no truth rows")));
    }
    // Match the truth rows to the job's media.
    let job_media: Vec<&String> =
        job.probes.iter().map(|p| &p.media).chain(job.failures.iter().map(|f| &f.media)).collect();
    let index = MediaIndex::new(job_media.iter().copied());
    let mut truth_of: HashMap<&str, &TruthRow> = HashMap::new();
    let mut points_of: HashMap<&str, Vec<&TruthRow>> = HashMap::new();
    let mut resolved: Vec<(&TruthRow, Option<&str>)> = Vec::new();
    for row in truth {
        let media = index.resolve(&row.media).map_err(|(rule, found)| {
            let shown: Vec<&str> = found.iter().take(5).copied().collect();
            Error::invalid(format!(
                "{truth_name} line {}: `{}` matches {} media of job `{}` by {rule} ({}{}); write more of the path",
                row.line,
                row.media,
                found.len(),
                job.job_id,
                shown.join(", "),
                if found.len() > 5 { ", …" } else { "" }
            ))
        })?;
        if let Some(m) = media {
            let other = match row.at {
                None => truth_of.insert(m, row).or_else(|| points_of.get(m).map(|p| p[0])),
                Some(_) => {
                    points_of.entry(m).or_default().push(row);
                    truth_of.get(m).copied()
                }
            };
            if let Some(other) = other {
                return Err(Error::invalid(format!(
                    "{truth_name} lines {} and {} both name media `{m}`: one subject per media file, or points for each person in it",
                    other.line, row.line
                )));
            }
        }
        resolved.push((row, media));
    }
    if truth_of.is_empty() && points_of.is_empty() {
        let example = job_media.first().map_or(String::new(), |m| format!(", e.g. `{m}`"));
        return Err(Error::invalid(format!(
            "none of the {} media in {truth_name} (e.g. `{}`) is a media file of job `{}` ({} media{example}): \
             name them by path or file name",
            truth.len(),
            truth[0].media,
            job.job_id,
            index.len()
        )));
    }
    let not_in_job: Vec<NotInJob> = resolved
        .iter()
        .filter(|(_, m)| m.is_none())
        .map(|(r, _)| NotInJob { line: r.line, media: r.media.clone() })
        .collect();
    let mut warnings = Vec::new();
    if let Some(first) = not_in_job.first() {
        warnings.push(format!(
            "warning: {} of {} truth rows name no media of job `{}` (e.g. line {}: `{}`); they are left out",
            not_in_job.len(),
            truth.len(),
            job.job_id,
            first.line,
            first.media
        ));
    }
    let failure_of: HashMap<&str, &Failure> = job.failures.iter().map(|f| (f.media.as_str(), f)).collect();
    let present: BTreeSet<&str> = job.probes.iter().map(|p| p.modality.as_str()).collect();
    let mut kinds: Vec<&str> = MODALITIES.iter().copied().filter(|m| present.contains(m)).collect();
    // Other names (a newer modality) after the known ones.
    kinds.extend(present.iter().copied().filter(|m| !MODALITIES.contains(m)));
    if kinds.is_empty() {
        kinds.push("face");
    }
    let multi = kinds.len() > 1;
    let context = Context {
        truth,
        resolved: &resolved,
        truth_of: &truth_of,
        points_of: &points_of,
        boxes: &job.boxes,
        failure_of: &failure_of,
        options,
    };
    let mut modalities = Vec::new();
    for kind in kinds {
        let probes: Vec<&ProbeRecord> = job.probes.iter().filter(|p| p.modality == kind).collect();
        let note_prefix = if multi { format!("{kind}: ") } else { String::new() };
        match evaluate_modality(kind, &probes, &context, not_in_job.len(), &note_prefix, &mut warnings)? {
            Some(e) => modalities.push(e),
            None if multi => warnings.push(format!(
                "warning: {kind}: nothing to evaluate (every matched truth row is non-mated with no {kind} probe); left out"
            )),
            None => {}
        }
    }
    if modalities.is_empty() {
        return Err(Error::invalid("nothing to evaluate: every matched truth row is non-mated with no face found"));
    }
    Ok(SearchReport {
        job_id: job.job_id.clone(),
        root: job.root.clone(),
        truth: truth_name.to_string(),
        max_rank: options.max_rank,
        modalities,
        not_in_job,
        warnings,
    })
}

/// What every modality is scored against.
struct Context<'a> {
    truth: &'a [TruthRow],
    resolved: &'a [(&'a TruthRow, Option<&'a str>)],
    truth_of: &'a HashMap<&'a str, &'a TruthRow>,
    points_of: &'a HashMap<&'a str, Vec<&'a TruthRow>>,
    boxes: &'a HashMap<String, Vec<TimedBox>>,
    failure_of: &'a HashMap<&'a str, &'a Failure>,
    options: &'a SearchEvalOptions,
}

impl Context<'_> {
    /// The truth row `p` takes: its media's, else the point row whose point
    /// lies in the box of `p` (or of its person) nearest the point's time,
    /// within [`TRUTH_POINT_TOLERANCE_MS`]; the row nearest in time when
    /// several do.
    fn row_of(&self, p: &ProbeRecord) -> Option<&TruthRow> {
        if let Some(row) = self.truth_of.get(p.media.as_str()) {
            return Some(row);
        }
        let points = self.points_of.get(p.media.as_str())?;
        let own = self.boxes.get(&p.template_id).into_iter().flatten();
        let person = p.person_track_id.as_ref().filter(|id| **id != p.template_id);
        let boxes: Vec<&TimedBox> = own.chain(person.and_then(|id| self.boxes.get(id)).into_iter().flatten()).collect();
        points
            .iter()
            .filter_map(|row| {
                let at = row.at.as_ref()?;
                let gap = |b: &&TimedBox| (b.t_ms - at.t_ms).abs();
                let nearest = boxes.iter().map(gap).min().filter(|g| *g <= TRUTH_POINT_TOLERANCE_MS)?;
                boxes.iter().any(|b| gap(b) == nearest && b.holds(at)).then_some((nearest, row.line, *row))
            })
            .min_by_key(|(gap, line, _)| (*gap, *line))
            .map(|(_, _, row)| row)
    }
}

fn outcome(p: &ProbeRecord, truth: Option<&str>) -> ProbeOutcome {
    ProbeOutcome {
        template_id: p.template_id.clone(),
        media: p.media.clone(),
        track: p.track,
        t_start_ms: p.t_start_ms,
        t_end_ms: p.t_end_ms,
        truth: truth.map(str::to_string),
        decision: p.decision.clone(),
        candidate: p.top().map(|c| c.subject_id.clone()),
        score: p.top().map(|c| c.score),
        threshold: p.threshold,
        thumbnail: None,
        contributions: p.contributions.clone(),
        thumbnail_uri: p.thumbnail_uri.clone(),
    }
}

/// One modality's numbers; `None` when it has no search to score.
fn evaluate_modality(
    kind: &str,
    probes: &[&ProbeRecord],
    cx: &Context,
    not_in_job: usize,
    note_prefix: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<ModalityEvaluation>> {
    let options = cx.options;
    // Searches: every probe with truth, and a miss for each mated truth row
    // no probe took. Non-mated rows without one are not searches: they
    // could not alarm, and counting them would lower FPIR.
    let mut searches = Vec::new();
    let mut evaluated: Vec<(&ProbeRecord, Option<&str>)> = Vec::new();
    let mut without_truth = 0;
    let mut taken: BTreeSet<u64> = BTreeSet::new();
    for &p in probes {
        let Some(row) = cx.row_of(p) else {
            without_truth += 1;
            continue;
        };
        taken.insert(row.line);
        searches.push(Search {
            mate: row.subject.clone(),
            candidates: p
                .candidates
                .iter()
                .map(|c| Candidate { subject_id: c.subject_id.clone(), score: c.score })
                .collect(),
        });
        evaluated.push((p, row.subject.as_deref()));
    }
    let mut not_detected = Vec::new();
    for &(row, media) in cx.resolved {
        let Some(m) = media else { continue };
        if taken.contains(&row.line) {
            continue;
        }
        if let Some(s) = &row.subject {
            searches.push(Search { mate: Some(s.clone()), candidates: Vec::new() });
        }
        not_detected.push(NotDetected {
            line: row.line,
            media: m.to_string(),
            truth: row.subject.clone(),
            error: cx.failure_of.get(m).and_then(|f| f.error.clone()),
        });
    }
    let mated = searches.iter().filter(|s| s.mate.is_some()).count();
    let nonmated = searches.len() - mated;
    if searches.is_empty() {
        return Ok(None);
    }

    // Metrics.
    let cmc = if mated > 0 { crate::cmc(&searches, options.max_rank)? } else { Vec::new() };
    let mut fnir_at_fpir = Vec::new();
    let mut dir_at_far = Vec::new();
    let mut det = Vec::new();
    if mated > 0 && nonmated > 0 {
        for &target in &options.fpir {
            let (fnir, threshold) = crate::fnir_at_fpir(&searches, target, 1)?;
            let fpir = crate::fpir(&searches, threshold)?;
            fnir_at_fpir.push(FnirAtFpir { target_fpir: target, fpir, fnir, threshold });
            let mut ranks = vec![1];
            if options.max_rank > 1 {
                ranks.push(options.max_rank);
            }
            for rank in ranks {
                let (dir, threshold) = crate::dir_at_far(&searches, target, rank)?;
                dir_at_far.push(DirAtFar { far: target, rank, dir, threshold });
            }
        }
        det = crate::identification_det(&searches, 1)?;
    }

    // The job's own operating point, and the galleries, from the decisions
    // stored with the results.
    let thresholds: BTreeSet<u32> = evaluated.iter().filter_map(|(p, _)| p.threshold).map(f32::to_bits).collect();
    let mut galleries = Galleries::default();
    for &(p, truth) in &evaluated {
        let top = p.top().map(|c| c.subject_id.as_str());
        match truth {
            Some(s) if p.is_match() && top == Some(s) => galleries.hits.push(outcome(p, truth)),
            Some(_) => galleries.misses.push(outcome(p, truth)),
            None if p.is_match() => galleries.false_matches.push(outcome(p, truth)),
            None => {}
        }
    }
    let nd_mated = not_detected.iter().filter(|n| n.truth.is_some()).count();
    let mated_missed = galleries.misses.len() + nd_mated;
    let stored_fnir = (mated > 0).then(|| mated_missed as f64 / mated as f64);
    let stored_fpir = (nonmated > 0).then(|| galleries.false_matches.len() as f64 / nonmated as f64);
    let operating_point = if thresholds.len() == 1 {
        let t = f32::from_bits(*thresholds.first().expect("one threshold"));
        let fnir = if mated > 0 { Some(crate::fnir(&searches, t, 1)?) } else { None };
        let fpir = if nonmated > 0 { Some(crate::fpir(&searches, t)?) } else { None };
        if fnir != stored_fnir || fpir != stored_fpir {
            warnings.push(format!(
                "note: {note_prefix}at threshold {t} the stored decisions give FNIR {stored_fnir:?}, FPIR {stored_fpir:?}; \
                 recomputed (ties between candidates ranked pessimistically) FNIR {fnir:?}, FPIR {fpir:?}"
            ));
        }
        JobOperatingPoint {
            threshold: Some(t),
            thresholds: None,
            fnir,
            fpir,
            source: "the threshold stored with the results".into(),
        }
    } else {
        JobOperatingPoint {
            threshold: None,
            thresholds: Some(thresholds.iter().map(|b| f32::from_bits(*b)).collect()),
            fnir: stored_fnir,
            fpir: stored_fpir,
            source: "the decisions stored with the results (their thresholds differ)".into(),
        }
    };
    let counts = Counts {
        truth_rows: cx.truth.len(),
        truth_mated: cx.truth.iter().filter(|r| r.subject.is_some()).count(),
        truth_nonmated: cx.truth.iter().filter(|r| r.subject.is_none()).count(),
        truth_not_in_job: not_in_job,
        not_detected_mated: nd_mated,
        not_detected_nonmated: not_detected.len() - nd_mated,
        job_probe_templates: probes.len(),
        probes_without_truth: without_truth,
        mated_searches: mated,
        mated_probes_detected: evaluated.iter().filter(|e| e.1.is_some()).count(),
        nonmated_searches: nonmated,
        hits: galleries.hits.len(),
        misses: galleries.misses.len(),
        false_matches: galleries.false_matches.len(),
    };
    Ok(Some(ModalityEvaluation {
        modality: kind.to_string(),
        counts,
        rank1: cmc.first().copied(),
        cmc: cmc.iter().enumerate().map(|(i, &rate)| CmcPoint { rank: i + 1, rate }).collect(),
        fnir_at_fpir,
        dir_at_far,
        operating_point,
        det,
        galleries,
        not_detected,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{PlotRef, parse_truth, search_report_html};

    fn probe(modality: &str, media: &str, decision: &str, threshold: f32, candidates: &[(&str, f32)]) -> ProbeRecord {
        ProbeRecord {
            template_id: format!("{modality}-{media}"),
            modality: modality.into(),
            media: format!("/clips/{media}"),
            decision: Some(decision.into()),
            threshold: Some(threshold),
            candidates: candidates
                .iter()
                .enumerate()
                .map(|(i, &(s, score))| RankedCandidate { rank: i as i32 + 1, subject_id: s.into(), score })
                .collect(),
            ..Default::default()
        }
    }

    /// Amy in a.mp4 (face and body), Bea in b.mp4 (face and body), a
    /// stranger in c.mp4 (face and body), Amy from behind in d.mp4 (body
    /// only), and a media without truth.
    fn job() -> JobResults {
        let mut fused_d = probe("fused", "d.mp4", "match", 0.4, &[("amy", 1.5)]);
        fused_d.contributions = vec![Contribution { modality: "body".into(), score: 0.8, weight: Some(1.0) }];
        JobResults {
            job_id: "j".into(),
            root: "memory://t".into(),
            probes: vec![
                probe("face", "a.mp4", "match", 0.5, &[("amy", 0.9), ("bea", 0.3)]),
                probe("face", "b.mp4", "unknown", 0.5, &[("bea", 0.4), ("amy", 0.35)]),
                probe("face", "c.mp4", "match", 0.5, &[("amy", 0.6)]),
                probe("face", "e.mp4", "unknown", 0.5, &[("amy", 0.1)]),
                probe("body", "a.mp4", "match", 0.85, &[("amy", 0.95), ("bea", 0.8)]),
                probe("body", "b.mp4", "match", 0.85, &[("bea", 0.9)]),
                probe("body", "c.mp4", "unknown", 0.85, &[("bea", 0.7)]),
                probe("body", "d.mp4", "unknown", 0.85, &[("bea", 0.82), ("amy", 0.8)]),
                probe("fused", "a.mp4", "match", 0.2, &[("amy", 3.0), ("bea", -1.0)]),
                probe("fused", "b.mp4", "match", 0.3, &[("bea", 1.0), ("amy", 0.2)]),
                probe("fused", "c.mp4", "unknown", 0.2, &[("bea", -0.5)]),
                fused_d,
            ],
            failures: vec![],
            boxes: HashMap::new(),
        }
    }

    fn truth() -> Vec<TruthRow> {
        parse_truth("media,subject\na.mp4,amy\nb.mp4,bea\nc.mp4,unknown\nd.mp4,amy\nz.mp4,amy\n", "t.csv").unwrap()
    }

    #[test]
    fn each_modality_is_scored_on_its_own_probes_against_the_same_truth() {
        let report = evaluate_search(&job(), &truth(), "t.csv", &SearchEvalOptions::default()).unwrap();
        let names: Vec<&str> = report.modalities.iter().map(|m| m.modality.as_str()).collect();
        assert_eq!(names, ["face", "body", "fused"]);
        assert_eq!(report.not_in_job, [NotInJob { line: 6, media: "z.mp4".into() }]);
        assert!(report.warnings[0].contains("1 of 5 truth rows name no media"), "{:?}", report.warnings);

        // Face: d.mp4 gave no face, a mated miss; e.mp4 has no truth.
        let face = &report.modalities[0];
        let c = &face.counts;
        assert_eq!((c.mated_searches, c.nonmated_searches, c.not_detected_mated), (3, 1, 1));
        assert_eq!((c.job_probe_templates, c.probes_without_truth), (4, 1));
        assert_eq!((c.hits, c.misses, c.false_matches), (1, 1, 1));
        assert_eq!(face.rank1, Some(2.0 / 3.0));
        assert_eq!(face.not_detected[0].media, "/clips/d.mp4");
        assert_eq!(face.operating_point.threshold, Some(0.5));
        assert_eq!((face.operating_point.fnir, face.operating_point.fpir), (Some(2.0 / 3.0), Some(1.0)));
        // One non-mated top at 0.6: FPIR 0.1 needs a threshold above it, which only amy's 0.9 beats.
        let p = face.fnir_at_fpir.iter().find(|p| p.target_fpir == 0.1).unwrap();
        assert_eq!((p.threshold, p.fnir), (0.6f32.next_up(), 2.0 / 3.0));

        // Body: every mated media has a body; d.mp4's mate ranks second.
        let body = &report.modalities[1];
        let c = &body.counts;
        assert_eq!((c.mated_searches, c.nonmated_searches, c.not_detected_mated), (3, 1, 0));
        assert_eq!((c.hits, c.misses, c.false_matches), (2, 1, 0));
        assert_eq!(body.rank1, Some(2.0 / 3.0));
        assert_eq!(body.cmc[1].rate, 1.0);
        assert_eq!((body.operating_point.fnir, body.operating_point.fpir), (Some(1.0 / 3.0), Some(0.0)));

        // Fused: persons, thresholds per person.
        let fused = &report.modalities[2];
        assert_eq!(fused.rank1, Some(1.0));
        assert_eq!(fused.operating_point.threshold, None);
        assert_eq!(fused.operating_point.thresholds.as_deref(), Some(&[0.2f32, 0.3, 0.4][..]));
        assert_eq!((fused.operating_point.fnir, fused.operating_point.fpir), (Some(0.0), Some(0.0)));
        assert_eq!(fused.galleries.hits[2].contributions[0].modality, "body");

        let m = report.metrics_json();
        assert_eq!(m["modality"], "face");
        assert_eq!(m["job_id"], "j");
        assert_eq!(m["counts"]["mated_searches"], 3);
        assert_eq!(m["modalities"]["body"]["counts"]["hits"], 2);
        assert_eq!(m["modalities"]["fused"]["rank1"], 1.0);
        assert_eq!(m["modality_order"], serde_json::json!(["face", "body", "fused"]));
        assert_eq!(m["modalities"]["fused"]["galleries"]["hits"][2]["contributions"][0]["score"], 0.800000011920929);
    }

    #[test]
    fn truth_points_pick_the_person_in_whose_box_they_lie() {
        // One clip: Amy (face track linked to her body track), a stranger
        // (body only), and Bea, listed in the truth but never tracked.
        let b = |t_ms, x, y| TimedBox { t_ms, x, y, w: 100.0, h: 300.0 };
        let mut face = probe("face", "clip.mp4", "unknown", 0.9, &[("amy", 0.5)]);
        face.template_id = "f1".into();
        face.person_track_id = Some("b1".into());
        let mut amy = probe("body", "clip.mp4", "match", 0.9, &[("amy", 0.95)]);
        amy.template_id = "b1".into();
        let mut stranger = probe("body", "clip.mp4", "match", 0.9, &[("amy", 0.92)]);
        stranger.template_id = "b2".into();
        let mut job = JobResults { job_id: "j".into(), probes: vec![face, amy, stranger], ..Default::default() };
        // The face track's own box is 1.5 s after the truth's time: its
        // person's body box at 0.6 s places it.
        job.boxes.insert("f1".into(), vec![TimedBox { t_ms: 2100, x: 20.0, y: 10.0, w: 40.0, h: 40.0 }]);
        job.boxes.insert("b1".into(), vec![b(400, 0.0, 0.0), b(800, 10.0, 0.0)]);
        job.boxes.insert("b2".into(), vec![b(600, 500.0, 0.0)]);
        let text =
            "media,subject,time_s,x,y\nclip.mp4,amy,0.6,50,20\nclip.mp4,unknown,0.6,550,20\nclip.mp4,bea,0.6,900,20\n";
        let truth = parse_truth(text, "t.csv").unwrap();
        let report = evaluate_search(&job, &truth, "t.csv", &SearchEvalOptions::default()).unwrap();
        let face = &report.modalities[0];
        assert_eq!((face.counts.mated_searches, face.counts.nonmated_searches, face.counts.misses), (2, 0, 1));
        assert_eq!(face.galleries.misses[0].template_id, "f1");
        let body = &report.modalities[1];
        let c = &body.counts;
        assert_eq!((c.hits, c.false_matches, c.not_detected_mated, c.probes_without_truth), (1, 1, 1, 0));
        assert_eq!(body.galleries.false_matches[0].template_id, "b2");
        assert_eq!(body.not_detected[0].line, 4);

        // A point too far in time from every box of a track is not its.
        let far = parse_truth("media,subject,time_s,x,y\nclip.mp4,amy,3,50,20\n", "t.csv").unwrap();
        let report = evaluate_search(&job, &far, "t.csv", &SearchEvalOptions::default()).unwrap();
        assert_eq!(report.modalities[0].counts.probes_without_truth, 0, "f1's own box at 2.1 s is within 1 s of 3 s");
        assert_eq!(report.modalities[1].counts.probes_without_truth, 2);

        // A whole-media row and points for the same media under two names.
        let mixed = parse_truth("media,subject,time_s,x,y\nclip.mp4,amy,,,\n/clip.mp4,bea,1,2,3\n", "t.csv");
        let err = evaluate_search(&job, &mixed.unwrap(), "t.csv", &SearchEvalOptions::default()).unwrap_err();
        assert!(err.to_string().contains("lines 2 and 3 both name media"), "{err}");
    }

    #[test]
    fn a_face_only_job_reads_as_before() {
        let mut job = job();
        job.probes.retain(|p| p.modality == "face");
        let report = evaluate_search(&job, &truth(), "t.csv", &SearchEvalOptions::default()).unwrap();
        assert!(!report.is_multimodal());
        let m = report.metrics_json();
        assert!(m.get("modalities").is_none() && m["modality"] == "face");
        // Without its body probe d.mp4 is no media of the job any more.
        assert_eq!(
            (m["counts"]["not_detected_mated"].as_u64(), m["counts"]["truth_not_in_job"].as_u64()),
            (Some(0), Some(2))
        );
        assert!(m["galleries"]["hits"][0].get("contributions").is_none());
        let html = search_report_html(&report, &[], &[], 10, "now").unwrap();
        assert!(html.contains("id=\"hit\"") && !html.contains("face-hit"));
    }

    #[test]
    fn the_report_shows_each_modality_side_by_side() {
        let mut report = evaluate_search(&job(), &truth(), "t.csv", &SearchEvalOptions::default()).unwrap();
        for p in report.shown_probes_mut(1) {
            p.thumbnail = Some(format!("thumbs/{}.jpg", p.template_id));
        }
        let plots = [PlotRef { src: "cmc.png".into(), caption: "CMC <all>".into() }];
        let html = search_report_html(&report, &plots, &[], 1, "now").unwrap();
        assert!(html.contains("<tr><th></th><th>face</th><th>body</th><th>fused</th></tr>"), "{html}");
        assert!(html.contains("<tr><th>rank-1 identification rate</th><td class=\"n\">0.6667</td><td class=\"n\">0.6667</td><td class=\"n\">1.0000</td></tr>"), "{html}");
        assert!(html.contains("CMC &lt;all&gt;"));
        for id in ["face-hit", "face-miss", "face-false", "body-hit", "body-miss", "fused-hit"] {
            assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
        }
        // With a limit of 1, each gallery shows one card with its thumbnail.
        assert_eq!(html.matches("<img class=\"thumb\"").count(), 1 + 1 + 1 + 1 + 1 + 1);
        assert!(html.contains("the first 1 are shown"));
        assert!(html.contains("No face found · face (1)"), "{html}");
        assert!(html.contains("person in a.mp4"), "fused probes are persons");
    }

    #[test]
    fn bad_truth_is_refused_with_the_line() {
        let j = job();
        let two = parse_truth("media,subject\nclips/a.mp4,amy\n/clips/a.mp4,bea\n", "t.csv").unwrap();
        let e = evaluate_search(&j, &two, "t.csv", &SearchEvalOptions::default()).unwrap_err();
        assert!(e.to_string().contains("lines 2 and 3 both name media `/clips/a.mp4`"), "{e}");
        let none = parse_truth("media,subject\nq.mp4,amy\n", "t.csv").unwrap();
        let e = evaluate_search(&j, &none, "t.csv", &SearchEvalOptions::default()).unwrap_err();
        assert!(e.to_string().contains("none of the 1 media"), "{e}");
        let opts = SearchEvalOptions { fpir: vec![1.5], max_rank: 5 };
        assert!(evaluate_search(&j, &truth(), "t.csv", &opts).is_err());
    }
}
