//! CLIP3DReID's student network (Liu et al., CVPR 2024), in candle: a
//! TinyViT-21M/224 image encoder whose 7×7 last-stage tokens are pooled by a
//! learned weighting and projected to a 512-d body re-identification feature.
//!
//! Input ([`preprocess`]): an RGB person crop stretched to 224×224 without
//! keeping its aspect ratio (torchvision's `Resize((224, 224))`, Pillow's
//! bilinear filter: see `crate::pil_resize`), then per channel
//! `(x/255 − mean)/std` with CLIP's statistics [`MEAN`] and [`STD`], as
//! `[B, 3, 224, 224]` float32 planes.
//!
//! The network (names as in the training script's `Model.state_dict()`, the
//! encoder under `student_encoder.base.`):
//! * `patch_embed`: conv3×3 stride 2 · BN, GELU, conv3×3 stride 2 · BN
//!   (3 → E0/2 → E0), so 224 → 56×56;
//! * `layers.0`: MBConv blocks at 56×56 (conv1×1 · BN to 4·E0, GELU,
//!   depthwise conv3×3 · BN, GELU, conv1×1 · BN back to E0, plus the input,
//!   GELU), then a patch merging to E1 at 28×28;
//! * `layers.1…3` at 28×28, 14×14 and 7×7 (widths E1…E3, windows 7, 14, 7):
//!   TinyViT blocks, each `x += attn(x)` over windows of the map, then a
//!   depthwise conv3×3 · BN on the map (`local_conv`, no residual), then
//!   `x += mlp(x)`. The attention normalises its input itself
//!   (`attn.norm`), its `qkv` output is viewed `[N, heads, 3·hd]` and split
//!   per head into q, k, v; logits are `q·kᵀ · hd^−½` plus a learned bias per
//!   head and per absolute row/column offset `(|dy|, |dx|)` inside the window
//!   (`attention_biases[h, offset]`, offsets numbered by first appearance
//!   over the window's points in row-major order). The 28×28 stage attends
//!   within 16 windows of 7×7 (zero-padded when the map does not divide,
//!   never at 224); the other two stages' windows cover their whole map. The
//!   MLP is LayerNorm, fc1 (ratio 4 in the published model), GELU, fc2.
//!   `layers.0…2` end with a patch merging: conv1×1 · BN, GELU, depthwise
//!   conv3×3 stride 2 · BN, GELU, conv1×1 · BN;
//! * `norm_head`: LayerNorm of the 49 tokens (row-major over the 7×7 map):
//!   the local feature `[B, 49, 576]`; the classifier head is an identity;
//! * `student_encoder.proj` `[49, 1]` weighs the tokens into one 576-d vector
//!   (`localᵀ · proj`), and `sv_fc` (576 → 512) gives the global feature.
//!   The `sv_bn` after it is commented out upstream: not applied.
//!
//! [`Clip3dReid::forward_feature`] is `Model.forward_feature` (global and
//! local features). [`Clip3dReid::forward`] is the evaluation embedding of
//! the authors' `test.py`: the global features of the crop and of its mirror
//! image (flipped along the width) are added and the sum L2-normalised;
//! embeddings are compared by cosine similarity.
//!
//! GELU is the exact (erf) form; LayerNorm and BatchNorm use eps 1e-5, BN its
//! running statistics. Every BN follows a bias-free convolution and is
//! folded into it at load (exact up to float rounding).
//!
//! The published state dict also holds the teacher-side and training-only
//! layers `tv_fc`, `tt_fc`, `tv_bn`, `sv_bn` and the identity classifiers
//! `classifier`, `classifier_teacher` (sized by the training set): they are
//! in [`manifest`] but not on the inference path, and [`IGNORED_PREFIXES`]
//! skips them at load (bind with [`inference_manifest`]).

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor};
use osprey_core::{Error, ErrorKind, Result};

use crate::checkpoint::{Checkpoint, Manifest, ShapeReader};
use crate::layers::cerr;
use crate::layers::normalised_planes;
use crate::vit_kprpe::{LayerNorm, Linear, softmax_last_dim};

/// Side of the square input the model is built for.
pub const INPUT_SIZE: usize = 224;
/// Width of the global feature (`sv_fc`'s output) and of the embedding.
pub const FEATURE_DIM: usize = 512;
/// CLIP's channel means (RGB) of the input normalisation.
pub const MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's channel standard deviations (RGB) of the input normalisation
/// (the published digits; some are finer than f32 resolves).
#[allow(clippy::excessive_precision)]
pub const STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];
/// Name prefixes of the published state dict that inference does not use:
/// the CLIP-teacher projections and BNs, the student's unused BN, and both
/// identity classifiers.
pub const IGNORED_PREFIXES: [&str; 6] = ["tv_fc.", "tt_fc.", "tv_bn.", "sv_bn.", "classifier.", "classifier_teacher."];
/// Prefix of the TinyViT encoder's names.
const BASE: &str = "student_encoder.base";
/// Epsilon of every BatchNorm (PyTorch's default).
const BN_EPS: f64 = 1e-5;
/// Width of the CLIP ViT-L/14 teacher's features (training-only layers).
const TEACHER_DIM: usize = 768;
/// TinyViT's patch embedding reduces the input by this factor.
const PATCH_STRIDE: usize = 4;
/// Kernel of the depthwise convolutions (MBConv, patch merging, `local_conv`).
const DW_KERNEL: usize = 3;

