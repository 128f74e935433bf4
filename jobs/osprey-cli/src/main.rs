//! `osprey`: the command-line front of the Osprey identification platform.
//!
//! Every command works on a root URL (`--root` or `OSPREY_ROOT`): a local
//! folder, `memory://`, or `s3://bucket/prefix`.

mod bench;
mod bench_fusion;
mod bench_people;
mod bench_video;
mod client;
mod embed;
mod eval;
mod gallery;
mod job;
mod models;
mod output;
mod run;
mod serve;
mod vectors;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use osprey_core::ErrorKind;
use osprey_sql::{OutputFormat, SqlSession, format_batches};
use osprey_store::Root;

#[derive(Parser)]
#[command(
    name = "osprey",
    version,
    about = "Batch identification over video and images: templates, galleries, open-set search, SQL"
)]
struct Cli {
    /// Log filter (e.g. `info`, `osprey=debug`); also `RUST_LOG`.
    #[arg(long, global = true, env = "OSPREY_LOG", default_value = "warn")]
    log: String,
    /// Threads for model inference (default: all cores; also RAYON_NUM_THREADS).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, inspect and change galleries.
    #[command(subcommand)]
    Gallery(gallery::GalleryCommand),
    /// Detect, align and embed the faces in images; write template-schema Parquet.
    Embed(embed::EmbedArgs),
    /// Open-set search: images on a server (--server), or probe embeddings on a root (--root).
    Search(gallery::SearchArgs),
    /// Batch jobs on a server: submit, status, watch, results, cancel.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Embedded batch jobs: enrol from folders, search images and videos.
    #[command(subcommand)]
    Run(run::RunCommand),
    /// Run the coordinator: REST API, job scheduling, search and SQL.
    Coordinator(serve::CoordinatorArgs),
    /// Run a worker: lease tasks from a coordinator and process them.
    Worker(serve::WorkerArgs),
    /// Run a coordinator with in-process workers over a local root (the embedded default).
    Serve(serve::ServeArgs),
    /// Run a read-only SQL query over templates, results and galleries.
    Sql(SqlArgs),
    /// Benchmarks and benchmark data.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// The face, body and gait models Osprey can run (`osprey models list`).
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Print or check the table schemas and the OpenAPI document in `schemas/`.
    Schema(SchemaArgs),
    /// Measure accuracy against ground truth: a search job's results, or verification pairs from images.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Print a shell completion script, e.g. `osprey completions bash > ~/.local/share/bash-completion/completions/osprey`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Output format of tabular commands.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

impl From<Format> for OutputFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Table => OutputFormat::Table,
            Format::Json => OutputFormat::Json,
            Format::Csv => OutputFormat::Csv,
        }
    }
}

#[derive(clap::Args)]
struct SqlArgs {
    #[command(flatten)]
    target: client::Target,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// The query, e.g. "SELECT subject_id, count(*) FROM templates GROUP BY 1".
    query: String,
}

#[derive(clap::Args)]
struct SchemaArgs {
    /// Fail unless the JSON files in DIR match the code.
    #[arg(long, value_name = "DIR", conflicts_with = "write")]
    check: Option<std::path::PathBuf>,
    /// Write the JSON files into DIR.
    #[arg(long, value_name = "DIR")]
    write: Option<std::path::PathBuf>,
}

/// glibc's allocator returns every block over its mmap threshold (at most
/// 32 MiB, reached only after such blocks were freed) to the kernel, so the
/// detectors' per-frame buffers (decoded frames, feature maps, batches of
/// crops: tens of MB each) were mapped and zero-filled afresh on every frame:
/// on the 1080p clip, 330 000 page faults and a seventh of the CPU time.
/// Blocks up to 32 MiB now always come from the heap, and freed memory is
/// kept for the next frame.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's thresholds; called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    // Inference threads: candle and rayon read this when they first start, so
    // it is set here, before any other thread exists.
    let threads = cli.threads.or_else(|| std::env::var("RAYON_NUM_THREADS").ok()?.parse().ok());
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // SAFETY: no other thread has been started yet.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    let filter = std::env::var("RUST_LOG").unwrap_or(cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // 2: the request was wrong (bad input, unknown names); 1: Osprey or
            // its storage failed.
            let code = match e.downcast_ref::<osprey_core::Error>().map(|e| e.kind()) {
                Some(ErrorKind::Internal | ErrorKind::Storage | ErrorKind::Corrupt) => 1,
                _ => 2,
            };
            ExitCode::from(code)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Gallery(cmd) => gallery::run(cmd).await,
        Command::Embed(args) => embed::run(args).await,
        Command::Search(args) => gallery::search(args).await,
        Command::Run(cmd) => run::run(cmd).await,
        Command::Job(cmd) => job::run(cmd).await,
        Command::Sql(args) => {
            let batches = match args.target.mode()? {
                client::Mode::Remote(c) => c.sql(&args.query).await?,
                client::Mode::Local(root) => {
                    let root = Root::open(&root)?;
                    SqlSession::open(&root).await?.query(&args.query).await?
                }
            };
            print_text(&format_batches(&batches, args.format.into())?);
            Ok(())
        }
        Command::Coordinator(args) => serve::coordinator(args).await,
        Command::Worker(args) => serve::worker(args).await,
        Command::Serve(args) => serve::serve(args).await,
        Command::Bench(bench::BenchCommand::Rest(args)) => bench::rest(args).await,
        Command::Bench(cmd) => bench::run(cmd),
        Command::Models(cmd) => models::run(cmd),
        Command::Schema(args) => schema(args),
        Command::Eval(cmd) => eval::run(cmd).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "osprey",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

/// Prints `text` followed by exactly one newline.
pub fn print_text(text: &str) {
    println!("{}", text.trim_end_matches('\n'));
}

fn schema(args: SchemaArgs) -> anyhow::Result<()> {
    let mut files: Vec<(String, String)> = Vec::new();
    for (stem, json) in osprey_core::schema::all_descriptions() {
        files.push((format!("{stem}.schema.json"), serde_json::to_string_pretty(&json)? + "\n"));
    }
    files.push(("openapi.json".into(), osprey_coordinator::openapi_json()));
    for (name, text) in files {
        if let Some(dir) = &args.write {
            std::fs::write(dir.join(&name), &text)?;
        } else if let Some(dir) = &args.check {
            let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
            anyhow::ensure!(
                on_disk == text,
                "{} is stale: run `osprey schema --write {}`",
                dir.join(&name).display(),
                dir.display()
            );
        } else {
            print!("{text}");
        }
    }
    Ok(())
}
