//! Silhouettes of people for gait recognition, from background subtraction
//! on static cameras.
//!
//! Gait models (OpenGait's GaitBase and its kin) read binary silhouettes: a
//! person's shape per frame, normalised to 64 rows. Where no segmentation
//! model runs, the classic way to get them from a fixed camera is a
//! per-pixel background model: everything that does not look like the
//! learnt background is foreground, and the foreground inside a person's
//! box is their silhouette.
//!
//! [`BackgroundModel`] is the adaptive Gaussian mixture of Zivkovic (2004,
//! "Improved adaptive Gaussian mixture model for background subtraction";
//! Zivkovic & van der Heijden 2006), the model behind OpenCV's
//! `BackgroundSubtractorMOG2`, with the same defaults and update order so
//! the masks agree with OpenCV's (measured on `vtest.avi`, see
//! `tests/silhouettes.rs`). Each pixel holds up to 5 Gaussians over its
//! colour (one variance per Gaussian, the same on every channel), sorted by
//! weight; the heaviest ones whose weights sum to 0.9 are the background.
//! Pixel values are 0–255 per channel, variances in squared pixel values.
//!
//! [`SilhouetteTracks`] is the per-video state [`crate::process_video`]
//! keeps when bodies are tracked: the background model fed every analysed
//! frame in order (reset at shot cuts), and, per body observation, its box
//! cut from the foreground mask, cleaned, and normalised as OpenGait does
//! ([`osprey_models::gait_pretreat::pretreat_frame`]: 64×64, the form
//! OpenGait stores; its load-time cut to 64×44 is the consumer's, with
//! [`osprey_models::gait_pretreat::cut`]). A track's silhouettes become one
//! PNG strip ([`encode_strip`], read back with [`decode_strip`]).
//!
//! Static cameras only: when the camera moves, the whole scene differs from
//! the learnt background and the masks are noise. [`SilhouetteTracks`]
//! measures, per frame, the share of the frame that is foreground outside
//! every person's box; frames above [`SilhouetteOptions::unsteady_share`]
//! give no silhouettes, and a segment where most frames are like that gives
//! none at all (one log line says so).

use std::collections::HashMap;

use image::{GrayImage, ImageFormat, RgbImage};
use osprey_core::{Error, ErrorKind, Result};
use osprey_models::gait_pretreat::{SIZE, pretreat_frame};

use crate::BoxF;

/// Mask value of a background pixel.
pub const BACKGROUND: u8 = 0;
/// Mask value of a pixel taken for a shadow on the background (darker,
/// same colour): not part of a silhouette.
pub const SHADOW: u8 = 127;
/// Mask value of a foreground pixel.
pub const FOREGROUND: u8 = 255;

/// The mixture model's settings; the defaults are OpenCV's (`history` 500,
/// `varThreshold` 16, `detectShadows` true, 5 mixtures, background ratio
/// 0.9, generation threshold 9, variance 15 (4–75), complexity reduction
/// 0.05, shadow threshold 0.5).
#[derive(Debug, Clone, PartialEq)]
pub struct BackgroundConfig {
    /// Frames the model remembers: the learning rate is 1/min(2·n, history)
    /// after n frames (fast at first, then 1/history).
    pub history: u32,
    /// Squared Mahalanobis distance under which a pixel matches a
    /// background Gaussian (16: within 4 σ).
    pub var_threshold: f32,
    /// Squared distance under which a pixel updates a Gaussian instead of
    /// starting a new one (9: within 3 σ).
    pub var_threshold_gen: f32,
    /// The heaviest Gaussians whose weights sum to this are the background.
    pub background_ratio: f32,
    /// Variance of a new Gaussian, and the bounds every variance is kept in
    /// (squared 8-bit pixel values).
    pub var_init: f32,
    pub var_min: f32,
    pub var_max: f32,
    /// Weight taken from every Gaussian per frame (× the learning rate), so
    /// unused ones fade out and are dropped (Zivkovic's c_T).
    pub complexity_reduction: f32,
    /// Gaussians per pixel, 1 to 5.
    pub max_modes: usize,
    /// Label darker pixels of the background's colour as [`SHADOW`] instead
    /// of [`FOREGROUND`].
    pub detect_shadows: bool,
    /// How much darker a shadow may be: brightness ratio at least this (0.5:
    /// at most half as bright).
    pub shadow_tau: f32,
}

impl Default for BackgroundConfig {
    fn default() -> Self {
        Self {
            history: 500,
            var_threshold: 16.0,
            var_threshold_gen: 9.0,
            background_ratio: 0.9,
            var_init: 15.0,
            var_min: 4.0,
            var_max: 75.0,
            complexity_reduction: 0.05,
            max_modes: 5,
            detect_shadows: true,
            shadow_tau: 0.5,
        }
    }
}

/// One Gaussian of a pixel's mixture: its weight, its variance (one for
/// all channels) and its mean colour (in the frame's channel order).
#[derive(Debug, Clone, Copy, Default)]
struct Mode {
    weight: f32,
    variance: f32,
    mean: [f32; 3],
}

/// Most Gaussians a pixel can hold.
const MAX_MODES: usize = 5;

