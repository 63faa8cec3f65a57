//! `GET /v1/jobs/{id}/hls/{path}`: a job's HLS set at one URL that does not change with its
//! attempts (the result's URLs name the winning epoch) nor when it completes: while a split
//! title encodes, its progressive set (`super::progressive`), then the completed one, under the
//! same segment paths. Playlists are served from here, so the relative URIs in them keep
//! resolving under this URL; segments and init sections are redirected (302) to their
//! immutable objects, so the media itself never passes through ingest.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tcoder::jobs::{Job, JobStatus};
use tcoder::s3::{self, Key};

use crate::error::ApiError;
use crate::state::AppState;
use tcoder::api::Problem;

/// Playlists are read whole; a media playlist of a long title is a few hundred KiB.
const MAX_PLAYLIST: usize = 4 << 20;

/// A file of the job's HLS set (`master.m3u8`, `<rung>/index.m3u8`, segments), the same URL
/// whichever attempt made it: while a long title encodes, its growing (EVENT) playlists of the
/// parts encoded so far; once completed, the finished set under the same paths.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/hls/{path}", operation_id = "get_job_hls", tag = "delivery",
    security(("api_key" = []), ()),
    params(
        ("id" = String, Path, description = "The job id"),
        ("path" = String, Path, description = "`master.m3u8`, or a file it leads to (may contain /)"),
    ),
    responses(
        (status = 200, description = "A playlist", body = String, content_type = "application/vnd.apple.mpegurl"),
        (status = 302, description = "A segment or init section: its object (Location)"),
        (status = 401, description = "No valid API key (needed unless outputs are public)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job of this tenant, no HLS output, or no such file", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job does not play (`job.not_playable`): not yet (a long title plays once its first part is encoded, anything else once completed), or it failed or was canceled", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn hls(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = super::jobs::load_for_viewer(&state, &headers, &id).await?;
    if !job.spec.outputs.contains(&tcoder::jobs::OutputKind::Hls) {
        return Err(ApiError::not_found());
    }
    match (job.status, &job.outputs) {
        (JobStatus::Completed, Some(result)) => completed(&state, &job, result, &path).await,
        // Playable before it completes: a split title whose first parts are in. A job
        // requeued after its coordinator died keeps its committed parts, and plays on.
        (JobStatus::Running | JobStatus::Queued, _) if job.playable_at.is_some() => {
            super::progressive::serve(&state, &job, &path).await
        }
        (status, _) if status.is_terminal() => Err(ApiError::new(
            StatusCode::CONFLICT,
            "job.not_playable",
            format!("the job is {status}; it does not play"),
        )),
        (status, _) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "job.not_playable",
            format!("the job is {status}; it plays once its first part is encoded"),
        )),
    }
}

/// `path` of a completed job's HLS set: playlists served, the rest redirected.
async fn completed(
    state: &AppState,
    job: &Job,
    result: &tcoder::jobs::JobResult,
    path: &str,
) -> Result<Response, ApiError> {
    if result.hls_master.is_none() {
        return Err(ApiError::not_found());
    }
    // Only a canonical key under the attempt's own `hls/` folder: `..`, `//`, encoded
    // separators and the like are not paths here.
    let key =
        Key::parse(&format!("{}hls/{path}", result.prefix)).map_err(|_| ApiError::not_found())?;
    if !path.ends_with(".m3u8") {
        return redirect_to(state, job, &key);
    }
    match s3::get_small(&state.s3, &state.bucket, &key, MAX_PLAYLIST).await {
        Ok(bytes) => Ok(playlist_response(bytes, false)),
        Err(s3::S3Error::NotFound(_)) => Err(ApiError::not_found()),
        Err(e) => Err(ApiError::unavailable("cannot read the playlist", e)),
    }
}

/// A playlist answer. A completed set never changes, but the URL outlives attempts: a short
/// life; a progressive playlist grows, so players must ask again every time.
pub(crate) fn playlist_response(bytes: Vec<u8>, progressive: bool) -> Response {
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.apple.mpegurl"));
    let life = if progressive { "no-cache" } else { "max-age=60" };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(life));
    response
}

/// A 302 to object `key` of `job`: its public URL, or in signed delivery its playback URL
/// under a token for the folder it lies in (an attempt's, or the job's parts).
pub(crate) fn redirect_to(state: &AppState, job: &Job, key: &Key) -> Result<Response, ApiError> {
    if !key.is_in(&tcoder::s3::keys::job_outputs_prefix(&job.tenant, &job.id)) {
        return Err(ApiError::not_found());
    }
    let location = match state.config.delivery {
        tcoder::config::Delivery::Signed => {
            let folder =
                tcoder::playback::attempt_prefix(key.as_str()).ok_or_else(ApiError::not_found)?;
            format!("{}{key}", super::jobs::signed_play_base(state, folder))
        }
        tcoder::config::Delivery::Public => state.store.public_url_of(key.as_str()),
    };
    let mut response = StatusCode::FOUND.into_response();
    let value = HeaderValue::from_str(&location)
        .map_err(|e| ApiError::unavailable("a malformed object URL", e))?;
    response.headers_mut().insert(header::LOCATION, value);
    Ok(response)
}
