//! The body and gait recognisers behind one interface: a model id from the
//! [`registry`](crate::registry) ([`PersonModelSpec`]), the user's
//! checkpoint, body crops or silhouette sequences in, unit embeddings out.
//!
//! * Body (OSNet, CLIP3DReID): each crop is resized with Pillow's bilinear
//!   filter as the authors' test transforms do ([`crate::pil_resize`]:
//!   256×128 for OSNet, 224×224 for CLIP3DReID), then normalised; the 512-d
//!   feature is L2-normalised, so templates compare by cosine, as both
//!   evaluations do.
//! * Body (SapiensID): each crop goes through the authors' test transform
//!   (white square pad, bilinear to 384×384) and its 22 keypoints are found
//!   on that square ([`crate::sapiensid_input`]: MoveNet and MTCNN standing
//!   in for upstream's YOLOv8-pose and face detector); the raw embedding
//!   (4096 for the published model) is L2-normalised and compared by cosine.
//! * Gait (BigGait): a sequence of RGB person crops, each through OpenGait's
//!   `pretreatment_rgb` ([`crate::rgb_pretreat`]: OpenCV's bilinear resize
//!   to height 256, centre pad or crop to 128 wide, the raw width/height
//!   ratio kept), the sequence through the network; its [256, 16] output is
//!   flattened and normalised as GaitBase's is.
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

use crate::biggait::{self, BigGait, BigGaitConfig};
use crate::checkpoint::Checkpoint;
use crate::clip3dreid::{self, Clip3dReid, Clip3dReidConfig};
use crate::gaitbase::{self, GaitBase};
use crate::layers::cerr;
use crate::osnet::{self, OsNet};
use crate::registry::{PersonArchitecture, PersonModelSpec};
use crate::rgb_pretreat::{self, RgbFrame};
use crate::sapiensid::{self, SapiensId, SapiensIdConfig};
use crate::sapiensid_input::{self, BodyKeypointer};

/// Body crops per forward pass.
pub const BODY_BATCH: usize = 32;
/// Least silhouettes a gait sequence needs after pretreatment: one gait
/// cycle (about a second of walking) at 25 frames/s.
pub const MIN_GAIT_FRAMES: usize = 25;

enum Net {
    OsNet(OsNet),
    Clip3dReid(Clip3dReid),
    SapiensId(Box<SapiensId>, BodyKeypointer),
    GaitBase(GaitBase),
    BigGait(Box<BigGait>),
}

/// A body or gait recogniser loaded from the user's checkpoint.
pub struct PersonRecognizer {
    spec: PersonModelSpec,
    net: Net,
    /// Width of the templates (the checkpoint's configuration may be smaller
    /// than the published one the registry describes).
    dim: usize,
}

impl PersonRecognizer {
    /// Loads `spec`'s network from the checkpoint at `weights`, checking
    /// every name and shape first (training-only tensors ignored). The
    /// transformer models' sizes are read from the checkpoint's shapes.
    /// `models` is Osprey's model folder: SapiensID finds its keypoints with
    /// MoveNet and MTCNN from there.
    pub fn load(spec: &PersonModelSpec, weights: &Path, models: &Path, device: &Device) -> Result<PersonRecognizer> {
        let checkpoint = Checkpoint::open(weights)?;
        let (net, dim) = match spec.architecture {
            PersonArchitecture::OsNet(variant) => {
                let bound = checkpoint.bind(&osnet::manifest(variant), &osnet::IGNORED_PREFIXES, device)?;
                (Net::OsNet(OsNet::new(variant, &bound, device)?), osnet::FEATURE_DIM)
            }
            PersonArchitecture::Clip3dReid => {
                let cfg = Clip3dReidConfig::from_checkpoint(&checkpoint)?;
                let bound =
                    checkpoint.bind(&clip3dreid::inference_manifest(&cfg), &clip3dreid::IGNORED_PREFIXES, device)?;
                (Net::Clip3dReid(Clip3dReid::new(&cfg, &bound, device)?), clip3dreid::FEATURE_DIM)
            }
            PersonArchitecture::SapiensId => {
                let cfg = SapiensIdConfig::from_checkpoint(&checkpoint)?;
                let bound = checkpoint.bind(&sapiensid::manifest(&cfg), &[], device)?;
                let net = SapiensId::new(&cfg, &bound, device)?;
                (Net::SapiensId(Box::new(net), BodyKeypointer::load(models, device)?), cfg.output_dim)
            }
            PersonArchitecture::GaitBase => {
                let bound = checkpoint.bind(&gaitbase::embedding_manifest(), gaitbase::IGNORE_PREFIXES, device)?;
                (Net::GaitBase(GaitBase::new(&bound, device)?), gaitbase::EMBEDDING_DIM)
            }
            PersonArchitecture::BigGait => {
                let cfg = BigGaitConfig::from_checkpoint(&checkpoint)?;
                let bound = checkpoint.bind(&biggait::embedding_manifest(&cfg), biggait::IGNORE_PREFIXES, device)?;
                (Net::BigGait(Box::new(BigGait::new(&cfg, &bound, device)?)), cfg.fc_out * gaitbase::PARTS)
            }
        };
        Ok(PersonRecognizer { spec: spec.clone(), net, dim })
    }

