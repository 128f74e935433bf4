//! SapiensID (Kim et al., CVPR 2025), the whole-body person recogniser of
//! `mk-minchul/sapiensid` (`tasks/sapiensID/src/models/sapiens_id`,
//! `configs/base.yaml`), in candle: its inference (eval-mode) path.
//!
//! Input: a square-padded body crop resized to 384x384, RGB normalised as
//! `(v - 0.5) / 0.5`, and 22 keypoints in `[0, 1]` crop coordinates,
//! `(x, y)`: the 17 COCO body points (YOLOv8-pose order) then the 5 face
//! points (left eye, right eye, nose, left mouth corner, right mouth
//! corner); `(-1, -1)` marks a missing point. Output: the raw (not
//! L2-normalised) embedding, `output_dim` wide.
//!
//! Upstream's test transform, which the caller must reproduce: the crop
//! (RGB in `[0, 1]`) is padded to a square with white (`SquarePad(fill=1)`,
//! the odd pixel going right/bottom), resized to 384x384 by torchvision's
//! bilinear `Resize` without antialiasing, then normalised; the keypoints are
//! expressed in that padded square.
//!
//! # The network, sample by sample
//!
//! 1. **Keypoints (`kp19`).** The 22 points become 19: face nose, face
//!    eyes, face mouth corners, the two ears, then the twelve COCO points
//!    from the shoulders down. From these, two boxes: the *face* box (the
//!    first five points, at least two present: centred between their
//!    extent's centre and the nose, side twice the farthest point's
//!    distance, padded by 30%) and the *body* box (the first nine points, at
//!    least three present and one shoulder: their extent's centre and
//!    longer side, padded by 30%). A box that fails its condition is
//!    `(-1, -1, -1, -1)`.
//! 2. **Retina patches.** The body box is snapped outwards to the 12x12
//!    grid of 32-pixel patches; the face box is mapped into the body box,
//!    snapped to that box's own 12x12 grid and mapped back. Three 384x384
//!    views are resampled bilinearly (`grid_sample`, zero padding, corners
//!    not aligned): the whole image, the body box and the face box. An
//!    importance map over the image's pixels holds 2 inside the face box,
//!    1 inside the body box, 0 elsewhere; each view samples it (nearest)
//!    and a view's patch is *foreground* when more than half its pixels
//!    carry the view's own level. In eval with no foreground mask, every
//!    such patch is kept (`masked_sampling` keeps `max(#foreground)` tokens
//!    sorted by background-ness plus a random tie-break: for one sample,
//!    exactly its foreground patches). The `face_first_0.3` subset method
//!    and `mask_ratio` act only in training. Kept patches are flattened as
//!    `(channel, y, x)` and embedded by `patch_embed.patch_embed`
//!    (`Linear(3 * 32 * 32 -> E)`).
//! 3. **Positions.** `backbone.pos_embed` (a fixed 2-D sin-cos table on the
//!    12x12 grid after a class-token slot; read from the checkpoint, not
//!    recomputed) is resampled per view: unchanged for the whole image,
//!    `grid_sample`d over the body or face box for the others. Each token
//!    gets its view's position embedding; the tokens are
//!    `[cls + pos_cls, patches + positions, mask_token]`, the last one the
//!    "hallucination" token whose attention logits (as a key) get
//!    `log(max(432 - kept, 1))`, the number of patches it stands for.
//! 4. **KP-RPE** (`rel_keypoint_splithead_unshared_nonlinear`, 19 points).
//!    Each keypoint's embedding is the position table sampled at the point
//!    (bilinear, corners aligned). For every token and keypoint, the token's
//!    position embedding minus the keypoint's (`-2` for a missing keypoint
//!    and for the class and mask tokens) goes through
//!    `linear1` (`E -> 32`), is flattened over the 19 points, then
//!    `fc.0` (`608 -> 512`), ReLU, `fc.2` (`512 -> depth * H * 50`): per
//!    block, head and query token a table of 50 values (iRPE's 49 product
//!    buckets, ratio 1.9, plus one for the extra tokens). The logit of
//!    `(query i, key j)` gets the value at `bucket(i, j)`: the patches'
//!    12x12 grid coordinates are mapped onto a 14x14 grid (`round(v * 13 /
//!    11)`) and bucketed by iRPE's piecewise product method, with the row
//!    part taken from the *column* offset and the column part from the row
//!    offset (upstream samples its 14x14 bucket table with `(row, col)` as
//!    `grid_sample`'s `(x, y)`); pairs involving the class or mask token use
//!    bucket 49. A patch's bucket depends only on its grid cell, not on its
//!    view.
//! 5. **Backbone.** `depth` pre-norm blocks identical to CVLface's ViT
//!    ([`crate::vit_kprpe`]: qkv without bias, ReLU6 MLP of width `3E`,
//!    LayerNorm eps 1e-5), then `backbone.norm`. The mask token is dropped,
//!    then the class token.
//! 6. **Semantic attention head.** 76 queries (each keypoint embedding four
//!    times, plus `query_pos_emb`) attend over the tokens with one
//!    differential-attention head (`q`, `k` split in two halves of `E / 2`;
//!    keys are the tokens' position embeddings, values the tokens; weights
//!    `softmax_1 - lambda * softmax_2`, `lambda = exp(q1 . k1) - exp(q2 .
//!    k2) + 0.8 - 0.6 exp(-0.3)`; RMSNorm (eps 1e-5) times `1 - lambda_init`;
//!    `out_proj`). A second set of 76 features takes, for each query, the
//!    token whose position embedding is the most cosine-similar to the
//!    query. Both sets are zeroed for missing keypoints, scaled by
//!    `sigmoid(learned_mask)`, flattened (`152 E`) and go through `Linear ->
//!    BatchNorm1d -> Linear -> BatchNorm1d` (no bias, eps 2e-5).
//!
//! # Deviations and their risks
//!
//! * **One sample at a time.** Upstream batches samples by keeping the
//!   largest foreground count of the batch for every sample and turning the
//!   extra background tokens into mask tokens, so a sample's embedding
//!   depends on its batch-mates. This port computes every sample as if it
//!   were alone (as the reference fixtures were made), then batches only the
//!   final `flatten_feature` layers.
//! * **Box arithmetic** is done on the host in f32 in upstream's order of
//!   operations; floor/ceil snapping and nearest sampling of the importance
//!   map can still flip on a one-ulp difference (e.g. torch's vectorised
//!   `linspace` or `norm`), which moves a pixel row across a patch boundary
//!   (the foreground test averages 1024 pixels, so it flips a token only
//!   near a 50% patch).
//! * **Most-similar token** is an argmax over cosine similarities; two
//!   tokens with near-equal similarity may be ordered differently than in
//!   torch (first maximum here). Exact ties between identical position
//!   embeddings select identical features either way.
//! * Bilinear `grid_sample` is computed separably (rows, then columns) and
//!   the position resampling as matrix products: exact up to float rounding.
//!   The BatchNorms of the head are applied after each linear rather than
//!   folded into the (base: 1.3 GB) weight, to avoid copying it.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor};
use osprey_core::{Error, ErrorKind, Result};

