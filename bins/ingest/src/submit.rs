//! Jobs submitted over NATS on `tcoder.submit.<tenant>`: the body of `POST /v1/jobs` plus a
//! `source` naming an object the producer already put in the bucket under `uploads/<tenant>/`.
//!
//! Every submission reaches ingest twice, by design:
//! - as a core-NATS message in the queue group [`subjects::SUBMIT_QUEUE_GROUP`], when the
//!   producer sent a request: it is handled at once and answered with the job id or a typed
//!   error ([`SubmitReply`]);
//! - as the copy the `SUBMIT` stream keeps (it acks nothing, so the request's answer is
//!   ingest's), consumed durably: a plain publish, or one sent while ingest was away, is not
//!   lost.
//!
//! Both copies carry the producer's `Nats-Msg-Id`, which is the job's idempotency key: the
//! second copy, and any repeat of the message, finds the first job. The stored copy waits a
//! few seconds first, so a requester normally hears `replayed: false` for a new submission. A submission that cannot
//! become a job is answered (when asked) and announced on `tcoder.rejected.<tenant>`, never
//! dropped in silence.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use futures_util::StreamExt;
use sha2::Digest as _;
use tcoder::events::{self, Rejection, Submission, SubmitReply, UploadSource, subjects};
use tcoder::jobs::{JobError, JobOrigin, JobSpec, JobStatus, SourceObject, SpecLimits, Tenant};
use tcoder::s3::{self, Key, keys};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::bridge::{Bridge, NewObjectJob, ObjectJob, Transient};

/// How long a stored copy waits before it is handled: a producer's request is normally
/// answered on the request path first, so its reply says `replayed: false` (the stored copy,
/// handled later, finds the job).
const STORED_COPY_DELAY: Duration = Duration::from_secs(3);
/// Submissions handled at once on each path.
const CONCURRENT: usize = 16;
/// Longest accepted `Nats-Msg-Id` (as an `Idempotency-Key`).
const MAX_MSG_ID: usize = 255;

/// Turns submissions into jobs. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Submitter {
    pub bridge: Bridge,
    pub allowed_webhooks: Arc<Vec<std::net::SocketAddr>>,
    pub idempotency_ttl: Duration,
    /// Jobs one tenant may make over NATS at once, and per second after that.
    pub rate: tcoder::auth::CreateRate,
}

/// Which copy of a submission is being handled (a metric label).
#[derive(Debug, Clone, Copy)]
enum Path {
    Request,
    Stored,
}

impl Path {
    fn as_str(self) -> &'static str {
        match self {
            Path::Request => "request",
            Path::Stored => "stored",
        }
    }
}

impl Submitter {
    /// Answers submissions sent as requests until `stop`.
    pub(crate) async fn serve_requests(
        self,
        nats: async_nats::Client,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut requests = nats
            .queue_subscribe(subjects::SUBMIT_ALL, subjects::SUBMIT_QUEUE_GROUP.to_owned())
            .await?;
        let slots = Arc::new(Semaphore::new(CONCURRENT));
        loop {
            let message = tokio::select! {
                message = requests.next() => match message {
                    Some(message) => message,
                    None => anyhow::bail!("the submission subscription ended"),
                },
                () = stop.cancelled() => return Ok(()),
            };
            // A plain publish has nobody to answer: its stored copy makes the job.
            let Some(reply_to) = message.reply.clone() else { continue };
            // The producer names the reply subject: answer only on its own tenant's inbox, or
            // any producer could make ingest publish on subjects it may not (another tenant's
            // events, the DLQ, JetStream's API). Unanswered, the stored copy still makes the job.
            let answerable = subjects::submit_tenant(&message.subject)
                .is_some_and(|tenant| subjects::is_producer_reply(&tenant, &reply_to));
            if !answerable {
                tracing::warn!(subject = %message.subject, reply = %reply_to, "submission's reply subject is outside its tenant's inbox; not answered");
                self.bridge
                    .metrics
                    .submissions
                    .with_label_values(&["request", "unanswerable"])
                    .inc();
                continue;
            }
            let permit = slots.clone().acquire_owned().await?;
            let (this, nats) = (self.clone(), nats.clone());
            tokio::spawn(async move {
                let reply = match this.handle(&message, Path::Request).await {
                    Ok(reply) => reply,
                    Err(NotNow::Limited(wait)) => SubmitReply::Rejected {
                        error: JobError {
                            code: "rate.limited".into(),
                            message: format!(
                                "this tenant submits faster than its rate; the submission is \
                                 kept and will be made in about {} s — repeat it with the same \
                                 Nats-Msg-Id to learn its job",
                                wait.as_secs().max(1)
                            ),
                        },
                    },
                    Err(NotNow::Transient(Transient(reason))) => SubmitReply::Rejected {
                        error: JobError {
                            code: "unavailable.retry".into(),
                            message: format!(
                                "{reason}; the submission is kept and will be handled — repeat \
                                 it with the same Nats-Msg-Id to learn its job"
                            ),
                        },
                    },
                };
                let body = serde_json::to_vec(&reply).expect("a reply serializes");
                if let Err(e) = nats.publish(reply_to, body.into()).await {
                    tracing::warn!(error = %e, "submission reply not sent");
                }
                drop(permit);
            });
        }
    }

