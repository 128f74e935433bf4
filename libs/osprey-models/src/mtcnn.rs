//! MTCNN face detection with five landmarks (Zhang et al. 2016), ported from
//! PyPI `facenet-pytorch` 2.6.0's `MTCNN.detect` with its default settings
//! (minimum face 20 px, pyramid factor 0.709, stage thresholds 0.6/0.7/0.7,
//! `select_largest=True`) and its weights (`pnet.pt`, `rnet.pt`, `onet.pt`,
//! legacy torch pickles read by [`crate::torch_legacy`]).
//!
//! The three networks run on candle; the box arithmetic between them runs on
//! the host in `f32`, in the same order of operations as facenet-pytorch, so
//! boxes and landmarks agree with it to float rounding. Coordinates are
//! pixels of the input image, `x` to the right and `y` down, exactly as
//! facenet returns them: fractional, and not clipped to the image (a face
//! cut by the border may have a negative `x1`).

use crate::conv::Activation;
use crate::torch_legacy;
use candle_core::{DType, Device, Error, Result, Tensor};
use image::RgbImage;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;

/// Smallest face searched for, in pixels (facenet's `min_face_size`).
const MIN_FACE_SIZE: f64 = 20.0;
/// Ratio between successive image-pyramid scales.
const PYRAMID_FACTOR: f64 = 0.709;
/// Face-probability thresholds of PNet, RNet and ONet.
const THRESHOLDS: [f32; 3] = [0.6, 0.7, 0.7];
/// Crops go through RNet and ONet this many at a time, as facenet does, to
/// bound memory on images with many candidates.
const CROP_BATCH: usize = 128;
/// Source windows from which resampling runs in parallel.
const PARALLEL_RESAMPLE_PIXELS: usize = 1 << 16;

/// One detected face, in the input image's pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct MtcnnFace {
    /// `[x1, y1, x2, y2]`: left, top, right, bottom.
    pub bbox: [f32; 4],
    /// ONet's face probability.
    pub score: f32,
    /// `[x, y]` of the left eye, right eye, nose, left and right mouth
    /// corners ("left" as seen in the image, i.e. smaller `x`).
    pub landmarks: [[f32; 2]; 5],
}

/// The three MTCNN networks, ready to detect.
pub struct Mtcnn {
    pnet: PNet,
    rnet: RNet,
    onet: ONet,
    device: Device,
}

type StateDict = HashMap<String, Tensor>;

impl Mtcnn {
    /// Builds the networks from facenet-pytorch's state dicts (keys such as
    /// `conv1.weight`, `prelu1.weight`, `dense4.bias`). They run on the
    /// device PNet's first convolution is on.
    pub fn from_tensors(pnet: &StateDict, rnet: &StateDict, onet: &StateDict) -> Result<Mtcnn> {
        let device =
            pnet.get("conv1.weight").ok_or_else(|| Error::Msg("pnet: missing conv1.weight".into()))?.device().clone();
        let ctx = |net: &'static str| move |e: Error| Error::Msg(format!("{net}: {e}"));
        Ok(Mtcnn {
            pnet: PNet::new(&Params { sd: pnet, device: &device }).map_err(ctx("pnet"))?,
            rnet: RNet::new(&Params { sd: rnet, device: &device }).map_err(ctx("rnet"))?,
            onet: ONet::new(&Params { sd: onet, device: &device }).map_err(ctx("onet"))?,
            device,
        })
    }

    /// Reads `pnet.pt`, `rnet.pt` and `onet.pt` from `dir` (as shipped in
    /// the facenet-pytorch wheel under `facenet_pytorch/data/`) onto the CPU.
    pub fn load(dir: &Path) -> Result<Mtcnn> {
        let read = |name: &str| torch_legacy::load_state_dict(&dir.join(name), &Device::Cpu);
        Mtcnn::from_tensors(&read("pnet.pt")?, &read("rnet.pt")?, &read("onet.pt")?)
    }

