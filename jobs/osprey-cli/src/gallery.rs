//! `osprey gallery …` and `osprey search`: galleries from embeddings users bring.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use osprey_core::{Modality, l2_normalize};
use osprey_index::{
    EnrollOptions, Gallery, count_decisions, enroll, erase_subject, list_galleries, operating_point, search_probes,
    store_search,
};
use osprey_sql::format_batches;
use osprey_store::{Root, Template, layout, results_to_batch};

use crate::Format;
use crate::vectors::{Vectors, read_vectors};

#[derive(clap::Args)]
pub struct RootArg {
    /// Root URL: a folder, file:///…, memory://NAME or s3://bucket/prefix.
    #[arg(long, env = "OSPREY_ROOT")]
    pub root: String,
}

#[derive(Subcommand)]
pub enum GalleryCommand {
    /// Import embeddings you bring (Parquet or .npy + subjects) as a gallery.
    Import(ImportArgs),
    /// List the galleries under a root.
    List {
        #[command(flatten)]
        root: RootArg,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show one gallery's manifest (counts, index, operating threshold).
    Show {
        #[command(flatten)]
        root: RootArg,
        #[arg(long)]
        gallery: String,
    },
    /// Erase a subject everywhere: gallery index, template tables, results.
    DeleteSubject {
        #[command(flatten)]
        root: RootArg,
        #[arg(long)]
        gallery: String,
        #[arg(long)]
        subject: String,
    },
}

#[derive(clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    root: RootArg,
    /// Gallery to create or extend.
    #[arg(long)]
    gallery: String,
    /// Parquet with `subject_id`, `embedding` (and optional `template_id`,
    /// `media_uri`), or a float32/float64 `.npy` matrix (with --subjects).
    #[arg(long)]
    input: PathBuf,
    /// For `.npy` input: a text file with one subject id per row.
    #[arg(long)]
    subjects: Option<PathBuf>,
    /// Model id the embeddings came from (the template partition).
    #[arg(long, default_value = "imported")]
    model: String,
    /// Embedding modality.
    #[arg(long, default_value = "face")]
    modality: String,
    /// FAISS index factory string (`Flat`, `IVF4096,Flat`, `HNSW32`, …); chosen by size if omitted.
    #[arg(long)]
    index: Option<String>,
    /// IVF lists probed per search.
    #[arg(long)]
    nprobe: Option<usize>,
    /// Calibrate the open-set threshold for this FPIR from the gallery's own non-mated scores.
    #[arg(long, default_value_t = 0.01)]
    fpir: f64,
}

pub async fn run(cmd: GalleryCommand) -> anyhow::Result<()> {
    match cmd {
        GalleryCommand::Import(args) => import(args).await,
        GalleryCommand::List { root, format } => {
            let root = Root::open(&root.root)?;
            let galleries = list_galleries(&root).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&galleries)?),
                _ => {
                    println!(
                        "{:<24} {:<20} {:>5} {:<16} {:>9} {:>10} {:>9}",
                        "name", "model", "dim", "index", "subjects", "templates", "threshold"
                    );
                    for g in galleries {
                        let t = g.threshold.map(|t| format!("{t:.4}")).unwrap_or_else(|| "-".into());
                        println!(
                            "{:<24} {:<20} {:>5} {:<16} {:>9} {:>10} {:>9}",
                            g.name, g.model, g.dim, g.index_factory, g.num_subjects, g.num_templates, t
                        );
                    }
                }
            }
            Ok(())
        }
        GalleryCommand::Show { root, gallery } => {
            let root = Root::open(&root.root)?;
            let g = Gallery::load(&root, &gallery).await?;
            let mut json = serde_json::to_value(g.manifest())?;
            json["bytes_per_template_estimate"] = serde_json::json!(osprey_index::bytes_per_template_estimate(
                &g.manifest().index_factory,
                g.manifest().dim
            ));
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(())
        }
        GalleryCommand::DeleteSubject { root, gallery, subject } => {
            let root = Root::open(&root.root)?;
            let erasure = erase_subject(&root, &gallery, &subject).await?;
            println!("{}", serde_json::to_string_pretty(&erasure)?);
            Ok(())
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    layout::check_name("gallery", &args.gallery)?;
    layout::check_name("model", &args.model)?;
    let modality: Modality = args.modality.parse()?;
    let input_bytes = std::fs::read(&args.input).with_context(|| format!("cannot read `{}`", args.input.display()))?;
    let vectors = read_vectors(&args.input)?;
    if vectors.len() == 0 {
        bail!("`{}` holds no embeddings", args.input.display());
    }
    let subjects: Vec<Option<String>> = match (&vectors.subject_ids, &args.subjects) {
        (_, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?;
            let lines: Vec<Option<String>> = text.lines().map(|l| Some(l.trim().to_string())).collect();
            if lines.len() != vectors.len() {
                bail!(
                    "`{}` has {} lines but `{}` has {} embeddings",
                    path.display(),
                    lines.len(),
                    args.input.display(),
                    vectors.len()
                );
            }
            lines
        }
        (Some(ids), None) => ids.clone(),
        (None, None) => bail!("`{}` has no `subject_id` column; pass --subjects FILE.txt", args.input.display()),
    };
    // The batch id is a digest of the input, so importing the same file twice
    // is refused instead of enrolling every template twice.
    let batch =
        format!("import-{}-{}", args.gallery, uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &input_bytes).simple());
    let created = now_ms();
    let mut templates = Vec::with_capacity(vectors.len());
    for i in 0..vectors.len() {
        let subject = subjects[i].clone().filter(|s| !s.is_empty());
        let Some(subject) = subject else { bail!("row {i} has no subject id") };
        let mut e = vectors.row(i).to_vec();
        osprey_core::validate_embedding(&e, vectors.dim, &format!("row {i} (subject `{subject}`)"))?;
        l2_normalize(&mut e);
        let template_id = vectors.template_ids.as_ref().and_then(|t| t[i].clone()).unwrap_or_else(|| {
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{batch}/{i}").as_bytes()).to_string()
        });
        templates.push(Template {
            template_id,
            gallery: Some(args.gallery.clone()),
            subject_id: Some(subject),
            media_uri: vectors.media_uris.as_ref().and_then(|m| m[i].clone()),
            modality: Some(modality),
            model: args.model.clone(),
            embedding: Some(e),
            created_at_ms: created,
            ..Default::default()
        });
    }
    let root = Root::open(&args.root.root)?;
    let opts = EnrollOptions { index_factory: args.index, nprobe: args.nprobe, calibrate_fpir: Some(args.fpir) };
    let started = std::time::Instant::now();
    let gallery = enroll(&root, &args.gallery, &batch, templates, &opts).await?;
    let m = gallery.manifest();
    eprintln!(
        "imported {} templates into gallery `{}` ({} subjects, {} templates, index {}, {}-d) in {:.2}s",
        vectors.len(),
        m.name,
        m.num_subjects,
        m.num_templates,
        m.index_factory,
        m.dim,
        started.elapsed().as_secs_f64()
    );
    match (m.threshold, m.threshold_fpir) {
        (Some(t), Some(f)) => eprintln!("operating threshold {t:.4} (calibrated for FPIR {f})"),
        _ => eprintln!("no threshold calibrated (needs at least 2 subjects)"),
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    root: RootArg,
    /// Probe embeddings: Parquet with `embedding` (optional `template_id`, `media_uri`) or `.npy`.
    #[arg(long)]
    input: PathBuf,
    #[command(flatten)]
    search: SearchOptions,
}

