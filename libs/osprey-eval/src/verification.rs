//! Verification (1:1) metrics from genuine (mated) and impostor (non-mated)
//! comparison scores.
//!
//! At threshold `t` a comparison is accepted when `score >= t`, so
//! FMR(t) = #{impostor ≥ t} / #impostor and FNMR(t) = #{genuine < t} / #genuine.
//! TAR is 1 − FNMR and FAR is FMR: the names differ by tradition, not meaning.

use osprey_core::{Error, Result};
use serde::Serialize;

/// A similarity score type the verification metrics accept: `f32` or `f64`.
///
/// Thresholds come back in the same type, so a threshold computed from `f32`
/// scores can be used on `f32` scores without a rounding step that would move
/// the operating point.
pub trait Score: Copy + PartialOrd + Into<f64> + sealed::Sealed {
    /// The smallest value of this type strictly greater than `self`.
    fn next_up(self) -> Self;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

impl Score for f32 {
    fn next_up(self) -> Self {
        f32::next_up(self)
    }
}

impl Score for f64 {
    fn next_up(self) -> Self {
        f64::next_up(self)
    }
}

/// One point of a DET (detection error trade-off) curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DetPoint<S = f32> {
    /// The decision threshold: comparisons scoring at or above it are accepted.
    pub threshold: S,
    /// False match rate: the share of impostor scores `>= threshold`.
    pub fmr: f64,
    /// False non-match rate: the share of genuine scores `< threshold`.
    pub fnmr: f64,
}

/// Above this many distinct scores [`det_curve`] thins its output.
pub(crate) const DET_FULL_RESOLUTION: usize = 20_000;

/// Width of the logarithmic buckets used to thin a DET curve: 1% relative.
const DET_BUCKET: f64 = 0.009_950_330_853_168_083; // ln(1.01)

/// The DET curve: FMR and FNMR at every distinct score used as the threshold,
/// lowest threshold first (so FMR falls and FNMR rises along the curve).
///
/// Up to 20 000 distinct scores every point is returned. Beyond that the
/// curve is thinned: a point is kept only when FMR or FNMR enters a new
/// 1%-wide logarithmic bucket (the last point is always kept). The first
/// hundred errors of each kind, where DET plots look, keep full resolution,
/// and the curve stays at a few thousand points even for 10⁹ scores. Every
/// returned point is an exact point of the full curve.
pub fn det_curve<S: Score>(genuine: &[S], impostor: &[S]) -> Result<Vec<DetPoint<S>>> {
    let (genuine, impostor) = (sorted(genuine, "genuine")?, sorted(impostor, "impostor")?);
    let curve = error_rates(&genuine, &impostor);
    Ok(if curve.len() <= DET_FULL_RESOLUTION { curve } else { thin(curve) })
}

/// The equal error rate and the threshold it is reached at.
///
/// Scores are discrete, so FMR and FNMR rarely meet exactly. Following the
/// FVC2000 definition (Maio et al., IEEE TPAMI 24(3), 2002), also used by
/// `pyeer`, the EER is read at whichever of the two thresholds bracketing the
/// crossing has the lower FMR + FNMR, as the mean of FMR and FNMR there. The
/// "reject everything" point just above the top score is a candidate too, so
/// the curves always cross.
pub fn eer<S: Score>(genuine: &[S], impostor: &[S]) -> Result<(f64, S)> {
    let (genuine, impostor) = (sorted(genuine, "genuine")?, sorted(impostor, "impostor")?);
    let mut curve = error_rates(&genuine, &impostor);
    let (g, i) = (genuine[genuine.len() - 1], impostor[impostor.len() - 1]);
    let top = if g > i { g } else { i };
    curve.push(DetPoint { threshold: top.next_up(), fmr: 0.0, fnmr: 1.0 });

    let after = curve.iter().position(|p| p.fmr <= p.fnmr).expect("the last point has FMR 0");
    let before = if after > 0 && curve[after].fmr != curve[after].fnmr { after - 1 } else { after };
    let (a, b) = (curve[before], curve[after]);
    let p = if a.fmr + a.fnmr <= b.fmr + b.fnmr { a } else { b };
    Ok(((p.fmr + p.fnmr) / 2.0, p.threshold))
}

