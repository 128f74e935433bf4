//! dlib's MMOD CNN face detector (`mmod_human_face_detector`, the network of
//! dlib's dnn_mmod_face_detection_ex.cpp).
//!
//! The image is optionally doubled (`pyramid_up`) so smaller faces reach the
//! 80×80 window, then tiled with its `pyramid_down<6>` levels into one
//! canvas; a fully convolutional network scores every position; positive
//! scores are mapped back through the layers and the tiling to boxes, and
//! non-maximum suppression keeps the best of overlapping ones.

use super::cnn::{Conv, cerr};
use super::geom::{DRect, Rect};
use super::imgproc::{pyramid_up2, rect_down2, resize_plane};
use super::net::{Input, Layer, Loss, MmodOptions, NetFile};
use candle_core::{Device, Tensor};
use image::RgbImage;
use osprey_core::{Error, Result};

/// A detected face.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Inclusive pixel rectangle in the input image.
    pub rect: Rect,
    /// The network's score (positive = face; larger = more confident).
    pub confidence: f32,
}

/// The detector network.
pub struct FaceDetector {
    mean: [f32; 3],
    padding: usize,
    outer_padding: usize,
    options: MmodOptions,
    convs: Vec<(Conv, bool)>,
    device: Device,
}

/// pyramid_down<6>: each level is 5/6 of the previous one.
const PYR_N: f64 = 6.0;

impl FaceDetector {
    /// Loads the detector from dlib's file bytes.
    pub fn parse(bytes: &[u8], name: &str, device: &Device) -> Result<FaceDetector> {
        let net = NetFile::parse(bytes, name)?;
        let corrupt = |m: String| Error::new(osprey_core::ErrorKind::Corrupt, format!("{name}: {m}"));
        let Loss::Mmod(options) = net.loss else {
            return Err(corrupt("not an MMOD detector (is this the descriptor file?)".into()));
        };
        if options.windows.len() != 1 || options.bounding_box_regression {
            return Err(corrupt("only single-window detectors without box regression are supported".into()));
        }
        let Input::RgbImagePyramid { mean, padding, outer_padding } = net.input else {
            return Err(corrupt(format!("unexpected input layer {:?}", net.input)));
        };
        // con (→ affine → relu)*, ending with a bare con.
        let mut convs = Vec::new();
        let mut i = 0;
        let l = &net.layers;
        while i < l.len() {
            match (l.get(i), l.get(i + 1), l.get(i + 2)) {
                (Some(c @ Layer::Conv { .. }), Some(a @ Layer::Affine { .. }), Some(Layer::Relu)) => {
                    convs.push((Conv::new(c, Some(a), device)?, true));
                    i += 3;
                }
                (Some(c @ Layer::Conv { .. }), None, None) => {
                    convs.push((Conv::new(c, None, device)?, false));
                    i += 1;
                }
                (Some(other), _, _) => {
                    return Err(corrupt(format!("unexpected {} layer at position {i}", other.name())));
                }
                _ => unreachable!(),
            }
        }
        if convs.is_empty() || convs.last().is_some_and(|c| c.1) {
            return Err(corrupt("the network must end in a convolution".into()));
        }
        Ok(FaceDetector { mean, padding, outer_padding, options, convs, device: device.clone() })
    }

    /// Faces in `img`, after doubling it `upsample` times (each doubling finds
    /// faces half as large: 0 → about 80 px and up, 1 → 40 px, 2 → 20 px).
    pub fn detect(&self, img: &RgbImage, upsample: u32) -> Result<Vec<Detection>> {
        self.detect_levels(img, upsample, usize::MAX)
    }

    /// The network's total stride: canvas pixels between neighbouring
    /// scores. A crop whose origin is a multiple of it is scored on the same
    /// grid as the whole image.
    pub fn stride(&self) -> usize {
        self.convs.iter().map(|(c, _)| c.stride()).product()
    }

    /// [`FaceDetector::detect`] searching at most `max_levels` pyramid
    /// levels (the image and its 5/6 reductions): faces up to about
    /// 80 × 1.2^(max_levels - 1) pixels after the doublings. For a crop
    /// whose face size is known roughly.
    pub fn detect_levels(&self, img: &RgbImage, upsample: u32, max_levels: usize) -> Result<Vec<Detection>> {
        let mut scaled: Option<RgbImage> = None;
        for _ in 0..upsample {
            scaled = Some(pyramid_up2(scaled.as_ref().unwrap_or(img)));
        }
        let src = scaled.as_ref().unwrap_or(img);
        let dets = self.detect_scaled(src, max_levels)?;
        Ok(dets
            .into_iter()
            .map(|d| Detection { rect: rect_down2(d.rect.to_drect(), upsample).round(), confidence: d.confidence })
            .collect())
    }

