//! Pillow's bilinear resize of 8-bit images, reproduced bit for bit.
//!
//! torchreid (and most PyTorch re-identification code) resizes person crops
//! with `PIL.Image.resize(size, Image.BILINEAR)`, which is not textbook
//! bilinear interpolation: when shrinking, Pillow widens the triangle filter
//! by the reduction factor, so every output pixel averages all the source
//! pixels under it (antialiasing), and it computes in fixed point. A model
//! fed crops resized any other way sees slightly different pixels; this module
//! gives exactly Pillow's bytes (the default `reducing_gap=None`, no box).
//!
//! The algorithm, per axis (source size `n`, output size `m`):
//! * `scale = n/m`, `filterscale = max(scale, 1)`, `support = filterscale`
//!   (the triangle's support of 1, widened);
//! * output index `i` is centred at `c = (i + 0.5)·scale`; it reads source
//!   indices `[trunc(c − support + 0.5), trunc(c + support + 0.5))`, clipped to
//!   the image, with weights `tri((j − c + 0.5)/filterscale)` (computed as a
//!   product with `1/filterscale`), normalised to sum 1 in double precision;
//! * the weights become integers scaled by 2^22 (`PRECISION_BITS = 32 − 8 − 2`),
//!   rounded half away from zero;
//! * a sample is `(2^21 + Σ w·v) >> 22`, clamped to 0…255.
//!
//! The horizontal pass runs first (only over the source rows the vertical
//! pass will read), its result is rounded to 8 bits, then the vertical pass.
//! An axis whose size does not change is not resampled.

use osprey_core::{Error, ErrorKind, Result};

/// Fractional bits of the fixed-point weights.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One axis's resampling: for each output index, the first source index and
/// the fixed-point weights of the consecutive source samples it reads.
struct Coefficients {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

/// The triangle (bilinear) filter with support 1.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

impl Coefficients {
    fn new(in_size: usize, out_size: usize) -> Coefficients {
        // Pillow passes the box edges as single-precision floats; whole sizes are exact.
        let scale = (in_size as f32 as f64) / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // the triangle's support (1) times filterscale
        let inv = 1.0 / filterscale;
        let mut first = Vec::with_capacity(out_size);
        let mut weights = Vec::with_capacity(out_size);
        for i in 0..out_size {
            let centre = (i as f64 + 0.5) * scale;
            // C's (int) conversion truncates toward zero; then clip to the image.
            let lo = ((centre - support + 0.5) as i64).max(0) as usize;
            let hi = ((centre + support + 0.5) as i64).min(in_size as i64).max(lo as i64) as usize;
            let raw: Vec<f64> = (lo..hi).map(|j| triangle((j as f64 - centre + 0.5) * inv)).collect();
            let total: f64 = raw.iter().fold(0.0, |acc, w| acc + w);
            let fixed = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    let scaled = w * (1u32 << PRECISION_BITS) as f64;
                    // Round half away from zero, then truncate as C's (int) does.
                    (if scaled < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
                })
                .collect();
            first.push(lo);
            weights.push(fixed);
        }
        Coefficients { first, weights }
    }

    /// One past the last source index any output reads.
    fn end(&self) -> usize {
        self.first.iter().zip(&self.weights).map(|(f, w)| f + w.len()).max().unwrap_or(0)
    }
}

/// The fixed-point accumulator rounded and clamped to a byte.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an 8-bit image of `channels` interleaved channels (1 for L, 3 for
/// RGB), `width × height` pixels in row-major order, to `out_width ×
/// out_height` exactly as Pillow's `Image.resize((out_width, out_height),
/// Image.BILINEAR)` does for modes L and RGB.
///
/// Not for RGBA/LA: Pillow premultiplies alpha around the resize.
pub fn resize_bilinear(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_width: usize,
    out_height: usize,
) -> Result<Vec<u8>> {
    if !(channels == 1 || channels == 3) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("bilinear resize: {channels} channels (1 or 3 supported)"),
        ));
    }
    if width == 0 || height == 0 || out_width == 0 || out_height == 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("bilinear resize: empty image ({width}×{height} → {out_width}×{out_height})"),
        ));
    }
    let expected = width.checked_mul(height).and_then(|n| n.checked_mul(channels));
    if expected != Some(src.len()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("bilinear resize: {} bytes for a {width}×{height}×{channels} image", src.len()),
        ));
    }
    let half = 1i64 << (PRECISION_BITS - 1);
    let vertical = Coefficients::new(height, out_height);
    // Source rows the vertical pass reads (all of them when it is skipped).
    let (row0, row1) =
        if out_height != height { (vertical.first.first().copied().unwrap_or(0), vertical.end()) } else { (0, height) };

    // Horizontal pass over rows row0..row1.
    let (mid, mid_width) = if out_width != width {
        let horizontal = Coefficients::new(width, out_width);
        let mut mid = vec![0u8; (row1 - row0) * out_width * channels];
        for (r, out_row) in mid.chunks_exact_mut(out_width * channels).enumerate() {
            let in_row = &src[(row0 + r) * width * channels..(row0 + r + 1) * width * channels];
            for (x, out_px) in out_row.chunks_exact_mut(channels).enumerate() {
                let first = horizontal.first[x];
                for (c, out) in out_px.iter_mut().enumerate() {
                    let mut acc = half;
                    for (k, &w) in horizontal.weights[x].iter().enumerate() {
                        acc += in_row[(first + k) * channels + c] as i64 * w as i64;
                    }
                    *out = clip8(acc);
                }
            }
        }
        (mid, out_width)
    } else {
        (src[row0 * width * channels..row1 * width * channels].to_vec(), width)
    };
    if out_height == height {
        return Ok(mid);
    }

    // Vertical pass; `mid` starts at source row row0.
    let stride = mid_width * channels;
    let mut out = vec![0u8; out_height * stride];
    for (y, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let first = vertical.first[y] - row0;
        let weights = &vertical.weights[y];
        for (i, o) in out_row.iter_mut().enumerate() {
            let mut acc = half;
            for (k, &w) in weights.iter().enumerate() {
                acc += mid[(first + k) * stride + i] as i64 * w as i64;
            }
            *o = clip8(acc);
        }
    }
    Ok(out)
}

/// [`resize_bilinear`] for RGB images.
pub fn resize_rgb(src: &[u8], width: usize, height: usize, out_width: usize, out_height: usize) -> Result<Vec<u8>> {
    resize_bilinear(src, width, height, 3, out_width, out_height)
}
