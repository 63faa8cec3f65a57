//! The notification bridge: every object-created notification (R2 via a Cloudflare Queue or a
//! pushed body, S3/MinIO event JSON, the embedded store, the sweep) goes through
//! [`Bridge::handle`], which checks it against the job, moves the job to `uploaded` and
//! publishes exactly one normalized event on `tcoder.uploads.<bucket>`.
//!
//! Order matters: the job moves to `uploaded` first and the event is published second, with a
//! `Nats-Msg-Id` of job/bucket/key/etag. A crash in between leaves a job in `uploaded` that a
//! repeated notification or the sweep publishes again; the broker drops the duplicate.
//!
//! An object that is not a job's upload but lies in a watch folder ([`watch`]) becomes a new
//! job of the rule's tenant, created already `uploaded` and keyed by bucket/key/etag, so a
//! repeated notification or the sweep finds that job instead of making another. NATS
//! submissions (`crate::submit`) make their jobs the same way ([`Bridge::job_for_object`]).

pub(crate) mod import;
pub(crate) mod lifecycle;
pub(crate) mod local;
pub(crate) mod normalize;
pub(crate) mod r2_queue;
pub(crate) mod sweep;
pub(crate) mod watch;

use tcoder::events::{self, JobEvent, Rejection, UploadEvent, UploadSource};
use tcoder::jobs::{
    CaptionFile, CaptionObject, CreateOutcome, Job, JobError, JobId, JobOrigin, JobSpec, JobStatus,
    JobStore, MAX_SIDECAR_BYTES, SourceObject, SpecError, Tenant, TransitionError, now_ms, rfc3339,
};
use tcoder::s3::{self, Key, ObjectCreated, keys};
use tcoder::watch::{DEDUP_WINDOW, WatchRule};

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
    /// A key no path of tcoder may use (`..`, `//`, encoded separators, …: see [`Key`]).
    InvalidKey,
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
    /// A new object in a watch folder: its job was created.
    Watched,
    /// An object in a watch folder from before the rule (or the dedup window): left alone.
    Old,
    /// An object in a watch folder that cannot be a job (empty, too large): announced on
    /// `tcoder.rejected.<tenant>`.
    Rejected,
    /// One of a job's files arrived, another (its source or a caption file) has not yet: the
    /// job starts with the notification of the last one.
    AwaitingFiles,
    /// An uploaded caption file is empty or larger than the cap; the job failed.
    CaptionRejected,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::UnknownKey => "unknown_key",
            Outcome::InvalidKey => "invalid_key",
            Outcome::NotAwaiting => "not_awaiting",
            Outcome::MissingObject => "missing_object",
            Outcome::SizeMismatch => "size_mismatch",
            Outcome::Empty => "empty",
            Outcome::TooLarge => "too_large",
            Outcome::Watched => "watched",
            Outcome::Old => "old",
            Outcome::Rejected => "rejected",
            Outcome::AwaitingFiles => "awaiting_files",
            Outcome::CaptionRejected => "caption_rejected",
        }
    }
}

/// A failure worth retrying (Redis, S3 or NATS unavailable); the notification is not lost.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Transient(pub(crate) String);

/// Validates notifications against jobs and publishes upload events. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Bridge {
    pub jobs: JobStore,
    pub s3: aws_sdk_s3::Client,
    pub js: async_nats::jetstream::Context,
    pub bucket: String,
    pub max_upload_bytes: u64,
    pub metrics: IngestMetrics,
    pub watch: watch::WatchRules,
    pub redis: tcoder::redis::Conn,
    /// Tenant webhook secrets are made here, with a job that has a webhook: the dispatcher
    /// signs with them but may not create them.
    pub webhook_secrets: std::sync::Arc<tcoder::webhooks::AtRest>,
}

