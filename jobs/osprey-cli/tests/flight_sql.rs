//! Arrow Flight SQL on `osprey serve --flight-listen`, queried by a standard
//! client from PyPI (ADBC's Flight SQL driver with pyarrow, from the test
//! venv: infra/requirements-test.txt): a reader key gets the same rows as
//! `osprey sql` for a join over templates and results; the `audit` table is
//! for admin keys only, writes are refused, and an unknown key is
//! UNAUTHENTICATED.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

const ADMIN: &str = "admin-key-0123456789";
const READER: &str = "reader-key-0123456789";

/// Connects with ADBC (bearer key in `authorization`), runs one query with
/// the DB-API cursor and prints `{"ok": rows}` or `{"error", "status", "message"}`.
const CLIENT: &str = r#"
import json, sys
import adbc_driver_flightsql.dbapi as flight_sql
from adbc_driver_flightsql import DatabaseOptions

uri, key, query, mode = sys.argv[1:5]
try:
    with flight_sql.connect(uri, db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: "Bearer " + key}) as conn:
        if mode == "cursor":  # DB-API: ADBC prepares the statement, then runs it
            with conn.cursor() as cur:
                cur.execute(query)
                rows = cur.fetch_arrow_table().to_pylist()
        else:  # ADBC's statement API without prepare: a plain Flight SQL statement query
            import adbc_driver_manager, pyarrow
            stmt = adbc_driver_manager.AdbcStatement(conn.adbc_connection)
            try:
                stmt.set_sql_query(query)
                stream, _ = stmt.execute_query()
                rows = pyarrow.RecordBatchReader._import_from_c(stream.address).read_all().to_pylist()
            finally:
                stmt.close()
    print(json.dumps({"ok": rows}, default=str))
except Exception as e:
    code = getattr(e, "status_code", None)
    print(json.dumps({"error": type(e).__name__, "status": getattr(code, "name", str(code)), "message": str(e)}))
"#;

fn osprey(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_osprey")).args(args).env_remove("OSPREY_ROOT").output().expect("osprey runs")
}

fn ok(args: &[&str]) -> String {
    let out = osprey(args);
    assert!(out.status.success(), "osprey {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn models() -> PathBuf {
    std::env::var_os("OSPREY_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../models"))
}

/// Runs [`CLIENT`] with `key` and `query` through the DB-API cursor:
/// `Ok(rows)` or `Err(error object)`.
fn flight(uri: &str, key: &str, query: &str) -> Result<Vec<Value>, Value> {
    client(uri, key, query, "cursor")
}

fn client(uri: &str, key: &str, query: &str, mode: &str) -> Result<Vec<Value>, Value> {
    let python = std::env::var("OSPREY_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args(["-c", CLIENT, uri, key, query, mode])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{python}` ({e}): run infra/scripts/setup.sh and set OSPREY_PYTHON"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !stdout.trim().is_empty(),
        "the ADBC client failed (is adbc-driver-flightsql installed? run infra/scripts/setup.sh):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).expect("client prints JSON");
    match v.get("ok") {
        Some(rows) => Ok(rows.as_array().unwrap().clone()),
        None => Err(v),
    }
}

#[test]
fn adbc_flight_sql_client_reads_what_osprey_sql_reads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("root");
    let rs = root.to_str().unwrap();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();

    // A small gallery and one search job: templates and results on the root.
    let generate = |n, clusters, seed, out: &str, subjects: &str| {
        common::generate_vectors(n, 32, clusters, 0.3, seed, &d.join(out), &d.join(subjects))
    };
    generate(600, 60, 1, "g.npy", "g.txt");
    ok(&[
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
        "vec32",
    ]);
    generate(50, 120, 9, "q.npy", "q.txt");
    ok(&[
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

    // `osprey serve` with REST and Flight SQL, no in-process workers.
    let (port, flight_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let flight_listen = format!("127.0.0.1:{flight_port}");
    let log = d.join("serve.log");
    let server = Proc(
        Command::new(env!("CARGO_BIN_EXE_osprey"))
            .args(["serve", "--root", rs, "--listen", &listen, "--flight-listen", &flight_listen, "--workers", "0"])
            .env_remove("OSPREY_ROOT")
            .env("OSPREY_MODELS", models())
            .env("OSPREY_API_KEYS", format!("admin:{ADMIN},reader:{READER}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("osprey serve starts"),
    );
    let t0 = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("Flight SQL on grpc://") {
        assert!(t0.elapsed() < Duration::from_secs(60), "no Flight SQL:\n{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    let uri = format!("grpc://{flight_listen}");

    // A join over templates and results: the same rows as `osprey sql`.
    let join = "SELECT t.template_id, t.model, r.rank, r.subject_id, r.decision, \
                round(CAST(r.score AS DOUBLE), 5) AS score \
                FROM results r JOIN templates t ON r.probe_template_id = t.template_id \
                WHERE r.job_id = 'job-1' AND r.rank <= 3 ORDER BY t.template_id, r.rank";
    let theirs = flight(&uri, READER, join).unwrap_or_else(|e| panic!("reader query failed: {e}"));
    let ours: Vec<Value> = serde_json::from_str(&ok(&["sql", "--root", rs, "--format", "json", join])).unwrap();
    assert!(ours.len() >= 50, "{} joined rows", ours.len());
    assert_eq!(theirs, ours);
    // The same through a plain (unprepared) statement query.
    assert_eq!(client(&uri, READER, join, "statement").unwrap_or_else(|e| panic!("statement query: {e}")), ours);

    // An empty answer still has its columns; the galleries table is there.
    assert_eq!(
        flight(&uri, READER, "SELECT * FROM templates WHERE subject_id = 'nobody'").unwrap(),
        Vec::<Value>::new()
    );
    let galleries = flight(&uri, READER, "SELECT name, num_subjects FROM galleries").unwrap();
    assert_eq!(galleries, vec![serde_json::json!({"name": "people", "num_subjects": 60})]);

    // Audit rules as on /v1/sql: the audit table is for admin keys only.
    let refused = flight(&uri, READER, "SELECT count(*) AS n FROM audit").unwrap_err();
    assert!(refused["message"].as_str().unwrap().contains("audit"), "{refused}");
    let n = flight(&uri, ADMIN, "SELECT count(*) AS n FROM audit").unwrap();
    assert_eq!(n.len(), 1);

    // Read-only.
    let write = flight(&uri, ADMIN, "CREATE TABLE x AS SELECT 1").unwrap_err();
    assert!(write["message"].as_str().unwrap().contains("read-only"), "{write}");

    // An unknown key is refused as UNAUTHENTICATED.
    let denied = flight(&uri, "not-a-key-0123456789", join).unwrap_err();
    assert_eq!(denied["status"], "UNAUTHENTICATED", "{denied}");
    assert!(denied["message"].as_str().unwrap().contains("unknown API key"), "{denied}");
    let denied = client(&uri, "not-a-key-0123456789", join, "statement").unwrap_err();
    assert_eq!(denied["status"], "UNAUTHENTICATED", "{denied}");
    drop(server);
}
