//! One delivered job message, from claim to ack: claim (epoch) → download → engine (sandboxed)
//! → upload to `outputs/<tenant>/<job>/<epoch>/` → commit (only if still the current epoch;
//! the completed event goes to the outbox in the same step) → publish → ack. Retryable
//! failures requeue the job and nak with backoff; permanent ones fail it and term the message.
//! A stale attempt (fenced) sends no ack and no nak: the message belongs to the new attempt.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{AckKind, Message};
use tcoder::cost::{JobCost, Usage};
use tcoder::engine::{EngineError, EngineJob, LadderReport, Progress, SidecarFile, Task};
use tcoder::events::{self, JobEvent, WorkItem};
use tcoder::jobs::{
    Attempt, ClaimOutcome, EngineUsage, FinishOutcome, Job, JobError, JobResult, MANIFEST_FILE,
    Tenant,
};
use tcoder::s3::{self, keys, transfer};
use tracing::Instrument as _;

use super::Outcome;
use super::coordinator::Planned;
use super::steps::{
    Supervised, best_effort, fetch_captions, remove_in_background, start_source, store_error,
    through_redis_outage, through_store_outage, transient, unless_stopped, upload_outputs,
    with_commit_retries,
};
use super::verdict::{Verdict, verdict};
use crate::keeper::{OUTAGE_PATIENCE, RedisLease, Stop, StopReason, keep_lease};
use crate::{Worker, scratch};

/// Claims the job, holding the message (in-progress acks: no delivery is spent) while
/// - the previous holder's lease is still running down (its worker died and AckWait expired
///   first): waited out, twice at most;
/// - Redis cannot be reached: retried with backoff for up to [`OUTAGE_PATIENCE`] (a nak
///   would spend one of the job's few deliveries, and enough of them dead-letter a healthy
///   job), unless the worker is releasing its work.
async fn claim_holding_the_message(
    worker: &Worker,
    message: &Message,
    item: &WorkItem,
    release: &tokio_util::sync::CancellationToken,
) -> Result<ClaimOutcome, tcoder::redis::RedisError> {
    // In-progress acks while we wait, whatever we wait for (even a claim that hangs on a
    // stopped Redis for its whole timeout).
    events::holding(message, worker.hold_interval(), claim_retrying(worker, item, release)).await
}

