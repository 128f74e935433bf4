//! BigGait (Ye et al., CVPR 2024), OpenGait's `BigGait__Dinov2_Gaitbase`
//! (configuration `configs/biggait/BigGait_CCPG.yaml`): gait recognition from
//! RGB frames, with a frozen DINOv2 ViT-S/14 whose patch tokens three small
//! branches turn into a body mask and two 16-channel "gait images" for a
//! GaitBase head. A sequence of frames → a [256, 16] embedding (256 channels
//! for each of 16 horizontal strips), compared by OpenGait's `euc` distance
//! (for the published 256 × 16 embeddings, [`crate::gaitbase::distance`]).
//!
//! # Input and preprocessing (exactly as OpenGait evaluates)
//!
//! * Frames come from OpenGait's `datasets/pretreatment_rgb.py`: each video
//!   frame resized with OpenCV to height 256 keeping its aspect ratio, then
//!   its width centre-padded with zeros or centre-cropped to 128, BGR → RGB,
//!   8-bit: [`BigGait::forward`] takes them as [n, s, 3, 256, 128] (n
//!   sequences of s frames; u8, or any float type holding 0..255), with each
//!   frame's `ratio` = raw frame width / raw frame height, [n, s] (converted
//!   to float32, as OpenGait's loader does).
//! * The evaluator's `BaseRgbTransform`: `(x − 255·[0.485, 0.456, 0.406]) /
//!   (255·[0.229, 0.224, 0.225])` per channel, in float64, then float32.
//! * In the model, since the frames are twice as high as wide, a bilinear
//!   resize (`align_corners=False`, no antialiasing) to 448×224.
//!
//! Any [n, s, 3, 2w, w] input takes the same path; frames of other shapes
//! (for which OpenGait first pad-resizes inside the model) are refused.
//!
//! # The network
//!
//! 1. DINOv2 (`backbone.*`, run by [`crate::dinov2`]): 14×14 patches →
//!    32×16 = 512 tokens plus a class
//!    token; the learned 37×37 position grid (trained at 518×518) is
//!    resampled as DINOv2's `interpolate_pos_encoding` does at OpenGait
//!    @ 0efafd47: `F.interpolate(mode="bicubic", align_corners=False,
//!    scale_factor=((32 + 0.1) / 37, (16 + 0.1) / 37))`, so torch maps
//!    output row i to source row (i + 0.5)·37/32.1 − 0.5 (not 37/32), cubic
//!    convolution with a = −0.75, source indices clamped to the grid; no
//!    antialiasing. Then `depth` pre-norm blocks (LayerNorm eps 1e-6,
//!    qkv bias, LayerScale `ls1`/`ls2`, GELU (erf) MLP ×4). Two token sets
//!    leave it, class token dropped: the final `norm`'s output (C wide), and
//!    the outputs of blocks `depth/4·(i+1) − 1` (2, 5, 8, 11 for ViT-S)
//!    concatenated (4C) and layer-normalised without affine parameters.
//! 2. Both token sets as [C, 32, 16] maps, resized bilinearly to 64×32.
//! 3. The ratio mask on the 64×32 grid: `need_w = int(64·ratio)` (float32
//!    product, truncated); if `need_w < 32` only the `need_w` columns from
//!    `(32 − need_w) / 2` (floor) are valid, else all.
//! 4. `Mask_Branch` at the valid pixels of the final tokens: BatchNorm (no
//!    affine, running statistics) → Linear(C, 2) → softmax; invalid pixels
//!    get (0, 0). Its `up_sampling` and `bn_t` serve training only.
//! 5. The foreground (`get_body`, `get_edge`): channel 0 of the mask, unless
//!    more than 5·32 of the rounded channel-0 values in the first and last
//!    5 rows are 1, in which case channel 1; then with b = round(p), D = the
//!    3×3 maximum of b and E = the 5×5 minimum of D (pixels outside the map
//!    ignored, as kornia's geodesic border does), foreground value
//!    `(D xor E)·p + E`. Every pixel whose value is not 0 is foreground,
//!    even p ≈ 1e-15.
//! 6. At the foreground pixels of the 4C tokens: `Denoising_Branch` =
//!    BatchNorm (no affine) → Linear(4C, 2C) → BatchNorm (no affine) →
//!    GELU (erf) → Linear(2C, 16) → softmax, and `Appearance_Branch` =
//!    BatchNorm (no affine) → Linear(4C, 16) → BatchNorm (no affine,
//!    `bn_t`) → sigmoid; both 0 elsewhere. Each is a [16, 64, 32] image.
//! 7. `gait_net`, GaitBase with two stems: `pre_part` (denoising) and
//!    `pre_rgb` (appearance), each conv3×3 (16 → C0, no bias) · BN · ReLU ·
//!    one torchvision `BasicBlock` (`layer1`); `fusion`: the two maps
//!    concatenated → conv1×1 (2C0 → C0/16) · BN · ReLU · conv3×3 · BN · ReLU
//!    · conv1×1 (→ 2C0), channel 2c + d being the logit of input d for
//!    channel c, softmax over d, weighted sum; `post_backbone`: `layer2` …
//!    `layer4` (strides 2, 2, 1; widths C1, C2, C3); the maximum over the
//!    sequence's frames; 16 horizontal strips (mean + max over 8 values);
//!    `FCs`, one C3 → `fc_out` matrix per strip. `BNNecks` serve training.
//!
//! Widths (C; C0…C3; fc_out) are (384; 64, 128, 256, 512; 256) for the
//! published CCPG model ([`BigGaitConfig::ccpg`]). Every BatchNorm runs on
//! its running statistics (eval mode); those that follow a convolution are
//! folded into it at load. Dropout is the identity.
//!
//! Checkpoints: OpenGait's `.pt`, the state dict under `model`, names as in
//! [`manifest`] (the `backbone.*` names are DINOv2's own release names with
//! that prefix). OpenGait evaluates under float16 autocast; this port
//! computes in float32.

use crate::checkpoint::{Checkpoint, Manifest, ShapeReader};
pub use crate::dinov2::DinoConfig;
use crate::dinov2::{Dinov2, LayerNorm, Linear, PosResample};
use crate::gaitbase::{BasicBlock, Conv, PARTS, basic_block_entries, bn_entries, pool_and_project};
use crate::layers::cerr;
use candle_core::{D, DType, Device, Tensor};
use osprey_core::{Error, ErrorKind, Result};
use std::collections::HashMap;

