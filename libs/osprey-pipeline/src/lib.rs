//! The media pipeline: a still image or a segment of video in, per-face (and
//! later per-body, per-gait) templates out.
//!
//! Every modality plugs in through [`FrameAnalyzer`]: it finds the objects of
//! its kind in one frame and embeds each of them. The rest is shared:
//! [`track`] links observations across frames (Kalman motion, IoU and
//! appearance), [`quality`] scores observations and aggregates a track's
//! embeddings into one template, and [`video`] runs decode and inference
//! side by side over one time segment. [`media`] is the input end shared by
//! the embedded jobs and the workers: files and object URLs in, template rows
//! of the table out.

pub mod face;
pub mod media;
pub mod quality;
pub mod scene;
pub mod track;
pub mod video;

use image::RgbImage;
use osprey_core::{Modality, Result};

pub use face::FaceAnalyzer;
pub use media::{MediaAnalysis, MediaResult, MediaSettings, VideoPlan};
pub use track::{Tracker, TrackerConfig};
pub use video::{VideoOptions, VideoOutput, process_video};

/// An axis-aligned box in pixels (top-left corner, size).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BoxF {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl BoxF {
    pub fn center(&self) -> (f32, f32) {
        (self.x + self.w / 2.0, self.y + self.h / 2.0)
    }

    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    /// Intersection over union.
    pub fn iou(&self, other: &BoxF) -> f32 {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = (self.x + self.w).min(other.x + other.w);
        let y1 = (self.y + self.h).min(other.y + other.h);
        let inter = (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
        let union = self.area() + other.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }
}

/// One object (a face, a body) found and embedded in one frame.
#[derive(Debug, Clone)]
pub struct Observation {
    pub bbox: BoxF,
    /// Detector confidence (model-specific scale; higher is more certain).
    pub confidence: f32,
    /// Keypoints as x0, y0, x1, y1, … (empty when the model has none).
    pub landmarks: Vec<f32>,
    /// Unit-norm embedding.
    pub embedding: Vec<f32>,
    /// The embedding's norm before normalisation, for models whose norm
    /// measures quality (AdaFace-style); `None` when it carries no meaning.
    pub quality_norm: Option<f32>,
    /// Image quality of the observation: in [0, 1] from detector score, size
    /// and sharpness (see [`quality`]), or the feature norm for models whose
    /// norm measures quality (then also in `quality_norm`).
    pub quality: f32,
    /// What a set-level aggregator reads besides the embedding (CAFace: the
    /// backbone's style statistics); empty unless the analyzer fuses tracks.
    pub style: Vec<f32>,
}

/// A modality's detector and embedder for single frames.
pub trait FrameAnalyzer: Send + Sync {
    fn modality(&self) -> Modality;
    /// The model id written to templates.
    fn model(&self) -> &str;
    /// Embedding width.
    fn dim(&self) -> usize;
    /// Tracker settings suited to this model's embeddings.
    fn tracker_config(&self) -> TrackerConfig;
    /// Every object of this modality in `frame`, embedded.
    fn analyze(&self, frame: &RgbImage) -> Result<Vec<Observation>>;
    /// A track's template from all its observations, for analyzers with a
    /// set-level aggregator (CAFace); `None`: the quality-weighted mean of
    /// the unit embeddings ([`quality::Aggregate`]) stands.
    fn fuse_track(&self, _points: &[track::TrackPoint]) -> Result<Option<Vec<f32>>> {
        Ok(None)
    }
}

/// A template made from one image observation or one video track.
#[derive(Debug, Clone)]
pub struct MediaTemplate {
    /// Track number within the segment (video), or face number (image).
    pub track_id: i64,
    pub embedding: Vec<f32>,
    pub quality: f32,
    /// Box and landmarks in the representative (best) frame.
    pub bbox: BoxF,
    pub landmarks: Vec<f32>,
    pub frame_start: i64,
    pub frame_end: i64,
    pub t_start_ms: i64,
    pub t_end_ms: i64,
    pub num_frames: usize,
    /// Frame number of the representative frame.
    pub best_frame: i64,
    /// The representative crop as JPEG.
    pub thumbnail_jpeg: Vec<u8>,
    /// Every observation, in time order.
    pub points: Vec<track::TrackPoint>,
}

impl MediaTemplate {
    /// The template of one observation in a still image.
    pub fn from_still(image: &RgbImage, o: Observation) -> Result<MediaTemplate> {
        let point = track::TrackPoint::of(0, 0, &o);
        Ok(MediaTemplate {
            track_id: 0,
            thumbnail_jpeg: quality::thumbnail_jpeg(image, &o.bbox)?,
            embedding: o.embedding,
            quality: o.quality,
            bbox: o.bbox,
            landmarks: o.landmarks,
            frame_start: 0,
            frame_end: 0,
            t_start_ms: 0,
            t_end_ms: 0,
            num_frames: 1,
            best_frame: 0,
            points: vec![point],
        })
    }
}

/// Templates for every object in a still image, one per observation, in the
/// analyzer's order (`track_id` numbers them).
pub fn image_templates(analyzer: &dyn FrameAnalyzer, image: &RgbImage) -> Result<Vec<MediaTemplate>> {
    still_templates(image, analyzer.analyze(image)?)
}

/// Templates of observations already made in a still image.
pub fn still_templates(image: &RgbImage, observations: Vec<Observation>) -> Result<Vec<MediaTemplate>> {
    observations
        .into_iter()
        .enumerate()
        .map(|(i, o)| Ok(MediaTemplate { track_id: i as i64, ..MediaTemplate::from_still(image, o)? }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_boxes() {
        let a = BoxF { x: 0.0, y: 0.0, w: 10.0, h: 10.0 };
        assert_eq!(a.iou(&a), 1.0);
        let b = BoxF { x: 5.0, y: 0.0, w: 10.0, h: 10.0 };
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        let c = BoxF { x: 20.0, y: 20.0, w: 5.0, h: 5.0 };
        assert_eq!(a.iou(&c), 0.0);
    }
}
