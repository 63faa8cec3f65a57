//! A small client for tcoder's HTTP API, as the `tcoder` commands use it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use serde_json::Value;

/// The API's address and the caller's key.
#[derive(Debug, Clone)]
pub(crate) struct ApiClient {
    http: reqwest::Client,
    base: String,
    key: String,
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub(crate) struct StreamEvent {
    pub kind: String,
    pub data: Value,
}

impl ApiClient {
    pub(crate) fn new(base: &str, key: &str) -> anyhow::Result<ApiClient> {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
        Ok(ApiClient { http, base: base.trim_end_matches('/').to_owned(), key: key.to_owned() })
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach the API at {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = body["detail"].as_str().unwrap_or("no detail");
            let code = body["code"].as_str().unwrap_or("unknown");
            bail!("API error {status} ({code}): {detail}");
        }
        Ok(body)
    }

    pub(crate) async fn create_job(&self, request: &Value) -> anyhow::Result<Value> {
        self.json(self.http.post(format!("{}/v1/jobs", self.base)).json(request)).await
    }

    pub(crate) async fn job(&self, id: &str) -> anyhow::Result<Value> {
        self.json(self.http.get(format!("{}/v1/jobs/{id}", self.base))).await
    }

    pub(crate) async fn jobs(
        &self,
        status: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(status) = status {
            query.push(("status", status.to_owned()));
        }
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_owned()));
        }
        self.json(self.http.get(format!("{}/v1/jobs", self.base)).query(&query)).await
    }

    pub(crate) async fn cancel(&self, id: &str) -> anyhow::Result<Value> {
        self.json(self.http.post(format!("{}/v1/jobs/{id}/cancel", self.base))).await
    }

    /// PUTs `file` to a presigned upload, streaming from disk; `progress` gets byte counts.
    pub(crate) async fn upload(
        &self,
        upload: &Value,
        file: &Path,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        let url = upload["url"].as_str().context("the job has no upload URL")?;
        let length = tokio::fs::metadata(file).await?.len();
        let handle = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("cannot open {}", file.display()))?;
        let stream = tokio_util::io::ReaderStream::new(handle).inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                progress(bytes.len() as u64);
            }
        });
        let mut request = self
            .http
            .put(url)
            .header("content-length", length)
            .body(reqwest::Body::wrap_stream(stream));
        if let Some(headers) = upload["headers"].as_object() {
            for (name, value) in headers {
                if let Some(value) = value.as_str().filter(|_| name != "content-length") {
                    request = request.header(name, value);
                }
            }
        }
        let response = request.send().await.context("upload failed")?;
        if !response.status().is_success() {
            let status = response.status();
            bail!(
                "the object store refused the upload: {status} {}",
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Follows a job's events until a terminal one (or `timeout`), calling `on_event` for each.
    pub(crate) async fn follow(
        &self,
        id: &str,
        timeout: Duration,
        mut on_event: impl FnMut(&StreamEvent),
    ) -> anyhow::Result<StreamEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Reconnect a bounded number of times if the stream drops before the end.
        for _ in 0..10 {
            let response = self
                .http
                .get(format!("{}/v1/jobs/{id}/events", self.base))
                .bearer_auth(&self.key)
                .send()
                .await
                .with_context(|| format!("cannot reach the API at {}", self.base))?;
            if !response.status().is_success() {
                bail!("cannot follow job {id}: {}", response.status());
            }
            let mut chunks = response.bytes_stream();
            let mut buffer = String::new();
            loop {
                let next = tokio::time::timeout_at(deadline, chunks.next()).await;
                let Ok(next) = next else { bail!("job {id} did not finish within {timeout:?}") };
                let Some(chunk) = next else { break };
                buffer.push_str(&String::from_utf8_lossy(&chunk?));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    if let Some(event) = parse_frame(&frame) {
                        on_event(&event);
                        if matches!(event.kind.as_str(), "completed" | "failed" | "canceled") {
                            return Ok(event);
                        }
                    }
                }
            }
        }
        bail!("lost the event stream of job {id} too often")
    }
}

fn parse_frame(frame: &str) -> Option<StreamEvent> {
    let mut kind = None;
    let mut data = String::new();
    for line in frame.lines() {
        if let Some(k) = line.strip_prefix("event:") {
            kind = Some(k.trim().to_owned());
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        }
    }
    Some(StreamEvent { kind: kind?, data: serde_json::from_str(&data).ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_frames_are_parsed_and_keepalives_skipped() {
        let event =
            parse_frame("event: completed\nid: x\ndata: {\"type\":\"completed\"}\n\n").unwrap();
        assert_eq!(event.kind, "completed");
        assert_eq!(event.data["type"], "completed");
        assert!(parse_frame(":\n\n").is_none());
    }
}