use crate::checkpoint::{Checkpoint, Manifest, ShapeReader};
use crate::vit_kprpe::{Block, LayerNorm, Linear, VitKprpeConfig, piecewise_index, softmax_last_dim};

/// Side of the (square) input image, pixels.
pub const INPUT_SIZE: usize = 384;
/// Side of a patch, pixels (`dynamic_patch_base_size`).
pub const PATCH_SIZE: usize = 32;
/// Patches per side of every view.
const GRID: usize = INPUT_SIZE / PATCH_SIZE;
/// Patches per view.
const PATCHES: usize = GRID * GRID;
/// Views (whole image, body box, face box).
const LEVELS: usize = 3;
/// Keypoints the caller gives (17 COCO + 5 face).
pub const INPUT_KEYPOINTS: usize = 22;
/// Keypoints the model uses (`kp19`).
pub const NUM_KEYPOINTS: usize = 19;
/// Which input point each of the 19 is: face nose, face eyes, face mouth
/// corners, ears, then COCO shoulders to ankles.
const KP19_FROM_22: [usize; NUM_KEYPOINTS] = [19, 17, 18, 20, 21, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
/// Head queries per keypoint (`n_multiply_per_query`).
const QUERIES_PER_KEYPOINT: usize = 4;
/// Head queries.
const QUERIES: usize = NUM_KEYPOINTS * QUERIES_PER_KEYPOINT;
/// Features entering `flatten_feature`: pooled and selected, per query.
const PARTS: usize = 2 * QUERIES;
/// `NonlinearMappingNetwork`: per-keypoint width and hidden width.
const KP_CHANNELS: usize = 32;
const KP_HIDDEN: usize = 512;
/// iRPE ratio: `alpha = 1.9`, `beta = 3.8`, `gamma = 15.2`.
const RPE_RATIO: f64 = 1.9;
/// Largest bucketed offset per axis, `floor(beta)`.
const RPE_MAX_OFFSET: i64 = 3;
/// Product buckets, `(2 * 3 + 1)^2`, then one for the class/mask tokens.
const SPATIAL_BUCKETS: usize = 49;
const BUCKETS: usize = SPATIAL_BUCKETS + 1;
/// Side of the bucket table's grid (upstream's `max_height`).
const BUCKET_GRID: usize = 14;
/// Value standing for "no relative keypoint" (`INVALID_KPRPE_EMB_VALUE`).
const INVALID_REL: f64 = -2.0;
/// Padding of both boxes (`padding=0.3`).
const BOX_PADDING: f32 = 0.3;
/// Backbone MLP ratio.
const MLP_RATIO: f64 = 3.0;
/// BatchNorm epsilon of `flatten_feature`.
const BN_EPS: f64 = 2e-5;
/// RMSNorm epsilon of the differential attention.
const RMS_EPS: f64 = 1e-5;

/// Names that locate a SapiensID checkpoint's wrapper prefix.
const PROBE: [&str; 5] =
    ["mask_token", "backbone.pos_embed", "backbone.cls_token", "head.query_pos_emb", "patch_embed.patch_embed.weight"];

/// Hyper-parameters of a SapiensID configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SapiensIdConfig {
    /// Token width `E`.
    pub emb_dim: usize,
    /// Embedding width.
    pub output_dim: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Attention heads per block.
    pub num_heads: usize,
}

impl SapiensIdConfig {
    /// The published model (`face_vit_base`, 411M parameters).
    pub fn base() -> Self {
        Self { emb_dim: 512, output_dim: 4096, depth: 24, num_heads: 16 }
    }

    /// The random-weight parity fixture.
    pub fn tiny() -> Self {
        Self { emb_dim: 64, output_dim: 256, depth: 2, num_heads: 4 }
    }

    /// The configuration of a SapiensID checkpoint, read off its tensors'
    /// shapes (see [`SapiensIdConfig::from_shapes`]), whatever wrapper prefix
    /// (`net.`, `model.`, `module.`) the names carry.
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<SapiensIdConfig> {
        checkpoint.read_config(&PROBE, Self::from_shapes)
    }

    /// The configuration whose [`manifest`] has the shapes `shapes` gives by
    /// name (without a wrapper prefix): `emb_dim` from `mask_token` `[1, E]`,
    /// `depth` by counting `backbone.blocks.{d}`, `output_dim` from
    /// `head.flatten_feature.0.weight` `[output_dim, 152 E]`, and
    /// `num_heads` from KP-RPE's `rpe_module.keypoint_linear.fc.2.weight`,
    /// whose `depth * heads * 50` rows hold one bucket table per block and
    /// head. A missing tensor or a shape that no configuration has is a
    /// [`ErrorKind::Corrupt`] error naming the tensor.
    pub fn from_shapes(shapes: &dyn Fn(&str) -> Option<Vec<usize>>) -> Result<SapiensIdConfig> {
        let r = ShapeReader { model: "SapiensID", lookup: shapes };
        let emb_dim = r.dim("mask_token", 2, 1)?;
        let block = |d: usize| format!("backbone.blocks.{d}.attn.qkv.weight");
        let depth = r.count(block);
        if depth == 0 {
            r.shape(&block(0), 2)?;
        }
        let output_dim = r.dim("head.flatten_feature.0.weight", 2, 0)?;
        let rpe = "rpe_module.keypoint_linear.fc.2.weight";
        let num_heads = r.exact_div(r.dim(rpe, 2, 0)?, depth * BUCKETS, "the attention heads", rpe)?;
        let cfg = SapiensIdConfig { emb_dim, output_dim, depth, num_heads };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let ok = self.emb_dim > 0
            && self.emb_dim.is_multiple_of(4)
            && self.num_heads > 0
            && self.emb_dim.is_multiple_of(self.num_heads)
            && self.depth > 0
            && self.output_dim > 0;
        if !ok {
            return Err(Error::invalid(format!("sapiensid: unusable configuration {self:?}")));
        }
        Ok(())
    }

