//! The seed's face recognisers behind one interface: a model id from the
//! [`registry`](crate::registry), the user's checkpoint, aligned 112×112
//! crops in, unit embeddings and their norms out.

use crate::adaface::{self, IResNet};
use crate::align::ARCFACE_SIZE;
use crate::caface;
use crate::checkpoint::{Checkpoint, Manifest};
use crate::layers::cerr;
use crate::registry::{Architecture, FaceModelSpec, VitSize};
use crate::vit_kprpe::{self, VitKprpe, VitKprpeConfig};
use candle_core::{Device, Tensor};
use image::RgbImage;
use osprey_core::{Error, ErrorKind, Result};
use std::path::Path;

/// Crops per forward pass: large enough to keep the GEMMs busy, small
/// enough that IR-101's activations stay within a few hundred MB.
pub const BATCH: usize = 32;

enum Net {
    Ir(IResNet),
    Vit(VitKprpe),
}

/// One embedded face crop.
#[derive(Debug, Clone)]
pub struct CropEmbedding {
    /// Unit-norm embedding.
    pub embedding: Vec<f32>,
    /// The raw feature's L2 norm (AdaFace's quality signal).
    pub norm: f32,
}

/// A seed face recogniser loaded from the user's checkpoint.
pub struct FaceRecognizer {
    spec: FaceModelSpec,
    net: Net,
    device: Device,
}

fn vit_config(size: VitSize) -> VitKprpeConfig {
    match size {
        VitSize::Small => VitKprpeConfig::small(),
        VitSize::Base => VitKprpeConfig::base(),
    }
}

/// Names and shapes the architecture of `spec` consumes.
pub fn manifest(spec: &FaceModelSpec) -> Result<Manifest> {
    match spec.architecture {
        Architecture::AdaFaceIr(depth) => adaface::manifest(depth),
        Architecture::VitKprpe(size) => Ok(vit_kprpe::expected_shapes(&vit_config(size))),
        Architecture::DlibResnet => Err(Error::invalid(format!(
            "`{}` is read from dlib's own files (--models), not from a checkpoint",
            spec.id
        ))),
    }
}

impl FaceRecognizer {
    /// Loads `spec`'s network from the checkpoint at `weights`, checking
    /// every name and shape first.
    pub fn load(spec: &FaceModelSpec, weights: &Path, device: &Device) -> Result<FaceRecognizer> {
        let manifest = manifest(spec)?;
        let checkpoint = Checkpoint::open(weights)?;
        // AdaFace's Lightning checkpoints carry the training head's class
        // centres (`head.kernel`); inference never reads them.
        let bound = checkpoint.bind(&manifest, &["head."], device)?;
        let net = match spec.architecture {
            Architecture::AdaFaceIr(depth) => Net::Ir(IResNet::new(depth, &bound, device)?),
            Architecture::VitKprpe(size) => Net::Vit(
                VitKprpe::new(&vit_config(size), &bound)
                    .map_err(|e| Error::new(ErrorKind::Corrupt, format!("checkpoint {}: {e}", weights.display())))?,
            ),
            Architecture::DlibResnet => unreachable!("manifest() refused it"),
        };
        Ok(FaceRecognizer { spec: spec.clone(), net, device: device.clone() })
    }

    /// The model's registry entry.
    pub fn spec(&self) -> &FaceModelSpec {
        &self.spec
    }

    /// The device the network runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Embeds aligned crops. `keypoints[i]` are crop `i`'s five landmarks in
    /// crop pixels (used by KP-RPE; for crops aligned onto the template they
    /// are the template's points). Crops of another size than the model's
    /// input are resized bilinearly first (see [`to_input_size`]).
    pub fn embed(&self, crops: &[RgbImage], keypoints: &[[[f32; 2]; 5]]) -> Result<Vec<CropEmbedding>> {
        if crops.len() != keypoints.len() {
            return Err(Error::internal("one set of keypoints per crop"));
        }
        let mut out = Vec::with_capacity(crops.len());
        for (chunk, kps) in crops.chunks(BATCH).zip(keypoints.chunks(BATCH)) {
            let features = self.forward(chunk, kps)?;
            let (unit, norms) = adaface::normalise_with_norms(&features)?;
            out.extend(unit.into_iter().zip(norms).map(|(embedding, norm)| CropEmbedding { embedding, norm }));
        }
        Ok(out)
    }

