//! The notification bridge: every object-created notification (R2 via a Cloudflare Queue or a
//! pushed body, S3/MinIO event JSON, the embedded store, the sweep) goes through
//! [`Bridge::handle`], which checks it against the job, moves the job to `uploaded` and
//! publishes exactly one normalized event on `tcoder.uploads.<bucket>`.
//!
//! Order matters: the job moves to `uploaded` first and the event is published second, with a
//! `Nats-Msg-Id` of bucket/key/etag. A crash in between leaves a job in `uploaded` that a
//! repeated notification or the sweep publishes again; the broker drops the duplicate.

pub(crate) mod local;
pub(crate) mod normalize;
pub(crate) mod r2_queue;
pub(crate) mod sweep;

use tcoder::events::{self, UploadEvent, UploadSource};
use tcoder::jobs::{
    Job, JobError, JobStatus, JobStore, SourceObject, TransitionError, now_ms, rfc3339,
};
use tcoder::s3::{self, ObjectCreated, keys};

use crate::metrics::IngestMetrics;

/// What became of one notification. Everything but `Accepted` and `Duplicate` is dropped
/// (and counted); none of them is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The job moved to `uploaded` and the upload event was published.
    Accepted,
    /// Seen before: nothing changed (the upload event was re-published if still pending).
    Duplicate,
    /// Not an upload of ours: wrong bucket, not an upload key, or no such job.
    UnknownKey,
    /// The job is not waiting for an upload (e.g. canceled).
    NotAwaiting,
    /// The notification names an object that does not exist (deleted since).
    MissingObject,
    /// The object's size is not the declared `content_length`; the job failed.
    SizeMismatch,
    /// A zero-byte upload; the job failed.
    Empty,
    /// Larger than `ingest.max_upload_bytes`; the job failed.
    TooLarge,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::UnknownKey => "unknown_key",
            Outcome::NotAwaiting => "not_awaiting",
            Outcome::MissingObject => "missing_object",
            Outcome::SizeMismatch => "size_mismatch",
            Outcome::Empty => "empty",
            Outcome::TooLarge => "too_large",
        }
    }
}

/// A failure worth retrying (Redis, S3 or NATS unavailable); the notification is not lost.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Transient(String);

/// Validates notifications against jobs and publishes upload events. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Bridge {
    pub jobs: JobStore,
    pub s3: aws_sdk_s3::Client,
    pub js: async_nats::jetstream::Context,
    pub bucket: String,
    pub max_upload_bytes: u64,
    pub metrics: IngestMetrics,
}

impl Bridge {
    /// Handles one notification; `Err` means "try again later".
    pub(crate) async fn handle(
        &self,
        event: &ObjectCreated,
        source: UploadSource,
    ) -> Result<Outcome, Transient> {
        let outcome = self.decide(event, source).await;
        let label = match &outcome {
            Ok(outcome) => outcome.as_str(),
            Err(_) => "retry",
        };
        self.metrics.bridge_events.with_label_values(&[source.as_str(), label]).inc();
        match &outcome {
            Ok(Outcome::Accepted | Outcome::Duplicate) => {
                tracing::debug!(key = %event.key, source = source.as_str(), outcome = label, "upload notification");
            }
            Ok(other) => {
                tracing::warn!(bucket = %event.bucket, key = %event.key, source = source.as_str(), outcome = other.as_str(), "upload notification dropped");
            }
            Err(e) => {
                tracing::warn!(key = %event.key, source = source.as_str(), error = %e, "upload notification will be retried")
            }
        }
        outcome
    }