/// Colour channels of a frame.
const IN_CHANNELS: usize = 3;
/// BatchNorm's epsilon (PyTorch's default) in the branches.
const BN_EPS: f32 = 1e-5;
/// Channels of the mask branch's output (foreground, background).
const MASK_DIM: usize = 2;
/// Rows at the top and at the bottom that `get_body` inspects.
const BODY_EDGE_ROWS: usize = 5;
/// Frames run at once: bounds the activations' memory (for ViT-S about
/// 40 MB a frame) whatever the sequence length.
const FRAME_CHUNK: usize = 16;
/// Prefix of the training-only classifier the embedding does not use.
pub const TRAINING_ONLY: &str = "gait_net.BNNecks.";
/// Ignore prefixes for [`crate::checkpoint::Checkpoint::bind`] with
/// [`embedding_manifest`]: the `BNNecks` classifier's width depends on the
/// training set.
pub const IGNORE_PREFIXES: &[&str] = &[TRAINING_ONLY];
/// The evaluator's per-channel mean and standard deviation, times 255.
const RGB_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const RGB_STD: [f64; 3] = [0.229, 0.224, 0.225];

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// Hyper-parameters of one BigGait configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BigGaitConfig {
    /// The backbone.
    pub dino: DinoConfig,
    /// `image_size`: the ViT input is (2·image_size) × image_size.
    pub image_size: usize,
    /// `sils_size`: the branches' maps are (2·sils_size) × sils_size.
    pub sils_size: usize,
    /// Channels of the denoising branch's output (`pre_part`'s input).
    pub denoising_dim: usize,
    /// Channels of the appearance branch's output (`pre_rgb`'s input).
    pub appearance_dim: usize,
    /// GaitBase widths C0…C3 (one `BasicBlock` each, strides 1, 2, 2, 1).
    pub channels: [usize; 4],
    /// `AttentionFusion`'s squeeze ratio (hidden width C0 / ratio).
    pub squeeze_ratio: usize,
    /// `SeparateFCs` output width per strip.
    pub fc_out: usize,
    /// Identities of the training-only `BNNecks` classifier.
    pub classes: usize,
}

/// Names that locate a BigGait checkpoint's wrapper prefix.
const PROBE: [&str; 5] = [
    "backbone.cls_token",
    "backbone.pos_embed",
    "backbone.patch_embed.proj.weight",
    "Mask_Branch.down_sampling.weight",
    "gait_net.FCs.fc_bin",
];

/// DINOv2's attention heads for a backbone `width` wide, which no tensor
/// records: the released backbones (ViT-S/B/L/g: 384, 768, 1024, 1536) all
/// use 64-wide heads; any other width is a reduced model, which keeps ViT-S's
/// 6 heads (BigGait is built on ViT-S; the `tiny` fixture, 96 wide, has 6).
fn dino_heads(width: usize) -> Result<usize> {
    match width {
        384 | 768 | 1024 | 1536 => Ok(width / 64),
        w if w.is_multiple_of(6) => Ok(6),
        w => Err(Error::new(
            ErrorKind::Corrupt,
            format!(
                "tensor `backbone.cls_token`: a DINOv2 backbone {w} wide is neither a released one \
                 (384, 768, 1024, 1536) nor divisible into ViT-S's 6 heads"
            ),
        )),
    }
}

/// Strides of the GaitBase stages.
const STRIDES: [usize; 4] = [1, 2, 2, 1];

impl BigGaitConfig {
    /// The published CCPG model: DINOv2 ViT-S/14 (384 wide, depth 12, 6
    /// heads), GaitBase widths [64, 128, 256, 512], `SeparateFCs` 512 → 256,
    /// a 100-identity `BNNecks`.
    pub fn ccpg() -> Self {
        Self {
            dino: DinoConfig { embed_dim: 384, depth: 12, num_heads: 6, patch_size: 14, img_size: 518, mlp_ratio: 4 },
            image_size: 224,
            sils_size: 32,
            denoising_dim: 16,
            appearance_dim: 16,
            channels: [64, 128, 256, 512],
            squeeze_ratio: 16,
            fc_out: 256,
            classes: 100,
        }
    }

    /// The random-weight parity fixture: the CCPG configuration with a DINOv2
    /// 96 wide, depth 4, 6 heads, GaitBase widths [32, 64, 128, 256] and
    /// `SeparateFCs` 256 → 128.
    pub fn tiny() -> Self {
        let mut c = Self::ccpg();
        c.dino.embed_dim = 96;
        c.dino.depth = 4;
        c.channels = [32, 64, 128, 256];
        c.fc_out = 128;
        c
    }

    /// The configuration of an OpenGait BigGait checkpoint, read off its
    /// tensors' shapes (see [`BigGaitConfig::from_shapes`]), whatever
    /// wrapper prefix the names carry.
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<BigGaitConfig> {
        checkpoint.read_config(&PROBE, Self::from_shapes)
    }

