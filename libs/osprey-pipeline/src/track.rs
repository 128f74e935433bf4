//! Multi-object tracking by detection, SORT/DeepSORT-style: each track has a
//! constant-velocity Kalman filter on its box (centre, width, height, each
//! with its velocity) and an appearance vector (a running mean of its unit
//! embeddings). Each frame, every track is predicted to the frame's time and
//! paired with the detections greedily by IoU plus appearance similarity,
//! under two gates: a detection near the predicted box must look similar
//! (`appearance_gate_near`), one far from it must look like the same person
//! (`appearance_gate_far`, a verification-level threshold), so a track never
//! jumps to someone else when people cross. Time steps are real time, so the
//! same settings work at any sampling rate.

use image::RgbImage;

use crate::quality::{Aggregate, encode_jpeg, thumbnail};
use crate::{BoxF, MediaTemplate, Observation};

/// Tracker settings; the model supplies its appearance gates.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerConfig {
    /// A track not seen for this long ends.
    pub max_age_ms: i64,
    /// Tracks with fewer observations are dropped as spurious.
    pub min_hits: usize,
    /// Boxes overlapping at least this much count as near.
    pub iou_gate: f32,
    /// Centres within this many box heights count as near.
    pub near_distance: f32,
    /// Beyond this many box heights no association is made.
    pub max_distance: f32,
    /// Largest change of box height between prediction and detection
    /// (a factor either way).
    pub max_scale_change: f32,
    /// Least cosine similarity to associate a near detection.
    pub appearance_gate_near: f32,
    /// Least cosine similarity to associate a detection away from the prediction.
    pub appearance_gate_far: f32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            max_age_ms: 2000,
            min_hits: 2,
            iou_gate: 0.2,
            near_distance: 0.75,
            max_distance: 6.0,
            max_scale_change: 1.6,
            appearance_gate_near: 0.5,
            appearance_gate_far: 0.8,
        }
    }
}

/// A constant-velocity Kalman filter on one coordinate.
#[derive(Debug, Clone)]
struct Axis {
    x: f32,
    v: f32,
    p: [[f32; 2]; 2],
}

impl Axis {
    fn new(z: f32, pos_std: f32, vel_std: f32) -> Self {
        Self { x: z, v: 0.0, p: [[pos_std * pos_std, 0.0], [0.0, vel_std * vel_std]] }
    }

    /// Moves the state `dt` seconds ahead; `accel_std` is the process noise.
    fn predict(&mut self, dt: f32, accel_std: f32) {
        self.x += self.v * dt;
        let [[a, b], [c, d]] = self.p;
        // P = F P Fᵀ + Q with F = [[1, dt], [0, 1]] and white acceleration noise.
        let q = accel_std * accel_std;
        let (dt2, dt3) = (dt * dt, dt * dt * dt);
        self.p = [
            [a + dt * (b + c) + dt2 * d + q * dt3 / 3.0, b + dt * d + q * dt2 / 2.0],
            [c + dt * d + q * dt2 / 2.0, d + q * dt],
        ];
    }

    fn update(&mut self, z: f32, meas_std: f32) {
        let r = meas_std * meas_std;
        let [[a, b], [c, d]] = self.p;
        let s = a + r;
        let (k0, k1) = (a / s, c / s);
        let y = z - self.x;
        self.x += k0 * y;
        self.v += k1 * y;
        self.p = [[(1.0 - k0) * a, (1.0 - k0) * b], [c - k1 * a, d - k1 * b]];
    }
}

/// One observation of a track.
#[derive(Debug, Clone)]
pub struct TrackPoint {
    pub frame: i64,
    pub t_ms: i64,
    pub bbox: BoxF,
    /// Keypoints in this frame, x0, y0, x1, y1, … in pixels (empty when the
    /// model has none).
    pub landmarks: Vec<f32>,
    /// The keypoints' scores (see [`Observation::landmark_scores`]).
    pub landmark_scores: Vec<f32>,
    pub quality: f32,
    pub embedding: Vec<f32>,
    /// The observation's feature norm where it measures quality.
    pub quality_norm: Option<f32>,
    /// The observation's [`Observation::style`].
    pub style: Vec<f32>,
}

