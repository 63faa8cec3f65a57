//! One attempt at one part of a split job (docs/DESIGN.md, "Split titles"): claimed with the
//! part's own epoch and lease, encoded by the engine child, uploaded under
//! `outputs/<tenant>/<job>/parts/<k>/<epoch>/` and committed with the list of its files. Run
//! by a worker that took the part's work item, or by the job's coordinator for a part nobody
//! holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{AckKind, Message};
use tcoder::engine::supervisor::Priority;
use tcoder::engine::{EngineError, Part};
use tcoder::events::WorkItem;
use tcoder::jobs::{
    Job, PartAttempt, PartClaim, PartCommit, PartRelease, PartResult, PartStatus, RenewOutcome,
};
use tcoder::s3::keys;
use tracing::Instrument as _;

use super::Outcome;
use super::steps::{
    Supervised, download_source, remove_in_background, unless_stopped, upload_outputs,
    with_commit_retries,
};
pub(crate) use super::verdict::PartEnd;
use super::verdict::{Settle, part_verdict};
use crate::keeper::{Lease, LeaseTiming, Stop, StopReason, keep, stop_on};
use crate::{Worker, scratch};

/// A finished part attempt.
#[derive(Debug)]
pub(crate) struct PartRun {
    pub end: PartEnd,
    /// The engine's output folder on this machine (the committed files, when committed).
    pub output_dir: PathBuf,
}

/// The lease of a part attempt in Redis, with in-progress acks of its work item, if any.
struct PartLease {
    worker: Worker,
    attempt: PartAttempt,
    message: Option<Arc<Message>>,
}

impl Lease for PartLease {
    async fn renew(&self) -> Result<RenewOutcome, String> {
        let ttl = self.worker.config.lease_ttl;
        self.worker.jobs.renew_part(&self.attempt, ttl).await.map_err(|e| e.to_string())
    }

    async fn hold_work_item(&self) {
        if let Some(message) = &self.message
            && let Err(e) = message.ack_with(AckKind::Progress).await
        {
            tracing::debug!(error = %e, "in-progress ack failed");
        }
    }

    fn renewal_failed(&self, error: &str) {
        self.worker.note_redis(false);
        self.worker.metrics.lease_renewals_failed.inc();
        tracing::warn!(job = %self.attempt.job_id, part = self.attempt.part, error, "part lease renewal failed");
    }
}

/// Who runs a part attempt.
pub(crate) enum Origin<'a> {
    /// The job's coordinator, the source (at this path) already on its machine; the engine
    /// runs at this priority (in the background beside another part).
    Coordinator(&'a Path, Priority),
    /// A worker that took the part's work item: it downloads the source under the part's
    /// lease, and the item gets in-progress acks with each renewal.
    Item(Arc<Message>),
}

