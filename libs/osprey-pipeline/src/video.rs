//! One segment of one video → per-track templates of every modality asked
//! for. Each frame is decoded once and handed to every modality's analyzer,
//! each with its own tracker. Decoding runs on its own thread a few frames
//! ahead of inference, so the two overlap. When bodies are tracked, every
//! analysed frame also feeds a background model, whose foreground inside
//! each person's box becomes that body track's silhouettes
//! ([`crate::silhouette`]).

use std::path::Path;
use std::sync::mpsc;

use osprey_core::{Error, Modality, Result};
use osprey_media::video::{DecodeStats, Sampling, Segment, VideoFrame, VideoInfo, VideoReader};

use crate::gait::GaitFrameTracks;
use crate::scene::Signature;
use crate::silhouette::{SilhouetteOptions, SilhouetteTracks};
use crate::{FrameAnalyzer, MediaTemplate, Tracker};

/// Frames decoded ahead of inference.
const DECODE_AHEAD: usize = 4;

/// How to process a video.
#[derive(Debug, Clone, Copy)]
pub struct VideoOptions {
    pub sampling: Sampling,
    pub segment: Segment,
    /// Keep every body track's person crops for a frame-reading gait model
    /// (BigGait; [`crate::gait::GaitFrameTracks`]).
    pub gait_frames: bool,
}

/// What one segment gave.
#[derive(Debug)]
pub struct VideoOutput {
    pub info: VideoInfo,
    pub segment: Segment,
    /// The tracks of every analyzer, in the analyzers' order, each tagged
    /// with its modality and model.
    pub templates: Vec<MediaTemplate>,
    pub decode: DecodeStats,
    /// Observations over all sampled frames.
    pub observations: usize,
}

/// Progress of one sampled frame: its time and the objects found in it.
#[derive(Debug, Clone, Copy)]
pub struct FrameDone {
    pub t_ms: i64,
    pub found: usize,
}

enum Msg {
    Info(VideoInfo),
    Frame(VideoFrame),
}

/// Decodes `options.segment` of the video at `path` (named `name` in errors)
/// and tracks what each of `analyzers` finds; `on_frame` is called after
/// each sampled frame (for progress).
pub fn process_video(
    analyzers: &[&dyn FrameAnalyzer],
    path: &Path,
    name: &str,
    options: VideoOptions,
    on_frame: &(dyn Fn(FrameDone) + Sync),
) -> Result<VideoOutput> {
    let (tx, rx) = mpsc::sync_channel::<Msg>(DECODE_AHEAD);
    std::thread::scope(|scope| {
        let decoder = scope.spawn(move || -> Result<DecodeStats> {
            let mut reader = VideoReader::open(path, name)?;
            if tx.send(Msg::Info(reader.info().clone())).is_err() {
                return Ok(DecodeStats::default());
            }
            // A closed channel means inference stopped (it failed): stop too.
            reader.decode(options.segment, options.sampling, |frame| Ok(tx.send(Msg::Frame(frame)).is_ok()))
        });
        let inference = (|| -> Result<(VideoInfo, Vec<MediaTemplate>, usize)> {
            let Ok(Msg::Info(info)) = rx.recv() else {
                // The decoder failed to open the file; its error is reported below.
                return Err(Error::internal("decoder stopped"));
            };
            let mut trackers: Vec<Tracker> = analyzers.iter().map(|a| Tracker::new(a.tracker_config())).collect();
            // The body analyzer's tracks get silhouettes from a background
            // model that sees every analysed frame in order.
            let body = analyzers.iter().position(|a| a.modality() == Modality::Body);
            let mut silhouettes = body.map(|_| SilhouetteTracks::new(SilhouetteOptions::default()));
            let mut gait_frames = body.filter(|_| options.gait_frames).map(|_| GaitFrameTracks::default());
            let mut observations = 0;
            let mut last_signature: Option<Signature> = None;
            for msg in rx.iter() {
                let Msg::Frame(frame) = msg else { continue };
                // A cancelled job's analysis stops here ([`crate::cancel`]).
                crate::cancel::check(name)?;
                let signature = Signature::of(&frame.image);
                if last_signature.as_ref().is_some_and(|s| s.is_cut(&signature)) {
                    tracing::debug!(frame = frame.index, t_ms = frame.t_ms, "shot cut");
                    trackers.iter_mut().for_each(Tracker::cut);
                    silhouettes.iter_mut().for_each(SilhouetteTracks::cut);
                }
                last_signature = Some(signature);
                if let Some(s) = &mut silhouettes {
                    s.learn(&frame.image).map_err(|e| {
                        e.context(format!("{name}: frame {} ({} ms), background", frame.index, frame.t_ms))
                    })?;
                }
                let mut found_here = 0;
                for (i, (analyzer, tracker)) in analyzers.iter().zip(&mut trackers).enumerate() {
                    let hints = tracker.predicted_boxes(frame.t_ms);
                    let found = analyzer.analyze_near(&frame.image, &hints).map_err(|e| {
                        e.context(format!("{name}: frame {} ({} ms), {}", frame.index, frame.t_ms, analyzer.modality()))
                    })?;
                    found_here += found.len();
                    let ids = tracker.update(frame.index, frame.t_ms, &frame.image, &found);
                    if body == Some(i) {
                        let boxes: Vec<_> = found.iter().map(|o| o.bbox).collect();
                        if let Some(s) = &mut silhouettes {
                            s.add_people(frame.index, &boxes, &ids)?;
                        }
                        if let Some(g) = &mut gait_frames {
                            g.add_people(frame.index, &frame.image, &boxes, &ids)?;
                        }
                    }
                }
                observations += found_here;
                on_frame(FrameDone { t_ms: frame.t_ms, found: found_here });
            }
            let mut strips = silhouettes.map(|s| s.finish(name)).unwrap_or_default();
            let mut crops = gait_frames.map(GaitFrameTracks::finish).unwrap_or_default();
            let mut templates = Vec::new();
            for (i, (analyzer, tracker)) in analyzers.iter().zip(trackers).enumerate() {
                for mut t in tracker.finish()? {
                    if body == Some(i) {
                        t.silhouettes = strips.remove(&t.track_id).map(|s| s.strip()).transpose()?;
                        t.gait_frames = crops.remove(&t.track_id);
                    }
                    if let Some(fused) = analyzer
                        .fuse_track(&t.points)
                        .map_err(|e| e.context(format!("{name}: fusing track {}", t.track_id)))?
                    {
                        t.embedding = fused;
                    }
                    t.modality = analyzer.modality();
                    t.model = analyzer.model().to_string();
                    templates.push(t);
                }
            }
            Ok((info, templates, observations))
        })();
        // Unblocks the decoder if inference stopped early.
        drop(rx);
        let decoded = decoder.join().map_err(|_| Error::internal(format!("{name}: the decoder thread panicked")))?;
        // A decode error explains an inference that saw no frames; report it first.
        let decode = decoded?;
        let (info, templates, observations) = inference?;
        Ok(VideoOutput { info, segment: options.segment, templates, decode, observations })
    })
}