impl TrackPoint {
    /// The point of observation `o` in frame `frame` at `t_ms`.
    pub fn of(frame: i64, t_ms: i64, o: &Observation) -> TrackPoint {
        TrackPoint {
            frame,
            t_ms,
            bbox: o.bbox,
            landmarks: o.landmarks.clone(),
            landmark_scores: o.landmark_scores.clone(),
            quality: o.quality,
            embedding: o.embedding.clone(),
            quality_norm: o.quality_norm,
            style: o.style.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct Best {
    quality: f32,
    frame: i64,
    bbox: BoxF,
    landmarks: Vec<f32>,
    crop: RgbImage,
}

/// A live or finished track.
#[derive(Debug, Clone)]
pub struct Track {
    pub id: i64,
    axes: [Axis; 4],
    /// When the track was last seen (its age counts from here).
    last_t_ms: i64,
    /// The time the Kalman state refers to: the last prediction's, which
    /// runs ahead of `last_t_ms` while the track goes unseen.
    state_t_ms: i64,
    appearance: Vec<f32>,
    aggregate: Aggregate,
    best: Best,
    pub points: Vec<TrackPoint>,
}

fn state_box(axes: &[Axis; 4]) -> BoxF {
    let (w, h) = (axes[2].x.max(1.0), axes[3].x.max(1.0));
    BoxF { x: axes[0].x - w / 2.0, y: axes[1].x - h / 2.0, w, h }
}

impl Track {
    fn new(id: i64, frame: i64, t_ms: i64, image: &RgbImage, o: &Observation) -> Track {
        let b = o.bbox;
        let (cx, cy) = b.center();
        let h = b.h.max(1.0);
        let axes = [
            Axis::new(cx, 0.1 * h, 2.0 * h),
            Axis::new(cy, 0.1 * h, 2.0 * h),
            Axis::new(b.w, 0.1 * h, 0.5 * h),
            Axis::new(b.h, 0.1 * h, 0.5 * h),
        ];
        let mut aggregate = Aggregate::new(o.embedding.len());
        aggregate.add(&o.embedding, o.quality, o.quality_norm);
        Track {
            id,
            axes,
            last_t_ms: t_ms,
            state_t_ms: t_ms,
            appearance: o.embedding.clone(),
            aggregate,
            best: Best {
                quality: o.quality,
                frame,
                bbox: b,
                landmarks: o.landmarks.clone(),
                crop: thumbnail(image, &b),
            },
            points: vec![TrackPoint::of(frame, t_ms, o)],
        }
    }

    /// Moves the state on to `t_ms`, from where the last prediction left it
    /// (an unseen track is predicted one step at a time, not again from
    /// its last sighting each step).
    fn predict_to(&mut self, t_ms: i64) {
        let dt = ((t_ms - self.state_t_ms) as f32 / 1000.0).max(0.0);
        if dt == 0.0 {
            return;
        }
        self.state_t_ms = t_ms;
        let h = self.axes[3].x.max(1.0);
        for (i, axis) in self.axes.iter_mut().enumerate() {
            axis.predict(dt, if i < 2 { 1.5 * h } else { 0.5 * h });
        }
    }

    fn observe(&mut self, frame: i64, t_ms: i64, image: &RgbImage, o: &Observation) {
        let b = o.bbox;
        let (cx, cy) = b.center();
        let meas = 0.08 * b.h.max(1.0);
        for (axis, z) in self.axes.iter_mut().zip([cx, cy, b.w, b.h]) {
            axis.update(z, meas);
        }
        self.last_t_ms = t_ms;
        self.aggregate.add(&o.embedding, o.quality, o.quality_norm);
        // Appearance: the quality-weighted mean so far, so one blurred frame
        // cannot drag the track towards someone else.
        if let Some(e) = self.aggregate.embedding() {
            self.appearance = e;
        }
        if o.quality > self.best.quality {
            self.best =
                Best { quality: o.quality, frame, bbox: b, landmarks: o.landmarks.clone(), crop: thumbnail(image, &b) };
        }
        self.points.push(TrackPoint::of(frame, t_ms, o));
    }

    /// The predicted box at the last prediction time.
    pub fn predicted_box(&self) -> BoxF {
        state_box(&self.axes)
    }

    fn into_template(self) -> osprey_core::Result<MediaTemplate> {
        let first = self.points.first().expect("a track has a point");
        let last = self.points.last().expect("a track has a point");
        Ok(MediaTemplate {
            track_id: self.id,
            // The tracker is modality-blind: `process_video` tags its tracks.
            modality: osprey_core::Modality::Face,
            model: String::new(),
            person_track: None,
            embedding: self.aggregate.embedding().expect("a track has an observation"),
            quality: self.aggregate.quality(),
            bbox: self.best.bbox,
            landmarks: self.best.landmarks.clone(),
            frame_start: first.frame,
            frame_end: last.frame,
            t_start_ms: first.t_ms,
            t_end_ms: last.t_ms,
            num_frames: self.points.len(),
            best_frame: self.best.frame,
            thumbnail_jpeg: encode_jpeg(&self.best.crop)?,
            points: self.points,
            // Silhouettes come from the video's background model, not the
            // tracker: `process_video` attaches them.
            silhouettes: None,
            gait_frames: None,
            error: None,
        })
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Links observations across frames into tracks.
pub struct Tracker {
    config: TrackerConfig,
    live: Vec<Track>,
    finished: Vec<Track>,
    next_id: i64,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self { config, live: Vec::new(), finished: Vec::new(), next_id: 0 }
    }

    /// Tracks now alive.
    pub fn live(&self) -> &[Track] {
        &self.live
    }

    /// Where the live tracks are expected at `t_ms` (their Kalman
    /// prediction; tracks unseen for longer than the tracker keeps them are
    /// left out): a detector may search near these first.
    pub fn predicted_boxes(&self, t_ms: i64) -> Vec<BoxF> {
        self.live
            .iter()
            .filter(|t| t_ms - t.last_t_ms <= self.config.max_age_ms)
            .map(|t| {
                let mut axes = t.axes.clone();
                let dt = ((t_ms - t.state_t_ms) as f32 / 1000.0).max(0.0);
                if dt > 0.0 {
                    let h = axes[3].x.max(1.0);
                    for (i, axis) in axes.iter_mut().enumerate() {
                        axis.predict(dt, if i < 2 { 1.5 * h } else { 0.5 * h });
                    }
                }
                state_box(&axes)
            })
            .collect()
    }

    /// Adds one frame's observations; returns the track id given to each.
    pub fn update(&mut self, frame: i64, t_ms: i64, image: &RgbImage, observations: &[Observation]) -> Vec<i64> {
        let cfg = &self.config;
        // Tracks end before they can claim anything when unseen for too
        // long, or when expected to have walked out of the picture (the
        // predicted centre outside it): whoever comes in next, even in the
        // same clothes, is someone else until the appearance says otherwise
        // on a track of its own.
        let (w, h) = (image.width() as f32, image.height() as f32);
        for t in &mut self.live {
            t.predict_to(t_ms);
        }
        let (keep, ended): (Vec<Track>, Vec<Track>) = std::mem::take(&mut self.live).into_iter().partition(|t| {
            let (cx, cy) = t.predicted_box().center();
            t_ms - t.last_t_ms <= cfg.max_age_ms && (0.0..=w).contains(&cx) && (0.0..=h).contains(&cy)
        });
        self.live = keep;
        self.finished.extend(ended);
        let mut pairs = Vec::new();
        for (ti, t) in self.live.iter().enumerate() {
            let pred = t.predicted_box();
            for (oi, o) in observations.iter().enumerate() {
                let iou = pred.iou(&o.bbox);
                let (pc, oc) = (pred.center(), o.bbox.center());
                let scale = pred.h.min(o.bbox.h).max(1.0);
                let growth = o.bbox.h.max(1.0) / pred.h.max(1.0);
                if growth > cfg.max_scale_change || growth < 1.0 / cfg.max_scale_change {
                    continue;
                }
                let dist = ((pc.0 - oc.0).powi(2) + (pc.1 - oc.1).powi(2)).sqrt() / scale;
                let cos = cosine(&t.appearance, &o.embedding);
                let near = iou >= cfg.iou_gate || dist <= cfg.near_distance;
                let allowed = if near {
                    cos >= cfg.appearance_gate_near
                } else {
                    cos >= cfg.appearance_gate_far && dist <= cfg.max_distance
                };
                if allowed {
                    pairs.push((cos + iou, ti, oi));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_taken = vec![false; self.live.len()];
        let mut assigned: Vec<Option<i64>> = vec![None; observations.len()];
        for (_, ti, oi) in pairs {
            if track_taken[ti] || assigned[oi].is_some() {
                continue;
            }
            track_taken[ti] = true;
            let track = &mut self.live[ti];
            track.observe(frame, t_ms, image, &observations[oi]);
            assigned[oi] = Some(track.id);
            let b = observations[oi].bbox;
            tracing::debug!(frame, t_ms, track = track.id, x = b.x, y = b.y, h = b.h, "continued");
        }
        for (oi, o) in observations.iter().enumerate() {
            if assigned[oi].is_none() {
                let id = self.next_id;
                self.next_id += 1;
                self.live.push(Track::new(id, frame, t_ms, image, o));
                tracing::debug!(frame, t_ms, track = id, x = o.bbox.x, y = o.bbox.y, h = o.bbox.h, "new track");
                assigned[oi] = Some(id);
            }
        }
        assigned.into_iter().map(|a| a.expect("every observation assigned")).collect()
    }

    /// Ends every live track (at a shot cut: nobody continues across it).
    pub fn cut(&mut self) {
        self.finished.append(&mut self.live);
    }

    /// Ends every track; returns the templates of those with enough
    /// observations, ordered by first appearance.
    pub fn finish(mut self) -> osprey_core::Result<Vec<MediaTemplate>> {
        self.finished.append(&mut self.live);
        let min_hits = self.config.min_hits.max(1);
        let mut kept: Vec<Track> = self.finished.into_iter().filter(|t| t.points.len() >= min_hits).collect();
        kept.sort_by_key(|t| (t.points[0].frame, t.id));
        kept.into_iter().map(Track::into_template).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(x: f32, y: f32, size: f32, emb: [f32; 2]) -> Observation {
        let mut e = emb.to_vec();
        osprey_core::l2_normalize(&mut e);
        Observation {
            bbox: BoxF { x, y, w: size, h: size },
            confidence: 1.0,
            landmarks: vec![],
            landmark_scores: vec![],
            embedding: e,
            quality_norm: None,
            style: Vec::new(),
            quality: 0.8,
        }
    }

    #[test]
    fn kalman_follows_constant_motion() {
        let mut a = Axis::new(0.0, 1.0, 100.0);
        for i in 1..=10 {
            a.predict(0.1, 1.0);
            a.update(10.0 * i as f32 * 0.1 * 10.0, 0.5);
        }
        // Moving 100 px/s: the velocity is learned and the prediction leads.
        assert!((a.v - 100.0).abs() < 10.0, "v = {}", a.v);
        a.predict(0.1, 1.0);
        assert!((a.x - 110.0).abs() < 3.0, "x = {}", a.x);
    }

    #[test]
    fn an_unseen_track_is_predicted_once_per_step() {
        let img = RgbImage::new(800, 200);
        let mut tracker = Tracker::new(TrackerConfig::default());
        // Walking right at 100 px/s for a second, then hidden for half a second.
        for f in 0..10 {
            tracker.update(f, f * 100, &img, &[obs(10.0 + 10.0 * f as f32, 50.0, 40.0, [1.0, 0.0])]);
        }
        for f in 10..15 {
            tracker.update(f, f * 100, &img, &[]);
        }
        // At 1.4 s it is expected near x = 10 + 140 (box centre + 20).
        let x = tracker.live()[0].predicted_box().center().0;
        assert!((x - 170.0).abs() < 10.0, "predicted centre {x}");
    }

    #[test]
    fn two_people_crossing_keep_their_tracks() {
        let img = RgbImage::new(400, 200);
        let mut tracker = Tracker::new(TrackerConfig::default());
        let (a, b) = ([1.0, 0.0], [0.0, 1.0]);
        let mut ids_a = Vec::new();
        let mut ids_b = Vec::new();
        for f in 0..20 {
            let t = f * 100;
            let xa = 20.0 + 15.0 * f as f32;
            let xb = 320.0 - 15.0 * f as f32;
            // Detections come in swapped order every other frame.
            let mut frame = vec![obs(xa, 50.0, 40.0, a), obs(xb, 55.0, 40.0, b)];
            if f % 2 == 1 {
                frame.reverse();
            }
            let ids = tracker.update(f, t, &img, &frame);
            let (ia, ib) = if f % 2 == 1 { (ids[1], ids[0]) } else { (ids[0], ids[1]) };
            ids_a.push(ia);
            ids_b.push(ib);
        }
        assert!(ids_a.iter().all(|&i| i == ids_a[0]), "{ids_a:?}");
        assert!(ids_b.iter().all(|&i| i == ids_b[0]), "{ids_b:?}");
        assert_ne!(ids_a[0], ids_b[0]);
        let templates = tracker.finish().unwrap();
        assert_eq!(templates.len(), 2);
        assert_eq!(templates[0].num_frames, 20);
        assert_eq!((templates[0].frame_start, templates[0].frame_end), (0, 19));
        assert_eq!((templates[0].t_start_ms, templates[0].t_end_ms), (0, 1900));
    }

    #[test]
    fn tracks_end_after_max_age_and_short_ones_are_dropped() {
        let img = RgbImage::new(200, 200);
        let mut tracker = Tracker::new(TrackerConfig::default());
        tracker.update(0, 0, &img, &[obs(10.0, 10.0, 30.0, [1.0, 0.0])]);
        tracker.update(1, 100, &img, &[obs(12.0, 10.0, 30.0, [1.0, 0.0])]);
        // The same face back after 5 s is a new track.
        let ids = tracker.update(50, 5000, &img, &[obs(12.0, 10.0, 30.0, [1.0, 0.0])]);
        assert_eq!(ids, vec![1]);
        // A one-off false detection elsewhere.
        tracker.update(51, 5100, &img, &[obs(14.0, 10.0, 30.0, [1.0, 0.0]), obs(150.0, 150.0, 20.0, [0.0, 1.0])]);
        let templates = tracker.finish().unwrap();
        assert_eq!(templates.iter().map(|t| t.track_id).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn a_much_larger_face_around_a_track_starts_a_new_track() {
        let img = RgbImage::new(600, 400);
        let mut tracker = Tracker::new(TrackerConfig::default());
        tracker.update(0, 0, &img, &[obs(500.0, 50.0, 48.0, [1.0, 0.0])]);
        // A close-up after a cut: same look (the gate alone would pass), 5x the size.
        let ids = tracker.update(1, 200, &img, &[obs(300.0, 30.0, 245.0, [1.0, 0.05])]);
        assert_eq!(ids, vec![1]);
        tracker.cut();
        let ids = tracker.update(2, 400, &img, &[obs(300.0, 30.0, 245.0, [1.0, 0.05])]);
        assert_eq!(ids, vec![2], "nothing continues across a cut");
    }

    #[test]
    fn a_track_that_walked_out_of_the_picture_ends() {
        // demo1.mp4 of All-in-One-Gait, at 5 frames/s: one person walks out
        // on the left at ~250 px/s; 0.6 s later another, in look close
        // enough for the far gate, walks in on the right.
        let img = RgbImage::new(720, 1280);
        let config = TrackerConfig { appearance_gate_far: 0.9, max_distance: 6.0, ..TrackerConfig::default() };
        let mut tracker = Tracker::new(config);
        let walker = |x: f32| {
            let mut o = obs(x, 600.0, 100.0, [1.0, 0.05]);
            o.bbox.h = 340.0;
            o
        };
        for f in 0..8 {
            assert_eq!(tracker.update(f, f * 200, &img, &[walker(420.0 - 50.0 * f as f32)]), vec![0]);
        }
        for f in 8..11 {
            tracker.update(f, f * 200, &img, &[]);
        }
        let ids = tracker.update(11, 2200, &img, &[walker(600.0)]);
        assert_eq!(ids, vec![1], "the track that left on the left does not jump to the right edge");
    }

    #[test]
    fn a_different_face_at_the_same_place_starts_a_new_track() {
        let img = RgbImage::new(200, 200);
        let mut tracker = Tracker::new(TrackerConfig::default());
        tracker.update(0, 0, &img, &[obs(10.0, 10.0, 30.0, [1.0, 0.0])]);
        let ids = tracker.update(1, 40, &img, &[obs(10.0, 10.0, 30.0, [0.0, 1.0])]);
        assert_eq!(ids, vec![1]);
    }
}
