//! Message payloads on the streams. Every payload carries a unique `id`, also sent as
//! `Nats-Msg-Id`, so a retried publish is dropped by the broker within the dedup window.

use std::fmt;

use serde::{Deserialize, Serialize};

use serde_json::json;

use super::subjects;
use crate::jobs::{Job, JobError, JobId, Tenant, now_ms, rfc3339};

/// Kinds of job lifecycle events (`tcoder.events.<job>.<kind>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Accepted,
    Queued,
    Started,
    Progress,
    Rendition,
    Completed,
    Failed,
    Canceled,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Accepted => "accepted",
            EventKind::Queued => "queued",
            EventKind::Started => "started",
            EventKind::Progress => "progress",
            EventKind::Rendition => "rendition",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Canceled => "canceled",
        }
    }

    /// Events after which nothing more happens to the job.
    pub fn is_terminal(self) -> bool {
        matches!(self, EventKind::Completed | EventKind::Failed | EventKind::Canceled)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job lifecycle event, as any NATS client sees it on `tcoder.events.<job>.<kind>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

    pub fn subject(&self) -> String {
        subjects::event(self.job_id.as_str(), self.kind.as_str())
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
            json!({}),
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
}

impl UploadSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadSource::R2 => "r2",
            UploadSource::S3 => "s3",
            UploadSource::Local => "local",
            UploadSource::Sweep => "sweep",
        }
    }
}

/// The normalized event on `tcoder.uploads.<bucket>`: one per accepted upload, whichever
/// source reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadEvent {
    /// `<bucket>/<key>/<etag>`; also the `Nats-Msg-Id`.
    pub id: String,
    pub source: UploadSource,
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub job_id: JobId,
    pub tenant: Tenant,
    /// RFC 3339 time the bridge accepted it.
    pub at: String,
}

impl UploadEvent {
    /// The dedup id of an upload: the same object version always has the same id.
    pub fn id_for(bucket: &str, key: &str, etag: &str) -> String {
        format!("{bucket}/{key}/{etag}")
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
}

impl WorkItem {
    /// The dedup id of the `n`-th queuing of a job (a replay after a dead letter is a new n).
    pub fn id_for(job_id: &JobId, n: u64) -> String {
        format!("{job_id}.queued.{n}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{JobRequest, JobSpec, JobStatus, SpecLimits};

    fn job() -> Job {
        let request = JobRequest {
            metadata: Some([("order".to_owned(), "42".to_owned())].into()),
            ..JobRequest::default()
        };
        let limits = SpecLimits { max_upload_bytes: 1 << 30, allowed_webhooks: &[] };
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
            upload_key: String::new(),
            source: None,
            outputs: None,
            error: None,
            webhook: None,
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
            assert_eq!(event.subject(), format!("tcoder.events.{id}.{}", event.kind));
            if event.kind.is_terminal() {
                assert_eq!(event.data["metadata"]["order"], "42", "{event:?}");
            }
        }
        assert_eq!(JobEvent::failed(&job, None, &error).data.get("epoch"), None);
    }
}
