//! Coordinator configuration: a TOML file, overridden by the environment
//! (`OSPREY_ROOT`, `OSPREY_LISTEN`, `OSPREY_API_KEYS`,
//! `OSPREY_ALLOWED_PREFIXES`, `OSPREY_FLIGHT_LISTEN`), overridden by flags.

use std::path::{Path, PathBuf};

use osprey_api::Role;
use osprey_core::{Error, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::search_batch::BatchLimits;

/// The audit journal's folder inside a local root.
pub const AUDIT_JOURNAL_DIR: &str = "audit-journal";

/// Everything the coordinator needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Root URL: a folder, `file:///…` or `s3://bucket/prefix`.
    pub root: String,
    /// Address to listen on, e.g. `127.0.0.1:8080`.
    pub listen: String,
    /// `role:key` pairs; roles are `admin`, `operator` and `reader`.
    pub api_keys: Vec<String>,
    /// Inputs may be under the root or one of these URL or path prefixes.
    pub allowed_prefixes: Vec<String>,
    /// A leased task not heard from for this long goes back to the queue.
    pub lease_seconds: u64,
    /// Attempts before a task fails for good.
    pub max_attempts: u32,
    /// Largest JSON request body.
    pub max_body_bytes: usize,
    /// Largest image upload to `POST /v1/search`.
    pub max_upload_bytes: usize,
    /// Folder with the face models (for image searches; default `$OSPREY_MODELS`).
    pub models: Option<PathBuf>,
    /// Address for Arrow Flight SQL (gRPC, read-only SQL with the same keys),
    /// e.g. `127.0.0.1:50051`; none: not served.
    pub flight_listen: Option<String>,
    /// Finished jobs kept in memory beyond those of the last
    /// `finished_jobs_memory_seconds`: the ones that ended last. The others
    /// are answered from their records in the store (slower listings).
    pub max_finished_jobs_in_memory: usize,
    /// Jobs that finished this recently stay in memory whatever their number.
    pub finished_jobs_memory_seconds: u64,
    /// Concurrent `POST /v1/search` requests on one gallery index are
    /// gathered into one FAISS call: searches that arrive while a batch runs
    /// form the next one, and a search waits at most this many microseconds
    /// more for others to join its batch (less once as many wait as the
    /// previous batch held). Default 0: no deliberate wait, which measured
    /// best on a 2-core machine with 8 clients (docs/benchmarks.md); a wait
    /// pays where one FAISS call over many queries is much cheaper than
    /// each alone (exact search from 20 queries on, through BLAS).
    pub search_batch_wait_us: u64,
    /// Most searches gathered into one batch.
    pub search_batch_max: usize,
    /// FAISS threads for one batch's search (0: every core). One leaves
    /// the other cores to HTTP, JSON and the audit while a batch runs.
    pub search_threads: usize,
    /// Batches of one gallery index searched at once, each on
    /// `search_threads` threads (0: four per core). They share the
    /// gallery's lock; an enrolment's write waits for them. More batches
    /// than cores keep the cores busy across each batch's hand-offs (HTTP
    /// task → batch → FAISS thread → answer): on 2 cores with 8 clients, 2
    /// at once measured 0.79–0.94× the in-process rate, 6 to 16 at once
    /// 1.02–1.09× (docs/benchmarks.md).
    pub search_concurrency: usize,
    /// Enrolment group commits: an enrol task adds its templates to the
    /// gallery's index in memory (durably recorded, see
    /// `osprey_index::mark_uncommitted`), and the gallery's snapshot (its
    /// whole index) is written once this many templates were enrolled into
    /// it since the last one. 1: a snapshot after every task.
    pub enrol_commit_templates: usize,
    /// ... or once the oldest enrolment not in a snapshot is this many
    /// seconds old. Either way a snapshot is written when an enrol job
    /// ends. 0: only by count and at job end.
    pub enrol_commit_seconds: u64,
    /// REST searches' audit rows are appended to a local journal before
    /// the searches are answered, and become one file of the audit table
    /// once the journal's segment is this many seconds old (or when an
    /// admin's SQL reads the table through the coordinator, or it stops).
    /// 0: no journal, each group of searches is a file in the store before
    /// they are answered (slower: docs/benchmarks.md).
    pub audit_flush_seconds: u64,
    /// The journal's local folder. Default: `audit-journal/` inside the
    /// root when the root is a local folder (as durable as the table's own
    /// files). An S3 root has no journal unless this names a folder on a
    /// disk that outlives the coordinator.
    pub audit_journal: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            root: String::new(),
            listen: "127.0.0.1:8080".into(),
            api_keys: Vec::new(),
            allowed_prefixes: Vec::new(),
            lease_seconds: 30,
            max_attempts: 3,
            max_body_bytes: 1 << 20,
            max_upload_bytes: 20 << 20,
            models: None,
            flight_listen: None,
            max_finished_jobs_in_memory: 1000,
            finished_jobs_memory_seconds: 3600,
            search_batch_wait_us: 0,
            search_batch_max: 64,
            search_threads: 1,
            search_concurrency: 0,
            enrol_commit_templates: 10_000,
            enrol_commit_seconds: 60,
            audit_flush_seconds: 5,
            audit_journal: None,
        }
    }
}

