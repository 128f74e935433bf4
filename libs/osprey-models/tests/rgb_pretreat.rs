//! OpenGait's RGB pretreatment and OpenCV's bilinear resize
//! (`osprey_models::rgb_pretreat`), byte for byte against opencv-python
//! 4.10.0's own output (`tests/data/cv_resize_reference.json`, written by
//! `infra/scripts/cv_resize_reference.py`).

use std::path::PathBuf;

use candle_core::{DType, Device};
use osprey_models::rgb_pretreat::{HEIGHT, RgbFrame, WIDTH, pretreat_frame, resize_linear, to_tensors};
use sha2::{Digest, Sha256};

const REFERENCE: &str = include_str!("data/cv_resize_reference.json");

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn shared_data() -> PathBuf {
    let dir = std::env::var_os("OSPREY_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../../shared/data"));
    assert!(dir.is_dir(), "shared data not found at {} (set OSPREY_SHARED_DATA)", dir.display());
    dir
}

fn usizes(v: &serde_json::Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn reference() -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_str(REFERENCE).unwrap();
    assert_eq!(doc["opencv"], "4.10.0");
    doc
}

/// The generator's synthetic images (see `pattern` in
/// `infra/scripts/cv_resize_reference.py`): byte i of the interleaved
/// buffer, in unsigned 32-bit arithmetic.
fn pattern(kind: &str, seed: u32, channels: usize, width: usize, height: usize) -> Vec<u8> {
    (0..width * height * channels)
        .map(|i| match kind {
            "noise" => {
                let mut x =
                    (i as u32).wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503)).wrapping_add(12345);
                x ^= x >> 15;
                x = x.wrapping_mul(2246822519);
                x ^= x >> 13;
                (x >> 24) as u8
            }
            "ramp" => {
                let (c, px, py) = (i % channels, (i / channels) % width, i / (channels * width));
                (px * 5 + py * 3 + c * 60 + ((px * py) >> 3) + seed as usize) as u8
            }
            other => panic!("unknown pattern {other}"),
        })
        .collect()
}

