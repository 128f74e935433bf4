//! Five-point face alignment onto the ArcFace template, the crop AdaFace and
//! CVLface were trained on: a similarity transform (rotation, uniform scale,
//! translation) from the detected landmarks to the template's points, then a
//! bilinear warp into a 112×112 crop.

use image::{Rgb, RgbImage};

/// Side of the aligned crop, pixels.
pub const ARCFACE_SIZE: u32 = 112;

/// The ArcFace template in 112×112 crop pixels (x, y): left eye, right eye,
/// nose tip, left and right mouth corners (the subject's left is the
/// viewer's left, as MTCNN orders them).
pub const ARCFACE_TEMPLATE: [[f32; 2]; 5] =
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]];

/// The template's points in [0, 1] crop coordinates: the keypoints a KP-RPE
/// model gets for a crop that is already aligned.
pub fn template_keypoints() -> [[f32; 2]; 5] {
    ARCFACE_TEMPLATE.map(|[x, y]| [x / ARCFACE_SIZE as f32, y / ARCFACE_SIZE as f32])
}

/// A 2-D similarity `[a −b; b a]·p + t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f64,
    pub b: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Similarity {
    /// The least-squares similarity taking `src` onto `dst` (Umeyama's
    /// estimate without reflection, which in 2-D has this closed form).
    /// `None` when the source points coincide.
    pub fn estimate(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Option<Similarity> {
        let n = src.len().min(dst.len());
        if n < 2 {
            return None;
        }
        let mean = |p: &[[f32; 2]]| {
            let (sx, sy) = p[..n].iter().fold((0f64, 0f64), |(x, y), q| (x + q[0] as f64, y + q[1] as f64));
            (sx / n as f64, sy / n as f64)
        };
        let (mx, my) = mean(src);
        let (nx, ny) = mean(dst);
        let (mut dot, mut cross, mut var) = (0f64, 0f64, 0f64);
        for i in 0..n {
            let (x, y) = (src[i][0] as f64 - mx, src[i][1] as f64 - my);
            let (u, v) = (dst[i][0] as f64 - nx, dst[i][1] as f64 - ny);
            dot += x * u + y * v;
            cross += x * v - y * u;
            var += x * x + y * y;
        }
        if var <= f64::EPSILON {
            return None;
        }
        let (a, b) = (dot / var, cross / var);
        Some(Similarity { a, b, tx: nx - (a * mx - b * my), ty: ny - (b * mx + a * my) })
    }

    /// Maps a point.
    pub fn apply(&self, [x, y]: [f32; 2]) -> [f32; 2] {
        let (x, y) = (x as f64, y as f64);
        [(self.a * x - self.b * y + self.tx) as f32, (self.b * x + self.a * y + self.ty) as f32]
    }

    /// The inverse transform.
    pub fn inverse(&self) -> Similarity {
        let d = self.a * self.a + self.b * self.b;
        let (a, b) = (self.a / d, -self.b / d);
        Similarity { a, b, tx: -(a * self.tx - b * self.ty), ty: -(b * self.tx + a * self.ty) }
    }
}

/// The 112×112 ArcFace crop of the face whose five landmarks (image pixels,
/// MTCNN's order) are `landmarks`; pixels outside the image are black, as
/// OpenCV's `warpAffine` leaves them.
pub fn align_arcface(image: &RgbImage, landmarks: &[[f32; 2]; 5]) -> Option<RgbImage> {
    let to_crop = Similarity::estimate(landmarks, &ARCFACE_TEMPLATE)?;
    Some(warp(image, &to_crop.inverse(), ARCFACE_SIZE, ARCFACE_SIZE))
}

/// Samples `image` at `from_out(p)` for every pixel centre p of a `w`×`h`
/// output, bilinearly.
pub fn warp(image: &RgbImage, from_out: &Similarity, w: u32, h: u32) -> RgbImage {
    let (iw, ih) = (image.width() as i64, image.height() as i64);
    let px = |x: i64, y: i64| -> [f32; 3] {
        if x < 0 || y < 0 || x >= iw || y >= ih {
            [0.0; 3]
        } else {
            let p = image.get_pixel(x as u32, y as u32).0;
            [p[0] as f32, p[1] as f32, p[2] as f32]
        }
    };
    RgbImage::from_fn(w, h, |x, y| {
        let [sx, sy] = from_out.apply([x as f32, y as f32]);
        let (x0, y0) = (sx.floor(), sy.floor());
        let (fx, fy) = (sx - x0, sy - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let (p00, p10, p01, p11) = (px(x0, y0), px(x0 + 1, y0), px(x0, y0 + 1), px(x0 + 1, y0 + 1));
        let mut out = [0u8; 3];
        for c in 0..3 {
            let top = p00[c] + (p10[c] - p00[c]) * fx;
            let bottom = p01[c] + (p11[c] - p01[c]) * fx;
            out[c] = (top + (bottom - top) * fy).round().clamp(0.0, 255.0) as u8;
        }
        Rgb(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_recovers_a_known_similarity() {
        let t = Similarity { a: 0.8, b: -0.3, tx: 12.0, ty: -4.0 };
        let src = [[10.0, 20.0], [50.0, 22.0], [30.0, 40.0], [15.0, 60.0], [45.0, 61.0]];
        let dst = src.map(|p| t.apply(p));
        let e = Similarity::estimate(&src, &dst).unwrap();
        for (got, want) in [(e.a, t.a), (e.b, t.b), (e.tx, t.tx), (e.ty, t.ty)] {
            assert!((got - want).abs() < 1e-4, "{e:?} vs {t:?}");
        }
        let back = e.inverse().apply(e.apply([3.0, 7.0]));
        assert!((back[0] - 3.0).abs() < 1e-4 && (back[1] - 7.0).abs() < 1e-4);
        assert!(Similarity::estimate(&[[1.0, 1.0]; 5], &dst).is_none());
    }

    #[test]
    fn aligning_the_template_itself_is_the_identity() {
        let img = RgbImage::from_fn(112, 112, |x, y| Rgb([x as u8, y as u8, (x + y) as u8]));
        let out = align_arcface(&img, &ARCFACE_TEMPLATE).unwrap();
        assert_eq!(out, img);
    }
}
