//! Observation quality and quality-weighted aggregation.
//!
//! An observation's quality in [0, 1] is the product of three terms, each
//! saturating at 1: the detector's confidence, the face size (faces of
//! [`FULL_QUALITY_SIZE`] px and more count fully) and sharpness (the variance
//! of the Laplacian of the aligned chip, which motion blur and defocus
//! collapse). A track's template is the weighted mean of its unit
//! embeddings, renormalised to unit length, with weight:
//! * the feature norm, for models whose norm measures quality (AdaFace and
//!   the ViTs trained with its loss): AdaFace's own video protocol;
//! * else quality² (so a few sharp frames outweigh many blurred ones).

use image::{RgbImage, imageops};
use osprey_core::{Error, Result};

use crate::BoxF;

/// Face width (px) from which size no longer lowers quality.
pub const FULL_QUALITY_SIZE: f32 = 80.0;
/// Confidence at which the confidence term is one half.
pub const HALF_CONFIDENCE: f32 = 0.3;
/// Laplacian variance at which the sharpness term is one half.
pub const HALF_SHARPNESS: f32 = 60.0;
/// Longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIZE: u32 = 160;

/// Variance of the 4-neighbour Laplacian of the image's luma.
pub fn sharpness(img: &RgbImage) -> f32 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let luma: Vec<f32> =
        img.pixels().map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).collect();
    let (mut sum, mut sum2, mut n) = (0f64, 0f64, 0f64);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let c = luma[y * w + x];
            let l = luma[y * w + x - 1] + luma[y * w + x + 1] + luma[(y - 1) * w + x] + luma[(y + 1) * w + x] - 4.0 * c;
            sum += l as f64;
            sum2 += (l as f64) * (l as f64);
            n += 1.0;
        }
    }
    let mean = sum / n;
    (sum2 / n - mean * mean).max(0.0) as f32
}

/// Quality in [0, 1] from detector confidence, face width and chip sharpness.
pub fn observation_quality(confidence: f32, face_width: f32, chip_sharpness: f32) -> f32 {
    let c = confidence.max(0.0);
    let conf = c / (c + HALF_CONFIDENCE);
    let size = (face_width / FULL_QUALITY_SIZE).clamp(0.0, 1.0);
    let sharp = chip_sharpness / (chip_sharpness + HALF_SHARPNESS);
    (conf * size * sharp).clamp(0.0, 1.0)
}

/// Running quality-weighted mean of unit embeddings.
#[derive(Debug, Clone)]
pub struct Aggregate {
    sum: Vec<f32>,
    weight: f32,
    quality_sum: f32,
}

impl Aggregate {
    pub fn new(dim: usize) -> Self {
        Self { sum: vec![0.0; dim], weight: 0.0, quality_sum: 0.0 }
    }

    /// Adds one observation's embedding.
    pub fn add(&mut self, embedding: &[f32], quality: f32, quality_norm: Option<f32>) {
        // A floor keeps every observation in, so a track of only poor frames
        // still has a template.
        let w = match quality_norm {
            Some(norm) => norm.max(1e-3),
            None => quality.max(1e-3).powi(2),
        };
        for (s, e) in self.sum.iter_mut().zip(embedding) {
            *s += w * e;
        }
        self.weight += w;
        self.quality_sum += w * quality;
    }

    /// The unit-norm template embedding (`None` before any observation).
    pub fn embedding(&self) -> Option<Vec<f32>> {
        if self.weight <= 0.0 {
            return None;
        }
        let mut e = self.sum.clone();
        osprey_core::l2_normalize(&mut e);
        Some(e)
    }

    /// The weighted mean quality of the observations.
    pub fn quality(&self) -> f32 {
        if self.weight > 0.0 { self.quality_sum / self.weight } else { 0.0 }
    }
}

