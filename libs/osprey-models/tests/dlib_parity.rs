//! The Rust port against dlib itself, on real photographs from
//! `../shared/data`: dlib's outputs were recorded once by
//! `infra/scripts/dlib_reference.py` (dlib-bin from PyPI) into
//! `tests/data/dlib_reference.json`.
//!
//! Each stage is compared on dlib's own input to it (landmarks from dlib's
//! boxes, chips and descriptors from dlib's landmarks), so a difference is
//! attributed to the stage that makes it.

mod common;

use common::*;
use osprey_media::{read_image, rgb_sha256};
use osprey_models::Rect;
use osprey_models::dlib::chip::{extract_chip, face_chip_details};
use osprey_models::dlib::net::NetFile;
use osprey_models::dlib::shape::ShapePredictor;
use osprey_models::face::{DESCRIPTOR_FILE, DETECTOR_FILE, LANDMARKS_FILE};

/// Reference images whose decoded pixels equal PIL's (so that any
/// difference downstream is the model's, not the JPEG decoder's).
fn same_pixels() -> Vec<(&'static RefImage, image::RgbImage)> {
    let mut out = Vec::new();
    let mut differ = Vec::new();
    for r in reference().images.iter().filter(|r| r.error.is_none()) {
        let img = read_image(&data_dir().join(&r.path)).expect("decode").image;
        if rgb_sha256(&img) == r.rgb_sha256 {
            out.push((r, img));
        } else {
            differ.push(r.path.as_str());
        }
    }
    eprintln!("{} reference images decode identically to PIL; differ: {differ:?}", out.len());
    assert!(out.len() * 10 >= reference().images.len() * 9, "too many images decode differently from PIL: {differ:?}");
    out
}

#[test]
fn landmarks_are_bit_exact() {
    let m = models();
    let (mut faces, mut exact) = (0, 0);
    for (r, img) in same_pixels() {
        for (d, f) in r.detections.iter().zip(&r.faces) {
            let got = m.landmarks(&img, Rect::new(d.left, d.top, d.right, d.bottom));
            faces += 1;
            if got.as_slice() == f.landmarks.as_slice() {
                exact += 1;
            } else {
                eprintln!("{}: landmarks {got:?} vs dlib {:?}", r.path, f.landmarks);
            }
        }
    }
    eprintln!("landmarks: {exact}/{faces} identical to dlib");
    assert!(faces >= 50, "only {faces} reference faces");
    assert_eq!(exact, faces);
}

#[test]
fn aligned_chips_match_dlib() {
    let (mut faces, mut exact) = (0, 0);
    for (r, img) in same_pixels() {
        for f in &r.faces {
            let lm: [[i64; 2]; 5] = f.landmarks.clone().try_into().unwrap();
            let chip = extract_chip(&img, &face_chip_details(&lm, 150, 0.25));
            faces += 1;
            if rgb_sha256(&chip) == f.chip_sha256 {
                exact += 1;
            } else {
                eprintln!("{}: chip differs from dlib's", r.path);
            }
        }
    }
    eprintln!("chips: {exact}/{faces} byte-identical to dlib's");
    // Bilinear weights are computed in double precision on both sides; a
    // different rounding of the affine solve may flip a rare pixel by one.
    assert!(exact * 100 >= faces * 95, "{exact}/{faces} chips identical");
}

#[test]
fn descriptors_match_dlib() {
    let m = models();
    let mut cosines = Vec::new();
    let mut worst = (0f32, String::new());
    for (r, img) in same_pixels() {
        let chips: Vec<_> = r.faces.iter().map(|f| m.chip(&img, &f.landmarks.clone().try_into().unwrap())).collect();
        let got = m.describe(&chips).unwrap();
        for (g, f) in got.iter().zip(&r.faces) {
            let d = l2(g, &f.descriptor);
            if d > worst.0 {
                worst = (d, r.path.clone());
            }
            cosines.push(cosine(g, &f.descriptor));
        }
        if let Some(want) = &r.chip_descriptor {
            let got = m.describe(std::slice::from_ref(&img)).unwrap();
            let d = l2(&got[0], want);
            if d > worst.0 {
                worst = (d, format!("{} (whole chip)", r.path));
            }
            cosines.push(cosine(&got[0], want));
        }
    }
    cosines.sort_by(f64::total_cmp);
    let median = cosines[cosines.len() / 2];
    eprintln!(
        "descriptors: {} compared, cosine min {:.7} median {:.9}, worst L2 {:.2e} ({})",
        cosines.len(),
        cosines[0],
        median,
        worst.0,
        worst.1
    );
    assert!(cosines.len() >= 100);
    assert!(worst.0 < 0.01, "descriptor L2 {} on {}", worst.0, worst.1);
    assert!(median >= 0.99999 && cosines[0] >= 0.9999);
}

/// The detector costs a few seconds per megapixel searched, so the suite
/// checks the images up to 1 MP after upsampling plus `bald_guys.jpg` (24
/// faces); `OSPREY_FULL_PARITY=1` checks all of them (about 150 MP).
fn detection_subset(r: &RefImage, img: &image::RgbImage) -> bool {
    let searched = img.width() as u64 * img.height() as u64 * 4u64.pow(r.upsample);
    std::env::var_os("OSPREY_FULL_PARITY").is_some() || searched <= 1_000_000 || r.path.ends_with("bald_guys.jpg")
}

