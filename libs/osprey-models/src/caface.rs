//! CAFace's cluster-and-aggregate video feature fusion (Kim et al., NeurIPS
//! 2022; mk-minchul/CAFace @ e94ad020), the configuration its released
//! AdaFace IR-101 model uses: decoder `catv9_g4_conf512_small`, aggregator
//! `style_norm_srm`, style statistics of backbone body blocks 3 and 5.
//!
//! A probe video gives T per-frame features. The aggregator
//!
//! 1. compresses each frame's backbone style statistics (per-channel mean and
//!    std of two feature maps) to 64 numbers (the "style input maker"),
//! 2. appends a 64-wide sinusoidal embedding of the frame's feature norm
//!    (a quality cue), making 128-wide frame tokens,
//! 3. runs the tokens together with 4 learnt cluster tokens through two
//!    self-attention blocks, then softly assigns every frame to the 4 clusters
//!    (a softmax over clusters, per frame), giving each cluster a mean of the
//!    unit frame features and a mean of the frame tokens (the "cluster
//!    network"),
//! 4. predicts a per-cluster, per-dimension confidence from
//!    [cluster token, cluster style] with two MLP-Mixer blocks and an MLP,
//!    softmax-normalised over the clusters (the "aggregation network"), and
//!    sums the cluster means weighted by it.
//!
//! Only the single-chunk path is ported: the streaming memory that upstream
//! carries across chunks of more than 512 frames is reset for every call.
//!
//! Everything is float32 and inference-only (BatchNorm uses its running
//! statistics). The weights are those under `aggregator.` in a CAFace
//! checkpoint, with that prefix removed (see [`expected_shapes`]).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Error, Result, Tensor};

use crate::checkpoint::Checkpoint;

/// Width of the face features being fused (AdaFace IR-101 output).
pub const FEATURE_DIM: usize = 512;
/// Channels of backbone body block 3 (index 15 of IR-101's body).
pub const BLOCK3_CHANNELS: usize = 128;
/// Channels of backbone body block 5 (index 45 of IR-101's body).
pub const BLOCK5_CHANNELS: usize = 256;
/// Channels of the concatenated style statistics, [`BLOCK3_CHANNELS`] first.
pub const STYLE_CHANNELS: usize = BLOCK3_CHANNELS + BLOCK5_CHANNELS;
/// Number of clusters the frames are assigned to.
pub const NUM_CLUSTERS: usize = 4;
/// The IR-101 body blocks whose outputs give the style statistics (the
/// last block of the 128- and of the 256-channel stage).
pub const IR101_STYLE_BLOCKS: [usize; 2] = [15, 45];
/// The face model whose features and intermediate maps CAFace was trained on.
pub const BACKBONE_MODEL: &str = "adaface-ir101";
/// Most frames fused in one call (upstream's chunk); a longer track keeps
/// its frames of highest feature norm.
pub const MAX_FRAMES: usize = 512;

/// Width of the compressed style code of one frame.
const STYLE_DIM: usize = 64;
/// Width of the feature-norm embedding.
const NORM_EMB_DIM: usize = 64;
/// Width of a frame token: style code followed by norm embedding.
const EMBED_DIM: usize = STYLE_DIM + NORM_EMB_DIM;
/// Self-attention blocks before the assignment.
const DEPTH: usize = 2;
const NUM_HEADS: usize = 8;
const MLP_HIDDEN: usize = 4 * EMBED_DIM;
/// Width of the aggregation network's input: cluster token and cluster style.
const CONF_DIM: usize = 2 * EMBED_DIM;
/// Feature norms are standardised, clipped to ±NORM_CLIP, scaled by
/// NORM_STEPS and truncated to an integer row of the sinusoid table.
const NORM_CLIP: f32 = 3.0;
const NORM_STEPS: f32 = 10.0;
const NORM_TABLE_LEN: usize = 2 * (NORM_CLIP as usize) * (NORM_STEPS as usize) + 1;
/// PyTorch's default epsilon for LayerNorm and BatchNorm.
const NORM_EPS: f64 = 1e-5;
/// Added to a feature's norm before dividing by it.
const UNIT_EPS: f64 = 1e-5;

