//! Media inputs → template rows: what the embedded batch jobs and the
//! workers share. An input is a local path or an object URL; the analysis
//! turns an image (every face, or the largest) or a video (one template per
//! track, segment by segment) into rows of the template table.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use osprey_core::{Error, ErrorKind, Modality, Result};
use osprey_media::video::{Sampling, Segment, VideoReader, segments};
use osprey_media::{decode_image, is_image_path, is_video_path};
use osprey_models::appearance::{AppearanceEmbedder, MODEL_ID as APPEARANCE_MODEL};
use osprey_models::caface::{BACKBONE_MODEL as CAFACE_BACKBONE, CafaceAggregator};
use osprey_models::centernet::PersonDetector;
use osprey_models::mtcnn::Mtcnn;
use osprey_models::person::PersonRecognizer;
use osprey_models::registry::{DEFAULT_FACE_MODEL, FaceDetectorKind, face_model, person_model};
use osprey_models::{FaceModels, FaceOptions, FaceRecognizer, default_device, model_dir};
use osprey_store::{BBox, Keypoint, ObservationRow, Root, Template, layout};

use crate::body::{BodyAnalyzer, BodyEmbedder, BodyOptions};
use crate::face::{FaceDetect, SeedFaceModels};
use crate::{
    FaceAnalyzer, FrameAnalyzer, MediaTemplate, VideoOptions, image_templates, link_people, process_video,
    still_templates,
};

/// How media are turned into templates: the same knobs as `osprey run`'s
/// flags and a job's spec, and what a job's tasks carry to the workers
/// (unset fields take the defaults, so task specs stored before a field
/// existed still read).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSettings {
    /// Video frames analysed: frames per second (`"5"`), `"every:N"` or `"all"`.
    pub sample_fps: String,
    /// Image doublings before detection: 0 finds faces from ~80 px, 1 from ~40 px.
    pub upsample: u32,
    /// Most megapixels the detector searches per frame (after upsampling).
    pub max_detect_megapixels: f64,
    /// Videos are processed in segments of this many seconds.
    pub segment_seconds: u64,
    /// Face model id (`osprey models list`).
    pub model: String,
    /// The checkpoint of a model whose weights users bring: a local path or
    /// an object URL.
    pub weights: Option<String>,
    /// Face detector, `mmod` or `mtcnn`; default: the model's own (MMOD for
    /// dlib's model, MTCNN for the seed's).
    pub detector: Option<String>,
    /// Where MMOD searches video frames (`--detect`): `every-frame` (the
    /// whole frame) or `cascade` (crops around MTCNN's proposals and the
    /// tracks' expected boxes); none: `cascade` ([`DEFAULT_FACE_DETECT`]).
    /// Still images are always searched whole.
    pub detect: Option<String>,
    /// How a video track's observations become its template: `mean` (the
    /// quality-weighted mean of unit embeddings; AdaFace's norm-weighted
    /// mean for models whose norm measures quality) or `caface` (CAFace's
    /// learnt cluster-and-aggregate fusion, for `adaface-ir101`).
    pub aggregator: String,
    /// The CAFace checkpoint (path or object URL) for `aggregator: caface`.
    pub aggregator_weights: Option<String>,
    /// What to find and embed: `face`, `body`, `gait` (which needs `body`:
    /// gait templates come from body tracks), or several (default: `face`).
    #[schema(value_type = Vec<String>)]
    pub modalities: Vec<Modality>,
    /// The body model: the out-of-the-box appearance model (default,
    /// `dinov2-vits14-imgfocus-0.1.1`) or a body recogniser whose weights
    /// users bring (`osnet-x1_0`, `osnet-ain-x1_0`, `clip3dreid`,
    /// `sapiensid`).
    pub body_model: Option<String>,
    /// The body recogniser's checkpoint (path or object URL).
    pub body_weights: Option<String>,
    /// The gait model (`gaitbase` or `biggait`), needed with `gait` among
    /// the modalities.
    pub gait_model: Option<String>,
    /// The gait model's checkpoint (path or object URL).
    pub gait_weights: Option<String>,
}

/// Where MMOD searches video frames when the settings do not say
/// (`--detect`): the cascade, which found every face and track the exact
/// path found on the 1080p walking clip and all but 1 of 69 faces (every
/// track) on the Hamilton clip (`osprey bench video --compare`; the rule
/// for the default is at most 2 % lost).
pub const DEFAULT_FACE_DETECT: FaceDetect = FaceDetect::Cascade;

/// The aggregators a video track's template can come from.
pub const AGGREGATORS: [&str; 2] = ["mean", "caface"];

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            sample_fps: "5".into(),
            upsample: 1,
            max_detect_megapixels: 4.0,
            segment_seconds: 300,
            model: DEFAULT_FACE_MODEL.into(),
            weights: None,
            detector: None,
            detect: None,
            aggregator: "mean".into(),
            aggregator_weights: None,
            modalities: vec![Modality::Face],
            body_model: None,
            body_weights: None,
            gait_model: None,
            gait_weights: None,
        }
    }
}

