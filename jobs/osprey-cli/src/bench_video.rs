//! `osprey bench video`: the face pipeline's speed on one clip (decode only,
//! every frame, frames sampled at a rate), under a detection strategy
//! (`--detect`), optionally with the faces and tracks that strategy finds
//! checked against the exact path's (`--compare`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use osprey_media::video::{Sampling, Segment, VideoReader};
use osprey_pipeline::{FaceAnalyzer, FaceDetect, MediaTemplate, VideoOptions, VideoOutput, process_video};

#[derive(clap::Args)]
pub struct VideoBench {
    /// Folder with the model files (default: $OSPREY_MODELS, else ./models).
    #[arg(long, env = "OSPREY_MODELS")]
    models: Option<PathBuf>,
    /// Image doublings before detection.
    #[arg(long, default_value_t = 1)]
    upsample: u32,
    /// Detection budget in megapixels (as `osprey run`).
    #[arg(long, default_value_t = 4.0)]
    max_detect_megapixels: f64,
    /// Where MMOD searches each frame: `every-frame` (the whole frame;
    /// exact) or `cascade` (crops around MTCNN's proposals and the tracks'
    /// expected boxes). Default: `osprey run`'s.
    #[arg(long, default_value = osprey_pipeline::media::DEFAULT_FACE_DETECT.as_str())]
    detect: String,
    /// Rate of the sampled pass.
    #[arg(long, default_value_t = 5.0)]
    sample_fps: f64,
    /// Only the first N frames in each pass.
    #[arg(long)]
    max_frames: Option<u64>,
    /// Passes to run, of `decode`, `full` (every frame) and `sampled`.
    #[arg(long, value_delimiter = ',', default_value = "decode,full,sampled")]
    modes: Vec<String>,
    /// Also run the sampled pass with `--detect every-frame` (a second time,
    /// when that is the strategy benchmarked) and report how
    /// many of its faces (same frame, box IoU >= 0.5) and tracks (at least
    /// one face matched) the chosen strategy found.
    #[arg(long)]
    compare: bool,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
    video: PathBuf,
}

/// Two faces are the same when their boxes overlap this much (IoU).
const SAME_FACE_IOU: f32 = 0.5;

pub fn video(args: VideoBench) -> anyhow::Result<()> {
    for m in &args.modes {
        if !["decode", "full", "sampled"].contains(&m.as_str()) {
            bail!("unknown mode `{m}`; available: decode, full, sampled");
        }
    }
    let detect = FaceDetect::parse(&args.detect)?;
    let name = args.video.display().to_string();
    let info = VideoReader::open(&args.video, &name)?.info().clone();
    let end_ms = args.max_frames.map_or(i64::MAX, |n| (n as f64 * 1000.0 / info.fps - 1.0).ceil() as i64);
    let segment = Segment { start_ms: 0, end_ms };
    let dir = osprey_models::model_dir(args.models.as_deref());
    let models = osprey_models::FaceModels::load(&dir, &osprey_models::default_device()?)?;
    let options = osprey_models::FaceOptions {
        upsample: args.upsample,
        max_detect_pixels: (args.max_detect_megapixels * 1e6) as u64,
        ..Default::default()
    };
    let exact = FaceAnalyzer::new(models, options);
    let proposer = match detect {
        FaceDetect::Cascade => Some(Arc::new(osprey_pipeline::media::load_mtcnn(&dir)?)),
        FaceDetect::EveryFrame => None,
    };
    let analyzer = exact.with_options(options).with_detect(detect, proposer);
    let run = |a: &FaceAnalyzer, sampling: Sampling| -> anyhow::Result<(VideoOutput, f64)> {
        let started = Instant::now();
        let out =
            process_video(&[a], &args.video, &name, VideoOptions { sampling, segment, gait_frames: false }, &|_| {})?;
        Ok((out, started.elapsed().as_secs_f64()))
    };
    let pass = |out: &VideoOutput, secs: f64| {
        serde_json::json!({"frames": out.decode.decoded, "processed": out.decode.sampled, "seconds": secs,
            "frames_per_s": out.decode.decoded as f64 / secs, "processed_per_s": out.decode.sampled as f64 / secs,
            "faces": out.observations, "tracks": out.templates.len()})
    };

    let mut modes = serde_json::Map::new();
    if args.modes.iter().any(|m| m == "decode") {
        let started = Instant::now();
        let stats = VideoReader::open(&args.video, &name)?.decode(segment, Sampling::All, |_| Ok(true))?;
        let decode_s = started.elapsed().as_secs_f64();
        modes.insert(
            "decode".into(),
            serde_json::json!({"frames": stats.decoded, "processed": 0, "seconds": decode_s,
                "frames_per_s": stats.decoded as f64 / decode_s}),
        );
    }
    let mut sampled = None;
    for (mode, sampling) in [("full", Sampling::All), ("sampled", Sampling::Fps(args.sample_fps))] {
        if !args.modes.iter().any(|m| m == mode) && !(mode == "sampled" && args.compare) {
            continue;
        }
        let (out, secs) = run(&analyzer, sampling)?;
        modes.insert(mode.into(), pass(&out, secs));
        if mode == "sampled" {
            sampled = Some(out);
        }
    }
    let mut comparison = serde_json::Value::Null;
    if let (true, Some(fast)) = (args.compare, &sampled) {
        let (out, secs) = run(&exact, Sampling::Fps(args.sample_fps))?;
        modes.insert("sampled_every_frame".into(), pass(&out, secs));
        comparison = compare(&out.templates, &fast.templates);
    }
    let doc = serde_json::json!({
        "video": name, "width": info.width, "height": info.height, "fps": info.fps,
        "detector": "mmod-cnn", "detect": detect.as_str(), "upsample": args.upsample,
        "max_detect_megapixels": args.max_detect_megapixels,
        "sample_fps": args.sample_fps, "threads": rayon::current_num_threads(), "modes": modes,
        "against_every_frame": comparison,
    });
    if args.json {
        println!("{doc}");
        return Ok(());
    }
    println!("detect: {}", detect.as_str());
    println!(
        "{:20} {:>6} {:>9} {:>9} {:>9} {:>6} {:>6}",
        "mode", "frames", "processed", "seconds", "frames/s", "faces", "tracks"
    );
    for (mode, m) in doc["modes"].as_object().expect("object") {
        println!(
            "{mode:20} {:>6} {:>9} {:>9.2} {:>9.2} {:>6} {:>6}",
            m["frames"],
            m["processed"],
            m["seconds"].as_f64().unwrap_or(0.0),
            m["frames_per_s"].as_f64().unwrap_or(0.0),
            m["faces"],
            m["tracks"]
        );
    }
    if !comparison.is_null() {
        println!("against every-frame: {comparison}");
    }
    Ok(())
}

