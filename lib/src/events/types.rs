//! Message payloads on the streams. Every payload carries a unique `id`, also sent as
//! `Nats-Msg-Id`, so a retried publish is dropped by the broker within the dedup window.

use std::fmt;

use serde::{Deserialize, Serialize};

use serde_json::json;

use super::subjects;
use crate::jobs::{Job, JobError, JobId, JobStatus, Tenant, now_ms, playback_path, rfc3339};

/// Kinds of job lifecycle events (`tcoder.events.<tenant>.<job>.<kind>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Accepted,
    /// Ingest is fetching the job's `source_url` (bytes so far).
    Importing,
    Queued,
    Started,
    Progress,
    Rendition,
    /// The job's HLS set plays (progressively, while the rest encodes) from its stable URL.
    Playable,
    Completed,
    Failed,
    Canceled,
    /// No upload arrived within `ingest.upload_expiry`.
    Expired,
    /// The job, its outputs and its source were deleted; nothing of it is left to read.
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Accepted => "accepted",
            EventKind::Importing => "importing",
            EventKind::Queued => "queued",
            EventKind::Started => "started",
            EventKind::Progress => "progress",
            EventKind::Rendition => "rendition",
            EventKind::Playable => "playable",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Canceled => "canceled",
            EventKind::Expired => "expired",
            EventKind::Deleted => "deleted",
        }
    }

    /// Events after which nothing more happens to the job (a `deleted` one follows any of
    /// them when the job is deleted).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            EventKind::Completed | EventKind::Failed | EventKind::Canceled | EventKind::Expired
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job lifecycle event, as a NATS client sees it on `tcoder.events.<tenant>.<job>.<kind>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobEvent {
    /// Unique per event; the `Nats-Msg-Id` and the webhook id.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub job_id: JobId,
    pub tenant: Tenant,
    /// RFC 3339 time the event was produced.
    pub at: String,
    /// Kind-specific data (manifest, error, progress, ...).
    #[serde(default)]
    pub data: serde_json::Value,
}

impl JobEvent {
    /// An event with a caller-chosen id: deterministic ids (e.g. `<job>.canceled`) make a
    /// retried publish a duplicate rather than a second event.
    pub fn new(
        id: String,
        kind: EventKind,
        job_id: &JobId,
        tenant: &Tenant,
        data: serde_json::Value,
    ) -> JobEvent {
        JobEvent {
            id,
            kind,
            job_id: job_id.clone(),
            tenant: tenant.clone(),
            at: rfc3339(now_ms()),
            data,
        }
    }

    /// Whether the job record confirms this event: a terminal event names the job's terminal
    /// status (and, for `completed`, the epoch whose result the job holds); a progress report
    /// comes from the attempt now running; the event is the job's and its tenant's. Anyone
    /// with a worker's NATS user can publish an event: webhooks, the event stream and the
    /// console believe only what the record confirms.
    pub fn agrees_with(&self, job: &Job) -> bool {
        if self.job_id != job.id || self.tenant != job.tenant {
            return false;
        }
        let epoch = self.data.get("epoch").and_then(serde_json::Value::as_u64);
        match self.kind {
            EventKind::Completed => {
                job.status == JobStatus::Completed
                    && epoch.is_some()
                    && epoch == job.outputs.as_ref().map(|o| o.epoch)
            }
            EventKind::Failed => {
                job.status == JobStatus::Failed && epoch.is_none_or(|e| e == job.epoch)
            }
            EventKind::Canceled => job.status == JobStatus::Canceled,
            EventKind::Playable => {
                job.playable_at.is_some()
                    && matches!(job.status, JobStatus::Running | JobStatus::Completed)
            }
            EventKind::Expired => job.status == JobStatus::Expired,
            EventKind::Progress => {
                // `<job>.progress.<epoch>.<n>`
                let from = self.id.split('.').nth(2).and_then(|e| e.parse::<u64>().ok());
                job.status == JobStatus::Running && from == Some(job.epoch)
            }
            _ => false,
        }
    }

    pub fn subject(&self) -> String {
        subjects::event(self.tenant.as_str(), self.job_id.as_str(), self.kind.as_str())
    }

    // One constructor per kind, each with its id scheme: ids are deterministic wherever a
    // retried publish must be a duplicate (one `accepted`, one `completed` per job, one
    // `started` per attempt, one `queued` per queuing).

    /// The job was created (`<job>.accepted`).
    pub fn accepted(job: &Job) -> JobEvent {
        JobEvent::new(
            format!("{}.accepted", job.id),
            EventKind::Accepted,
            &job.id,
            &job.tenant,
            json!({ "origin": job.origin }),
        )
    }

    /// The `n`-th report of a `source_url` being fetched (`<job>.importing.<n>`): `bytes`
    /// stored so far, and `total` and `percent` when the source said its length.
    pub fn importing(job: &Job, n: u64, bytes: u64, total: Option<u64>) -> JobEvent {
        let mut data = json!({ "bytes": bytes });
        if let Some(total) = total.filter(|&t| t > 0) {
            data["total"] = json!(total);
            data["percent"] = json!((bytes as f64 * 100.0 / total as f64).min(100.0));
        }
        JobEvent::new(
            format!("{}.importing.{n}", job.id),
            EventKind::Importing,
            &job.id,
            &job.tenant,
            data,
        )
    }

    /// The job was put on the work queue for the `n`-th time (`<job>.queued.<n>`).
    pub fn queued(job: &Job, n: u64) -> JobEvent {
        JobEvent::new(
            format!("{}.queued.{n}", job.id),
            EventKind::Queued,
            &job.id,
            &job.tenant,
            json!({ "priority": job.spec.priority }),
        )
    }

    /// Attempt `epoch` started on `worker` (`<job>.started.<epoch>`).
    pub fn started(job: &Job, epoch: u64, worker: &str) -> JobEvent {
        JobEvent::new(
            format!("{}.started.{epoch}", job.id),
            EventKind::Started,
            &job.id,
            &job.tenant,
            json!({ "epoch": epoch, "worker": worker }),
        )
    }

    /// The `sequence`-th progress report of attempt `epoch` (`<job>.progress.<epoch>.<n>`).
    pub fn progress(job: &Job, epoch: u64, sequence: u64, progress: serde_json::Value) -> JobEvent {
        JobEvent::new(
            format!("{}.progress.{epoch}.{sequence}", job.id),
            EventKind::Progress,
            &job.id,
            &job.tenant,
            progress,
        )
    }

    /// Rendition `name` of attempt `epoch` is stored (`<job>.rendition.<epoch>.<name>`).
    pub fn rendition(job: &Job, epoch: u64, name: &str, rendition: serde_json::Value) -> JobEvent {
        JobEvent::new(
            format!("{}.rendition.{epoch}.{name}", job.id),
            EventKind::Rendition,
            &job.id,
            &job.tenant,
            rendition,
        )
    }

    /// The job's HLS set plays from `playback_url` (`<job>.playable`, once per job): attempt
    /// `epoch` committed its first chunk and audio, or completed.
    pub fn playable(job: &Job, epoch: u64) -> JobEvent {
        JobEvent::new(
            format!("{}.playable", job.id),
            EventKind::Playable,
            &job.id,
            &job.tenant,
            json!({
                "epoch": epoch,
                "playback_url": playback_path(&job.id),
                "metadata": job.spec.metadata,
            }),
        )
    }

    /// The job completed with attempt `epoch`'s `outputs` (`<job>.completed`).
    pub fn completed(job: &Job, epoch: u64, outputs: &crate::jobs::JobResult) -> JobEvent {
        JobEvent::new(
            format!("{}.completed", job.id),
            EventKind::Completed,
            &job.id,
            &job.tenant,
            json!({ "epoch": epoch, "outputs": outputs, "metadata": job.spec.metadata }),
        )
    }

    /// The job failed for good (`<job>.failed`); `epoch` when an attempt ran.
    pub fn failed(job: &Job, epoch: Option<u64>, error: &JobError) -> JobEvent {
        let mut data = json!({ "error": error, "metadata": job.spec.metadata });
        if let Some(epoch) = epoch {
            data["epoch"] = json!(epoch);
        }
        JobEvent::new(format!("{}.failed", job.id), EventKind::Failed, &job.id, &job.tenant, data)
    }

    /// No upload arrived in time (`<job>.expired`).
    pub fn expired(job: &Job, error: &JobError) -> JobEvent {
        JobEvent::new(
            format!("{}.expired", job.id),
            EventKind::Expired,
            &job.id,
            &job.tenant,
            json!({ "error": error, "metadata": job.spec.metadata }),
        )
    }

    /// The job was deleted (`<job>.deleted`): by its tenant, or by the retention sweep
    /// (`by`: `client` or `retention`).
    pub fn deleted(job: &Job, by: &str) -> JobEvent {
        JobEvent::new(
            format!("{}.deleted", job.id),
            EventKind::Deleted,
            &job.id,
            &job.tenant,
            json!({ "by": by, "metadata": job.spec.metadata }),
        )
    }

    /// The job was canceled (`<job>.canceled`).
    pub fn canceled(job: &Job) -> JobEvent {
        JobEvent::new(
            format!("{}.canceled", job.id),
            EventKind::Canceled,
            &job.id,
            &job.tenant,
            json!({ "metadata": job.spec.metadata }),
        )
    }
}

/// Where an object-created notification came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadSource {
    /// Cloudflare R2 event notification (Queue pull, or pushed by a Worker).
    R2,
    /// AWS S3 / MinIO / Ceph event JSON.
    S3,
    /// The embedded local object store.
    Local,
    /// Found by the periodic listing sweep (its notification was lost).
    Sweep,
    /// Named by a job submitted on `tcoder.submit.<tenant>`.
    Nats,
    /// A multipart upload completed by `POST /v1/jobs/{id}/upload/complete`.
    Api,
    /// Fetched by ingest from the job's `source_url`.
    Import,
}

impl UploadSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadSource::R2 => "r2",
            UploadSource::S3 => "s3",
            UploadSource::Local => "local",
            UploadSource::Sweep => "sweep",
            UploadSource::Nats => "nats",
            UploadSource::Api => "api",
            UploadSource::Import => "import",
        }
    }
}

/// The normalized event on `tcoder.uploads.<bucket>`: one per accepted upload, whichever
/// source reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadEvent {
    /// `<job_id>/<bucket>/<key>/<etag>`; also the `Nats-Msg-Id`.
    pub id: String,
    pub source: UploadSource,
    pub bucket: String,
    pub key: crate::s3::Key,
    pub size: u64,
    pub etag: String,
    pub job_id: JobId,
    pub tenant: Tenant,
    /// RFC 3339 time the bridge accepted it.
    pub at: String,
}

impl UploadEvent {
    /// The dedup id of an object version: the same version always has the same id.
    pub fn id_for(bucket: &str, key: &str, etag: &str) -> String {
        format!("{bucket}/{key}/{etag}")
    }

    /// The id of job `job`'s upload event: its object version, per job. Two jobs made from one
    /// object (two NATS submissions naming it) are two uploads; with the version alone the
    /// broker dropped the second job's event as a duplicate, and that job waited in `uploaded`
    /// for the sweep, past the dedup window.
    pub fn id_for_job(job: &JobId, bucket: &str, key: &str, etag: &str) -> String {
        format!("{job}/{}", UploadEvent::id_for(bucket, key, etag))
    }

    pub fn subject(&self) -> String {
        subjects::uploads(&self.bucket)
    }
}

/// A unit of work on `tcoder.jobs.<priority>`: one message per job attempt cycle. The job's
/// state lives in Redis; the message only says "this job wants a worker".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkItem {
    pub job_id: JobId,
    pub tenant: Tenant,
    /// RFC 3339 time the job was queued.
    pub queued_at: String,
    /// Set on the item of one part of a split job (`tcoder.jobs.<priority>.<job>.p<k>`): an
    /// invitation to any worker to help, the job's coordinator making sure every part gets
    /// done even if no one comes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<u32>,
}

impl WorkItem {
    /// Whether this item may travel on `subject`: a job's item on its job's subject
    /// (`tcoder.jobs.<priority>.<job>`), a part's item on that part's
    /// (`….<job>.p<k>`). Workers may publish part subjects; without this check a job item
    /// published there would be taken as the job's own (a second, unfenced queuing).
    pub fn matches_subject(&self, subject: &str) -> bool {
        let mut tokens = subject.split('.');
        let prefix = (tokens.next(), tokens.next());
        let (Some(_priority), Some(job)) = (tokens.next(), tokens.next()) else { return false };
        let part = tokens.next();
        if prefix != (Some("tcoder"), Some("jobs")) || tokens.next().is_some() {
            return false;
        }
        let part = match part {
            None => None,
            Some(token) => match token.strip_prefix('p').and_then(|k| k.parse::<u32>().ok()) {
                Some(k) => Some(k),
                None => return false,
            },
        };
        job == self.job_id.as_str() && part == self.part
    }

    /// The dedup id of the `n`-th queuing of a job (a replay after a dead letter is a new n).
    pub fn id_for(job_id: &JobId, n: u64) -> String {
        format!("{job_id}.queued.{n}")
    }
}

/// A job submitted on `tcoder.submit.<tenant>`: the body of `POST /v1/jobs` plus the object
/// (already in the bucket, under `uploads/<tenant>/`) to transcode.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub source: SubmissionSource,
    pub request: crate::jobs::JobRequest,
}

/// The object a submission names: a key in tcoder's bucket, never a URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmissionSource {
    pub key: String,
}

impl Submission {
    /// Parses a submission body; the error says what is wrong, for the producer.
    pub fn parse(body: &[u8]) -> Result<Submission, String> {
        let mut fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(body).map_err(|e| format!("not a JSON object: {e}"))?;
        let source = fields.remove("source").ok_or("`source` is required")?;
        let source: SubmissionSource =
            serde_json::from_value(source).map_err(|e| format!("source: {e}"))?;
        for upload_only in ["content_length", "content_type"] {
            if fields.contains_key(upload_only) {
                return Err(format!(
                    "`{upload_only}` describes a presigned upload; a submission names an object"
                ));
            }
        }
        let request =
            serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| e.to_string())?;
        Ok(Submission { source, request })
    }
}

/// Ingest's answer to a submission sent as a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SubmitReply {
    /// The job (`replayed`: this submission was seen before; its first job).
    Accepted { job_id: JobId, status: crate::jobs::JobStatus, replayed: bool },
    /// No job: why.
    Rejected { error: JobError },
}

/// What could not become a job, on `tcoder.rejected.<tenant>`: a submission (with the
/// producer's `Nats-Msg-Id`) or an object in a watch folder (with the rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Deterministic (the same submission or object version is one rejection); the
    /// `Nats-Msg-Id`.
    pub id: String,
    /// Always `rejected`.
    #[serde(rename = "type")]
    pub kind: RejectionKind,
    pub tenant: Tenant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_rule: Option<String>,
    /// The object named or found, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub error: JobError,
    /// RFC 3339 time of the rejection.
    pub at: String,
}

/// The literal `rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RejectionKind {
    Rejected,
}