impl MediaSettings {
    /// Checks every value; the error names the setting.
    pub fn validate(&self) -> Result<Sampling> {
        if !self.max_detect_megapixels.is_finite() || self.max_detect_megapixels <= 0.0 {
            return Err(Error::invalid("max_detect_megapixels must be positive"));
        }
        if self.segment_seconds == 0 {
            return Err(Error::invalid("segment_seconds must be positive"));
        }
        if self.upsample > 3 {
            return Err(Error::invalid("upsample must be 0 to 3"));
        }
        let spec = face_model(&self.model)?;
        match (&self.weights, spec.needs_weights_file()) {
            (None, true) => {
                return Err(Error::invalid(format!(
                    "model `{}` needs its checkpoint: pass --weights FILE (the job API's `weights`)",
                    spec.id
                )));
            }
            (Some(_), false) => {
                return Err(Error::invalid(format!(
                    "model `{}` reads dlib's files from the model folder (--models); --weights is for the seed models",
                    spec.id
                )));
            }
            _ => {}
        }
        self.detector_kind()?;
        self.face_detect()?;
        self.validate_modalities()?;
        match (self.aggregator.as_str(), &self.aggregator_weights) {
            ("mean", None) => {}
            ("mean", Some(_)) => {
                return Err(Error::invalid("--aggregator-weights is for `--aggregator caface`"));
            }
            ("caface", None) => {
                return Err(Error::invalid(
                    "aggregator `caface` needs its checkpoint: pass --aggregator-weights FILE (the job API's `aggregator_weights`)",
                ));
            }
            ("caface", Some(_)) if spec.id != CAFACE_BACKBONE => {
                return Err(Error::invalid(format!(
                    "aggregator `caface` fuses `{CAFACE_BACKBONE}` features (the backbone it was trained with), not `{}`'s",
                    spec.id
                )));
            }
            ("caface", Some(_)) => {}
            (other, _) => {
                return Err(Error::invalid(format!(
                    "unknown aggregator `{other}`; available: {}",
                    AGGREGATORS.join(", ")
                )));
            }
        }
        Sampling::parse(&self.sample_fps)
    }

    fn validate_modalities(&self) -> Result<()> {
        if self.modalities.is_empty() {
            return Err(Error::invalid("modalities: name at least one of face, body, gait"));
        }
        self.validate_gait()?;
        let body = self.modalities.contains(&Modality::Body);
        match (self.body_model.as_deref(), &self.body_weights) {
            (_, Some(_)) | (Some(_), None) if !body => {
                Err(Error::invalid("--body-model and --body-weights need `body` in --modalities"))
            }
            (None | Some(APPEARANCE_MODEL), None) => Ok(()),
            (None | Some(APPEARANCE_MODEL), Some(_)) => Err(Error::invalid(format!(
                "the appearance model `{APPEARANCE_MODEL}` is fetched by infra/scripts/fetch-models.sh; --body-weights is for body recognisers such as osnet-x1_0"
            ))),
            (Some(id), weights) => check_recogniser(id, weights.is_some(), Modality::Body),
        }
    }

    fn validate_gait(&self) -> Result<()> {
        if !self.wants(Modality::Gait) {
            return match (&self.gait_model, &self.gait_weights) {
                (None, None) => Ok(()),
                _ => Err(Error::invalid("--gait-model and --gait-weights need `gait` in --modalities")),
            };
        }
        if !self.wants(Modality::Body) {
            return Err(Error::invalid(
                "modality `gait` needs `body` too: gait templates come from body tracks' silhouettes (e.g. --modalities face,body,gait)",
            ));
        }
        let Some(id) = self.gait_model.as_deref() else {
            return Err(Error::invalid(
                "modality `gait` needs a gait model: pass --gait-model gaitbase --gait-weights FILE (the job API's `gait_model`, `gait_weights`)",
            ));
        };
        check_recogniser(id, self.gait_weights.is_some(), Modality::Gait)
    }

    /// The model id of `modality`'s templates under these settings.
    pub fn model_of(&self, modality: Modality) -> String {
        match modality {
            Modality::Face => self.model.clone(),
            Modality::Body => self.body_model.clone().unwrap_or_else(|| APPEARANCE_MODEL.to_string()),
            Modality::Gait => self.gait_model.clone().unwrap_or_default(),
        }
    }

    /// Whether these settings produce templates of `modality`.
    pub fn wants(&self, modality: Modality) -> bool {
        self.modalities.contains(&modality)
    }

    /// Where MMOD searches video frames under these settings.
    pub fn face_detect(&self) -> Result<FaceDetect> {
        self.detect.as_deref().map_or(Ok(DEFAULT_FACE_DETECT), FaceDetect::parse)
    }

    /// The face detector these settings run: the one named, else the model's.
    pub fn detector_kind(&self) -> Result<FaceDetectorKind> {
        match &self.detector {
            Some(name) => FaceDetectorKind::parse(name),
            None => Ok(face_model(&self.model)?.default_detector()),
        }
    }
}