    fn mlp_hidden(&self) -> usize {
        (self.emb_dim as f64 * MLP_RATIO) as usize
    }

    fn vit(&self) -> VitKprpeConfig {
        VitKprpeConfig {
            embed_dim: self.emb_dim,
            depth: self.depth,
            num_heads: self.num_heads,
            mlp_ratio: MLP_RATIO,
            ..VitKprpeConfig::base()
        }
    }
}

/// Every parameter and buffer of the network, as upstream's state dict
/// names them without the checkpoint's `net.` prefix, in state-dict order.
/// BatchNorm `num_batches_tracked` counters are listed (shape `[]`) but
/// unused.
pub fn manifest(cfg: &SapiensIdConfig) -> Manifest {
    let e = cfg.emb_dim;
    let hidden = cfg.mlp_hidden();
    let mut m: Manifest = vec![
        ("mask_token".into(), vec![1, e]),
        ("backbone.pos_embed".into(), vec![1, PATCHES + 1, e]),
        ("backbone.cls_token".into(), vec![1, 1, e]),
    ];
    for d in 0..cfg.depth {
        let b = format!("backbone.blocks.{d}");
        crate::vit_kprpe::block_entries(&mut m, &b, e, hidden);
    }
    let rpe_out = cfg.depth * cfg.num_heads * BUCKETS;
    let kp = "rpe_module.keypoint_linear";
    m.extend([
        ("backbone.norm.weight".into(), vec![e]),
        ("backbone.norm.bias".into(), vec![e]),
        ("patch_embed.patch_embed.weight".into(), vec![e, 3 * PATCH_SIZE * PATCH_SIZE]),
        ("patch_embed.patch_embed.bias".into(), vec![e]),
        (format!("{kp}.linear1.weight"), vec![KP_CHANNELS, e]),
        (format!("{kp}.linear1.bias"), vec![KP_CHANNELS]),
        (format!("{kp}.fc.0.weight"), vec![KP_HIDDEN, NUM_KEYPOINTS * KP_CHANNELS]),
        (format!("{kp}.fc.0.bias"), vec![KP_HIDDEN]),
        (format!("{kp}.fc.2.weight"), vec![rpe_out, KP_HIDDEN]),
        (format!("{kp}.fc.2.bias"), vec![rpe_out]),
        ("head.query_pos_emb".into(), vec![1, QUERIES, e]),
        ("head.learned_mask".into(), vec![1, PARTS]),
    ]);
    for l in ["lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"] {
        m.push((format!("head.attn.{l}"), vec![e / 2]));
    }
    for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
        m.push((format!("head.attn.{p}.weight"), vec![e, e]));
    }
    for (linear, bn, fan_in) in [(0, 1, PARTS * e), (2, 3, cfg.output_dim)] {
        m.push((format!("head.flatten_feature.{linear}.weight"), vec![cfg.output_dim, fan_in]));
        for buf in ["weight", "bias", "running_mean", "running_var"] {
            m.push((format!("head.flatten_feature.{bn}.{buf}"), vec![cfg.output_dim]));
        }
        m.push((format!("head.flatten_feature.{bn}.num_batches_tracked"), vec![]));
    }
    m
}

fn cerr(e: candle_core::Error) -> Error {
    Error::internal(format!("sapiensid: tensor computation failed: {e}"))
}

// ---------------------------------------------------------------------------
// Keypoints and boxes (host, f32, in upstream's order of operations).

/// A box `[x1, y1, x2, y2]` in normalised image coordinates.
type BBox = [f32; 4];
type Point = [f32; 2];

const NO_BOX: BBox = [-1.0; 4];

fn present(p: &Point) -> bool {
    p[0] != -1.0 && p[1] != -1.0
}

/// Extent of the present points: `(min, max, count)`.
fn extent(points: &[Point]) -> (Point, Point, usize) {
    let mut lo = [f32::INFINITY; 2];
    let mut hi = [f32::NEG_INFINITY; 2];
    let mut n = 0;
    for p in points.iter().filter(|p| present(p)) {
        n += 1;
        for a in 0..2 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a]);
        }
    }
    (lo, hi, n)
}

/// `[centre - half, centre + half]`, clamped below at 0 and above at 1.
fn square_box(centre: Point, half: f32) -> BBox {
    [(centre[0] - half).max(0.0), (centre[1] - half).max(0.0), (centre[0] + half).min(1.0), (centre[1] + half).min(1.0)]
}

/// `create_square_head_bbox_from_keypoints_batched(face5, padding=0.3,
/// min_points=2)`; `face5[0]` is the nose.
fn face_box(face5: &[Point]) -> BBox {
    let (lo, hi, n) = extent(face5);
    if n < 2 {
        return NO_BOX;
    }
    let mut centre = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
    if present(&face5[0]) {
        centre = [(centre[0] + face5[0][0]) / 2.0, (centre[1] + face5[0][1]) / 2.0];
    }
    let far = face5
        .iter()
        .filter(|p| present(p))
        .map(|p| {
            let (dx, dy) = (p[0] - centre[0], p[1] - centre[1]);
            (dx * dx + dy * dy).sqrt()
        })
        .fold(-1.0f32, f32::max);
    let size = far * 2.0;
    square_box(centre, size * (1.0 + BOX_PADDING) / 2.0)
}

/// `create_square_bbox_from_keypoints_batched(upper9, padding=0.3,
/// min_points=3, aux_condition=[7, 8])` (7, 8: the shoulders).
fn body_box(upper9: &[Point]) -> BBox {
    let (lo, hi, n) = extent(upper9);
    if n < 3 || !(present(&upper9[7]) || present(&upper9[8])) {
        return NO_BOX;
    }
    let centre = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
    let size = (hi[0] - lo[0]).max(hi[1] - lo[1]);
    square_box(centre, size * (1.0 + BOX_PADDING) / 2.0)
}

