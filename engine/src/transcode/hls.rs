//! The HLS master playlist, written after every rendition is muxed, with attributes measured
//! from the segments themselves (`BANDWIDTH` = the peak segment bit rate, `AVERAGE-BANDWIDTH`
//! = the overall one) and RFC 6381 `CODECS` strings taken from the encoders' headers.

use std::fmt::Write as _;
use std::path::Path;

use tcoder::engine::plan::AudioRenditionPlan;

use super::captions::CaptionRendition;
use tcoder::engine::{EngineError, ErrorCode, TrackLanguage, TrackName};
use tcoder::jobs::AudioCodec;

/// What the master playlist needs to know about one rendition.
#[derive(Debug, Clone)]
pub(crate) struct VariantInfo {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub codecs: String,
    /// `SDR`, `PQ` or `HLG`: players that cannot show HDR skip the HDR variants.
    pub video_range: String,
}

/// The `VIDEO-RANGE` of a rendition.
pub(crate) fn video_range(range: tcoder::engine::DynamicRange) -> &'static str {
    match range {
        tcoder::engine::DynamicRange::Sdr => "SDR",
        tcoder::engine::DynamicRange::Pq => "PQ",
        tcoder::engine::DynamicRange::Hlg => "HLG",
    }
}

/// Peak and average bit rate of a rendition, from its playlist and segment files.
pub(crate) fn measure(playlist: &Path) -> Result<(u64, u64), EngineError> {
    let dir = playlist.parent().unwrap_or(Path::new("."));
    // Messages name the rendition's playlist relative to the HLS folder, never a worker path.
    let name = relative_name(playlist);
    let text = std::fs::read_to_string(playlist)
        .map_err(|e| EngineError::new(ErrorCode::OutputInvalid, format!("{name}: {e}")))?;
    let mut init_bytes = 0u64;
    let (mut total_bytes, mut total_secs, mut peak) = (0u64, 0f64, 0f64);
    let mut pending: Option<f64> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            let uri = rest.split('"').next().unwrap_or_default();
            init_bytes = std::fs::metadata(dir.join(uri)).map(|m| m.len()).unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("#EXTINF:") {
            pending = rest.split(',').next().and_then(|d| d.parse().ok());
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let duration = pending.take().unwrap_or(0.0);
            let bytes = std::fs::metadata(dir.join(line.trim())).map(|m| m.len()).map_err(|e| {
                EngineError::new(ErrorCode::OutputInvalid, format!("{name}: segment {line}: {e}"))
            })?;
            total_bytes += bytes;
            total_secs += duration;
            if duration > 0.0 {
                peak = peak.max(bytes as f64 * 8.0 / duration);
            }
        }
    }
    if total_secs <= 0.0 {
        return Err(EngineError::new(
            ErrorCode::OutputInvalid,
            format!("{name} lists no segments"),
        ));
    }
    let average = ((total_bytes + init_bytes) as f64 * 8.0 / total_secs).round() as u64;
    Ok((peak.round().max(average as f64) as u64, average))
}

/// `<rendition>/index.m3u8` of a playlist path.
fn relative_name(playlist: &Path) -> String {
    let file = playlist.file_name().map(|f| f.to_string_lossy()).unwrap_or_default();
    match playlist.parent().and_then(Path::file_name) {
        Some(parent) => format!("hls/{}/{file}", parent.to_string_lossy()),
        None => file.into_owned(),
    }
}

/// An audio rendition the video variants share (a source audio track, encoded once).
#[derive(Debug, Clone)]
pub(crate) struct AudioRendition {
    /// Its playlist, relative to the master (`audio/index.m3u8`).
    pub uri: String,
    /// RFC 6381 codec string (`mp4a.40.2`, `opus`).
    pub codecs: String,
    pub language: Option<TrackLanguage>,
    pub name: TrackName,
    pub default: bool,
}

impl AudioRendition {
    /// The rendition `plan` describes, of `codec`.
    pub(crate) fn planned(plan: &AudioRenditionPlan, codec: AudioCodec) -> AudioRendition {
        AudioRendition {
            uri: format!("{}/index.m3u8", plan.dir),
            codecs: audio_codec_string(codec).to_owned(),
            language: plan.language.clone(),
            name: plan.name.clone(),
            default: plan.default,
        }
    }
}

