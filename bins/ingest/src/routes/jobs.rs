//! `/v1/jobs`: create (with presigned uploads, routes/uploads.rs), read, list, cancel, delete.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tcoder::api::{CreatedView, JobPageView, JobView, WebhookSecretView};
use tcoder::events::{self, JobEvent};
use tcoder::jobs::{CreateOutcome, Job, JobId, JobRequest, JobSpec, JobStatus, SpecLimits, Tenant};

use crate::auth::Caller;
use crate::bridge::lifecycle::{Canceled, Deleted};
use crate::error::ApiError;
use crate::state::AppState;
use tcoder::api::Problem;

/// Idempotency keys are opaque client strings up to this length.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Create a job and get a presigned URL to upload its source to.
#[utoipa::path(
    post, path = "/v1/jobs", operation_id = "create_job", tag = "jobs", security(("api_key" = [])),
    request_body = tcoder::jobs::JobRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 characters: a repeat with the same parameters returns the same job (`idempotent-replayed: true`)")),
    responses(
        (status = 201, description = "The job, awaiting its upload", body = CreatedView),
        (status = 400, description = "Malformed JSON or Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The Idempotency-Key was used with other parameters", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A parameter is invalid (`field` names it)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many jobs created with this key (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    headers: HeaderMap,
    body: Result<Json<JobRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    // The caller was authenticated from this header.
    let key = crate::auth::bearer_of(&headers).unwrap_or_default();
    let mut redis = state.redis.clone();
    match tcoder::auth::take_create_token(&mut redis, key, state.config.create_rate()).await {
        Ok(None) => {}
        Ok(Some(wait)) => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate.limited",
                "too many jobs created with this key; retry later",
            )
            .retry_after(wait.as_secs_f64().ceil().max(1.0) as u64));
        }
        Err(e) => return Err(ApiError::unavailable("cannot check the rate limit", e)),
    }
    let Json(request) = body.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "request.invalid_json", e.body_text())
    })?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key =
                value.to_str().ok().filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY);
            Some(key.ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "request.idempotency_key",
                    "Idempotency-Key must be 1-255 visible characters",
                )
            })?)
        }
    };
    let limits = SpecLimits {
        max_upload_bytes: state.config.max_upload_bytes,
        allowed_webhooks: &state.allowed_webhooks,
        tenant: &tenant,
        presigned: true,
        multipart_threshold: state.config.multipart_threshold,
        import: state.config.import.enabled.then_some(tcoder::jobs::ImportRules {
            allow_http: state.config.import.allow_http,
            allowed: &state.config.import.allowed,
        }),
    };
    let spec = JobSpec::from_request(request, limits).map_err(ApiError::validation)?;
    match state.bridge.check_caption_objects(&spec).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(ApiError::validation(error)),
        Err(e) => return Err(ApiError::unavailable("cannot read the caption files", e)),
    }
    if spec.webhook_url.is_some() {
        // The dispatcher signs with it but may not create it (its Redis user reads secrets).
        let mut redis = state.redis.clone();
        tcoder::webhooks::tenant_secret(&mut redis, &tenant, &state.webhook_secrets)
            .await
            .map_err(|e| ApiError::unavailable("cannot prepare the webhook secret", e))?;
    }
    let outcome = state
        .jobs
        .create(&tenant, &spec, idempotency_key, state.config.idempotency_ttl.as_secs())
        .await
        .map_err(|e| ApiError::unavailable("cannot create the job", e))?;
    let (job, replayed) = match outcome {
        CreateOutcome::Created(job) => {
            state.metrics.jobs_created.with_label_values(&[job.spec.preset.as_str()]).inc();
            let event = JobEvent::accepted(&job);
            if let Err(e) = events::publish_event(&state.js, &event).await {
                // Informational only: the job itself is safe in Redis.
                tracing::warn!(job = %job.id, error = %e, "accepted event not published");
            }
            if job.spec.source_url.is_some() {
                state.importer.start((*job).clone());
            }
            (*job, false)
        }
        CreateOutcome::Replayed(id) => {
            let job = state
                .jobs
                .get(&id)
                .await
                .map_err(|e| ApiError::unavailable("cannot read the job", e))?;
            (job.ok_or_else(ApiError::job_not_found)?, true)
        }
        CreateOutcome::Conflict(id) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency.conflict",
                format!("this Idempotency-Key was used for job {id} with different parameters"),
            ));
        }
    };
    let created = super::uploads::created_view(&state, &job).await?;
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A job: its status, request, source, result summary, error, webhook and progress.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", operation_id = "get_job", tag = "jobs", security(("api_key" = [])),
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job of this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load(&state, &tenant, &id).await?;
    let mut view = JobView::of(&job);
    if state.config.delivery == tcoder::config::Delivery::Signed
        && let Some(result) = &job.outputs
    {
        view.result = Some(signed_urls(&state, result));
    }
    if job.status == tcoder::jobs::JobStatus::Running {
        let latest = events::latest_event(&state.js, &job, "progress").await;
        view.progress = latest.and_then(|event| serde_json::from_value(event.data).ok());
    }
    Ok(Json(view).into_response())
}