impl Rejection {
    /// A rejected submission.
    pub fn of_submission(
        tenant: &Tenant,
        submission_id: &str,
        key: Option<&str>,
        error: JobError,
    ) -> Rejection {
        Rejection {
            id: format!("submit.{tenant}.{submission_id}"),
            kind: RejectionKind::Rejected,
            tenant: tenant.clone(),
            submission_id: Some(submission_id.to_owned()),
            watch_rule: None,
            key: key.map(str::to_owned),
            error,
            at: rfc3339(now_ms()),
        }
    }

    /// A watched object that cannot become a job (`etag` names its version).
    pub fn of_watched(
        tenant: &Tenant,
        rule: &str,
        bucket: &str,
        key: &str,
        etag: &str,
        error: JobError,
    ) -> Rejection {
        Rejection {
            id: format!("watch.{}", UploadEvent::id_for(bucket, key, etag)),
            kind: RejectionKind::Rejected,
            tenant: tenant.clone(),
            submission_id: None,
            watch_rule: Some(rule.to_owned()),
            key: Some(key.to_owned()),
            error,
            at: rfc3339(now_ms()),
        }
    }

    pub fn subject(&self) -> String {
        subjects::rejected(self.tenant.as_str())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_work_item_travels_only_on_its_own_subject() {
        let job = JobId::generate();
        let item = |part| WorkItem {
            job_id: job.clone(),
            tenant: Tenant::parse("acme").unwrap(),
            queued_at: String::new(),
            part,
        };
        assert!(item(None).matches_subject(&format!("tcoder.jobs.normal.{job}")));
        assert!(item(Some(3)).matches_subject(&format!("tcoder.jobs.normal.{job}.p3")));
        // A job's item on a part subject (what a worker may publish), and other mismatches.
        assert!(!item(None).matches_subject(&format!("tcoder.jobs.normal.{job}.p3")));
        assert!(!item(Some(3)).matches_subject(&format!("tcoder.jobs.normal.{job}.p4")));
        assert!(!item(Some(3)).matches_subject(&format!("tcoder.jobs.normal.{job}")));
        assert!(!item(None).matches_subject("tcoder.jobs.normal.job_other"));
        assert!(!item(None).matches_subject(&format!("tcoder.jobs.normal.{job}.x.y")));
        assert!(!item(Some(3)).matches_subject(&format!("tcoder.jobs.normal.{job}.q3")));
    }

    use super::*;
    use crate::jobs::{JobRequest, JobSpec, JobStatus, SpecLimits};

    fn job() -> Job {
        let request = JobRequest {
            metadata: Some([("order".to_owned(), "42".to_owned())].into()),
            ..JobRequest::default()
        };
        let limits = SpecLimits {
            max_upload_bytes: 1 << 30,
            allowed_webhooks: &[],
            tenant: &crate::jobs::Tenant::parse("acme").unwrap(),
            presigned: true,
            multipart_threshold: u64::MAX,
            import: None,
        };
        Job {
            id: JobId::generate(),
            tenant: Tenant::parse("acme").unwrap(),
            status: JobStatus::Running,
            spec: JobSpec::from_request(request, limits).unwrap(),
            epoch: 2,
            attempts: 2,
            lost_attempts: 0,
            queued_count: 1,
            created_at: 0,
            updated_at: 0,
            playable_at: None,
            completed_at: None,
            upload_key: crate::s3::Key::parse("uploads/acme/job/source").unwrap(),
            source: None,
            origin: crate::jobs::JobOrigin::Api,
            outputs: None,
            error: None,
            webhook: None,
            multipart: None,
        }
    }

    #[test]
    fn ids_make_retried_publishes_duplicates_and_terminal_events_carry_metadata() {
        let job = job();
        let error = JobError { code: "input.corrupt".into(), message: "bad".into() };
        let id = job.id.as_str();
        let events = [
            (JobEvent::accepted(&job), format!("{id}.accepted")),
            (JobEvent::queued(&job, 3), format!("{id}.queued.3")),
            (JobEvent::started(&job, 2, "w1"), format!("{id}.started.2")),
            (JobEvent::progress(&job, 2, 7, json!({})), format!("{id}.progress.2.7")),
            (JobEvent::rendition(&job, 2, "720p", json!({})), format!("{id}.rendition.2.720p")),
            (
                JobEvent::completed(&job, 2, &crate::jobs::result_sample()),
                format!("{id}.completed"),
            ),
            (JobEvent::failed(&job, Some(2), &error), format!("{id}.failed")),
            (JobEvent::canceled(&job), format!("{id}.canceled")),
        ];
        for (event, expected) in &events {
            assert_eq!(&event.id, expected);
            assert_eq!(event.subject(), format!("tcoder.events.acme.{id}.{}", event.kind));
            if event.kind.is_terminal() {
                assert_eq!(event.data["metadata"]["order"], "42", "{event:?}");
            }
        }
        assert_eq!(JobEvent::failed(&job, None, &error).data.get("epoch"), None);
    }
}
