//! One delivered job message, from claim to ack: claim (epoch) → download → engine (sandboxed)
//! → upload to `outputs/<tenant>/<job>/<epoch>/` → commit (only if still the current epoch;
//! the completed event goes to the outbox in the same step) → publish → ack. Retryable
//! failures requeue the job and nak with backoff; permanent ones fail it and term the message.
//! A stale attempt (fenced) sends no ack and no nak: the message belongs to the new attempt.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt;
use tcoder::cost::{JobCost, Usage};
use tcoder::engine::{EngineError, ErrorCode, Progress};
use tcoder::events::{self, JobEvent, WorkItem, subjects};
use tcoder::jobs::{
    Attempt, ClaimOutcome, EngineUsage, FinishOutcome, Job, JobError, JobResult, MANIFEST_FILE,
    Tenant,
};
use tcoder::s3::{self, KeyPrefix, S3Error, keys, transfer};
use tracing::Instrument as _;

use crate::keeper::{Stop, StopReason, keep_lease, stop_on};
use crate::{Worker, scratch};

/// What became of a message (drives the runner's budgets and the metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    /// Failed permanently with this code.
    Failed(String),
    /// Requeued for another attempt.
    Retried,
    /// Released at shutdown.
    Released,
    /// Another attempt owns the job, or the lease could not be kept.
    Fenced,
    Canceled,
    /// Nothing to do (job already finished, not ready, unknown).
    Skipped,
}

impl Outcome {
    /// The `outcome` label: `failed` for every failure code (the code is its own label).
    pub(crate) fn label(&self) -> &str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed(_) => "failed",
            Outcome::Retried => "retried",
            Outcome::Released => "released",
            Outcome::Fenced => "fenced",
            Outcome::Canceled => "canceled",
            Outcome::Skipped => "skipped",
        }
    }

    /// The `code` label: the error code of a failure, `none` otherwise.
    pub(crate) fn code(&self) -> &str {
        match self {
            Outcome::Failed(code) => code,
            _ => "none",
        }
    }

    /// Failures that say something about this machine rather than the input.
    pub(crate) fn is_machine_failure(&self) -> bool {
        match self {
            Outcome::Retried => true,
            Outcome::Failed(code) => !code.starts_with("input.") && !code.starts_with("upload."),
            _ => false,
        }
    }
}

/// A retryable failure of the worker's own steps (download, upload, Redis, NATS).
pub(crate) fn transient(message: impl Into<String>) -> EngineError {
    EngineError::new(ErrorCode::Failed, message)
}

/// How long a claim holds its message while Redis cannot be reached, before it gives the
/// message back (spending one delivery): an outage of a dependency is a pause, not a verdict.
const MAX_WAIT_FOR_REDIS: Duration = Duration::from_secs(15 * 60);

/// Claims the job, holding the message (in-progress acks: no delivery is spent) while
/// - the previous holder's lease is still running down (its worker died and AckWait expired
///   first): waited out, twice at most;
/// - Redis cannot be reached: retried with backoff for up to [`MAX_WAIT_FOR_REDIS`] (a nak
///   would spend one of the job's few deliveries, and enough of them dead-letter a healthy
///   job), unless the worker is releasing its work.
async fn claim_holding_the_message(
    worker: &Worker,
    message: &Message,
    item: &WorkItem,
    release: &tokio_util::sync::CancellationToken,
) -> Result<ClaimOutcome, tcoder::redis::StoreError> {
    // In-progress acks while we wait, whatever we wait for (even a claim that hangs on a
    // stopped Redis for its whole timeout).
    let every = (worker.ack_wait / 3).max(Duration::from_millis(100));
    events::holding(message, every, claim_retrying(worker, item, release)).await
}

