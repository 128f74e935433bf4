//! Cross-checks osprey-eval against independent implementations from PyPI:
//! pyeer (DET curve, EER) and bob.measure (FAR/FRR, FAR thresholds, CMC,
//! open-set DIR and false alarm rate), run by `infra/scripts/ref_metrics.py`
//! on deterministic pseudo-random scores generated here.
//!
//! The Python comes from `$OSPREY_PYTHON` (default `python3`);
//! `infra/scripts/setup.sh` builds a venv with the packages. A missing
//! package fails the test rather than skipping it.
//!
//! Where the definitions coincide the comparison is exact (rates are turned
//! back into counts). Where they differ the test pins down the difference:
//! * EER: osprey-eval and pyeer read it, per FVC2000, at whichever of the two
//!   thresholds bracketing the FMR/FNMR crossing has the lower total error;
//!   bob.measure at whichever has the smaller |FMR − FNMR|. Both are one of
//!   the two bracketing points.
//! * FAR/FPIR thresholds: bob.measure puts the threshold on the lowest
//!   accepted impostor (non-mated) score, osprey at the lowest threshold with
//!   the same FAR, just above the highest rejected one. The same impostors
//!   are accepted; osprey's TAR/DIR can only be higher, by the genuine (mated)
//!   scores falling between the two thresholds.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use osprey_eval::{
    Candidate, Score, Search, cmc, det_curve, dir_at_far, eer, fnir, fnir_at_fpir, fpir, identification_report,
    tar_at_far,
};
use serde_json::{Value, json};

const FARS: [f64; 7] = [0.0, 1e-4, 1e-3, 0.01, 0.1, 0.5, 1.0];
const RANKS: [usize; 3] = [1, 5, 20];
const LIST_LEN: usize = 20;

/// xorshift64* with Box–Muller normals: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let (u, v) = (1.0 - self.uniform(), self.uniform());
        mean + sd * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn scores(&mut self, n: usize, mean: f64, sd: f64) -> Vec<f64> {
        (0..n).map(|_| self.normal(mean, sd)).collect()
    }
}

/// Rounds to multiples of 1/256 so that many scores tie.
fn quantised(scores: Vec<f64>) -> Vec<f32> {
    scores.into_iter().map(|s| ((s * 256.0).round() / 256.0) as f32).collect()
}

fn searches(rng: &mut Rng, mated: usize, nonmated: usize, gallery: usize, quantum: Option<f32>) -> Vec<Search> {
    (0..mated + nonmated)
        .map(|k| {
            let mate = (k < mated).then(|| (rng.uniform() * gallery as f64) as usize);
            let mut candidates: Vec<Candidate> = (0..gallery)
                .map(|g| {
                    let s = (if Some(g) == mate { rng.normal(0.45, 0.15) } else { rng.normal(0.1, 0.08) }) as f32;
                    Candidate { subject_id: format!("s{g:04}"), score: quantum.map_or(s, |q| (s / q).round() * q) }
                })
                .collect();
            // Stable: tied candidates stay in gallery order, so a mate may be
            // listed ahead of the non-mates it ties with.
            candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
            candidates.truncate(LIST_LEN);
            Search { mate: mate.map(|g| format!("s{g:04}")), candidates }
        })
        .collect()
}

