//! CVLface's ViT face recogniser with KeyPoint Relative Position Encoding
//! (KP-RPE, Kim et al., CVPR 2024), in candle.
//!
//! The network, for a 112x112 aligned face crop and its five landmarks:
//!
//! 1. 8x8 patches (no class token) are embedded linearly and a learned
//!    absolute position embedding is added: `L = 14 * 14 = 196` tokens of
//!    width `E`.
//! 2. `depth` pre-norm transformer blocks: `x += attn(ln1(x))`,
//!    `x += mlp(ln2(x))`, the MLP being `fc2(relu6(fc1(x)))` and the
//!    attention multi-head without a qkv bias.
//! 3. A final LayerNorm, then all tokens are flattened (token-major,
//!    `[N, L * E]`) and go through `Linear -> BatchNorm1d -> Linear ->
//!    BatchNorm1d` (no bias on the linears, BN eps 2e-5) to the embedding.
//!
//! KP-RPE is iRPE's "contextual, on keys, product method" bias whose
//! per-bucket values come from the landmarks instead of the queries. For
//! every patch centre `p` the offsets to the landmarks, `p - kp_k` (in crop
//! units, `(x, y)` pairs), go through one `Linear(2K -> depth * H * B)`
//! (`keypoint_linear`): for block `d`, head `h`, query token `i` this gives
//! a table of `B = 49` values, and the attention logit of `(i, j)` gets the
//! value at bucket `bucket(i, j)`, a function of the grid offset between
//! patches `i` and `j` only. That bucket map is fixed by the grid, so it is
//! computed once at load.

use std::collections::HashMap;

use candle_core::{D, Device, Error, Result, Tensor, bail};

/// Number of keypoints the published models use (eyes, nose, mouth corners).
const NUM_KEYPOINTS: usize = 5;
/// Colour channels of the input image.
const IN_CHANNELS: usize = 3;
/// `nn.LayerNorm`'s default epsilon (all LayerNorms of the network).
const LN_EPS: f64 = 1e-5;
/// Epsilon of the two BatchNorm1d layers in the `feature` head.
const BN_EPS: f64 = 2e-5;

/// Hyper-parameters of one ViT-KPRPE configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct VitKprpeConfig {
    /// Side of the square input crop, pixels.
    pub img_size: usize,
    /// Side of a square patch, pixels.
    pub patch_size: usize,
    /// Token width `E`.
    pub embed_dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads per block (`E` must be a multiple).
    pub num_heads: usize,
    /// MLP hidden width over `E` (the hidden width is `floor(E * ratio)`).
    pub mlp_ratio: f64,
    /// Width of the output embedding.
    pub output_dim: usize,
    /// Landmarks given per face.
    pub num_keypoints: usize,
    /// iRPE's `ratio`: the piecewise bucketing uses `alpha = ratio`,
    /// `beta = 2 ratio`, `gamma = 8 ratio` (in patches).
    pub rpe_ratio: f64,
}

impl VitKprpeConfig {
    /// The random-weight parity fixture: embed 64, depth 2, 4 heads.
    pub fn tiny() -> Self {
        Self { embed_dim: 64, depth: 2, num_heads: 4, mlp_ratio: 3.0, output_dim: 64, ..Self::base() }
    }

    /// CVLface's `small`: embed 512, depth 12, 8 heads, MLP 2560.
    pub fn small() -> Self {
        Self { depth: 12, num_heads: 8, mlp_ratio: 5.0, ..Self::base() }
    }

    /// CVLface's `base`: embed 512, depth 24, 16 heads, MLP 1536.
    pub fn base() -> Self {
        Self {
            img_size: 112,
            patch_size: 8,
            embed_dim: 512,
            depth: 24,
            num_heads: 16,
            mlp_ratio: 3.0,
            output_dim: 512,
            num_keypoints: NUM_KEYPOINTS,
            rpe_ratio: 1.9,
        }
    }

