//! The transcoding engine: probe an untrusted source under restrictions, plan renditions,
//! decode once and encode every rendition (MP4, HLS ABR, thumbnails), validate the outputs.
//! FFmpeg runs in a sandboxed child process (`tcoder-worker engine`) that [`supervisor`]
//! starts and watches.

#[cfg(feature = "bench")]
pub mod bench;
pub mod child;
mod config;
mod error;
pub mod limits;
mod media;
mod mov_refs;
pub mod plan;
pub mod probe;
pub mod supervisor;
mod transcode;

pub use self::config::Config;
pub use self::error::{EngineError, ErrorCode};
pub use self::limits::Limits;
pub use self::media::{AudioInfo, MediaInfo, Orientation, VideoInfo};
pub use self::plan::{EnginePlan, EngineSpec, Mode, RenditionPlan, plan};
pub use self::supervisor::{EngineRun, SandboxLimits, Supervisor};
pub use self::transcode::{
    EncoderSettings, EngineJob, EngineReport, OutputFile, Progress, RenditionReport, run, run_with,
};