    /// Consumes the `SUBMIT` stream until `stop`.
    pub(crate) async fn consume_stored(
        self,
        js: async_nats::jetstream::Context,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let messages = events::durable_messages(
            &js,
            subjects::SUBMIT_STREAM,
            subjects::SUBMIT_CONSUMER,
            CONCURRENT,
        )
        .await?;
        let this = &self;
        messages
            .take_until(stop.cancelled())
            .for_each_concurrent(CONCURRENT, |message| async move {
                let Ok(message) = message else { return };
                if let Some(wait) = stored_copy_wait(&message) {
                    let _ = message.ack_with(AckKind::Nak(Some(wait))).await;
                    return;
                }
                match this.handle(&message.message, Path::Stored).await {
                    Ok(_) => {
                        let _ = message.double_ack().await;
                    }
                    Err(NotNow::Transient(Transient(reason))) => {
                        tracing::warn!(%reason, "submission not handled yet; retrying");
                        let delay = Some(Duration::from_secs(2));
                        let _ = message.ack_with(AckKind::Nak(delay)).await;
                    }
                    // Over the tenant's rate: a pause, not a verdict — back when a token is.
                    Err(NotNow::Limited(wait)) => {
                        let delay = Some(wait.max(Duration::from_millis(100)));
                        let _ = message.ack_with(AckKind::Nak(delay)).await;
                    }
                }
            })
            .await;
        if stop.is_cancelled() { Ok(()) } else { anyhow::bail!("the SUBMIT consumer stream ended") }
    }

    async fn handle(
        &self,
        message: &async_nats::Message,
        path: Path,
    ) -> Result<SubmitReply, NotNow> {
        let result = self.submit(message).await;
        let outcome = match &result {
            Ok(SubmitReply::Accepted { replayed: false, .. }) => "created",
            Ok(SubmitReply::Accepted { replayed: true, .. }) => "replayed",
            Ok(SubmitReply::Rejected { .. }) => "rejected",
            Err(NotNow::Limited(_)) => "limited",
            Err(NotNow::Transient(_)) => "retry",
        };
        self.bridge.metrics.submissions.with_label_values(&[path.as_str(), outcome]).inc();
        result
    }

