//! `[worker.engine]`: encoder settings, input restrictions and sandbox limits.

use std::time::Duration;

use serde::Deserialize;

use super::{EncoderSettings, Limits, SandboxLimits};
use crate::config::{Invalid, require_positive};

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub x264_preset: String,
    #[serde(with = "humantime_serde")]
    pub hls_segment_duration: Duration,
    pub threads: usize,
    pub max_width: u32,
    pub max_height: u32,
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    pub max_fps: f64,
    pub max_output_fps: f64,
    pub max_streams: usize,
    pub max_error_rate: f64,
    pub memory_limit_bytes: u64,
    #[serde(with = "humantime_serde")]
    pub cpu_limit: Duration,
    pub file_size_limit_bytes: u64,
    pub open_files: u64,
    #[serde(with = "humantime_serde")]
    pub wall_deadline: Duration,
    #[serde(with = "humantime_serde")]
    pub deadline_base: Duration,
    pub deadline_per_media_second: f64,
    /// The lowest mean VMAF a rendition may be measured at (0: no floor); a job's own
    /// `quality_floor` wins.
    #[serde(default)]
    pub quality_floor: f64,
    #[serde(default)]
    pub quality_floor_action: super::FloorAction,
}

const X264_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

impl Config {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if !X264_PRESETS.contains(&self.x264_preset.as_str()) {
            return Err(Invalid::new(
                "engine.x264_preset",
                format!("one of {}", X264_PRESETS.join(", ")),
            ));
        }
        require_positive("engine.hls_segment_duration", self.hls_segment_duration)?;
        require_positive("engine.max_duration", self.max_duration)?;
        require_positive("engine.cpu_limit", self.cpu_limit)?;
        require_positive("engine.wall_deadline", self.wall_deadline)?;
        if self.max_width < 16 || self.max_height < 16 {
            return Err(Invalid::new(
                "engine.max_width",
                "max_width and max_height must be at least 16",
            ));
        }
        if self.max_fps.is_nan() || self.max_fps < 1.0 {
            return Err(Invalid::new("engine.max_fps", "must be at least 1"));
        }
        if self.max_output_fps.is_nan() || self.max_output_fps < 1.0 {
            return Err(Invalid::new("engine.max_output_fps", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            return Err(Invalid::new("engine.max_error_rate", "must be between 0 and 1"));
        }
        if self.memory_limit_bytes < (256 << 20) {
            return Err(Invalid::new(
                "engine.memory_limit_bytes",
                "must be at least 256 MiB (the engine itself needs that much address space)",
            ));
        }
        if self.open_files < 32 || self.max_streams == 0 || self.file_size_limit_bytes == 0 {
            return Err(Invalid::new(
                "engine.open_files",
                "open_files >= 32, max_streams >= 1, file_size_limit_bytes >= 1",
            ));
        }
        if self.deadline_per_media_second.is_nan() || self.deadline_per_media_second <= 0.0 {
            return Err(Invalid::new(
                "engine.deadline_per_media_second",
                "must be greater than zero",
            ));
        }
        if self.quality_floor != 0.0 {
            super::QualityFloor::validate(self.quality_floor)
                .map_err(|e| Invalid::new("engine.quality_floor", e))?;
        }
        Ok(())
    }

    /// The worker's quality floor, if it has one.
    pub fn quality_floor(&self) -> Option<super::QualityFloor> {
        (self.quality_floor > 0.0).then_some(super::QualityFloor {
            vmaf: self.quality_floor,
            action: self.quality_floor_action,
        })
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_width: self.max_width,
            max_height: self.max_height,
            max_pixels: u64::from(self.max_width) * u64::from(self.max_height),
            max_duration_secs: self.max_duration.as_secs_f64(),
            max_fps: self.max_fps,
            max_output_fps: self.max_output_fps,
            max_streams: self.max_streams,
            max_error_rate: self.max_error_rate,
        }
    }

    pub fn settings(&self) -> EncoderSettings {
        EncoderSettings {
            x264_preset: self.x264_preset.clone(),
            segment_secs: self.hls_segment_duration.as_secs_f64(),
            threads: self.threads,
        }
    }

    pub fn sandbox(&self) -> SandboxLimits {
        SandboxLimits {
            memory_bytes: self.memory_limit_bytes,
            cpu_secs: self.cpu_limit.as_secs().max(1),
            file_size_bytes: self.file_size_limit_bytes,
            open_files: self.open_files,
            wall_deadline: self.wall_deadline,
            deadline_per_media_second: self.deadline_per_media_second,
            deadline_base: self.deadline_base,
        }
    }
}
