//! `osprey embed`: faces in still images → template-schema Parquet, with
//! any face model of the registry; `--aligned` embeds crops that are
//! already aligned, without detection.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use osprey_core::{Error, Modality};
use osprey_media::{decode_image, is_image_path};
use osprey_models::recognizer::{BATCH, template_keypoints_for, to_input_size};
use osprey_models::registry::{Architecture, DEFAULT_FACE_MODEL, FaceModelSpec, face_model};
use osprey_models::{FaceModels, FaceOptions, FaceRecognizer, FaceSelection, default_device, model_dir};
use osprey_pipeline::media::{failure_row, read_input, walk};
use osprey_pipeline::{MediaAnalysis, MediaSettings, Observation};
use osprey_store::{BBox, Template, encode_parquet, templates_to_batch};

#[derive(clap::Args)]
pub struct EmbedArgs {
    /// Face model (`osprey models list`).
    #[arg(long, default_value = DEFAULT_FACE_MODEL)]
    pub model: String,
    /// The model's checkpoint, for models whose weights users bring
    /// (AdaFace's .ckpt, CVLface's model.safetensors, a state dict).
    #[arg(long, value_name = "FILE")]
    pub weights: Option<String>,
    /// Inputs are face crops already aligned to the model's template (the
    /// ArcFace 112×112 template for the seed models, dlib's 150×150 chip for
    /// dlib-resnet-v1): no detection, one template per crop. Crops of another
    /// size are resized bilinearly; KP-RPE models get the template's five
    /// points as keypoints.
    #[arg(long, conflicts_with_all = ["largest_face", "all_faces"])]
    pub aligned: bool,
    /// Keep only the largest face of each image (enrolment photos).
    #[arg(long, conflicts_with = "all_faces")]
    pub largest_face: bool,
    /// Keep every face found (the default).
    #[arg(long)]
    pub all_faces: bool,
    /// Image doublings before detection: 0 finds faces from ~80 px, 1 from ~40 px, 2 from ~20 px.
    #[arg(long, default_value_t = 1)]
    pub upsample: u32,
    /// Most megapixels the detector searches per image (after upsampling);
    /// bigger images are upsampled less, then searched at a reduced size.
    #[arg(long, default_value_t = 16.0)]
    pub max_detect_megapixels: f64,
    /// Folder with the model files (default: $OSPREY_MODELS, else ./models).
    #[arg(long, env = "OSPREY_MODELS")]
    pub models: Option<PathBuf>,
    /// Set `subject_id` to the name of each image's folder (one folder per
    /// person), ready for `osprey gallery import`.
    #[arg(long)]
    pub subject_from_parent: bool,
    /// Output Parquet file (template schema).
    #[arg(long)]
    pub out: PathBuf,
    /// Image files, folders (searched recursively), `@list.txt` files (one
    /// input per line) or object URLs (s3://…, file://…).
    #[arg(required = true)]
    pub inputs: Vec<String>,
}

/// Images decoded and searched at the same time.
pub const MAX_IMAGES_IN_FLIGHT: usize = 4;

/// The inputs named in an `@list` file: one per line; blank lines and
/// `#` comments skipped.
pub fn read_input_list(list: &str) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(list).with_context(|| format!("cannot read input list {list}"))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect())
}

/// Expands files, folders and `@lists` into the image inputs, in order.
pub fn expand_inputs(inputs: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for input in inputs {
        if let Some(list) = input.strip_prefix('@') {
            out.extend(expand_inputs(&read_input_list(list)?)?);
        } else if input.contains("://") && !input.starts_with("file://") {
            out.push(input.clone());
        } else {
            let path = PathBuf::from(input.strip_prefix("file://").unwrap_or(input));
            if path.is_dir() {
                let mut found: Vec<String> =
                    walk(&path)?.into_iter().filter(|p| is_image_path(p)).map(|p| p.display().to_string()).collect();
                found.sort();
                if found.is_empty() {
                    eprintln!("warning: no images under {}", path.display());
                }
                out.extend(found);
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    Ok(out)
}

/// A progress bar on a terminal; on other outputs, a log line every tenth.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: std::sync::atomic::AtomicU64,
    what: &'static str,
}

impl Progress {
    pub fn new(total: u64, what: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed_precise}, {per_sec}, ETA {eta}]")
                    .expect("valid template"),
            );
            b.set_message(what);
            b
        });
        Self { bar, total, done: 0.into(), what }
    }
    pub fn inc(&self) {
        let done = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        match &self.bar {
            Some(b) => b.inc(1),
            None => {
                let step = (self.total / 10).max(1);
                if done % step == 0 || done == self.total {
                    eprintln!("{done}/{} {}", self.total, self.what);
                }
            }
        }
    }
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