/// The claim loop of [`claim_holding_the_message`], without the message.
async fn claim_retrying(
    worker: &Worker,
    item: &WorkItem,
    release: &tokio_util::sync::CancellationToken,
) -> Result<ClaimOutcome, tcoder::redis::StoreError> {
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
            Err(e) if started.elapsed() < MAX_WAIT_FOR_REDIS && !release.is_cancelled() => {
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

/// Handles one message to the end and settles it (ack / nak / term / nothing).
pub(crate) async fn handle(
    worker: &Worker,
    message: Message,
    release: tokio_util::sync::CancellationToken,
) -> Outcome {
    let message = Arc::new(message);
    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
    if delivered > 1 {
        worker.metrics.redeliveries.inc();
    }
    let item: WorkItem = match serde_json::from_slice(&message.payload) {
        Ok(item) => item,
        Err(e) => {
            tracing::error!(error = %e, "malformed work item; terminating it");
            let _ = message.ack_with(AckKind::Term).await;
            return Outcome::Skipped;
        }
    };
    if !item.matches_subject(&message.subject) {
        // Dropped with a plain ack: a termination would be read as the job's dead letter.
        tracing::error!(subject = %message.subject, job = %item.job_id, part = ?item.part, "work item on another item's subject; dropping it");
        let _ = message.double_ack().await;
        return Outcome::Skipped;
    }
    if let Some(part) = item.part {
        return crate::part::handle_item(worker, message, &item, part, release).await;
    }
    let claimed = claim_holding_the_message(worker, &message, &item, &release).await;
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
            tracing::error!(job = %item.job_id, "work item for an unknown job; terminating it");
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
    let keeper = tokio::spawn(keep_lease(
        worker.jobs.clone(),
        attempt.clone(),
        message.clone(),
        worker.config.lease_ttl,
        stop.clone(),
        worker.metrics.clone(),
        worker.redis_suspect.clone(),
    ));
    let cancel_watch = watch_cancel(worker, tenant, &attempt.job_id, &stop);
    let release_watch = stop_on(&stop, async move {
        release.cancelled().await;
        StopReason::Released
    });
    let owner = scratch::Owner::Job(attempt.job_id.clone(), attempt.epoch);
    let workdir = owner.folder(&worker.config.scratch_dir);
    let result = work(worker, &attempt, &workdir, &stop).await;
    if let Err(e) = tokio::fs::remove_dir_all(&workdir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %workdir.display(), error = %e, "cannot remove the job directory");
    }
    // The attempt's work is over: renewing its lease now would only race the commit (which
    // deletes the lease) into a false "lease lost" alarm. The commit is fenced by the epoch.
    keeper.abort();
    let outcome = settle(worker, message, &attempt, delivered, result, &stop).await;
    remove_uncommitted_outputs(worker, tenant, &attempt, &outcome).await;
    stop.stop(StopReason::Released); // ends the helpers; the reason only matters if set before
    let _ = tokio::join!(keeper, cancel_watch, release_watch);
    if outcome == Outcome::Completed {
        worker.metrics.job_seconds.observe(started.elapsed().as_secs_f64());
    }
    outcome
}

/// Stops `stop` as canceled when the job's `canceled` event arrives: a cancel through the API
/// reaches a running attempt at once (the lease renewal would see it a third of a TTL later).
/// Ends when `stop` does.
pub(crate) fn watch_cancel(
    worker: &Worker,
    tenant: &Tenant,
    job: &tcoder::jobs::JobId,
    stop: &Stop,
) -> tokio::task::JoinHandle<()> {
    let (nats, stop) = (worker.nats.clone(), stop.clone());
    let subject = subjects::event(tenant.as_str(), job.as_str(), "canceled");
    tokio::spawn(async move {
        if let Ok(mut canceled) = nats.subscribe(subject).await {
            tokio::select! {
                Some(_) = canceled.next() => stop.stop(StopReason::Canceled),
                () = stop.stopped() => {}
            }
        }
    })
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
    let job = worker
        .jobs
        .get(&attempt.job_id)
        .await
        .map_err(|e| transient(e.to_string()))?
        .ok_or_else(|| transient("job vanished"))?;
    let started = JobEvent::started(&job, attempt.epoch, &worker.id);
    best_effort(worker, &started).await;

    let occupied = Instant::now();
    let input = download_source(worker, &job, workdir, stop).await?;
    let output_dir = workdir.join("out");
    let stage = Instant::now();
    let engine_started_at_ms = tcoder::jobs::now_secs_f64() * 1000.0;
    // A long title is split into parts many workers encode; this attempt coordinates them.
    let (run, parts, split_title) =
        match crate::split::plan(worker, &job, workdir, &input, stop).await? {
            Some(split) => {
                let done = split.coordinate(worker, &job, attempt, workdir, &input, stop).await?;
                (done.stitch, done.parts, true)
            }
            None => {
                let run =
                    encode_whole(worker, &job, attempt, input, &output_dir, workdir, stop).await?;
                (run, crate::split::PartsUsage::default(), false)
            }
        };
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
    transfer::upload(
        &worker.s3,
        &worker.bucket,
        &manifest_key,
        &manifest_path,
        "application/json",
        transfer::IMMUTABLE,
    )
    .await
    .map_err(|e| transient(e.to_string()))?;
    let cost = full.cost.clone();
    let manifest = full.summary(url_of(manifest_key.as_str()));
    for rendition in &manifest.renditions {
        let data = serde_json::to_value(rendition).expect("a rendition serializes");
        let event = JobEvent::rendition(&job, attempt.epoch, &rendition.name, data);
        best_effort(worker, &event).await;
    }
    Ok(Done { job, manifest, cost, others_may_remain: split_title || attempt.epoch > 1 })
}

/// Downloads the job's source into `workdir/in/source` (checking its size) and returns where.
pub(crate) async fn download_source(
    worker: &Worker,
    job: &Job,
    workdir: &Path,
    stop: &Stop,
) -> Result<std::path::PathBuf, EngineError> {
    let source = job
        .source
        .as_ref()
        .ok_or_else(|| EngineError::new(ErrorCode::Corrupt, "the job has no uploaded source"))?;
    let input_dir = workdir.join("in");
    tokio::fs::create_dir_all(&input_dir).await.map_err(|e| transient(format!("scratch: {e}")))?;
    let input = input_dir.join("source");
    let stage = Instant::now();
    let downloaded =
        stoppable(stop, transfer::download(&worker.s3, &worker.bucket, &source.key, &input))
            .await?
            .map_err(|e| match e {
                // Deleted after the upload: no attempt can get it back.
                S3Error::NotFound(_) => EngineError::new(
                    ErrorCode::SourceMissing,
                    "the uploaded source is no longer in the bucket",
                ),
                other => transient(other.to_string()),
            })?;
    worker
        .metrics
        .stage_seconds
        .with_label_values(&["download"])
        .observe(stage.elapsed().as_secs_f64());
    worker.metrics.bytes_in.inc_by(downloaded);
    if downloaded != source.size {
        return Err(transient(format!("downloaded {downloaded} bytes, expected {}", source.size)));
    }
    Ok(input)
}

/// The whole title in one engine run, its progress published as events.
async fn encode_whole(
    worker: &Worker,
    job: &Job,
    attempt: &Attempt,
    input: std::path::PathBuf,
    output_dir: &Path,
    workdir: &Path,
    stop: &Stop,
) -> Result<tcoder::engine::EngineRun, EngineError> {
    let engine_job = worker.engine_job(job, input, output_dir.to_path_buf(), None);
    let (progress_tx, progress_rx) = tokio::sync::mpsc::channel::<Progress>(8);
    let publisher =
        tokio::spawn(publish_progress(worker.clone(), job.clone(), attempt.epoch, progress_rx));
    let run = worker.supervisor.run(&engine_job, workdir, Some(progress_tx), stop.token()).await;
    let _ = publisher.await;
    run
}

/// Uploads the engine's outputs `files` (as its report lists them, relative to `output_dir`)
/// under `prefix`.
pub(crate) async fn upload_outputs(
    worker: &Worker,
    output_dir: &Path,
    files: &[tcoder::engine::OutputFile],
    prefix: &KeyPrefix,
    stop: &Stop,
) -> Result<(), EngineError> {
    for file in files {
        let path = output_path(output_dir, &file.path)?;
        let key = prefix.join(&file.path).map_err(|e| {
            EngineError::new(
                ErrorCode::Crashed,
                format!("the engine listed an output that is no object key ({e}): {}", file.path),
            )
        })?;
        // Stopped (fenced, released, canceled): no further file. The one under way is let
        // finish rather than dropped mid-request — the store could still complete a dropped
        // PUT after this attempt removed its outputs, leaving a file nothing references.
        unless_stopped(stop)?;
        transfer::upload(
            &worker.s3,
            &worker.bucket,
            &key,
            &path,
            &file.content_type,
            transfer::IMMUTABLE,
        )
        .await
        .map_err(|e| transient(e.to_string()))?;
    }
    Ok(())
}

/// Runs `commit`, retrying a transient store error a few times (bounded, about 6 s in all):
/// a commit (of a job or of a part) is fenced by its epoch and idempotent for the same
/// attempt, so a retry is safe, and giving up would make another worker redo finished work.
pub(crate) async fn with_commit_retries<T, F>(
    worker: &Worker,
    mut commit: impl FnMut() -> F,
) -> Result<T, tcoder::redis::StoreError>
where
    F: Future<Output = Result<T, tcoder::redis::StoreError>>,
{
    let mut delay = Duration::from_millis(200);
    for _ in 0..COMMIT_ATTEMPTS - 1 {
        match commit().await {
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "commit failed; retrying");
                worker.metrics.commit_retries.inc();
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            done => return done,
        }
    }
    commit().await
}

