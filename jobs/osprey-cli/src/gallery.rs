//! `osprey gallery …` and `osprey search`: galleries from embeddings users bring.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use osprey_api::{CreateGallery, Erasure, GalleryDetail, GallerySummary};
use osprey_coordinator::{erasure_report, gallery_detail, gallery_summary};
use osprey_core::{ErrorKind, Modality, l2_normalize};
use osprey_index::{
    EnrollOptions, Gallery, count_decisions, enroll_timed, erase_subject, list_galleries, operating_point,
    search_probes, store_search,
};
use osprey_sql::format_batches;
use osprey_store::{Root, Template, layout, results_to_batch};

use crate::Format;
use crate::client::{Client, Mode, Target, segment};
use crate::output::{Rows, opt, score};
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
    /// Create an empty gallery for the face model (enrol into it with `osprey job submit enroll`).
    Create {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        gallery: String,
        /// FAISS index factory string (`Flat`, `IVF1024,Flat`, `HNSW32`, …); chosen by size if omitted.
        #[arg(long)]
        index: Option<String>,
        /// Candidates each search re-ranks by exact cosine similarity, from
        /// float vectors kept on disk beside a compressed index (0: none).
        /// Default: 100 for compressed indexes (PQ), none for the others.
        #[arg(long)]
        rerank: Option<usize>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// List the galleries.
    List {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show one gallery: counts, index, operating threshold, subject ids.
    Show {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        gallery: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Erase a subject everywhere: gallery index, template tables, results, thumbnails.
    DeleteSubject {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        gallery: String,
        #[arg(long)]
        subject: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
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
    /// Candidates each search re-ranks by exact cosine similarity, from
    /// float vectors kept on disk beside a compressed index (0: none).
    /// Default: 100 for compressed indexes (PQ), none for the others.
    #[arg(long)]
    rerank: Option<usize>,
    /// Calibrate the open-set threshold for this FPIR from the gallery's own non-mated scores.
    #[arg(long, default_value_t = 0.01)]
    fpir: f64,
}

pub async fn run(cmd: GalleryCommand) -> anyhow::Result<()> {
    match cmd {
        GalleryCommand::Import(args) => import(args).await,
        GalleryCommand::Create { target, gallery, index, rerank, format } => {
            let summary = match target.mode()? {
                Mode::Remote(c) => {
                    let req = CreateGallery { name: gallery, model: None, index, rerank };
                    c.post::<_, GallerySummary>("/v1/galleries", &req).await?
                }
                Mode::Local(root) => {
                    layout::check_name("gallery", &gallery)?;
                    let root = Root::open(&root)?;
                    if Gallery::load(&root, &gallery).await.is_ok() {
                        bail!(osprey_core::Error::new(ErrorKind::AlreadyExists, format!("gallery `{gallery}` exists")));
                    }
                    let dim = osprey_models::dlib::resnet::DESCRIPTOR_DIM;
                    let mut g = Gallery::build_reranked(
                        &gallery,
                        osprey_models::MODEL_NAME,
                        dim,
                        index.as_deref(),
                        rerank,
                        Vec::new(),
                        &[],
                    )?;
                    g.save(&root).await?;
                    gallery_summary(g.manifest())
                }
            };
            print_galleries(std::slice::from_ref(&summary), format, &summary)
        }
        GalleryCommand::List { target, format } => {
            let galleries: Vec<GallerySummary> = match target.mode()? {
                Mode::Remote(c) => c.get("/v1/galleries").await?,
                Mode::Local(root) => list_galleries(&Root::open(&root)?).await?.iter().map(gallery_summary).collect(),
            };
            print_galleries(&galleries, format, &galleries)
        }
        GalleryCommand::Show { target, gallery, format } => {
            let detail: GalleryDetail = match target.mode()? {
                Mode::Remote(c) => c.get(&format!("/v1/galleries/{}", segment(&gallery))).await?,
                Mode::Local(root) => gallery_detail(&Gallery::load(&Root::open(&root)?, &gallery).await?),
            };
            // The indexes of other modalities beside it (`<gallery>.body`).
            let mut beside = Vec::new();
            if let Mode::Local(root) = target.mode()? {
                let root = Root::open(&root)?;
                for m in osprey_index::COMPANION_MODALITIES {
                    let name = osprey_index::modality_gallery(&gallery, m);
                    if let Ok(g) = Gallery::load(&root, &name).await {
                        let gm = g.manifest();
                        beside.push(format!(
                            "{m}: {name} ({}, {} subjects, {} templates)",
                            gm.model, gm.num_subjects, gm.num_templates
                        ));
                    }
                }
            }
            let s = &detail.summary;
            let mut rows = Rows::new(&["field", "value"]);
            let bytes = osprey_index::bytes_per_template_estimate(&s.index, s.dim);
            for (k, v) in [
                ("name", s.name.clone()),
                ("model", format!("{} ({}-d)", s.model, s.dim)),
                ("index", s.index.clone()),
                ("subjects", s.subjects.to_string()),
                ("templates", s.templates.to_string()),
                ("threshold", score(s.threshold)),
                ("calibrated for FPIR", opt(s.threshold_fpir)),
                ("bytes per template", opt(bytes.map(|b| format!("~{b}")))),
                ("subject ids", detail.subject_ids.join(" ")),
            ] {
                rows.push(vec![k.to_string(), v]);
            }
            for b in beside {
                rows.push(vec!["other modality index".to_string(), b]);
            }
            rows.print(format, &detail)
        }
        GalleryCommand::DeleteSubject { target, gallery, subject, format } => {
            let erasure: Erasure = match target.mode()? {
                Mode::Remote(c) => {
                    c.delete(&format!("/v1/galleries/{}/subjects/{}", segment(&gallery), segment(&subject))).await?
                }
                Mode::Local(root) => {
                    erasure_report(subject.clone(), &erase_subject(&Root::open(&root)?, &gallery, &subject).await?)
                }
            };
            let mut rows = Rows::new(&[
                "subject",
                "index templates",
                "template rows",
                "observation rows",
                "result rows",
                "thumbnails",
                "silhouettes",
            ]);
            rows.push(vec![
                erasure.subject_id.clone(),
                erasure.index_templates.to_string(),
                erasure.template_rows.to_string(),
                erasure.observation_rows.to_string(),
                erasure.result_rows.to_string(),
                erasure.thumbnails.to_string(),
                erasure.silhouettes.to_string(),
            ]);
            rows.print(format, &erasure)
        }
    }
}

fn print_galleries<T: serde::Serialize + ?Sized>(
    galleries: &[GallerySummary],
    format: Format,
    json: &T,
) -> anyhow::Result<()> {
    let mut rows = Rows::new(&["name", "model", "dim", "index", "subjects", "templates", "threshold"]);
    for g in galleries {
        rows.push(vec![
            g.name.clone(),
            g.model.clone(),
            g.dim.to_string(),
            g.index.clone(),
            g.subjects.to_string(),
            g.templates.to_string(),
            score(g.threshold),
        ]);
    }
    rows.print(format, json)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    layout::check_name("gallery", &args.gallery)?;
    layout::check_name("model", &args.model)?;
    let modality: Modality = args.modality.parse()?;
    let input = &args.input;
    let read_started = std::time::Instant::now();
    let input_bytes = std::fs::read(input).with_context(|| format!("cannot read `{}`", input.display()))?;
    let vectors = read_vectors(input)?;
    if vectors.len() == 0 {
        bail!("`{}` holds no embeddings", input.display());
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
                    input.display(),
                    vectors.len()
                );
            }
            lines
        }
        (Some(ids), None) => ids.clone(),
        (None, None) => bail!("`{}` has no `subject_id` column; pass --subjects FILE.txt", input.display()),
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
    let read_seconds = read_started.elapsed().as_secs_f64();
    let root = Root::open(&args.root.root)?;
    let opts = EnrollOptions {
        index_factory: args.index,
        nprobe: args.nprobe,
        rerank: args.rerank,
        calibrate_fpir: Some(args.fpir),
    };
    let started = std::time::Instant::now();
    let (gallery, times) = enroll_timed(&root, &args.gallery, &batch, templates, &[], &opts).await?;
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
    // Wall seconds per phase (read: the input file, parsed and checked; the
    // others inside the enrolment, which also loads a gallery it extends).
    eprintln!(
        "phases (s): read {read_seconds:.2}, validate {:.2}, template write {:.2}, train {:.2}, add {:.2}, calibrate {:.2}, snapshot write {:.2}",
        times.validate, times.write_templates, times.train, times.add, times.calibrate, times.snapshot
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
    target: Target,
    /// Local mode: probe embeddings, Parquet with `embedding` (optional
    /// `template_id`, `media_uri`) or `.npy`.
    #[arg(long, conflicts_with = "images")]
    input: Option<PathBuf>,
    /// With --server: images whose every face is searched (`POST /v1/search`).
    images: Vec<PathBuf>,
    /// With --server and a gallery of a seed model: that model's checkpoint,
    /// a key under the server's root or a URL under an allowed prefix.
    #[arg(long, value_name = "KEY_OR_URL", requires = "images")]
    weights: Option<String>,
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
    let root = match args.target.mode()? {
        Mode::Remote(client) => {
            return search_images(&client, &args.images, args.weights.as_deref(), &args.search).await;
        }
        Mode::Local(root) => root,
    };
    let Some(input) = args.input else {
        bail!(osprey_core::Error::invalid(
            "local search takes --input EMBEDDINGS (Parquet or .npy); to search images, use --server URL \
             (a running `osprey serve`) or `osprey run search`"
        ));
    };
    let root = Root::open(&root)?;
    let mut gallery = Gallery::load(&root, &args.search.gallery).await?;
    let vectors: Vectors = read_vectors(&input)?;
    let dim = gallery.manifest().dim;
    if vectors.len() == 0 {
        bail!("`{}` holds no embeddings", input.display());
    }
    if vectors.dim != dim {
        bail!("probes in `{}` are {}-d; gallery `{}` is {dim}-d", input.display(), vectors.dim, args.search.gallery);
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
                .or_else(|| Some(format!("{}#{i}", input.display()))),
            modality: Some(Modality::Face),
            model: gallery.manifest().model.clone(),
            embedding: Some(e),
            created_at_ms: created,
            ..Default::default()
        });
    }
    let model = gallery.manifest().model.clone();
    let rows = search_probes(&mut gallery, &job_id, &probes.iter().collect::<Vec<_>>(), args.search.top_k, threshold)?;
    store_search(&root, &job_id, "part-0", &model, dim, &probes, &[], &rows).await?;
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

/// `osprey search --server URL IMAGE…`: one row per face found.
async fn search_images(
    client: &Client,
    images: &[PathBuf],
    weights: Option<&str>,
    opts: &SearchOptions,
) -> anyhow::Result<()> {
    if images.is_empty() {
        bail!(osprey_core::Error::invalid(
            "name one or more images to search, e.g. `osprey search --gallery people face.jpg`"
        ));
    }
    let mut rows = Rows::new(&["image", "face", "box (x,y,w,h)", "decision", "subject", "score", "threshold"]);
    let mut answers = Vec::new();
    for image in images {
        let answer = client.search_image(image, &opts.gallery, opts.top_k, opts.threshold, opts.fpir, weights).await?;
        if answer.probes.is_empty() {
            eprintln!("{}: no face found", image.display());
        }
        for (i, p) in answer.probes.iter().enumerate() {
            let best = p.candidates.first();
            rows.push(vec![
                image.display().to_string(),
                i.to_string(),
                p.bbox
                    .map(|b| format!("{:.0},{:.0},{:.0},{:.0}", b[0], b[1], b[2], b[3]))
                    .unwrap_or_else(|| "-".into()),
                p.decision.clone(),
                if p.decision == "match" { opt(best.map(|c| &c.subject_id)) } else { "unknown".into() },
                score(best.map(|c| c.score)),
                format!("{:.3}", answer.threshold),
            ]);
        }
        answers.push(serde_json::json!({ "image": image.display().to_string(), "answer": answer }));
    }
    if let Some(a) = answers.first() {
        let t = a["answer"]["threshold"].as_f64().unwrap_or(f64::NAN);
        eprintln!("threshold {t:.4} ({})", a["answer"]["threshold_source"].as_str().unwrap_or(""));
    }
    rows.print(opts.format, &answers)
}