/// `snap_bbox_to_patch`: outwards to the `GRID` lattice, clamped to `[0, 1]`.
fn snap(b: BBox) -> BBox {
    let n = GRID as f32;
    let s = [(b[0] * n).floor(), (b[1] * n).floor(), (b[2] * n).ceil(), (b[3] * n).ceil()];
    s.map(|v| (v / n).clamp(0.0, 1.0))
}

/// Width and height of the body box, 1 where zero (upstream's guard).
fn body_span(body: &BBox) -> (f32, f32) {
    let guard = |v: f32| if v == 0.0 { 1.0 } else { v };
    (guard(body[2] - body[0]), guard(body[3] - body[1]))
}

/// `warp_bbox_space_from_orig_to_body`.
fn into_body(face: BBox, body: &BBox) -> BBox {
    let (w, h) = body_span(body);
    [(face[0] - body[0]) / w, (face[1] - body[1]) / h, (face[2] - body[0]) / w, (face[3] - body[1]) / h]
        .map(|v| v.clamp(0.0, 1.0))
}

/// `warp_bbox_space_from_body_to_original`.
fn out_of_body(face: BBox, body: &BBox) -> BBox {
    let (w, h) = body_span(body);
    [face[0] * w + body[0], face[1] * h + body[1], face[2] * w + body[0], face[3] * h + body[1]]
        .map(|v| v.clamp(0.0, 1.0))
}

/// The 19 keypoints and the view boxes `[whole, body, face]` of one sample.
fn preprocess(kp22: &[Point]) -> ([Point; NUM_KEYPOINTS], [BBox; LEVELS]) {
    let kp19 = KP19_FROM_22.map(|i| kp22[i]);
    let face = face_box(&kp19[..5]);
    let body = snap(body_box(&kp19[..9]));
    let face = out_of_body(snap(into_body(face, &body)), &body);
    (kp19, [[0.0, 0.0, 1.0, 1.0], body, face])
}

// ---------------------------------------------------------------------------
// Sampling grids (`create_sampling_grid` + `grid_sample`), one axis at a time.

/// `torch.linspace(-1, 1, steps)` in f32 (scalar formula: from the start
/// for the first half, from the end for the second).
fn linspace_pm1(steps: usize) -> Vec<f32> {
    let step = 2.0f32 / (steps - 1) as f32;
    (0..steps)
        .map(|i| if i < steps / 2 { -1.0 + step * i as f32 } else { 1.0 - step * (steps - 1 - i) as f32 })
        .collect()
}

/// Normalised grid coordinates (`[-1, 1]` spans the image) sampling
/// `[lo, hi]` (normalised to `[0, 1]`) at `steps` points, as upstream's
/// `create_sampling_grid` computes them.
fn grid_axis(lo: f32, hi: f32, steps: usize) -> Vec<f32> {
    let (centre, width) = ((lo + hi) / 2.0, hi - lo);
    linspace_pm1(steps).into_iter().map(|t| (t * width / 2.0 + centre) * 2.0 - 1.0).collect()
}

/// Pixel coordinate of a normalised grid coordinate, corners not aligned
/// (torch's CPU kernel: `(g + 1) * (size / 2) - 0.5`).
fn unnormalise(g: f32, size: usize) -> f32 {
    (g + 1.0) * (size as f32 / 2.0) - 0.5
}

/// Pixel coordinate with corners aligned: `(g + 1) * ((size - 1) / 2)`.
fn unnormalise_aligned(g: f32, size: usize) -> f32 {
    (g + 1.0) * ((size - 1) as f32 / 2.0)
}

/// The two bilinear taps of a pixel coordinate: `(index, weight)` pairs,
/// weight 0 (index clamped) for taps outside `[0, size)` (zero padding).
fn bilinear_taps(x: f32, size: usize) -> [(usize, f32); 2] {
    let x0 = x.floor();
    let w1 = x - x0;
    let w0 = 1.0 - w1;
    let tap = |i: f32, w: f32| if i >= 0.0 && i < size as f32 { (i as usize, w) } else { (0, 0.0) };
    [tap(x0, w0), tap(x0 + 1.0, w1)]
}

/// Nearest pixel of a coordinate (round half to even), `None` outside.
fn nearest(x: f32, size: usize) -> Option<usize> {
    let i = x.round_ties_even();
    (i >= 0.0 && i < size as f32).then_some(i as usize)
}

/// Dense bilinear resampling matrix `[out_h * out_w, in_h * in_w]` for a
/// separable grid given by its row and column pixel coordinates.
fn bilinear_matrix(rows: &[f32], cols: &[f32], in_h: usize, in_w: usize) -> Vec<f32> {
    let mut m = vec![0f32; rows.len() * cols.len() * in_h * in_w];
    for (r, &y) in rows.iter().enumerate() {
        for (c, &x) in cols.iter().enumerate() {
            let row = &mut m[(r * cols.len() + c) * in_h * in_w..][..in_h * in_w];
            for (iy, wy) in bilinear_taps(y, in_h) {
                for (ix, wx) in bilinear_taps(x, in_w) {
                    row[iy * in_w + ix] += wy * wx;
                }
            }
        }
    }
    m
}

/// Per output row (or column) of a 384-pixel view: the two taps' indices
/// and weights, ready for `index_select`.
struct AxisTaps {
    index: [Vec<u32>; 2],
    weight: [Vec<f32>; 2],
}

impl AxisTaps {
    fn new(coords: &[f32], size: usize) -> Self {
        let mut t = AxisTaps { index: [vec![], vec![]], weight: [vec![], vec![]] };
        for &x in coords {
            for (k, (i, w)) in bilinear_taps(x, size).into_iter().enumerate() {
                t.index[k].push(i as u32);
                t.weight[k].push(w);
            }
        }
        t
    }
}

/// One view's sampling: bilinear taps for the image and, per patch,
/// whether it is foreground at this view's level.
struct View {
    rows: AxisTaps,
    cols: AxisTaps,
    foreground: Vec<bool>,
}

/// Importance of pixel `(py, px)`: the highest level whose box covers it
/// (`make_importance_map` with unit patches).
fn importance(boxes: &[BBox; LEVELS], py: usize, px: usize) -> u8 {
    let size = INPUT_SIZE as f32;
    let mut level = 0;
    for (l, b) in boxes.iter().enumerate().skip(1) {
        let covers = |p: usize, lo: f32, hi: f32| (p + 1) as f32 > lo * size && (p as f32) < hi * size;
        if covers(px, b[0], b[2]) && covers(py, b[1], b[3]) {
            level = level.max(l as u8);
        }
    }
    level
}

