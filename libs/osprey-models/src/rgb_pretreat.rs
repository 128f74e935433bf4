//! OpenGait's RGB pretreatment (`datasets/pretreatment_rgb.py` at
//! ShiqiYu/OpenGait@0efafd47), which makes the 256×128 frames BigGait
//! ([`crate::biggait`]) is trained and evaluated on, byte for byte.
//!
//! # What upstream does, per frame
//!
//! The script reads each frame with `cv2.imread` (8-bit BGR) and records
//! `ratio = width / height` (a Python float; OpenGait's loader later turns
//! the pickled float64 array into float32). The frame is resized with
//! `cv2.resize` and its default interpolation, `INTER_LINEAR`, to height 256
//! and width `int(width · 256 / height)` (aspect kept, truncated; for any
//! real image size that equals the integer floor ⌊256·w / h⌋, since the
//! float64 quotient cannot round up across an integer when h < 2⁵²). Then,
//! with `x_offset = (128 − rw) // 2` (Python's floor division, so −55 // 2 is
//! −28):
//! * `x_offset ≥ 0` (narrow frames): the resized frame is placed at column
//!   `x_offset` of a zeroed 256×128 image;
//! * `x_offset < 0` (frames wider than half their height): columns
//!   `|x_offset| .. |x_offset| + 128` are kept. Floor division puts the odd
//!   column on the left: rw = 183 keeps columns 28..156.
//!
//! Finally BGR → RGB. Resizing works on each channel alike, so running it on
//! RGB input, as [`pretreat_frame`] does, gives the same bytes.
//!
//! # OpenCV's bilinear resize of 8-bit images
//!
//! [`resize_linear`] reproduces `cv2.resize(img, (dst_w, dst_h))` of
//! opencv-python 4.10.0 on x86-64, as read from OpenCV's `resize.cpp` and
//! checked byte for byte: 800 random resizes of noise and smooth images
//! with 1–4 channels, sizes 1–400 up, down, by exactly 2 and to height 256
//! (2.5·10⁸ output bytes, all identical), the whole pretreatment of 300
//! random crops of Market-1501 frames as OpenCV decodes them (all
//! identical), and the committed cases of
//! `infra/scripts/cv_resize_reference.py`:
//!
//! * Same size: a copy.
//! * Scale factor exactly 2 in both axes (source twice the destination, as
//!   `1 / (dst / src)` in float64 tested against the nearest integer within
//!   `DBL_EPSILON`): OpenCV switches to its `INTER_AREA` fast path, the mean
//!   of each 2×2 block. With 1, 3 or 4 channels that is
//!   `(a + b + c + d + 2) >> 2` (ties up); with 2 channels the generic area
//!   code multiplies the integer sum by the float 0.25 and rounds half to
//!   even.
//! * Otherwise, separable bilinear in 11-bit fixed point. For destination
//!   index d the source coordinate is `f = (float)((d + ½)·s − ½)` with
//!   `s = 1 / (dst / src)` in float64, rounded once to float32;
//!   `i = ⌊f⌋`, `t = f − i` (float32); weights `round((1 − t)·2048)` and
//!   `round(t·2048)`, rounded half to even (`saturate_cast<short>`).
//!   Horizontally, a coordinate left of the first pixel (`i < 0`) becomes
//!   `i = 0, t = 0` and one at or right of the last becomes `i = w − 1,
//!   t = 0`; the horizontal pass sums `pixel · weight` exactly in 32-bit
//!   integers (values up to 255·2048). Vertically the weights are not
//!   clamped: only the two source rows `i` and `i + 1` are clamped into
//!   the image, so at the top and bottom edges a row meets itself with the
//!   unclamped weights.
//! * The vertical pass does not compute the exactly rounded
//!   `(S0·b0 + S1·b1 + 2²¹) >> 22`. OpenCV's SIMD code shifts each 32-bit
//!   horizontal sum right by 4 (to fit 16 bits, saturating), keeps the high
//!   16 bits of its 32-bit product with the weight (`mulhi`, a floor), adds
//!   the two and rounds away the last 2 bits:
//!   `(⌊(S0>>4)·b0 / 2¹⁶⌋ + ⌊(S1>>4)·b1 / 2¹⁶⌋ + 2) >> 2`, saturated to
//!   0..255. Its scalar tail (the columns after the last full vector) uses
//!   the same formula in plain C (OpenCV specialises the 8-bit vertical
//!   pass for this), so every byte of a row follows it, whatever the row
//!   length: nothing depends on the SIMD width. The truncations can make a
//!   byte differ by 1 from the exactly rounded value.
//! * Intel IPP, which opencv-python also carries, is not used for 8-bit
//!   bilinear resizes (OpenCV refuses IPP there unless inexact results are
//!   allowed), so OpenCV's own code above is what runs.