/// Tries of a commit before the message is left to be redelivered.
const COMMIT_ATTEMPTS: u32 = 5;

/// The file the engine reports at `relative`, only if it is a regular file inside `out`: the
/// child parses untrusted media, so its report is not trusted to name what the worker
/// uploads (no `..`, no absolute path, no symlink out of the folder).
pub(crate) fn output_path(out: &Path, relative: &str) -> Result<std::path::PathBuf, EngineError> {
    let refuse = || {
        EngineError::new(
            ErrorCode::Crashed,
            format!("the engine reported an output outside its folder: {relative}"),
        )
    };
    let rel = Path::new(relative);
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(refuse());
    }
    let path = out.join(rel);
    let meta = std::fs::symlink_metadata(&path).map_err(|_| refuse())?;
    let (real, base) =
        (path.canonicalize().map_err(|_| refuse())?, out.canonicalize().map_err(|_| refuse())?);
    if !meta.is_file() || !real.starts_with(&base) {
        return Err(refuse());
    }
    Ok(path)
}

/// Runs `work` unless the attempt is stopped first.
/// `Err` once the attempt was told to stop.
pub(crate) fn unless_stopped(stop: &Stop) -> Result<(), EngineError> {
    match stop.reason() {
        Some(_) => Err(EngineError::new(ErrorCode::Canceled, "stopped")),
        None => Ok(()),
    }
}