/// Width of an attention head in every published TinyViT.
const TINYVIT_HEAD_DIM: usize = 32;
/// Names that locate a CLIP3DReID checkpoint's wrapper prefix.
const PROBE: [&str; 4] = [
    "sv_fc.weight",
    "student_encoder.proj",
    "student_encoder.base.patch_embed.seq.0.c.weight",
    "student_encoder.base.norm_head.weight",
];

/// Hyper-parameters of the student encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip3dReidConfig {
    /// Widths of the four stages (the last must be 576: `sv_fc` is 576 → 512).
    pub embed_dims: [usize; 4],
    /// Blocks per stage.
    pub depths: [usize; 4],
    /// Attention heads of stages 1…3 (stage 0 is convolutional; its entry is unused).
    pub num_heads: [usize; 4],
    /// Attention windows of stages 1…3 (entry 0 unused).
    pub window_sizes: [usize; 4],
    /// MLP hidden width over block width.
    pub mlp_ratio: f64,
    /// MBConv hidden width over block width.
    pub mbconv_expand_ratio: f64,
    /// Identities of the training set (sizes the training-only classifiers in [`manifest`]).
    pub num_classes: usize,
}

impl Clip3dReidConfig {
    /// The published student: TinyViT-21M/224 (`tiny_vit_21m_224`), with the
    /// training script's default 632 classifier outputs.
    pub fn full() -> Self {
        Self {
            embed_dims: [96, 192, 384, 576],
            depths: [2, 2, 6, 2],
            num_heads: [3, 6, 12, 18],
            window_sizes: [7, 7, 14, 7],
            mlp_ratio: 4.0,
            mbconv_expand_ratio: 4.0,
            num_classes: 632,
        }
    }

    /// The reference fixtures' reduced student: same input, stages and
    /// windows, widths [32, 64, 128, 576], depths [1, 1, 2, 1], MLP ratio 2,
    /// 77 classes.
    pub fn tiny() -> Self {
        Self {
            embed_dims: [32, 64, 128, 576],
            depths: [1, 1, 2, 1],
            num_heads: [1, 2, 4, 18],
            window_sizes: [7, 7, 14, 7],
            mlp_ratio: 2.0,
            mbconv_expand_ratio: 4.0,
            num_classes: 77,
        }
    }

    /// The configuration of a CLIP3DReID checkpoint, read off its tensors'
    /// shapes (see [`Clip3dReidConfig::from_shapes`]), whatever wrapper
    /// prefix the names carry.
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Clip3dReidConfig> {
        checkpoint.read_config(&PROBE, Self::from_shapes)
    }

    /// The configuration whose [`manifest`] has the shapes `shapes` gives by
    /// name (without a wrapper prefix; `B` = `student_encoder.base`):
    ///
    /// * widths: E0 from `B.patch_embed.seq.2.c.weight` `[E0, E0/2, 3, 3]`,
    ///   E1…E3 from `B.layers.{0,1,2}.downsample.conv1.c.weight` `[E(s+1), Es, 1, 1]`;
    /// * depths by counting `B.layers.{s}.blocks.{i}`;
    /// * heads and windows of stages 1…3 from their first block's
    ///   `attn.attention_biases` `[heads, window²]` (a window of w points a
    ///   side has w² distinct offsets `(|dy|, |dx|)`); stage 0 has no
    ///   attention, its unused entries follow TinyViT's published rule (heads
    ///   32 wide, window 7);
    /// * the MLP ratio from `B.layers.1.blocks.0.mlp.fc1.weight`
    ///   `[ratio·E1, E1]`, the MBConv ratio from
    ///   `B.layers.0.blocks.0.conv1.c.weight` `[ratio·E0, E0, 1, 1]`;
    /// * the classes from `classifier.classifier.weight` when stored (else
    ///   the published 632, which only the full [`manifest`] uses).
    ///
    /// A missing tensor or a shape that no configuration has is a
    /// [`ErrorKind::Corrupt`] error naming the tensor.
    pub fn from_shapes(shapes: &dyn Fn(&str) -> Option<Vec<usize>>) -> Result<Clip3dReidConfig> {
        let r = ShapeReader { model: "CLIP3DReID", lookup: shapes };
        let full = Self::full();
        let mut cfg = full.clone();
        cfg.embed_dims[0] = r.dim(&format!("{BASE}.patch_embed.seq.2.c.weight"), 4, 0)?;
        for s in 0..3 {
            cfg.embed_dims[s + 1] = r.dim(&format!("{BASE}.layers.{s}.downsample.conv1.c.weight"), 4, 0)?;
        }
        for s in 0..4 {
            let leaf = if s == 0 { "conv1.c.weight" } else { "attn.qkv.weight" };
            let block = |i: usize| format!("{BASE}.layers.{s}.blocks.{i}.{leaf}");
            cfg.depths[s] = r.count(block);
            if cfg.depths[s] == 0 {
                r.shape(&block(0), if s == 0 { 4 } else { 2 })?;
            }
        }
        for s in 1..4 {
            let biases = format!("{BASE}.layers.{s}.blocks.0.attn.attention_biases");
            cfg.num_heads[s] = r.dim(&biases, 2, 0)?;
            cfg.window_sizes[s] = r.square_side(r.dim(&biases, 2, 1)?, "the attention window", &biases)?;
        }
        cfg.num_heads[0] = (cfg.embed_dims[0] / TINYVIT_HEAD_DIM).max(1);
        let fc1 = format!("{BASE}.layers.1.blocks.0.mlp.fc1.weight");
        cfg.mlp_ratio = r.dim(&fc1, 2, 0)? as f64 / cfg.embed_dims[1] as f64;
        let conv1 = format!("{BASE}.layers.0.blocks.0.conv1.c.weight");
        cfg.mbconv_expand_ratio = r.dim(&conv1, 4, 0)? as f64 / cfg.embed_dims[0] as f64;
        let classifier = "classifier.classifier.weight";
        cfg.num_classes = if r.has(classifier) { r.dim(classifier, 2, 0)? } else { full.num_classes };
        cfg.check()?;
        Ok(cfg)
    }

