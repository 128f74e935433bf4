//! What SapiensID reads, made from a body crop the way the authors' test
//! path makes it (`mk-minchul/sapiensid`, `models/sapiens_id`'s
//! `make_test_transform` and `aligners/keypoint_predictor`).
//!
//! # The image (exact)
//!
//! The crop becomes floats in `[0, 1]` (`ToTensor`), is padded to a square
//! with white (`SquarePad(fill=1)`: the extra column or row of an odd
//! difference goes right or down), resized to 384×384 with torchvision's
//! bilinear `Resize(antialias=None)`, which on tensors means no antialiasing
//! (`align_corners=False`, source `(d + 0.5)·in/out − 0.5` clamped at 0),
//! then normalised as `(v − 0.5) / 0.5`. [`square_input`] computes exactly
//! that in float32.
//!
//! # The keypoints (same semantics, other detectors)
//!
//! Upstream finds the 22 points on the 384×384 input itself (un-normalised,
//! clipped to `[0, 1]`): YOLOv8-pose's 17 COCO points (a point YOLO is
//! unsure of comes out as `(0, 0)` and becomes `(-1, -1)`), then two
//! clean-ups (left/right pairs ordered so that the subject's left point has
//! the larger `x`, and a nose or eye outside the span of the ears and
//! shoulders dropped), then a face detector (DFA, a RetinaFace-style
//! MobileNetV4) on the head region for the five face points, dropped below
//! a faceness threshold.
//!
//! Osprey has neither YOLOv8-pose nor DFA in a registry, so
//! [`BodyKeypointer`] uses the models it ships: MoveNet Thunder for the 17
//! COCO points (a point scored below [`MIN_KEYPOINT_SCORE`] is missing) and
//! MTCNN for the five face points (the largest face in the head square,
//! built as upstream builds it: around the nose, eyes and ears, padded by
//! half its side; the whole image when no body point was found). Both
//! clean-ups are applied as upstream applies them. The points mean the
//! same, but they are other detectors' estimates: a template follows its
//! keypoints, so SapiensID templates from Osprey and from upstream agree to
//! the degree the detectors agree, not bit for bit. Users with their own
//! points give them to [`crate::sapiensid::SapiensId::forward`] directly.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::RgbImage;
use osprey_core::{Error, ErrorKind, Result};

use crate::centernet::PersonBox;
use crate::layers::cerr;
use crate::movenet::{MoveNet, PoseEstimator};
use crate::mtcnn::Mtcnn;
use crate::sapiensid::{INPUT_KEYPOINTS, INPUT_SIZE};

/// A MoveNet point scored below this is missing (`(-1, -1)`).
pub const MIN_KEYPOINT_SCORE: f32 = 0.3;
/// The head square's padding, as a share of its side (upstream's 0.5).
const HEAD_PADDING: f32 = 0.5;
/// A missing point.
const MISSING: [f32; 2] = [-1.0, -1.0];

/// The network's input for one crop: `[1, 3, 384, 384]` normalised, and
/// the same square as 8-bit RGB (what the keypoint detectors see).
pub struct SquareInput {
    pub tensor: Tensor,
    pub rgb: RgbImage,
}