use candle_core::{Device, Tensor};
use osprey_core::{Error, Result};

/// Height of a pretreated frame.
pub const HEIGHT: usize = 256;
/// Width of a pretreated frame.
pub const WIDTH: usize = 128;

/// OpenCV's fixed-point scale for 8-bit resize weights (11 bits).
const COEF_SCALE: f32 = 2048.0;

/// One pretreated frame, as OpenGait's pickles hold it.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbFrame {
    /// `HEIGHT × WIDTH × 3` bytes, RGB, interleaved, row-major.
    pub pixels: Vec<u8>,
    /// The raw frame's width / height (float64 → float32, as OpenGait's loader gives it).
    pub ratio: f32,
}

/// One axis of the bilinear map: for each destination index, the source
/// index `i = ⌊f⌋` and the 11-bit weights of source `i` and `i + 1`.
struct Axis {
    index: Vec<i64>,
    weights: Vec<[i16; 2]>,
}

impl Axis {
    /// `clamp`: whether coordinates outside `[0, src − 1]` snap to the edge
    /// pixel with weight 0 on the other tap (OpenCV does it horizontally).
    fn new(src: usize, dst: usize, clamp: bool) -> Axis {
        let scale = 1.0 / (dst as f64 / src as f64);
        let mut index = Vec::with_capacity(dst);
        let mut weights = Vec::with_capacity(dst);
        for d in 0..dst {
            let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut i = f.floor() as i64;
            f -= i as f32;
            if clamp {
                if i < 0 {
                    i = 0;
                    f = 0.0;
                }
                if i >= src as i64 - 1 {
                    i = src as i64 - 1;
                    f = 0.0;
                }
            }
            index.push(i);
            weights.push([fixed(1.0 - f), fixed(f)]);
        }
        Axis { index, weights }
    }
}

/// A float32 weight in OpenCV's 11-bit fixed point (`saturate_cast<short>`:
/// round half to even, then clamp).
fn fixed(w: f32) -> i16 {
    (w * COEF_SCALE).round_ties_even().clamp(i16::MIN as f32, i16::MAX as f32) as i16
}

/// The high 16 bits of a 16 × 16-bit signed product (SSE2's `pmulhw`).
fn mulhi(a: i16, b: i16) -> i32 {
    (a as i32 * b as i32) >> 16
}

/// A horizontal sum shifted right by 4 and saturated to 16 bits, as
/// OpenCV's vertical pass narrows it.
fn narrow(s: i32) -> i16 {
    (s >> 4).clamp(i16::MIN as i32, i16::MAX as i32) as i16
}

fn check_image(pixels: &[u8], width: usize, height: usize, channels: usize) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::invalid(format!("cannot resize an empty {width}x{height} image")));
    }
    if !(1..=4).contains(&channels) {
        return Err(Error::invalid(format!("resize takes 1 to 4 interleaved channels, not {channels} channels")));
    }
    let want = width.checked_mul(height).and_then(|n| n.checked_mul(channels));
    if want != Some(pixels.len()) {
        return Err(Error::invalid(format!(
            "a {width}x{height} image of {channels} channels needs {} bytes, got {} bytes",
            want.map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string()),
            pixels.len()
        )));
    }
    Ok(())
}

