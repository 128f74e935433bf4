//! The face pipeline on still images: detect (MMOD CNN), place 5 landmarks,
//! align a 150×150 chip and describe it (ResNet) — dlib's
//! `face_recognition` pipeline, in Rust.

use crate::dlib::chip::{extract_chip, face_chip_details};
use crate::dlib::geom::Rect;
use crate::dlib::mmod::{Detection, FaceDetector};
use crate::dlib::resnet::{CHIP_SIZE, DESCRIPTOR_DIM, FaceDescriptor};
use crate::dlib::shape::ShapePredictor;
use candle_core::Device;
use image::RgbImage;
use osprey_core::{Error, ErrorKind, Result, l2_normalize};
use std::path::{Path, PathBuf};

/// The model name written to templates (`model` column).
pub const MODEL_NAME: &str = "dlib-resnet-v1";
/// The detector weights file.
pub const DETECTOR_FILE: &str = "mmod_human_face_detector.dat";
/// The 5-point landmark weights file.
pub const LANDMARKS_FILE: &str = "shape_predictor_5_face_landmarks.dat";
/// The descriptor weights file.
pub const DESCRIPTOR_FILE: &str = "dlib_face_recognition_resnet_model_v1.dat";
/// Padding around the landmarks' template in the chip (dlib's default 0.25).
pub const CHIP_PADDING: f64 = 0.25;

/// Where the model files are: `explicit`, else `$OSPREY_MODELS`, else
/// `./models` (what `infra/scripts/fetch-models.sh` fills).
pub fn model_dir(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("OSPREY_MODELS").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("models"))
}

/// Which faces of an image to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaceSelection {
    /// Every face found.
    #[default]
    All,
    /// Only the face with the largest box (enrolment photos).
    Largest,
}

/// Options for [`FaceModels::analyze`].
#[derive(Debug, Clone, Copy)]
pub struct FaceOptions {
    /// Image doublings before detection: 0 finds faces of ~80 px and up,
    /// 1 (the default, as dlib's and face_recognition's) ~40 px, 2 ~20 px.
    pub upsample: u32,
    pub selection: FaceSelection,
    /// Most pixels the detector may search (after upsampling). A larger image
    /// is searched at the largest size within the budget (upsampled by less,
    /// or reduced); landmarks and descriptors always use the full image.
    /// This bounds time and memory on big photos (about 1 GB at 16 MP).
    pub max_detect_pixels: u64,
}

/// Default bound on the pixels the detector searches.
pub const MAX_DETECT_PIXELS: u64 = 16_000_000;

impl Default for FaceOptions {
    fn default() -> Self {
        Self { upsample: 1, selection: FaceSelection::All, max_detect_pixels: MAX_DETECT_PIXELS }
    }
}

/// One face found in an image.
#[derive(Debug, Clone)]
pub struct Face {
    /// Inclusive pixel box.
    pub rect: Rect,
    /// Detector score (> 0; higher is more certain).
    pub confidence: f32,
    /// Eye corners and nose bottom, dlib's 5-point order.
    pub landmarks: [[i64; 2]; 5],
    /// dlib's raw 128-d descriptor (compare with Euclidean distance, 0.6).
    pub descriptor: [f32; DESCRIPTOR_DIM],
    /// The unit-normalised descriptor used in templates and galleries.
    pub embedding: Vec<f32>,
    /// The aligned 150×150 chip the descriptor was computed from.
    pub chip: RgbImage,
}

/// The three dlib face models.
pub struct FaceModels {
    pub detector: FaceDetector,
    pub landmarks: ShapePredictor,
    pub descriptor: FaceDescriptor,
}

fn read_model(dir: &Path, file: &str) -> Result<Vec<u8>> {
    let path = dir.join(file);
    std::fs::read(&path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::NotFound } else { ErrorKind::Storage };
        Error::new(
            kind,
            format!(
                "cannot read model file {}: {e}; run `infra/scripts/fetch-models.sh` or point --models / OSPREY_MODELS at the folder holding it",
                path.display()
            ),
        )
    })
}