/// Every parameter and buffer of the aggregator with its shape, named as in
/// a CAFace checkpoint minus its `aggregator.` prefix. Scalars have shape
/// `[]`. `style_maker.cfc` and `style_maker.cfcs.0` are one tensor stored
/// twice; the `num_batches_tracked` counters are listed but never read.
pub fn expected_shapes() -> Vec<(String, Vec<usize>)> {
    let mut s: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |name: &str, shape: &[usize]| s.push((name.to_string(), shape.to_vec()));

    add("style_maker.cfc", &[STYLE_CHANNELS, 2]);
    add("style_maker.cfcs.0", &[STYLE_CHANNELS, 2]);
    add("style_maker.relu.weight", &[1]);
    add("style_maker.linear.weight", &[STYLE_DIM, STYLE_CHANNELS]);
    add("style_maker.linear.bias", &[STYLE_DIM]);
    for p in ["weight", "bias", "running_mean", "running_var"] {
        add(&format!("style_maker.bn.{p}"), &[STYLE_DIM]);
    }
    add("style_maker.bn.num_batches_tracked", &[]);

    let cl = "fusion_net.clustering_layer";
    add(&format!("{cl}.group_token"), &[1, NUM_CLUSTERS, EMBED_DIM]);
    for i in 0..DEPTH {
        let b = format!("{cl}.blocks.{i}");
        // Each half of a block: its LayerNorm, then its two linears (name, out, in).
        let halves = [
            ("norm1", [("attn.qkv", 3 * EMBED_DIM, EMBED_DIM), ("attn.proj", EMBED_DIM, EMBED_DIM)]),
            ("norm2", [("mlp.fc1", MLP_HIDDEN, EMBED_DIM), ("mlp.fc2", EMBED_DIM, MLP_HIDDEN)]),
        ];
        for (norm, linears) in halves {
            add(&format!("{b}.{norm}.weight"), &[EMBED_DIM]);
            add(&format!("{b}.{norm}.bias"), &[EMBED_DIM]);
            for (name, out, inp) in linears {
                add(&format!("{b}.{name}.weight"), &[out, inp]);
                add(&format!("{b}.{name}.bias"), &[out]);
            }
        }
    }
    let cb = format!("{cl}.cluster_block");
    for norm in ["norm_tokens", "norm_x"] {
        add(&format!("{cb}.{norm}.weight"), &[EMBED_DIM]);
        add(&format!("{cb}.{norm}.bias"), &[EMBED_DIM]);
    }
    for proj in ["q_proj", "k_proj"] {
        add(&format!("{cb}.assign.{proj}.weight"), &[EMBED_DIM, EMBED_DIM]);
        add(&format!("{cb}.assign.{proj}.bias"), &[EMBED_DIM]);
    }

    for i in 0..DEPTH {
        let m = format!("fusion_net.conf_mlp.{i}");
        add(&format!("{m}.skip_connect_gate"), &[]);
        add(&format!("{m}.ln.weight"), &[CONF_DIM]);
        add(&format!("{m}.ln.bias"), &[CONF_DIM]);
        for (block, width, hidden) in
            [("tokens_mlp_block", NUM_CLUSTERS, 2 * NUM_CLUSTERS), ("channels_mlp_block", CONF_DIM, CONF_DIM / 2)]
        {
            add(&format!("{m}.{block}.fc1.weight"), &[hidden, width]);
            add(&format!("{m}.{block}.fc1.bias"), &[hidden]);
            add(&format!("{m}.{block}.fc2.weight"), &[width, hidden]);
            add(&format!("{m}.{block}.fc2.bias"), &[width]);
        }
    }
    let head = format!("fusion_net.conf_mlp.{DEPTH}");
    add(&format!("{head}.fc1.weight"), &[CONF_DIM, CONF_DIM]);
    add(&format!("{head}.fc1.bias"), &[CONF_DIM]);
    add(&format!("{head}.fc2.weight"), &[FEATURE_DIM, CONF_DIM]);
    add(&format!("{head}.fc2.bias"), &[FEATURE_DIM]);

    add("norm_emb.scale", &[]);
    add("norm_emb.pe", &[NORM_TABLE_LEN, NORM_EMB_DIM]);
    add("norm_emb.norm_bn.running_mean", &[1]);
    add("norm_emb.norm_bn.running_var", &[1]);
    add("norm_emb.norm_bn.num_batches_tracked", &[]);
    s
}

