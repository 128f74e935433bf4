//! Direct 2-D convolutions on the CPU, for the detectors' layers that
//! candle's im2col + GEMM runs poorly: large planes (a 1080p pyramid canvas
//! makes an im2col matrix of gigabytes for a 45-channel 5×5 layer), few
//! output channels, and stride 2 over few input channels.
//!
//! The zero-padded input is first split into its stride² polyphase
//! components (for stride 2: even/odd rows × even/odd columns; for stride 1
//! the single component is the padded plane), so that every tap (ky, kx)
//! reads a contiguous run of component (ky mod s, kx mod s), shifted by
//! (ky/s, kx/s). Output rows are then computed in parallel:
//!
//! * with AVX2 and FMA, a block of output channels × a run of output columns
//!   at a time, kept in vector registers while every tap adds to them (8 ×
//!   24 with AVX-512's 32 registers, 4 × 16 with AVX2's 16; see [`WIDE`]);
//! * otherwise, and for fewer than four output channels, one output row at a
//!   time as multiply-adds along the row.
//!
//! The activation that follows (ReLU, PReLU) is applied as the results are
//! stored. Planes too narrow to fill the registers (RNet's and ONet's later
//! layers, the descriptor's last stages) run as one matrix product over the
//! whole batch instead, the patches laid out so that filling them is mostly
//! copies: candle's convolution would run one small product per sample.
//!
//! Results differ from candle's convolution only by float rounding (the sum
//! runs in another order).

use candle_core::Tensor;
use osprey_core::{Error, Result};
use rayon::prelude::*;

use crate::layers::cerr;

/// Register tiles: output channels × 8-lane vectors of output columns.
/// With AVX-512 (32 vector registers) a tile of 8 × 3 holds 24
/// accumulators; with AVX2 alone (16 registers) 4 × 2, so that the
/// accumulators, the tap's input vectors and a weight broadcast all stay in
/// registers (4 × 3 spilled one accumulator to the stack on every tap).
const WIDE: (usize, usize) = (8, 3);
const NARROW: (usize, usize) = (4, 2);
/// The fewest output channels the register tiles are used for; fewer run
/// as rows of multiply-adds.
const BLOCK_OUT: usize = NARROW.0;
/// The widest tile's columns: how far past a row's last output a tile may
/// read.
const BLOCK_COLS: usize = 8 * WIDE.1;

/// Where the taps of one convolution read the polyphase input.
struct Geometry {
    /// Output height and width.
    oh: usize,
    ow: usize,
    /// Width of one polyphase component's rows.
    row: usize,
    /// Size of one sample's polyphase input.
    plane: usize,
    /// Per tap, in weight order (channel, ky, kx): the offset of the value it
    /// multiplies for output (0, 0).
    taps: Vec<usize>,
    /// Per output channel, the factor of negative outputs (see
    /// [`Activation`]).
    negative: Vec<f32>,
}

/// What follows the convolution, fused into it: nothing, a ReLU, or a PReLU
/// with one slope per output channel. All three are `max(v, 0) + a·min(v, 0)`
/// with `a` 1, 0 or the channel's slope.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Activation<'a> {
    Linear,
    Relu,
    PRelu(&'a [f32]),
}

/// Output width from which the direct convolution is used for layers with
/// at least [`BLOCK_OUT`] output channels; narrower planes (a face
/// descriptor's last stages, MTCNN's RNet and ONet) fill too few lanes of a
/// register block and run as one matrix product over the whole batch
/// instead ([`Path::Gemm`]). Measured on dlib's descriptor and the cascade:
/// 16 and 24 were alike, 48 and 1 slower.
const MIN_DIRECT_WIDTH: usize = 16;