/// A job to make for an object already in the bucket (a NATS submission, a watch folder).
#[derive(Debug)]
pub(crate) struct NewObjectJob<'a> {
    pub tenant: &'a Tenant,
    pub spec: &'a JobSpec,
    pub object: SourceObject,
    pub origin: JobOrigin,
    /// The same key never makes two jobs (while its record lasts).
    pub idempotency_key: String,
    pub idempotency_ttl_secs: u64,
    /// Reported on the upload event.
    pub source: UploadSource,
}

/// The job made for an object already in the bucket.
#[derive(Debug)]
pub(crate) enum ObjectJob {
    Created(Job),
    /// The idempotency key made this job before (its upload event is out again).
    Existing(Job),
    /// The idempotency key made another job, for something else.
    Conflict(JobId),
}

impl Bridge {
    /// Handles one notification; `Err` means "try again later".
    pub(crate) async fn handle(
        &self,
        event: &ObjectCreated,
        source: UploadSource,
    ) -> Result<Outcome, Transient> {
        self.handle_with(event, source, None).await
    }

    /// As [`Bridge::handle`], with the watch rules already read (`None`: read them if the
    /// object is not a job's upload) — the sweep reads them once for every object it lists.
    pub(crate) async fn handle_with(
        &self,
        event: &ObjectCreated,
        source: UploadSource,
        rules: Option<&[WatchRule]>,
    ) -> Result<Outcome, Transient> {
        let outcome = self.decide(event, source, rules).await;
        let label = match &outcome {
            Ok(outcome) => outcome.as_str(),
            Err(_) => "retry",
        };
        self.metrics.bridge_events.with_label_values(&[source.as_str(), label]).inc();
        match &outcome {
            Ok(
                Outcome::Accepted
                | Outcome::Duplicate
                | Outcome::Watched
                | Outcome::Old
                | Outcome::AwaitingFiles,
            ) => {
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
        rules: Option<&[WatchRule]>,
    ) -> Result<Outcome, Transient> {
        if event.bucket != self.bucket {
            return Ok(Outcome::UnknownKey);
        }
        let Ok(key) = Key::parse(&event.key) else {
            return Ok(Outcome::InvalidKey);
        };
        // The job's source, or one of the caption files it uploads: either may be the last
        // of the job's files to arrive, and the last one starts the job.
        let (tenant, job_id, caption) = if let Some((tenant, job)) = keys::parse_upload_key(&key) {
            (tenant, job, None)
        } else if let Some((tenant, job, n)) = keys::parse_caption_upload_key(&key) {
            (tenant, job, Some(n))
        } else {
            return self.watched(event, &key, source, rules).await;
        };
        let job = self.jobs.get(&job_id).await.map_err(|e| Transient(e.to_string()))?;
        let ours = |job: &Job| match caption {
            None => job.upload_key == key,
            Some(n) => n < caption_uploads(&job.spec),
        };
        let Some(job) = job.filter(|j| j.tenant == tenant && ours(j)) else {
            return Ok(Outcome::UnknownKey);
        };
        let key = job.upload_key.clone();
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
            JobStatus::Failed | JobStatus::Canceled | JobStatus::Expired => {
                return Ok(Outcome::NotAwaiting);
            }
        }
        let head = match s3::head(&self.s3, &self.bucket, &key).await {
            Ok(Some(head)) => head,
            Ok(None) if caption.is_some() => return Ok(Outcome::AwaitingFiles),
            Ok(None) => return Ok(Outcome::MissingObject),
            // A refused HEAD is a configuration problem: retried (and visible) until fixed.
            Err(e) => return Err(Transient(e.to_string())),
        };
        let (size, etag) = (head.size, head.etag);
        let rejection = if let Some((outcome, message)) = self.size_problem(size) {
            let code = if outcome == Outcome::Empty { "upload.empty" } else { "upload.too_large" };
            Some((outcome, code, message))
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
                && let Err(e) = s3::delete(&self.s3, &self.bucket, &key).await
            {
                tracing::warn!(%key, error = %e, "rejected upload not deleted");
            }
            return self.fail(&job, code, &message).await.map(|()| outcome);
        }
        if let Some(outcome) = self.check_caption_uploads(&job).await? {
            return Ok(outcome);
        }
        let source_object = SourceObject { key, size, etag };
        let recorded = serde_json::to_string(&source_object).expect("serializable");
        match self
            .jobs
            .transition(&job.id, JobStatus::Uploaded, source.as_str(), &[("source", recorded)])
            .await
        {
            Ok(_) => {}
            // Another source won the race: it is now a duplicate.
            Err(TransitionError::Illegal { .. }) => {
                return Box::pin(self.decide(event, source, rules)).await;
            }
            Err(TransitionError::Missing) => return Ok(Outcome::UnknownKey),
            Err(TransitionError::Store(e)) => return Err(Transient(e.to_string())),
        }
        self.metrics.uploads.with_label_values(&["accepted"]).inc();
        let job = Job { status: JobStatus::Uploaded, source: Some(source_object), ..job };
        self.publish(&job, source).await?;
        Ok(Outcome::Accepted)
    }

    /// Whether every caption file the job uploads is in, and acceptable: `None` when so,
    /// [`Outcome::AwaitingFiles`] while one is missing, [`Outcome::CaptionRejected`] (the job
    /// failed, the file removed) when one is empty or over [`MAX_SIDECAR_BYTES`].
    async fn check_caption_uploads(&self, job: &Job) -> Result<Option<Outcome>, Transient> {
        for n in 0..caption_uploads(&job.spec) {
            let key = keys::caption_upload_key(&job.tenant, &job.id, n);
            let head = match s3::head(&self.s3, &self.bucket, &key).await {
                Ok(Some(head)) => head,
                Ok(None) => return Ok(Some(Outcome::AwaitingFiles)),
                Err(e) => return Err(Transient(e.to_string())),
            };
            if head.size == 0 || head.size > MAX_SIDECAR_BYTES {
                if let Err(e) = s3::delete(&self.s3, &self.bucket, &key).await {
                    tracing::warn!(%key, error = %e, "rejected caption upload not deleted");
                }
                let message = format!(
                    "caption upload {n} is {} bytes; caption files are 1 to {MAX_SIDECAR_BYTES}",
                    head.size
                );
                self.fail(job, "upload.caption_size", &message).await?;
                return Ok(Some(Outcome::CaptionRejected));
            }
        }
        Ok(None)
    }

    /// Whether the caption objects a spec names (`key`) are in the bucket and within the cap;
    /// checked at the door (API and NATS), so a typo is a typed error there and not a warning
    /// on a finished job. The worker checks again (an object may go in between).
    pub(crate) async fn check_caption_objects(
        &self,
        spec: &JobSpec,
    ) -> Result<Result<(), SpecError>, Transient> {
        for (n, caption) in spec.captions.iter().enumerate() {
            let CaptionFile::Object(CaptionObject { key }) = &caption.file else { continue };
            let problem = match s3::head(&self.s3, &self.bucket, key).await {
                Ok(Some(head)) if head.size > 0 && head.size <= MAX_SIDECAR_BYTES => continue,
                Ok(Some(head)) => format!(
                    "captions[{n}].key: `{key}` is {} bytes; caption files are 1 to \
                     {MAX_SIDECAR_BYTES}",
                    head.size
                ),
                Ok(None) => format!("captions[{n}].key: no object `{key}` in the bucket"),
                Err(e) => return Err(Transient(e.to_string())),
            };
            let (code, field) = ("validation.captions", "captions");
            return Ok(Err(SpecError { code, field, message: problem }));
        }
        Ok(Ok(()))
    }

    /// Why an object of `size` bytes cannot be a source, if it cannot.
    pub(crate) fn size_problem(&self, size: u64) -> Option<(Outcome, String)> {
        if size == 0 {
            Some((Outcome::Empty, "the object is empty".to_owned()))
        } else if size > self.max_upload_bytes {
            let limit = self.max_upload_bytes;
            Some((Outcome::TooLarge, format!("{size} bytes exceeds the limit of {limit}")))
        } else {
            None
        }
    }

    /// An object outside `uploads/`: a job if a watch rule covers it, else not ours.
    async fn watched(
        &self,
        event: &ObjectCreated,
        key: &Key,
        source: UploadSource,
        rules: Option<&[WatchRule]>,
    ) -> Result<Outcome, Transient> {
        let read;
        let rules = match rules {
            Some(rules) => rules,
            None => {
                read = self.watch.current().await.map_err(|e| Transient(e.to_string()))?;
                &read
            }
        };
        let Some(rule) = tcoder::watch::matching(rules, key) else {
            return Ok(Outcome::UnknownKey);
        };
        // A repeat of a version seen before (made a job, or rejected) needs no HEAD.
        if let Some(etag) = &event.etag {
            let transient = |e: tcoder::redis::RedisError| Transient(e.to_string());
            let idempotency = self.watch_idempotency_key(key, etag);
            let known =
                self.jobs.idempotent_job(&rule.tenant, &idempotency).await.map_err(transient)?;
            let version = UploadEvent::id_for(&self.bucket, key.as_str(), etag);
            if known.is_some() || self.watch.was_rejected(&version).await.map_err(transient)? {
                return Ok(Outcome::Duplicate);
            }
        }
        let head = match s3::head(&self.s3, &self.bucket, key).await {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(Outcome::MissingObject),
            Err(e) => return Err(Transient(e.to_string())),
        };
        if !rule_may_take(rule, head.modified_ms, now_ms()) {
            return Ok(Outcome::Old);
        }
        if let Some((outcome, message)) = self.size_problem(head.size) {
            // Listings and HEAD may tell a different ETag (some stores, for empty objects):
            // a version not looked up above is looked up now.
            let version = UploadEvent::id_for(&self.bucket, key.as_str(), &head.etag);
            let looked_up = event.etag.as_deref() == Some(head.etag.as_str());
            if !looked_up
                && self.watch.was_rejected(&version).await.map_err(|e| Transient(e.to_string()))?
            {
                return Ok(Outcome::Duplicate);
            }
            let code = if outcome == Outcome::Empty { "source.empty" } else { "source.too_large" };
            let error = JobError { code: code.into(), message };
            let rejection = Rejection::of_watched(
                &rule.tenant,
                &rule.name,
                &self.bucket,
                key.as_str(),
                &head.etag,
                error,
            );
            self.reject(&rejection).await?;
            self.watch.remember_rejected(&version).await.map_err(|e| Transient(e.to_string()))?;
            return Ok(Outcome::Rejected);
        }
        let new = NewObjectJob {
            tenant: &rule.tenant,
            spec: &rule.job,
            idempotency_key: self.watch_idempotency_key(key, &head.etag),
            object: SourceObject { key: key.clone(), size: head.size, etag: head.etag },
            origin: JobOrigin::Watch { rule: rule.name.clone() },
            idempotency_ttl_secs: DEDUP_WINDOW.as_secs(),
            source,
        };
        let made = self.job_for_object(new).await?;
        Ok(match made {
            ObjectJob::Created(_) => Outcome::Watched,
            ObjectJob::Existing(_) | ObjectJob::Conflict(_) => Outcome::Duplicate,
        })
    }

    fn watch_idempotency_key(&self, key: &Key, etag: &str) -> String {
        format!("watch:{}", UploadEvent::id_for(&self.bucket, key.as_str(), etag))
    }

    /// Makes (once per idempotency key) the job for an object already in the bucket and sends
    /// it on its way: `accepted`, then the upload event the dispatcher queues it from.
    pub(crate) async fn job_for_object(
        &self,
        new: NewObjectJob<'_>,
    ) -> Result<ObjectJob, Transient> {
        let transient = |e: tcoder::redis::RedisError| Transient(e.to_string());
        let NewObjectJob { tenant, spec, object, origin, idempotency_key, .. } = &new;
        if spec.webhook_url.is_some() {
            let mut redis = self.redis.clone();
            tcoder::webhooks::tenant_secret(&mut redis, tenant, &self.webhook_secrets)
                .await
                .map_err(transient)?;
        }
        let created = self
            .jobs
            .create_for_object(
                tenant,
                spec,
                object,
                origin,
                idempotency_key,
                new.idempotency_ttl_secs,
            )
            .await
            .map_err(transient)?;
        let source = new.source;
        let job = match created {
            CreateOutcome::Created(job) => {
                let accepted = JobEvent::accepted(&job);
                if let Err(e) = events::publish_event(&self.js, &accepted).await {
                    // Informational only, as for API jobs: the job is safe in Redis.
                    tracing::warn!(job = %job.id, error = %e, "accepted event not published");
                }
                self.publish(&job, source).await?;
                return Ok(ObjectJob::Created(*job));
            }
            CreateOutcome::Replayed(id) => id,
            CreateOutcome::Conflict(id) => return Ok(ObjectJob::Conflict(id)),
        };
        let job = self.jobs.get(&job).await.map_err(transient)?;
        let job =
            job.ok_or_else(|| Transient("an idempotency record names a missing job".into()))?;
        // Created, but the crash may have come before its upload event.
        if job.status == JobStatus::Uploaded {
            self.publish(&job, source).await?;
        }
        Ok(ObjectJob::Existing(job))
    }

    /// Announces what could not become a job.
    pub(crate) async fn reject(&self, rejection: &Rejection) -> Result<(), Transient> {
        tracing::warn!(tenant = %rejection.tenant, key = ?rejection.key, code = rejection.error.code, message = rejection.error.message, "rejected");
        events::publish_rejection(&self.js, rejection)
            .await
            .map(|_| ())
            .map_err(|e| Transient(e.to_string()))
    }

    /// Publishes the job's upload event (idempotent: same id for the job's object version).
    pub(crate) async fn publish(&self, job: &Job, source: UploadSource) -> Result<(), Transient> {
        let Some(object) = &job.source else {
            return Err(Transient(format!("job {} is uploaded without a source record", job.id)));
        };
        let event = UploadEvent {
            id: UploadEvent::id_for_job(&job.id, &self.bucket, object.key.as_str(), &object.etag),
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

/// How many caption files a job uploads (its caption upload keys are numbered below this).
fn caption_uploads(spec: &JobSpec) -> usize {
    spec.captions.iter().filter(|c| matches!(c.file, CaptionFile::Upload(_))).count()
}

/// Whether an object last modified at `modified_ms` is new enough for `rule`: created after
/// the rule (a minute's leeway for the store's clock and its one-second `Last-Modified`) and
/// within the dedup window, so an old object is never made into a job twice.
pub(crate) fn rule_may_take(rule: &WatchRule, modified_ms: u64, now_ms: u64) -> bool {
    const LEEWAY_MS: u64 = 60_000;
    let window_ms = u64::try_from(DEDUP_WINDOW.as_millis()).unwrap_or(u64::MAX);
    // A store that does not say when is trusted to be reporting a new object.
    modified_ms == 0
        || (modified_ms + LEEWAY_MS >= rule.created_at
            && modified_ms + window_ms > now_ms + LEEWAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_takes_objects_from_its_creation_on_within_the_dedup_window() {
        let mut rule = tcoder::watch::WatchRuleRequest {
            name: "r".into(),
            prefix: "in/".into(),
            tenant: "acme".into(),
            job: serde_json::json!({}),
        }
        .validate(1 << 30, &[])
        .unwrap();
        let (minute, day) = (60_000, 86_400_000);
        let now = 100 * day;
        rule.created_at = now - day;
        assert!(rule_may_take(&rule, now - 1000, now), "new");
        assert!(rule_may_take(&rule, rule.created_at - 30_000, now), "within the leeway");
        assert!(!rule_may_take(&rule, rule.created_at - 2 * minute, now), "before the rule");
        assert!(rule_may_take(&rule, 0, now), "a store that does not say");
        rule.created_at = 0;
        assert!(!rule_may_take(&rule, now - 7 * day, now), "past the dedup window");
        assert!(rule_may_take(&rule, now - 6 * day, now));
    }
}
