//! What the engine accepts and how much it may use. Sent to the engine child with every job.
//!
//! The accepted containers and codecs live in one table each ([`CONTAINERS`], [`VIDEO`],
//! [`AUDIO`], [`SUBTITLES`]); FFmpeg's whitelists, the probe's checks and the table in `docs/MEDIA.md` all
//! come from them (a unit test keeps the document in step).

use serde::{Deserialize, Serialize};

/// Input restrictions (checked at probe, before any frame is decoded) and output caps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub max_width: u32,
    pub max_height: u32,
    /// Decoders refuse frames with more pixels than this (also guards lying headers).
    pub max_pixels: u64,
    pub max_duration_secs: f64,
    /// Sources faster than this are refused as absurd (a frame-rate bomb).
    pub max_fps: f64,
    /// Outputs never exceed this frame rate: faster sources (slow motion) are reduced to it.
    #[serde(default = "default_max_output_fps")]
    pub max_output_fps: f64,
    pub max_streams: usize,
    /// Fraction of packets that may fail to decode before the input counts as corrupt.
    pub max_error_rate: f64,
}

fn default_max_output_fps() -> f64 {
    60.0
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_width: 7680,
            max_height: 4320,
            max_pixels: 7680 * 4320,
            max_duration_secs: 4.0 * 3600.0,
            max_fps: 480.0,
            max_output_fps: default_max_output_fps(),
            max_streams: 16,
            max_error_rate: 0.01,
        }
    }
}

/// Sources whose displayed width or height is below this are refused
/// (`input.too_small_dimensions`): encoders and players do not handle them, and no camera
/// makes them.
pub const MIN_DIMENSION: u32 = 32;

/// An accepted container: FFmpeg's demuxer name and what users call it.
#[derive(Debug, Clone, Copy)]
pub struct Container {
    pub demuxer: &'static str,
    pub description: &'static str,
}

/// An accepted codec: FFmpeg's codec name, the decoders FFmpeg may use for it, and what it is.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    pub name: &'static str,
    pub decoders: &'static [&'static str],
    pub description: &'static str,
}

/// Demuxers FFmpeg may use (FFmpeg's `format_whitelist`). HLS, DASH, concat, image sequences
/// and everything else are refused: they can open other files or URLs. None of these reads
/// anything but the one local file it is given.
pub const CONTAINERS: [Container; 6] = [
    Container { demuxer: "mov", description: "MP4, MOV, M4V, 3GP (phones, cameras, editors)" },
    Container { demuxer: "matroska", description: "Matroska, WebM (screen recorders, browsers)" },
    Container { demuxer: "mpegts", description: "MPEG-TS, M2TS (broadcast, camcorders, OBS)" },
    Container { demuxer: "avi", description: "AVI (older cameras and editors)" },
    Container { demuxer: "flv", description: "FLV (streaming recordings)" },
    Container { demuxer: "mpeg", description: "MPEG-PS, VOB (DVD, older camcorders)" },
];

/// Video codecs accepted in a source. Everything users legitimately upload, nothing exotic
/// (`MagicYUV`, PNG, XBIN, … carry the decoder CVEs).
pub const VIDEO: [Codec; 12] = [
    Codec { name: "h264", decoders: &["h264"], description: "H.264 / AVC" },
    Codec { name: "hevc", decoders: &["hevc"], description: "H.265 / HEVC (8 and 10 bit)" },
    Codec { name: "av1", decoders: &["libdav1d", "av1"], description: "AV1" },
    Codec { name: "vp9", decoders: &["vp9"], description: "VP9" },
    Codec { name: "vp8", decoders: &["vp8"], description: "VP8" },
    Codec { name: "mpeg4", decoders: &["mpeg4"], description: "MPEG-4 Part 2 (ASP, Xvid, DivX)" },
    Codec { name: "mpeg2video", decoders: &["mpeg2video"], description: "MPEG-2 video" },
    Codec { name: "mpeg1video", decoders: &["mpeg1video"], description: "MPEG-1 video" },
    Codec { name: "mjpeg", decoders: &["mjpeg"], description: "Motion JPEG" },
    Codec { name: "prores", decoders: &["prores"], description: "Apple ProRes" },
    Codec { name: "dnxhd", decoders: &["dnxhd"], description: "Avid DNxHD / DNxHR" },
    Codec { name: "dvvideo", decoders: &["dvvideo"], description: "DV (DV25, DVCPRO)" },
];

