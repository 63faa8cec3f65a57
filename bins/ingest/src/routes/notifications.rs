//! `POST /v1/notifications/r2` (an R2 event body, e.g. forwarded by a Worker) and
//! `POST /v1/notifications/s3` (AWS S3 / MinIO / Ceph event JSON), authenticated with the shared
//! `ingest.notification_secret` as a bearer token.
//!
//! Answers: 200 when every event was handled or deliberately dropped (a sender must not retry
//! those forever), 503 when something transient failed (the sender retries), 400 for a body
//! we cannot parse, 401 for a wrong secret, 404 when the endpoints are disabled.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tcoder::events::UploadSource;
use tcoder::s3::ObjectCreated;

use crate::bridge::normalize::{self, Malformed};
use crate::error::ApiError;
use crate::state::AppState;
use tcoder::api::Problem;
use tcoder::api::{NotificationOutcome, NotificationView};

/// A Cloudflare R2 event notification body (as a Worker or a Queue push forwards it), authenticated with `[ingest] notification_secret`.
#[utoipa::path(
    post, path = "/v1/notifications/r2", operation_id = "notify_r2", tag = "notifications", security(("notification_secret" = [])),
    request_body(content = Object, description = "The notification, as the store sends it"),
    responses(
        (status = 200, description = "Every event handled or deliberately dropped", body = NotificationView),
        (status = 400, description = "A body that is not a notification", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "A wrong or missing secret", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Notifications are disabled (no secret configured)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Something transient failed; send it again", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn r2(
    State(state): State<AppState>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &parts)?;
    let events = normalize::parse_r2(&body).map_err(malformed)?;
    deliver(&state, &events, UploadSource::R2).await
}

/// AWS S3, MinIO or Ceph event JSON (an SNS envelope is unwrapped), authenticated with `[ingest] notification_secret`.
#[utoipa::path(
    post, path = "/v1/notifications/s3", operation_id = "notify_s3", tag = "notifications", security(("notification_secret" = [])),
    request_body(content = Object, description = "The notification, as the store sends it"),
    responses(
        (status = 200, description = "Every event handled or deliberately dropped", body = NotificationView),
        (status = 400, description = "A body that is not a notification", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "A wrong or missing secret", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Notifications are disabled (no secret configured)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Something transient failed; send it again", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn s3(
    State(state): State<AppState>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &parts)?;
    let events = normalize::parse_s3(&body).map_err(malformed)?;
    deliver(&state, &events, UploadSource::S3).await
}

fn authorize(state: &AppState, parts: &Parts) -> Result<(), ApiError> {
    let secret = state.config.notification_secret.expose();
    if secret.is_empty() {
        return Err(ApiError::not_found());
    }
    let presented = crate::auth::bearer(parts).unwrap_or_default();
    if bool::from(presented.as_bytes().ct_eq(secret.as_bytes())) {
        Ok(())
    } else {
        state.metrics.auth_failures.inc();
        Err(ApiError::unauthorized())
    }
}

fn malformed(e: Malformed) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "notification.malformed", e.to_string())
}

async fn deliver(
    state: &AppState,
    events: &[ObjectCreated],
    source: UploadSource,
) -> Result<Response, ApiError> {
    let mut outcomes = Vec::with_capacity(events.len());
    for event in events {
        match state.bridge.handle(event, source).await {
            Ok(outcome) => outcomes.push(NotificationOutcome {
                key: event.key.clone(),
                outcome: outcome.as_str().to_owned(),
            }),
            Err(e) => return Err(ApiError::unavailable("cannot process the notification", e)),
        }
    }
    Ok((StatusCode::OK, axum::Json(NotificationView { events: outcomes })).into_response())
}