/// The three views of one sample (`make_dynamic_patch_v2`).
fn views(boxes: &[BBox; LEVELS]) -> Vec<View> {
    // Importance of every pixel, row-major.
    let map: Vec<u8> =
        (0..INPUT_SIZE * INPUT_SIZE).map(|p| importance(boxes, p / INPUT_SIZE, p % INPUT_SIZE)).collect();
    (0..LEVELS)
        .map(|level| {
            let b = &boxes[level];
            let ys: Vec<f32> =
                grid_axis(b[1], b[3], INPUT_SIZE).into_iter().map(|g| unnormalise(g, INPUT_SIZE)).collect();
            let xs: Vec<f32> =
                grid_axis(b[0], b[2], INPUT_SIZE).into_iter().map(|g| unnormalise(g, INPUT_SIZE)).collect();
            let ny: Vec<Option<usize>> = ys.iter().map(|&y| nearest(y, INPUT_SIZE)).collect();
            let nx: Vec<Option<usize>> = xs.iter().map(|&x| nearest(x, INPUT_SIZE)).collect();
            // Count, per patch, the sampled pixels at this level (outside the
            // image the sampled importance is 0).
            let mut count = vec![0usize; PATCHES];
            for (r, y) in ny.iter().enumerate() {
                for (c, x) in nx.iter().enumerate() {
                    let v = match (y, x) {
                        (Some(y), Some(x)) => map[y * INPUT_SIZE + x],
                        _ => 0,
                    };
                    if v as usize == level {
                        count[(r / PATCH_SIZE) * GRID + c / PATCH_SIZE] += 1;
                    }
                }
            }
            // Mean over the patch's pixels > 0.5 (every patch is foreground
            // in the absence of a foreground mask).
            let foreground = count.iter().map(|&n| 2 * n > PATCH_SIZE * PATCH_SIZE).collect();
            View { rows: AxisTaps::new(&ys, INPUT_SIZE), cols: AxisTaps::new(&xs, INPUT_SIZE), foreground }
        })
        .collect()
}

/// Position-embedding resampling matrix `[144, 144]` of a view's box
/// (`make_dynamic_pos_embed`: `grid_sample` over the 12x12 table), `None`
/// for the whole image (`interpolate` to the same size: the identity).
fn position_matrix(b: &BBox, whole: bool) -> Option<Vec<f32>> {
    if whole {
        return None;
    }
    let ys: Vec<f32> = grid_axis(b[1], b[3], GRID).into_iter().map(|g| unnormalise(g, GRID)).collect();
    let xs: Vec<f32> = grid_axis(b[0], b[2], GRID).into_iter().map(|g| unnormalise(g, GRID)).collect();
    Some(bilinear_matrix(&ys, &xs, GRID, GRID))
}

/// Keypoint sampling matrix `[19, 144]`: bilinear with aligned corners at
/// each keypoint (`F.grid_sample(square_pos_embed, 2 kp - 1,
/// align_corners=True)`); a missing point falls outside: a zero row.
fn keypoint_matrix(kp19: &[Point; NUM_KEYPOINTS]) -> Vec<f32> {
    let mut m = Vec::with_capacity(NUM_KEYPOINTS * PATCHES);
    for p in kp19 {
        let x = unnormalise_aligned(p[0] * 2.0 - 1.0, GRID);
        let y = unnormalise_aligned(p[1] * 2.0 - 1.0, GRID);
        m.extend(bilinear_matrix(&[y], &[x], GRID, GRID));
    }
    m
}

/// Cell of a 12x12 grid coordinate on the 14x14 bucket grid
/// (`subset_buckets_with_ids_keep`: `v / 11` sampled nearest with aligned
/// corners).
fn bucket_cell(v: usize) -> i64 {
    let g = (v as f32 / (GRID - 1) as f32) * 2.0 - 1.0;
    unnormalise_aligned(g, BUCKET_GRID).round_ties_even() as i64
}

/// Flat gather indices `[L * L]` (`i * 50 + bucket(i, j)`) for the tokens
/// `[cls, kept patches (grid cells), mask]`.
fn rpe_gather(cells: &[(usize, usize)]) -> Vec<u32> {
    let (alpha, beta, gamma) = (RPE_RATIO, 2.0 * RPE_RATIO, 8.0 * RPE_RATIO);
    let axis = |d: i64| piecewise_index(d, alpha, beta, gamma) + RPE_MAX_OFFSET;
    let mapped: Vec<(i64, i64)> = cells.iter().map(|&(r, c)| (bucket_cell(r), bucket_cell(c))).collect();
    let l = cells.len() + 2;
    let mut out = Vec::with_capacity(l * l);
    for i in 0..l {
        for j in 0..l {
            let bucket = if i == 0 || j == 0 || i == l - 1 || j == l - 1 {
                SPATIAL_BUCKETS as i64
            } else {
                let ((ri, ci), (rj, cj)) = (mapped[i - 1], mapped[j - 1]);
                // Upstream's table is sampled with (row, col) as (x, y): the
                // bucket's row part comes from the column offset.
                axis(ci - cj) * (2 * RPE_MAX_OFFSET + 1) + axis(ri - rj)
            };
            out.push((i * BUCKETS) as u32 + bucket as u32);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The network.

/// A bias-free linear followed by an eval-mode BatchNorm1d, applied as
/// `(x W^T) * s + t` without copying `W`.
struct LinearBatchNorm {
    /// `[out, in]` as stored.
    weight: Tensor,
    scale: Tensor,
    shift: Tensor,
}

impl LinearBatchNorm {
    fn load(w: &Weights, linear: &str, bn: &str) -> Result<Self> {
        let get = |f: &str| w.get(&format!("{bn}.{f}"));
        let (gamma, beta, mean, var) = (get("weight")?, get("bias")?, get("running_mean")?, get("running_var")?);
        let scale = (|| gamma.div(&(var + BN_EPS)?.sqrt()?))().map_err(cerr)?;
        let shift = beta.sub(&mean.mul(&scale).map_err(cerr)?).map_err(cerr)?;
        Ok(Self { weight: w.get(&format!("{linear}.weight"))?.clone(), scale, shift })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight.t()?)?.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)
    }
}

/// Bound weights, looked up by manifest name.
struct Weights<'a>(&'a HashMap<String, Tensor>);

