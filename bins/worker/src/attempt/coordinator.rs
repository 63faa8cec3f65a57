//! A split job's coordinator (docs/DESIGN.md, "Split titles"): the attempt that claimed a
//! long job probes it in the sandbox, stores the plan (video chunks, then audio ranges)
//! on the job, invites other workers with one work item per part, runs the parts nobody holds
//! itself, waits for the rest while keeping the job's lease, and stitches the committed parts
//! into the title's outputs — which the attempt then uploads and commits like a whole encode.
//! A coordinator that dies is replaced by the job's redelivery (a new epoch), which finds the
//! plan and the committed parts and carries on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tcoder::engine::plan::SplitRule;
use tcoder::engine::supervisor::Priority;
use tcoder::engine::{
    EngineError, EngineJob, EngineRun, EngineSpec, ErrorCode, LadderReport, Part, PartsProgress,
    Progress, SidecarFile, StitchParts, Task,
};
use tcoder::events::{self, JobEvent};
use tcoder::jobs::{Attempt, Job, OutputKind, PartClaim, PartResult, PartState, Playable};
use tcoder::s3::{KeyPrefix, S3Error, keys, transfer};

use super::part::{self, Origin, PartEnd};
use super::steps::{
    best_effort, output_path, store_error, through_store_outage, transient, unless_stopped,
};
use super::verdict::{CoordinatorStep, coordinator_step, is_playable, playback_order};
use crate::Worker;
use crate::keeper::{Stop, StopReason};

/// How often the coordinator looks at the parts while others run them.
const POLL: Duration = Duration::from_secs(1);
/// How long inviting helpers (one publish per part) may take before the coordinator gets on
/// with the parts itself.
const INVITE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the probe found: the title split into parts, or one whole encode (with the per-title
/// decision the probe made, so the whole encode does not probe again).
#[derive(Debug)]
pub(crate) enum Planned {
    Split(Split),
    Whole(Option<LadderReport>),
}

/// A title to be split: its parts, chunks in order then the audio (if any).
#[derive(Debug)]
pub(crate) struct Split {
    parts: Vec<Part>,
    probe_cpu_secs: f64,
}

/// What the parts cost beyond the stitch's own engine run (which the attempt accounts).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PartsUsage {
    /// CPU of the probe and of every committed part attempt.
    pub cpu_secs: f64,
    /// Machine time of the committed parts other attempts ran (this one's is its own).
    pub helpers_machine_secs: f64,
}

/// A stitched title.
#[derive(Debug)]
pub(crate) struct Stitched {
    /// The stitch's engine run; its report is the title's, its wall time the whole split
    /// encode's.
    pub stitch: EngineRun,
    pub parts: PartsUsage,
}

/// Whether `job` is split, and into what: only an HLS transcode of a source longer than
/// `worker.split_min_duration`, decided from a probe in the sandbox (the worker itself never
/// parses media).
pub(crate) async fn plan(
    worker: &Worker,
    job: &Job,
    workdir: &Path,
    input: &Path,
    stop: &Stop,
) -> Result<Planned, EngineError> {
    let config = &worker.config;
    let spec = EngineSpec::from(&job.spec);
    if config.split_min_duration.is_zero() || !spec.outputs.contains(&OutputKind::Hls) {
        return Ok(Planned::Whole(None));
    }
    let probe = worker.engine_job(job, input.to_path_buf(), workdir.join("probe"), Task::Probe);
    let run = worker.supervisor.run(&probe, workdir, None, stop.token()).await?;
    worker.metrics.engine_cpu_seconds.inc_by(run.cpu_secs.round() as u64);
    let rule = SplitRule {
        segment_secs: probe.settings.segment_secs,
        first_chunk_secs: config.first_chunk_duration.as_secs_f64(),
        chunk_secs: config.chunk_duration.as_secs_f64(),
        split_min_secs: config.split_min_duration.as_secs_f64(),
    };
    // Loudness normalisation sets one gain from the whole title's audio: one audio part.
    let whole_audio = job.spec.loudness_target.is_some();
    let mut parts = tcoder::engine::plan::split_parts(
        &run.report,
        &rule,
        probe.limits.max_output_fps,
        whole_audio,
    );
    if parts.is_empty() {
        return Ok(Planned::Whole(run.report.ladder));
    }
    // One decision for the title, stored with every chunk: whichever machine encodes one
    // uses the same settings.
    for part in &mut parts {
        if let Part::Video(chunk) = part {
            chunk.ladder = run.report.ladder.clone();
        }
    }
    tracing::info!(parts = parts.len(), "splitting the title");
    Ok(Planned::Split(Split { parts, probe_cpu_secs: run.cpu_secs }))
}

