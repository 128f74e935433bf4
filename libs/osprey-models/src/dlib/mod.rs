//! dlib's face models, read from dlib's own `.dat` files.

pub mod chip;
mod cnn;
pub mod geom;
pub mod imgproc;
pub mod mmod;
pub mod net;
pub mod resnet;
pub mod serialize;
pub mod shape;
