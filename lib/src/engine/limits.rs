//! What the engine accepts and how much it may use. Sent to the engine child with every job.

use serde::{Deserialize, Serialize};

/// Input restrictions (checked at probe, before any frame is decoded) and output caps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub max_width: u32,
    pub max_height: u32,
    /// Decoders refuse frames with more pixels than this (also guards lying headers).
    pub max_pixels: u64,
    pub max_duration_secs: f64,
    pub max_fps: f64,
    pub max_streams: usize,
    /// Fraction of packets that may fail to decode before the input counts as corrupt.
    pub max_error_rate: f64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_width: 7680,
            max_height: 4320,
            max_pixels: 7680 * 4320,
            max_duration_secs: 4.0 * 3600.0,
            max_fps: 120.0,
            max_streams: 16,
            max_error_rate: 0.01,
        }
    }
}

/// Demuxers FFmpeg may use (matched against its demuxer names, e.g. `mov` matches
/// `mov,mp4,m4a,3gp,3g2,mj2`). HLS, concat, AVI and everything else are refused: they can
/// open other files or URLs.
pub const FORMAT_WHITELIST: &str = "mov,matroska";

/// Decoders FFmpeg may use. Everything users legitimately upload, nothing exotic (`MagicYUV`,
/// PNG, XBIN, … carry the decoder CVEs).
pub const CODEC_WHITELIST: &str = "h264,hevc,vp8,vp9,av1,libdav1d,mpeg4,prores,aac,aac_fixed,mp3,mp3float,opus,libopus,vorbis,flac,alac,ac3,eac3,pcm_s16le,pcm_s24le,pcm_f32le";

/// Video codecs accepted in a source (codec ids as FFmpeg names them).
pub(crate) const VIDEO_CODECS: [&str; 7] = ["h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "prores"];
/// Audio codecs accepted in a source.
pub(crate) const AUDIO_CODECS: [&str; 11] = [
    "aac",
    "mp3",
    "opus",
    "vorbis",
    "flac",
    "alac",
    "ac3",
    "eac3",
    "pcm_s16le",
    "pcm_s24le",
    "pcm_f32le",
];