impl Config {
    /// Reads `file` (if given), then the environment on top.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let mut config = match file {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| Error::invalid(format!("cannot read config file {}: {e}", f.display())))?;
                toml::from_str(&text).map_err(|e| Error::invalid(format!("config file {}: {e}", f.display())))?
            }
            None => Config::default(),
        };
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(v) = var("OSPREY_ROOT") {
            config.root = v;
        }
        if let Some(v) = var("OSPREY_LISTEN") {
            config.listen = v;
        }
        if let Some(v) = var("OSPREY_FLIGHT_LISTEN") {
            config.flight_listen = Some(v);
        }
        if let Some(v) = var("OSPREY_API_KEYS") {
            config.api_keys = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        }
        if let Some(v) = var("OSPREY_ALLOWED_PREFIXES") {
            config.allowed_prefixes = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        }
        Ok(config)
    }

    /// The audit journal's folder, configured or in a local root (also
    /// when `audit_flush_seconds` is 0: what an earlier run left there is
    /// still stored).
    pub fn audit_journal_dir(&self, root: &osprey_store::Root) -> Option<PathBuf> {
        self.audit_journal.clone().or_else(|| root.local_dir().map(|d| d.join(AUDIT_JOURNAL_DIR)))
    }

    /// Where REST audit rows wait before they are a table file, if anywhere.
    pub fn audit_journal(&self, root: &osprey_store::Root) -> Option<crate::audit::AuditJournal> {
        if self.audit_flush_seconds == 0 {
            return None;
        }
        let dir = self.audit_journal_dir(root)?;
        Some(crate::audit::AuditJournal { dir, flush_after: std::time::Duration::from_secs(self.audit_flush_seconds) })
    }

    /// The search batching limits, checked.
    pub fn search_batching(&self) -> Result<BatchLimits> {
        if self.search_batch_max == 0 {
            return Err(Error::invalid("search_batch_max must be at least 1 (1: no batching)"));
        }
        // Longer waits only add latency: batches fill while an earlier one runs.
        if self.search_batch_wait_us > 1_000_000 {
            return Err(Error::invalid("search_batch_wait_us must be at most 1000000 (one second)"));
        }
        Ok(BatchLimits {
            max_wait: std::time::Duration::from_micros(self.search_batch_wait_us),
            max_batch: self.search_batch_max,
            max_in_flight: match self.search_concurrency {
                0 => 4 * std::thread::available_parallelism().map_or(1, usize::from),
                n => n,
            },
        })
    }

    /// The API keys, checked: each `role:key` with a known role and a key of
    /// at least 8 characters.
    pub fn keys(&self) -> Result<Vec<ApiKey>> {
        if self.api_keys.is_empty() {
            return Err(Error::invalid(
                "no API keys: set OSPREY_API_KEYS to comma-separated role:key pairs (roles: admin, operator, reader)",
            ));
        }
        self.api_keys
            .iter()
            .map(|pair| {
                let (role, key) = pair
                    .split_once(':')
                    .ok_or_else(|| Error::invalid("API keys are role:key pairs, e.g. admin:s3cret-key".to_string()))?;
                let role = Role::parse(role).ok_or_else(|| {
                    Error::invalid(format!("unknown role `{role}` in OSPREY_API_KEYS: use admin, operator or reader"))
                })?;
                if key.len() < 8 {
                    return Err(Error::invalid(format!("the {} API key is shorter than 8 characters", role.as_str())));
                }
                Ok(ApiKey::new(role, key))
            })
            .collect()
    }
}

/// One API key: its role and a digest that names it in logs and the audit
/// table (the key itself is never stored).
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub role: Role,
    pub key_id: String,
    digest: [u8; 32],
}

impl ApiKey {
    pub fn new(role: Role, key: &str) -> ApiKey {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let key_id = format!("{}-{}", role.as_str(), hex(&digest[..4]));
        ApiKey { role, key_id, digest }
    }

    /// Whether `presented` is this key (compared by digest, in constant time).
    pub fn matches(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        d.iter().zip(&self.digest).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