    async fn decide(
        &self,
        event: &ObjectCreated,
        source: UploadSource,
    ) -> Result<Outcome, Transient> {
        if event.bucket != self.bucket {
            return Ok(Outcome::UnknownKey);
        }
        let Some((tenant, job_id)) = keys::parse_upload_key(&event.key) else {
            return Ok(Outcome::UnknownKey);
        };
        let job = self.jobs.get(&job_id).await.map_err(|e| Transient(e.to_string()))?;
        let Some(job) = job.filter(|j| j.tenant == tenant && j.upload_key == event.key) else {
            return Ok(Outcome::UnknownKey);
        };
        match job.status {
            JobStatus::AwaitingUpload => {}
            // Accepted before; make sure its event is out (the broker drops a duplicate).
            JobStatus::Uploaded => {
                self.publish(&job, source).await?;
                return Ok(Outcome::Duplicate);
            }
            JobStatus::Queued | JobStatus::Running | JobStatus::Completed => {
                return Ok(Outcome::Duplicate);
            }
            JobStatus::Failed | JobStatus::Canceled => return Ok(Outcome::NotAwaiting),
        }
        let head = match s3::head(&self.s3, &self.bucket, &event.key).await {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(Outcome::MissingObject),
            // A refused HEAD is a configuration problem: retried (and visible) until fixed.
            Err(e) => return Err(Transient(e.to_string())),
        };
        let (size, etag) = (head.size, head.etag);
        let rejection = if size == 0 {
            Some((Outcome::Empty, "upload.empty", "the uploaded object is empty".to_owned()))
        } else if size > self.max_upload_bytes {
            Some((
                Outcome::TooLarge,
                "upload.too_large",
                format!("{size} bytes exceeds the limit of {}", self.max_upload_bytes),
            ))
        } else if job.spec.content_length.is_some_and(|declared| declared != size) {
            let declared = job.spec.content_length.unwrap_or_default();
            Some((
                Outcome::SizeMismatch,
                "upload.size_mismatch",
                format!("uploaded {size} bytes, declared {declared}"),
            ))
        } else {
            None
        };
        if let Some((outcome, code, message)) = rejection {
            self.metrics.uploads.with_label_values(&[outcome.as_str()]).inc();
            // Not what the job asked for (too large, another length): not kept, so a URL
            // cannot be used to store arbitrary data (R2 and S3 cannot refuse it up front).
            if matches!(outcome, Outcome::TooLarge | Outcome::SizeMismatch)
                && let Err(e) = s3::delete(&self.s3, &self.bucket, &event.key).await
            {
                tracing::warn!(key = event.key, error = %e, "rejected upload not deleted");
            }
            return self.fail(&job, code, &message).await.map(|()| outcome);
        }
        let source_object = SourceObject { key: event.key.clone(), size, etag };
        let recorded = serde_json::to_string(&source_object).expect("serializable");
        match self
            .jobs
            .transition(&job.id, JobStatus::Uploaded, source.as_str(), &[("source", recorded)])
            .await
        {
            Ok(_) => {}
            // Another source won the race: it is now a duplicate.
            Err(TransitionError::Illegal { .. }) => {
                return Box::pin(self.decide(event, source)).await;
            }
            Err(TransitionError::Missing) => return Ok(Outcome::UnknownKey),
            Err(TransitionError::Store(e)) => return Err(Transient(e.to_string())),
        }
        self.metrics.uploads.with_label_values(&["accepted"]).inc();
        let job = Job { status: JobStatus::Uploaded, source: Some(source_object), ..job };
        self.publish(&job, source).await?;
        Ok(Outcome::Accepted)
    }

    /// Publishes the job's upload event (idempotent: same id for the same object version).
    async fn publish(&self, job: &Job, source: UploadSource) -> Result<(), Transient> {
        let Some(object) = &job.source else {
            return Err(Transient(format!("job {} is uploaded without a source record", job.id)));
        };
        let event = UploadEvent {
            id: UploadEvent::id_for(&self.bucket, &object.key, &object.etag),
            source,
            bucket: self.bucket.clone(),
            key: object.key.clone(),
            size: object.size,
            etag: object.etag.clone(),
            job_id: job.id.clone(),
            tenant: job.tenant.clone(),
            at: rfc3339(now_ms()),
        };
        events::publish_upload(&self.js, &event)
            .await
            .map(|_| ())
            .map_err(|e| Transient(e.to_string()))
    }

    /// Fails a job whose upload is unacceptable, and announces it.
    async fn fail(&self, job: &Job, code: &str, message: &str) -> Result<(), Transient> {
        let error = JobError { code: code.to_owned(), message: message.to_owned() };
        events::fail_and_announce(&self.js, &self.jobs, job, &error)
            .await
            .map(|_| ())
            .map_err(|e| Transient(e.to_string()))
    }
}
