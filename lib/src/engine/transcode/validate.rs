//! Outputs are probed before they count: exit status 0 does not mean the output is whole
//! (a half-truncated input decodes "successfully" into half a video).

use std::path::Path;

use ffmpeg_next::media::Type;
use ffmpeg_next::{Dictionary, format};

use crate::engine::plan::RenditionPlan;
use crate::engine::{EngineError, ErrorCode};

/// What an output must look like.
pub(crate) struct Expected<'a> {
    pub rendition: &'a RenditionPlan,
    pub source_duration: f64,
    pub audio: bool,
    /// Stream copy keeps the source's dimensions; only duration and streams are checked.
    pub check_dimensions: bool,
}

/// Allowed difference between output and source duration.
fn tolerance(source_duration: f64) -> f64 {
    (source_duration * 0.02).max(0.25)
}

/// Probes `path` (an MP4 or an HLS playlist we wrote) against `expected`.
pub(crate) fn check(path: &Path, expected: &Expected<'_>) -> Result<(), EngineError> {
    let invalid = |message: String| {
        EngineError::new(ErrorCode::OutputInvalid, format!("{}: {message}", path.display()))
    };
    let mut options = Dictionary::new();
    options.set("protocol_whitelist", "file");
    options.set("format_whitelist", "mov,hls");
    let input = format::input_with_dictionary(path, options)
        .map_err(|e| invalid(format!("cannot open: {e}")))?;
    let duration = input.duration() as f64 / f64::from(ffmpeg_next::ffi::AV_TIME_BASE);
    if duration + tolerance(expected.source_duration) < expected.source_duration {
        // The input ended before its header said it would: truncated or corrupt.
        return Err(EngineError::new(
            ErrorCode::Corrupt,
            format!(
                "the input decoded to {duration:.2} s of {:.2} s (truncated or corrupt)",
                expected.source_duration
            ),
        ));
    }
    if (duration - expected.source_duration).abs() > tolerance(expected.source_duration) {
        return Err(invalid(format!(
            "duration {duration:.2} s, source {:.2} s",
            expected.source_duration
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
