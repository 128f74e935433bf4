//! OSNet, the omni-scale person re-identification network of torchreid
//! (Zhou et al., ICCV 2019), in its two published x1.0 forms: the plain
//! `osnet_x1_0` and `osnet_ain_x1_0`, which adds instance normalisation
//! ("AIN": architecture-searched instance normalisation) at fixed places.
//! A 256×128 person crop → a 512-d appearance feature.
//!
//! Input: RGB planes, `(x/255 − mean)/std` with ImageNet's mean and std
//! ([`preprocess`]), from a crop resized to 256×128 without keeping its aspect
//! ratio (torchreid resizes with Pillow's bilinear filter; see
//! [`crate::pil_resize`]). Output of [`OsNet::forward`]: the eval-mode feature
//! (after the fc layer's BN and ReLU, not L2-normalised); of
//! [`OsNet::forward_featuremap`]: the conv5 map, [B, 512, 16, 8] for a
//! 256×128 input.
//!
//! Layout (names as in torchreid's state dicts; widths 64, 256, 384, 512):
//! * `conv1`: conv7×7 stride 2 pad 3 (3→64, no bias) · norm · ReLU, where the
//!   norm `conv1.bn` is a BN, or an affine instance norm in AIN; then a 3×3
//!   max-pool stride 2 pad 1;
//! * `conv2`, `conv3`, `conv4`: two OS blocks each (256, 384, 512 wide), the
//!   first widening its input. An OS block of width `C` works at `m = C/4`:
//!   - `conv1`: conv1×1 · BN · ReLU down to `m`;
//!   - four streams of 1, 2, 3 and 4 light 3×3 convolutions (each: conv1×1
//!     without bias, depthwise conv3×3 pad 1, BN, ReLU); plain OSNet names
//!     them `conv2a`, `conv2b.j`, `conv2c.j`, `conv2d.j`, AIN
//!     `conv2.t.layers.j`;
//!   - `gate`: one channel gate shared by the four streams (global average
//!     pool, `fc1` conv1×1 with bias to `m/16`, ReLU, `fc2` conv1×1 with bias
//!     back to `m`, sigmoid, times the stream); the gated streams are summed;
//!   - `conv3`: conv1×1 · BN back to `C`; in AIN's "IN-in" blocks the BN is
//!     absent and the affine instance norm `IN` follows the convolution
//!     instead (inside the residual branch, before the addition);
//!   - `downsample`: conv1×1 · BN on the shortcut when the width changes;
//!   - addition, ReLU.
//!
//!   AIN's IN-in blocks are `conv2.0`, `conv2.1`, `conv3.1` and `conv4.0`.
//! * after `conv2` and `conv3`, a transition conv1×1 · BN · ReLU then a 2×2
//!   average pool stride 2: `conv2.2.0` / `conv3.2.0` in plain OSNet (the last
//!   element of the stage), `pool2.0` / `pool3.0` in AIN;
//! * `conv5`: conv1×1 · BN · ReLU (512 → 512): the feature map;
//! * global average pool, then `fc`: `fc.0` linear 512 → 512, `fc.1` BN1d,
//!   ReLU. The identity classifier `classifier` is training-only: it is not
//!   in the [`manifest`] and [`IGNORED_PREFIXES`] skips it at load.
//!
//! BN runs in eval mode (running statistics, eps 1e-5). At load every BN that
//! follows a convolution or the linear layer is folded into its weights and
//! bias, exact up to float rounding (a BN after a zero-padded convolution
//! scales the whole output, borders included). Instance norm uses each
//! image's own per-channel mean and biased variance (eps 1e-5), so it stays
//! a runtime operation. Depthwise convolutions are computed as nine shifted,
//! per-channel-weighted sums over a zero-padded map, 1×1 convolutions as
//! matrix products: both are exactly the convolutions they replace.

use crate::checkpoint::Manifest;
use crate::layers::{Weights, cerr, normalised_planes};
use candle_core::{DType, Device, Tensor};
use osprey_core::{Error, ErrorKind, Result};
use std::collections::HashMap;

