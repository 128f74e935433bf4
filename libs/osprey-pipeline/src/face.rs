//! Faces: dlib's detector, landmarks and descriptor as a [`FrameAnalyzer`].

use std::sync::Arc;

use image::RgbImage;
use osprey_core::{Modality, Result};
use osprey_models::{FaceModels, FaceOptions, FaceSelection, MODEL_NAME};

use crate::quality::{observation_quality, sharpness};
use crate::{BoxF, FrameAnalyzer, Observation, TrackerConfig};

/// dlib-resnet-v1 faces.
pub struct FaceAnalyzer {
    /// Shared, so one loaded copy serves analyzers with different options.
    pub models: Arc<FaceModels>,
    pub options: FaceOptions,
}

impl FaceAnalyzer {
    pub fn new(models: FaceModels, options: FaceOptions) -> Self {
        Self { models: Arc::new(models), options }
    }

    /// The same models with other options.
    pub fn with_options(&self, options: FaceOptions) -> Self {
        Self { models: Arc::clone(&self.models), options }
    }

    /// The same models keeping only the largest face (enrolment photos).
    pub fn largest_only(&self) -> FaceOptions {
        FaceOptions { selection: FaceSelection::Largest, ..self.options }
    }

    /// Observations of `image` with other options (e.g. largest face only).
    pub fn analyze_with(&self, image: &RgbImage, options: &FaceOptions) -> Result<Vec<Observation>> {
        let faces = self.models.analyze(image, options)?;
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
                    embedding: f.embedding,
                    // dlib's descriptor norm is not trained to carry quality.
                    quality_norm: None,
                }
            })
            .collect())
    }
}

impl FrameAnalyzer for FaceAnalyzer {
    fn modality(&self) -> Modality {
        Modality::Face
    }

    fn model(&self) -> &str {
        MODEL_NAME
    }

    fn dim(&self) -> usize {
        osprey_models::dlib::resnet::DESCRIPTOR_DIM
    }

    fn tracker_config(&self) -> TrackerConfig {
        // dlib's unit descriptors: the same face in consecutive frames scores
        // above 0.9 (blurred, small ones a little less), different people
        // mostly 0.6-0.87, and the model's verification point (distance
        // 0.6) is about 0.91.
        TrackerConfig { appearance_gate_near: 0.85, appearance_gate_far: 0.92, ..TrackerConfig::default() }
    }

    fn analyze(&self, frame: &RgbImage) -> Result<Vec<Observation>> {
        self.analyze_with(frame, &self.options)
    }
}