    /// Patches per side of the grid.
    pub fn grid_side(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Number of tokens `L` (patches; there is no class token).
    pub fn num_patches(&self) -> usize {
        self.grid_side() * self.grid_side()
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Hidden width of the MLP (truncated, as `int(dim * mlp_ratio)`).
    pub fn mlp_hidden_dim(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    /// The piecewise bucketing's `(alpha, beta, gamma)`, in patches.
    fn rpe_coefficients(&self) -> (f64, f64, f64) {
        (self.rpe_ratio, 2.0 * self.rpe_ratio, 8.0 * self.rpe_ratio)
    }

    /// Largest bucketed offset along one axis: `floor(beta)`.
    fn rpe_max_offset(&self) -> usize {
        self.rpe_coefficients().1 as usize
    }

    /// Buckets of the product method: one per (row, column) bucket pair,
    /// `(2 floor(beta) + 1)^2` (49 for ratio 1.9).
    pub fn num_buckets(&self) -> usize {
        let side = 2 * self.rpe_max_offset() + 1;
        side * side
    }

    fn validate(&self) -> Result<()> {
        if self.patch_size == 0 || !self.img_size.is_multiple_of(self.patch_size) {
            bail!("vit_kprpe: image size {} is not a multiple of patch size {}", self.img_size, self.patch_size);
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            bail!("vit_kprpe: embed dim {} is not a multiple of {} heads", self.embed_dim, self.num_heads);
        }
        Ok(())
    }
}

/// The names and shapes of one transformer block `b` of width `e` with an
/// MLP of width `hidden` (no qkv bias), as the timm-style ViTs name them.
pub(crate) fn block_entries(m: &mut Vec<(String, Vec<usize>)>, b: &str, e: usize, hidden: usize) {
    m.extend([
        (format!("{b}.norm1.weight"), vec![e]),
        (format!("{b}.norm1.bias"), vec![e]),
        (format!("{b}.norm2.weight"), vec![e]),
        (format!("{b}.norm2.bias"), vec![e]),
        (format!("{b}.attn.qkv.weight"), vec![3 * e, e]),
        (format!("{b}.attn.proj.weight"), vec![e, e]),
        (format!("{b}.attn.proj.bias"), vec![e]),
        (format!("{b}.mlp.fc1.weight"), vec![hidden, e]),
        (format!("{b}.mlp.fc1.bias"), vec![hidden]),
        (format!("{b}.mlp.fc2.weight"), vec![e, hidden]),
        (format!("{b}.mlp.fc2.bias"), vec![e]),
    ]);
}

/// Every parameter and buffer the network holds for `cfg`, with its shape,
/// in state-dict order and without the checkpoint's `net.` prefix. The
/// BatchNorms' `num_batches_tracked` counters are listed (shape `[]`) but
/// not used by the forward.
pub fn expected_shapes(cfg: &VitKprpeConfig) -> Vec<(String, Vec<usize>)> {
    let e = cfg.embed_dim;
    let hidden = cfg.mlp_hidden_dim();
    let p = cfg.patch_size;
    let mut out: Vec<(String, Vec<usize>)> = vec![
        ("pos_embed".into(), vec![1, cfg.num_patches(), e]),
        ("patch_embed.proj.weight".into(), vec![e, IN_CHANNELS, p, p]),
        ("patch_embed.proj.bias".into(), vec![e]),
    ];
    for d in 0..cfg.depth {
        let b = format!("blocks.{d}");
        block_entries(&mut out, &b, e, hidden);
    }
    out.push(("norm.weight".into(), vec![e]));
    out.push(("norm.bias".into(), vec![e]));
    // feature.0 / feature.2 are bias-free linears, feature.1 / feature.3 BatchNorm1d.
    for (linear, bn, fan_in, width) in [(0, 1, e * cfg.num_patches(), e), (2, 3, e, cfg.output_dim)] {
        out.push((format!("feature.{linear}.weight"), vec![width, fan_in]));
        for buf in ["weight", "bias", "running_mean", "running_var"] {
            out.push((format!("feature.{bn}.{buf}"), vec![width]));
        }
        out.push((format!("feature.{bn}.num_batches_tracked"), vec![]));
    }
    let kp_out = cfg.depth * cfg.num_heads * cfg.num_buckets();
    out.push(("keypoint_linear.weight".into(), vec![kp_out, 2 * cfg.num_keypoints]));
    out.push(("keypoint_linear.bias".into(), vec![kp_out]));
    out
}

/// iRPE's piecewise index of a signed offset `x` (patches): exact within
/// `alpha`, logarithmically compressed beyond, saturating at `floor(beta)`.
/// The result lies in `[-floor(beta), floor(beta)]`.
pub(crate) fn piecewise_index(x: i64, alpha: f64, beta: f64, gamma: f64) -> i64 {
    let abs = x.unsigned_abs() as f64;
    if abs <= alpha {
        return x;
    }
    let compressed = alpha + (abs / alpha).ln() / (gamma / alpha).ln() * (beta - alpha);
    // Round half to even (torch.round), clip at beta, then truncate toward
    // zero as the cast to an integer index does (so beta = 3.8 gives 3).
    (x.signum() as f64 * compressed.round_ties_even().min(beta)) as i64
}

/// Flat gather indices for the KP-RPE bias: entry `i * L + j` is
/// `i * B + bucket(i, j)`, indexing a per-(sample, head) table laid out as
/// `[L query tokens, B buckets]`. Tokens are row-major over the patch grid;
/// `bucket` is the product method's `row_bucket * (2 floor(beta) + 1) +
/// column_bucket` of the query-minus-key grid offset.
fn rpe_gather_indices(cfg: &VitKprpeConfig) -> Vec<u32> {
    let (alpha, beta, gamma) = cfg.rpe_coefficients();
    let max_offset = cfg.rpe_max_offset() as i64;
    let side = cfg.grid_side();
    let (tokens, buckets) = (cfg.num_patches(), cfg.num_buckets());
    let axis_bucket = |offset: i64| piecewise_index(offset, alpha, beta, gamma) + max_offset;
    let mut out = Vec::with_capacity(tokens * tokens);
    for i in 0..tokens {
        let (row_i, col_i) = ((i / side) as i64, (i % side) as i64);
        for j in 0..tokens {
            let (row_j, col_j) = ((j / side) as i64, (j % side) as i64);
            let bucket = axis_bucket(row_i - row_j) * (2 * max_offset + 1) + axis_bucket(col_i - col_j);
            out.push((i * buckets) as u32 + bucket as u32);
        }
    }
    out
}

/// Patch centres in crop coordinates, `[L, 2]` as `(x, y)` in `[0, 1]`,
/// tokens row-major (the same convention as the keypoints).
fn patch_centres(cfg: &VitKprpeConfig, device: &Device) -> Result<Tensor> {
    let side = cfg.grid_side();
    let centre = |k: usize| ((k as f64 + 0.5) / side as f64) as f32;
    let xy: Vec<f32> = (0..cfg.num_patches()).flat_map(|t| [centre(t % side), centre(t / side)]).collect();
    Tensor::from_vec(xy, (cfg.num_patches(), 2), device)
}

fn weight<'a>(weights: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    weights.get(name).ok_or_else(|| Error::Msg(format!("vit_kprpe: missing weight `{name}`")))
}

/// `y = x W^T + b` over the last dimension of `x` (any rank).
pub(crate) struct Linear {
    /// `W^T`, contiguous `[in, out]`.
    weight_t: Tensor,
    /// `[out]`.
    bias: Option<Tensor>,
}

impl Linear {
    /// From a PyTorch `[out, in]` weight and optional `[out]` bias.
    pub(crate) fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        Ok(Self { weight_t: weight.t()?.contiguous()?, bias: bias.cloned() })
    }

    pub(crate) fn load(weights: &HashMap<String, Tensor>, prefix: &str, with_bias: bool) -> Result<Self> {
        let bias = if with_bias { Some(weight(weights, &format!("{prefix}.bias"))?) } else { None };
        Self::new(weight(weights, &format!("{prefix}.weight"))?, bias)
    }

    /// A bias-free linear followed by an eval-mode BatchNorm1d, folded into
    /// one linear: `W' = diag(s) W`, `b' = beta - mean * s`, with
    /// `s = gamma / sqrt(var + eps)`.
    fn load_with_batch_norm(weights: &HashMap<String, Tensor>, linear: &str, bn: &str) -> Result<Self> {
        let w = weight(weights, &format!("{linear}.weight"))?;
        let gamma = weight(weights, &format!("{bn}.weight"))?;
        let beta = weight(weights, &format!("{bn}.bias"))?;
        let mean = weight(weights, &format!("{bn}.running_mean"))?;
        let var = weight(weights, &format!("{bn}.running_var"))?;
        let scale = gamma.div(&(var + BN_EPS)?.sqrt()?)?;
        let folded_w = w.broadcast_mul(&scale.unsqueeze(1)?)?;
        let folded_b = beta.sub(&mean.mul(&scale)?)?;
        Self::new(&folded_w, Some(&folded_b))
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let Some((&fan_in, lead)) = dims.split_last() else { bail!("vit_kprpe: linear on a scalar") };
        let rows = lead.iter().product::<usize>();
        let y = x.reshape((rows, fan_in))?.matmul(&self.weight_t)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = lead.to_vec();
        out_dims.push(self.weight_t.dim(1)?);
        y.reshape(out_dims)
    }
}

/// LayerNorm over the last dimension (biased variance, eps 1e-5).
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    pub(crate) fn load(weights: &HashMap<String, Tensor>, prefix: &str) -> Result<Self> {
        Ok(Self {
            weight: weight(weights, &format!("{prefix}.weight"))?.clone(),
            bias: weight(weights, &format!("{prefix}.bias"))?.clone(),
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred.broadcast_div(&(var + LN_EPS)?.sqrt()?)?.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// Softmax over the last dimension, max-subtracted for stability.
pub(crate) fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let e = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Multi-head self-attention whose logits get the KP-RPE bias.
struct Attention {
    /// `[E] -> [3E]` (q, k, v; heads contiguous within each), no bias; the
    /// `head_dim^-1/2` logit scale is folded into the q rows.
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
}

impl Attention {
    fn load(weights: &HashMap<String, Tensor>, prefix: &str, cfg: &VitKprpeConfig) -> Result<Self> {
        let qkv = weight(weights, &format!("{prefix}.qkv.weight"))?;
        let e = cfg.embed_dim;
        let q_scaled = (qkv.narrow(0, 0, e)? * (cfg.head_dim() as f64).powf(-0.5))?;
        let qkv = Tensor::cat(&[&q_scaled, &qkv.narrow(0, e, 2 * e)?], 0)?;
        Ok(Self {
            qkv: Linear::new(&qkv, None)?,
            proj: Linear::load(weights, &format!("{prefix}.proj"), true)?,
            num_heads: cfg.num_heads,
        })
    }

    /// `x`: `[N, L, E]`; `rpe_bias`: `[N, H, L, L]` added to the logits of
    /// (query `i`, key `j`).
    fn forward(&self, x: &Tensor, rpe_bias: &Tensor) -> Result<Tensor> {
        let (n, l, e) = x.dims3()?;
        let h = self.num_heads;
        // [N, L, 3, H, hd] -> [3, N, H, L, hd]
        let qkv = self.qkv.forward(x)?.reshape((n, l, 3, h, e / h))?.permute((2, 0, 3, 1, 4))?;
        let (q, k, v) = (qkv.get(0)?.contiguous()?, qkv.get(1)?.contiguous()?, qkv.get(2)?.contiguous()?);
        let logits = (q.matmul(&k.t()?.contiguous()?)? + rpe_bias)?;
        let out = softmax_last_dim(&logits)?.matmul(&v)?; // [N, H, L, hd]
        self.proj.forward(&out.transpose(1, 2)?.reshape((n, l, e))?)
    }
}

/// Pre-norm transformer block with a ReLU6 MLP.
pub(crate) struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn load(weights: &HashMap<String, Tensor>, index: usize, cfg: &VitKprpeConfig) -> Result<Self> {
        Self::load_prefixed(weights, &format!("blocks.{index}"), cfg)
    }

    /// The block whose tensors are named `{p}.norm1.weight`, `{p}.attn.qkv.weight`
    /// and so on (only `cfg`'s width and head count are read).
    pub(crate) fn load_prefixed(weights: &HashMap<String, Tensor>, p: &str, cfg: &VitKprpeConfig) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::load(weights, &format!("{p}.norm1"))?,
            attn: Attention::load(weights, &format!("{p}.attn"), cfg)?,
            norm2: LayerNorm::load(weights, &format!("{p}.norm2"))?,
            fc1: Linear::load(weights, &format!("{p}.mlp.fc1"), true)?,
            fc2: Linear::load(weights, &format!("{p}.mlp.fc2"), true)?,
        })
    }

