//! The building blocks dlib's two networks need, on candle tensors.
//!
//! An `affine` layer right after a convolution is folded into the
//! convolution's filters and bias at load time (one pass over the activations
//! instead of three); the results differ from dlib's only by float rounding.

use super::net::Layer;
use candle_core::{D, Device, Tensor};
use osprey_core::{Error, Result};

pub(crate) fn cerr(e: candle_core::Error) -> Error {
    Error::internal(format!("tensor computation failed: {e}"))
}

/// A convolution with its (folded) bias.
pub(crate) struct Conv {
    weight: Tensor,
    bias: Tensor,
    /// Host copies for the direct path (see [`phased_conv`]): few output
    /// channels at stride 1, where im2col + GEMM would build a huge matrix
    /// for a one-column product, or few input channels at stride 2.
    host: Option<(Vec<f32>, Vec<f32>)>,
    stride: usize,
    pad: usize,
    pub(crate) kernel: usize,
}

impl Conv {
    /// Builds a convolution from a `con` layer and, when given, the `affine`
    /// layer that follows it.
    pub(crate) fn new(conv: &Layer, affine: Option<&Layer>, device: &Device) -> Result<Conv> {
        let Layer::Conv { filters, bias, stride, pad } = conv else {
            return Err(Error::internal(format!("expected a con layer, found {}", conv.name())));
        };
        if stride[0] != stride[1] || pad[0] != pad[1] || filters.shape[2] != filters.shape[3] {
            return Err(Error::internal("only square kernels with equal strides and padding are supported"));
        }
        let [o, i, kh, kw] = filters.shape;
        let mut w = filters.data.clone();
        let mut b = bias.clone().unwrap_or_else(|| vec![0.0; o]);
        if let Some(a) = affine {
            let Layer::Affine { gamma, beta } = a else {
                return Err(Error::internal(format!("expected an affine layer, found {}", a.name())));
            };
            if gamma.len() != o {
                return Err(Error::internal(format!("affine over {} channels after a con with {o}", gamma.len())));
            }
            let per = i * kh * kw;
            for c in 0..o {
                for v in &mut w[c * per..(c + 1) * per] {
                    *v *= gamma[c];
                }
                b[c] = b[c] * gamma[c] + beta[c];
            }
        }
        let direct = (o <= DIRECT_MAX_OUT && stride[0] == 1) || (i <= POLYPHASE_MAX_IN && stride[0] == 2);
        let host = (direct && device.is_cpu()).then(|| (w.clone(), b.clone()));
        let weight = Tensor::from_vec(w, (o, i, kh, kw), device).map_err(cerr)?;
        let bias = Tensor::from_vec(b, (1, o, 1, 1), device).map_err(cerr)?;
        Ok(Conv { weight, bias, host, stride: stride[0], pad: pad[0], kernel: kh })
    }

    pub(crate) fn stride(&self) -> usize {
        self.stride
    }
    pub(crate) fn pad(&self) -> usize {
        self.pad
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some((w, b)) = &self.host {
            return phased_conv(x, w, b, self.kernel, self.pad, self.stride);
        }
        x.conv2d(&self.weight, self.pad, self.stride, 1, 1).and_then(|y| y.broadcast_add(&self.bias)).map_err(cerr)
    }
}

/// dlib's `add_prev` when shapes differ: the result takes the larger size in
/// every dimension and the missing values count as zero.
pub(crate) fn add_zero_filled(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (ad, bd) = (a.dims().to_vec(), b.dims().to_vec());
    if ad == bd {
        return (a + b).map_err(cerr);
    }
    let grow = |t: &Tensor, dims: &[usize]| -> Result<Tensor> {
        let mut t = t.clone();
        for (axis, target) in dims.iter().enumerate() {
            let have = t.dim(axis).map_err(cerr)?;
            if have < *target {
                t = t.pad_with_zeros(axis, 0, target - have).map_err(cerr)?;
            }
        }
        Ok(t)
    };
    let target: Vec<usize> = ad.iter().zip(&bd).map(|(x, y)| *x.max(y)).collect();
    (grow(a, &target)? + grow(b, &target)?).map_err(cerr)
}

/// Global average over the spatial dimensions: (N, C, H, W) → (N, C).
pub(crate) fn global_avg(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(2).and_then(|t| t.mean(D::Minus1)).map_err(cerr)
}

/// Output channels up to which a stride-1 convolution runs directly.
const DIRECT_MAX_OUT: usize = 4;
/// Input channels up to which a stride-2 convolution runs as polyphase
/// stride-1 products (im2col is poorly shaped for the 3-channel first layer).
const POLYPHASE_MAX_IN: usize = 4;

