//! Cloudflare Queues HTTP pull consumer for R2 event notifications.
//!
//! `POST …/queues/<id>/messages/pull` leases a batch (short poll: an empty queue answers at
//! once); each message body is decoded by its `CF-Content-Type` (`json` and `bytes` arrive
//! base64-encoded, `text` as is) and handed to the bridge; then one
//! `POST …/messages/ack` acks what was handled (or dropped as unusable) and asks for a delayed
//! retry of what failed transiently. A message is acked only after its upload event is on
//! JetStream, so a crash here means redelivery, not loss.

use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tcoder::config::R2QueueConfig;
use tcoder::events::UploadSource;
use tokio_util::sync::CancellationToken;

use super::{Bridge, normalize};

#[derive(Deserialize)]
struct Envelope<T> {
    success: bool,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
    result: Option<T>,
}

#[derive(Deserialize)]
struct PullResult {
    #[serde(default)]
    messages: Vec<QueueMessage>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct QueueMessage {
    pub body: String,
    pub id: String,
    #[serde(default)]
    pub attempts: u32,
    pub lease_id: String,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct LeaseRef {
    lease_id: String,
}

#[derive(Serialize)]
struct RetryRef {
    lease_id: String,
    delay_seconds: u64,
}

/// The pull consumer.
#[derive(Debug)]
pub(crate) struct R2QueueConsumer {
    http: reqwest::Client,
    config: R2QueueConfig,
    bridge: Bridge,
}

impl R2QueueConsumer {
    pub(crate) fn new(config: R2QueueConfig, bridge: Bridge) -> anyhow::Result<R2QueueConsumer> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(R2QueueConsumer { http, config, bridge })
    }

    fn url(&self, action: &str) -> String {
        format!(
            "{}/accounts/{}/queues/{}/messages/{action}",
            self.config.api_base.trim_end_matches('/'),
            self.config.account_id,
            self.config.queue_id
        )
    }

    /// Pulls and handles batches until `stop`. API errors back off (up to a minute) and are
    /// retried; they never stop the service.
    pub(crate) async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = self.config.poll_interval;
        while !stop.is_cancelled() {
            let wait = match self.pull_once().await {
                Ok(0) => self.config.poll_interval,
                Ok(_) => {
                    backoff = self.config.poll_interval;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cloudflare queue pull failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => {}
            }
        }
        Ok(())
    }

    /// One pull, handle, ack round; returns how many messages were pulled.
    pub(crate) async fn pull_once(&self) -> anyhow::Result<usize> {
        let visibility_ms =
            u64::try_from(self.config.visibility_timeout.as_millis()).unwrap_or(u64::MAX);
        let body =
            json!({ "batch_size": self.config.batch_size, "visibility_timeout_ms": visibility_ms });
        let pulled: Envelope<PullResult> = self.call("pull", &body).await?;
        let messages = pulled.result.map(|r| r.messages).unwrap_or_default();
        if messages.is_empty() {
            return Ok(0);
        }
        let (mut acks, mut retries) = (Vec::new(), Vec::new());
        for message in &messages {
            if self.handle(message).await {
                acks.push(LeaseRef { lease_id: message.lease_id.clone() });
            } else {
                let delay_seconds = self.config.retry_delay.as_secs();
                tracing::info!(message = %message.id, attempts = message.attempts, delay_seconds, "queue message will be retried");
                retries.push(RetryRef { lease_id: message.lease_id.clone(), delay_seconds });
            }
        }
        let _: Envelope<serde_json::Value> =
            self.call("ack", &json!({ "acks": acks, "retries": retries })).await?;
        Ok(messages.len())
    }

    /// Handles one message; `false` asks for a retry.
    async fn handle(&self, message: &QueueMessage) -> bool {
        let body = match decode_body(message) {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(message = %message.id, error = %e, "dropping undecodable queue message");
                self.bridge.metrics.bridge_events.with_label_values(&["r2", "malformed"]).inc();
                return true;
            }
        };
        let events = match normalize::parse_r2(&body) {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(message = %message.id, error = %e, "dropping unrecognised queue message");
                self.bridge.metrics.bridge_events.with_label_values(&["r2", "malformed"]).inc();
                return true;
            }
        };
        for event in &events {
            if self.bridge.handle(event, UploadSource::R2).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        action: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<Envelope<T>> {
        let response = self
            .http
            .post(self.url(action))
            .bearer_auth(self.config.api_token.expose())
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            anyhow::bail!("{action}: HTTP {status}: {text:.300}");
        }
        let envelope: Envelope<T> = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{action}: bad response: {e}"))?;
        if !envelope.success {
            anyhow::bail!("{action}: API errors: {:?}", envelope.errors);
        }
        Ok(envelope)
    }
}

/// The message body as bytes: base64 for `json` and `bytes`, as is for `text`. Without a
/// content type, JSON text is taken as is and anything else is tried as base64.
pub(crate) fn decode_body(message: &QueueMessage) -> anyhow::Result<Vec<u8>> {
    let content_type = message.metadata.get("CF-Content-Type").and_then(|v| v.as_str());
    let base64 = || base64::engine::general_purpose::STANDARD.decode(message.body.trim());
    match content_type {
        Some("json" | "bytes") => Ok(base64()?),
        Some("text") => Ok(message.body.clone().into_bytes()),
        Some(other) => anyhow::bail!("content type `{other}` cannot be decoded outside Workers"),
        None if message.body.trim_start().starts_with('{') => Ok(message.body.clone().into_bytes()),
        None => Ok(base64()?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str, content_type: Option<&str>) -> QueueMessage {
        let mut metadata = serde_json::Map::new();
        if let Some(ct) = content_type {
            metadata.insert("CF-Content-Type".into(), json!(ct));
        }
        QueueMessage {
            body: body.into(),
            id: "m".into(),
            attempts: 1,
            lease_id: "l".into(),
            metadata,
        }
    }

    #[test]
    fn bodies_are_decoded_by_content_type() {
        let json_text = r#"{"a":1}"#;
        let encoded = base64::engine::general_purpose::STANDARD.encode(json_text);
        assert_eq!(decode_body(&message(&encoded, Some("json"))).unwrap(), json_text.as_bytes());
        assert_eq!(decode_body(&message(json_text, Some("text"))).unwrap(), json_text.as_bytes());
        assert_eq!(decode_body(&message(json_text, None)).unwrap(), json_text.as_bytes());
        assert_eq!(decode_body(&message(&encoded, None)).unwrap(), json_text.as_bytes());
        assert!(decode_body(&message("x", Some("v8"))).is_err());
    }
}