/// A per-pixel adaptive Gaussian mixture background model of an RGB video
/// of fixed size (see the module notes).
#[derive(Debug, Clone)]
pub struct BackgroundModel {
    config: BackgroundConfig,
    width: usize,
    height: usize,
    /// Frames learnt since the start or the last [`BackgroundModel::reset`].
    frames: u64,
    /// `max_modes` slots per pixel, row by row, sorted by weight (heaviest
    /// first) over the first `used[pixel]` of them.
    modes: Vec<Mode>,
    used: Vec<u8>,
}

/// Squared distance of `a` and `b`, summed from the last channel to the
/// first: for RGB frames that is OpenCV's BGR order, so the float32
/// rounding matches its `BackgroundSubtractorMOG2`.
#[inline]
fn dist2(d: [f32; 3]) -> f32 {
    d[2] * d[2] + d[1] * d[1] + d[0] * d[0]
}

impl BackgroundModel {
    /// An empty model of `width`×`height` frames.
    pub fn new(width: usize, height: usize, config: BackgroundConfig) -> Result<BackgroundModel> {
        if width == 0 || height == 0 {
            return Err(Error::invalid(format!("a background model needs a frame size, got {width}×{height}")));
        }
        if !(1..=MAX_MODES).contains(&config.max_modes) {
            return Err(Error::invalid(format!("max_modes is 1 to {MAX_MODES}, got {}", config.max_modes)));
        }
        if config.history == 0 {
            return Err(Error::invalid("history must be at least one frame"));
        }
        if !(config.var_min > 0.0 && config.var_min <= config.var_max) {
            return Err(Error::invalid(format!(
                "variance bounds must satisfy 0 < var_min <= var_max, got {} and {}",
                config.var_min, config.var_max
            )));
        }
        let pixels = width * height;
        Ok(BackgroundModel {
            modes: vec![Mode::default(); pixels * config.max_modes],
            used: vec![0; pixels],
            config,
            width,
            height,
            frames: 0,
        })
    }

    /// Frame width and height.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// Frames learnt since the start or the last reset.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Forgets everything (after a shot cut the old background is wrong).
    pub fn reset(&mut self) {
        self.used.fill(0);
        self.frames = 0;
    }

