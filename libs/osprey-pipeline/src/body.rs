//! Whole people as a [`FrameAnalyzer`]: the CenterNet person detector
//! ([`osprey_models::centernet`]) finds them, and a body model embeds each
//! person's crop: the out-of-the-box appearance model, or a body recogniser
//! loaded from the user's checkpoint (OSNet, CLIP3DReID).
//!
//! When the pose model is loaded ([`osprey_models::movenet`], MoveNet
//! single-pose on each person's crop), every body observation carries the 17
//! COCO keypoints: `landmarks` holds their x, y in frame pixels and
//! `landmark_scores` their scores, which also enter [`body_quality`].
//!
//! Tracking bodies is motion first, appearance second (see
//! [`BodyAnalyzer::tracker_config`]): people in a crowd often wear similar
//! clothes, while their boxes move smoothly.

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use image::RgbImage;
use osprey_core::{ErrorKind, Modality, Result};
use osprey_models::appearance::{AppearanceEmbedder, EMBEDDING_DIM, MODEL_ID as APPEARANCE_MODEL};
use osprey_models::centernet::{PersonBox, PersonDetector, PersonOptions};
use osprey_models::movenet::{Keypoint, PoseEstimator, visible_share};
use osprey_models::person::PersonRecognizer;

use crate::{BoxF, FrameAnalyzer, Observation, TrackerConfig};

/// Something that turns person crops into unit embeddings.
pub trait BodyEmbedder: Send + Sync {
    /// The model id written to templates.
    fn model(&self) -> &str;
    fn dim(&self) -> usize;
    /// Unit embeddings of RGB person crops (any size).
    fn embed(&self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>>;
}

impl BodyEmbedder for PersonRecognizer {
    fn model(&self) -> &str {
        self.spec().id
    }

    fn dim(&self) -> usize {
        PersonRecognizer::dim(self)
    }

    fn embed(&self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        self.embed_bodies(crops)
    }
}

impl BodyEmbedder for AppearanceEmbedder {
    fn model(&self) -> &str {
        APPEARANCE_MODEL
    }

    fn dim(&self) -> usize {
        EMBEDDING_DIM
    }