/// Per-channel style statistics of two backbone feature maps, as CAFace's
/// backbone computes them: for every frame and channel the mean and the
/// unbiased (N-1) standard deviation over the H×W positions, no epsilon.
///
/// `block3` is [T, 128, H, W] (IR-101 body index 15), `block5` is
/// [T, 256, H', W'] (body index 45). Returns [T, 384, 2]: block 3's channels
/// then block 5's, each as (mean, std).
pub fn style_statistics(block3: &Tensor, block5: &Tensor) -> Result<Tensor> {
    fn mean_std(map: &Tensor, channels: usize, what: &str) -> Result<Tensor> {
        let (t, c, h, w) = map.dims4()?;
        if c != channels || h * w < 2 {
            candle_core::bail!("caface: {what} must be [T, {channels}, H, W] with H*W >= 2, got {:?}", map.dims());
        }
        let flat = map.to_dtype(DType::F32)?.reshape((t, c, h * w))?;
        let mean = flat.mean_keepdim(2)?;
        let std = flat.var_keepdim(2)?.sqrt()?;
        Tensor::cat(&[mean, std], 2)
    }
    let (s3, s5) = (mean_std(block3, BLOCK3_CHANNELS, "block 3")?, mean_std(block5, BLOCK5_CHANNELS, "block 5")?);
    if s3.dim(0)? != s5.dim(0)? {
        candle_core::bail!("caface: block 3 has {} frames, block 5 has {}", s3.dim(0)?, s5.dim(0)?);
    }
    Tensor::cat(&[s3, s5], 1)
}

/// Checked access to the weight map: every name is looked up in
/// [`expected_shapes`] so that a wrong checkpoint fails with the name.
struct Weights<'a> {
    map: &'a HashMap<String, Tensor>,
    shapes: HashMap<String, Vec<usize>>,
}

impl Weights<'_> {
    fn get(&self, name: &str) -> Result<Tensor> {
        let t = self.map.get(name).ok_or_else(|| Error::Msg(format!("caface: missing weight `{name}`")))?;
        let shape = &self.shapes[name];
        if t.dims() != shape.as_slice() {
            candle_core::bail!("caface: weight `{name}` has shape {:?}, expected {shape:?}", t.dims());
        }
        t.to_dtype(DType::F32)
    }

    /// The single value of a scalar or one-element weight.
    fn scalar(&self, name: &str) -> Result<f32> {
        self.get(name)?.flatten_all()?.get(0)?.to_scalar::<f32>()
    }

    fn linear(&self, prefix: &str) -> Result<Linear> {
        Ok(Linear {
            weight_t: self.get(&format!("{prefix}.weight"))?.t()?.contiguous()?,
            bias: self.get(&format!("{prefix}.bias"))?,
        })
    }

    fn layer_norm(&self, prefix: &str) -> Result<LayerNorm> {
        Ok(LayerNorm { weight: self.get(&format!("{prefix}.weight"))?, bias: self.get(&format!("{prefix}.bias"))? })
    }

    fn mlp(&self, prefix: &str) -> Result<Mlp> {
        Ok(Mlp { fc1: self.linear(&format!("{prefix}.fc1"))?, fc2: self.linear(&format!("{prefix}.fc2"))? })
    }
}

