//! GaitBase, OpenGait's `Baseline` model for silhouette gait recognition
//! (configuration `configs/gaitbase/gaitbase_da_casiab.yaml`): a sequence of
//! 64×44 binary silhouettes → a [256, 16] embedding (256 channels for each of
//! 16 horizontal strips of the body).
//!
//! Input: silhouettes from OpenGait's pretreatment ([`crate::gait_pretreat`]),
//! 8-bit values divided by 255, as [n, s, 64, 44] (n sequences of s frames).
//!
//! Layout (names as in OpenGait's checkpoints, whose state dict sits under
//! the dict key `model`):
//! * `Backbone.forward_block`: a ResNet-9 applied to every frame on its own
//!   (OpenGait's `SetBlockWrapper`): `conv1.conv` (3×3, 1→64, no bias) · `bn1`
//!   · ReLU, no max-pool, then `layer1`…`layer4`, one torchvision
//!   `BasicBlock` each, widths 64, 128, 256, 512 and strides 1, 2, 2, 1:
//!   conv3×3 (stride s) · BN · ReLU · conv3×3 · BN, plus the input (or
//!   `downsample` = conv1×1 (stride s) · BN when the shape changes), then
//!   ReLU. A 64×44 frame ends as 512 × 16×11;
//! * temporal pooling: the maximum over the s frames (`PackSequenceWrapper(torch.max)`);
//! * horizontal pyramid pooling with the single level of 16 bins: each of the
//!   16 rows of the 16×11 map gives mean + max over its 11 columns → [n, 512, 16];
//! * `FCs`: `SeparateFCs`, one 512→256 matrix per strip, no bias
//!   (`fc_bin` [16, 512, 256]) → the embedding [n, 256, 16];
//! * `BNNecks` (a BatchNorm1d over the 4096 flattened values and a cosine
//!   classifier over the training identities) serve training only: OpenGait's
//!   inference feature is the `FCs` output, so [`GaitBase`] does not read them.
//!
//! At load every BatchNorm (all follow a convolution) is folded into that
//! convolution's weights and a bias: exact up to float rounding, since the
//! zero padding is applied to the convolution's input, not its output.
//!
//! OpenGait compares embeddings with its `euc` metric: for each strip the
//! Euclidean distance between the two 256-d part vectors (no normalisation),
//! averaged over the 16 strips; lower is more similar ([`distance`]).

use crate::checkpoint::Manifest;
use crate::layers::{Weights, cerr};
use candle_core::{D, Device, Tensor};
use osprey_core::{Error, ErrorKind, Result};
use std::collections::HashMap;

/// BatchNorm's epsilon (PyTorch's default) in every layer.
const BN_EPS: f64 = 1e-5;
/// Silhouette height after OpenGait's pretreatment.
pub const HEIGHT: usize = 64;
/// Silhouette width after OpenGait's pretreatment and its 10-column cut each side.
pub const WIDTH: usize = 44;
/// Horizontal strips (HPP bins, one `SeparateFCs` matrix each).
pub const PARTS: usize = 16;
/// Channels of each strip's embedding.
pub const PART_DIM: usize = 256;
/// Length of a flattened embedding ([`flatten`]).
pub const EMBEDDING_DIM: usize = PART_DIM * PARTS;
/// Identities of the `BNNecks` classifier in the CASIA-B configuration.
pub const CLASSES: usize = 74;
/// Stage widths and strides of the ResNet-9.
const WIDTHS: [usize; 4] = [64, 128, 256, 512];
const STRIDES: [usize; 4] = [1, 2, 2, 1];
/// Backbone output width, the input width of `FCs`.
const FEATURE_DIM: usize = 512;
/// Frames run through the backbone at once: bounds the activations' memory
/// (the stem's output is 64×64×44 floats, 720 KB, per frame) whatever the
/// sequence length.
const FRAME_CHUNK: usize = 32;
/// Prefix of the training-only tensors the embedding does not use.
pub const TRAINING_ONLY: &str = "BNNecks.";
/// Ignore prefixes for [`crate::checkpoint::Checkpoint::bind`] with
/// [`embedding_manifest`]: published checkpoints carry the `BNNecks`, whose
/// classifier width depends on the training set.
pub const IGNORE_PREFIXES: &[&str] = &[TRAINING_ONLY];

/// Appends a BatchNorm's parameters and buffers (`weight`, `bias`,
/// `running_mean`, `running_var`, `num_batches_tracked`) of `c` channels.
pub fn bn_entries(m: &mut Manifest, name: &str, c: usize) {
    for field in ["weight", "bias", "running_mean", "running_var"] {
        m.push((format!("{name}.{field}"), vec![c]));
    }
    m.push((format!("{name}.num_batches_tracked"), vec![]));
}

