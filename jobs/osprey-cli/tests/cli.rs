//! The `osprey` binary end to end on a local root: bring-your-own-embeddings
//! import, open-set search, SQL (checked against DuckDB reading the same
//! Parquet files), erasure, and failures that leave nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

fn osprey(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_osprey")).args(args).env_remove("OSPREY_ROOT").output().expect("osprey runs")
}

fn ok(args: &[&str]) -> String {
    let out = osprey(args);
    assert!(out.status.success(), "osprey {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str], needle: &str) {
    let out = osprey(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "osprey {args:?} should fail with 2:\n{stderr}");
    assert!(stderr.contains(needle), "osprey {args:?}: expected `{needle}` in:\n{stderr}");
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() { stack.push(e.path()) } else { out.push(e.path()) }
        }
    }
    out.sort();
    out
}

fn python() -> String {
    std::env::var("OSPREY_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs a query with DuckDB over every template Parquet file under `root`.
fn duckdb(root: &Path, query: &str) -> String {
    let script = format!(
        "import duckdb, sys\ncon = duckdb.connect()\ncon.execute(\"CREATE VIEW templates AS SELECT * FROM read_parquet('{}/templates/**/*.parquet', hive_partitioning=false)\")\nfor row in con.execute(sys.argv[1]).fetchall():\n    print(','.join(str(v) for v in row))\n",
        root.display()
    );
    let out = Command::new(python()).args(["-c", &script, query]).output().expect("python runs");
    assert!(
        out.status.success(),
        "DuckDB reference failed (run infra/scripts/setup.sh for the test venv):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn write_npy_f32(path: &Path, rows: usize, dim: usize, values: &[f32]) {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn import_search_sql_and_erase() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("root");
    let rs = root.to_str().unwrap();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();

    // (seed 42: `bench gen`'s default)
    common::generate_vectors(10_000, 64, 500, 0.3, 42, &d.join("g.npy"), &d.join("g.txt"));
    let log = osprey(&[
        "gallery",
        "import",
        "--root",
        rs,
        "--gallery",
        "people",
        "--input",
        &p("g.npy"),
        "--subjects",
        &p("g.txt"),
        "--model",
        "vec64",
    ]);
    assert!(log.status.success(), "{}", String::from_utf8_lossy(&log.stderr));
    assert!(String::from_utf8_lossy(&log.stderr).contains("operating threshold"));

    // SQL counts and groups exactly as DuckDB does on the same files.
    let count = "SELECT count(*) FROM templates";
    assert_eq!(
        ok(&["sql", "--root", rs, "--format", "csv", count]).lines().nth(1).unwrap(),
        duckdb(&root, count).trim()
    );
    let group =
        "SELECT subject_id, count(*) AS n FROM templates GROUP BY subject_id ORDER BY n DESC, subject_id LIMIT 20";
    let ours: Vec<String> =
        ok(&["sql", "--root", rs, "--format", "csv", group]).lines().skip(1).map(str::to_string).collect();
    let theirs: Vec<String> = duckdb(&root, group).lines().map(str::to_string).collect();
    assert_eq!(ours, theirs);
    let by_model = "SELECT model, gallery, count(DISTINCT subject_id) FROM templates GROUP BY model, gallery";
    assert_eq!(
        ok(&["sql", "--root", rs, "--format", "csv", by_model]).lines().nth(1).unwrap(),
        duckdb(&root, by_model).trim()
    );

    let galleries = ok(&["gallery", "list", "--root", rs, "--format", "json"]);
    let g: serde_json::Value = serde_json::from_str(&galleries).unwrap();
    assert_eq!(g[0]["subjects"], 500);
    assert_eq!(g[0]["templates"], 10000);
    assert_eq!(g[0]["index"], "Flat");

    // Failures are clear and write nothing.
    let before = files_under(&root);
    fails(
        &[
            "gallery",
            "import",
            "--root",
            rs,
            "--gallery",
            "people",
            "--input",
            &p("g.npy"),
            "--subjects",
            &p("g.txt"),
            "--model",
            "vec64",
        ],
        "already",
    );
    write_npy_f32(&d.join("wide.npy"), 2, 3, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    std::fs::write(d.join("two.txt"), "x\ny\n").unwrap();
    fails(
        &[
            "gallery",
            "import",
            "--root",
            rs,
            "--gallery",
            "people",
            "--input",
            &p("wide.npy"),
            "--subjects",
            &p("two.txt"),
            "--model",
            "vec64",
        ],
        "64-d",
    );
    write_npy_f32(&d.join("nan.npy"), 2, 3, &[1.0, f32::NAN, 0.0, 0.0, 1.0, 0.0]);
    fails(
        &[
            "gallery",
            "import",
            "--root",
            rs,
            "--gallery",
            "fresh",
            "--input",
            &p("nan.npy"),
            "--subjects",
            &p("two.txt"),
        ],
        "NaN",
    );
    std::fs::write(d.join("empty.npy"), b"").unwrap();
    fails(
        &[
            "gallery",
            "import",
            "--root",
            rs,
            "--gallery",
            "fresh",
            "--input",
            &p("empty.npy"),
            "--subjects",
            &p("two.txt"),
        ],
        "empty",
    );
    fails(
        &["gallery", "import", "--root", rs, "--gallery", "fresh", "--input", &p("g.npy"), "--subjects", &p("two.txt")],
        "lines",
    );
    fails(
        &["gallery", "import", "--root", rs, "--gallery", "../evil", "--input", &p("g.npy"), "--subjects", &p("g.txt")],
        "invalid gallery name",
    );
    assert_eq!(files_under(&root), before, "a failed import left files behind");

    // Parquet input: a template table is itself importable.
    let table = files_under(&root)
        .into_iter()
        .find(|f| f.extension().is_some_and(|e| e == "parquet") && f.to_string_lossy().contains("templates"))
        .unwrap();
    ok(&[
        "gallery",
        "import",
        "--root",
        rs,
        "--gallery",
        "copy",
        "--input",
        table.to_str().unwrap(),
        "--model",
        "vec64",
        "--index",
        "IVF64,Flat",
        "--nprobe",
        "8",
    ]);
    let show: serde_json::Value =
        serde_json::from_str(&ok(&["gallery", "show", "--root", rs, "--gallery", "copy", "--format", "json"])).unwrap();
    assert_eq!(show["index"], "IVF64,Flat");
    assert_eq!(show["nprobe"], 8);

    // Open-set search: probes from enrolled clusters match, others are unknown.
    common::generate_vectors(400, 64, 1000, 0.3, 9, &d.join("q.npy"), &d.join("q.txt"));
    let csv = ok(&[
        "search",
        "--root",
        rs,
        "--gallery",
        "people",
        "--input",
        &p("q.npy"),
        "--job-id",
        "job-1",
        "--format",
        "csv",
    ]);
    let truth: Vec<String> = std::fs::read_to_string(d.join("q.txt")).unwrap().lines().map(str::to_string).collect();
    let (mut right, mut wrong) = (0, 0);
    for (line, t) in csv.lines().skip(1).zip(&truth) {
        let cols: Vec<&str> = line.split(',').collect();
        let enrolled = t[8..].parse::<usize>().unwrap() < 500;
        let correct = if enrolled { cols[6] == "match" && cols[3] == t } else { cols[6] == "unknown" };
        if correct { right += 1 } else { wrong += 1 }
    }
    assert_eq!(right + wrong, 400);
    assert!(wrong <= 12, "{wrong} of 400 open-set decisions wrong");
    let n = ok(&[
        "sql",
        "--root",
        rs,
        "--format",
        "csv",
        "SELECT count(DISTINCT probe_template_id) FROM results WHERE job_id = 'job-1'",
    ]);
    assert_eq!(n.lines().nth(1), Some("400"));
    let joined = ok(&[
        "sql",
        "--root",
        rs,
        "--format",
        "csv",
        "SELECT count(*) FROM results r JOIN templates t ON t.template_id = r.probe_template_id WHERE r.rank = 1",
    ]);
    assert_eq!(joined.lines().nth(1), Some("400"));
    // An IVF index cannot reconstruct its vectors: calibration reads them back from the template table.
    let out = osprey(&[
        "search",
        "--root",
        rs,
        "--gallery",
        "copy",
        "--input",
        &p("q.npy"),
        "--fpir",
        "0.01",
        "--job-id",
        "job-2",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("calibrated now for FPIR 0.01"));
    fails(&["search", "--root", rs, "--gallery", "nobody", "--input", &p("q.npy")], "does not exist");
    fails(&["search", "--root", rs, "--gallery", "people", "--input", &p("wide.npy")], "64-d");

    // Erasure reaches the index, the template table and the results.
    let subject = "subject-00003";
    let erased: serde_json::Value = serde_json::from_str(&ok(&[
        "gallery",
        "delete-subject",
        "--root",
        rs,
        "--gallery",
        "people",
        "--subject",
        subject,
        "--format",
        "json",
    ]))
    .unwrap();
    assert!(erased["index_templates"].as_u64().unwrap() > 0);
    let left = ok(&[
        "sql",
        "--root",
        rs,
        "--format",
        "csv",
        &format!("SELECT count(*) FROM templates WHERE gallery = 'people' AND subject_id = '{subject}'"),
    ]);
    assert_eq!(left.lines().nth(1), Some("0"));
    let left = ok(&[
        "sql",
        "--root",
        rs,
        "--format",
        "csv",
        &format!("SELECT count(*) FROM results WHERE subject_id = '{subject}'"),
    ]);
    assert_eq!(left.lines().nth(1), Some("0"));
    fails(&["gallery", "delete-subject", "--root", rs, "--gallery", "people", "--subject", subject], "not enrolled");

    // Read-only SQL through the CLI.
    fails(&["sql", "--root", rs, "DROP TABLE templates"], "read-only");
}

#[test]
fn schema_files_match_the_code() {
    let schemas = format!("{}/../../schemas", std::env::var("CARGO_MANIFEST_DIR").unwrap());
    ok(&["schema", "--check", &schemas]);
}

#[test]
fn bench_search_reports_recall_and_memory_per_template() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let generate = |n, seed, out: &str, subjects: &str| {
        common::generate_vectors(n, 32, 200, 0.5, seed, &dir.path().join(out), &dir.path().join(subjects))
    };
    generate(4000, 1, "g.npy", "g.txt");
    generate(200, 2, "q.npy", "q.txt");
    let search = |extra: &[&str]| {
        let (g, q) = (p("g.npy"), p("q.npy"));
        let mut args = vec![
            "bench",
            "search",
            "--gallery-file",
            &g,
            "--query-file",
            &q,
            "--index",
            "IVF16,PQ8np",
            "--nprobe",
            "16",
            "--rerank",
            "0,100",
            "--k",
            "10",
            "--repeat",
            "1",
            "--json",
        ];
        args.extend_from_slice(extra);
        ok(&args).lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).collect::<Vec<_>>()
    };
    let subjects = p("g.txt");
    let reports = search(&["--subject-file", &subjects]);
    assert_eq!(reports.len(), 2, "{reports:?}");
    let (coarse, reranked) = (&reports[0], &reports[1]);
    assert_eq!((coarse["rerank"].as_u64(), reranked["rerank"].as_u64()), (Some(0), Some(100)));
    let recall = |r: &serde_json::Value| r["recall_at_k"].as_f64().unwrap();
    assert!(recall(reranked) > 0.95 && recall(reranked) > recall(coarse) + 0.1, "{reports:?}");
    // 8 bytes of code and 8 of id per template; the id map's heap part
    // (the UUID template ids are in a mapped file): 20 templates per subject.
    let id_map = reranked["id_map_bytes_per_template"].as_f64().unwrap();
    assert!(id_map > 4.0 && id_map < 40.0, "{reports:?}");
    assert!(reranked["bytes_per_vector"].as_f64().unwrap() < 40.0, "{reports:?}");
    assert!(reranked.get("loaded_memory_bytes_per_template").is_some(), "{reports:?}");
    // On disk: the vectors (4 bytes a dimension) and the ids (36-byte UUIDs).
    let disk = reranked["disk_bytes_per_template"].as_f64().unwrap();
    assert!(disk > 4.0 * 32.0 + 36.0 && disk < 4.0 * 32.0 + 50.0, "{reports:?}");
    // Every template its own subject costs the id map more.
    let own = search(&[]);
    assert!(own[0]["id_map_bytes_per_template"].as_f64().unwrap() > id_map, "{own:?}");

    fails(
        &["bench", "search", "--gallery-file", &p("g.npy"), "--query-file", &p("q.npy"), "--subject-file", &p("q.txt")],
        "names 200 subjects for 4000 gallery vectors",
    );
}