/// `y = x W^T + b` over the last axis; the weight is stored transposed,
/// [in, out], so the product is a plain (broadcast) matmul.
struct Linear {
    weight_t: Tensor,
    bias: Tensor,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

/// LayerNorm over the last axis (biased variance, eps 1e-5).
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred.broadcast_div(&(var + NORM_EPS)?.sqrt()?)?.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// fc1, exact (erf) GELU, fc2.
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.gelu_erf()?)
    }
}

fn softmax(x: &Tensor, dim: usize) -> Result<Tensor> {
    let e = x.broadcast_sub(&x.max_keepdim(dim)?)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(dim)?)
}

/// Pre-norm transformer block with fused-qkv multi-head self-attention.
struct AttnBlock {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    mlp: Mlp,
}

impl AttnBlock {
    /// `x`: [B, N, C] -> [B, N, C].
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let head_dim = c / NUM_HEADS;
        // [B, N, 3C] -> [3, B, heads, N, head_dim]
        let qkv = self
            .qkv
            .forward(&self.norm1.forward(x)?)?
            .reshape((b, n, 3, NUM_HEADS, head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let (q, k, v) = (qkv.get(0)?.contiguous()?, qkv.get(1)?.contiguous()?, qkv.get(2)?.contiguous()?);
        let scores = (q.matmul(&k.t()?)? * (head_dim as f64).powf(-0.5))?;
        let attn = softmax(&scores, 3)?;
        // [B, heads, N, head_dim] -> [B, N, C]
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?;
        let x = (x + self.proj.forward(&out)?)?;
        &x + self.mlp.forward(&self.norm2.forward(&x)?)?
    }
}

/// MLP-Mixer block with a learnt gate on the token-mixing skip connection;
/// one LayerNorm serves both halves.
struct MixerBlock {
    gate: f64,
    ln: LayerNorm,
    tokens_mlp: Mlp,
    channels_mlp: Mlp,
}

impl MixerBlock {
    /// `x`: [B, clusters, C] -> same.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Token mixing acts along the cluster axis: [B, C, clusters].
        let mixed = self.tokens_mlp.forward(&self.ln.forward(x)?.transpose(1, 2)?)?.transpose(1, 2)?;
        let out = ((x * self.gate)? + mixed)?;
        &out + self.channels_mlp.forward(&self.ln.forward(&out)?)?
    }
}

/// The CAFace aggregator (style input maker, norm embedding, cluster network
/// and aggregation network) with its weights.
pub struct CafaceAggregator {
    // Style input maker: [T, 384, 2] -> [T, 64].
    /// Per-channel weights of (mean, std), [384, 2].
    style_cfc: Tensor,
    /// PReLU slope (one shared parameter).
    style_prelu: f64,
    style_linear: Linear,
    /// Eval BatchNorm folded to `x * scale + shift`, both [64].
    style_bn_scale: Tensor,
    style_bn_shift: Tensor,

    // Norm embedding.
    norm_mean: f32,
    norm_var: f32,
    /// Sinusoid table, [61, 64].
    norm_table: Tensor,
    norm_scale: f64,

    // Cluster network.
    /// Learnt cluster tokens, [1, 4, 128].
    group_token: Tensor,
    blocks: Vec<AttnBlock>,
    norm_tokens: LayerNorm,
    norm_x: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,

    // Aggregation network.
    mixers: Vec<MixerBlock>,
    conf_head: Mlp,
}

/// One frame of a track, as the aggregator reads it.
#[derive(Debug, Clone, Copy)]
pub struct FrameFeature<'a> {
    /// Unit feature ([`FEATURE_DIM`] wide).
    pub unit: &'a [f32],
    /// The feature's norm before normalisation.
    pub norm: f32,
    /// The frame's [`style_statistics`], flattened: [`STYLE_CHANNELS`] × (mean, std).
    pub style: &'a [f32],
}

