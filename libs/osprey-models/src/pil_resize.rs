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
//! Up to Pillow 12 the horizontal pass runs first (only over the source rows
//! the vertical pass will read), its result is rounded to 8 bits, then the
//! vertical pass. Pillow 13 runs the vertical pass first (over every column)
//! when the height shrinks by more than twice as many pixels as the width
//! does, `h − m_h > 0 && h − m_h > 2·(w − m_w)`, which is the common case of
//! a tall person crop shrunk to 256×128: the 8-bit rounding between the
//! passes then falls elsewhere and about one byte in ten moves by one grey
//! level. Both orders are reproduced ([`Pillow`]); the default is the
//! current release's, and `OSPREY_PILLOW=12` selects the older one for
//! models evaluated with Pillow 12 or earlier. An axis whose size does not
//! change is not resampled.

use osprey_core::{Error, ErrorKind, Result};

/// Which Pillow release's arithmetic to reproduce (they differ only in
/// the order of the two passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pillow {
    /// Pillow 12.x and earlier: always horizontal, then vertical.
    Before13,
    /// Pillow 13.0 and later: vertical first when the height shrinks by
    /// more than twice what the width does.
    From13,
}

impl Pillow {
    /// The release to match: `OSPREY_PILLOW` (`12`, `11`, … for
    /// [`Pillow::Before13`]; `13` or later for [`Pillow::From13`]), else
    /// the current release ([`Pillow::From13`]).
    pub fn configured() -> Pillow {
        match std::env::var("OSPREY_PILLOW").ok().and_then(|v| v.split('.').next()?.trim().parse::<u32>().ok()) {
            Some(major) if major < 13 => Pillow::Before13,
            _ => Pillow::From13,
        }
    }

    /// Whether this release resizes `w`×`h` → `out_w`×`out_h` vertically first.
    fn vertical_first(self, w: usize, h: usize, out_w: usize, out_h: usize) -> bool {
        let (dw, dh) = (w as i64 - out_w as i64, h as i64 - out_h as i64);
        self == Pillow::From13 && dh > 0 && dh > 2 * dw
    }
}

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
/// Image.BILINEAR)` does for modes L and RGB, in the configured release's
/// pass order ([`Pillow::configured`]).
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
    resize_bilinear_as(Pillow::configured(), src, width, height, channels, out_width, out_height)
}

/// [`resize_bilinear`] as Pillow release `pillow` computes it.
pub fn resize_bilinear_as(
    pillow: Pillow,
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
    if pillow.vertical_first(width, height, out_width, out_height) {
        let mid = vertical_pass(src, width * channels, 0, &Coefficients::new(height, out_height));
        if out_width == width {
            return Ok(mid);
        }
        return Ok(horizontal_pass(&mid, width, 0..out_height, channels, &Coefficients::new(width, out_width)));
    }
    let vertical = Coefficients::new(height, out_height);
    // Source rows the vertical pass reads (all of them when it is skipped).
    let (row0, row1) =
        if out_height != height { (vertical.first.first().copied().unwrap_or(0), vertical.end()) } else { (0, height) };

    let mid = if out_width != width {
        horizontal_pass(src, width, row0..row1, channels, &Coefficients::new(width, out_width))
    } else {
        src[row0 * width * channels..row1 * width * channels].to_vec()
    };
    if out_height == height {
        return Ok(mid);
    }
    // `mid` starts at source row row0.
    Ok(vertical_pass(&mid, out_width * channels, row0, &vertical))
}

/// The horizontal pass over source rows `rows` of `src` (`width` pixels of
/// `channels` bytes a row): one row of `coefficients.first.len()` pixels each.
fn horizontal_pass(
    src: &[u8],
    width: usize,
    rows: std::ops::Range<usize>,
    channels: usize,
    coefficients: &Coefficients,
) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    let out_width = coefficients.first.len();
    let mut out = vec![0u8; rows.len() * out_width * channels];
    for (r, out_row) in out.chunks_exact_mut(out_width * channels).enumerate() {
        let y = rows.start + r;
        let in_row = &src[y * width * channels..(y + 1) * width * channels];
        for (x, out_px) in out_row.chunks_exact_mut(channels).enumerate() {
            let first = coefficients.first[x];
            for (c, out) in out_px.iter_mut().enumerate() {
                let mut acc = half;
                for (k, &w) in coefficients.weights[x].iter().enumerate() {
                    acc += in_row[(first + k) * channels + c] as i64 * w as i64;
                }
                *out = clip8(acc);
            }
        }
    }
    out
}

/// The vertical pass over `src` (rows of `stride` bytes, its first row being
/// source row `row0`): one row of `stride` bytes per output row.
fn vertical_pass(src: &[u8], stride: usize, row0: usize, coefficients: &Coefficients) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; coefficients.first.len() * stride];
    for (y, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let first = coefficients.first[y] - row0;
        let weights = &coefficients.weights[y];
        for (i, o) in out_row.iter_mut().enumerate() {
            let mut acc = half;
            for (k, &w) in weights.iter().enumerate() {
                acc += src[(first + k) * stride + i] as i64 * w as i64;
            }
            *o = clip8(acc);
        }
    }
    out
}

/// [`resize_bilinear`] for RGB images.
pub fn resize_rgb(src: &[u8], width: usize, height: usize, out_width: usize, out_height: usize) -> Result<Vec<u8>> {
    resize_bilinear(src, width, height, 3, out_width, out_height)
}
