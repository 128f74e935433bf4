//! The face pipeline on still images: detect (MMOD CNN), place 5 landmarks,
//! align a 150×150 chip and describe it (ResNet) — dlib's
//! `face_recognition` pipeline, in Rust.

use crate::dlib::chip::{extract_chip, face_chip_details};
use crate::dlib::geom::{DRect, Rect};
use crate::dlib::mmod::{Detection, FaceDetector};
use crate::dlib::resnet::{CHIP_SIZE, DESCRIPTOR_DIM, FaceDescriptor};
use crate::dlib::shape::ShapePredictor;
use candle_core::Device;
use image::RgbImage;
use osprey_core::{Error, ErrorKind, Result, l2_normalize};
use rayon::prelude::*;
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

/// How the detector searches an image of `width` x `height` under
/// `options`: `upsample` doublings of the image first resized by `scale`
/// (1.0: not resized). Within the budget, the options' own doublings; beyond
/// it, fewer, and the largest size the budget allows.
pub fn search_scale(width: u32, height: u32, options: &FaceOptions) -> (u32, f64) {
    let pixels = u64::from(width) * u64::from(height);
    let budget = options.max_detect_pixels.max(1);
    let mut upsample = options.upsample;
    if pixels << (2 * upsample) <= budget {
        return (upsample, 1.0);
    }
    while upsample > 0 && pixels << (2 * upsample) > budget {
        upsample -= 1;
    }
    let scale = (budget as f64 / (pixels << (2 * upsample)) as f64).sqrt();
    if (0.97..=1.03).contains(&scale) { (upsample, 1.0) } else { (upsample, scale) }
}

/// [`FaceModels::detect_near`]: the largest face, in detector input pixels,
/// a crop's first pyramid level shows (the detector's 80-px window, two
/// pyramid steps up); a larger face's crop starts further down the pyramid.
const MAX_FIRST_LEVEL_FACE: f64 = 80.0 * 1.2 * 1.2;
/// The detector's pyramid step (dlib's `pyramid_down<6>`: 6/5 per level).
const PYRAMID_STEP: f64 = 1.2;
/// The smallest face, in detector input pixels, a crop's last pyramid level
/// must still show at 80-px-window size or more (its largest proposal at
/// 2/3 of a window).
const MIN_LAST_LEVEL_FACE: f64 = 80.0 * 2.0 / 3.0;
/// The most a cluster's largest proposal may exceed its smallest (two
/// pyramid steps).
const MAX_CLUSTER_SPREAD: f64 = PYRAMID_STEP * PYRAMID_STEP;
/// A pyramid level's area over the one above it.
const PYRAMID_AREA_STEP: f64 = 1.0 / (PYRAMID_STEP * PYRAMID_STEP);
/// The fewest pyramid levels a crop is searched at.
const MIN_CROP_LEVELS: usize = 3;
/// Context around a proposal, as a fraction of its side, on each side. The
/// detector's field of view reaches about 0.7 of a window beyond a face, but
/// its outer taps weigh little: with 0.5 the cascade still found every face
/// of the whole-frame search on both test clips (0.35 lost one of
/// Hamilton's 69), and MMOD reads about a third fewer pixels than with
/// 0.75. Small faces get [`MIN_CROP_CONTEXT`] anyway.
const CROP_CONTEXT: f64 = 0.5;
/// The least context around a proposal, in detector input pixels.
const MIN_CROP_CONTEXT: f64 = 48.0;
/// How far (fraction of its width) a face may reach past an inner crop edge
/// and still count.
const CUT_SLACK: f64 = 0.2;

/// The size `img` is resized to at `scale` (at least 1 × 1): one rule for
/// the whole-image search and the crops that must match its pixels.
fn resized_size(img: &RgbImage, scale: f64) -> (usize, usize) {
    let side = |v: u32| ((f64::from(v) * scale) as usize).max(1);
    (side(img.width()), side(img.height()))
}