#[test]
fn detections_match_dlib() {
    let m = models();
    let (mut matched, mut total, mut max_conf) = (0, 0, 0f32);
    for (r, img) in same_pixels().into_iter().filter(|(r, img)| detection_subset(r, img)) {
        let got = m.detect(&img, r.upsample).unwrap();
        total += r.detections.len();
        let mut unmatched: Vec<_> = got.iter().collect();
        for want in &r.detections {
            let close = unmatched.iter().position(|g| {
                (g.rect.left - want.left).abs() <= 1
                    && (g.rect.top - want.top).abs() <= 1
                    && (g.rect.right - want.right).abs() <= 1
                    && (g.rect.bottom - want.bottom).abs() <= 1
            });
            match close {
                Some(i) => {
                    max_conf = max_conf.max((unmatched[i].confidence - want.confidence).abs());
                    unmatched.remove(i);
                    matched += 1;
                }
                None => eprintln!("{}: dlib's {want:?} not found; got {got:?}", r.path),
            }
        }
        for g in unmatched {
            eprintln!("{}: extra detection {g:?}", r.path);
            total += 1;
        }
    }
    eprintln!("detections: {matched}/{total} within 1 px of dlib's, confidence differs by at most {max_conf:.2e}");
    assert!(total >= 50);
    assert_eq!(matched, total);
    assert!(max_conf < 0.01);
}

#[test]
fn truncated_and_foreign_model_files_are_clear_errors() {
    let dir = models_dir();
    let detector = std::fs::read(dir.join(DETECTOR_FILE)).unwrap();
    let shapes = std::fs::read(dir.join(LANDMARKS_FILE)).unwrap();
    let resnet = std::fs::read(dir.join(DESCRIPTOR_FILE)).unwrap();
    // Whole files parse to their last byte: stem (4 layers), 10 residual
    // blocks (7 each), 4 downsampling blocks (8 each), pool and fc.
    assert_eq!(NetFile::parse(&resnet, "resnet").unwrap().layers.len(), 4 + 70 + 32 + 2);
    for cut in [0, 1, 10, 1000, detector.len() / 2, detector.len() - 1] {
        let e = NetFile::parse(&detector[..cut], "mmod.dat").unwrap_err();
        assert_eq!(e.kind(), osprey_core::ErrorKind::Corrupt, "cut at {cut}: {e}");
        assert!(e.message().contains("mmod.dat"), "{e}");
    }
    let e = ShapePredictor::parse(&shapes[..shapes.len() - 3], "sp.dat").err().unwrap();
    assert!(e.message().contains("truncated"), "{e}");
    // The wrong file for the job.
    assert!(ShapePredictor::parse(&detector, "mmod.dat").is_err());
    let e = osprey_models::dlib::resnet::FaceDescriptor::parse(&detector, "mmod.dat", &candle_core::Device::Cpu)
        .err()
        .unwrap();
    assert!(e.message().contains("metric"), "{e}");
    let mut extra = resnet.clone();
    extra.push(0);
    assert!(NetFile::parse(&extra, "r").unwrap_err().message().contains("left"));
    assert!(NetFile::parse(b"\x89PNG\r\n\x1a\n", "x.png").is_err());
}

#[test]
fn whole_pipeline_finds_the_same_faces_as_dlib() {
    // One multi-face photo end to end: detect → landmarks → chip → descriptor.
    let m = models();
    let r =
        reference().images.iter().find(|r| r.path.ends_with("two_people.jpg")).expect("two_people.jpg in reference");
    let img = read_image(&data_dir().join(&r.path)).unwrap().image;
    let faces = m.analyze(&img, &osprey_models::FaceOptions::default()).unwrap();
    assert_eq!(faces.len(), r.faces.len());
    for f in &faces {
        let best = r.faces.iter().map(|rf| cosine(&f.descriptor, &rf.descriptor)).fold(f64::MIN, f64::max);
        assert!(best > 0.9999, "face at {:?}: best cosine to dlib {best}", f.rect);
        let norm: f32 = f.embedding.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}

#[test]
fn large_images_are_searched_within_the_pixel_budget() {
    // A 1080p photo with a 0.5 MP budget: no upsampling, then a reduced copy
    // is searched; the face is still found where dlib finds it.
    let m = models();
    let r = reference().images.iter().find(|r| r.path.ends_with("obama-1080p.jpg")).expect("in reference");
    let img = read_image(&data_dir().join(&r.path)).unwrap().image;
    let opts = osprey_models::FaceOptions { max_detect_pixels: 500_000, ..Default::default() };
    let got = m.detect_bounded(&img, &opts).unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    let want = &r.detections[0];
    let want = Rect::new(want.left, want.top, want.right, want.bottom);
    let iou = got[0].rect.intersect(&want).area() as f64
        / (got[0].rect.area() + want.area() - got[0].rect.intersect(&want).area()) as f64;
    assert!(iou > 0.6, "box {:?} vs dlib's {want:?} (IoU {iou:.2})", got[0].rect);
}