/// `out = activation(conv(x, w) + b)`, with `w` in
/// (out, in, k, k) order, square `k`, the same `pad` on every side and the
/// same `stride` in both directions. `x` is (N, C, H, W) f32; the result is
/// on `x`'s device.
pub(crate) fn conv2d(
    x: &Tensor,
    w: &[f32],
    b: &[f32],
    k: usize,
    pad: usize,
    stride: usize,
    activation: Activation<'_>,
) -> Result<Tensor> {
    let out_width = (x.dim(3).map_err(cerr)? + 2 * pad).saturating_sub(k) / stride.max(1) + 1;
    let path = match Tiles::detect() {
        _ if b.len() >= BLOCK_OUT && out_width < MIN_DIRECT_WIDTH => Path::Gemm,
        Some(tiles) if b.len() >= BLOCK_OUT => Path::Tiles(tiles),
        _ => Path::Rows,
    };
    convolve(x, w, b, [k, pad, stride], activation, path)
}

/// How [`convolve`] computes: register tiles, rows of multiply-adds, or
/// (for narrow planes) the patches of every sample as one matrix times the
/// filters.
#[derive(Clone, Copy, Debug)]
enum Path {
    Tiles(Tiles),
    Rows,
    Gemm,
}

/// [`conv2d`] along `path`.
fn convolve(
    x: &Tensor,
    w: &[f32],
    b: &[f32],
    [k, pad, stride]: [usize; 3],
    activation: Activation<'_>,
    path: Path,
) -> Result<Tensor> {
    let (n, c, h, wd) = x.dims4().map_err(cerr)?;
    let o = b.len();
    if w.len() != o * c * k * k {
        return Err(Error::internal(format!("{} weights for a {o}×{c}×{k}×{k} convolution", w.len())));
    }
    let st = stride.max(1);
    let (ph, pw) = (h + 2 * pad, wd + 2 * pad);
    if ph < k || pw < k {
        return Err(Error::invalid(format!("{h}x{wd} input is smaller than the {k}x{k} kernel")));
    }
    let (oh, ow) = ((ph - k) / st + 1, (pw - k) / st + 1);
    let negative = match activation {
        Activation::Linear => vec![1.0; o],
        Activation::Relu => vec![0.0; o],
        Activation::PRelu(slopes) if slopes.len() == o => slopes.to_vec(),
        Activation::PRelu(slopes) => {
            return Err(Error::internal(format!("{} PReLU slopes for {o} channels", slopes.len())));
        }
    };
    let out = with_values(x, |input| {
        let tiles = match path {
            Path::Gemm => return patch_gemm(input, [n, c, h, wd], w, b, [k, pad, st], [oh, ow], &negative),
            Path::Tiles(tiles) => Some(tiles),
            Path::Rows => None,
        };
        let (hh, hw) = (ph.div_ceil(st), pw.div_ceil(st));
        // One channel's polyphase components, one after another.
        let channel = st * st * hh * hw;
        let mut taps = Vec::with_capacity(c * k * k);
        for ch in 0..c {
            for ky in 0..k {
                for kx in 0..k {
                    taps.push(ch * channel + ((ky % st) * st + kx % st) * hh * hw + (ky / st) * hw + kx / st);
                }
            }
        }
        let plane = c * channel;
        // The register blocks read up to a block's width past a row's last
        // output; the tail keeps those reads inside the buffer (their
        // results are dropped).
        let mut phases = vec![0f32; n * plane + BLOCK_COLS + 8];
        phases[..n * plane].par_chunks_mut(channel).enumerate().for_each(|(i, dst)| {
            // Chunk i is channel i % c of sample i / c, as in the input.
            for y in 0..h {
                let row = &input[(i * h + y) * wd..][..wd];
                let py = y + pad;
                let line = (py % st) * st * hh * hw + (py / st) * hw;
                for (xi, v) in row.iter().enumerate() {
                    let px = xi + pad;
                    dst[line + (px % st) * hh * hw + px / st] = *v;
                }
            }
        });
        let geometry = Geometry { oh, ow, row: hw, plane, taps, negative };
        let mut out = vec![0f32; n * o * oh * ow];
        match tiles.filter(|_| o >= BLOCK_OUT) {
            Some(tiles) => tiles.run(&mut out, &phases, w, b, &geometry),
            None => axpy_rows(&mut out, &phases, w, b, &geometry),
        }
        Ok(out)
    })?;
    Tensor::from_vec(out, (n, o, oh, ow), x.device()).map_err(cerr)
}

