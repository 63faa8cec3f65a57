//! FFmpeg errors as engine errors with stable codes.

use ffmpeg_next::util::error::{EFBIG, ENOMEM, ENOSPC};
use tcoder::engine::{EngineError, ErrorCode};

/// Maps an FFmpeg error that happened while reading or decoding the input.
pub(crate) fn input(context: &str, error: &ffmpeg_next::Error) -> EngineError {
    let code = match error {
        ffmpeg_next::Error::Other { errno } if *errno == ENOMEM => ErrorCode::Memory,
        ffmpeg_next::Error::Other { errno } if *errno == ENOSPC => ErrorCode::DiskFull,
        ffmpeg_next::Error::Other { errno } if *errno == EFBIG => ErrorCode::Disk,
        ffmpeg_next::Error::DecoderNotFound => ErrorCode::UnsupportedCodec,
        _ => ErrorCode::Corrupt,
    };
    EngineError::new(code, format!("{context}: {error}"))
}

/// Maps an FFmpeg error that happened while encoding or writing outputs.
pub(crate) fn output(context: &str, error: &ffmpeg_next::Error) -> EngineError {
    let code = match error {
        ffmpeg_next::Error::Other { errno } if *errno == ENOMEM => ErrorCode::Memory,
        ffmpeg_next::Error::Other { errno } if *errno == ENOSPC => ErrorCode::DiskFull,
        ffmpeg_next::Error::Other { errno } if *errno == EFBIG => ErrorCode::Disk,
        _ => ErrorCode::Failed,
    };
    EngineError::new(code, format!("{context}: {error}"))
}

/// A file the engine could not write or read back: the machine's disk full (`ENOSPC`) is the
/// machine's fault; anything else (the output-size limit's `EFBIG` among it) is `limits.disk`.
pub(crate) fn disk(error: &std::io::Error) -> EngineError {
    let code = match error.raw_os_error() {
        Some(errno) if errno == ENOSPC => ErrorCode::DiskFull,
        _ => ErrorCode::Disk,
    };
    EngineError::new(code, error.to_string())
}
