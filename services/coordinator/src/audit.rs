//! The audit table: every search is recorded before it is answered, under
//! `audit/` (one flat folder: `rest-<time>-<id>.parquet`,
//! `job-<task>.parquet`).
//!
//! REST searches are group-committed by one writer task: rows that arrive
//! while it writes go into its next write together. Where they go first
//! depends on the configuration ([`AuditJournal`]):
//!
//! * **a journal** (the default on a local root): each group is appended to
//!   a local file (`<segment>.jsonl`, one JSON row per line) before the
//!   searches are answered, and the segment becomes one Parquet file in the
//!   table when it is `flush_after` old, holds [`MAX_SEGMENT_ROWS`] rows, an
//!   admin's SQL reads the table through the coordinator, or the coordinator
//!   stops. A segment left by a killed coordinator is stored when the next
//!   one starts, under the same name (put-if-absent: nothing twice).
//! * **none**: each group is a Parquet file in the store before its searches
//!   are answered. Safe where the coordinator has no durable local disk (an
//!   S3 root), and slow under load: a file per group is hundreds of files a
//!   second, and creating them cost more CPU than the searches
//!   (docs/benchmarks.md, "Search through the REST API").

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use osprey_core::{Error, ErrorKind, Result};
use osprey_store::{AuditRow, PutOutcome, Root, audit_to_batch, encode_parquet, encode_parquet_uncompressed, layout};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Where REST audit rows wait before they are a file of the table.
#[derive(Debug, Clone)]
pub struct AuditJournal {
    /// Local folder of the journal's segments.
    pub dir: PathBuf,
    /// A segment becomes a table file once it is this old.
    pub flush_after: Duration,
}

enum Ask {
    Rows(Vec<AuditRow>, oneshot::Sender<Result<()>>),
    Flush(oneshot::Sender<Result<()>>),
}

/// Appends audit rows.
pub struct AuditLog {
    root: Root,
    tx: mpsc::Sender<Ask>,
}

/// Rows per file when each group is its own file.
const MAX_ROWS_PER_FILE: usize = 10_000;
/// Rows per journal segment (and so per table file) at most.
pub const MAX_SEGMENT_ROWS: usize = 100_000;

impl AuditLog {
    /// Stores what a previous coordinator left in the journal folder
    /// `leftovers` (if it exists: also when this one runs without a
    /// journal), then starts the writer task, journalling into `journal`.
    pub async fn start(root: Root, journal: Option<AuditJournal>, leftovers: Option<&Path>) -> Result<AuditLog> {
        // The journal's own folder is read below: not twice.
        let journal_dir = journal.as_ref().map(|j| j.dir.as_path());
        if let Some(dir) = leftovers.filter(|d| d.is_dir() && Some(*d) != journal_dir) {
            recover(&root, dir).await?;
        }
        if let Some(j) = &journal {
            std::fs::create_dir_all(&j.dir).map_err(|e| {
                Error::new(ErrorKind::Storage, format!("cannot create audit journal {}: {e}", j.dir.display()))
            })?;
            recover(&root, &j.dir).await?;
        }
        let (tx, rx) = mpsc::channel::<Ask>(1024);
        tokio::spawn(write_forever(root.clone(), journal, rx));
        Ok(AuditLog { root, tx })
    }