    /// Detects faces in an RGB image. Faces come largest box area first, as
    /// facenet-pytorch's `detect` returns them.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<MtcnnFace>> {
        let img = Planes::from_rgb(img);
        let boxes = self.proposals(&img, MIN_FACE_SIZE, THRESHOLDS[0], false)?;
        let boxes = self.refine(&img, boxes, THRESHOLDS[1])?;
        let mut faces = self.output(&img, boxes, THRESHOLDS[2])?;
        // facenet: np.argsort(area)[::-1]; a stable ascending sort reversed
        // matches it (ties aside, which numpy's quicksort leaves unspecified).
        let area = |f: &MtcnnFace| (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]);
        faces.sort_by(|a, b| area(a).total_cmp(&area(b)));
        faces.reverse();
        Ok(faces)
    }

    /// MTCNN's five landmarks for faces another detector found: each box
    /// is squared as the cascade squares its own and shown to ONet, whose
    /// landmark output is kept whatever its face score. `None` for a box
    /// that lies wholly outside the image. Lets a seed recogniser align the
    /// faces of dlib's MMOD detector (`--detector mmod`).
    pub fn landmarks_for(&self, img: &RgbImage, boxes: &[[f32; 4]]) -> Result<Vec<Option<[[f32; 2]; 5]>>> {
        let img = Planes::from_rgb(img);
        let squared: Vec<[f32; 4]> = boxes.iter().map(|b| square(*b)).collect();
        let mut out = vec![None; boxes.len()];
        let inside: Vec<usize> =
            (0..squared.len()).filter(|&i| crop_window(&squared[i], img.width, img.height).is_some()).collect();
        let (kept, input) = crops(&img, inside.iter().map(|&i| squared[i]).collect(), 48, &self.device)?;
        debug_assert_eq!(kept.len(), inside.len());
        for (chunk, range) in batches(&input)? {
            let (_, points, _) = self.onet.forward(&chunk)?;
            let points = points.to_vec2::<f32>()?;
            for (k, i) in range.enumerate() {
                let b = kept[i];
                let (bw, bh) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
                out[inside[i]] =
                    Some(std::array::from_fn(|j| [bw * points[k][j] + b[0] - 1.0, bh * points[k][j + 5] + b[1] - 1.0]));
            }
        }
        Ok(out)
    }

    /// Candidate faces for another detector to confirm: the three stages
    /// with thresholds of their own (lower than the cascade's 0.6/0.7/0.7, to
    /// miss fewer faces), faces from `min_face` pixels up. Square boxes
    /// `[x1, y1, x2, y2]` (ONet's, squared) in the image's pixels, not
    /// clipped to it.
    pub fn propose(&self, img: &RgbImage, min_face: f64, thresholds: [f32; 3]) -> Result<Vec<[f32; 4]>> {
        if !(min_face >= 12.0) {
            return Err(Error::Msg(format!("MTCNN proposals: min_face must be at least 12 px, got {min_face}")));
        }
        let started = std::time::Instant::now();
        let img = Planes::from_rgb(img);
        let windows = self.proposals(&img, min_face, thresholds[0], true)?;
        let pnet = started.elapsed();
        let (count, refined) = (windows.len(), self.refine(&img, windows, thresholds[1])?);
        let rnet = started.elapsed();
        let refined_count = refined.len();
        let faces = self.output(&img, refined, thresholds[2])?;
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        tracing::debug!(
            windows = count,
            refined = refined_count,
            faces = faces.len(),
            pnet_ms = ms(pnet),
            rnet_ms = ms(rnet - pnet),
            onet_ms = ms(started.elapsed() - rnet),
            "mtcnn proposals"
        );
        Ok(faces.into_iter().map(|f| square(f.bbox)).collect())
    }

    /// Stage 1: PNet over the image pyramid (faces from `min_face` pixels);
    /// candidate windows, regressed and squared.
    /// With `from_first`, levels after the first are resized from the first
    /// rather than from the image (several times less to read on a large
    /// frame; values differ from facenet's by the rounding of two area
    /// averages instead of one).
    fn proposals(&self, img: &Planes, min_face: f64, threshold: f32, from_first: bool) -> Result<Vec<[f32; 4]>> {
        let (w, h) = (img.width, img.height);
        let m = 12.0 / min_face;
        let mut min_side = h.min(w) as f64 * m;
        let mut scale = m;
        let mut levels = Vec::new();
        while min_side >= 12.0 {
            levels.push((scale, (w as f64 * scale + 1.0) as usize, (h as f64 * scale + 1.0) as usize));
            scale *= PYRAMID_FACTOR;
            min_side *= PYRAMID_FACTOR;
        }
        let first = match (from_first, levels.first()) {
            (true, Some(&(_, sw, sh))) => Some(img.resized(sw.min(w), sh.min(h))),
            _ => None,
        };
        let source = first.as_ref().unwrap_or(img);
        // The levels in parallel (the small ones cannot fill the cores on
        // their own), their candidates in level order.
        let per_level = levels
            .par_iter()
            .map(|&(scale, sw, sh)| {
                let mut data = Vec::with_capacity(3 * sh * sw);
                source.resample_into(Rect { x: 0, y: 0, w: source.width, h: source.height }, sw, sh, &mut data);
                let input = Tensor::from_vec(data, (1, 3, sh, sw), &self.device)?;
                let cands = pnet_candidates(&self.pnet.forward(&input)?, scale as f32, threshold)?;
                let keep = nms_union(&cands, 0.5);
                Ok(keep.into_iter().map(|i| cands[i]).collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>>>()?;
        let all: Vec<Cand> = per_level.into_iter().flatten().collect();
        let keep = nms_union(&all, 0.7);
        Ok(keep
            .into_iter()
            .map(|i| {
                // PNet's regression is relative to the window size without
                // the +1 the later stages use.
                let Cand { b, reg, .. } = all[i];
                let (rw, rh) = (b[2] - b[0], b[3] - b[1]);
                square([b[0] + reg[0] * rw, b[1] + reg[1] * rh, b[2] + reg[2] * rw, b[3] + reg[3] * rh])
            })
            .collect())
    }

    /// Stage 2: RNet on 24x24 crops; survivors regressed and squared.
    fn refine(&self, img: &Planes, boxes: Vec<[f32; 4]>, threshold: f32) -> Result<Vec<[f32; 4]>> {
        let (boxes, input) = crops(img, boxes, 24, &self.device)?;
        let mut cands = Vec::new();
        for (chunk, range) in batches(&input)? {
            let (reg, prob) = self.rnet.forward(&chunk)?;
            let (reg, prob) = (reg.to_vec2::<f32>()?, prob.to_vec2::<f32>()?);
            for (k, i) in range.enumerate() {
                if prob[k][1] > threshold {
                    cands.push(Cand { b: boxes[i], score: prob[k][1], reg: row4(&reg[k]) });
                }
            }
        }
        let keep = nms_union(&cands, 0.7);
        Ok(keep.into_iter().map(|i| square(regress(cands[i].b, cands[i].reg))).collect())
    }

    /// Stage 3: ONet on 48x48 crops; scores, landmarks and final boxes of
    /// faces scored above `threshold`.
    fn output(&self, img: &Planes, boxes: Vec<[f32; 4]>, threshold: f32) -> Result<Vec<MtcnnFace>> {
        if boxes.is_empty() {
            return Ok(Vec::new());
        }
        let (boxes, input) = crops(img, boxes, 48, &self.device)?;
        let mut faces = Vec::new();
        for (chunk, range) in batches(&input)? {
            let (reg, points, prob) = self.onet.forward(&chunk)?;
            let (reg, points, prob) = (reg.to_vec2::<f32>()?, points.to_vec2::<f32>()?, prob.to_vec2::<f32>()?);
            for (k, i) in range.enumerate() {
                let score = prob[k][1];
                if score <= threshold {
                    continue;
                }
                // Landmarks are fractions of the box ONet saw (before this
                // stage's regression), in inclusive-pixel units.
                let b = boxes[i];
                let (bw, bh) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
                let landmarks =
                    std::array::from_fn(|j| [bw * points[k][j] + b[0] - 1.0, bh * points[k][j + 5] + b[1] - 1.0]);
                faces.push(MtcnnFace { bbox: regress(b, row4(&reg[k])), score, landmarks });
            }
        }
        let keep = nms_min(&faces, 0.7);
        Ok(keep.into_iter().map(|i| faces[i].clone()).collect())
    }
}

/// The image as three `f32` planes (R, G, B), values 0-255.
struct Planes {
    width: usize,
    height: usize,
    data: Vec<f32>,
}

/// A pixel rectangle: top-left corner and size.
#[derive(Clone, Copy)]
struct Rect {
    x: usize,
    y: usize,
    w: usize,
    h: usize,
}

impl Planes {
    fn from_rgb(img: &RgbImage) -> Planes {
        let (width, height) = (img.width() as usize, img.height() as usize);
        let mut data = vec![0f32; 3 * width * height];
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                data[c * width * height + i] = p.0[c] as f32;
            }
        }
        Planes { width, height, data }
    }

    /// Resizes `src` to `out_w` x `out_h` as torch's `interpolate(mode="area")`
    /// (adaptive average pooling: output cell `i` averages input rows
    /// `floor(i*in/out)..ceil((i+1)*in/out)`, the sum divided by the row
    /// count and then by the column count, in `f32`), then normalises to
    /// `(v - 127.5) / 128`; appends the three planes to `out`.
    fn resample_into(&self, src: Rect, out_w: usize, out_h: usize, out: &mut Vec<f32>) {
        let start = out.len();
        out.resize(start + 3 * out_h * out_w, 0.0);
        // Pyramid levels in parallel; small crops (RNet's, ONet's) are not
        // worth the split.
        let parallel = src.w * src.h >= PARALLEL_RESAMPLE_PIXELS;
        self.resample_to(src, out_w, out_h, &mut out[start..], true, parallel);
    }

    /// [`Planes::resample_into`] into `dst` (three planes of `out_w` x
    /// `out_h`), normalised or not, its rows in parallel or not.
    fn resample_to(&self, src: Rect, out_w: usize, out_h: usize, dst: &mut [f32], normalise: bool, parallel: bool) {
        let span = |i: usize, out: usize, inp: usize| (i * inp / out, ((i + 1) * inp).div_ceil(out));
        // Output row `r` of the three planes, one after another.
        let row = |(r, dst): (usize, &mut [f32])| {
            let (c, oy) = (r / out_h, r % out_h);
            let plane = &self.data[c * self.width * self.height..(c + 1) * self.width * self.height];
            let (y0, y1) = span(oy, out_h, src.h);
            for (ox, v) in dst.iter_mut().enumerate() {
                let (x0, x1) = span(ox, out_w, src.w);
                let mut sum = 0f32;
                for y in src.y + y0..src.y + y1 {
                    let line = &plane[y * self.width..(y + 1) * self.width];
                    sum += line[src.x + x0..src.x + x1].iter().sum::<f32>();
                }
                let mean = sum / (y1 - y0) as f32 / (x1 - x0) as f32;
                *v = if normalise { (mean - 127.5) * 0.0078125 } else { mean };
            }
        };
        match parallel {
            true => dst.par_chunks_mut(out_w.max(1)).enumerate().for_each(row),
            false => dst.chunks_mut(out_w.max(1)).enumerate().for_each(row),
        }
    }

    /// The whole image resized (area) to `out_w` x `out_h`, not normalised:
    /// a smaller source for the pyramid's other levels.
    fn resized(&self, out_w: usize, out_h: usize) -> Planes {
        let mut data = vec![0f32; 3 * out_w * out_h];
        let all = Rect { x: 0, y: 0, w: self.width, h: self.height };
        self.resample_to(all, out_w, out_h, &mut data, false, true);
        Planes { width: out_w, height: out_h, data }
    }
}

