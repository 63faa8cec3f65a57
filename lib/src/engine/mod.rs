//! The engine's contract, without FFmpeg: what a job asks for ([`EngineJob`], [`plan`]), what
//! it accepts ([`limits`]), what it reports ([`EngineReport`], [`MediaInfo`]) and how it fails
//! ([`EngineError`]); and the [`Supervisor`] that runs the sandboxed child
//! (`tcoder-worker engine`) and speaks its [`protocol`]. The FFmpeg work itself — probing
//! untrusted media, decoding once, encoding every rendition — is the `tcoder-engine` crate,
//! which only the worker (and `tcoder compare-engine`) links.

#[cfg(feature = "bench")]
pub mod bench;
mod config;
mod error;
mod job;
pub mod limits;
mod media;
pub mod plan;
pub mod protocol;
pub mod quality;
pub mod supervisor;

pub use self::config::Config;
pub use self::error::{EngineError, ErrorCode};
pub use self::job::{
    AudioTrackReport, CaptionReport, Chunk, EncoderSettings, EngineJob, EngineReport,
    LoudnessMeasure, LoudnessReport, OutputFile, Part, PartsProgress, Progress, RenditionReport,
    SidecarFile, StitchParts, Task,
};
pub use self::limits::Limits;
pub use self::media::{
    AudioInfo, AudioTrack, ColourInfo, DynamicRange, MediaInfo, Orientation, SubtitleTrack,
    TrackLanguage, TrackName, VideoInfo, audio_lead_secs, displayed_size,
};
pub use self::plan::{EnginePlan, EngineSpec, Mode, RenditionPlan, ThumbnailFrames, plan};
pub use self::quality::{
    FloorAction, LadderReport, QualityFloor, QualityGoal, QualityReport, QualityScores,
};
pub use self::supervisor::{EngineRun, SandboxLimits, Supervisor};
