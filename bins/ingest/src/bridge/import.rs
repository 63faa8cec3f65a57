//! Jobs whose source is a URL (`source_url`): ingest fetches it and streams it into the job's
//! upload key in parts of [`PART_BYTES`] (never holding the whole file), then treats the new
//! object like any upload ([`Bridge::handle`]).
//!
//! The URL is the tenant's, so the fetch must not become a way into tcoder's own network: the
//! host is resolved, every address must be public (or an exact `ip:port` in
//! `[ingest.import] allowed`), the request goes to the address that was checked (no second
//! lookup: DNS rebinding has no window), and each redirect is checked the same way before it
//! is followed. No proxy; size, time and silence are bounded.
//!
//! One process fetches a job at a time (a lease in Redis, renewed while it runs). A process
//! that dies mid-fetch leaves the lease to lapse; the sweep starts the import again.
//! Failures of the source are the job's verdict (`source.unreachable`, `source.too_large`,
//! `source.forbidden_address`); failures of tcoder's own store or Redis are a pause: the
//! sweep tries again until `ingest.upload_expiry`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tcoder::config::ImportConfig;
use tcoder::events::{self, JobEvent, UploadSource};
use tcoder::jobs::{Job, JobError, JobId, JobStatus};
use tcoder::s3::{self, ObjectCreated, multipart};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use url::{Host, Url};

use super::{Bridge, Outcome};

/// Bytes sent to the store per part (and held in memory per import).
pub(crate) const PART_BYTES: usize = 16 << 20;
/// How long an import's lease lasts unless renewed.
const LEASE: Duration = Duration::from_secs(30);
/// A source that refuses a connection or answers 5xx/429 is tried this many times per import.
const TRIES: u32 = 3;
/// Progress is reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Connecting to a source may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches `source_url`s. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Importer {
    pub bridge: Bridge,
    pub config: Arc<ImportConfig>,
    slots: Arc<Semaphore>,
    /// Jobs this process is importing or about to (a sweep does not start them twice).
    active: Arc<std::sync::Mutex<std::collections::HashSet<JobId>>>,
    /// This process's lease holder id.
    holder: Arc<str>,
}

/// Why an import ended without an object.
#[derive(Debug)]
enum Failure {
    /// The source's fault: the job fails with this error.
    Source(JobError),
    /// Ours (the store, Redis): the sweep tries again.
    Ours(String),
    /// The job stopped awaiting its source (canceled, deleted) meanwhile.
    Stopped,
}

fn source_error(code: &str, message: impl Into<String>) -> Failure {
    Failure::Source(JobError { code: code.into(), message: message.into() })
}

fn unreachable(message: impl Into<String>) -> Failure {
    source_error("source.unreachable", message)
}

impl Importer {
    pub(crate) fn new(bridge: Bridge, config: ImportConfig) -> Importer {
        let slots = Arc::new(Semaphore::new(config.concurrency));
        let holder = format!("ingest-{}", uuid::Uuid::new_v4().simple()).into();
        let active = Arc::default();
        Importer { bridge, config: Arc::new(config), slots, active, holder }
    }