    /// The configuration whose [`manifest`] has the shapes `shapes` gives by
    /// name (without a wrapper prefix):
    ///
    /// * DINOv2: width C from `backbone.cls_token` `[1, 1, C]`; depth by
    ///   counting `backbone.blocks.{i}`; patch size from
    ///   `backbone.patch_embed.proj.weight` `[C, 3, p, p]`; the training
    ///   resolution from `backbone.pos_embed` `[1, g² + 1, C]` (g·p); the MLP
    ///   ratio from `blocks.0.mlp.fc1.weight` `[ratio·C, C]`. The heads are
    ///   stored nowhere: see [`dino_heads`].
    /// * Branches: the denoising and appearance widths from the rows of
    ///   `Denoising_Branch.down_sampling.3.weight` and
    ///   `Appearance_Branch.down_sampling.weight`.
    /// * GaitBase: C0 from `gait_net.pre_part.forward_block.conv1.conv.weight`,
    ///   C1…C3 from `post_backbone`'s `layer{2,3,4}.0.conv1.weight`; the
    ///   squeeze ratio as C0 over the rows of the fusion's first convolution;
    ///   `fc_out` from `gait_net.FCs.fc_bin` `[16, C3, fc_out]`; the classes
    ///   from the training-only `BNNecks.fc_bin` when stored (else the CCPG
    ///   model's 100, which only the full [`manifest`] uses).
    /// * `image_size` and `sils_size` size no tensor: the CCPG model's.
    ///
    /// A missing tensor or a shape that no configuration has is a
    /// [`ErrorKind::Corrupt`] error naming the tensor.
    pub fn from_shapes(shapes: &dyn Fn(&str) -> Option<Vec<usize>>) -> Result<BigGaitConfig> {
        let r = ShapeReader { model: "BigGait", lookup: shapes };
        let ccpg = Self::ccpg();
        // First a tensor only BigGait has (not a bare DINOv2 or GaitBase).
        let fc_out = r.dim("gait_net.FCs.fc_bin", 3, 2)?;
        let c = r.dim("backbone.cls_token", 3, 2)?;
        let proj = "backbone.patch_embed.proj.weight";
        let patch = r.shape(proj, 4)?;
        if patch[2] == 0 || patch[2] != patch[3] || patch[1] != IN_CHANNELS {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("tensor `{proj}` has shape {patch:?}, not [C, 3, p, p] for square patches"),
            ));
        }
        let patch_size = patch[2];
        let pos = "backbone.pos_embed";
        let tokens = r.dim(pos, 3, 1)?;
        let grid = r.square_side(tokens.saturating_sub(1), "the position grid", pos)?;
        let block = |i: usize| format!("backbone.blocks.{i}.attn.qkv.weight");
        let depth = r.count(block);
        if depth == 0 {
            r.shape(&block(0), 2)?;
        }
        let fc1 = "backbone.blocks.0.mlp.fc1.weight";
        let mlp_ratio = r.exact_div(r.dim(fc1, 2, 0)?, c, "the MLP ratio", fc1)?;
        let c0 = r.dim("gait_net.pre_part.forward_block.conv1.conv.weight", 4, 0)?;
        let mut channels = [c0, 0, 0, 0];
        for (i, width) in channels.iter_mut().enumerate().skip(1) {
            *width = r.dim(&format!("gait_net.post_backbone.forward_block.layer{}.0.conv1.weight", i + 1), 4, 0)?;
        }
        let fusion = "gait_net.fusion.conv.forward_block.0.weight";
        let squeeze_ratio = r.exact_div(c0, r.dim(fusion, 4, 0)?, "the fusion's squeeze ratio", fusion)?;
        let denoising_dim = r.dim("Denoising_Branch.down_sampling.3.weight", 2, 0)?;
        let appearance_dim = r.dim("Appearance_Branch.down_sampling.weight", 2, 0)?;
        // Last: the rule for the heads, once the tensors show a BigGait.
        let num_heads = dino_heads(c)?;
        let dino = DinoConfig { embed_dim: c, depth, num_heads, patch_size, img_size: grid * patch_size, mlp_ratio };
        let necks = format!("{TRAINING_ONLY}fc_bin");
        let classes = if r.has(&necks) { r.dim(&necks, 3, 2)? } else { ccpg.classes };
        let cfg = BigGaitConfig {
            dino,
            image_size: ccpg.image_size,
            sils_size: ccpg.sils_size,
            denoising_dim,
            appearance_dim,
            channels,
            squeeze_ratio,
            fc_out,
            classes,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Width of the concatenated mid-layer tokens, 4C.
    pub fn mid_dim(&self) -> usize {
        4 * self.dino.embed_dim
    }

    /// The ViT input (height, width): (2·image_size, image_size).
    pub fn vit_input(&self) -> (usize, usize) {
        (2 * self.image_size, self.image_size)
    }

    /// The patch grid (rows, columns) of the ViT input.
    pub fn token_grid(&self) -> (usize, usize) {
        let (h, w) = self.vit_input();
        (h / self.dino.patch_size, w / self.dino.patch_size)
    }

    /// The branches' map (height, width): (2·sils_size, sils_size).
    pub fn map_size(&self) -> (usize, usize) {
        (2 * self.sils_size, self.sils_size)
    }

    /// Side of the learned position grid.
    pub fn pos_grid(&self) -> usize {
        self.dino.img_size / self.dino.patch_size
    }

    /// Indices of the blocks whose outputs are concatenated (upstream:
    /// `int(i·depth/4 + depth/4 − 1)`).
    pub fn mid_taps(&self) -> [usize; 4] {
        let d = self.dino.depth as f64;
        [0, 1, 2, 3].map(|i| (i as f64 * d / 4.0 + d / 4.0 - 1.0) as usize)
    }

    fn fusion_hidden(&self) -> usize {
        self.channels[0] / self.squeeze_ratio
    }

    fn validate(&self) -> Result<()> {
        let d = &self.dino;
        let (vh, vw) = self.vit_input();
        let (mh, mw) = self.map_size();
        let ok = d.patch_size > 0
            && d.num_heads > 0
            && d.embed_dim.is_multiple_of(d.num_heads)
            && d.depth >= 4
            && d.depth.is_multiple_of(4)
            && vh.is_multiple_of(d.patch_size)
            && vw.is_multiple_of(d.patch_size)
            && self.pos_grid() > 0
            && self.sils_size > 0
            && self.squeeze_ratio > 0
            && self.fusion_hidden() > 0
            && (mh.div_ceil(4) * mw.div_ceil(4)).is_multiple_of(PARTS);
        if ok { Ok(()) } else { Err(invalid(format!("biggait: inconsistent configuration {self:?}"))) }
    }
}

fn push_bn_buffers(m: &mut Manifest, name: &str, c: usize) {
    m.push((format!("{name}.running_mean"), vec![c]));
    m.push((format!("{name}.running_var"), vec![c]));
    m.push((format!("{name}.num_batches_tracked"), vec![]));
}

fn push_linear(m: &mut Manifest, name: &str, cin: usize, cout: usize) {
    m.push((format!("{name}.weight"), vec![cout, cin]));
    m.push((format!("{name}.bias"), vec![cout]));
}

