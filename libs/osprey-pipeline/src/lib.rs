//! The media pipeline: a still image or a segment of video in, per-face and
//! per-body and per-body-track gait templates out.
//!
//! Every modality plugs in through [`FrameAnalyzer`]: it finds the objects of
//! its kind in one frame and embeds each of them. The rest is shared:
//! [`track`] links observations across frames (Kalman motion, IoU and
//! appearance), [`quality`] scores observations and aggregates a track's
//! embeddings into one template, and [`video`] runs decode and inference
//! side by side over one time segment. [`media`] is the input end shared by
//! the embedded jobs and the workers: files and object URLs in, template rows
//! of the table out.

pub mod body;
pub mod cancel;
pub mod face;
pub mod gait;
pub mod media;
pub mod quality;
pub mod scene;
pub mod silhouette;
pub mod track;
pub mod video;

use image::RgbImage;
use osprey_core::{Modality, Result};

pub use body::{BodyAnalyzer, BodyEmbedder, BodyOptions};
pub use face::{FaceAnalyzer, FaceDetect};
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

    /// Area of the overlap with `other` (0 when they do not overlap).
    pub fn intersection_area(&self, other: &BoxF) -> f32 {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = (self.x + self.w).min(other.x + other.w);
        let y1 = (self.y + self.h).min(other.y + other.h);
        (x1 - x0).max(0.0) * (y1 - y0).max(0.0)
    }

    /// Intersection over union.
    pub fn iou(&self, other: &BoxF) -> f32 {
        let inter = self.intersection_area(other);
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
    /// Each keypoint's score in [0, 1], in `landmarks`' order, where the
    /// model gives one (body pose); empty otherwise.
    pub landmark_scores: Vec<f32>,
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
    /// [`FrameAnalyzer::analyze`] on a video frame, given where this
    /// modality's live tracks are expected (`hints`, from the tracker): an
    /// analyzer whose detection strategy searches near known objects uses
    /// them; the default ignores them.
    fn analyze_near(&self, frame: &RgbImage, _hints: &[BoxF]) -> Result<Vec<Observation>> {
        self.analyze(frame)
    }
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
    /// Track number within the segment (video), or face number (image),
    /// counted per modality.
    pub track_id: i64,
    /// What it is of, and the model that embedded it.
    pub modality: Modality,
    pub model: String,
    /// For a face: the `track_id` and model of the body track (same
    /// segment) that contains it, if people were tracked too (see
    /// [`link_people`]).
    pub person_track: Option<(i64, String)>,
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
    /// A body track's silhouettes (static-camera video; see [`silhouette`]),
    /// `None` for faces, stills and tracks without any.
    pub silhouettes: Option<silhouette::SilhouetteStrip>,
    /// A body track's person crops as a frame-reading gait model (BigGait)
    /// reads them, when one is loaded; kept in memory only (not stored).
    pub gait_frames: Option<gait::GaitFrames>,
    /// Why this track has no template of its modality (a gait template of a
    /// track too short for a gait cycle, say); `embedding` is then empty and
    /// the row is stored with this `error` and no embedding.
    pub error: Option<String>,
}

impl MediaTemplate {
    /// The template of one observation of `analyzer`'s in a still image.
    pub fn from_still(analyzer: &dyn FrameAnalyzer, image: &RgbImage, o: Observation) -> Result<MediaTemplate> {
        let point = track::TrackPoint::of(0, 0, &o);
        Ok(MediaTemplate {
            track_id: 0,
            modality: analyzer.modality(),
            model: analyzer.model().to_string(),
            person_track: None,
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
            silhouettes: None,
            gait_frames: None,
            error: None,
        })
    }
}

/// Templates for every object in a still image, one per observation, in the
/// analyzer's order (`track_id` numbers them).
pub fn image_templates(analyzer: &dyn FrameAnalyzer, image: &RgbImage) -> Result<Vec<MediaTemplate>> {
    still_templates(analyzer, image, analyzer.analyze(image)?)
}

/// Templates of `analyzer`'s observations already made in a still image.
pub fn still_templates(
    analyzer: &dyn FrameAnalyzer,
    image: &RgbImage,
    observations: Vec<Observation>,
) -> Result<Vec<MediaTemplate>> {
    observations
        .into_iter()
        .enumerate()
        .map(|(i, o)| Ok(MediaTemplate { track_id: i as i64, ..MediaTemplate::from_still(analyzer, image, o)? }))
        .collect()
}