/// `f` over `x`'s values as one `f32` slice in (N, C, H, W) order: read in
/// place from a CPU tensor, copied from any other.
pub(crate) fn with_values<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let x = x.to_dtype(candle_core::DType::F32).and_then(|x| x.contiguous()).map_err(cerr)?;
    let (storage, layout) = x.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(cpu) => {
            let (from, to) =
                layout.contiguous_offsets().ok_or_else(|| Error::internal("contiguous tensor without offsets"))?;
            f(&cpu.as_slice::<f32>().map_err(cerr)?[from..to])
        }
        _ => {
            drop(storage);
            f(&x.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(cerr)?)
        }
    }
}

/// The convolution as one matrix product, for planes too narrow for the
/// register tiles (where candle's convolution would run one small product
/// per sample): the filters (O × C·k·k) times the input patches laid out as
/// columns (C·k·k × N·OH·OW: one row per tap, each a run of the input rows
/// it reads, so that filling it is mostly copies). Returns the `oh` × `ow`
/// output in (N, O, OH, OW) order, activation applied.
fn patch_gemm(
    input: &[f32],
    [n, c, h, wd]: [usize; 4],
    w: &[f32],
    b: &[f32],
    [k, pad, st]: [usize; 3],
    [oh, ow]: [usize; 2],
    negative: &[f32],
) -> Result<Vec<f32>> {
    let o = b.len();
    let (per, positions) = (c * k * k, oh * ow);
    let mut patches = vec![0f32; per * n * positions];
    // One tap (channel, ky, kx) of one sample per task.
    patches.par_chunks_mut(positions).enumerate().for_each(|(i, dst)| {
        let (tap, s) = (i / n, i % n);
        let (ch, ky, kx) = (tap / (k * k), (tap / k) % k, tap % k);
        let channel = &input[(s * c + ch) * h * wd..][..h * wd];
        // Output columns whose input column is inside the row.
        let first = pad.saturating_sub(kx).div_ceil(st);
        let last = ((wd + pad).saturating_sub(kx)).div_ceil(st).min(ow);
        for (y, row) in dst.chunks_mut(ow).enumerate() {
            let iy = (y * st + ky).wrapping_sub(pad);
            if iy >= h || first >= last {
                continue;
            }
            let line = &channel[iy * wd..][..wd];
            let from = first * st + kx - pad;
            match st {
                1 => row[first..last].copy_from_slice(&line[from..from + last - first]),
                _ => row[first..last].iter_mut().zip(line[from..].iter().step_by(st)).for_each(|(d, v)| *d = *v),
            }
        }
    });
    let dev = candle_core::Device::Cpu;
    let patches = Tensor::from_vec(patches, (per, n * positions), &dev).map_err(cerr)?;
    let filters = Tensor::from_slice(w, (o, per), &dev).map_err(cerr)?;
    let product: Vec<f32> = filters.matmul(&patches).and_then(|p| p.flatten_all()?.to_vec1()).map_err(cerr)?;
    // (channel, sample, position) → (sample, channel, position), biased and
    // activated.
    let mut out = vec![0f32; n * o * positions];
    out.par_chunks_mut(positions).enumerate().for_each(|(i, dst)| {
        let (s, oc) = (i / o, i % o);
        let (bias, a) = (b[oc], negative[oc]);
        for (v, z) in dst.iter_mut().zip(&product[(oc * n + s) * positions..]) {
            let z = z + bias;
            *v = z.max(0.0) + a * z.min(0.0);
        }
    });
    Ok(out)
}

fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The weights regrouped for register tiles of `block` output channels:
/// block, then tap, then the block's channels (zero for channels past the
/// last).
fn pack_weights(w: &[f32], o: usize, per: usize, block: usize) -> Vec<f32> {
    let mut packed = vec![0f32; o.div_ceil(block) * per * block];
    for oc in 0..o {
        for (t, v) in w[oc * per..(oc + 1) * per].iter().enumerate() {
            packed[((oc / block) * per + t) * block + oc % block] = *v;
        }
    }
    packed
}