    /// Records REST searches; returns once they are stored (in the journal
    /// or the table).
    pub async fn append(&self, rows: Vec<AuditRow>) -> Result<()> {
        let (reply, done) = oneshot::channel();
        self.tx.send(Ask::Rows(rows, reply)).await.map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    /// Moves the journal's rows into the table now (before SQL reads it).
    pub async fn flush(&self) -> Result<()> {
        let (reply, done) = oneshot::channel();
        self.tx.send(Ask::Flush(reply)).await.map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    /// Records the searches of one job task, under a key derived from the
    /// task (put-if-absent: a retried task adds nothing).
    pub async fn write_task(&self, task_id: &str, rows: &[AuditRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = audit_to_batch(rows)?;
        // Flat names: the table is one folder of files with one schema.
        let key = format!("{}/job-{task_id}.parquet", layout::AUDIT);
        self.root.put_if_absent(&key, encode_parquet(batch.schema(), &[batch])?).await?;
        Ok(())
    }
}

fn stopped() -> Error {
    Error::internal("the audit writer stopped")
}

/// A new `rest-<time>-<id>` name: the table file's stem, and the journal
/// segment's.
fn new_name() -> String {
    format!("rest-{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f"), uuid::Uuid::new_v4().simple())
}

fn table_key(name: &str) -> String {
    format!("{}/{name}.parquet", layout::AUDIT)
}

/// The writer: gathers what queued while it last wrote, writes it, answers.
async fn write_forever(root: Root, journal: Option<AuditJournal>, mut rx: mpsc::Receiver<Ask>) {
    let mut segment: Option<Segment> = None;
    loop {
        let due = segment.as_ref().zip(journal.as_ref()).map(|(s, j)| s.opened + j.flush_after);
        let first = match due {
            Some(due) => tokio::select! {
                ask = rx.recv() => ask,
                _ = tokio::time::sleep_until(due) => {
                    flush_logged(&root, &mut segment).await;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(first) = first else { break };
        let mut asks = vec![first];
        let mut rows = 0;
        while rows < MAX_ROWS_PER_FILE {
            match rx.try_recv() {
                Ok(ask) => {
                    if let Ask::Rows(r, _) = &ask {
                        rows += r.len();
                    }
                    asks.push(ask);
                }
                Err(_) => break,
            }
        }
        let (mut group, mut replies, mut flushes) = (Vec::new(), Vec::new(), Vec::new());
        for ask in asks {
            match ask {
                Ask::Rows(r, reply) => {
                    group.extend(r);
                    replies.push(reply);
                }
                Ask::Flush(reply) => flushes.push(reply),
            }
        }
        if !replies.is_empty() {
            let outcome = match &journal {
                Some(j) => append_to_segment(&root, j, &mut segment, group).await,
                None => write_file(&root, &table_key(&new_name()), &group).await,
            };
            for reply in replies {
                let _ = reply.send(outcome.clone());
            }
        }
        if !flushes.is_empty() {
            let outcome = flush(&root, &mut segment).await;
            for reply in flushes {
                let _ = reply.send(outcome.clone());
            }
        }
    }
    // Every sender is gone: the coordinator stopped.
    flush_logged(&root, &mut segment).await;
}

/// One group as its own uncompressed file: at a few rows a file, zstd's
/// set-up for each column cost more CPU than the search itself (perf, 100k
/// gallery, 8 clients) and saved almost nothing.
async fn write_file(root: &Root, key: &str, rows: &[AuditRow]) -> Result<()> {
    let batch = audit_to_batch(rows)?;
    root.put(key, encode_parquet_uncompressed(batch.schema(), &[batch])?).await
}

/// The journal segment being written: its file and (for the flush) its rows.
struct Segment {
    name: String,
    path: PathBuf,
    file: std::fs::File,
    rows: Vec<AuditRow>,
    opened: Instant,
}

/// Appends a group to the open segment (opening one if needed) and flushes
/// it once full. A failed append answers its searches with the error and
/// closes the segment (its earlier rows still go to the table).
async fn append_to_segment(
    root: &Root,
    journal: &AuditJournal,
    segment: &mut Option<Segment>,
    group: Vec<AuditRow>,
) -> Result<()> {
    let mut lines = Vec::with_capacity(group.len() * 256);
    for row in &group {
        serde_json::to_writer(&mut lines, row).map_err(|e| Error::internal(format!("audit row: {e}")))?;
        lines.push(b'\n');
    }
    if segment.is_none() {
        let name = new_name();
        let path = journal.dir.join(format!("{name}.jsonl"));
        let file = std::fs::OpenOptions::new().create_new(true).append(true).open(&path).map_err(|e| {
            Error::new(ErrorKind::Storage, format!("cannot open audit journal {}: {e}", path.display()))
        })?;
        *segment = Some(Segment { name, path, file, rows: Vec::new(), opened: Instant::now() });
    }
    let s = segment.as_mut().expect("opened above");
    if let Err(e) = s.file.write_all(&lines) {
        let e = Error::new(ErrorKind::Storage, format!("cannot append to audit journal {}: {e}", s.path.display()));
        flush_logged(root, segment).await;
        return Err(e);
    }
    s.rows.extend(group);
    if s.rows.len() >= MAX_SEGMENT_ROWS {
        flush_logged(root, segment).await;
    }
    Ok(())
}

/// Stores the open segment's rows as a table file and deletes the segment.
/// On failure the segment stays open (and is tried again when next due).
async fn flush(root: &Root, segment: &mut Option<Segment>) -> Result<()> {
    let Some(s) = segment.take() else { return Ok(()) };
    match store_segment(root, &s.name, &s.path, &s.rows).await {
        Ok(()) => Ok(()),
        Err(e) => {
            *segment = Some(Segment { opened: Instant::now(), ..s });
            Err(e)
        }
    }
}

async fn flush_logged(root: &Root, segment: &mut Option<Segment>) {
    if let Err(e) = flush(root, segment).await {
        tracing::error!("audit rows stay in the journal, not yet in the table: {e}");
    }
}

/// Writes a segment's rows as `audit/<name>.parquet` unless that file is
/// already there (a segment stored before a crash), then deletes the segment.
async fn store_segment(root: &Root, name: &str, path: &Path, rows: &[AuditRow]) -> Result<()> {
    if !rows.is_empty() {
        let batch = audit_to_batch(rows)?;
        let outcome = root.put_if_absent(&table_key(name), encode_parquet(batch.schema(), &[batch])?).await?;
        if outcome == PutOutcome::AlreadyExists {
            tracing::info!("audit journal segment {name} was already in the table");
        }
    }
    std::fs::remove_file(path).map_err(|e| {
        Error::new(ErrorKind::Storage, format!("cannot delete audit journal segment {}: {e}", path.display()))
    })
}

/// Stores every segment a stopped coordinator left in `dir`. A line that
/// does not read (an append cut short by the crash, whose search was never
/// answered) is skipped with a warning.
async fn recover(root: &Root, dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::new(ErrorKind::Storage, format!("cannot read audit journal {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    for path in paths {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::new(ErrorKind::Storage, format!("cannot read {}: {e}", path.display())))?;
        let mut rows = Vec::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            match serde_json::from_str::<AuditRow>(line) {
                Ok(row) => rows.push(row),
                Err(e) => {
                    tracing::warn!("audit journal {} line {}: skipped, not a whole row: {e}", path.display(), n + 1)
                }
            }
        }
        store_segment(root, &name, &path, &rows).await?;
        tracing::info!("stored {} audit rows a previous coordinator left in {}", rows.len(), path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use osprey_core::OpenSetDecision;

    use super::*;

    fn row(probe: &str) -> AuditRow {
        AuditRow {
            at_ms: 1_700_000_000_000,
            key_id: "k".into(),
            role: "reader".into(),
            source: "rest".into(),
            job_id: None,
            gallery: "g".into(),
            probe: probe.into(),
            top_subject_id: Some("alice".into()),
            top_score: Some(0.123_456_79),
            decision: OpenSetDecision::Match,
            threshold: 0.5,
        }
    }

    async fn table_rows(root: &Root) -> Vec<AuditRow> {
        let mut all = Vec::new();
        for o in root.glob("audit/*.parquet").await.unwrap() {
            let (_, batches) = osprey_store::decode_parquet(root.get(&o.key).await.unwrap(), &o.key).unwrap();
            for b in batches {
                let probes = b.column_by_name("probe").unwrap();
                let probes = probes.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
                all.extend(probes.iter().map(|p| row(p.unwrap())));
            }
        }
        all.sort_by(|a, b| a.probe.cmp(&b.probe));
        all
    }

    fn journal(dir: &Path, secs: u64) -> AuditJournal {
        AuditJournal { dir: dir.join("journal"), flush_after: Duration::from_secs(secs) }
    }

    #[tokio::test]
    async fn journal_rows_reach_the_table_on_flush_and_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(&dir.path().join("root").display().to_string()).unwrap();
        let log = AuditLog::start(root.clone(), Some(journal(dir.path(), 3600)), None).await.unwrap();
        log.append(vec![row("a"), row("b")]).await.unwrap();
        log.append(vec![row("c")]).await.unwrap();
        assert!(table_rows(&root).await.is_empty(), "journal rows wait for the flush");
        log.flush().await.unwrap();
        assert_eq!(table_rows(&root).await, vec![row("a"), row("b"), row("c")]);
        assert_eq!(root.glob("audit/*.parquet").await.unwrap().len(), 1, "one file per segment");
        assert_eq!(std::fs::read_dir(dir.path().join("journal")).unwrap().count(), 0, "segment deleted");
        log.flush().await.unwrap();
        assert_eq!(root.glob("audit/*.parquet").await.unwrap().len(), 1, "an empty flush writes nothing");

        // Due by age: a short flush_after stores without being asked.
        let root2 = Root::open(&dir.path().join("root2").display().to_string()).unwrap();
        let j = AuditJournal { dir: dir.path().join("journal2"), flush_after: Duration::from_millis(50) };
        let log2 = AuditLog::start(root2.clone(), Some(j), None).await.unwrap();
        log2.append(vec![row("d")]).await.unwrap();
        for _ in 0..100 {
            if !table_rows(&root2).await.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(table_rows(&root2).await, vec![row("d")]);
    }

    #[tokio::test]
    async fn without_a_journal_each_group_is_in_the_table_before_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(&dir.path().display().to_string()).unwrap();
        let log = AuditLog::start(root.clone(), None, None).await.unwrap();
        log.append(vec![row("a")]).await.unwrap();
        assert_eq!(table_rows(&root).await, vec![row("a")]);
    }

    #[tokio::test]
    async fn a_segment_left_by_a_killed_coordinator_is_stored_once_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(&dir.path().join("root").display().to_string()).unwrap();
        let j = journal(dir.path(), 3600);
        std::fs::create_dir_all(&j.dir).unwrap();
        let name = "rest-20261207T100000.000-0123456789abcdef";
        let mut text = String::new();
        for p in ["a", "b"] {
            text += &serde_json::to_string(&row(p)).unwrap();
            text.push('\n');
        }
        text += r#"{"at_ms":17000"#; // cut short by the kill
        std::fs::write(j.dir.join(format!("{name}.jsonl")), &text).unwrap();
        // The same segment stored once already (the crash came after the
        // put): nothing twice.
        let again = j.dir.join(format!("{name}.jsonl"));
        let _log = AuditLog::start(root.clone(), Some(j.clone()), None).await.unwrap();
        assert_eq!(table_rows(&root).await, vec![row("a"), row("b")]);
        assert!(!again.exists(), "segment deleted once stored");
        std::fs::write(&again, &text).unwrap();
        let _log = AuditLog::start(root.clone(), Some(j.clone()), None).await.unwrap();
        assert_eq!(table_rows(&root).await, vec![row("a"), row("b")], "stored under the same name, once");
        assert!(!again.exists());
        // A coordinator started without a journal still stores what one left.
        let root3 = Root::open(&dir.path().join("root3").display().to_string()).unwrap();
        std::fs::write(&again, &text).unwrap();
        let _log = AuditLog::start(root3.clone(), None, Some(&j.dir)).await.unwrap();
        assert_eq!(table_rows(&root3).await, vec![row("a"), row("b")]);
        assert!(!again.exists());
    }
}