    /// Side of stage `s`'s map (56, 28, 14, 7 at 224).
    fn resolution(&self, s: usize) -> usize {
        (INPUT_SIZE / PATCH_STRIDE) >> s
    }

    /// Tokens of the last stage (49 at 224), the length of `proj`.
    fn tokens(&self) -> usize {
        self.resolution(3) * self.resolution(3)
    }

    fn mlp_hidden(&self, s: usize) -> usize {
        (self.embed_dims[s] as f64 * self.mlp_ratio) as usize
    }

    fn mbconv_hidden(&self) -> usize {
        (self.embed_dims[0] as f64 * self.mbconv_expand_ratio) as usize
    }

    fn check(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorKind::InvalidInput, format!("CLIP3DReID config: {msg}")));
        if self.embed_dims[3] != 576 {
            return bad(format!("the last width must be 576 (sv_fc is 576 → 512), got {}", self.embed_dims[3]));
        }
        for s in 1..4 {
            let (dim, heads, window) = (self.embed_dims[s], self.num_heads[s], self.window_sizes[s]);
            if heads == 0 || dim % heads != 0 {
                return bad(format!("stage {s}: width {dim} is not divisible by {heads} heads"));
            }
            if window == 0 {
                return bad(format!("stage {s}: window 0"));
            }
        }
        if !self.embed_dims[0].is_multiple_of(2) {
            return bad(format!("the first width must be even, got {}", self.embed_dims[0]));
        }
        Ok(())
    }
}

/// Offsets `(|dy|, |dx|)` between the points of a `window`×`window` window,
/// numbered by first appearance over (p1, p2) pairs in row-major order: the
/// `[N·N]` index into `attention_biases`' second dimension and the number of
/// distinct offsets.
fn attention_bias_index(window: usize) -> (Vec<u32>, usize) {
    let points: Vec<(usize, usize)> = (0..window).flat_map(|y| (0..window).map(move |x| (y, x))).collect();
    let mut seen: HashMap<(usize, usize), u32> = HashMap::new();
    let mut idx = Vec::with_capacity(points.len() * points.len());
    for &(y1, x1) in &points {
        for &(y2, x2) in &points {
            let next = seen.len() as u32;
            idx.push(*seen.entry((y1.abs_diff(y2), x1.abs_diff(x2))).or_insert(next));
        }
    }
    (idx, seen.len())
}

fn bn_entries(m: &mut Manifest, name: &str, c: usize) {
    for p in ["weight", "bias", "running_mean", "running_var"] {
        m.push((format!("{name}.{p}"), vec![c]));
    }
    m.push((format!("{name}.num_batches_tracked"), vec![]));
}

fn conv_bn_entries(m: &mut Manifest, name: &str, cout: usize, cin_per_group: usize, k: usize) {
    m.push((format!("{name}.c.weight"), vec![cout, cin_per_group, k, k]));
    bn_entries(m, &format!("{name}.bn"), cout);
}

fn linear_entries(m: &mut Manifest, name: &str, out: usize, fan_in: usize) {
    m.push((format!("{name}.weight"), vec![out, fan_in]));
    m.push((format!("{name}.bias"), vec![out]));
}

fn layer_norm_entries(m: &mut Manifest, name: &str, c: usize) {
    m.push((format!("{name}.weight"), vec![c]));
    m.push((format!("{name}.bias"), vec![c]));
}

