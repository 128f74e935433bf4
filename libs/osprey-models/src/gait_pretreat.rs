//! OpenGait's silhouette pretreatment (`datasets/pretreatment.py`, then the
//! `BaseSilCuttingTransform` applied at load): an 8-bit grey or binary
//! silhouette of any size → a 64×44 frame for [`crate::gaitbase`].
//!
//! Per frame, as OpenGait does it:
//! 1. a frame whose pixel values sum to at most [`MIN_SUM`] (10 000, about 40
//!    foreground pixels) holds no person and is dropped;
//! 2. the rows from the first to the last with any foreground are kept
//!    (all columns);
//! 3. that crop is resized to height 64 and width ⌊64 · w / h⌋ (aspect
//!    kept, truncated) with OpenCV's `cv2.resize(…, INTER_CUBIC)`, whose
//!    arithmetic [`resize_cubic`] reproduces;
//! 4. the horizontal centre is the first column where the cumulative column
//!    sum exceeds half the total; a frame without one, or whose centre is
//!    column 0, is dropped (OpenGait tests the index for truth);
//! 5. a 64-wide window centred there is taken; when it would reach the
//!    first column or run past the last, 32 zero columns are first added on
//!    both sides. The 64×64 result is what OpenGait stores;
//! 6. at load the 10 outer columns on each side are cut → 64×44 ([`cut`]),
//!    and values are divided by 255 for the model ([`to_tensor`]).
//!
//! A crop so tall and thin that its width rounds down to 0 columns (which
//! makes OpenCV fail in OpenGait's script) is dropped as well.
//!
//! ## The resize
//! OpenCV's own bicubic for 8-bit images (`resizeGeneric_` with
//! `HResizeCubic`/`VResizeCubic`): source coordinate x = (d + ½)·(src/dst) − ½
//! in float32, Keys' kernel with A = −0.75 evaluated in float32, weights
//! rounded to 11-bit fixed point (×2048, half to even); the horizontal pass
//! sums integers with the border replicated; the vertical pass, also with
//! replicated rows, runs OpenCV's x86-64 SIMD form on each full group of 8
//! output columns (float32: weights ×2⁻²², the sum
//! S0·b0 + (S1·b1 + (S2·b2 + S3·b3)), rounded half to even) and the integer
//! form, (Σ Sk·bk + 2²¹) >> 22, on the remaining columns; then saturation to
//! 0..255. This is bit-exact with `cv2.resize` on x86-64 when OpenCV's own
//! code runs. The x86-64 wheels of opencv-python also contain Intel IPP,
//! which by default replaces this code for 8-bit bicubic resizes with IPP's
//! closed implementation; that differs by ±1 in a few pixels per frame
//! (about 5 of 2 000 on typical silhouettes). `cv2.ipp.setUseIPP(False)`
//! gives OpenCV's own result, which is what this module matches.

use candle_core::{Device, Tensor};
use osprey_core::{Error, ErrorKind, Result};

/// Frames whose pixel values sum to at most this are dropped as empty.
pub const MIN_SUM: u64 = 10_000;
/// Side of OpenGait's stored frames (height, and the window width).
pub const SIZE: usize = 64;
/// Columns cut from each side at load.
pub const CUT: usize = 10;
/// Width of a frame for the model.
pub const WIDTH: usize = SIZE - 2 * CUT;
/// OpenCV's fixed-point precision for 8-bit resize weights.
const COEF_BITS: u32 = 11;
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;
/// Output columns per SIMD group in OpenCV's vertical pass (x86-64 baseline:
/// 128-bit registers, eight 16-bit lanes).
const SIMD_GROUP: usize = 8;

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// Keys' cubic convolution weights for the four taps around a sample at
/// fractional offset `x`, as OpenCV's `interpolateCubic` computes them.
fn cubic_weights(x: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let c0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let c1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    let c3 = 1.0 - c0 - c1 - c2;
    [c0, c1, c2, c3]
}

/// For each output index: the first of the four source taps (may lie
/// outside the image; the border is replicated) and the fixed-point weights.
fn taps(src: usize, dst: usize) -> Vec<(i64, [i32; 4])> {
    let scale = 1.0 / (dst as f64 / src as f64);
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor();
            let w = cubic_weights(f - s);
            // saturate_cast<short>(w·2048): round half to even, clamp.
            let fixed = w.map(|c| ((c * COEF_SCALE).round_ties_even() as i32).clamp(i16::MIN as i32, i16::MAX as i32));
            (s as i64 - 1, fixed)
        })
        .collect()
}

fn clamp_index(i: i64, len: usize) -> usize {
    i.clamp(0, len as i64 - 1) as usize
}