/// RFC 6381 codec string of an audio codec.
pub(crate) fn audio_codec_string(codec: AudioCodec) -> &'static str {
    match codec {
        AudioCodec::Aac => "mp4a.40.2",
        AudioCodec::Opus => "opus",
    }
}

/// Writes `master.m3u8` listing `variants` (playlists at `<name>/index.m3u8`), each naming
/// the shared `audio` renditions when there are any (the default's bit rate added to theirs,
/// as the `BANDWIDTH` of a variant counts what a player fetches to play it; the largest
/// rendition's for the peak).
pub(crate) fn write_master(
    dir: &Path,
    variants: &[VariantInfo],
    audio: &[AudioRendition],
    subtitles: &[CaptionRendition],
) -> Result<(), EngineError> {
    let mut master = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for rendition in subtitles {
        let plan = &rendition.plan;
        let language = match &plan.language {
            Some(language) => format!(",LANGUAGE=\"{}\"", language.as_str()),
            None => String::new(),
        };
        let yes = |flag: bool| if flag { "YES" } else { "NO" };
        let _ = writeln!(
            master,
            "#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"{}\"{language},DEFAULT={},AUTOSELECT=YES,FORCED={},URI=\"{}\"",
            plan.name.as_str(),
            yes(plan.default),
            yes(plan.forced),
            rendition.uri
        );
    }
    let subtitle_group = if subtitles.is_empty() { "" } else { ",SUBTITLES=\"subs\"" };
    let (mut audio_peak, mut audio_average) = (0, 0);
    for rendition in audio {
        // Names and languages are typed: they cannot hold a quote or a line break.
        let language = match &rendition.language {
            Some(language) => format!(",LANGUAGE=\"{}\"", language.as_str()),
            None => String::new(),
        };
        let default = if rendition.default { "YES" } else { "NO" };
        let _ = writeln!(
            master,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"{}\"{language},DEFAULT={default},AUTOSELECT=YES,URI=\"{}\"",
            rendition.name.as_str(),
            rendition.uri
        );
        let (peak, average) = measure(&dir.join(&rendition.uri))?;
        audio_peak = audio_peak.max(peak);
        audio_average = audio_average.max(average);
    }
    for variant in variants {
        let (peak, average) = measure(&dir.join(&variant.name).join("index.m3u8"))?;
        let (codecs, group) = match audio.first() {
            Some(audio) => (format!("{},{}", variant.codecs, audio.codecs), ",AUDIO=\"audio\""),
            None => (variant.codecs.clone(), ""),
        };
        let _ = writeln!(
            master,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},RESOLUTION={}x{},CODECS=\"{codecs}\",FRAME-RATE={:.3},VIDEO-RANGE={}{group}{subtitle_group}\n{}/index.m3u8",
            peak + audio_peak,
            average + audio_average,
            variant.width,
            variant.height,
            variant.fps,
            variant.video_range,
            variant.name
        );
    }
    std::fs::write(dir.join("master.m3u8"), master).map_err(|e| crate::error::disk(&e))
}

/// RFC 6381 codec string of an H.264 stream from its extradata (avcC or Annex B SPS).
pub(crate) fn avc_codec_string(extradata: &[u8]) -> String {
    let sps = if extradata.first() == Some(&1) && extradata.len() >= 4 {
        Some(&extradata[1..4])
    } else {
        // Annex B: find the SPS NAL unit (type 7) after a start code.
        extradata
            .windows(4)
            .position(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 7)
            .and_then(|at| extradata.get(at + 4..at + 7))
    };
    match sps {
        Some(bytes) => format!("avc1.{:02X}{:02X}{:02X}", bytes[0], bytes[1], bytes[2]),
        None => "avc1.640028".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_codec_strings_come_from_either_header_form() {
        assert_eq!(avc_codec_string(&[1, 0x64, 0x00, 0x1f, 0xff]), "avc1.64001F");
        assert_eq!(avc_codec_string(&[0, 0, 0, 1, 0x67, 0x4d, 0x40, 0x1e, 0x9a]), "avc1.4D401E");
    }
}
