//! `GET /v1/jobs/{id}/thumbnail.jpg?time=&width=`: a still of any time of a completed title,
//! at the width an app asks for — scaled from the frames the worker stored with the job's
//! thumbnails (`thumbs/frames/<i>.jpg`, indexed by `thumbs/frames.json`), never from the
//! source (it is gone by then). Answers are cached in memory, and the scaling is bounded (a
//! few at once, never wider than the stored frame).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tcoder::engine::ThumbnailFrames;
use tcoder::jobs::{JobId, JobStatus};
use tcoder::s3::{self, Key};
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::state::AppState;
use tcoder::api::Problem;

/// Narrowest and widest widths asked for (a wider one than the stored frame gets the frame).
const WIDTHS: std::ops::RangeInclusive<u32> = 16..=1920;
/// Thumbnails kept in memory, and their bytes at most.
const CACHED: usize = 512;
const CACHED_BYTES: usize = 32 << 20;
/// Thumbnails scaled at once.
const SCALING: usize = 2;
/// JPEG quality of the answers.
const QUALITY: u8 = 85;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ThumbnailQuery {
    /// Seconds into the title (default: the poster's time); past the end, the last frame.
    time: Option<f64>,
    /// Width in pixels, 16-1920 (default and at most: the stored frame's, 640 for a wide
    /// title); the height follows the picture's aspect ratio.
    width: Option<u32>,
}

/// What one thumbnail is: a frame of one attempt's outputs at one width.
type CacheKey = (JobId, u64, u32, u32);

/// Recently answered thumbnails and frame indexes, oldest dropped first.
#[derive(Debug)]
pub(crate) struct ThumbnailCache {
    inner: Mutex<Cached>,
    scaling: Semaphore,
}

#[derive(Debug, Default)]
struct Cached {
    images: HashMap<CacheKey, Bytes>,
    order: VecDeque<CacheKey>,
    bytes: usize,
    indexes: HashMap<(JobId, u64), ThumbnailFrames>,
}

impl Default for ThumbnailCache {
    fn default() -> ThumbnailCache {
        ThumbnailCache { inner: Mutex::default(), scaling: Semaphore::new(SCALING) }
    }
}

impl ThumbnailCache {
    fn image(&self, key: &CacheKey) -> Option<Bytes> {
        self.inner.lock().expect("cache lock").images.get(key).cloned()
    }

    fn keep_image(&self, key: CacheKey, image: Bytes) {
        let mut cached = self.inner.lock().expect("cache lock");
        cached.bytes += image.len();
        if cached.images.insert(key.clone(), image).is_none() {
            cached.order.push_back(key);
        }
        while cached.order.len() > CACHED || cached.bytes > CACHED_BYTES {
            let Some(oldest) = cached.order.pop_front() else { break };
            if let Some(dropped) = cached.images.remove(&oldest) {
                cached.bytes -= dropped.len();
            }
        }
    }

    fn index(&self, job: &JobId, epoch: u64) -> Option<ThumbnailFrames> {
        self.inner.lock().expect("cache lock").indexes.get(&(job.clone(), epoch)).cloned()
    }

    fn keep_index(&self, job: &JobId, epoch: u64, index: ThumbnailFrames) {
        let mut cached = self.inner.lock().expect("cache lock");
        if cached.indexes.len() >= CACHED {
            cached.indexes.clear();
        }
        cached.indexes.insert((job.clone(), epoch), index);
    }
}