/// Every parameter and buffer of BigGait as OpenGait's checkpoints name them
/// (the state dict under `model`), training-only tensors included: the mask
/// branch's `up_sampling` and `bn_t`, the denoising branch's `bn_t`, DINOv2's
/// `mask_token` and the `BNNecks`.
pub fn manifest(cfg: &BigGaitConfig) -> Manifest {
    let (c, c4) = (cfg.dino.embed_dim, cfg.mid_dim());
    let mut m = Manifest::new();
    // Denoising: Linear(4C, 2C) · BN · GELU · Linear(2C, 16), softmax.
    push_bn_buffers(&mut m, "Denoising_Branch.bn_s", c4);
    push_bn_buffers(&mut m, "Denoising_Branch.bn_t", cfg.denoising_dim);
    push_linear(&mut m, "Denoising_Branch.down_sampling.0", c4, c4 / 2);
    push_bn_buffers(&mut m, "Denoising_Branch.down_sampling.1", c4 / 2);
    push_linear(&mut m, "Denoising_Branch.down_sampling.3", c4 / 2, cfg.denoising_dim);
    // Appearance: Linear(4C, 16), BN, sigmoid.
    push_bn_buffers(&mut m, "Appearance_Branch.bn_s", c4);
    push_bn_buffers(&mut m, "Appearance_Branch.bn_t", cfg.appearance_dim);
    push_linear(&mut m, "Appearance_Branch.down_sampling", c4, cfg.appearance_dim);
    // Mask: Linear(C, 2), softmax; up_sampling for its training loss.
    push_bn_buffers(&mut m, "Mask_Branch.bn_s", c);
    push_bn_buffers(&mut m, "Mask_Branch.bn_t", MASK_DIM);
    push_linear(&mut m, "Mask_Branch.down_sampling", c, MASK_DIM);
    push_linear(&mut m, "Mask_Branch.up_sampling", MASK_DIM, c);
    // GaitBase.
    let [c0, _, _, _] = cfg.channels;
    for (stem, cin) in [("pre_part", cfg.denoising_dim), ("pre_rgb", cfg.appearance_dim)] {
        let p = format!("gait_net.{stem}.forward_block");
        m.push((format!("{p}.conv1.conv.weight"), vec![c0, cin, 3, 3]));
        bn_entries(&mut m, &format!("{p}.bn1"), c0);
        basic_block_entries(&mut m, &format!("{p}.layer1.0"), c0, c0, STRIDES[0]);
    }
    for (p, cin, width, stride) in post_stages(cfg) {
        basic_block_entries(&mut m, &p, cin, width, stride);
    }
    m.push(("gait_net.FCs.fc_bin".into(), vec![PARTS, cfg.channels[3], cfg.fc_out]));
    m.push((format!("{TRAINING_ONLY}fc_bin"), vec![PARTS, cfg.fc_out, cfg.classes]));
    bn_entries(&mut m, &format!("{TRAINING_ONLY}bn1d"), cfg.fc_out * PARTS);
    let (hidden, f) = (cfg.fusion_hidden(), "gait_net.fusion.conv.forward_block");
    m.push((format!("{f}.0.weight"), vec![hidden, 2 * c0, 1, 1]));
    bn_entries(&mut m, &format!("{f}.1"), hidden);
    m.push((format!("{f}.3.weight"), vec![hidden, hidden, 3, 3]));
    bn_entries(&mut m, &format!("{f}.4"), hidden);
    m.push((format!("{f}.6.weight"), vec![2 * c0, hidden, 1, 1]));
    // DINOv2.
    let (d, g) = (&cfg.dino, cfg.pos_grid());
    let hidden = d.mlp_ratio * c;
    m.push(("backbone.cls_token".into(), vec![1, 1, c]));
    m.push(("backbone.pos_embed".into(), vec![1, g * g + 1, c]));
    m.push(("backbone.mask_token".into(), vec![1, c]));
    m.push(("backbone.patch_embed.proj.weight".into(), vec![c, IN_CHANNELS, d.patch_size, d.patch_size]));
    m.push(("backbone.patch_embed.proj.bias".into(), vec![c]));
    for i in 0..d.depth {
        let b = format!("backbone.blocks.{i}");
        m.push((format!("{b}.norm1.weight"), vec![c]));
        m.push((format!("{b}.norm1.bias"), vec![c]));
        push_linear(&mut m, &format!("{b}.attn.qkv"), c, 3 * c);
        push_linear(&mut m, &format!("{b}.attn.proj"), c, c);
        m.push((format!("{b}.ls1.gamma"), vec![c]));
        m.push((format!("{b}.norm2.weight"), vec![c]));
        m.push((format!("{b}.norm2.bias"), vec![c]));
        push_linear(&mut m, &format!("{b}.mlp.fc1"), c, hidden);
        push_linear(&mut m, &format!("{b}.mlp.fc2"), hidden, c);
        m.push((format!("{b}.ls2.gamma"), vec![c]));
    }
    m.push(("backbone.norm.weight".into(), vec![c]));
    m.push(("backbone.norm.bias".into(), vec![c]));
    m
}

/// `post_backbone`'s blocks `layer2`…`layer4`: (name, input width, width, stride).
fn post_stages(cfg: &BigGaitConfig) -> impl Iterator<Item = (String, usize, usize, usize)> + '_ {
    (1..4).map(|i| {
        let name = format!("gait_net.post_backbone.forward_block.layer{}.0", i + 1);
        (name, cfg.channels[i - 1], cfg.channels[i], STRIDES[i])
    })
}

/// What the embedding consumes: [`manifest`] without the `BNNecks`. Bind
/// with [`IGNORE_PREFIXES`] to accept checkpoints trained on any dataset.
pub fn embedding_manifest(cfg: &BigGaitConfig) -> Manifest {
    manifest(cfg).into_iter().filter(|(k, _)| !k.starts_with(TRAINING_ONLY)).collect()
}

/// Looks up bound weights by name.
fn get<'a>(weights: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    weights.get(name).ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("biggait: missing tensor `{name}`")))
}

fn host_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).map_err(cerr)
}

/// An eval-mode BatchNorm1d without affine parameters, as torch applies it:
/// `x·α + β` with `α = 1/√(var + eps)`, `β = −mean·α` (float32).
struct Norm1d {
    alpha: Tensor,
    beta: Tensor,
}