/// Runs `attempt` at `definition` to its end: encode, upload, commit — or, when it did not
/// commit, give the part back (failed or released) and remove what it uploaded. `outer` (the
/// coordinator's job attempt, or a worker's release) stops it too.
pub(crate) async fn run(
    worker: &Worker,
    job: &Job,
    attempt: &PartAttempt,
    definition: &Part,
    workdir: &Path,
    origin: Origin<'_>,
    outer: &Stop,
) -> PartRun {
    let stop = Stop::default();
    let (input, priority, message) = match origin {
        Origin::Coordinator(input, priority) => (Some(input), priority, None),
        Origin::Item(message) => (None, Priority::Normal, Some(message)),
    };
    let item = message.clone();
    let lease = PartLease { worker: worker.clone(), attempt: attempt.clone(), message };
    let keeper = {
        let (stop, timing) = (stop.clone(), LeaseTiming::of(worker.config.lease_ttl));
        async move { keep(&lease, timing, &stop).await }
    };
    let outer_stopped = outer.clone();
    let linked = async move {
        outer_stopped.stopped().await;
        outer_stopped.reason().unwrap_or(StopReason::Released)
    };
    let supervised = Supervised::start(worker, &job.tenant, &attempt.job_id, &stop, keeper, linked);
    let output_dir = workdir.join(format!("part-{}-{}", attempt.part, attempt.epoch));
    let made = encode_and_upload(
        worker,
        job,
        attempt,
        definition,
        workdir,
        (input, priority),
        &output_dir,
        &stop,
    )
    .await
    .map_err(|error| scratch::blame_full_disk(workdir, error));
    supervised.work_done();
    let end = match (stop.reason(), made) {
        (Some(reason), _) => PartEnd::Stopped(reason),
        (None, Ok(committed)) => {
            let lease =
                PartLease { worker: worker.clone(), attempt: attempt.clone(), message: item };
            commit(worker, attempt, &committed, &lease, &stop).await
        }
        (None, Err(error)) => {
            worker.note_failure(&error);
            // An input or limit error is the source's: no other attempt would do better.
            let max = match error.code.is_retryable() {
                true => u32::try_from(worker.max_deliver).unwrap_or(u32::MAX),
                false => 1,
            };
            match worker.jobs.release_part(attempt, true, max, Some(&error)).await {
                Ok(PartRelease::Fenced) => PartEnd::Fenced,
                Ok(released) => PartEnd::Failed(error, released),
                // The lease lapses; the next claim takes the part over.
                Err(_) => PartEnd::Failed(error, PartRelease::Pending),
            }
        }
    };
    if let PartEnd::Stopped(StopReason::Released) = end {
        // Free at once for another worker rather than after the lease lapses.
        let _ = worker.jobs.release_part(attempt, false, u32::MAX, None).await;
    }
    supervised.end().await;
    // Removed only when the part certainly did not commit them: an unconfirmed commit may have
    // landed, and a committed part's outputs are what the stitch fetches.
    if !matches!(end, PartEnd::Committed | PartEnd::Uncertain) {
        let prefix = keys::part_output_prefix(&job.tenant, &job.id, attempt.part, attempt.epoch);
        remove_in_background(worker, prefix, None, "uncommitted part outputs");
    }
    PartRun { end, output_dir }
}

#[allow(clippy::too_many_arguments)]
async fn encode_and_upload(
    worker: &Worker,
    job: &Job,
    attempt: &PartAttempt,
    definition: &Part,
    workdir: &Path,
    (input, priority): (Option<&Path>, Priority),
    output_dir: &Path,
    stop: &Stop,
) -> Result<PartResult, EngineError> {
    let occupied = Instant::now();
    let input = match input {
        Some(path) => path.to_path_buf(),
        None => download_source(worker, job, workdir, stop).await?,
    };
    let engine_job =
        worker.engine_job(job, input, output_dir.to_path_buf(), definition.clone().into());
    let run = worker.supervisor.run_at(priority, &engine_job, workdir, None, stop.token()).await?;
    worker.metrics.engine_cpu_seconds.inc_by(run.cpu_secs.round() as u64);
    let prefix = keys::part_output_prefix(&job.tenant, &job.id, attempt.part, attempt.epoch);
    upload_outputs(worker, output_dir, &run.report.files, &prefix, stop).await?;
    unless_stopped(stop)?;
    Ok(PartResult {
        prefix,
        files: run.report.files,
        cpu_secs: run.cpu_secs,
        machine_secs: occupied.elapsed().as_secs_f64(),
        frames: run.report.frames,
        worker: worker.id.clone(),
    })
}

