//! dlib's shape predictor (Kazemi & Sullivan's ensemble of regression trees,
//! image_processing/shape_predictor.h), in plain Rust and with dlib's float
//! arithmetic so that landmarks come out identical.

use super::geom::{Rect, similarity_linear};
use super::serialize::Reader;
use image::RgbImage;
use osprey_core::Result;

struct Split {
    idx1: u32,
    idx2: u32,
    thresh: f32,
}

struct Tree {
    splits: Vec<Split>,
    /// Leaf values, each 2·L floats, flattened.
    leaves: Vec<f32>,
}

struct Cascade {
    trees: Vec<Tree>,
    anchors: Vec<u32>,
    deltas: Vec<[f32; 2]>,
}

/// A trained shape predictor.
pub struct ShapePredictor {
    /// Mean shape, x0 y0 x1 y1 …, in box-normalised coordinates.
    initial: Vec<f32>,
    cascades: Vec<Cascade>,
}

impl ShapePredictor {
    /// Parses a `shape_predictor_*.dat` file.
    pub fn parse(bytes: &[u8], name: &str) -> Result<ShapePredictor> {
        let mut r = Reader::new(bytes, name);
        r.expect_int(1, "shape_predictor version").map_err(|e| e.context("not a dlib shape predictor"))?;
        let (rows, cols, initial) = r.matrix_f32()?;
        if cols != 1 || rows == 0 || rows % 2 != 0 {
            return Err(r.error(format_args!("initial shape is {rows}x{cols}, expected 2L x 1")));
        }
        let landmarks = rows / 2;
        let n_cascades = r.size("cascade count", 1000)?;
        let mut cascades = Vec::with_capacity(n_cascades);
        for _ in 0..n_cascades {
            let n_trees = r.size("tree count", 100_000)?;
            let mut trees = Vec::with_capacity(n_trees);
            for _ in 0..n_trees {
                let n_splits = r.size("split count", 1 << 20)?;
                let mut splits = Vec::with_capacity(n_splits);
                for _ in 0..n_splits {
                    let idx1 = r.size("split index", u32::MAX as u64)? as u32;
                    let idx2 = r.size("split index", u32::MAX as u64)? as u32;
                    let thresh = r.float()?;
                    splits.push(Split { idx1, idx2, thresh });
                }
                let n_leaves = r.size("leaf count", 1 << 21)?;
                if n_leaves != n_splits + 1 {
                    return Err(r.error(format_args!("tree with {n_splits} splits has {n_leaves} leaves")));
                }
                let mut leaves = Vec::with_capacity(n_leaves * rows);
                for _ in 0..n_leaves {
                    let (lr, lc, v) = r.matrix_f32()?;
                    if lr != rows || lc != 1 {
                        return Err(r.error(format_args!("leaf of {lr}x{lc}, expected {rows}x1")));
                    }
                    leaves.extend(v);
                }
                trees.push(Tree { splits, leaves });
            }
            cascades.push(Cascade { trees, anchors: Vec::new(), deltas: Vec::new() });
        }
        let n = r.size("anchor list count", 1000)?;
        if n != n_cascades {
            return Err(r.error(format_args!("{n} anchor lists for {n_cascades} cascades")));
        }
        for c in &mut cascades {
            let k = r.size("anchor count", 1 << 20)?;
            for _ in 0..k {
                let a = r.size("anchor", landmarks as u64 - 1)?;
                c.anchors.push(a as u32);
            }
        }
        let n = r.size("delta list count", 1000)?;
        if n != n_cascades {
            return Err(r.error(format_args!("{n} delta lists for {n_cascades} cascades")));
        }
        for c in &mut cascades {
            let k = r.size("delta count", 1 << 20)?;
            if k != c.anchors.len() {
                return Err(r.error("anchor and delta counts differ"));
            }
            for _ in 0..k {
                c.deltas.push([r.float()?, r.float()?]);
            }
            for t in &c.trees {
                if t.splits.iter().any(|s| s.idx1 as usize >= k || s.idx2 as usize >= k) {
                    return Err(r.error("split refers to a feature pixel that does not exist"));
                }
            }
        }
        if !r.at_end() {
            return Err(r.error(format_args!("{} bytes left after the shape predictor", r.remaining())));
        }
        Ok(ShapePredictor { initial, cascades })
    }

    /// Number of landmarks this predictor places.
    pub fn num_landmarks(&self) -> usize {
        self.initial.len() / 2
    }

    /// Landmarks for the face in `rect` (inclusive pixel coordinates).
    pub fn predict(&self, img: &RgbImage, rect: Rect) -> Vec<[i64; 2]> {
        let mut shape = self.initial.clone();
        let mut features: Vec<f32> = Vec::new();
        let to_img = BoxMap::new(rect);
        let (w, h) = (img.width() as i64, img.height() as i64);
        let raw = img.as_raw();
        for c in &self.cascades {
            let m = similarity_linear(&self.initial, &shape);
            let m = [m[0] as f32, m[1] as f32, m[2] as f32, m[3] as f32];
            features.clear();
            for (a, d) in c.anchors.iter().zip(&c.deltas) {
                let a = *a as usize;
                let u = m[0] * d[0] + m[1] * d[1] + shape[2 * a];
                let v = m[2] * d[0] + m[3] * d[1] + shape[2 * a + 1];
                let [x, y] = to_img.apply(u as f64, v as f64);
                let value = if x >= 0 && y >= 0 && x < w && y < h {
                    let i = 3 * (y * w + x) as usize;
                    ((raw[i] as u32 + raw[i + 1] as u32 + raw[i + 2] as u32) / 3) as f32
                } else {
                    0.0
                };
                features.push(value);
            }
            let rows = shape.len();
            for t in &c.trees {
                let mut i = 0usize;
                while i < t.splits.len() {
                    let s = &t.splits[i];
                    i = if features[s.idx1 as usize] - features[s.idx2 as usize] > s.thresh {
                        2 * i + 1
                    } else {
                        2 * i + 2
                    };
                }
                let leaf = &t.leaves[(i - t.splits.len()) * rows..][..rows];
                for (s, l) in shape.iter_mut().zip(leaf) {
                    *s += *l;
                }
            }
        }
        (0..self.num_landmarks()).map(|i| to_img.apply(shape[2 * i] as f64, shape[2 * i + 1] as f64)).collect()
    }
}

/// Maps box-normalised (u, v) to the nearest pixel, as dlib's
/// `unnormalizing_tform` followed by a conversion to `point`.
struct BoxMap {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

impl BoxMap {
    fn new(r: Rect) -> Self {
        Self {
            left: r.left as f64,
            top: r.top as f64,
            width: (r.right - r.left) as f64,
            height: (r.bottom - r.top) as f64,
        }
    }
    fn apply(&self, u: f64, v: f64) -> [i64; 2] {
        let x = self.width * u + self.left;
        let y = self.height * v + self.top;
        [(x + 0.5).floor() as i64, (y + 0.5).floor() as i64]
    }
}