impl Weights<'_> {
    fn get(&self, name: &str) -> Result<&Tensor> {
        self.0.get(name).ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("sapiensid: missing tensor `{name}`")))
    }

    fn host(&self, name: &str) -> Result<Vec<f32>> {
        self.get(name)?.flatten_all().and_then(|t| t.to_device(&Device::Cpu)).and_then(|t| t.to_vec1()).map_err(cerr)
    }
}

/// The semantic attention head up to the flattened features.
struct Head {
    /// `[76, E]`.
    query_pos: Tensor,
    /// `q_proj`, with the `(E / 2)^-1/2` scale folded in; `k_proj`, `v_proj`,
    /// `out_proj` (all bias-free).
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    /// `exp(q1 . k1) - exp(q2 . k2) + lambda_init`.
    lambda: f32,
    /// `1 - lambda_init`.
    out_scale: f64,
    /// `sigmoid(learned_mask)`, `[152, 1]`.
    part_scale: Tensor,
}

impl Head {
    fn load(w: &Weights, cfg: &SapiensIdConfig) -> Result<Self> {
        let e = cfg.emb_dim;
        let half = e / 2;
        let lambda_init = 0.8 - 0.6 * (-0.3f64 * 1.0).exp(); // depth 1
        let dot_exp = |a: &str, b: &str| -> Result<f32> {
            let (a, b) = (w.host(&format!("head.attn.{a}"))?, w.host(&format!("head.attn.{b}"))?);
            Ok(a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>().exp())
        };
        let lambda = dot_exp("lambda_q1", "lambda_k1")? - dot_exp("lambda_q2", "lambda_k2")? + lambda_init as f32;
        let linear = |name: &str| Linear::load(w.0, &format!("head.attn.{name}"), false).map_err(cerr);
        let q_w = (w.get("head.attn.q_proj.weight")? * (half as f64).powf(-0.5)).map_err(cerr)?;
        let mask = w.host("head.learned_mask")?;
        let device = w.get("head.learned_mask")?.device().clone();
        let sig: Vec<f32> = mask.iter().map(|&m| 1.0 / (1.0 + (-m).exp())).collect();
        Ok(Self {
            query_pos: w.get("head.query_pos_emb")?.reshape((QUERIES, e)).map_err(cerr)?,
            q: Linear::new(&q_w, None).map_err(cerr)?,
            k: linear("k_proj")?,
            v: linear("v_proj")?,
            out: linear("out_proj")?,
            lambda,
            out_scale: 1.0 - lambda_init,
            part_scale: Tensor::from_vec(sig, (PARTS, 1), &device).map_err(cerr)?,
        })
    }

    /// The 152 scaled part features `[152, E]` of one sample from its tokens
    /// `x` `[n, E]`, their position embeddings `pos` `[n, E]`, the keypoint
    /// embeddings `[19, E]` and which keypoints are present.
    fn features(&self, x: &Tensor, pos: &Tensor, kp_embs: &Tensor, present: &[bool]) -> Result<Tensor> {
        let (n, e) = x.dims2().map_err(cerr)?;
        let half = e / 2;
        let device = x.device();
        let keep: Vec<f32> = present.iter().flat_map(|&p| [if p { 1f32 } else { 0.0 }; QUERIES_PER_KEYPOINT]).collect();
        let keep = Tensor::from_vec(keep, (QUERIES, 1), device).map_err(cerr)?;
        let (pooled, queries) = (|| -> candle_core::Result<(Tensor, Tensor)> {
            let queries = kp_embs
                .unsqueeze(1)?
                .broadcast_as((NUM_KEYPOINTS, QUERIES_PER_KEYPOINT, e))?
                .reshape((QUERIES, e))?
                .add(&self.query_pos)?;
            // [76, E] -> [2, 76, E/2]; keys [2, n, E/2]; values [n, E].
            let q = self.q.forward(&queries)?.reshape((QUERIES, 2, half))?.transpose(0, 1)?.contiguous()?;
            let k = self.k.forward(pos)?.reshape((n, 2, half))?.transpose(0, 1)?.contiguous()?;
            let v = self.v.forward(x)?;
            let attn = softmax_last_dim(&q.matmul(&k.t()?.contiguous()?)?)?; // [2, 76, n]
            let weights = (attn.get(0)? - (attn.get(1)? * self.lambda as f64)?)?;
            let pooled = weights.matmul(&v)?; // [76, E]
            let rms = (pooled.sqr()?.mean_keepdim(D::Minus1)? + RMS_EPS)?.sqrt()?;
            let pooled = (pooled.broadcast_div(&rms)? * self.out_scale)?;
            Ok((self.out.forward(&pooled)?.broadcast_mul(&keep)?, queries))
        })()
        .map_err(cerr)?;
        // The token whose position embedding is the most cosine-similar to
        // each query (torch: `topk(1)` over tokens).
        let unit = |t: &Tensor| -> candle_core::Result<Tensor> {
            t.broadcast_div(&t.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?)
        };
        let sim: Vec<Vec<f32>> =
            (|| unit(&queries)?.matmul(&unit(pos)?.t()?)?.to_device(&Device::Cpu)?.to_vec2())().map_err(cerr)?;
        let best: Vec<u32> = sim
            .iter()
            .map(|row| {
                let mut arg = 0;
                for (j, &s) in row.iter().enumerate() {
                    if s > row[arg] {
                        arg = j;
                    }
                }
                arg as u32
            })
            .collect();
        (|| {
            let idx = Tensor::from_vec(best, QUERIES, device)?;
            let selected = x.index_select(&idx, 0)?.broadcast_mul(&keep)?;
            Tensor::cat(&[&pooled, &selected], 0)?.broadcast_mul(&self.part_scale)
        })()
        .map_err(cerr)
    }
}

/// KP-RPE's `NonlinearMappingNetwork`.
struct KeypointMlp {
    linear1: Linear,
    fc0: Linear,
    fc2: Linear,
}

impl KeypointMlp {
    /// `rel` `[L, 19, E]` -> `[L, depth * H * 50]`.
    fn forward(&self, rel: &Tensor) -> candle_core::Result<Tensor> {
        let l = rel.dim(0)?;
        let h = self.linear1.forward(rel)?.reshape((l, NUM_KEYPOINTS * KP_CHANNELS))?;
        self.fc2.forward(&self.fc0.forward(&h)?.relu()?)
    }
}