/// Commits (retried through a Redis outage as a job's commit is). When no answer came, the
/// part's state is read back before anything is decided: done at this epoch means the commit
/// landed; still running at this epoch means it did not (yet), so it is sent again (the same
/// attempt's commit is idempotent); anything else means a newer attempt owns the part and this
/// commit can no longer land (fenced by the epoch).
async fn commit(
    worker: &Worker,
    attempt: &PartAttempt,
    committed: &PartResult,
    lease: &PartLease,
    stop: &Stop,
) -> PartEnd {
    for _ in 0..COMMIT_ROUNDS {
        let sent = with_commit_retries(worker, lease, stop, || {
            worker.jobs.commit_part(attempt, committed)
        });
        match sent.await {
            Ok(PartCommit::Committed { done, parts }) => {
                tracing::info!(part = attempt.part, done, parts, "part committed");
                return PartEnd::Committed;
            }
            Ok(PartCommit::Fenced) => return PartEnd::Fenced,
            Err(e) => {
                tracing::warn!(part = attempt.part, error = %e, "part commit not confirmed; reading the part back")
            }
        }
        match worker.jobs.part(&attempt.job_id, attempt.part).await {
            Ok(Some(state)) if state.epoch == attempt.epoch && state.is_done() => {
                tracing::info!(part = attempt.part, "part commit confirmed by reading it back");
                return PartEnd::Committed;
            }
            Ok(Some(state))
                if state.epoch == attempt.epoch && state.status == PartStatus::Running => {}
            Ok(_) => return PartEnd::Fenced,
            Err(_) => break,
        }
    }
    PartEnd::Uncertain
}

/// Commit-then-read-back rounds before a part's commit is left uncertain.
const COMMIT_ROUNDS: u32 = 3;

/// Handles the work item of one part: claims it and runs it if nobody holds it. The item is
/// only an invitation (the coordinator runs what nobody takes), so everything but a failure
/// another worker may not have or a release at shutdown settles it with an ack.
pub(crate) async fn handle_item(
    worker: &Worker,
    message: Arc<Message>,
    item: &WorkItem,
    part: u32,
    release: tokio_util::sync::CancellationToken,
) -> Outcome {
    let claimed =
        worker.jobs.claim_part(&item.job_id, part, &worker.id, worker.config.lease_ttl).await;
    worker.note_redis(claimed.is_ok());
    let attempt = match claimed {
        Ok(PartClaim::Claimed(attempt)) => attempt,
        Ok(_) => {
            let _ = message.double_ack().await;
            return Outcome::Skipped;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot claim a part (Redis); giving the item back");
            let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await;
            return Outcome::Skipped;
        }
    };
    let span = tracing::info_span!("part", job = %attempt.job_id, part, epoch = attempt.epoch);
    run_item(worker, &message, &attempt, release).instrument(span).await
}

async fn run_item(
    worker: &Worker,
    message: &Arc<Message>,
    attempt: &PartAttempt,
    release: tokio_util::sync::CancellationToken,
) -> Outcome {
    let found = async {
        let job = worker.jobs.get(&attempt.job_id).await.ok()??;
        let part = worker.jobs.part(&attempt.job_id, attempt.part).await.ok()??;
        Some((job, part.definition?))
    };
    let Some((job, definition)) = found.await else {
        let _ = worker.jobs.release_part(attempt, false, u32::MAX, None).await;
        let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await;
        return Outcome::Skipped;
    };
    let outer = Stop::default();
    let release_watch = stop_on(&outer, async move {
        release.cancelled().await;
        StopReason::Released
    });
    let owner = scratch::Owner::Part(attempt.job_id.clone(), attempt.part, attempt.epoch);
    let workdir = owner.folder(&worker.config.scratch_dir);
    let run =
        run(worker, &job, attempt, &definition, &workdir, Origin::Item(message.clone()), &outer)
            .await;
    outer.stop(StopReason::Released); // ends the watch
    let _ = release_watch.await;
    if let Err(e) = tokio::fs::remove_dir_all(&workdir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %workdir.display(), error = %e, "cannot remove the part directory");
    }
    let (settle, outcome) = part_verdict(&run.end, worker.config.retry_delay);
    match (&run.end, settle) {
        (PartEnd::Failed(error, _), Settle::Nak(_)) => {
            tracing::warn!(%error, "part attempt failed; another may take it");
        }
        (PartEnd::Failed(error, _), Settle::Ack) => {
            tracing::warn!(%error, "part failed; its coordinator decides for the job");
        }
        _ => {}
    }
    match settle {
        Settle::Ack => {
            let _ = message.double_ack().await;
        }
        Settle::Nak(delay) => {
            let _ = message.ack_with(AckKind::Nak(delay)).await;
        }
    }
    outcome
}
