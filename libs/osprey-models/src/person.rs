//! The body and gait recognisers behind one interface: a model id from the
//! [`registry`](crate::registry) ([`PersonModelSpec`]), the user's
//! checkpoint, body crops or silhouette sequences in, unit embeddings out.
//!
//! * Body (OSNet, CLIP3DReID): each crop is resized with Pillow's bilinear
//!   filter as the authors' test transforms do ([`crate::pil_resize`]:
//!   256×128 for OSNet, 224×224 for CLIP3DReID), then normalised; the 512-d
//!   feature is L2-normalised, so templates compare by cosine, as both
//!   evaluations do.
//! * Gait (GaitBase): each frame of a sequence goes through OpenGait's
//!   pretreatment ([`crate::gait_pretreat`]; empty frames are dropped), the
//!   sequence through the network, and each of the 16 strips' 256-d part
//!   vectors is L2-normalised and scaled by 1/4, so the inner product of two
//!   templates is the mean over the strips of each strip's cosine. OpenGait
//!   itself ranks by the strip-averaged Euclidean distance of the raw strips
//!   ([`crate::gaitbase::distance`]); the two orders agree when the strips'
//!   norms are alike, not in general.

use std::path::Path;

use candle_core::Device;
use image::{GrayImage, RgbImage};
use osprey_core::{Error, Result};

use crate::checkpoint::Checkpoint;
use crate::clip3dreid::{self, Clip3dReid, Clip3dReidConfig};
use crate::gaitbase::{self, GaitBase};
use crate::osnet::{self, OsNet};
use crate::registry::{PersonArchitecture, PersonModelSpec};

/// Body crops per forward pass.
pub const BODY_BATCH: usize = 32;
/// Least silhouettes a gait sequence needs after pretreatment: one gait
/// cycle (about a second of walking) at 25 frames/s.
pub const MIN_GAIT_FRAMES: usize = 25;

enum Net {
    OsNet(OsNet),
    Clip3dReid(Clip3dReid),
    GaitBase(GaitBase),
}

/// A body or gait recogniser loaded from the user's checkpoint.
pub struct PersonRecognizer {
    spec: PersonModelSpec,
    net: Net,
}

impl PersonRecognizer {
    /// Loads `spec`'s network from the checkpoint at `weights`, checking
    /// every name and shape first (training-only tensors ignored).
    pub fn load(spec: &PersonModelSpec, weights: &Path, device: &Device) -> Result<PersonRecognizer> {
        let checkpoint = Checkpoint::open(weights)?;
        let net = match spec.architecture {
            PersonArchitecture::OsNet(variant) => {
                let bound = checkpoint.bind(&osnet::manifest(variant), &osnet::IGNORED_PREFIXES, device)?;
                Net::OsNet(OsNet::new(variant, &bound, device)?)
            }
            PersonArchitecture::Clip3dReid => {
                let cfg = Clip3dReidConfig::full();
                let bound =
                    checkpoint.bind(&clip3dreid::inference_manifest(&cfg), &clip3dreid::IGNORED_PREFIXES, device)?;
                Net::Clip3dReid(Clip3dReid::new(&cfg, &bound, device)?)
            }
            PersonArchitecture::GaitBase => {
                let bound = checkpoint.bind(&gaitbase::embedding_manifest(), gaitbase::IGNORE_PREFIXES, device)?;
                Net::GaitBase(GaitBase::new(&bound, device)?)
            }
        };
        Ok(PersonRecognizer { spec: spec.clone(), net })
    }

    /// The model's registry entry.
    pub fn spec(&self) -> &PersonModelSpec {
        &self.spec
    }