/// A loaded SapiensID, ready to embed batches of body crops.
pub struct SapiensId {
    cfg: SapiensIdConfig,
    device: Device,
    /// `[3 * 32 * 32] -> [E]`.
    patch_embed: Linear,
    /// The 12x12 position table `[144, E]` and the class slot `[1, E]`.
    pos_grid: Tensor,
    /// `cls_token + pos_embed[0]`, `[1, E]`.
    cls: Tensor,
    /// `[1, E]`.
    mask_token: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    keypoint_mlp: KeypointMlp,
    head: Head,
    flatten: [LinearBatchNorm; 2],
}

impl SapiensId {
    /// Builds the network from weights bound against [`manifest`] (names
    /// without the `net.` prefix; f32), moving them to `device`.
    pub fn new(cfg: &SapiensIdConfig, weights: &HashMap<String, Tensor>, device: &Device) -> Result<SapiensId> {
        cfg.validate()?;
        let mut on_device = HashMap::with_capacity(weights.len());
        for (name, shape) in manifest(cfg) {
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            let t = weights.get(&name).ok_or_else(|| {
                Error::new(ErrorKind::Corrupt, format!("sapiensid: missing tensor `{name}` {shape:?}"))
            })?;
            if t.dims() != shape.as_slice() {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("sapiensid: tensor `{name}` has shape {:?}, expected {shape:?}", t.dims()),
                ));
            }
            let t = t.to_dtype(DType::F32).and_then(|t| t.to_device(device)).map_err(cerr)?;
            on_device.insert(name, t);
        }
        let w = Weights(&on_device);
        let e = cfg.emb_dim;
        let pos = w.get("backbone.pos_embed")?.reshape((PATCHES + 1, e)).map_err(cerr)?;
        let vit = cfg.vit();
        let kp = "rpe_module.keypoint_linear";
        Ok(SapiensId {
            patch_embed: Linear::load(&on_device, "patch_embed.patch_embed", true).map_err(cerr)?,
            pos_grid: pos.narrow(0, 1, PATCHES).map_err(cerr)?,
            cls: (w.get("backbone.cls_token")?.reshape((1, e)).and_then(|c| c + pos.narrow(0, 0, 1)?)).map_err(cerr)?,
            mask_token: w.get("mask_token")?.clone(),
            blocks: (0..cfg.depth)
                .map(|d| Block::load_prefixed(&on_device, &format!("backbone.blocks.{d}"), &vit))
                .collect::<candle_core::Result<_>>()
                .map_err(cerr)?,
            norm: LayerNorm::load(&on_device, "backbone.norm").map_err(cerr)?,
            keypoint_mlp: KeypointMlp {
                linear1: Linear::load(&on_device, &format!("{kp}.linear1"), true).map_err(cerr)?,
                fc0: Linear::load(&on_device, &format!("{kp}.fc.0"), true).map_err(cerr)?,
                fc2: Linear::load(&on_device, &format!("{kp}.fc.2"), true).map_err(cerr)?,
            },
            head: Head::load(&w, cfg)?,
            flatten: [
                LinearBatchNorm::load(&w, "head.flatten_feature.0", "head.flatten_feature.1")?,
                LinearBatchNorm::load(&w, "head.flatten_feature.2", "head.flatten_feature.3")?,
            ],
            cfg: cfg.clone(),
            device: device.clone(),
        })
    }

    /// The configuration the model was built for.
    pub fn config(&self) -> &SapiensIdConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Embeds a batch.
    ///
    /// * `images`: `[B, 3, 384, 384]` f32, RGB, `(v - 0.5) / 0.5` for `v` in
    ///   `[0, 1]`, a body crop square-padded (with white, upstream) and resized.
    /// * `keypoints`: `[B, 22, 2]`, `(x, y)` in `[0, 1]` crop coordinates,
    ///   17 COCO then 5 face points; `(-1, -1)` for a missing point.
    ///
    /// Returns `[B, output_dim]`; each sample is computed on its own (see the
    /// module documentation).
    pub fn forward(&self, images: &Tensor, keypoints: &Tensor) -> Result<Tensor> {
        let bad = |what: String| Error::new(ErrorKind::InvalidInput, format!("sapiensid: {what}"));
        let dims = images.dims();
        if dims.len() != 4 || dims[1..] != [3, INPUT_SIZE, INPUT_SIZE] || dims[0] == 0 {
            return Err(bad(format!("images are {dims:?}, expected [B >= 1, 3, {INPUT_SIZE}, {INPUT_SIZE}]")));
        }
        let b = dims[0];
        if keypoints.dims() != [b, INPUT_KEYPOINTS, 2] {
            return Err(bad(format!("keypoints are {:?}, expected [{b}, {INPUT_KEYPOINTS}, 2]", keypoints.dims())));
        }
        let kps: Vec<Vec<Vec<f32>>> = keypoints
            .to_dtype(DType::F32)
            .and_then(|k| k.to_device(&Device::Cpu))
            .and_then(|k| k.to_vec3())
            .map_err(cerr)?;
        if kps.iter().flatten().flatten().any(|v| !v.is_finite()) {
            return Err(bad("keypoints must be finite".into()));
        }
        let images = images.to_dtype(DType::F32).and_then(|t| t.to_device(&self.device)).map_err(cerr)?;
        let mut features = Vec::with_capacity(b);
        for (i, kp) in kps.iter().enumerate() {
            let kp22: Vec<Point> = kp.iter().map(|p| [p[0], p[1]]).collect();
            let image = images.get(i).map_err(cerr)?;
            features.push(self.sample_features(&image, &kp22)?);
        }
        (|| {
            let flat = Tensor::stack(&features, 0)?;
            self.flatten[1].forward(&self.flatten[0].forward(&flat)?)
        })()
        .map_err(cerr)
    }

    /// One sample's flattened head features `[152 E]`.
    fn sample_features(&self, image: &Tensor, kp22: &[Point]) -> Result<Tensor> {
        let (kp19, boxes) = preprocess(kp22);
        let views = views(&boxes);
        let present: Vec<bool> = kp19.iter().map(present).collect();
        let e = self.cfg.emb_dim;
        let dev = &self.device;

        // Kept tokens: (view, grid row, grid column), views in order.
        let kept: Vec<(usize, usize)> = views
            .iter()
            .enumerate()
            .flat_map(|(l, v)| v.foreground.iter().enumerate().filter(|(_, f)| **f).map(move |(p, _)| (l, p)))
            .collect();
        let n = kept.len();
        if n == 0 {
            return Err(Error::internal("sapiensid: no foreground patch in any view"));
        }
        let kept_index: Vec<u32> = kept.iter().map(|&(l, p)| (l * PATCHES + p) as u32).collect();
        let cells: Vec<(usize, usize)> = kept.iter().map(|&(_, p)| (p / GRID, p % GRID)).collect();
        let gather = rpe_gather(&cells);
        let l = n + 2;
        // The mask token, as a key, counts for every patch not kept.
        let mut key_bias = vec![0f32; l];
        key_bias[l - 1] = ((LEVELS * PATCHES - n).max(1) as f32).ln();

        let run = || -> candle_core::Result<(Tensor, Tensor, Tensor)> {
            let kept_index = Tensor::from_vec(kept_index, n, dev)?;
            // Patches of the three views, [432, 3072] -> kept [n, 3072].
            let mut patches = Vec::with_capacity(LEVELS);
            for v in &views {
                let crop = resample(image, v, dev)?;
                let p = PATCH_SIZE;
                patches.push(
                    crop.reshape((3, GRID, p, GRID, p))?.permute((1, 3, 0, 2, 4))?.reshape((PATCHES, 3 * p * p))?,
                );
            }
            let patches = Tensor::cat(&patches, 0)?.index_select(&kept_index, 0)?;

            // Position embeddings of the views [432, E] -> kept [n, E].
            let mut positions = Vec::with_capacity(LEVELS);
            for (level, b) in boxes.iter().enumerate() {
                positions.push(match position_matrix(b, level == 0) {
                    None => self.pos_grid.clone(),
                    Some(m) => Tensor::from_vec(m, (PATCHES, PATCHES), dev)?.matmul(&self.pos_grid)?,
                });
            }
            let pos = Tensor::cat(&positions, 0)?.index_select(&kept_index, 0)?;
            let kp_embs =
                Tensor::from_vec(keypoint_matrix(&kp19), (NUM_KEYPOINTS, PATCHES), dev)?.matmul(&self.pos_grid)?;

            // Tokens [cls, patches + positions, mask].
            let tokens = (self.patch_embed.forward(&patches)? + &pos)?;
            let mut x = Tensor::cat(&[&self.cls, &tokens, &self.mask_token], 0)?.unsqueeze(0)?;

            // KP-RPE: relative keypoint embeddings [L, 19, E].
            let valid: Vec<f32> = present.iter().map(|&p| if p { 1.0 } else { 0.0 }).collect();
            let fill: Vec<f32> = present.iter().map(|&p| if p { 0.0 } else { INVALID_REL as f32 }).collect();
            let valid = Tensor::from_vec(valid, (1, NUM_KEYPOINTS, 1), dev)?;
            let fill = Tensor::from_vec(fill, (1, NUM_KEYPOINTS, 1), dev)?;
            let rel =
                pos.unsqueeze(1)?.broadcast_sub(&kp_embs.unsqueeze(0)?)?.broadcast_mul(&valid)?.broadcast_add(&fill)?;
            let none = Tensor::full(INVALID_REL as f32, (1, NUM_KEYPOINTS, e), dev)?;
            let rel = Tensor::cat(&[&none, &rel, &none], 0)?;
            let tables = self.keypoint_mlp.forward(&rel)?; // [L, depth * H * 50]
            let h = self.cfg.num_heads;
            let gather = Tensor::from_vec(gather, l * l, dev)?;
            let key_bias = Tensor::from_vec(key_bias, (1, 1, 1, l), dev)?;

            for (d, block) in self.blocks.iter().enumerate() {
                let table = tables.narrow(1, d * h * BUCKETS, h * BUCKETS)?.reshape((l, h, BUCKETS))?;
                let table = table.transpose(0, 1)?.contiguous()?.reshape((h, l * BUCKETS))?;
                let bias = table.index_select(&gather, 1)?.reshape((1, h, l, l))?.broadcast_add(&key_bias)?;
                x = block.forward(&x, &bias)?;
            }
            // Drop the mask token, then the class token.
            let x = self.norm.forward(&x)?.squeeze(0)?.narrow(0, 1, n)?.contiguous()?;
            Ok((x, pos, kp_embs))
        };
        let (x, pos, kp_embs) = run().map_err(cerr)?;
        self.head.features(&x, &pos, &kp_embs, &present)?.flatten_all().map_err(cerr)
    }
}