/// Appends a torchvision `BasicBlock` (`cin` → `width` channels, first
/// convolution of stride `stride`) named `prefix`: `conv1`, `bn1`, `conv2`,
/// `bn2`, and `downsample.0` / `downsample.1` when the shape changes.
pub fn basic_block_entries(m: &mut Manifest, prefix: &str, cin: usize, width: usize, stride: usize) {
    m.push((format!("{prefix}.conv1.weight"), vec![width, cin, 3, 3]));
    bn_entries(m, &format!("{prefix}.bn1"), width);
    m.push((format!("{prefix}.conv2.weight"), vec![width, width, 3, 3]));
    bn_entries(m, &format!("{prefix}.bn2"), width);
    if stride != 1 || cin != width {
        m.push((format!("{prefix}.downsample.0.weight"), vec![width, cin, 1, 1]));
        bn_entries(m, &format!("{prefix}.downsample.1"), width);
    }
}

/// Every parameter and buffer of GaitBase as OpenGait names them, the
/// training-only `BNNecks` included (CASIA-B: [`CLASSES`] identities).
pub fn manifest() -> Manifest {
    let mut m = embedding_manifest();
    m.push((format!("{TRAINING_ONLY}fc_bin"), vec![PARTS, PART_DIM, CLASSES]));
    bn_entries(&mut m, &format!("{TRAINING_ONLY}bn1d"), PART_DIM * PARTS);
    m
}

/// What the embedding consumes: [`manifest`] without the `BNNecks`. Bind
/// with [`IGNORE_PREFIXES`] to accept checkpoints trained on any dataset.
pub fn embedding_manifest() -> Manifest {
    let p = "Backbone.forward_block";
    let mut m = vec![(format!("{p}.conv1.conv.weight"), vec![WIDTHS[0], 1, 3, 3])];
    bn_entries(&mut m, &format!("{p}.bn1"), WIDTHS[0]);
    let mut cin = WIDTHS[0];
    for (i, (&w, &stride)) in WIDTHS.iter().zip(&STRIDES).enumerate() {
        basic_block_entries(&mut m, &format!("{p}.layer{}.0", i + 1), cin, w, stride);
        cin = w;
    }
    m.push(("FCs.fc_bin".into(), vec![PARTS, FEATURE_DIM, PART_DIM]));
    m
}

/// A bias-free convolution with the BatchNorm that follows it folded in
/// (or, from [`Conv::plain`], alone), padded by half its kernel.
pub struct Conv {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    pad: usize,
}

impl Conv {
    /// The convolution `{conv}.weight` followed by the BatchNorm `bn`
    /// (running statistics), folded into one convolution with a bias.
    pub fn folded(
        weights: &HashMap<String, Tensor>,
        conv: &str,
        bn: &str,
        stride: usize,
        device: &Device,
    ) -> Result<Conv> {
        let w = Weights(weights);
        let weight = w.get(&format!("{conv}.weight"))?;
        let (o, i, kh, kw) = weight.dims4().map_err(cerr)?;
        let (scale, shift) = w.bn(bn, true, BN_EPS)?;
        if scale.len() != o {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("`{bn}` has {} channels, `{conv}` has {o} outputs", scale.len()),
            ));
        }
        let mut data: Vec<f32> = weight.flatten_all().and_then(|t| t.to_vec1()).map_err(cerr)?;
        for (oc, chunk) in data.chunks_mut(i * kh * kw).enumerate() {
            chunk.iter_mut().for_each(|v| *v *= scale[oc]);
        }
        Ok(Conv {
            weight: Tensor::from_vec(data, (o, i, kh, kw), device).map_err(cerr)?,
            bias: Tensor::from_vec(shift, (1, o, 1, 1), device).map_err(cerr)?,
            stride,
            pad: kh / 2,
        })
    }

    /// The bias-free convolution `{conv}.weight` on its own (a zero bias).
    pub fn plain(weights: &HashMap<String, Tensor>, conv: &str, stride: usize, device: &Device) -> Result<Conv> {
        let weight = Weights(weights).get(&format!("{conv}.weight"))?.to_device(device).map_err(cerr)?;
        let (o, _, kh, _) = weight.dims4().map_err(cerr)?;
        let bias = Tensor::zeros((1, o, 1, 1), candle_core::DType::F32, device).map_err(cerr)?;
        Ok(Conv { weight, bias, stride, pad: kh / 2 })
    }

    /// [n, cin, h, w] → [n, cout, h', w'].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, self.pad, self.stride, 1, 1).and_then(|y| y.broadcast_add(&self.bias)).map_err(cerr)
    }
}