/// How many of the exact path's faces (`exact`'s track points) the fast
/// strategy's tracks hold too (same frame, IoU >= [`SAME_FACE_IOU`], each
/// face matched at most once), how many of its tracks have at least one
/// such face, and how many faces the fast strategy found that the exact
/// path did not; the faces missed and the extra ones are listed by frame
/// and box.
pub fn compare(exact: &[MediaTemplate], fast: &[MediaTemplate]) -> serde_json::Value {
    let mut fast_faces: std::collections::HashMap<i64, Vec<(osprey_pipeline::BoxF, bool)>> = Default::default();
    for p in fast.iter().flat_map(|t| &t.points) {
        fast_faces.entry(p.frame).or_default().push((p.bbox, false));
    }
    let (mut faces, mut matched, mut tracks, mut tracks_found) = (0usize, 0usize, 0usize, 0usize);
    let mut missed = Vec::new();
    for t in exact {
        tracks += 1;
        let mut any = false;
        for p in &t.points {
            faces += 1;
            let Some(cands) = fast_faces.get_mut(&p.frame) else {
                missed.push(face_json(p.frame, &p.bbox));
                continue;
            };
            let best = cands
                .iter_mut()
                .filter(|(b, used)| !used && b.iou(&p.bbox) >= SAME_FACE_IOU)
                .max_by(|a, b| a.0.iou(&p.bbox).total_cmp(&b.0.iou(&p.bbox)));
            match best {
                Some(c) => {
                    c.1 = true;
                    matched += 1;
                    any = true;
                }
                None => missed.push(face_json(p.frame, &p.bbox)),
            }
        }
        tracks_found += usize::from(any);
    }
    let mut extra: Vec<(i64, osprey_pipeline::BoxF)> =
        fast_faces.iter().flat_map(|(f, c)| c.iter().filter(|(_, used)| !used).map(|(b, _)| (*f, *b))).collect();
    extra.sort_by_key(|(f, _)| *f);
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    serde_json::json!({
        "faces": faces, "faces_found": matched, "face_recall": ratio(matched, faces),
        "tracks": tracks, "tracks_found": tracks_found, "track_recall": ratio(tracks_found, tracks),
        "extra_faces": extra.len(),
        "missed": missed, "extra": extra.iter().map(|(f, b)| face_json(*f, b)).collect::<Vec<_>>(),
    })
}

/// A face as `{frame, x, y, w, h}` (pixels, rounded).
fn face_json(frame: i64, b: &osprey_pipeline::BoxF) -> serde_json::Value {
    serde_json::json!({"frame": frame, "x": b.x.round(), "y": b.y.round(), "w": b.w.round(), "h": b.h.round()})
}