pub(crate) async fn stoppable<T>(
    stop: &Stop,
    work: impl Future<Output = T>,
) -> Result<T, EngineError> {
    tokio::select! {
        value = work => Ok(value),
        () = stop.stopped() => Err(EngineError::new(ErrorCode::Canceled, "stopped")),
    }
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

/// Publishes an informational event (started, progress, rendition), for at most
/// [`INFORMATIONAL_PUBLISH`]: an unreachable NATS must not stall the job (its terminal event
/// goes through the outbox and is never lost).
pub(crate) async fn best_effort(worker: &Worker, event: &JobEvent) {
    match tokio::time::timeout(INFORMATIONAL_PUBLISH, events::publish_event(&worker.js, event))
        .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(event = %event.id, error = %e, "event not published"),
        Err(_) => {
            tracing::warn!(event = %event.id, "event not published: NATS did not answer in time")
        }
    }
}

/// How long an informational event may take to publish.
const INFORMATIONAL_PUBLISH: Duration = Duration::from_secs(2);

/// What to do with an attempt's message, decided from how the attempt ended alone (no I/O):
/// a stop reason wins over the engine's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Canceled through the API: ack, nothing else.
    Canceled,
    /// A newer attempt owns the job or the lease lapsed: neither ack nor nak.
    Fenced,
    /// The worker is shutting down: requeue and nak at once.
    Release,
    /// The engine finished: commit the outputs, then ack.
    Commit,
    /// A failure another attempt may not have: requeue, nak with this delay.
    Retry(Duration),
    /// A failure no retry can fix (or the last delivery): fail the job, term the message.
    Fail,
}

/// The verdict for an attempt that ended with `result` (`Ok` = outputs ready) after the
/// message's `delivered`-th delivery of `max_deliver`. Retries wait `retry_delay`, doubling
/// with each delivery, at most ten minutes.
pub(crate) fn verdict(
    stop: Option<StopReason>,
    result: Result<(), &EngineError>,
    delivered: i64,
    max_deliver: i64,
    retry_delay: Duration,
) -> Verdict {
    match (stop, result) {
        (Some(StopReason::Canceled), _) => Verdict::Canceled,
        (Some(StopReason::Lost | StopReason::SelfFenced), _) => Verdict::Fenced,
        (Some(StopReason::Released), _) => Verdict::Release,
        (None, Ok(())) => Verdict::Commit,
        (None, Err(error)) if error.code.is_retryable() && delivered < max_deliver => {
            let doublings = (delivered - 1).clamp(0, 10) as u32;
            Verdict::Retry(retry_delay.saturating_mul(1 << doublings).min(MAX_RETRY_DELAY))
        }
        (None, Err(_)) => Verdict::Fail,
    }
}

