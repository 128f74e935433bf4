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
mod conv;
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

/// The device models run on, as `OSPREY_DEVICE` says: `auto` (or unset) the
/// first CUDA GPU when built with `cuda` and one is present, else the CPU;
/// `cpu`; `cuda` or `cuda:N` that GPU, an error when there is none or the
/// build has no CUDA support.
pub fn default_device() -> osprey_core::Result<candle_core::Device> {
    device_named(std::env::var("OSPREY_DEVICE").ok().as_deref().unwrap_or("auto"))
}

fn device_named(name: &str) -> osprey_core::Result<candle_core::Device> {
    use osprey_core::Error;
    let cuda_index = match name.trim() {
        "" | "auto" => {
            #[cfg(feature = "cuda")]
            if let Ok(d) = candle_core::Device::new_cuda(0) {
                return Ok(d);
            }
            return Ok(candle_core::Device::Cpu);
        }
        "cpu" => return Ok(candle_core::Device::Cpu),
        "cuda" => 0,
        other => other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()).ok_or_else(|| {
            Error::invalid(format!("OSPREY_DEVICE=`{other}`: name `auto`, `cpu`, `cuda` or `cuda:N`"))
        })?,
    };
    #[cfg(feature = "cuda")]
    {
        candle_core::Device::new_cuda(cuda_index)
            .map_err(|e| Error::invalid(format!("OSPREY_DEVICE=`{name}`: no CUDA device {cuda_index}: {e}")))
    }
    #[cfg(not(feature = "cuda"))]
    Err(Error::invalid(format!(
        "OSPREY_DEVICE=`{name}` (GPU {cuda_index}): this build has no CUDA support; build with `make build-cuda` (--features cuda)"
    )))
}

#[cfg(test)]
mod device_tests {
    use super::device_named;

    #[test]
    fn devices_are_named_or_refused_with_the_reason() {
        assert!(device_named("cpu").unwrap().is_cpu());
        assert!(device_named("auto").is_ok());
        let err = device_named("gpu").unwrap_err().to_string();
        assert!(err.contains("name `auto`, `cpu`, `cuda` or `cuda:N`"), "{err}");
        #[cfg(not(feature = "cuda"))]
        {
            let err = device_named("cuda:1").unwrap_err().to_string();
            assert!(err.contains("this build has no CUDA support"), "{err}");
        }
    }
}
