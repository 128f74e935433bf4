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
//!   sequence through the network, and its [256, 16] output is flattened in
//!   OpenGait's own row-major order (`c·16 + p`) and L2-normalised as a
//!   whole, so templates compare by cosine. OpenGait itself ranks by the
//!   strip-averaged Euclidean distance of the raw strips
//!   ([`crate::gaitbase::distance`]); cosine of the whole vector orders
//!   pairs alike when the strips' norms are alike, not in general, and keeps
//!   the template the upstream output up to scale.

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
        self.gait_net()?;
        let kept = crate::gait_pretreat::pretreat_sequence(
            frames.iter().map(|f| (f.as_raw().as_slice(), f.width() as usize, f.height() as usize)),
        )?;
        self.embed_cut_sequence(&kept, frames.len())
    }

    /// The gait template of a sequence already pretreated as OpenGait
    /// stores it (64×64 frames, [`crate::gait_pretreat::pretreat_frame`]'s
    /// output, as a track's silhouette strip holds them): each frame is cut
    /// to 64×44 and the sequence embedded; the error as for [`Self::embed_gait`].
    pub fn embed_gait_pretreated(&self, frames: &[Vec<u8>]) -> Result<(Vec<f32>, usize)> {
        self.gait_net()?;
        let cut = frames.iter().map(|f| crate::gait_pretreat::cut(f)).collect::<Result<Vec<_>>>()?;
        self.embed_cut_sequence(&cut, frames.len())
    }

    fn gait_net(&self) -> Result<&GaitBase> {
        match &self.net {
            Net::GaitBase(net) => Ok(net),
            _ => Err(Error::invalid(format!("`{}` is a body model: it reads body crops", self.spec.id))),
        }
    }

    /// 64×44 frames (`offered` before any were dropped) → the unit template.
    fn embed_cut_sequence(&self, kept: &[Vec<u8>], offered: usize) -> Result<(Vec<f32>, usize)> {
        let net = self.gait_net()?;
        if kept.len() < MIN_GAIT_FRAMES {
            return Err(Error::invalid(format!(
                "{} of {offered} silhouettes usable (empty or off-centre ones are dropped); a gait template needs at least {MIN_GAIT_FRAMES}, about one gait cycle",
                kept.len(),
            )));
        }
        let x = crate::gait_pretreat::to_tensor(kept, net.device())?;
        let mut embedding = gaitbase::flatten(&net.forward(&x)?)?.into_iter().next().expect("one sequence");
        osprey_core::l2_normalize(&mut embedding);
        Ok((embedding, kept.len()))
    }
}

/// `crop` resized to `w`×`h` with Pillow's bilinear filter, as RGB bytes.
fn pil_resized(crop: &RgbImage, w: usize, h: usize) -> Result<Vec<u8>> {
    crate::pil_resize::resize_rgb(crop.as_raw(), crop.width() as usize, crop.height() as usize, w, h)
}
