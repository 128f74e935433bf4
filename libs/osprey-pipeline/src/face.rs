//! Faces as a [`FrameAnalyzer`], with either of two model stacks:
//! * dlib's detector, 5-point landmarks and ResNet descriptor
//!   (`dlib-resnet-v1`, the default);
//! * MTCNN boxes and landmarks, alignment onto the ArcFace template and one
//!   of the seed's recognisers (AdaFace IR, ViT + KP-RPE) loaded from the
//!   user's checkpoint.
//!
//! Either stack can use the other's detector (`--detector`): MTCNN boxes
//! go to dlib's shape predictor, and dlib's MMOD boxes to MTCNN's ONet for
//! the ArcFace landmarks.

use std::sync::Arc;

use image::RgbImage;
use osprey_core::{Modality, Result};
use osprey_models::align::{ARCFACE_TEMPLATE, Similarity, warp};
use osprey_models::caface::{CafaceAggregator, FrameFeature};
use osprey_models::mtcnn::{Mtcnn, MtcnnFace};
use osprey_models::{Detection, FaceModels, FaceOptions, FaceRecognizer, FaceSelection, MODEL_NAME, Rect};

use crate::quality::{observation_quality, sharpness};
use crate::track::TrackPoint;
use crate::{BoxF, FrameAnalyzer, Observation, TrackerConfig};

/// MTCNN, the ArcFace alignment and a seed recogniser, optionally with
/// CAFace fusing each track.
pub struct SeedFaceModels {
    /// Boxes and landmarks, or only landmarks (ONet) when `mmod` is set.
    pub detector: Mtcnn,
    /// dlib's models when MMOD finds the faces (`--detector mmod`).
    pub mmod: Option<Arc<FaceModels>>,
    pub recognizer: FaceRecognizer,
    pub aggregator: Option<CafaceAggregator>,
}

/// The models behind a [`FaceAnalyzer`].
#[derive(Clone)]
pub enum FaceBackend {
    /// dlib's models; MTCNN finds the faces when given.
    Dlib {
        models: Arc<FaceModels>,
        mtcnn: Option<Arc<Mtcnn>>,
    },
    Seed(Arc<SeedFaceModels>),
}

/// Where dlib's MMOD detector searches each analysed video frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaceDetect {
    /// The whole frame, every analysed frame (the exact path).
    EveryFrame,
    /// Padded crops around candidate faces only: MTCNN's three stages
    /// (ONet at a lower threshold than its own) propose them on the whole
    /// frame, and the tracker adds where its live face tracks are expected.
    /// MMOD searches each crop at the scale it would search the whole frame.
    #[default]
    Cascade,
}

/// The `--detect` values.
pub const FACE_DETECT: [&str; 2] = ["cascade", "every-frame"];