/// Every parameter and buffer of the published `Model.state_dict()`, in its
/// order, training-only layers and BN counters included (for the full
/// configuration: exactly the training script's checkpoint). TinyViT's
/// non-persistent `attention_bias_idxs` are not stored.
pub fn manifest(cfg: &Clip3dReidConfig) -> Manifest {
    let e = cfg.embed_dims;
    let mut m = Manifest::new();
    linear_entries(&mut m, "sv_fc", FEATURE_DIM, e[3]);
    linear_entries(&mut m, "tv_fc", FEATURE_DIM, TEACHER_DIM);
    linear_entries(&mut m, "tt_fc", e[3], TEACHER_DIM);
    bn_entries(&mut m, "sv_bn", FEATURE_DIM);
    bn_entries(&mut m, "tv_bn", FEATURE_DIM);
    m.push(("student_encoder.proj".into(), vec![cfg.tokens(), 1]));
    conv_bn_entries(&mut m, &format!("{BASE}.patch_embed.seq.0"), e[0] / 2, 3, 3);
    conv_bn_entries(&mut m, &format!("{BASE}.patch_embed.seq.2"), e[0], e[0] / 2, 3);
    for s in 0..4 {
        let layer = format!("{BASE}.layers.{s}");
        for i in 0..cfg.depths[s] {
            let b = format!("{layer}.blocks.{i}");
            if s == 0 {
                let hidden = cfg.mbconv_hidden();
                conv_bn_entries(&mut m, &format!("{b}.conv1"), hidden, e[0], 1);
                conv_bn_entries(&mut m, &format!("{b}.conv2"), hidden, 1, DW_KERNEL);
                conv_bn_entries(&mut m, &format!("{b}.conv3"), e[0], hidden, 1);
            } else {
                let (_, offsets) = attention_bias_index(cfg.window_sizes[s]);
                m.push((format!("{b}.attn.attention_biases"), vec![cfg.num_heads[s], offsets]));
                layer_norm_entries(&mut m, &format!("{b}.attn.norm"), e[s]);
                linear_entries(&mut m, &format!("{b}.attn.qkv"), 3 * e[s], e[s]);
                linear_entries(&mut m, &format!("{b}.attn.proj"), e[s], e[s]);
                layer_norm_entries(&mut m, &format!("{b}.mlp.norm"), e[s]);
                linear_entries(&mut m, &format!("{b}.mlp.fc1"), cfg.mlp_hidden(s), e[s]);
                linear_entries(&mut m, &format!("{b}.mlp.fc2"), e[s], cfg.mlp_hidden(s));
                conv_bn_entries(&mut m, &format!("{b}.local_conv"), e[s], 1, DW_KERNEL);
            }
        }
        if s < 3 {
            let d = format!("{layer}.downsample");
            conv_bn_entries(&mut m, &format!("{d}.conv1"), e[s + 1], e[s], 1);
            conv_bn_entries(&mut m, &format!("{d}.conv2"), e[s + 1], 1, DW_KERNEL);
            conv_bn_entries(&mut m, &format!("{d}.conv3"), e[s + 1], e[s + 1], 1);
        }
    }
    layer_norm_entries(&mut m, &format!("{BASE}.norm_head"), e[3]);
    linear_entries(&mut m, "classifier.classifier", cfg.num_classes, FEATURE_DIM);
    linear_entries(&mut m, "classifier_teacher.classifier", cfg.num_classes, FEATURE_DIM);
    m
}

/// What [`Clip3dReid::new`] consumes: [`manifest`] without the names under
/// [`IGNORED_PREFIXES`]. Bind checkpoints with it and [`IGNORED_PREFIXES`],
/// so a classifier of any size (or none) is accepted.
pub fn inference_manifest(cfg: &Clip3dReidConfig) -> Manifest {
    manifest(cfg).into_iter().filter(|(k, _)| !IGNORED_PREFIXES.iter().any(|p| k.starts_with(p))).collect()
}

/// Bound weights by name (the manifest guaranteed presence and shape).
struct Weights<'a>(&'a HashMap<String, Tensor>);

