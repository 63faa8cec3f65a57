//! The steps every kind of attempt shares: moving the source and outputs between the bucket
//! and the scratch folder, checking output paths, retrying commits through Redis trouble,
//! leaving at a stop, informational publishes and the cancel watch.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tcoder::engine::protocol::Arrived;
use tcoder::engine::{EngineError, ErrorCode, SidecarFile};
use tcoder::events::{self, JobEvent, subjects};
use tcoder::jobs::{CaptionFile, CaptionObject, Job, MAX_SIDECAR_BYTES, SourceObject, Tenant};
use tcoder::s3::{self, KeyPrefix, S3Error, keys, transfer};

use crate::Worker;
use crate::keeper::{Lease, OUTAGE_PATIENCE, Stop, StopReason};

/// A retryable failure of the worker's own steps (download, upload, Redis, NATS).
pub(crate) fn transient(message: impl Into<String>) -> EngineError {
    EngineError::new(ErrorCode::Failed, message)
}

/// A failed store request as the attempt's error: the machine's full disk is the machine's
/// fault (another machine retries the job, this one takes no more work); a source deleted
/// after its upload is the job's end; anything else is worth another attempt.
pub(crate) fn store_error(error: S3Error) -> EngineError {
    match error {
        S3Error::Disk { what, full: true } => EngineError::new(ErrorCode::DiskFull, what),
        other => transient(other.to_string()),
    }
}

/// Runs the store request `what`, waiting out an outage of the object store: transient
/// failures are retried (see [`retry_while_held`]) while the attempt's keeper holds the lease
/// and the work item. A failed attempt instead would spend one of the job's few deliveries
/// per retry, and a few minutes of outage failed healthy jobs.
pub(crate) async fn through_store_outage<T, F>(
    worker: &Worker,
    stop: &Stop,
    what: &str,
    request: impl FnMut() -> F,
) -> Result<T, S3Error>
where
    F: Future<Output = Result<T, S3Error>>,
{
    let mut waiting = false;
    let result = retry_while_held(stop, request, S3Error::is_transient, |e| {
        if !waiting {
            waiting = true;
            worker.metrics.waiting_for_store.inc();
            tracing::warn!(error = %e, "{what}: the object store does not answer; holding the attempt until it does");
        }
        worker.metrics.store_retries.inc();
    })
    .await;
    if waiting {
        worker.metrics.waiting_for_store.dec();
    }
    result
}

/// Runs the Redis read `what` of a running attempt, waiting out an outage of Redis (see
/// [`retry_while_held`]) while its keeper holds the lease and the work item. A partition that
/// began right after the claim made the attempt's first read of its job fail it as
/// transient: its requeue could not reach Redis either, so the attempt ended as `retried`
/// instead of keeping the job until its keeper learns the truth (renewed, or lost to a newer
/// attempt). A corrupt record is not waited for.
pub(crate) async fn through_redis_outage<T, F>(
    worker: &Worker,
    stop: &Stop,
    what: &str,
    read: impl FnMut() -> F,
) -> Result<T, tcoder::redis::RedisError>
where
    F: Future<Output = Result<T, tcoder::redis::RedisError>>,
{
    let mut warned = false;
    let retryable =
        |e: &tcoder::redis::RedisError| !matches!(e, tcoder::redis::RedisError::Corrupt(_));
    retry_while_held(stop, read, retryable, |e| {
        if !std::mem::replace(&mut warned, true) {
            tracing::warn!(error = %e, "{what}: Redis does not answer; holding the attempt until it does");
        }
        worker.note_redis(false);
    })
    .await
}

