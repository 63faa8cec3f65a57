//! `GET|HEAD /v1/play/<token>/<key>`: outputs of private buckets, for `delivery = "signed"`.
//! The token (see `tcoder::playback`) covers one attempt's output tree until it expires; the
//! object is streamed from the bucket, byte ranges passed through.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tcoder::config::Delivery;
use tcoder::playback::{self, PlaybackError};
use tcoder::s3::{self, Key, S3Error};

use crate::error::ApiError;
use crate::state::AppState;
use tcoder::api::Problem;

/// An output through a signed playback URL (`delivery = "signed"`): byte ranges, HEAD,
/// the object's content type.
#[utoipa::path(
    method(get, head), path = "/v1/play/{token}/{key}", operation_id = "get_playback", tag = "delivery",
    params(
        ("token" = String, Path, description = "The playback token of the job's outputs"),
        ("key" = String, Path, description = "The output's key (may contain /)"),
        ("Range" = Option<String>, Header, description = "bytes=…"),
    ),
    responses(
        (status = 200, description = "The object", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 206, description = "The requested range", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 403, description = "The token is invalid, expired or for other outputs", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such object, or signed delivery is off", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The range is not satisfiable", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn play(
    State(state): State<AppState>,
    Path((token, key)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if state.config.delivery != Delivery::Signed {
        return Err(ApiError::not_found());
    }
    // Only a canonical key is looked up: the token grants a folder, and `..` or an encoded
    // separator would name an object outside it through a spelling inside it.
    let key = Key::parse(&key).map_err(|e| {
        ApiError::new(StatusCode::FORBIDDEN, "playback.forbidden", format!("key: {e}"))
    })?;
    let now = tcoder::jobs::now_ms() / 1000;
    playback::verify(state.config.playback_secret.expose().as_bytes(), &token, &key, now).map_err(
        |e| match e {
            PlaybackError::Expired => {
                ApiError::new(StatusCode::FORBIDDEN, "playback.expired", e.to_string())
            }
            PlaybackError::Invalid | PlaybackError::NotAnOutput => {
                ApiError::new(StatusCode::FORBIDDEN, "playback.forbidden", e.to_string())
            }
        },
    )?;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let object = s3::get(&state.s3, &state.bucket, &key, range).await.map_err(|e| match e {
        S3Error::NotFound(_) => ApiError::not_found(),
        S3Error::RangeNotSatisfiable(_) => ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "playback.range",
            "the range lies outside the object",
        ),
        other => ApiError::unavailable("cannot read the object", other),
    })?;
    let status = if object.partial { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let mut response = if method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        let reader = object.body.into_async_read();
        Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(reader)))
    };
    *response.status_mut() = status;
    let out = response.headers_mut();
    let mut set = |name: header::HeaderName, value: Option<String>| {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            out.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, object.content_type);
    set(header::CONTENT_LENGTH, object.content_length.map(|n| n.to_string()));
    set(header::CONTENT_RANGE, object.content_range);
    set(header::ETAG, object.etag);
    set(header::ACCEPT_RANGES, Some("bytes".to_owned()));
    // The URL carries a credential: shared caches must not keep the object for others.
    set(header::CACHE_CONTROL, Some("private, max-age=3600".to_owned()));
    Ok(response.into_response())
}