/// A still of the title at `time`, `width` pixels wide, as a JPEG.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/thumbnail.jpg", operation_id = "get_job_thumbnail", tag = "jobs",
    security(("api_key" = []), ()),
    params(("id" = String, Path, description = "The job id"), ThumbnailQuery),
    responses(
        (status = 200, description = "The JPEG", body = Vec<u8>, content_type = "image/jpeg"),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "An unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key (needed unless outputs are public)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job of this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has no thumbnail frames (not completed, or without the thumbnails output)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad time or width", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn thumbnail(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<ThumbnailQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "request.invalid_query", e.body_text())
    })?;
    let job = super::jobs::load_for_viewer(&state, &headers, &id).await?;
    if let Some(time) = query.time
        && !(time.is_finite() && time >= 0.0)
    {
        return Err(invalid("validation.time", "time must be a number of seconds, at least 0"));
    }
    if let Some(width) = query.width
        && !WIDTHS.contains(&width)
    {
        return Err(invalid(
            "validation.width",
            format!("width must be between {} and {}", WIDTHS.start(), WIDTHS.end()),
        ));
    }
    let no_frames = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "job.no_thumbnails",
            "the job has no thumbnail frames: it has not completed, or has no thumbnails output",
        )
    };
    let result = job.outputs.as_ref().filter(|_| job.status == JobStatus::Completed);
    let result = result.ok_or_else(no_frames)?;
    result.thumbnails.as_ref().and_then(|t| t.frames.as_ref()).ok_or_else(no_frames)?;
    let cache = &state.thumbnails;
    let index = match cache.index(&job.id, result.epoch) {
        Some(index) => index,
        None => {
            let raw = read(&state, &result.prefix, "thumbs/frames.json").await?;
            let index: ThumbnailFrames = serde_json::from_slice(&raw).map_err(|e| {
                ApiError::unavailable("the thumbnail index is unreadable", e.to_string())
            })?;
            cache.keep_index(&job.id, result.epoch, index.clone());
            index
        }
    };
    let time = query.time.unwrap_or(index.duration_secs * 0.1).min(index.duration_secs);
    let frame = index.nearest(time);
    let width = query.width.unwrap_or(index.width).min(index.width);
    let key: CacheKey = (job.id.clone(), result.epoch, frame, width);
    let etag = format!("\"{}-{}-{frame}-{width}\"", job.id, result.epoch);
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return Ok(respond(StatusCode::NOT_MODIFIED, &headers, &etag, Body::empty()));
    }
    let image = match cache.image(&key) {
        Some(image) => image,
        None => {
            let stored =
                read(&state, &result.prefix, &format!("thumbs/frames/{frame}.jpg")).await?;
            let _slot =
                cache.scaling.acquire().await.map_err(|e| {
                    ApiError::unavailable("cannot scale the thumbnail", e.to_string())
                })?;
            let image = tokio::task::spawn_blocking(move || scaled(&stored, width))
                .await
                .map_err(|e| ApiError::unavailable("cannot scale the thumbnail", e.to_string()))?
                .map_err(|e| ApiError::unavailable("cannot scale the thumbnail", e))?;
            cache.keep_image(key, image.clone());
            image
        }
    };
    Ok(respond(StatusCode::OK, &headers, &etag, Body::from(image)))
}

/// Reads `<prefix><file>` of the job's outputs.
async fn read(state: &AppState, prefix: &str, file: &str) -> Result<Vec<u8>, ApiError> {
    let key = Key::parse(&format!("{prefix}{file}"))
        .map_err(|e| ApiError::unavailable("a malformed output key", e.to_string()))?;
    s3::get_small(&state.s3, &state.bucket, &key, MAX_STORED)
        .await
        .map_err(|e| ApiError::unavailable("cannot read the thumbnail frames", e))
}

/// Stills and their index are small (a JPEG up to 640 wide, a JSON of names).
const MAX_STORED: usize = 8 << 20;

/// `stored` (a JPEG) scaled to `width`, as a JPEG; as it is when it is that wide already.
fn scaled(stored: &[u8], width: u32) -> Result<Bytes, String> {
    let picture = image::load_from_memory_with_format(stored, image::ImageFormat::Jpeg)
        .map_err(|e| format!("a stored frame is not a JPEG: {e}"))?;
    if picture.width() <= width {
        return Ok(Bytes::copy_from_slice(stored));
    }
    let height = ((f64::from(picture.height()) * f64::from(width) / f64::from(picture.width()))
        .round() as u32)
        .max(1);
    let resized = picture.resize_exact(width, height, image::imageops::FilterType::Triangle);
    let mut out = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, QUALITY);
    resized.to_rgb8().write_with_encoder(encoder).map_err(|e| format!("encode: {e}"))?;
    Ok(Bytes::from(out))
}

fn respond(status: StatusCode, asked: &HeaderMap, etag: &str, body: Body) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    // A key's answer is for its tenant alone; without one, outputs are public anyway.
    let cache = if asked.contains_key(header::AUTHORIZATION) {
        "private, max-age=3600"
    } else {
        "public, max-age=3600"
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(etag) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, etag);
    }
    response
}

fn invalid(code: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
}