struct Fixture {
    continuous: (Vec<f64>, Vec<f64>),
    tied: (Vec<f32>, Vec<f32>),
    large: (Vec<f32>, Vec<f32>),
    identification: Vec<(&'static str, Vec<Search>)>,
    reference: Value,
}

fn wide<S: Score>(scores: &[S]) -> Vec<f64> {
    scores.iter().map(|&s| s.into()).collect()
}

fn verification_case<S: Score>(genuine: &[S], impostor: &[S]) -> Value {
    let thresholds: Vec<f64> = FARS.iter().map(|&far| tar_at_far(genuine, impostor, far).unwrap().1.into()).collect();
    json!({"genuine": wide(genuine), "impostor": wide(impostor), "far": FARS, "thresholds": thresholds})
}

fn identification_case(searches: &[Search]) -> Value {
    let thresholds: Vec<f64> = FARS.iter().map(|&far| fnir_at_fpir(searches, far, 1).unwrap().1.into()).collect();
    json!({"searches": searches, "max_rank": LIST_LEN, "far": FARS, "thresholds": thresholds, "ranks": RANKS})
}

/// The scores, and what the reference implementations make of them.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut rng = Rng(0x05b7_e1a5_eed0_2024);
        let continuous = (rng.scores(2_000, 0.55, 0.12), rng.scores(9_000, 0.15, 0.1));
        let tied = (quantised(rng.scores(3_000, 0.5, 0.15)), quantised(rng.scores(30_000, 0.15, 0.1)));
        let narrow = |v: Vec<f64>| v.into_iter().map(|s| s as f32).collect::<Vec<_>>();
        // Over 20 000 distinct scores: det_curve thins this one.
        let large = (narrow(rng.scores(5_000, 0.5, 0.15)), narrow(rng.scores(40_000, 0.12, 0.1)));
        let identification = vec![
            ("continuous", searches(&mut rng, 1_500, 2_500, 200, None)),
            ("tied", searches(&mut rng, 1_500, 2_500, 200, Some(1.0 / 64.0))),
        ];
        let input = json!({
            "verification": [
                verification_case(&continuous.0, &continuous.1),
                verification_case(&tied.0, &tied.1),
                verification_case(&large.0, &large.1),
            ],
            "identification": identification.iter().map(|(_, s)| identification_case(s)).collect::<Vec<_>>(),
        });
        let reference = run_reference(&input);
        Fixture { continuous, tied, large, identification, reference }
    })
}