/// The true accept rate at the lowest threshold whose FAR does not exceed
/// `far`, and that threshold.
///
/// At most `floor(far × #impostor)` impostors may be accepted. The threshold
/// is the smallest value strictly above the highest impostor score that must
/// be rejected, so impostors tied with it are rejected too: the same rule as
/// [`osprey_core::threshold_for_fpir`], generic over the score type. With
/// `far >= 1` every comparison is accepted.
pub fn tar_at_far<S: Score>(genuine: &[S], impostor: &[S], far: f64) -> Result<(f64, S)> {
    check_rate(far, "FAR")?;
    let (genuine, impostor) = (sorted(genuine, "genuine")?, sorted(impostor, "impostor")?);
    let n = impostor.len();
    // The epsilon keeps e.g. 0.29 × 100 (28.999…96 in f64) from flooring to 28.
    let allowed = (far * n as f64 + 1e-9).floor() as usize;
    let threshold = if allowed >= n {
        if genuine[0] < impostor[0] { genuine[0] } else { impostor[0] }
    } else {
        impostor[n - 1 - allowed].next_up()
    };
    let accepted = genuine.len() - genuine.partition_point(|s| *s < threshold);
    Ok((accepted as f64 / genuine.len() as f64, threshold))
}

/// Verification accuracy by k-fold cross-validation, as in the LFW protocol:
/// `(mean, standard deviation)` of the held-out folds' accuracies.
///
/// `pairs` are `(score, same_subject)` in protocol order; fold `k` is the
/// `k`-th of `folds` consecutive chunks (equal when `folds` divides the
/// length, as LFW's 6 000 pairs into 10 folds of 600). For each fold the
/// threshold that classifies the other folds most accurately is applied to
/// it. Candidate thresholds lie midway between consecutive distinct training
/// scores; ties in training accuracy go to the higher threshold (fewer false
/// matches). The deviation is the population one (divide by `folds`), as
/// LFW results are customarily reported.
pub fn verification_accuracy_kfold<S: Score>(pairs: &[(S, bool)], folds: usize) -> Result<(f64, f64)> {
    if folds < 2 {
        return Err(Error::invalid(format!("k-fold validation needs at least 2 folds, got {folds}")));
    }
    if pairs.len() < folds {
        return Err(Error::invalid(format!("{} pairs cannot be split into {folds} folds", pairs.len())));
    }
    let pairs: Vec<(f64, bool)> = pairs.iter().map(|&(s, same)| (s.into(), same)).collect();
    if pairs.iter().any(|p| p.0.is_nan()) {
        return Err(Error::invalid("verification pairs contain a NaN score"));
    }
    let bound = |k: usize| k * pairs.len() / folds;
    let accuracies: Vec<f64> = (0..folds)
        .map(|k| {
            let (lo, hi) = (bound(k), bound(k + 1));
            let t = best_threshold(pairs[..lo].iter().chain(&pairs[hi..]).copied().collect());
            let test = &pairs[lo..hi];
            test.iter().filter(|&&(s, same)| (s >= t) == same).count() as f64 / test.len() as f64
        })
        .collect();
    let mean = accuracies.iter().sum::<f64>() / folds as f64;
    let var = accuracies.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / folds as f64;
    Ok((mean, var.sqrt()))
}

/// An order of `same` (pair labels) that interleaves the two classes evenly,
/// so that every run of consecutive pairs holds them in about their overall
/// proportion: the `j`-th of `n` pairs of a class is placed at `(j + ½) / n`
/// along the list (same-subject pairs first on ties), and the order within
/// each class is kept.
///
/// [`verification_accuracy_kfold`] folds consecutive chunks, which is the
/// protocol for a list built in folds (LFW's `pairs.txt`); a list sorted by
/// label (all matches first) would leave some folds with one class only.
/// Reordering it by this function first gives stratified folds, each within
/// one pair of the class proportions, deterministically.
pub fn stratified_order(same: &[bool]) -> Vec<usize> {
    let (pos, neg): (Vec<usize>, Vec<usize>) = (0..same.len()).partition(|&i| same[i]);
    let (np, nn) = (pos.len() as u128, neg.len() as u128);
    let mut order = Vec::with_capacity(same.len());
    let (mut p, mut n) = (0, 0);
    while p < pos.len() || n < neg.len() {
        // Compare (2p + 1) / 2np with (2n + 1) / 2nn exactly, in integers.
        let take_pos = n == neg.len() || (p < pos.len() && (2 * p as u128 + 1) * nn <= (2 * n as u128 + 1) * np);
        if take_pos {
            order.push(pos[p]);
            p += 1;
        } else {
            order.push(neg[n]);
            n += 1;
        }
    }
    order
}

