//! Shot cuts: a track never continues across one. A cut is a large change
//! in the frame's colour distribution between two analysed frames
//! (histograms of a subsampled frame, 8 bins per channel, compared by L1
//! distance), which camera motion and people walking do not produce.

use image::RgbImage;

/// L1 distance between normalised histograms (0..2) above which two frames
/// belong to different shots.
pub const CUT_DISTANCE: f32 = 0.7;

/// A frame's colour histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature([f32; 24]);

impl Signature {
    pub fn of(img: &RgbImage) -> Signature {
        let mut h = [0f32; 24];
        let step = ((img.width() * img.height()) as f32 / 20_000.0).sqrt().max(1.0) as u32;
        let mut n = 0f32;
        for y in (0..img.height()).step_by(step as usize) {
            for x in (0..img.width()).step_by(step as usize) {
                let p = img.get_pixel(x, y);
                for c in 0..3 {
                    h[c * 8 + (p[c] >> 5) as usize] += 1.0;
                }
                n += 1.0;
            }
        }
        for v in &mut h {
            *v /= n.max(1.0);
        }
        Signature(h)
    }

    /// Sum over channels of the L1 distance of the histograms, over 3.
    pub fn distance(&self, other: &Signature) -> f32 {
        self.0.iter().zip(&other.0).map(|(a, b)| (a - b).abs()).sum::<f32>() / 3.0
    }

    /// Whether `next` starts a new shot after `self`.
    pub fn is_cut(&self, next: &Signature) -> bool {
        self.distance(next) > CUT_DISTANCE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_between_different_scenes_not_within_one() {
        let dark = RgbImage::from_fn(320, 180, |x, _| image::Rgb([(x / 20) as u8, 10, 20]));
        let shifted = RgbImage::from_fn(320, 180, |x, _| image::Rgb([((x + 15) / 20) as u8, 10, 20]));
        let bright = RgbImage::from_fn(320, 180, |x, y| image::Rgb([200, (x % 256) as u8, (y + 60) as u8]));
        let (a, b, c) = (Signature::of(&dark), Signature::of(&shifted), Signature::of(&bright));
        assert!(!a.is_cut(&b), "{}", a.distance(&b));
        assert!(a.is_cut(&c), "{}", a.distance(&c));
    }
}