impl Norm1d {
    fn load(weights: &HashMap<String, Tensor>, name: &str, device: &Device) -> Result<Norm1d> {
        let mean = host_vec(get(weights, &format!("{name}.running_mean"))?)?;
        let var = host_vec(get(weights, &format!("{name}.running_var"))?)?;
        let alpha: Vec<f32> = var.iter().map(|v| 1.0 / (v + BN_EPS).sqrt()).collect();
        let beta: Vec<f32> = mean.iter().zip(&alpha).map(|(m, a)| -(m * a)).collect();
        let n = alpha.len();
        Ok(Norm1d {
            alpha: Tensor::from_vec(alpha, n, device).map_err(cerr)?,
            beta: Tensor::from_vec(beta, n, device).map_err(cerr)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_mul(&self.alpha).and_then(|t| t.broadcast_add(&self.beta)).map_err(cerr)
    }
}

/// Softmax over the last dimension, max-subtracted.
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let f = || -> candle_core::Result<Tensor> {
        let e = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
    };
    f().map_err(cerr)
}

/// One axis of torch's bilinear resize (align_corners=False, a target size):
/// the two source indices and weights of every output index.
struct LinearAxis {
    idx0: Tensor,
    idx1: Tensor,
    w0: Vec<f32>,
    w1: Vec<f32>,
}

impl LinearAxis {
    fn new(input: usize, output: usize, device: &Device) -> Result<LinearAxis> {
        let (mut i0, mut i1, mut w0, mut w1) = (vec![], vec![], vec![], vec![]);
        let scale = input as f32 / output as f32;
        for i in 0..output {
            let (index, next, l1) = if input == output {
                (i, i, 0.0)
            } else {
                let real = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
                let index = (real as usize).min(input - 1);
                (index, index + usize::from(index < input - 1), (real - index as f32).clamp(0.0, 1.0))
            };
            i0.push(index as u32);
            i1.push(next as u32);
            w0.push(1.0 - l1);
            w1.push(l1);
        }
        Ok(LinearAxis {
            idx0: Tensor::new(i0, device).map_err(cerr)?,
            idx1: Tensor::new(i1, device).map_err(cerr)?,
            w0,
            w1,
        })
    }

    /// Resizes `x` along `dim` (of `rank` dimensions).
    fn apply(&self, x: &Tensor, dim: usize) -> Result<Tensor> {
        let rank = x.rank();
        let n = self.w0.len();
        let mut shape = vec![1usize; rank];
        shape[dim] = n;
        let dev = x.device();
        let f = || -> candle_core::Result<Tensor> {
            let w0 = Tensor::from_slice(&self.w0, shape.as_slice(), dev)?;
            let w1 = Tensor::from_slice(&self.w1, shape.as_slice(), dev)?;
            let a = x.index_select(&self.idx0, dim)?.broadcast_mul(&w0)?;
            let b = x.index_select(&self.idx1, dim)?.broadcast_mul(&w1)?;
            a + b
        };
        f().map_err(cerr)
    }
}

/// A 2-D bilinear resize over two adjacent axes (rows at `dim`, columns at
/// `dim + 1`): columns first, then rows, as torch accumulates.
struct Bilinear {
    rows: LinearAxis,
    cols: LinearAxis,
}

impl Bilinear {
    fn new(from: (usize, usize), to: (usize, usize), device: &Device) -> Result<Bilinear> {
        Ok(Bilinear { rows: LinearAxis::new(from.0, to.0, device)?, cols: LinearAxis::new(from.1, to.1, device)? })
    }

    fn apply(&self, x: &Tensor, dim: usize) -> Result<Tensor> {
        self.rows.apply(&self.cols.apply(x, dim + 1)?, dim)
    }
}

/// The GaitBase head with its BatchNorms folded.
struct GaitHead {
    part_stem: Conv,
    part_block: BasicBlock,
    rgb_stem: Conv,
    rgb_block: BasicBlock,
    fusion: [Conv; 3],
    post: Vec<BasicBlock>,
    fc_bin: Tensor,
    c0: usize,
}

impl GaitHead {
    fn load(cfg: &BigGaitConfig, w: &HashMap<String, Tensor>, device: &Device) -> Result<GaitHead> {
        let c0 = cfg.channels[0];
        let stem = |s: &str| {
            let p = format!("gait_net.{s}.forward_block");
            Ok::<_, Error>((
                Conv::folded(w, &format!("{p}.conv1.conv"), &format!("{p}.bn1"), 1, device)?,
                BasicBlock::load(w, &format!("{p}.layer1.0"), c0, c0, STRIDES[0], device)?,
            ))
        };
        let (part_stem, part_block) = stem("pre_part")?;
        let (rgb_stem, rgb_block) = stem("pre_rgb")?;
        let f = "gait_net.fusion.conv.forward_block";
        let fusion = [
            Conv::folded(w, &format!("{f}.0"), &format!("{f}.1"), 1, device)?,
            Conv::folded(w, &format!("{f}.3"), &format!("{f}.4"), 1, device)?,
            Conv::plain(w, &format!("{f}.6"), 1, device)?,
        ];
        let post = post_stages(cfg)
            .map(|(p, cin, width, stride)| BasicBlock::load(w, &p, cin, width, stride, device))
            .collect::<Result<Vec<_>>>()?;
        let fc_bin = get(w, "gait_net.FCs.fc_bin")?.to_device(device).map_err(cerr)?;
        Ok(GaitHead { part_stem, part_block, rgb_stem, rgb_block, fusion, post, fc_bin, c0 })
    }

