//! What probing found out about a source.

use serde::{Deserialize, Serialize};

/// The probed source: container, duration, the one video stream and the first audio stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaInfo {
    /// FFmpeg demuxer name, e.g. `mov,mp4,m4a,3gp,3g2,mj2` or `matroska,webm`.
    pub format: String,
    pub duration_secs: f64,
    /// Container bit rate in bits/s when known.
    pub bit_rate: Option<u64>,
    pub video: VideoInfo,
    pub audio: Option<AudioInfo>,
    pub streams: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoInfo {
    pub index: usize,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Average frame rate (frames per second).
    pub fps: f64,
    pub bit_rate: Option<u64>,
    pub pixel_format: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioInfo {
    pub index: usize,
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u16,
    pub bit_rate: Option<u64>,
}
