//! Open-set identification (1:N) metrics, with NIST FRTE 1:N definitions.
//!
//! A *mated* search's subject is enrolled in the gallery, a *non-mated* one's
//! is not. At threshold `t`:
//! * FPIR(t) is the share of non-mated searches with any candidate scoring at
//!   or above `t`, i.e. whose top candidate does ([`osprey_core::decide`]);
//! * FNIR(t, R) is the share of mated searches whose mate is not returned at
//!   or above `t` within the first `R` ranks;
//! * the CMC is FNIR's closed-set complement with no threshold: the share of
//!   mated searches whose mate is within the first `R` ranks.
//!
//! A mate's rank is pessimistic: 1 plus the number of other candidates scoring
//! at or above it, so a non-mate tied with the mate always ranks ahead of it,
//! whatever order the search engine returned the tie in.

use osprey_core::{Error, OpenSetDecision, Result, decide, threshold_for_fpir};
use serde::{Deserialize, Serialize};

use crate::verification::{DET_FULL_RESOLUTION, DetPoint, check_rate, thin};

/// One gallery subject returned by a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The enrolled subject's id.
    pub subject_id: String,
    /// Its similarity to the probe (higher is more similar).
    pub score: f32,
}

/// The outcome of one 1:N search, as the metrics need it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Search {
    /// The probe's subject id when it is enrolled (a mated search), `None`
    /// for a non-mated search.
    pub mate: Option<String>,
    /// The candidate list by descending score, one entry per subject. It may
    /// be truncated: a mate missing from it counts as a miss at every rank.
    pub candidates: Vec<Candidate>,
}

/// FNIR at one FPIR operating point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OperatingPoint {
    /// The FPIR asked for.
    pub target_fpir: f64,
    /// The FPIR reached at `threshold` (at most the target).
    pub fpir: f64,
    /// FNIR at `threshold`, rank 1.
    pub fnir: f64,
    /// The lowest threshold whose FPIR does not exceed the target.
    pub threshold: f32,
}

/// A summary of an identification experiment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentificationReport {
    /// Number of mated searches.
    pub mated_searches: usize,
    /// Number of non-mated searches.
    pub nonmated_searches: usize,
    /// Closed-set rank-1 identification rate (CMC at rank 1).
    pub rank1: f64,
    /// CMC at rank 5.
    pub rank5: f64,
    /// CMC at rank 10.
    pub rank10: f64,
    /// FNIR at FPIR 0.001, 0.01 and 0.1 (in that order) at rank 1; empty
    /// when there are no non-mated searches to set thresholds from.
    pub fnir_at_fpir: Vec<OperatingPoint>,
}

/// The FPIR targets [`identification_report`] reports FNIR at.
const REPORT_FPIRS: [f64; 3] = [0.001, 0.01, 0.1];

/// The cumulative match characteristic: entry `k - 1` is the share of mated
/// searches whose mate is within the first `k` ranks, for `k` in
/// `1..=max_rank`. Non-mated searches are ignored.
pub fn cmc(searches: &[Search], max_rank: usize) -> Result<Vec<f64>> {
    check_rank(max_rank)?;
    Outcomes::of(searches)?.cmc(max_rank)
}

/// FPIR at `threshold`: the share of non-mated searches with at least one
/// candidate scoring at or above it.
pub fn fpir(searches: &[Search], threshold: f32) -> Result<f64> {
    Outcomes::of(searches)?.fpir(threshold)
}

/// FNIR at `threshold` and `rank`: the share of mated searches whose mate is
/// not among the first `rank` candidates with a score at or above `threshold`.
pub fn fnir(searches: &[Search], threshold: f32, rank: usize) -> Result<f64> {
    check_rank(rank)?;
    let outcomes = Outcomes::of(searches)?;
    Ok(outcomes.misses(threshold, rank)? as f64 / outcomes.mated.len() as f64)
}

/// FNIR at the lowest threshold whose FPIR does not exceed `target_fpir`,
/// and that threshold ([`osprey_core::threshold_for_fpir`] on the non-mated
/// searches' top scores).
pub fn fnir_at_fpir(searches: &[Search], target_fpir: f64, rank: usize) -> Result<(f64, f32)> {
    check_rank(rank)?;
    let outcomes = Outcomes::of(searches)?;
    let threshold = outcomes.threshold(target_fpir)?;
    Ok((outcomes.misses(threshold, rank)? as f64 / outcomes.mated.len() as f64, threshold))
}