/// The claim loop of [`claim_holding_the_message`], without the message.
async fn claim_retrying(
    worker: &Worker,
    item: &WorkItem,
    release: &tokio_util::sync::CancellationToken,
) -> Result<ClaimOutcome, tcoder::redis::RedisError> {
    let ttl = worker.config.lease_ttl;
    let started = tokio::time::Instant::now();
    let (mut busy_waits, mut backoff, mut waiting) = (0, Duration::from_millis(250), false);
    let mut claimed = worker.jobs.claim(&item.job_id, &worker.id, ttl).await;
    loop {
        worker.note_redis(claimed.is_ok());
        match &claimed {
            Ok(ClaimOutcome::Busy { retry_in }) if busy_waits < 2 => {
                busy_waits += 1;
                tokio::time::sleep((*retry_in).min(ttl) + Duration::from_millis(50)).await;
            }
            Err(e) if started.elapsed() < OUTAGE_PATIENCE && !release.is_cancelled() => {
                if !waiting {
                    waiting = true;
                    worker.metrics.waiting_for_redis.inc();
                    tracing::warn!(job = %item.job_id, error = %e, "cannot claim: Redis unreachable; holding the work item until it answers");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = release.cancelled() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            _ => break,
        }
        claimed = worker.jobs.claim(&item.job_id, &worker.id, ttl).await;
    }
    if waiting {
        worker.metrics.waiting_for_redis.dec();
    }
    claimed
}

/// Handles a whole title's message (its `item` and delivery count read by the runner) to the
/// end and settles it (ack / nak / term / nothing).
pub(crate) async fn handle(
    worker: &Worker,
    message: Arc<Message>,
    item: &WorkItem,
    delivered: i64,
    release: tokio_util::sync::CancellationToken,
) -> Outcome {
    let Some(_running) = worker.running(&item.job_id) else {
        // Taking it would count the attempt running here as lost and redo its work. One
        // in-progress ack keeps the item with that attempt (JetStream keys acks by the
        // message, whichever delivery they answer).
        tracing::info!(job = %item.job_id, "a redelivery of the job this worker runs; left to its attempt");
        let _ = message.ack_with(AckKind::Progress).await;
        return Outcome::Skipped;
    };
    let claimed = claim_holding_the_message(worker, &message, item, &release).await;
    let attempt = match claimed {
        Ok(ClaimOutcome::Claimed(attempt)) => attempt,
        Ok(ClaimOutcome::Busy { retry_in }) => {
            let _ = message.ack_with(AckKind::Nak(Some(retry_in))).await;
            return Outcome::Skipped;
        }
        Ok(ClaimOutcome::Done(status)) => {
            tracing::info!(job = %item.job_id, %status, "job already finished; dropping its message");
            let _ = message.double_ack().await;
            return Outcome::Skipped;
        }
        Ok(ClaimOutcome::NotReady(status)) => {
            tracing::warn!(job = %item.job_id, %status, "job is not queued; retrying later");
            let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await;
            return Outcome::Skipped;
        }
        Ok(ClaimOutcome::Missing) => {
            tracing::warn!(job = %item.job_id, "work item for a job that does not exist (deleted?); terminating it");
            let _ = message.ack_with(AckKind::Term).await;
            return Outcome::Skipped;
        }
        Err(e) => {
            // Released at shutdown, or Redis gone for longer than a claim holds: give it back.
            tracing::warn!(error = %e, "cannot claim (Redis); giving the work item back");
            let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await;
            return Outcome::Skipped;
        }
    };
    let span = tracing::info_span!("job", job = %attempt.job_id, epoch = attempt.epoch);
    run_attempt(worker, &message, attempt, &item.tenant, delivered, release).instrument(span).await
}

async fn run_attempt(
    worker: &Worker,
    message: &Arc<Message>,
    attempt: Attempt,
    tenant: &Tenant,
    delivered: i64,
    release: tokio_util::sync::CancellationToken,
) -> Outcome {
    let started = Instant::now();
    let stop = Stop::default();
    let keeper = keep_lease(
        worker.jobs.clone(),
        attempt.clone(),
        message.clone(),
        worker.config.lease_ttl,
        stop.clone(),
        worker.metrics.clone(),
        worker.redis_suspect.clone(),
    );
    let released = async move {
        release.cancelled().await;
        StopReason::Released
    };
    let supervised = Supervised::start(worker, tenant, &attempt.job_id, &stop, keeper, released);
    let owner = scratch::Owner::Job(attempt.job_id.clone(), attempt.epoch);
    let workdir = owner.folder(&worker.config.scratch_dir);
    let result = work(worker, &attempt, &workdir, &stop)
        .await
        .map_err(|error| scratch::blame_full_disk(&workdir, error));
    if let Err(e) = tokio::fs::remove_dir_all(&workdir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %workdir.display(), error = %e, "cannot remove the job directory");
    }
    supervised.work_done();
    let outcome = settle(worker, message, &attempt, delivered, result, &stop).await;
    remove_uncommitted_outputs(worker, tenant, &attempt, &outcome);
    supervised.end().await;
    if outcome == Outcome::Completed {
        worker.metrics.job_seconds.observe(started.elapsed().as_secs_f64());
    }
    outcome
}

/// A transcoded and uploaded attempt, ready to commit.
struct Done {
    job: Job,
    /// The output manifest (the job's `result`).
    manifest: JobResult,
    cost: JobCost,
    /// Whether the job's prefix may hold outputs besides this attempt's, to remove once it
    /// commits: an earlier attempt's (the epoch is above 1) or a split title's parts. A first
    /// attempt at a whole title skips the listing, a request per job (on the embedded store,
    /// a walk of the whole bucket, which held a busy worker's slots for 300 ms a job).
    others_may_remain: bool,
}

/// Download, transcode, upload.
async fn work(
    worker: &Worker,
    attempt: &Attempt,
    workdir: &Path,
    stop: &Stop,
) -> Result<Done, EngineError> {
    let job =
        through_redis_outage(worker, stop, "reading the job", || worker.jobs.get(&attempt.job_id))
            .await
            .map_err(|e| transient(e.to_string()))?
            .ok_or_else(|| transient("job vanished"))?;
    let started = JobEvent::started(&job, attempt.epoch, &worker.id);
    best_effort(worker, &started).await;

    let occupied = Instant::now();
    // The engine starts on the source while it still comes down: a long title's first chunk
    // needs its first seconds, not the whole file.
    let source = start_source(worker, &job, workdir, stop).await?;
    let input = source.path.clone();
    let output_dir = workdir.join("out");
    let stage = Instant::now();
    let engine_started_at_ms = tcoder::jobs::now_secs_f64() * 1000.0;
    let inner = Stop::default();
    let engine_phase = async {
        let sidecars = fetch_captions(worker, &job, workdir, &inner).await?;
        // A long title is split into parts many workers encode; this attempt coordinates them.
        match super::coordinator::plan(worker, &job, workdir, &input, &inner).await? {
            Planned::Split(split) => {
                let inputs = (input.as_path(), sidecars);
                let done = split.coordinate(worker, &job, attempt, workdir, inputs, &inner).await?;
                Ok((done.stitch, done.parts, true))
            }
            Planned::Whole(ladder) => {
                let inputs = (input.clone(), sidecars, ladder);
                let run = encode_whole(worker, &job, attempt, inputs, &output_dir, workdir, &inner)
                    .await?;
                Ok((run, super::coordinator::PartsUsage::default(), false))
            }
        }
    };
    let (run, parts, split_title) = source.alongside(stop, &inner, engine_phase).await?;
    let engine_secs = stage.elapsed().as_secs_f64();
    if !run.sandbox.missing.is_empty() {
        worker.metrics.sandbox_incomplete.inc();
    }
    // Probing happens inside the engine child; it reports how long that took.
    let probe_secs = run.report.probe_secs.min(engine_secs);
    worker.metrics.stage_seconds.with_label_values(&["probe"]).observe(probe_secs);
    worker.metrics.stage_seconds.with_label_values(&["encode"]).observe(engine_secs - probe_secs);
    worker.metrics.engine_cpu_seconds.inc_by(run.cpu_secs.round() as u64);
    if run.wall_secs > 0.0 {
        worker.metrics.encode_speed.observe(run.report.media.duration_secs / run.wall_secs);
    }

    let stage = Instant::now();
    let prefix = keys::output_prefix(&job.tenant, &job.id, attempt.epoch);
    let mut usage = Usage { cpu_secs: run.cpu_secs + parts.cpu_secs, ..Usage::default() };
    upload_outputs(worker, &output_dir, &run.report.files, &prefix, stop).await?;
    for file in &run.report.files {
        usage.add_object(file.bytes);
    }
    worker.metrics.bytes_out.inc_by(usage.bytes_stored);
    worker
        .metrics
        .stage_seconds
        .with_label_values(&["upload"])
        .observe(stage.elapsed().as_secs_f64());
    usage.machine_secs = occupied.elapsed().as_secs_f64() + parts.helpers_machine_secs;
    let engine = EngineUsage {
        cpu_secs: usage.cpu_secs,
        wall_secs: run.wall_secs,
        started_at_ms: engine_started_at_ms,
    };
    let url_of = |key: &str| worker.s3_config.public_url_of(key);
    let result_with = |usage: &Usage| {
        let cost = JobCost::new(usage.clone(), &worker.config.cost);
        JobResult::new(attempt.epoch, prefix.as_str(), &run.report, engine.clone(), cost, &url_of)
    };
    // The manifest lists every file and is stored beside them; its own size and PUT count in
    // the cost (the size measured on a first rendering: the figures it holds barely change it).
    let draft = serde_json::to_vec_pretty(&result_with(&usage)).expect("a result serializes");
    usage.add_object(draft.len() as u64);
    let full = result_with(&usage);
    let manifest_key = prefix.join(MANIFEST_FILE).map_err(|e| transient(e.to_string()))?;
    let manifest_path = workdir.join(MANIFEST_FILE);
    let body = serde_json::to_vec_pretty(&full).expect("a result serializes");
    tokio::fs::write(&manifest_path, &body)
        .await
        .map_err(|e| transient(format!("manifest: {e}")))?;
    unless_stopped(stop)?;
    through_store_outage(worker, stop, "manifest upload", || {
        transfer::upload(
            &worker.s3,
            &worker.bucket,
            &manifest_key,
            &manifest_path,
            "application/json",
            transfer::IMMUTABLE,
        )
    })
    .await
    .map_err(store_error)?;
    let cost = full.cost.clone();
    let manifest = full.summary(url_of(manifest_key.as_str()));
    for rendition in &manifest.renditions {
        let data = serde_json::to_value(rendition).expect("a rendition serializes");
        let event = JobEvent::rendition(&job, attempt.epoch, &rendition.name, data);
        best_effort(worker, &event).await;
    }
    Ok(Done { job, manifest, cost, others_may_remain: split_title || attempt.epoch > 1 })
}

/// The whole title in one engine run, its progress published as events.
async fn encode_whole(
    worker: &Worker,
    job: &Job,
    attempt: &Attempt,
    (input, sidecars, ladder): (std::path::PathBuf, Vec<SidecarFile>, Option<LadderReport>),
    output_dir: &Path,
    workdir: &Path,
    stop: &Stop,
) -> Result<tcoder::engine::EngineRun, EngineError> {
    let engine_job = EngineJob {
        sidecars,
        ladder,
        ..worker.engine_job(job, input, output_dir.to_path_buf(), Task::Whole)
    };
    let (progress_tx, progress_rx) = tokio::sync::mpsc::channel::<Progress>(8);
    let publisher =
        tokio::spawn(publish_progress(worker.clone(), job.clone(), attempt.epoch, progress_rx));
    let run = worker.supervisor.run(&engine_job, workdir, Some(progress_tx), stop.token()).await;
    let _ = publisher.await;
    run
}

/// Publishes throttled progress events.
async fn publish_progress(
    worker: Worker,
    job: Job,
    epoch: u64,
    mut progress: tokio::sync::mpsc::Receiver<Progress>,
) {
    let mut last: Option<Instant> = None;
    let mut sequence = 0u64;
    while let Some(report) = progress.recv().await {
        if last.is_some_and(|l| l.elapsed() < worker.config.progress_interval) {
            continue;
        }
        last = Some(Instant::now());
        sequence += 1;
        let event = JobEvent::progress(
            &job,
            epoch,
            sequence,
            serde_json::to_value(&report).unwrap_or_default(),
        );
        best_effort(&worker, &event).await;
    }
}

/// Outputs nothing will ever reference are garbage: this attempt's, when it certainly did not
/// commit (fenced, released — a newer epoch writes elsewhere), and every attempt's of a job
/// that ended without a result (failed, canceled). Not after `Retried`: that includes a commit
/// whose answer was lost; the winner's commit removes the other epochs' outputs.
fn remove_uncommitted_outputs(
    worker: &Worker,
    tenant: &Tenant,
    attempt: &Attempt,
    outcome: &Outcome,
) {
    let prefix = match outcome {
        Outcome::Completed | Outcome::Skipped | Outcome::Retried => return,
        Outcome::Failed(_) | Outcome::Canceled => keys::job_outputs_prefix(tenant, &attempt.job_id),
        Outcome::Fenced | Outcome::Released => {
            keys::output_prefix(tenant, &attempt.job_id, attempt.epoch)
        }
    };
    remove_in_background(worker, prefix, None, "outputs nothing references");
}

/// Settles the message according to how the attempt ended.
async fn settle(
    worker: &Worker,
    message: &Arc<Message>,
    attempt: &Attempt,
    delivered: i64,
    result: Result<Done, EngineError>,
    stop: &Stop,
) -> Outcome {
    if let Err(error) = &result {
        worker.note_failure(error);
    }
    let decided = verdict(
        stop.reason(),
        result.as_ref().map(|_| ()),
        delivered,
        worker.max_deliver,
        worker.config.retry_delay,
    );
    match decided {
        Verdict::Canceled => {
            tracing::info!(job = %attempt.job_id, "canceled; engine stopped");
            let _ = message.double_ack().await;
            return Outcome::Canceled;
        }
        Verdict::Fenced => return Outcome::Fenced,
        Verdict::Release => {
            return match worker.jobs.requeue(attempt, "released at worker shutdown").await {
                Ok(FinishOutcome::Finished) => {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    Outcome::Released
                }
                _ => Outcome::Fenced,
            };
        }
        Verdict::Commit | Verdict::Retry(_) | Verdict::Fail => {}
    }
    match result {
        Ok(Done { job, manifest, cost, others_may_remain }) => {
            let event = JobEvent::completed(&job, attempt.epoch, &manifest);
            // A job not yet playable (a whole title; a split one whose coordinator died before
            // saying so) becomes playable as it completes.
            let playable =
                manifest.hls_master.is_some().then(|| JobEvent::playable(&job, attempt.epoch));
            let stage = Instant::now();
            let commit = || worker.jobs.complete(attempt, &manifest, &event, playable.as_ref());
            let lease = RedisLease {
                jobs: worker.jobs.clone(),
                attempt: attempt.clone(),
                message: message.clone(),
                ttl: worker.config.lease_ttl,
                metrics: worker.metrics.clone(),
                redis_suspect: worker.redis_suspect.clone(),
            };
            match with_commit_retries(worker, &lease, stop, commit).await {
                Ok(FinishOutcome::Finished) => {
                    worker.metrics.record_cost(&cost);
                }
                Ok(FinishOutcome::Fenced) => {
                    tracing::warn!(job = %attempt.job_id, epoch = attempt.epoch, "commit fenced: a newer attempt owns the job; no ack");
                    worker.metrics.self_fences.inc();
                    return Outcome::Fenced;
                }
                Err(e) => {
                    // Unknown whether the commit landed: do not ack; the message is redelivered
                    // and the next claim sees the truth (completed → dropped).
                    tracing::error!(error = %e, "commit failed; leaving the message to be redelivered");
                    return Outcome::Retried;
                }
            }
            // Committed: publish from the outbox (the relay covers a crash right here).
            if let Err(e) = events::relay_outbox(&worker.jobs, &worker.js).await {
                tracing::warn!(error = %e, "completed event left for the outbox relay");
            }
            // Attempts that lost (a stale worker's uploads) are garbage: only this epoch is
            // referenced by the job.
            if others_may_remain {
                let winner = keys::output_prefix(&job.tenant, &job.id, attempt.epoch);
                let all = keys::job_outputs_prefix(&job.tenant, &job.id);
                remove_in_background(worker, all, Some(winner), "outputs of attempts that lost");
            }
            // Only tcoder's own upload: a submitted or watched object is the user's.
            if !worker.config.keep_sources
                && job.owns_source()
                && let Some(source) = &job.source
                && let Err(e) = s3::delete(&worker.s3, &worker.bucket, &source.key).await
            {
                // Left behind, not lost: a lifecycle rule on uploads/ catches it.
                tracing::warn!(error = %e, key = %source.key, "source not deleted");
            }
            // The caption files it uploaded are tcoder's too; named objects are the user's.
            for caption in job.spec.captions.iter().filter(|_| !worker.config.keep_sources) {
                let tcoder::jobs::CaptionFile::Upload(n) = caption.file else { continue };
                let key = keys::caption_upload_key(&job.tenant, &job.id, n);
                if let Err(e) = s3::delete(&worker.s3, &worker.bucket, &key).await {
                    tracing::warn!(error = %e, %key, "caption upload not deleted");
                }
            }
            if let Err(e) = message.double_ack().await {
                tracing::warn!(error = %e, "ack not confirmed; a redelivery will find the job completed");
            }
            worker
                .metrics
                .stage_seconds
                .with_label_values(&["commit"])
                .observe(stage.elapsed().as_secs_f64());
            Outcome::Completed
        }
        Err(error) if matches!(decided, Verdict::Retry(_)) => {
            let Verdict::Retry(delay) = decided else { unreachable!("matched above") };
            tracing::warn!(job = %attempt.job_id, %error, retry_in = ?delay, "attempt failed; retrying");
            match worker.jobs.requeue(attempt, &error.to_string()).await {
                Ok(FinishOutcome::Finished) => {
                    let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
                    Outcome::Retried
                }
                Ok(FinishOutcome::Fenced) => Outcome::Fenced,
                Err(_) => Outcome::Retried,
            }
        }
        Err(error) => {
            tracing::warn!(job = %attempt.job_id, %error, "job failed");
            let job_error =
                JobError { code: error.code.as_str().to_owned(), message: error.message.clone() };
            let Ok(Some(job)) = worker.jobs.get(&attempt.job_id).await else {
                return Outcome::Retried;
            };
            let event = JobEvent::failed(&job, Some(attempt.epoch), &job_error);
            match worker.jobs.fail(attempt, &job_error, &event).await {
                Ok(FinishOutcome::Finished) => {
                    if let Err(e) = events::relay_outbox(&worker.jobs, &worker.js).await {
                        tracing::warn!(error = %e, "failed event left for the outbox relay");
                    }
                    let _ = message.ack_with(AckKind::Term).await;
                    Outcome::Failed(error.code)
                }
                Ok(FinishOutcome::Fenced) => Outcome::Fenced,
                Err(_) => Outcome::Retried,
            }
        }
    }
}