impl Weights<'_> {
    fn get(&self, name: &str) -> Result<&Tensor> {
        self.0.get(name).ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("CLIP3DReID: missing tensor `{name}`")))
    }

    /// A tensor with the expected shape (guards against hand-made maps).
    fn shaped(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get(name)?;
        if t.dims() != shape {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("CLIP3DReID: tensor `{name}` has shape {:?}, expected {shape:?}", t.dims()),
            ));
        }
        t.to_dtype(DType::F32).map_err(cerr)
    }

    fn vec(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.shaped(name, shape)?.flatten_all().and_then(|t| t.to_vec1()).map_err(cerr)
    }

    /// `{name}.c.weight` `[cout, cin_per_group, k, k]` with the eval-mode BN
    /// `{name}.bn` folded in: the weight rows scaled by
    /// `gamma / sqrt(var + eps)`, and the bias `beta − mean · scale`.
    fn conv_bn(&self, name: &str, cout: usize, cin_per_group: usize, k: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let bn = |p: &str| self.vec(&format!("{name}.bn.{p}"), &[cout]);
        let (gamma, beta, mean, var) = (bn("weight")?, bn("bias")?, bn("running_mean")?, bn("running_var")?);
        let mut weight = self.vec(&format!("{name}.c.weight"), &[cout, cin_per_group, k, k])?;
        let per_row = cin_per_group * k * k;
        let mut bias = Vec::with_capacity(cout);
        for c in 0..cout {
            let s = gamma[c] as f64 / (var[c] as f64 + BN_EPS).sqrt();
            weight[c * per_row..(c + 1) * per_row].iter_mut().for_each(|w| *w = (*w as f64 * s) as f32);
            bias.push((beta[c] as f64 - mean[c] as f64 * s) as f32);
        }
        Ok((weight, bias))
    }

    fn linear(&self, name: &str, out: usize, fan_in: usize) -> Result<Linear> {
        let w = self.shaped(&format!("{name}.weight"), &[out, fan_in])?;
        let b = self.shaped(&format!("{name}.bias"), &[out])?;
        Linear::new(&w, Some(&b)).map_err(cerr)
    }

    fn layer_norm(&self, name: &str, c: usize) -> Result<LayerNorm> {
        self.shaped(&format!("{name}.weight"), &[c])?;
        self.shaped(&format!("{name}.bias"), &[c])?;
        LayerNorm::load(self.0, name).map_err(cerr)
    }
}

/// A dense 3×3 convolution (stride 2, padding 1) with its BN folded in.
struct DenseConv {
    /// `[cout, cin, 3, 3]`
    weight: Tensor,
    /// `[1, cout, 1, 1]`
    bias: Tensor,
}

impl DenseConv {
    fn new(w: &Weights, name: &str, cout: usize, cin: usize, device: &Device) -> Result<Self> {
        let (weight, bias) = w.conv_bn(name, cout, cin, 3)?;
        Ok(Self {
            weight: Tensor::from_vec(weight, (cout, cin, 3, 3), device).map_err(cerr)?,
            bias: Tensor::from_vec(bias, (1, cout, 1, 1), device).map_err(cerr)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, 1, 2, 1, 1).and_then(|y| y.broadcast_add(&self.bias)).map_err(cerr)
    }
}

/// A 1×1 convolution with its BN folded in, as a matrix product over the
/// map: `[B, cin, H, W]` → `[B, cout, H, W]`.
struct Pointwise {
    /// `[cout, cin]`
    weight: Tensor,
    /// `[cout, 1]`
    bias: Tensor,
}

impl Pointwise {
    fn new(w: &Weights, name: &str, cout: usize, cin: usize, device: &Device) -> Result<Self> {
        let (weight, bias) = w.conv_bn(name, cout, cin, 1)?;
        Ok(Self {
            weight: Tensor::from_vec(weight, (cout, cin), device).map_err(cerr)?,
            bias: Tensor::from_vec(bias, (cout, 1), device).map_err(cerr)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, wd) = x.dims4().map_err(cerr)?;
        let cout = self.weight.dim(0).map_err(cerr)?;
        let flat = x.reshape((b, c, h * wd)).map_err(cerr)?;
        let y = self.weight.broadcast_matmul(&flat).and_then(|y| y.broadcast_add(&self.bias)).map_err(cerr)?;
        y.reshape((b, cout, h, wd)).map_err(cerr)
    }
}

/// A depthwise 3×3 convolution (padding 1, stride 1 or 2) with its BN folded
/// in, as nine shifted, per-channel-weighted sums over the zero-padded map.
/// Stride 2 keeps the even positions of the stride-1 result, which are
/// exactly the strided convolution's outputs.
struct Depthwise {
    /// The nine taps in row-major kernel order, each `[1, C, 1, 1]`.
    taps: Vec<Tensor>,
    /// `[1, C, 1, 1]`
    bias: Tensor,
    stride: usize,
}

impl Depthwise {
    fn new(w: &Weights, name: &str, c: usize, stride: usize, device: &Device) -> Result<Self> {
        let (weight, bias) = w.conv_bn(name, c, 1, DW_KERNEL)?;
        let k2 = DW_KERNEL * DW_KERNEL;
        let taps = (0..k2)
            .map(|k| {
                let tap: Vec<f32> = (0..c).map(|ch| weight[ch * k2 + k]).collect();
                Tensor::from_vec(tap, (1, c, 1, 1), device).map_err(cerr)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { taps, bias: Tensor::from_vec(bias, (1, c, 1, 1), device).map_err(cerr)?, stride })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4().map_err(cerr)?;
        let padded = x.pad_with_zeros(2, 1, 1).and_then(|p| p.pad_with_zeros(3, 1, 1)).map_err(cerr)?;
        let mut acc = self.bias.clone();
        for (k, tap) in self.taps.iter().enumerate() {
            let (dy, dx) = (k / DW_KERNEL, k % DW_KERNEL);
            let shifted = padded.narrow(2, dy, h).and_then(|s| s.narrow(3, dx, w)).map_err(cerr)?;
            acc = shifted.broadcast_mul(tap).and_then(|t| t.broadcast_add(&acc)).map_err(cerr)?;
        }
        if self.stride == 1 {
            return Ok(acc);
        }
        // Output i of the strided convolution is output 2i of the dense one;
        // an odd side gets one (discarded) zero row/column so it pairs up.
        let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
        acc.pad_with_zeros(2, 0, h % 2)
            .and_then(|t| t.pad_with_zeros(3, 0, w % 2))
            .and_then(|t| t.reshape((b, c, ho, 2, wo, 2)))
            .and_then(|t| t.narrow(3, 0, 1))
            .and_then(|t| t.narrow(5, 0, 1))
            .and_then(|t| t.reshape((b, c, ho, wo)))
            .map_err(cerr)
    }
}

fn gelu(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf().map_err(cerr)
}

/// MBConv: pointwise expansion, depthwise 3×3, pointwise projection, plus
/// the input, each step followed by GELU except the projection.
struct MbConv {
    conv1: Pointwise,
    conv2: Depthwise,
    conv3: Pointwise,
}

impl MbConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = gelu(&self.conv1.forward(x)?)?;
        let h = gelu(&self.conv2.forward(&h)?)?;
        let h = self.conv3.forward(&h)?;
        gelu(&(h + x).map_err(cerr)?)
    }
}

/// Patch merging: pointwise, GELU, depthwise 3×3 stride 2, GELU, pointwise.
struct PatchMerging {
    conv1: Pointwise,
    conv2: Depthwise,
    conv3: Pointwise,
}

impl PatchMerging {
    fn new(w: &Weights, name: &str, cin: usize, cout: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            conv1: Pointwise::new(w, &format!("{name}.conv1"), cout, cin, device)?,
            conv2: Depthwise::new(w, &format!("{name}.conv2"), cout, 2, device)?,
            conv3: Pointwise::new(w, &format!("{name}.conv3"), cout, cout, device)?,
        })
    }

    /// `[B, C, H, W]` → `[B, C', ⌈H/2⌉, ⌈W/2⌉]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = gelu(&self.conv1.forward(x)?)?;
        let h = gelu(&self.conv2.forward(&h)?)?;
        self.conv3.forward(&h)
    }
}

