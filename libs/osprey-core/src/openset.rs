//! The open-set (1:N with rejection) decision and its operating point.
//!
//! Definitions follow NIST FRTE 1:N: a search *alarms* when its best candidate
//! scores at or above the threshold. FPIR is the share of non-mated searches
//! (the probe's subject is not enrolled) that alarm.

/// The outcome of an open-set search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpenSetDecision {
    /// The best subject scored at or above the threshold.
    Match,
    /// Nobody in the gallery scored high enough: the probe is not enrolled.
    Unknown,
}

impl OpenSetDecision {
    /// `match` or `unknown`, as stored in the `decision` column.
    pub fn as_str(self) -> &'static str {
        match self {
            OpenSetDecision::Match => "match",
            OpenSetDecision::Unknown => "unknown",
        }
    }
}

/// `match` when `best_score >= threshold`, else `unknown`. A search with no
/// candidates at all (`None`) is `unknown`.
pub fn decide(best_score: Option<f32>, threshold: f32) -> OpenSetDecision {
    match best_score {
        Some(s) if s >= threshold => OpenSetDecision::Match,
        _ => OpenSetDecision::Unknown,
    }
}

/// FPIR at `threshold`: the share of non-mated searches whose best score is
/// at or above it. `nonmated_best` holds each non-mated search's top score.
pub fn fpir_at_threshold(nonmated_best: &[f32], threshold: f32) -> f64 {
    if nonmated_best.is_empty() {
        return 0.0;
    }
    let alarms = nonmated_best.iter().filter(|s| **s >= threshold).count();
    alarms as f64 / nonmated_best.len() as f64
}

/// The lowest threshold whose FPIR on `nonmated_best` does not exceed
/// `target_fpir`: at most `floor(target × n)` non-mated searches alarm.
///
/// Returns `None` when there are no non-mated scores to calibrate from. The
/// result is the smallest `f32` strictly above the first score that must be
/// rejected, so ties at that score are rejected too (FPIR can only come out
/// below the target, never above).
pub fn threshold_for_fpir(nonmated_best: &[f32], target_fpir: f64) -> Option<f32> {
    let mut scores: Vec<f32> = nonmated_best.iter().copied().filter(|s| s.is_finite()).collect();
    if scores.is_empty() {
        return None;
    }
    scores.sort_by(|a, b| b.total_cmp(a));
    let allowed = (target_fpir.clamp(0.0, 1.0) * scores.len() as f64 + 1e-9).floor() as usize;
    if allowed >= scores.len() {
        // Every non-mated search may alarm: accept everything we have seen.
        return Some(*scores.last().unwrap());
    }
    Some(scores[allowed].next_up())
}

/// A model's own operating threshold (cosine similarity of unit
/// embeddings), used when a gallery is too small to calibrate from its own
/// non-mated scores.
///
/// `dlib-resnet-v1`: dlib's rule is a Euclidean distance below 0.6 between
/// raw descriptors, whose norms are 1.31–1.60 (median 1.44); at the median
/// norm that is cosine 0.905. 0.91 gave FMR 0.17 % and FNMR 0.6 % over 1,400
/// pairs of the labelled faces in dlib's `johns` and face-api.js's examples.
///
/// `dinov2-vits14-imgfocus-0.1.1` (the out-of-the-box body appearance
/// model): its cosines run high for everyone; between different people in
/// the people test's footage (vtest.avi's plaza, a Market-1501 camera
/// frame) they reached 0.93, while a person against a crop of themselves in
/// the same scene scores above 0.95. 0.93 keeps those strangers apart; it is
/// a same-day, same-clothing rule, not a re-identification threshold.
pub fn model_operating_threshold(model: &str) -> Option<f32> {
    match model {
        "dlib-resnet-v1" => Some(0.91),
        "dinov2-vits14-imgfocus-0.1.1" => Some(0.93),
        _ => None,
    }
}

/// Non-mated scores needed per unit of 1/FPIR before a calibrated threshold
/// is trusted on its own: the quantile rests on at least this many alarms.
pub const MIN_ALARMS_FOR_CALIBRATION: f64 = 10.0;

/// The threshold for `target_fpir` from `nonmated_best`, raised to the
/// model's own operating threshold when there are too few scores to place
/// the quantile (fewer than 10/FPIR). Returns the threshold and whether the
/// model's threshold was used.
pub fn operating_threshold(model: &str, nonmated_best: &[f32], target_fpir: f64) -> Option<(f32, bool)> {
    let calibrated = threshold_for_fpir(nonmated_best, target_fpir);
    let enough = nonmated_best.len() as f64 * target_fpir.max(1e-12) >= MIN_ALARMS_FOR_CALIBRATION;
    match (calibrated, model_operating_threshold(model)) {
        (Some(t), Some(floor)) if !enough && floor > t => Some((floor, true)),
        (None, Some(floor)) => Some((floor, true)),
        (t, _) => t.map(|t| (t, false)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn small_galleries_fall_back_to_the_models_threshold() {
        let few = [0.5f32, 0.6, 0.85];
        assert_eq!(operating_threshold("dlib-resnet-v1", &few, 0.01), Some((0.91, true)));
        assert_eq!(operating_threshold("unknown-model", &few, 0.01).map(|t| t.1), Some(false));
        // Enough scores: the calibration stands even below the model's threshold.
        let many: Vec<f32> = (0..2000).map(|i| i as f32 / 2500.0).collect();
        let (t, floor) = operating_threshold("dlib-resnet-v1", &many, 0.01).unwrap();
        assert!(!floor && t < 0.91);
    }

    use super::*;

    #[test]
    fn decision_is_inclusive_at_threshold() {
        assert_eq!(decide(Some(0.5), 0.5), OpenSetDecision::Match);
        assert_eq!(decide(Some(0.4999), 0.5), OpenSetDecision::Unknown);
        assert_eq!(decide(None, -1.0), OpenSetDecision::Unknown);
    }

    #[test]
    fn calibrated_threshold_meets_target_fpir() {
        let scores: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        for target in [0.0, 0.001, 0.01, 0.1, 0.5] {
            let t = threshold_for_fpir(&scores, target).unwrap();
            let fpir = fpir_at_threshold(&scores, t);
            assert!(fpir <= target + 1e-12, "target {target}: fpir {fpir} at {t}");
            // One step lower would exceed the target (the threshold is tight).
            let lower = fpir_at_threshold(&scores, t.next_down());
            assert!(lower > target || t <= 0.0, "target {target}: not tight");
        }
        assert_eq!(fpir_at_threshold(&scores, threshold_for_fpir(&scores, 0.01).unwrap()), 0.01);
    }

    #[test]
    fn ties_are_rejected_together() {
        let scores = [0.9, 0.9, 0.9, 0.1];
        let t = threshold_for_fpir(&scores, 0.25).unwrap();
        assert_eq!(fpir_at_threshold(&scores, t), 0.0);
        assert!(threshold_for_fpir(&[], 0.1).is_none());
    }
}
