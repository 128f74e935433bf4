//! `osprey bench people`: frames/s of the CenterNet person detector on raw
//! RGB frames (the same bytes `infra/scripts/bench-people.sh` gives the
//! TF.js runtime).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use osprey_models::centernet::{PersonDetector, PersonOptions};

#[derive(clap::Args)]
pub struct PeopleBench {
    /// Folder with the model files (the detector under centernet/; default:
    /// $OSPREY_MODELS, else ./models).
    #[arg(long, env = "OSPREY_MODELS")]
    models: Option<PathBuf>,
    /// Raw rgb24 frames, concatenated (`ffmpeg … -f rawvideo -pix_fmt rgb24`).
    #[arg(long)]
    frames: PathBuf,
    #[arg(long)]
    width: usize,
    #[arg(long)]
    height: usize,
    /// Network input's long side (default: the detector's, 1024).
    #[arg(long)]
    input: Option<usize>,
    /// Stretch frames to a square input, as the `human` library does.
    #[arg(long)]
    stretch: bool,
    /// Timed passes over all frames after one warm-up frame; the best is reported.
    #[arg(long, default_value_t = 2)]
    repeat: usize,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

pub fn people(args: PeopleBench) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.frames).with_context(|| format!("cannot read {}", args.frames.display()))?;
    let frame_bytes = args.width * args.height * 3;
    if frame_bytes == 0 || bytes.is_empty() || bytes.len() % frame_bytes != 0 {
        bail!(
            "{} holds {} bytes, not a whole number of {}×{} RGB frames",
            args.frames.display(),
            bytes.len(),
            args.width,
            args.height
        );
    }
    let frames: Vec<&[u8]> = bytes.chunks_exact(frame_bytes).collect();
    let dir = osprey_models::model_dir(args.models.as_deref());
    let detector = PersonDetector::load(&dir, &osprey_models::default_device()?)?;
    let mut opts = PersonOptions { stretch: args.stretch, ..PersonOptions::default() };
    if let Some(side) = args.input {
        opts.input_long_side = Some(side);
    }
    let input = PersonDetector::input_size(args.width, args.height, &opts);
    detector.detect(frames[0], args.width, args.height, &opts)?;
    let threads: usize = std::env::var("RAYON_NUM_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1);
    let mut best_s = f64::INFINITY;
    let mut people = 0;
    let mut tall50 = 0;
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        people = 0;
        tall50 = 0;
        for f in &frames {
            let found = detector.detect(f, args.width, args.height, &opts)?;
            people += found.len();
            tall50 += found.iter().filter(|p| p.height() >= 50.0).count();
        }
        best_s = best_s.min(t.elapsed().as_secs_f64());
    }
    let fps = frames.len() as f64 / best_s;
    let out = serde_json::json!({
        "impl": "osprey",
        "frames": frames.len(),
        "frame_size": [args.width, args.height],
        "input": [input.1, input.0],
        "stretch": args.stretch,
        "threads": threads,
        "people": people,
        "people_50px": tall50,
        "best_s": best_s,
        "fps": (fps * 1000.0).round() / 1000.0,
    });
    if args.json {
        println!("{out}");
    } else {
        println!(
            "people: {} frames {}×{} at input {}×{}, {threads} threads: {fps:.2} frames/s, {people} people ({tall50} ≥ 50 px tall), best of {}",
            frames.len(),
            args.width,
            args.height,
            input.1,
            input.0,
            args.repeat.max(1)
        );
    }
    Ok(())
}
