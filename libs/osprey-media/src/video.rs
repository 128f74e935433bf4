//! Video input through FFmpeg (Debian's libavformat/libavcodec/libswscale):
//! any container and codec FFmpeg reads (mp4, mkv, avi, mov, webm, raw
//! H.264/H.265 elementary streams, …), decoded to 8-bit RGB frames with the
//! container's rotation applied, each with its frame number and presentation
//! time in milliseconds.
//!
//! A [`VideoReader`] decodes one time segment at a time (it seeks to the
//! segment's start), so a long video is processed as several bounded tasks;
//! [`segments`] plans them. Frames can be sampled at a target rate or every
//! Nth frame; unsampled frames are decoded (codecs need them) but never
//! converted to RGB.

use std::path::Path;
use std::sync::Once;

use ffmpeg_next as ffmpeg;
use image::RgbImage;
use osprey_core::{Error, Result};

/// File extensions treated as video when a folder is scanned.
pub const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "mts", "flv", "wmv", "3gp", "h264", "264", "h265",
    "265", "hevc", "y4m",
];

/// Largest frame accepted, in pixels (8K UHD; a guard against absurd headers).
pub const MAX_FRAME_PIXELS: u64 = 7680 * 4320;

/// True when `path` has a video extension (case-insensitive).
pub fn is_video_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// What a video stream is, as read from its headers.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// Frame width after rotation.
    pub width: u32,
    /// Frame height after rotation.
    pub height: u32,
    /// Average frame rate (frames per second).
    pub fps: f64,
    /// Duration in milliseconds, where the container states it.
    pub duration_ms: Option<i64>,
    /// Frame count, where the container states it.
    pub num_frames: Option<i64>,
    /// Clockwise rotation applied to every frame (0, 90, 180 or 270), from
    /// the stream's display matrix.
    pub rotation: u32,
    /// Codec name, e.g. `h264`.
    pub codec: String,
    /// Container (demuxer) name, e.g. `mov,mp4,m4a,3gp,3g2,mj2`.
    pub container: String,
}

/// Which decoded frames become [`VideoFrame`]s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Every frame.
    All,
    /// Frames 0, N, 2N, … (by frame number).
    EveryNth(u32),
    /// The first frame of every 1/F-second slot (at most F frames per second).
    Fps(f64),
}

impl Sampling {
    /// Parses `all`, `every:N` or a rate in frames per second.
    pub fn parse(text: &str) -> Result<Sampling> {
        let bad = || Error::invalid(format!("sampling `{text}`: expected `all`, `every:N` or frames per second"));
        if text == "all" {
            return Ok(Sampling::All);
        }
        if let Some(n) = text.strip_prefix("every:") {
            let n: u32 = n.parse().map_err(|_| bad())?;
            return if n == 0 { Err(bad()) } else { Ok(Sampling::EveryNth(n)) };
        }
        let f: f64 = text.parse().map_err(|_| bad())?;
        if f.is_finite() && f > 0.0 { Ok(Sampling::Fps(f)) } else { Err(bad()) }
    }
}

/// One decoded, sampled frame.
pub struct VideoFrame {
    /// Frame number in the stream (from the presentation time and frame rate).
    pub index: i64,
    /// Presentation time in milliseconds from the stream's start.
    pub t_ms: i64,
    pub image: RgbImage,
}

/// What one [`VideoReader::decode`] call went through.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodeStats {
    /// Frames decoded within the segment.
    pub decoded: u64,
    /// Frames handed to the caller.
    pub sampled: u64,
    /// Packets the decoder rejected as corrupt (decoding went on).
    pub corrupt_packets: u64,
    /// Time of the last frame decoded, in milliseconds.
    pub last_t_ms: Option<i64>,
}

/// A half-open time range `[start_ms, end_ms)` of a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// Splits a video of `duration_ms` into segments of `segment_ms` (the last
/// one open-ended, so frames past a container's stated duration are kept).
/// An unknown duration gives one open-ended segment.
pub fn segments(duration_ms: Option<i64>, segment_ms: i64) -> Vec<Segment> {
    let open = Segment { start_ms: 0, end_ms: i64::MAX };
    let (Some(d), true) = (duration_ms, segment_ms > 0) else { return vec![open] };
    let n = ((d + segment_ms - 1) / segment_ms).max(1);
    (0..n)
        .map(|i| Segment { start_ms: i * segment_ms, end_ms: if i + 1 == n { i64::MAX } else { (i + 1) * segment_ms } })
        .collect()
}

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // FFmpeg's own log lines would interleave with progress output;
        // every failure is reported through the errors returned instead.
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    });
}

