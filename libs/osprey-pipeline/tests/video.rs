//! Video decoding and tracking on real clips from `../shared/data`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use osprey_core::ErrorKind;
use osprey_media::video::{Sampling, Segment, VideoReader, segments};
use osprey_models::{FaceModels, FaceOptions};
use osprey_pipeline::{FaceAnalyzer, VideoOptions, process_video};

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("OSPREY_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../../shared/data"));
    assert!(dir.is_dir(), "test data not found at {} (set OSPREY_DATA)", dir.display());
    dir
}

fn analyzer() -> &'static FaceAnalyzer {
    static A: OnceLock<FaceAnalyzer> = OnceLock::new();
    A.get_or_init(|| {
        let dir = std::env::var_os("OSPREY_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../models"));
        let models = FaceModels::load(&dir, &candle_core::Device::Cpu).expect("dlib models (run fetch-models.sh)");
        // The detection budget `osprey run` uses.
        FaceAnalyzer::new(models, FaceOptions { max_detect_pixels: 4_000_000, ..FaceOptions::default() })
    })
}

const ALL: Segment = Segment { start_ms: 0, end_ms: i64::MAX };

/// (frames decoded, sampled, first and last time) of a whole file.
fn decode_all(path: &Path, sampling: Sampling) -> (u64, u64, Vec<(i64, i64)>) {
    let mut reader = VideoReader::open(path, &path.display().to_string()).unwrap();
    let mut seen = Vec::new();
    let stats = reader
        .decode(ALL, sampling, |f| {
            assert_eq!((f.image.width(), f.image.height()), (reader_dims(path)));
            seen.push((f.index, f.t_ms));
            Ok(true)
        })
        .unwrap();
    (stats.decoded, stats.sampled, seen)
}

fn reader_dims(path: &Path) -> (u32, u32) {
    let r = VideoReader::open(path, "x").unwrap();
    (r.info().width, r.info().height)
}

#[test]
fn decodes_mp4_raw_h264_h265_and_avi_with_timestamps() {
    let data = data_dir();
    let hamilton = data.join("face_recognition/examples/short_hamilton_clip.mp4");
    let info = VideoReader::open(&hamilton, "hamilton").unwrap().info().clone();
    assert_eq!((info.width, info.height, info.num_frames, info.rotation), (640, 360, Some(275), 0));
    assert!((info.fps - 29.97).abs() < 0.01, "{}", info.fps);
    let (decoded, sampled, seen) = decode_all(&hamilton, Sampling::All);
    assert_eq!((decoded, sampled), (275, 275));
    assert!(seen.windows(2).all(|w| w[1].0 > w[0].0 && w[1].1 > w[0].1), "frame numbers and times rise");
    assert_eq!(seen[0].0, 0);
    assert_eq!(seen[274].0, 274);
    // 5 fps over 9.2 s: one frame per 200 ms slot.
    let (_, sampled, seen) = decode_all(&hamilton, Sampling::Fps(5.0));
    assert_eq!(sampled, 46, "{seen:?}");
    let (_, sampled, seen) = decode_all(&hamilton, Sampling::EveryNth(10));
    assert_eq!(sampled, 28);
    assert!(seen.iter().all(|(i, _)| i % 10 == 0));

    for (file, frames) in [
        ("dlib/dlib/test/ffmpeg_data/MOT20-05-raw_even_shorter.mp4", 127),
        ("dlib/dlib/test/ffmpeg_data/MOT20-08-raw_shorter.h264", 127),
        ("dlib/dlib/test/ffmpeg_data/MOT17-13-SDP-raw.h265", 750),
        ("debian-opencv-doc/vtest.avi", 795),
    ] {
        let (decoded, _, seen) = decode_all(&data.join(file), Sampling::All);
        assert_eq!(decoded, frames, "{file}");
        assert!(seen.windows(2).all(|w| w[1].0 > w[0].0), "{file}: frame numbers rise");
    }
}

#[test]
fn segments_partition_the_frames() {
    let path = data_dir().join("face_recognition/examples/short_hamilton_clip.mp4");
    let mut reader = VideoReader::open(&path, "hamilton").unwrap();
    let plan = segments(reader.info().duration_ms, 3000);
    assert_eq!(plan.len(), 4);
    let mut all = Vec::new();
    for seg in plan {
        reader
            .decode(seg, Sampling::All, |f| {
                assert!(f.t_ms >= seg.start_ms && f.t_ms < seg.end_ms);
                all.push(f.index);
                Ok(true)
            })
            .unwrap();
    }
    assert_eq!(all, (0..275).collect::<Vec<i64>>(), "every frame exactly once across segments");
}

fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg").args(["-v", "error", "-y"]).args(args).status().expect("ffmpeg on PATH");
    assert!(status.success(), "ffmpeg {args:?}");
}

