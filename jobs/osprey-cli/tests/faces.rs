//! Real faces end to end through the binary: `osprey embed` on photographs
//! from face_recognition's examples → `osprey gallery import` → `osprey
//! search` (open-set) → `osprey sql` joining results to probe templates.
//! Bad inputs (corrupt, empty, no face) become rows with an `error`, and the
//! run goes on.

mod common;

use std::path::Path;

use common::{data, ok, s};

#[test]
fn embed_enrol_and_search_real_faces() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let train = data().join("face_recognition/examples/knn_examples/train");
    let test = data().join("face_recognition/examples/knn_examples/test");

    // Enrol four people from their folders (portraits: no upsampling needed);
    // rose_leslie stays a stranger.
    let gallery = tmp.path().join("gallery.parquet");
    let people = ["alex_lacamoire", "biden", "kit_harington", "obama"].map(|p| train.join(p));
    let mut args = vec!["embed", "--largest-face", "--upsample", "0", "--subject-from-parent", "--out", s(&gallery)];
    args.extend(people.iter().map(|p| s(p)));
    let (_, log) = ok(&args);
    assert!(log.contains("7 faces from 7 images"), "{log}");
    ok(&[
        "gallery",
        "import",
        "--root",
        s(&root),
        "--gallery",
        "people",
        "--input",
        s(&gallery),
        "--model",
        "dlib-resnet-v1",
    ]);

    // Probes: the test photos, the stranger, and inputs that must fail cleanly.
    let corrupt = tmp.path().join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 definitely not a whole JPEG").unwrap();
    let empty = tmp.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let list = tmp.path().join("probes.txt");
    let dogs = data().join("dlib/examples/faces/dogs.jpg");
    std::fs::write(&list, format!("# probes\n{}\n{}\n\n{}\n", s(&corrupt), s(&empty), s(&dogs))).unwrap();
    let probes = tmp.path().join("probes.parquet");
    let list_arg = format!("@{}", s(&list));
    let rose = train.join("rose_leslie");
    let (_, log) = ok(&["embed", "--out", s(&probes), s(&test), s(&rose), &list_arg]);
    assert!(log.contains("empty file"), "{log}");
    assert!(log.contains("no face found"), "{log}");
    assert!(log.contains("corrupt.jpg"), "{log}");

    ok(&["search", "--root", s(&root), "--gallery", "people", "--input", s(&probes), "--job-id", "probe-run"]);
    // The probe templates live under the root next to the results; SQL joins them.
    let (csv, _) = ok(&[
        "sql",
        "--root",
        s(&root),
        "--format",
        "csv",
        "SELECT t.media_uri, r.subject_id, r.decision, r.score FROM results r \
         JOIN templates t ON t.template_id = r.probe_template_id WHERE r.rank = 1 ORDER BY t.media_uri, r.score DESC",
    ]);
    let rows: Vec<(String, String, String)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let file = Path::new(f[0]).file_name().unwrap().to_string_lossy().into_owned();
            (file, f[1].to_string(), f[2].to_string())
        })
        .collect();
    eprintln!("{csv}");
    let decided = |file: &str| -> Vec<(String, String)> {
        rows.iter().filter(|r| r.0 == file).map(|r| (r.1.clone(), r.2.clone())).collect()
    };
    let matched = |file: &str, who: &str| decided(file).iter().any(|(s, d)| s == who && d == "match");
    assert!(matched("alex_lacamoire1.jpg", "alex_lacamoire"), "{csv}");
    assert!(matched("obama1.jpg", "obama"), "{csv}");
    assert!(matched("johnsnow_test1.jpg", "kit_harington"), "{csv}");
    assert!(matched("obama_and_biden.jpg", "obama") && matched("obama_and_biden.jpg", "biden"), "{csv}");
    assert!(matched("kit_with_rose.jpg", "kit_harington"), "{csv}");
    // Rose Leslie is not enrolled: her own photos, and her face next to Kit's.
    for file in ["img1.jpg", "img2.jpg"] {
        assert!(decided(file).iter().all(|(_, d)| d == "unknown"), "{file}: {csv}");
    }
    assert_eq!(decided("kit_with_rose.jpg").iter().filter(|(_, d)| d == "unknown").count(), 1, "{csv}");
}