impl CafaceAggregator {
    /// Loads the aggregator from a CAFace checkpoint (its tensors under
    /// `aggregator.`, or bare), checking every name and shape; the backbone
    /// or training head a checkpoint may also carry (`model.`, `head.`) is
    /// ignored.
    pub fn load(path: &Path, device: &Device) -> osprey_core::Result<Self> {
        let bound = Checkpoint::open(path)?.bind(&expected_shapes(), &["model.", "head."], device)?;
        Self::new(&bound).map_err(|e| {
            osprey_core::Error::new(
                osprey_core::ErrorKind::Corrupt,
                format!("CAFace checkpoint {}: {e}", path.display()),
            )
        })
    }

    /// The template of a track: its frames fused into one unit vector.
    /// Tracks longer than [`MAX_FRAMES`] keep the frames of highest norm.
    pub fn fuse_track(&self, frames: &[FrameFeature<'_>], device: &Device) -> Result<Vec<f32>> {
        if frames.is_empty() {
            candle_core::bail!("caface: a track with no frames");
        }
        let mut picked: Vec<&FrameFeature<'_>> = frames.iter().collect();
        if picked.len() > MAX_FRAMES {
            picked.sort_by(|a, b| b.norm.total_cmp(&a.norm));
            picked.truncate(MAX_FRAMES);
        }
        let t = picked.len();
        let mut features = Vec::with_capacity(t * FEATURE_DIM);
        let mut style = Vec::with_capacity(t * STYLE_CHANNELS * 2);
        for f in &picked {
            if f.unit.len() != FEATURE_DIM || f.style.len() != STYLE_CHANNELS * 2 {
                candle_core::bail!(
                    "caface: a frame needs a {FEATURE_DIM}-wide feature and {} style statistics, got {} and {}",
                    STYLE_CHANNELS * 2,
                    f.unit.len(),
                    f.style.len()
                );
            }
            features.extend(f.unit.iter().map(|v| v * f.norm));
            style.extend_from_slice(f.style);
        }
        let features = Tensor::from_vec(features, (1, t, FEATURE_DIM), device)?;
        let style = Tensor::from_vec(style, (t, STYLE_CHANNELS, 2), device)?;
        let (fused, _) = self.aggregate(&features, &style)?;
        let mut v: Vec<f32> = fused.flatten_all()?.to_vec1()?;
        osprey_core::l2_normalize(&mut v);
        Ok(v)
    }

    /// Builds the aggregator from its weights (names as in
    /// [`expected_shapes`]; float32 or any float type, converted). A missing
    /// or misshapen weight is an error naming it.
    pub fn new(weights: &HashMap<String, Tensor>) -> Result<Self> {
        let w = Weights { map: weights, shapes: expected_shapes().into_iter().collect() };

        let bn = |stat: &str| w.get(&format!("style_maker.bn.{stat}"));
        let style_bn_scale = bn("weight")?.div(&(bn("running_var")? + NORM_EPS)?.sqrt()?)?;
        let style_bn_shift = (bn("bias")? - bn("running_mean")?.mul(&style_bn_scale)?)?;

        let cl = "fusion_net.clustering_layer";
        let blocks = (0..DEPTH)
            .map(|i| {
                let b = format!("{cl}.blocks.{i}");
                Ok(AttnBlock {
                    norm1: w.layer_norm(&format!("{b}.norm1"))?,
                    qkv: w.linear(&format!("{b}.attn.qkv"))?,
                    proj: w.linear(&format!("{b}.attn.proj"))?,
                    norm2: w.layer_norm(&format!("{b}.norm2"))?,
                    mlp: w.mlp(&format!("{b}.mlp"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mixers = (0..DEPTH)
            .map(|i| {
                let m = format!("fusion_net.conf_mlp.{i}");
                Ok(MixerBlock {
                    gate: w.scalar(&format!("{m}.skip_connect_gate"))? as f64,
                    ln: w.layer_norm(&format!("{m}.ln"))?,
                    tokens_mlp: w.mlp(&format!("{m}.tokens_mlp_block"))?,
                    channels_mlp: w.mlp(&format!("{m}.channels_mlp_block"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let cb = format!("{cl}.cluster_block");

        Ok(Self {
            style_cfc: w.get("style_maker.cfc")?,
            style_prelu: w.scalar("style_maker.relu.weight")? as f64,
            style_linear: w.linear("style_maker.linear")?,
            style_bn_scale,
            style_bn_shift,
            norm_mean: w.scalar("norm_emb.norm_bn.running_mean")?,
            norm_var: w.scalar("norm_emb.norm_bn.running_var")?,
            norm_table: w.get("norm_emb.pe")?,
            norm_scale: w.scalar("norm_emb.scale")? as f64,
            group_token: w.get(&format!("{cl}.group_token"))?,
            blocks,
            norm_tokens: w.layer_norm(&format!("{cb}.norm_tokens"))?,
            norm_x: w.layer_norm(&format!("{cb}.norm_x"))?,
            q_proj: w.linear(&format!("{cb}.assign.q_proj"))?,
            k_proj: w.linear(&format!("{cb}.assign.k_proj"))?,
            mixers,
            conf_head: w.mlp(&format!("fusion_net.conf_mlp.{DEPTH}"))?,
        })
    }

    /// Fuses one video: `features` [1, T, 512] are the per-frame features
    /// times their norms (AdaFace's unit feature × norm), `style_raw`
    /// [T, 384, 2] the frames' [`style_statistics`]. Returns the fused
    /// template [1, 512] (not unit-normalised; its direction is the template)
    /// and the clusters' normalised confidences [1, 4, 512] (confidence ×
    /// cluster-mean norm, divided by its sum over the clusters).
    pub fn aggregate(&self, features: &Tensor, style_raw: &Tensor) -> Result<(Tensor, Tensor)> {
        self.fuse(features, &self.compress_style(style_raw)?.unsqueeze(0)?)
    }

    /// The style input maker: [T, 384, 2] style statistics -> [T, 64] style
    /// codes (weighted sum of mean and std per channel, PReLU, linear,
    /// eval BatchNorm).
    pub fn compress_style(&self, style_raw: &Tensor) -> Result<Tensor> {
        let (_, c, two) = style_raw.dims3()?;
        if (c, two) != (STYLE_CHANNELS, 2) {
            candle_core::bail!("caface: style statistics must be [T, {STYLE_CHANNELS}, 2], got {:?}", style_raw.dims());
        }
        let z = style_raw.broadcast_mul(&self.style_cfc)?.sum(2)?;
        let z = (z.relu()? + (z.minimum(0f32)? * self.style_prelu)?)?;
        self.style_linear.forward(&z)?.broadcast_mul(&self.style_bn_scale)?.broadcast_add(&self.style_bn_shift)
    }

    /// Cluster and aggregate given precomputed style codes: `features`
    /// [B, T, 512] (feature × norm), `style` [B, T, 64] from
    /// [`Self::compress_style`]. Returns (aggregated [B, 512], weights
    /// [B, 4, 512]) as [`Self::aggregate`] does.
    pub fn fuse(&self, features: &Tensor, style: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, t, f) = features.dims3()?;
        if f != FEATURE_DIM || style.dims() != [b, t, STYLE_DIM] {
            candle_core::bail!(
                "caface: features must be [B, T, {FEATURE_DIM}] and style [B, T, {STYLE_DIM}], got {:?} and {:?}",
                features.dims(),
                style.dims()
            );
        }
        let features = features.to_dtype(DType::F32)?;
        let norms = features.sqr()?.sum_keepdim(2)?.sqrt()?; // [B, T, 1]
        let unit = features.broadcast_div(&(&norms + UNIT_EPS)?)?;
        let tokens = Tensor::cat(&[style.to_dtype(DType::F32)?, self.norm_embedding(&norms)?], 2)?; // [B, T, 128]

        // Cluster network. The cluster tokens join the frame tokens through
        // the attention blocks, but only the frame tokens are kept: the
        // assignment queries use the learnt tokens themselves.
        let group = self.group_token.broadcast_as((b, NUM_CLUSTERS, EMBED_DIM))?.contiguous()?;
        let mut x = Tensor::cat(&[&tokens, &group], 1)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        let frames = self.norm_x.forward(&x.narrow(1, 0, t)?)?; // [B, T, 128]
        let q = self.q_proj.forward(&self.norm_tokens.forward(&group)?)?; // [B, 4, 128]
        let k = self.k_proj.forward(&frames)?;
        let scores = (q.matmul(&k.t()?)? * (EMBED_DIM as f64).powf(-0.5))?; // [B, 4, T]
        // Each frame is shared among the clusters (softmax over clusters);
        // a cluster's total share is divided out only when it exceeds 1.
        let assign = softmax(&scores, 1)?;
        let assign = assign.broadcast_div(&assign.sum_keepdim(2)?.maximum(1f32)?)?;
        let cluster_mean = assign.matmul(&unit)?; // [B, 4, 512]
        let cluster_style = assign.matmul(&frames)?; // [B, 4, 128]

        // Aggregation network.
        let mut y = Tensor::cat(&[&group, &cluster_style], 2)?; // [B, 4, 256]
        for mixer in &self.mixers {
            y = mixer.forward(&y)?;
        }
        let confidence = softmax(&self.conf_head.forward(&y)?, 1)?; // [B, 4, 512]
        let aggregated = (&cluster_mean * &confidence)?.sum(1)?;
        let conf = confidence.broadcast_mul(&cluster_mean.sqr()?.sum_keepdim(2)?.sqrt()?)?;
        let weights = conf.broadcast_div(&conf.sum_keepdim(1)?)?;
        Ok((aggregated, weights))
    }

    /// Sinusoidal embedding of the feature norms [B, T, 1] -> [B, T, 64]:
    /// the table rows picked by [`norm_rows`], times the learnt scale.
    fn norm_embedding(&self, norms: &Tensor) -> Result<Tensor> {
        let (b, t, _) = norms.dims3()?;
        let rows = norm_rows(&norms.flatten_all()?.to_vec1::<f32>()?, self.norm_mean, self.norm_var);
        let rows = Tensor::from_vec(rows, b * t, &Device::Cpu)?.to_device(self.norm_table.device())?;
        self.norm_table.index_select(&rows, 0)?.reshape((b, t, NORM_EMB_DIM))? * self.norm_scale
    }
}

/// The sinusoid-table row of each feature norm: standardise with the
/// BatchNorm running statistics (as PyTorch's eval kernel does, `x * a + b`),
/// clip to ±3, scale by 10, truncate towards zero (PyTorch's `.long()`, not a
/// floor) and offset by 30, so rows run 0..=60. Done on the host in f32 so the
/// truncation matches exactly.
fn norm_rows(norms: &[f32], running_mean: f32, running_var: f32) -> Vec<u32> {
    let inv_std = 1.0 / (running_var + NORM_EPS as f32).sqrt();
    let shift = -running_mean * inv_std;
    let offset = (NORM_CLIP * NORM_STEPS) as i64;
    norms
        .iter()
        .map(|&n| ((n * inv_std + shift).clamp(-NORM_CLIP, NORM_CLIP) * NORM_STEPS) as i64 + offset)
        .map(|row| row as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference fixture's norms all clip to the top row, so the
    /// standardise/clip/truncate mapping is checked here.
    #[test]
    fn norm_rows_truncate_towards_zero_and_clip() {
        let norms = [10.0, 10.149, 9.851, 10.35, 9.65, 100.0, -100.0];
        // mean 10, var 1 - eps: z = norm - 10 (to f32 rounding).
        assert_eq!(norm_rows(&norms, 10.0, 1.0 - NORM_EPS as f32), [30, 31, 29, 33, 27, 60, 0]);
    }
}