    /// Per frame: denoising and appearance images [f, 16, h, w] → the
    /// backbone's map [f, C3, h/4, w/4] (before temporal pooling).
    fn frames(&self, denoising: &Tensor, appearance: &Tensor) -> Result<Tensor> {
        let part = self.part_block.forward(&self.part_stem.forward(denoising)?.relu().map_err(cerr)?)?;
        let rgb = self.rgb_block.forward(&self.rgb_stem.forward(appearance)?.relu().map_err(cerr)?)?;
        let feats = Tensor::cat(&[&part, &rgb], 1).map_err(cerr)?;
        let s = self.fusion[0].forward(&feats)?.relu().map_err(cerr)?;
        let s = self.fusion[1].forward(&s)?.relu().map_err(cerr)?;
        let s = self.fusion[2].forward(&s)?; // [f, 2·C0, h, w], channel 2c + d
        let (f, _, h, w) = s.dims4().map_err(cerr)?;
        let c0 = self.c0;
        let g = || -> candle_core::Result<Tensor> {
            let s = s.reshape((f, c0, 2, h, w))?;
            let e = s.broadcast_sub(&s.max_keepdim(2)?)?.exp()?;
            let p = e.broadcast_div(&e.sum_keepdim(2)?)?;
            let a = part.mul(&p.narrow(2, 0, 1)?.squeeze(2)?)?;
            let b = rgb.mul(&p.narrow(2, 1, 1)?.squeeze(2)?)?;
            a + b
        };
        let mut x = g().map_err(cerr)?;
        for b in &self.post {
            x = b.forward(&x)?;
        }
        Ok(x)
    }
}

/// Every intermediate of one batch, in OpenGait's layouts (f = n·s frames,
/// sequence-major), from [`BigGait::trace`].
pub struct Trace {
    /// DINOv2's interpolated position embedding [1, 1 + 32·16, C].
    pub pos_embed: Tensor,
    /// The final LayerNorm's patch tokens [f, 512, C].
    pub patch_tokens: Tensor,
    /// The layer-normalised mid-layer tokens [f, 512, 4C].
    pub patch_tokens_mid4: Tensor,
    /// The foreground values [f, 64, 32] (non-zero: the branches' pixels).
    pub foreground: Tensor,
    /// `pre_part`'s input [n, 16, s, 64, 32].
    pub denoising: Tensor,
    /// `pre_rgb`'s input [n, 16, s, 64, 32].
    pub appearance: Tensor,
    /// The embedding [n, fc_out, 16].
    pub embedding: Tensor,
}

/// Intermediates of one chunk of frames.
struct ChunkTrace {
    patch_tokens: Tensor,
    patch_tokens_mid4: Tensor,
    foreground: Tensor,
    denoising: Tensor,
    appearance: Tensor,
}

/// BigGait with its weights, ready to embed RGB frame sequences.
pub struct BigGait {
    cfg: BigGaitConfig,
    device: Device,
    /// DINOv2, for the (2·image_size) × image_size input.
    backbone: Dinov2,
    mask_bn: Norm1d,
    mask_fc: Linear,
    den_bn_s: Norm1d,
    den_fc0: Linear,
    den_bn1: Norm1d,
    den_fc3: Linear,
    app_bn_s: Norm1d,
    app_fc: Linear,
    app_bn_t: Norm1d,
    head: GaitHead,
    /// Token grid → branch map.
    token_resize: Bilinear,
}

impl BigGait {
    /// Builds the model from weights bound against [`manifest`] or
    /// [`embedding_manifest`] (the training-only tensors are not read).
    pub fn new(cfg: &BigGaitConfig, weights: &HashMap<String, Tensor>, device: &Device) -> Result<BigGait> {
        cfg.validate()?;
        for (name, shape) in embedding_manifest(cfg) {
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            let have = get(weights, &name)?.dims();
            if have != shape.as_slice() {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("biggait: tensor `{name}` has shape {have:?}, the configuration expects {shape:?}"),
                ));
            }
        }
        let (rows, cols) = cfg.token_grid();
        let backbone =
            Dinov2::from_release(&cfg.dino, weights, "backbone.", (rows, cols), PosResample::OffsetScale, device)?;
        let l = |name: &str| {
            Linear::from_torch(get(weights, &format!("{name}.weight"))?, get(weights, &format!("{name}.bias"))?, device)
        };
        let n = |name: &str| Norm1d::load(weights, name, device);
        Ok(BigGait {
            backbone,
            mask_bn: n("Mask_Branch.bn_s")?,
            mask_fc: l("Mask_Branch.down_sampling")?,
            den_bn_s: n("Denoising_Branch.bn_s")?,
            den_fc0: l("Denoising_Branch.down_sampling.0")?,
            den_bn1: n("Denoising_Branch.down_sampling.1")?,
            den_fc3: l("Denoising_Branch.down_sampling.3")?,
            app_bn_s: n("Appearance_Branch.bn_s")?,
            app_fc: l("Appearance_Branch.down_sampling")?,
            app_bn_t: n("Appearance_Branch.bn_t")?,
            head: GaitHead::load(cfg, weights, device)?,
            token_resize: Bilinear::new((rows, cols), cfg.map_size(), device)?,
            cfg: cfg.clone(),
            device: device.clone(),
        })
    }

    /// The configuration the model was built for.
    pub fn config(&self) -> &BigGaitConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Embeddings [n, fc_out, 16] of n sequences of s frames: `frames`
    /// [n, s, 3, 2w, w] RGB (u8, or floats holding 0..255; 256×128 from
    /// OpenGait's pretreatment), `ratios` [n, s] each raw frame's width /
    /// height (see the module documentation).
    pub fn forward(&self, frames: &Tensor, ratios: &Tensor) -> Result<Tensor> {
        Ok(self.run(frames, ratios, false)?.0)
    }

    /// [`BigGait::forward`] with every intermediate, for checking a port.
    pub fn trace(&self, frames: &Tensor, ratios: &Tensor) -> Result<Trace> {
        let (embedding, chunks) = self.run(frames, ratios, true)?;
        let (n, s) = (embedding.dim(0).map_err(cerr)?, frames.dim(1).map_err(cerr)?);
        let cat =
            |f: fn(&ChunkTrace) -> &Tensor| Tensor::cat(&chunks.iter().map(f).collect::<Vec<_>>(), 0).map_err(cerr);
        // [f, 16, h, w] -> [n, 16, s, h, w]
        let per_seq = |t: Tensor| {
            let (_, c, h, w) = t.dims4().map_err(cerr)?;
            t.reshape((n, s, c, h, w))
                .and_then(|t| t.permute((0, 2, 1, 3, 4)))
                .and_then(|t| t.contiguous())
                .map_err(cerr)
        };
        Ok(Trace {
            pos_embed: self.backbone.pos_embed().clone(),
            patch_tokens: cat(|c| &c.patch_tokens)?,
            patch_tokens_mid4: cat(|c| &c.patch_tokens_mid4)?,
            foreground: cat(|c| &c.foreground)?,
            denoising: per_seq(cat(|c| &c.denoising)?)?,
            appearance: per_seq(cat(|c| &c.appearance)?)?,
            embedding,
        })
    }

    fn run(&self, frames: &Tensor, ratios: &Tensor, keep: bool) -> Result<(Tensor, Vec<ChunkTrace>)> {
        let shape = || format!("{:?}", frames.dims());
        let (n, s, ch, h, w) = frames.dims5().map_err(|_| {
            invalid(format!("biggait: frames must be [n, s, 3, 256, 128] (any [n, s, 3, 2w, w]), got {}", shape()))
        })?;
        if n == 0 || s == 0 || ch != IN_CHANNELS || w == 0 || h != 2 * w {
            return Err(invalid(format!(
                "biggait: frames must be [n ≥ 1, s ≥ 1, 3, 256, 128] (any height twice the width), got {}",
                shape()
            )));
        }
        if ratios.dims() != [n, s] {
            return Err(invalid(format!(
                "biggait: ratios must be [{n}, {s}] like the frames, got {:?}",
                ratios.dims()
            )));
        }
        let ratios = host_vec(ratios)?;
        let valid = ratios.iter().map(|&r| self.valid_columns(r)).collect::<Result<Vec<_>>>()?;
        let flat = frames.reshape((n * s, ch, h, w)).map_err(cerr)?;
        let resize = Bilinear::new((h, w), self.cfg.vit_input(), &self.device)?;
        let mut acc: Vec<Option<Tensor>> = vec![None; n];
        let mut traces = Vec::new();
        for start in (0..n * s).step_by(FRAME_CHUNK) {
            let len = FRAME_CHUNK.min(n * s - start);
            let chunk = flat.narrow(0, start, len).map_err(cerr)?;
            let (maps, trace) = self.frames(&chunk, &resize, &valid[start..start + len], keep)?;
            traces.extend(trace);
            // Temporal pooling: a running maximum per sequence.
            let mut i = start;
            while i < start + len {
                let seq = i / s;
                let end = ((seq + 1) * s).min(start + len);
                let m = maps.narrow(0, i - start, end - i).and_then(|t| t.max_keepdim(0)).map_err(cerr)?;
                acc[seq] = Some(match acc[seq].take() {
                    Some(a) => a.maximum(&m).map_err(cerr)?,
                    None => m,
                });
                i = end;
            }
        }
        let pooled = acc.into_iter().map(|a| a.ok_or_else(|| Error::internal("biggait: no frames pooled")));
        let x = Tensor::cat(&pooled.collect::<Result<Vec<_>>>()?, 0).map_err(cerr)?;
        Ok((pool_and_project(&x, &self.head.fc_bin)?, traces))
    }

    /// The valid column range [from, to) of the branch map for a frame of
    /// aspect `ratio` (OpenGait's `padding_resize` of an all-ones mask).
    fn valid_columns(&self, ratio: f32) -> Result<(usize, usize)> {
        let (mh, mw) = self.cfg.map_size();
        let need = (mh as f32 * ratio).trunc();
        if !need.is_finite() || need < 1.0 {
            return Err(invalid(format!(
                "biggait: frame ratio {ratio} (width / height) leaves no column of the {mh}x{mw} map"
            )));
        }
        let need = need as usize;
        Ok(if need < mw { ((mw - need) / 2, (mw - need) / 2 + need) } else { (0, mw) })
    }

    /// One chunk of frames [f, 3, h, w] through everything before temporal
    /// pooling → [f, C3, 16, 8], with its intermediates if `keep`.
    fn frames(
        &self,
        frames: &Tensor,
        resize: &Bilinear,
        valid: &[(usize, usize)],
        keep: bool,
    ) -> Result<(Tensor, Option<ChunkTrace>)> {
        let f = frames.dim(0).map_err(cerr)?;
        let (mh, mw) = self.cfg.map_size();
        let px = mh * mw;
        let x = self.normalise(frames)?;
        let x = resize.apply(&x, 2)?; // [f, 3, 448, 224]
        let (last, mid4) = self.dino(&x)?; // [f, 512, C], [f, 512, 4C]
        let (rows, cols) = self.cfg.token_grid();
        let to_map = |t: &Tensor| -> Result<Tensor> {
            let c = t.dim(2).map_err(cerr)?;
            let grid = t.reshape((f, rows, cols, c)).map_err(cerr)?;
            self.token_resize.apply(&grid, 1)?.reshape((f * px, c)).map_err(cerr) // pixel rows
        };
        let last_px = to_map(&last)?;
        let mid_px = to_map(&mid4)?;

        // Mask branch at the ratio-valid pixels.
        let valid_idx: Vec<u32> = (0..f)
            .flat_map(|i| {
                let (a, b) = valid[i];
                (0..mh).flat_map(move |y| (a..b).map(move |x| (i * px + y * mw + x) as u32))
            })
            .collect();
        let sel = self.gather(&last_px, &valid_idx)?;
        let probs = softmax_last(&self.mask_fc.forward(&self.mask_bn.forward(&sel)?)?)?;
        let probs = host_vec(&probs)?;
        let mut mask = vec![0f32; f * px * MASK_DIM];
        for (k, &p) in valid_idx.iter().enumerate() {
            let p = p as usize;
            mask[p * MASK_DIM..(p + 1) * MASK_DIM].copy_from_slice(&probs[k * MASK_DIM..(k + 1) * MASK_DIM]);
        }
        let fg: Vec<f32> =
            (0..f).flat_map(|i| foreground(&mask[i * px * MASK_DIM..(i + 1) * px * MASK_DIM], mh, mw)).collect();
        let fg_idx: Vec<u32> = fg.iter().enumerate().filter(|(_, v)| **v != 0.0).map(|(i, _)| i as u32).collect();

        // Denoising and appearance at the foreground pixels, 0 elsewhere.
        let sel = self.gather(&mid_px, &fg_idx)?;
        let den = {
            let h = self.den_fc0.forward(&self.den_bn_s.forward(&sel)?)?;
            let h = self.den_bn1.forward(&h)?.gelu_erf().map_err(cerr)?;
            softmax_last(&self.den_fc3.forward(&h)?)?
        };
        let app = {
            let a = self.app_bn_t.forward(&self.app_fc.forward(&self.app_bn_s.forward(&sel)?)?)?;
            a.neg().and_then(|t| t.exp()).and_then(|t| t + 1.0).and_then(|t| t.recip()).map_err(cerr)?
        };
        let image = |v: &Tensor, c: usize| -> Result<Tensor> {
            // [f·px, c] -> [f, c, mh, mw]
            self.scatter(v, &fg_idx, f * px, c)?
                .reshape((f, px, c))
                .and_then(|t| t.transpose(1, 2))
                .and_then(|t| t.reshape((f, c, mh, mw)))
                .map_err(cerr)
        };
        let den = image(&den, self.cfg.denoising_dim)?;
        let app = image(&app, self.cfg.appearance_dim)?;
        let maps = self.head.frames(&den, &app)?;
        let trace = if keep {
            Some(ChunkTrace {
                patch_tokens: last,
                patch_tokens_mid4: mid4,
                foreground: Tensor::from_vec(fg, (f, mh, mw), &self.device).map_err(cerr)?,
                denoising: den,
                appearance: app,
            })
        } else {
            None
        };
        Ok((maps, trace))
    }

    /// The evaluator's normalisation, in float64 on the CPU, to float32 on
    /// the model's device.
    fn normalise(&self, frames: &Tensor) -> Result<Tensor> {
        let f = || -> candle_core::Result<Tensor> {
            let x = frames.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
            let mean = Tensor::new(RGB_MEAN.map(|m| m * 255.0).as_slice(), &Device::Cpu)?.reshape((1, 3, 1, 1))?;
            let std = Tensor::new(RGB_STD.map(|s| s * 255.0).as_slice(), &Device::Cpu)?.reshape((1, 3, 1, 1))?;
            x.broadcast_sub(&mean)?.broadcast_div(&std)?.to_dtype(DType::F32)?.to_device(&self.device)
        };
        f().map_err(cerr)
    }

    /// DINOv2 on [f, 3, H, W] → (final-norm patch tokens [f, L, C],
    /// layer-normalised mid-layer patch tokens [f, L, 4C]).
    fn dino(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let out = self.backbone.forward(x, &self.cfg.mid_taps())?;
        let (rows, cols) = self.backbone.grid();
        let patches = |t: &Tensor| t.narrow(1, 1, rows * cols).map_err(cerr);
        let last = patches(&out.tokens)?;
        let mid = out.taps.iter().map(patches).collect::<Result<Vec<_>>>()?;
        let mid = LayerNorm { affine: None }.forward(&Tensor::cat(&mid, 2).map_err(cerr)?)?;
        Ok((last, mid))
    }

    /// Rows `idx` of `x` [rows, c] (an empty [0, c] when none).
    fn gather(&self, x: &Tensor, idx: &[u32]) -> Result<Tensor> {
        let c = x.dim(1).map_err(cerr)?;
        if idx.is_empty() {
            return Tensor::zeros((0, c), DType::F32, &self.device).map_err(cerr);
        }
        let idx = Tensor::new(idx, &self.device).map_err(cerr)?;
        x.index_select(&idx, 0).map_err(cerr)
    }

    /// [rows, c] with `v`'s rows at `idx` and zeros elsewhere.
    fn scatter(&self, v: &Tensor, idx: &[u32], rows: usize, c: usize) -> Result<Tensor> {
        if idx.is_empty() {
            return Tensor::zeros((rows, c), DType::F32, &self.device).map_err(cerr);
        }
        // Row 0 of the source is zeros; pixel r reads row k + 1 if it is idx[k].
        let mut from = vec![0u32; rows];
        for (k, &r) in idx.iter().enumerate() {
            from[r as usize] = k as u32 + 1;
        }
        let zeros = Tensor::zeros((1, c), DType::F32, &self.device).map_err(cerr)?;
        let src = Tensor::cat(&[&zeros, v], 0).map_err(cerr)?;
        src.index_select(&Tensor::new(from, &self.device).map_err(cerr)?, 0).map_err(cerr)
    }
}

