//! `osprey run enroll|search`: the embedded batch jobs. Images and videos in
//! (local paths, folders, globs or object URLs), templates, gallery updates
//! and open-set results out, under one root, with no server.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use osprey_core::fusion::{FusionRule, ScoreCalibration};
use osprey_core::{Error, Modality, OpenSetDecision};
use osprey_index::{
    EnrollOptions, FusionInput, Gallery, calibrate_fusion, enroll, fuse_persons, modality_gallery, operating_point,
    search_probes, store_results, store_search,
};
use osprey_media::is_video_path;
use osprey_models::registry::{DEFAULT_FACE_MODEL, FaceDetectorKind};
use osprey_pipeline::media::{
    self, AGGREGATORS, failure_row, media_template_id, observation_rows, put_thumbnails, subject_tracks, template_id,
    template_row,
};
use osprey_pipeline::{MediaAnalysis, MediaResult, MediaSettings, VideoPlan};
use osprey_store::{Root, SearchResultRow, Template, layout, modality_part, observations_of};

use crate::Format;
use crate::embed::read_input_list;
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
    /// Where MMOD searches video frames: `cascade` (the default: crops
    /// around MTCNN's proposals and the tracks' expected boxes, scored on
    /// the whole frame's own pixels; 1.4-3x faster, may miss a face the
    /// whole-frame search finds) or `every-frame` (the whole frame; exact).
    #[arg(long)]
    pub detect: Option<String>,
    /// Videos are processed in segments of this many seconds; tracks end at
    /// segment edges.
    #[arg(long, default_value_t = 300)]
    pub segment_seconds: u64,
    /// Folder with the model files (default: $OSPREY_MODELS, else ./models).
    #[arg(long, env = "OSPREY_MODELS")]
    pub models: Option<PathBuf>,
    /// Face model (`osprey models list`): dlib's by default; the seed's
    /// AdaFace and ViT + KP-RPE models detect with MTCNN and need --weights.
    #[arg(long, default_value = DEFAULT_FACE_MODEL)]
    pub model: String,
    /// The model's checkpoint, as its authors publish it (AdaFace's .ckpt,
    /// CVLface's model.safetensors, a state dict): a path or object URL.
    #[arg(long, value_name = "FILE")]
    pub weights: Option<String>,
    /// Face detector: `mmod` (dlib's CNN) or `mtcnn`; default: the model's
    /// own (MMOD for dlib-resnet-v1, MTCNN for the seed's models).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(FaceDetectorKind::NAMES))]
    pub detector: Option<String>,
    /// How a video track becomes its template: `mean` (the quality-weighted
    /// mean; AdaFace's norm-weighted mean for the seed models) or `caface`
    /// (CAFace's cluster-and-aggregate fusion, with `--model adaface-ir101`).
    #[arg(long, default_value = "mean", value_parser = clap::builder::PossibleValuesParser::new(AGGREGATORS))]
    pub aggregator: String,
    /// The CAFace checkpoint (its tensors under `aggregator.`), for
    /// `--aggregator caface`: a path or object URL.
    #[arg(long, value_name = "FILE")]
    pub aggregator_weights: Option<String>,
    /// What to find and embed: `face`, `body`, or `face,body`. Bodies are
    /// people found by the CenterNet person detector, tracked, and embedded
    /// by --body-model; a gallery keeps one index per modality (the body one
    /// is `<gallery>.body`), and results say which modality matched.
    #[arg(long, value_delimiter = ',', default_value = "face")]
    pub modalities: Vec<Modality>,
    /// Body model: the out-of-the-box appearance model (default,
    /// dinov2-vits14-imgfocus-0.1.1: same-day, same-clothing appearance) or a
    /// body recogniser whose checkpoint you bring (osnet-x1_0,
    /// osnet-ain-x1_0, clip3dreid, sapiensid) with --body-weights.
    #[arg(long)]
    pub body_model: Option<String>,
    /// The body recogniser's checkpoint: a path or object URL.
    #[arg(long, value_name = "FILE")]
    pub body_weights: Option<String>,
    /// Gait model for `gait` in --modalities: one gait template per body
    /// track, from its silhouettes with gaitbase (static cameras) or from
    /// its RGB crops with biggait; at least 25 frames, so sample densely for
    /// short walks.
    #[arg(long)]
    pub gait_model: Option<String>,
    /// The gait model's checkpoint (OpenGait's .pt): a path or object URL.
    #[arg(long, value_name = "FILE")]
    pub gait_weights: Option<String>,
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
    /// Candidates each search re-ranks by exact cosine similarity, from
    /// float vectors kept on disk beside a compressed index (0: none).
    /// Default: 100 for compressed indexes (PQ), none for the others.
    #[arg(long)]
    rerank: Option<usize>,
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
    /// With several --modalities, how a person's face, body and gait scores
    /// become one decision: `quality` (each modality's calibrated score
    /// weighted by its template's quality) or `max` (the strongest
    /// calibrated score); `none` keeps only the per-modality results.
    #[arg(long, default_value = "quality", value_parser = clap::builder::PossibleValuesParser::new(["quality", "max", "none"]))]
    fusion: String,
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