    fn detect_scaled(&self, img: &RgbImage, max_levels: usize) -> Result<Vec<Detection>> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let tiling = Tiling::new(w, h, self.padding, self.outer_padding, max_levels);
        if tiling.rects.is_empty() {
            return Ok(Vec::new());
        }
        let started = std::time::Instant::now();
        let canvas = tiling.render(img, self.mean);
        let (nr, nc) = (tiling.rows, tiling.cols);
        // Where a frame's time goes (RUST_LOG=osprey_models=debug): the
        // pyramid canvas, then each convolution.
        tracing::debug!(
            width = w,
            height = h,
            canvas_rows = nr,
            canvas_cols = nc,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "mmod pyramid"
        );
        let mut x = Tensor::from_vec(canvas, (1, 3, nr, nc), &self.device).map_err(cerr)?;
        for (layer, (conv, relu)) in self.convs.iter().enumerate() {
            let started = std::time::Instant::now();
            // An image smaller than the network's field of view holds no
            // face (and an empty convolution output would fail in candle).
            let (_, _, h, w) = x.dims4().map_err(cerr)?;
            if h < conv.kernel || w < conv.kernel {
                return Ok(Vec::new());
            }
            x = match relu {
                true => conv.forward_relu(&x)?,
                false => conv.forward(&x)?,
            };
            tracing::debug!(layer, kernel = conv.kernel, stride = conv.stride(), shape = ?x.dims(),
                ms = started.elapsed().as_secs_f64() * 1e3, "mmod conv");
        }
        let (_, _, oh, ow) = x.dims4().map_err(cerr)?;
        let scores: Vec<f32> = x.flatten_all().and_then(|t| t.to_vec1()).map_err(cerr)?;
        let window = &self.options.windows[0];
        let mut found: Vec<(f32, Rect)> = Vec::new();
        for r in 0..oh {
            for c in 0..ow {
                let score = scores[r * ow + c];
                if score <= 0.0 {
                    continue;
                }
                // Output position → input position, through every convolution.
                let (mut px, mut py) = (c as f64, r as f64);
                for (conv, _) in self.convs.iter().rev() {
                    let (s, p, k) = (conv.stride() as f64, conv.pad() as f64, (conv.kernel / 2) as f64);
                    px = px * s - p + k;
                    py = py * s - p + k;
                }
                let rect = DRect::centered([px, py], window.width as f64, window.height as f64);
                found.push((score, tiling.to_image(rect).round()));
            }
        }
        found.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut kept: Vec<Detection> = Vec::new();
        for (score, rect) in found {
            if kept.iter().any(|k| self.overlaps(&k.rect, &rect)) {
                continue;
            }
            kept.push(Detection { rect, confidence: score });
        }
        Ok(kept)
    }

    /// dlib's `test_box_overlap` (note: "union" is the bounding box of both):
    /// whether non-maximum suppression keeps only one of `a` and `b`.
    pub fn overlaps(&self, a: &Rect, b: &Rect) -> bool {
        let inner = a.intersect(b).area() as f64;
        if inner == 0.0 {
            return false;
        }
        let outer = a.union(b).area() as f64;
        let covered = self.options.nms_percent_covered;
        inner / outer > self.options.nms_iou || inner / a.area() as f64 > covered || inner / b.area() as f64 > covered
    }
}

/// The tiled image pyramid dlib's `input_rgb_image_pyramid` builds
/// (`compute_tiled_image_pyramid_details`): level 0 on the left, the smaller
/// levels stacked in one column and then back up a second one.
struct Tiling {
    rects: Vec<Rect>,
    rows: usize,
    cols: usize,
}