/// Resizes an 8-bit image of `channels` (1 to 4) interleaved channels,
/// `width × height` pixels row-major, to `dst_w × dst_h` exactly as
/// opencv-python 4.10.0's `cv2.resize(img, (dst_w, dst_h))` does with its
/// default `INTER_LINEAR` (see the module documentation for the arithmetic).
pub fn resize_linear(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    dst_w: usize,
    dst_h: usize,
) -> Result<Vec<u8>> {
    check_image(pixels, width, height, channels)?;
    if dst_w == 0 || dst_h == 0 {
        return Err(Error::invalid(format!("cannot resize {width}x{height} to an empty {dst_w}x{dst_h} image")));
    }
    if (dst_w, dst_h) == (width, height) {
        return Ok(pixels.to_vec());
    }
    if halves(width, dst_w) && halves(height, dst_h) {
        return Ok(area_half(pixels, width, channels, dst_w, dst_h));
    }

    let cn = channels;
    let row_len = dst_w * cn;
    let xs = Axis::new(width, dst_w, true);
    let ys = Axis::new(height, dst_h, false);
    // Horizontal pass of one source row: for each output element the exact
    // sum of the two taps times their weights (at most 255·2048).
    let hpass = |y: usize, out: &mut Vec<i32>| {
        out.clear();
        let row = &pixels[y * width * cn..(y + 1) * width * cn];
        for (&i, &[a0, a1]) in xs.index.iter().zip(&xs.weights) {
            let i = i as usize;
            for k in 0..cn {
                let p0 = row[i * cn + k] as i32;
                // At the right edge the second tap has weight 0 and lies outside.
                let p1 = if i + 1 < width { row[(i + 1) * cn + k] as i32 } else { 0 };
                out.push(p0 * a0 as i32 + p1 * a1 as i32);
            }
        }
    };
    // The two most recent source rows' horizontal sums, by source row.
    let mut cache: [(usize, Vec<i32>); 2] =
        [(usize::MAX, Vec::with_capacity(row_len)), (usize::MAX, Vec::with_capacity(row_len))];
    let mut out = vec![0u8; row_len * dst_h];
    for (d, (&i, &[b0, b1])) in ys.index.iter().zip(&ys.weights).enumerate() {
        let clip = |r: i64| r.clamp(0, height as i64 - 1) as usize;
        let (r0, r1) = (clip(i), clip(i + 1));
        for r in [r0, r1] {
            if cache[0].0 != r && cache[1].0 != r {
                // Replace the row not needed for this output row.
                let slot = if cache[0].0 == r0 || cache[0].0 == r1 { 1 } else { 0 };
                hpass(r, &mut cache[slot].1);
                cache[slot].0 = r;
            }
        }
        let row = |r: usize| if cache[0].0 == r { &cache[0].1 } else { &cache[1].1 };
        let (s0, s1) = (row(r0), row(r1));
        let dst = &mut out[d * row_len..(d + 1) * row_len];
        for ((o, &a), &b) in dst.iter_mut().zip(s0).zip(s1) {
            let v = (mulhi(narrow(a), b0) + mulhi(narrow(b), b1) + 2) >> 2;
            *o = v.clamp(0, 255) as u8;
        }
    }
    Ok(out)
}

/// Whether OpenCV sees an exact factor-2 shrink on this axis (`1 / (dst /
/// src)` within `DBL_EPSILON` of the integer 2).
fn halves(src: usize, dst: usize) -> bool {
    let scale = 1.0 / (dst as f64 / src as f64);
    let nearest = scale.round_ties_even();
    (scale - nearest).abs() < f64::EPSILON && nearest == 2.0
}

/// OpenCV's `INTER_AREA` fast path for an exact 2× shrink (the source is
/// then exactly twice the destination in both axes): the mean of each 2×2
/// block.
fn area_half(pixels: &[u8], width: usize, cn: usize, dst_w: usize, dst_h: usize) -> Vec<u8> {
    debug_assert_eq!(width, 2 * dst_w);
    let src_row = width * cn;
    let mut out = Vec::with_capacity(dst_w * dst_h * cn);
    for dy in 0..dst_h {
        let (top, bottom) = (&pixels[2 * dy * src_row..], &pixels[(2 * dy + 1) * src_row..]);
        for dx in 0..dst_w {
            for k in 0..cn {
                let (a, b) = (2 * dx * cn + k, (2 * dx + 1) * cn + k);
                let sum = top[a] as u32 + top[b] as u32 + bottom[a] as u32 + bottom[b] as u32;
                out.push(if cn == 2 {
                    // The generic area code: float32 sum · 0.25, rounded half to even.
                    (sum as f32 * 0.25).round_ties_even() as u8
                } else {
                    ((sum + 2) >> 2) as u8
                });
            }
        }
    }
    out
}