/// `result` with every URL a playback URL signed now, valid for `playback_url_ttl`.
fn signed_urls(state: &AppState, result: &tcoder::jobs::JobResult) -> tcoder::jobs::JobResult {
    let play = signed_play_base(state, &result.prefix);
    result.with_urls(&|key| format!("{play}{key}"))
}

/// `<public_api_url>/v1/play/<token>/`: where the objects under `prefix` (an attempt's
/// folder, or a split job's parts folder) are read in signed delivery, with a token signed
/// now for `playback_url_ttl`; an object's key follows.
pub(crate) fn signed_play_base(state: &AppState, prefix: &str) -> String {
    let config = &state.config;
    let expires_at = tcoder::jobs::now_ms() / 1000 + config.playback_url_ttl.as_secs();
    let token =
        tcoder::playback::sign(config.playback_secret.expose().as_bytes(), prefix, expires_at);
    let base = if config.public_api_url.is_empty() {
        format!("http://{}", config.http_bind)
    } else {
        config.public_api_url.trim_end_matches('/').to_owned()
    };
    format!("{base}/v1/play/{token}/")
}

/// The job a viewer may see: with an API key, its tenant's; without one, any job while
/// outputs are public (what it shows is public then, under its job's URL).
pub(crate) async fn load_for_viewer(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<Job, ApiError> {
    match crate::auth::bearer_of(headers) {
        Some(key) => {
            let tenant = crate::auth::tenant_of(state, key).await?;
            load(state, &tenant, id).await
        }
        None if state.config.delivery == tcoder::config::Delivery::Public => {
            let id = JobId::parse(id).ok_or_else(ApiError::job_not_found)?;
            let job = state
                .jobs
                .get(&id)
                .await
                .map_err(|e| ApiError::unavailable("cannot read the job", e))?;
            job.ok_or_else(ApiError::job_not_found)
        }
        None => Err(ApiError::unauthorized()),
    }
}

/// Reads a job of the caller's tenant; anything else (malformed id, other tenant) is a 404.
pub(crate) async fn load(
    state: &AppState,
    tenant: &tcoder::jobs::Tenant,
    id: &str,
) -> Result<Job, ApiError> {
    let id = JobId::parse(id).ok_or_else(ApiError::job_not_found)?;
    let job = state
        .jobs
        .get_for_tenant(tenant, &id)
        .await
        .map_err(|e| ApiError::unavailable("cannot read the job", e))?;
    job.ok_or_else(ApiError::job_not_found)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only jobs in this status.
    #[param(value_type = Option<tcoder::jobs::JobStatus>)]
    status: Option<String>,
    /// 1-100 (default 20).
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The tenant's jobs, newest first, a page at a time.
#[utoipa::path(
    get, path = "/v1/jobs", operation_id = "list_jobs", tag = "jobs", security(("api_key" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "One page", body = JobPageView),
        (status = 400, description = "An unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad status, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "request.invalid_query", e.body_text())
    })?;
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<JobStatus>().map_err(|e| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation.status", e)
        })?),
    };
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation.limit",
            "limit must be between 1 and 100",
        ));
    }
    let cursor = match query.cursor.as_deref() {
        None => None,
        Some(c) => Some(JobId::parse(c).ok_or_else(|| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation.cursor", "unknown cursor")
        })?),
    };
    let page = state
        .jobs
        .list(&tenant, status, limit, cursor.as_ref())
        .await
        .map_err(|e| ApiError::unavailable("cannot list jobs", e))?;
    let jobs = page.jobs.iter().map(JobView::of).collect();
    Ok(Json(JobPageView { jobs, next_cursor: page.next_cursor }).into_response())
}