/// OpenGait's `get_body` and `get_edge` for one frame's mask probabilities
/// [h·w, 2] (zeros at invalid pixels) → foreground values [h·w].
fn foreground(mask: &[f32], h: usize, w: usize) -> Vec<f32> {
    let round = |v: f32| v.round_ties_even();
    // get_body: the rounded channel 0 along the top and bottom edges.
    let edge_rows = (0..BODY_EDGE_ROWS.min(h)).chain(h.saturating_sub(BODY_EDGE_ROWS)..h);
    let count: f32 = edge_rows.flat_map(|y| (0..w).map(move |x| y * w + x)).map(|i| round(mask[i * MASK_DIM])).sum();
    let channel = usize::from(count > (w * BODY_EDGE_ROWS) as f32);
    let p: Vec<f32> = (0..h * w).map(|i| mask[i * MASK_DIM + channel]).collect();
    // get_edge: closing of round(p), pixels outside the map ignored.
    let b: Vec<f32> = p.iter().map(|&v| round(v)).collect();
    let window = |src: &[f32], r: usize, pick: fn(f32, f32) -> f32| -> Vec<f32> {
        let mut out = vec![0f32; h * w];
        for y in 0..h {
            for x in 0..w {
                let mut acc: Option<f32> = None;
                for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                    for xx in x.saturating_sub(r)..(x + r + 1).min(w) {
                        let v = src[yy * w + xx];
                        acc = Some(acc.map_or(v, |a| pick(a, v)));
                    }
                }
                out[y * w + x] = acc.unwrap_or(0.0);
            }
        }
        out
    };
    let dilated = window(&b, 1, f32::max);
    let eroded = window(&dilated, 2, f32::min);
    (0..h * w)
        .map(|i| {
            let (d, e) = (dilated[i] > 0.5, eroded[i] > 0.5);
            f32::from(u8::from(d ^ e)) * p[i] + f32::from(u8::from(e))
        })
        .collect()
}