    fn embed(&self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        AppearanceEmbedder::embed(self, crops)
    }
}

/// How people are found and cut out.
#[derive(Debug, Clone)]
pub struct BodyOptions {
    pub detector: PersonOptions,
    /// People shorter than this (pixels) are ignored: too small to embed.
    pub min_height: f32,
}

impl Default for BodyOptions {
    fn default() -> Self {
        BodyOptions { detector: PersonOptions::default(), min_height: 32.0 }
    }
}

/// A person is embedded at full weight from this height (pixels) up.
const FULL_QUALITY_HEIGHT: f32 = 128.0;

/// A keypoint counts as visible from this pose score up.
pub const VISIBLE_KEYPOINT_SCORE: f32 = 0.3;

/// A body observation's quality in [0, 1]: the detector's score times a
/// size term (height over 128 px, capped at 1), and, when the pose model
/// ran (`keypoints` not empty), times the share of the 17 keypoints that are
/// visible (score ≥ [`VISIBLE_KEYPOINT_SCORE`]): a person cut off by the frame
/// edge or hidden behind others shows fewer of them, and makes a poorer
/// thumbnail and template.
pub fn body_quality(b: &PersonBox, keypoints: &[Keypoint]) -> f32 {
    let size = (b.height() / FULL_QUALITY_HEIGHT).clamp(0.0, 1.0);
    let visible = if keypoints.is_empty() { 1.0 } else { visible_share(keypoints, VISIBLE_KEYPOINT_SCORE) };
    (b.score.clamp(0.0, 1.0) * size * visible).clamp(0.0, 1.0)
}

/// The pose model from the model directory, or `None` with one warning when
/// its files are not there (bodies are then found and embedded without
/// keypoints).
pub fn load_pose(models: &Path, device: &Device) -> Result<Option<Arc<PoseEstimator>>> {
    match PoseEstimator::load(models, device) {
        Ok(p) => Ok(Some(Arc::new(p))),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            tracing::warn!("body keypoints are off: {e}");
            eprintln!("warning: body keypoints are off: {e}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// People in frames, detected and embedded.
pub struct BodyAnalyzer {
    pub detector: Arc<PersonDetector>,
    pub embedder: Arc<dyn BodyEmbedder>,
    /// The 17 COCO keypoints per person, when loaded (see [`load_pose`]).
    pub pose: Option<Arc<PoseEstimator>>,
    pub options: BodyOptions,
}

impl BodyAnalyzer {
    /// The person boxes of `frame` tall enough to embed, best first.
    pub fn people(&self, frame: &RgbImage) -> Result<Vec<PersonBox>> {
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        let found = self.detector.detect(frame.as_raw(), w, h, &self.options.detector)?;
        Ok(found.into_iter().filter(|b| b.height() >= self.options.min_height).collect())
    }
}

/// Least height over width of an image taken for a person crop (a
/// re-identification crop is about 2; a walking person cut off at the knees
/// by the frame, about 1.2).
const CROP_ASPECT: f32 = 1.15;

impl BodyAnalyzer {
    /// A still image that is itself a person crop (at least 1.15× taller
    /// than wide): the whole image as the person, with confidence 1. `None`
    /// for other images. (For crops in which the detector finds no one who
    /// fills most of the frame.)
    pub fn whole_crop(&self, image: &RgbImage) -> Result<Option<Observation>> {
        let (w, h) = (image.width() as f32, image.height() as f32);
        if w < 1.0 || h < CROP_ASPECT * w || h < self.options.min_height {
            return Ok(None);
        }
        let person = PersonBox { x1: 0.0, y1: 0.0, x2: w, y2: h, score: 1.0 };
        let embedding = self.embedder.embed(std::slice::from_ref(image))?.remove(0);
        let keypoints: Vec<Keypoint> = match &self.pose {
            // (The crop needs 2×2 pixels to interpolate in.)
            Some(pose) if image.width() >= 2 => pose
                .estimate(image.as_raw(), image.width() as usize, image.height() as usize, &[person])?
                .remove(0)
                .to_vec(),
            _ => Vec::new(),
        };
        Ok(Some(Observation {
            bbox: BoxF { x: 0.0, y: 0.0, w, h },
            confidence: 1.0,
            landmarks: keypoints.iter().flat_map(|k| [k.x, k.y]).collect(),
            landmark_scores: keypoints.iter().map(|k| k.score).collect(),
            embedding,
            quality_norm: None,
            quality: body_quality(&person, &keypoints),
            style: Vec::new(),
        }))
    }
}

/// The pixels of `b` (rounded outwards, inside the frame).
pub fn crop(frame: &RgbImage, b: &BoxF) -> RgbImage {
    crate::quality::crop_edges(frame, b.x, b.y, b.x + b.w, b.y + b.h)
}

impl FrameAnalyzer for BodyAnalyzer {
    fn modality(&self) -> Modality {
        Modality::Body
    }

    fn model(&self) -> &str {
        self.embedder.model()
    }

    fn dim(&self) -> usize {
        self.embedder.dim()
    }

    fn tracker_config(&self) -> TrackerConfig {
        // Motion first: a detection near the predicted box continues the
        // track unless it looks clearly like someone else; far ones need a
        // close appearance match. Bodies are large and move smoothly, so
        // the box may grow or shrink less between samples than a face's.
        // (The appearance model's cosines run high for everyone: about 0.90
        // for the same person a second apart and 0.87 between different
        // people in one scene.)
        TrackerConfig {
            max_age_ms: 2000,
            min_hits: 3,
            iou_gate: 0.3,
            near_distance: 0.5,
            max_distance: 3.0,
            max_scale_change: 1.5,
            appearance_gate_near: 0.5,
            appearance_gate_far: 0.93,
        }
    }

    fn analyze(&self, frame: &RgbImage) -> Result<Vec<Observation>> {
        let people = self.people(frame)?;
        if people.is_empty() {
            return Ok(Vec::new());
        }
        let boxes: Vec<BoxF> = people.iter().map(|p| BoxF { x: p.x1, y: p.y1, w: p.width(), h: p.height() }).collect();
        let crops: Vec<RgbImage> = boxes.iter().map(|b| crop(frame, b)).collect();
        let embeddings = self.embedder.embed(&crops)?;
        let poses = match &self.pose {
            Some(pose) => pose.estimate(frame.as_raw(), frame.width() as usize, frame.height() as usize, &people)?,
            None => Vec::new(),
        };
        Ok(people
            .iter()
            .enumerate()
            .zip(boxes)
            .zip(embeddings)
            .map(|(((i, p), bbox), embedding)| {
                let keypoints: &[Keypoint] = poses.get(i).map(|k| &k[..]).unwrap_or(&[]);
                Observation {
                    bbox,
                    confidence: p.score,
                    landmarks: keypoints.iter().flat_map(|k| [k.x, k.y]).collect(),
                    landmark_scores: keypoints.iter().map(|k| k.score).collect(),
                    embedding,
                    quality_norm: None,
                    quality: body_quality(p, keypoints),
                    style: Vec::new(),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_grows_with_score_and_height() {
        let b = |score: f32, h: f32| PersonBox { x1: 0.0, y1: 0.0, x2: h / 2.0, y2: h, score };
        assert_eq!(body_quality(&b(0.8, 256.0), &[]), 0.8);
        assert!((body_quality(&b(0.8, 64.0), &[]) - 0.4).abs() < 1e-6);
        assert!(body_quality(&b(0.5, 64.0), &[]) < body_quality(&b(0.8, 64.0), &[]));
    }

    #[test]
    fn quality_counts_visible_keypoints() {
        let b = PersonBox { x1: 0.0, y1: 0.0, x2: 100.0, y2: 256.0, score: 0.8 };
        let mut kp = [Keypoint { x: 0.0, y: 0.0, score: 0.9 }; 17];
        assert!((body_quality(&b, &kp) - 0.8).abs() < 1e-6);
        // The legs hidden: 11 of 17 visible.
        for k in kp.iter_mut().skip(11) {
            k.score = 0.1;
        }
        assert!((body_quality(&b, &kp) - 0.8 * 11.0 / 17.0).abs() < 1e-6);
    }

    #[test]
    fn crops_stay_inside_the_frame() {
        let frame = RgbImage::new(100, 80);
        let c = crop(&frame, &BoxF { x: -5.0, y: 70.0, w: 20.0, h: 30.0 });
        assert_eq!((c.width(), c.height()), (15, 10));
    }
}