#[test]
fn rotation_metadata_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let src = data_dir().join("face_recognition/examples/short_hamilton_clip.mp4");
    let rotated = dir.path().join("rotated.mp4");
    let src_s = src.to_str().unwrap();
    ffmpeg(&[
        "-i",
        src_s,
        "-frames:v",
        "15",
        "-an",
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        rotated.to_str().unwrap(),
    ]);
    let mut turned = VideoReader::open(&rotated, "rotated").unwrap();
    // The display matrix asks for a quarter turn; ffmpeg's autorotate (what
    // players show) turns these frames counter-clockwise.
    assert_eq!(turned.info().rotation, 270);
    assert_eq!((turned.info().width, turned.info().height), (360, 640));
    let mut ours = None;
    turned
        .decode(ALL, Sampling::All, |f| {
            ours = Some(f.image);
            Ok(false)
        })
        .unwrap();
    let raw = dir.path().join("first.rgb");
    let (r, raw_s) = (rotated.to_str().unwrap(), raw.to_str().unwrap());
    ffmpeg(&["-i", r, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", raw_s]);
    let theirs = std::fs::read(&raw).unwrap();
    let ours = ours.unwrap().into_raw();
    assert_eq!(ours.len(), theirs.len());
    // The command line turns the YUV planes before converting, so chroma is
    // interpolated slightly differently; the picture is the same.
    let mad = ours.iter().zip(&theirs).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>() / ours.len() as f64;
    assert!(mad < 1.5, "mean absolute difference to the ffmpeg command line: {mad}");
}

#[test]
fn corrupt_truncated_empty_and_foreign_files_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let clip = data_dir().join("face_recognition/examples/short_hamilton_clip.mp4");
    let src = std::fs::read(&clip).unwrap();
    // The index (moov) first, so a cut file still opens and plays its first half.
    let fs_path = dir.path().join("faststart.mp4");
    ffmpeg(&["-i", clip.to_str().unwrap(), "-c", "copy", "-movflags", "+faststart", fs_path.to_str().unwrap()]);
    let faststart = std::fs::read(&fs_path).unwrap();
    std::fs::remove_file(&fs_path).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.mp4", vec![], "empty file"),
        ("text.mp4", b"this is not a video\n".repeat(50), "cannot open as video"),
        ("half.mp4", src[..src.len() / 2].to_vec(), "truncated"),
        ("half-faststart.mp4", faststart[..faststart.len() / 2].to_vec(), "truncated or corrupt: frames stop at"),
        ("noise.mp4", (0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect(), "video"),
    ];
    for (name, bytes, expect) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let result = VideoReader::open(&path, name).and_then(|mut r| r.decode(ALL, Sampling::All, |_| Ok(true)));
        let err = result.expect_err(name);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{name}: {err}");
        assert!(err.message().starts_with(name) && err.message().contains(expect), "{name}: {err}");
    }
    // A truncated file processed by the pipeline fails the same way, and
    // the decoder thread does not hang.
    let path = dir.path().join("half.mp4");
    let err = process_video(
        &[analyzer()],
        &path,
        "half.mp4",
        VideoOptions { sampling: Sampling::Fps(1.0), segment: ALL, gait_frames: false },
        &|_| {},
    )
    .expect_err("truncated");
    assert!(err.message().contains("truncated"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5, "no temporary files left behind");
}

/// The 1080p clip of people walking towards the camera: every track is one
/// person (each observation looks like the track's template and no two
/// tracks alive at the same time are the same face).
#[test]
fn walking_people_tracks_are_stable() {
    let path = data_dir().join("facenet-pytorch/examples/video.mp4");
    let started = std::time::Instant::now();
    let out = process_video(
        &[analyzer()],
        &path,
        "video.mp4",
        VideoOptions { sampling: Sampling::Fps(2.5), segment: ALL, gait_frames: false },
        &|_| {},
    )
    .unwrap();
    eprintln!(
        "{} frames sampled, {} faces, {} tracks in {:.1}s",
        out.decode.sampled,
        out.observations,
        out.templates.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(out.decode.decoded, 105);
    assert!(out.templates.len() >= 2, "several people: {} tracks", out.templates.len());
    for t in &out.templates {
        eprintln!(
            "track {}: frames {}-{} ({} obs), quality {:.2}, box {:?}",
            t.track_id, t.frame_start, t.frame_end, t.num_frames, t.quality, t.bbox
        );
        for p in &t.points {
            let cos: f32 = p.embedding.iter().zip(&t.embedding).map(|(a, b)| a * b).sum();
            assert!(cos > 0.85, "track {} frame {}: cos {cos} to its template", t.track_id, p.frame);
        }
        assert!(!t.thumbnail_jpeg.is_empty());
    }
    // No detection is claimed twice: tracks alive in the same frame are at
    // different places.
    for (i, a) in out.templates.iter().enumerate() {
        for b in &out.templates[i + 1..] {
            for p in &a.points {
                if let Some(q) = b.points.iter().find(|q| q.frame == p.frame) {
                    assert!(
                        p.bbox.iou(&q.bbox) < 0.3,
                        "tracks {} and {} share frame {}",
                        a.track_id,
                        b.track_id,
                        p.frame
                    );
                }
            }
        }
    }
}