/// Epsilon of every BatchNorm and InstanceNorm (PyTorch's default).
const NORM_EPS: f64 = 1e-5;
/// Input height torchreid's models are trained on.
pub const INPUT_HEIGHT: usize = 256;
/// Input width torchreid's models are trained on.
pub const INPUT_WIDTH: usize = 128;
/// Width of the output feature (and of the conv5 map).
pub const FEATURE_DIM: usize = 512;
/// ImageNet channel means (RGB) of the input normalisation.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB) of the input normalisation.
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Name prefixes of published checkpoints that inference does not use: the
/// identity classifier, whose size depends on the training set.
pub const IGNORED_PREFIXES: [&str; 1] = ["classifier."];
/// Widths: the stem, then the three stages.
const CHANNELS: [usize; 4] = [64, 256, 384, 512];
/// Light 3×3 convolutions per stream (streams 1…4 of every OS block).
const STREAM_DEPTHS: [usize; 4] = [1, 2, 3, 4];
/// The channel gate's reduction factor.
const GATE_REDUCTION: usize = 16;
/// An OS block's bottleneck factor.
const BOTTLENECK: usize = 4;

/// The two published OSNet x1.0 networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OsNetVariant {
    /// `osnet_x1_0`: batch normalisation throughout.
    X1_0,
    /// `osnet_ain_x1_0`: instance normalisation in the stem and in four blocks.
    AinX1_0,
}

impl OsNetVariant {
    /// torchreid's name of the variant.
    pub fn name(self) -> &'static str {
        match self {
            OsNetVariant::X1_0 => "osnet_x1_0",
            OsNetVariant::AinX1_0 => "osnet_ain_x1_0",
        }
    }

    /// Whether the stem's `conv1.bn` is an instance norm.
    fn stem_instance_norm(self) -> bool {
        self == OsNetVariant::AinX1_0
    }

    /// Whether block `i` of stage `s` (0-based, conv2 = stage 0) is an
    /// IN-in block (instance norm closing its residual branch).
    fn instance_norm_block(self, stage: usize, i: usize) -> bool {
        match self {
            OsNetVariant::X1_0 => false,
            OsNetVariant::AinX1_0 => matches!((stage, i), (0, 0) | (0, 1) | (1, 1) | (2, 0)),
        }
    }

    /// The name of the transition after stage `s` (0 or 1).
    fn transition(self, stage: usize) -> String {
        match self {
            // The third element of the stage's Sequential, itself a Sequential(conv, pool).
            OsNetVariant::X1_0 => format!("conv{}.2.0", stage + 2),
            OsNetVariant::AinX1_0 => format!("pool{}.0", stage + 2),
        }
    }

    /// The name of light convolution `j` of stream `t` (0-based) in block `block`.
    fn stream_layer(self, block: &str, t: usize, j: usize) -> String {
        match self {
            OsNetVariant::X1_0 if t == 0 => format!("{block}.conv2a"),
            OsNetVariant::X1_0 => format!("{block}.conv2{}.{j}", ['a', 'b', 'c', 'd'][t]),
            OsNetVariant::AinX1_0 => format!("{block}.conv2.{t}.layers.{j}"),
        }
    }
}

impl std::fmt::Display for OsNetVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One OS block's place in the network.
struct BlockSpec {
    name: String,
    cin: usize,
    cout: usize,
    instance_norm: bool,
}

/// The blocks of stage `s` (0-based), input → output.
fn stage_blocks(variant: OsNetVariant, stage: usize) -> Vec<BlockSpec> {
    (0..2)
        .map(|i| BlockSpec {
            name: format!("conv{}.{i}", stage + 2),
            cin: if i == 0 { CHANNELS[stage] } else { CHANNELS[stage + 1] },
            cout: CHANNELS[stage + 1],
            instance_norm: variant.instance_norm_block(stage, i),
        })
        .collect()
}