    /// `x`: `[N, L, E]`; `rpe_bias`: `[N, H, L, L]`, added to the attention logits.
    pub(crate) fn forward(&self, x: &Tensor, rpe_bias: &Tensor) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.norm1.forward(x)?, rpe_bias)?)?;
        let hidden = self.fc1.forward(&self.norm2.forward(&x)?)?.clamp(0f32, 6f32)?;
        x + self.fc2.forward(&hidden)?
    }
}

/// A loaded ViT-KPRPE, ready to embed batches of aligned faces.
pub struct VitKprpe {
    cfg: VitKprpeConfig,
    /// Patch embedding as a matrix over flattened `(channel, y, x)` patches:
    /// `[3 p p] -> [E]`.
    patch_embed: Linear,
    /// `[1, L, E]`.
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    /// The `feature` head with both BatchNorms folded in:
    /// `[L E] -> [E] -> [output_dim]`.
    feature: [Linear; 2],
    /// `keypoint_linear` split per block: `[2K] -> [H * B]`, ordered (head,
    /// bucket). Upstream's single `[2K] -> [depth * H * B]` linear orders its
    /// outputs (block, head, bucket).
    keypoint_linears: Vec<Linear>,
    /// Patch centres, `[L, 2]` `(x, y)` in crop units.
    patch_centres: Tensor,
    /// `[L * L]` u32, see [`rpe_gather_indices`].
    rpe_gather: Tensor,
}

