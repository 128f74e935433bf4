//! Image resampling exactly as dlib does it (image_transforms/interpolation.h
//! and image_pyramid.h), because the detector and the descriptor were
//! trained on images made this way: bilinear resizing (with dlib's float
//! SIMD arithmetic for RGB and float planes), the 5-tap `pyramid_down<2>`,
//! and the affine chip sampler.

use super::geom::{Affine, DRect};
use image::RgbImage;

/// One output column of dlib's bilinear `resize_image`: the source columns
/// and the weight of the right one. dlib computes the columns in groups of
/// four with SSE, accumulating the position in f32 (`simd`), and the
/// remainder in f64; the arithmetic differs, so both are kept.
struct Column {
    left: usize,
    right: usize,
    lr32: f32,
    lr64: f64,
    simd: bool,
}

fn dlib_columns(in_w: usize, out_w: usize) -> Vec<Column> {
    let x_scale = (in_w - 1) as f64 / (out_w.max(2) - 1) as f64;
    let mut cols = Vec::with_capacity(out_w);
    let x0 = -4.0 * x_scale;
    let mut xs = [x0 as f32, (x0 + x_scale) as f32, (x0 + 2.0 * x_scale) as f32, (x0 + 3.0 * x_scale) as f32];
    let step = (4.0 * x_scale) as f32;
    loop {
        for x in &mut xs {
            *x += step;
        }
        let left = xs.map(|x| x as i32);
        if left[3] + 1 >= in_w as i32 || cols.len() + 4 > out_w {
            break;
        }
        for k in 0..4 {
            let l = left[k] as usize;
            cols.push(Column { left: l, right: l + 1, lr32: xs[k] - left[k] as f32, lr64: 0.0, simd: true });
        }
    }
    let mut x = -x_scale + cols.len() as f64 * x_scale;
    while cols.len() < out_w {
        x += x_scale;
        let left = x.floor() as usize;
        let lr64 = x - left as f64;
        cols.push(Column { left, right: (left + 1).min(in_w - 1), lr32: lr64 as f32, lr64, simd: false });
    }
    cols
}

/// dlib's bilinear row positions: the source rows and the weight of the lower one.
fn dlib_rows(in_h: usize, out_h: usize) -> impl Iterator<Item = (usize, usize, f64)> {
    let y_scale = (in_h - 1) as f64 / (out_h.max(2) - 1) as f64;
    let mut y = -y_scale;
    (0..out_h).map(move |_| {
        y += y_scale;
        let top = y.floor() as usize;
        (top, (top + 1).min(in_h - 1), y - top as f64)
    })
}

/// dlib's `resize_image(in, out)` for RGB images: SSE groups in f32 with
/// truncation, the remainder in f64.
pub fn resize_rgb(src: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
    resize_rgb_window(src, out_w, out_h, [0, 0, out_w, out_h])
}

/// The window `[x, y, w, h]` of `resize_rgb(src, out_w, out_h)`, computed
/// alone (the same pixels, for a fraction of the work); the window must lie
/// inside the resized image.
pub fn resize_rgb_window(src: &RgbImage, out_w: usize, out_h: usize, [x0, y0, w, h]: [usize; 4]) -> RgbImage {
    let (in_w, in_h) = (src.width() as usize, src.height() as usize);
    let mut out = RgbImage::new(w as u32, h as u32);
    if w == 0 || h == 0 || in_w == 0 || in_h == 0 || x0 + w > out_w || y0 + h > out_h {
        return out;
    }
    let s = src.as_raw();
    let cols = &dlib_columns(in_w, out_w)[x0..x0 + w];
    for ((top, bottom, tb), row) in dlib_rows(in_h, out_h).skip(y0).zip(out.as_mut().chunks_exact_mut(w * 3)) {
        let (tbf, itbf) = (tb as f32, (1.0 - tb) as f32);
        let (t, b) = (&s[top * in_w * 3..], &s[bottom * in_w * 3..]);
        for (c, col) in cols.iter().enumerate() {
            let (l, r) = (col.left * 3, col.right * 3);
            for ch in 0..3 {
                let (tl, tr, bl, br) = (t[l + ch], t[r + ch], b[l + ch], b[r + ch]);
                row[c * 3 + ch] = if col.simd {
                    let (lr, ilr) = (col.lr32, 1.0 - col.lr32);
                    let v =
                        itbf * ilr * tl as f32 + itbf * lr * tr as f32 + tbf * ilr * bl as f32 + tbf * lr * br as f32;
                    v as i32 as u8
                } else {
                    let lr = col.lr64;
                    let v = (1.0 - tb) * ((1.0 - lr) * tl as f64 + lr * tr as f64)
                        + tb * ((1.0 - lr) * bl as f64 + lr * br as f64);
                    v as u8
                };
            }
        }
    }
    out
}

