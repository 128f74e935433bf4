//! Cost of the silhouette background model per frame.
//!
//! ```text
//! cargo run --release -p osprey-pipeline --example bench_background -- VIDEO [FRAMES]
//! ```
//!
//! Decodes the first FRAMES frames (default 200) of VIDEO, then times, per
//! frame: [`BackgroundModel::apply`] at the frame's own size, and
//! [`SilhouetteTracks::learn`] (what `process_video` runs: frames above
//! about 1 MP are first shrunk by a whole factor). Prints one line each with
//! the mean milliseconds per frame over the frames after the first 20.

use std::path::PathBuf;
use std::time::Instant;

use osprey_media::video::{Sampling, Segment, VideoReader};
use osprey_pipeline::silhouette::{BackgroundConfig, BackgroundModel, SilhouetteOptions, SilhouetteTracks};

const WARMUP: usize = 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().ok_or("usage: bench_background VIDEO [FRAMES]")?);
    let limit: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(200);
    let mut reader = VideoReader::open(&path, &path.display().to_string())?;
    let mut frames = Vec::new();
    reader.decode(Segment { start_ms: 0, end_ms: i64::MAX }, Sampling::All, |f| {
        frames.push(f.image);
        Ok(frames.len() < limit)
    })?;
    if frames.len() <= WARMUP {
        return Err(
            format!("{} has {} frames; the benchmark needs more than {WARMUP}", path.display(), frames.len()).into()
        );
    }
    let (w, h) = (frames[0].width() as usize, frames[0].height() as usize);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut model = BackgroundModel::new(w, h, BackgroundConfig::default())?;
    let mut mask = vec![0u8; w * h];
    let mut full = 0.0;
    for (i, f) in frames.iter().enumerate() {
        let t = Instant::now();
        model.apply(f.as_raw(), &mut mask)?;
        if i >= WARMUP {
            full += t.elapsed().as_secs_f64();
        }
    }
    let mut tracks = SilhouetteTracks::new(SilhouetteOptions::default());
    let mut learn = 0.0;
    for (i, f) in frames.iter().enumerate() {
        let t = Instant::now();
        tracks.learn(f)?;
        if i >= WARMUP {
            learn += t.elapsed().as_secs_f64();
        }
    }
    let (mw, mh, scale) = tracks.model_size().expect("frames were learnt");
    let n = (frames.len() - WARMUP) as f64;
    println!(
        "{}: {w}x{h}, {} frames timed, {threads} threads: BackgroundModel::apply at {w}x{h} {:.1} ms/frame; \
         SilhouetteTracks::learn (model at {mw}x{mh}, 1/{scale}) {:.1} ms/frame",
        path.display(),
        n,
        1000.0 * full / n,
        1000.0 * learn / n
    );
    Ok(())
}