    async fn submit(&self, message: &async_nats::Message) -> Result<SubmitReply, NotNow> {
        let Some(tenant) = subjects::submit_tenant(&message.subject) else {
            // No tenant to announce it to; only a requester hears of it.
            return Ok(rejected("submit.tenant", "the subject's tenant is not a-z, 0-9, - and _"));
        };
        let msg_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned());
        let submission_id = match msg_id {
            Some(id) if !id.is_empty() && id.len() <= MAX_MSG_ID => id,
            // Named by the body, so both copies of this message are one rejection.
            _ => {
                let digest = hex::encode(sha2::Sha256::digest(&message.payload));
                let id = format!("invalid-{}", &digest[..16]);
                let error = JobError {
                    code: "submit.msg_id".into(),
                    message: format!(
                        "a submission needs a Nats-Msg-Id header of 1-{MAX_MSG_ID} characters \
                         (its idempotency key)"
                    ),
                };
                return self.reject(&tenant, &id, None, error).await;
            }
        };
        let submission = match Submission::parse(&message.payload) {
            Ok(submission) => submission,
            Err(message) => {
                let error = JobError { code: "request.invalid".into(), message };
                return self.reject(&tenant, &submission_id, None, error).await;
            }
        };
        let key = match check_source_key(&tenant, &submission.source.key) {
            Ok(key) => key,
            Err(error) => {
                let named = Some(submission.source.key.as_str());
                return self.reject(&tenant, &submission_id, named, error).await;
            }
        };
        let key = &key;
        let limits = SpecLimits {
            max_upload_bytes: self.bridge.max_upload_bytes,
            allowed_webhooks: &self.allowed_webhooks,
            tenant: &tenant,
            presigned: false,
            multipart_threshold: u64::MAX,
            import: None,
        };
        let spec = match JobSpec::from_request(submission.request, limits) {
            Ok(spec) => spec,
            Err(e) => {
                let error = JobError { code: e.code.into(), message: e.to_string() };
                return self.reject(&tenant, &submission_id, Some(key.as_str()), error).await;
            }
        };
        // Seen before: its job (whether or not the object is still there), or a conflict when
        // the same id now asks for something else.
        let idempotency_key = format!("nats:{submission_id}");
        let transient = |e: tcoder::redis::RedisError| Transient(e.to_string());
        if let Some(id) =
            self.bridge.jobs.idempotent_job(&tenant, &idempotency_key).await.map_err(transient)?
            && let Some(job) = self.bridge.jobs.get(&id).await.map_err(transient)?
        {
            if job.spec != spec || job.upload_key != *key {
                let named = Some(key.as_str());
                return self.reject(&tenant, &submission_id, named, conflict(&job.id)).await;
            }
            if job.status == JobStatus::Uploaded {
                self.bridge.publish(&job, UploadSource::Nats).await?;
            }
            let (job_id, status) = (job.id, job.status);
            return Ok(SubmitReply::Accepted { job_id, status, replayed: true });
        }
        // A new job: one token of the tenant's bucket (replays above cost none, so a request
        // and its stored copy make one job for one token).
        let mut redis = self.bridge.redis.clone();
        if let Some(wait) = tcoder::auth::take_submit_token(&mut redis, &tenant, self.rate)
            .await
            .map_err(transient)?
        {
            return Err(NotNow::Limited(wait));
        }
        if let Err(e) = self.bridge.check_caption_objects(&spec).await? {
            let error = JobError { code: e.code.into(), message: e.to_string() };
            return self.reject(&tenant, &submission_id, Some(key.as_str()), error).await;
        }
        let head = match s3::head(&self.bridge.s3, &self.bridge.bucket, key).await {
            Ok(Some(head)) => head,
            Ok(None) => {
                let error = JobError {
                    code: "source.not_found".into(),
                    message: format!("no object `{key}` in the bucket"),
                };
                return self.reject(&tenant, &submission_id, Some(key.as_str()), error).await;
            }
            Err(e) => return Err(Transient(e.to_string()).into()),
        };
        if let Some((outcome, message)) = self.bridge.size_problem(head.size) {
            let code = match outcome {
                crate::bridge::Outcome::Empty => "source.empty",
                _ => "source.too_large",
            };
            let error = JobError { code: code.into(), message };
            return self.reject(&tenant, &submission_id, Some(key.as_str()), error).await;
        }
        let new = NewObjectJob {
            tenant: &tenant,
            spec: &spec,
            object: SourceObject { key: key.clone(), size: head.size, etag: head.etag },
            origin: JobOrigin::Nats { submission_id: submission_id.clone() },
            idempotency_key,
            idempotency_ttl_secs: self.idempotency_ttl.as_secs(),
            source: UploadSource::Nats,
        };
        let made = self.bridge.job_for_object(new).await?;
        Ok(match made {
            ObjectJob::Created(job) => {
                SubmitReply::Accepted { job_id: job.id, status: job.status, replayed: false }
            }
            ObjectJob::Existing(job) => {
                SubmitReply::Accepted { job_id: job.id, status: job.status, replayed: true }
            }
            ObjectJob::Conflict(id) => {
                let named = Some(key.as_str());
                return self.reject(&tenant, &submission_id, named, conflict(&id)).await;
            }
        })
    }

    /// Announces a rejected submission and returns the answer for its producer. The request
    /// and its stored copy both reach this verdict; whichever comes first announces it (a
    /// marker kept for the idempotency window), so listeners hear each rejection once — and
    /// one whose stored copy the stream dropped (a repeated `Nats-Msg-Id`) is still heard.
    async fn reject(
        &self,
        tenant: &Tenant,
        submission_id: &str,
        key: Option<&str>,
        error: JobError,
    ) -> Result<SubmitReply, NotNow> {
        let marker = tcoder::redis::keys::idempotency(tenant, &format!("rejected:{submission_id}"));
        let mut redis = self.bridge.redis.clone();
        let transient = |e: redis::RedisError| Transient(format!("redis: {e}"));
        let first: Option<String> = redis::cmd("SET")
            .arg(&marker)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(self.idempotency_ttl.as_secs().max(1))
            .query_async(&mut redis)
            .await
            .map_err(transient)?;
        if first.is_some() {
            let rejection = Rejection::of_submission(tenant, submission_id, key, error.clone());
            if let Err(e) = self.bridge.reject(&rejection).await {
                // Not announced after all: the next handling of this submission tries again.
                let _: Result<i64, _> =
                    redis::cmd("DEL").arg(&marker).query_async(&mut redis).await;
                return Err(e.into());
            }
        }
        Ok(SubmitReply::Rejected { error })
    }
}