    /// Learns one RGB frame (`width`·`height`·3 bytes, row by row) and
    /// writes its mask (one byte per pixel: [`BACKGROUND`], [`SHADOW`] or
    /// [`FOREGROUND`]) into `mask`. Rows are split across the machine's
    /// cores; each pixel's model is independent, so the result does not
    /// depend on the split.
    pub fn apply(&mut self, rgb: &[u8], mask: &mut [u8]) -> Result<()> {
        let pixels = self.width * self.height;
        if rgb.len() != pixels * 3 || mask.len() != pixels {
            return Err(Error::invalid(format!(
                "a {}×{} background model takes {} RGB bytes and a {}-byte mask, got {} and {}",
                self.width,
                self.height,
                pixels * 3,
                pixels,
                rgb.len(),
                mask.len()
            )));
        }
        self.frames += 1;
        let alpha = 1.0 / (2 * self.frames).min(self.config.history as u64) as f32;
        let k = self.config.max_modes;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Whole rows per thread, at least 16 of them (thread start-up costs
        // more than a few rows).
        let rows = self.height.div_ceil(threads).max(16);
        let chunk = rows * self.width;
        let config = &self.config;
        let work = self
            .modes
            .chunks_mut(chunk * k)
            .zip(self.used.chunks_mut(chunk))
            .zip(rgb.chunks(chunk * 3))
            .zip(mask.chunks_mut(chunk));
        std::thread::scope(|scope| {
            for (((modes, used), rgb), mask) in work {
                scope.spawn(move || {
                    for (p, out) in mask.iter_mut().enumerate() {
                        let px = [rgb[3 * p] as f32, rgb[3 * p + 1] as f32, rgb[3 * p + 2] as f32];
                        *out = update_pixel(config, alpha, &mut modes[p * k..(p + 1) * k], &mut used[p], px);
                    }
                });
            }
        });
        Ok(())
    }
}

/// One pixel's step: classify `px` against the mixture `modes` (the first
/// `*used` hold Gaussians), then learn it with learning rate `alpha`.
/// Returns the mask value.
///
/// The order of operations is the reference's (OpenCV's MOG2), including
/// two details that change results: the background test of a Gaussian uses
/// the weights of the Gaussians before it in the (old) order, and a
/// Gaussian whose weight falls under the pruning level shortens the list
/// by one from its end (such Gaussians sort last).
#[inline]
fn update_pixel(cfg: &BackgroundConfig, alpha: f32, modes: &mut [Mode], used: &mut u8, px: [f32; 3]) -> u8 {
    let keep = 1.0 - alpha;
    let prune = -alpha * cfg.complexity_reduction;
    let mut n = *used as usize;
    let mut fits = false;
    let mut background = false;
    let mut total = 0.0f32;
    let mut m = 0;
    while m < n {
        let mut weight = keep * modes[m].weight + prune;
        let mut moved = 0;
        if !fits {
            let var = modes[m].variance;
            let mean = modes[m].mean;
            let d = [mean[0] - px[0], mean[1] - px[1], mean[2] - px[2]];
            let d2 = dist2(d);
            if total < cfg.background_ratio && d2 < cfg.var_threshold * var {
                background = true;
            }
            if d2 < cfg.var_threshold_gen * var {
                fits = true;
                weight += alpha;
                let rate = alpha / weight;
                for c in 0..3 {
                    modes[m].mean[c] = mean[c] - rate * d[c];
                }
                modes[m].variance = (var + rate * (d2 - var)).clamp(cfg.var_min, cfg.var_max);
                // Only this Gaussian gained weight: move it up past the
                // lighter ones (their weights are already this frame's).
                let mut i = m;
                while i > 0 && weight >= modes[i - 1].weight {
                    modes.swap(i, i - 1);
                    i -= 1;
                    moved += 1;
                }
            }
        }
        if weight < -prune {
            weight = 0.0;
            n -= 1;
        }
        modes[m - moved].weight = weight;
        total += weight;
        m += 1;
    }
    let norm = 1.0 / total;
    for mode in &mut modes[..n] {
        mode.weight *= norm;
    }
    if !fits && alpha > 0.0 {
        // A colour no Gaussian explains: a new one, replacing the lightest
        // when all slots are taken.
        let slot = if n == cfg.max_modes {
            n - 1
        } else {
            n += 1;
            n - 1
        };
        if n == 1 {
            modes[slot].weight = 1.0;
        } else {
            modes[slot].weight = alpha;
            for mode in &mut modes[..n - 1] {
                mode.weight *= keep;
            }
        }
        modes[slot].mean = px;
        modes[slot].variance = cfg.var_init;
        let mut i = n - 1;
        while i > 0 && alpha >= modes[i - 1].weight {
            modes.swap(i, i - 1);
            i -= 1;
        }
    }
    *used = n as u8;
    if background {
        BACKGROUND
    } else if cfg.detect_shadows && is_shadow(cfg, &modes[..n], px) {
        SHADOW
    } else {
        FOREGROUND
    }
}

/// Whether `px` is a darker version of one of the background Gaussians:
/// brightness ratio a = ⟨px, μ⟩/⟨μ, μ⟩ in [τ, 1] and the colour distortion
/// |a·μ − px|² under the background threshold scaled by a².
fn is_shadow(cfg: &BackgroundConfig, modes: &[Mode], px: [f32; 3]) -> bool {
    let mut total = 0.0f32;
    for mode in modes {
        let mu = mode.mean;
        let num = px[2] * mu[2] + px[1] * mu[1] + px[0] * mu[0];
        let den = mu[2] * mu[2] + mu[1] * mu[1] + mu[0] * mu[0];
        if den == 0.0 {
            return false;
        }
        if num <= den && num >= cfg.shadow_tau * den {
            let a = num / den;
            let d = [a * mu[0] - px[0], a * mu[1] - px[1], a * mu[2] - px[2]];
            if dist2(d) < cfg.var_threshold * mode.variance * a * a {
                return true;
            }
        }
        total += mode.weight;
        if total > cfg.background_ratio {
            return false;
        }
    }
    false
}

// ---------------------------------------------------------------- silhouettes

/// How silhouettes are made from the masks.
#[derive(Debug, Clone, PartialEq)]
pub struct SilhouetteOptions {
    pub background: BackgroundConfig,
    /// Frames above this many pixels are shrunk by a whole factor (block
    /// means) before the background model sees them: 1080p runs at 960×540.
    /// Bounds the model's memory (20 bytes per pixel and Gaussian: 100 MB
    /// at this size) and time.
    pub max_model_pixels: usize,
    /// Frames the model learns after a start or a cut before its masks are
    /// used (the first frames' masks are mostly shadow and noise).
    pub warmup_frames: u64,
    /// A frame where more than this share of the pixels is foreground
    /// outside every person's box is taken for a moving camera (or a light
    /// change) and gives no silhouettes. Measured at 5 frames/s: on
    /// vtest.avi's static plaza at most 0.9 % over its first 12 s; on
    /// facenet-pytorch's hand-held walking clip 0.7 % to 12.5 %, above 3 %
    /// in 10 of 15 frames (the model keeps up with slow camera motion while
    /// its learning rate is still high, then falls behind).
    pub unsteady_share: f32,
    /// Person boxes are widened by this share of their size on each side
    /// when telling foreground outside them (boxes are tight; shadows and
    /// arms reach out).
    pub box_margin: f32,
    /// A silhouette must span at least this share of its box's height…
    pub min_height_share: f32,
    /// …and cover at least this share of the box's area.
    pub min_area_share: f32,
    /// Most silhouettes kept per track. A longer track is thinned evenly:
    /// at the limit every second silhouette is dropped and from then on
    /// only every second (fourth, …) one is taken, so the strip spans the
    /// whole track in bounded memory, strip size and gait-model time.
    pub max_per_track: usize,
}

impl Default for SilhouetteOptions {
    fn default() -> Self {
        Self {
            background: BackgroundConfig::default(),
            max_model_pixels: 1 << 20,
            warmup_frames: 5,
            unsteady_share: 0.03,
            box_margin: 0.1,
            min_height_share: 0.6,
            min_area_share: 0.08,
            // 12 s at 25 frames/s, a minute at 5: many gait cycles.
            max_per_track: 300,
        }
    }
}

/// One track's silhouettes: 64×64 frames (OpenGait's stored form), with the
/// number of the video frame each came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Silhouettes {
    pub frames: Vec<i64>,
    /// [`SIZE`]×[`SIZE`] bytes each, 0 or 255 mostly (the resize leaves
    /// grey edges).
    pub images: Vec<Vec<u8>>,
}