/// Checks that `id` is a registered `modality` recogniser and that its
/// checkpoint was given (`--<modality>-weights`, the job API's
/// `<modality>_weights`).
fn check_recogniser(id: &str, has_weights: bool, modality: Modality) -> Result<()> {
    let spec = person_model(id)?;
    if spec.modality != modality {
        return Err(Error::invalid(format!("`{id}` is a {} model, not a {modality} model", spec.modality)));
    }
    if !has_weights {
        return Err(Error::invalid(format!(
            "{modality} model `{id}` needs its checkpoint: pass --{modality}-weights FILE (the job API's `{modality}_weights`)"
        )));
    }
    Ok(())
}

/// Least share of a crop-shaped still (see `BodyAnalyzer::whole_crop`) the
/// largest person found must cover to be taken as its person; below it the
/// whole image is the person.
const CROP_PERSON_AREA: f32 = 0.5;

/// The face models loaded once, with the settings they run at.
pub struct MediaAnalysis {
    analyzer: FaceAnalyzer,
    /// Whether face templates are made (the face models are loaded anyway).
    faces: bool,
    /// People, when `body` is among the modalities and its models loaded.
    body: Option<std::sync::Arc<BodyAnalyzer>>,
    /// The gait recogniser, when `gait` is among the modalities: one gait
    /// template per body track of a video.
    gait: Option<std::sync::Arc<PersonRecognizer>>,
    sampling: Sampling,
    /// The settings' model, checkpoint, aggregator and its checkpoint (to
    /// tell whether a job's settings need other weights).
    model: ModelChoice,
    /// Where dlib's and MTCNN's files are.
    model_dir: PathBuf,
}

/// The settings that decide which files are loaded.
#[derive(Debug, Clone, PartialEq)]
struct ModelChoice {
    model: String,
    weights: Option<String>,
    detector: Option<String>,
    aggregator: String,
    aggregator_weights: Option<String>,
    modalities: Vec<Modality>,
    body_model: Option<String>,
    body_weights: Option<String>,
    gait_model: Option<String>,
    gait_weights: Option<String>,
}

fn model_choice(s: &MediaSettings) -> ModelChoice {
    ModelChoice {
        model: s.model.clone(),
        weights: s.weights.clone(),
        detector: s.detector.clone(),
        aggregator: s.aggregator.clone(),
        aggregator_weights: s.aggregator_weights.clone(),
        modalities: s.modalities.clone(),
        body_model: s.body_model.clone(),
        body_weights: s.body_weights.clone(),
        gait_model: s.gait_model.clone(),
        gait_weights: s.gait_weights.clone(),
    }
}

/// The person detector and the body model the settings name. Missing model
/// files (not fetched) are `NotFound`.
fn load_body(settings: &MediaSettings, dir: &Path, device: &candle_core::Device) -> Result<BodyAnalyzer> {
    let detector = PersonDetector::load(dir, device)?;
    let embedder: std::sync::Arc<dyn BodyEmbedder> = match (&settings.body_model, &settings.body_weights) {
        (Some(id), Some(weights)) => {
            let spec = person_model(id)?;
            std::sync::Arc::new(with_local_file(weights, |path| PersonRecognizer::load(&spec, path, dir, device))?)
        }
        _ => std::sync::Arc::new(AppearanceEmbedder::load(dir, device)?),
    };
    let pose = crate::body::load_pose(dir, device)?;
    Ok(BodyAnalyzer { detector: std::sync::Arc::new(detector), embedder, pose, options: BodyOptions::default() })
}

/// `analyzer` searching video frames as `settings` say; MTCNN (from `dir`)
/// is loaded to propose faces for the cascade when dlib's stack has none.
/// Without MTCNN the default cascade becomes the exact path, with a
/// warning; a cascade asked for is an error.
fn with_face_detect(analyzer: FaceAnalyzer, settings: &MediaSettings, dir: &Path) -> Result<FaceAnalyzer> {
    let detect = settings.face_detect()?;
    let needs_proposer = detect == FaceDetect::Cascade
        && analyzer.proposer.is_none()
        && matches!(analyzer.backend, crate::face::FaceBackend::Dlib { mtcnn: None, .. });
    if !needs_proposer {
        return Ok(analyzer.with_detect(detect, None));
    }
    match load_mtcnn(dir) {
        Ok(mtcnn) => Ok(analyzer.with_detect(detect, Some(std::sync::Arc::new(mtcnn)))),
        // The default falls back to the exact path; asked for, it is an error.
        Err(e) if settings.detect.is_none() => {
            tracing::warn!("video frames are searched whole (`--detect every-frame`): {e}");
            Ok(analyzer.with_detect(FaceDetect::EveryFrame, None))
        }
        Err(e) => Err(e),
    }
}

