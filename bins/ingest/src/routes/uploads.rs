//! Uploading a job's source and caption files: the presigned PUTs `POST /v1/jobs` answers
//! with, `GET /v1/jobs/{id}/upload` (fresh URLs; for a multipart upload, only the parts the
//! store does not hold yet — how a client resumes), and `POST /v1/jobs/{id}/upload/complete`,
//! which assembles a multipart upload from the parts the store lists.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tcoder::api::{
    CaptionUploadView, CreatedView, JobView, MultipartUploadView, PartUploadView, Problem,
    UploadView, UploadedPartView,
};
use tcoder::events::UploadSource;
use tcoder::jobs::{CaptionFile, Job, JobStatus, MultipartUpload, UploadMethod, now_ms, rfc3339};
use tcoder::s3::{self, ObjectCreated, multipart};

use super::jobs::load;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// How many missing part numbers an `upload.incomplete` answer names.
const MISSING_NAMED: usize = 20;

/// The upload URLs of a job awaiting its files: the source's (one PUT, or the parts still
/// missing) and one per caption file it uploads.
pub(crate) async fn created_view(state: &AppState, job: &Job) -> Result<CreatedView, ApiError> {
    let mut view = CreatedView {
        job: JobView::of(job),
        upload: None,
        multipart_upload: None,
        caption_uploads: Vec::new(),
    };
    if job.status != JobStatus::AwaitingUpload {
        return Ok(view);
    }
    view.caption_uploads = presign_captions(state, job).await?;
    if job.spec.source_url.is_some() {
        // Ingest fetches the source itself.
        return Ok(view);
    }
    match job.spec.upload {
        UploadMethod::Single => view.upload = Some(presign_source(state, job).await?),
        UploadMethod::Multipart => view.multipart_upload = Some(multipart_view(state, job).await?),
    }
    Ok(view)
}

/// Fresh upload URLs for a job still awaiting its files; for a multipart upload, only the
/// parts the store does not hold yet.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/upload", operation_id = "get_job_upload", tag = "jobs", security(("api_key" = [])),
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job and its upload URLs (as `POST /v1/jobs` answers)", body = CreatedView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job of this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job is not awaiting its upload (`job.not_awaiting_upload`), or the store no longer holds its multipart upload (`upload.expired`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_upload(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load(&state, &tenant, &id).await?;
    if job.status != JobStatus::AwaitingUpload {
        return Err(not_awaiting(&job));
    }
    Ok(Json(created_view(&state, &job).await?).into_response())
}

/// Completes a multipart upload once the store holds every part; the job then starts as after
/// any upload. Repeating it after success returns the job.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/upload/complete", operation_id = "complete_job_upload", tag = "jobs", security(("api_key" = [])),
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job, with its source", body = JobView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job of this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Parts are missing (`upload.incomplete`, the detail names them), the job uploads with one PUT (`upload.not_multipart`), it ended (`job.not_awaiting_upload`), or the store no longer holds the upload (`upload.expired`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn complete_upload(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load(&state, &tenant, &id).await?;
    if job.spec.upload != UploadMethod::Multipart {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "upload.not_multipart",
            "this job's source is uploaded with one PUT; there is nothing to complete",
        ));
    }
    match job.status {
        JobStatus::AwaitingUpload => {}
        JobStatus::Failed | JobStatus::Canceled | JobStatus::Expired => {
            return Err(not_awaiting(&job));
        }
        // Completed before: the same answer again.
        _ => return Ok(Json(JobView::of(&job)).into_response()),
    }
    let upload = &multipart_of(&state, &job).await?;
    let key = &job.upload_key;
    let stored = multipart::list_parts(&state.s3, &state.bucket, key, &upload.upload_id)
        .await
        .map_err(|e| ApiError::unavailable("cannot list the uploaded parts", e))?;
    match stored {
        Some(stored) => {
            let missing = missing_parts(&upload.plan, &stored);
            if !missing.is_empty() {
                return Err(incomplete(&job, &missing));
            }
            multipart::complete(&state.s3, &state.bucket, key, &upload.upload_id, &stored)
                .await
                .map_err(|e| ApiError::unavailable("cannot complete the upload", e))?;
        }
        // Completed by an earlier call whose answer was lost, or aborted by the store.
        None => {
            let head = s3::head(&state.s3, &state.bucket, key)
                .await
                .map_err(|e| ApiError::unavailable("cannot read the upload", e))?;
            if head.is_none() {
                return Err(expired());
            }
        }
    }
    // As the store's notification would (it may come too, and finds the job moved on).
    let event = ObjectCreated::new(&state.bucket, key.as_str());
    state
        .bridge
        .handle(&event, UploadSource::Api)
        .await
        .map_err(|e| ApiError::unavailable("cannot start the job", e.0))?;
    let job = load(&state, &tenant, &id).await?;
    Ok(Json(JobView::of(&job)).into_response())
}

