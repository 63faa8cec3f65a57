//! The transcoding engine: probe an untrusted source under restrictions, plan renditions,
//! decode once and encode every rendition (MP4, HLS ABR, thumbnails), validate the outputs.
//! FFmpeg runs in a sandboxed child process (`tcoder-worker engine`) that [`supervisor`]
//! starts and watches.

mod error;
mod media;
pub mod plan;

pub use self::error::{EngineError, ErrorCode};
pub use self::media::{AudioInfo, MediaInfo, VideoInfo};
pub use self::plan::{EnginePlan, EngineSpec, Mode, RenditionPlan, plan};