impl FaceDetect {
    pub fn parse(name: &str) -> Result<FaceDetect> {
        match name {
            "every-frame" => Ok(FaceDetect::EveryFrame),
            "cascade" => Ok(FaceDetect::Cascade),
            other => Err(osprey_core::Error::invalid(format!(
                "unknown detection strategy `{other}`; available: {}",
                FACE_DETECT.join(", ")
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FaceDetect::EveryFrame => "every-frame",
            FaceDetect::Cascade => "cascade",
        }
    }
}

/// MTCNN proposals for [`FaceDetect::Cascade`]: PNet's, RNet's and ONet's
/// face probability thresholds. The first two are MTCNN's own; ONet's is
/// lower than its 0.7, which lost a 58-px face MMOD finds on the 1080p test
/// clip. ONet removes most false proposals (on Hamilton, 20-50 of RNet's a
/// frame for 1-4 faces), each of which would cost MMOD a crop; see
/// `docs/benchmarks.md` for the thresholds tried.
const PROPOSAL_THRESHOLDS: [f32; 3] = [0.6, 0.7, 0.4];
/// The smallest face proposed, as a fraction of the smallest face box MMOD
/// reports at the frame's search scale (its 80-px window).
const PROPOSAL_MIN_FACE: f64 = 0.7;

/// Faces of one model stack at one set of options.
pub struct FaceAnalyzer {
    /// Shared, so one loaded copy serves analyzers with different options.
    pub backend: FaceBackend,
    pub options: FaceOptions,
    /// How MMOD searches video frames (still images: always the whole image).
    pub detect: FaceDetect,
    /// The proposer for [`FaceDetect::Cascade`] with dlib's models (the seed
    /// stack proposes with its own MTCNN); without one, every frame is
    /// searched whole.
    pub proposer: Option<Arc<Mtcnn>>,
}

impl FaceAnalyzer {
    /// dlib's models.
    pub fn new(models: FaceModels, options: FaceOptions) -> Self {
        Self {
            backend: FaceBackend::Dlib { models: Arc::new(models), mtcnn: None },
            options,
            detect: FaceDetect::EveryFrame,
            proposer: None,
        }
    }

    /// These models with video frames searched by `detect`; `proposer` (MTCNN)
    /// proposes faces for [`FaceDetect::Cascade`] with dlib's models.
    pub fn with_detect(mut self, detect: FaceDetect, proposer: Option<Arc<Mtcnn>>) -> Self {
        self.detect = detect;
        if proposer.is_some() {
            self.proposer = proposer;
        }
        self
    }

    /// dlib's landmarks and descriptor on the faces MTCNN finds.
    pub fn dlib_on_mtcnn(models: FaceModels, mtcnn: Mtcnn, options: FaceOptions) -> Self {
        Self {
            backend: FaceBackend::Dlib { models: Arc::new(models), mtcnn: Some(Arc::new(mtcnn)) },
            options,
            detect: FaceDetect::EveryFrame,
            proposer: None,
        }
    }

    /// MTCNN and a seed recogniser.
    pub fn seed(models: SeedFaceModels, options: FaceOptions) -> Self {
        Self { backend: FaceBackend::Seed(Arc::new(models)), options, detect: FaceDetect::EveryFrame, proposer: None }
    }

    /// The same models with other options.
    pub fn with_options(&self, options: FaceOptions) -> Self {
        Self { backend: self.backend.clone(), options, detect: self.detect, proposer: self.proposer.clone() }
    }

    /// The same models keeping only the largest face (enrolment photos).
    pub fn largest_only(&self) -> FaceOptions {
        FaceOptions { selection: FaceSelection::Largest, ..self.options }
    }

    /// Observations of `image` with other options (e.g. largest face only).
    pub fn analyze_with(&self, image: &RgbImage, options: &FaceOptions) -> Result<Vec<Observation>> {
        match &self.backend {
            FaceBackend::Dlib { models, mtcnn } => dlib_observations(models, mtcnn.as_deref(), image, options, None),
            FaceBackend::Seed(models) => seed_observations(models, image, options, None),
        }
    }

    /// A video frame's observations under [`FaceAnalyzer::detect`]; `hints`
    /// are where live tracks are expected.
    pub fn analyze_frame(&self, image: &RgbImage, hints: &[BoxF]) -> Result<Vec<Observation>> {
        let options = &self.options;
        match &self.backend {
            FaceBackend::Dlib { models, mtcnn: None } => {
                let cascade = self.proposer.as_deref().filter(|_| self.detect == FaceDetect::Cascade);
                let near = cascade.map(|p| Near { proposer: p, hints });
                dlib_observations(models, None, image, options, near)
            }
            FaceBackend::Seed(models) if models.mmod.is_some() && self.detect == FaceDetect::Cascade => {
                seed_observations(models, image, options, Some(Near { proposer: &models.detector, hints }))
            }
            // MTCNN finds the faces: it is a cascade of its own.
            _ => self.analyze_with(image, options),
        }
    }
}

/// What [`FaceDetect::Cascade`] searches near: MTCNN's proposals and the
/// tracker's expected boxes.
#[derive(Clone, Copy)]
struct Near<'a> {
    proposer: &'a Mtcnn,
    hints: &'a [BoxF],
}

impl Near<'_> {
    /// MMOD's faces near the proposals and hints (see
    /// [`FaceModels::detect_near`]).
    fn detect(&self, mmod: &FaceModels, image: &RgbImage, options: &FaceOptions) -> Result<Vec<Detection>> {
        let (upsample, scale) = osprey_models::face::search_scale(image.width(), image.height(), options);
        let net_per_px = scale * f64::from(1u32 << upsample);
        // MMOD's boxes are its 80-px window at the search scale or larger.
        let min_face = (PROPOSAL_MIN_FACE * 80.0 / net_per_px).max(12.0);
        let started = std::time::Instant::now();
        let mut boxes = self
            .proposer
            .propose(image, min_face, PROPOSAL_THRESHOLDS)
            .map_err(|e| osprey_core::Error::internal(format!("MTCNN proposals failed: {e}")))?;
        let proposed = started.elapsed();
        boxes.extend(self.hints.iter().map(|b| [b.x, b.y, b.x + b.w, b.y + b.h]));
        let dets = mmod.detect_near(image, options, &boxes)?;
        tracing::debug!(
            proposals = boxes.len(),
            hints = self.hints.len(),
            faces = dets.len(),
            propose_ms = proposed.as_secs_f64() * 1e3,
            mmod_ms = (started.elapsed() - proposed).as_secs_f64() * 1e3,
            "cascade"
        );
        Ok(dets)
    }
}

fn dlib_observations(
    models: &FaceModels,
    mtcnn: Option<&Mtcnn>,
    image: &RgbImage,
    options: &FaceOptions,
    near: Option<Near<'_>>,
) -> Result<Vec<Observation>> {
    let faces = match mtcnn {
        None => match near {
            None => models.analyze(image, options)?,
            Some(near) => {
                let dets = near.detect(models, image, options)?;
                models.describe_detections(image, dets, options.selection)?
            }
        },
        Some(mtcnn) => {
            let detections = detect_bounded(mtcnn, image, options.max_detect_pixels)?
                .into_iter()
                .map(|f| Detection {
                    rect: Rect::new(
                        f.bbox[0].round() as i64,
                        f.bbox[1].round() as i64,
                        f.bbox[2].round() as i64,
                        f.bbox[3].round() as i64,
                    ),
                    confidence: f.score,
                })
                .collect();
            models.describe_detections(image, detections, options.selection)?
        }
    };
    Ok(faces
        .into_iter()
        .map(|f| {
            let bbox = BoxF {
                x: f.rect.left as f32,
                y: f.rect.top as f32,
                w: f.rect.width() as f32,
                h: f.rect.height() as f32,
            };
            Observation {
                quality: observation_quality(f.confidence, bbox.w, sharpness(&f.chip)),
                bbox,
                confidence: f.confidence,
                landmarks: f.landmarks.iter().flat_map(|p| [p[0] as f32, p[1] as f32]).collect(),
                landmark_scores: Vec::new(),
                embedding: f.embedding,
                // dlib's descriptor norm is not trained to carry quality.
                quality_norm: None,
                style: Vec::new(),
            }
        })
        .collect())
}

/// MTCNN's faces in `image`, searched at most at `max_pixels` (a larger
/// image is reduced for detection; boxes and landmarks are mapped back).
fn detect_bounded(detector: &Mtcnn, image: &RgbImage, max_pixels: u64) -> Result<Vec<MtcnnFace>> {
    let pixels = image.width() as u64 * image.height() as u64;
    let err = |e: candle_core::Error| osprey_core::Error::internal(format!("MTCNN failed: {e}"));
    if pixels <= max_pixels.max(1) {
        return detector.detect(image).map_err(err);
    }
    let s = (max_pixels as f64 / pixels as f64).sqrt();
    let (w, h) = (((image.width() as f64 * s) as u32).max(1), ((image.height() as f64 * s) as u32).max(1));
    let small = image::imageops::resize(image, w, h, image::imageops::FilterType::Triangle);
    let (sx, sy) = (image.width() as f32 / w as f32, image.height() as f32 / h as f32);
    Ok(detector
        .detect(&small)
        .map_err(err)?
        .into_iter()
        .map(|f| MtcnnFace {
            bbox: [f.bbox[0] * sx, f.bbox[1] * sy, f.bbox[2] * sx, f.bbox[3] * sy],
            score: f.score,
            landmarks: f.landmarks.map(|[x, y]| [x * sx, y * sy]),
        })
        .collect())
}

/// MMOD's faces with MTCNN's ONet landmarks inside each box.
fn mmod_with_onet(
    mmod: &FaceModels,
    onet: &Mtcnn,
    image: &RgbImage,
    options: &FaceOptions,
    near: Option<Near<'_>>,
) -> Result<Vec<MtcnnFace>> {
    let mut dets = match near {
        None => mmod.detect_bounded(image, options)?,
        Some(near) => near.detect(mmod, image, options)?,
    };
    dets.sort_by_key(|d| std::cmp::Reverse(d.rect.area()));
    let boxes: Vec<[f32; 4]> =
        dets.iter().map(|d| [d.rect.left, d.rect.top, d.rect.right, d.rect.bottom].map(|v| v as f32)).collect();
    let landmarks = onet
        .landmarks_for(image, &boxes)
        .map_err(|e| osprey_core::Error::internal(format!("MTCNN ONet failed: {e}")))?;
    Ok(dets
        .iter()
        .zip(boxes)
        .zip(landmarks)
        .filter_map(|((d, bbox), lm)| Some(MtcnnFace { bbox, score: d.confidence, landmarks: lm? }))
        .collect())
}

fn seed_observations(
    models: &SeedFaceModels,
    image: &RgbImage,
    options: &FaceOptions,
    near: Option<Near<'_>>,
) -> Result<Vec<Observation>> {
    let mut faces = match &models.mmod {
        None => detect_bounded(&models.detector, image, options.max_detect_pixels)?,
        Some(mmod) => mmod_with_onet(mmod, &models.detector, image, options, near)?,
    };
    if options.selection == FaceSelection::Largest {
        // Both detectors' faces come largest first.
        faces.truncate(1);
    }
    let mut crops = Vec::with_capacity(faces.len());
    let mut keypoints = Vec::with_capacity(faces.len());
    let mut kept = Vec::with_capacity(faces.len());
    for f in faces {
        // Landmarks that coincide (a degenerate detection) give no transform.
        let Some(to_crop) = Similarity::estimate(&f.landmarks, &ARCFACE_TEMPLATE) else { continue };
        crops.push(warp(image, &to_crop.inverse(), 112, 112));
        // KP-RPE reads the face's own landmarks in the aligned crop.
        keypoints.push(f.landmarks.map(|p| to_crop.apply(p)));
        kept.push(f);
    }
    let embedded: Vec<_> = if models.aggregator.is_some() {
        models.recognizer.embed_with_style(&crops, &keypoints)?
    } else {
        models.recognizer.embed(&crops, &keypoints)?.into_iter().map(|e| (e, Vec::new())).collect()
    };
    Ok(kept
        .into_iter()
        .zip(crops)
        .zip(embedded)
        .map(|((f, crop), (e, style))| {
            let bbox = BoxF { x: f.bbox[0], y: f.bbox[1], w: f.bbox[2] - f.bbox[0], h: f.bbox[3] - f.bbox[1] };
            let norm_is_quality = models.recognizer.spec().norm_is_quality;
            Observation {
                // AdaFace-trained features: the norm is the quality (it picks
                // the thumbnail and weighs the track's mean).
                quality: if norm_is_quality { e.norm } else { observation_quality(f.score, bbox.w, sharpness(&crop)) },
                bbox,
                confidence: f.score,
                landmarks: f.landmarks.iter().flat_map(|p| *p).collect(),
                landmark_scores: Vec::new(),
                embedding: e.embedding,
                quality_norm: norm_is_quality.then_some(e.norm),
                style,
            }
        })
        .collect())
}

impl FrameAnalyzer for FaceAnalyzer {
    fn modality(&self) -> Modality {
        Modality::Face
    }