/// MTCNN's nets from `dir/mtcnn`.
pub fn load_mtcnn(dir: &Path) -> Result<Mtcnn> {
    let mtcnn_dir = dir.join("mtcnn");
    Mtcnn::load(&mtcnn_dir).map_err(|e| {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "cannot load MTCNN from {}: {e}; run `infra/scripts/fetch-models.sh` or point --models / OSPREY_MODELS at the folder holding mtcnn/",
                mtcnn_dir.display()
            ),
        )
    })
}

/// What one input (or one segment of a video) gave.
#[derive(Debug)]
pub struct MediaResult {
    pub input: String,
    /// Templates with the segment index each came from.
    pub templates: Vec<(usize, MediaTemplate)>,
    pub is_video: bool,
    pub frames: u64,
}

impl MediaAnalysis {
    /// Loads the settings' face models: dlib's and MTCNN's files from
    /// `models` (default: `$OSPREY_MODELS`, else `./models`), a seed model's
    /// checkpoint from `settings.weights`. Object URLs are read through the
    /// current tokio runtime: call from a blocking context.
    pub fn load(settings: &MediaSettings, models: Option<&Path>) -> Result<MediaAnalysis> {
        let sampling = settings.validate()?;
        let dir = model_dir(models);
        let device = default_device()?;
        let options = face_options(settings);
        let mmod = settings.detector_kind()? == FaceDetectorKind::Mmod;
        let analyzer = match &settings.weights {
            None if mmod => FaceAnalyzer::new(FaceModels::load(&dir, &device)?, options),
            None => FaceAnalyzer::dlib_on_mtcnn(FaceModels::load(&dir, &device)?, load_mtcnn(&dir)?, options),
            Some(weights) => {
                let spec = face_model(&settings.model)?;
                let detector = load_mtcnn(&dir)?;
                let mmod = if mmod { Some(std::sync::Arc::new(FaceModels::load(&dir, &device)?)) } else { None };
                let recognizer = with_local_file(weights, |path| FaceRecognizer::load(&spec, path, &device))?;
                let aggregator = match &settings.aggregator_weights {
                    None => None,
                    Some(w) => Some(with_local_file(w, |path| CafaceAggregator::load(path, &device))?),
                };
                FaceAnalyzer::seed(SeedFaceModels { detector, mmod, recognizer, aggregator }, options)
            }
        };
        let analyzer = with_face_detect(analyzer, settings, &dir)?;
        let body = if settings.wants(Modality::Body) {
            match load_body(settings, &dir, &device) {
                Ok(b) => Some(std::sync::Arc::new(b)),
                Err(e) if e.kind() == ErrorKind::NotFound && settings.wants(Modality::Face) => {
                    let what = if settings.wants(Modality::Gait) {
                        "body and gait modalities are"
                    } else {
                        "body modality is"
                    };
                    tracing::warn!("the {what} skipped: {e}");
                    eprintln!("warning: the {what} skipped: {e}");
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let gait = match (&settings.gait_model, &settings.gait_weights) {
            (Some(id), Some(weights)) if settings.wants(Modality::Gait) && body.is_some() => {
                let spec = person_model(id)?;
                Some(std::sync::Arc::new(with_local_file(weights, |path| {
                    PersonRecognizer::load(&spec, path, &dir, &device)
                })?))
            }
            _ => None,
        };
        Ok(MediaAnalysis {
            analyzer,
            faces: settings.wants(Modality::Face),
            body,
            gait,
            sampling,
            model: model_choice(settings),
            model_dir: dir,
        })
    }

    /// The models at other settings (a job's own): the same loaded models
    /// when the settings name the same model and checkpoint, else the ones
    /// they name, loaded now.
    pub fn with_settings(&self, settings: &MediaSettings) -> Result<MediaAnalysis> {
        if model_choice(settings) != self.model {
            return MediaAnalysis::load(settings, Some(&self.model_dir));
        }
        let sampling = settings.validate()?;
        Ok(MediaAnalysis {
            analyzer: with_face_detect(self.analyzer.with_options(face_options(settings)), settings, &self.model_dir)?,
            faces: self.faces,
            body: self.body.clone(),
            gait: self.gait.clone(),
            sampling,
            model: self.model.clone(),
            model_dir: self.model_dir.clone(),
        })
    }

    /// The face model id written to templates.
    pub fn model(&self) -> &str {
        self.analyzer.model()
    }

    pub fn analyzer(&self) -> &FaceAnalyzer {
        &self.analyzer
    }

    /// The people analyzer, when bodies are analysed.
    pub fn body(&self) -> Option<&BodyAnalyzer> {
        self.body.as_deref()
    }

    /// The analyzers these settings run, faces first.
    fn analyzers(&self) -> Vec<&dyn FrameAnalyzer> {
        let mut out: Vec<&dyn FrameAnalyzer> = Vec::new();
        if self.faces {
            out.push(&self.analyzer);
        }
        if let Some(b) = &self.body {
            out.push(b.as_ref());
        }
        out
    }

    /// Cosine at or above which two tracks of `modality` are taken for the
    /// same person.
    pub fn same_person_in(&self, modality: Modality) -> f32 {
        match (modality, &self.body) {
            (Modality::Body, Some(b)) => b.tracker_config().appearance_gate_far,
            _ => self.same_person(),
        }
    }

    /// Cosine at or above which two tracks are taken for the same person.
    pub fn same_person(&self) -> f32 {
        self.analyzer.tracker_config().appearance_gate_far
    }

    /// Frames a local video will yield at this sampling (for progress).
    pub fn estimate_frames(&self, path: &Path) -> Option<u64> {
        let reader = VideoReader::open(path, "probe").ok()?;
        let info = reader.info();
        let total = info.num_frames.map(|n| n as f64).or(info.duration_ms.map(|d| d as f64 / 1000.0 * info.fps))?;
        Some(match self.sampling {
            Sampling::All => total,
            Sampling::EveryNth(n) => total / n as f64,
            Sampling::Fps(f) => total * (f / info.fps).min(1.0),
        } as u64)
    }

    /// Templates of one input. `largest_only` keeps one face per image;
    /// `segments` picks which of the video's segments to process (`None`:
    /// all); `on_frame` is called once per analysed frame. Call from outside
    /// the async runtime: object reads block on `rt`.
    pub fn process(
        &self,
        input: &str,
        largest_only: bool,
        plan: VideoPlan,
        rt: &tokio::runtime::Handle,
        on_frame: &(dyn Fn() + Sync),
    ) -> Result<MediaResult> {
        if is_video_path(Path::new(input)) {
            self.process_video(input, plan, rt, on_frame)
        } else {
            self.process_image(input, largest_only, rt, on_frame)
        }
    }

    fn process_image(
        &self,
        input: &str,
        largest_only: bool,
        rt: &tokio::runtime::Handle,
        on_frame: &(dyn Fn() + Sync),
    ) -> Result<MediaResult> {
        let bytes = read_input(input, rt)?;
        let image = decode_image(&bytes, input)?.image;
        let templates = self.image_templates(&image, largest_only).map_err(|e| match e.kind() {
            osprey_core::ErrorKind::NotFound => Error::invalid(format!("{input}: {}", e.message())),
            _ => e,
        })?;
        on_frame();
        let templates = templates.into_iter().map(|t| (0, t)).collect();
        Ok(MediaResult { input: input.to_string(), templates, is_video: false, frames: 1 })
    }

    /// The templates of a still image: its faces and (with `body` among the
    /// modalities) its people, each face linked to the person whose box
    /// holds it ([`link_people`]); a picture that is itself a person crop
    /// is one person. `largest_only` keeps the largest of each. An image
    /// with none of them is a `NotFound` error saying what was looked for.
    pub fn image_templates(&self, image: &image::RgbImage, largest_only: bool) -> Result<Vec<MediaTemplate>> {
        let mut templates = Vec::new();
        if self.faces {
            templates.extend(if largest_only {
                still_templates(
                    &self.analyzer,
                    &image,
                    self.analyzer.analyze_with(&image, &self.analyzer.largest_only())?,
                )?
            } else {
                image_templates(&self.analyzer, &image)?
            });
        }
        if let Some(body) = &self.body {
            let mut found = body.analyze(&image)?;
            // An enrolment or probe photo that is itself a person crop: the
            // detector finds no one when the person fills the frame, or only
            // part of them, or a neighbour cut in at the edge.
            let area = image.width() as f32 * image.height() as f32;
            if found.iter().all(|o| o.bbox.area() < CROP_PERSON_AREA * area)
                && let Some(whole) = body.whole_crop(&image)?
            {
                found = vec![whole];
            }
            if largest_only {
                found.sort_by(|a, b| b.bbox.area().total_cmp(&a.bbox.area()));
                found.truncate(1);
            }
            templates.extend(still_templates(body.as_ref(), &image, found)?);
        }
        if templates.is_empty() {
            let what = match (self.faces, self.body.is_some()) {
                (true, true) => "no face or person",
                (false, true) => "no person",
                _ => "no face",
            };
            return Err(Error::not_found(format!("{what} found")));
        }
        link_people(&mut templates);
        Ok(templates)
    }

    fn process_video(
        &self,
        input: &str,
        plan: VideoPlan,
        rt: &tokio::runtime::Handle,
        on_frame: &(dyn Fn() + Sync),
    ) -> Result<MediaResult> {
        let local = LocalVideo::of(input, rt)?;
        let chosen: Vec<(usize, Segment)> = match plan {
            VideoPlan::Whole { segment_seconds } => {
                let info = VideoReader::open(local.path(), input)?.info().clone();
                segments(info.duration_ms, segment_seconds as i64 * 1000).into_iter().enumerate().collect()
            }
            VideoPlan::Segment { index, segment } => vec![(index, segment)],
        };
        let frames = AtomicUsize::new(0);
        let mut templates = Vec::new();
        for (i, segment) in chosen {
            let out = process_video(
                &self.analyzers(),
                local.path(),
                input,
                VideoOptions {
                    sampling: self.sampling,
                    segment,
                    gait_frames: self.gait.as_ref().is_some_and(|g| g.reads_rgb_sequences()),
                },
                &|_| {
                    frames.fetch_add(1, Ordering::Relaxed);
                    on_frame();
                },
            )?;
            let mut found = out.templates;
            link_people(&mut found);
            if let Some(gait) = &self.gait {
                let gaits = crate::gait::gait_templates(gait, &mut found);
                found.extend(gaits);
            }
            templates.extend(found.into_iter().map(|t| (i, t)));
        }
        Ok(MediaResult { input: input.to_string(), templates, is_video: true, frames: frames.into_inner() as u64 })
    }
}

fn face_options(settings: &MediaSettings) -> FaceOptions {
    FaceOptions {
        upsample: settings.upsample,
        max_detect_pixels: (settings.max_detect_megapixels * 1e6) as u64,
        ..FaceOptions::default()
    }
}

/// Runs `f` on a local copy of `input`: a local path (or `file://` URL) as
/// it is, an object URL downloaded to a temporary file first.
fn with_local_file<T>(input: &str, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if !is_remote(input) {
        return f(Path::new(input.strip_prefix("file://").unwrap_or(input)));
    }
    let rt = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::internal(format!("{input}: reading an object URL needs the async runtime")))?;
    let bytes = read_input(input, &rt)?;
    let mut tmp =
        tempfile::NamedTempFile::new().map_err(|e| Error::new(ErrorKind::Storage, format!("{input}: {e}")))?;
    std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| Error::new(ErrorKind::Storage, format!("{input}: {e}")))?;
    f(tmp.path())
}

/// Which part of a video to process.
#[derive(Debug, Clone, Copy)]
pub enum VideoPlan {
    /// Every segment of `segment_seconds`, one after the other.
    Whole { segment_seconds: u64 },
    /// One segment (a distributed task), numbered `index` in the video.
    Segment { index: usize, segment: Segment },
}

/// A video as a local file: a local path in place, an object copied to a
/// temporary file (removed on drop) because FFmpeg seeks in it.
pub struct LocalVideo {
    path: PathBuf,
    _temp: Option<tempfile::NamedTempFile>,
}

impl LocalVideo {
    pub fn of(input: &str, rt: &tokio::runtime::Handle) -> Result<LocalVideo> {
        if !is_remote(input) {
            return Ok(LocalVideo { path: PathBuf::from(input.strip_prefix("file://").unwrap_or(input)), _temp: None });
        }
        let bytes = read_input(input, rt)?;
        let suffix = Path::new(input).extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix("osprey-video-")
            .suffix(&suffix)
            .tempfile()
            .map_err(|e| Error::internal(format!("cannot create a temporary file: {e}")))?;
        std::fs::write(temp.path(), &bytes)
            .map_err(|e| Error::internal(format!("cannot write a temporary file: {e}")))?;
        Ok(LocalVideo { path: temp.path().to_path_buf(), _temp: Some(temp) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The time segments of a video input (local or remote), for splitting it
/// into tasks.
pub fn video_segments(input: &str, segment_seconds: u64, rt: &tokio::runtime::Handle) -> Result<Vec<Segment>> {
    let local = LocalVideo::of(input, rt)?;
    let info = VideoReader::open(local.path(), input)?.info().clone();
    Ok(segments(info.duration_ms, segment_seconds as i64 * 1000))
}

fn is_remote(input: &str) -> bool {
    input.contains("://") && !input.starts_with("file://")
}

/// Reads one input's bytes: a local path, or an object URL (through `rt`,
/// from a thread outside the async runtime).
pub fn read_input(input: &str, rt: &tokio::runtime::Handle) -> Result<Vec<u8>> {
    if input.contains("://") {
        let (parent, key) =
            input.rsplit_once('/').ok_or_else(|| Error::invalid(format!("{input}: not an object URL")))?;
        let root = Root::open(parent)?;
        return Ok(rt.block_on(root.get(key))?.to_vec());
    }
    std::fs::read(input).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::NotFound } else { ErrorKind::InvalidInput };
        Error::new(kind, format!("{input}: {e}"))
    })
}

// ---------------------------------------------------------------- inputs

/// An image or video file name.
pub fn is_media(name: &str) -> bool {
    let p = Path::new(name);
    is_image_path(p) || is_video_path(p)
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::new(ErrorKind::NotFound, format!("cannot list {}: {e}", dir.display())))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::internal(format!("cannot list {}: {e}", dir.display())))?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

/// The image and video files under a local folder (recursively), sorted.
pub fn media_files_under(dir: &Path) -> Result<Vec<String>> {
    let mut found: Vec<String> =
        walk(dir)?.into_iter().filter(|p| is_media(&p.to_string_lossy())).map(|p| p.display().to_string()).collect();
    found.sort();
    Ok(found)
}

fn join_url(base: &str, key: &str) -> String {
    if base.ends_with('/') { format!("{base}{key}") } else { format!("{base}/{key}") }
}

/// Expands files, folders, globs and object URLs (a folder URL ends in `/`)
/// into media inputs, in order; `warn` hears about inputs that matched
/// nothing. A plain file or object URL is taken as given (its content decides
/// what it is); folders and globs keep only names with an image or video
/// extension.
pub async fn expand_media(inputs: &[String], warn: &(dyn Fn(String) + Sync)) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for input in inputs {
        let is_url = input.contains("://");
        if !has_glob(input) && !(is_url && input.ends_with('/')) {
            let path = Path::new(input.strip_prefix("file://").unwrap_or(input));
            if (!is_url || input.starts_with("file://")) && path.is_dir() {
                let found = media_files_under(path)?;
                if found.is_empty() {
                    warn(format!("no images or videos under {}", path.display()));
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
            std::fs::canonicalize(dir)
                .map_err(|e| Error::new(ErrorKind::NotFound, format!("no folder {dir}: {e}")))?
                .display()
                .to_string()
        };
        let root = Root::open(&base_url)?;
        let objects = if pattern.is_empty() { root.list("").await? } else { root.glob(pattern).await? };
        let found: Vec<String> =
            objects.into_iter().filter(|o| is_media(&o.key)).map(|o| join_url(&base_url, &o.key)).collect();
        if found.is_empty() {
            warn(format!("no images or videos match {input}"));
        }
        out.extend(found);
    }
    Ok(out)
}

/// (subject id, input) for every image and video in a folder holding one
/// folder per subject: a local folder or an object URL prefix.
pub async fn subject_inputs(dir: &str, warn: &(dyn Fn(String) + Sync)) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if is_remote(dir) {
        let base = if dir.ends_with('/') { dir.to_string() } else { format!("{dir}/") };
        let root = Root::open(&base)?;
        for o in root.list("").await? {
            if let Some((subject, _)) = o.key.split_once('/').filter(|_| is_media(&o.key)) {
                out.push((subject.to_string(), join_url(&base, &o.key)));
            }
        }
    } else {
        let dir = PathBuf::from(dir.strip_prefix("file://").unwrap_or(dir));
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            Error::new(ErrorKind::NotFound, format!("cannot list subjects folder {}: {e}", dir.display()))
        })?;
        let mut subjects: Vec<PathBuf> =
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
        subjects.sort();
        for s in subjects {
            let subject = s.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let files = media_files_under(&s)?;
            if files.is_empty() {
                warn(format!("subject folder {} holds no images or videos", s.display()));
            }
            out.extend(files.into_iter().map(|f| (subject.clone(), f)));
        }
    }
    for (subject, _) in &out {
        layout::check_name("subject", subject).map_err(|e| e.context("subject ids come from folder names"))?;
    }
    Ok(out)
}