/// torchvision's `BasicBlock` with its BatchNorms folded.
pub struct BasicBlock {
    conv1: Conv,
    conv2: Conv,
    downsample: Option<Conv>,
}

impl BasicBlock {
    /// The block named `prefix` ([`basic_block_entries`]), `cin` → `width`
    /// channels, first convolution (and downsample) of stride `stride`.
    pub fn load(
        weights: &HashMap<String, Tensor>,
        prefix: &str,
        cin: usize,
        width: usize,
        stride: usize,
        device: &Device,
    ) -> Result<BasicBlock> {
        let downsample = if stride != 1 || cin != width {
            Some(Conv::folded(
                weights,
                &format!("{prefix}.downsample.0"),
                &format!("{prefix}.downsample.1"),
                stride,
                device,
            )?)
        } else {
            None
        };
        Ok(BasicBlock {
            conv1: Conv::folded(weights, &format!("{prefix}.conv1"), &format!("{prefix}.bn1"), stride, device)?,
            conv2: Conv::folded(weights, &format!("{prefix}.conv2"), &format!("{prefix}.bn2"), 1, device)?,
            downsample,
        })
    }

    /// [n, cin, h, w] → [n, width, h / stride, w / stride] (rounded up).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let r = self.conv2.forward(&self.conv1.forward(x)?.relu().map_err(cerr)?)?;
        let s = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        (r + s).and_then(|y| y.relu()).map_err(cerr)
    }
}

/// GaitBase with its weights, ready to embed silhouette sequences.
pub struct GaitBase {
    stem: Conv,
    blocks: Vec<BasicBlock>,
    /// `FCs.fc_bin`: [16, 512, 256].
    fc_bin: Tensor,
    device: Device,
}

impl GaitBase {
    /// Builds the model from weights bound against [`embedding_manifest`]
    /// (or the full [`manifest`]; the `BNNecks` are not read).
    pub fn new(weights: &HashMap<String, Tensor>, device: &Device) -> Result<GaitBase> {
        let w = Weights(weights);
        let p = "Backbone.forward_block";
        let stem = Conv::folded(weights, &format!("{p}.conv1.conv"), &format!("{p}.bn1"), 1, device)?;
        let mut blocks = Vec::with_capacity(WIDTHS.len());
        let mut cin = WIDTHS[0];
        for (i, (&width, &stride)) in WIDTHS.iter().zip(&STRIDES).enumerate() {
            blocks.push(BasicBlock::load(weights, &format!("{p}.layer{}.0", i + 1), cin, width, stride, device)?);
            cin = width;
        }
        let fc_bin = w.get("FCs.fc_bin")?.to_device(device).map_err(cerr)?;
        if fc_bin.dims() != [PARTS, FEATURE_DIM, PART_DIM] {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("`FCs.fc_bin` has shape {:?}, expected {:?}", fc_bin.dims(), [PARTS, FEATURE_DIM, PART_DIM]),
            ));
        }
        Ok(GaitBase { stem, blocks, fc_bin, device: device.clone() })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The backbone on a batch of frames [f, 1, 64, 44] → [f, 512, 16, 11].
    fn backbone(&self, frames: &Tensor) -> Result<Tensor> {
        let mut x = self.stem.forward(frames)?.relu().map_err(cerr)?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        Ok(x)
    }

    /// Embeddings [n, 256, 16] of n silhouette sequences [n, s, 64, 44]
    /// (values 0..1, s ≥ 1 frames each).
    pub fn forward(&self, sils: &Tensor) -> Result<Tensor> {
        let (n, s, h, w) = sils.dims4().map_err(|_| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("GaitBase input must be [n, s, {HEIGHT}, {WIDTH}], got {:?}", sils.dims()),
            )
        })?;
        if (h, w) != (HEIGHT, WIDTH) || n == 0 || s == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("GaitBase input must be [n ≥ 1, s ≥ 1, {HEIGHT}, {WIDTH}], got {:?}", sils.dims()),
            ));
        }
        let sils = sils.to_dtype(candle_core::DType::F32).and_then(|t| t.to_device(&self.device)).map_err(cerr)?;
        // Temporal pooling: the running maximum over chunks of frames.
        let mut pooled = Vec::with_capacity(n);
        for i in 0..n {
            let seq = sils.get(i).map_err(cerr)?;
            let mut acc: Option<Tensor> = None;
            for start in (0..s).step_by(FRAME_CHUNK) {
                let len = FRAME_CHUNK.min(s - start);
                let frames =
                    seq.narrow(0, start, len).and_then(|t| t.reshape((len, 1, HEIGHT, WIDTH))).map_err(cerr)?;
                let m = self.backbone(&frames)?.max_keepdim(0).map_err(cerr)?;
                acc = Some(match acc {
                    Some(a) => a.maximum(&m).map_err(cerr)?,
                    None => m,
                });
            }
            pooled.push(acc.ok_or_else(|| Error::internal("no frames to pool"))?);
        }
        let x = Tensor::cat(&pooled, 0).map_err(cerr)?; // [n, 512, h', w']
        pool_and_project(&x, &self.fc_bin)
    }
}