pub async fn run(args: EmbedArgs) -> anyhow::Result<()> {
    let spec = face_model(&args.model)?;
    let inputs = expand_inputs(&args.inputs)?;
    if inputs.is_empty() {
        bail!(Error::invalid("no input images"));
    }
    let started = Instant::now();
    let rows = if args.aligned { embed_aligned(&args, &spec, &inputs)? } else { embed_detected(&args, &inputs)? };
    let faces = rows.iter().filter(|t| t.embedding.is_some()).count();
    let failed: Vec<&Template> = rows.iter().filter(|t| t.embedding.is_none()).collect();
    let batch = templates_to_batch(&rows, spec.dim)?;
    let bytes = encode_parquet(batch.schema(), &[batch])?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&args.out, &bytes).with_context(|| format!("cannot write {}", args.out.display()))?;
    for f in failed.iter().take(20) {
        eprintln!("  {}: {}", f.media_uri.as_deref().unwrap_or("?"), f.error.as_deref().unwrap_or("?"));
    }
    if failed.len() > 20 {
        eprintln!("  … and {} more (see the `error` column)", failed.len() - 20);
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{faces} {} from {} images ({} without a face or unreadable) in {secs:.1}s ({:.1} images/s) with {} → {}",
        if args.aligned { "crops" } else { "faces" },
        inputs.len(),
        failed.len(),
        inputs.len() as f64 / secs,
        spec.id,
        args.out.display()
    );
    Ok(())
}

/// Detect, align and embed every (or the largest) face of each image.
fn embed_detected(args: &EmbedArgs, inputs: &[String]) -> anyhow::Result<Vec<Template>> {
    let settings = MediaSettings {
        upsample: args.upsample,
        max_detect_megapixels: args.max_detect_megapixels,
        model: args.model.clone(),
        weights: args.weights.clone(),
        ..MediaSettings::default()
    };
    let analysis = tokio::task::block_in_place(|| MediaAnalysis::load(&settings, args.models.as_deref()))?;
    let analyzer = analysis.analyzer();
    let model = analysis.model();
    let options = FaceOptions {
        upsample: args.upsample,
        selection: if args.largest_face { FaceSelection::Largest } else { FaceSelection::All },
        max_detect_pixels: (args.max_detect_megapixels * 1e6) as u64,
    };
    let progress = Progress::new(inputs.len() as u64, "images");
    let runtime = tokio::runtime::Handle::current();
    let subject_from_parent = args.subject_from_parent;
    let embed_one = |input: &str| -> Vec<Template> {
        let rows = match read_input(input, &runtime).and_then(|b| decode_image(&b, input)) {
            Ok(decoded) => match analyzer.analyze_with(&decoded.image, &options) {
                Ok(faces) if faces.is_empty() => vec![failure(input, model, "no face found")],
                Ok(faces) => faces
                    .iter()
                    .enumerate()
                    .map(|(i, f)| Template {
                        subject_id: subject_from_parent.then(|| parent_name(input)).flatten(),
                        ..face_template(input, i, model, f)
                    })
                    .collect(),
                Err(e) => vec![failure(input, model, e.message())],
            },
            Err(e) => vec![failure(input, model, e.message())],
        };
        progress.inc();
        rows
    };
    // A few images at a time (each holds its decoded pixels and detector
    // activations, up to about 1 GB); the networks use every core within an
    // image through candle's thread pool.
    let workers = rayon::current_num_threads().clamp(1, MAX_IMAGES_IN_FLIGHT).min(inputs.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let per_image: Vec<(usize, Vec<Template>)> = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(input) = inputs.get(i) else { break };
                            done.push((i, embed_one(input)));
                        }
                        done
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("embedding worker panicked")).collect()
        })
    });
    progress.finish();
    let mut per_image = per_image;
    per_image.sort_by_key(|(i, _)| *i);
    Ok(per_image.into_iter().flat_map(|(_, rows)| rows).collect())
}