/// Share of a face box that must lie inside a body box for the body to
/// contain it.
const FACE_INSIDE_BODY: f32 = 0.8;

/// Largest gap, in face heights, between a face's bottom and the top of a
/// body box it sits on. The person detector's box of a close, cut-off
/// person (a portrait, a head-and-shoulders shot) often starts at the
/// shoulders: in face_recognition's `obama.jpg` the body box begins 0.6
/// face heights under the chin.
const HEAD_ABOVE_BODY_GAP: f32 = 0.75;

/// How a face box relates to a body box in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaceOnBody {
    /// Neither of the below.
    Apart,
    /// The face is the head at the box's top edge: it starts above the
    /// box, its centre horizontally within the box and not below the box's
    /// upper half, no wider than the box, its bottom at most
    /// [`HEAD_ABOVE_BODY_GAP`] face heights above the box (straddling the
    /// edge or just over it).
    OnTop,
    /// At least [`FACE_INSIDE_BODY`] of the face inside the box, the face's
    /// centre in the box's upper half.
    Inside,
}

fn face_on_body(f: BoxF, b: BoxF) -> FaceOnBody {
    let (cx, cy) = f.center();
    let inter = f.intersection_area(&b);
    let upper = cy <= b.y + b.h / 2.0;
    if inter > 0.0 && inter >= FACE_INSIDE_BODY * f.area() && upper {
        return FaceOnBody::Inside;
    }
    let within = cx >= b.x && cx <= b.x + b.w && f.w <= b.w;
    if within && f.y < b.y && upper && f.y + f.h >= b.y - HEAD_ABOVE_BODY_GAP * f.h {
        return FaceOnBody::OnTop;
    }
    FaceOnBody::Apart
}