impl FaceModels {
    /// Loads the three models from `dir`.
    pub fn load(dir: &Path, device: &Device) -> Result<FaceModels> {
        let name = |f: &str| dir.join(f).display().to_string();
        let detector = FaceDetector::parse(&read_model(dir, DETECTOR_FILE)?, &name(DETECTOR_FILE), device)?;
        let landmarks = ShapePredictor::parse(&read_model(dir, LANDMARKS_FILE)?, &name(LANDMARKS_FILE))?;
        if landmarks.num_landmarks() != 5 {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("{}: has {} landmarks, expected 5", name(LANDMARKS_FILE), landmarks.num_landmarks()),
            ));
        }
        let descriptor = FaceDescriptor::parse(&read_model(dir, DESCRIPTOR_FILE)?, &name(DESCRIPTOR_FILE), device)?;
        Ok(FaceModels { detector, landmarks, descriptor })
    }

    /// Faces (boxes and scores) in `img`.
    pub fn detect(&self, img: &RgbImage, upsample: u32) -> Result<Vec<Detection>> {
        self.detector.detect(img, upsample)
    }

    /// The 5 landmarks of the face in `rect`.
    pub fn landmarks(&self, img: &RgbImage, rect: Rect) -> [[i64; 2]; 5] {
        let pts = self.landmarks.predict(img, rect);
        [pts[0], pts[1], pts[2], pts[3], pts[4]]
    }

    /// The aligned chip for a face with these landmarks.
    pub fn chip(&self, img: &RgbImage, landmarks: &[[i64; 2]; 5]) -> RgbImage {
        extract_chip(img, &face_chip_details(landmarks, CHIP_SIZE, CHIP_PADDING))
    }

    /// Raw descriptors of aligned chips (batched).
    pub fn describe(&self, chips: &[RgbImage]) -> Result<Vec<[f32; DESCRIPTOR_DIM]>> {
        self.descriptor.describe(chips)
    }

    /// Faces in `img` within the pixel budget of `options` (see
    /// [`FaceOptions::max_detect_pixels`]); boxes are in `img`'s coordinates.
    ///
    /// Within the budget the image is upsampled `options.upsample` times as
    /// dlib does; beyond it, the image is searched at the largest size the
    /// budget allows (a fractional upsampling, or a reduction).
    pub fn detect_bounded(&self, img: &RgbImage, options: &FaceOptions) -> Result<Vec<Detection>> {
        let pixels = img.width() as u64 * img.height() as u64;
        let budget = options.max_detect_pixels.max(1);
        let mut upsample = options.upsample;
        if pixels << (2 * upsample) <= budget {
            return self.detect(img, upsample);
        }
        while upsample > 0 && pixels << (2 * upsample) > budget {
            upsample -= 1;
        }
        let scale = (budget as f64 / (pixels << (2 * upsample)) as f64).sqrt();
        if (0.97..=1.03).contains(&scale) {
            return self.detect(img, upsample);
        }
        let (w, h) = ((img.width() as f64 * scale) as usize, (img.height() as f64 * scale) as usize);
        let resized = crate::dlib::imgproc::resize_rgb(img, w.max(1), h.max(1));
        let (sx, sy) = (img.width() as f64 / w.max(1) as f64, img.height() as f64 / h.max(1) as f64);
        Ok(self
            .detect(&resized, upsample)?
            .into_iter()
            .map(|d| {
                let r = d.rect;
                let rect = Rect::new(
                    (r.left as f64 * sx).round() as i64,
                    (r.top as f64 * sy).round() as i64,
                    (r.right as f64 * sx).round() as i64,
                    (r.bottom as f64 * sy).round() as i64,
                );
                Detection { rect, confidence: d.confidence }
            })
            .collect())
    }

    /// Detect, align and describe every selected face of `img`.
    pub fn analyze(&self, img: &RgbImage, options: &FaceOptions) -> Result<Vec<Face>> {
        let dets = self.detect_bounded(img, options)?;
        self.describe_detections(img, dets, options.selection)
    }

    /// Align and describe faces found by any detector (dlib's 5-point
    /// shape predictor runs inside each box).
    pub fn describe_detections(
        &self,
        img: &RgbImage,
        mut dets: Vec<Detection>,
        selection: FaceSelection,
    ) -> Result<Vec<Face>> {
        if selection == FaceSelection::Largest {
            dets.sort_by_key(|d| std::cmp::Reverse(d.rect.area()));
            dets.truncate(1);
        }
        let mut parts = Vec::with_capacity(dets.len());
        let mut chips = Vec::with_capacity(dets.len());
        for d in &dets {
            let lm = self.landmarks(img, d.rect);
            chips.push(self.chip(img, &lm));
            parts.push(lm);
        }
        let descriptors = self.describe(&chips)?;
        Ok(dets
            .into_iter()
            .zip(parts)
            .zip(chips)
            .zip(descriptors)
            .map(|(((d, landmarks), chip), descriptor)| {
                let mut embedding = descriptor.to_vec();
                l2_normalize(&mut embedding);
                Face { rect: d.rect, confidence: d.confidence, landmarks, descriptor, embedding, chip }
            })
            .collect())
    }
}