/// FFmpeg's text for an error, or its code where it has none.
fn describe(e: ffmpeg::Error) -> String {
    let text = e.to_string();
    if text.trim().is_empty() { format!("{e:?}") } else { text }
}

fn invalid(name: &str, what: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{name}: {what}"))
}

/// Clockwise rotation in degrees (0/90/180/270) that a display matrix asks
/// for, as FFmpeg's own `autorotate` computes it.
fn rotation_of(matrix: &[u8]) -> u32 {
    if matrix.len() < 36 {
        return 0;
    }
    let m: Vec<f64> =
        matrix[..36].chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64 / 65536.0).collect();
    let (s0, s1) = (m[0].hypot(m[3]), m[1].hypot(m[4]));
    if s0 == 0.0 || s1 == 0.0 {
        return 0;
    }
    let degrees = (m[1] / s1).atan2(m[0] / s0).to_degrees();
    (((degrees / 90.0).round() as i64).rem_euclid(4) * 90) as u32
}

/// An open video file: its best video stream and a decoder for it.
pub struct VideoReader {
    name: String,
    input: ffmpeg::format::context::Input,
    stream_index: usize,
    time_base: f64,
    start_pts: i64,
    info: VideoInfo,
    parameters: ffmpeg::codec::Parameters,
}