/// Every output row as multiply-adds along the row, one tap at a time.
fn axpy_rows(out: &mut [f32], phases: &[f32], w: &[f32], b: &[f32], g: &Geometry) {
    let (o, per) = (b.len(), g.taps.len());
    out.par_chunks_mut(g.ow).enumerate().for_each(|(row, dst)| {
        let (s, oc, y) = (row / (o * g.oh), (row / g.oh) % o, row % g.oh);
        dst.fill(b[oc]);
        let input = &phases[s * g.plane + y * g.row..];
        for (tap, wv) in g.taps.iter().zip(&w[oc * per..(oc + 1) * per]) {
            axpy(dst, &input[*tap..][..g.ow], *wv);
        }
        let a = g.negative[oc];
        if a != 1.0 {
            dst.iter_mut().for_each(|v| *v = v.max(0.0) + a * v.min(0.0));
        }
    });
}

/// `dst += a · src`, with FMA where the CPU has it.
#[inline]
fn axpy(dst: &mut [f32], src: &[f32], a: f32) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        unsafe { axpy_fma(dst, src, a) };
        return;
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d += a * s;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_fma(dst: &mut [f32], src: &[f32], a: f32) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.mul_add(a, *d);
    }
}

/// The register tiles this CPU runs.
#[derive(Clone, Copy, Debug)]
enum Tiles {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Tiles {
    fn detect() -> Option<Tiles> {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512vl") && has_avx2_fma() {
                return Some(Tiles::Avx512);
            }
            if has_avx2_fma() {
                return Some(Tiles::Avx2);
            }
        }
        None
    }

    fn run(self, out: &mut [f32], phases: &[f32], w: &[f32], b: &[f32], g: &Geometry) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Tiles::Avx512 => tiled_rows::<{ WIDE.0 }, { WIDE.1 }>(out, w, b, g, |rows, start, tile| {
                // SAFETY: `detect` found AVX-512 (F, VL), AVX2 and FMA.
                unsafe { tile_row_avx512(rows, phases, start, tile, g) }
            }),
            #[cfg(target_arch = "x86_64")]
            Tiles::Avx2 => tiled_rows::<{ NARROW.0 }, { NARROW.1 }>(out, w, b, g, |rows, start, tile| {
                // SAFETY: `detect` found AVX2 and FMA.
                unsafe { tile_row_avx2(rows, phases, start, tile, g) }
            }),
        }
    }
}

/// One tile row's weights and epilogue: per tap, the block's `OC` weights;
/// per channel, the bias and the factor of negative outputs.
struct Tile<'a, const OC: usize> {
    weights: &'a [f32],
    bias: [f32; OC],
    negative: [f32; OC],
}

