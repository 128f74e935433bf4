//! Pieces the ported networks share: candle errors as Osprey errors, bound
//! weights looked up by name with eval-mode BatchNorms as per-channel
//! affines (to fold into the layer before them), and 8-bit RGB crops as
//! normalised NCHW planes.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use osprey_core::{Error, ErrorKind, Result};

/// A tensor computation's failure as an internal error.
pub(crate) fn cerr(e: candle_core::Error) -> Error {
    Error::internal(format!("tensor computation failed: {e}"))
}

/// Bound weights by name (binding checked their presence and shapes).
pub(crate) struct Weights<'a>(pub(crate) &'a HashMap<String, Tensor>);

impl Weights<'_> {
    pub(crate) fn get(&self, name: &str) -> Result<&Tensor> {
        self.0.get(name).ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("missing tensor `{name}`")))
    }

    /// The tensor's values, flattened, as f32 on the host.
    pub(crate) fn vec(&self, name: &str) -> Result<Vec<f32>> {
        self.get(name)?.flatten_all().and_then(|t| t.to_dtype(DType::F32)).and_then(|t| t.to_vec1()).map_err(cerr)
    }

    /// The eval-mode BatchNorm `name` as per-channel (scale, shift), so that
    /// `bn(x) = x·scale + shift`: `scale = γ/√(var + eps)`, `shift = β − mean·scale`,
    /// computed in f64. Without `affine`, γ = 1 and β = 0.
    pub(crate) fn bn(&self, name: &str, affine: bool, eps: f64) -> Result<(Vec<f32>, Vec<f32>)> {
        let mean = self.vec(&format!("{name}.running_mean"))?;
        let var = self.vec(&format!("{name}.running_var"))?;
        let (gamma, beta) = if affine {
            (self.vec(&format!("{name}.weight"))?, self.vec(&format!("{name}.bias"))?)
        } else {
            (vec![1.0; mean.len()], vec![0.0; mean.len()])
        };
        Ok((0..mean.len())
            .map(|c| {
                let s = gamma[c] as f64 / (var[c] as f64 + eps).sqrt();
                (s as f32, (beta[c] as f64 - mean[c] as f64 * s) as f32)
            })
            .unzip())
    }

    /// A weight with each output row (first dimension) scaled by a folded
    /// BN's scale, as a flat vector.
    pub(crate) fn scaled_rows(&self, name: &str, scale: &[f32]) -> Result<Vec<f32>> {
        let mut data = self.vec(name)?;
        let per_row = data.len() / scale.len().max(1);
        for (row, chunk) in data.chunks_mut(per_row).enumerate() {
            chunk.iter_mut().for_each(|v| *v *= scale[row]);
        }
        Ok(data)
    }
}

/// 8-bit RGB crops (row-major height × width × channel, already resized to
/// `height`×`width`) as the float32 input `[B, 3, height, width]`:
/// `(x/255 − mean)/std` per channel, as torchvision's `ToTensor` and
/// `Normalize` compute it.
pub(crate) fn normalised_planes<C: AsRef<[u8]>>(
    crops: &[C],
    (height, width): (usize, usize),
    mean: [f32; 3],
    std: [f32; 3],
    device: &Device,
) -> Result<Tensor> {
    let plane = height * width;
    let mut data = vec![0f32; crops.len() * 3 * plane];
    for (i, crop) in crops.iter().enumerate() {
        let crop = crop.as_ref();
        if crop.len() != plane * 3 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "crop {i} has {} bytes, expected {height}×{width}×3 = {} (RGB, resized beforehand)",
                    crop.len(),
                    plane * 3
                ),
            ));
        }
        let out = &mut data[i * 3 * plane..(i + 1) * 3 * plane];
        for (p, px) in crop.chunks_exact(3).enumerate() {
            for ch in 0..3 {
                out[ch * plane + p] = (px[ch] as f32 / 255.0 - mean[ch]) / std[ch];
            }
        }
    }
    Tensor::from_vec(data, (crops.len(), 3, height, width), device).map_err(cerr)
}