/// Links each face template to the body template it belongs to: the body
/// that contains the face (at least 80 % of its box, in the body's upper
/// half) in the most frames both were seen in; failing that, the body whose
/// top edge the face sits on in the most frames (the detector's box of a
/// close, cut-off person often starts at the neck or shoulders), nearer
/// the middle of the body's top edge breaking ties (overlapping boxes of
/// one person); remaining ties go to the smaller body. Sets the faces'
/// [`MediaTemplate::person_track`]; faces without such a body keep `None`
/// (they are their own person track).
pub fn link_people(templates: &mut [MediaTemplate]) {
    let bodies: Vec<(i64, &str, std::collections::HashMap<i64, BoxF>)> = templates
        .iter()
        .filter(|t| t.modality == Modality::Body)
        .map(|t| (t.track_id, t.model.as_str(), t.points.iter().map(|p| (p.frame, p.bbox)).collect()))
        .collect();
    let mut links = Vec::new();
    if bodies.is_empty() {
        return;
    }
    for (fi, face) in templates.iter().enumerate().filter(|(_, t)| t.modality == Modality::Face) {
        // (frames inside, frames on top, −off-centre, −area): the greatest wins.
        let mut best: Option<((usize, usize, f32, f32), i64, &str)> = None;
        for (id, model, boxes) in &bodies {
            let (mut inside, mut on_top, mut off_centre, mut area) = (0, 0, 0.0, 0.0);
            for p in &face.points {
                let Some(&b) = boxes.get(&p.frame) else { continue };
                match face_on_body(p.bbox, b) {
                    FaceOnBody::Inside => inside += 1,
                    FaceOnBody::OnTop => {
                        on_top += 1;
                        off_centre += (p.bbox.center().0 - b.center().0).abs() / b.w;
                    }
                    FaceOnBody::Apart => continue,
                }
                area = b.area();
            }
            if inside + on_top == 0 {
                continue;
            }
            let rank = (inside, on_top, -off_centre, -area);
            if best.as_ref().is_none_or(|(r, _, _)| rank.partial_cmp(r) == Some(std::cmp::Ordering::Greater)) {
                best = Some((rank, *id, model));
            }
        }
        links.push((fi, best.map(|(_, id, model)| (id, model.to_string()))));
    }
    for (fi, link) in links {
        templates[fi].person_track = link;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(modality: Modality, track_id: i64, boxes: &[(i64, BoxF)]) -> MediaTemplate {
        let points = boxes
            .iter()
            .map(|&(frame, bbox)| track::TrackPoint {
                frame,
                t_ms: frame * 100,
                bbox,
                landmarks: Vec::new(),
                landmark_scores: Vec::new(),
                quality: 1.0,
                embedding: vec![1.0],
                quality_norm: None,
                style: Vec::new(),
            })
            .collect();
        MediaTemplate {
            track_id,
            modality,
            model: "m".into(),
            person_track: None,
            embedding: vec![1.0],
            quality: 1.0,
            bbox: boxes[0].1,
            landmarks: Vec::new(),
            frame_start: boxes[0].0,
            frame_end: boxes[boxes.len() - 1].0,
            t_start_ms: 0,
            t_end_ms: 0,
            num_frames: boxes.len(),
            best_frame: boxes[0].0,
            thumbnail_jpeg: Vec::new(),
            points,
            silhouettes: None,
            gait_frames: None,
            error: None,
        }
    }

    #[test]
    fn faces_link_to_the_body_around_them() {
        let b = |x: f32, y: f32, w: f32, h: f32| BoxF { x, y, w, h };
        let mut ts = vec![
            template(Modality::Body, 0, &[(0, b(0.0, 0.0, 50.0, 150.0)), (1, b(2.0, 0.0, 50.0, 150.0))]),
            template(Modality::Body, 1, &[(0, b(200.0, 0.0, 50.0, 150.0)), (1, b(200.0, 0.0, 50.0, 150.0))]),
            // In body 1's head in both frames.
            template(Modality::Face, 0, &[(0, b(210.0, 5.0, 20.0, 20.0)), (1, b(212.0, 5.0, 20.0, 20.0))]),
            // At a body's feet: not its face.
            template(Modality::Face, 1, &[(0, b(10.0, 120.0, 20.0, 20.0))]),
            // Nobody around.
            template(Modality::Face, 2, &[(0, b(400.0, 5.0, 20.0, 20.0))]),
        ];
        link_people(&mut ts);
        assert_eq!(ts[2].person_track, Some((1, "m".to_string())));
        assert_eq!(ts[3].person_track, None);
        assert_eq!(ts[4].person_track, None);
    }

    #[test]
    fn a_face_on_top_of_a_cut_off_body_is_its_head() {
        // The boxes of face_recognition's obama.jpg (720 × 1137): the
        // person detector's box starts at the shoulders, 148 px under the
        // chin.
        let b = |x: f32, y: f32, w: f32, h: f32| BoxF { x, y, w, h };
        let obama_body = b(9.5, 520.4, 601.3, 616.6);
        let mut ts = vec![
            template(Modality::Body, 0, &[(0, obama_body)]),
            template(Modality::Face, 0, &[(0, b(349.0, 122.0, 250.0, 250.0))]),
            // Too far above the shoulders (a gap of 4 face heights).
            template(Modality::Face, 1, &[(0, b(349.0, 20.0, 100.0, 100.0))]),
            // Beside the body, not above it.
            template(Modality::Face, 2, &[(0, b(650.0, 300.0, 60.0, 60.0))]),
        ];
        link_people(&mut ts);
        assert_eq!(ts[1].person_track, Some((0, "m".to_string())));
        assert_eq!(ts[2].person_track, None);
        assert_eq!(ts[3].person_track, None);

        // lin-manuel-miranda.png: the face straddles the top edges of the
        // detector's two overlapping boxes of him (72 % inside the one it
        // is centred on); the one it is centred on wins, though larger.
        let mut ts = vec![
            template(Modality::Body, 0, &[(0, b(0.0, 247.0, 388.8, 364.0))]),
            template(Modality::Body, 1, &[(0, b(222.9, 242.2, 405.7, 369.8))]),
            template(Modality::Face, 0, &[(0, b(228.0, 158.0, 295.0, 295.0))]),
        ];
        link_people(&mut ts);
        assert_eq!(ts[2].person_track, Some((1, "m".to_string())));

        // A face inside one body outranks sitting on another: a person
        // standing behind another, whose head is above the front one's box.
        let mut ts = vec![
            template(Modality::Body, 0, &[(0, b(100.0, 200.0, 100.0, 300.0))]),
            template(Modality::Body, 1, &[(0, b(90.0, 60.0, 120.0, 400.0))]),
            template(Modality::Face, 0, &[(0, b(130.0, 150.0, 40.0, 40.0))]),
        ];
        link_people(&mut ts);
        assert_eq!(ts[2].person_track, Some((1, "m".to_string())));
    }

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
