//! `osprey run enroll|search`: the embedded batch jobs. Images and videos in
//! (local paths, folders, globs or object URLs), templates, gallery updates
//! and open-set results out, under one root, with no server.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use osprey_core::{Error, Modality, OpenSetDecision};
use osprey_index::{EnrollOptions, Gallery, enroll, operating_point, search_probes, store_search};
use osprey_media::video::{Sampling, VideoReader, segments};
use osprey_media::{decode_image, is_image_path, is_video_path};
use osprey_models::{FaceModels, FaceOptions, MODEL_NAME, default_device, model_dir};
use osprey_pipeline::{
    FaceAnalyzer, FrameAnalyzer, MediaTemplate, VideoOptions, image_templates, process_video, still_templates,
};
use osprey_store::{BBox, Root, SearchResultRow, Template, layout};

use crate::Format;
use crate::embed::{read_input, read_input_list, walk};
use crate::gallery::{RootArg, SearchOptions};

#[derive(clap::Subcommand)]
pub enum RunCommand {
    /// Enrol a gallery from a folder per subject (images and/or videos).
    Enroll(EnrollArgs),
    /// Find who appears in images and videos: open-set search against a gallery.
    Search(SearchArgs),
}

/// How media are turned into templates.
#[derive(clap::Args, Clone)]
pub struct MediaArgs {
    /// Video frames analysed: frames per second (e.g. `5`), `every:N`, or `all`.
    #[arg(long, default_value = "5")]
    pub sample_fps: String,
    /// Image doublings before detection: 0 finds faces from ~80 px, 1 from ~40 px.
    #[arg(long, default_value_t = 1)]
    pub upsample: u32,
    /// Most megapixels the detector searches per frame or image (after
    /// upsampling); larger frames are searched at the largest size that fits.
    #[arg(long, default_value_t = 4.0)]
    pub max_detect_megapixels: f64,
    /// Videos are processed in segments of this many seconds; tracks end at
    /// segment edges.
    #[arg(long, default_value_t = 300)]
    pub segment_seconds: u64,
    /// Folder with the model files (default: $OSPREY_MODELS, else ./models).
    #[arg(long, env = "OSPREY_MODELS")]
    pub models: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    root: RootArg,
    /// Gallery to create or extend.
    #[arg(long)]
    gallery: String,
    /// A folder (or object URL prefix) holding one folder per subject; the
    /// folder's name is the subject id.
    #[arg(long, value_name = "DIR")]
    subjects_from_dirs: String,
    /// FAISS index factory string; chosen by gallery size if omitted.
    #[arg(long)]
    index: Option<String>,
    /// Calibrate the gallery's operating threshold for this FPIR.
    #[arg(long, default_value_t = osprey_index::DEFAULT_FPIR)]
    fpir: f64,
    #[command(flatten)]
    media: MediaArgs,
}

#[derive(clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    root: RootArg,
    #[command(flatten)]
    search: SearchOptions,
    #[command(flatten)]
    media: MediaArgs,
    /// Images and videos: files, folders, globs (`clips/*.mp4`), `@list.txt`
    /// files or object URLs (`s3://bucket/clips/`, `s3://bucket/clips/*.mp4`).
    #[arg(required = true)]
    inputs: Vec<String>,
}

pub async fn run(cmd: RunCommand) -> anyhow::Result<()> {
    match cmd {
        RunCommand::Enroll(args) => run_enroll(args).await,
        RunCommand::Search(args) => run_search(args).await,
    }
}

// ---------------------------------------------------------------- inputs