/// The detection and identification rate (1 − FNIR) at rank `rank`, at the
/// lowest threshold whose false alarm rate (FPIR) does not exceed `far`, and
/// that threshold.
pub fn dir_at_far(searches: &[Search], far: f64, rank: usize) -> Result<(f64, f32)> {
    check_rank(rank)?;
    let outcomes = Outcomes::of(searches)?;
    let threshold = outcomes.threshold(far)?;
    let n = outcomes.mated.len();
    Ok(((n - outcomes.misses(threshold, rank)?) as f64 / n as f64, threshold))
}

/// Rank-1/5/10 identification rates and rank-1 FNIR at FPIR 0.001, 0.01 and
/// 0.1. Needs mated searches; without non-mated ones the FNIR list is empty.
pub fn identification_report(searches: &[Search]) -> Result<IdentificationReport> {
    let outcomes = Outcomes::of(searches)?;
    let cmc = outcomes.cmc(10)?;
    let fnir_at_fpir = if outcomes.nonmated.is_empty() {
        Vec::new()
    } else {
        REPORT_FPIRS
            .iter()
            .map(|&target_fpir| {
                let threshold = outcomes.threshold(target_fpir)?;
                Ok(OperatingPoint {
                    target_fpir,
                    fpir: outcomes.fpir(threshold)?,
                    fnir: outcomes.misses(threshold, 1)? as f64 / outcomes.mated.len() as f64,
                    threshold,
                })
            })
            .collect::<Result<_>>()?
    };
    Ok(IdentificationReport {
        mated_searches: outcomes.mated.len(),
        nonmated_searches: outcomes.nonmated.len(),
        rank1: cmc[0],
        rank5: cmc[4],
        rank10: cmc[9],
        fnir_at_fpir,
    })
}

/// One point of an open-set identification DET curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IdentificationDetPoint {
    /// The decision threshold: a search alarms when a candidate scores at or
    /// above it.
    pub threshold: f32,
    /// FPIR at `threshold`.
    pub fpir: f64,
    /// FNIR at `threshold` (at the rank the curve was drawn for).
    pub fnir: f64,
}

/// The identification DET curve: FPIR and FNIR at `rank` with each distinct
/// score that can change either used as the threshold, lowest threshold
/// first (FPIR falls and FNIR rises along the curve). The scores are the
/// non-mated searches' top scores and the mates' scores where the mate ranks
/// within `rank`; every point equals [`fpir`] and [`fnir`] at its threshold.
/// Needs mated and non-mated searches. Beyond 20 000 points the curve is
/// thinned as [`crate::det_curve`] thins, keeping only exact points.
pub fn identification_det(searches: &[Search], rank: usize) -> Result<Vec<IdentificationDetPoint>> {
    check_rank(rank)?;
    let outcomes = Outcomes::of(searches)?;
    let n_mated = outcomes.require_mated()? as f64;
    if outcomes.nonmated.is_empty() {
        return Err(Error::invalid("no non-mated searches: FPIR is undefined"));
    }
    let n_nonmated = outcomes.nonmated.len() as f64;
    // Ascending: mate scores that can hit, and top scores that can alarm.
    let mut hits: Vec<f32> = outcomes.mated.iter().flatten().filter(|m| m.0 <= rank).map(|m| m.1).collect();
    let mut alarms: Vec<f32> = outcomes.nonmated.iter().flatten().copied().collect();
    hits.sort_unstable_by(f32::total_cmp);
    alarms.sort_unstable_by(f32::total_cmp);
    let mut thresholds: Vec<f32> = hits.iter().chain(&alarms).copied().collect();
    thresholds.sort_unstable_by(f32::total_cmp);
    thresholds.dedup();
    // A hit or alarm at `t` needs a score `>= t`: count those below.
    let (mut h, mut a) = (0, 0);
    let curve: Vec<DetPoint<f32>> = thresholds
        .into_iter()
        .map(|t| {
            while h < hits.len() && hits[h] < t {
                h += 1;
            }
            while a < alarms.len() && alarms[a] < t {
                a += 1;
            }
            let fnir = (n_mated - (hits.len() - h) as f64) / n_mated;
            DetPoint { threshold: t, fmr: (alarms.len() - a) as f64 / n_nonmated, fnmr: fnir }
        })
        .collect();
    let curve = if curve.len() > DET_FULL_RESOLUTION { thin(curve) } else { curve };
    Ok(curve
        .into_iter()
        .map(|p| IdentificationDetPoint { threshold: p.threshold, fpir: p.fmr, fnir: p.fnmr })
        .collect())
}