/// `cv2.resize` of synthetic images: 1 to 4 channels, up and down, one axis
/// only, exact factor 2 (OpenCV's area path, including its 2-channel
/// rounding), tiny and 1920×1080 sources, row lengths with and without a
/// multiple of 16 bytes.
#[test]
fn resize_linear_matches_opencv() {
    let doc = reference();
    let cases = doc["resize"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let channels = case["channels"].as_u64().unwrap() as usize;
        let (size, dst) = (usizes(&case["size"]), usizes(&case["dst"]));
        let src = pattern(
            case["pattern"].as_str().unwrap(),
            case["seed"].as_u64().unwrap() as u32,
            channels,
            size[0],
            size[1],
        );
        let out = resize_linear(&src, size[0], size[1], channels, dst[0], dst[1]).unwrap();
        assert_eq!(out.len(), dst[0] * dst[1] * channels, "{name}");
        if let Some(hex) = case["output_hex"].as_str() {
            let want: Vec<u8> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            let differ = out.iter().zip(&want).filter(|(a, b)| a != b).count();
            if differ > 0 {
                failures.push(format!("{name}: {differ} of {} bytes differ ({out:?} vs {want:?})", want.len()));
                continue;
            }
        }
        if sha256_hex(&out) != case["output_sha256"].as_str().unwrap() {
            failures.push(format!(
                "{name}: {}x{}x{channels} -> {}x{} differs from OpenCV",
                size[0], size[1], dst[0], dst[1]
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} resizes differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// OpenGait's whole pretreatment of real person images (Market-1501 crops
/// and a scene frame, a gait silhouette, PNG photos): padding and cropping
/// paths, an odd crop margin (Python's floor division), the ratio. Sources
/// are decoded with the `image` crate; a JPEG case whose decoded pixels
/// differ from OpenCV's (libjpeg-turbo) is reported and skipped, while every
/// PNG case must decode identically and match.
#[test]
fn pretreat_frame_matches_opengait() {
    let doc = reference();
    let data = shared_data();
    let (mut checked, mut crop_path, mut pad_path) = (0, 0, 0);
    for case in doc["pretreat"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let source = case["source"].as_str().unwrap();
        let img = image::open(data.join(source)).unwrap_or_else(|e| panic!("{name}: {source}: {e}")).to_rgb8();
        let (iw, ih) = (img.width() as usize, img.height() as usize);
        let full = img.into_raw();
        let (left, top, right, bottom) = match case["crop"].as_array() {
            Some(_) => {
                let c = usizes(&case["crop"]);
                (c[0], c[1], c[2], c[3])
            }
            None => (0, 0, iw, ih),
        };
        let (w, h) = (right - left, bottom - top);
        assert_eq!(vec![w, h], usizes(&case["source_size"]), "{name}");
        let src: Vec<u8> =
            (top..bottom).flat_map(|y| full[(y * iw + left) * 3..(y * iw + right) * 3].iter().copied()).collect();
        if sha256_hex(&src) != case["source_sha256"].as_str().unwrap() {
            assert!(!source.ends_with(".png"), "{name}: the PNG {source} decodes differently from OpenCV");
            eprintln!("{name}: skipped, the `image` crate decodes {source} differently from OpenCV");
            continue;
        }
        let frame = pretreat_frame(&src, w, h).unwrap();
        assert_eq!(frame.pixels.len(), HEIGHT * WIDTH * 3, "{name}");
        assert_eq!(frame.ratio, case["ratio_f32"].as_f64().unwrap() as f32, "{name}: ratio");
        if sha256_hex(&frame.pixels) != case["output_sha256"].as_str().unwrap() {
            let want_rows = usizes(&case["row_sums"]);
            let rows: Vec<usize> = (0..HEIGHT)
                .filter(|&y| {
                    frame.pixels[y * WIDTH * 3..(y + 1) * WIDTH * 3].iter().map(|&b| b as usize).sum::<usize>()
                        != want_rows[y]
                })
                .collect();
            let samples = case["samples"].as_array().unwrap();
            let bad_samples = samples
                .iter()
                .filter(|s| {
                    let s = usizes(s);
                    let at = (s[1] * WIDTH + s[0]) * 3;
                    frame.pixels[at..at + 3] != [s[2] as u8, s[3] as u8, s[4] as u8]
                })
                .count();
            panic!(
                "{name}: differs from OpenGait's pretreatment: {} of {HEIGHT} rows differ in their sums (first {:?}), {bad_samples} of {} sampled pixels differ",
                rows.len(),
                rows.first(),
                samples.len()
            );
        }
        match case["path"].as_str().unwrap() {
            "crop" => crop_path += 1,
            _ => pad_path += 1,
        }
        eprintln!(
            "{name}: {w}x{h} -> {}x{HEIGHT}, offset {}, identical to OpenCV {}",
            case["resized_width"], case["x_offset"], doc["opencv"]
        );
        checked += 1;
    }
    assert!(
        checked >= 6 && crop_path >= 3 && pad_path >= 2,
        "only {checked} cases checked ({crop_path} crop, {pad_path} pad)"
    );
}

#[test]
fn resize_rejects_bad_input() {
    let e = resize_linear(&[0u8; 10], 2, 2, 3, 4, 4).unwrap_err().to_string();
    assert!(e.contains("12 bytes") && e.contains("10 bytes"), "{e}");
    let e = resize_linear(&[], 0, 2, 3, 4, 4).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    let e = resize_linear(&[0u8; 12], 2, 2, 3, 0, 4).unwrap_err().to_string();
    assert!(e.contains("empty 0x4"), "{e}");
    let e = resize_linear(&[0u8; 20], 2, 2, 5, 4, 4).unwrap_err().to_string();
    assert!(e.contains("5 channels"), "{e}");
    let e = resize_linear(&[], 2, 2, 0, 4, 4).unwrap_err().to_string();
    assert!(e.contains("0 channels"), "{e}");
    // Same size: the bytes come back unchanged.
    let src = pattern("noise", 3, 3, 5, 3);
    assert_eq!(resize_linear(&src, 5, 3, 3, 5, 3).unwrap(), src);
    // A flat image stays flat, whatever the factor.
    let flat = vec![200u8; 7 * 9 * 2];
    assert!(resize_linear(&flat, 7, 9, 2, 20, 3).unwrap().iter().all(|&v| v == 200));
}

#[test]
fn pretreat_rejects_bad_input_and_pads_with_zeros() {
    let e = pretreat_frame(&[0u8; 5], 2, 2).unwrap_err().to_string();
    assert!(e.contains("12 bytes"), "{e}");
    let e = pretreat_frame(&[], 0, 0).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    // 1×300: 256/300 of a column rounds down to none.
    let e = pretreat_frame(&[9u8; 300 * 3], 1, 300).unwrap_err().to_string();
    assert!(e.contains("0 pixels wide"), "{e}");

    // A 10×256 white frame stays 10 columns wide, placed at column 59.
    let frame = pretreat_frame(&[255u8; 10 * 256 * 3], 10, 256).unwrap();
    assert_eq!(frame.ratio, (10.0f64 / 256.0) as f32);
    for y in [0, 100, 255] {
        let row = &frame.pixels[y * WIDTH * 3..(y + 1) * WIDTH * 3];
        assert!(row[..59 * 3].iter().all(|&v| v == 0) && row[69 * 3..].iter().all(|&v| v == 0));
        assert!(row[59 * 3..69 * 3].iter().all(|&v| v == 255));
    }
    // 183 columns at height 256: Python's (128 − 183) // 2 = −28 keeps
    // columns 28..156, so column c of the output is source column c + 28.
    let src: Vec<u8> = (0..256 * 183).flat_map(|i| [(i % 183) as u8, 7, (i / 183) as u8]).collect();
    let frame = pretreat_frame(&src, 183, 256).unwrap();
    assert_eq!(&frame.pixels[..6], &[28, 7, 0, 29, 7, 0]);
    assert_eq!(frame.pixels[(255 * WIDTH + 127) * 3..], [155, 7, 255]);
}

#[test]
fn tensors_for_biggait() {
    let dev = Device::Cpu;
    assert!(to_tensors(&[], &dev).unwrap_err().to_string().contains("none"));
    let bad = RgbFrame { pixels: vec![0; 10], ratio: 0.5 };
    assert!(to_tensors(&[bad], &dev).unwrap_err().to_string().contains("10 bytes"));

    let frames: Vec<RgbFrame> = (0..2)
        .map(|n| RgbFrame {
            pixels: (0..HEIGHT * WIDTH).flat_map(|p| [n as u8, (p % 251) as u8, 3]).collect(),
            ratio: 0.25 * (n + 1) as f32,
        })
        .collect();
    let (images, ratios) = to_tensors(&frames, &dev).unwrap();
    assert_eq!(images.dims(), &[1, 2, 3, HEIGHT, WIDTH]);
    assert_eq!(images.dtype(), DType::U8);
    assert_eq!(ratios.dims(), &[1, 2]);
    assert_eq!(ratios.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0.25, 0.5]);
    let v = images.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let plane = HEIGHT * WIDTH;
    // Frame 1: red plane all 1, green the pattern, blue all 3.
    assert!(v[3 * plane..4 * plane].iter().all(|&x| x == 1));
    assert_eq!(v[4 * plane + 300], (300 % 251) as u8);
    assert!(v[5 * plane..6 * plane].iter().all(|&x| x == 3));
}