/// Cancel a job that has not ended.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", operation_id = "cancel_job", tag = "jobs", security(("api_key" = [])),
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The canceled job", body = JobView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job of this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job already ended", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load(&state, &tenant, &id).await?;
    let canceled =
        state.bridge.cancel(&job).await.map_err(|e| ApiError::unavailable("cannot cancel", e.0))?;
    match canceled {
        Canceled::Now => {}
        Canceled::AlreadyEnded(current) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "job.terminal",
                format!("the job is already {current}"),
            ));
        }
        Canceled::Missing => return Err(ApiError::job_not_found()),
    }
    let job = load(&state, &tenant, &id).await?;
    Ok(Json(JobView::of(&job)).into_response())
}

/// Delete a job: its outputs, its uploaded source and its record (a job that has not ended is
/// canceled first). Idempotent.
#[utoipa::path(
    delete, path = "/v1/jobs/{id}", operation_id = "delete_job", tag = "jobs", security(("api_key" = [])),
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 204, description = "The job is deleted (or was already, by this tenant)"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job of this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable; retry (nothing is lost: what is left is deleted by the retry)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id = JobId::parse(&id).ok_or_else(ApiError::job_not_found)?;
    let job = state
        .jobs
        .get_for_tenant(&tenant, &job_id)
        .await
        .map_err(|e| ApiError::unavailable("cannot read the job", e))?;
    let deleted = match job {
        Some(job) => {
            let ttl = state.config.idempotency_ttl.as_secs();
            let deleted = state.bridge.delete(&job, "client", ttl).await;
            deleted.map_err(|e| ApiError::unavailable("cannot delete the job", e.0))?
                == Deleted::Now
                || deleted_by(&state, &tenant, &job_id).await?
        }
        None => deleted_by(&state, &tenant, &job_id).await?,
    };
    if !deleted {
        return Err(ApiError::job_not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Whether `tenant` deleted this job lately (its tombstone): a repeated DELETE answers `204`
/// again; for anyone else the job does not exist.
async fn deleted_by(state: &AppState, tenant: &Tenant, id: &JobId) -> Result<bool, ApiError> {
    let owner = state
        .jobs
        .deleted_tenant(id)
        .await
        .map_err(|e| ApiError::unavailable("cannot read the job", e))?;
    Ok(owner.as_ref() == Some(tenant))
}

/// `GET /v1/webhook-secret`: the tenant's Standard Webhooks signing secret (`whsec_…`), to
/// verify the webhooks tcoder sends. Created on first use.
#[utoipa::path(
    get, path = "/v1/webhook-secret", operation_id = "get_webhook_secret", tag = "webhooks", security(("api_key" = [])),
    responses(
        (status = 200, description = "The tenant's signing secret", body = WebhookSecretView),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn webhook_secret(
    State(state): State<AppState>,
    Caller(tenant): Caller,
) -> Result<Response, ApiError> {
    let mut redis = state.redis.clone();
    let secret = tcoder::webhooks::tenant_secret(&mut redis, &tenant, &state.webhook_secrets)
        .await
        .map_err(|e| ApiError::unavailable("cannot read the webhook secret", e))?;
    let view =
        WebhookSecretView { secret: secret.display(), scheme: "standard-webhooks v1".to_owned() };
    Ok(Json(view).into_response())
}