fn is_media(name: &str) -> bool {
    let p = Path::new(name);
    is_image_path(p) || is_video_path(p)
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expands files, folders, globs, `@lists` and object URLs (a folder URL
/// ends in `/`) into media inputs, in order. A plain file or object URL is
/// taken as given (its content decides what it is); folders and globs keep
/// only names with an image or video extension.
pub async fn expand_media(inputs: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for input in inputs {
        if let Some(list) = input.strip_prefix('@') {
            out.extend(Box::pin(expand_media(&read_input_list(list)?)).await?);
            continue;
        }
        let is_url = input.contains("://");
        if !has_glob(input) && !(is_url && input.ends_with('/')) {
            let path = Path::new(input);
            if !is_url && path.is_dir() {
                let found = media_files_under(path)?;
                if found.is_empty() {
                    eprintln!("warning: no images or videos under {}", path.display());
                }
                out.extend(found);
            } else {
                out.push(input.clone());
            }
            continue;
        }
        // A glob or a folder URL: list through the object store, below the
        // longest folder without glob characters.
        let literal_end = input.find(['*', '?', '[']).unwrap_or(input.len());
        let (base, pattern) = input.split_at(input[..literal_end].rfind('/').map_or(0, |i| i + 1));
        let base_url = if is_url {
            base.to_string()
        } else {
            let dir = if base.is_empty() { "." } else { base };
            std::fs::canonicalize(dir).with_context(|| format!("no folder {dir}"))?.display().to_string()
        };
        let root = Root::open(&base_url)?;
        let objects = if pattern.is_empty() { root.list("").await? } else { root.glob(pattern).await? };
        let found: Vec<String> =
            objects.into_iter().filter(|o| is_media(&o.key)).map(|o| join_url(&base_url, &o.key)).collect();
        if found.is_empty() {
            eprintln!("warning: no images or videos match {input}");
        }
        out.extend(found);
    }
    Ok(out)
}

/// The image and video files under a local folder (recursively), sorted.
fn media_files_under(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut found: Vec<String> =
        walk(dir)?.into_iter().filter(|p| is_media(&p.to_string_lossy())).map(|p| p.display().to_string()).collect();
    found.sort();
    Ok(found)
}

fn join_url(base: &str, key: &str) -> String {
    if base.ends_with('/') { format!("{base}{key}") } else { format!("{base}/{key}") }
}

// ---------------------------------------------------------------- progress

/// Frames done out of an estimate: a bar with frames/s and ETA on a
/// terminal, a log line per finished input otherwise.
struct FrameProgress {
    bar: Option<ProgressBar>,
    started: Instant,
    frames: AtomicUsize,
}

impl FrameProgress {
    fn new(estimated_frames: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(estimated_frames.max(1));
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} frames {per_sec} [{elapsed_precise}, ETA {eta}] {wide_msg}",
                )
                .expect("valid template"),
            );
            b
        });
        Self { bar, started: Instant::now(), frames: AtomicUsize::new(0) }
    }

    fn frame(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    fn started_input(&self, input: &str) {
        if let Some(b) = &self.bar {
            b.set_message(short_name(input).to_string());
        }
    }

    fn finished_input(&self, done: usize, total: usize, input: &str, what: &str) {
        let line = format!("[{done}/{total}] {}: {what}", short_name(input));
        match &self.bar {
            Some(b) => b.println(line),
            None => {
                let secs = self.started.elapsed().as_secs_f64();
                let frames = self.frames.load(Ordering::Relaxed);
                eprintln!("{line} ({frames} frames in {secs:.1}s, {:.2} frames/s)", frames as f64 / secs.max(1e-9));
            }
        }
    }

    fn finish(&self) -> (usize, f64) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        (self.frames.load(Ordering::Relaxed), self.started.elapsed().as_secs_f64())
    }
}

fn short_name(input: &str) -> &str {
    input.trim_end_matches('/').rsplit('/').next().unwrap_or(input)
}

// ---------------------------------------------------------------- media → templates

/// What one input gave: templates (with the segment each came from) or an error.
struct MediaResult {
    input: String,
    templates: Vec<(usize, MediaTemplate)>,
    is_video: bool,
    frames: u64,
    error: Option<String>,
}

struct Analysis {
    analyzer: FaceAnalyzer,
    sampling: Sampling,
    segment_ms: i64,
}