    /// Imports `job`'s source in the background, unless this process or another is at it.
    pub(crate) fn start(&self, job: Job) {
        if !self.active.lock().expect("active lock").insert(job.id.clone()) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Ok(_slot) = this.slots.clone().acquire_owned().await {
                this.run(&job).await;
            }
            this.active.lock().expect("active lock").remove(&job.id);
        });
    }

    async fn run(&self, job: &Job) {
        match self.take_lease(job).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "import not started (Redis); the sweep tries again");
                return;
            }
        }
        let renewing = CancellationToken::new();
        let renewer = tokio::spawn(self.clone().keep_lease(job.id.clone(), renewing.clone()));
        let fetched = tokio::time::timeout(self.config.timeout, self.fetch(job)).await;
        renewing.cancel();
        let _ = renewer.await;
        let outcome = match fetched {
            Ok(outcome) => outcome,
            Err(_) => Err(unreachable(format!(
                "the source did not arrive within {} ([ingest.import] timeout)",
                humantime::format_duration(self.config.timeout)
            ))),
        };
        match outcome {
            Ok(()) => {}
            Err(Failure::Source(error)) => {
                tracing::info!(job = %job.id, code = %error.code, reason = %error.message, "import failed");
                self.bridge.metrics.imports.with_label_values(&[&error.code]).inc();
                if let Err(e) =
                    events::fail_and_announce(&self.bridge.js, &self.bridge.jobs, job, &error).await
                {
                    tracing::warn!(job = %job.id, error = %e, "failed import not recorded; the sweep tries again");
                }
            }
            Err(Failure::Ours(reason)) => {
                self.bridge.metrics.imports.with_label_values(&["retry"]).inc();
                tracing::warn!(job = %job.id, %reason, "import interrupted; the sweep tries again");
            }
            Err(Failure::Stopped) => {
                self.bridge.metrics.imports.with_label_values(&["stopped"]).inc();
            }
        }
        self.release_lease(job).await;
    }

    /// Fetches the source into the job's upload key and hands it to the bridge.
    async fn fetch(&self, job: &Job) -> Result<(), Failure> {
        let raw = job.spec.source_url.as_deref().ok_or(Failure::Stopped)?;
        let url = Url::parse(raw).map_err(|e| unreachable(format!("source_url: {e}")))?;
        let mut response = self.open(url).await?;
        let max = self.bridge.max_upload_bytes;
        let declared = response.content_length();
        if declared.is_some_and(|length| length > max) {
            return Err(source_error(
                "source.too_large",
                format!("the source is {} bytes; at most {max} are taken", declared.unwrap_or(0)),
            ));
        }
        let key = &job.upload_key;
        let (s3, bucket) = (&self.bridge.s3, self.bridge.bucket.as_str());
        let mut buffer = BytesMut::new();
        let mut upload: Option<(String, Vec<multipart::StoredPart>)> = None;
        let (mut total, mut reports) = (0u64, 0u64);
        let mut last_report = tokio::time::Instant::now();
        let result = async {
            loop {
                let chunk = tokio::time::timeout(self.config.idle_timeout, response.chunk()).await;
                let chunk = match chunk {
                    Err(_) => return Err(unreachable("the source stopped sending")),
                    Ok(Err(e)) => return Err(unreachable(format!("the source broke off: {e}"))),
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(chunk))) => chunk,
                };
                total += chunk.len() as u64;
                if total > max {
                    return Err(source_error(
                        "source.too_large",
                        format!("the source sent more than {max} bytes"),
                    ));
                }
                buffer.extend_from_slice(&chunk);
                while buffer.len() >= PART_BYTES {
                    let part = buffer.split_to(PART_BYTES).freeze();
                    self.send_part(job, &mut upload, part).await?;
                    self.still_awaited(job).await?;
                }
                if last_report.elapsed() >= REPORT_EVERY {
                    reports += 1;
                    last_report = tokio::time::Instant::now();
                    let event = JobEvent::importing(job, reports, total, declared);
                    let _ = events::publish_event(&self.bridge.js, &event).await;
                }
            }
            let content_type = job.spec.content_type.as_deref();
            match &mut upload {
                None => s3::put_bytes(s3, bucket, key, buffer.split().freeze(), content_type)
                    .await
                    .map_err(|e| Failure::Ours(format!("cannot store the source: {e}"))),
                Some(_) => {
                    if !buffer.is_empty() {
                        self.send_part(job, &mut upload, buffer.split().freeze()).await?;
                    }
                    let (upload_id, parts) = upload.as_ref().expect("started above");
                    multipart::complete(s3, bucket, key, upload_id, parts)
                        .await
                        .map_err(|e| Failure::Ours(format!("cannot assemble the source: {e}")))
                }
            }
        }
        .await;
        if let Err(failure) = result {
            if let Some((upload_id, _)) = &upload {
                let _ = multipart::abort(s3, bucket, key, upload_id).await;
            }
            return Err(failure);
        }
        let event = JobEvent::importing(job, reports + 1, total, Some(total));
        let _ = events::publish_event(&self.bridge.js, &event).await;
        let head = s3::head(s3, bucket, key)
            .await
            .map_err(|e| Failure::Ours(format!("cannot read the stored source: {e}")))?
            .ok_or_else(|| Failure::Ours("the stored source is gone".into()))?;
        let created = ObjectCreated {
            bucket: bucket.to_owned(),
            key: key.as_str().to_owned(),
            size: Some(head.size),
            etag: Some(head.etag),
        };
        let outcome = self
            .bridge
            .handle(&created, UploadSource::Import)
            .await
            .map_err(|e| Failure::Ours(e.0))?;
        if matches!(outcome, Outcome::NotAwaiting | Outcome::UnknownKey) {
            // Canceled or deleted while it arrived: nothing will use it.
            let _ = s3::delete(s3, bucket, key).await;
            return Err(Failure::Stopped);
        }
        self.bridge.metrics.imports.with_label_values(&["imported"]).inc();
        Ok(())
    }

    /// Sends one part, starting the multipart upload with the first.
    async fn send_part(
        &self,
        job: &Job,
        upload: &mut Option<(String, Vec<multipart::StoredPart>)>,
        body: Bytes,
    ) -> Result<(), Failure> {
        let (s3, bucket, key) = (&self.bridge.s3, self.bridge.bucket.as_str(), &job.upload_key);
        if upload.is_none() {
            let content_type = job.spec.content_type.as_deref();
            let id = multipart::create(s3, bucket, key, content_type)
                .await
                .map_err(|e| Failure::Ours(format!("cannot start storing the source: {e}")))?;
            *upload = Some((id, Vec::new()));
        }
        let (upload_id, parts) = upload.as_mut().expect("started above");
        let number = u32::try_from(parts.len() + 1).unwrap_or(u32::MAX);
        let part = multipart::upload_part(s3, bucket, key, upload_id, number, body)
            .await
            .map_err(|e| Failure::Ours(format!("cannot store part {number}: {e}")))?;
        parts.push(part);
        Ok(())
    }

    /// Stops when the job no longer awaits its source (canceled, deleted, expired).
    async fn still_awaited(&self, job: &Job) -> Result<(), Failure> {
        match self.bridge.jobs.get(&job.id).await {
            Ok(Some(current)) if current.status == JobStatus::AwaitingUpload => Ok(()),
            Ok(_) => Err(Failure::Stopped),
            Err(e) => Err(Failure::Ours(format!("cannot read the job: {e}"))),
        }
    }

    /// GETs `url`, following at most `max_redirects` redirects, each checked before it is
    /// followed; the successful response.
    async fn open(&self, mut url: Url) -> Result<reqwest::Response, Failure> {
        for _ in 0..=self.config.max_redirects {
            let response = self.get_checked(&url).await?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| unreachable(format!("HTTP {status} without a Location")))?;
                url = url
                    .join(location)
                    .map_err(|e| unreachable(format!("redirect to `{location}`: {e}")))?;
                continue;
            }
            if !status.is_success() {
                return Err(unreachable(format!("the source answered HTTP {}", status.as_u16())));
            }
            return Ok(response);
        }
        Err(unreachable(format!(
            "more than {} redirects ([ingest.import] max_redirects)",
            self.config.max_redirects
        )))
    }

    /// One GET of `url` at a checked address, tried again (bounded) when the source refuses
    /// the connection or answers 5xx or 429.
    async fn get_checked(&self, url: &Url) -> Result<reqwest::Response, Failure> {
        let addr = self.destination(url).await?;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(self.config.idle_timeout)
            .user_agent(concat!("tcoder-import/", env!("CARGO_PKG_VERSION")));
        if let Some(Host::Domain(name)) = url.host() {
            builder = builder.resolve(name, addr);
        }
        let client = builder.build().map_err(|e| Failure::Ours(e.to_string()))?;
        let mut delay = Duration::from_millis(500);
        let mut last = String::new();
        for attempt in 1..=TRIES {
            match client.get(url.clone()).send().await {
                Ok(response)
                    if response.status().is_server_error()
                        || response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS =>
                {
                    last = format!("the source answered HTTP {}", response.status().as_u16());
                }
                Ok(response) => return Ok(response),
                Err(e) => last = format!("cannot fetch {}: {e}", url.host_str().unwrap_or("?")),
            }
            if attempt < TRIES {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        Err(unreachable(last))
    }

    /// The one address to connect to for `url`: every address the host resolves to must be
    /// allowed (an attacker controls the answer's order), and the scheme too.
    async fn destination(&self, url: &Url) -> Result<SocketAddr, Failure> {
        match url.scheme() {
            "https" => {}
            "http" if self.config.allow_http => {}
            other => {
                return Err(source_error(
                    "source.forbidden_address",
                    format!("`{other}://` is not fetched ([ingest.import] allow_http is off)"),
                ));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(source_error("source.forbidden_address", "URLs with credentials"));
        }
        tcoder::webhooks::checked_address(url, &self.config.allowed).await.map_err(|e| match e {
            tcoder::webhooks::AddressError::Unresolved(why) => unreachable(why),
            refused => source_error("source.forbidden_address", refused.to_string()),
        })
    }

    async fn take_lease(&self, job: &Job) -> Result<bool, redis::RedisError> {
        let mut redis = self.bridge.redis.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(tcoder::redis::keys::job_import_lease(&job.id))
            .arg(&*self.holder)
            .arg("NX")
            .arg("PX")
            .arg(LEASE.as_millis() as u64)
            .query_async(&mut redis)
            .await?;
        Ok(taken.is_some())
    }

    async fn keep_lease(self, id: JobId, stop: CancellationToken) {
        let key = tcoder::redis::keys::job_import_lease(&id);
        loop {
            tokio::select! {
                () = tokio::time::sleep(LEASE / 3) => {}
                () = stop.cancelled() => return,
            }
            let mut redis = self.bridge.redis.clone();
            let renewed: Result<i64, _> = redis::cmd("EVAL")
                .arg("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0")
                .arg(1)
                .arg(&key)
                .arg(&*self.holder)
                .arg(LEASE.as_millis() as u64)
                .query_async(&mut redis)
                .await;
            if let Err(e) = renewed {
                tracing::warn!(job = %id, error = %e, "import lease not renewed");
            }
        }
    }

    async fn release_lease(&self, job: &Job) {
        let mut redis = self.bridge.redis.clone();
        let _: Result<i64, _> = redis::cmd("EVAL")
            .arg("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
            .arg(1)
            .arg(tcoder::redis::keys::job_import_lease(&job.id))
            .arg(&*self.holder)
            .query_async(&mut redis)
            .await;
    }

    /// Whether an import of `job` is running somewhere (its lease is held).
    pub(crate) async fn running(&self, job: &Job) -> Result<bool, redis::RedisError> {
        let mut redis = self.bridge.redis.clone();
        redis::cmd("EXISTS")
            .arg(tcoder::redis::keys::job_import_lease(&job.id))
            .query_async(&mut redis)
            .await
    }
}

/// When the sweep should start an import again: a job awaiting a `source_url` with no
/// import running.
pub(crate) fn wants_import(job: &Job) -> bool {
    job.status == JobStatus::AwaitingUpload && job.spec.source_url.is_some()
}