// ---------------------------------------------------------------- template rows

/// A template id stable across reruns: derived from where the template was
/// made (`scope`: a gallery or a job), the input, segment and track.
/// The model is part of the name, so two models' templates of one input
/// never share an id (the default model's ids are unchanged from before
/// there were others).
pub fn template_id(scope: &str, input: &str, segment: usize, track: i64, model: &str) -> String {
    let name = format!("{scope}/{input}#s{segment}t{track}/{model}");
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
}

/// Where a template's thumbnail is stored under the root.
pub fn thumbnail_key(template_id: &str) -> String {
    format!("{}/{template_id}.jpg", layout::THUMBNAILS)
}

/// Where a body template's silhouette strip is stored under the root.
pub fn silhouette_key(template_id: &str) -> String {
    format!("{}/{template_id}.png", layout::SILHOUETTES)
}

/// The silhouettes of template `template_id` (see
/// [`crate::silhouette::decode_strip`]): 64×64 frames in time order, or
/// `NotFound` when the template has no strip.
pub async fn read_silhouettes(root: &Root, template_id: &str) -> Result<Vec<Vec<u8>>> {
    let key = silhouette_key(template_id);
    let bytes = root.get(&key).await?;
    crate::silhouette::decode_strip(&bytes, &root.url_of(&key))
}