impl Silhouettes {
    /// These silhouettes as a PNG strip ([`encode_strip`]).
    pub fn strip(&self) -> Result<SilhouetteStrip> {
        Ok(SilhouetteStrip { frames: self.frames.clone(), png: encode_strip(&self.images)? })
    }
}

/// A track's silhouettes as stored: the PNG strip and the video frame of
/// each of its 64×64 frames (left to right).
#[derive(Debug, Clone, PartialEq)]
pub struct SilhouetteStrip {
    pub frames: Vec<i64>,
    pub png: Vec<u8>,
}

/// A track's items (silhouettes, frames) in time order with the video frame
/// each came from, thinned evenly to at most a cap: at the cap every second
/// item is dropped and from then on only every second (fourth, …) one
/// offered is taken, so the list spans the whole track in bounded memory.
#[derive(Debug, Clone)]
pub struct Thinned<T> {
    pub frames: Vec<i64>,
    pub items: Vec<T>,
    /// Items offered so far, and the stride they are taken at.
    offered: usize,
    stride: usize,
}

impl<T> Default for Thinned<T> {
    fn default() -> Self {
        Thinned { frames: Vec::new(), items: Vec::new(), offered: 0, stride: 1 }
    }
}

impl<T> Thinned<T> {
    /// Offers the item of video frame `frame`, keeping at most `cap` (≥ 2).
    pub fn offer(&mut self, frame: i64, item: T, cap: usize) {
        let _ = self.offer_with(frame, cap, || Ok(item));
    }

    /// [`Thinned::offer`] for an item that is costly to make: `make` runs
    /// only when the item is taken (an error it returns is passed on).
    pub fn offer_with(&mut self, frame: i64, cap: usize, make: impl FnOnce() -> Result<T>) -> Result<()> {
        let take = self.offered.is_multiple_of(self.stride);
        self.offered += 1;
        if !take {
            return Ok(());
        }
        let item = make()?;
        self.frames.push(frame);
        self.items.push(item);
        if self.frames.len() >= cap.max(2) {
            let mut i = 0;
            self.frames.retain(|_| (i % 2 == 0, i += 1).0);
            let mut i = 0;
            self.items.retain(|_| (i % 2 == 0, i += 1).0);
            self.stride *= 2;
        }
        Ok(())
    }
}

/// The per-video silhouette state of [`crate::process_video`]: one
/// background model fed every analysed frame in order, and the
/// silhouettes of every body track so far.
pub struct SilhouetteTracks {
    options: SilhouetteOptions,
    model: Option<BackgroundModel>,
    /// Model pixels per frame pixel along each side, 1 or more.
    scale: usize,
    small: Vec<u8>,
    mask: Vec<u8>,
    /// Frames judged (past the warm-up) and those taken as unsteady.
    judged: usize,
    unsteady: usize,
    tracks: HashMap<i64, Thinned<Vec<u8>>>,
}

impl SilhouetteTracks {
    pub fn new(options: SilhouetteOptions) -> SilhouetteTracks {
        SilhouetteTracks {
            options,
            model: None,
            scale: 1,
            small: Vec::new(),
            mask: Vec::new(),
            judged: 0,
            unsteady: 0,
            tracks: HashMap::new(),
        }
    }

    /// A shot cut: the background is learnt anew.
    pub fn cut(&mut self) {
        if let Some(m) = &mut self.model {
            m.reset();
        }
    }

    /// Learns the next analysed frame and keeps its foreground mask for
    /// [`SilhouetteTracks::add_people`].
    pub fn learn(&mut self, frame: &RgbImage) -> Result<()> {
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        if self.model.as_ref().is_some_and(|m| m.size() != (w.div_ceil(self.scale), h.div_ceil(self.scale))) {
            return Err(Error::invalid(format!("a video's frames changed size to {w}×{h}")));
        }
        if self.model.is_none() {
            let mut scale = 1;
            while w.div_ceil(scale) * h.div_ceil(scale) > self.options.max_model_pixels {
                scale += 1;
            }
            self.scale = scale;
            let (mw, mh) = (w.div_ceil(scale), h.div_ceil(scale));
            self.model = Some(BackgroundModel::new(mw, mh, self.options.background.clone())?);
            self.mask = vec![0; mw * mh];
        }
        let model = self.model.as_mut().expect("made above");
        if self.scale == 1 {
            model.apply(frame.as_raw(), &mut self.mask)
        } else {
            shrink(frame, self.scale, &mut self.small);
            model.apply(&self.small, &mut self.mask)
        }
    }

    /// The last learnt frame's mask, at the model's size (see
    /// [`SilhouetteTracks::model_size`]).
    pub fn mask(&self) -> &[u8] {
        &self.mask
    }

    /// The model's frame size and its scale (frame pixels per model pixel).
    pub fn model_size(&self) -> Option<(usize, usize, usize)> {
        self.model.as_ref().map(|m| (m.size().0, m.size().1, self.scale))
    }