/// Audio codecs accepted in a source.
pub const AUDIO: [Codec; 20] = [
    Codec { name: "aac", decoders: &["aac", "aac_fixed"], description: "AAC" },
    Codec { name: "mp3", decoders: &["mp3float", "mp3"], description: "MP3" },
    Codec { name: "mp2", decoders: &["mp2float", "mp2"], description: "MPEG audio layer 2" },
    Codec { name: "opus", decoders: &["libopus", "opus"], description: "Opus" },
    Codec { name: "vorbis", decoders: &["vorbis"], description: "Vorbis" },
    Codec { name: "flac", decoders: &["flac"], description: "FLAC" },
    Codec { name: "alac", decoders: &["alac"], description: "Apple Lossless" },
    Codec { name: "ac3", decoders: &["ac3"], description: "Dolby Digital (AC-3)" },
    Codec { name: "eac3", decoders: &["eac3"], description: "Dolby Digital Plus (E-AC-3)" },
    Codec { name: "pcm_s16le", decoders: &["pcm_s16le"], description: "PCM 16 bit LE" },
    Codec { name: "pcm_s16be", decoders: &["pcm_s16be"], description: "PCM 16 bit BE (MOV)" },
    Codec { name: "pcm_s24le", decoders: &["pcm_s24le"], description: "PCM 24 bit LE" },
    Codec { name: "pcm_s24be", decoders: &["pcm_s24be"], description: "PCM 24 bit BE (MOV)" },
    Codec { name: "pcm_s32le", decoders: &["pcm_s32le"], description: "PCM 32 bit LE" },
    Codec { name: "pcm_f32le", decoders: &["pcm_f32le"], description: "PCM float LE" },
    Codec { name: "pcm_f32be", decoders: &["pcm_f32be"], description: "PCM float BE (MOV)" },
    Codec { name: "pcm_u8", decoders: &["pcm_u8"], description: "PCM 8 bit" },
    Codec { name: "pcm_alaw", decoders: &["pcm_alaw"], description: "G.711 A-law" },
    Codec { name: "pcm_mulaw", decoders: &["pcm_mulaw"], description: "G.711 µ-law" },
    Codec { name: "pcm_dvd", decoders: &["pcm_dvd"], description: "DVD LPCM (MPEG-PS)" },
];

/// Text subtitle formats: kept as WebVTT captions (picture formats — PGS, DVB, `VobSub` — are
/// left out with a warning).
pub const SUBTITLES: [Codec; 4] = [
    Codec { name: "mov_text", decoders: &["mov_text"], description: "MP4 timed text (tx3g)" },
    Codec { name: "subrip", decoders: &["subrip", "srt"], description: "SubRip (SRT)" },
    // Matroska's SSA tracks are read as ASS too; FFmpeg's `ssa` decoder is another for it.
    Codec { name: "ass", decoders: &["ass", "ssa"], description: "(Advanced) SubStation Alpha" },
    Codec { name: "webvtt", decoders: &["webvtt"], description: "WebVTT" },
];

/// Caption files a job may name (sidecars): FFmpeg's demuxer and decoder for each. Nothing else
/// is opened for them — a caption file is a tenant's bytes like the source.
pub const CAPTION_FILES: [(&str, &str); 2] = [("srt", "subrip"), ("webvtt", "webvtt")];

/// FFmpeg's `format_whitelist` value.
pub fn format_whitelist() -> String {
    CONTAINERS.iter().map(|c| c.demuxer).collect::<Vec<_>>().join(",")
}

/// FFmpeg's `codec_whitelist` value: every decoder of every accepted codec.
pub fn codec_whitelist() -> String {
    VIDEO
        .iter()
        .chain(AUDIO.iter())
        .chain(SUBTITLES.iter())
        .flat_map(|c| c.decoders.iter())
        .copied()
        .collect::<Vec<_>>()
        .join(",")
}

pub fn is_accepted_video(codec: &str) -> bool {
    VIDEO.iter().any(|c| c.name == codec)
}

pub fn is_accepted_audio(codec: &str) -> bool {
    AUDIO.iter().any(|c| c.name == codec)
}

pub fn is_text_subtitle(codec: &str) -> bool {
    SUBTITLES.iter().any(|c| c.name == codec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/MEDIA.md publishes these tables; it must list exactly what the engine accepts.
    #[test]
    fn the_published_table_lists_exactly_what_is_accepted() {
        let doc = include_str!("../../../docs/MEDIA.md");
        let listed = |section: &str| -> Vec<String> {
            let start = doc.find(section).unwrap_or_else(|| panic!("docs/MEDIA.md: {section}"));
            doc[start..]
                .lines()
                .skip(1)
                .skip_while(|l| !l.starts_with('|'))
                .take_while(|l| l.starts_with('|'))
                .skip(2)
                .map(|l| {
                    l.split('|').nth(1).unwrap_or_default().trim().trim_matches('`').to_owned()
                })
                .collect()
        };
        let names = |codecs: &[Codec]| codecs.iter().map(|c| c.name.to_owned()).collect::<Vec<_>>();
        assert_eq!(
            listed("## Containers"),
            CONTAINERS.iter().map(|c| c.demuxer.to_owned()).collect::<Vec<_>>()
        );
        assert_eq!(listed("## Video codecs"), names(&VIDEO));
        assert_eq!(listed("## Audio codecs"), names(&AUDIO));
        assert_eq!(listed("## Subtitle formats"), names(&SUBTITLES));
    }
}
