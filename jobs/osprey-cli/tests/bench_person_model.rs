//! `osprey bench person-model` on BigGait's RGB person-crop sequences, with
//! the reference fixture's tiny random weights: the timing report's fields,
//! and the parity check refusing a reference that is not this model's
//! output (wrong width, or far from it). That the check passes against
//! PyTorch on full-size weights is `infra/scripts/bench-person-models.sh`'s
//! job (docs/benchmarks.md).

mod common;

use common::{data, osprey, s, seed_fixture};
use std::path::Path;

/// Every 5th frame of All-in-One-Gait's demo3 walk, scaled to 90×160:
/// 36 RGB frames in one sequence folder.
fn walk(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let clip = data().join("All-in-One-Gait/history_Inputvideos/demo3.mp4");
    let status = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-i", s(&clip), "-vf", "select=not(mod(n\\,5)),scale=90:160", "-vsync", "vfr"])
        .arg(dir.join("%03d.png"))
        .status()
        .unwrap();
    assert!(status.success());
}

/// A safetensors file holding one float32 tensor `embedding` of `shape`, all `value`.
fn reference(path: &Path, shape: [usize; 2], value: f32) {
    let n = shape[0] * shape[1];
    let header = format!(
        r#"{{"embedding":{{"dtype":"F32","shape":[{},{}],"data_offsets":[0,{}]}}}}"#,
        shape[0],
        shape[1],
        4 * n
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    for _ in 0..n {
        bytes.extend(value.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn biggait_bench_reads_rgb_sequences_and_checks_parity() {
    let tmp = tempfile::tempdir().unwrap();
    let seq = tmp.path().join("walk");
    walk(&seq);
    let weights = seed_fixture("biggait_tiny.weights.safetensors");
    let base = ["bench", "person-model", "--model", "biggait", "--weights", s(&weights), "--iters", "1", "--json"];

    let out = osprey(&[&base[..], &["--inputs", s(&seq)]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["model"], "biggait");
    assert_eq!(report["modality"], "gait");
    assert_eq!((report["batch"].as_u64(), report["frames"].as_u64()), (Some(1), Some(36)), "{report}");
    assert_eq!(report["frames_kept"].as_u64(), Some(36), "{report}");
    assert_eq!(report["finite"], true);
    assert!(report["embeddings_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["parity"].is_null());

    // The tiny checkpoint's template is 128 × 16 wide, not the registry's 4096.
    let wrong_width = tmp.path().join("wide.safetensors");
    reference(&wrong_width, [1, 4096], 1.0);
    let out = osprey(&[&base[..], &["--reference", s(&wrong_width), "--inputs", s(&seq)]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("[1, 4096]") && stderr.contains("[1, 2048]"), "{stderr}");

    // A constant vector is not this model's embedding of the walk.
    let far = tmp.path().join("far.safetensors");
    reference(&far, [1, 2048], 1.0);
    let out = osprey(&[&base[..], &["--reference", s(&far), "--inputs", s(&seq)]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("parity check failed"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["parity"]["pass"], false, "{report}");

    // Sequences shorter than a gait cycle are refused, naming the folder.
    let short = tmp.path().join("short");
    std::fs::create_dir_all(&short).unwrap();
    for i in 1..=5 {
        std::fs::copy(seq.join(format!("{i:03}.png")), short.join(format!("{i:03}.png"))).unwrap();
    }
    let out = osprey(&[&base[..], &["--inputs", s(&short)]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("short") && stderr.contains("at least 25"), "{stderr}");
}

/// The shapes of a safetensors file's tensors, by name, and its size check.
fn safetensors_shapes(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let end = header.values().map(|t| t["data_offsets"][1].as_u64().unwrap() as usize).max().unwrap();
    assert_eq!(bytes.len(), 8 + len + end, "the data ends where the header says");
    header.into_iter().map(|(k, v)| (k, v["shape"].clone())).collect()
}

#[test]
fn sapiensid_bench_times_its_inputs_apart_and_can_save_them() {
    let tmp = tempfile::tempdir().unwrap();
    let crops = data().join("person_search_demo/query"); // two Market-1501 crops
    let weights = seed_fixture("sapiensid_tiny.weights.safetensors");

    let out = osprey(&[
        "bench",
        "person-model",
        "--model",
        "sapiensid",
        "--weights",
        s(&weights),
        "--batch",
        "3",
        "--iters",
        "1",
        "--json",
        "--inputs",
        s(&crops),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["model"].as_str(), report["modality"].as_str()), (Some("sapiensid"), Some("body")));
    assert_eq!(report["batch"].as_u64(), Some(3), "{report}");
    assert_eq!(report["finite"], true);
    let per_s = |k: &str| report[k].as_f64().unwrap_or_else(|| panic!("{k} in {report}"));
    assert!(per_s("prepare_crops_per_s") > 0.0);
    // End to end is the network plus preparing its inputs: slower than either.
    assert!(per_s("end_to_end_embeddings_per_s") < per_s("embeddings_per_s"), "{report}");
    assert!(per_s("end_to_end_embeddings_per_s") < per_s("prepare_crops_per_s"), "{report}");

    // The prepared inputs of the distinct crops, without weights.
    let saved = tmp.path().join("inputs.safetensors");
    let out = osprey(&[
        "bench",
        "person-model",
        "--model",
        "sapiensid",
        "--save-inputs",
        s(&saved),
        "--batch",
        "3",
        "--inputs",
        s(&crops),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["crops"].as_u64(), Some(2), "{report}");
    let shapes = safetensors_shapes(&saved);
    assert_eq!(shapes["image"], serde_json::json!([2, 3, 384, 384]));
    assert_eq!(shapes["keypoints"], serde_json::json!([2, 22, 2]));
    // Whole standing people: MoveNet finds most of the 17 body points.
    assert!(report["body_points_found_mean"].as_f64().unwrap() >= 10.0, "{report}");

    // Only SapiensID reads keypoints.
    let out =
        osprey(&["bench", "person-model", "--model", "osnet-x1_0", "--save-inputs", s(&saved), "--inputs", s(&crops)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("for sapiensid"), "{stderr}");
}