/// Every output row, `OC` channels at a time, split over (sample, row,
/// block of channels); `row` computes one block's row.
fn tiled_rows<const OC: usize, const NV: usize>(
    out: &mut [f32],
    w: &[f32],
    b: &[f32],
    g: &Geometry,
    row: impl Fn([&mut [f32]; OC], usize, &Tile<'_, OC>) + Sync,
) {
    let o = b.len();
    let (oh, ow, per) = (g.oh, g.ow, g.taps.len());
    let packed = pack_weights(w, o, per, OC);
    let plane = oh * ow;
    // Output rows per channel, over all samples.
    let rows = out.len() / (o * ow);
    let out = SharedOut(out.as_mut_ptr());
    let blocks = o.div_ceil(OC);
    // Row-major, so that the blocks of one row run together while its input
    // rows are in cache.
    (0..blocks * rows).into_par_iter().for_each(|i| {
        let (s, y, block) = (i / (blocks * oh), (i / blocks) % oh, i % blocks);
        let first = block * OC;
        let channels = (o - first).min(OC);
        let mut tile =
            Tile { weights: &packed[block * per * OC..(block + 1) * per * OC], bias: [0.0; OC], negative: [1.0; OC] };
        tile.bias[..channels].copy_from_slice(&b[first..first + channels]);
        tile.negative[..channels].copy_from_slice(&g.negative[first..first + channels]);
        // SAFETY: task (s, y, block) is the only one writing row y of the
        // block's channels of sample s, and those rows are inside `out`.
        let rows: [&mut [f32]; OC] = std::array::from_fn(|j| match j < channels {
            true => unsafe { std::slice::from_raw_parts_mut(out.at((s * o + first + j) * plane + y * ow), ow) },
            false => &mut [],
        });
        row(rows, s * g.plane + y * g.row, &tile);
    });
}

/// The output buffer, shared by tasks that write disjoint rows of it.
struct SharedOut(*mut f32);
// SAFETY: the tasks write disjoint rows (see `tiled_rows`).
unsafe impl Sync for SharedOut {}
impl SharedOut {
    fn at(&self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
unsafe fn tile_row_avx512(
    rows: [&mut [f32]; WIDE.0],
    phases: &[f32],
    start: usize,
    tile: &Tile<'_, { WIDE.0 }>,
    g: &Geometry,
) {
    // SAFETY: as for `tile_row`; the caller checked the CPU's features.
    unsafe { tile_row::<{ WIDE.0 }, { WIDE.1 }>(rows, phases, start, tile, g) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_row_avx2(
    rows: [&mut [f32]; NARROW.0],
    phases: &[f32],
    start: usize,
    tile: &Tile<'_, { NARROW.0 }>,
    g: &Geometry,
) {
    // SAFETY: as for `tile_row`; the caller checked the CPU's features.
    unsafe { tile_row::<{ NARROW.0 }, { NARROW.1 }>(rows, phases, start, tile, g) }
}

/// One output row of `OC` channels into `rows` (empty for channels past the
/// last), `NV` vectors of 8 columns at a time; `start` is the row's input
/// for output column 0 and tap offset 0. Inlined into the functions above,
/// which enable the CPU features it needs.
///
/// # Safety
/// The CPU has AVX2 and FMA, and `phases` extends at least `8 · NV` values
/// past the last input a row's outputs read.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile_row<const OC: usize, const NV: usize>(
    mut rows: [&mut [f32]; OC],
    phases: &[f32],
    start: usize,
    tile: &Tile<'_, OC>,
    g: &Geometry,
) {
    use std::arch::x86_64::*;
    // SAFETY: every read is inside `phases` (its tail covers a tile past a
    // row's last output) or `tile.weights` (one block of taps).
    unsafe {
        let ow = g.ow;
        let base = phases.as_ptr().add(start);
        let zero = _mm256_setzero_ps();
        let mut x0 = 0;
        while x0 < ow {
            let mut acc = [[zero; NV]; OC];
            for (lanes, bias) in acc.iter_mut().zip(tile.bias) {
                *lanes = [_mm256_set1_ps(bias); NV];
            }
            for (t, tap) in g.taps.iter().enumerate() {
                let src = base.add(tap + x0);
                let s: [__m256; NV] = std::array::from_fn(|v| _mm256_loadu_ps(src.add(8 * v)));
                let wp = tile.weights.as_ptr().add(t * OC);
                for (j, lanes) in acc.iter_mut().enumerate() {
                    let wv = _mm256_set1_ps(*wp.add(j));
                    for (lane, sv) in lanes.iter_mut().zip(s) {
                        *lane = _mm256_fmadd_ps(sv, wv, *lane);
                    }
                }
            }
            let n = (ow - x0).min(8 * NV);
            for ((row, lanes), a) in rows.iter_mut().zip(&acc).zip(tile.negative) {
                if row.is_empty() {
                    continue;
                }
                let a = _mm256_set1_ps(a);
                let mut tmp = [0f32; BLOCK_COLS];
                for (v, lane) in lanes.iter().enumerate() {
                    let lane = _mm256_add_ps(_mm256_max_ps(*lane, zero), _mm256_mul_ps(_mm256_min_ps(*lane, zero), a));
                    _mm256_storeu_ps(tmp.as_mut_ptr().add(8 * v), lane);
                }
                row[x0..x0 + n].copy_from_slice(&tmp[..n]);
            }
            x0 += 8 * NV;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Every path (each register tile, rows, the matrix product) against
    /// candle's convolution,
    /// over strides 1 and 2, padding, widths that do and do not fill a
    /// block, channel counts that do and do not fill one, a batch of 2, and
    /// each activation.
    #[test]
    fn matches_candles_convolution() {
        let dev = Device::Cpu;
        for (n, c, o, k, h, w, pad, stride) in [
            (2, 3, 1, 5, 9, 11, 2, 1),
            (1, 3, 4, 5, 17, 23, 0, 2),
            (1, 3, 4, 5, 16, 12, 0, 2),
            (1, 3, 4, 5, 15, 14, 2, 2),
            (1, 16, 32, 5, 31, 61, 0, 2),
            (2, 5, 7, 3, 20, 50, 1, 1),
            (1, 10, 16, 3, 12, 25, 0, 1),
            (1, 45, 45, 5, 14, 30, 2, 1),
            (2, 3, 2, 3, 10, 30, 0, 1),
        ] {
            let x: Vec<f32> = (0..n * c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 30.0).collect();
            let wt: Vec<f32> = (0..o * c * k * k).map(|i| ((i * 13 % 17) as f32 - 8.0) / 10.0).collect();
            let b: Vec<f32> = (0..o).map(|i| i as f32 * 0.25 - 0.5).collect();
            let xt = Tensor::from_vec(x, (n, c, h, w), &dev).unwrap();
            let wten = Tensor::from_vec(wt.clone(), (o, c, k, k), &dev).unwrap();
            let bias = Tensor::from_vec(b.clone(), (1, o, 1, 1), &dev).unwrap();
            let slopes: Vec<f32> = (0..o).map(|i| 0.1 + i as f32 * 0.05).collect();
            let activation = match (c + o) % 3 {
                0 => Activation::Linear,
                1 => Activation::Relu,
                _ => Activation::PRelu(&slopes),
            };
            let mut want = xt.conv2d(&wten, pad, stride, 1, 1).unwrap().broadcast_add(&bias).unwrap();
            want = match activation {
                Activation::Linear => want,
                Activation::Relu => want.relu().unwrap(),
                Activation::PRelu(_) => {
                    let slope = Tensor::from_vec(slopes.clone(), (1, o, 1, 1), &dev).unwrap();
                    (want.relu().unwrap() + want.minimum(0f32).unwrap().broadcast_mul(&slope).unwrap()).unwrap()
                }
            };
            let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
            for path in available_paths() {
                let got = convolve(&xt, &wt, &b, [k, pad, stride], activation, path).unwrap();
                let case =
                    format!("{n}×{c}×{h}×{w} → {o}, k {k}, pad {pad}, stride {stride}, {activation:?}, {path:?}");
                assert_eq!(got.dims(), want.dims(), "{case}");
                let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(diff < 1e-5 * scale, "{case}: max difference {diff} (values up to {scale})");
            }
        }
    }

    /// Every path this CPU can run: each register tile it has, rows, and
    /// the matrix product.
    fn available_paths() -> Vec<Path> {
        let mut all = vec![Path::Rows, Path::Gemm];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has_avx2_fma() {
                all.push(Path::Tiles(Tiles::Avx2));
            }
            if has_avx2_fma() && has!("avx512f") && has!("avx512vl") {
                all.push(Path::Tiles(Tiles::Avx512));
            }
        }
        all
    }

    #[test]
    fn refuses_an_input_smaller_than_the_kernel() {
        let x = Tensor::zeros((1, 1, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = conv2d(&x, &[0.0; 25], &[0.0], 5, 0, 1, Activation::Linear).unwrap_err();
        assert!(err.to_string().contains("smaller than the 5x5 kernel"), "{err}");
    }
}
