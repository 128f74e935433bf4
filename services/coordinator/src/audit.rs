//! The audit table: every search appends rows under `audit/` (one flat
//! folder: `rest-<time>-<id>.parquet`, `job-<task>.parquet`) before it is
//! answered. REST searches are group-committed: rows that arrive while a
//! file is being written go into the next file together, so many concurrent
//! searches cost a few small writes, not one each.

use osprey_core::{Error, Result};
use osprey_store::{AuditRow, Root, audit_to_batch, encode_parquet, layout};
use tokio::sync::{mpsc, oneshot};

type Pending = (Vec<AuditRow>, oneshot::Sender<Result<()>>);

/// Appends audit rows.
pub struct AuditLog {
    root: Root,
    tx: mpsc::Sender<Pending>,
}

/// Rows per file at most.
const MAX_ROWS_PER_FILE: usize = 10_000;

impl AuditLog {
    /// Starts the writer task.
    pub fn start(root: Root) -> AuditLog {
        let (tx, mut rx) = mpsc::channel::<Pending>(1024);
        let writer_root = root.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                let mut rows = batch[0].0.len();
                while rows < MAX_ROWS_PER_FILE {
                    match rx.try_recv() {
                        Ok(p) => {
                            rows += p.0.len();
                            batch.push(p);
                        }
                        Err(_) => break,
                    }
                }
                let all: Vec<AuditRow> = batch.iter().flat_map(|(r, _)| r.iter().cloned()).collect();
                let key = format!(
                    "{}/rest-{}-{}.parquet",
                    layout::AUDIT,
                    chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f"),
                    uuid::Uuid::new_v4().simple()
                );
                let outcome = write(&writer_root, &key, &all).await;
                for (_, reply) in batch {
                    let _ = reply.send(outcome.clone());
                }
            }
        });
        AuditLog { root, tx }
    }

    /// Records REST searches; returns once they are stored.
    pub async fn append(&self, rows: Vec<AuditRow>) -> Result<()> {
        let (reply, done) = oneshot::channel();
        self.tx.send((rows, reply)).await.map_err(|_| Error::internal("the audit writer stopped"))?;
        done.await.map_err(|_| Error::internal("the audit writer stopped"))?
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

async fn write(root: &Root, key: &str, rows: &[AuditRow]) -> Result<()> {
    let batch = audit_to_batch(rows)?;
    root.put(key, encode_parquet(batch.schema(), &[batch])?).await
}
