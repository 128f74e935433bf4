//! `osprey bench …`: measured, never asserted, speed.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use osprey_index::{Gallery, bytes_per_template_estimate, set_num_threads};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::vectors::{read_vectors, write_npy};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Search speed and recall of a FAISS index against exact search.
    Search(SearchBench),
    /// Face pipeline speed: whole images (detect + landmarks + align + embed)
    /// and aligned chips only.
    Faces(FacesBench),
    /// Video pipeline speed: decode only, every frame, and sampled frames
    /// (decode → detect → landmarks → embed → track), end to end.
    Video(crate::bench_video::VideoBench),
    /// Generate clustered unit vectors (a stand-in for face embeddings) as `.npy`.
    Gen(GenArgs),
    /// Searches/s through the coordinator's REST API against a generated
    /// gallery, with in-process search of the same gallery as the reference.
    Rest(RestBench),
    /// Embeddings/s of one seed face recogniser (AdaFace IR, ViT-KPRPE) on a
    /// batch of 112×112 crops. Threads: `osprey --threads N bench face-model …`
    /// (the global option sets candle's and rayon's pool for the whole process).
    FaceModel(FaceModelBench),
    /// Embeddings/s of one body or gait recogniser (OSNet, CLIP3DReID,
    /// SapiensID, GaitBase, BigGait) on real crops or silhouette sequences,
    /// loaded from a checkpoint through the ordinary loader; optionally
    /// checked against another implementation's embeddings of the same
    /// inputs first. SapiensID: the network on prepared inputs is timed apart
    /// from preparing them (test transform, MoveNet and MTCNN keypoints).
    /// Threads: `osprey --threads N bench person-model …`.
    PersonModel(PersonModelBench),
    /// Faces/s of MTCNN (boxes and landmarks) on whole images, searched at
    /// full size (facenet-pytorch's defaults: minimum face 20 px).
    Mtcnn(MtcnnBench),
    /// Frames/s of the CenterNet person detector on raw RGB frames (the
    /// TF.js runtime's counterpart: infra/scripts/bench-people.sh).
    People(crate::bench_people::PeopleBench),
    /// Fused search cost: a person's face, body and gait templates searched
    /// in three indexes of a generated gallery (100k subjects) and fused,
    /// against searching the face alone, in the same run.
    Fusion(crate::bench_fusion::FusionBench),
}

#[derive(clap::Args)]
pub struct MtcnnBench {
    /// Folder with the model files (MTCNN's under mtcnn/; default:
    /// $OSPREY_MODELS, else ./models).
    #[arg(long, env = "OSPREY_MODELS")]
    models: Option<PathBuf>,
    /// Timed passes over all images; the best is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
    /// Image files or folders.
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(clap::Args)]
pub struct FaceModelBench {
    /// Registry id (`osprey models list`), e.g. adaface-ir101, vit-kprpe-base.
    #[arg(long)]
    model: String,
    /// Checkpoint to run. Without it, random weights with the manifest's names
    /// and shapes (the speed of a dense float network does not depend on the
    /// values of its weights).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Crops per timed pass (`FaceRecognizer::embed` runs them in forward
    /// passes of at most 32).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Timed passes after one warm-up pass; the best and the median are reported.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Parity check: safetensors with `embedding` [N, D] (and `norm` [N]) of
    /// the same crops from another implementation
    /// (`infra/scripts/face_models_torch_bench.py --save-reference`), run with
    /// the same weights; fails unless every cosine exceeds 0.9999.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct PersonModelBench {
    /// Registry id of a body or gait model (`osprey models list`), e.g.
    /// osnet-x1_0, osnet-ain-x1_0, clip3dreid, sapiensid, gaitbase, biggait.
    #[arg(long)]
    model: String,
    /// The checkpoint (any layout `osprey embed --weights` reads).
    #[arg(long, required_unless_present = "save_inputs")]
    weights: Option<PathBuf>,
    /// SapiensID only: write the network inputs of the distinct crops (at
    /// most --batch) to this safetensors file, `image` [U, 3, 384, 384] and
    /// `keypoints` [U, 22, 2] (MoveNet and MTCNN from $OSPREY_MODELS), and
    /// exit without timing anything (no --weights needed). Another
    /// implementation then runs the network on exactly these inputs
    /// (`infra/scripts/person_models_torch_bench.py --prepared FILE`).
    #[arg(long)]
    save_inputs: Option<PathBuf>,
    /// Body models: crop images, or folders of them (sorted by path),
    /// repeated in order to --batch. Gait models: one folder per sequence
    /// (frames sorted by path) of silhouettes, or for BigGait of RGB person
    /// crops; every pass embeds them all, one sequence per forward pass as
    /// `osprey embed` does.
    #[arg(long, num_args = 1.., required = true)]
    inputs: Vec<String>,
    /// Body crops per timed pass (`PersonRecognizer::embed_bodies` runs them
    /// in forward passes of at most 32). Gait: the number of sequences.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Timed passes after one warm-up pass; the best and the median are reported.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Parity check: safetensors with `embedding` [N, D] of the same inputs
    /// from another implementation (`infra/scripts/person_models_torch_bench.py
    /// --save-reference`; for gait also `frames` [N], the frames each sequence
    /// kept), run with the same weights; fails unless every cosine exceeds
    /// 0.9999 (and, for gait, the same frames were kept).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RestBench {
    /// Gallery templates (clustered unit vectors, 128-d).
    #[arg(long, default_value_t = 1_000_000)]
    templates: usize,
    /// Subjects they belong to.
    #[arg(long, default_value_t = 100_000)]
    subjects: usize,
    /// FAISS index factory string (default: chosen by gallery size).
    #[arg(long)]
    index: Option<String>,
    /// Queries timed on each path.
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    /// Concurrent REST clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Candidates per query.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// The coordinator's `search_batch_wait_us`: longest a search waits
    /// for others to join its batch (default: the coordinator's default).
    #[arg(long)]
    batch_wait_us: Option<u64>,
    /// The coordinator's `search_batch_max`: most searches in one batch
    /// (1: no batching; default: the coordinator's default).
    #[arg(long)]
    batch_max: Option<usize>,
    /// The coordinator's `search_threads`: FAISS threads per batch (0:
    /// every core; default: the coordinator's default).
    #[arg(long)]
    search_threads: Option<usize>,
    /// The coordinator's `search_concurrency`: batches of the gallery
    /// searched at once (0: four per core; default: the coordinator's
    /// default).
    #[arg(long)]
    search_concurrency: Option<usize>,
    /// Rounds on the same gallery (each: in process, then REST); the report
    /// gives each measure's median and every round under `runs`.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Also time REST one search per FAISS call (`search_batch_max` 1; still
    /// `search_concurrency` at once) in each round, under the same load.
    #[arg(long)]
    compare_unbatched: bool,
    /// Also time the REST floor in each round: the same requests from the
    /// same clients, answered after authentication and JSON parsing but
    /// before any search or audit (`k` 0, refused with 400). What the
    /// HTTP path alone costs on this machine, and so the most REST could
    /// serve here.
    #[arg(long)]
    compare_floor: bool,
    /// The coordinator's `audit_flush_seconds` (0: no audit journal, each
    /// group of searches a file in the store before they are answered;
    /// default: the coordinator's default, a journal).
    #[arg(long)]
    audit_flush_seconds: Option<u64>,
}

