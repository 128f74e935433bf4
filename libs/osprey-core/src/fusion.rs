//! Putting the modalities of one person on one scale and deciding from all
//! of them: per-index score calibration to log-likelihood ratios, and the
//! fusion rules over a person's face, body and gait scores.
//!
//! # Calibration
//!
//! Raw scores of different models mean different things (a cosine of 0.9 is
//! a stranger for the body appearance model and a near-certain match for
//! dlib). Each gallery index therefore maps its raw score `s` to a
//! log-likelihood ratio `llr(s) = ln p(s | mated) / p(s | non-mated)` with a
//! logistic model `llr(s) = slope · (s − centre)`, learnt from the gallery
//! itself: leave-one-out searches of sampled enrolled templates give mated
//! scores (the best *other* template of the same subject) and non-mated
//! scores (the best template of another subject), as the FPIR threshold
//! calibration already samples. The fit weights the two classes equally, so
//! the logit is the likelihood ratio and not the gallery's mix of
//! subjects with one or many templates. It is monotone in the raw score, so
//! a single modality ranks and decides exactly as before.
//!
//! Too few scores of either class ([`MIN_CALIBRATION_SCORES`]; a gallery of
//! one template per subject has no mated scores) leave the fit unreliable.
//! Then the index falls back to an anchored mapping: zero at its operating
//! threshold (a match at the threshold is a coin toss between the classes)
//! and [`FALLBACK_SLOPE`] per unit of score. Where a gallery has no
//! threshold at all there is no calibration and the modality cannot be
//! fused.
//!
//! # Fusion
//!
//! A probe is one person: the templates of one person track (its face,
//! body and gait, linked by `person_track_id`). Each modality present gives
//! candidates with raw scores; the candidates are the union of the
//! per-modality top-k, and a candidate missing from a modality's list takes
//! that list's lowest score (an upper bound on what it would score there).
//! Modalities the probe does not have contribute nothing, not a zero score.
//! [`FusionRule::Quality`] averages the calibrated scores weighted by each
//! template's quality (a sharp frontal face outweighs a blurred body crop; a
//! quality of 0 counts for nothing); [`FusionRule::Max`] takes the strongest
//! calibrated score of a modality with any quality. Both are in LLR units,
//! so the fused threshold is an LLR too.

use crate::{Error, Modality, Result};

/// Scores of each class needed before a logistic fit is trusted.
pub const MIN_CALIBRATION_SCORES: usize = 20;
/// LLR per unit of raw score of the anchored fallback: a cosine 0.1 above
/// the threshold is e² ≈ 7.4 times likelier mated than not.
pub const FALLBACK_SLOPE: f32 = 20.0;
/// The largest slope a fit may take (perfectly separated classes would
/// otherwise drive it to infinity).
const MAX_SLOPE: f64 = 1000.0;

/// How an index's raw scores map to log-likelihood ratios.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoreCalibration {
    /// LLR per unit of raw score.
    pub slope: f32,
    /// Raw score where the LLR is 0.
    pub centre: f32,
    /// `logistic` (fitted) or `anchored` (the fallback at the threshold).
    pub method: String,
    /// Mated scores the fit saw.
    pub mated: usize,
    /// Non-mated scores the fit saw.
    pub nonmated: usize,
}

impl ScoreCalibration {
    /// The log-likelihood ratio of a raw score.
    pub fn llr(&self, score: f32) -> f32 {
        self.slope * (score - self.centre)
    }

    /// The anchored fallback at `threshold` (see the module documentation).
    pub fn anchored(threshold: f32, mated: usize, nonmated: usize) -> ScoreCalibration {
        ScoreCalibration { slope: FALLBACK_SLOPE, centre: threshold, method: "anchored".into(), mated, nonmated }
    }