/// dlib's `pyramid_up(img, pyramid_down<2>)`: the image doubled (the output
/// size follows from mapping the corners through `pyramid_down<2>`).
pub fn pyramid_up2(src: &RgbImage) -> RgbImage {
    let (w, h) = pyramid_up2_size(src.width() as usize, src.height() as usize);
    resize_rgb(src, w, h)
}

/// The size [`pyramid_up2`] gives a `w` × `h` image.
pub fn pyramid_up2_size(w: usize, h: usize) -> (usize, usize) {
    // rect_up of (0, 0, w−1, h−1): point_up(p) = (p + (1.25, 0.75))·2, then lround.
    let right = (((w as f64 - 1.0) + 1.25) * 2.0).round() as usize;
    let bottom = (((h as f64 - 1.0) + 0.75) * 2.0).round() as usize;
    (right + 1, bottom + 1)
}

/// Maps a rectangle in a `pyramid_up2`'d image back to the original
/// (`pyramid_down<2>::rect_down`, applied `levels` times).
pub fn rect_down2(r: DRect, levels: u32) -> DRect {
    let mut r = r;
    for _ in 0..levels {
        r = DRect::new(r.l / 2.0 - 1.25, r.t / 2.0 - 0.75, r.r / 2.0 - 1.25, r.b / 2.0 - 0.75);
    }
    r
}

/// dlib's `pyramid_down<2>` on an RGB image (a sub-image given by `x0, y0,
/// w, h` of `src`): a separable [1 4 6 4 1] filter, every other row and column,
/// 16-bit integer sums, divided by 256.
pub fn pyramid_down2(src: &RgbImage, x0: usize, y0: usize, w: usize, h: usize) -> RgbImage {
    if w <= 8 || h <= 8 {
        return RgbImage::new(0, 0);
    }
    let (ow, oh) = ((w - 3) / 2, (h - 3) / 2);
    let stride = src.width() as usize;
    let s = src.as_raw();
    // Row filter over every input row.
    let mut tmp = vec![0u16; h * ow * 3];
    for r in 0..h {
        let base = ((y0 + r) * stride + x0) * 3;
        for c in 0..ow {
            let p = base + 2 * c * 3;
            for ch in 0..3 {
                let px = |k: usize| s[p + k * 3 + ch] as u16;
                tmp[(r * ow + c) * 3 + ch] = px(0) + px(1) * 4 + px(2) * 6 + px(3) * 4 + px(4);
            }
        }
    }
    let mut out = RgbImage::new(ow as u32, oh as u32);
    let o = out.as_mut();
    let mut dr = 0;
    let mut r = 2;
    while r + 2 < h && dr < oh {
        for c in 0..ow {
            for ch in 0..3 {
                let t = |rr: usize| tmp[(rr * ow + c) * 3 + ch];
                let v = t(r - 2)
                    .wrapping_add(t(r - 1).wrapping_mul(4))
                    .wrapping_add(t(r).wrapping_mul(6))
                    .wrapping_add(t(r + 1).wrapping_mul(4))
                    .wrapping_add(t(r + 2));
                o[(dr * ow + c) * 3 + ch] = (v / 256) as u8;
            }
        }
        dr += 1;
        r += 2;
    }
    out
}