impl VitKprpe {
    /// Builds the network from a state dict without the `net.` prefix
    /// (f32 tensors, all on the device the model will run on).
    pub fn new(cfg: &VitKprpeConfig, weights: &HashMap<String, Tensor>) -> Result<Self> {
        cfg.validate()?;
        for (name, shape) in expected_shapes(cfg) {
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            let have = weight(weights, &name)?.dims();
            if have != shape.as_slice() {
                bail!("vit_kprpe: `{name}` has shape {have:?}, expected {shape:?}");
            }
        }
        let pos_embed = weight(weights, "pos_embed")?.clone();
        let device = pos_embed.device().clone();
        let proj_w = weight(weights, "patch_embed.proj.weight")?.flatten_from(1)?;
        let tokens = cfg.num_patches();
        Ok(Self {
            patch_embed: Linear::new(&proj_w, Some(weight(weights, "patch_embed.proj.bias")?))?,
            pos_embed,
            blocks: (0..cfg.depth).map(|d| Block::load(weights, d, cfg)).collect::<Result<_>>()?,
            norm: LayerNorm::load(weights, "norm")?,
            feature: [
                Linear::load_with_batch_norm(weights, "feature.0", "feature.1")?,
                Linear::load_with_batch_norm(weights, "feature.2", "feature.3")?,
            ],
            keypoint_linears: per_block_keypoint_linears(weights, cfg)?,
            patch_centres: patch_centres(cfg, &device)?,
            rpe_gather: Tensor::from_vec(rpe_gather_indices(cfg), tokens * tokens, &device)?,
            cfg: cfg.clone(),
        })
    }