#[derive(clap::Args)]
pub struct SearchBench {
    /// Gallery vectors: `.npy` float32 (n × d) or Parquet with `embedding`.
    #[arg(long)]
    gallery_file: PathBuf,
    /// Query vectors, same formats.
    #[arg(long)]
    query_file: PathBuf,
    /// FAISS index factory string.
    #[arg(long, default_value = "Flat")]
    index: String,
    /// IVF lists probed per query; several, comma-separated, sweep them on
    /// one build (one report per setting).
    #[arg(long, value_delimiter = ',')]
    nprobe: Vec<usize>,
    /// Re-rank this many candidates per query by exact score from the
    /// float vectors kept on disk beside the index, as a gallery created
    /// with `--rerank` does. Default 0: the index alone, as raw FAISS
    /// answers (galleries of compressed indexes re-rank 100 unless told).
    /// Several, comma-separated, sweep them on one build.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    rerank: Vec<usize>,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Subject of each gallery vector, one per line (as `osprey bench
    /// vectors --subjects-out` writes). Default: every template its own
    /// subject, the id map's worst case.
    #[arg(long)]
    subject_file: Option<PathBuf>,
    /// FAISS (OpenMP) threads; default: all cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Timed repetitions of the whole query batch; the best is reported.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct FacesBench {
    /// Folder with the model files (default: $OSPREY_MODELS, else ./models).
    #[arg(long, env = "OSPREY_MODELS")]
    models: Option<PathBuf>,
    /// Image doublings before detection.
    #[arg(long, default_value_t = 1)]
    upsample: u32,
    /// Timed passes over all images; the best is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Chips per descriptor batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
    /// Image files or folders.
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(clap::Args)]
pub struct GenArgs {
    /// Vectors to generate.
    #[arg(long)]
    n: usize,
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Number of clusters ("subjects"); vectors are spread around them.
    #[arg(long, default_value_t = 1000)]
    clusters: usize,
    /// Spread of each cluster relative to the distance between clusters.
    #[arg(long, default_value_t = 0.5)]
    spread: f32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output `.npy`.
    #[arg(long)]
    out: PathBuf,
    /// Also write the cluster of each vector as a subjects text file.
    #[arg(long)]
    subjects_out: Option<PathBuf>,
    /// Seed of the cluster centres, so that queries share a gallery's clusters.
    #[arg(long, default_value_t = 7)]
    centre_seed: u64,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Search(args) => search(args),
        BenchCommand::Gen(args) => gen_vectors(args),
        BenchCommand::Faces(args) => faces(args),
        BenchCommand::Video(args) => crate::bench_video::video(args),
        BenchCommand::FaceModel(args) => face_model(args),
        BenchCommand::PersonModel(args) => person_model(args),
        BenchCommand::Mtcnn(args) => mtcnn(args),
        BenchCommand::People(args) => crate::bench_people::people(args),
        BenchCommand::Fusion(args) => crate::bench_fusion::fusion(args),
        BenchCommand::Rest(_) => bail!("`bench rest` runs in the async runtime"),
    }
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// `n` unit vectors around `clusters` random centres, with their cluster.
fn clustered(
    n: usize,
    dim: usize,
    clusters: usize,
    spread: f32,
    seed: u64,
    centre_seed: u64,
) -> (Vec<f32>, Vec<usize>) {
    let mut centre_rng = StdRng::seed_from_u64(centre_seed);
    let centres: Vec<f32> = (0..clusters * dim).map(|_| normal(&mut centre_rng)).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(n * dim);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let c = rng.random_range(0..clusters);
        let mut v: Vec<f32> = centres[c * dim..(c + 1) * dim].iter().map(|x| x + spread * normal(&mut rng)).collect();
        osprey_core::l2_normalize(&mut v);
        data.extend_from_slice(&v);
        labels.push(c);
    }
    (data, labels)
}

fn gen_vectors(args: GenArgs) -> anyhow::Result<()> {
    if args.n == 0 || args.dim == 0 || args.clusters == 0 {
        bail!("--n, --dim and --clusters must be positive");
    }
    let (data, labels) = clustered(args.n, args.dim, args.clusters, args.spread, args.seed, args.centre_seed);
    write_npy(&args.out, &data, args.dim)?;
    if let Some(path) = args.subjects_out {
        let text: String = labels.iter().map(|c| format!("subject-{c:05}\n")).collect();
        std::fs::write(path, text)?;
    }
    Ok(())
}