/// What the metrics need from validated searches.
struct Outcomes {
    /// Per mated search: the mate's rank and score, `None` when it was not
    /// returned.
    mated: Vec<Option<(usize, f32)>>,
    /// Per non-mated search: its top score, `None` when nothing was returned.
    nonmated: Vec<Option<f32>>,
}

impl Outcomes {
    fn of(searches: &[Search]) -> Result<Self> {
        let (mut mated, mut nonmated) = (Vec::new(), Vec::new());
        for (i, search) in searches.iter().enumerate() {
            let c = &search.candidates;
            if c.iter().any(|c| c.score.is_nan()) {
                return Err(Error::invalid(format!("search {i} has a NaN candidate score")));
            }
            if c.windows(2).any(|w| w[0].score < w[1].score) {
                return Err(Error::invalid(format!("search {i}: candidates are not sorted by descending score")));
            }
            match &search.mate {
                Some(mate) => mated.push(c.iter().find(|c| c.subject_id == *mate).map(|m| {
                    let ahead = c.iter().take_while(|c| c.score >= m.score).filter(|c| c.subject_id != *mate).count();
                    (ahead + 1, m.score)
                })),
                None => nonmated.push(c.first().map(|c| c.score)),
            }
        }
        Ok(Self { mated, nonmated })
    }

    fn require_mated(&self) -> Result<usize> {
        match self.mated.len() {
            0 => Err(Error::invalid("no mated searches: FNIR and the CMC are undefined")),
            n => Ok(n),
        }
    }

    fn cmc(&self, max_rank: usize) -> Result<Vec<f64>> {
        let n = self.require_mated()?;
        let mut hits = vec![0usize; max_rank];
        for &(rank, _) in self.mated.iter().flatten() {
            if rank <= max_rank {
                hits[rank - 1] += 1;
            }
        }
        let mut cumulative = 0;
        Ok(hits
            .into_iter()
            .map(|h| {
                cumulative += h;
                cumulative as f64 / n as f64
            })
            .collect())
    }

    fn misses(&self, threshold: f32, rank: usize) -> Result<usize> {
        self.require_mated()?;
        let hit = |&(r, score): &(usize, f32)| r <= rank && decide(Some(score), threshold) == OpenSetDecision::Match;
        Ok(self.mated.iter().filter(|m| !m.as_ref().is_some_and(hit)).count())
    }

    fn fpir(&self, threshold: f32) -> Result<f64> {
        if self.nonmated.is_empty() {
            return Err(Error::invalid("no non-mated searches: FPIR is undefined"));
        }
        let alarms = self.nonmated.iter().filter(|&&top| decide(top, threshold) == OpenSetDecision::Match).count();
        Ok(alarms as f64 / self.nonmated.len() as f64)
    }

    fn threshold(&self, target_fpir: f64) -> Result<f32> {
        check_rate(target_fpir, "FPIR")?;
        // An empty candidate list never alarms but still counts in the
        // denominator: stand in the lowest finite score for it.
        let tops: Vec<f32> = self.nonmated.iter().map(|top| top.unwrap_or(f32::MIN)).collect();
        threshold_for_fpir(&tops, target_fpir)
            .ok_or_else(|| Error::invalid("no non-mated searches to set an FPIR threshold from"))
    }
}