/// The stored plan as the stitch lays it out: `chunks` video parts (0..chunks) then `audio`
/// audio ranges.
fn layout(parts: &[Part]) -> Result<(u32, u32), EngineError> {
    let chunks = parts.iter().take_while(|p| matches!(p, Part::Video(_))).count();
    if !parts[chunks..].iter().all(|p| matches!(p, Part::Audio(_))) {
        return Err(EngineError::new(ErrorCode::Failed, "the job's stored plan is malformed"));
    }
    let audio = parts.len() - chunks;
    let count = |n: usize| u32::try_from(n).map_err(|_| transient("too many parts"));
    if chunks == 0 {
        return Err(EngineError::new(ErrorCode::Failed, "the job's stored plan has no chunk"));
    }
    Ok((count(chunks)?, count(audio)?))
}

impl Split {
    /// Plans the parts on the job (or finds the plan of an earlier coordinator), sees them
    /// all committed, and stitches them in `workdir/out`.
    pub(crate) async fn coordinate(
        self,
        worker: &Worker,
        job: &Job,
        attempt: &Attempt,
        workdir: &Path,
        (input, sidecars): (&Path, Vec<SidecarFile>),
        stop: &Stop,
    ) -> Result<Stitched, EngineError> {
        let started = Instant::now();
        let planned = worker.jobs.plan_parts(&job.id, attempt.epoch, &self.parts).await;
        if planned.map_err(|e| transient(e.to_string()))?.is_none() {
            stop.stop(StopReason::Lost);
            unless_stopped(stop)?;
        }
        // The stored plan rules: a later coordinator keeps the first one's parts.
        let states = worker.jobs.parts(&job.id).await.map_err(|e| transient(e.to_string()))?;
        let parts: Vec<Part> =
            states.iter().map(|s| s.definition.clone()).collect::<Option<_>>().ok_or_else(
                || EngineError::new(ErrorCode::Failed, "a stored part is unreadable"),
            )?;
        let (chunks, audio) = layout(&parts)?;
        invite(worker, job, attempt.epoch, &states).await;

        let mut local: HashMap<u32, PathBuf> = HashMap::new();
        let layout = StitchParts { dir: workdir.join("parts"), chunks, audio };
        let mut reopened = 0;
        let (mut usage, frames) = loop {
            let states =
                run_and_wait(worker, job, attempt, workdir, input, &parts, &mut local, stop)
                    .await?;
            // Every part committed: gather their outputs as the stitch expects them.
            match gather(worker, job, &states, &parts, &layout, &mut local, stop).await {
                Ok(gathered) => break gathered,
                Err(Gather::Missing { part, epoch }) if reopened < MAX_REOPENS => {
                    reopened += 1;
                    tracing::warn!(
                        part,
                        epoch,
                        "a committed part's outputs are missing; running it again"
                    );
                    worker
                        .jobs
                        .reopen_part(&job.id, attempt.epoch, part, epoch)
                        .await
                        .map_err(|e| transient(e.to_string()))?;
                }
                Err(Gather::Missing { part, .. }) => {
                    return Err(transient(format!("part {part}'s outputs keep disappearing")));
                }
                Err(Gather::Failed(error)) => return Err(error),
            }
        };
        usage.cpu_secs += self.probe_cpu_secs;
        // The stored plan's decision (a later coordinator's probe may have decided anew).
        let ladder = parts.iter().find_map(|p| p.chunk()).and_then(|c| c.ladder.clone());
        let stitch = EngineJob {
            sidecars,
            ladder,
            ..worker.engine_job(job, input.to_path_buf(), workdir.join("out"), Task::Stitch(layout))
        };
        let mut run = worker.supervisor.run(&stitch, workdir, None, stop.token()).await?;
        run.report.frames = frames;
        run.wall_secs = started.elapsed().as_secs_f64();
        Ok(Stitched { stitch: run, parts: usage })
    }
}