/// The models `--aligned` runs: dlib's descriptor on its own chips, or a
/// seed recogniser on ArcFace crops.
enum CropEmbedder {
    Dlib(FaceModels),
    Seed(FaceRecognizer),
}

/// One template per crop, embedded in batches.
fn embed_aligned(args: &EmbedArgs, spec: &FaceModelSpec, inputs: &[String]) -> anyhow::Result<Vec<Template>> {
    let device = default_device();
    let embedder = match (&spec.architecture, &args.weights) {
        (Architecture::DlibResnet, None) => {
            CropEmbedder::Dlib(FaceModels::load(&model_dir(args.models.as_deref()), &device)?)
        }
        (Architecture::DlibResnet, Some(_)) => {
            bail!(Error::invalid(format!("model `{}` reads dlib's files (--models), not --weights", spec.id)))
        }
        (_, None) => bail!(Error::invalid(format!("model `{}` needs its checkpoint: pass --weights FILE", spec.id))),
        (_, Some(w)) => CropEmbedder::Seed(FaceRecognizer::load(spec, std::path::Path::new(w), &device)?),
    };
    let runtime = tokio::runtime::Handle::current();
    let progress = Progress::new(inputs.len() as u64, "crops");
    let mut rows = Vec::with_capacity(inputs.len());
    for chunk in inputs.chunks(BATCH) {
        let mut crops = Vec::with_capacity(chunk.len());
        let mut names = Vec::with_capacity(chunk.len());
        for input in chunk {
            match read_input(input, &runtime).and_then(|b| decode_image(&b, input)) {
                Ok(d) => {
                    crops.push(to_input_size(&d.image, spec.input_size as u32).into_owned());
                    names.push(input.as_str());
                }
                Err(e) => rows.push(failure(input, spec.id, e.message())),
            }
            progress.inc();
        }
        let side = spec.input_size as u32;
        let keypoints = vec![template_keypoints_for(side, side); crops.len()];
        let embedded: Vec<(Vec<f32>, Option<f32>)> = match &embedder {
            CropEmbedder::Dlib(m) => m
                .describe(&crops)?
                .into_iter()
                .map(|d| {
                    let mut e = d.to_vec();
                    osprey_core::l2_normalize(&mut e);
                    (e, None)
                })
                .collect(),
            CropEmbedder::Seed(r) => {
                r.embed(&crops, &keypoints)?.into_iter().map(|c| (c.embedding, Some(c.norm))).collect()
            }
        };
        for ((input, (embedding, norm)), kp) in names.into_iter().zip(embedded).zip(&keypoints) {
            let o = Observation {
                bbox: osprey_pipeline::BoxF { x: 0.0, y: 0.0, w: side as f32, h: side as f32 },
                confidence: 1.0,
                landmarks: kp.iter().flat_map(|p| *p).collect(),
                embedding,
                quality_norm: norm.filter(|_| spec.norm_is_quality),
                quality: norm.unwrap_or(1.0),
            };
            rows.push(Template {
                subject_id: args.subject_from_parent.then(|| parent_name(input)).flatten(),
                ..face_template(input, 0, spec.id, &o)
            });
        }
    }
    progress.finish();
    Ok(rows)
}

fn parent_name(input: &str) -> Option<String> {
    let parent = input.trim_end_matches('/').rsplit_once('/')?.0;
    Some(parent.rsplit('/').next()?.to_string()).filter(|s| !s.is_empty())
}

fn template_id(input: &str, face: usize, model: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, format!("{input}#face{face}/{model}").as_bytes()).to_string()
}

/// A face's row: `quality` is the feature norm for models whose norm
/// measures quality, else the detector's confidence.
fn face_template(input: &str, i: usize, model: &str, f: &Observation) -> Template {
    Template {
        template_id: template_id(input, i, model),
        media_uri: Some(input.to_string()),
        modality: Some(Modality::Face),
        model: model.to_string(),
        embedding: Some(f.embedding.clone()),
        quality: Some(f.quality_norm.unwrap_or(f.confidence)),
        num_frames: Some(1),
        bbox: Some(BBox { x: f.bbox.x, y: f.bbox.y, w: f.bbox.w, h: f.bbox.h }),
        landmarks: Some(f.landmarks.clone()),
        created_at_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    }
}

fn failure(input: &str, model: &str, why: &str) -> Template {
    failure_row(template_id(input, usize::MAX, model), input, model, why)
}