fn check_rank(rank: usize) -> Result<()> {
    if rank == 0 { Err(Error::invalid("ranks start at 1, got 0")) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_core::ErrorKind;

    fn search(mate: Option<&str>, candidates: &[(&str, f32)]) -> Search {
        Search {
            mate: mate.map(str::to_owned),
            candidates: candidates.iter().map(|&(id, score)| Candidate { subject_id: id.into(), score }).collect(),
        }
    }

    /// Four mated searches (mate at rank 1, 2, 3, absent) and four non-mated.
    fn fixture() -> Vec<Search> {
        vec![
            search(Some("a"), &[("a", 0.9), ("b", 0.3), ("c", 0.2)]),
            search(Some("a"), &[("b", 0.7), ("a", 0.6), ("c", 0.1)]),
            search(Some("a"), &[("b", 0.5), ("c", 0.45), ("a", 0.4)]),
            search(Some("a"), &[("b", 0.8), ("c", 0.3)]),
            search(None, &[("b", 0.75), ("c", 0.2)]),
            search(None, &[("b", 0.55)]),
            search(None, &[("b", 0.35), ("c", 0.3)]),
            search(None, &[]),
        ]
    }

    #[test]
    fn cmc_by_hand() {
        assert_eq!(cmc(&fixture(), 4).unwrap(), [0.25, 0.5, 0.75, 0.75]);
        assert_eq!(cmc(&fixture(), 1).unwrap(), [0.25]);
    }

    #[test]
    fn a_tied_non_mate_ranks_ahead_of_the_mate() {
        let tied = [search(Some("a"), &[("a", 0.5), ("b", 0.5), ("c", 0.1)])];
        assert_eq!(cmc(&tied, 3).unwrap(), [0.0, 1.0, 1.0]);
        assert_eq!(fnir(&tied, 0.0, 1).unwrap(), 1.0);
        assert_eq!(fnir(&tied, 0.0, 2).unwrap(), 0.0);
    }

    #[test]
    fn fpir_and_fnir_by_hand() {
        let s = fixture();
        // Non-mated tops 0.75, 0.55, 0.35 and an empty list.
        assert_eq!(fpir(&s, 0.55).unwrap(), 0.5);
        assert_eq!(fpir(&s, 0.550_001).unwrap(), 0.25);
        assert_eq!(fpir(&s, -1.0).unwrap(), 0.75);
        // Mates: rank 1 @ 0.9, rank 2 @ 0.6, rank 3 @ 0.4, absent.
        assert_eq!(fnir(&s, 0.6, 1).unwrap(), 0.75);
        assert_eq!(fnir(&s, 0.6, 2).unwrap(), 0.5);
        assert_eq!(fnir(&s, 0.0, 3).unwrap(), 0.25);
        assert_eq!(fnir(&s, 0.95, 3).unwrap(), 1.0);
    }

    #[test]
    fn fnir_at_fpir_by_hand() {
        let s = fixture();
        // FPIR 0.25 allows one of four non-mated alarms: the one at 0.75.
        let (fnir, t) = fnir_at_fpir(&s, 0.25, 2).unwrap();
        assert_eq!(t, 0.55f32.next_up());
        assert_eq!(fnir, 0.5);
        let (dir, t2) = dir_at_far(&s, 0.25, 2).unwrap();
        assert_eq!((dir, t2), (0.5, t));
        // FPIR 0: above every non-mated score.
        assert_eq!(fnir_at_fpir(&s, 0.0, 1).unwrap(), (0.75, 0.75f32.next_up()));
        // FPIR 0.75: the three non-empty lists may alarm; the empty one cannot.
        let (fnir, t) = fnir_at_fpir(&s, 0.75, 3).unwrap();
        assert_eq!(fpir(&s, t).unwrap(), 0.75);
        assert_eq!(fnir, 0.25);
    }

    #[test]
    fn report_bundles_the_metrics() {
        let r = identification_report(&fixture()).unwrap();
        assert_eq!((r.mated_searches, r.nonmated_searches), (4, 4));
        assert_eq!((r.rank1, r.rank5, r.rank10), (0.25, 0.75, 0.75));
        let targets: Vec<f64> = r.fnir_at_fpir.iter().map(|p| p.target_fpir).collect();
        assert_eq!(targets, REPORT_FPIRS);
        // With four non-mated searches every target below 0.25 means FPIR 0.
        for p in &r.fnir_at_fpir {
            assert_eq!((p.fpir, p.fnir, p.threshold), (0.0, 0.75, 0.75f32.next_up()));
        }
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["fnir_at_fpir"][1]["target_fpir"], 0.01);

        let closed: Vec<Search> = fixture().into_iter().filter(|s| s.mate.is_some()).collect();
        assert!(identification_report(&closed).unwrap().fnir_at_fpir.is_empty());
    }

    #[test]
    fn det_curve_by_hand() {
        let det = identification_det(&fixture(), 1).unwrap();
        let points: Vec<(f32, f64, f64)> = det.iter().map(|p| (p.threshold, p.fpir, p.fnir)).collect();
        // Non-mated tops 0.75, 0.55, 0.35 (and an empty list); the only
        // rank-1 mate scores 0.9.
        assert_eq!(points, [(0.35, 0.75, 0.75), (0.55, 0.5, 0.75), (0.75, 0.25, 0.75), (0.9, 0.0, 0.75)]);
        // At rank 3 the mates at 0.6 and 0.4 can hit too.
        let det = identification_det(&fixture(), 3).unwrap();
        let points: Vec<(f32, f64, f64)> = det.iter().map(|p| (p.threshold, p.fpir, p.fnir)).collect();
        assert_eq!(
            points,
            [
                (0.35, 0.75, 0.25),
                (0.4, 0.5, 0.25),
                (0.55, 0.5, 0.5),
                (0.6, 0.25, 0.5),
                (0.75, 0.25, 0.75),
                (0.9, 0.0, 0.75)
            ]
        );
    }

    #[test]
    fn det_points_agree_with_fpir_and_fnir() {
        let mut x = 99u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 200) as f32 / 200.0
        };
        let subjects = ["a", "b", "c", "d"];
        let searches: Vec<Search> = (0..300)
            .map(|i| {
                let mut c: Vec<Candidate> =
                    subjects.iter().map(|s| Candidate { subject_id: s.to_string(), score: next() }).collect();
                c.sort_by(|a, b| b.score.total_cmp(&a.score));
                c.truncate(1 + i % 4);
                Search { mate: (i % 3 != 0).then(|| subjects[i % 4].to_string()), candidates: c }
            })
            .collect();
        for rank in [1, 2, 4] {
            let det = identification_det(&searches, rank).unwrap();
            assert!(det.windows(2).all(|w| w[0].threshold < w[1].threshold));
            for p in &det {
                assert_eq!(p.fpir, fpir(&searches, p.threshold).unwrap());
                assert_eq!(p.fnir, fnir(&searches, p.threshold, rank).unwrap());
            }
        }
        let closed: Vec<Search> = searches.iter().filter(|s| s.mate.is_some()).cloned().collect();
        assert!(identification_det(&closed, 1).is_err());
        assert!(identification_det(&searches, 0).is_err());
    }

    #[test]
    fn invalid_inputs_are_rejected() {
        let s = fixture();
        let mated: Vec<Search> = s[..4].to_vec();
        let nonmated: Vec<Search> = s[4..].to_vec();
        let invalid = |r: Result<f64>| r.unwrap_err().kind() == ErrorKind::InvalidInput;
        assert!(invalid(fnir(&nonmated, 0.5, 1)));
        assert!(invalid(fpir(&mated, 0.5)));
        assert!(invalid(fnir(&s, 0.5, 0)));
        assert!(invalid(fnir_at_fpir(&mated, 0.01, 1).map(|r| r.0)));
        assert!(invalid(fnir_at_fpir(&s, 1.5, 1).map(|r| r.0)));
        assert!(invalid(dir_at_far(&nonmated, 0.01, 1).map(|r| r.0)));
        assert!(invalid(cmc(&s, 0).map(|c| c[0])));
        assert!(invalid(cmc(&[], 5).map(|c| c[0])));
        assert!(identification_report(&nonmated).is_err());

        let unsorted = [search(Some("a"), &[("b", 0.1), ("a", 0.2)])];
        assert!(invalid(fnir(&unsorted, 0.5, 1)));
        let nan = [search(None, &[("b", f32::NAN)])];
        assert!(invalid(fpir(&nan, 0.5)));
    }
}
