//! The building blocks dlib's two networks need, on candle tensors.
//!
//! An `affine` layer right after a convolution is folded into the
//! convolution's filters and bias at load time (one pass over the activations
//! instead of three); the results differ from dlib's only by float rounding.

use super::net::Layer;
use crate::conv::Activation;
use candle_core::{D, Device, Tensor};
use osprey_core::{Error, Result};

pub(crate) fn cerr(e: candle_core::Error) -> Error {
    Error::internal(format!("tensor computation failed: {e}"))
}

/// A convolution with its (folded) bias.
pub(crate) struct Conv {
    weight: Tensor,
    bias: Tensor,
    /// Host copies of the filters and bias for the CPU's direct
    /// convolution ([`crate::conv`]); `None` on a GPU, where candle's runs.
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
        let host = device.is_cpu().then(|| (w.clone(), b.clone()));
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
        self.run(x, false)
    }

    /// The convolution followed by a ReLU (fused into it on the CPU).
    pub(crate) fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true)
    }

    fn run(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        if let Some((w, b)) = &self.host {
            let activation = if relu { Activation::Relu } else { Activation::Linear };
            return crate::conv::conv2d(x, w, b, self.kernel, self.pad, self.stride, activation);
        }
        let y = x.conv2d(&self.weight, self.pad, self.stride, 1, 1).and_then(|y| y.broadcast_add(&self.bias));
        match relu {
            true => y.and_then(|y| y.relu()),
            false => y,
        }
        .map_err(cerr)
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
