//! A typed client of tcoder's HTTP API: what the `tcoder` commands and the tests use, so they
//! read the same [`super::views`] the routes write.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;

use super::views::{
    CreatedView, JobPageView, JobView, PartUploadView, Problem, UploadView, WebhookSecretView,
};
use crate::events::JobEvent;
use crate::jobs::{JobRequest, JobStatus};

/// Connections of an event stream before giving up (a stream ends each hour, or when its
/// ingest stops; an API away for a while is tried again with growing pauses).
const MAX_STREAM_RECONNECTS: usize = 40;
/// First pause before reconnecting to an API that did not answer, doubling up to the most.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(5);
/// Tries of one part's PUT before its URL is renewed.
const PART_ATTEMPTS: u32 = 3;
/// Rounds of a multipart upload: each sends the parts still missing, with fresh URLs after
/// the first.
const UPLOAD_ROUNDS: u32 = 3;

/// What uploading a source took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadReport {
    /// Parts sent (a single PUT counts as one).
    pub parts_sent: u32,
    /// Parts the store held already (a resumed upload), not sent again.
    pub parts_already_stored: u32,
    /// PUTs that failed and were repeated.
    pub failed_attempts: u32,
}

/// The API's address and the caller's key.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

/// Why a call did not give its answer, sorted by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API did not answer (down, wrong address, connection cut): retrying may help.
    #[error("cannot reach the API at {base}: {source}")]
    Unreachable {
        base: String,
        #[source]
        source: reqwest::Error,
    },
    /// The API answered with an error; `problem.code` says which.
    #[error("API error {status} ({}): {}", problem.code, problem.detail)]
    Refused { status: u16, problem: Box<Problem> },
    /// The API answered success with a body that is not the documented view.
    #[error("the API's answer to {request} is not the documented shape: {detail}")]
    Malformed { request: String, detail: String },
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The object store refused the presigned upload.
    #[error("the object store refused the upload: {status} {body}")]
    UploadRefused { status: u16, body: String },
    #[error("job {id} did not end within {timeout:?}")]
    Timeout { id: String, timeout: Duration },
    #[error("lost the event stream of job {id} too often")]
    StreamLost { id: String },
}

impl ClientError {
    /// The problem's stable code, when the API refused the call.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { problem, .. } => Some(&problem.code),
            _ => None,
        }
    }

    /// Worth repeating as is: the API was unreachable or answered 503.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Refused { status, .. } => *status == 503,
            _ => false,
        }
    }
}

