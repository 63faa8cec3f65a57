//! Outputs are probed before they count: exit status 0 does not mean the output is whole
//! (a half-truncated input decodes "successfully" into half a video).

use std::path::Path;

use ffmpeg_next::media::Type;
use ffmpeg_next::{Dictionary, format};

use tcoder::engine::plan::RenditionPlan;
use tcoder::engine::{EngineError, ErrorCode};

/// What an output must look like.
pub(crate) struct Expected<'a> {
    pub rendition: &'a RenditionPlan,
    /// How long the output must last: the source video's duration (a copy: the longer of
    /// its video and audio).
    pub duration: f64,
    pub audio: bool,
    /// Stream copy keeps the source's dimensions; only duration and streams are checked.
    pub check_dimensions: bool,
}

/// Allowed difference between output and source duration: a frame or two of container
/// rounding, never a missing segment.
fn tolerance(duration: f64) -> f64 {
    (duration * 0.02).max(0.1)
}

/// Opens an output we wrote (an MP4, or an HLS playlist of fMP4 segments): local files only,
/// and only the demuxers and segment names we write.
pub(crate) fn open_output(path: &Path) -> Result<format::context::Input, ffmpeg_next::Error> {
    let mut options = Dictionary::new();
    options.set("protocol_whitelist", "file");
    options.set("format_whitelist", "mov,hls");
    options.set("allowed_extensions", "m4s,mp4,m3u8");
    format::input_with_dictionary(&path, options)
}

/// Probes `name` (an MP4 or an HLS playlist we wrote, relative to `dir`) against `expected`.
/// Messages name the output by its relative name only: they reach job records and webhooks.
pub(crate) fn check(dir: &Path, name: &str, expected: &Expected<'_>) -> Result<(), EngineError> {
    let path = dir.join(name);
    let invalid =
        |message: String| EngineError::new(ErrorCode::OutputInvalid, format!("{name}: {message}"));
    let input = open_output(&path).map_err(|e| invalid(format!("cannot open: {e}")))?;
    let duration = input.duration() as f64 / f64::from(ffmpeg_next::ffi::AV_TIME_BASE);
    if (duration - expected.duration).abs() > tolerance(expected.duration) {
        return Err(invalid(format!(
            "duration {duration:.2} s, source {:.2} s",
            expected.duration
        )));
    }
    let video = input
        .streams()
        .find(|s| s.parameters().medium() == Type::Video)
        .ok_or_else(|| invalid("no video stream".into()))?;
    if expected.check_dimensions {
        // SAFETY: plain fields of the stream's codec parameters.
        let (w, h) = unsafe {
            ((*video.parameters().as_ptr()).width, (*video.parameters().as_ptr()).height)
        };
        if (w, h) != (expected.rendition.width as i32, expected.rendition.height as i32) {
            return Err(invalid(format!(
                "{w}x{h}, planned {}x{}",
                expected.rendition.width, expected.rendition.height
            )));
        }
    }
    let has_audio = input.streams().any(|s| s.parameters().medium() == Type::Audio);
    if has_audio != expected.audio {
        return Err(invalid(format!("audio present: {has_audio}, expected {}", expected.audio)));
    }
    Ok(())
}

/// Where the first video picture of an output we wrote is on its own timeline (seconds): the
/// muxer moves streams later to keep every timestamp non-negative (AAC priming, B-frames).
pub(crate) fn first_video_secs(path: &Path) -> Result<f64, EngineError> {
    let invalid = |m: String| EngineError::new(ErrorCode::OutputInvalid, m);
    let mut input = open_output(path).map_err(|e| invalid(format!("cannot open: {e}")))?;
    let video = input
        .streams()
        .best(Type::Video)
        .map(|s| (s.index(), s.time_base()))
        .ok_or_else(|| invalid("no video stream".into()))?;
    for (stream, packet) in input.packets() {
        if stream.index() == video.0
            && let Some(pts) = packet.pts()
        {
            return Ok(super::timeline::seconds(pts, video.1));
        }
    }
    Err(invalid("no video packet".into()))
}
