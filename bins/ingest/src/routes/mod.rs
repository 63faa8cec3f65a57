//! The public HTTP API (JSON, versioned under `/v1`). Errors are problem+json.

mod console;
mod events;
mod jobs;
mod notifications;
mod openapi;
mod play;
pub(crate) mod progressive;
mod stream;
pub(crate) mod thumbnail;
mod uploads;

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::state::AppState;

pub(crate) use console::policy as console_policy;

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get).delete(jobs::delete))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/upload", get(uploads::get_upload))
        .route("/v1/jobs/{id}/upload/complete", post(uploads::complete_upload))
        .route("/v1/jobs/{id}/events", get(events::stream))
        .route("/v1/jobs/{id}/thumbnail.jpg", get(thumbnail::thumbnail))
        .route("/v1/jobs/{id}/hls/{*path}", get(stream::hls))
        .route("/v1/webhook-secret", get(jobs::webhook_secret))
        .route("/v1/play/{token}/{*key}", get(play::play).head(play::play))
        .route("/v1/notifications/r2", post(notifications::r2))
        .route("/v1/notifications/s3", post(notifications::s3))
        .route("/asyncapi.yaml", get(asyncapi))
        .route("/openapi.json", get(openapi::document))
        .route("/", get(console::index))
        .route("/console/{file}", get(console::asset))
        .fallback(|| async { ApiError::not_found().into_response() })
        .layer(middleware::from_fn(problem_json))
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .layer(middleware::from_fn_with_state(state.clone(), cors))
        .with_state(state)
}

/// CORS: preflights are answered here (before routing: no route takes OPTIONS), every other
/// response gets the allowed origin (see `tcoder::cors`).
async fn cors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if tcoder::cors::Cors::is_preflight(request.method(), request.headers()) {
        let headers = state.cors.preflight_headers(request.headers());
        return (axum::http::StatusCode::NO_CONTENT, headers).into_response();
    }
    let asked = request.headers().clone();
    let mut response = next.run(request).await;
    state.cors.decorate(&asked, response.headers_mut());
    response
}

/// Every error is problem+json: answers the framework makes itself (405 with an empty body, 413
/// from a body limit in text/plain, a rejected extractor) are rewritten with a stable `code`;
/// their other headers (`Allow`) stay.
async fn problem_json(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (code, detail) = match status {
        axum::http::StatusCode::METHOD_NOT_ALLOWED => {
            ("request.method_not_allowed", "this resource does not take that method")
        }
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            ("request.too_large", "the request body is larger than this endpoint takes")
        }
        axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("request.unsupported_media_type", "send the body as application/json")
        }
        axum::http::StatusCode::NOT_FOUND => ("not_found", "no such resource"),
        s if s.is_server_error() => ("service.unavailable", "the request failed; retry shortly"),
        _ => ("request.invalid", "the request is malformed"),
    };
    let (mut parts, _) = response.into_parts();
    let mut problem = ApiError::new(status, code, detail).into_response();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    for (name, value) in problem.headers() {
        parts.headers.insert(name.clone(), value.clone());
    }
    *problem.headers_mut() = parts.headers;
    problem
}

/// Counts every request by route template (bounded labels: never an id) and times it.
async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    state.metrics.http_requests.with_label_values(&[&route, &method, &status]).inc();
    state
        .metrics
        .http_duration
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The `AsyncAPI` 3.0 description of every NATS subject a user publishes to or subscribes to.
#[utoipa::path(
    get, path = "/asyncapi.yaml", operation_id = "get_asyncapi", tag = "contracts",
    responses((status = 200, description = "docs/asyncapi.yaml", body = String, content_type = "application/yaml"))
)]
pub(crate) async fn asyncapi() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/yaml")], ASYNCAPI)
}

/// docs/asyncapi.yaml, served as shipped (a test checks it against the payloads tcoder sends).
const ASYNCAPI: &str = include_str!("../../../../docs/asyncapi.yaml");