/// The longest wait before a retried attempt.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// Outputs nothing will ever reference are garbage: this attempt's, when it certainly did not
/// commit (fenced, released — a newer epoch writes elsewhere), and every attempt's of a job
/// that ended without a result (failed, canceled). Not after `Retried`: that includes a commit
/// whose answer was lost; the winner's commit removes the other epochs' outputs. Best effort:
/// a leftover costs storage, not correctness (nothing points at it).
async fn remove_uncommitted_outputs(
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
    match s3::delete_prefix(&worker.s3, &worker.bucket, &prefix, None, 100).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, %prefix, "removed outputs nothing references"),
        Err(e) => tracing::warn!(error = %e, %prefix, "uncommitted outputs not removed"),
    }
}

/// Settles the message according to how the attempt ended.
async fn settle(
    worker: &Worker,
    message: &Message,
    attempt: &Attempt,
    delivered: i64,
    result: Result<Done, EngineError>,
    stop: &Stop,
) -> Outcome {
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
            let stage = Instant::now();
            let commit = || worker.jobs.complete(attempt, &manifest, &event);
            match with_commit_retries(worker, commit).await {
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
                match s3::delete_prefix(&worker.s3, &worker.bucket, &all, Some(&winner), 100).await
                {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "removed outputs of attempts that lost"),
                    Err(e) => tracing::warn!(error = %e, "outputs of losing attempts not removed"),
                }
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
                    Outcome::Failed(job_error.code)
                }
                Ok(FinishOutcome::Fenced) => Outcome::Fenced,
                Err(_) => Outcome::Retried,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn failed(code: ErrorCode) -> EngineError {
        EngineError::new(code, "x")
    }

    #[test]
    fn a_stop_reason_decides_before_the_engine_result() {
        let crashed = failed(ErrorCode::Crashed);
        for result in [Ok(()), Err(&crashed)] {
            assert_eq!(
                verdict(Some(StopReason::Canceled), result, 1, 5, SECOND),
                Verdict::Canceled
            );
            assert_eq!(verdict(Some(StopReason::Lost), result, 1, 5, SECOND), Verdict::Fenced);
            assert_eq!(
                verdict(Some(StopReason::SelfFenced), result, 1, 5, SECOND),
                Verdict::Fenced
            );
            assert_eq!(verdict(Some(StopReason::Released), result, 5, 5, SECOND), Verdict::Release);
        }
        assert_eq!(verdict(None, Ok(()), 5, 5, SECOND), Verdict::Commit);
    }

    #[test]
    fn engine_faults_retry_with_doubling_delays_until_the_last_delivery() {
        let crashed = failed(ErrorCode::Crashed);
        let delays: Vec<Verdict> =
            (1..=5).map(|delivered| verdict(None, Err(&crashed), delivered, 5, SECOND)).collect();
        assert_eq!(
            delays,
            [
                Verdict::Retry(SECOND),
                Verdict::Retry(2 * SECOND),
                Verdict::Retry(4 * SECOND),
                Verdict::Retry(8 * SECOND),
                Verdict::Fail,
            ]
        );
        // Capped at ten minutes however many deliveries are allowed.
        assert_eq!(verdict(None, Err(&crashed), 30, 100, SECOND), Verdict::Retry(MAX_RETRY_DELAY));
    }

    #[test]
    fn input_and_limit_errors_fail_at_once() {
        for code in [
            ErrorCode::Corrupt,
            ErrorCode::TooSmallDimensions,
            ErrorCode::Memory,
            ErrorCode::OutputInvalid,
        ] {
            assert_eq!(verdict(None, Err(&failed(code)), 1, 5, SECOND), Verdict::Fail, "{code}");
        }
    }
}

#[cfg(test)]
mod output_path_tests {
    use super::*;

    #[test]
    fn only_regular_files_inside_the_output_folder_are_uploaded() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("hls")).unwrap();
        std::fs::write(out.join("hls/master.m3u8"), "#EXTM3U").unwrap();
        std::fs::write(dir.path().join("secret"), "key").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), out.join("link.jpg")).unwrap();
        assert!(output_path(&out, "hls/master.m3u8").is_ok());
        for bad in ["../secret", "/etc/passwd", "link.jpg", "hls", "missing.mp4"] {
            assert!(output_path(&out, bad).is_err(), "{bad}");
        }
    }
}