impl VideoReader {
    /// Opens `path`; `name` (the object URL) appears in errors.
    pub fn open(path: &Path, name: &str) -> Result<VideoReader> {
        init();
        let len = std::fs::metadata(path).map_err(|e| invalid(name, e))?.len();
        if len == 0 {
            return Err(invalid(name, "empty file"));
        }
        let input = ffmpeg::format::input(&path).map_err(|e| {
            invalid(name, format!("cannot open as video (corrupt, truncated or not a video): {}", describe(e)))
        })?;
        let stream =
            input.streams().best(ffmpeg::media::Type::Video).ok_or_else(|| invalid(name, "no video stream"))?;
        let stream_index = stream.index();
        let tb = stream.time_base();
        let time_base = if tb.denominator() != 0 { f64::from(tb) } else { 1.0 / ffmpeg::ffi::AV_TIME_BASE as f64 };
        let parameters = stream.parameters();
        let decoder = ffmpeg::codec::context::Context::from_parameters(parameters.clone())
            .and_then(|c| c.decoder().video())
            .map_err(|e| invalid(name, format!("cannot decode the video stream: {e}")))?;
        let (w, h) = (decoder.width(), decoder.height());
        if w == 0 || h == 0 {
            return Err(invalid(name, "video stream has no frame size (corrupt header?)"));
        }
        if w as u64 * h as u64 > MAX_FRAME_PIXELS {
            return Err(invalid(name, format!("{w}x{h} frames are larger than 8K")));
        }
        let rate = |r: ffmpeg::Rational| (r.denominator() != 0 && r.numerator() > 0).then(|| f64::from(r));
        let fps = rate(stream.avg_frame_rate()).or_else(|| rate(stream.rate())).unwrap_or(25.0);
        let rotation = stream
            .side_data()
            .find(|sd| sd.kind() == ffmpeg::codec::packet::side_data::Type::DisplayMatrix)
            .map_or(0, |sd| rotation_of(sd.data()));
        let duration_ms = if stream.duration() > 0 {
            Some((stream.duration() as f64 * time_base * 1000.0).round() as i64)
        } else if input.duration() > 0 {
            Some(input.duration() / 1000)
        } else {
            None
        };
        let (width, height) = if rotation % 180 == 90 { (h, w) } else { (w, h) };
        let info = VideoInfo {
            width,
            height,
            fps,
            duration_ms,
            num_frames: (stream.frames() > 0).then(|| stream.frames()),
            rotation,
            codec: decoder.codec().map(|c| c.name().to_string()).unwrap_or_else(|| "unknown".into()),
            container: input.format().name().to_string(),
        };
        let start_pts = if stream.start_time() == ffmpeg::ffi::AV_NOPTS_VALUE { 0 } else { stream.start_time() };
        Ok(VideoReader { name: name.to_string(), input, stream_index, time_base, start_pts, info, parameters })
    }

    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// Decodes the frames of `segment`, handing the sampled ones to `on_frame`
    /// in presentation order; `on_frame` returns `false` to stop early.
    ///
    /// A stream that ends well before its stated duration is reported as
    /// truncated; a file where no frame decodes at all is an error.
    pub fn decode(
        &mut self,
        segment: Segment,
        sampling: Sampling,
        mut on_frame: impl FnMut(VideoFrame) -> Result<bool>,
    ) -> Result<DecodeStats> {
        let name = self.name.clone();
        let mut ctx = ffmpeg::codec::context::Context::from_parameters(self.parameters.clone())
            .map_err(|e| invalid(&name, format!("cannot decode the video stream: {e}")))?;
        ctx.set_threading(ffmpeg::codec::threading::Config {
            kind: ffmpeg::codec::threading::Type::Frame,
            ..Default::default()
        });
        let mut decoder =
            ctx.decoder().video().map_err(|e| invalid(&name, format!("cannot decode the video stream: {e}")))?;
        if segment.start_ms > 0 {
            // Seek to the last keyframe at or before the segment; the frames
            // before its start are decoded and dropped.
            let ts = segment.start_ms * 1000;
            self.input
                .seek(ts, ..ts)
                .map_err(|e| invalid(&name, format!("cannot seek to {ts} µs: {}", describe(e))))?;
        }
        let mut state = SegmentState {
            segment,
            sampling,
            fps: self.info.fps,
            time_base: self.time_base,
            start_pts: self.start_pts,
            rotation: self.info.rotation,
            stats: DecodeStats::default(),
            last_slot: None,
            scaler: None,
            last_index: None,
            done: false,
        };
        let mut frame = ffmpeg::frame::Video::empty();
        let mut packet = ffmpeg::Packet::empty();
        let mut read_error = None;
        loop {
            match packet.read(&mut self.input) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => break,
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            }
            if packet.stream() != self.stream_index {
                continue;
            }
            if decoder.send_packet(&packet).is_err() {
                state.stats.corrupt_packets += 1;
                continue;
            }
            while decoder.receive_frame(&mut frame).is_ok() {
                state.frame(&frame, &name, &mut on_frame)?;
                if state.done {
                    return Ok(state.stats);
                }
            }
        }
        let _ = decoder.send_eof();
        while decoder.receive_frame(&mut frame).is_ok() {
            state.frame(&frame, &name, &mut on_frame)?;
            if state.done {
                return Ok(state.stats);
            }
        }
        let stats = state.stats;
        if stats.decoded == 0 && segment.start_ms == 0 {
            let why = match read_error {
                Some(e) => format!("no frame could be decoded ({})", describe(e)),
                None if stats.corrupt_packets > 0 => {
                    format!("no frame could be decoded ({} corrupt packets)", stats.corrupt_packets)
                }
                None => "no frame could be decoded (empty or truncated stream)".to_string(),
            };
            return Err(invalid(&name, why));
        }
        // A stream that stops well short of the duration its header states
        // lost its tail: report it instead of returning a silent partial read.
        if let (Some(duration), Some(last)) = (self.info.duration_ms, stats.last_t_ms) {
            let slack = (2000.0 / self.info.fps.max(1.0)) as i64 + 500;
            if segment.end_ms > duration && last + slack < duration {
                let cause = read_error.map(|e| format!(": {}", describe(e))).unwrap_or_default();
                return Err(invalid(
                    &name,
                    format!("truncated or corrupt: frames stop at {last} ms of the {duration} ms stated{cause}"),
                ));
            }
        }
        if let Some(e) = read_error {
            return Err(invalid(
                &name,
                format!("read error after {} ms: {}", stats.last_t_ms.unwrap_or(0), describe(e)),
            ));
        }
        Ok(stats)
    }
}

/// Per-segment decode state: sampling, the lazily built RGB converter, counts.
struct SegmentState {
    segment: Segment,
    sampling: Sampling,
    fps: f64,
    time_base: f64,
    start_pts: i64,
    rotation: u32,
    stats: DecodeStats,
    last_slot: Option<i64>,
    last_index: Option<i64>,
    scaler: Option<(ffmpeg::software::scaling::Context, (ffmpeg::format::Pixel, u32, u32))>,
    done: bool,
}