/// The threshold that classifies `pairs` most accurately (see
/// [`verification_accuracy_kfold`] for the candidates and tie-breaking).
fn best_threshold(mut pairs: Vec<(f64, bool)>) -> f64 {
    pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    // Below every score everything is accepted: exactly the mated pairs are right.
    let mut correct = pairs.iter().filter(|p| p.1).count();
    let (mut best, mut best_t) = (correct, pairs[0].0);
    let mut i = 0;
    while i < pairs.len() {
        let s = pairs[i].0;
        // Raising the threshold past `s` rejects every pair scored `s`.
        while i < pairs.len() && pairs[i].0 == s {
            if pairs[i].1 {
                correct -= 1
            } else {
                correct += 1
            }
            i += 1;
        }
        if correct >= best {
            best = correct;
            best_t = match pairs.get(i) {
                Some(&(next, _)) => midpoint(s, next),
                None => s.next_up(),
            };
        }
    }
    best_t
}

/// A value in `(a, b]` as close to their midpoint as `f64` allows (`b` when
/// they are adjacent floats, so `a` is still rejected and `b` accepted).
fn midpoint(a: f64, b: f64) -> f64 {
    let m = a / 2.0 + b / 2.0;
    if m > a && m <= b { m } else { b }
}

/// FMR and FNMR at each distinct score of the two ascending lists.
fn error_rates<S: Score>(genuine: &[S], impostor: &[S]) -> Vec<DetPoint<S>> {
    let (ng, ni) = (genuine.len() as f64, impostor.len() as f64);
    let mut curve = Vec::with_capacity(genuine.len() + impostor.len());
    let (mut g, mut i) = (0, 0);
    loop {
        let t = match (genuine.get(g), impostor.get(i)) {
            (Some(&a), Some(&b)) => {
                if a < b {
                    a
                } else {
                    b
                }
            }
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        // `g` genuine scores lie below `t`; impostors from `i` on are at or above it.
        curve.push(DetPoint { threshold: t, fmr: (impostor.len() - i) as f64 / ni, fnmr: g as f64 / ng });
        while genuine.get(g) == Some(&t) {
            g += 1;
        }
        while impostor.get(i) == Some(&t) {
            i += 1;
        }
    }
    curve
}

/// Keeps the points where FMR or FNMR enters a new logarithmic bucket.
pub(crate) fn thin<S: Score>(curve: Vec<DetPoint<S>>) -> Vec<DetPoint<S>> {
    let bucket = |r: f64| if r > 0.0 { (r.ln() / DET_BUCKET).floor() as i64 } else { i64::MIN };
    let key = |p: &DetPoint<S>| (bucket(p.fmr), bucket(p.fnmr));
    let last = *curve.last().expect("thinning only long curves");
    let mut kept: Vec<DetPoint<S>> = Vec::new();
    for p in curve {
        if kept.last().is_none_or(|k| key(k) != key(&p)) {
            kept.push(p);
        }
    }
    if kept.last() != Some(&last) {
        kept.push(last);
    }
    kept
}

/// Copies and sorts `scores` ascending, rejecting empty sets and NaN.
fn sorted<S: Score>(scores: &[S], what: &str) -> Result<Vec<S>> {
    if scores.is_empty() {
        return Err(Error::invalid(format!("no {what} scores")));
    }
    if scores.iter().any(|&s| s.into().is_nan()) {
        return Err(Error::invalid(format!("{what} scores contain NaN")));
    }
    let mut v = scores.to_vec();
    v.sort_unstable_by(|a, b| a.partial_cmp(b).expect("NaN was rejected"));
    Ok(v)
}

pub(crate) fn check_rate(rate: f64, what: &str) -> Result<()> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(Error::invalid(format!("target {what} must lie in [0, 1], got {rate}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_core::ErrorKind;

    fn rates(curve: &[DetPoint<f64>]) -> Vec<(f64, f64, f64)> {
        curve.iter().map(|p| (p.threshold, p.fmr, p.fnmr)).collect()
    }

    #[test]
    fn det_curve_by_hand_with_ties() {
        let genuine = [0.5, 0.7, 0.7, 0.9];
        let impostor = [0.1, 0.5, 0.6, 0.7];
        let curve = det_curve(&genuine, &impostor).unwrap();
        assert_eq!(
            rates(&curve),
            [
                (0.1, 1.0, 0.0),
                // Both a genuine and an impostor score 0.5: both are accepted at 0.5.
                (0.5, 0.75, 0.0),
                (0.6, 0.5, 0.25),
                (0.7, 0.25, 0.25),
                (0.9, 0.0, 0.75),
            ]
        );
    }

    #[test]
    fn eer_picks_the_bracketing_point_with_lower_total_error() {
        // (FMR, FNMR) by threshold: 0.1 (1, 0), 0.2 (2/3, 0), 0.4 (1/3, 0),
        // 0.5 (1/3, 1/3): they meet exactly at 0.5.
        assert_eq!(eer(&[0.4, 0.8, 0.9], &[0.1, 0.2, 0.5]).unwrap(), (1.0 / 3.0, 0.5));

        // 0.1 (1, 0), 0.2 (1/2, 0), 0.3 (1/2, 1/4), 0.6 (0, 1/4): they cross
        // between 0.3 (total error 3/4) and 0.6 (total 1/4), so 0.6 it is.
        assert_eq!(eer(&[0.2, 0.6, 0.7, 0.8], &[0.1, 0.3]).unwrap(), (0.125, 0.6));
    }

    #[test]
    fn eer_of_perfect_separation_is_zero_and_of_identical_scores_one_half() {
        let (e, t) = eer(&[0.8f32, 0.9], &[0.1, 0.2]).unwrap();
        assert_eq!(e, 0.0);
        assert!(t > 0.2 && t <= 0.8, "threshold {t} separates the classes");

        // One score for everything: accept all (FMR 1) or reject all (FNMR 1).
        let (e, t) = eer(&[0.5f32; 3], &[0.5; 4]).unwrap();
        assert_eq!(e, 0.5);
        assert_eq!(t, 0.5);
    }

    #[test]
    fn tar_at_far_is_tight_and_rejects_impostor_ties() {
        let impostor: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
        let genuine = [0.975, 0.985, 0.5, 0.995];
        // 1% of 100 impostors: only 0.99 may be accepted.
        let (tar, t) = tar_at_far(&genuine, &impostor, 0.01).unwrap();
        assert_eq!(t, 0.98f64.next_up());
        assert_eq!(tar, 0.5);

        // Tied impostors at the top can only be rejected together.
        let (tar, t) = tar_at_far(&[0.9f32, 0.95, 1.0], &[0.1, 0.95, 0.95], 0.5).unwrap();
        assert_eq!(t, 0.95f32.next_up());
        assert!((tar - 1.0 / 3.0).abs() < 1e-15);

        assert_eq!(tar_at_far(&[0.0, 2.0], &[1.0], 1.0).unwrap(), (1.0, 0.0));
        assert_eq!(tar_at_far(&[0.0, 2.0], &[1.0], 0.0).unwrap(), (0.5, 1.0f64.next_up()));
    }

    #[test]
    fn tar_at_far_matches_the_core_fpir_calibration() {
        let mut x = 12345u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 1000) as f32 / 1000.0
        };
        let impostor: Vec<f32> = (0..777).map(|_| next()).collect();
        let genuine: Vec<f32> = (0..300).map(|_| next()).collect();
        for far in [0.0, 0.001, 0.01, 0.1, 0.3, 0.999] {
            let (_, t) = tar_at_far(&genuine, &impostor, far).unwrap();
            assert_eq!(Some(t), osprey_core::threshold_for_fpir(&impostor, far), "far {far}");
        }
    }

    #[test]
    fn invalid_inputs_are_rejected() {
        let kind = |r: Result<(f64, f64)>| r.unwrap_err().kind();
        assert_eq!(kind(eer(&[], &[0.1])), ErrorKind::InvalidInput);
        assert_eq!(kind(eer(&[0.1], &[])), ErrorKind::InvalidInput);
        assert_eq!(kind(eer(&[f64::NAN], &[0.1])), ErrorKind::InvalidInput);
        assert_eq!(kind(tar_at_far(&[0.1], &[0.1], 1.5)), ErrorKind::InvalidInput);
        assert_eq!(kind(tar_at_far(&[0.1], &[0.1], f64::NAN)), ErrorKind::InvalidInput);
        assert!(det_curve::<f32>(&[0.1], &[]).is_err());
        assert!(verification_accuracy_kfold(&[(0.1f32, true)], 10).is_err());
        assert!(verification_accuracy_kfold(&[(0.1f32, true); 20], 1).is_err());
        assert!(verification_accuracy_kfold(&[(f32::NAN, true); 20], 10).is_err());
    }

    #[test]
    fn long_det_curves_are_thinned_to_exact_points() {
        let genuine: Vec<f64> = (0..15_000).map(|i| 0.5 + i as f64 / 30_000.0).collect();
        let impostor: Vec<f64> = (0..60_000).map(|i| i as f64 / 60_000.0 + 1e-7).collect();
        let full = error_rates(&genuine, &impostor);
        let thinned = det_curve(&genuine, &impostor).unwrap();
        assert!(thinned.len() < 3_000, "{} points", thinned.len());
        assert_eq!(thinned.first(), full.first());
        assert_eq!(thinned.last(), full.last());
        // Each kept point is on the full curve, in order.
        let mut rest = full.iter();
        assert!(thinned.iter().all(|p| rest.any(|q| q == p)));
        // The low-FMR tail keeps every one of its first hundred steps.
        let tail = |c: &[DetPoint<f64>]| {
            let mut fmrs: Vec<f64> = c.iter().map(|p| p.fmr).filter(|&r| r > 0.0 && r <= 100.0 / 60_000.0).collect();
            fmrs.dedup();
            fmrs
        };
        assert_eq!(tail(&thinned), tail(&full));
        assert_eq!(tail(&full).len(), 100);
    }

    #[test]
    fn kfold_by_hand() {
        // Fold 0 trains on fold 1 (best cut between 0.35 and 0.6: 0.475), fold 1
        // on fold 0 (between 0.3 and 0.5: 0.4). Every held-out pair is right.
        let pairs = [(0.3, false), (0.8, true), (0.5, true), (0.2, false), (0.35, false), (0.6, true)];
        assert_eq!(verification_accuracy_kfold(&pairs, 2).unwrap(), (1.0, 0.0));

        // Fold 1 now cuts at 0.525, misplacing held-out 0.5 (fold 0: 2/3); fold 0
        // still cuts at 0.4, which accepts non-mated 0.45 and 0.4 (fold 1: 1/3).
        let pairs = [(0.3, false), (0.8, true), (0.5, true), (0.45, false), (0.4, false), (0.6, true)];
        let (mean, std) = verification_accuracy_kfold(&pairs, 2).unwrap();
        assert!((mean - 0.5).abs() < 1e-12, "mean {mean}");
        assert!((std - 1.0 / 6.0).abs() < 1e-12, "std {std}");
    }

    #[test]
    fn stratified_order_interleaves_the_classes() {
        // Two matches and six non-matches: at 1/4 and 3/4 against 1/12, 3/12, …
        let same = [true, true, false, false, false, false, false, false];
        assert_eq!(stratified_order(&same), [2, 0, 3, 4, 5, 1, 6, 7]);
        // Every chunk of a sorted list gets its share of each class.
        let mut same = vec![true; 38];
        same.extend([false; 262]);
        let order = stratified_order(&same);
        let mut seen = order.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..300).collect::<Vec<_>>());
        for chunk in order.chunks(30) {
            let matches = chunk.iter().filter(|&&i| same[i]).count();
            assert!((3..=4).contains(&matches), "{matches} matches in a fold");
        }
        // Within a class the input order is kept.
        let pos: Vec<usize> = order.iter().copied().filter(|&i| same[i]).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]));
        assert!(stratified_order(&[]).is_empty());
        assert_eq!(stratified_order(&[false, false]), [0, 1]);
        assert_eq!(stratified_order(&[true]), [0]);
    }

    #[test]
    fn kfold_ties_go_to_the_higher_threshold() {
        // Accepting everything and accepting only >= 0.5 are both 2/3 accurate.
        assert_eq!(best_threshold(vec![(0.2, true), (0.4, false), (0.6, true)]), 0.5);
        assert_eq!(best_threshold(vec![(0.6, true), (0.2, false)]), 0.4);
        // Nothing beats rejecting all: the threshold sits above the top score.
        assert_eq!(best_threshold(vec![(0.6, false), (0.2, false)]), 0.6f64.next_up());
        assert_eq!(midpoint(1.0, 1.0f64.next_up()), 1.0f64.next_up());
        assert_eq!(midpoint(1.0, 2.0), 1.5);
    }

    #[test]
    fn kfold_uses_consecutive_folds() {
        // 10 folds of 2: each training set is perfectly separable at 0.5,
        // except that fold 3 holds a flipped pair.
        let mut pairs: Vec<(f32, bool)> =
            (0..20).map(|i| if i % 2 == 0 { (0.9, true) } else { (0.1, false) }).collect();
        pairs[6].1 = false;
        let (mean, std) = verification_accuracy_kfold(&pairs, 10).unwrap();
        assert!((mean - 0.95).abs() < 1e-12, "mean {mean}");
        assert!((std - 0.15).abs() < 1e-12, "std {std}");
    }
}
