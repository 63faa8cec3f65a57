//! JSON shapes of the API.

use serde::Serialize;
use tcoder::jobs::{Job, JobError, JobSpec, JobStatus, SourceObject, rfc3339};

/// A job as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct JobView<'a> {
    pub id: &'a str,
    pub status: JobStatus,
    #[serde(flatten)]
    pub spec: &'a JobSpec,
    pub attempts: u32,
    /// Attempts whose worker died or lost its lease; at `nats.jobs_max_deliver` the job is
    /// dead-lettered as `job.poison`.
    pub lost_attempts: u32,
    pub created_at: String,
    pub updated_at: String,
    pub source: Option<SourceView<'a>>,
    /// How the job came: `api`, `nats` (with the producer's `submission_id`) or `watch`
    /// (with the rule).
    pub origin: &'a tcoder::jobs::JobOrigin,
    /// The result summary (URLs of the winning attempt), once completed; with signed
    /// delivery, its URLs are freshly signed playback URLs.
    #[schema(value_type = Option<tcoder::jobs::JobResult>)]
    pub result: Option<std::borrow::Cow<'a, tcoder::jobs::JobResult>>,
    pub error: Option<&'a JobError>,
    /// How the job's webhook fared (last terminal event), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<&'a tcoder::jobs::WebhookStatus>,
    /// The latest progress report (frames, percent, fps, speed, ETA) while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SourceView<'a> {
    /// Shown for a submitted or watched object (the user named or placed it); an API
    /// upload's key is tcoder's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a str>,
    pub size: u64,
    pub etag: &'a str,
}

impl<'a> JobView<'a> {
    pub(crate) fn of(job: &'a Job) -> JobView<'a> {
        JobView {
            id: job.id.as_str(),
            status: job.status,
            spec: &job.spec,
            attempts: job.attempts,
            lost_attempts: job.lost_attempts,
            created_at: rfc3339(job.created_at),
            updated_at: rfc3339(job.updated_at),
            source: job.source.as_ref().map(|s: &SourceObject| SourceView {
                key: (!job.owns_source()).then_some(s.key.as_str()),
                size: s.size,
                etag: &s.etag,
            }),
            origin: &job.origin,
            result: job.outputs.as_ref().map(std::borrow::Cow::Borrowed),
            error: job.error.as_ref(),
            webhook: job.webhook.as_ref(),
            progress: None,
        }
    }
}

/// How to upload the source: a presigned request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct UploadView {
    pub url: String,
    pub method: &'static str,
    /// Headers the PUT must carry exactly (they are part of the signature).
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub expires_at: String,
}

/// `POST /v1/jobs`: the job, and how to upload its source.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedView<'a> {
    pub job: JobView<'a>,
    /// Absent when the job already has its source (a replayed request).
    pub upload: Option<UploadView>,
}

/// `GET /v1/jobs`: one page, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct JobPageView<'a> {
    pub jobs: Vec<JobView<'a>>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<tcoder::jobs::JobId>,
}

/// `GET /v1/webhook-secret`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WebhookSecretView {
    /// `whsec_…`: verifies the `webhook-signature` of tcoder's webhooks.
    pub secret: String,
    /// Always `standard-webhooks v1`.
    pub scheme: &'static str,
}

/// What became of each event of a notification.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NotificationView {
    pub events: Vec<NotificationOutcome>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NotificationOutcome {
    pub key: String,
    /// `accepted`, `duplicate`, `watched`, `unknown_key`, `not_awaiting`, …
    pub outcome: &'static str,
}