/// OpenGait's head after temporal pooling: horizontal pooling into
/// [`PARTS`] bins over the flattened h·w values of each channel (its
/// `view(n, c, 16, -1)`, so h·w must be a multiple of 16), mean + max, then
/// `SeparateFCs`, one [c, out] matrix per bin (`fc_bin` [16, c, out]):
/// [n, c, h, w] → [n, out, 16].
pub fn pool_and_project(x: &Tensor, fc_bin: &Tensor) -> Result<Tensor> {
    let (n, c, fh, fw) = x.dims4().map_err(cerr)?;
    if !(fh * fw).is_multiple_of(PARTS) || fc_bin.dims().first() != Some(&PARTS) {
        return Err(Error::internal(format!(
            "horizontal pooling of a {fh}x{fw} map into {PARTS} bins with `fc_bin` {:?}",
            fc_bin.dims()
        )));
    }
    let z = x.reshape((n, c, PARTS, fh * fw / PARTS)).map_err(cerr)?;
    let feat = (z.mean(D::Minus1).map_err(cerr)? + z.max(D::Minus1).map_err(cerr)?).map_err(cerr)?;
    // Separate FCs: per part, [n, c] · [c, out].
    let parts = feat.permute((2, 0, 1)).and_then(|t| t.contiguous()).map_err(cerr)?; // [16, n, c]
    let out = parts.matmul(fc_bin).map_err(cerr)?; // [16, n, out]
    out.permute((1, 2, 0)).and_then(|t| t.contiguous()).map_err(cerr)
}

/// Embeddings [n, 256, 16] as n vectors of [`EMBEDDING_DIM`] values in
/// OpenGait's memory order: channel-major, `v[c·16 + p]` is channel c of strip p.
pub fn flatten(embeddings: &Tensor) -> Result<Vec<Vec<f32>>> {
    let (n, c, p) = embeddings.dims3().map_err(cerr)?;
    if (c, p) != (PART_DIM, PARTS) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("GaitBase embeddings are [n, {PART_DIM}, {PARTS}], got {:?}", embeddings.dims()),
        ));
    }
    let flat = embeddings
        .to_dtype(candle_core::DType::F32)
        .and_then(|t| t.reshape((n, c * p)))
        .and_then(|t| t.to_vec2())
        .map_err(cerr)?;
    Ok(flat)
}

/// OpenGait's `euc` distance between two flattened embeddings ([`flatten`]):
/// the Euclidean distance between the 256-d vectors of each of the 16
/// strips, averaged over the strips. 0 for identical embeddings; lower means
/// more likely the same walker. OpenGait computes each strip's distance as
/// √max(‖x‖² + ‖y‖² − 2x·y, 0); summing squared differences, as here, is the
/// same quantity without the cancellation.
pub fn distance(a: &[f32], b: &[f32]) -> Result<f32> {
    if a.len() != EMBEDDING_DIM || b.len() != EMBEDDING_DIM {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("GaitBase embeddings have {EMBEDDING_DIM} values, got {} and {}", a.len(), b.len()),
        ));
    }
    let mut sq = [0f64; PARTS];
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = *x as f64 - *y as f64;
        sq[i % PARTS] += d * d;
    }
    Ok((sq.iter().map(|s| s.sqrt()).sum::<f64>() / PARTS as f64) as f32)
}

/// A similarity that orders pairs exactly as [`distance`] does, higher
/// meaning more alike: 1 / (1 + distance), in (0, 1], 1 for identical
/// embeddings. OpenGait ranks by the distance itself; use this where a
/// score that grows with likeness is expected.
pub fn similarity(a: &[f32], b: &[f32]) -> Result<f32> {
    Ok(1.0 / (1.0 + distance(a, b)?))
}