/// The integer pixel window facenet's `pad` cuts for a box: corners
/// truncated toward zero, the top-left clamped to 1 and the bottom-right to
/// the image size, then rows `y-1..ey` and columns `x-1..ex`. `None` when
/// that window is empty (facenet would fail on such a box; here it is
/// dropped).
fn crop_window(b: &[f32; 4], width: usize, height: usize) -> Option<Rect> {
    let x = (b[0].trunc() as i64).max(1);
    let y = (b[1].trunc() as i64).max(1);
    let ex = (b[2].trunc() as i64).min(width as i64);
    let ey = (b[3].trunc() as i64).min(height as i64);
    (ex > x - 1 && ey > y - 1).then(|| Rect {
        x: (x - 1) as usize,
        y: (y - 1) as usize,
        w: (ex - x + 1) as usize,
        h: (ey - y + 1) as usize,
    })
}

/// Cuts and resizes each box's window to `size` x `size` into one
/// normalised batch; returns the boxes kept (those with a non-empty window)
/// in batch order.
fn crops(img: &Planes, boxes: Vec<[f32; 4]>, size: usize, device: &Device) -> Result<(Vec<[f32; 4]>, Tensor)> {
    let (kept, windows): (Vec<[f32; 4]>, Vec<Rect>) =
        boxes.into_iter().filter_map(|b| Some((b, crop_window(&b, img.width, img.height)?))).unzip();
    let mut data = vec![0f32; windows.len() * 3 * size * size];
    // One crop per task.
    data.par_chunks_mut(3 * size * size)
        .zip(&windows)
        .for_each(|(dst, win)| img.resample_to(*win, size, size, dst, true, false));
    let input = Tensor::from_vec(data, (kept.len(), 3, size, size), device)?;
    Ok((kept, input))
}