/// TinyViT's attention over the tokens of one window (see the module
/// documentation), with its input LayerNorm.
struct Attention {
    norm: LayerNorm,
    qkv: Linear,
    proj: Linear,
    heads: usize,
    head_dim: usize,
    scale: f64,
    /// The learned biases gathered per point pair: `[heads, N, N]`.
    bias: Tensor,
}

impl Attention {
    fn new(w: &Weights, name: &str, dim: usize, heads: usize, window: usize, device: &Device) -> Result<Self> {
        let (idx, offsets) = attention_bias_index(window);
        let n = window * window;
        let table = w.shaped(&format!("{name}.attention_biases"), &[heads, offsets])?;
        let idx = Tensor::from_vec(idx, n * n, device).map_err(cerr)?;
        let bias = table
            .to_device(device)
            .and_then(|t| t.index_select(&idx, 1))
            .and_then(|t| t.reshape((heads, n, n)))
            .map_err(cerr)?;
        let head_dim = dim / heads;
        Ok(Self {
            norm: w.layer_norm(&format!("{name}.norm"), dim)?,
            qkv: w.linear(&format!("{name}.qkv"), 3 * dim, dim)?,
            proj: w.linear(&format!("{name}.proj"), dim, dim)?,
            heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
            bias,
        })
    }

    /// `[B', N, C]` → `[B', N, C]` (N the window's points).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3().map_err(cerr)?;
        let hd = self.head_dim;
        let x = self.norm.forward(x).map_err(cerr)?;
        let qkv = self.qkv.forward(&x).and_then(|t| t.reshape((b, n, self.heads, 3 * hd))).map_err(cerr)?;
        // Per head: q, k, v are consecutive slices of its 3·hd outputs.
        let part = |i: usize| qkv.narrow(3, i * hd, hd).and_then(|t| t.transpose(1, 2)).and_then(|t| t.contiguous());
        let (q, k, v) = (part(0).map_err(cerr)?, part(1).map_err(cerr)?, part(2).map_err(cerr)?);
        let logits = q
            .matmul(&k.t().map_err(cerr)?)
            .and_then(|a| a * self.scale)
            .and_then(|a| a.broadcast_add(&self.bias))
            .map_err(cerr)?;
        let attn = softmax_last_dim(&logits).map_err(cerr)?;
        let y = attn.matmul(&v).and_then(|y| y.transpose(1, 2)).and_then(|y| y.reshape((b, n, c))).map_err(cerr)?;
        self.proj.forward(&y).map_err(cerr)
    }
}

/// A TinyViT block: windowed attention, `local_conv`, MLP.
struct TinyVitBlock {
    attn: Attention,
    local_conv: Depthwise,
    mlp_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    window: usize,
}