impl Analysis {
    fn load(args: &MediaArgs) -> anyhow::Result<Analysis> {
        let sampling = Sampling::parse(&args.sample_fps)?;
        if !args.max_detect_megapixels.is_finite() || args.max_detect_megapixels <= 0.0 {
            bail!(Error::invalid("--max-detect-megapixels must be positive"));
        }
        if args.segment_seconds == 0 {
            bail!(Error::invalid("--segment-seconds must be positive"));
        }
        let models = FaceModels::load(&model_dir(args.models.as_deref()), &default_device())?;
        let options = FaceOptions {
            upsample: args.upsample,
            max_detect_pixels: (args.max_detect_megapixels * 1e6) as u64,
            ..FaceOptions::default()
        };
        Ok(Analysis {
            analyzer: FaceAnalyzer::new(models, options),
            sampling,
            segment_ms: args.segment_seconds as i64 * 1000,
        })
    }

    /// Frames a video will yield at this sampling (for progress), if known.
    fn estimate_frames(&self, path: &Path) -> Option<u64> {
        let reader = VideoReader::open(path, "probe").ok()?;
        let info = reader.info();
        let total = info.num_frames.map(|n| n as f64).or(info.duration_ms.map(|d| d as f64 / 1000.0 * info.fps))?;
        Some(match self.sampling {
            Sampling::All => total,
            Sampling::EveryNth(n) => total / n as f64,
            Sampling::Fps(f) => total * (f / info.fps).min(1.0),
        } as u64)
    }

    /// Templates of one input; `largest_only` keeps one face per image.
    fn process(
        &self,
        input: &str,
        largest_only: bool,
        rt: &tokio::runtime::Handle,
        progress: &FrameProgress,
    ) -> MediaResult {
        let mut result =
            MediaResult { input: input.to_string(), templates: Vec::new(), is_video: false, frames: 0, error: None };
        let outcome = if is_video_path(Path::new(input)) {
            result.is_video = true;
            self.process_video(input, rt, progress, &mut result)
        } else {
            self.process_image(input, largest_only, rt, progress, &mut result)
        };
        if let Err(e) = outcome {
            result.error = Some(e.message().to_string());
        }
        result
    }

    fn process_image(
        &self,
        input: &str,
        largest_only: bool,
        rt: &tokio::runtime::Handle,
        progress: &FrameProgress,
        result: &mut MediaResult,
    ) -> osprey_core::Result<()> {
        let bytes = read_input(input, rt)?;
        let image = decode_image(&bytes, input)?.image;
        let templates = if largest_only {
            still_templates(&image, self.analyzer.analyze_with(&image, &self.analyzer.largest_only())?)?
        } else {
            image_templates(&self.analyzer, &image)?
        };
        progress.frame();
        result.frames = 1;
        if templates.is_empty() {
            return Err(Error::invalid(format!("{input}: no face found")));
        }
        result.templates = templates.into_iter().map(|t| (0, t)).collect();
        Ok(())
    }

    fn process_video(
        &self,
        input: &str,
        rt: &tokio::runtime::Handle,
        progress: &FrameProgress,
        result: &mut MediaResult,
    ) -> osprey_core::Result<()> {
        // A local file is read in place; an object is copied to a temporary
        // file (removed when this returns) because FFmpeg seeks in it.
        let temp;
        let path = if input.contains("://") && !input.starts_with("file://") {
            let bytes = read_input(input, rt)?;
            let suffix = Path::new(input).extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
            temp = tempfile::Builder::new()
                .prefix("osprey-video-")
                .suffix(&suffix)
                .tempfile()
                .map_err(|e| Error::internal(format!("cannot create a temporary file: {e}")))?;
            std::fs::write(temp.path(), &bytes)
                .map_err(|e| Error::internal(format!("cannot write a temporary file: {e}")))?;
            temp.path().to_path_buf()
        } else {
            PathBuf::from(input.strip_prefix("file://").unwrap_or(input))
        };
        let info = VideoReader::open(&path, input)?.info().clone();
        let plan = segments(info.duration_ms, self.segment_ms);
        let frames = AtomicUsize::new(0);
        for (i, segment) in plan.iter().enumerate() {
            let out = process_video(
                &self.analyzer,
                &path,
                input,
                VideoOptions { sampling: self.sampling, segment: *segment },
                &|_| {
                    frames.fetch_add(1, Ordering::Relaxed);
                    progress.frame();
                },
            )?;
            result.templates.extend(out.templates.into_iter().map(|t| (i, t)));
        }
        result.frames = frames.load(Ordering::Relaxed) as u64;
        Ok(())
    }
}

