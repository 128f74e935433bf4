//! Media input. Still images: JPEG, PNG, GIF, BMP, PNM (PGM/PPM), TIFF and
//! WebP, decoded to 8-bit RGB with the EXIF orientation applied, greyscale
//! replicated to three channels and alpha dropped (the pixels under a
//! transparent area are used as they are, as dlib and face_recognition do).
//! Video: [`video`], through FFmpeg.

pub mod video;

pub use video::{Sampling, Segment, VideoFrame, VideoInfo, VideoReader, is_video_path};

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};
use osprey_core::{Error, Result};
use std::io::Cursor;
use std::path::Path;

/// Largest image accepted, in pixels (a guard against decompression bombs).
pub const MAX_PIXELS: u64 = 200_000_000;

/// File extensions treated as images when a folder is scanned.
pub const IMAGE_EXTENSIONS: &[&str] =
    &["jpg", "jpeg", "png", "gif", "bmp", "pgm", "ppm", "pbm", "pnm", "tif", "tiff", "webp"];

/// True when `path` has an image extension (case-insensitive).
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// A decoded image and what was done to it.
pub struct Decoded {
    pub image: RgbImage,
    /// The EXIF orientation found (1 = none), already applied to `image`.
    pub exif_orientation: u8,
}

/// Decodes image bytes; `name` (a path or URL) appears in errors.
pub fn decode_image(bytes: &[u8], name: &str) -> Result<Decoded> {
    if bytes.is_empty() {
        return Err(Error::invalid(format!("{name}: empty file")));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::invalid(format!("{name}: cannot read: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::invalid(format!(
            "{name}: not an image in a supported format (JPEG, PNG, GIF, BMP, PNM, TIFF, WebP)"
        )));
    }
    let format = reader.format();
    let mut reader = reader;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 8);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| Error::invalid(format!("{name}: cannot decode: {e}")))?;
    let (w, h) = decoder.dimensions();
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(Error::invalid(format!("{name}: {w}x{h} is larger than {MAX_PIXELS} pixels")));
    }
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    // JPEG goes through libjpeg-turbo (accurate integer IDCT, fancy
    // upsampling: Pillow's defaults); CMYK and anything it refuses fall back
    // to the pure-Rust decoder.
    let turbo = (format == Some(image::ImageFormat::Jpeg)).then(|| decode_jpeg_turbo(bytes)).flatten();
    let mut img = match turbo {
        Some(rgb) => DynamicImage::ImageRgb8(rgb),
        None => {
            DynamicImage::from_decoder(decoder).map_err(|e| Error::invalid(format!("{name}: cannot decode: {e}")))?
        }
    };
    img.apply_orientation(orientation);
    let exif_orientation = orientation.to_exif();
    Ok(Decoded { image: img.to_rgb8(), exif_orientation })
}

fn decode_jpeg_turbo(bytes: &[u8]) -> Option<RgbImage> {
    let img = turbojpeg::decompress(bytes, turbojpeg::PixelFormat::RGB).ok()?;
    let (w, h) = (img.width, img.height);
    let pixels = if img.pitch == w * 3 {
        img.pixels
    } else {
        img.pixels.chunks_exact(img.pitch).flat_map(|row| row[..w * 3].iter().copied()).collect()
    };
    RgbImage::from_raw(w as u32, h as u32, pixels)
}

/// Reads and decodes an image file.
pub fn read_image(path: &Path) -> Result<Decoded> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            osprey_core::ErrorKind::NotFound
        } else {
            osprey_core::ErrorKind::InvalidInput
        };
        Error::new(kind, format!("{name}: {e}"))
    })?;
    decode_image(&bytes, &name)
}

/// SHA-256 of an image's RGB bytes (row-major, 3 bytes per pixel), hex.
pub fn rgb_sha256(img: &RgbImage) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(img.as_raw()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bytes_are_clear_invalid_input_errors() {
        let e = decode_image(b"", "a.jpg").err().unwrap();
        assert!(e.message().contains("empty"), "{e}");
        let e = decode_image(b"hello world, not an image", "b.png").err().unwrap();
        assert_eq!(e.kind(), osprey_core::ErrorKind::InvalidInput);
        // A truncated PNG: the signature and nothing else.
        let e = decode_image(b"\x89PNG\r\n\x1a\n\0\0", "c.png").err().unwrap();
        assert_eq!(e.kind(), osprey_core::ErrorKind::InvalidInput);
    }

    #[test]
    fn greyscale_and_alpha_become_rgb() {
        let grey = image::GrayImage::from_pixel(3, 2, image::Luma([77]));
        let mut png = Vec::new();
        grey.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let d = decode_image(&png, "g.png").unwrap();
        assert_eq!(d.image.get_pixel(2, 1).0, [77, 77, 77]);
        let rgba = image::RgbaImage::from_pixel(2, 2, image::Rgba([10, 20, 30, 0]));
        let mut png = Vec::new();
        rgba.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let d = decode_image(&png, "a.png").unwrap();
        assert_eq!(d.image.get_pixel(0, 0).0, [10, 20, 30]);
    }

    #[test]
    fn exif_orientation_is_applied() {
        // 16×8: left half red, right half blue; EXIF orientation 6 (rotate 90° clockwise).
        let img =
            RgbImage::from_fn(16, 8, |x, _| if x < 8 { image::Rgb([230, 20, 20]) } else { image::Rgb([20, 20, 230]) });
        let tiff: Vec<u8> =
            [&b"II*\0"[..], &[8, 0, 0, 0, 1, 0], &[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0], &[0, 0, 0, 0]].concat();
        let mut jpeg = Vec::new();
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95);
        image::ImageEncoder::set_exif_metadata(&mut enc, tiff).unwrap();
        enc.encode_image(&img).unwrap();
        let d = decode_image(&jpeg, "rotated.jpg").unwrap();
        assert_eq!(d.exif_orientation, 6);
        assert_eq!((d.image.width(), d.image.height()), (8, 16));
        assert!(d.image.get_pixel(4, 2).0[0] > 180, "top should be the former left (red)");
        assert!(d.image.get_pixel(4, 13).0[2] > 180, "bottom should be the former right (blue)");
    }

    #[test]
    fn real_pgm_gif_and_png_files_decode() {
        let data = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../../shared/data");
        let pgm = read_image(&data.join("att_faces_orl/s2/1.pgm")).unwrap().image;
        assert_eq!((pgm.width(), pgm.height()), (92, 112));
        assert!(pgm.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
        let gif = read_image(&data.join("yalefaces-leecarraher/yalefaces/subject02.happy")).unwrap().image;
        assert_eq!((gif.width(), gif.height()), (320, 243));
        let png = read_image(&data.join("face_recognition/tests/test_images/32bit.png")).unwrap().image;
        assert!(png.width() > 0);
        let e = read_image(&data.join("does/not/exist.jpg")).err().unwrap();
        assert_eq!(e.kind(), osprey_core::ErrorKind::NotFound);
    }
}