    /// The silhouettes of the last learnt frame's people: `boxes[i]` (frame
    /// pixels) is an observation of track `tracks[i]` in frame `frame`.
    /// Nothing is kept during the warm-up or from an unsteady frame.
    pub fn add_people(&mut self, frame: i64, boxes: &[BoxF], tracks: &[i64]) -> Result<()> {
        if boxes.len() != tracks.len() {
            return Err(Error::internal(format!("{} boxes for {} track ids", boxes.len(), tracks.len())));
        }
        let Some(model) = &self.model else { return Ok(()) };
        if model.frames() <= self.options.warmup_frames {
            return Ok(());
        }
        let (w, h) = model.size();
        let s = self.scale as f32;
        let in_model = |b: &BoxF, margin: f32| {
            let (mx, my) = (b.w * margin, b.h * margin);
            let x0 = (((b.x - mx) / s).floor().max(0.0) as usize).min(w);
            let y0 = (((b.y - my) / s).floor().max(0.0) as usize).min(h);
            let x1 = (((b.x + b.w + mx) / s).ceil().max(0.0) as usize).min(w);
            let y1 = (((b.y + b.h + my) / s).ceil().max(0.0) as usize).min(h);
            (x0, y0, x1, y1)
        };
        self.judged += 1;
        let outside = foreground_outside(&self.mask, w, boxes.iter().map(|b| in_model(b, self.options.box_margin)));
        if outside > self.options.unsteady_share * (w * h) as f32 {
            self.unsteady += 1;
            tracing::debug!(frame, share = outside / (w * h) as f32, "unsteady frame: no silhouettes");
            return Ok(());
        }
        for (b, &track) in boxes.iter().zip(tracks) {
            let (x0, y0, x1, y1) = in_model(b, 0.0);
            if x1 <= x0 || y1 <= y0 {
                continue;
            }
            let (cw, ch) = (x1 - x0, y1 - y0);
            let mut crop = vec![0u8; cw * ch];
            for (y, row) in crop.chunks_mut(cw).enumerate() {
                let src = &self.mask[(y0 + y) * w + x0..(y0 + y) * w + x1];
                for (d, &v) in row.iter_mut().zip(src) {
                    *d = if v == FOREGROUND { 255 } else { 0 };
                }
            }
            let crop = clean(&crop, cw, ch);
            if !self.looks_whole(&crop, cw, ch) {
                continue;
            }
            if let Some(sil) = pretreat_frame(&crop, cw, ch)? {
                self.keep(track, frame, sil);
            }
        }
        Ok(())
    }

    /// Adds a silhouette to `track`'s, thinning as `max_per_track` says.
    fn keep(&mut self, track: i64, frame: i64, silhouette: Vec<u8>) {
        self.tracks.entry(track).or_default().offer(frame, silhouette, self.options.max_per_track);
    }

    /// Whether a cleaned crop (`w`×`h`) holds a whole person rather than a
    /// piece (someone standing still fades into the background from the
    /// middle out; an occluded person shows a fragment): the region spans
    /// [`SilhouetteOptions::min_height_share`] of the box's rows and covers
    /// [`SilhouetteOptions::min_area_share`] of it. Pretreatment would
    /// stretch a fragment to 64 rows.
    fn looks_whole(&self, crop: &[u8], w: usize, h: usize) -> bool {
        let filled = |y: &usize| crop[y * w..(y + 1) * w].iter().any(|&v| v != 0);
        let (Some(top), Some(bottom)) = ((0..h).find(filled), (0..h).rev().find(filled)) else { return false };
        let area = crop.iter().filter(|&&v| v != 0).count();
        (bottom + 1 - top) as f32 >= self.options.min_height_share * h as f32
            && area as f32 >= self.options.min_area_share * (w * h) as f32
    }

    /// Every track's silhouettes, by track id; none when most judged frames
    /// were unsteady (a moving camera), which is logged once for `name`.
    pub fn finish(self, name: &str) -> HashMap<i64, Silhouettes> {
        if self.judged > 0 && 2 * self.unsteady > self.judged {
            tracing::warn!(
                "{name}: no silhouettes: in {} of {} frames more than {:.0} % of the picture moved outside the people (a moving camera?); background subtraction needs a static camera",
                self.unsteady,
                self.judged,
                100.0 * self.options.unsteady_share
            );
            return HashMap::new();
        }
        self.tracks.into_iter().map(|(id, t)| (id, Silhouettes { frames: t.frames, images: t.items })).collect()
    }
}

/// `frame` shrunk by `scale` on both sides (the mean of each block, edge
/// blocks partial), RGB, into `out`.
fn shrink(frame: &RgbImage, scale: usize, out: &mut Vec<u8>) {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let (sw, sh) = (w.div_ceil(scale), h.div_ceil(scale));
    let src = frame.as_raw();
    let mut sums = vec![0u32; sw * 3];
    let mut counts = vec![0u32; sw];
    out.clear();
    out.reserve(sw * sh * 3);
    for by in 0..sh {
        sums.fill(0);
        counts.fill(0);
        for y in by * scale..((by + 1) * scale).min(h) {
            let row = &src[y * w * 3..(y + 1) * w * 3];
            for x in 0..w {
                let bx = x / scale;
                counts[bx] += 1;
                for c in 0..3 {
                    sums[bx * 3 + c] += row[x * 3 + c] as u32;
                }
            }
        }
        for bx in 0..sw {
            for c in 0..3 {
                out.push(((sums[bx * 3 + c] + counts[bx] / 2) / counts[bx]) as u8);
            }
        }
    }
}