    /// The configuration the model was built for.
    pub fn config(&self) -> &VitKprpeConfig {
        &self.cfg
    }

    /// Embeds a batch.
    ///
    /// * `images`: `[N, 3, img, img]` f32, RGB, normalised as `(v - 0.5) / 0.5`
    ///   for `v` in `[0, 1]`.
    /// * `keypoints`: `[N, K, 2]` f32, `(x, y)` in `[0, 1]` crop coordinates
    ///   (x along the width).
    ///
    /// Returns the raw (not L2-normalised) embedding `[N, output_dim]`.
    pub fn forward(&self, images: &Tensor, keypoints: &Tensor) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (n, c, h, w) = images.dims4()?;
        if (c, h, w) != (IN_CHANNELS, cfg.img_size, cfg.img_size) {
            bail!("vit_kprpe: images are {:?}, expected [N, 3, {}, {}]", images.dims(), cfg.img_size, cfg.img_size);
        }
        if keypoints.dims() != [n, cfg.num_keypoints, 2] {
            bail!("vit_kprpe: keypoints are {:?}, expected [{n}, {}, 2]", keypoints.dims(), cfg.num_keypoints);
        }
        let (side, p, e, l) = (cfg.grid_side(), cfg.patch_size, cfg.embed_dim, cfg.num_patches());