fn search(args: SearchBench) -> anyhow::Result<()> {
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    set_num_threads(threads);
    let g = read_vectors(&args.gallery_file)?;
    let q = read_vectors(&args.query_file)?;
    if g.dim != q.dim {
        bail!("gallery vectors are {}-d, queries {}-d", g.dim, q.dim);
    }
    let subjects: Option<Vec<String>> = match &args.subject_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() != g.len() {
                bail!("{} names {} subjects for {} gallery vectors", path.display(), lines.len(), g.len());
            }
            Some(lines)
        }
        None => None,
    };
    // Template ids are UUIDs, as Osprey's own are; subjects are the file's
    // or, without one, each template its own.
    let ids = |n: usize| {
        (0..n)
            .map(|i| {
                let template = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &(i as u64).to_le_bytes()).to_string();
                (template, subjects.as_ref().map(|s| s[i].clone()).unwrap_or_else(|| i.to_string()))
            })
            .collect::<Vec<_>>()
    };

    release_free_heap();
    let rss_before = rss_anon_bytes();
    let started = Instant::now();
    // The vectors are kept (on disk) if any setting re-ranks.
    let keep = args.rerank.iter().max().copied();
    let index = Gallery::build_reranked("bench", "bench", g.dim, Some(&args.index), keep, ids(g.len()), &g.data)?;
    let build_s = started.elapsed().as_secs_f64();
    // What the gallery holds resident: the FAISS index and Osprey's id map;
    // re-ranking's vectors are on disk, mapped. Freed build temporaries
    // (training buffers, the input ids, consumed by the build) go back to
    // the system first.
    release_free_heap();
    let memory_per_template = per_template(rss_before, rss_anon_bytes(), g.len());
    let bytes_per_vector = index.index_bytes()? as f64 / g.len() as f64;
    let id_map_per_template = index.id_map_bytes() as f64 / g.len() as f64;
    let id_file_per_template = index.id_file_bytes() as f64 / g.len() as f64;
    // Searched as served: reloaded from its snapshot.
    let (mut index, loaded_memory_per_template) = reloaded(index, g.len())?;

    // Ground truth: exact inner-product search on the same vectors.
    let exact = Gallery::build("exact", "bench", g.dim, Some("Flat"), ids(g.len()), &g.data)?;
    let truth = exact.search_templates(&q.data, args.k)?.1;
    drop(exact);

    let nprobes: Vec<Option<usize>> =
        if args.nprobe.is_empty() { vec![None] } else { args.nprobe.iter().map(|n| Some(*n)).collect() };
    for nprobe in nprobes {
        if let Some(nprobe) = nprobe {
            index.set_nprobe(nprobe)?;
        }
        for &rerank in &args.rerank {
            index.set_rerank(rerank)?;
            let mut best = f64::INFINITY;
            let mut found = Vec::new();
            for _ in 0..args.repeat.max(1) {
                let t = Instant::now();
                found = index.search_templates(&q.data, args.k)?.1;
                best = best.min(t.elapsed().as_secs_f64());
            }
            let mut hits = 0usize;
            for (f, t) in found.chunks(args.k).zip(truth.chunks(args.k)) {
                hits += f.iter().filter(|id| **id >= 0 && t.contains(id)).count();
            }
            let report = serde_json::json!({
                "index": args.index,
                "nprobe": index.manifest().nprobe,
                "rerank": rerank,
                "n": g.len(),
                "nq": q.len(),
                "dim": g.dim,
                "k": args.k,
                "threads": threads,
                "recall_at_k": hits as f64 / (q.len() * args.k) as f64,
                "qps": q.len() as f64 / best,
                "build_s": build_s,
                "bytes_per_vector": bytes_per_vector,
                "bytes_per_vector_estimate": bytes_per_template_estimate(&args.index, g.dim),
                "memory_bytes_per_template": memory_per_template,
                "loaded_memory_bytes_per_template": loaded_memory_per_template,
                "id_map_bytes_per_template": id_map_per_template,
                "disk_bytes_per_template": id_file_per_template + if keep.unwrap_or(0) > 0 { 4 * g.dim } else { 0 } as f64,
            });
            if args.json {
                println!("{report}");
            } else {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
        }
    }
    Ok(())
}

/// Saves a gallery to a local folder and loads it back, as a coordinator or
/// `osprey run search` opens one, and measures the resident memory the
/// loaded gallery holds per template. It is less than just after a build:
/// FAISS grows each IVF list as templates are added, leaving spare
/// capacity and freed smaller copies behind, and sizes each list exactly
/// when it reads a snapshot.
fn reloaded(gallery: Gallery, n: usize) -> anyhow::Result<(Gallery, Option<f64>)> {
    let dir = tempfile::tempdir()?;
    let root = osprey_store::Root::open(&dir.path().display().to_string())?;
    let name = gallery.manifest().name.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        let mut gallery = gallery;
        handle.block_on(gallery.save(&root))?;
        drop(gallery);
        release_free_heap();
        let before = rss_anon_bytes();
        let loaded = handle.block_on(Gallery::load(&root, &name))?;
        release_free_heap();
        Ok((loaded, per_template(before, rss_anon_bytes(), n)))
    })
}

/// Resident memory grown between two readings, per template.
fn per_template(before: Option<usize>, after: Option<usize>, n: usize) -> Option<f64> {
    before.zip(after).map(|(before, after)| after.saturating_sub(before) as f64 / n.max(1) as f64)
}

/// Returns freed heap pages to the system (glibc keeps them resident
/// otherwise), so that resident memory measures what is still held.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim only releases free memory.
        unsafe { malloc_trim(0) };
    }
}

