//! A job as stored in Redis (`tcoder:job:<id>` hash).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{JobId, JobSpec, JobStatus, Tenant};

/// The uploaded source object, recorded when the upload is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceObject {
    #[schema(value_type = String)]
    pub key: crate::s3::Key,
    pub size: u64,
    pub etag: String,
}

/// How a job came to be: the HTTP API (a presigned upload), a NATS submission naming an object
/// already in the bucket, or a watch-folder rule matching a new object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobOrigin {
    Api,
    /// `tcoder.submit.<tenant>`; `submission_id` is the producer's `Nats-Msg-Id`.
    Nats {
        submission_id: String,
    },
    /// The watch rule that matched the object.
    Watch {
        rule: String,
    },
}

/// Why a job failed: a stable `code` (e.g. `input.corrupt`, `upload.size_mismatch`) and a
/// human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

/// How the job's webhook fared: the last terminal event's delivery, so a refused or failing
/// receiver shows on the job, not only in a log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookStatus {
    /// The webhook's type, e.g. `job.completed`.
    pub event: String,
    /// Its `webhook-id`: a redelivered event whose webhook already ended (delivered, failed,
    /// refused, gone) is not sent again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `delivered`, `retrying`, `failed` (every scheduled attempt failed), `refused` (the
    /// destination is not allowed) or `gone` (the receiver answered 410).
    pub state: String,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// RFC 3339 time of the last attempt.
    pub at: String,
}

impl WebhookStatus {
    /// Whether this records the end of webhook `id` (no attempt left to make).
    pub fn ended(&self, id: &str) -> bool {
        self.id.as_deref() == Some(id) && self.state != "retrying"
    }
}

/// Everything known about one job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: JobId,
    pub tenant: Tenant,
    pub status: JobStatus,
    pub spec: JobSpec,
    /// Fencing token of the latest claim; only this epoch may commit.
    pub epoch: u64,
    pub attempts: u32,
    /// Attempts that ended without a word — their worker died or lost its lease — counted
    /// when the job is next claimed or recovered. Poison is decided on these alone.
    pub lost_attempts: u32,
    /// How many times the job was put on the work queue (first time 1; a replay adds one).
    pub queued_count: u64,
    pub created_at: u64,
    pub updated_at: u64,
    /// When its HLS set became playable (ms): its first chunk and audio committed, or the
    /// whole set at completion.
    pub playable_at: Option<u64>,
    /// When it completed (ms).
    pub completed_at: Option<u64>,
    pub upload_key: crate::s3::Key,
    pub source: Option<SourceObject>,
    pub origin: JobOrigin,
    /// The result (output manifest) of the winning epoch, once completed.
    pub outputs: Option<super::JobResult>,
    pub error: Option<JobError>,
    pub webhook: Option<WebhookStatus>,
    /// The multipart upload the source arrives by (`upload: multipart`), once started.
    pub multipart: Option<MultipartUpload>,
}

/// A job's multipart upload: the store's id for it and how the source is cut into parts. The
/// plan is kept with the upload, so a resume after a settings change cuts the same parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultipartUpload {
    pub upload_id: String,
    pub plan: crate::s3::multipart::PartPlan,
}

impl Job {
    /// Whether the source is tcoder's own upload (`uploads/<tenant>/<job>/source`), which it
    /// removes once done; a submitted or watched object belongs to the user and stays.
    pub fn owns_source(&self) -> bool {
        self.source.as_ref().is_some_and(|source| {
            crate::s3::keys::parse_upload_key(&source.key)
                .is_some_and(|(tenant, id)| tenant == self.tenant && id == self.id)
        })
    }

    /// Decodes the Redis hash; a malformed record is an error naming the field.
    pub(crate) fn from_hash(fields: &HashMap<String, String>) -> Result<Job, String> {
        let get = |name: &str| fields.get(name).ok_or_else(|| format!("job record lacks `{name}`"));
        let json = |name: &str| -> Result<Option<serde_json::Value>, String> {
            match fields.get(name) {
                None => Ok(None),
                Some(raw) => serde_json::from_str(raw)
                    .map(Some)
                    .map_err(|e| format!("job field `{name}`: {e}")),
            }
        };
        let number = |name: &str| -> Result<u64, String> {
            get(name)?.parse().map_err(|e| format!("job field `{name}`: {e}"))
        };
        Ok(Job {
            id: JobId::parse(get("id")?).ok_or("job field `id` is malformed")?,
            tenant: Tenant::parse(get("tenant")?).ok_or("job field `tenant` is malformed")?,
            status: get("status")?.parse()?,
            spec: serde_json::from_str(get("spec")?)
                .map_err(|e| format!("job field `spec`: {e}"))?,
            epoch: number("epoch")?,
            attempts: u32::try_from(number("attempts")?).unwrap_or(u32::MAX),
            lost_attempts: fields.get("lost_attempts").and_then(|v| v.parse().ok()).unwrap_or(0),
            queued_count: fields.get("queued_count").and_then(|v| v.parse().ok()).unwrap_or(0),
            created_at: number("created_at")?,
            updated_at: number("updated_at")?,
            playable_at: fields.get("playable_at").and_then(|v| v.parse().ok()),
            completed_at: fields.get("completed_at").and_then(|v| v.parse().ok()),
            upload_key: crate::s3::Key::parse(get("upload_key")?)
                .map_err(|e| format!("job field `upload_key`: {e}"))?,
            source: json("source")?
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| format!("job field `source`: {e}"))?,
            outputs: json("outputs")?
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| format!("job field `outputs`: {e}"))?,
            error: json("error")?
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| format!("job field `error`: {e}"))?,
            origin: json("origin")?
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| format!("job field `origin`: {e}"))?
                .unwrap_or(JobOrigin::Api),
            // Informational: a malformed one is dropped rather than hiding the job.
            webhook: json("webhook")?.and_then(|v| serde_json::from_value(v).ok()),
            multipart: json("multipart")?
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| format!("job field `multipart`: {e}"))?,
        })
    }
}