/// Runs `request`, retrying the failures `retryable` accepts (250 ms doubling to 5 s, each
/// reported to `on_retry`) for up to [`OUTAGE_PATIENCE`], or until the attempt is stopped —
/// an outage of a dependency is a pause of the attempt, not a verdict on it.
async fn retry_while_held<T, E, F>(
    stop: &Stop,
    mut request: impl FnMut() -> F,
    retryable: impl Fn(&E) -> bool,
    mut on_retry: impl FnMut(&E),
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        match request().await {
            Err(e)
                if retryable(&e)
                    && started.elapsed() < OUTAGE_PATIENCE
                    && stop.reason().is_none() =>
            {
                on_retry(&e);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.stopped() => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            done => return done,
        }
    }
}

/// Removes every object under `prefix` but those under `keep` (outputs nothing references:
/// a failed or fenced attempt's, the losers' after a commit) in the background, retried
/// through an outage of the store for up to [`OUTAGE_PATIENCE`]: the attempt's slot is not
/// held for it, and a leftover costs storage, not correctness. A worker that exits meanwhile
/// leaves it (logged).
pub(crate) fn remove_in_background(
    worker: &Worker,
    prefix: KeyPrefix,
    keep: Option<KeyPrefix>,
    why: &'static str,
) {
    let worker = worker.clone();
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(500);
        loop {
            let removed =
                s3::delete_prefix(&worker.s3, &worker.bucket, &prefix, keep.as_ref(), 100).await;
            match removed {
                Ok(0) => return,
                Ok(deleted) => {
                    tracing::info!(deleted, %prefix, "removed {why}");
                    return;
                }
                Err(e) if e.is_transient() && started.elapsed() < OUTAGE_PATIENCE => {
                    worker.metrics.store_retries.inc();
                    tracing::debug!(error = %e, %prefix, "removing {why}: store unreachable; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    tracing::warn!(error = %e, %prefix, "{why} not removed");
                    return;
                }
            }
        }
    });
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

/// Downloads the job's source into `workdir/in/source` (checking its size) and returns where.
pub(crate) async fn download_source(
    worker: &Worker,
    job: &Job,
    workdir: &Path,
    stop: &Stop,
) -> Result<std::path::PathBuf, EngineError> {
    let (source, input) = source_and_input(job, workdir).await?;
    let stage = Instant::now();
    let download = through_store_outage(worker, stop, "source download", || {
        transfer::download_sized(&worker.s3, &worker.bucket, &source.key, &input, source.size)
    });
    let downloaded = stoppable(stop, download).await?.map_err(source_error)?;
    downloaded_source(worker, stage, downloaded, source.size)?;
    Ok(input)
}

/// The job's uploaded source, and where it goes (`workdir/in/source`, its folder made).
async fn source_and_input(
    job: &Job,
    workdir: &Path,
) -> Result<(SourceObject, std::path::PathBuf), EngineError> {
    let source = job
        .source
        .clone()
        .ok_or_else(|| EngineError::new(ErrorCode::Corrupt, "the job has no uploaded source"))?;
    let input_dir = workdir.join("in");
    tokio::fs::create_dir_all(&input_dir).await.map_err(|e| transient(format!("scratch: {e}")))?;
    Ok((source, input_dir.join("source")))
}

/// Counts a finished source download (`downloaded` bytes of `size`, since `stage`); a short
/// one is an error.
fn downloaded_source(
    worker: &Worker,
    stage: Instant,
    downloaded: u64,
    size: u64,
) -> Result<(), EngineError> {
    worker
        .metrics
        .stage_seconds
        .with_label_values(&["download"])
        .observe(stage.elapsed().as_secs_f64());
    worker.metrics.bytes_in.inc_by(downloaded);
    if downloaded != size {
        return Err(transient(format!("downloaded {downloaded} bytes, expected {size}")));
    }
    Ok(())
}

/// The job's source coming down into `workdir/in/source` while the engine already reads it
/// (the engine waits for bytes not yet here; see `tcoder::engine::protocol::Arrived`).
pub(crate) struct Arriving {
    pub path: std::path::PathBuf,
    record: std::sync::Arc<Record>,
    download: tokio::task::JoinHandle<Result<(), EngineError>>,
}