fn run_reference(input: &Value) -> Value {
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../..");
    let dir = std::env::temp_dir().join(format!("osprey-eval-reference-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (in_path, out_path) = (dir.join("in.json"), dir.join("out.json"));
    std::fs::write(&in_path, serde_json::to_vec(input).unwrap()).unwrap();

    let python = std::env::var("OSPREY_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(&python)
        .arg(root.join("infra/scripts/ref_metrics.py"))
        .args([&in_path, &out_path])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{python}` ({e}): run infra/scripts/setup.sh and set OSPREY_PYTHON"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => {}
        Some(3) => panic!(
            "the reference packages (pyeer, bob.measure) are not importable by `{python}`: \
             run infra/scripts/setup.sh and set OSPREY_PYTHON to its venv's python\n{stderr}"
        ),
        _ => panic!("ref_metrics.py failed ({}); input kept in {}\n{stderr}", output.status, dir.display()),
    }
    let reference = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    reference
}

/// ref_metrics.py sends floats as their bit patterns: a decimal round trip
/// through serde_json's default parser is not always exact.
fn float(v: &Value) -> f64 {
    f64::from_bits(v.as_u64().unwrap_or_else(|| panic!("not a float's bit pattern: {v}")))
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(float).collect()
}

/// A rate's numerator: rates are `count / n`, so this is exact.
fn count(rate: f64, n: usize) -> usize {
    (rate * n as f64).round() as usize
}

/// The smallest `f32` at or above `x`: on `f32` scores, `score >= x` exactly
/// when `score >= f32_at_least(x)`.
fn f32_at_least(x: f64) -> f32 {
    let y = x as f32;
    if (y as f64) < x { y.next_up() } else { y }
}

fn check_verification<S: Score + std::fmt::Debug>(name: &str, genuine: &[S], impostor: &[S], r: &Value) {
    let (ng, ni) = (genuine.len(), impostor.len());
    let at_least = |scores: &[S], t: f64| scores.iter().filter(|&&s| s.into() >= t).count();

    // DET: the same definition, so the same points, bit for bit.
    let p = &r["pyeer"];
    let full: Vec<(f64, f64, f64)> = floats(&p["thresholds"])
        .into_iter()
        .zip(floats(&p["fmr"]))
        .zip(floats(&p["fnmr"]))
        .map(|((t, fmr), fnmr)| (t, fmr, fnmr))
        .collect();
    let ours: Vec<(f64, f64, f64)> =
        det_curve(genuine, impostor).unwrap().iter().map(|p| (p.threshold.into(), p.fmr, p.fnmr)).collect();
    if full.len() <= 20_000 {
        assert_eq!(ours.len(), full.len(), "{name}: DET length");
        if let Some(i) = (0..ours.len()).find(|&i| ours[i] != full[i]) {
            panic!("{name}: DET point {i}: ours {:?}, pyeer {:?}", ours[i], full[i]);
        }
    } else {
        // Thinned: every point is one of pyeer's, in order, ends included.
        assert!(ours.len() < 5_000, "{name}: {} DET points", ours.len());
        assert_eq!((ours.first(), ours.last()), (full.first(), full.last()), "{name}: DET ends");
        let mut rest = full.iter();
        assert!(ours.iter().all(|p| rest.any(|q| q == p)), "{name}: a thinned DET point is not on pyeer's curve");
    }

    // EER: pyeer's definition is ours.
    let (e, t) = eer(genuine, impostor).unwrap();
    let t: f64 = t.into();
    assert_eq!((e, t), (float(&p["eer"]), float(&p["eer_threshold"])), "{name}: EER vs pyeer");
    // bob.measure picks one of the same two bracketing points.
    let mut curve: Vec<(f64, f64)> = full.iter().map(|&(_, fmr, fnmr)| (fmr, fnmr)).collect();
    curve.push((0.0, 1.0));
    let after = curve.iter().position(|(fmr, fnmr)| fmr <= fnmr).unwrap();
    let bracket: Vec<f64> = curve[after.saturating_sub(1)..=after].iter().map(|(a, b)| (a + b) / 2.0).collect();
    let bob_eer = float(&r["bob"]["eer"]);
    assert!(bracket.contains(&bob_eer), "{name}: bob EER {bob_eer} not at the crossing {bracket:?} (ours {e})");

    for (k, &far) in FARS.iter().enumerate() {
        let (tar, t) = tar_at_far(genuine, impostor, far).unwrap();
        let (t, accepted) = (t.into(), count(tar, ng));
        let false_accepts = at_least(impostor, t);
        assert!(false_accepts as f64 <= far * ni as f64 + 1e-9, "{name}: FAR over {far}");

        // bob.measure's FAR/FRR at our threshold: the same counting rule.
        let at = &r["bob"]["at_thresholds"][k];
        assert_eq!(count(float(&at["far"]), ni), false_accepts, "{name}: FAR at our threshold, target {far}");
        assert_eq!(ng - count(float(&at["frr"]), ng), accepted, "{name}: TAR at our threshold, target {far}");

        // The best TAR on pyeer's curve with FMR <= target is ours.
        let pyeer_tar = ng - count(float(&p["fnmr_at_far"][k]), ng);
        assert_eq!(pyeer_tar, accepted, "{name}: TAR@FAR {far} vs pyeer's curve");

        // bob.measure's own threshold accepts the same impostors and never
        // more genuine comparisons.
        let b = &r["bob"]["far_points"][k];
        let bt = float(&b["threshold"]);
        assert_eq!(count(float(&b["far"]), ni), false_accepts, "{name}: bob's FAR threshold, target {far}");
        let bob_accepted = ng - count(float(&b["frr"]), ng);
        assert_eq!(bob_accepted, at_least(genuine, bt), "{name}: bob's FRR at its threshold");
        assert!(bob_accepted <= accepted, "{name}: bob's TAR beats ours at FAR {far}");
    }
}

fn check_identification(name: &str, searches: &[Search], r: &Value) {
    let mated = searches.iter().filter(|s| s.mate.is_some()).count();

    // bob.measure ranks a mate by the non-mates scoring at or above it, as we do.
    let ours = cmc(searches, LIST_LEN).unwrap();
    assert_eq!(ours, floats(&r["cmc"]), "{name}: CMC");

    for (k, &far) in FARS.iter().enumerate() {
        let (_, t) = fnir_at_fpir(searches, far, 1).unwrap();
        let ours_fpir = fpir(searches, t).unwrap();
        assert!(ours_fpir <= far, "{name}: FPIR {ours_fpir} over {far}");
        let at = &r["at_thresholds"][k];
        assert_eq!(float(&at["far"]), ours_fpir, "{name}: false alarm rate at our threshold, FPIR {far}");
        let b = &r["far_points"][k];
        assert_eq!(float(&b["far"]), ours_fpir, "{name}: false alarm rate at bob's threshold, FPIR {far}");
        let bt = f32_at_least(float(&b["threshold"]));

        for (j, &rank) in RANKS.iter().enumerate() {
            let (dir, t_dir) = dir_at_far(searches, far, rank).unwrap();
            let (fnir_, t_fnir) = fnir_at_fpir(searches, far, rank).unwrap();
            assert_eq!((t_dir, t_fnir), (t, t), "{name}: thresholds");
            assert_eq!(dir, float(&at["dir"][j]), "{name}: DIR at FPIR {far}, rank {rank}");
            assert_eq!(count(fnir_, mated), mated - count(dir, mated), "{name}: FNIR = 1 - DIR");
            let bob_dir = float(&b["dir"][j]);
            let fnir_at_bob = fnir(searches, bt, rank).unwrap();
            assert_eq!(mated - count(fnir_at_bob, mated), count(bob_dir, mated), "{name}: DIR at bob's threshold");
            assert!(bob_dir <= dir, "{name}: bob's DIR beats ours at FPIR {far}, rank {rank}");
        }
    }

    let report = identification_report(searches).unwrap();
    assert_eq!((report.rank1, report.rank5, report.rank10), (ours[0], ours[4], ours[9]));
    for p in &report.fnir_at_fpir {
        let k = FARS.iter().position(|&f| f == p.target_fpir).unwrap();
        assert_eq!(count(p.fnir, mated), mated - count(float(&r["at_thresholds"][k]["dir"][0]), mated));
        assert_eq!(p.fpir, float(&r["at_thresholds"][k]["far"]));
    }
}

#[test]
fn verification_matches_pyeer_and_bob_measure() {
    let f = fixture();
    let v = &f.reference["verification"];
    check_verification("continuous f64", &f.continuous.0, &f.continuous.1, &v[0]);
    check_verification("tied f32", &f.tied.0, &f.tied.1, &v[1]);
    check_verification("large f32", &f.large.0, &f.large.1, &v[2]);
}

#[test]
fn identification_matches_bob_measure() {
    let f = fixture();
    for (i, (name, searches)) in f.identification.iter().enumerate() {
        check_identification(name, searches, &f.reference["identification"][i]);
    }
}

#[test]
fn fixtures_exercise_the_hard_cases() {
    let f = fixture();
    // Ties between mates and non-mates, mates missing from the list, and
    // operating points that differ from bob.measure's thresholds.
    let ties = f.identification[1].1.iter().filter(|s| {
        let Some(mate) = s.candidates.iter().find(|c| Some(&c.subject_id) == s.mate.as_ref()) else { return false };
        s.candidates.iter().any(|c| c.subject_id != mate.subject_id && c.score == mate.score)
    });
    assert!(ties.count() > 10, "too few mate/non-mate ties");
    let missing = |s: &[Search]| {
        s.iter().filter(|s| s.mate.as_ref().is_some_and(|m| s.candidates.iter().all(|c| c.subject_id != *m))).count()
    };
    assert!(missing(&f.identification[0].1) > 10, "too few mates missing from the candidate lists");
    assert!(f.tied.1.len() - dedup_len(&f.tied.1) > 20_000, "too few tied impostor scores");
    let mut differ = 0;
    for (i, (_, searches)) in f.identification.iter().enumerate() {
        for (k, &far) in FARS.iter().enumerate() {
            let bob_dir = float(&f.reference["identification"][i]["far_points"][k]["dir"][0]);
            differ += usize::from(bob_dir < dir_at_far(searches, far, 1).unwrap().0);
        }
    }
    assert!(differ > 0, "no operating point where bob.measure's threshold placement matters");
}

fn dedup_len(scores: &[f32]) -> usize {
    let mut v = scores.to_vec();
    v.sort_by(f32::total_cmp);
    v.dedup();
    v.len()
}