    fn model(&self) -> &str {
        match &self.backend {
            FaceBackend::Dlib { .. } => MODEL_NAME,
            FaceBackend::Seed(m) => m.recognizer.spec().id,
        }
    }

    fn dim(&self) -> usize {
        match &self.backend {
            FaceBackend::Dlib { .. } => osprey_models::dlib::resnet::DESCRIPTOR_DIM,
            FaceBackend::Seed(m) => m.recognizer.spec().dim,
        }
    }

    fn tracker_config(&self) -> TrackerConfig {
        match &self.backend {
            // dlib's unit descriptors: the same face in consecutive frames
            // scores above 0.9 (blurred, small ones a little less), different
            // people mostly 0.6-0.87, and the model's verification point
            // (distance 0.6) is about 0.91.
            FaceBackend::Dlib { .. } => {
                TrackerConfig { appearance_gate_near: 0.85, appearance_gate_far: 0.92, ..TrackerConfig::default() }
            }
            // AdaFace-trained 512-d features spread much wider: published
            // verification thresholds sit near cosine 0.3-0.4 and the same
            // face in consecutive frames scores well above 0.6.
            FaceBackend::Seed(_) => {
                TrackerConfig { appearance_gate_near: 0.35, appearance_gate_far: 0.5, ..TrackerConfig::default() }
            }
        }
    }

    fn analyze(&self, frame: &RgbImage) -> Result<Vec<Observation>> {
        self.analyze_with(frame, &self.options)
    }

    fn analyze_near(&self, frame: &RgbImage, hints: &[BoxF]) -> Result<Vec<Observation>> {
        self.analyze_frame(frame, hints)
    }

    fn fuse_track(&self, points: &[TrackPoint]) -> Result<Option<Vec<f32>>> {
        let FaceBackend::Seed(models) = &self.backend else { return Ok(None) };
        let Some(aggregator) = &models.aggregator else { return Ok(None) };
        let frames: Vec<FrameFeature<'_>> = points
            .iter()
            .map(|p| FrameFeature { unit: &p.embedding, norm: p.quality_norm.unwrap_or(1.0), style: &p.style })
            .collect();
        let fused = aggregator
            .fuse_track(&frames, models.recognizer.device())
            .map_err(|e| osprey_core::Error::internal(format!("CAFace failed: {e}")))?;
        Ok(Some(fused))
    }
}