/// Expands `@lists` (local files naming one input per line), then files,
/// folders, globs and object URLs, into media inputs.
pub async fn expand_media(inputs: &[String]) -> anyhow::Result<Vec<String>> {
    let mut flat = Vec::new();
    for input in inputs {
        match input.strip_prefix('@') {
            Some(list) => flat.extend(read_input_list(list)?),
            None => flat.push(input.clone()),
        }
    }
    Ok(media::expand_media(&flat, &|w| eprintln!("warning: {w}")).await?)
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

/// What one input gave: its templates, or why it failed.
struct InputResult {
    input: String,
    outcome: Result<MediaResult, Error>,
}

impl InputResult {
    fn error(&self) -> Option<&str> {
        self.outcome.as_ref().err().map(|e| e.message())
    }
}

fn load_analysis(args: &MediaArgs) -> anyhow::Result<(MediaAnalysis, MediaSettings)> {
    let settings = media_settings(args);
    // Reading a checkpoint from an object URL blocks on the runtime.
    let analysis = tokio::task::block_in_place(|| MediaAnalysis::load(&settings, args.models.as_deref()))?;
    Ok((analysis, settings))
}

/// Leaves `gait` out of the modalities, with a warning, when no gait model
/// is named: no package registry ships gait weights, so gait templates need
/// the user's own checkpoint. (Without `body`, or with a checkpoint but no
/// model, validation says what is wrong instead.)
fn drop_gait_without_model(media: &mut MediaArgs) {
    let has = |m| media.modalities.contains(&m);
    if has(Modality::Gait) && has(Modality::Body) && media.gait_model.is_none() && media.gait_weights.is_none() {
        media.modalities.retain(|m| *m != Modality::Gait);
        eprintln!(
            "warning: gait is skipped: no gait model given (no package registry ships gait weights; bring OpenGait's checkpoint with --gait-model gaitbase|biggait --gait-weights FILE)"
        );
    }
}

/// Creates face gallery `name` empty (a flat index), for `model`, unless it
/// exists.
async fn create_empty_face_gallery(root: &Root, name: &str, model: &str) -> anyhow::Result<()> {
    match Gallery::load(root, name).await {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == osprey_core::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let dim = osprey_models::face_model(model)?.dim;
    let mut gallery = Gallery::build_reranked(name, model, dim, None, None, Vec::new(), &[])?;
    gallery.save(root).await?;
    eprintln!("gallery `{name}` created empty: face searches against it answer `unknown`");
    Ok(())
}

/// The analysis settings the flags stand for (unvalidated).
fn media_settings(args: &MediaArgs) -> MediaSettings {
    MediaSettings {
        sample_fps: args.sample_fps.clone(),
        upsample: args.upsample,
        max_detect_megapixels: args.max_detect_megapixels,
        segment_seconds: args.segment_seconds,
        model: args.model.clone(),
        weights: args.weights.clone(),
        detector: args.detector.clone(),
        detect: args.detect.clone(),
        aggregator: args.aggregator.clone(),
        aggregator_weights: args.aggregator_weights.clone(),
        modalities: args.modalities.clone(),
        body_model: args.body_model.clone(),
        body_weights: args.body_weights.clone(),
        gait_model: args.gait_model.clone(),
        gait_weights: args.gait_weights.clone(),
    }
}

/// Runs `analysis` over `inputs` on a few threads (each network uses every
/// core within a frame); results come back in input order.
fn process_all(
    analysis: &MediaAnalysis,
    settings: &MediaSettings,
    inputs: &[String],
    largest_only: bool,
) -> (Vec<InputResult>, usize, f64) {
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
                        let plan = VideoPlan::Whole { segment_seconds: settings.segment_seconds };
                        let outcome = analysis.process(input, largest_only, plan, &rt, &|| progress.frame());
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        let what = match &outcome {
                            Err(e) => format!("failed: {}", e.message()),
                            Ok(r) if r.is_video => format!("{} tracks from {} frames", r.templates.len(), r.frames),
                            Ok(r) => format!("{} found", r.templates.len()),
                        };
                        let r = InputResult { input: input.clone(), outcome };
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

// ---------------------------------------------------------------- enroll

async fn run_enroll(mut args: EnrollArgs) -> anyhow::Result<()> {
    layout::check_name("gallery", &args.gallery)?;
    drop_gait_without_model(&mut args.media);
    let root = Root::open(&args.root.root)?;
    media_settings(&args.media).validate()?;
    let inputs = media::subject_inputs(&args.subjects_from_dirs, &|w| eprintln!("warning: {w}")).await?;
    if inputs.is_empty() {
        bail!(Error::invalid(format!("no subject folders with images or videos under {}", args.subjects_from_dirs)));
    }
    let mut existing = std::collections::HashSet::new();
    for &m in &args.media.modalities {
        match Gallery::load(&root, &modality_gallery(&args.gallery, m)).await {
            Ok(g) => existing.extend(g.template_ids().map(str::to_string)),
            Err(e) if e.kind() == osprey_core::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    let (analysis, settings) = load_analysis(&args.media)?;
    let files: Vec<String> = inputs.iter().map(|(_, f)| f.clone()).collect();
    let (results, frames, secs) = process_all(&analysis, &settings, &files, true);

    let mut templates = Vec::new();
    let mut observations = Vec::new();
    let mut thumbnails = Vec::new();
    let mut failed = Vec::new();
    let mut skipped = 0;
    for ((subject, _), r) in inputs.iter().zip(results) {
        let r = match r.outcome {
            Ok(r) => r,
            Err(e) => {
                failed.push((r.input, e.message().to_string()));
                continue;
            }
        };
        let chosen =
            if r.is_video { subject_tracks(r.templates, &|m| analysis.same_person_in(m)) } else { r.templates };
        let scope = format!("gallery={}", args.gallery);
        for (segment, t) in chosen {
            let id = media_template_id(&scope, &r.input, segment, &t);
            if existing.contains(&id) {
                skipped += 1;
                continue;
            }
            observations.extend(observation_rows(&id, &t));
            let mut row = template_row(&root, &scope, &r.input, segment, &t, r.is_video, &mut thumbnails);
            row.gallery = Some(modality_gallery(&args.gallery, t.modality));
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
        bail!(Error::invalid("nothing could be enrolled from any input"));
    }
    put_thumbnails(&root, thumbnails).await?;
    let n = templates.len();
    let opts =
        EnrollOptions { index_factory: args.index, nprobe: None, rerank: args.rerank, calibrate_fpir: Some(args.fpir) };
    // One index per modality: the face gallery itself, `<gallery>.body` beside it.
    let mut galleries = Vec::new();
    for &modality in &args.media.modalities {
        let name = modality_gallery(&args.gallery, modality);
        let these = modality_part(&templates, modality, false);
        if these.is_empty() {
            eprintln!("no {modality} template to enrol into `{name}`");
            if modality == Modality::Face {
                // The gallery itself holds the faces: it exists even when
                // nobody's face was seen, so face searches answer `unknown`.
                create_empty_face_gallery(&root, &name, &args.media.model).await?;
            }
            continue;
        }
        let these_obs = observations_of(&observations, &these);
        let ids: std::collections::HashSet<&str> = these.iter().map(|t| t.template_id.as_str()).collect();
        // The batch id is a digest of the templates, so the same enrolment
        // repeated is recognised instead of enrolled twice.
        let mut sorted: Vec<&str> = ids.iter().copied().collect();
        sorted.sort();
        let batch = format!(
            "enroll-{name}-{}",
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, sorted.join(",").as_bytes()).simple()
        );
        galleries.push(enroll(&root, &name, &batch, these, &these_obs, &opts).await?);
    }
    eprintln!(
        "enrolled {n} templates of {} subjects from {} inputs ({} failed, {skipped} already enrolled) in {secs:.1}s ({frames} frames, {:.2} frames/s)",
        subjects,
        inputs.len(),
        failed.len(),
        frames as f64 / secs.max(1e-9)
    );
    for gallery in &galleries {
        let m = gallery.manifest();
        eprintln!(
            "gallery `{}` ({}): {} subjects, {} templates, index {}; operating threshold {}",
            m.name,
            m.model,
            m.num_subjects,
            m.num_templates,
            m.index_factory,
            match (m.threshold, m.threshold_fpir) {
                (Some(t), Some(f)) => format!("{t:.4} (calibrated for FPIR {f})"),
                _ => "not calibrated yet (needs two subjects)".to_string(),
            }
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- search

async fn run_search(mut args: SearchArgs) -> anyhow::Result<()> {
    let root = Root::open(&args.root.root)?;
    let job_id = args.search.job_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    layout::check_name("job", &job_id)?;
    drop_gait_without_model(&mut args.media);
    media_settings(&args.media).validate()?;
    // One index per modality: load each before any media work. A modality
    // the gallery has no index of is left out (with a warning) when another
    // one can be searched.
    let mut galleries = Vec::new();
    let mut missing = Vec::new();
    for &modality in &args.media.modalities {
        let name = modality_gallery(&args.search.gallery, modality);
        let gallery = match Gallery::load(&root, &name).await {
            Ok(g) => g,
            Err(e) if e.kind() == osprey_core::ErrorKind::NotFound => {
                let e = match modality {
                    Modality::Face => e,
                    _ => Error::new(
                        osprey_core::ErrorKind::NotFound,
                        format!(
                            "gallery `{}` has no {modality} index (`{name}`): enrol it with --modalities {modality} (e.g. face,{modality})",
                            args.search.gallery
                        ),
                    ),
                };
                missing.push((modality, e));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if modality == Modality::Face && gallery.manifest().model != args.media.model {
            bail!(Error::invalid(format!(
                "gallery `{}` holds `{}` templates; these options embed with `{}`: search it with --model {} (and its --weights)",
                args.search.gallery,
                gallery.manifest().model,
                args.media.model,
                gallery.manifest().model
            )));
        }
        galleries.push((modality, gallery));
    }
    if galleries.is_empty() && !missing.is_empty() {
        bail!(missing.swap_remove(0).1);
    }
    for (modality, e) in &missing {
        eprintln!("warning: {modality} is not searched: {e}");
    }
    args.media.modalities.retain(|m| !missing.iter().any(|(gone, _)| gone == m));
    let mut thresholds = Vec::new();
    for (modality, gallery) in &mut galleries {
        let op = operating_point(&root, gallery, args.search.threshold, args.search.fpir).await?;
        eprintln!("{modality}: operating threshold {:.4} ({})", op.threshold, op.source);
        thresholds.push(op.threshold);
    }
    let inputs = expand_media(&args.inputs).await?;
    if inputs.is_empty() {
        bail!(Error::invalid("no input images or videos"));
    }
    let (analysis, settings) = load_analysis(&args.media)?;
    for (modality, gallery) in &galleries {
        let used = match modality {
            Modality::Face => Some(analysis.model().to_string()),
            Modality::Body => analysis.body().map(|b| osprey_pipeline::FrameAnalyzer::model(b).to_string()),
            Modality::Gait => settings.gait_model.clone(),
        };
        if let Some(used) = used.filter(|u| *u != gallery.manifest().model) {
            bail!(Error::invalid(format!(
                "`{}` holds `{}` {modality} templates; these options embed with `{used}`",
                gallery.manifest().name,
                gallery.manifest().model
            )));
        }
    }
    let model = analysis.model();
    let (results, frames, secs) = process_all(&analysis, &settings, &inputs, false);

    let scope = format!("job={job_id}");
    let mut probes = Vec::new();
    let mut observations = Vec::new();
    let mut thumbnails = Vec::new();
    let mut failed = 0;
    for r in &results {
        let r = match &r.outcome {
            Ok(r) => r,
            Err(e) => {
                failed += 1;
                let id = template_id(&scope, &r.input, usize::MAX, -1, model);
                let mut row = failure_row(id, &r.input, model, e.message());
                row.job_id = Some(job_id.clone());
                probes.push(row);
                continue;
            }
        };
        for (segment, t) in &r.templates {
            let id = media_template_id(&scope, &r.input, *segment, t);
            observations.extend(observation_rows(&id, t));
            let mut row = template_row(&root, &scope, &r.input, *segment, t, r.is_video, &mut thumbnails);
            row.job_id = Some(job_id.clone());
            probes.push(row);
        }
    }
    put_thumbnails(&root, thumbnails).await?;
    let mut rows = Vec::new();
    let mut searchable = 0;
    // Per searched index: its modality, calibration, threshold and the span
    // of `rows` its results fill (for fusion below).
    let mut searched: Vec<(Modality, ScoreCalibration, f32, std::ops::Range<usize>)> = Vec::new();
    for (i, ((modality, gallery), threshold)) in galleries.iter_mut().zip(thresholds).enumerate() {
        // Rows of inputs that failed are stored once, with the first part.
        let these = modality_part(&probes, *modality, i == 0);
        let with_embedding: Vec<&Template> = these.iter().filter(|p| p.embedding.is_some()).collect();
        searchable += with_embedding.len();
        let found = search_probes(gallery, &job_id, &with_embedding, args.search.top_k, threshold)?;
        let these_obs = observations_of(&observations, &these);
        let part = match *modality {
            Modality::Face => "part-0".to_string(),
            m => format!("part-0-{m}"),
        };
        let m = gallery.manifest();
        store_search(&root, &job_id, &part, &m.model, m.dim, &these, &these_obs, &found).await?;
        let calibration = gallery.score_calibration_at(threshold);
        searched.push((*modality, calibration, threshold, rows.len()..rows.len() + found.len()));
        rows.extend(found);
    }
    if let (Some(rule), true) = (FusionRule::parse_option(&args.fusion)?, searched.len() > 1) {
        // Fused thresholds placed for the FPIR on the gallery's own people,
        // unless a raw threshold was given.
        let calibrated = match args.search.threshold {
            Some(_) => None,
            None => {
                let mut indexes: Vec<(Modality, &mut Gallery, ScoreCalibration)> =
                    galleries.iter_mut().zip(&searched).map(|((m, g), s)| (*m, g, s.1.clone())).collect();
                match calibrate_fusion(&mut indexes, rule, args.search.fpir) {
                    Ok(t) => {
                        let fpir = t.fpir;
                        for (set, threshold, n) in &t.by_modalities {
                            let set: Vec<&str> = set.iter().map(|m| m.as_str()).collect();
                            eprintln!(
                                "fused {}: threshold {threshold:.3} (LLR), calibrated for FPIR {fpir} on {n} enrolled people",
                                set.join("+")
                            );
                        }
                        if t.by_modalities.is_empty() {
                            eprintln!(
                                "fused: too few enrolled people to calibrate for FPIR {fpir}; each person is decided by its modalities' own thresholds"
                            );
                        }
                        Some(t)
                    }
                    Err(e) => {
                        eprintln!(
                            "fused: not calibrated ({e}); each person is decided by its modalities' own thresholds"
                        );
                        None
                    }
                }
            }
        };
        let searched_probes: Vec<Vec<&Template>> = searched
            .iter()
            .map(|(modality, ..)| {
                probes.iter().filter(|p| p.modality == Some(*modality) && p.embedding.is_some()).collect()
            })
            .collect();
        let inputs: Vec<FusionInput> = searched
            .iter()
            .zip(&searched_probes)
            .map(|((modality, calibration, threshold, span), probes)| FusionInput {
                modality: *modality,
                calibration: calibration.clone(),
                threshold: *threshold,
                probes,
                rows: &rows[span.clone()],
            })
            .collect();
        let fused = fuse_persons(&job_id, rule, &inputs, args.search.top_k, calibrated.as_ref());
        store_results(&root, &job_id, "part-0-fused", &fused).await?;
        let persons = fused.iter().filter(|r| r.rank == 1).count();
        let matched = fused.iter().filter(|r| r.rank == 1 && r.decision == OpenSetDecision::Match).count();
        eprintln!("fused ({}): {persons} persons, {matched} match", rule.as_str());
        rows.extend(fused);
    }
    print_appearances(&probes, &rows, args.search.format)?;
    let (matches, unknown) = osprey_index::count_decisions(&rows);
    eprintln!(
        "job {job_id}: {} inputs ({failed} failed), {frames} frames in {secs:.1}s ({:.2} frames/s); {searchable} probe templates: {matches} match, {unknown} unknown",
        inputs.len(),
        frames as f64 / secs.max(1e-9),
    );
    for r in &results {
        if let Some(e) = r.error() {
            eprintln!("  failed {}: {e}", r.input);
        }
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
        rows.iter().filter(|r| r.rank == 1 && r.fusion.is_none()).map(|r| (r.probe_template_id.as_str(), r)).collect();
    let by_id: std::collections::HashMap<&str, &Template> =
        probes.iter().map(|p| (p.template_id.as_str(), p)).collect();
    let mut lines: Vec<serde_json::Value> = probes
        .iter()
        .filter_map(|p| Some((p, *top.get(p.template_id.as_str())?)))
        .map(|(p, r)| {
            let subject = match r.decision {
                OpenSetDecision::Match => r.subject_id.clone().unwrap_or_default(),
                OpenSetDecision::Unknown => "unknown".to_string(),
            };
            serde_json::json!({
                "media": p.media_uri,
                "modality": p.modality.map(|m| m.as_str()),
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
                "person_track_id": r.person_track_id,
            })
        })
        .collect();
    // One line per fused person: where and when its body track (or face) was.
    for r in rows.iter().filter(|r| r.rank == 1 && r.fusion.is_some()) {
        let p = by_id.get(r.probe_template_id.as_str());
        let subject = match r.decision {
            OpenSetDecision::Match => r.subject_id.clone().unwrap_or_default(),
            OpenSetDecision::Unknown => "unknown".to_string(),
        };
        let m = &r.modalities;
        lines.push(serde_json::json!({
            "media": p.and_then(|p| p.media_uri.clone()),
            "modality": "fused",
            "track": p.and_then(|p| p.track_id),
            "t_start_s": p.and_then(|p| p.t_start_ms).map(|t| t as f64 / 1000.0),
            "t_end_s": p.and_then(|p| p.t_end_ms).map(|t| t as f64 / 1000.0),
            "frames": p.and_then(|p| p.num_frames),
            "decision": r.decision.as_str(),
            "subject": subject,
            "best_candidate": r.subject_id,
            "score": r.score,
            "threshold": r.threshold,
            "fusion": r.fusion,
            "face_score": m.face_score,
            "body_score": m.body_score,
            "gait_score": m.gait_score,
            "face_weight": m.face_weight,
            "body_weight": m.body_weight,
            "gait_weight": m.gait_weight,
            "template_id": r.probe_template_id,
            "person_track_id": r.person_track_id,
        }));
    }
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