    /// Fits the logistic mapping to mated and non-mated raw scores (classes
    /// weighted equally), or the anchored fallback at `threshold` when
    /// either class has fewer than [`MIN_CALIBRATION_SCORES`] or the fit
    /// does not rise with the score. `None` with too few scores and no
    /// threshold.
    pub fn fit(mated: &[f32], nonmated: &[f32], threshold: Option<f32>) -> Option<ScoreCalibration> {
        let fallback = || threshold.map(|t| ScoreCalibration::anchored(t, mated.len(), nonmated.len()));
        if mated.len() < MIN_CALIBRATION_SCORES || nonmated.len() < MIN_CALIBRATION_SCORES {
            return fallback();
        }
        match fit_logistic(mated, nonmated) {
            Some((slope, intercept)) if slope > 0.0 => Some(ScoreCalibration {
                slope: slope as f32,
                centre: (-intercept / slope) as f32,
                method: "logistic".into(),
                mated: mated.len(),
                nonmated: nonmated.len(),
            }),
            _ => fallback(),
        }
    }
}

/// Weighted logistic regression of the class (mated = 1) on the score,
/// each class weighing half: Newton's method on (slope, intercept), scores
/// centred for conditioning. `None` when it does not converge.
fn fit_logistic(mated: &[f32], nonmated: &[f32]) -> Option<(f64, f64)> {
    let mean = mated.iter().chain(nonmated).map(|&s| s as f64).sum::<f64>() / (mated.len() + nonmated.len()) as f64;
    let (wm, wn) = (0.5 / mated.len() as f64, 0.5 / nonmated.len() as f64);
    let samples = || {
        mated
            .iter()
            .map(move |&s| (s as f64 - mean, 1.0, wm))
            .chain(nonmated.iter().map(move |&s| (s as f64 - mean, 0.0, wn)))
    };
    // Parameters of logit = a·x + b on centred x.
    let (mut a, mut b) = (0.0f64, 0.0f64);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (x, y, w) in samples() {
            let p = 1.0 / (1.0 + (-(a * x + b)).exp());
            let r = w * (p - y);
            ga += r * x;
            gb += r;
            let v = w * p * (1.0 - p);
            haa += v * x * x;
            hab += v * x;
            hbb += v;
        }
        // A small ridge keeps the step finite when the classes separate.
        let (haa, hbb) = (haa + 1e-9, hbb + 1e-9);
        let det = haa * hbb - hab * hab;
        if !det.is_finite() || det <= 0.0 {
            return None;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da;
        b -= db;
        if a.abs() > MAX_SLOPE {
            a = a.signum() * MAX_SLOPE;
        }
        if da.abs() < 1e-9 && db.abs() < 1e-9 {
            break;
        }
    }
    (a.is_finite() && b.is_finite()).then_some((a, b - a * mean))
}

/// How a person's modality scores become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FusionRule {
    /// Quality-weighted mean of the calibrated scores.
    Quality,
    /// The largest calibrated score among modalities with quality > 0.
    Max,
}

impl FusionRule {
    /// Every rule's name, as `--fusion` takes it.
    pub const NAMES: [&'static str; 2] = ["quality", "max"];

    /// A `--fusion` value: a rule, or `none` (per-modality results only).
    pub fn parse_option(s: &str) -> Result<Option<FusionRule>> {
        match s {
            "none" => Ok(None),
            rule => rule.parse().map(Some),
        }
    }

    /// The rule's name.
    pub fn as_str(self) -> &'static str {
        match self {
            FusionRule::Quality => "quality",
            FusionRule::Max => "max",
        }
    }
}

impl std::str::FromStr for FusionRule {
    type Err = Error;

    fn from_str(s: &str) -> Result<FusionRule> {
        match s {
            "quality" => Ok(FusionRule::Quality),
            "max" => Ok(FusionRule::Max),
            other => Err(Error::invalid(format!("unknown fusion rule `{other}`; available: quality, max, none"))),
        }
    }
}

/// One modality of a probe person: its template's quality, the index's
/// calibration, and its top-k candidates (subject, raw score), best first.
#[derive(Debug, Clone)]
pub struct ModalityEvidence {
    /// Which modality.
    pub modality: Modality,
    /// The probe template's quality, 0..1.
    pub quality: f32,
    /// The searched index's calibration.
    pub calibration: ScoreCalibration,
    /// Top-k subjects and raw scores, best first.
    pub candidates: Vec<(String, f32)>,
}

