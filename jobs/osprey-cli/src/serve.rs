//! `osprey coordinator`, `osprey worker` and `osprey serve` (a coordinator
//! with in-process workers over a local root: the embedded default).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use osprey_coordinator::{Config, Coordinator};
use osprey_pipeline::{MediaAnalysis, MediaSettings};
use osprey_worker::WorkerConfig;

#[derive(clap::Args)]
pub struct CoordinatorArgs {
    /// TOML configuration file (keys: root, listen, api_keys, allowed_prefixes,
    /// lease_seconds, max_attempts, max_body_bytes, max_upload_bytes, models,
    /// flight_listen, max_finished_jobs_in_memory, finished_jobs_memory_seconds,
    /// enrol_commit_templates, enrol_commit_seconds, search_batch_wait_us,
    /// search_batch_max, search_threads, search_concurrency,
    /// audit_flush_seconds, audit_journal).
    #[arg(long, env = "OSPREY_CONFIG")]
    config: Option<PathBuf>,
    /// Root URL (overrides the file and OSPREY_ROOT).
    #[arg(long)]
    root: Option<String>,
    /// Address to listen on (overrides the file and OSPREY_LISTEN).
    #[arg(long)]
    listen: Option<String>,
    /// Folder with the face models, for image searches (default: $OSPREY_MODELS).
    #[arg(long, env = "OSPREY_MODELS")]
    models: Option<PathBuf>,
    /// Also serve Arrow Flight SQL (read-only SQL for ADBC, JDBC, DBeaver,
    /// Superset; same API keys as bearer tokens) on this address, e.g.
    /// 127.0.0.1:50051 (overrides the file and OSPREY_FLIGHT_LISTEN).
    #[arg(long, value_name = "ADDR")]
    flight_listen: Option<String>,
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Coordinator URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "OSPREY_COORDINATOR")]
    coordinator: String,
    /// An operator or admin API key.
    #[arg(long, env = "OSPREY_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Names this worker in logs (default: host and process id).
    #[arg(long)]
    worker_id: Option<String>,
    /// Folder with the face models (default: $OSPREY_MODELS, else ./models).
    #[arg(long, env = "OSPREY_MODELS")]
    models: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    coordinator: CoordinatorArgs,
    /// In-process workers.
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    eprintln!("shutting down: finishing requests in flight");
}

fn load_config(args: &CoordinatorArgs) -> anyhow::Result<Config> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(r) = &args.root {
        config.root = r.clone();
    }
    if let Some(l) = &args.listen {
        config.listen = l.clone();
    }
    if args.models.is_some() {
        config.models = args.models.clone();
    }
    if args.flight_listen.is_some() {
        config.flight_listen = args.flight_listen.clone();
    }
    Ok(config)
}

/// Binds the Flight SQL address, when one is configured.
async fn bind_flight(config: &Config) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = &config.flight_listen else { return Ok(None) };
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen for Flight SQL on {addr}"))?;
    Ok(Some(listener))
}

/// Serves Flight SQL on `listener` (if any) in the background until Ctrl-C
/// or SIGTERM.
fn spawn_flight(coordinator: &Arc<Coordinator>, listener: Option<tokio::net::TcpListener>) -> anyhow::Result<()> {
    let Some(listener) = listener else { return Ok(()) };
    eprintln!("osprey Flight SQL on grpc://{} (read-only, same API keys)", listener.local_addr()?);
    let coordinator = Arc::clone(coordinator);
    tokio::spawn(async move {
        if let Err(e) = osprey_coordinator::serve_flight_sql(coordinator, listener, shutdown_signal()).await {
            eprintln!("Flight SQL stopped: {e}");
        }
    });
    Ok(())
}

async fn bind(config: &Config) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))
}

pub async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    let listener = bind(&config).await?;
    let flight = bind_flight(&config).await?;
    let coordinator = Coordinator::start(config).await?;
    eprintln!("osprey coordinator on http://{} over {}", listener.local_addr()?, coordinator.root.url());
    spawn_flight(&coordinator, flight)?;
    osprey_coordinator::serve(coordinator, listener, shutdown_signal()).await?;
    Ok(())
}

fn worker_id(given: Option<String>, n: usize) -> String {
    given.unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        format!("{host}-{}-{n}", std::process::id())
    })
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let models = args.models.clone();
    let analysis =
        tokio::task::spawn_blocking(move || MediaAnalysis::load(&MediaSettings::default(), models.as_deref()))
            .await??;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    tokio::spawn(async move {
        shutdown_signal().await;
        eprintln!("worker: stopping after the task in hand");
        flag.store(true, Ordering::Relaxed);
    });
    let config = WorkerConfig {
        coordinator: args.coordinator,
        api_key: args.api_key,
        worker_id: worker_id(args.worker_id, 0),
        idle_poll: Duration::from_millis(500),
    };
    osprey_worker::run(config, Arc::new(analysis), stop).await?;
    Ok(())
}

/// A fresh random API key.
fn random_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = load_config(&args.coordinator)?;
    if config.root.is_empty() {
        anyhow::bail!(osprey_core::Error::invalid("no root: pass --root DIR or set OSPREY_ROOT"));
    }
    if std::env::var("OSPREY_API_KEYS").map_or(true, |v| v.trim().is_empty()) && config.api_keys.is_empty() {
        let key = random_key();
        eprintln!("no OSPREY_API_KEYS: this server's admin key is {key}");
        config.api_keys = vec![format!("admin:{key}")];
    }
    let worker_key = config
        .keys()?
        .iter()
        .zip(&config.api_keys)
        .find(|(k, _)| k.role != osprey_api::Role::Reader)
        .map(|(_, pair)| pair.split_once(':').map(|(_, k)| k.to_string()).unwrap_or_default())
        .context("in-process workers need an operator or admin key in OSPREY_API_KEYS")?;
    let listener = bind(&config).await?;
    let addr = listener.local_addr()?;
    let flight = bind_flight(&config).await?;
    let models = config.models.clone();
    let coordinator = Coordinator::start(config).await?;
    let analysis =
        tokio::task::spawn_blocking(move || MediaAnalysis::load(&MediaSettings::default(), models.as_deref()))
            .await??;
    let analysis = Arc::new(analysis);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for n in 0..args.workers {
        let config = WorkerConfig {
            coordinator: format!("http://{addr}"),
            api_key: worker_key.clone(),
            worker_id: worker_id(None, n),
            idle_poll: Duration::from_millis(250),
        };
        let (analysis, stop) = (Arc::clone(&analysis), Arc::clone(&stop));
        workers.push(tokio::spawn(async move { osprey_worker::run(config, analysis, stop).await }));
    }
    eprintln!("osprey serving http://{addr} over {} with {} in-process workers", coordinator.root.url(), args.workers);
    spawn_flight(&coordinator, flight)?;
    let flag = Arc::clone(&stop);
    osprey_coordinator::serve(coordinator, listener, async move {
        shutdown_signal().await;
        flag.store(true, Ordering::Relaxed);
    })
    .await?;
    for w in workers {
        w.abort();
    }
    Ok(())
}