fn bn_entries(m: &mut Manifest, name: &str, c: usize) {
    m.push((format!("{name}.weight"), vec![c]));
    m.push((format!("{name}.bias"), vec![c]));
    m.push((format!("{name}.running_mean"), vec![c]));
    m.push((format!("{name}.running_var"), vec![c]));
    m.push((format!("{name}.num_batches_tracked"), vec![]));
}

fn conv_bn_entries(m: &mut Manifest, name: &str, cout: usize, cin: usize) {
    m.push((format!("{name}.conv.weight"), vec![cout, cin, 1, 1]));
    bn_entries(m, &format!("{name}.bn"), cout);
}

fn block_entries(m: &mut Manifest, variant: OsNetVariant, b: &BlockSpec) {
    let mid = b.cout / BOTTLENECK;
    let p = &b.name;
    conv_bn_entries(m, &format!("{p}.conv1"), mid, b.cin);
    for (t, depth) in STREAM_DEPTHS.into_iter().enumerate() {
        for j in 0..depth {
            let l = variant.stream_layer(p, t, j);
            m.push((format!("{l}.conv1.weight"), vec![mid, mid, 1, 1]));
            m.push((format!("{l}.conv2.weight"), vec![mid, 1, 3, 3]));
            bn_entries(m, &format!("{l}.bn"), mid);
        }
    }
    let hidden = mid / GATE_REDUCTION;
    m.push((format!("{p}.gate.fc1.weight"), vec![hidden, mid, 1, 1]));
    m.push((format!("{p}.gate.fc1.bias"), vec![hidden]));
    m.push((format!("{p}.gate.fc2.weight"), vec![mid, hidden, 1, 1]));
    m.push((format!("{p}.gate.fc2.bias"), vec![mid]));
    if b.instance_norm {
        m.push((format!("{p}.conv3.conv.weight"), vec![b.cout, mid, 1, 1]));
    } else {
        conv_bn_entries(m, &format!("{p}.conv3"), b.cout, mid);
    }
    if b.cin != b.cout {
        conv_bn_entries(m, &format!("{p}.downsample"), b.cout, b.cin);
    }
    if b.instance_norm {
        m.push((format!("{p}.IN.weight"), vec![b.cout]));
        m.push((format!("{p}.IN.bias"), vec![b.cout]));
    }
}

/// Every parameter and buffer of the feature network, as torchreid names
/// them, in its state-dict order. The training-only `classifier.weight`
/// `[classes, 512]` and `classifier.bias` are not listed: bind checkpoints
/// with [`IGNORED_PREFIXES`].
pub fn manifest(variant: OsNetVariant) -> Manifest {
    let mut m = vec![("conv1.conv.weight".to_string(), vec![CHANNELS[0], 3, 7, 7])];
    if variant.stem_instance_norm() {
        m.push(("conv1.bn.weight".into(), vec![CHANNELS[0]]));
        m.push(("conv1.bn.bias".into(), vec![CHANNELS[0]]));
    } else {
        bn_entries(&mut m, "conv1.bn", CHANNELS[0]);
    }
    for stage in 0..3 {
        for b in stage_blocks(variant, stage) {
            block_entries(&mut m, variant, &b);
        }
        if stage < 2 {
            let c = CHANNELS[stage + 1];
            conv_bn_entries(&mut m, &variant.transition(stage), c, c);
        }
    }
    conv_bn_entries(&mut m, "conv5", CHANNELS[3], CHANNELS[3]);
    m.push(("fc.0.weight".into(), vec![FEATURE_DIM, CHANNELS[3]]));
    m.push(("fc.0.bias".into(), vec![FEATURE_DIM]));
    bn_entries(&mut m, "fc.1", FEATURE_DIM);
    m
}

/// A 1×1 convolution (or a linear layer) as a matrix product, optionally
/// with a folded BN and a ReLU.
struct Pointwise {
    /// [out, in]
    weight: Tensor,
    /// [out, 1], absent for a bias-free convolution.
    bias: Option<Tensor>,
    relu: bool,
}