impl Tiling {
    /// At most `max_levels` levels (at least one).
    fn new(w: usize, h: usize, padding: usize, outer: usize, max_levels: usize) -> Tiling {
        let (padding, outer) = (padding as i64, outer as i64);
        let (mut nr, mut nc) = (h as i64, w as i64);
        if nr * nc == 0 {
            return Tiling { rects: Vec::new(), rows: 0, cols: 0 };
        }
        let rate = (PYR_N - 1.0) / PYR_N;
        let mut rects = vec![Rect::sized(nc, nr)];
        loop {
            nr = (rate * nr as f64).floor() as i64;
            nc = (rate * nc as f64).floor() as i64;
            if nr * nc == 0 || nr < 5 || rects.len() >= max_levels {
                break;
            }
            rects.push(Rect::sized(nc, nr));
        }
        let mut total_height: i64 = rects.iter().map(|r| r.height() + padding).sum();
        total_height -= padding * 2;
        let first = rects[0];
        let mut height = 0;
        let mut prev_width = 0;
        for r in &rects {
            if r.width() <= first.width() - prev_width - padding
                && (height - first.height()) * 2 >= (total_height - first.height())
            {
                break;
            }
            height += r.height() + padding;
            prev_width = r.width();
        }
        height -= padding;
        let width = first.width();
        let mut y = outer;
        let mut i = 0;
        while y < height + outer && i < rects.len() {
            rects[i] = rects[i].translate(outer, y);
            y += rects[i].height() + padding;
            i += 1;
        }
        y -= padding;
        while i < rects.len() {
            let (p1x, p1y) = (outer + width - 1, y - 1);
            let (p2x, p2y) = (p1x - rects[i].right, p1y - rects[i].bottom);
            let rect = Rect::new(p1x.min(p2x), p1y.min(p2y), p1x.max(p2x), p1y.max(p2y));
            if !rects[0].intersect(&rect).is_empty() {
                break;
            }
            rects[i] = rect;
            y -= rects[i].height() + padding;
            i += 1;
        }
        rects.truncate(i);
        Tiling { rects, rows: (height + outer * 2) as usize, cols: (width + outer * 2) as usize }
    }

    /// The normalised planes (R, G, B) of the canvas with every level drawn.
    fn render(&self, img: &RgbImage, mean: [f32; 3]) -> Vec<f32> {
        let (rows, cols) = (self.rows, self.cols);
        let plane = rows * cols;
        let mut data = vec![0f32; 3 * plane];
        let r0 = self.rects[0];
        let w = img.width() as usize;
        for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
            let (y, x) = (i / w, i % w);
            let at = (r0.top as usize + y) * cols + r0.left as usize + x;
            for ch in 0..3 {
                data[ch * plane + at] = (px[ch] as f32 - mean[ch]) / 256.0;
            }
        }
        for ch in 0..3 {
            let p = &mut data[ch * plane..(ch + 1) * plane];
            for k in 1..self.rects.len() {
                let (s, d) = (self.rects[k - 1], self.rects[k]);
                let src_off = s.top as usize * cols + s.left as usize;
                let dst_off = d.top as usize * cols + d.left as usize;
                // The destination never overlaps its source level.
                let src: Vec<f32> =
                    p[src_off..src_off + (s.height() as usize - 1) * cols + s.width() as usize].to_vec();
                resize_plane(
                    &src,
                    cols,
                    s.width() as usize,
                    s.height() as usize,
                    &mut p[dst_off..],
                    cols,
                    d.width() as usize,
                    d.height() as usize,
                );
            }
        }
        data
    }

    /// `tiled_pyramid_to_image`: a rectangle on the canvas → the input image.
    fn to_image(&self, r: DRect) -> DRect {
        let c = r.center();
        let (px, py) = ((c[0] + 0.5).floor() as i64, (c[1] + 0.5).floor() as i64);
        let mut best = 0;
        let mut best_dist = f64::INFINITY;
        for (i, rect) in self.rects.iter().enumerate() {
            if rect.contains(px, py) {
                best = i;
                break;
            }
            let nx = px.clamp(rect.left, rect.right);
            let ny = py.clamp(rect.top, rect.bottom);
            let d = (((nx - px) * (nx - px) + (ny - py) * (ny - py)) as f64).sqrt();
            if d < best_dist {
                best_dist = d;
                best = i;
            }
        }
        let o = self.rects[best];
        let mut r = r.translate(-(o.left as f64), -(o.top as f64));
        let ratio = PYR_N / (PYR_N - 1.0);
        for _ in 0..best {
            r = DRect::new(r.l * ratio + 0.3, r.t * ratio + 0.3, r.r * ratio + 0.3, r.b * ratio + 0.3);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiling_keeps_levels_apart_and_inside_the_canvas() {
        for (w, h) in [(640, 480), (300, 300), (1200, 200), (81, 81)] {
            let t = Tiling::new(w, h, 10, 11, usize::MAX);
            let canvas = Rect::sized(t.cols as i64, t.rows as i64);
            assert_eq!(t.rects[0].width(), w as i64);
            for (i, a) in t.rects.iter().enumerate() {
                assert_eq!(canvas.intersect(a), *a, "{w}x{h} level {i} outside");
                for b in &t.rects[i + 1..] {
                    assert!(a.intersect(b).is_empty(), "{w}x{h}: levels overlap");
                }
            }
        }
    }
}
