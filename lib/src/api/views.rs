//! The JSON shapes of the HTTP API, owned and both ways: the ingest routes serialise them,
//! the OpenAPI document describes them, and [`super::Client`] (the CLI, the tests) reads them
//! back — one definition, so a renamed field breaks the build rather than a user.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::Progress;
use crate::jobs::{
    Job, JobError, JobId, JobOrigin, JobResult, JobSpec, JobStatus, WebhookStatus, rfc3339,
};

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: JobId,
    pub status: JobStatus,
    #[serde(flatten)]
    pub spec: JobSpec,
    pub attempts: u32,
    /// Attempts whose worker died or lost its lease; at `nats.jobs_max_deliver` the job is
    /// dead-lettered as `job.poison`.
    pub lost_attempts: u32,
    pub created_at: String,
    pub updated_at: String,
    /// When the job's HLS set became playable from `playback_url`: its first chunk and audio
    /// encoded (a split title, while the rest encodes), or the job completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playable_at: Option<String>,
    /// When the job completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// The job's stable HLS URL (relative to the API's base), for a job with an HLS output:
    /// the same for every attempt, progressive while the job runs, the whole set once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playback_url: Option<String>,
    pub source: Option<SourceView>,
    /// How the job came: `api`, `nats` (with the producer's `submission_id`) or `watch`
    /// (with the rule).
    pub origin: JobOrigin,
    /// The result summary (URLs of the winning attempt), once completed; with signed
    /// delivery, its URLs are freshly signed playback URLs.
    pub result: Option<JobResult>,
    pub error: Option<JobError>,
    /// How the job's webhook fared (last terminal event), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookStatus>,
    /// The latest progress report (frames, percent, fps, speed, ETA) while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// The job's source object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceView {
    /// Shown for a submitted or watched object (the user named or placed it); an API
    /// upload's key is tcoder's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub size: u64,
    pub etag: String,
}

impl JobView {
    /// The job as its tenant may see it (no progress: that comes from the event stream).
    pub fn of(job: &Job) -> JobView {
        JobView {
            id: job.id.clone(),
            status: job.status,
            spec: job.spec.clone(),
            attempts: job.attempts,
            lost_attempts: job.lost_attempts,
            created_at: rfc3339(job.created_at),
            updated_at: rfc3339(job.updated_at),
            playable_at: job.playable_at.map(rfc3339),
            completed_at: job.completed_at.map(rfc3339),
            playback_url: job
                .spec
                .outputs
                .contains(&crate::jobs::OutputKind::Hls)
                .then(|| crate::jobs::playback_path(&job.id)),
            source: job.source.as_ref().map(|s| SourceView {
                key: (!job.owns_source()).then(|| s.key.as_str().to_owned()),
                size: s.size,
                etag: s.etag.clone(),
            }),
            origin: job.origin.clone(),
            result: job.outputs.clone(),
            error: job.error.clone(),
            webhook: job.webhook.clone(),
            progress: None,
        }
    }
}

/// How to upload the source: a presigned request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadView {
    pub url: String,
    /// Always `PUT`.
    pub method: String,
    /// Headers the PUT must carry exactly (they are part of the signature).
    pub headers: BTreeMap<String, String>,
    pub expires_at: String,
}

/// `POST /v1/jobs`: the job, and how to upload its source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedView {
    pub job: JobView,
    /// The presigned PUT of the source (`upload: single`). Absent when the job already has
    /// its source (a replayed request) or uploads it in parts.
    pub upload: Option<UploadView>,
    /// The parts of the source still to upload (`upload: multipart`), each with its
    /// presigned PUT, and the call that completes the upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart_upload: Option<MultipartUploadView>,
    /// One per caption file the request asked to upload (`upload: true`), in its order. The
    /// job starts once its source and every one of these have arrived.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caption_uploads: Vec<CaptionUploadView>,
}

/// A multipart upload of the source: PUT each part's bytes (`size` bytes from
/// `(part_number - 1) * part_size`) to its URL, in any order or at once, then
/// `POST /v1/jobs/{id}/upload/complete`. After a dropped connection,
/// `GET /v1/jobs/{id}/upload` lists the parts still missing with fresh URLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MultipartUploadView {
    /// Bytes in every part but the last.
    pub part_size: u64,
    pub part_count: u32,
    /// Parts the store holds already (not to be sent again).
    pub uploaded: Vec<UploadedPartView>,
    /// Parts still to send, each with its presigned PUT.
    pub parts: Vec<PartUploadView>,
    /// Path of the call that completes the upload (`POST`, with the API key).
    pub complete: String,
}

/// A part the store holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadedPartView {
    pub part_number: u32,
    pub size: u64,
}

/// One part to upload: its place, its exact size and its presigned PUT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PartUploadView {
    pub part_number: u32,
    /// The PUT carries exactly this many bytes (the URL signs the length).
    pub size: u64,
    pub upload: UploadView,
}

/// Where to upload one caption file (SRT or WebVTT, at most 4 MiB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CaptionUploadView {
    /// Its place in the request's `captions`.
    pub caption: usize,
    pub upload: UploadView,
}

/// `GET /v1/jobs`: one page, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobPageView {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<JobId>,
}

/// `GET /v1/webhook-secret`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookSecretView {
    /// `whsec_…`: verifies the `webhook-signature` of tcoder's webhooks.
    pub secret: String,
    /// Always `standard-webhooks v1`.
    pub scheme: String,
}

/// What became of each event of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotificationView {
    pub events: Vec<NotificationOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotificationOutcome {
    pub key: String,
    /// `accepted`, `duplicate`, `watched`, `unknown_key`, `not_awaiting`, …
    pub outcome: String,
}

/// An error body (RFC 9457 `application/problem+json`), as the API sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:tcoder:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status's reason phrase.
    pub title: String,
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
    /// Stable, for programs: e.g. `validation.unknown_preset`, `job.not_found`, `rate.limited`.
    pub code: String,
    /// The request field at fault (validation errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