/// The test transform of one body crop (see the module documentation).
pub fn square_input(crop: &RgbImage, device: &Device) -> Result<SquareInput> {
    let (w, h) = (crop.width() as usize, crop.height() as usize);
    if w == 0 || h == 0 {
        return Err(Error::invalid("sapiensid: empty body crop"));
    }
    let side = w.max(h);
    let (left, top) = ((side - w) / 2, (side - h) / 2);
    // Channel planes of the white-padded square, in [0, 1].
    let mut planes = vec![1f32; 3 * side * side];
    for (x, y, p) in crop.enumerate_pixels() {
        let (x, y) = (x as usize + left, y as usize + top);
        for c in 0..3 {
            planes[c * side * side + y * side + x] = p.0[c] as f32 / 255.0;
        }
    }
    let square = Tensor::from_vec(planes, (1, 3, side, side), &Device::Cpu).map_err(cerr)?;
    let resized = crate::tfjs::resize_bilinear(&square, INPUT_SIZE, INPUT_SIZE, false, true)?;
    let values: Vec<f32> = resized.flatten_all().and_then(|t| t.to_vec1()).map_err(cerr)?;
    let n = INPUT_SIZE * INPUT_SIZE;
    let rgb = RgbImage::from_fn(INPUT_SIZE as u32, INPUT_SIZE as u32, |x, y| {
        let i = y as usize * INPUT_SIZE + x as usize;
        image::Rgb([0, 1, 2].map(|c| (values[c * n + i].clamp(0.0, 1.0) * 255.0).round() as u8))
    });
    let tensor = Tensor::from_vec(
        values.iter().map(|v| (v - 0.5) / 0.5).collect::<Vec<_>>(),
        (1, 3, INPUT_SIZE, INPUT_SIZE),
        device,
    )
    .map_err(cerr)?;
    Ok(SquareInput { tensor, rgb })
}

/// SapiensID's network inputs for a batch of body crops, on the device the
/// network runs on: `images` `[B, 3, 384, 384]` ([`square_input`]) and
/// `keypoints` `[B, 22, 2]` ([`BodyKeypointer::keypoints`]), the arguments of
/// [`crate::sapiensid::SapiensId::forward`].
pub struct Prepared {
    pub images: Tensor,
    pub keypoints: Tensor,
}

impl Prepared {
    /// Crops in the batch.
    pub fn len(&self) -> usize {
        self.images.dims()[0]
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Both tensors as host f32 values in row-major order (images, then
    /// keypoints), e.g. to hand them to another implementation.
    pub fn to_host(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let host = |t: &Tensor| t.flatten_all().and_then(|t| t.to_device(&Device::Cpu)).and_then(|t| t.to_vec1());
        Ok((host(&self.images).map_err(cerr)?, host(&self.keypoints).map_err(cerr)?))
    }
}

/// Finds SapiensID's 22 keypoints on its 384×384 input (see the module
/// documentation).
pub struct BodyKeypointer {
    pose: PoseEstimator,
    faces: Mtcnn,
}

impl BodyKeypointer {
    /// MoveNet Thunder from `models/movenet/` and MTCNN from `models/mtcnn/`
    /// (both fetched by `infra/scripts/fetch-models.sh`).
    pub fn load(models: &Path, device: &Device) -> Result<BodyKeypointer> {
        let pose = PoseEstimator::load_variant(models, MoveNet::Thunder, device)?;
        let dir = models.join("mtcnn");
        let faces = Mtcnn::load(&dir).map_err(|e| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "sapiensid needs MTCNN for the face points: cannot load it from {}: {e} (run infra/scripts/fetch-models.sh)",
                    dir.display()
                ),
            )
        })?;
        Ok(BodyKeypointer { pose, faces })
    }

    /// The network inputs of `crops` (at least one): each through
    /// [`square_input`], its keypoints found on the square.
    pub fn prepare(&self, crops: &[RgbImage], device: &Device) -> Result<Prepared> {
        if crops.is_empty() {
            return Err(Error::invalid("sapiensid: no body crops to prepare"));
        }
        let mut images = Vec::with_capacity(crops.len());
        let mut points: Vec<f32> = Vec::with_capacity(crops.len() * INPUT_KEYPOINTS * 2);
        for crop in crops {
            let input = square_input(crop, device)?;
            points.extend(self.keypoints(&input.rgb)?.iter().flatten());
            images.push(input.tensor);
        }
        Ok(Prepared {
            images: Tensor::cat(&images, 0).map_err(cerr)?,
            keypoints: Tensor::from_vec(points, (crops.len(), INPUT_KEYPOINTS, 2), device).map_err(cerr)?,
        })
    }

    /// The 22 points of the square image, `(x, y)` in `[0, 1]`, `(-1, -1)`
    /// where missing: 17 COCO, then left eye, right eye, nose, left and
    /// right mouth corners.
    pub fn keypoints(&self, square: &RgbImage) -> Result<[[f32; 2]; INPUT_KEYPOINTS]> {
        let side = square.width() as f32;
        let whole = PersonBox { x1: 0.0, y1: 0.0, x2: side, y2: square.height() as f32, score: 1.0 };
        let found = self.pose.estimate(square.as_raw(), square.width() as usize, square.height() as usize, &[whole])?;
        let mut body = [MISSING; 17];
        for (point, k) in body.iter_mut().zip(found[0].iter()) {
            if k.score >= MIN_KEYPOINT_SCORE {
                *point = [k.x / side, k.y / side];
            }
        }
        order_left_right(&mut body);
        drop_face_outliers(&mut body);
        let face = self.face_points(square, &body)?;
        let mut out = [MISSING; INPUT_KEYPOINTS];
        out[..17].copy_from_slice(&body);
        out[17..].copy_from_slice(&face);
        Ok(out)
    }

    /// The five face points of the largest MTCNN face in the head square.
    fn face_points(&self, square: &RgbImage, body: &[[f32; 2]; 17]) -> Result<[[f32; 2]; 5]> {
        let side = square.width() as f32;
        let (x0, y0, crop) = match head_square(&body[..5]) {
            Some([x1, y1, x2, y2]) => {
                let px = |v: f32| (v * side).round().clamp(0.0, side) as u32;
                let (l, t) = (px(x1), px(y1));
                let (r, b) = (px(x2).max(l + 1).min(square.width()), px(y2).max(t + 1).min(square.height()));
                if r <= l || b <= t {
                    return Ok([MISSING; 5]);
                }
                (l as f32, t as f32, image::imageops::crop_imm(square, l, t, r - l, b - t).to_image())
            }
            None if body.iter().all(|p| *p == MISSING) => (0.0, 0.0, square.clone()),
            None => return Ok([MISSING; 5]),
        };
        let faces = self.faces.detect(&crop).map_err(|e| Error::internal(format!("mtcnn: {e}")))?;
        Ok(match faces.first() {
            Some(f) => f.landmarks.map(|[x, y]| [(x + x0) / side, (y + y0) / side]),
            None => [MISSING; 5],
        })
    }
}