impl Pointwise {
    /// `{name}.conv` followed by the BN `{name}.bn`.
    fn conv_bn(w: &Weights, name: &str, relu: bool, device: &Device) -> Result<Pointwise> {
        Pointwise::folded(w, &format!("{name}.conv.weight"), None, &format!("{name}.bn"), relu, device)
    }

    /// A weight (and bias) with the BN `bn` folded in.
    fn folded(
        w: &Weights,
        weight: &str,
        bias: Option<&str>,
        bn: &str,
        relu: bool,
        device: &Device,
    ) -> Result<Pointwise> {
        let (scale, shift) = w.bn(bn, true, NORM_EPS)?;
        let out = scale.len();
        let data = w.scaled_rows(weight, &scale)?;
        let bias = match bias {
            Some(b) => w.vec(b)?.iter().zip(&scale).zip(&shift).map(|((b, s), t)| b * s + t).collect(),
            None => shift,
        };
        let cin = data.len() / out;
        Ok(Pointwise {
            weight: Tensor::from_vec(data, (out, cin), device).map_err(cerr)?,
            bias: Some(Tensor::from_vec(bias, (out, 1), device).map_err(cerr)?),
            relu,
        })
    }

    /// A bias-free 1×1 convolution without BN.
    fn plain(w: &Weights, weight: &str) -> Result<Pointwise> {
        let t = w.get(weight)?;
        let (out, cin) = (t.dim(0).map_err(cerr)?, t.dim(1).map_err(cerr)?);
        Ok(Pointwise { weight: t.reshape((out, cin)).map_err(cerr)?, bias: None, relu: false })
    }

    /// [B, C, H, W] → [B, out, H, W].
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, wd) = x.dims4().map_err(cerr)?;
        let out = self.weight.dim(0).map_err(cerr)?;
        let flat = x.reshape((b, c, h * wd)).map_err(cerr)?;
        let mut y = self.weight.broadcast_matmul(&flat).map_err(cerr)?;
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias).map_err(cerr)?;
        }
        if self.relu {
            y = y.relu().map_err(cerr)?;
        }
        y.reshape((b, out, h, wd)).map_err(cerr)
    }
}

/// A depthwise 3×3 convolution (stride 1, zero padding 1) with a folded BN.
struct Depthwise {
    /// The nine taps in row-major kernel order, each [1, C, 1, 1].
    taps: Vec<Tensor>,
    /// [1, C, 1, 1]
    bias: Tensor,
}