/// Starts downloading the job's source (its size checked) for engines that read it as it
/// arrives; see [`Arriving::alongside`].
pub(crate) async fn start_source(
    worker: &Worker,
    job: &Job,
    workdir: &Path,
    stop: &Stop,
) -> Result<Arriving, EngineError> {
    let (source, path) = source_and_input(job, workdir).await?;
    // Made here, before any engine starts (each start hands the job folder to the engine's
    // user); the download fills it in place.
    std::fs::File::create(&path).and_then(|file| file.set_len(source.size)).map_err(|e| {
        let full = e.raw_os_error() == Some(libc::ENOSPC);
        store_error(S3Error::Disk { what: format!("scratch: {e}"), full })
    })?;
    let record = std::sync::Arc::new(Record::new(&path, source.size));
    record.write(Arrived::nothing(source.size)).map_err(|e| transient(format!("scratch: {e}")))?;
    let (worker, stop, input) = (worker.clone(), stop.clone(), path.clone());
    let written = record.clone();
    let download = tokio::spawn(async move {
        let stage = Instant::now();
        let told = |head: u64, tail: u64| {
            let arrived = Arrived { head, tail, ..Arrived::nothing(source.size) };
            if let Err(e) = written.write(arrived) {
                tracing::warn!(error = %e, "the source's arrival record was not written");
            }
        };
        let download = through_store_outage(&worker, &stop, "source download", || {
            transfer::download_arriving(
                &worker.s3,
                &worker.bucket,
                &source.key,
                &input,
                source.size,
                &told,
            )
        });
        let downloaded = stoppable(&stop, download).await?.map_err(source_error)?;
        downloaded_source(&worker, stage, downloaded, source.size)?;
        written
            .write(Arrived { head: source.size, tail: 0, ..Arrived::nothing(source.size) })
            .map_err(|e| transient(format!("scratch: {e}")))
    });
    Ok(Arriving { path, record, download })
}

/// The arrival record beside a source, rewritten whole (staged, then renamed) so the engine
/// never reads half of one; what it says only grows.
struct Record {
    path: std::path::PathBuf,
    staged: std::path::PathBuf,
    told: std::sync::Mutex<Arrived>,
}

impl Record {
    fn new(source: &Path, size: u64) -> Record {
        let path = Arrived::beside(source);
        let staged = path.with_extension("arrived-staged");
        Record { path, staged, told: std::sync::Mutex::new(Arrived::nothing(size)) }
    }

    fn write(&self, arrived: Arrived) -> std::io::Result<()> {
        let mut told = self.told.lock().expect("record lock");
        let grown = Arrived {
            head: arrived.head.max(told.head),
            tail: arrived.tail.min(told.tail),
            ..arrived
        };
        std::fs::write(&self.staged, grown.encode())?;
        // Engines already running read it as their own user.
        tcoder::engine::supervisor::give_to_engine(&self.staged)?;
        std::fs::rename(&self.staged, &self.path)?;
        *told = grown;
        Ok(())
    }

    /// Tells the engine nothing more comes (once the download has ended).
    fn failed(&self) {
        let told = *self.told.lock().expect("record lock");
        if let Err(e) = self.write(Arrived { failed: true, ..told }) {
            tracing::warn!(error = %e, "the source's arrival record was not marked failed");
        }
    }
}

