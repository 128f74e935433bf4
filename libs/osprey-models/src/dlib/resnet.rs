//! dlib's face recognition ResNet (`dlib_face_recognition_resnet_model_v1`,
//! the network of dlib's dnn_face_recognition_ex.cpp): a 150×150 aligned
//! chip → 128-d descriptor whose Euclidean distance is below 0.6 for the same
//! person.

use super::cnn::{Conv, add_zero_filled, cerr, global_avg};
use super::net::{Input, Layer, Loss, NetFile};
use candle_core::{Device, Tensor};
use image::RgbImage;
use osprey_core::{Error, Result};

/// Side of the input chip.
pub const CHIP_SIZE: usize = 150;
/// Descriptor length.
pub const DESCRIPTOR_DIM: usize = 128;

enum Block {
    /// relu(x + affine(conv(relu(affine(conv(x))))))
    Residual { c1: Conv, c2: Conv },
    /// relu(avgpool₂(x) ⊕ affine(conv(relu(affine(conv_stride2(x))))))
    Down { c1: Conv, c2: Conv, pool: [usize; 2] },
}

/// The descriptor network.
pub struct FaceDescriptor {
    mean: [f32; 3],
    stem: Conv,
    pool: ([usize; 2], [usize; 2]),
    blocks: Vec<Block>,
    fc: Tensor,
    /// dlib's same-person distance threshold stored in the file (0.6).
    pub distance_threshold: f32,
    device: Device,
}

/// Residual (false) or downsampling (true) blocks in input → output order.
const PLAN: [bool; 14] = [
    false, false, false, // 32
    true, false, false, false, // 64
    true, false, false, // 128
    true, false, false, // 256
    true,  // 256, down
];

impl FaceDescriptor {
    /// Loads the network from dlib's file bytes.
    pub fn parse(bytes: &[u8], name: &str, device: &Device) -> Result<FaceDescriptor> {
        let net = NetFile::parse(bytes, name)?;
        let corrupt = |m: String| Error::new(osprey_core::ErrorKind::Corrupt, format!("{name}: {m}"));
        let Loss::Metric { distance_threshold, .. } = net.loss else {
            return Err(corrupt("not a metric-learning network (is this the detector file?)".into()));
        };
        let Input::RgbImageSized { mean, rows, cols } = net.input else {
            return Err(corrupt(format!("unexpected input layer {:?}", net.input)));
        };
        if rows != CHIP_SIZE || cols != CHIP_SIZE {
            return Err(corrupt(format!("input is {rows}x{cols}, expected {CHIP_SIZE}x{CHIP_SIZE}")));
        }
        let mut layers = net.layers.iter();
        let mut next = |want: &str| -> Result<&Layer> {
            let l = layers.next().ok_or_else(|| corrupt(format!("network ends where a {want} layer was expected")))?;
            if l.name() != want {
                return Err(corrupt(format!("found a {} layer where a {want} layer was expected", l.name())));
            }
            Ok(l)
        };
        let conv = |c: &Layer, a: &Layer| Conv::new(c, Some(a), device);
        let stem = conv(next("con")?, next("affine")?)?;
        next("relu")?;
        let pool = match next("max_pool")? {
            Layer::MaxPool { size, stride, pad } if *pad == [0, 0] => (*size, *stride),
            _ => return Err(corrupt("the stem's max_pool has padding".into())),
        };
        let mut blocks = Vec::new();
        for down in PLAN {
            let c1 = conv(next("con")?, next("affine")?)?;
            next("relu")?;
            let c2 = conv(next("con")?, next("affine")?)?;
            let block = if down {
                let pool = match next("avg_pool")? {
                    Layer::AvgPool { size, stride, pad } if size == stride && *pad == [0, 0] => *size,
                    _ => return Err(corrupt("unexpected avg_pool in a downsampling block".into())),
                };
                Block::Down { c1, c2, pool }
            } else {
                Block::Residual { c1, c2 }
            };
            next("add_prev")?;
            next("relu")?;
            blocks.push(block);
        }
        match next("avg_pool")? {
            Layer::AvgPool { size: [0, 0], .. } => {}
            _ => return Err(corrupt("expected a global average pool".into())),
        }
        let fc = match next("fc")? {
            Layer::Fc { inputs, outputs, weights, bias: None } if *outputs == DESCRIPTOR_DIM => {
                Tensor::from_vec(weights.clone(), (*inputs, *outputs), device).map_err(cerr)?
            }
            _ => return Err(corrupt("expected a 128-output fc layer without bias".into())),
        };
        if layers.next().is_some() {
            return Err(corrupt("more layers than the face recognition ResNet has".into()));
        }
        Ok(FaceDescriptor { mean, stem, pool, blocks, fc, distance_threshold, device: device.clone() })
    }

    /// Raw (not normalised) descriptors of aligned 150×150 chips, in order.
    pub fn describe(&self, chips: &[RgbImage]) -> Result<Vec<[f32; DESCRIPTOR_DIM]>> {
        if chips.is_empty() {
            return Ok(Vec::new());
        }
        let plane = CHIP_SIZE * CHIP_SIZE;
        let mut data = vec![0f32; chips.len() * 3 * plane];
        for (n, chip) in chips.iter().enumerate() {
            if chip.width() as usize != CHIP_SIZE || chip.height() as usize != CHIP_SIZE {
                return Err(Error::invalid(format!(
                    "face chips must be {CHIP_SIZE}x{CHIP_SIZE}, got {}x{}",
                    chip.width(),
                    chip.height()
                )));
            }
            let base = n * 3 * plane;
            for (i, px) in chip.as_raw().chunks_exact(3).enumerate() {
                for ch in 0..3 {
                    data[base + ch * plane + i] = (px[ch] as f32 - self.mean[ch]) / 256.0;
                }
            }
        }
        let x = Tensor::from_vec(data, (chips.len(), 3, CHIP_SIZE, CHIP_SIZE), &self.device).map_err(cerr)?;
        let mut x = self.stem.forward_relu(&x)?;
        x = x.max_pool2d_with_stride(self.pool.0[0], self.pool.1[0]).map_err(cerr)?;
        for b in &self.blocks {
            x = match b {
                Block::Residual { c1, c2 } => {
                    let y = c2.forward(&c1.forward_relu(&x)?)?;
                    (y + &x).map_err(cerr)?
                }
                Block::Down { c1, c2, pool } => {
                    let y = c2.forward(&c1.forward_relu(&x)?)?;
                    let p = x.avg_pool2d_with_stride(pool[0], pool[0]).map_err(cerr)?;
                    add_zero_filled(&p, &y)?
                }
            }
            .relu()
            .map_err(cerr)?;
        }
        let d = global_avg(&x)?.matmul(&self.fc).map_err(cerr)?;
        let rows: Vec<Vec<f32>> = d.to_vec2().map_err(cerr)?;
        Ok(rows.into_iter().map(|r| r.try_into().expect("128 outputs")).collect())
    }
}