/// One view of the image `[3, 384, 384]` resampled bilinearly (zero
/// padding), rows then columns.
fn resample(image: &Tensor, view: &View, dev: &Device) -> candle_core::Result<Tensor> {
    let n = INPUT_SIZE;
    let pass = |x: &Tensor, taps: &AxisTaps, dim: usize| -> candle_core::Result<Tensor> {
        let shape: &[usize] = if dim == 1 { &[1, n, 1] } else { &[1, 1, n] };
        let tap = |k: usize| -> candle_core::Result<Tensor> {
            let idx = Tensor::from_vec(taps.index[k].clone(), n, dev)?;
            let w = Tensor::from_vec(taps.weight[k].clone(), shape, dev)?;
            x.index_select(&idx, dim)?.broadcast_mul(&w)
        };
        tap(0)? + tap(1)?
    };
    pass(&pass(image, &view.rows, 1)?, &view.cols, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_cells_scale_twelve_onto_fourteen() {
        let cells: Vec<i64> = (0..GRID).map(bucket_cell).collect();
        assert_eq!(cells, [0, 1, 2, 4, 5, 6, 7, 8, 9, 11, 12, 13]);
    }

    #[test]
    fn missing_shoulders_give_no_body_box() {
        let mut kp = vec![[-1.0f32, -1.0]; INPUT_KEYPOINTS];
        for (i, p) in [(3, [0.3, 0.4]), (4, [0.7, 0.4]), (17, [0.4, 0.35]), (18, [0.6, 0.35]), (19, [0.5, 0.45])] {
            kp[i] = p;
        }
        let (_, boxes) = preprocess(&kp);
        assert_eq!(boxes[1], [0.0; 4]);
        assert!(boxes[2][2] > boxes[2][0]);
    }
}
