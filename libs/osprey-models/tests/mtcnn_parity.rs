//! The Rust MTCNN against facenet-pytorch 2.6.0's on real photographs from
//! `../shared/data`: facenet's `MTCNN(keep_all=True).detect(img,
//! landmarks=True)` outputs were recorded by `infra/scripts/mtcnn_reference.py`
//! into `tests/data/mtcnn_reference.json`.
//!
//! The weights are facenet-pytorch's own `pnet.pt`, `rnet.pt`, `onet.pt`,
//! read from `$OSPREY_MTCNN_WEIGHTS` or else `models/mtcnn/` at the
//! repository root.

mod common;

use osprey_models::mtcnn::{Mtcnn, MtcnnFace};
use osprey_models::torch_legacy;
use serde::Deserialize;
use std::path::PathBuf;

/// Largest allowed differences from facenet-pytorch.
const BOX_TOLERANCE_PX: f32 = 2.0;
const LANDMARK_TOLERANCE_PX: f32 = 1.0;
const PROB_TOLERANCE: f32 = 1e-3;

#[derive(Deserialize)]
struct Reference {
    images: Vec<RefImage>,
}

#[derive(Deserialize)]
struct RefImage {
    /// Relative to the data folder.
    path: String,
    width: u32,
    height: u32,
    /// FNV-1a of the RGB bytes Pillow decoded.
    rgb_fnv1a64: String,
    faces: Vec<RefFace>,
}

#[derive(Deserialize)]
struct RefFace {
    /// `[x1, y1, x2, y2]` in pixels.
    bbox: [f32; 4],
    prob: f32,
    /// `[x, y]` of left eye, right eye, nose, mouth left, mouth right.
    landmarks: [[f32; 2]; 5],
}

fn weights_dir() -> PathBuf {
    let dir = std::env::var_os("OSPREY_MTCNN_WEIGHTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../models/mtcnn"));
    assert!(
        dir.join("onet.pt").is_file(),
        "MTCNN weights (pnet.pt, rnet.pt, onet.pt) not found in {} (set OSPREY_MTCNN_WEIGHTS)",
        dir.display()
    );
    dir
}

fn reference() -> Reference {
    let path = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("tests/data/mtcnn_reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Largest absolute difference between corresponding coordinates.
fn max_diff<'a>(a: impl IntoIterator<Item = &'a f32>, b: impl IntoIterator<Item = &'a f32>) -> f32 {
    a.into_iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// FNV-1a (64-bit) of the bytes, as the reference script writes it.
/// Deviations of one face from facenet's: (box, landmarks) in pixels, and
/// probability.
fn deviation(g: &MtcnnFace, e: &RefFace) -> (f32, f32, f32) {
    (
        max_diff(&g.bbox, &e.bbox),
        max_diff(g.landmarks.as_flattened(), e.landmarks.as_flattened()),
        (g.score - e.prob).abs(),
    )
}

/// Images the `image` crate decodes to exactly Pillow's pixels must give
/// facenet's faces, in facenet's order, within the tolerances. JPEGs it
/// decodes differently (a few grey levels here and there, which can move a
/// crop window by a pixel) must give as many faces; their deviations, face
/// to nearest face, are only printed.
#[test]
fn detections_match_facenet_pytorch() {
    let mtcnn = Mtcnn::load(&weights_dir()).expect("load MTCNN weights");
    let data = common::data_dir();
    let reference = reference();
    let (mut faces, mut images, mut worst) = (0, 0, (0f32, 0f32, 0f32));
    for r in &reference.images {
        // Osprey's decoder (libjpeg-turbo for JPEG, as Pillow's wheels).
        let img = osprey_media::read_image(&data.join(&r.path)).unwrap_or_else(|e| panic!("{}: {e}", r.path)).image;
        assert_eq!((img.width(), img.height()), (r.width, r.height), "{}: image size", r.path);
        let got = mtcnn.detect(&img).expect("detect");
        assert_eq!(got.len(), r.faces.len(), "{}: {got:#?}", r.path);
        if common::fnv1a64(img.as_raw()) != r.rgb_fnv1a64 {
            let nearest = r
                .faces
                .iter()
                .map(|e| got.iter().map(|g| deviation(g, e)).min_by(|a, b| a.0.total_cmp(&b.0)).unwrap_or_default());
            let (b, l, p) = nearest.fold((0f32, 0f32, 0f32), |w, d| (w.0.max(d.0), w.1.max(d.1), w.2.max(d.2)));
            eprintln!(
                "{}: decoded differently from Pillow; {} faces, max deviation box {b:.3} px, landmarks {l:.3} px, \
                 probability {p:.2e}",
                r.path,
                got.len()
            );
            continue;
        }
        for (g, e) in got.iter().zip(&r.faces) {
            let (b, l, p) = deviation(g, e);
            assert!(
                b <= BOX_TOLERANCE_PX && l <= LANDMARK_TOLERANCE_PX && p <= PROB_TOLERANCE,
                "{}: face {g:?} vs facenet bbox {:?} prob {} landmarks {:?}",
                r.path,
                e.bbox,
                e.prob,
                e.landmarks
            );
            worst = (worst.0.max(b), worst.1.max(l), worst.2.max(p));
        }
        faces += got.len();
        images += 1;
    }
    eprintln!(
        "{faces} faces in {images} images decoded as Pillow does: max deviation from facenet-pytorch: \
         box {:.4} px, landmarks {:.4} px, probability {:.2e}",
        worst.0, worst.1, worst.2
    );
    assert!(faces >= 30, "only {faces} faces in images decoded as Pillow does");
}

#[test]
fn empty_tiny_and_blank_images_give_no_faces() {
    let mtcnn = Mtcnn::load(&weights_dir()).expect("load MTCNN weights");
    for (w, h, grey) in [(0, 0, 0), (1, 1, 0), (11, 40, 128), (12, 12, 255), (64, 48, 128)] {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([grey; 3]));
        assert_eq!(mtcnn.detect(&img).expect("detect"), vec![], "{w}x{h} grey {grey}");
    }
}

#[test]
fn truncated_or_foreign_weights_are_errors() {
    let good = std::fs::read(weights_dir().join("pnet.pt")).expect("read pnet.pt");
    let cpu = candle_core::Device::Cpu;
    let sd = torch_legacy::read_state_dict(&good, &cpu).expect("the intact file parses");
    assert_eq!(sd["conv1.weight"].dims(), &[10, 3, 3, 3]);
    // Every proper prefix fails cleanly, whether it ends inside a pickle or
    // inside the raw storages.
    for len in (0..good.len()).step_by(97).chain([good.len() - 1]) {
        assert!(torch_legacy::read_state_dict(&good[..len], &cpu).is_err(), "prefix of {len} bytes");
    }
    let zip = b"PK\x03\x04 a zip-format checkpoint".to_vec();
    let err = torch_legacy::read_state_dict(&zip, &cpu).unwrap_err().to_string();
    assert!(err.contains("zip"), "{err}");
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    assert!(torch_legacy::read_state_dict(&garbage, &cpu).is_err());
    // A corrupted byte inside the main pickle is an error or a different
    // file, never a panic.
    for pos in (0..1900).step_by(7) {
        let mut bad = good.clone();
        bad[pos] ^= 0x5a;
        let _ = torch_legacy::read_state_dict(&bad, &cpu);
    }
}
