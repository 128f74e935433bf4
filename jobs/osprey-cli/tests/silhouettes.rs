//! Silhouette strips through `osprey run`: body tracks of a static-camera
//! clip (four seconds of OpenCV's vtest.avi) get a PNG strip under the
//! root, linked from their template rows (`silhouette_uri`,
//! `silhouette_frames`); erasing the enrolled subject deletes theirs.

mod common;

use std::path::Path;
use std::process::Command;

use common::{data, ok, s};

fn sql_csv(root: &Path, query: &str) -> Vec<Vec<String>> {
    let (out, _) = ok(&["sql", "--root", s(root), "--format", "csv", query]);
    out.lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect()
}

/// (width, height, colour type byte) of a PNG file.
fn png_header(path: &Path) -> (u32, u32, u8) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is a PNG", path.display());
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20), bytes[25])
}

#[test]
fn body_tracks_link_silhouette_strips_and_erasure_deletes_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let subject = dir.path().join("subjects/walker");
    std::fs::create_dir_all(&subject).unwrap();
    let clip = subject.join("plaza.avi");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i", s(&data().join("debian-opencv-doc/vtest.avi")), "-t", "4", "-c", "copy"])
        .arg(&clip)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());

    ok(&[
        "run",
        "enroll",
        "--root",
        s(&root),
        "--gallery",
        "g",
        "--subjects-from-dirs",
        s(&dir.path().join("subjects")),
        "--modalities",
        "body",
    ]);
    let rows = sql_csv(
        &root,
        "SELECT template_id, silhouette_uri, silhouette_frames, num_frames FROM templates \
         WHERE modality = 'body' AND subject_id = 'walker' ORDER BY 1",
    );
    assert!(!rows.is_empty(), "the subject's body tracks are enrolled");
    let mut strips = Vec::new();
    for r in &rows {
        if r[1].is_empty() {
            continue;
        }
        let path = Path::new(r[1].strip_prefix("file://").expect("a file URL under the root")).to_path_buf();
        assert!(path.starts_with(root.canonicalize().unwrap()) || path.starts_with(&root), "{path:?} under the root");
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), format!("{}.png", r[0]));
        let frames: u32 = r[2].parse().unwrap();
        let (w, h, colour) = png_header(&path);
        assert_eq!((w, h, colour), (64 * frames, 64, 0), "a 64-row grey strip of {frames} frames: {r:?}");
        assert!(frames as i64 <= r[3].parse::<i64>().unwrap(), "at most one silhouette per observation: {r:?}");
        strips.push(path);
    }
    assert!(!strips.is_empty(), "the subject's tracks have silhouettes: {rows:?}");

    ok(&["gallery", "delete-subject", "--root", s(&root), "--gallery", "g", "--subject", "walker"]);
    for p in &strips {
        assert!(!p.exists(), "{} is erased with the subject", p.display());
    }
}