    /// Unit embeddings of body crops (any size; resized as the authors'
    /// test transforms do).
    pub fn embed_bodies(&self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        let resize_all = |chunk: &[RgbImage], w: usize, h: usize| {
            chunk.iter().map(|c| pil_resized(c, w, h)).collect::<Result<Vec<_>>>()
        };
        let mut out = Vec::with_capacity(crops.len());
        for chunk in crops.chunks(BODY_BATCH) {
            let features = match &self.net {
                Net::OsNet(net) => {
                    let resized = resize_all(chunk, osnet::INPUT_WIDTH, osnet::INPUT_HEIGHT)?;
                    net.forward(&osnet::preprocess(&resized, net.device())?)?
                }
                Net::Clip3dReid(net) => {
                    let side = clip3dreid::INPUT_SIZE;
                    net.forward(&clip3dreid::preprocess(&resize_all(chunk, side, side)?, net.device())?)?
                }
                Net::GaitBase(_) => {
                    return Err(Error::invalid(format!(
                        "`{}` is a gait model: it reads silhouette sequences",
                        self.spec.id
                    )));
                }
            };
            let rows: Vec<Vec<f32>> =
                features.to_vec2().map_err(|e| Error::internal(format!("{} output: {e}", self.spec.id)))?;
            out.extend(rows.into_iter().map(|mut r| {
                osprey_core::l2_normalize(&mut r);
                r
            }));
        }
        Ok(out)
    }

    /// The gait template of one sequence of silhouettes (8-bit grey, any
    /// size, in time order) and the number of frames it used; an error when
    /// fewer than [`MIN_GAIT_FRAMES`] frames survive the pretreatment.
    pub fn embed_gait(&self, frames: &[GrayImage]) -> Result<(Vec<f32>, usize)> {
        let Net::GaitBase(net) = &self.net else {
            return Err(Error::invalid(format!("`{}` is a body model: it reads body crops", self.spec.id)));
        };
        let kept = crate::gait_pretreat::pretreat_sequence(
            frames.iter().map(|f| (f.as_raw().as_slice(), f.width() as usize, f.height() as usize)),
        )?;
        if kept.len() < MIN_GAIT_FRAMES {
            return Err(Error::invalid(format!(
                "{} of {} silhouettes usable (empty or off-centre ones are dropped); a gait template needs at least {MIN_GAIT_FRAMES}, about one gait cycle",
                kept.len(),
                frames.len()
            )));
        }
        let x = crate::gait_pretreat::to_tensor(&kept, net.device())?;
        let embedding = gaitbase::flatten(&net.forward(&x)?)?.into_iter().next().expect("one sequence");
        Ok((strip_normalised(&embedding), kept.len()))
    }
}

/// `crop` resized to `w`×`h` with Pillow's bilinear filter, as RGB bytes.
fn pil_resized(crop: &RgbImage, w: usize, h: usize) -> Result<Vec<u8>> {
    crate::pil_resize::resize_rgb(crop.as_raw(), crop.width() as usize, crop.height() as usize, w, h)
}

/// A flattened GaitBase embedding (index `c·16 + p`) with each strip's part
/// vector L2-normalised and the whole scaled to unit norm.
fn strip_normalised(embedding: &[f32]) -> Vec<f32> {
    let parts = gaitbase::PARTS;
    let mut out = embedding.to_vec();
    for p in 0..parts {
        let norm = (0..gaitbase::PART_DIM).map(|c| out[c * parts + p].powi(2)).sum::<f32>().sqrt();
        let scale = if norm > 0.0 { 1.0 / (norm * (parts as f32).sqrt()) } else { 0.0 };
        for c in 0..gaitbase::PART_DIM {
            out[c * parts + p] *= scale;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_are_normalised_to_a_unit_whole() {
        let e: Vec<f32> =
            (0..gaitbase::EMBEDDING_DIM).map(|i| ((i * 37 % 101) as f32 - 50.0) * (1 + i % 16) as f32).collect();
        let n = strip_normalised(&e);
        let total: f32 = n.iter().map(|v| v * v).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        for p in 0..gaitbase::PARTS {
            let s: f32 = (0..gaitbase::PART_DIM).map(|c| n[c * gaitbase::PARTS + p].powi(2)).sum();
            assert!((s - 1.0 / 16.0).abs() < 1e-6, "strip {p}: {s}");
        }
    }
}