/// Times a coordinator hands out again a committed part whose outputs are gone before it
/// gives up on the attempt.
const MAX_REOPENS: u32 = 3;

/// Why the committed parts' outputs could not be gathered.
#[derive(Debug)]
enum Gather {
    /// A file part `part`'s commit (at `epoch`) lists is not in the store.
    Missing {
        part: u32,
        epoch: u64,
    },
    Failed(EngineError),
}

impl From<EngineError> for Gather {
    fn from(error: EngineError) -> Gather {
        Gather::Failed(error)
    }
}

/// Puts every committed part's outputs where the stitch expects them: the ones this machine
/// made are moved, the others downloaded. Returns what the parts cost and their frames.
async fn gather(
    worker: &Worker,
    job: &Job,
    states: &[PartState],
    parts: &[Part],
    layout: &StitchParts,
    local: &mut HashMap<u32, PathBuf>,
    stop: &Stop,
) -> Result<(PartsUsage, u64), Gather> {
    let scratch = |e: std::io::Error| transient(format!("scratch: {e}"));
    // A fresh folder: an earlier round may have left half a part behind.
    if let Err(e) = tokio::fs::remove_dir_all(&layout.dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(scratch(e).into());
    }
    tokio::fs::create_dir_all(&layout.dir).await.map_err(scratch)?;
    let parts_folder = keys::job_parts_prefix(&job.tenant, &job.id);
    let mut usage = PartsUsage::default();
    let mut frames = 0;
    for (state, definition) in states.iter().zip(parts) {
        let committed = state
            .result
            .as_ref()
            .ok_or_else(|| transient(format!("part {} has no readable result", state.part)))?;
        let target = match definition {
            Part::Audio(_) => layout.audio_dir(state.part - layout.chunks),
            Part::Video(_) => layout.chunk_dir(state.part),
        };
        // An audio range's folder lies a level down (`audio/<j>`).
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(scratch)?;
        }
        match local.remove(&state.part) {
            Some(mine) => tokio::fs::rename(&mine, &target).await.map_err(scratch)?,
            None => {
                match fetch(worker, committed, &parts_folder, &target, stop).await {
                    Err(Fetch::Missing) => {
                        return Err(Gather::Missing { part: state.part, epoch: state.epoch });
                    }
                    Err(Fetch::Failed(error)) => return Err(error.into()),
                    Ok(()) => {}
                }
                usage.helpers_machine_secs += committed.machine_secs;
            }
        }
        usage.cpu_secs += committed.cpu_secs;
        frames += committed.frames;
    }
    Ok((usage, frames))
}