    /// Embeds aligned crops as [`Self::embed`] does and also returns each
    /// crop's CAFace style statistics ([`caface::style_statistics`] of the
    /// IR-101 body blocks [`caface::IR101_STYLE_BLOCKS`], flattened). Only
    /// for `adaface-ir101`, the backbone CAFace was trained on.
    pub fn embed_with_style(
        &self,
        crops: &[RgbImage],
        keypoints: &[[[f32; 2]; 5]],
    ) -> Result<Vec<(CropEmbedding, Vec<f32>)>> {
        let Net::Ir(net) = &self.net else {
            return Err(Error::invalid(format!("CAFace reads IR-101's feature maps; `{}` has none", self.spec.id)));
        };
        if self.spec.id != caface::BACKBONE_MODEL {
            return Err(Error::invalid(format!(
                "CAFace was trained on `{}`'s features, not `{}`'s",
                caface::BACKBONE_MODEL,
                self.spec.id
            )));
        }
        if crops.len() != keypoints.len() {
            return Err(Error::internal("one set of keypoints per crop"));
        }
        let mut out = Vec::with_capacity(crops.len());
        for chunk in crops.chunks(BATCH) {
            let (features, taps) = net.forward_with_taps(&self.input(chunk)?, &caface::IR101_STYLE_BLOCKS)?;
            let (unit, norms) = adaface::normalise_with_norms(&features)?;
            let styles = caface::style_statistics(&taps[0], &taps[1])
                .and_then(|s| s.flatten_from(1))
                .and_then(|s| s.to_vec2::<f32>())
                .map_err(cerr)?;
            out.extend(
                unit.into_iter()
                    .zip(norms)
                    .zip(styles)
                    .map(|((embedding, norm), s)| (CropEmbedding { embedding, norm }, s)),
            );
        }
        Ok(out)
    }

    /// The network's input tensor for `crops`: resized to the input side,
    /// in the model's channel order, `(x/255 − 0.5)/0.5`.
    fn input(&self, crops: &[RgbImage]) -> Result<Tensor> {
        let side = self.spec.input_size;
        let bgr = matches!(self.net, Net::Ir(_));
        let mut data = Vec::with_capacity(crops.len() * 3 * side * side);
        for crop in crops {
            let crop = to_input_size(crop, side as u32);
            let plane = side * side;
            let start = data.len();
            data.resize(start + 3 * plane, 0f32);
            for (i, p) in crop.pixels().enumerate() {
                for c in 0..3 {
                    // Channel c of the tensor is R, G, B (RGB) or B, G, R (BGR).
                    let v = p.0[if bgr { 2 - c } else { c }] as f32;
                    data[start + c * plane + i] = (v / 255.0 - 0.5) / 0.5;
                }
            }
        }
        Tensor::from_vec(data, (crops.len(), 3, side, side), &self.device).map_err(cerr)
    }

    fn forward(&self, crops: &[RgbImage], keypoints: &[[[f32; 2]; 5]]) -> Result<Tensor> {
        let x = self.input(crops)?;
        match &self.net {
            Net::Ir(net) => net.forward(&x),
            Net::Vit(net) => {
                let scale = |crop: &RgbImage| (crop.width() as f32, crop.height() as f32);
                let kp: Vec<f32> = crops
                    .iter()
                    .zip(keypoints)
                    .flat_map(|(crop, k)| {
                        let (w, h) = scale(crop);
                        k.iter().flat_map(move |[x, y]| [x / w, y / h])
                    })
                    .collect();
                let kp = Tensor::from_vec(kp, (crops.len(), 5, 2), &self.device).map_err(cerr)?;
                net.forward(&x, &kp).map_err(cerr)
            }
        }
    }
}

/// `crop` at `side`×`side`: unchanged when it already is, else resized with
/// a bilinear (triangle) filter, which for the usual case, a larger aligned
/// crop scaled down, averages like OpenCV's `INTER_AREA` would only
/// approximately: align at 112×112 when exactness matters.
pub fn to_input_size(crop: &RgbImage, side: u32) -> std::borrow::Cow<'_, RgbImage> {
    if crop.width() == side && crop.height() == side {
        std::borrow::Cow::Borrowed(crop)
    } else {
        std::borrow::Cow::Owned(image::imageops::resize(crop, side, side, image::imageops::FilterType::Triangle))
    }
}

/// The five keypoints of a crop aligned onto the ArcFace template, in the
/// pixels of a `w`×`h` crop.
pub fn template_keypoints_for(w: u32, h: u32) -> [[f32; 2]; 5] {
    crate::align::ARCFACE_TEMPLATE
        .map(|[x, y]| [x * w as f32 / ARCFACE_SIZE as f32, y * h as f32 / ARCFACE_SIZE as f32])
}
