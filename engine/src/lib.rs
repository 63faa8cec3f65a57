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
mod source;
mod stitch;

pub use sandbox::check as sandbox_check;
mod quality;
mod transcode;

use tcoder::engine::{EngineError, EngineJob, EngineReport, MediaInfo, Progress, Task};

/// Runs one job to completion.
pub fn run(
    job: &EngineJob,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<EngineReport, EngineError> {
    run_with(job, &mut |_| {}, on_progress)
}

/// As [`run`], telling `on_probed` what the source is once it passed the probe. Every task
/// starts with the probe and the plan; which task it is, is decided here, once.
pub fn run_with(
    job: &EngineJob,
    on_probed: &mut dyn FnMut(&MediaInfo),
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<EngineReport, EngineError> {
    let probed = transcode::probe_and_plan(job, on_probed)?;
    match &job.task {
        Task::Probe => {
            // A split title's one decision, which every chunk and the stitch then use (its
            // start sampled: playback waits for it).
            let ladder = match transcode::decided_ladder(job) {
                Some(decided) => Some(decided.clone()),
                None => {
                    let span = quality::probe::SPLIT_PROBE_SPAN_SECS;
                    quality::probe::decide(job, &probed, span)?
                }
            };
            Ok(EngineReport { ladder, ..transcode::probed_report(&probed) })
        }
        Task::Stitch(parts) => {
            let planned = transcode::planned_report(&probed.media, &probed.plan);
            let mut report = stitch::run(job, planned, &probed.plan, parts)?;
            report.probe_secs = probed.probe_secs;
            Ok(report)
        }
        Task::Whole | Task::Chunk(_) | Task::Audio(_) => {
            let mut probed = probed;
            let mut ladder = transcode::decided_ladder(job).cloned();
            // A whole title not decided before is probed here, all of it.
            if ladder.is_none() && job.task == Task::Whole {
                let span = probed.media.duration_secs;
                ladder = quality::probe::decide(job, &probed, span)?;
                if let Some(ladder) = &ladder {
                    tcoder::engine::plan::apply_ladder(&mut probed.plan, ladder);
                }
            }
            transcode::encode(job, probed, ladder, on_progress)
        }
    }
}
