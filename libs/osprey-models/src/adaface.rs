//! AdaFace's IR backbones (the "improved residual" ResNets of ArcFace's
//! iresnet family, as AdaFace's `net.py` builds them): a 112×112 aligned face
//! → a 512-d feature whose L2 norm AdaFace trains to track image quality.
//!
//! Input: BGR planes, `(x/255 − 0.5)/0.5`, from a crop aligned onto the
//! ArcFace five-point template ([`crate::align`]). Output of
//! [`IResNet::forward`]: the raw feature; AdaFace's own forward returns it
//! divided by its norm, together with the norm.
//!
//! Layout (names as in the checkpoints):
//! * `input_layer`: conv3×3 (3→64, no bias) · BN · PReLU;
//! * `body.i`: basic IR blocks, `res_layer` = BN · conv3×3 · BN · PReLU ·
//!   conv3×3 (stride s) · BN, plus a shortcut that is a strided identity
//!   (a 1×1 max-pool) when the width is unchanged, else conv1×1 (stride s) · BN;
//!   four stages of widths 64, 128, 256, 512, each starting with stride 2;
//! * `output_layer`: BN2d · dropout · flatten · linear (512·7·7 → 512) · BN1d
//!   without affine.
//!
//! At load every BN that follows a convolution or the linear layer is folded
//! into its weights and bias, and so is the BN2d before the linear layer (a
//! per-input scale and shift, no padding involved): exact up to float
//! rounding. The BN that opens each residual branch precedes a zero-padded
//! convolution, where folding would change the border, so it stays an affine.

use crate::checkpoint::Manifest;
use crate::layers::{Weights, cerr};
use candle_core::{D, Device, Tensor};
use osprey_core::{Error, ErrorKind, Result};
use std::collections::HashMap;

/// BatchNorm's epsilon in every IR layer (PyTorch's default).
const BN_EPS: f64 = 1e-5;
/// Side of the aligned input crop.
pub const INPUT_SIZE: usize = 112;
/// Width of the output feature.
pub const EMBEDDING_DIM: usize = 512;
/// Stage widths.
const WIDTHS: [usize; 4] = [64, 128, 256, 512];

/// Blocks per stage for AdaFace's depths (`ir_101` is built with 100 layers'
/// worth of blocks in AdaFace's code and named 101).
pub fn stage_blocks(depth: usize) -> Result<[usize; 4]> {
    Ok(match depth {
        18 => [2, 2, 2, 2],
        34 => [3, 4, 6, 3],
        50 => [3, 4, 14, 3],
        100 | 101 => [3, 13, 30, 3],
        _ => {
            return Err(Error::new(ErrorKind::InvalidInput, format!("no IR-{depth} backbone (18, 34, 50 or 101)")));
        }
    })
}

/// (input width, output width, stride) of every block, input → output.
fn block_plan(depth: usize) -> Result<Vec<(usize, usize, usize)>> {
    let mut plan = Vec::new();
    let mut prev = 64;
    for (stage, n) in stage_blocks(depth)?.into_iter().enumerate() {
        let w = WIDTHS[stage];
        plan.push((prev, w, 2));
        plan.extend(std::iter::repeat_n((w, w, 1), n - 1));
        prev = w;
    }
    Ok(plan)
}

fn bn_entries(m: &mut Manifest, name: &str, c: usize, affine: bool) {
    if affine {
        m.push((format!("{name}.weight"), vec![c]));
        m.push((format!("{name}.bias"), vec![c]));
    }
    m.push((format!("{name}.running_mean"), vec![c]));
    m.push((format!("{name}.running_var"), vec![c]));
    m.push((format!("{name}.num_batches_tracked"), vec![]));
}

/// Every parameter and buffer of IR-`depth`, as AdaFace names them.
pub fn manifest(depth: usize) -> Result<Manifest> {
    let mut m = vec![("input_layer.0.weight".to_string(), vec![64, 3, 3, 3])];
    bn_entries(&mut m, "input_layer.1", 64, true);
    m.push(("input_layer.2.weight".into(), vec![64]));
    for (i, (cin, cout, _)) in block_plan(depth)?.into_iter().enumerate() {
        let p = format!("body.{i}");
        if cin != cout {
            m.push((format!("{p}.shortcut_layer.0.weight"), vec![cout, cin, 1, 1]));
            bn_entries(&mut m, &format!("{p}.shortcut_layer.1"), cout, true);
        }
        bn_entries(&mut m, &format!("{p}.res_layer.0"), cin, true);
        m.push((format!("{p}.res_layer.1.weight"), vec![cout, cin, 3, 3]));
        bn_entries(&mut m, &format!("{p}.res_layer.2"), cout, true);
        m.push((format!("{p}.res_layer.3.weight"), vec![cout]));
        m.push((format!("{p}.res_layer.4.weight"), vec![cout, cout, 3, 3]));
        bn_entries(&mut m, &format!("{p}.res_layer.5"), cout, true);
    }
    bn_entries(&mut m, "output_layer.0", 512, true);
    m.push(("output_layer.3.weight".into(), vec![EMBEDDING_DIM, 512 * 7 * 7]));
    m.push(("output_layer.3.bias".into(), vec![EMBEDDING_DIM]));
    bn_entries(&mut m, "output_layer.4", EMBEDDING_DIM, false);
    Ok(m)
}