/// Foreground pixels of `mask` (`width` wide) outside every box (x0, y0,
/// x1, y1 exclusive, in mask pixels).
fn foreground_outside(mask: &[u8], width: usize, boxes: impl Iterator<Item = (usize, usize, usize, usize)>) -> f32 {
    let mut covered = vec![false; mask.len()];
    for (x0, y0, x1, y1) in boxes {
        for y in y0..y1 {
            covered[y * width + x0..y * width + x1].fill(true);
        }
    }
    mask.iter().zip(&covered).filter(|&(&v, &c)| v == FOREGROUND && !c).count() as f32
}

/// A binary crop (0/255, `w`×`h`) cleaned: a 3×3 opening (drops specks
/// and one-pixel lines), a 3×3 closing (fills pinholes and joins parts a
/// pixel apart), then only the largest 8-connected region is kept (the
/// person; a neighbour reaching into the box or a shadow's remains are
/// smaller). Neighbourhoods are cut at the crop's edges: feet and heads on
/// the box's border are not eroded away.
pub fn clean(crop: &[u8], w: usize, h: usize) -> Vec<u8> {
    let opened = dilate(&erode(crop, w, h), w, h);
    let closed = erode(&dilate(&opened, w, h), w, h);
    largest_region(&closed, w, h)
}

fn morph(src: &[u8], w: usize, h: usize, erode: bool) -> Vec<u8> {
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut acc = erode;
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let on = src[ny * w + nx] != 0;
                    acc = if erode { acc && on } else { acc || on };
                }
            }
            out[y * w + x] = if acc { 255 } else { 0 };
        }
    }
    out
}

fn erode(src: &[u8], w: usize, h: usize) -> Vec<u8> {
    morph(src, w, h, true)
}

fn dilate(src: &[u8], w: usize, h: usize) -> Vec<u8> {
    morph(src, w, h, false)
}

/// Only the largest 8-connected region of the non-zero pixels (ties: the
/// first found in row order).
fn largest_region(src: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut label = vec![0u32; w * h];
    let (mut best, mut best_size, mut next) = (0u32, 0usize, 0u32);
    let mut stack = Vec::new();
    for start in 0..w * h {
        if src[start] == 0 || label[start] != 0 {
            continue;
        }
        next += 1;
        label[start] = next;
        stack.push(start);
        let mut size = 0;
        while let Some(p) = stack.pop() {
            size += 1;
            let (x, y) = (p % w, p / w);
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let q = ny * w + nx;
                    if src[q] != 0 && label[q] == 0 {
                        label[q] = next;
                        stack.push(q);
                    }
                }
            }
        }
        if size > best_size {
            (best, best_size) = (next, size);
        }
    }
    label.iter().map(|&l| if l != 0 && l == best { 255 } else { 0 }).collect()
}

// ---------------------------------------------------------------- strips

/// One track's silhouettes as a PNG strip: the [`SIZE`]×[`SIZE`] frames side
/// by side in time order (64 rows, 64·n columns, 8-bit grey).
pub fn encode_strip(frames: &[Vec<u8>]) -> Result<Vec<u8>> {
    if frames.is_empty() {
        return Err(Error::invalid("a silhouette strip needs at least one frame"));
    }
    if let Some(f) = frames.iter().find(|f| f.len() != SIZE * SIZE) {
        return Err(Error::invalid(format!("a silhouette is {SIZE}×{SIZE} bytes, got {}", f.len())));
    }
    let width = SIZE * frames.len();
    let mut strip = vec![0u8; width * SIZE];
    for (i, f) in frames.iter().enumerate() {
        for (y, row) in f.chunks(SIZE).enumerate() {
            strip[y * width + i * SIZE..y * width + (i + 1) * SIZE].copy_from_slice(row);
        }
    }
    let img = GrayImage::from_raw(width as u32, SIZE as u32, strip).expect("sized above");
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .map_err(|e| Error::internal(format!("cannot encode a silhouette strip: {e}")))?;
    Ok(out.into_inner())
}

