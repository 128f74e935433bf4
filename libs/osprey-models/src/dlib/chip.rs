//! Face alignment as dlib does it: `get_face_chip_details(shape, size,
//! padding)` fits a similarity transform from a canonical 5-point template to
//! the landmarks, and `extract_image_chip` samples the rotated square with
//! bilinear interpolation, going down a `pyramid_down<2>` first when the face
//! is much larger than the chip.

use super::geom::{Affine, DRect, Rect, rotate};
use super::imgproc::{pyramid_down2, rect_down2, transform_bilinear};
use image::RgbImage;

/// Where a chip comes from: a rotated rectangle in the image and the chip size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChipDetails {
    pub rect: DRect,
    pub angle: f64,
    pub rows: usize,
    pub cols: usize,
}

/// dlib's canonical positions of the 5 landmarks (eye corners and nose
/// bottom) in a unit square, in shape-predictor order.
const TEMPLATE_5: [[f64; 2]; 5] = [
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
];

/// The chip for a face with 5 landmarks (`get_face_chip_details`).
pub fn face_chip_details(landmarks: &[[i64; 2]; 5], size: usize, padding: f64) -> ChipDetails {
    let from: Vec<[f64; 2]> = TEMPLATE_5
        .iter()
        .map(|p| {
            let x = (padding + p[0]) / (2.0 * padding + 1.0);
            let y = (padding + p[1]) / (2.0 * padding + 1.0);
            [x * size as f64, y * size as f64]
        })
        .collect();
    let to: Vec<[f64; 2]> = landmarks.iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
    let t = Affine::similarity(&from, &to);
    let (a, b) = (t.m[0], t.m[2]);
    let angle = b.atan2(a);
    let scale = (a * a + b * b).sqrt();
    let centre = t.apply([size as f64 / 2.0, size as f64 / 2.0]);
    let rect = DRect::centered(centre, size as f64 * scale, size as f64 * scale);
    ChipDetails { rect, angle, rows: size, cols: size }
}

/// Extracts one chip (`extract_image_chip` with bilinear interpolation).
pub fn extract_chip(img: &RgbImage, chip: &ChipDetails) -> RgbImage {
    let size = (chip.rows * chip.cols) as f64;
    let image_rect = Rect::sized(img.width() as i64, img.height() as i64).to_drect();
    // The region of the image the pyramid levels need: 2 px of border, more
    // for every level below the first.
    let mut grow = 2.0;
    let mut r = rect_down2(chip.rect, 1);
    while r.area() > size {
        r = rect_down2(r, 1);
        grow = grow * 2.0 + 2.0;
    }
    let centre = chip.rect.center();
    let mut rotated = DRect::empty();
    for p in chip.rect.corners() {
        rotated = rotated.include(rotate(centre, p, chip.angle));
    }
    let bbox = rotated.grow(grow).intersect(&image_rect).round();

    let mut out = RgbImage::new(chip.cols as u32, chip.rows as u32);
    if bbox.is_empty() {
        return out;
    }
    // Fast path: an axis-aligned chip of the rectangle's own size is a copy.
    if chip.angle == 0.0 && chip.rows as f64 == chip.rect.height() && chip.cols as f64 == chip.rect.width() {
        let r = chip.rect.round();
        for y in 0..chip.rows as i64 {
            for x in 0..chip.cols as i64 {
                let (sx, sy) = (r.left + x, r.top + y);
                if sx >= 0 && sy >= 0 && sx < img.width() as i64 && sy < img.height() as i64 {
                    out.put_pixel(x as u32, y as u32, *img.get_pixel(sx as u32, sy as u32));
                }
            }
        }
        return out;
    }
    // The sub-image (or pyramid level) to sample from.
    let (bx, by) = (bbox.left as usize, bbox.top as usize);
    let (bw, bh) = (bbox.width() as usize, bbox.height() as usize);
    let mut level: i32 = -1;
    let mut rect = chip.rect.translate(-(bbox.left as f64), -(bbox.top as f64));
    while rect_down2(rect, 1).area() > size {
        level += 1;
        rect = rect_down2(rect, 1);
    }
    let source = if level < 0 {
        crop(img, bx, by, bw, bh)
    } else {
        let mut l = pyramid_down2(img, bx, by, bw, bh);
        for _ in 0..level {
            let (w, h) = (l.width() as usize, l.height() as usize);
            l = pyramid_down2(&l, 0, 0, w, h);
        }
        l
    };
    let c = rect.center();
    let to = [
        rotate(c, [rect.l, rect.t], chip.angle),
        rotate(c, [rect.r, rect.t], chip.angle),
        rotate(c, [rect.l, rect.b], chip.angle),
    ];
    let (w, h) = ((chip.cols - 1) as f64, (chip.rows - 1) as f64);
    let map = Affine::from_three([[0.0, 0.0], [w, 0.0], [0.0, h]], to);
    transform_bilinear(&source, &mut out, &map);
    out
}

fn crop(img: &RgbImage, x: usize, y: usize, w: usize, h: usize) -> RgbImage {
    let mut out = RgbImage::new(w as u32, h as u32);
    let stride = img.width() as usize * 3;
    let src = img.as_raw();
    for (r, row) in out.as_mut().chunks_exact_mut(w * 3).enumerate() {
        let start = (y + r) * stride + x * 3;
        row.copy_from_slice(&src[start..start + w * 3]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chip_of_a_template_face_is_axis_aligned_at_unit_scale() {
        // Landmarks placed exactly where the template puts them in a 150 chip.
        let pts: Vec<[i64; 2]> = TEMPLATE_5
            .iter()
            .map(|p| [((0.25 + p[0]) / 1.5 * 1500.0).round() as i64, ((0.25 + p[1]) / 1.5 * 1500.0).round() as i64])
            .collect();
        let d = face_chip_details(&pts.try_into().unwrap(), 150, 0.25);
        assert!(d.angle.abs() < 1e-3, "{d:?}");
        assert!((d.rect.width() - 1500.0).abs() < 2.0, "{d:?}");
    }
}