/// A convolution with a BN folded into it.
struct Conv {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    pad: usize,
}

impl Conv {
    fn folded(w: &Weights, conv: &str, bn: &str, stride: usize, pad: usize, device: &Device) -> Result<Conv> {
        let weight = w.get(&format!("{conv}.weight"))?;
        let (o, i, kh, kw) = weight.dims4().map_err(cerr)?;
        let (scale, shift) = w.bn(bn, true, BN_EPS)?;
        let per_out = i * kh * kw;
        let mut data: Vec<f32> = weight.flatten_all().and_then(|t| t.to_vec1()).map_err(cerr)?;
        for (oc, chunk) in data.chunks_mut(per_out).enumerate() {
            chunk.iter_mut().for_each(|v| *v *= scale[oc]);
        }
        Ok(Conv {
            weight: Tensor::from_vec(data, (o, i, kh, kw), device).map_err(cerr)?,
            bias: Tensor::from_vec(shift, (1, o, 1, 1), device).map_err(cerr)?,
            stride,
            pad,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, self.pad, self.stride, 1, 1).and_then(|y| y.broadcast_add(&self.bias)).map_err(cerr)
    }
}

/// A per-channel affine (an unfolded BN).
struct Affine {
    scale: Tensor,
    shift: Tensor,
}

impl Affine {
    fn new(w: &Weights, bn: &str, device: &Device) -> Result<Affine> {
        let (scale, shift) = w.bn(bn, true, BN_EPS)?;
        let c = scale.len();
        Ok(Affine {
            scale: Tensor::from_vec(scale, (1, c, 1, 1), device).map_err(cerr)?,
            shift: Tensor::from_vec(shift, (1, c, 1, 1), device).map_err(cerr)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_mul(&self.scale).and_then(|y| y.broadcast_add(&self.shift)).map_err(cerr)
    }
}

/// PReLU with one slope per channel: max(x, 0) + a·min(x, 0).
struct PRelu(Tensor);

impl PRelu {
    fn new(w: &Weights, name: &str) -> Result<PRelu> {
        let a = w.get(&format!("{name}.weight"))?;
        let c = a.dim(0).map_err(cerr)?;
        Ok(PRelu(a.reshape((1, c, 1, 1)).map_err(cerr)?))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let pos = x.relu().map_err(cerr)?;
        let neg = x.minimum(0f32).and_then(|n| n.broadcast_mul(&self.0)).map_err(cerr)?;
        (pos + neg).map_err(cerr)
    }
}

enum Shortcut {
    /// `MaxPool2d(1, stride)`: every stride-th pixel (or the identity).
    Subsample(usize),
    Projection(Conv),
}

struct Block {
    bn_in: Affine,
    conv1: Conv,
    prelu: PRelu,
    conv2: Conv,
    shortcut: Shortcut,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let r = self.conv2.forward(&self.prelu.forward(&self.conv1.forward(&self.bn_in.forward(x)?)?)?)?;
        let s = match &self.shortcut {
            Shortcut::Subsample(1) => x.clone(),
            Shortcut::Subsample(s) => x.max_pool2d_with_stride((1, 1), (*s, *s)).map_err(cerr)?,
            Shortcut::Projection(c) => c.forward(x)?,
        };
        (r + s).map_err(cerr)
    }
}

/// An AdaFace IR backbone with its weights.
pub struct IResNet {
    depth: usize,
    stem: Conv,
    stem_prelu: PRelu,
    blocks: Vec<Block>,
    /// The output linear layer with both BNs folded in: [512, 25088] and [512].
    fc_weight: Tensor,
    fc_bias: Tensor,
    device: Device,
}

impl IResNet {
    /// Builds IR-`depth` from weights bound against [`manifest`]`(depth)`.
    pub fn new(depth: usize, weights: &HashMap<String, Tensor>, device: &Device) -> Result<IResNet> {
        let w = Weights(weights);
        let stem = Conv::folded(&w, "input_layer.0", "input_layer.1", 1, 1, device)?;
        let stem_prelu = PRelu::new(&w, "input_layer.2")?;
        let mut blocks = Vec::new();
        for (i, (cin, cout, stride)) in block_plan(depth)?.into_iter().enumerate() {
            let p = format!("body.{i}");
            let shortcut = if cin == cout {
                Shortcut::Subsample(stride)
            } else {
                Shortcut::Projection(Conv::folded(
                    &w,
                    &format!("{p}.shortcut_layer.0"),
                    &format!("{p}.shortcut_layer.1"),
                    stride,
                    0,
                    device,
                )?)
            };
            blocks.push(Block {
                bn_in: Affine::new(&w, &format!("{p}.res_layer.0"), device)?,
                conv1: Conv::folded(&w, &format!("{p}.res_layer.1"), &format!("{p}.res_layer.2"), 1, 1, device)?,
                prelu: PRelu::new(&w, &format!("{p}.res_layer.3"))?,
                conv2: Conv::folded(&w, &format!("{p}.res_layer.4"), &format!("{p}.res_layer.5"), stride, 1, device)?,
                shortcut,
            });
        }
        // output_layer: y = BN1d(W · (x·s + t) + b), x flattened channel-major (c·49 + pixel).
        let (s, t) = w.bn("output_layer.0", true, BN_EPS)?;
        let (s2, t2) = w.bn("output_layer.4", false, BN_EPS)?;
        let lin = w.vec("output_layer.3.weight")?;
        let b = w.vec("output_layer.3.bias")?;
        let inputs = 512 * 7 * 7;
        let mut fc = vec![0f32; EMBEDDING_DIM * inputs];
        let mut fc_bias = vec![0f32; EMBEDDING_DIM];
        for o in 0..EMBEDDING_DIM {
            let row = &lin[o * inputs..(o + 1) * inputs];
            let mut acc = b[o] as f64;
            for (j, &wj) in row.iter().enumerate() {
                let c = j / 49;
                fc[o * inputs + j] = wj * s[c] * s2[o];
                acc += wj as f64 * t[c] as f64;
            }
            fc_bias[o] = (acc as f32) * s2[o] + t2[o];
        }
        Ok(IResNet {
            depth,
            stem,
            stem_prelu,
            blocks,
            fc_weight: Tensor::from_vec(fc, (EMBEDDING_DIM, inputs), device).map_err(cerr)?,
            fc_bias: Tensor::from_vec(fc_bias, EMBEDDING_DIM, device).map_err(cerr)?,
            device: device.clone(),
        })
    }