impl TinyVitBlock {
    fn new(w: &Weights, name: &str, cfg: &Clip3dReidConfig, s: usize, device: &Device) -> Result<Self> {
        let dim = cfg.embed_dims[s];
        let window = cfg.window_sizes[s];
        let hidden = cfg.mlp_hidden(s);
        Ok(Self {
            attn: Attention::new(w, &format!("{name}.attn"), dim, cfg.num_heads[s], window, device)?,
            local_conv: Depthwise::new(w, &format!("{name}.local_conv"), dim, 1, device)?,
            mlp_norm: w.layer_norm(&format!("{name}.mlp.norm"), dim)?,
            fc1: w.linear(&format!("{name}.mlp.fc1"), hidden, dim)?,
            fc2: w.linear(&format!("{name}.mlp.fc2"), dim, hidden)?,
            window,
        })
    }

    /// Attention within non-overlapping windows of the `[B, H, W, C]` map
    /// (zero-padded at the bottom and right to whole windows), as `[B, H·W, C]`.
    fn windowed_attention(&self, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let (b, l, c) = x.dims3().map_err(cerr)?;
        let ws = self.window;
        if h == ws && w == ws {
            return self.attn.forward(x);
        }
        let (pad_b, pad_r) = ((ws - h % ws) % ws, (ws - w % ws) % ws);
        let (ph, pw) = (h + pad_b, w + pad_r);
        let (nh, nw) = (ph / ws, pw / ws);
        let map = x
            .reshape((b, h, w, c))
            .and_then(|t| t.pad_with_zeros(1, 0, pad_b))
            .and_then(|t| t.pad_with_zeros(2, 0, pad_r))
            .map_err(cerr)?;
        let windows = map
            .reshape((b, nh, ws, nw, ws, c))
            .and_then(|t| t.transpose(2, 3))
            .and_then(|t| t.contiguous())
            .and_then(|t| t.reshape((b * nh * nw, ws * ws, c)))
            .map_err(cerr)?;
        let y = self.attn.forward(&windows)?;
        y.reshape((b, nh, nw, ws, ws, c))
            .and_then(|t| t.transpose(2, 3))
            .and_then(|t| t.contiguous())
            .and_then(|t| t.reshape((b, ph, pw, c)))
            .and_then(|t| t.narrow(1, 0, h))
            .and_then(|t| t.narrow(2, 0, w))
            .and_then(|t| t.contiguous())
            .and_then(|t| t.reshape((b, l, c)))
            .map_err(cerr)
    }

    /// `[B, H·W, C]` tokens (row-major) → the same shape.
    fn forward(&self, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let (b, l, c) = x.dims3().map_err(cerr)?;
        let x = (x + self.windowed_attention(x, h, w)?).map_err(cerr)?;
        let map = x.transpose(1, 2).and_then(|t| t.reshape((b, c, h, w))).map_err(cerr)?;
        let x = self
            .local_conv
            .forward(&map)?
            .reshape((b, c, l))
            .and_then(|t| t.transpose(1, 2))
            .and_then(|t| t.contiguous())
            .map_err(cerr)?;
        let hidden = self.fc1.forward(&self.mlp_norm.forward(&x).map_err(cerr)?).map_err(cerr)?;
        let mlp = self.fc2.forward(&gelu(&hidden)?).map_err(cerr)?;
        (x + mlp).map_err(cerr)
    }
}

/// The CLIP3DReID student with its weights.
pub struct Clip3dReid {
    cfg: Clip3dReidConfig,
    stem: [DenseConv; 2],
    mbconv: Vec<MbConv>,
    /// Blocks of stages 1…3.
    stages: Vec<Vec<TinyVitBlock>>,
    /// After stages 0…2.
    merges: Vec<PatchMerging>,
    norm_head: LayerNorm,
    /// `proj`: `[tokens, 1]`.
    token_weights: Tensor,
    sv_fc: Linear,
    device: Device,
}