/// Splits a batch into chunks of at most [`CROP_BATCH`], with the range of
/// batch rows each covers.
fn batches(input: &Tensor) -> Result<Vec<(Tensor, std::ops::Range<usize>)>> {
    let n = input.dim(0)?;
    (0..n)
        .step_by(CROP_BATCH)
        .map(|s| {
            let len = CROP_BATCH.min(n - s);
            Ok((input.narrow(0, s, len)?, s..s + len))
        })
        .collect()
}

fn row4(r: &[f32]) -> [f32; 4] {
    [r[0], r[1], r[2], r[3]]
}

/// A candidate window with its score and the box regression predicted for it.
#[derive(Clone, Copy)]
struct Cand {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
}

/// PNet's output map ([`PNet::forward`]) to windows in image pixels: each
/// cell whose face probability is at least `threshold` stands for a 12x12
/// window at stride 2 in the scaled image. Cells in row-major order.
fn pnet_candidates(heads: &Tensor, scale: f32, threshold: f32) -> Result<Vec<Cand>> {
    let (_, _, h, w) = heads.dims4()?;
    let v: Vec<f32> = heads.flatten_all()?.to_vec1()?;
    let plane = |c: usize| &v[c * h * w..(c + 1) * h * w];
    let (background, face) = (plane(0), plane(1));
    let mut out = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            // The face class's softmax probability, computed as
            // `softmax_classes` does.
            let m = background[i].max(face[i]);
            let (eb, ef) = ((background[i] - m).exp(), (face[i] - m).exp());
            let p = ef / (eb + ef);
            if p >= threshold {
                let (fx, fy) = (x as f32, y as f32);
                let b = [
                    ((2.0 * fx + 1.0) / scale).floor(),
                    ((2.0 * fy + 1.0) / scale).floor(),
                    ((2.0 * fx + 12.0) / scale).floor(),
                    ((2.0 * fy + 12.0) / scale).floor(),
                ];
                out.push(Cand { b, score: p, reg: std::array::from_fn(|k| plane(2 + k)[i]) });
            }
        }
    }
    Ok(out)
}