/// Runs `analysis` over `inputs` on a few threads (each network uses every
/// core within a frame); results come back in input order.
fn process_all(analysis: &Analysis, inputs: &[String], largest_only: bool) -> (Vec<MediaResult>, usize, f64) {
    let estimate: u64 = inputs
        .iter()
        .map(|i| {
            if is_video_path(Path::new(i)) && !i.contains("://") {
                analysis.estimate_frames(Path::new(i)).unwrap_or(1)
            } else {
                1
            }
        })
        .sum();
    let progress = FrameProgress::new(estimate);
    let rt = tokio::runtime::Handle::current();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(inputs.len()));
    let workers = rayon::current_num_threads().clamp(1, crate::embed::MAX_IMAGES_IN_FLIGHT).min(inputs.len().max(1));
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(input) = inputs.get(i) else { break };
                        progress.started_input(input);
                        let r = analysis.process(input, largest_only, &rt, &progress);
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        let what = match &r.error {
                            Some(e) => format!("failed: {e}"),
                            None if r.is_video => format!("{} tracks from {} frames", r.templates.len(), r.frames),
                            None => format!("{} faces", r.templates.len()),
                        };
                        progress.finished_input(n, inputs.len(), input, &what);
                        results.lock().expect("results lock").push((i, r));
                    }
                });
            }
        });
    });
    let (frames, secs) = progress.finish();
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|(i, _)| *i);
    (results.into_iter().map(|(_, r)| r).collect(), frames, secs)
}

// ---------------------------------------------------------------- templates

fn template_id(scope: &str, input: &str, segment: usize, track: i64) -> String {
    let name = format!("{scope}/{input}#s{segment}t{track}/{MODEL_NAME}");
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
}

fn thumbnail_key(template_id: &str) -> String {
    format!("{}/{template_id}.jpg", layout::THUMBNAILS)
}

/// A template row for `t`; its thumbnail goes to `thumbnails` for writing.
fn template_row(
    root: &Root,
    template_id: String,
    input: &str,
    segment: usize,
    t: &MediaTemplate,
    is_video: bool,
    thumbnails: &mut Vec<(String, Vec<u8>)>,
) -> Template {
    let key = thumbnail_key(&template_id);
    let thumbnail_uri = root.url_of(&key);
    thumbnails.push((key, t.thumbnail_jpeg.clone()));
    Template {
        template_id,
        task_id: Some(format!("segment-{segment}")),
        media_uri: Some(input.to_string()),
        track_id: is_video.then_some(t.track_id),
        modality: Some(Modality::Face),
        model: MODEL_NAME.to_string(),
        embedding: Some(t.embedding.clone()),
        quality: Some(t.quality),
        frame_start: is_video.then_some(t.frame_start),
        frame_end: is_video.then_some(t.frame_end),
        t_start_ms: is_video.then_some(t.t_start_ms),
        t_end_ms: is_video.then_some(t.t_end_ms),
        num_frames: Some(t.num_frames as i32),
        bbox: Some(BBox { x: t.bbox.x, y: t.bbox.y, w: t.bbox.w, h: t.bbox.h }),
        landmarks: Some(t.landmarks.clone()),
        thumbnail_uri: Some(thumbnail_uri),
        created_at_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    }
}

fn failure_row(template_id: String, input: &str, error: &str) -> Template {
    Template {
        template_id,
        media_uri: Some(input.to_string()),
        modality: Some(Modality::Face),
        model: MODEL_NAME.to_string(),
        error: Some(error.to_string()),
        created_at_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    }
}

