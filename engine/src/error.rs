//! FFmpeg errors as engine errors with stable codes.

use ffmpeg_next::util::error::{EFBIG, ENOMEM, ENOSPC};
use tcoder::engine::{EngineError, ErrorCode};

/// Maps an FFmpeg error that happened while reading or decoding the input.
pub(crate) fn input(context: &str, error: &ffmpeg_next::Error) -> EngineError {
    let code = match error {
        ffmpeg_next::Error::Other { errno } if *errno == ENOMEM => ErrorCode::Memory,
        ffmpeg_next::Error::Other { errno } if *errno == ENOSPC || *errno == EFBIG => {
            ErrorCode::Disk
        }
        ffmpeg_next::Error::DecoderNotFound => ErrorCode::UnsupportedCodec,
        _ => ErrorCode::Corrupt,
    };
    EngineError::new(code, format!("{context}: {error}"))
}

/// Maps an FFmpeg error that happened while encoding or writing outputs.
pub(crate) fn output(context: &str, error: &ffmpeg_next::Error) -> EngineError {
    let code = match error {
        ffmpeg_next::Error::Other { errno } if *errno == ENOMEM => ErrorCode::Memory,
        ffmpeg_next::Error::Other { errno } if *errno == ENOSPC || *errno == EFBIG => {
            ErrorCode::Disk
        }
        _ => ErrorCode::Failed,
    };
    EngineError::new(code, format!("{context}: {error}"))
}