impl SegmentState {
    fn frame(
        &mut self,
        frame: &ffmpeg::frame::Video,
        name: &str,
        on_frame: &mut impl FnMut(VideoFrame) -> Result<bool>,
    ) -> Result<()> {
        let pts = frame.timestamp().or(frame.pts());
        let t_sec = match pts {
            Some(p) => (p - self.start_pts) as f64 * self.time_base,
            // No timestamps at all (some raw streams): count frames.
            None => self.last_index.map_or(0, |i| i + 1) as f64 / self.fps,
        };
        let t_ms = (t_sec * 1000.0).round() as i64;
        let mut index = (t_sec * self.fps).round() as i64;
        if let Some(last) = self.last_index {
            // Timestamps that repeat or go backwards still get distinct, rising numbers.
            index = index.max(last + 1);
        }
        if t_ms < self.segment.start_ms {
            return Ok(());
        }
        if t_ms >= self.segment.end_ms {
            self.done = true;
            return Ok(());
        }
        self.last_index = Some(index);
        self.stats.decoded += 1;
        self.stats.last_t_ms = Some(t_ms);
        let keep = match self.sampling {
            Sampling::All => true,
            Sampling::EveryNth(n) => index % n as i64 == 0,
            Sampling::Fps(f) => {
                let slot = (t_sec * f + 1e-6).floor() as i64;
                let new = self.last_slot != Some(slot);
                self.last_slot = Some(slot);
                new
            }
        };
        if !keep {
            return Ok(());
        }
        let image = self.convert(frame, name)?;
        self.stats.sampled += 1;
        if !on_frame(VideoFrame { index, t_ms, image })? {
            self.done = true;
        }
        Ok(())
    }

    fn convert(&mut self, frame: &ffmpeg::frame::Video, name: &str) -> Result<RgbImage> {
        let (w, h, format) = (frame.width(), frame.height(), frame.format());
        if w == 0 || h == 0 {
            return Err(invalid(name, "decoded a frame without pixels"));
        }
        if self.scaler.as_ref().is_none_or(|(_, key)| *key != (format, w, h)) {
            // Bicubic, as the `ffmpeg` command line converts by default.
            let scaler = ffmpeg::software::scaling::Context::get(
                format,
                w,
                h,
                ffmpeg::format::Pixel::RGB24,
                w,
                h,
                ffmpeg::software::scaling::Flags::BICUBIC,
            )
            .map_err(|e| invalid(name, format!("cannot convert {format:?} frames to RGB: {e}")))?;
            self.scaler = Some((scaler, (format, w, h)));
        }
        let (scaler, _) = self.scaler.as_mut().expect("scaler set above");
        let mut rgb = ffmpeg::frame::Video::empty();
        scaler.run(frame, &mut rgb).map_err(|e| invalid(name, format!("cannot convert a frame to RGB: {e}")))?;
        let stride = rgb.stride(0);
        let row = w as usize * 3;
        let data = rgb.data(0);
        let mut pixels = Vec::with_capacity(row * h as usize);
        for y in 0..h as usize {
            pixels.extend_from_slice(&data[y * stride..y * stride + row]);
        }
        let image = RgbImage::from_raw(w, h, pixels).expect("buffer sized from the frame");
        Ok(match self.rotation {
            90 => image::imageops::rotate90(&image),
            180 => image::imageops::rotate180(&image),
            270 => image::imageops::rotate270(&image),
            _ => image,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_the_video_and_the_last_is_open() {
        assert_eq!(segments(None, 60_000), vec![Segment { start_ms: 0, end_ms: i64::MAX }]);
        let s = segments(Some(150_000), 60_000);
        assert_eq!(s.len(), 3);
        assert_eq!(s[1], Segment { start_ms: 60_000, end_ms: 120_000 });
        assert_eq!(s[2].end_ms, i64::MAX);
        assert_eq!(segments(Some(10), 60_000).len(), 1);
    }

    #[test]
    fn sampling_parses_and_rejects_nonsense() {
        assert_eq!(Sampling::parse("all").unwrap(), Sampling::All);
        assert_eq!(Sampling::parse("every:3").unwrap(), Sampling::EveryNth(3));
        assert_eq!(Sampling::parse("5").unwrap(), Sampling::Fps(5.0));
        for bad in ["0", "-1", "every:0", "fast", "nan"] {
            assert!(Sampling::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_matrix_rotation() {
        let matrix = |a: i32, b: i32, c: i32, d: i32| {
            let m = [a, b, 0, c, d, 0, 0, 0, 1 << 30];
            m.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()
        };
        let one = 1 << 16;
        assert_eq!(rotation_of(&matrix(one, 0, 0, one)), 0);
        assert_eq!(rotation_of(&matrix(0, one, -one, 0)), 90);
        assert_eq!(rotation_of(&matrix(-one, 0, 0, -one)), 180);
        assert_eq!(rotation_of(&matrix(0, -one, one, 0)), 270);
    }
}