/// Fills `out` (w × h) by sampling `src` at `map(x, y)` with dlib's
/// `interpolate_bilinear` (double arithmetic, truncated); points without all
/// four neighbours inside `src` are black.
pub fn transform_bilinear(src: &RgbImage, out: &mut RgbImage, map: &Affine) {
    let (sw, sh) = (src.width() as i64, src.height() as i64);
    let s = src.as_raw();
    let ow = out.width() as usize;
    let oh = out.height() as usize;
    let o = out.as_mut();
    for r in 0..oh {
        for c in 0..ow {
            let p = map.apply([c as f64, r as f64]);
            let left = p[0].floor() as i64;
            let top = p[1].floor() as i64;
            let dst = &mut o[(r * ow + c) * 3..][..3];
            if !(left >= 0 && top >= 0 && left + 1 < sw && top + 1 < sh) {
                dst.copy_from_slice(&[0, 0, 0]);
                continue;
            }
            let lr = p[0] - left as f64;
            let tb = p[1] - top as f64;
            let i = |x: i64, y: i64, ch: usize| s[((y * sw + x) * 3) as usize + ch] as f64;
            for (ch, d) in dst.iter_mut().enumerate() {
                let v = (1.0 - tb) * ((1.0 - lr) * i(left, top, ch) + lr * i(left + 1, top, ch))
                    + tb * ((1.0 - lr) * i(left, top + 1, ch) + lr * i(left + 1, top + 1, ch));
                *d = v as u8;
            }
        }
    }
}

/// dlib's float-plane `resize_image` (the grayscale SSE path), used to build
/// the detector's tiled pyramid: resizes `src` (w × h, row stride
/// `src_stride`) into `dst` (dw × dh, row stride `dst_stride`).
#[allow(clippy::too_many_arguments)]
pub fn resize_plane(
    src: &[f32],
    src_stride: usize,
    w: usize,
    h: usize,
    dst: &mut [f32],
    dst_stride: usize,
    dw: usize,
    dh: usize,
) {
    if w == 0 || h == 0 || dw == 0 || dh == 0 {
        return;
    }
    let cols = dlib_columns(w, dw);
    for (r, (top, bottom, tb)) in dlib_rows(h, dh).enumerate() {
        let (tbf, itbf) = (tb as f32, (1.0 - tb) as f32);
        let (t, b) = (&src[top * src_stride..], &src[bottom * src_stride..]);
        let drow = &mut dst[r * dst_stride..r * dst_stride + dw];
        for (d, col) in drow.iter_mut().zip(&cols) {
            let (tl, tr, bl, br) = (t[col.left], t[col.right], b[col.left], b[col.right]);
            let lr = col.lr32;
            *d = if col.simd {
                let ilr = 1.0 - lr;
                itbf * ilr * tl + itbf * lr * tr + tbf * ilr * bl + tbf * lr * br
            } else {
                ((1.0 - tb) * ((1.0 - lr) * tl + lr * tr) as f64 + tb * ((1.0 - lr) * bl + lr * br) as f64) as f32
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_of_a_resize_is_the_resize_cut() {
        let img = RgbImage::from_fn(97, 61, |x, y| image::Rgb([(x * 7 + y) as u8, (x * y) as u8, (x + 3 * y) as u8]));
        let (w, h) = (135, 84);
        let whole = resize_rgb(&img, w, h);
        for win in [[0, 0, w, h], [13, 7, 40, 30], [w - 9, h - 5, 9, 5], [1, 2, 1, 1]] {
            let cut = image::imageops::crop_imm(&whole, win[0] as u32, win[1] as u32, win[2] as u32, win[3] as u32);
            assert_eq!(resize_rgb_window(&img, w, h, win).as_raw(), cut.to_image().as_raw(), "{win:?}");
        }
    }

    #[test]
    fn pyramid_up_matches_dlibs_size_rule() {
        let img = RgbImage::new(100, 60);
        let up = pyramid_up2(&img);
        assert_eq!((up.width(), up.height()), (202, 121));
    }

    #[test]
    fn pyramid_down_of_a_flat_image_is_flat() {
        let img = RgbImage::from_pixel(20, 16, image::Rgb([200, 100, 7]));
        let d = pyramid_down2(&img, 0, 0, 20, 16);
        assert_eq!((d.width(), d.height()), (8, 6));
        assert!(d.pixels().all(|p| p.0 == [200, 100, 7]));
    }

    #[test]
    fn resize_keeps_corners() {
        let mut img = RgbImage::new(7, 5);
        img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        img.put_pixel(6, 4, image::Rgb([0, 0, 255]));
        let r = resize_rgb(&img, 13, 9);
        assert_eq!(r.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(r.get_pixel(12, 8).0, [0, 0, 255]);
    }
}