        // Non-overlapping patches as rows: [N, C, gy, p, gx, p] -> [N, gy, gx, C, p, p].
        let patches =
            images.reshape((n, c, side, p, side, p))?.permute((0, 2, 4, 1, 3, 5))?.reshape((n, l, c * p * p))?;
        let mut x = self.patch_embed.forward(&patches)?.broadcast_add(&self.pos_embed)?;

        let offsets = self.keypoint_offsets(keypoints)?;
        for (block, keypoint_linear) in self.blocks.iter().zip(&self.keypoint_linears) {
            x = block.forward(&x, &self.rpe_bias(keypoint_linear, &offsets)?)?;
        }

        let flat = self.norm.forward(&x)?.reshape((n, l * e))?;
        self.feature[1].forward(&self.feature[0].forward(&flat)?)
    }

    /// Offsets from every patch centre to every landmark, `[N, L, 2K]`:
    /// `(dx, dy)` per landmark, in crop units.
    fn keypoint_offsets(&self, keypoints: &Tensor) -> Result<Tensor> {
        let (n, k, _) = keypoints.dims3()?;
        let l = self.cfg.num_patches();
        // [1, L, 1, 2] - [N, 1, K, 2] -> [N, L, K, 2]
        let centres = self.patch_centres.reshape((1, l, 1, 2))?;
        centres.broadcast_sub(&keypoints.unsqueeze(1)?)?.reshape((n, l, 2 * k))
    }

    /// One block's KP-RPE logit bias `[N, H, L, L]` from the landmark offsets
    /// `[N, L, 2K]`. The block's keypoint linear gives a lookup table
    /// `[N, H, L, B]` (per sample, head and query token `i`, one value per
    /// bucket), and `bias[b, h, i, j] = table[b, h, i, bucket(i, j)]`.
    fn rpe_bias(&self, keypoint_linear: &Linear, offsets: &Tensor) -> Result<Tensor> {
        let (n, l, _) = offsets.dims3()?;
        let (h, b) = (self.cfg.num_heads, self.cfg.num_buckets());
        // [N, L, H, B] -> [N, H, L, B], flattened per (sample, head) to [L * B].
        let table = keypoint_linear.forward(offsets)?.reshape((n, l, h, b))?.transpose(1, 2)?.contiguous()?;
        table.reshape((n * h, l * b))?.index_select(&self.rpe_gather, 1)?.reshape((n, h, l, l))
    }
}

/// Splits `keypoint_linear` (`[depth * H * B, 2K]`, rows ordered (block,
/// head, bucket)) into one `[H * B, 2K]` linear per block.
fn per_block_keypoint_linears(weights: &HashMap<String, Tensor>, cfg: &VitKprpeConfig) -> Result<Vec<Linear>> {
    let w = weight(weights, "keypoint_linear.weight")?;
    let bias = weight(weights, "keypoint_linear.bias")?;
    let rows = cfg.num_heads * cfg.num_buckets();
    (0..cfg.depth).map(|d| Linear::new(&w.narrow(0, d * rows, rows)?, Some(&bias.narrow(0, d * rows, rows)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_irpe_product_method() {
        let cfg = VitKprpeConfig::tiny();
        assert_eq!(cfg.num_buckets(), 49);
        // Exact up to |offset| 1.9, then log-compressed and saturating at 3.
        let idx: Vec<i64> = (-13..=13).map(|x| piecewise_index(x, 1.9, 3.8, 15.2)).collect();
        let expected = [-3, -3, -3, -3, -3, -3, -3, -3, -3, -3, -2, -2, -1, 0, 1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3];
        assert_eq!(idx, expected);
        // The diagonal (zero offset) is the centre bucket 3 * 7 + 3.
        let gather = rpe_gather_indices(&cfg);
        let l = cfg.num_patches();
        assert!((0..l).all(|i| gather[i * l + i] as usize == i * 49 + 24));
    }
}