/// Runs parts nobody holds (claiming each, up to `worker.coordinator_parts` at once: the first
/// at normal priority, any started beside it in the background) and waits for the others,
/// until every part is committed. Ends early when the attempt is stopped, a part failed for
/// good, or the engine's wall-clock deadline passed (a whole encode would have been killed by
/// then) — once the parts running here have ended.
#[allow(clippy::too_many_arguments)]
async fn run_and_wait(
    worker: &Worker,
    job: &Job,
    job_attempt: &Attempt,
    workdir: &Path,
    input: &Path,
    parts: &[Part],
    local: &mut HashMap<u32, PathBuf>,
    stop: &Stop,
) -> Result<Vec<PartState>, EngineError> {
    use futures_util::StreamExt as _;
    let epoch = job_attempt.epoch;
    let deadline = tokio::time::Instant::now() + worker.supervisor.limits.wall_deadline;
    let (mut reported, mut sequence) = (None, 0);
    let mut announced = false;
    // Stops the parts running here: with the attempt, or when the title failed.
    let lanes = Stop::default();
    let mut running = futures_util::stream::FuturesUnordered::new();
    let mut failed: Option<EngineError> = None;
    loop {
        if let Some(reason) = stop.reason() {
            lanes.stop(reason);
        }
        if running.is_empty() {
            unless_stopped(stop)?;
            if let Some(error) = failed.take() {
                return Err(error);
            }
        }
        let states = match worker.jobs.parts(&job.id).await {
            Ok(states) => Some(states),
            Err(e) => {
                // An outage is a pause: the job's lease keeper decides when to give up.
                tracing::warn!(error = %e, "cannot read the parts; waiting");
                None
            }
        };
        let mut next = None;
        if let Some(states) = &states {
            let done = states.iter().filter(|p| p.is_done()).count() as u32;
            let total = states.len() as u32;
            if reported != Some(done) {
                reported = Some(done);
                sequence += 1;
                let parts = PartsProgress { done, total };
                report_progress(worker, job, epoch, sequence, parts).await;
            }
            if !announced && is_playable(states) {
                announced = announce_playable(worker, job, job_attempt).await;
            }
            match coordinator_step(states, tokio::time::Instant::now(), deadline) {
                CoordinatorStep::Done if running.is_empty() => return Ok(states.clone()),
                CoordinatorStep::Fail(error) => {
                    lanes.stop(StopReason::Released);
                    failed.get_or_insert(error);
                }
                CoordinatorStep::Run(part)
                    if running.len() < worker.config.coordinator_parts as usize
                        && lanes.reason().is_none() =>
                {
                    next = Some(part);
                }
                _ => {}
            }
        }
        if let Some(free) = next {
            let claimed =
                worker.jobs.claim_part(&job.id, free, &worker.id, worker.config.lease_ttl).await;
            if let Ok(PartClaim::Claimed(attempt)) = claimed {
                let priority = match running.is_empty() {
                    true => Priority::Normal,
                    false => Priority::Background,
                };
                let definition = &parts[attempt.part as usize];
                let origin = Origin::Coordinator(input, priority);
                let lanes = &lanes;
                running.push(async move {
                    let run = part::run(worker, job, &attempt, definition, workdir, origin, lanes);
                    (attempt.part, run.await)
                });
                // Straight on to the next free part, if a lane is left.
                continue;
            }
        }
        // A part ends here, or a look later (helpers commit, claims lapse, Redis returns);
        // once stopped, only the parts' ends.
        let stopping = lanes.reason().is_some();
        tokio::select! {
            Some((part, run)) = running.next(), if !running.is_empty() => match run.end {
                PartEnd::Committed => {
                    local.insert(part, run.output_dir);
                }
                end => {
                    tracing::info!(part, ?end, "part not committed here");
                    let _ = tokio::fs::remove_dir_all(&run.output_dir).await;
                }
            },
            () = pause(stop), if !stopping => {}
        }
    }
}

/// Records (once per job) and publishes that the title plays; false when Redis could not be
/// asked (the next look tries again).
async fn announce_playable(worker: &Worker, job: &Job, attempt: &Attempt) -> bool {
    let event = JobEvent::playable(job, attempt.epoch);
    match worker.jobs.mark_playable(attempt, &event).await {
        Ok(Playable::Marked) => {
            tracing::info!(job = %job.id, "playable");
            if let Err(e) = events::relay_outbox(&worker.jobs, &worker.js).await {
                tracing::warn!(error = %e, "playable event left for the outbox relay");
            }
            true
        }
        // Said before (by an earlier coordinator), or no longer this attempt's to say.
        Ok(Playable::Already | Playable::Fenced) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot mark the job playable; trying again");
            false
        }
    }
}

/// Publishes one work item per part not yet done, in playback order, for other workers to
/// help (best effort: without helpers the coordinator runs every part itself) — but the
/// first, which the coordinator takes at once. Items of parts the coordinator ran itself stay
/// queued until a worker fetches them and finds the part done (workers may not remove work
/// items).
async fn invite(worker: &Worker, job: &Job, epoch: u64, states: &[PartState]) {
    let publishing = async {
        for state in playback_order(states).into_iter().filter(|s| !s.is_done()).skip(1) {
            if let Err(e) = events::publish_part_item(&worker.js, job, epoch, state.part).await {
                tracing::warn!(part = state.part, error = %e, "part item not published");
            }
        }
    };
    if tokio::time::timeout(INVITE_TIMEOUT * states.len().max(1) as u32, publishing).await.is_err()
    {
        tracing::warn!("inviting helpers timed out; running the parts here");
    }
}