/// Why a submission is not answered yet: a dependency is away, or its tenant is over its rate
/// (`ingest.create_burst` / `create_per_second`, per tenant for NATS as per key for the API).
/// Either way the stored copy is kept and handled later.
#[derive(Debug)]
enum NotNow {
    Transient(Transient),
    Limited(Duration),
}

impl From<Transient> for NotNow {
    fn from(transient: Transient) -> NotNow {
        NotNow::Transient(transient)
    }
}

/// How much longer a stored copy should wait ([`STORED_COPY_DELAY`]), if at all.
fn stored_copy_wait(message: &async_nats::jetstream::Message) -> Option<Duration> {
    let published = message.info().ok()?.published.unix_timestamp_nanos();
    let now = async_nats::datetime::now().unix_timestamp_nanos();
    let age = Duration::from_nanos(u64::try_from(now.saturating_sub(published)).unwrap_or(0));
    STORED_COPY_DELAY.checked_sub(age).filter(|wait| !wait.is_zero())
}

fn conflict(job: &tcoder::jobs::JobId) -> JobError {
    JobError {
        code: "idempotency.conflict".into(),
        message: format!("this Nats-Msg-Id was used for job {job} with a different request"),
    }
}

fn rejected(code: &str, message: &str) -> SubmitReply {
    SubmitReply::Rejected { error: JobError { code: code.into(), message: message.into() } }
}

/// A tenant's producers may name objects under `uploads/<tenant>/` only, by their canonical
/// key: a spelling with `..`, `//` or an encoded separator could name another tenant's object
/// through a prefix of one's own.
fn check_source_key(tenant: &Tenant, key: &str) -> Result<Key, JobError> {
    let key = Key::parse(key).map_err(|e| JobError {
        code: "source.invalid_key".into(),
        message: format!("source.key: {e}"),
    })?;
    let folder = keys::tenant_uploads(tenant);
    if key.is_in(&folder) {
        Ok(key)
    } else {
        Err(JobError {
            code: "source.forbidden".into(),
            message: format!("source.key must name an object under `{folder}`"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producers_name_objects_under_their_own_prefix_only() {
        let acme = Tenant::parse("acme").unwrap();
        assert!(check_source_key(&acme, "uploads/acme/clip.mp4").is_ok());
        assert!(check_source_key(&acme, "uploads/acme/2026/12/clip.mp4").is_ok());
        for bad in
            ["uploads/globex/clip.mp4", "uploads/acmex/clip.mp4", "outputs/acme/job/1/master.m3u8"]
        {
            assert_eq!(check_source_key(&acme, bad).unwrap_err().code, "source.forbidden", "{bad}");
        }
        for bad in [
            "https://example.com/clip.mp4",
            "uploads/acme/",
            "uploads/acme/a\nb",
            "uploads/acme/../globex/job/source",
            "uploads/acme/../../outputs/globex/job/1/mp4/144p.mp4",
            "uploads/acme/./clip.mp4",
            "uploads/acme/x/../../globex/clip.mp4",
            "uploads/acme//../globex/clip.mp4",
            "uploads/acme/%2e%2e/globex/clip.mp4",
        ] {
            let code = check_source_key(&acme, bad).unwrap_err().code;
            assert_eq!(code, "source.invalid_key", "{bad}");
        }
    }
}
