//! Message payloads on the streams. Every payload carries a unique `id`, also sent as
//! `Nats-Msg-Id`, so a retried publish is dropped by the broker within the dedup window.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::subjects;
use crate::jobs::{JobId, Tenant, now_ms, rfc3339};

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
