//! The transcoding engine: probe an untrusted source under restrictions, plan renditions,
//! decode once and encode every rendition (MP4, HLS ABR, thumbnails), validate the outputs.
//! It runs only in the sandboxed child process ([`child::main`], `tcoder-worker engine`),
//! which `tcoder::engine::Supervisor` starts and watches; the plain-data contract (jobs,
//! reports, errors, limits, the plan) lives in `tcoder::engine`, so nothing else links FFmpeg.

pub mod child;
mod error;
mod mov_refs;
pub mod probe;
mod sandbox;
mod stitch;

pub use sandbox::check as sandbox_check;
mod transcode;

pub use self::transcode::{run, run_with};