impl Clip3dReid {
    /// Builds the network from weights bound against
    /// [`inference_manifest`]`(cfg)` (names without wrapper prefix).
    pub fn new(cfg: &Clip3dReidConfig, weights: &HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        cfg.check()?;
        let w = Weights(weights);
        let e = cfg.embed_dims;
        let stem = [
            DenseConv::new(&w, &format!("{BASE}.patch_embed.seq.0"), e[0] / 2, 3, device)?,
            DenseConv::new(&w, &format!("{BASE}.patch_embed.seq.2"), e[0], e[0] / 2, device)?,
        ];
        let hidden = cfg.mbconv_hidden();
        let mbconv = (0..cfg.depths[0])
            .map(|i| {
                let b = format!("{BASE}.layers.0.blocks.{i}");
                Ok(MbConv {
                    conv1: Pointwise::new(&w, &format!("{b}.conv1"), hidden, e[0], device)?,
                    conv2: Depthwise::new(&w, &format!("{b}.conv2"), hidden, 1, device)?,
                    conv3: Pointwise::new(&w, &format!("{b}.conv3"), e[0], hidden, device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let stages = (1..4)
            .map(|s| {
                (0..cfg.depths[s])
                    .map(|i| TinyVitBlock::new(&w, &format!("{BASE}.layers.{s}.blocks.{i}"), cfg, s, device))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let merges = (0..3)
            .map(|s| PatchMerging::new(&w, &format!("{BASE}.layers.{s}.downsample"), e[s], e[s + 1], device))
            .collect::<Result<Vec<_>>>()?;
        let token_weights = w.shaped("student_encoder.proj", &[cfg.tokens(), 1])?.to_device(device).map_err(cerr)?;
        Ok(Self {
            cfg: cfg.clone(),
            stem,
            mbconv,
            stages,
            merges,
            norm_head: w.layer_norm(&format!("{BASE}.norm_head"), e[3])?,
            token_weights,
            sv_fc: w.linear("sv_fc", FEATURE_DIM, e[3])?,
            device: device.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Clip3dReidConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn check_input(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() != 4 || dims[0] == 0 || dims[1] != 3 || dims[2] != INPUT_SIZE || dims[3] != INPUT_SIZE {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("CLIP3DReID input must be [B, 3, H, W] with B ≥ 1 and H = W = {INPUT_SIZE}, got {dims:?}"),
            ));
        }
        x.to_dtype(DType::F32).and_then(|x| x.to_device(&self.device)).map_err(cerr)
    }

    /// `Model.forward_feature` of normalised crops `[B, 3, 224, 224]` (see
    /// [`preprocess`]): the global feature `[B, 512]` (`sv_fc` of the
    /// `proj`-weighted tokens, not normalised) and the local feature
    /// `[B, 49, 576]` (the LayerNormed 7×7 last-stage tokens, row-major).
    pub fn forward_feature(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = self.check_input(x)?;
        let mut x = gelu(&self.stem[0].forward(&x)?)?;
        x = self.stem[1].forward(&x)?;
        for block in &self.mbconv {
            x = block.forward(&x)?;
        }
        x = self.merges[0].forward(&x)?;
        for (i, blocks) in self.stages.iter().enumerate() {
            let (b, c, h, w) = x.dims4().map_err(cerr)?;
            let mut tokens =
                x.reshape((b, c, h * w)).and_then(|t| t.transpose(1, 2)).and_then(|t| t.contiguous()).map_err(cerr)?;
            for block in blocks {
                tokens = block.forward(&tokens, h, w)?;
            }
            x = tokens.transpose(1, 2).and_then(|t| t.reshape((b, c, h, w))).map_err(cerr)?;
            if let Some(merge) = self.merges.get(i + 1) {
                x = merge.forward(&x)?;
            }
        }
        let (b, c, h, w) = x.dims4().map_err(cerr)?;
        let tokens = x.reshape((b, c, h * w)).and_then(|t| t.transpose(1, 2)).map_err(cerr)?;
        let local = self.norm_head.forward(&tokens).map_err(cerr)?;
        // localᵀ · proj: [B, 576, 49] · [49, 1].
        let pooled = local
            .transpose(1, 2)
            .and_then(|t| t.broadcast_matmul(&self.token_weights))
            .and_then(|t| t.squeeze(D::Minus1))
            .map_err(cerr)?;
        let global = self.sv_fc.forward(&pooled).map_err(cerr)?;
        Ok((global, local))
    }

    /// The evaluation embedding `[B, 512]` of normalised crops
    /// `[B, 3, 224, 224]`: the global features of each crop and of its
    /// horizontal mirror, added, then L2-normalised (`x / max(‖x‖, 1e-12)`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.check_input(x)?;
        let b = x.dim(0).map_err(cerr)?;
        let reversed: Vec<u32> = (0..INPUT_SIZE as u32).rev().collect();
        let reversed = Tensor::from_vec(reversed, INPUT_SIZE, &self.device).map_err(cerr)?;
        let flipped = x.index_select(&reversed, 3).map_err(cerr)?;
        let both = Tensor::cat(&[&x, &flipped], 0).map_err(cerr)?;
        let (global, _) = self.forward_feature(&both)?;
        let sum = global.narrow(0, 0, b).and_then(|g| g + global.narrow(0, b, b)?).map_err(cerr)?;
        let norm = sum.sqr().and_then(|s| s.sum_keepdim(1)).and_then(|s| s.sqrt()).and_then(|n| n.maximum(1e-12));
        sum.broadcast_div(&norm.map_err(cerr)?).map_err(cerr)
    }
}

/// Turns 224×224 RGB crops (8-bit, row-major height × width × channel,
/// already stretched to 224×224 with Pillow's bilinear filter) into the
/// network's input `[B, 3, 224, 224]`: `(x/255 − mean)/std` per channel with
/// CLIP's [`MEAN`] and [`STD`], in float32 as torchvision's `ToTensor` and
/// `Normalize` compute it.
pub fn preprocess<C: AsRef<[u8]>>(crops: &[C], device: &Device) -> Result<Tensor> {
    normalised_planes(crops, (INPUT_SIZE, INPUT_SIZE), MEAN, STD, device)
}