async fn put_thumbnails(root: &Root, thumbnails: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    for (key, bytes) in thumbnails {
        root.put(&key, bytes.into()).await?;
    }
    Ok(())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The subject's own tracks in an enrolment video: the dominant one (most
/// quality-weighted observations) and any other that looks like it.
fn subject_tracks(templates: Vec<(usize, MediaTemplate)>, same_person: f32) -> Vec<(usize, MediaTemplate)> {
    let weight = |t: &MediaTemplate| t.quality * t.num_frames as f32;
    let Some(best) = templates.iter().max_by(|a, b| weight(&a.1).total_cmp(&weight(&b.1))) else {
        return templates;
    };
    let anchor = best.1.embedding.clone();
    templates.into_iter().filter(|(_, t)| cosine(&t.embedding, &anchor) >= same_person).collect()
}

// ---------------------------------------------------------------- enroll

async fn subject_inputs(dir: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if dir.contains("://") && !dir.starts_with("file://") {
        let base = if dir.ends_with('/') { dir.to_string() } else { format!("{dir}/") };
        let root = Root::open(&base)?;
        for o in root.list("").await? {
            if let Some((subject, _)) = o.key.split_once('/').filter(|_| is_media(&o.key)) {
                out.push((subject.to_string(), join_url(&base, &o.key)));
            }
        }
    } else {
        let dir = PathBuf::from(dir.strip_prefix("file://").unwrap_or(dir));
        let mut subjects: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list subjects folder {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subjects.sort();
        for s in subjects {
            let subject = s.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let files = media_files_under(&s)?;
            if files.is_empty() {
                eprintln!("warning: subject folder {} holds no images or videos", s.display());
            }
            out.extend(files.into_iter().map(|f| (subject.clone(), f)));
        }
    }
    Ok(out)
}

async fn run_enroll(args: EnrollArgs) -> anyhow::Result<()> {
    layout::check_name("gallery", &args.gallery)?;
    let root = Root::open(&args.root.root)?;
    let inputs = subject_inputs(&args.subjects_from_dirs).await?;
    if inputs.is_empty() {
        bail!(Error::invalid(format!("no subject folders with images or videos under {}", args.subjects_from_dirs)));
    }
    for (subject, _) in &inputs {
        layout::check_name("subject", subject).context("subject ids come from folder names")?;
    }
    let existing: std::collections::HashSet<String> = match Gallery::load(&root, &args.gallery).await {
        Ok(g) => g.template_ids().map(str::to_string).collect(),
        Err(e) if e.kind() == osprey_core::ErrorKind::NotFound => Default::default(),
        Err(e) => return Err(e.into()),
    };
    let analysis = Analysis::load(&args.media)?;
    let same_person = analysis.analyzer.tracker_config().appearance_gate_far;
    let files: Vec<String> = inputs.iter().map(|(_, f)| f.clone()).collect();
    let (results, frames, secs) = process_all(&analysis, &files, true);

    let mut templates = Vec::new();
    let mut thumbnails = Vec::new();
    let mut failed = Vec::new();
    let mut skipped = 0;
    for ((subject, _), r) in inputs.iter().zip(results) {
        if let Some(e) = &r.error {
            failed.push((r.input.clone(), e.clone()));
            continue;
        }
        let chosen = if r.is_video { subject_tracks(r.templates, same_person) } else { r.templates };
        for (segment, t) in chosen {
            let id = template_id(&format!("gallery={}", args.gallery), &r.input, segment, t.track_id);
            if existing.contains(&id) {
                skipped += 1;
                continue;
            }
            let mut row = template_row(&root, id, &r.input, segment, &t, r.is_video, &mut thumbnails);
            row.gallery = Some(args.gallery.clone());
            row.subject_id = Some(subject.clone());
            templates.push(row);
        }
    }
    for (input, e) in &failed {
        eprintln!("  skipped {input}: {e}");
    }
    let subjects =
        templates.iter().filter_map(|t| t.subject_id.as_deref()).collect::<std::collections::BTreeSet<_>>().len();
    if templates.is_empty() {
        if skipped > 0 {
            eprintln!("nothing new: all {skipped} templates are already enrolled in `{}`", args.gallery);
            return Ok(());
        }
        bail!(Error::invalid("no face could be enrolled from any input"));
    }
    // The batch id is a digest of the templates, so the same enrolment
    // repeated is recognised instead of enrolled twice.
    let mut ids: Vec<&str> = templates.iter().map(|t| t.template_id.as_str()).collect();
    ids.sort();
    let batch = format!(
        "enroll-{}-{}",
        args.gallery,
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, ids.join(",").as_bytes()).simple()
    );
    put_thumbnails(&root, thumbnails).await?;
    let n = templates.len();
    let opts = EnrollOptions { index_factory: args.index, nprobe: None, calibrate_fpir: Some(args.fpir) };
    let gallery = enroll(&root, &args.gallery, &batch, templates, &opts).await?;
    let m = gallery.manifest();
    eprintln!(
        "enrolled {n} templates of {} subjects from {} inputs ({} failed, {skipped} already enrolled) in {secs:.1}s ({frames} frames, {:.2} frames/s)",
        subjects,
        inputs.len(),
        failed.len(),
        frames as f64 / secs.max(1e-9)
    );
    eprintln!(
        "gallery `{}`: {} subjects, {} templates, index {}; operating threshold {}",
        m.name,
        m.num_subjects,
        m.num_templates,
        m.index_factory,
        match (m.threshold, m.threshold_fpir) {
            (Some(t), Some(f)) => format!("{t:.4} (calibrated for FPIR {f})"),
            _ => "not calibrated yet (needs two subjects)".to_string(),
        }
    );
    Ok(())
}

// ---------------------------------------------------------------- search

async fn run_search(args: SearchArgs) -> anyhow::Result<()> {
    let root = Root::open(&args.root.root)?;
    let mut gallery = Gallery::load(&root, &args.search.gallery).await?;
    if gallery.manifest().model != MODEL_NAME {
        bail!(Error::invalid(format!(
            "gallery `{}` holds `{}` templates; `osprey run` embeds with `{MODEL_NAME}`",
            args.search.gallery,
            gallery.manifest().model
        )));
    }
    let job_id = args.search.job_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    layout::check_name("job", &job_id)?;
    let op = operating_point(&root, &mut gallery, args.search.threshold, args.search.fpir).await?;
    eprintln!("operating threshold {:.4} ({})", op.threshold, op.source);
    let inputs = expand_media(&args.inputs).await?;
    if inputs.is_empty() {
        bail!(Error::invalid("no input images or videos"));
    }
    let analysis = Analysis::load(&args.media)?;
    let (results, frames, secs) = process_all(&analysis, &inputs, false);

    let scope = format!("job={job_id}");
    let mut probes = Vec::new();
    let mut thumbnails = Vec::new();
    let mut failed = 0;
    for r in &results {
        if let Some(e) = &r.error {
            failed += 1;
            let mut row = failure_row(template_id(&scope, &r.input, usize::MAX, -1), &r.input, e);
            row.job_id = Some(job_id.clone());
            probes.push(row);
            continue;
        }
        for (segment, t) in &r.templates {
            let id = template_id(&scope, &r.input, *segment, t.track_id);
            let mut row = template_row(&root, id, &r.input, *segment, t, r.is_video, &mut thumbnails);
            row.job_id = Some(job_id.clone());
            probes.push(row);
        }
    }
    let searchable: Vec<&Template> = probes.iter().filter(|p| p.embedding.is_some()).collect();
    let rows = search_probes(&mut gallery, &job_id, &searchable, args.search.top_k, op.threshold)?;
    put_thumbnails(&root, thumbnails).await?;
    let dim = gallery.manifest().dim;
    store_search(&root, &job_id, "part-0", MODEL_NAME, dim, &probes, &rows).await?;

    print_appearances(&probes, &rows, args.search.format)?;
    let (matches, unknown) = osprey_index::count_decisions(&rows);
    eprintln!(
        "job {job_id}: {} inputs ({failed} failed), {frames} frames in {secs:.1}s ({:.2} frames/s); {} probe templates: {matches} match, {unknown} unknown",
        inputs.len(),
        frames as f64 / secs.max(1e-9),
        searchable.len()
    );
    for r in results.iter().filter(|r| r.error.is_some()) {
        eprintln!("  failed {}: {}", r.input, r.error.as_deref().unwrap_or_default());
    }
    eprintln!(
        "who appears when: osprey sql --root {} \"SELECT t.media_uri, t.t_start_ms, t.t_end_ms, r.subject_id, r.score FROM results r JOIN templates t ON r.probe_template_id = t.template_id WHERE r.job_id = '{job_id}' AND r.rank = 1 AND r.decision = 'match' ORDER BY 1, 2\"",
        root.url()
    );
    if failed == inputs.len() {
        bail!(Error::invalid("every input failed"));
    }
    Ok(())
}

/// One line per probe template: where and when, and who (or `unknown`).
fn print_appearances(probes: &[Template], rows: &[SearchResultRow], format: Format) -> anyhow::Result<()> {
    let top: std::collections::HashMap<&str, &SearchResultRow> =
        rows.iter().filter(|r| r.rank == 1).map(|r| (r.probe_template_id.as_str(), r)).collect();
    let lines: Vec<serde_json::Value> = probes
        .iter()
        .filter_map(|p| Some((p, *top.get(p.template_id.as_str())?)))
        .map(|(p, r)| {
            let subject = match r.decision {
                OpenSetDecision::Match => r.subject_id.clone().unwrap_or_default(),
                OpenSetDecision::Unknown => "unknown".to_string(),
            };
            serde_json::json!({
                "media": p.media_uri,
                "track": p.track_id,
                "t_start_s": p.t_start_ms.map(|t| t as f64 / 1000.0),
                "t_end_s": p.t_end_ms.map(|t| t as f64 / 1000.0),
                "frames": p.num_frames,
                "decision": r.decision.as_str(),
                "subject": subject,
                "best_candidate": r.subject_id,
                "score": r.score,
                "quality": p.quality,
                "template_id": p.template_id,
            })
        })
        .collect();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&lines)?),
        Format::Csv => {
            println!("media,track,t_start_s,t_end_s,frames,decision,subject,best_candidate,score,template_id");
            for l in &lines {
                println!(
                    "{},{},{},{},{},{},{},{},{},{}",
                    text(&l["media"]),
                    l["track"],
                    l["t_start_s"],
                    l["t_end_s"],
                    l["frames"],
                    text(&l["decision"]),
                    text(&l["subject"]),
                    text(&l["best_candidate"]),
                    l["score"],
                    text(&l["template_id"])
                );
            }
        }
        Format::Table => {
            println!(
                "{:<32} {:>5} {:>15} {:>6} {:<8} {:<24} {:>6} {:<24}",
                "media", "track", "time (s)", "frames", "decision", "subject", "score", "best candidate"
            );
            let or_dash =
                |v: &serde_json::Value, f: &dyn Fn(f64) -> String| v.as_f64().map(f).unwrap_or_else(|| "-".into());
            for l in &lines {
                let time = match (l["t_start_s"].as_f64(), l["t_end_s"].as_f64()) {
                    (Some(a), Some(b)) => format!("{a:.2}-{b:.2}"),
                    _ => "-".into(),
                };
                println!(
                    "{:<32} {:>5} {:>15} {:>6} {:<8} {:<24} {:>6} {:<24}",
                    short_name(&text(&l["media"])),
                    or_dash(&l["track"], &|t| format!("{t}")),
                    time,
                    l["frames"].as_i64().unwrap_or(0),
                    text(&l["decision"]),
                    text(&l["subject"]),
                    or_dash(&l["score"], &|s| format!("{s:.3}")),
                    l["best_candidate"].as_str().unwrap_or("-"),
                );
            }
        }
    }
    Ok(())
}
