//! Osprey's models, run on candle:
//! * dlib's face models (MMOD CNN detector, 5-point shape predictor,
//!   ResNet-29 descriptor), read from the `.dat` files PyPI's
//!   `face-recognition-models` 0.3.0 ships ([`dlib`], [`face`]);
//! * MTCNN (face boxes and 5 landmarks) from facenet-pytorch's weights
//!   ([`mtcnn`]), and alignment onto the ArcFace template ([`align`]);
//! * the seed's face recognisers from the authors' checkpoints ([`adaface`],
//!   [`vit_kprpe`], behind [`recognizer`]) and the CAFace video aggregator
//!   ([`caface`]), loaded by [`checkpoint`];
//! * torchreid's OSNet body re-identification networks ([`osnet`]) with
//!   Pillow's bilinear resize, bit-exact ([`pil_resize`]);
//! * CLIP3DReID's body-shape student (TinyViT; [`clip3dreid`]);
//! * SapiensID's whole-person recogniser (retina patches, KP-RPE, semantic
//!   attention head; [`sapiensid`]);
//! * OpenGait's gait recognisers: GaitBase on silhouettes ([`gaitbase`],
//!   with OpenGait's silhouette pretreatment, [`gait_pretreat`]) and BigGait
//!   on RGB frames through DINOv2 ([`biggait`]);
//! * DINOv2 itself ([`dinov2`]), shared by BigGait and the out-of-the-box
//!   body appearance descriptor ([`appearance`]), whose ViT-S/14 weights come
//!   from an ONNX file in a PyPI package, read by our own reader ([`onnx`]);
//! * the body and gait recognisers behind one interface ([`person`]);
//! * the table of every face, body and gait model ([`registry`]).
//!
//! The device is the CPU unless the `cuda` feature is enabled and a GPU is
//! present ([`default_device`]).

pub mod adaface;
pub mod align;
pub mod appearance;
pub mod biggait;
pub mod caface;
pub mod centernet;
pub mod checkpoint;
pub mod clip3dreid;
pub mod dinov2;
pub mod dlib;
pub mod face;
pub mod gait_pretreat;
pub mod gaitbase;
mod layers;
pub mod movenet;
pub mod mtcnn;
pub mod onnx;
pub mod osnet;
pub mod person;
pub mod pil_resize;
pub mod recognizer;
pub mod registry;
pub mod rgb_pretreat;
pub mod sapiensid;
pub mod sapiensid_input;
pub mod tfjs;
pub mod torch_legacy;
pub mod vit_kprpe;

pub use dlib::geom::Rect;
pub use dlib::mmod::Detection;
pub use face::{Face, FaceModels, FaceOptions, FaceSelection, MODEL_NAME, model_dir};
pub use recognizer::{CropEmbedding, FaceRecognizer};
pub use registry::{FaceModelSpec, face_model, face_models};

/// The device models run on: the first CUDA GPU when built with `cuda` and
/// one is present, else the CPU.
pub fn default_device() -> candle_core::Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = candle_core::Device::new_cuda(0) {
        return d;
    }
    candle_core::Device::Cpu
}
