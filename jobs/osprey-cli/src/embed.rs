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
use osprey_models::appearance::AppearanceEmbedder;
use osprey_models::person::PersonRecognizer;
use osprey_models::recognizer::{BATCH, template_keypoints_for, to_input_size};
use osprey_models::registry::{
    Architecture, DEFAULT_FACE_MODEL, FaceModelSpec, PersonArchitecture, PersonModelSpec, face_model, face_models,
    person_model, person_models,
};
use osprey_models::{FaceModels, FaceOptions, FaceRecognizer, FaceSelection, default_device, model_dir};
use osprey_pipeline::media::{failure_row, read_input, walk};
use osprey_pipeline::{BodyEmbedder, MediaAnalysis, MediaSettings, Observation};
use osprey_store::{BBox, Template, encode_parquet, templates_to_batch};

#[derive(clap::Args)]
pub struct EmbedArgs {
    /// What the inputs show: `face` (default), `body` (person crops, one
    /// template each) or `gait` (folders of silhouettes, one template per
    /// folder). Without --model: the default face model, the out-of-the-box
    /// body appearance model; gait needs --model.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["face", "body", "gait"]))]
    pub modality: Option<String>,
    /// Model (`osprey models list`): a face model, a body model or a gait
    /// model; its modality decides how inputs are read (default: the
    /// modality's default model).
    #[arg(long)]
    pub model: Option<String>,
    /// The model's checkpoint, for models whose weights users bring
    /// (AdaFace's .ckpt, CVLface's model.safetensors, a state dict).
    #[arg(long, value_name = "FILE")]
    pub weights: Option<String>,
    /// Face detector: `mmod` (dlib's CNN) or `mtcnn`; default: the model's
    /// own (MMOD for dlib-resnet-v1, MTCNN for the seed's models).
    #[arg(long, conflicts_with = "aligned", value_parser = clap::builder::PossibleValuesParser::new(osprey_models::registry::FaceDetectorKind::NAMES))]
    pub detector: Option<String>,
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
    /// Folders (or files) of crops taken whole, no detection: person crops
    /// for body models (one template each), aligned face crops for face
    /// models (as --aligned).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["silhouettes", "frames"])]
    pub crops: Vec<String>,
    /// Folders of silhouette sequences for gait models: every folder that
    /// holds images is one sequence (CASIA-B's and OpenGait's layout), its
    /// frames in file-name order.
    #[arg(long, value_name = "DIR", conflicts_with = "frames")]
    pub silhouettes: Vec<String>,
    /// Folders of RGB person-crop sequences for gait models that read
    /// frames (biggait): every folder that holds images is one sequence,
    /// its frames in file-name order.
    #[arg(long, value_name = "DIR")]
    pub frames: Vec<String>,
    /// Image files, folders (searched recursively), `@list.txt` files (one
    /// input per line) or object URLs (s3://…, file://…).
    pub inputs: Vec<String>,
}

impl EmbedArgs {
    /// Every input: the positional ones, then --crops, --silhouettes and
    /// --frames.
    fn all_inputs(&self) -> Vec<String> {
        self.inputs.iter().chain(&self.crops).chain(&self.silhouettes).chain(&self.frames).cloned().collect()
    }

