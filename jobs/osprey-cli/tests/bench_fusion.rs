//! `osprey bench fusion` at a tiny size: the report's shape (three indexes
//! of the asked widths, both paths timed, the ratio), that fusion gives one
//! decision per probe person, and its refusals. The 100k-subject numbers
//! are in docs/benchmarks.md.

mod common;

use common::osprey;

#[test]
fn fusion_bench_times_face_alone_and_three_modalities_fused() {
    let args = [
        "bench",
        "fusion",
        "--subjects",
        "300",
        "--probes",
        "40",
        "--face-dim",
        "64",
        "--body-dim",
        "64",
        "--gait-dim",
        "128",
        "--repeat",
        "2",
        "--json",
    ];
    let out = osprey(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let indexes = r["indexes"].as_array().unwrap();
    let got: Vec<(&str, u64, u64)> = indexes
        .iter()
        .map(|i| (i["modality"].as_str().unwrap(), i["dim"].as_u64().unwrap(), i["templates"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, [("face", 64, 300), ("body", 64, 300), ("gait", 128, 300)], "{r}");
    // Small galleries get the exact index; each has a threshold and a fitted calibration.
    for i in indexes {
        assert_eq!(i["index"], "Flat", "{r}");
        assert_eq!(i["calibration"], "logistic", "{r}");
    }
    assert_eq!(r["repeat"].as_u64(), Some(2));
    let secs = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
    assert!(secs("single_best_s") > 0.0 && secs("fused_best_s") > 0.0, "{r}");
    assert!((secs("ratio_fused_over_single") - secs("fused_best_s") / secs("single_best_s")).abs() < 1e-9);
    // Generated subjects lie far apart: every enrolled probe person is
    // matched to its own subject, alone and fused.
    assert_eq!(r["sanity"]["enrolled_probes"].as_u64(), Some(20));
    assert_eq!(r["sanity"]["face_rank1_own_subject"].as_u64(), Some(20), "{r}");
    assert_eq!(r["sanity"]["fused_rank1_own_subject"].as_u64(), Some(20), "{r}");

    let out = osprey(&["bench", "fusion", "--subjects", "1", "--json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 2"));
    let out = osprey(&["bench", "fusion", "--subjects", "50", "--probes", "4", "--fusion", "mean", "--json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown fusion rule"));
}