    /// The network's depth (18, 50, 101, …).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Raw features [N, 512] of normalised BGR crops [N, 3, 112, 112].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with_taps(x, &[])?.0)
    }

    /// The raw features and the outputs of the body blocks listed in `taps`
    /// (0-based block indices), for aggregators that read intermediate maps.
    pub fn forward_with_taps(&self, x: &Tensor, taps: &[usize]) -> Result<(Tensor, Vec<Tensor>)> {
        let (_, c, h, w) = x.dims4().map_err(cerr)?;
        if (c, h, w) != (3, INPUT_SIZE, INPUT_SIZE) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("IR input must be [N, 3, {INPUT_SIZE}, {INPUT_SIZE}], got [_, {c}, {h}, {w}]"),
            ));
        }
        let mut x = self.stem_prelu.forward(&self.stem.forward(x)?)?;
        let mut tapped = Vec::with_capacity(taps.len());
        for (i, b) in self.blocks.iter().enumerate() {
            x = b.forward(&x)?;
            if taps.contains(&i) {
                tapped.push(x.clone());
            }
        }
        let flat = x.flatten_from(1).map_err(cerr)?;
        let y = flat
            .matmul(&self.fc_weight.t().map_err(cerr)?)
            .and_then(|y| y.broadcast_add(&self.fc_bias))
            .map_err(cerr)?;
        Ok((y, tapped))
    }
}

/// Splits raw features [N, D] into unit embeddings and their norms (AdaFace's
/// quality signal), as AdaFace's forward does.
pub fn normalise_with_norms(features: &Tensor) -> Result<(Vec<Vec<f32>>, Vec<f32>)> {
    let norms = features.sqr().and_then(|t| t.sum_keepdim(D::Minus1)).and_then(|t| t.sqrt()).map_err(cerr)?;
    let unit = features.broadcast_div(&norms).map_err(cerr)?;
    let unit: Vec<Vec<f32>> = unit.to_vec2().map_err(cerr)?;
    let norms: Vec<f32> = norms.flatten_all().and_then(|t| t.to_vec1()).map_err(cerr)?;
    Ok((unit, norms))
}