impl Arriving {
    /// Runs `work` (the engine phase, stopped by `inner`) while the source arrives: `inner`
    /// stops with the attempt (`outer`); when the download fails, `inner` stops, the engine
    /// is told nothing more comes, and once `work` has wound down (engines killed, parts given
    /// back — not failed) the download's error is the attempt's. A stop `work` made itself
    /// (e.g. a newer attempt owns the job) becomes the attempt's.
    pub(crate) async fn alongside<T>(
        mut self,
        outer: &Stop,
        inner: &Stop,
        work: impl Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        tokio::pin!(work);
        let mut downloading = true;
        loop {
            tokio::select! {
                result = &mut work => {
                    self.download.abort();
                    if let (Some(reason), None) = (inner.reason(), outer.reason()) {
                        outer.stop(reason);
                    }
                    return result;
                }
                () = outer.stopped(), if inner.reason().is_none() => {
                    inner.stop(outer.reason().unwrap_or(StopReason::Released));
                }
                joined = &mut self.download, if downloading => {
                    downloading = false;
                    let error = match joined {
                        Ok(Ok(())) => continue,
                        Ok(Err(error)) => error,
                        Err(e) => transient(format!("source download: {e}")),
                    };
                    inner.stop(StopReason::Released);
                    self.record.failed();
                    let _ = work.await;
                    return Err(error);
                }
            }
        }
    }
}

/// A source download's failure as the attempt's error.
fn source_error(error: S3Error) -> EngineError {
    match error {
        // Deleted after the upload: no attempt can get it back.
        S3Error::NotFound(_) => EngineError::new(
            ErrorCode::SourceMissing,
            "the uploaded source is no longer in the bucket",
        ),
        other => store_error(other),
    }
}

/// Fetches the caption files the job names into `workdir/in/caption-<n>`, one entry per
/// caption. A file that is gone or over [`MAX_SIDECAR_BYTES`] is left out with a warning (the
/// video still plays); a store outage waits, as for the source.
pub(crate) async fn fetch_captions(
    worker: &Worker,
    job: &Job,
    workdir: &Path,
    stop: &Stop,
) -> Result<Vec<SidecarFile>, EngineError> {
    let mut sidecars = Vec::with_capacity(job.spec.captions.len());
    for (n, caption) in job.spec.captions.iter().enumerate() {
        let key = match &caption.file {
            CaptionFile::Upload(upload) => keys::caption_upload_key(&job.tenant, &job.id, *upload),
            // Validated at the door; checked again where it is used.
            CaptionFile::Object(CaptionObject { key })
                if key.is_in(&keys::tenant_uploads(&job.tenant)) =>
            {
                key.clone()
            }
            CaptionFile::Object(CaptionObject { key }) => {
                let problem = format!("caption {n}: `{key}` is not in the tenant's uploads");
                sidecars.push(SidecarFile::Unavailable(problem));
                continue;
            }
        };
        let label = caption.language.as_str();
        let gone = || {
            SidecarFile::Unavailable(format!("caption {n} ({label}) is no longer in the bucket"))
        };
        let too_large = |size: u64| {
            SidecarFile::Unavailable(format!(
                "caption {n} ({label}) is {size} bytes; caption files are 1 to {MAX_SIDECAR_BYTES}"
            ))
        };
        let head = through_store_outage(worker, stop, "caption check", || {
            s3::head(&worker.s3, &worker.bucket, &key)
        });
        match stoppable(stop, head).await?.map_err(store_error)? {
            Some(head) if head.size > 0 && head.size <= MAX_SIDECAR_BYTES => {}
            Some(head) => {
                sidecars.push(too_large(head.size));
                continue;
            }
            None => {
                sidecars.push(gone());
                continue;
            }
        }
        let path = workdir.join("in").join(format!("caption-{n}"));
        let download = through_store_outage(worker, stop, "caption download", || {
            transfer::download(&worker.s3, &worker.bucket, &key, &path)
        });
        sidecars.push(match stoppable(stop, download).await? {
            Ok(bytes) if bytes <= MAX_SIDECAR_BYTES => SidecarFile::Fetched(path),
            // Replaced by a larger object since the check.
            Ok(bytes) => too_large(bytes),
            Err(S3Error::NotFound(_)) => gone(),
            Err(other) => return Err(store_error(other)),
        });
    }
    Ok(sidecars)
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
        through_store_outage(worker, stop, "output upload", || {
            transfer::upload(
                &worker.s3,
                &worker.bucket,
                &key,
                &path,
                &file.content_type,
                transfer::IMMUTABLE,
            )
        })
        .await
        .map_err(store_error)?;
    }
    Ok(())
}