/// Upstream's `adjust_left_right_keypoints`: for each left/right pair
/// (eyes, ears, shoulders, …), the subject's left point gets the larger
/// `x`; when only one of a pair is found, it is moved to the other slot if
/// it lies on the wrong half of the image.
fn order_left_right(kps: &mut [[f32; 2]; 17]) {
    for left in [1, 3, 5, 7, 9, 11, 13, 15] {
        let right = left + 1;
        let (l, r) = (kps[left] != MISSING, kps[right] != MISSING);
        let swap = (l && r && kps[left][0] < kps[right][0])
            || (l && !r && kps[left][0] < 0.5)
            || (r && !l && kps[right][0] > 0.5);
        if swap {
            kps.swap(left, right);
        }
    }
}

/// Upstream's `remove_outliers`: with both shoulders and both ears found, a
/// nose or eye outside the `x` span of those four points is dropped.
fn drop_face_outliers(kps: &mut [[f32; 2]; 17]) {
    if [3, 4, 5, 6].iter().any(|&i| kps[i] == MISSING) {
        return;
    }
    let xs = [3, 4, 5, 6].map(|i| kps[i][0]);
    let (lo, hi) =
        (xs.iter().copied().fold(f32::INFINITY, f32::min), xs.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    for i in [0, 1, 2] {
        if kps[i] != MISSING && (kps[i][0] < lo || kps[i][0] > hi) {
            kps[i] = MISSING;
        }
    }
}

/// Upstream's square head box (`create_square_head_bbox_from_keypoints_batched`
/// with padding 0.5, at least two points) around the found face points
/// (nose, eyes, ears) in `[0, 1]`: centred between their extent's centre and
/// the nose (when found), side twice the farthest point's distance from
/// that centre, times 1.5; clamped to the image. `None` with fewer than two
/// points.
fn head_square(face: &[[f32; 2]]) -> Option<[f32; 4]> {
    let found: Vec<[f32; 2]> = face.iter().copied().filter(|p| *p != MISSING).collect();
    if found.len() < 2 {
        return None;
    }
    let (mut x1, mut y1, mut x2, mut y2) = (f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY);
    for [x, y] in &found {
        (x1, y1, x2, y2) = (x1.min(*x), y1.min(*y), x2.max(*x), y2.max(*y));
    }
    let (mut cx, mut cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
    if face[0] != MISSING {
        (cx, cy) = ((cx + face[0][0]) / 2.0, (cy + face[0][1]) / 2.0);
    }
    let farthest = found.iter().map(|[x, y]| ((x - cx).powi(2) + (y - cy).powi(2)).sqrt()).fold(0f32, f32::max);
    let half = 2.0 * farthest * (1.0 + HEAD_PADDING) / 2.0;
    Some([(cx - half).max(0.0), (cy - half).max(0.0), (cx + half).min(1.0), (cy + half).min(1.0)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_ordered_with_the_subjects_left_on_the_right() {
        let mut k = [MISSING; 17];
        k[5] = [0.3, 0.4]; // "left" shoulder left of the right one: swapped
        k[6] = [0.7, 0.4];
        k[9] = [0.2, 0.8]; // a lone left wrist on the image's left half: moved
        order_left_right(&mut k);
        assert_eq!(k[5], [0.7, 0.4]);
        assert_eq!(k[6], [0.3, 0.4]);
        assert_eq!(k[9], MISSING);
        assert_eq!(k[10], [0.2, 0.8]);
    }

    #[test]
    fn a_nose_outside_the_shoulders_and_ears_is_dropped() {
        let mut k = [MISSING; 17];
        k[3] = [0.45, 0.1];
        k[4] = [0.55, 0.1];
        k[5] = [0.4, 0.3];
        k[6] = [0.6, 0.3];
        k[0] = [0.9, 0.1];
        k[1] = [0.5, 0.1];
        drop_face_outliers(&mut k);
        assert_eq!(k[0], MISSING);
        assert_eq!(k[1], [0.5, 0.1]);
    }

    #[test]
    fn the_square_is_padded_white_and_resized() {
        // A 2-wide, 4-high black crop: padded with a white column on each
        // side, so the resized square is white at its left and right edges
        // and black in the middle.
        let crop = RgbImage::from_pixel(2, 4, image::Rgb([0, 0, 0]));
        let input = square_input(&crop, &Device::Cpu).unwrap();
        assert_eq!(input.tensor.dims(), [1, 3, INPUT_SIZE, INPUT_SIZE]);
        let row: Vec<f32> = input.tensor.get(0).unwrap().get(0).unwrap().get(200).unwrap().to_vec1().unwrap();
        assert_eq!(row[0], 1.0);
        assert_eq!(row[INPUT_SIZE - 1], 1.0);
        assert_eq!(row[INPUT_SIZE / 2], -1.0);
        assert_eq!(input.rgb.get_pixel(0, 200).0, [255, 255, 255]);
        assert!(square_input(&RgbImage::new(0, 3), &Device::Cpu).is_err());
    }

    #[test]
    fn a_head_square_needs_two_points() {
        assert!(head_square(&[[0.5, 0.1], MISSING, MISSING, MISSING, MISSING]).is_none());
        // Two eyes 0.2 apart at y = 0.3: centre between them, farthest point
        // 0.1 away, side 2 × 0.1 × 1.5.
        let [x1, y1, x2, y2] = head_square(&[MISSING, [0.4, 0.3], [0.6, 0.3], MISSING, MISSING]).unwrap();
        assert!((x2 - x1 - 0.3).abs() < 1e-6 && (y2 - y1 - 0.3).abs() < 1e-6);
        assert!(((x1 + x2) / 2.0 - 0.5).abs() < 1e-6 && ((y1 + y2) / 2.0 - 0.3).abs() < 1e-6);
        // Near the top it is clamped to the image.
        let [_, y1, _, _] = head_square(&[MISSING, [0.4, 0.05], [0.6, 0.05], MISSING, MISSING]).unwrap();
        assert_eq!(y1, 0.0);
    }
}
