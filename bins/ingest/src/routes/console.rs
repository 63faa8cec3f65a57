//! The web console at `/`: static files compiled into the binary (bins/ingest/console/, and
//! hls.js vendored at build time), served with a Content Security Policy that allows only
//! these files and the origins uploads and outputs live on — no inline script, nothing from
//! elsewhere.

use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;
use tcoder::api::Problem;

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/console.js");
const STYLE: &str = include_str!("../../console/console.css");
const HLS: &str = include_str!(concat!(env!("OUT_DIR"), "/hls.min.js"));
const HLS_LICENSE: &str = include_str!(concat!(env!("OUT_DIR"), "/hls.js-LICENSE.txt"));

/// The web console.
#[utoipa::path(
    get, path = "/", operation_id = "get_console", tag = "console",
    responses((status = 200, description = "The console's page (with its Content-Security-Policy)", body = String, content_type = "text/html"))
)]
pub(crate) async fn index(State(state): State<AppState>) -> Response {
    let mut response = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
        INDEX,
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&state.console_policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    protect(headers);
    response
}

/// The console's script, style sheet and player (hls.js, with its licence).
#[utoipa::path(
    get, path = "/console/{file}", operation_id = "get_console_asset", tag = "console",
    params(("file" = String, Path, description = "console.js, console.css, hls.min.js or hls.js-LICENSE.txt")),
    responses(
        (status = 200, description = "The file", body = String, content_type = "text/javascript"),
        (status = 404, description = "No such file", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (content_type, body) = match file.as_str() {
        "console.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "console.css" => ("text/css; charset=utf-8", STYLE),
        "hls.min.js" => ("text/javascript; charset=utf-8", HLS),
        "hls.js-LICENSE.txt" => ("text/plain; charset=utf-8", HLS_LICENSE),
        _ => return Err(ApiError::not_found()),
    };
    let mut response =
        ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
            .into_response();
    protect(response.headers_mut());
    Ok(response)
}

/// Headers every console response carries: no sniffing, no framing, no referrer (a result
/// URL may be a signed playback URL).
fn protect(headers: &mut axum::http::HeaderMap) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

/// The console's Content Security Policy: its own files, and network, media and images from
/// this API and the object store's origins (presigned uploads, outputs, signed playback).
pub(crate) fn policy(s3_endpoint: &str, s3_public_url: &str, public_api_url: &str) -> String {
    let mut origins: Vec<String> = Vec::new();
    for url in [s3_endpoint, s3_public_url, public_api_url] {
        if let Some(origin) = origin_of(url)
            && !origins.contains(&origin)
        {
            origins.push(origin);
        }
    }
    // AWS S3's own endpoints (no `[s3] endpoint`): presigned URLs name the bucket's host.
    if s3_endpoint.is_empty() {
        origins.push("https://*.amazonaws.com".to_owned());
    }
    let origins = origins.join(" ");
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; \
         connect-src 'self' {origins}; media-src 'self' blob: {origins}; \
         img-src 'self' data: {origins}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// `scheme://host[:port]` of an http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_store_and_output_origins_only() {
        let policy = policy("http://127.0.0.1:19000", "https://media.example.com/videos", "");
        assert!(
            policy.contains("connect-src 'self' http://127.0.0.1:19000 https://media.example.com;"),
            "{policy}"
        );
        assert!(policy.contains("script-src 'self';") && !policy.contains("unsafe"), "{policy}");
        assert_eq!(origin_of("javascript:alert(1)"), None);
    }
}