impl Depthwise {
    fn folded(w: &Weights, weight: &str, bn: &str, device: &Device) -> Result<Depthwise> {
        let (scale, shift) = w.bn(bn, true, NORM_EPS)?;
        let c = scale.len();
        let data = w.scaled_rows(weight, &scale)?;
        let taps = (0..9)
            .map(|k| {
                let tap: Vec<f32> = (0..c).map(|ch| data[ch * 9 + k]).collect();
                Tensor::from_vec(tap, (1, c, 1, 1), device).map_err(cerr)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Depthwise { taps, bias: Tensor::from_vec(shift, (1, c, 1, 1), device).map_err(cerr)? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4().map_err(cerr)?;
        let padded = x.pad_with_zeros(2, 1, 1).and_then(|p| p.pad_with_zeros(3, 1, 1)).map_err(cerr)?;
        let mut acc = self.bias.clone();
        for (k, tap) in self.taps.iter().enumerate() {
            let (dy, dx) = (k / 3, k % 3);
            let shifted = padded.narrow(2, dy, h).and_then(|s| s.narrow(3, dx, w)).map_err(cerr)?;
            acc = shifted.broadcast_mul(tap).and_then(|t| t.broadcast_add(&acc)).map_err(cerr)?;
        }
        Ok(acc)
    }
}

/// LightConv3x3: conv1×1 (no bias) · depthwise conv3×3 · BN · ReLU.
struct LightConv {
    pointwise: Pointwise,
    depthwise: Depthwise,
}

impl LightConv {
    fn new(w: &Weights, name: &str, device: &Device) -> Result<LightConv> {
        Ok(LightConv {
            pointwise: Pointwise::plain(w, &format!("{name}.conv1.weight"))?,
            depthwise: Depthwise::folded(w, &format!("{name}.conv2.weight"), &format!("{name}.bn"), device)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.depthwise.forward(&self.pointwise.forward(x)?)?.relu().map_err(cerr)
    }
}

/// The channel gate: x · sigmoid(fc2(relu(fc1(mean over H, W of x)))).
struct Gate {
    /// fc1 transposed: [C, C/16]
    w1t: Tensor,
    b1: Tensor,
    /// fc2 transposed: [C/16, C]
    w2t: Tensor,
    b2: Tensor,
}

impl Gate {
    fn new(w: &Weights, name: &str) -> Result<Gate> {
        let linear = |fc: &str| -> Result<(Tensor, Tensor)> {
            let weight = w.get(&format!("{name}.{fc}.weight"))?;
            let (out, cin) = (weight.dim(0).map_err(cerr)?, weight.dim(1).map_err(cerr)?);
            let wt = weight.reshape((out, cin)).and_then(|t| t.t()).and_then(|t| t.contiguous()).map_err(cerr)?;
            Ok((wt, w.get(&format!("{name}.{fc}.bias"))?.clone()))
        };
        let (w1t, b1) = linear("fc1")?;
        let (w2t, b2) = linear("fc2")?;
        Ok(Gate { w1t, b1, w2t, b2 })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, _, _) = x.dims4().map_err(cerr)?;
        let pooled = x.flatten_from(2).and_then(|t| t.mean(2)).map_err(cerr)?;
        let hidden = pooled.matmul(&self.w1t).and_then(|t| t.broadcast_add(&self.b1)).and_then(|t| t.relu());
        let logits = hidden.and_then(|t| t.matmul(&self.w2t)).and_then(|t| t.broadcast_add(&self.b2)).map_err(cerr)?;
        // sigmoid(z) = 1 / (1 + e^−z)
        let gate = logits.neg().and_then(|t| t.exp()).and_then(|t| t + 1.0).and_then(|t| t.recip()).map_err(cerr)?;
        x.broadcast_mul(&gate.reshape((b, c, 1, 1)).map_err(cerr)?).map_err(cerr)
    }
}

/// Affine instance normalisation: each image's channels normalised by their
/// own mean and biased variance over H×W.
struct InstanceNorm {
    /// [1, C, 1]
    weight: Tensor,
    bias: Tensor,
}

impl InstanceNorm {
    fn new(w: &Weights, name: &str) -> Result<InstanceNorm> {
        let get = |p: &str| -> Result<Tensor> {
            let t = w.get(&format!("{name}.{p}"))?;
            t.reshape((1, t.elem_count(), 1)).map_err(cerr)
        };
        Ok(InstanceNorm { weight: get("weight")?, bias: get("bias")? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4().map_err(cerr)?;
        let flat = x.reshape((b, c, h * w)).map_err(cerr)?;
        let centred = flat.mean_keepdim(2).and_then(|m| flat.broadcast_sub(&m)).map_err(cerr)?;
        let std = centred.sqr().and_then(|v| v.mean_keepdim(2)).and_then(|v| v + NORM_EPS).and_then(|v| v.sqrt());
        centred
            .broadcast_div(&std.map_err(cerr)?)
            .and_then(|y| y.broadcast_mul(&self.weight))
            .and_then(|y| y.broadcast_add(&self.bias))
            .and_then(|y| y.reshape((b, c, h, w)))
            .map_err(cerr)
    }
}

/// An OS block (see the module documentation).
struct OsBlock {
    conv1: Pointwise,
    streams: Vec<Vec<LightConv>>,
    gate: Gate,
    /// conv1×1 with its BN folded in, or bare before an instance norm.
    conv3: Pointwise,
    instance_norm: Option<InstanceNorm>,
    downsample: Option<Pointwise>,
}

impl OsBlock {
    fn new(w: &Weights, variant: OsNetVariant, spec: &BlockSpec, device: &Device) -> Result<OsBlock> {
        let p = &spec.name;
        let streams = STREAM_DEPTHS
            .into_iter()
            .enumerate()
            .map(|(t, depth)| (0..depth).map(|j| LightConv::new(w, &variant.stream_layer(p, t, j), device)).collect())
            .collect::<Result<Vec<Vec<_>>>>()?;
        let (conv3, instance_norm) = if spec.instance_norm {
            (Pointwise::plain(w, &format!("{p}.conv3.conv.weight"))?, Some(InstanceNorm::new(w, &format!("{p}.IN"))?))
        } else {
            (Pointwise::conv_bn(w, &format!("{p}.conv3"), false, device)?, None)
        };
        let downsample = if spec.cin != spec.cout {
            Some(Pointwise::conv_bn(w, &format!("{p}.downsample"), false, device)?)
        } else {
            None
        };
        Ok(OsBlock {
            conv1: Pointwise::conv_bn(w, &format!("{p}.conv1"), true, device)?,
            streams,
            gate: Gate::new(w, &format!("{p}.gate"))?,
            conv3,
            instance_norm,
            downsample,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x1 = self.conv1.forward(x)?;
        let mut sum: Option<Tensor> = None;
        for stream in &self.streams {
            let mut s = x1.clone();
            for layer in stream {
                s = layer.forward(&s)?;
            }
            let gated = self.gate.forward(&s)?;
            sum = Some(match sum {
                None => gated,
                Some(acc) => (acc + gated).map_err(cerr)?,
            });
        }
        let x2 = sum.ok_or_else(|| Error::internal("OS block without streams"))?;
        let mut x3 = self.conv3.forward(&x2)?;
        if let Some(norm) = &self.instance_norm {
            x3 = norm.forward(&x3)?;
        }
        let identity = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        (x3 + identity).and_then(|y| y.relu()).map_err(cerr)
    }
}

/// The stem's normalisation.
enum StemNorm {
    /// BN folded into the convolution.
    Folded,
    Instance(InstanceNorm),
}

/// An OSNet x1.0 (plain or AIN) with its weights.
pub struct OsNet {
    variant: OsNetVariant,
    /// conv7×7 weight [64, 3, 7, 7] (BN folded in for the plain variant).
    stem_weight: Tensor,
    /// [1, 64, 1, 1], zero before an instance norm.
    stem_bias: Tensor,
    stem_norm: StemNorm,
    /// Three stages of two blocks.
    stages: Vec<Vec<OsBlock>>,
    /// conv1×1 · BN · ReLU after stages 0 and 1 (each then average-pooled).
    transitions: Vec<Pointwise>,
    conv5: Pointwise,
    /// The fc layer with its BN1d folded in: [512, 512] and [512, 1].
    fc: Pointwise,
    device: Device,
}

impl OsNet {
    /// Builds the network from weights bound against [`manifest`]`(variant)`.
    pub fn new(variant: OsNetVariant, weights: &HashMap<String, Tensor>, device: &Device) -> Result<OsNet> {
        let w = Weights(weights);
        let c0 = CHANNELS[0];
        let (stem_weight, stem_bias, stem_norm) = if variant.stem_instance_norm() {
            // A bias would be removed by the instance norm's mean anyway.
            let weight = w.get("conv1.conv.weight")?.clone();
            let bias = Tensor::zeros((1, c0, 1, 1), DType::F32, device).map_err(cerr)?;
            (weight, bias, StemNorm::Instance(InstanceNorm::new(&w, "conv1.bn")?))
        } else {
            let (scale, shift) = w.bn("conv1.bn", true, NORM_EPS)?;
            let data = w.scaled_rows("conv1.conv.weight", &scale)?;
            (
                Tensor::from_vec(data, (c0, 3, 7, 7), device).map_err(cerr)?,
                Tensor::from_vec(shift, (1, c0, 1, 1), device).map_err(cerr)?,
                StemNorm::Folded,
            )
        };
        let stages = (0..3)
            .map(|s| stage_blocks(variant, s).iter().map(|b| OsBlock::new(&w, variant, b, device)).collect())
            .collect::<Result<Vec<Vec<_>>>>()?;
        let transitions =
            (0..2).map(|s| Pointwise::conv_bn(&w, &variant.transition(s), true, device)).collect::<Result<Vec<_>>>()?;
        Ok(OsNet {
            variant,
            stem_weight,
            stem_bias,
            stem_norm,
            stages,
            transitions,
            conv5: Pointwise::conv_bn(&w, "conv5", true, device)?,
            fc: Pointwise::folded(&w, "fc.0.weight", Some("fc.0.bias"), "fc.1", true, device)?,
            device: device.clone(),
        })
    }

    /// Which network this is.
    pub fn variant(&self) -> OsNetVariant {
        self.variant
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The conv5 feature map [B, 512, H/16, W/16] of normalised RGB crops
    /// [B, 3, H, W] (256×128 as trained: [B, 512, 16, 8]).
    pub fn forward_featuremap(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != 3 || dims[2] < 16 || dims[3] < 16 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} input must be [B, 3, H, W] with H, W ≥ 16 (trained on {INPUT_HEIGHT}×{INPUT_WIDTH}), got {dims:?}",
                    self.variant
                ),
            ));
        }
        let x = x.to_dtype(DType::F32).and_then(|x| x.to_device(&self.device)).map_err(cerr)?;
        let mut x =
            x.conv2d(&self.stem_weight, 3, 2, 1, 1).and_then(|y| y.broadcast_add(&self.stem_bias)).map_err(cerr)?;
        if let StemNorm::Instance(norm) = &self.stem_norm {
            x = norm.forward(&x)?;
        }
        x = max_pool_3x3_s2_p1(&x.relu().map_err(cerr)?)?;
        for (s, stage) in self.stages.iter().enumerate() {
            for block in stage {
                x = block.forward(&x)?;
            }
            if let Some(t) = self.transitions.get(s) {
                x = t.forward(&x)?.avg_pool2d(2).map_err(cerr)?;
            }
        }
        self.conv5.forward(&x)
    }

    /// The eval-mode features [B, 512] of normalised RGB crops [B, 3, 256, 128]
    /// (see [`preprocess`]): not L2-normalised.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let map = self.forward_featuremap(x)?;
        let (b, c, _, _) = map.dims4().map_err(cerr)?;
        let pooled = map.flatten_from(2).and_then(|t| t.mean_keepdim(2)).map_err(cerr)?;
        // The fc layer as a "1×1 convolution" over the pooled [B, 512, 1, 1].
        let v = self.fc.forward(&pooled.reshape((b, c, 1, 1)).map_err(cerr)?)?;
        v.reshape((b, FEATURE_DIM)).map_err(cerr)
    }
}

/// PyTorch's `MaxPool2d(3, stride=2, padding=1)`: the border is padded with
/// −∞, so padding never wins a maximum.
fn max_pool_3x3_s2_p1(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4().map_err(cerr)?;
    let dev = x.device();
    let col = Tensor::full(f32::NEG_INFINITY, (b, c, h, 1), dev).map_err(cerr)?;
    let x = Tensor::cat(&[&col, x, &col], 3).map_err(cerr)?;
    let row = Tensor::full(f32::NEG_INFINITY, (b, c, 1, w + 2), dev).map_err(cerr)?;
    let x = Tensor::cat(&[&row, &x, &row], 2).map_err(cerr)?;
    x.max_pool2d_with_stride(3, 2).map_err(cerr)
}

/// Turns 256×128 RGB crops (8-bit, row-major height × width × channel) into
/// the network's input [B, 3, 256, 128]: `(x/255 − mean)/std` per channel, in
/// float32 as torchvision's `ToTensor` and `Normalize` compute it.
pub fn preprocess<C: AsRef<[u8]>>(crops: &[C], device: &Device) -> Result<Tensor> {
    normalised_planes(crops, (INPUT_HEIGHT, INPUT_WIDTH), MEAN, STD, device)
}