/// The job's multipart upload, started now if it has none yet (`POST /v1/jobs` starts it; a
/// job whose start failed half-way gets it here).
async fn multipart_of(state: &AppState, job: &Job) -> Result<MultipartUpload, ApiError> {
    if let Some(upload) = &job.multipart {
        return Ok(upload.clone());
    }
    let length = job.spec.content_length.ok_or_else(|| {
        // The spec checks this; a record without it cannot be uploaded in parts.
        ApiError::new(StatusCode::CONFLICT, "upload.no_length", "the job declares no length")
    })?;
    let content_type = job.spec.content_type.as_deref();
    let upload_id = multipart::create(&state.s3, &state.bucket, &job.upload_key, content_type)
        .await
        .map_err(|e| ApiError::unavailable("cannot start the multipart upload", e))?;
    let plan = multipart::PartPlan::new(length, state.config.multipart_part_size);
    let ours = MultipartUpload { upload_id, plan };
    let stored = state
        .jobs
        .start_multipart(&job.id, &ours)
        .await
        .map_err(|e| ApiError::unavailable("cannot record the multipart upload", e))?;
    if stored.as_ref().is_none_or(|stored| stored.upload_id != ours.upload_id) {
        // Another request started one first, or the job stopped awaiting: ours is not needed.
        let _ = multipart::abort(&state.s3, &state.bucket, &job.upload_key, &ours.upload_id).await;
    }
    stored.ok_or_else(|| not_awaiting(job))
}

async fn multipart_view(state: &AppState, job: &Job) -> Result<MultipartUploadView, ApiError> {
    let upload = multipart_of(state, job).await?;
    let key = &job.upload_key;
    let stored = multipart::list_parts(&state.s3, &state.bucket, key, &upload.upload_id)
        .await
        .map_err(|e| ApiError::unavailable("cannot list the uploaded parts", e))?
        .ok_or_else(expired)?;
    let missing = missing_parts(&upload.plan, &stored);
    let uploaded = stored
        .iter()
        .filter(|part| !missing.contains(&part.number))
        .map(|part| UploadedPartView { part_number: part.number, size: part.size })
        .collect();
    let ttl = state.config.upload_url_ttl;
    let expires_at = expires_at(ttl);
    let mut parts = Vec::with_capacity(missing.len());
    for number in missing {
        let size = upload.plan.size_of(number).expect("a missing part is one of the plan's");
        let presigned = multipart::presign_part(
            &state.s3,
            &state.bucket,
            key,
            &upload.upload_id,
            number,
            size,
            ttl,
        )
        .await
        .map_err(|e| ApiError::unavailable("cannot presign the upload", e))?;
        let upload = put_view(presigned, &expires_at);
        parts.push(PartUploadView { part_number: number, size, upload });
    }
    Ok(MultipartUploadView {
        part_size: upload.plan.part_size,
        part_count: upload.plan.count(),
        uploaded,
        parts,
        complete: format!("/v1/jobs/{}/upload/complete", job.id),
    })
}

/// Part numbers of `plan` the store does not hold at their planned size.
fn missing_parts(plan: &multipart::PartPlan, stored: &[multipart::StoredPart]) -> Vec<u32> {
    (1..=plan.count())
        .filter(|&number| {
            let size = plan.size_of(number);
            !stored.iter().any(|part| part.number == number && Some(part.size) == size)
        })
        .collect()
}

fn incomplete(job: &Job, missing: &[u32]) -> ApiError {
    let named: Vec<String> = missing.iter().take(MISSING_NAMED).map(u32::to_string).collect();
    let more = if missing.len() > MISSING_NAMED {
        format!(" and {} more", missing.len() - MISSING_NAMED)
    } else {
        String::new()
    };
    ApiError::new(
        StatusCode::CONFLICT,
        "upload.incomplete",
        format!(
            "{} part(s) missing: {}{more}; GET /v1/jobs/{}/upload lists them with URLs",
            missing.len(),
            named.join(", "),
            job.id
        ),
    )
}

fn not_awaiting(job: &Job) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "job.not_awaiting_upload",
        format!("the job is {}, not awaiting its upload", job.status),
    )
}

fn expired() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "upload.expired",
        "the store no longer holds this job's multipart upload (aborted); create a new job",
    )
}

/// A presigned PUT for the job's server-chosen key. When the client declared a length (and
/// type), they are signed: the store refuses any other size.
async fn presign_source(state: &AppState, job: &Job) -> Result<UploadView, ApiError> {
    let (length, content_type) = (job.spec.content_length, job.spec.content_type.as_deref());
    presign_key(state, &job.upload_key, length, content_type).await
}

async fn presign_key(
    state: &AppState,
    key: &s3::Key,
    length: Option<u64>,
    content_type: Option<&str>,
) -> Result<UploadView, ApiError> {
    let ttl = state.config.upload_url_ttl;
    let presigned = s3::presign_put(&state.s3, &state.bucket, key, length, content_type, ttl)
        .await
        .map_err(|e| ApiError::unavailable("cannot presign the upload", e))?;
    Ok(put_view(presigned, &expires_at(ttl)))
}

/// When URLs signed now for `ttl` expire (RFC 3339).
fn expires_at(ttl: std::time::Duration) -> String {
    rfc3339(now_ms() + u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

fn put_view(presigned: s3::Presigned, expires_at: &str) -> UploadView {
    UploadView {
        url: presigned.url,
        method: "PUT".to_owned(),
        headers: presigned.headers.into_iter().collect(),
        expires_at: expires_at.to_owned(),
    }
}

/// A presigned PUT per caption file the job uploads, at its server-chosen key. Their length
/// is not known up front: the bridge checks each against the cap when the job's files are all
/// in, and the worker again before reading one.
async fn presign_captions(state: &AppState, job: &Job) -> Result<Vec<CaptionUploadView>, ApiError> {
    let mut uploads = Vec::new();
    for (caption, spec) in job.spec.captions.iter().enumerate() {
        let CaptionFile::Upload(n) = spec.file else { continue };
        let key = s3::keys::caption_upload_key(&job.tenant, &job.id, n);
        let upload = presign_key(state, &key, None, None).await?;
        uploads.push(CaptionUploadView { caption, upload });
    }
    Ok(uploads)
}