/// How a search is run and shown; shared by `osprey search` and `osprey run search`.
#[derive(clap::Args)]
pub struct SearchOptions {
    /// Gallery to search.
    #[arg(long)]
    pub gallery: String,
    /// Subjects returned per probe.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Decision threshold on cosine similarity (default: the gallery's operating point).
    #[arg(long, conflicts_with = "fpir")]
    pub threshold: Option<f32>,
    /// Calibrate the threshold for this FPIR from the gallery's non-mated scores.
    #[arg(long)]
    pub fpir: Option<f64>,
    /// Job id for the stored probe templates and results (default: a new UUID).
    #[arg(long)]
    pub job_id: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub async fn search(args: SearchArgs) -> anyhow::Result<()> {
    let root = Root::open(&args.root.root)?;
    let mut gallery = Gallery::load(&root, &args.search.gallery).await?;
    let vectors: Vectors = read_vectors(&args.input)?;
    let dim = gallery.manifest().dim;
    if vectors.len() == 0 {
        bail!("`{}` holds no embeddings", args.input.display());
    }
    if vectors.dim != dim {
        bail!(
            "probes in `{}` are {}-d; gallery `{}` is {dim}-d",
            args.input.display(),
            vectors.dim,
            args.search.gallery
        );
    }
    let op = operating_point(&root, &mut gallery, args.search.threshold, args.search.fpir).await?;
    let threshold = op.threshold;
    eprintln!("operating threshold {threshold:.4} ({})", op.source);

    let job_id = args.search.job_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    layout::check_name("job", &job_id)?;
    let created = now_ms();
    let mut probes = Vec::with_capacity(vectors.len());
    for i in 0..vectors.len() {
        let mut e = vectors.row(i).to_vec();
        osprey_core::validate_embedding(&e, dim, &format!("probe {i}"))?;
        l2_normalize(&mut e);
        probes.push(Template {
            template_id: vectors
                .template_ids
                .as_ref()
                .and_then(|t| t[i].clone())
                .unwrap_or_else(|| format!("{job_id}-probe-{i}")),
            job_id: Some(job_id.clone()),
            media_uri: vectors
                .media_uris
                .as_ref()
                .and_then(|m| m[i].clone())
                .or_else(|| Some(format!("{}#{i}", args.input.display()))),
            modality: Some(Modality::Face),
            model: gallery.manifest().model.clone(),
            embedding: Some(e),
            created_at_ms: created,
            ..Default::default()
        });
    }
    let model = gallery.manifest().model.clone();
    let rows = search_probes(&mut gallery, &job_id, &probes.iter().collect::<Vec<_>>(), args.search.top_k, threshold)?;
    store_search(&root, &job_id, "part-0", &model, dim, &probes, &rows).await?;
    let (matches, unknown) = count_decisions(&rows);
    let top: Vec<_> = rows.iter().filter(|r| r.rank == 1).cloned().collect();
    crate::print_text(&format_batches(&[results_to_batch(&top)?], args.search.format.into())?);
    eprintln!(
        "job {job_id}: {} probes, {matches} match, {unknown} unknown; results under {}",
        probes.len(),
        root.url_of(&format!("{}/job={job_id}/", layout::RESULTS))
    );
    Ok(())
}