/// Resident anonymous memory of this process (heap and private maps, not
/// file-backed pages), from `/proc/self/status`; `None` off Linux.
fn rss_anon_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn faces(args: FacesBench) -> anyhow::Result<()> {
    use osprey_models::{FaceModels, FaceOptions, default_device, model_dir};
    let paths = crate::embed::expand_inputs(&args.images)?;
    let images = paths
        .iter()
        .map(|p| osprey_media::read_image(std::path::Path::new(p)).map(|d| d.image))
        .collect::<osprey_core::Result<Vec<_>>>()?;
    let models = FaceModels::load(&model_dir(args.models.as_deref()), &default_device()?)?;
    // The same search as dlib: no pixel budget.
    let options = FaceOptions { upsample: args.upsample, max_detect_pixels: u64::MAX, ..Default::default() };
    let threads: usize = std::env::var("RAYON_NUM_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1);
    // Whole images, one after another (each uses every inference thread).
    let mut whole_s = f64::INFINITY;
    let mut chips = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        let mut found = Vec::new();
        for img in &images {
            found.extend(models.analyze(img, &options)?);
        }
        whole_s = whole_s.min(t.elapsed().as_secs_f64());
        chips = found.into_iter().map(|f| f.chip).collect();
    }
    if chips.is_empty() {
        bail!("no faces found in the benchmark images");
    }
    // Descriptors only, batched.
    let mut chips_s = f64::INFINITY;
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        for batch in chips.chunks(args.batch.max(1)) {
            models.describe(batch)?;
        }
        chips_s = chips_s.min(t.elapsed().as_secs_f64());
    }
    let out = serde_json::json!({
        "images": images.len(),
        "faces": chips.len(),
        "threads": threads,
        "upsample": args.upsample,
        "whole_s": whole_s,
        "faces_per_s": chips.len() as f64 / whole_s,
        "images_per_s": images.len() as f64 / whole_s,
        "chips": chips.len(),
        "chips_s": chips_s,
        "descriptors_per_s": chips.len() as f64 / chips_s,
    });
    if args.json {
        println!("{out}");
    } else {
        println!(
            "{} images, {} faces, {threads} threads: {:.2} faces/s ({:.2} images/s) whole-image; {:.1} descriptors/s from chips",
            images.len(),
            chips.len(),
            out["faces_per_s"].as_f64().unwrap_or(0.0),
            out["images_per_s"].as_f64().unwrap_or(0.0),
            out["descriptors_per_s"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(())
}

fn mtcnn(args: MtcnnBench) -> anyhow::Result<()> {
    let paths = crate::embed::expand_inputs(&args.images)?;
    let images = paths
        .iter()
        .map(|p| osprey_media::read_image(std::path::Path::new(p)).map(|d| d.image))
        .collect::<osprey_core::Result<Vec<_>>>()?;
    let dir = osprey_models::model_dir(args.models.as_deref()).join("mtcnn");
    let detector = osprey_models::mtcnn::Mtcnn::load(&dir)
        .map_err(|e| anyhow::anyhow!("cannot load MTCNN from {}: {e}", dir.display()))?;
    let threads: usize = std::env::var("RAYON_NUM_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1);
    let mut best_s = f64::INFINITY;
    let mut faces = 0;
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        faces = 0;
        for img in &images {
            faces += detector.detect(img).map_err(|e| anyhow::anyhow!("MTCNN failed: {e}"))?.len();
        }
        best_s = best_s.min(t.elapsed().as_secs_f64());
    }
    let megapixels: f64 = images.iter().map(|i| i.width() as f64 * i.height() as f64 / 1e6).sum();
    let out = serde_json::json!({
        "impl": "osprey",
        "images": images.len(),
        "megapixels": megapixels,
        "faces": faces,
        "threads": threads,
        "best_s": best_s,
        "images_per_s": images.len() as f64 / best_s,
        "faces_per_s": faces as f64 / best_s,
    });
    if args.json {
        println!("{out}");
    } else {
        println!(
            "MTCNN: {} images ({megapixels:.1} MP), {faces} faces, {threads} threads: {:.2} images/s, {:.2} faces/s (best of {})",
            images.len(),
            images.len() as f64 / best_s,
            faces as f64 / best_s,
            args.repeat.max(1)
        );
    }
    Ok(())
}

/// Cosine a port must reach against the reference implementation.
const PARITY_MIN_COSINE: f64 = 0.9999;

/// Side of the benchmark crops (the seed recognisers' input).
const CROP_SIDE: usize = 112;

/// The benchmark's crops: `n` deterministic pseudo-random 112×112 RGB images,
/// byte `i` (over crop, y, x, channel) the top byte of a 32-bit hash of `i`.
/// `face_models_torch_bench.py` builds the same bytes.
fn bench_crops(n: usize) -> Vec<image::RgbImage> {
    let per_crop = CROP_SIDE * CROP_SIDE * 3;
    (0..n)
        .map(|c| {
            let bytes = (c * per_crop..(c + 1) * per_crop)
                .map(|i| {
                    let mut h = (i as u32).wrapping_mul(0x9E37_79B1);
                    h ^= h >> 15;
                    h = h.wrapping_mul(0x85EB_CA77);
                    h ^= h >> 13;
                    (h >> 24) as u8
                })
                .collect();
            image::RgbImage::from_raw(CROP_SIDE as u32, CROP_SIDE as u32, bytes).expect("crop buffer size")
        })
        .collect()
}

/// The ArcFace template's landmarks, jittered per crop by whole half pixels
/// (crop pixels), as `face_models_torch_bench.py`.
fn bench_keypoints(n: usize) -> Vec<[[f32; 2]; 5]> {
    (0..n)
        .map(|c| {
            let mut kp = osprey_models::align::ARCFACE_TEMPLATE;
            for (k, p) in kp.iter_mut().enumerate() {
                p[0] += (((c * 5 + k) % 7) as f32 - 3.0) * 0.5;
                p[1] += (((c * 3 + k) % 5) as f32 - 2.0) * 0.5;
            }
            kp
        })
        .collect()
}

/// Writes random float32 weights with the manifest's names and shapes to a
/// safetensors file (osprey-cli does not link candle, so the weights reach
/// the network through the ordinary checkpoint loader). Convolution and
/// linear weights are uniform with variance 1/(4 · fan-in), norm scales and
/// PReLU slopes near 1, biases and running means near 0, running variances
/// in [0.5, 1.5] (positive). Returns the number of parameters.
fn write_random_weights(manifest: &[(String, Vec<usize>)], seed: u64, path: &std::path::Path) -> anyhow::Result<usize> {
    use std::io::Write;
    let entries: Vec<&(String, Vec<usize>)> =
        manifest.iter().filter(|(name, _)| !name.ends_with("num_batches_tracked")).collect();
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in &entries {
        let bytes = shape.iter().product::<usize>() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut head = serde_json::to_vec(&header)?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    out.write_all(&(head.len() as u64).to_le_bytes())?;
    out.write_all(&head)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut params = 0;
    for (name, shape) in entries {
        let count: usize = shape.iter().product();
        let (lo, hi) = if name.ends_with("running_var") {
            (0.5, 1.5)
        } else if name.ends_with("running_mean") || name.ends_with(".bias") {
            (-0.1, 0.1)
        } else if shape.len() >= 2 {
            let fan_in: usize = shape[1..].iter().product();
            let a = 0.5 * (3.0 / fan_in as f32).sqrt();
            (-a, a)
        } else {
            (0.8, 1.2)
        };
        for _ in 0..count {
            out.write_all(&rng.random_range(lo..hi).to_le_bytes())?;
        }
        params += count;
    }
    out.flush()?;
    Ok(params)
}

/// A float32 tensor of a safetensors file: (shape, values).
fn read_safetensors_f32(path: &std::path::Path, name: &str) -> anyhow::Result<Option<(Vec<usize>, Vec<f32>)>> {
    let bytes = std::fs::read(path)?;
    let len =
        u64::from_le_bytes(bytes.get(..8).ok_or_else(|| anyhow::anyhow!("{}: too short", path.display()))?.try_into()?)
            as usize;
    let header: serde_json::Value = serde_json::from_slice(
        bytes.get(8..8 + len).ok_or_else(|| anyhow::anyhow!("{}: truncated header", path.display()))?,
    )?;
    let Some(entry) = header.get(name) else { return Ok(None) };
    if entry["dtype"] != "F32" {
        bail!("{}: `{name}` is {}, expected F32", path.display(), entry["dtype"]);
    }
    let shape: Vec<usize> = serde_json::from_value(entry["shape"].clone())?;
    let [start, end]: [usize; 2] = serde_json::from_value(entry["data_offsets"].clone())?;
    let data = bytes
        .get(8 + len + start..8 + len + end)
        .ok_or_else(|| anyhow::anyhow!("{}: `{name}` lies outside the file", path.display()))?;
    Ok(Some((shape, data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect())))
}

/// The best and the median of timed passes (seconds; `times` not empty).
fn best_and_median(times: &[f64]) -> (f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 };
    (sorted[0], median)
}

/// Cosine of two vectors, accumulated in f64.
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn face_model(args: FaceModelBench) -> anyhow::Result<()> {
    use osprey_models::recognizer::{self, FaceRecognizer};
    let spec = osprey_models::face_model(&args.model)?;
    if args.batch == 0 {
        bail!("--batch must be positive");
    }
    let manifest = recognizer::manifest(&spec)?;
    let device = osprey_models::default_device()?;
    let started = Instant::now();
    let (model, params, weights) = match &args.weights {
        Some(path) => {
            let params: usize = manifest
                .iter()
                .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
                .map(|(_, s)| s.iter().product::<usize>())
                .sum();
            (FaceRecognizer::load(&spec, path, &device)?, params, path.display().to_string())
        }
        None => {
            let file = tempfile::Builder::new().prefix("osprey-bench-").suffix(".safetensors").tempfile()?;
            let params = write_random_weights(&manifest, args.seed, file.path())?;
            let model = FaceRecognizer::load(&spec, file.path(), &device)?;
            (model, params, format!("random (seed {}); speed does not depend on the weights' values", args.seed))
        }
    };
    let load_s = started.elapsed().as_secs_f64();
    let crops = bench_crops(args.batch);
    let keypoints = bench_keypoints(args.batch);

    // Warm-up (first-touch allocations, thread pool start); its output is the one checked.
    let embedded = model.embed(&crops, &keypoints)?;
    let mut times = Vec::with_capacity(args.iters.max(1));
    for _ in 0..args.iters.max(1) {
        let t = Instant::now();
        std::hint::black_box(model.embed(&crops, &keypoints)?);
        times.push(t.elapsed().as_secs_f64());
    }
    let finite = embedded.iter().all(|e| e.norm.is_finite() && e.embedding.iter().all(|v| v.is_finite()));
    let (best, median) = best_and_median(&times);

    let parity = match &args.reference {
        None => None,
        Some(path) => {
            let (shape, want) = read_safetensors_f32(path, "embedding")?
                .ok_or_else(|| anyhow::anyhow!("{}: no `embedding` tensor", path.display()))?;
            let dim = spec.dim;
            if shape != [args.batch, dim] {
                bail!("{}: `embedding` is {shape:?}, this run has [{}, {dim}]", path.display(), args.batch);
            }
            let norms = read_safetensors_f32(path, "norm")?.map(|(_, v)| v);
            let mut min_cos = f64::INFINITY;
            let mut max_norm_rel = 0f64;
            for (i, (e, w)) in embedded.iter().zip(want.chunks(dim)).enumerate() {
                min_cos = min_cos.min(cosine(&e.embedding, w));
                if let Some(n) = &norms {
                    max_norm_rel = max_norm_rel.max(((e.norm - n[i]) / n[i]).abs() as f64);
                }
            }
            let ok = min_cos > PARITY_MIN_COSINE;
            Some(serde_json::json!({"reference": path.display().to_string(), "min_cosine": min_cos,
                "max_norm_rel_diff": norms.as_ref().map(|_| max_norm_rel), "pass": ok}))
        }
    };
    let report = serde_json::json!({
        "impl": "osprey",
        "model": spec.id,
        "batch": args.batch,
        "forward_batch": args.batch.min(recognizer::BATCH),
        "threads": rayon::current_num_threads(),
        "iters": times.len(),
        "params": params,
        "weights": weights,
        "load_s": load_s,
        "best_s": best,
        "median_s": median,
        "embeddings_per_s": args.batch as f64 / best,
        "median_embeddings_per_s": args.batch as f64 / median,
        "finite": finite,
        "parity": parity,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{}: {} crops of 112×112, {} threads, weights {}: {:.2} embeddings/s best of {} ({:.2} median)",
            spec.id,
            args.batch,
            report["threads"],
            weights,
            report["embeddings_per_s"].as_f64().unwrap_or(0.0),
            times.len(),
            report["median_embeddings_per_s"].as_f64().unwrap_or(0.0),
        );
        if let Some(p) = &parity {
            println!("parity against {}: min cosine {:.6}", p["reference"], p["min_cosine"].as_f64().unwrap_or(0.0));
        }
    }
    if !finite {
        bail!("non-finite embeddings: the weights overflow this network");
    }
    if let Some(p) = &parity
        && p["pass"] != true
    {
        bail!("parity check failed: min cosine {} ≤ {PARITY_MIN_COSINE}", p["min_cosine"]);
    }
    Ok(())
}

/// The decoded inputs of `bench person-model`: body crops (already repeated
/// to the batch), or gait sequences (folder, frames in order: grey
/// silhouettes, or RGB person crops for models that read those).
enum PersonInputs {
    Bodies(Vec<image::RgbImage>),
    Gait(Vec<(String, Vec<image::GrayImage>)>),
    RgbGait(Vec<(String, Vec<image::RgbImage>)>),
}

/// The body crops named by `inputs` (files, or folders of them sorted by
/// path), decoded.
fn decode_crops(inputs: &[String]) -> anyhow::Result<Vec<image::RgbImage>> {
    let decoded = crate::embed::expand_inputs(inputs)?
        .iter()
        .map(|f| osprey_media::read_image(std::path::Path::new(f)).map(|d| d.image))
        .collect::<osprey_core::Result<Vec<_>>>()?;
    if decoded.is_empty() {
        bail!("no crops among the inputs");
    }
    Ok(decoded)
}

/// `bench person-model --model sapiensid --save-inputs FILE`: the network
/// inputs of the distinct crops (at most `--batch`), written as float32
/// safetensors `image` and `keypoints`.
fn save_sapiensid_inputs(
    spec: &osprey_models::registry::PersonModelSpec,
    args: &PersonModelBench,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    use osprey_models::registry::PersonArchitecture;
    use osprey_models::sapiensid::{INPUT_KEYPOINTS, INPUT_SIZE};
    if spec.architecture != PersonArchitecture::SapiensId {
        bail!("--save-inputs is for sapiensid (the model that reads keypoints), not {}", spec.id);
    }
    let mut crops = decode_crops(&args.inputs)?;
    crops.truncate(args.batch.max(1));
    let device = osprey_models::default_device()?;
    let keypointer = osprey_models::sapiensid_input::BodyKeypointer::load(&osprey_models::model_dir(None), &device)?;
    let started = Instant::now();
    let prepared = keypointer.prepare(&crops, &device)?;
    let prepare_s = started.elapsed().as_secs_f64();
    let (images, keypoints) = prepared.to_host()?;
    let n = crops.len();
    write_safetensors_f32(
        path,
        &[
            ("image", vec![n, 3, INPUT_SIZE, INPUT_SIZE], images.as_slice()),
            ("keypoints", vec![n, INPUT_KEYPOINTS, 2], keypoints.as_slice()),
        ],
    )?;
    // Which points the stand-in detectors found (a missing point is (-1, -1)).
    let found = |range: std::ops::Range<usize>| -> f64 {
        let per_crop = keypoints
            .chunks(INPUT_KEYPOINTS * 2)
            .map(|k| k.chunks(2).enumerate().filter(|(i, p)| range.contains(i) && *p != [-1.0, -1.0]).count());
        per_crop.sum::<usize>() as f64 / n as f64
    };
    let report = serde_json::json!({
        "impl": "osprey",
        "model": spec.id,
        "saved_inputs": path.display().to_string(),
        "crops": n,
        "threads": rayon::current_num_threads(),
        "prepare_s": prepare_s,
        "body_points_found_mean": found(0..17),
        "face_points_found_mean": found(17..INPUT_KEYPOINTS),
    });
    println!("{report}");
    Ok(())
}

/// Writes float32 tensors `(name, shape, values)` as a safetensors file.
fn write_safetensors_f32(path: &std::path::Path, tensors: &[(&str, Vec<usize>, &[f32])]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, values) in tensors {
        if shape.iter().product::<usize>() != values.len() {
            bail!("`{name}`: {} values for shape {shape:?}", values.len());
        }
        let bytes = values.len() * 4;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut head = serde_json::to_vec(&header)?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    out.write_all(&(head.len() as u64).to_le_bytes())?;
    out.write_all(&head)?;
    for (_, _, values) in tensors {
        for v in *values {
            out.write_all(&v.to_le_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}

fn person_model(args: PersonModelBench) -> anyhow::Result<()> {
    use osprey_models::person::PersonRecognizer;
    let spec = osprey_models::registry::person_model(&args.model)?;
    if let Some(path) = &args.save_inputs {
        return save_sapiensid_inputs(&spec, &args, path);
    }
    let Some(weights) = &args.weights else { bail!("--weights is required") };
    let gait = spec.modality == osprey_core::Modality::Gait;
    // SapiensID: its inputs (test transform, MoveNet and MTCNN keypoints)
    // are prepared and timed apart from the network.
    let sapiens = spec.architecture == osprey_models::registry::PersonArchitecture::SapiensId;
    let started = Instant::now();
    let model =
        PersonRecognizer::load(&spec, weights, &osprey_models::model_dir(None), &osprey_models::default_device()?)?;
    let load_s = started.elapsed().as_secs_f64();

    // Decoding is not timed: both sides start from decoded pixels.
    let rgb = model.reads_rgb_sequences();
    let what = if rgb { "RGB person crops" } else { "silhouettes" };
    let inputs = if gait {
        let mut sequences = Vec::with_capacity(args.inputs.len());
        for folder in &args.inputs {
            if !std::path::Path::new(folder).is_dir() {
                bail!("{folder}: a gait sequence is a folder of {what}");
            }
            let frames = crate::embed::expand_inputs(std::slice::from_ref(folder))?
                .iter()
                .map(|f| image::open(f).with_context(|| format!("{f}: not a readable image")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if frames.is_empty() {
                bail!("{folder}: no {what}");
            }
            sequences.push((folder.clone(), frames));
        }
        if rgb {
            let decoded = sequences.into_iter().map(|(d, f)| (d, f.into_iter().map(|i| i.into_rgb8()).collect()));
            PersonInputs::RgbGait(decoded.collect())
        } else {
            let decoded = sequences.into_iter().map(|(d, f)| (d, f.into_iter().map(|i| i.into_luma8()).collect()));
            PersonInputs::Gait(decoded.collect())
        }
    } else {
        if args.batch == 0 {
            bail!("--batch must be positive");
        }
        let decoded = decode_crops(&args.inputs)?;
        PersonInputs::Bodies((0..args.batch).map(|i| decoded[i % decoded.len()].clone()).collect())
    };
    let frames: usize = match &inputs {
        PersonInputs::Gait(s) => s.iter().map(|(_, f)| f.len()).sum(),
        PersonInputs::RgbGait(s) => s.iter().map(|(_, f)| f.len()).sum(),
        PersonInputs::Bodies(_) => 0,
    };
    // One pass: every input embedded, for gait the frames each sequence
    // kept, and the seconds spent preparing SapiensID's inputs.
    let pass = || -> anyhow::Result<(Vec<Vec<f32>>, Vec<usize>, f64)> {
        match &inputs {
            PersonInputs::Bodies(crops) if sapiens => {
                let t = Instant::now();
                let prepared = model.prepare_sapiensid(crops)?;
                let prepare_s = t.elapsed().as_secs_f64();
                Ok((model.embed_sapiensid(&prepared)?, Vec::new(), prepare_s))
            }
            PersonInputs::Bodies(crops) => Ok((model.embed_bodies(crops)?, Vec::new(), 0.0)),
            PersonInputs::Gait(sequences) => {
                let mut out = (Vec::with_capacity(sequences.len()), Vec::with_capacity(sequences.len()));
                for (folder, silhouettes) in sequences {
                    let (embedding, used) = model.embed_gait(silhouettes).with_context(|| folder.clone())?;
                    out.0.push(embedding);
                    out.1.push(used);
                }
                Ok((out.0, out.1, 0.0))
            }
            PersonInputs::RgbGait(sequences) => {
                let mut out = (Vec::with_capacity(sequences.len()), Vec::with_capacity(sequences.len()));
                for (folder, crops) in sequences {
                    let (embedding, used) = model.embed_gait_frames(crops).with_context(|| folder.clone())?;
                    out.0.push(embedding);
                    out.1.push(used);
                }
                Ok((out.0, out.1, 0.0))
            }
        }
    };

    // Warm-up (first-touch allocations, thread pool start); its output is the one checked.
    let (embedded, kept, _) = pass()?;
    // Per pass: the network's seconds (for SapiensID without preparing its
    // inputs), preparing, and both.
    let (mut times, mut prepare_times, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.iters.max(1) {
        let t = Instant::now();
        let (_, _, prepare_s) = std::hint::black_box(pass()?);
        let total = t.elapsed().as_secs_f64();
        times.push(total - prepare_s);
        prepare_times.push(prepare_s);
        totals.push(total);
    }
    let (best, median) = best_and_median(&times);
    let units = embedded.len();
    let finite = embedded.iter().all(|e| e.iter().all(|v| v.is_finite()));

    let parity = match &args.reference {
        None => None,
        Some(path) => {
            let (shape, want) = read_safetensors_f32(path, "embedding")?
                .ok_or_else(|| anyhow::anyhow!("{}: no `embedding` tensor", path.display()))?;
            // The checkpoint's own width (random or reduced weights may differ from the registry's).
            let dim = model.dim();
            if shape != [units, dim] {
                bail!("{}: `embedding` is {shape:?}, this run has [{units}, {dim}]", path.display());
            }
            let cosines: Vec<f64> = embedded.iter().zip(want.chunks(dim)).map(|(e, w)| cosine(e, w)).collect();
            let min_cos = cosines.iter().copied().fold(f64::INFINITY, f64::min);
            let (_, median_cos) = best_and_median(&cosines);
            // Gait: the pretreatment must have kept the same frames.
            let frames_match = match read_safetensors_f32(path, "frames")? {
                Some((_, theirs)) if gait => Some(theirs.iter().map(|f| *f as usize).collect::<Vec<_>>() == kept),
                _ => None,
            };
            let ok = min_cos > PARITY_MIN_COSINE && frames_match != Some(false);
            Some(serde_json::json!({"reference": path.display().to_string(), "min_cosine": min_cos,
                "median_cosine": median_cos, "frames_kept_match": frames_match, "pass": ok}))
        }
    };
    let mut report = serde_json::json!({
        "impl": "osprey",
        "model": spec.id,
        "modality": spec.modality.as_str(),
        "batch": units,
        "threads": rayon::current_num_threads(),
        "iters": times.len(),
        "weights": weights.display().to_string(),
        "load_s": load_s,
        "best_s": best,
        "median_s": median,
        "embeddings_per_s": units as f64 / best,
        "median_embeddings_per_s": units as f64 / median,
        "finite": finite,
        "parity": parity,
    });
    if sapiens {
        let (prepare_best, prepare_median) = best_and_median(&prepare_times);
        let (total_best, total_median) = best_and_median(&totals);
        report["timed"] = "the network on prepared inputs (384x384 square images and 22 keypoints) and the unit \
            normalisation; prepare_*: the test transform and the MoveNet + MTCNN keypoints; end_to_end_*: both"
            .into();
        report["prepare_best_s"] = prepare_best.into();
        report["prepare_median_s"] = prepare_median.into();
        report["prepare_crops_per_s"] = (units as f64 / prepare_best).into();
        report["end_to_end_best_s"] = total_best.into();
        report["end_to_end_embeddings_per_s"] = (units as f64 / total_best).into();
        report["median_end_to_end_embeddings_per_s"] = (units as f64 / total_median).into();
    }
    if gait {
        report["frames"] = frames.into();
        report["frames_kept"] = kept.iter().sum::<usize>().into();
        report["frames_per_s"] = (frames as f64 / best).into();
        report["median_frames_per_s"] = (frames as f64 / median).into();
    }
    if args.json {
        println!("{report}");
    } else {
        let what = if gait { format!("{units} sequences ({frames} {what})") } else { format!("{units} crops") };
        println!(
            "{}: {what}, {} threads: {:.2} embeddings/s best of {} ({:.2} median){}",
            spec.id,
            report["threads"],
            units as f64 / best,
            times.len(),
            units as f64 / median,
            if gait { format!(", {:.1} frames/s", frames as f64 / best) } else { String::new() },
        );
        if sapiens {
            println!(
                "  (network on prepared inputs; preparing them: {:.2} crops/s; end to end: {:.2} embeddings/s)",
                report["prepare_crops_per_s"].as_f64().unwrap_or(0.0),
                report["end_to_end_embeddings_per_s"].as_f64().unwrap_or(0.0),
            );
        }
        if let Some(p) = &parity {
            println!("parity against {}: min cosine {:.6}", p["reference"], p["min_cosine"].as_f64().unwrap_or(0.0));
        }
    }
    if !finite {
        bail!("non-finite embeddings");
    }
    if let Some(p) = &parity
        && p["pass"] != true
    {
        bail!(
            "parity check failed: min cosine {} (needs > {PARITY_MIN_COSINE}), same frames kept: {}",
            p["min_cosine"],
            p["frames_kept_match"]
        );
    }
    Ok(())
}

/// `osprey bench rest`: the same single-probe searches in process (the
/// reference) and through `POST /v1/search` from concurrent clients over
/// loopback HTTP, which adds JSON, authentication, batching with the
/// concurrent searches (one FAISS call per batch, several batches at once)
/// and an audit row per search. Reports searches/s and per-request latency
/// (p50, p99; REST: client side, until the whole answer is read).
pub async fn rest(args: RestBench) -> anyhow::Result<()> {
    use osprey_store::{Root, Template};
    if args.templates == 0 || args.subjects == 0 || args.queries == 0 || args.clients == 0 {
        bail!("--templates, --subjects, --queries and --clients must be positive");
    }
    let dim = osprey_models::dlib::resnet::DESCRIPTOR_DIM;
    let dir = tempfile::tempdir()?;
    let root = Root::open(&dir.path().display().to_string())?;
    eprintln!("generating {} templates of {} subjects…", args.templates, args.subjects);
    let (data, labels) = clustered(args.templates, dim, args.subjects, 0.5, 42, 7);
    let (queries, _) = clustered(args.queries, dim, args.subjects, 0.5, 4242, 7);
    let templates: Vec<Template> = labels
        .iter()
        .enumerate()
        .map(|(i, c)| Template {
            template_id: format!("t{i}"),
            gallery: Some("bench".into()),
            subject_id: Some(format!("subject-{c:06}")),
            model: osprey_models::MODEL_NAME.into(),
            embedding: Some(data[i * dim..(i + 1) * dim].to_vec()),
            ..Default::default()
        })
        .collect();
    drop(data);
    let started = Instant::now();
    let opts = osprey_index::EnrollOptions { index_factory: args.index.clone(), ..Default::default() };
    let gallery = osprey_index::enroll(&root, "bench", "bench", templates, &[], &opts).await?;
    let factory = gallery.manifest().index_factory.clone();
    eprintln!("gallery built and stored in {:.1}s ({factory})", started.elapsed().as_secs_f64());
    drop(gallery);

    // Each round: the reference (one probe per call, in process, on a
    // gallery loaded from the root), then REST with the configured
    // batching, then (if asked) REST one search per FAISS call.
    let defaults = osprey_coordinator::Config::default();
    let wait_us = args.batch_wait_us.unwrap_or(defaults.search_batch_wait_us);
    let max = args.batch_max.unwrap_or(defaults.search_batch_max);
    let queries = std::sync::Arc::new(queries);
    let mut rounds = Vec::new();
    for round in 0..args.runs.max(1) {
        let g = Gallery::load(&root, "bench").await?;
        let mut latency = Vec::with_capacity(args.queries);
        let t = Instant::now();
        for q in queries.chunks(dim) {
            let one = Instant::now();
            g.search(q, args.k)?;
            latency.push(one.elapsed().as_secs_f64());
        }
        let in_process = args.queries as f64 / t.elapsed().as_secs_f64();
        drop(g);
        let batched = rest_pass(&root, &queries, dim, &args, wait_us, max, false).await?;
        let mut r = serde_json::json!({
            "in_process_searches_per_s": in_process,
            "in_process_latency_ms_p50": percentile(&mut latency, 0.5) * 1e3,
            "in_process_latency_ms_p99": percentile(&mut latency, 0.99) * 1e3,
            "rest_searches_per_s": batched.searches_per_s,
            "rest_latency_ms_p50": batched.p50_ms,
            "rest_latency_ms_p99": batched.p99_ms,
            "rest_over_in_process": batched.searches_per_s / in_process,
            "rest_errors": batched.errors,
        });
        if args.compare_unbatched {
            let one = rest_pass(&root, &queries, dim, &args, 0, 1, false).await?;
            r["unbatched_rest_searches_per_s"] = one.searches_per_s.into();
            r["unbatched_rest_latency_ms_p50"] = one.p50_ms.into();
            r["unbatched_rest_latency_ms_p99"] = one.p99_ms.into();
            r["unbatched_rest_over_in_process"] = (one.searches_per_s / in_process).into();
            r["unbatched_rest_errors"] = one.errors.into();
        }
        if args.compare_floor {
            let floor = rest_pass(&root, &queries, dim, &args, wait_us, max, true).await?;
            r["floor_requests_per_s"] = floor.searches_per_s.into();
            r["floor_latency_ms_p50"] = floor.p50_ms.into();
            r["floor_over_in_process"] = (floor.searches_per_s / in_process).into();
            r["floor_errors"] = floor.errors.into();
        }
        eprintln!("round {}: {r}", round + 1);
        rounds.push(r);
    }
    let mut report = serde_json::json!({
        "templates": args.templates,
        "subjects": args.subjects,
        "index": factory,
        "queries": args.queries,
        "clients": args.clients,
        "k": args.k,
        "search_batch_wait_us": wait_us,
        "search_batch_max": max,
        "search_threads": args.search_threads.unwrap_or(defaults.search_threads),
        "search_concurrency": args.search_concurrency.unwrap_or(defaults.search_concurrency),
        "audit_flush_seconds": args.audit_flush_seconds.unwrap_or(defaults.audit_flush_seconds),
    });
    // Each measure's median over the rounds (errors: the total).
    for (field, value) in rounds[0].as_object().expect("an object").clone() {
        let mut all: Vec<f64> = rounds.iter().filter_map(|r| r[&field].as_f64()).collect();
        report[&field] = if field.ends_with("errors") {
            (all.iter().sum::<f64>() as usize).into()
        } else if value.is_f64() {
            percentile(&mut all, 0.5).into()
        } else {
            value
        };
    }
    report["runs"] = rounds.into();
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// One REST pass's measures.
struct RestPass {
    searches_per_s: f64,
    /// Client-side latency per request (sent → whole answer read).
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

/// Starts a coordinator over `root` with the given batching and times
/// `args.clients` concurrent clients searching all `queries` through
/// `POST /v1/search`, one probe per request (after one warm-up search that
/// loads the gallery). `floor`: every request asks for `k` 0, which the
/// coordinator refuses (400) after authentication and parsing, before
/// searching or auditing; a pass counts those refusals as answered.
async fn rest_pass(
    root: &osprey_store::Root,
    queries: &std::sync::Arc<Vec<f32>>,
    dim: usize,
    args: &RestBench,
    wait_us: u64,
    max: usize,
    floor: bool,
) -> anyhow::Result<RestPass> {
    let key = "bench-admin-key-0123";
    let config = osprey_coordinator::Config {
        root: root.url().to_string(),
        api_keys: vec![format!("admin:{key}")],
        search_batch_wait_us: wait_us,
        search_batch_max: max,
        search_threads: args.search_threads.unwrap_or(osprey_coordinator::Config::default().search_threads),
        search_concurrency: args.search_concurrency.unwrap_or(osprey_coordinator::Config::default().search_concurrency),
        audit_flush_seconds: args
            .audit_flush_seconds
            .unwrap_or(osprey_coordinator::Config::default().audit_flush_seconds),
        ..Default::default()
    };
    let coordinator = osprey_coordinator::Coordinator::start(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/search", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(osprey_coordinator::serve(coordinator, listener, async move {
        stopped.await.ok();
    }));
    let http = reqwest::Client::new();
    let warm = serde_json::json!({"gallery": "bench", "embedding": &queries[..dim], "k": args.k, "threshold": 0.5});
    let r = http.post(&url).bearer_auth(key).json(&warm).send().await?;
    if !r.status().is_success() {
        bail!("warm-up search failed: {} {}", r.status(), r.text().await.unwrap_or_default());
    }
    let t = Instant::now();
    let mut clients = Vec::new();
    for c in 0..args.clients {
        let k = if floor { 0 } else { args.k };
        let answered = if floor { reqwest::StatusCode::BAD_REQUEST } else { reqwest::StatusCode::OK };
        let (http, url, queries, n) = (http.clone(), url.clone(), std::sync::Arc::clone(queries), args.clients);
        clients.push(tokio::spawn(async move {
            let mut errors = 0usize;
            let mut latency = Vec::new();
            for q in queries.chunks(dim).skip(c).step_by(n) {
                let body = serde_json::json!({"gallery": "bench", "embedding": q, "k": k, "threshold": 0.5});
                let one = Instant::now();
                let ok = match http.post(&url).bearer_auth(key).json(&body).send().await {
                    Ok(r) if r.status() == answered => r.bytes().await.is_ok(),
                    _ => false,
                };
                latency.push(one.elapsed().as_secs_f64());
                errors += usize::from(!ok);
            }
            (errors, latency)
        }));
    }
    let mut errors = 0;
    let mut latency = Vec::with_capacity(args.queries);
    for c in clients {
        let (e, l) = c.await?;
        errors += e;
        latency.extend(l);
    }
    let searches_per_s = args.queries as f64 / t.elapsed().as_secs_f64();
    stop.send(()).ok();
    server.await??;
    Ok(RestPass {
        searches_per_s,
        p50_ms: percentile(&mut latency, 0.5) * 1e3,
        p99_ms: percentile(&mut latency, 0.99) * 1e3,
        errors,
    })
}

/// The `q` quantile (0 to 1) of `values` (nearest rank; sorts them); 0 when empty.
fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}