/// The pixels between the edges `left`..`right`, `top`..`bottom` (rounded
/// outwards, clamped to the image, at least one pixel).
pub fn crop_edges(img: &RgbImage, left: f32, top: f32, right: f32, bottom: f32) -> RgbImage {
    let x0 = left.floor().clamp(0.0, img.width().saturating_sub(1) as f32) as u32;
    let y0 = top.floor().clamp(0.0, img.height().saturating_sub(1) as f32) as u32;
    let x1 = (right.ceil() as u32).clamp(x0 + 1, img.width());
    let y1 = (bottom.ceil() as u32).clamp(y0 + 1, img.height());
    imageops::crop_imm(img, x0, y0, x1 - x0, y1 - y0).to_image()
}

/// The crop around `bbox` (with 40 % margin, clamped to the image), at most
/// [`THUMBNAIL_SIZE`] px on its longer side.
pub fn thumbnail(img: &RgbImage, bbox: &BoxF) -> RgbImage {
    let m = 0.4 * bbox.w.max(bbox.h);
    let crop = crop_edges(img, bbox.x - m, bbox.y - m, bbox.x + bbox.w + m, bbox.y + bbox.h + m);
    let longer = crop.width().max(crop.height());
    if longer <= THUMBNAIL_SIZE {
        return crop;
    }
    let s = THUMBNAIL_SIZE as f32 / longer as f32;
    let (w, h) =
        (((crop.width() as f32 * s).round() as u32).max(1), ((crop.height() as f32 * s).round() as u32).max(1));
    imageops::resize(&crop, w, h, imageops::FilterType::Triangle)
}

/// [`thumbnail`] encoded as JPEG (quality 85).
pub fn thumbnail_jpeg(img: &RgbImage, bbox: &BoxF) -> Result<Vec<u8>> {
    encode_jpeg(&thumbnail(img, bbox))
}

/// Encodes an RGB image as JPEG (quality 85).
pub fn encode_jpeg(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(img)
        .map_err(|e| Error::internal(format!("cannot encode a thumbnail: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_lowers_sharpness_and_quality() {
        let sharp = RgbImage::from_fn(64, 64, |x, y| {
            let v = if (x / 4 + y / 4) % 2 == 0 { 230 } else { 20 };
            image::Rgb([v, v, v])
        });
        let blurred = imageops::blur(&sharp, 3.0);
        let (s, b) = (sharpness(&sharp), sharpness(&blurred));
        assert!(s > 10.0 * b, "sharp {s} vs blurred {b}");
        assert!(observation_quality(1.0, 100.0, s) > observation_quality(1.0, 100.0, b));
        assert!(observation_quality(1.0, 100.0, s) > observation_quality(1.0, 40.0, s));
        assert!(observation_quality(1.0, 100.0, s) > observation_quality(0.1, 100.0, s));
        let q = observation_quality(5.0, 500.0, 1e6);
        assert!(q > 0.9 && q <= 1.0);
    }

    #[test]
    fn aggregate_favours_good_observations() {
        let mut a = Aggregate::new(2);
        a.add(&[1.0, 0.0], 0.9, None);
        a.add(&[0.0, 1.0], 0.1, None);
        let e = a.embedding().unwrap();
        assert!(e[0] > 0.99 && e[1] > 0.0, "{e:?}");
        assert!(((e[0] * e[0] + e[1] * e[1]).sqrt() - 1.0).abs() < 1e-6);
        assert!(a.quality() > 0.8);
        assert!(Aggregate::new(3).embedding().is_none());
    }

    #[test]
    fn thumbnails_are_bounded_crops() {
        let img = RgbImage::new(1000, 800);
        let t = thumbnail(&img, &BoxF { x: 100.0, y: 100.0, w: 400.0, h: 400.0 });
        assert_eq!(t.width().max(t.height()), THUMBNAIL_SIZE);
        let edge = thumbnail(&img, &BoxF { x: 990.0, y: 790.0, w: 30.0, h: 30.0 });
        assert!(edge.width() >= 1 && edge.height() >= 1);
        let jpeg = thumbnail_jpeg(&img, &BoxF { x: 10.0, y: 10.0, w: 50.0, h: 60.0 }).unwrap();
        assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
    }
}