/// `r`'s corners multiplied by `[sx, sy]` and rounded: a box found in a
/// resized image, back in the image's pixels.
fn scale_rect(r: Rect, [sx, sy]: [f64; 2]) -> Rect {
    let at = |p: i64, s: f64| (p as f64 * s).round() as i64;
    Rect::new(at(r.left, sx), at(r.top, sy), at(r.right, sx), at(r.bottom, sy))
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
        let (upsample, scale) = search_scale(img.width(), img.height(), options);
        if scale == 1.0 {
            return self.detect(img, upsample);
        }
        let (w, h) = resized_size(img, scale);
        let resized = crate::dlib::imgproc::resize_rgb(img, w, h);
        let step = [f64::from(img.width()) / w as f64, f64::from(img.height()) / h as f64];
        Ok(self
            .detect(&resized, upsample)?
            .into_iter()
            .map(|d| Detection { rect: scale_rect(d.rect, step), confidence: d.confidence })
            .collect())
    }

    /// The faces [`FaceModels::detect_bounded`] would find near `proposals`
    /// (candidate face boxes `[x1, y1, x2, y2]` in `img`'s pixels, e.g. from
    /// a cheap detector), searching only padded crops around them: each crop
    /// is searched at the scale the whole image would be (or, for a large
    /// face, from the pyramid level just above the one that finds it), so
    /// the detector sees the face as it would in the whole image. Crops at
    /// the same level that overlap are searched once; faces found in
    /// several crops are merged by the detector's own non-maximum
    /// suppression. The cost grows with the faces' area, not the image's.
    pub fn detect_near(&self, img: &RgbImage, options: &FaceOptions, proposals: &[[f32; 4]]) -> Result<Vec<Detection>> {
        let (iw, ih) = (img.width() as f64, img.height() as f64);
        let (upsample, scale) = search_scale(img.width(), img.height(), options);
        // Detector input pixels per image pixel for the whole-image search.
        let net_per_px = scale * f64::from(1u32 << upsample);
        // Proposals of one face (overlapping boxes of varied size) become
        // one cluster: its crop starts at the level its smallest box needs
        // and covers every box; its pyramid reaches the level its largest
        // box needs.
        let mut boxes: Vec<DRect> = proposals
            .iter()
            .map(|b| DRect::new(f64::from(b[0]), f64::from(b[1]), f64::from(b[2]), f64::from(b[3])))
            .filter(|b| b.l.is_finite() && b.t.is_finite() && b.r > b.l && b.b > b.t)
            .collect();
        boxes.sort_by(|a, b| b.area().total_cmp(&a.area()));
        // (covering box, smallest side, largest side)
        let mut clusters: Vec<(DRect, f64, f64)> = Vec::new();
        for b in boxes {
            let side = (b.r - b.l).max(b.b - b.t);
            let c = b.center();
            // Boxes come largest first: a box joins a cluster of boxes at
            // most MAX_CLUSTER_SPREAD larger, so that a cluster's crop and
            // its pyramid stay sized for one face (a large false proposal
            // would otherwise pull every small box inside it down to the
            // first level, at its size).
            match clusters.iter_mut().find(|(k, _, large)| {
                side * MAX_CLUSTER_SPREAD >= *large && k.l <= c[0] && c[0] <= k.r && k.t <= c[1] && c[1] <= k.b && {
                    let inner = k.intersect(&b);
                    !inner.is_empty() && inner.area() >= 0.3 * b.area().min(k.area())
                }
            }) {
                Some((k, small, large)) => {
                    *k = DRect::new(k.l.min(b.l), k.t.min(b.t), k.r.max(b.r), k.b.max(b.b));
                    *small = small.min(side);
                    *large = large.max(side);
                }
                None => clusters.push((b, side, side)),
            }
        }
        // (first level, levels searched, crop in image pixels)
        let mut regions: Vec<(i32, usize, DRect)> = Vec::new();
        for (k, small, large) in clusters {
            // Pyramid levels (each 5/6 of the last) skipped for a large face.
            let level = if small * net_per_px > MAX_FIRST_LEVEL_FACE {
                ((small * net_per_px / MAX_FIRST_LEVEL_FACE).ln() / PYRAMID_STEP.ln()).ceil() as i32
            } else {
                0
            };
            let crop_net = net_per_px / PYRAMID_STEP.powi(level);
            // Down to the level where the largest box is 2/3 of a window.
            let levels =
                ((large * crop_net / MIN_LAST_LEVEL_FACE).ln() / PYRAMID_STEP.ln()).ceil().max(0.0) as usize + 1;
            let margin = (CROP_CONTEXT * small).max(MIN_CROP_CONTEXT / crop_net);
            let r = DRect::new(k.l - margin, k.t - margin, k.r + margin, k.b + margin)
                .intersect(&DRect::new(0.0, 0.0, iw, ih));
            if r.width() >= 1.0 && r.height() >= 1.0 {
                regions.push((level, levels.max(MIN_CROP_LEVELS), r));
            }
        }
        // Overlapping crops of one level become their bounding crop where
        // that costs less than searching both (the cost of a crop: its area
        // over all its pyramid levels), until no pair is worth merging.
        let cost = |levels: usize, r: &DRect| r.area() * (1.0 - PYRAMID_AREA_STEP.powi(levels as i32));
        let mut merged = true;
        while merged {
            merged = false;
            'outer: for i in 0..regions.len() {
                for j in i + 1..regions.len() {
                    let ((li, ni, a), (lj, nj, b)) = (regions[i], regions[j]);
                    if li != lj || a.intersect(&b).is_empty() {
                        continue;
                    }
                    let both = DRect::new(a.l.min(b.l), a.t.min(b.t), a.r.max(b.r), a.b.max(b.b));
                    let n = ni.max(nj);
                    if cost(n, &both) <= cost(ni, &a) + cost(nj, &b) {
                        regions[i] = (li, n, both);
                        regions.swap_remove(j);
                        merged = true;
                        break 'outer;
                    }
                }
            }
        }
        // The crops in parallel (each one's layers are too small to keep
        // every core busy), largest first.
        regions.sort_by(|a, b| b.2.area().total_cmp(&a.2.area()));
        let searched: Vec<Vec<Detection>> = regions
            .par_iter()
            .map(|&(level, levels, r)| self.search_crop(img, r, level, levels, (upsample, scale)))
            .collect::<Result<_>>()?;
        let mut found: Vec<Detection> = searched.into_iter().flatten().collect();
        found.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        let mut kept: Vec<Detection> = Vec::new();
        for d in found {
            if !kept.iter().any(|k| self.detector.overlaps(&k.rect, &d.rect)) {
                kept.push(d);
            }
        }
        Ok(kept)
    }

    /// [`FaceModels::detect_near`]'s search of one crop `r` (image pixels)
    /// from pyramid level `level`, `levels` levels deep, under the whole
    /// image's `(upsample, scale)`: its faces in image pixels, less those cut
    /// by a crop edge inside the image.
    fn search_crop(
        &self,
        img: &RgbImage,
        r: DRect,
        level: i32,
        levels: usize,
        (upsample, scale): (u32, f64),
    ) -> Result<Vec<Detection>> {
        let net_per_px = scale * f64::from(1u32 << upsample);
        let (x0, y0) = (r.l.floor().max(0.0) as u32, r.t.floor().max(0.0) as u32);
        let (x1, y1) = ((r.r.ceil() as u32).min(img.width()), (r.b.ceil() as u32).min(img.height()));
        if x1 <= x0 || y1 <= y0 {
            return Ok(Vec::new());
        }
        let exact = match level {
            0 => self.search_window_exactly(img, [x0, y0, x1, y1], (upsample, scale), levels)?,
            _ => None,
        };
        let found = match exact {
            Some(found) => found,
            None => {
                // Level 0 repeats the whole-image search's own resize and
                // doublings; a skipped level is one resize.
                let (factor, doublings) =
                    if level == 0 { (scale, upsample) } else { (net_per_px / PYRAMID_STEP.powi(level), 0) };
                let crop = image::imageops::crop_imm(img, x0, y0, x1 - x0, y1 - y0).to_image();
                let (searched, step) = if factor == 1.0 {
                    (crop, [1.0; 2])
                } else {
                    let (w, h) = resized_size(&crop, factor);
                    let step = [f64::from(crop.width()) / w as f64, f64::from(crop.height()) / h as f64];
                    (crate::dlib::imgproc::resize_rgb(&crop, w, h), step)
                };
                self.detector
                    .detect_levels(&searched, doublings, levels)?
                    .into_iter()
                    .map(|d| {
                        let rect = scale_rect(d.rect, step).translate(i64::from(x0), i64::from(y0));
                        Detection { rect, confidence: d.confidence }
                    })
                    .collect()
            }
        };
        // A face cut by a crop edge inside the image is some other crop's
        // (or no) face: its box here is a guess.
        let cut = |rect: &Rect| {
            let slack = (rect.width() as f64 * CUT_SLACK) as i64;
            (x0 > 0 && rect.left < x0 as i64 - slack)
                || (y0 > 0 && rect.top < y0 as i64 - slack)
                || (x1 < img.width() && rect.right > x1 as i64 + slack)
                || (y1 < img.height() && rect.bottom > y1 as i64 + slack)
        };
        Ok(found.into_iter().filter(|d| !cut(&d.rect)).collect())
    }

    /// The faces of the whole image's search (resize by `scale`, then
    /// `upsample` doublings) within the crop `[x0, y0, x1, y1]`, computed on
    /// the very pixels that search sees (a window of its input, starting on
    /// the grid the detector scores), so that a face at the edge of the
    /// threshold scores as it does there; the first `levels` pyramid levels.
    /// `None` where the search input cannot be cut exactly (a resize
    /// followed by doublings, or more than one doubling).
    fn search_window_exactly(
        &self,
        img: &RgbImage,
        [x0, y0, x1, y1]: [u32; 4],
        (upsample, scale): (u32, f64),
        levels: usize,
    ) -> Result<Option<Vec<Detection>>> {
        let (iw, ih) = (img.width() as usize, img.height() as usize);
        let (w, h) = match (upsample, scale == 1.0) {
            (0, true) => (iw, ih),
            (0, false) => resized_size(img, scale),
            (1, true) => crate::dlib::imgproc::pyramid_up2_size(iw, ih),
            _ => return Ok(None),
        };
        let (fx, fy) = (w as f64 / iw as f64, h as f64 / ih as f64);
        let grid = self.detector.stride().max(1);
        let on_grid = |v: f64| (v.floor() as usize) / grid * grid;
        let (wx0, wy0) = (on_grid(f64::from(x0) * fx), on_grid(f64::from(y0) * fy));
        let (wx1, wy1) = (((f64::from(x1) * fx).ceil() as usize).min(w), ((f64::from(y1) * fy).ceil() as usize).min(h));
        if wx1 <= wx0 || wy1 <= wy0 {
            return Ok(Some(Vec::new()));
        }
        let window = match (w, h) == (iw, ih) {
            true => image::imageops::crop_imm(img, wx0 as u32, wy0 as u32, (wx1 - wx0) as u32, (wy1 - wy0) as u32)
                .to_image(),
            false => crate::dlib::imgproc::resize_rgb_window(img, w, h, [wx0, wy0, wx1 - wx0, wy1 - wy0]),
        };
        let step = [iw as f64 / w as f64, ih as f64 / h as f64];
        Ok(Some(
            self.detector
                .detect_levels(&window, 0, levels)?
                .into_iter()
                .map(|d| {
                    // Back the way the whole image's search maps its boxes.
                    let r = d.rect.translate(wx0 as i64, wy0 as i64);
                    let rect = match upsample {
                        0 => scale_rect(r, step),
                        _ => crate::dlib::imgproc::rect_down2(r.to_drect(), upsample).round(),
                    };
                    Detection { rect, confidence: d.confidence }
                })
                .collect(),
        ))
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
        let (parts, chips): (Vec<_>, Vec<_>) = dets
            .par_iter()
            .map(|d| {
                let lm = self.landmarks(img, d.rect);
                (lm, self.chip(img, &lm))
            })
            .unzip();
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