/// The frames of a strip written by [`encode_strip`] (`name` in errors):
/// [`SIZE`]×[`SIZE`] bytes each, in time order. For GaitBase-style models
/// cut each to 64×44 with [`osprey_models::gait_pretreat::cut`].
pub fn decode_strip(png: &[u8], name: &str) -> Result<Vec<Vec<u8>>> {
    let img = image::load_from_memory_with_format(png, ImageFormat::Png)
        .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("{name}: not a PNG silhouette strip: {e}")))?
        .to_luma8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    if h != SIZE || w == 0 || w % SIZE != 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{name}: a silhouette strip is {SIZE} rows by a multiple of {SIZE} columns, got {w}×{h}"),
        ));
    }
    let raw = img.as_raw();
    Ok((0..w / SIZE)
        .map(|i| (0..SIZE).flat_map(|y| raw[y * w + i * SIZE..y * w + (i + 1) * SIZE].iter().copied()).collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic noise source (xorshift), values in -amp..=amp.
    struct Noise(u64);
    impl Noise {
        fn next(&mut self, amp: i32) -> i32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % (2 * amp as u64 + 1)) as i32 - amp
        }
    }

    /// A textured static background with sensor noise, and optionally a
    /// square of another colour at `square`.
    fn frame(w: usize, h: usize, noise: &mut Noise, square: Option<(usize, usize, usize)>) -> Vec<u8> {
        let mut out = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let base = [60 + (x * 3 % 90) as i32, 90 + (y * 5 % 70) as i32, 120 + ((x + y) % 50) as i32];
                let inside = square.is_some_and(|(sx, sy, s)| (sx..sx + s).contains(&x) && (sy..sy + s).contains(&y));
                for c in 0..3 {
                    let v = if inside { [230, 40, 200][c] } else { base[c] } + noise.next(3);
                    out.push(v.clamp(0, 255) as u8);
                }
            }
        }
        out
    }

    #[test]
    fn a_static_scene_converges_to_no_foreground() {
        let (w, h) = (64, 48);
        let mut model = BackgroundModel::new(w, h, BackgroundConfig::default()).unwrap();
        let mut noise = Noise(7);
        let mut mask = vec![0; w * h];
        let mut late = 0;
        for i in 0..60 {
            model.apply(&frame(w, h, &mut noise, None), &mut mask).unwrap();
            if i >= 20 {
                late += mask.iter().filter(|&&v| v != BACKGROUND).count();
            }
        }
        // Noise of ±3 on every channel sits well inside 4 σ once learnt.
        assert!(late <= 40 * w * h / 1000, "{late} non-background pixels over 40 frames");
    }

    #[test]
    fn a_moving_square_is_foreground_and_nothing_else() {
        let (w, h, s) = (96, 64, 12);
        let mut model = BackgroundModel::new(w, h, BackgroundConfig::default()).unwrap();
        let mut noise = Noise(11);
        let mut mask = vec![0; w * h];
        // Past the fast start (learning rate 1/200 from here): a colour
        // seen at a pixel for a few frames stays foreground. Slower objects
        // fade into the background sooner while the rate is still high.
        for _ in 0..100 {
            model.apply(&frame(w, h, &mut noise, None), &mut mask).unwrap();
        }
        for step in 0..25 {
            let (sx, sy) = (5 + 3 * step, 10 + step / 2);
            model.apply(&frame(w, h, &mut noise, Some((sx, sy, s))), &mut mask).unwrap();
            let inside = |x: usize, y: usize| (sx..sx + s).contains(&x) && (sy..sy + s).contains(&y);
            let (mut hit, mut stray) = (0, 0);
            for y in 0..h {
                for x in 0..w {
                    let fg = mask[y * w + x] == FOREGROUND;
                    if inside(x, y) {
                        hit += usize::from(fg);
                    } else {
                        stray += usize::from(mask[y * w + x] != BACKGROUND);
                    }
                }
            }
            assert_eq!(hit, s * s, "step {step}: the whole square is foreground");
            assert!(stray <= 5, "step {step}: {stray} pixels outside the square are not background");
        }
    }

    #[test]
    fn a_darker_background_is_shadow_not_foreground() {
        let (w, h) = (32, 32);
        let mut model = BackgroundModel::new(w, h, BackgroundConfig::default()).unwrap();
        let mut noise = Noise(3);
        let mut mask = vec![0; w * h];
        for _ in 0..30 {
            model.apply(&frame(w, h, &mut noise, None), &mut mask).unwrap();
        }
        // The same scene at 70 % brightness: a shadow over everything.
        let dark: Vec<u8> = frame(w, h, &mut noise, None).iter().map(|&v| (v as f32 * 0.7) as u8).collect();
        model.apply(&dark, &mut mask).unwrap();
        let shadow = mask.iter().filter(|&&v| v == SHADOW).count();
        assert!(shadow >= w * h * 95 / 100, "{shadow} shadow pixels of {}", w * h);
    }

    /// A textured scene shifted `dx` pixels (a panning camera when dx
    /// changes), with a person-like bar (20×60 px) at `person`.
    fn scene(w: u32, h: u32, dx: u32, person: Option<(u32, u32)>, noise: &mut Noise) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            if person.is_some_and(|(px, py)| (px..px + 20).contains(&x) && (py..py + 60).contains(&y)) {
                return image::Rgb([200, 30, 60]);
            }
            let u = x + dx;
            let v = ((u / 8 + y / 8) % 2) as i32 * 80 + 60 + noise.next(2);
            image::Rgb([v as u8, (v + 20) as u8, (v + 40) as u8])
        })
    }

    #[test]
    fn a_static_camera_gives_each_track_its_silhouettes() {
        let mut tracks = SilhouetteTracks::new(SilhouetteOptions::default());
        let mut noise = Noise(5);
        for f in 0..40 {
            let person = (f >= 20).then(|| (10 + 4 * (f - 20) as u32, 20));
            tracks.learn(&scene(160, 100, 0, person, &mut noise)).unwrap();
            if let Some((x, y)) = person {
                let b = BoxF { x: x as f32 - 2.0, y: y as f32 - 2.0, w: 24.0, h: 64.0 };
                tracks.add_people(f as i64, &[b], &[7]).unwrap();
            }
        }
        let out = tracks.finish("static");
        let sil = &out[&7];
        assert_eq!(sil.frames, (20..40).collect::<Vec<i64>>());
        // A solid bar: every stored frame is the bar, 64 rows, centred.
        for img in &sil.images {
            assert!(img[..SIZE].iter().any(|&v| v > 0) && img[(SIZE - 1) * SIZE..].iter().any(|&v| v > 0));
            assert!(img[SIZE / 2 * SIZE + SIZE / 2] == 255 && img[SIZE / 2 * SIZE] == 0);
        }
    }

    #[test]
    fn a_panning_camera_gives_no_silhouettes() {
        let run = |options: SilhouetteOptions| {
            let mut tracks = SilhouetteTracks::new(options);
            let mut noise = Noise(9);
            for f in 0..40u32 {
                // Pans 3 px a frame after the first 10 frames; the person
                // moves with the camera.
                let dx = 3 * f.saturating_sub(10);
                tracks.learn(&scene(160, 100, dx, Some((60, 20)), &mut noise)).unwrap();
                let b = BoxF { x: 58.0, y: 18.0, w: 24.0, h: 64.0 };
                tracks.add_people(f as i64, &[b], &[1]).unwrap();
            }
            tracks.finish("panning")
        };
        assert!(run(SilhouetteOptions::default()).is_empty());
        // The moving-camera test is what drops them: without it the
        // (meaningless) masks would give silhouettes.
        let blind = SilhouetteOptions { unsteady_share: 1.0, ..SilhouetteOptions::default() };
        assert!(!run(blind).is_empty());
    }

    #[test]
    fn bad_sizes_are_refused() {
        let mut model = BackgroundModel::new(4, 4, BackgroundConfig::default()).unwrap();
        assert!(model.apply(&[0; 47], &mut [0; 16]).is_err());
        assert!(BackgroundModel::new(0, 4, BackgroundConfig::default()).is_err());
        let config = BackgroundConfig { max_modes: 6, ..BackgroundConfig::default() };
        assert!(BackgroundModel::new(4, 4, config).is_err());
    }

    #[test]
    fn cleaning_keeps_the_person_and_drops_specks() {
        let (w, h) = (20, 40);
        let mut crop = vec![0u8; w * h];
        // A body (6 wide, 30 tall) with a pinhole, a speck, and a small blob.
        for y in 5..35 {
            for x in 7..13 {
                crop[y * w + x] = 255;
            }
        }
        crop[20 * w + 9] = 0;
        crop[2 * w + 2] = 255;
        for y in 36..39 {
            for x in 15..18 {
                crop[y * w + x] = 255;
            }
        }
        let out = clean(&crop, w, h);
        assert_eq!(out[20 * w + 9], 255, "pinhole filled");
        assert_eq!(out[2 * w + 2], 0, "speck dropped");
        assert_eq!(out[37 * w + 16], 0, "smaller region dropped");
        assert_eq!(out.iter().filter(|&&v| v != 0).count(), 6 * 30);
    }

    #[test]
    fn strips_round_trip() {
        let frames: Vec<Vec<u8>> =
            (0..3).map(|i| (0..SIZE * SIZE).map(|p| ((p * (i + 1)) % 256) as u8).collect()).collect();
        let png = encode_strip(&frames).unwrap();
        assert_eq!(decode_strip(&png, "strip").unwrap(), frames);
        assert!(encode_strip(&[]).is_err());
        assert!(decode_strip(b"not a png", "x").is_err());
        let wrong = GrayImage::new(50, SIZE as u32);
        let mut bytes = std::io::Cursor::new(Vec::new());
        wrong.write_to(&mut bytes, ImageFormat::Png).unwrap();
        assert!(decode_strip(bytes.get_ref(), "x").is_err());
    }

    #[test]
    fn shrinking_averages_blocks() {
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([(x * 10) as u8, (y * 10) as u8, 7]));
        let mut out = Vec::new();
        shrink(&img, 2, &mut out);
        // 3×2 blocks; the last column and row are partial.
        assert_eq!(out.len(), 3 * 2 * 3);
        assert_eq!(&out[..3], &[5, 5, 7]);
        assert_eq!(&out[6..9], &[40, 5, 7]);
        assert_eq!(&out[9..12], &[5, 20, 7]);
    }

    #[test]
    fn long_tracks_are_thinned_evenly_within_the_limit() {
        let mut tracks = SilhouetteTracks::new(SilhouetteOptions { max_per_track: 8, ..Default::default() });
        for frame in 0..100 {
            tracks.keep(7, frame, vec![frame as u8; SIZE * SIZE]);
        }
        let t = &tracks.tracks[&7];
        assert!(t.frames.len() < 8 && t.frames.len() >= 4, "{:?}", t.frames);
        assert_eq!(t.frames.len(), t.items.len());
        assert_eq!(t.frames[0], 0);
        // Evenly spaced over the whole track, the images with their frames.
        let gaps: Vec<i64> = t.frames.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| g == gaps[0]), "{:?}", t.frames);
        assert!(*t.frames.last().unwrap() >= 64, "{:?}", t.frames);
        assert!(t.frames.iter().zip(&t.items).all(|(f, i)| i[0] == *f as u8));
    }
}