/// Runs `commit`, retrying while Redis cannot be reached for up to [`OUTAGE_PATIENCE`], or
/// until the attempt is stopped (the worker releasing its work): a commit (of a job or of a
/// part) is fenced by its epoch and idempotent for the same attempt, so a retry is safe, and
/// giving up would make another worker redo finished work. The lease keeper has ended by now,
/// so before each retry the lease is renewed (which takes a lapsed one back at the same epoch)
/// and the work item given an in-progress ack, at least every third of the lease: once Redis
/// answers again, the reconciler must find the lease held — it hands a job whose lease stays
/// lapsed for a whole TTL to another worker (a 220 s outage redid a finished job that way).
pub(crate) async fn with_commit_retries<T, F>(
    worker: &Worker,
    lease: &impl Lease,
    stop: &Stop,
    mut commit: impl FnMut() -> F,
) -> Result<T, tcoder::redis::RedisError>
where
    F: Future<Output = Result<T, tcoder::redis::RedisError>>,
{
    let started = tokio::time::Instant::now();
    let longest = (worker.config.lease_ttl / 3)
        .min(worker.hold_interval())
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut delay = Duration::from_millis(200).min(longest);
    loop {
        match commit().await {
            Err(e) if started.elapsed() < OUTAGE_PATIENCE && stop.reason().is_none() => {
                if worker.metrics.commit_retries.get() == 0 || delay < longest {
                    tracing::warn!(error = %e, retry_in = ?delay, "commit failed; retrying");
                } else {
                    tracing::debug!(error = %e, retry_in = ?delay, "commit failed; retrying");
                }
                worker.note_redis(false);
                worker.metrics.commit_retries.inc();
                lease.hold_work_item().await;
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.stopped() => {}
                }
                delay = (delay * 2).min(longest);
                if let Err(e) = lease.renew().await {
                    tracing::debug!(error = %e, "lease not renewed before the commit's retry");
                }
            }
            done => return done,
        }
    }
}

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

/// The tasks that watch one attempt (a whole title's or a part's) while it works: its lease
/// keeper, the job's cancel watch and a link from an outer stop (the worker releasing its
/// work, or the coordinator's own stop) — started and ended the same way for every kind.
#[derive(Debug)]
pub(crate) struct Supervised {
    keeper: tokio::task::JoinHandle<()>,
    cancel_watch: tokio::task::JoinHandle<()>,
    link: tokio::task::JoinHandle<()>,
    stop: Stop,
}

impl Supervised {
    /// Starts `keeper` (renewing the lease, stopping `stop` if it is lost) and the watches.
    pub(crate) fn start<K, O>(
        worker: &Worker,
        tenant: &Tenant,
        job: &tcoder::jobs::JobId,
        stop: &Stop,
        keeper: K,
        outer: O,
    ) -> Supervised
    where
        K: std::future::Future + Send + 'static,
        O: std::future::Future<Output = StopReason> + Send + 'static,
    {
        Supervised {
            keeper: tokio::spawn(async move {
                keeper.await;
            }),
            cancel_watch: watch_cancel(worker, tenant, job, stop),
            link: crate::keeper::stop_on(stop, outer),
            stop: stop.clone(),
        }
    }

    /// The attempt's work is over: renewing its lease now would only race the commit (which
    /// deletes the lease) into a false "lease lost" alarm. The commit is fenced by the epoch.
    pub(crate) fn work_done(&self) {
        self.keeper.abort();
    }

    /// Ends the watches (the stop's reason only matters if one was set before) and waits for
    /// every task.
    pub(crate) async fn end(self) {
        self.stop.stop(StopReason::Released);
        let _ = tokio::join!(self.keeper, self.cancel_watch, self.link);
    }
}