/// Which page of `GET /v1/jobs`.
#[derive(Debug, Clone, Default)]
pub struct JobsQuery {
    pub status: Option<JobStatus>,
    /// 1-100; the API's default (20) when `None`.
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Client {
    pub fn new(base: &str, key: &str) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| ClientError::Unreachable { base: base.to_owned(), source })?;
        Ok(Client { http, base: base.trim_end_matches('/').to_owned(), key: key.to_owned() })
    }

    /// The API's address, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        ClientError::Unreachable { base: self.base.clone(), source }
    }

    /// Sends `request` with the key and reads a `T` from a success, a [`Problem`] otherwise.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response =
            request.bearer_auth(&self.key).send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            return Err(refused(status, &body));
        }
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Malformed { request: what.to_owned(), detail: e.to_string() })
    }

    /// `POST /v1/jobs`; with `idempotency_key`, a repeat returns the same job.
    pub async fn create_job(
        &self,
        request: &JobRequest,
        idempotency_key: Option<&str>,
    ) -> Result<CreatedView, ClientError> {
        let mut post = self.http.post(self.url("/v1/jobs")).json(request);
        if let Some(key) = idempotency_key {
            post = post.header("idempotency-key", key);
        }
        self.call("POST /v1/jobs", post).await
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<JobView, ClientError> {
        self.call("GET /v1/jobs/{id}", self.http.get(self.url(&format!("/v1/jobs/{id}")))).await
    }

    /// `GET /v1/jobs`: one page of the tenant's jobs, newest first.
    pub async fn jobs(&self, query: &JobsQuery) -> Result<JobPageView, ClientError> {
        let mut pairs = Vec::new();
        if let Some(status) = query.status {
            pairs.push(("status", status.as_str().to_owned()));
        }
        if let Some(limit) = query.limit {
            pairs.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = &query.cursor {
            pairs.push(("cursor", cursor.clone()));
        }
        self.call("GET /v1/jobs", self.http.get(self.url("/v1/jobs")).query(&pairs)).await
    }

    /// `POST /v1/jobs/{id}/cancel`: the canceled job.
    pub async fn cancel(&self, id: &str) -> Result<JobView, ClientError> {
        let post = self.http.post(self.url(&format!("/v1/jobs/{id}/cancel")));
        self.call("POST /v1/jobs/{id}/cancel", post).await
    }

    /// `DELETE /v1/jobs/{id}`: the job, its outputs and its uploaded source are deleted (a
    /// job that has not ended is canceled first). Deleting it again succeeds too.
    pub async fn delete(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/jobs/{id}");
        let request = self.http.delete(self.url(&path)).bearer_auth(&self.key);
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
        Err(refused(status, &body))
    }

    /// `GET /v1/webhook-secret`.
    pub async fn webhook_secret(&self) -> Result<WebhookSecretView, ClientError> {
        self.call("GET /v1/webhook-secret", self.http.get(self.url("/v1/webhook-secret"))).await
    }

    /// `GET /v1/jobs/{id}/upload`: fresh upload URLs of a job awaiting its files; for a
    /// multipart upload, only the parts the store does not hold.
    pub async fn upload_urls(&self, id: &str) -> Result<CreatedView, ClientError> {
        let path = format!("/v1/jobs/{id}/upload");
        self.call(&format!("GET {path}"), self.http.get(self.url(&path))).await
    }

    /// `POST /v1/jobs/{id}/upload/complete`.
    pub async fn complete_upload(&self, id: &str) -> Result<JobView, ClientError> {
        let path = format!("/v1/jobs/{id}/upload/complete");
        self.call(&format!("POST {path}"), self.http.post(self.url(&path))).await
    }

    /// Uploads `file` as the job's source, the way `created` (an answer of `POST /v1/jobs`
    /// or [`Client::upload_urls`]) says: one PUT, or the parts still missing followed by the
    /// complete call. A failed part is sent again, with a fresh URL after [`PART_ATTEMPTS`];
    /// parts the store holds are never sent twice. `progress` gets byte counts.
    pub async fn upload_source(
        &self,
        created: &CreatedView,
        file: &Path,
        progress: impl Fn(u64) + Clone + Send + Sync + 'static,
    ) -> Result<UploadReport, ClientError> {
        let mut report = UploadReport::default();
        if let Some(upload) = &created.upload {
            self.upload(upload, file, progress).await?;
            report.parts_sent = 1;
            return Ok(report);
        }
        let Some(mut view) = created.multipart_upload.clone() else {
            return Err(ClientError::Malformed {
                request: "POST /v1/jobs".to_owned(),
                detail: "no upload for a job awaiting its source".to_owned(),
            });
        };
        let id = created.job.id.to_string();
        report.parts_already_stored = u32::try_from(view.uploaded.len()).unwrap_or(u32::MAX);
        for round in 1..=UPLOAD_ROUNDS {
            let mut failure = None;
            for part in &view.parts {
                let offset = u64::from(part.part_number - 1) * view.part_size;
                match self.upload_part(part, file, offset, &progress, &mut report).await {
                    Ok(()) => report.parts_sent += 1,
                    Err(e) => failure = Some(e),
                }
            }
            match failure {
                None => break,
                Some(e) if round == UPLOAD_ROUNDS => return Err(e),
                Some(_) => view = self.upload_urls(&id).await?.multipart_upload.unwrap_or(view),
            }
        }
        self.complete_upload(&id).await?;
        Ok(report)
    }

    /// PUTs one part: `part.size` bytes of `file` from `offset`, tried [`PART_ATTEMPTS`]
    /// times unless the store refuses the URL itself (expired: a fresh one is needed).
    async fn upload_part(
        &self,
        part: &PartUploadView,
        file: &Path,
        offset: u64,
        progress: &(impl Fn(u64) + Clone + Send + Sync + 'static),
        report: &mut UploadReport,
    ) -> Result<(), ClientError> {
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
        let unreadable = |source| ClientError::File { path: file.display().to_string(), source };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut handle = tokio::fs::File::open(file).await.map_err(unreadable)?;
            handle.seek(std::io::SeekFrom::Start(offset)).await.map_err(unreadable)?;
            let tick = progress.clone();
            let stream =
                tokio_util::io::ReaderStream::new(handle.take(part.size)).inspect(move |chunk| {
                    if let Ok(bytes) = chunk {
                        tick(bytes.len() as u64);
                    }
                });
            let body = reqwest::Body::wrap_stream(stream);
            match self.put(&part.upload, part.size, body).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    report.failed_attempts += 1;
                    let refused = matches!(e, ClientError::UploadRefused { status: 400..=499, .. });
                    if refused || attempt >= PART_ATTEMPTS {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                }
            }
        }
    }

    /// PUTs `file` to a presigned upload, streaming from disk; `progress` gets byte counts.
    pub async fn upload(
        &self,
        upload: &UploadView,
        file: &Path,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<(), ClientError> {
        let unreadable = |source| ClientError::File { path: file.display().to_string(), source };
        let length = tokio::fs::metadata(file).await.map_err(unreadable)?.len();
        let handle = tokio::fs::File::open(file).await.map_err(unreadable)?;
        let stream = tokio_util::io::ReaderStream::new(handle).inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                progress(bytes.len() as u64);
            }
        });
        self.put(upload, length, reqwest::Body::wrap_stream(stream)).await
    }

    /// PUTs `body` to a presigned upload.
    pub async fn upload_bytes(
        &self,
        upload: &UploadView,
        body: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.put(upload, body.len() as u64, body.into()).await
    }

    async fn put(
        &self,
        upload: &UploadView,
        length: u64,
        body: reqwest::Body,
    ) -> Result<(), ClientError> {
        let mut request = self.http.put(&upload.url).header("content-length", length).body(body);
        // The signed headers exactly; the length is the body's own.
        for (name, value) in upload.headers.iter().filter(|(name, _)| *name != "content-length") {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(ClientError::UploadRefused { status: status.as_u16(), body });
        }
        Ok(())
    }

    /// Follows a job's events (`GET /v1/jobs/{id}/events`) until a terminal one or `timeout`,
    /// calling `on_event` once for each; returns the terminal event. A stream that drops, or an
    /// API that is away for a moment (restarting, 503), is reconnected with `Last-Event-ID`:
    /// the events in between come from the history, none twice.
    pub async fn follow(
        &self,
        id: &str,
        timeout: Duration,
        mut on_event: impl FnMut(&JobEvent),
    ) -> Result<JobEvent, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || ClientError::Timeout { id: id.to_owned(), timeout };
        let mut seen = std::collections::HashSet::new();
        let mut last_id: Option<String> = None;
        let mut pause = RECONNECT_PAUSE;
        let mut last_error = None;
        for _ in 0..MAX_STREAM_RECONNECTS {
            let mut request =
                self.http.get(self.url(&format!("/v1/jobs/{id}/events"))).bearer_auth(&self.key);
            if let Some(last) = &last_id {
                request = request.header("last-event-id", last);
            }
            let answer =
                tokio::time::timeout_at(deadline, request.send()).await.map_err(|_| timed_out())?;
            let response = match answer {
                Ok(response) if response.status().is_success() => response,
                Ok(response) => {
                    let status = response.status();
                    let error = refused(status, &response.bytes().await.unwrap_or_default());
                    if !error.is_transient() {
                        return Err(error);
                    }
                    last_error = Some(error);
                    pause =
                        wait_before_reconnecting(pause, deadline).await.ok_or_else(timed_out)?;
                    continue;
                }
                Err(e) => {
                    last_error = Some(self.unreachable(e));
                    pause =
                        wait_before_reconnecting(pause, deadline).await.ok_or_else(timed_out)?;
                    continue;
                }
            };
            pause = RECONNECT_PAUSE;
            let mut chunks = response.bytes_stream();
            let mut buffer = String::new();
            loop {
                let next = tokio::time::timeout_at(deadline, chunks.next())
                    .await
                    .map_err(|_| timed_out())?;
                // A dropped stream is reconnected from the last event seen.
                let Some(Ok(chunk)) = next else { break };
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    let Some(event) = parse_frame(&frame) else { continue };
                    if !seen.insert(event.id.clone()) {
                        continue;
                    }
                    last_id = Some(event.id.clone());
                    on_event(&event);
                    if event.kind.is_terminal() {
                        return Ok(event);
                    }
                }
            }
        }
        Err(last_error.unwrap_or(ClientError::StreamLost { id: id.to_owned() }))
    }
}