/// Box regression of stages 2 and 3 (offsets relative to the inclusive
/// width and height).
fn regress(b: [f32; 4], reg: [f32; 4]) -> [f32; 4] {
    let (w, h) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
    [b[0] + reg[0] * w, b[1] + reg[1] * h, b[2] + reg[2] * w, b[3] + reg[3] * h]
}

/// facenet's `rerec`: the square with the box's centre and longer side.
fn square(b: [f32; 4]) -> [f32; 4] {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let l = w.max(h);
    let x1 = b[0] + w * 0.5 - l * 0.5;
    let y1 = b[1] + h * 0.5 - l * 0.5;
    [x1, y1, x1 + l, y1 + l]
}

/// torchvision's `nms` (IoU with areas `w*h`, suppressing IoU above
/// `threshold`), visiting by score, highest first (ties in input order).
/// Returns the kept indices in that order.
fn nms_union(c: &[Cand], threshold: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&a, &b| c[b].score.total_cmp(&c[a].score));
    let area = |b: &[f32; 4]| (b[2] - b[0]) * (b[3] - b[1]);
    let mut suppressed = vec![false; c.len()];
    let mut keep = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let bi = &c[i].b;
        for &j in &order[k + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = &c[j].b;
            let iw = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
            let ih = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
            let inter = iw * ih;
            if inter / (area(bi) + area(bj) - inter) > threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// facenet's numpy NMS with the "Min" overlap (intersection over the
/// smaller box, areas with +1 pixel), keeping overlaps up to `threshold`.
/// Returns the kept indices, highest score first.
fn nms_min(faces: &[MtcnnFace], threshold: f32) -> Vec<usize> {
    // np.argsort ascending, then repeatedly take the last.
    let mut order: Vec<usize> = (0..faces.len()).collect();
    order.sort_by(|&a, &b| faces[a].score.total_cmp(&faces[b].score));
    let area = |b: &[f32; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let mut keep = Vec::new();
    while let Some(i) = order.pop() {
        keep.push(i);
        let bi = &faces[i].bbox;
        order.retain(|&j| {
            let bj = &faces[j].bbox;
            let iw = (bi[2].min(bj[2]) - bi[0].max(bj[0]) + 1.0).max(0.0);
            let ih = (bi[3].min(bj[3]) - bi[1].max(bj[1]) + 1.0).max(0.0);
            iw * ih / area(bi).min(area(bj)) <= threshold
        });
    }
    keep
}

/// A state dict and the device its parameters are moved to.
struct Params<'a> {
    sd: &'a StateDict,
    device: &'a Device,
}

impl Params<'_> {
    /// The parameter `name` as `f32` on the device, checked to be `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.sd.get(name).ok_or_else(|| Error::Msg(format!("missing parameter {name}")))?;
        if t.dims() != shape {
            return Err(Error::Msg(format!("{name} has shape {:?}, expected {shape:?}", t.dims())));
        }
        t.to_dtype(DType::F32)?.to_device(self.device)
    }
}