    /// The model these arguments name, checked against --modality and the
    /// kind of inputs given.
    fn chosen_model(&self) -> anyhow::Result<ChosenModel> {
        let modality = self.modality.as_deref().map(str::parse::<Modality>).transpose()?;
        let chosen = match (self.model.as_deref(), modality) {
            (None, None | Some(Modality::Face)) if !self.silhouettes.is_empty() => bail!(Error::invalid(
                "--silhouettes are read by gait models: add --modality gait --model gaitbase (see `osprey models list`)"
            )),
            (None, None | Some(Modality::Face)) if !self.frames.is_empty() => bail!(Error::invalid(
                "--frames are read by gait models: add --modality gait --model biggait (see `osprey models list`)"
            )),
            (None, None | Some(Modality::Face)) => ChosenModel::Face(face_model(DEFAULT_FACE_MODEL)?),
            (None, Some(Modality::Body)) => ChosenModel::Appearance,
            (None, Some(_)) => {
                let gait: Vec<&str> =
                    person_models().iter().filter(|m| m.modality == Modality::Gait).map(|m| m.id).collect();
                bail!(Error::invalid(format!("--modality gait needs --model: one of {}", gait.join(", "))))
            }
            (Some(id), _) if id == osprey_models::appearance::MODEL_ID => ChosenModel::Appearance,
            (Some(id), _) => match (face_model(id), person_model(id)) {
                (Ok(spec), _) => ChosenModel::Face(spec),
                (Err(_), Ok(spec)) => ChosenModel::Person(spec),
                (Err(_), Err(_)) => {
                    let faces: Vec<&str> = face_models().iter().map(|m| m.id).collect();
                    let mut others: Vec<&str> = vec![osprey_models::appearance::MODEL_ID];
                    others.extend(person_models().iter().map(|m| m.id));
                    bail!(Error::invalid(format!(
                        "unknown model `{id}`; face models: {}; body and gait models: {} (see `osprey models list`)",
                        faces.join(", "),
                        others.join(", ")
                    )));
                }
            },
        };
        let actual = chosen.modality();
        if let Some(m) = modality.filter(|m| *m != actual) {
            bail!(Error::invalid(format!("--modality {m}: `{}` is a {actual} model", chosen.id())));
        }
        if !self.silhouettes.is_empty() && actual != Modality::Gait {
            bail!(Error::invalid(format!("--silhouettes are for gait models; `{}` is a {actual} model", chosen.id())));
        }
        if !self.frames.is_empty() && actual != Modality::Gait {
            bail!(Error::invalid(format!("--frames are for gait models; `{}` is a {actual} model", chosen.id())));
        }
        let reads_frames =
            matches!(&chosen, ChosenModel::Person(spec) if spec.architecture == PersonArchitecture::BigGait);
        let sequences = if reads_frames {
            "--frames (folders of RGB person crops)"
        } else {
            "--silhouettes (folders of silhouettes)"
        };
        if !self.crops.is_empty() && actual == Modality::Gait {
            bail!(Error::invalid(format!("`{}` reads {sequences}, not --crops", chosen.id())));
        }
        if actual == Modality::Gait
            && (!self.frames.is_empty() && !reads_frames || !self.silhouettes.is_empty() && reads_frames)
        {
            bail!(Error::invalid(format!("`{}` reads {sequences}", chosen.id())));
        }
        if self.all_inputs().is_empty() {
            bail!(Error::invalid(match actual {
                Modality::Gait if reads_frames => "no inputs: name folders of RGB person crops (--frames DIR)",
                Modality::Gait => "no inputs: name folders of silhouettes (--silhouettes DIR)",
                Modality::Body => "no inputs: name person crops (--crops DIR)",
                _ => "no inputs: name images, folders or --crops DIR",
            }));
        }
        Ok(chosen)
    }
}

/// The model `osprey embed` runs.
enum ChosenModel {
    Face(FaceModelSpec),
    /// The out-of-the-box body appearance model (files from fetch-models.sh).
    Appearance,
    /// A body or gait recogniser whose checkpoint the user brings.
    Person(PersonModelSpec),
}

impl ChosenModel {
    fn modality(&self) -> Modality {
        match self {
            ChosenModel::Face(_) => Modality::Face,
            ChosenModel::Appearance => Modality::Body,
            ChosenModel::Person(spec) => spec.modality,
        }
    }

    fn id(&self) -> &str {
        match self {
            ChosenModel::Face(spec) => spec.id,
            ChosenModel::Appearance => osprey_models::appearance::MODEL_ID,
            ChosenModel::Person(spec) => spec.id,
        }
    }
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
    let spec = match args.chosen_model()? {
        ChosenModel::Face(spec) => spec,
        other => return embed_person(&args, &other),
    };
    let aligned = args.aligned || !args.crops.is_empty();
    let inputs = expand_inputs(&args.all_inputs())?;
    if inputs.is_empty() {
        bail!(Error::invalid("no input images"));
    }
    let started = Instant::now();
    let rows = if aligned { embed_aligned(&args, &spec, &inputs)? } else { embed_detected(&args, &spec, &inputs)? };
    let faces = rows.iter().filter(|t| t.embedding.is_some()).count();
    let failed: Vec<&Template> = rows.iter().filter(|t| t.embedding.is_none()).collect();
    write_rows(&args.out, &rows, spec.dim)?;
    for f in failed.iter().take(20) {
        eprintln!("  {}: {}", f.media_uri.as_deref().unwrap_or("?"), f.error.as_deref().unwrap_or("?"));
    }
    if failed.len() > 20 {
        eprintln!("  … and {} more (see the `error` column)", failed.len() - 20);
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{faces} {} from {} images ({} without a face or unreadable) in {secs:.1}s ({:.1} images/s) with {} → {}",
        if aligned { "crops" } else { "faces" },
        inputs.len(),
        failed.len(),
        inputs.len() as f64 / secs,
        spec.id,
        args.out.display()
    );
    Ok(())
}