/// Waits `pause` (not past `deadline`) and returns the next, longer pause; `None` when the
/// deadline comes first.
async fn wait_before_reconnecting(
    pause: Duration,
    deadline: tokio::time::Instant,
) -> Option<Duration> {
    let until = tokio::time::Instant::now() + pause;
    if until >= deadline {
        return None;
    }
    tokio::time::sleep_until(until).await;
    Some((pause * 2).min(MAX_RECONNECT_PAUSE))
}

/// An error answer as a [`ClientError::Refused`]; a body that is not a problem (a proxy's
/// page) keeps its first words as the detail.
fn refused(status: reqwest::StatusCode, body: &[u8]) -> ClientError {
    let problem = serde_json::from_slice(body).unwrap_or_else(|_| Problem {
        kind: "about:blank".to_owned(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: String::from_utf8_lossy(body).chars().take(200).collect(),
        code: "unknown".to_owned(),
        field: None,
    });
    ClientError::Refused { status: status.as_u16(), problem: Box::new(problem) }
}

/// One server-sent event's job event; keep-alives and comments are `None`.
fn parse_frame(frame: &str) -> Option<JobEvent> {
    let data: String =
        frame.lines().filter_map(|line| line.strip_prefix("data:")).map(str::trim_start).collect();
    serde_json::from_str(&data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;

    #[test]
    fn sse_frames_are_parsed_and_keepalives_skipped() {
        let frame = "event: completed\nid: job_1.completed\ndata: {\"id\":\"job_1.completed\",\"type\":\"completed\",\"job_id\":\"job_0190f0e0c1a27f3e9b1c2d3e4f5a6b7c\",\"tenant\":\"acme\",\"at\":\"2026-01-01T00:00:00Z\",\"data\":{\"epoch\":1}}\n\n";
        let event = parse_frame(frame).unwrap();
        assert_eq!(event.kind, EventKind::Completed);
        assert_eq!(event.data["epoch"], 1);
        assert!(parse_frame(":\n\n").is_none());
    }
}