/// A valid (unpadded) stride-1 convolution with bias.
struct Conv {
    weight: Tensor,
    bias: Tensor,
    /// Host copies of the filters and bias for the CPU's direct convolution
    /// ([`crate::conv`]); `None` on a GPU, where candle's runs.
    host: Option<(Vec<f32>, Vec<f32>)>,
    kernel: usize,
}

impl Conv {
    fn new(p: &Params, name: &str, c_in: usize, c_out: usize, k: usize) -> Result<Conv> {
        let weight = p.get(&format!("{name}.weight"), &[c_out, c_in, k, k])?;
        let bias = p.get(&format!("{name}.bias"), &[c_out])?;
        let host = match weight.device().is_cpu() {
            true => Some((weight.flatten_all()?.to_vec1()?, bias.to_vec1()?)),
            false => None,
        };
        Ok(Conv { weight, bias: bias.reshape((1, c_out, 1, 1))?, host, kernel: k })
    }

    /// One convolution computing `a`'s output channels then `b`'s (same
    /// input and kernel).
    fn stacked(a: &Conv, b: &Conv) -> Result<Conv> {
        let weight = Tensor::cat(&[&a.weight, &b.weight], 0)?;
        let bias = Tensor::cat(&[&a.bias, &b.bias], 1)?;
        let host = match (&a.host, &b.host) {
            (Some((wa, ba)), Some((wb, bb))) => Some(([&wa[..], wb].concat(), [&ba[..], bb].concat())),
            _ => None,
        };
        Ok(Conv { weight, bias, host, kernel: a.kernel })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.host(x, Activation::Linear)? {
            Some(y) => Ok(y),
            None => x.conv2d(&self.weight, 0, 1, 1, 1)?.broadcast_add(&self.bias),
        }
    }

    /// The convolution followed by `prelu` (fused into it on the CPU).
    fn forward_prelu(&self, x: &Tensor, prelu: &PRelu) -> Result<Tensor> {
        match self.host(x, Activation::PRelu(&prelu.host))? {
            Some(y) => Ok(y),
            None => prelu.forward(&self.forward(x)?),
        }
    }

    /// The CPU's own convolution ([`crate::conv`]); `None` on a GPU.
    fn host(&self, x: &Tensor, activation: Activation<'_>) -> Result<Option<Tensor>> {
        let Some((w, b)) = &self.host else { return Ok(None) };
        crate::conv::conv2d(x, w, b, self.kernel, 0, 1, activation).map(Some).map_err(|e| Error::Msg(e.to_string()))
    }
}