/// What one modality said about one candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct ModalityScore {
    /// Which modality.
    pub modality: Modality,
    /// The raw score (the list's lowest when the candidate was not in it).
    pub score: f32,
    /// Whether the candidate was in this modality's top-k.
    pub ranked: bool,
    /// The calibrated score.
    pub llr: f32,
    /// The weight it had in the fused score (0 for an unused modality).
    pub weight: f32,
}

/// A candidate subject of a probe person, with its fused score (LLR).
#[derive(Debug, Clone, PartialEq)]
pub struct FusedCandidate {
    /// The candidate subject.
    pub subject_id: String,
    /// The fused score, an LLR.
    pub score: f32,
    /// What each modality of the probe said.
    pub modalities: Vec<ModalityScore>,
}

/// The candidates of a probe person, best fused score first (ties by
/// subject id), at most `top_k`. Modalities without candidates give no
/// evidence; an empty input gives no candidates.
pub fn fuse(rule: FusionRule, evidence: &[ModalityEvidence], top_k: usize) -> Vec<FusedCandidate> {
    let present: Vec<&ModalityEvidence> = evidence.iter().filter(|e| !e.candidates.is_empty()).collect();
    let mut subjects: Vec<&str> = present.iter().flat_map(|e| e.candidates.iter().map(|(s, _)| s.as_str())).collect();
    subjects.sort_unstable();
    subjects.dedup();
    let mut fused: Vec<FusedCandidate> = subjects
        .into_iter()
        .map(|subject| {
            let mut parts: Vec<ModalityScore> = present
                .iter()
                .map(|e| {
                    let found = e.candidates.iter().find(|(s, _)| s == subject).map(|(_, v)| *v);
                    let floor = e.candidates.iter().map(|(_, v)| *v).fold(f32::INFINITY, f32::min);
                    let score = found.unwrap_or(floor);
                    ModalityScore {
                        modality: e.modality,
                        score,
                        ranked: found.is_some(),
                        llr: e.calibration.llr(score),
                        weight: e.quality.clamp(0.0, 1.0),
                    }
                })
                .collect();
            let score = match rule {
                FusionRule::Quality => {
                    let total: f32 = parts.iter().map(|p| p.weight).sum();
                    if total > 0.0 {
                        parts.iter().map(|p| p.weight * p.llr).sum::<f32>() / total
                    } else {
                        // No modality is trusted at all: an unweighted mean.
                        parts.iter().map(|p| p.llr).sum::<f32>() / parts.len() as f32
                    }
                }
                FusionRule::Max => {
                    let best = parts
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.weight > 0.0)
                        .max_by(|a, b| a.1.llr.total_cmp(&b.1.llr))
                        .map(|(i, _)| i);
                    for (i, p) in parts.iter_mut().enumerate() {
                        p.weight = if Some(i) == best { 1.0 } else { 0.0 };
                    }
                    best.map(|i| parts[i].llr).unwrap_or(f32::NEG_INFINITY)
                }
            };
            if rule == FusionRule::Quality {
                let total: f32 = parts.iter().map(|p| p.weight).sum();
                for p in &mut parts {
                    p.weight = if total > 0.0 { p.weight / total } else { 1.0 / present.len() as f32 };
                }
            }
            FusedCandidate { subject_id: subject.to_string(), score, modalities: parts }
        })
        .collect();
    fused.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.subject_id.cmp(&b.subject_id)));
    fused.truncate(top_k.max(1));
    fused
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-normal scores.
    fn normal(n: usize, mean: f32, sd: f32, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let mut uniform = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64).max(1e-12)
        };
        (0..n)
            .map(|_| {
                let (u, v) = (uniform(), uniform());
                mean + sd * ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
            })
            .collect()
    }

    #[test]
    fn the_fit_recovers_the_likelihood_ratio_of_two_gaussians() {
        // Equal spreads: the true LLR is linear, zero half-way between the
        // means, slope (μm − μn)/σ² = 0.4 / 0.01 = 40.
        let mated = normal(4000, 0.7, 0.1, 1);
        let nonmated = normal(20000, 0.3, 0.1, 2);
        let c = ScoreCalibration::fit(&mated, &nonmated, None).unwrap();
        assert_eq!(c.method, "logistic");
        assert!((c.centre - 0.5).abs() < 0.01, "{c:?}");
        assert!((c.slope - 40.0).abs() < 3.0, "{c:?}");
        // The class sizes do not move it (equal class weights).
        let c2 = ScoreCalibration::fit(&mated[..500], &nonmated, None).unwrap();
        assert!((c2.centre - 0.5).abs() < 0.02, "{c2:?}");
    }

    #[test]
    fn too_few_scores_fall_back_to_the_threshold() {
        let c = ScoreCalibration::fit(&[0.9; 3], &normal(100, 0.3, 0.1, 3), Some(0.6)).unwrap();
        assert_eq!((c.method.as_str(), c.centre, c.slope), ("anchored", 0.6, FALLBACK_SLOPE));
        assert!(ScoreCalibration::fit(&[], &[], None).is_none());
        // Separated classes: a steep but finite fit.
        let c = ScoreCalibration::fit(&[0.9; 30], &[0.1; 30], None).unwrap();
        assert!(c.slope.is_finite() && c.slope > 0.0 && (c.centre - 0.5).abs() < 0.05, "{c:?}");
    }

    fn evidence(m: Modality, q: f32, centre: f32, cands: &[(&str, f32)]) -> ModalityEvidence {
        ModalityEvidence {
            modality: m,
            quality: q,
            calibration: ScoreCalibration { slope: 10.0, centre, method: "logistic".into(), mated: 100, nonmated: 100 },
            candidates: cands.iter().map(|(s, v)| (s.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn a_weak_face_is_outweighed_by_a_good_body() {
        // The face (poor quality) slightly prefers bob; the body (good
        // quality) clearly says alice.
        let face = evidence(Modality::Face, 0.1, 0.5, &[("bob", 0.55), ("alice", 0.5)]);
        let body = evidence(Modality::Body, 0.9, 0.8, &[("alice", 0.95), ("carol", 0.7)]);
        let fused = fuse(FusionRule::Quality, &[face.clone(), body.clone()], 5);
        assert_eq!(fused[0].subject_id, "alice");
        assert!(fused[0].score > 0.0);
        let weights: Vec<f32> = fused[0].modalities.iter().map(|m| m.weight).collect();
        assert!((weights[0] - 0.1).abs() < 1e-6 && (weights[1] - 0.9).abs() < 1e-6, "{weights:?}");
        // bob is not in the body list: it takes that list's lowest score.
        let bob = fused.iter().find(|c| c.subject_id == "bob").unwrap();
        assert!(!bob.modalities[1].ranked && bob.modalities[1].score == 0.7);
        // Face alone would have said bob.
        assert_eq!(fuse(FusionRule::Quality, &[face], 5)[0].subject_id, "bob");
        // Max: the strongest calibrated modality.
        let max = fuse(FusionRule::Max, &[evidence(Modality::Face, 0.1, 0.5, &[("bob", 0.9), ("dave", 0.6)]), body], 1);
        assert_eq!(max[0].subject_id, "bob");
        assert!((max[0].score - 4.0).abs() < 1e-5, "{max:?}");
    }

    #[test]
    fn missing_modalities_contribute_nothing() {
        let body = evidence(Modality::Body, 0.5, 0.8, &[("alice", 0.9)]);
        let gait = evidence(Modality::Gait, 0.7, 0.5, &[]);
        let fused = fuse(FusionRule::Quality, &[body.clone(), gait], 5);
        assert_eq!(fused.len(), 1);
        assert_eq!(fused[0].modalities.len(), 1);
        assert!((fused[0].score - body.calibration.llr(0.9)).abs() < 1e-6);
        assert!(fuse(FusionRule::Quality, &[], 5).is_empty());
        assert!("best".parse::<FusionRule>().is_err());
    }
}
