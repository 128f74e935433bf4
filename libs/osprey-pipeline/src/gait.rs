//! Gait templates: one per body track, through a gait recogniser: from the
//! silhouettes the video's background model cut for it
//! ([`crate::silhouette`]) for OpenGait's GaitBase, or from its RGB person
//! crops ([`GaitFrameTracks`]) for BigGait, which needs no static camera.
//!
//! A track's strip holds OpenGait's stored 64×64 frames, so the recogniser
//! reads them as OpenGait reads its pickles (cut to 64×44, /255), in time
//! order; GaitBase pools over the set, so the sampling rate changes which
//! poses are seen, not the arithmetic. A track gets a template when at least
//! [`MIN_GAIT_FRAMES`] silhouettes survive (about one gait cycle at 25
//! frames/s: with `sample_fps` 5, five seconds of walking; sample every frame
//! for short walks). Otherwise its gait row carries the reason in `error`
//! and no embedding, so a user sees why a person has no gait template.

use std::collections::HashMap;

use image::RgbImage;
use osprey_core::{Modality, Result};
use osprey_models::person::{MIN_GAIT_FRAMES, PersonRecognizer};
use osprey_models::rgb_pretreat::{self, RgbFrame};

use crate::silhouette::{Thinned, decode_strip};
use crate::{BoxF, MediaTemplate};

/// Most person crops kept per track for a frame-reading gait model: each
/// is 256×128 RGB (96 KiB), and BigGait's time grows with every frame, so
/// long tracks are thinned evenly to this many (over two gait cycles'
/// worth beyond the minimum).
pub const MAX_GAIT_FRAMES: usize = 64;

/// A track's person crops through OpenGait's `pretreatment_rgb`, with the
/// video frame each came from.
#[derive(Debug, Clone, Default)]
pub struct GaitFrames {
    pub frames: Vec<i64>,
    pub images: Vec<RgbFrame>,
}

/// The per-video state for a frame-reading gait model: every body track's
/// person crops, pretreated as they are seen (see [`MAX_GAIT_FRAMES`]).
#[derive(Default)]
pub struct GaitFrameTracks {
    tracks: HashMap<i64, Thinned<RgbFrame>>,
}

impl GaitFrameTracks {
    /// The crops of one frame's people: `boxes[i]` (frame pixels) is an
    /// observation of track `tracks[i]` in video frame `frame`.
    pub fn add_people(&mut self, frame: i64, image: &RgbImage, boxes: &[BoxF], tracks: &[i64]) -> Result<()> {
        for (b, &track) in boxes.iter().zip(tracks) {
            // Cut and pretreated only when the thinning keeps it.
            self.tracks.entry(track).or_default().offer_with(frame, MAX_GAIT_FRAMES, || {
                let crop = crate::body::crop(image, b);
                rgb_pretreat::pretreat_frame(crop.as_raw(), crop.width() as usize, crop.height() as usize)
            })?;
        }
        Ok(())
    }

    /// Every track's crops, by track id.
    pub fn finish(self) -> HashMap<i64, GaitFrames> {
        self.tracks.into_iter().map(|(id, t)| (id, GaitFrames { frames: t.frames, images: t.items })).collect()
    }
}

/// The gait template of body track `body` (its silhouettes or person crops
/// through `recognizer`): linked to the body track by `person_track`, with
/// the body's box, times and thumbnail, and its observations the frames
/// that gave silhouettes or crops. A track without enough of them gives a
/// row with `error` set. The body's crops (kept in memory only for this)
/// are taken from it, not copied.
pub fn gait_template(recognizer: &PersonRecognizer, body: &mut MediaTemplate) -> MediaTemplate {
    let gait_frames = body.gait_frames.take();
    let spec = recognizer.spec();
    let mut t = MediaTemplate {
        modality: Modality::Gait,
        model: spec.id.to_string(),
        person_track: Some((body.track_id, body.model.clone())),
        embedding: Vec::new(),
        quality: 0.0,
        landmarks: Vec::new(),
        silhouettes: None,
        gait_frames: None,
        error: None,
        ..body.clone()
    };
    let (embedded, frames) = if recognizer.reads_rgb_sequences() {
        let Some(crops) = &gait_frames else {
            return without_template(t, "no person crops kept for this track");
        };
        (recognizer.embed_gait_pretreated_rgb(&crops.images), &crops.frames)
    } else {
        let Some(strip) = &body.silhouettes else {
            return without_template(
                t,
                "no silhouettes for this track (a moving camera, or the person never seen whole against the background)",
            );
        };
        let embedded =
            decode_strip(&strip.png, "silhouette strip").and_then(|frames| recognizer.embed_gait_pretreated(&frames));
        (embedded, &strip.frames)
    };
    t.points.retain(|p| frames.contains(&p.frame));
    match embedded {
        Ok((embedding, used)) => {
            t.embedding = embedding;
            t.num_frames = used;
            t.quality = gait_quality(used, body.num_frames);
        }
        Err(e) => {
            t.num_frames = frames.len();
            t.error = Some(e.message().to_string());
        }
    }
    t
}

/// `t` as a row with no template and `why` (plus the minimum) in `error`.
fn without_template(mut t: MediaTemplate, why: &str) -> MediaTemplate {
    t.num_frames = 0;
    t.points.clear();
    t.error = Some(format!("{why}; a gait template needs at least {MIN_GAIT_FRAMES}"));
    t
}

/// Gait templates for the body tracks among `templates`, in their order.
pub fn gait_templates(recognizer: &PersonRecognizer, templates: &mut [MediaTemplate]) -> Vec<MediaTemplate> {
    templates.iter_mut().filter(|t| t.modality == Modality::Body).map(|b| gait_template(recognizer, b)).collect()
}

/// How far a gait template can be trusted, 0..1: the share of a gait
/// cycle's worth of frames ([`MIN_GAIT_FRAMES`]) seen twice over, times the
/// share of the track's observations that gave a whole silhouette.
pub fn gait_quality(silhouettes: usize, track_frames: usize) -> f32 {
    if silhouettes == 0 || track_frames == 0 {
        return 0.0;
    }
    let length = (silhouettes as f32 / (2 * MIN_GAIT_FRAMES) as f32).min(1.0);
    let coverage = (silhouettes as f32 / track_frames as f32).min(1.0);
    length * coverage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gait_quality_grows_with_length_and_coverage() {
        assert_eq!(gait_quality(0, 10), 0.0);
        assert_eq!(gait_quality(50, 50), 1.0);
        assert_eq!(gait_quality(100, 100), 1.0);
        assert!((gait_quality(25, 25) - 0.5).abs() < 1e-6);
        assert!((gait_quality(50, 100) - 0.5).abs() < 1e-6);
        assert!(gait_quality(30, 60) < gait_quality(30, 30));
    }
}