/// A fully connected layer, `x W^T + b`.
struct Linear {
    weight_t: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(p: &Params, name: &str, n_in: usize, n_out: usize) -> Result<Linear> {
        Ok(Linear {
            weight_t: p.get(&format!("{name}.weight"), &[n_out, n_in])?.t()?.contiguous()?,
            bias: p.get(&format!("{name}.bias"), &[n_out])?.reshape((1, n_out))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

/// PReLU with one slope per channel (dimension 1 of the input).
struct PRelu {
    slope: Tensor,
    /// The slopes on the host, for fusing into a convolution.
    host: Vec<f32>,
}

impl PRelu {
    /// `rank` is that of the inputs: 4 after a convolution, 2 after a
    /// dense layer.
    fn new(p: &Params, name: &str, channels: usize, rank: usize) -> Result<PRelu> {
        let mut shape = vec![1; rank];
        shape[1] = channels;
        let slope = p.get(&format!("{name}.weight"), &[channels])?;
        Ok(PRelu { host: slope.to_vec1()?, slope: slope.reshape(shape)? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.relu()? + x.minimum(0f32)?.broadcast_mul(&self.slope)?
    }
}

/// Max pooling with torch's `ceil_mode=True`: a last, partial window covers
/// the tail of the input (the maximum of what it covers).
fn max_pool_ceil(x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let cells = |len: usize| len.saturating_sub(k).div_ceil(stride) + 1;
    let (oh, ow) = (cells(h), cells(w));
    if !x.device().is_cpu() {
        // On a GPU: pad bottom and right with -inf, then candle's pooling.
        let mut x = x.clone();
        let (ph, pw) = ((oh - 1) * stride + k, (ow - 1) * stride + k);
        if ph > h {
            x = Tensor::cat(&[&x, &Tensor::full(f32::NEG_INFINITY, (n, c, ph - h, w), x.device())?], 2)?;
        }
        if pw > w {
            x = Tensor::cat(&[&x, &Tensor::full(f32::NEG_INFINITY, (n, c, ph, pw - w), x.device())?], 3)?;
        }
        return x.max_pool2d_with_stride(k, stride);
    }
    let out = crate::conv::with_values(x, |input| {
        let mut out = vec![0f32; n * c * oh * ow];
        // Separable: each input row's maxima over the windows' columns, then
        // the maxima of those over the windows' rows.
        out.par_chunks_mut(oh * ow).zip(input.par_chunks(h * w)).for_each(|(dst, src)| {
            let mut across = vec![f32::NEG_INFINITY; h * ow];
            for (line, maxima) in src.chunks(w).zip(across.chunks_mut(ow)) {
                for (ox, m) in maxima.iter_mut().enumerate() {
                    let x0 = ox * stride;
                    *m = line[x0..(x0 + k).min(w)].iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
                }
            }
            for (oy, row) in dst.chunks_mut(ow).enumerate() {
                let y0 = oy * stride;
                row.copy_from_slice(&across[y0 * ow..][..ow]);
                for maxima in across[(y0 + 1) * ow..(y0 + k).min(h) * ow].chunks(ow) {
                    row.iter_mut().zip(maxima).for_each(|(m, v)| *m = m.max(*v));
                }
            }
        });
        Ok(out)
    })
    .map_err(|e| Error::Msg(e.to_string()))?;
    Tensor::from_vec(out, (n, c, oh, ow), x.device())
}

/// Softmax over dimension 1 (the class scores: background, face).
fn softmax_classes(x: &Tensor) -> Result<Tensor> {
    let e = x.broadcast_sub(&x.max_keepdim(1)?)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(1)?)
}

/// facenet flattens RNet's and ONet's last feature maps as `[N, W, H, C]`
/// (a permute left from a TensorFlow port); the dense weights expect it.
fn flatten_whc(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 3, 2, 1))?.contiguous()?.flatten_from(1)
}

/// Proposal network: fully convolutional over a whole pyramid level.
struct PNet {
    conv1: Conv,
    prelu1: PRelu,
    conv2: Conv,
    prelu2: PRelu,
    conv3: Conv,
    prelu3: PRelu,
    /// The two 1×1 heads in one convolution: class scores (`conv4_1`, 2
    /// channels) then box regression (`conv4_2`, 4).
    heads: Conv,
}

impl PNet {
    fn new(p: &Params) -> Result<PNet> {
        Ok(PNet {
            conv1: Conv::new(p, "conv1", 3, 10, 3)?,
            prelu1: PRelu::new(p, "prelu1", 10, 4)?,
            conv2: Conv::new(p, "conv2", 10, 16, 3)?,
            prelu2: PRelu::new(p, "prelu2", 16, 4)?,
            conv3: Conv::new(p, "conv3", 16, 32, 3)?,
            prelu3: PRelu::new(p, "prelu3", 32, 4)?,
            heads: Conv::stacked(&Conv::new(p, "conv4_1", 32, 2, 1)?, &Conv::new(p, "conv4_2", 32, 4, 1)?)?,
        })
    }

    /// `[1, 3, H, W]` -> `[1, 6, h, w]`: the class scores (background,
    /// face; before the softmax) then the box regression.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.conv1.forward_prelu(x, &self.prelu1)?;
        let x = max_pool_ceil(&x, 2, 2)?;
        let x = self.conv2.forward_prelu(&x, &self.prelu2)?;
        let x = self.conv3.forward_prelu(&x, &self.prelu3)?;
        self.heads.forward(&x)
    }
}

/// Refinement network on 24x24 crops.
struct RNet {
    conv1: Conv,
    prelu1: PRelu,
    conv2: Conv,
    prelu2: PRelu,
    conv3: Conv,
    prelu3: PRelu,
    dense4: Linear,
    prelu4: PRelu,
    dense5_1: Linear,
    dense5_2: Linear,
}

impl RNet {
    fn new(p: &Params) -> Result<RNet> {
        Ok(RNet {
            conv1: Conv::new(p, "conv1", 3, 28, 3)?,
            prelu1: PRelu::new(p, "prelu1", 28, 4)?,
            conv2: Conv::new(p, "conv2", 28, 48, 3)?,
            prelu2: PRelu::new(p, "prelu2", 48, 4)?,
            conv3: Conv::new(p, "conv3", 48, 64, 2)?,
            prelu3: PRelu::new(p, "prelu3", 64, 4)?,
            dense4: Linear::new(p, "dense4", 576, 128)?,
            prelu4: PRelu::new(p, "prelu4", 128, 2)?,
            dense5_1: Linear::new(p, "dense5_1", 128, 2)?,
            dense5_2: Linear::new(p, "dense5_2", 128, 4)?,
        })
    }

    /// `[N, 3, 24, 24]` -> (box regression `[N, 4]`, probabilities `[N, 2]`).
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = max_pool_ceil(&self.conv1.forward_prelu(x, &self.prelu1)?, 3, 2)?;
        let x = max_pool_ceil(&self.conv2.forward_prelu(&x, &self.prelu2)?, 3, 2)?;
        let x = self.conv3.forward_prelu(&x, &self.prelu3)?;
        let x = self.prelu4.forward(&self.dense4.forward(&flatten_whc(&x)?)?)?;
        Ok((self.dense5_2.forward(&x)?, softmax_classes(&self.dense5_1.forward(&x)?)?))
    }
}

/// Output network on 48x48 crops.
struct ONet {
    conv1: Conv,
    prelu1: PRelu,
    conv2: Conv,
    prelu2: PRelu,
    conv3: Conv,
    prelu3: PRelu,
    conv4: Conv,
    prelu4: PRelu,
    dense5: Linear,
    prelu5: PRelu,
    dense6_1: Linear,
    dense6_2: Linear,
    dense6_3: Linear,
}

impl ONet {
    fn new(p: &Params) -> Result<ONet> {
        Ok(ONet {
            conv1: Conv::new(p, "conv1", 3, 32, 3)?,
            prelu1: PRelu::new(p, "prelu1", 32, 4)?,
            conv2: Conv::new(p, "conv2", 32, 64, 3)?,
            prelu2: PRelu::new(p, "prelu2", 64, 4)?,
            conv3: Conv::new(p, "conv3", 64, 64, 3)?,
            prelu3: PRelu::new(p, "prelu3", 64, 4)?,
            conv4: Conv::new(p, "conv4", 64, 128, 2)?,
            prelu4: PRelu::new(p, "prelu4", 128, 4)?,
            dense5: Linear::new(p, "dense5", 1152, 256)?,
            prelu5: PRelu::new(p, "prelu5", 256, 2)?,
            dense6_1: Linear::new(p, "dense6_1", 256, 2)?,
            dense6_2: Linear::new(p, "dense6_2", 256, 4)?,
            dense6_3: Linear::new(p, "dense6_3", 256, 10)?,
        })
    }

    /// `[N, 3, 48, 48]` -> (box regression `[N, 4]`, landmarks `[N, 10]`
    /// (five x fractions, then five y fractions of the crop), probabilities
    /// `[N, 2]`).
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let x = max_pool_ceil(&self.conv1.forward_prelu(x, &self.prelu1)?, 3, 2)?;
        let x = max_pool_ceil(&self.conv2.forward_prelu(&x, &self.prelu2)?, 3, 2)?;
        let x = max_pool_ceil(&self.conv3.forward_prelu(&x, &self.prelu3)?, 2, 2)?;
        let x = self.conv4.forward_prelu(&x, &self.prelu4)?;
        let x = self.prelu5.forward(&self.dense5.forward(&flatten_whc(&x)?)?)?;
        Ok((self.dense6_2.forward(&x)?, self.dense6_3.forward(&x)?, softmax_classes(&self.dense6_1.forward(&x)?)?))
    }
}