/// OpenGait's pretreatment of one frame given as RGB (`width × height × 3`
/// bytes, interleaved): resize to height [`HEIGHT`] keeping the aspect
/// ratio, centre-pad or centre-crop the width to [`WIDTH`] (see the module
/// documentation), with the raw frame's width / height.
///
/// A frame so tall and thin that its resized width is 0 columns (OpenCV
/// refuses it) is an error.
pub fn pretreat_frame(rgb: &[u8], width: usize, height: usize) -> Result<RgbFrame> {
    check_image(rgb, width, height, 3)?;
    // Python's int(w * 256 / h): the float64 quotient truncated, which for
    // image sizes is the integer floor (see the module documentation).
    let rw =
        width.checked_mul(HEIGHT).ok_or_else(|| Error::invalid(format!("a {width}-pixel-wide frame is too wide")))?
            / height;
    if rw == 0 {
        return Err(Error::invalid(format!(
            "a {width}x{height} frame resized to height {HEIGHT} would be 0 pixels wide"
        )));
    }
    let resized = resize_linear(rgb, width, height, 3, rw, HEIGHT)?;
    let mut pixels = vec![0u8; HEIGHT * WIDTH * 3];
    // Python's floor division: (128 − rw) // 2.
    let x_offset = (WIDTH as i64 - rw as i64).div_euclid(2);
    for y in 0..HEIGHT {
        let src = &resized[y * rw * 3..(y + 1) * rw * 3];
        let dst = &mut pixels[y * WIDTH * 3..(y + 1) * WIDTH * 3];
        if x_offset >= 0 {
            let x = x_offset as usize;
            dst[x * 3..(x + rw) * 3].copy_from_slice(src);
        } else {
            let x = x_offset.unsigned_abs() as usize;
            dst.copy_from_slice(&src[x * 3..(x + WIDTH) * 3]);
        }
    }
    Ok(RgbFrame { pixels, ratio: (width as f64 / height as f64) as f32 })
}

/// One sequence of pretreated frames as [`crate::biggait::BigGait::forward`]
/// takes it: frames [1, s, 3, HEIGHT, WIDTH] (u8, channel-first) and ratios
/// [1, s] (f32).
pub fn to_tensors(frames: &[RgbFrame], device: &Device) -> Result<(Tensor, Tensor)> {
    if frames.is_empty() {
        return Err(Error::invalid("a gait sequence needs at least one frame, got none"));
    }
    let plane = HEIGHT * WIDTH;
    let mut data: Vec<u8> = Vec::with_capacity(frames.len() * 3 * plane);
    for (n, frame) in frames.iter().enumerate() {
        if frame.pixels.len() != plane * 3 {
            return Err(Error::invalid(format!(
                "frame {n} has {} bytes, a pretreated frame has {HEIGHT}x{WIDTH}x3 = {} bytes",
                frame.pixels.len(),
                plane * 3
            )));
        }
        // Interleaved RGB → one plane per channel.
        for c in 0..3 {
            data.extend(frame.pixels.iter().skip(c).step_by(3));
        }
    }
    let s = frames.len();
    let err = |e: candle_core::Error| Error::internal(format!("building the frame tensors failed: {e}"));
    let images = Tensor::from_vec(data, (1, s, 3, HEIGHT, WIDTH), device).map_err(err)?;
    let ratios = Tensor::from_vec(frames.iter().map(|f| f.ratio).collect::<Vec<f32>>(), (1, s), device).map_err(err)?;
    Ok((images, ratios))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_division_of_the_offset() {
        // rw = 183: (128 − 183) // 2 = −28 in Python, so columns 28..156 stay.
        assert_eq!((WIDTH as i64 - 183).div_euclid(2), -28);
        assert_eq!((WIDTH as i64 - 115).div_euclid(2), 6);
    }

    #[test]
    fn exact_factor_two_is_detected() {
        assert!(halves(64, 32));
        assert!(!halves(65, 32));
        assert!(!halves(32, 64));
        assert!(!halves(3, 1));
    }
}