/// Detect, align and embed every (or the largest) face of each image.
fn embed_detected(args: &EmbedArgs, spec: &FaceModelSpec, inputs: &[String]) -> anyhow::Result<Vec<Template>> {
    let settings = MediaSettings {
        upsample: args.upsample,
        max_detect_megapixels: args.max_detect_megapixels,
        model: spec.id.to_string(),
        weights: args.weights.clone(),
        detector: args.detector.clone(),
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
    let device = default_device()?;
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
                landmark_scores: Vec::new(),
                embedding,
                quality_norm: norm.filter(|_| spec.norm_is_quality),
                quality: norm.unwrap_or(1.0),
                style: Vec::new(),
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

/// Body crops or gait silhouette sequences through a body or gait model:
/// one template per crop (body) or per folder of silhouettes (gait), taken
/// as they are (no detection: the inputs are what a user's own detector
/// and segmenter made).
fn embed_person(args: &EmbedArgs, chosen: &ChosenModel) -> anyhow::Result<()> {
    let modality = chosen.modality();
    if args.largest_face || args.detector.is_some() || args.aligned {
        bail!(Error::invalid(format!(
            "`{}` reads {}: --largest-face, --detector and --aligned are for face models",
            chosen.id(),
            if modality == Modality::Gait { "silhouette sequences" } else { "person crops" }
        )));
    }
    let started = Instant::now();
    let device = default_device()?;
    // Gait reads sequences through the recogniser; bodies read crops
    // through any body embedder.
    let embedder = match chosen {
        ChosenModel::Appearance => {
            if args.weights.is_some() {
                bail!(Error::invalid(format!(
                    "the appearance model `{}` is fetched by infra/scripts/fetch-models.sh; --weights is for body recognisers such as osnet-x1_0",
                    chosen.id()
                )));
            }
            PersonEmbedder::Body(Box::new(AppearanceEmbedder::load(&model_dir(args.models.as_deref()), &device)?))
        }
        ChosenModel::Person(spec) => {
            let Some(weights) = &args.weights else {
                bail!(Error::invalid(format!("model `{}` needs its checkpoint: pass --weights FILE", spec.id)));
            };
            let models = model_dir(args.models.as_deref());
            let r = PersonRecognizer::load(spec, std::path::Path::new(weights), &models, &device)?;
            if modality == Modality::Gait { PersonEmbedder::Gait(r) } else { PersonEmbedder::Body(Box::new(r)) }
        }
        ChosenModel::Face(_) => unreachable!("faces go through embed_detected/embed_aligned"),
    };
    let (model_id, dim) = match &embedder {
        PersonEmbedder::Gait(r) => (r.spec().id.to_string(), r.dim()),
        PersonEmbedder::Body(b) => (b.model().to_string(), b.dim()),
    };
    let runtime = tokio::runtime::Handle::current();
    let subject = |input: &str| args.subject_from_parent.then(|| parent_name(input)).flatten();
    let row = |input: &str, embedding: Vec<f32>, frames: usize| Template {
        template_id: template_id(input, 0, &model_id),
        subject_id: subject(input),
        media_uri: Some(input.to_string()),
        modality: Some(modality),
        model: model_id.clone(),
        embedding: Some(embedding),
        num_frames: Some(frames as i32),
        created_at_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    };
    let fail = |input: &str, why: &str| Template {
        modality: Some(modality),
        subject_id: subject(input),
        ..failure(input, &model_id, why)
    };
    let mut rows = Vec::new();
    let units = match &embedder {
        PersonEmbedder::Gait(recognizer) => {
            let rgb = recognizer.reads_rgb_sequences();
            let sequences = image_sequences(&args.all_inputs(), if rgb { "RGB person crops" } else { "silhouettes" })?;
            let units = sequences.len();
            let progress = Progress::new(sequences.len() as u64, "sequences");
            for (folder, files) in &sequences {
                let frames = files
                    .iter()
                    .map(|f| {
                        let bytes = read_input(f, &runtime)?;
                        image::load_from_memory(&bytes)
                            .map_err(|e| Error::invalid(format!("{f}: not a readable image: {e}")))
                    })
                    .collect::<osprey_core::Result<Vec<_>>>();
                let embedded = frames.and_then(|frames| {
                    if rgb {
                        recognizer.embed_gait_frames(&frames.into_iter().map(|d| d.into_rgb8()).collect::<Vec<_>>())
                    } else {
                        recognizer.embed_gait(&frames.into_iter().map(|d| d.into_luma8()).collect::<Vec<_>>())
                    }
                });
                rows.push(match embedded {
                    Ok((embedding, used)) => row(folder, embedding, used),
                    Err(e) => fail(folder, e.message()),
                });
                progress.inc();
            }
            progress.finish();
            units
        }
        PersonEmbedder::Body(body) => {
            let inputs = expand_inputs(&args.all_inputs())?;
            let units = inputs.len();
            let progress = Progress::new(inputs.len() as u64, "crops");
            for chunk in inputs.chunks(osprey_models::person::BODY_BATCH) {
                let mut crops = Vec::with_capacity(chunk.len());
                let mut names = Vec::with_capacity(chunk.len());
                for input in chunk {
                    match read_input(input, &runtime).and_then(|b| decode_image(&b, input)) {
                        Ok(d) => {
                            crops.push(d.image);
                            names.push(input.as_str());
                        }
                        Err(e) => rows.push(fail(input, e.message())),
                    }
                    progress.inc();
                }
                for ((input, embedding), crop) in names.into_iter().zip(body.embed(&crops)?).zip(&crops) {
                    rows.push(Template {
                        bbox: Some(BBox { x: 0.0, y: 0.0, w: crop.width() as f32, h: crop.height() as f32 }),
                        ..row(input, embedding, 1)
                    });
                }
            }
            progress.finish();
            units
        }
    };
    if units == 0 {
        bail!(Error::invalid(if modality == Modality::Gait {
            "no sequences: name folders of images (one folder per sequence)"
        } else {
            "no input images"
        }));
    }
    write_rows(&args.out, &rows, dim)?;
    let failed: Vec<&Template> = rows.iter().filter(|t| t.embedding.is_none()).collect();
    for f in failed.iter().take(20) {
        eprintln!("  {}: {}", f.media_uri.as_deref().unwrap_or("?"), f.error.as_deref().unwrap_or("?"));
    }
    eprintln!(
        "{} {} templates from {units} {} ({} failed) in {:.1}s with {} → {}",
        rows.len() - failed.len(),
        modality.as_str(),
        if modality == Modality::Gait { "sequences" } else { "crops" },
        failed.len(),
        started.elapsed().as_secs_f64(),
        model_id,
        args.out.display()
    );
    Ok(())
}

/// What reads a person input: a gait recogniser reads silhouette sequences,
/// a body embedder reads crops.
enum PersonEmbedder {
    Gait(PersonRecognizer),
    Body(Box<dyn BodyEmbedder>),
}

/// Writes template rows of `dim`-wide embeddings as Parquet to `out`,
/// creating its folder.
fn write_rows(out: &std::path::Path, rows: &[Template], dim: usize) -> anyhow::Result<()> {
    let batch = templates_to_batch(rows, dim)?;
    let bytes = encode_parquet(batch.schema(), &[batch])?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(out, &bytes).with_context(|| format!("cannot write {}", out.display()))
}

/// Image sequences (silhouettes, or RGB crops: `what`): every folder under
/// the inputs that directly holds images is one sequence, its frames in
/// natural file-name order (`f9.png` before `f10.png`). An input that is an
/// image file is an error (a sequence is a folder).
fn image_sequences(inputs: &[String], what: &str) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let mut by_folder: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for input in inputs {
        let path = PathBuf::from(input.strip_prefix("file://").unwrap_or(input));
        if !path.is_dir() {
            bail!(Error::invalid(format!(
                "{input}: gait models read folders of {what} (one folder per sequence), not single files"
            )));
        }
        for file in walk(&path)?.into_iter().filter(|p| is_image_path(p)) {
            let folder = file.parent().map(|p| p.display().to_string()).unwrap_or_default();
            by_folder.entry(folder).or_default().push(file.display().to_string());
        }
    }
    Ok(by_folder
        .into_iter()
        .map(|(folder, mut files)| {
            files.sort_by_cached_key(|f| natural_key(f));
            (folder, files)
        })
        .collect())
}

/// A sort key that orders runs of digits by their value.
fn natural_key(name: &str) -> Vec<(u8, u64, String)> {
    let mut key = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits > 0 {
            let (run, tail) = rest.split_at(digits);
            key.push((0, run.parse().unwrap_or(u64::MAX), run.to_string()));
            rest = tail;
        } else {
            let text = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let (run, tail) = rest.split_at(text);
            key.push((1, 0, run.to_string()));
            rest = tail;
        }
    }
    key
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
    let template_id = template_id(input, i, model);
    Template {
        // A face with no body around it is its own person track.
        person_track_id: Some(template_id.clone()),
        template_id,
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