    /// Width of this checkpoint's templates.
    pub fn dim(&self) -> usize {
        self.dim
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
                Net::SapiensId(net, keypointer) => {
                    let prepared = keypointer.prepare(chunk, net.device())?;
                    net.forward(&prepared.images, &prepared.keypoints)?
                }
                Net::GaitBase(_) | Net::BigGait(_) => return Err(self.wrong_input("single body crops")),
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

    /// The gait template of one sequence of RGB person crops (any size, in
    /// time order) for BigGait, and the number of frames it used; an error
    /// with fewer than [`MIN_GAIT_FRAMES`] frames.
    pub fn embed_gait_frames(&self, frames: &[RgbImage]) -> Result<(Vec<f32>, usize)> {
        let pretreated = frames
            .iter()
            .map(|f| rgb_pretreat::pretreat_frame(f.as_raw(), f.width() as usize, f.height() as usize))
            .collect::<Result<Vec<_>>>()?;
        self.embed_gait_pretreated_rgb(&pretreated)
    }

    /// [`Self::embed_gait_frames`] for frames already through OpenGait's
    /// `pretreatment_rgb` (as a track's RGB strip holds them).
    pub fn embed_gait_pretreated_rgb(&self, frames: &[RgbFrame]) -> Result<(Vec<f32>, usize)> {
        let Net::BigGait(net) = &self.net else {
            return Err(self.wrong_input("RGB frame sequences"));
        };
        if frames.len() < MIN_GAIT_FRAMES {
            return Err(Error::invalid(format!(
                "{} frames; a gait template needs at least {MIN_GAIT_FRAMES}, about one gait cycle",
                frames.len()
            )));
        }
        let (x, ratios) = rgb_pretreat::to_tensors(frames, net.device())?;
        let out = net.forward(&x, &ratios)?;
        let mut embedding: Vec<f32> = out
            .flatten_all()
            .and_then(|t| t.to_dtype(candle_core::DType::F32))
            .and_then(|t| t.to_vec1())
            .map_err(cerr)?;
        osprey_core::l2_normalize(&mut embedding);
        Ok((embedding, frames.len()))
    }

    /// SapiensID only: the first half of [`Self::embed_bodies`], the
    /// network inputs of `crops` (test transform and keypoints), so that
    /// preparing and running can be timed apart (`osprey bench
    /// person-model`) or the inputs handed to another implementation.
    pub fn prepare_sapiensid(&self, crops: &[RgbImage]) -> Result<sapiensid_input::Prepared> {
        match &self.net {
            Net::SapiensId(net, keypointer) => keypointer.prepare(crops, net.device()),
            _ => Err(Error::invalid(format!("`{}` is not SapiensID: it has no keypoint inputs", self.spec.id))),
        }
    }

    /// SapiensID only: the second half of [`Self::embed_bodies`], unit
    /// embeddings of prepared inputs (one forward pass over the batch; the
    /// network computes each sample on its own).
    pub fn embed_sapiensid(&self, prepared: &sapiensid_input::Prepared) -> Result<Vec<Vec<f32>>> {
        let Net::SapiensId(net, _) = &self.net else {
            return Err(Error::invalid(format!("`{}` is not SapiensID", self.spec.id)));
        };
        let features = net.forward(&prepared.images, &prepared.keypoints)?;
        let rows: Vec<Vec<f32>> =
            features.to_vec2().map_err(|e| Error::internal(format!("{} output: {e}", self.spec.id)))?;
        Ok(rows
            .into_iter()
            .map(|mut r| {
                osprey_core::l2_normalize(&mut r);
                r
            })
            .collect())
    }

    /// Whether the model reads RGB frame sequences (BigGait) rather than
    /// silhouettes (GaitBase) or single crops (body models).
    pub fn reads_rgb_sequences(&self) -> bool {
        matches!(self.net, Net::BigGait(_))
    }

    fn gait_net(&self) -> Result<&GaitBase> {
        match &self.net {
            Net::GaitBase(net) => Ok(net),
            _ => Err(self.wrong_input("silhouette sequences")),
        }
    }

    /// The error for input the model does not read.
    fn wrong_input(&self, given: &str) -> Error {
        let (kind, reads) = match self.net {
            Net::OsNet(_) | Net::Clip3dReid(_) | Net::SapiensId(..) => ("body", "single body crops"),
            Net::GaitBase(_) => ("gait", "silhouette sequences"),
            Net::BigGait(_) => ("gait", "sequences of RGB person crops"),
        };
        Error::invalid(format!("`{}` is a {kind} model: it reads {reads}, not {given}", self.spec.id))
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
