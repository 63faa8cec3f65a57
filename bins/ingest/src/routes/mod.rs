//! The public HTTP API (JSON, versioned under `/v1`). Errors are problem+json.

mod events;
mod jobs;
mod notifications;
mod play;
mod view;

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::state::AppState;

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/events", get(events::stream))
        .route("/v1/webhook-secret", get(jobs::webhook_secret))
        .route("/v1/play/{token}/{*key}", get(play::play).head(play::play))
        .route("/v1/notifications/r2", post(notifications::r2))
        .route("/v1/notifications/s3", post(notifications::s3))
        .fallback(|| async { ApiError::not_found().into_response() })
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