/// `cv2.resize(img, (dst_w, dst_h), interpolation=cv2.INTER_CUBIC)` for a
/// single-channel 8-bit image stored row by row (see the module notes).
pub fn resize_cubic(pixels: &[u8], width: usize, height: usize, dst_w: usize, dst_h: usize) -> Result<Vec<u8>> {
    if width == 0 || height == 0 || dst_w == 0 || dst_h == 0 {
        return Err(invalid(format!("cannot resize {width}×{height} to {dst_w}×{dst_h}")));
    }
    if pixels.len() != width * height {
        return Err(invalid(format!("{} bytes for a {width}×{height} grey image", pixels.len())));
    }
    let xt = taps(width, dst_w);
    let yt = taps(height, dst_h);
    // Horizontal pass on every source row (integers, exact).
    let mut rows = vec![0i64; height * dst_w];
    for (y, out) in rows.chunks_mut(dst_w).enumerate() {
        let src = &pixels[y * width..(y + 1) * width];
        for (o, (x0, w)) in out.iter_mut().zip(&xt) {
            *o = (0..4).map(|j| src[clamp_index(x0 + j as i64, width)] as i64 * w[j] as i64).sum();
        }
    }
    // Vertical pass.
    let simd_cols = dst_w / SIMD_GROUP * SIMD_GROUP;
    let unit = 1.0f32 / (COEF_SCALE * COEF_SCALE);
    let mut dst = vec![0u8; dst_w * dst_h];
    for (out, (y0, w)) in dst.chunks_mut(dst_w).zip(&yt) {
        let r: [&[i64]; 4] = std::array::from_fn(|k| {
            let y = clamp_index(y0 + k as i64, height);
            &rows[y * dst_w..(y + 1) * dst_w]
        });
        let b: [f32; 4] = w.map(|c| c as f32 * unit);
        for (x, o) in out.iter_mut().enumerate() {
            let v = if x < simd_cols {
                let s = |k: usize| r[k][x] as f32 * b[k];
                (s(0) + (s(1) + (s(2) + s(3)))).round_ties_even() as i64
            } else {
                ((0..4).map(|k| r[k][x] * w[k] as i64).sum::<i64>() + (1 << (2 * COEF_BITS - 1))) >> (2 * COEF_BITS)
            };
            *o = v.clamp(0, 255) as u8;
        }
    }
    Ok(dst)
}

/// One silhouette (8-bit grey, `width`×`height`, row by row) as OpenGait
/// stores it: 64×64 bytes, or `None` when OpenGait drops the frame (steps 1
/// and 4 of the module notes).
pub fn pretreat_frame(pixels: &[u8], width: usize, height: usize) -> Result<Option<Vec<u8>>> {
    if pixels.len() != width * height {
        return Err(invalid(format!("{} bytes for a {width}×{height} grey image", pixels.len())));
    }
    if pixels.iter().map(|&v| v as u64).sum::<u64>() <= MIN_SUM {
        return Ok(None);
    }
    // Rows with foreground: the sum above guarantees at least one.
    let filled = |y: &usize| pixels[y * width..(y + 1) * width].iter().any(|&v| v != 0);
    let (Some(top), Some(bottom)) = ((0..height).find(filled), (0..height).rev().find(filled)) else {
        return Ok(None);
    };
    let crop = &pixels[top * width..(bottom + 1) * width];
    let crop_h = bottom + 1 - top;
    // Python: int(64 * (w / h)), truncation toward zero of a float64.
    let new_w = (SIZE as f64 * (width as f64 / crop_h as f64)) as usize;
    if new_w == 0 {
        return Ok(None);
    }
    let img = resize_cubic(crop, width, crop_h, new_w, SIZE)?;
    // Horizontal centre: first column whose cumulative sum exceeds half the total.
    let mut col = vec![0u64; new_w];
    for row in img.chunks(new_w) {
        for (c, &v) in col.iter_mut().zip(row) {
            *c += v as u64;
        }
    }
    let total: u64 = col.iter().sum();
    let mut acc = 0u64;
    let centre = col.iter().position(|&c| {
        acc += c;
        2 * acc > total
    });
    let centre = match centre {
        Some(c) if c > 0 => c as i64,
        _ => return Ok(None),
    };
    let half = (SIZE / 2) as i64;
    let (mut left, right) = (centre - half, centre + half);
    let pad = left <= 0 || right >= new_w as i64;
    if pad {
        left += half;
    }
    // The window in the (possibly padded) image, read from the unpadded one.
    let offset = if pad { half } else { 0 };
    let mut out = vec![0u8; SIZE * SIZE];
    for (y, dst) in out.chunks_mut(SIZE).enumerate() {
        let src = &img[y * new_w..(y + 1) * new_w];
        for (i, d) in dst.iter_mut().enumerate() {
            let x = left + i as i64 - offset;
            if (0..new_w as i64).contains(&x) {
                *d = src[x as usize];
            }
        }
    }
    Ok(Some(out))
}

/// OpenGait's load-time cut: the 64×64 stored frame without its 10 outer
/// columns on each side → 64×44 bytes.
pub fn cut(frame: &[u8]) -> Result<Vec<u8>> {
    if frame.len() != SIZE * SIZE {
        return Err(invalid(format!("a stored frame is {SIZE}×{SIZE} bytes, got {}", frame.len())));
    }
    Ok(frame.chunks(SIZE).flat_map(|row| row[CUT..SIZE - CUT].iter().copied()).collect())
}

/// A whole sequence: every frame through [`pretreat_frame`] and [`cut`], the
/// dropped ones left out, in order. Each input is (pixels, width, height).
pub fn pretreat_sequence<'a>(frames: impl IntoIterator<Item = (&'a [u8], usize, usize)>) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for (pixels, w, h) in frames {
        if let Some(f) = pretreat_frame(pixels, w, h)? {
            out.push(cut(&f)?);
        }
    }
    Ok(out)
}

/// One sequence of 64×44 frames as GaitBase's input [1, s, 64, 44], values /255.
pub fn to_tensor(frames: &[Vec<u8>], device: &Device) -> Result<Tensor> {
    if frames.is_empty() {
        return Err(invalid("a gait sequence needs at least one frame".into()));
    }
    let mut data = Vec::with_capacity(frames.len() * SIZE * WIDTH);
    for f in frames {
        if f.len() != SIZE * WIDTH {
            return Err(invalid(format!("a gait frame is {SIZE}×{WIDTH} bytes, got {}", f.len())));
        }
        // OpenGait divides in float64, then the tensor becomes float32.
        data.extend(f.iter().map(|&v| (v as f64 / 255.0) as f32));
    }
    Tensor::from_vec(data, (1, frames.len(), SIZE, WIDTH), device)
        .map_err(|e| Error::internal(format!("tensor computation failed: {e}")))
}