/// Why a committed part's files did not arrive.
#[derive(Debug)]
enum Fetch {
    /// A listed file is not in the store.
    Missing,
    Failed(EngineError),
}

impl From<EngineError> for Fetch {
    fn from(error: EngineError) -> Fetch {
        Fetch::Failed(error)
    }
}

/// Downloads a committed part's files (as its commit lists them) into `target`. The commit
/// came through Redis from another worker: its folder must lie in this job's `parts_folder`.
async fn fetch(
    worker: &Worker,
    committed: &PartResult,
    parts_folder: &KeyPrefix,
    target: &Path,
    stop: &Stop,
) -> Result<(), Fetch> {
    if !parts_folder.contains(&committed.prefix) {
        return Err(Fetch::Failed(EngineError::new(
            ErrorCode::Crashed,
            format!("a part committed outputs outside the job's folder: {}", committed.prefix),
        )));
    }
    for file in &committed.files {
        // The list came through Redis from another worker's engine: only plain relative paths.
        let relative = Path::new(&file.path);
        if relative.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
            return Err(Fetch::Failed(EngineError::new(
                ErrorCode::Crashed,
                format!("a part listed an output outside its folder: {}", file.path),
            )));
        }
        let path = target.join(relative);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| transient(format!("scratch: {e}")))?;
        }
        unless_stopped(stop)?;
        let key = committed.prefix.join(&file.path).map_err(|e| {
            EngineError::new(ErrorCode::Crashed, format!("a part listed an output ({e})"))
        })?;
        let download = through_store_outage(worker, stop, "part output download", || {
            transfer::download(&worker.s3, &worker.bucket, &key, &path)
        });
        let bytes = match download.await {
            Ok(bytes) => bytes,
            Err(S3Error::NotFound(_)) => return Err(Fetch::Missing),
            Err(e) => return Err(store_error(e).into()),
        };
        worker.metrics.bytes_in.inc_by(bytes);
    }
    // The same check the attempt applies to the engine's own outputs.
    for file in &committed.files {
        output_path(target, &file.path)?;
    }
    Ok(())
}

/// Publishes how many of the title's parts are committed.
async fn report_progress(
    worker: &Worker,
    job: &Job,
    epoch: u64,
    sequence: u64,
    parts: PartsProgress,
) {
    let progress = Progress {
        frames: 0,
        percent: f64::from(parts.done) * 100.0 / f64::from(parts.total.max(1)),
        fps: 0.0,
        speed: 0.0,
        eta_secs: None,
        parts: Some(parts),
    };
    let data = serde_json::to_value(&progress).unwrap_or_default();
    best_effort(worker, &JobEvent::progress(job, epoch, sequence, data)).await;
}

/// Waits one poll, or less when the attempt is stopped.
async fn pause(stop: &Stop) {
    tokio::select! {
        () = tokio::time::sleep(POLL) => {}
        () = stop.stopped() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcoder::engine::Chunk;

    #[test]
    fn a_stored_plan_is_chunks_then_audio_ranges() {
        let chunk = |k: u32| {
            Part::Video(Chunk {
                start_secs: f64::from(k),
                end_secs: Some(f64::from(k + 1)),
                first_segment: k,
                ladder: None,
            })
        };
        let audio = || Part::Audio(Chunk::default());
        assert_eq!(layout(&[chunk(0), chunk(1), audio()]).unwrap(), (2, 1));
        assert_eq!(layout(&[chunk(0)]).unwrap(), (1, 0));
        assert_eq!(layout(&[chunk(0), audio(), audio()]).unwrap(), (1, 2));
        assert!(layout(&[audio(), chunk(0)]).is_err());
        assert!(layout(&[chunk(0), audio(), chunk(1)]).is_err());
        assert!(layout(&[audio()]).is_err());
    }
}