/// The id of template `t` of `input`'s segment `segment`, made in `scope`.
pub fn media_template_id(scope: &str, input: &str, segment: usize, t: &MediaTemplate) -> String {
    template_id(scope, input, segment, t.track_id, &t.model)
}

/// The person track template `t` belongs to: for a face inside a body
/// track, that body template's id; otherwise its own (a face track with no
/// body around it is its own person track, and a body track is one).
pub fn person_track_id(scope: &str, input: &str, segment: usize, t: &MediaTemplate) -> String {
    match &t.person_track {
        Some((track, model)) => template_id(scope, input, segment, *track, model),
        None => media_template_id(scope, input, segment, t),
    }
}

/// The template row of `t` (from `input`'s segment `segment`, made in
/// `scope`: its id is [`media_template_id`]); its thumbnail (and its
/// silhouette strip, if it has one) go to `thumbnails` for writing.
#[allow(clippy::too_many_arguments)]
pub fn template_row(
    root: &Root,
    scope: &str,
    input: &str,
    segment: usize,
    t: &MediaTemplate,
    is_video: bool,
    thumbnails: &mut Vec<(String, Vec<u8>)>,
) -> Template {
    let template_id = media_template_id(scope, input, segment, t);
    let key = thumbnail_key(&template_id);
    let thumbnail_uri = root.url_of(&key);
    thumbnails.push((key, t.thumbnail_jpeg.clone()));
    let silhouette_uri = t.silhouettes.as_ref().map(|s| {
        let key = silhouette_key(&template_id);
        let uri = root.url_of(&key);
        thumbnails.push((key, s.png.clone()));
        uri
    });
    Template {
        silhouette_frames: t.silhouettes.as_ref().map(|s| s.frames.len() as i32),
        silhouette_uri,
        person_track_id: Some(person_track_id(scope, input, segment, t)),
        template_id,
        task_id: Some(format!("segment-{segment}")),
        media_uri: Some(input.to_string()),
        track_id: is_video.then_some(t.track_id),
        modality: Some(t.modality),
        model: t.model.clone(),
        embedding: t.error.is_none().then(|| t.embedding.clone()),
        error: t.error.clone(),
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

/// The rows of the observations table for template `template_id` made from
/// `t`: one per frame of its track (the one detection of a still image, at
/// frame 0 and 0 ms), in time order.
pub fn observation_rows(template_id: &str, t: &MediaTemplate) -> Vec<ObservationRow> {
    t.points
        .iter()
        .map(|p| ObservationRow {
            template_id: template_id.to_string(),
            modality: t.modality,
            frame: p.frame,
            t_ms: p.t_ms,
            bbox: BBox { x: p.bbox.x, y: p.bbox.y, w: p.bbox.w, h: p.bbox.h },
            keypoints: (!p.landmarks.is_empty()).then(|| {
                p.landmarks
                    .chunks_exact(2)
                    .enumerate()
                    .map(|(k, xy)| Keypoint { x: xy[0], y: xy[1], score: p.landmark_scores.get(k).copied() })
                    .collect()
            }),
            quality: Some(p.quality),
        })
        .collect()
}

/// The row recording that `input` gave no template, with why.
pub fn failure_row(template_id: String, input: &str, model: &str, error: &str) -> Template {
    Template {
        template_id,
        media_uri: Some(input.to_string()),
        modality: Some(Modality::Face),
        model: model.to_string(),
        error: Some(error.to_string()),
        created_at_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    }
}

/// Writes thumbnails and silhouette strips (from [`template_row`]) under
/// the root.
pub async fn put_thumbnails(root: &Root, thumbnails: Vec<(String, Vec<u8>)>) -> Result<()> {
    for (key, bytes) in thumbnails {
        root.put(&key, bytes.into()).await?;
    }
    Ok(())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The subject's own tracks in an enrolment video, per modality: the
/// dominant one (most quality-weighted observations) and any other that
/// looks like it (`same_person(modality)`: cosine); bystanders are dropped.
/// Gait templates follow their body track (kept when it is), since a gait
/// embedding of a short track says less about who it is than its body's.
pub fn subject_tracks(
    templates: Vec<(usize, MediaTemplate)>,
    same_person: &dyn Fn(Modality) -> f32,
) -> Vec<(usize, MediaTemplate)> {
    let weight = |t: &MediaTemplate| t.quality * t.num_frames as f32;
    let mut anchors: Vec<(Modality, Vec<f32>, f32)> = Vec::new();
    for (_, t) in templates.iter().filter(|(_, t)| t.modality != Modality::Gait) {
        match anchors.iter_mut().find(|(m, _, _)| *m == t.modality) {
            Some(a) if weight(t) > a.2 => *a = (t.modality, t.embedding.clone(), weight(t)),
            Some(_) => {}
            None => anchors.push((t.modality, t.embedding.clone(), weight(t))),
        }
    }
    let is_subject = |t: &MediaTemplate| {
        anchors
            .iter()
            .find(|(m, _, _)| *m == t.modality)
            .is_some_and(|(m, anchor, _)| cosine(&t.embedding, anchor) >= same_person(*m))
    };
    let (gaits, others): (Vec<_>, Vec<_>) = templates.into_iter().partition(|(_, t)| t.modality == Modality::Gait);
    let mut kept: Vec<(usize, MediaTemplate)> = others.into_iter().filter(|(_, t)| is_subject(t)).collect();
    let kept_bodies: std::collections::HashSet<(usize, i64, String)> = kept
        .iter()
        .filter(|(_, t)| t.modality == Modality::Body)
        .map(|(s, t)| (*s, t.track_id, t.model.clone()))
        .collect();
    kept.extend(gaits.into_iter().filter(|(s, t)| {
        t.person_track.as_ref().is_some_and(|(track, model)| kept_bodies.contains(&(*s, *track, model.clone())))
    }));
    kept
}