/// `dst += a · src`, with FMA where the CPU has it.
#[inline]
fn axpy(dst: &mut [f32], src: &[f32], a: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
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

/// A convolution computed as multiply-adds along contiguous rows, parallel
/// over output rows. The zero-padded input is split into its stride²
/// polyphase components (for stride 2: even/odd rows × even/odd columns; for
/// stride 1 the single component is the padded plane), so tap (ky, kx) reads
/// component (ky mod s, kx mod s) shifted by (ky/s, kx/s).
fn phased_conv(x: &Tensor, w: &[f32], b: &[f32], k: usize, pad: usize, stride: usize) -> Result<Tensor> {
    use rayon::prelude::*;
    let (n, c, h, wd) = x.dims4().map_err(cerr)?;
    let (o, st) = (b.len(), stride);
    let (ph, pw) = (h + 2 * pad, wd + 2 * pad);
    if ph < k || pw < k {
        return Err(Error::invalid(format!("{h}x{wd} input is smaller than the {k}x{k} kernel")));
    }
    let (oh, ow) = ((ph - k) / st + 1, (pw - k) / st + 1);
    let (hh, hw) = (ph.div_ceil(st), pw.div_ceil(st));
    let phase = |ch: usize, p: usize, q: usize| ((ch * st + p) * st + q) * hh * hw;
    let input: Vec<f32> = x.flatten_all().and_then(|t| t.to_vec1()).map_err(cerr)?;
    let mut out = vec![0f32; n * o * oh * ow];
    for s in 0..n {
        let mut phases = vec![0f32; c * st * st * hh * hw];
        for ch in 0..c {
            for y in 0..h {
                let row = &input[((s * c + ch) * h + y) * wd..][..wd];
                let py = y + pad;
                for (xi, v) in row.iter().enumerate() {
                    let px = xi + pad;
                    phases[phase(ch, py % st, px % st) + (py / st) * hw + px / st] = *v;
                }
            }
        }
        let sample = &mut out[s * o * oh * ow..(s + 1) * o * oh * ow];
        sample.par_chunks_mut(ow).enumerate().for_each(|(row, dst)| {
            let (oc, y) = (row / oh, row % oh);
            dst.fill(b[oc]);
            for ch in 0..c {
                for ky in 0..k {
                    for kx in 0..k {
                        let src = &phases[phase(ch, ky % st, kx % st) + (y + ky / st) * hw + kx / st..][..ow];
                        axpy(dst, src, w[((oc * c + ch) * k + ky) * k + kx]);
                    }
                }
            }
        });
    }
    Tensor::from_vec(out, (n, o, oh, ow), x.device()).map_err(cerr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_convolution_matches_candles() {
        let dev = Device::Cpu;
        let (c, k, pad) = (3, 5, 2);
        let x: Vec<f32> = (0..2 * c * 9 * 11).map(|i| ((i * 37 % 101) as f32 - 50.0) / 30.0).collect();
        let w: Vec<f32> = (0..c * k * k).map(|i| ((i * 13 % 17) as f32 - 8.0) / 10.0).collect();
        let xt = Tensor::from_vec(x, (2, c, 9, 11), &dev).unwrap();
        let wt = Tensor::from_vec(w.clone(), (1, c, k, k), &dev).unwrap();
        let want = xt.conv2d(&wt, pad, 1, 1, 1).unwrap().affine(1.0, 0.25).unwrap();
        let got = phased_conv(&xt, &w, &[0.25], k, pad, 1).unwrap();
        assert_eq!(got.dims(), want.dims());
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "max difference {diff}");
    }

    #[test]
    fn polyphase_convolution_matches_candles() {
        let dev = Device::Cpu;
        let (c, o, k) = (3, 4, 5);
        for (h, w, pad) in [(17, 23, 0), (16, 12, 0), (15, 14, 2)] {
            let x: Vec<f32> = (0..c * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 30.0).collect();
            let wt: Vec<f32> = (0..o * c * k * k).map(|i| ((i * 13 % 17) as f32 - 8.0) / 10.0).collect();
            let b = [0.5, -0.25, 0.0, 1.0];
            let xt = Tensor::from_vec(x, (1, c, h, w), &dev).unwrap();
            let wten = Tensor::from_vec(wt.clone(), (o, c, k, k), &dev).unwrap();
            let bias = Tensor::from_vec(b.to_vec(), (1, o, 1, 1), &dev).unwrap();
            let want = xt.conv2d(&wten, pad, 2, 1, 1).unwrap().broadcast_add(&bias).unwrap();
            let got = phased_conv(&xt, &wt, &b, k, pad, 2).unwrap();
            assert_eq!(got.dims(), want.dims(), "{h}x{w} pad {pad}");
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "{h}x{w} pad {pad}: max difference {diff}");
        }
    }
}
