//! Engine failures with stable codes: they end up in job records, events and webhooks.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why the engine could not produce outputs. `input.*` codes are the input's fault (permanent:
/// retrying cannot help); `limits.*` mean a resource limit stopped it (also permanent for the
/// same input, but counted toward poison detection); `engine.*` are our faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    #[serde(rename = "input.unsupported_format")]
    UnsupportedFormat,
    #[serde(rename = "input.corrupt")]
    Corrupt,
    #[serde(rename = "input.no_video")]
    NoVideo,
    #[serde(rename = "input.unsupported_codec")]
    UnsupportedCodec,
    #[serde(rename = "input.too_large_dimensions")]
    TooLargeDimensions,
    #[serde(rename = "input.too_small_dimensions")]
    TooSmallDimensions,
    #[serde(rename = "input.too_long")]
    TooLong,
    #[serde(rename = "input.too_many_streams")]
    TooManyStreams,
    #[serde(rename = "input.unsupported_frame_rate")]
    UnsupportedFrameRate,
    /// The uploaded source is no longer in the bucket (deleted after the upload).
    #[serde(rename = "input.source_missing")]
    SourceMissing,
    #[serde(rename = "limits.memory")]
    Memory,
    #[serde(rename = "limits.cpu")]
    Cpu,
    #[serde(rename = "limits.timeout")]
    Timeout,
    #[serde(rename = "limits.disk")]
    Disk,
    /// The machine's scratch disk is full (`ENOSPC`): not the job's fault — another machine
    /// retries it, and this one takes no more work.
    #[serde(rename = "machine.disk_full")]
    DiskFull,
    #[serde(rename = "engine.crashed")]
    Crashed,
    #[serde(rename = "engine.output_invalid")]
    OutputInvalid,
    /// A rendition was measured below the job's quality floor (its action `fail`).
    #[serde(rename = "engine.quality_below_floor")]
    QualityBelowFloor,
    #[serde(rename = "engine.failed")]
    Failed,
    #[serde(rename = "engine.canceled")]
    Canceled,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnsupportedFormat => "input.unsupported_format",
            ErrorCode::Corrupt => "input.corrupt",
            ErrorCode::NoVideo => "input.no_video",
            ErrorCode::UnsupportedCodec => "input.unsupported_codec",
            ErrorCode::TooLargeDimensions => "input.too_large_dimensions",
            ErrorCode::TooSmallDimensions => "input.too_small_dimensions",
            ErrorCode::TooLong => "input.too_long",
            ErrorCode::TooManyStreams => "input.too_many_streams",
            ErrorCode::UnsupportedFrameRate => "input.unsupported_frame_rate",
            ErrorCode::SourceMissing => "input.source_missing",
            ErrorCode::Memory => "limits.memory",
            ErrorCode::Cpu => "limits.cpu",
            ErrorCode::Timeout => "limits.timeout",
            ErrorCode::Disk => "limits.disk",
            ErrorCode::DiskFull => "machine.disk_full",
            ErrorCode::Crashed => "engine.crashed",
            ErrorCode::OutputInvalid => "engine.output_invalid",
            ErrorCode::QualityBelowFloor => "engine.quality_below_floor",
            ErrorCode::Failed => "engine.failed",
            ErrorCode::Canceled => "engine.canceled",
        }
    }

    /// Whether another attempt at the same input could succeed. Input and limit errors are
    /// properties of the input; engine crashes, generic failures and a machine's full disk
    /// may not happen again elsewhere.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::Crashed | ErrorCode::Failed | ErrorCode::DiskFull)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An engine failure: a code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct EngineError {
    pub code: ErrorCode,
    pub message: String,
}

impl EngineError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> EngineError {
        EngineError { code, message: message.into() }
    }
}
