//! A fake Cloudflare Queues HTTP pull API (the one thing in the R2 path we cannot reach from
//! here), following the documented wire format: `POST …/accounts/<a>/queues/<q>/messages/pull`
//! with `{batch_size, visibility_timeout_ms}` leases messages (short poll), bodies of content
//! type `json` are base64, `POST …/messages/ack` with `{acks:[{lease_id}], retries:[{lease_id,
//! delay_seconds}]}`; responses are `{"success", "errors", "messages", "result"}` envelopes.
//! Acks after the visibility timeout are still accepted, as documented ("permissive leases").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::fake_server::FakeServer;

pub const ACCOUNT_ID: &str = "3f4b7e3dcab231cbfdaa90a6a28bd548";
pub const QUEUE_ID: &str = "e5a5c1a5f0d44b4bbd0b3fd1d2c4a1b2";
pub const API_TOKEN: &str = "fake-cloudflare-token";

#[derive(Debug)]
struct Message {
    id: String,
    body: String,
    content_type: &'static str,
    timestamp_ms: u64,
    attempts: u32,
    visible_at: Instant,
    leases: Vec<String>,
    acked: bool,
}

#[derive(Debug, Default)]
struct QueueState {
    messages: Vec<Message>,
    next_id: u64,
    pulls: u64,
    retries_requested: u64,
}

type Shared = Arc<Mutex<QueueState>>;

/// A running fake queue. Stops on drop.
#[derive(Debug)]
pub struct FakeCloudflareQueue {
    server: FakeServer,
    state: Shared,
}

impl FakeCloudflareQueue {
    pub fn start() -> FakeCloudflareQueue {
        let state = Shared::default();
        let router = axum::Router::new()
            .route("/client/v4/accounts/{account}/queues/{queue}/messages/pull", post(pull))
            .route("/client/v4/accounts/{account}/queues/{queue}/messages/ack", post(ack))
            .with_state(state.clone());
        FakeCloudflareQueue { server: FakeServer::start("fake queue", router), state }
    }

    /// The `api_base` to configure (`http://…/client/v4`).
    pub fn api_base(&self) -> String {
        format!("http://{}/client/v4", self.server.addr())
    }

    /// Enqueues a JSON body the way R2 notifications arrive: content type `json`, base64.
    pub fn push_json(&self, body: &Value) -> String {
        let encoded = base64::engine::general_purpose::STANDARD.encode(body.to_string());
        self.push(encoded, "json")
    }

    /// Enqueues a plain-text body (content type `text`).
    pub fn push_text(&self, body: &str) -> String {
        self.push(body.to_owned(), "text")
    }

    fn push(&self, body: String, content_type: &'static str) -> String {
        let mut state = self.state.lock().expect("queue lock");
        state.next_id += 1;
        let id = format!("{:032x}", state.next_id);
        let timestamp_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        state.messages.push(Message {
            id: id.clone(),
            body,
            content_type,
            timestamp_ms,
            attempts: 0,
            visible_at: Instant::now(),
            leases: Vec::new(),
            acked: false,
        });
        id
    }

    /// Delivery attempts of a message so far.
    pub fn attempts(&self, id: &str) -> u32 {
        self.with_message(id, |m| m.attempts)
    }

    pub fn is_acked(&self, id: &str) -> bool {
        self.with_message(id, |m| m.acked)
    }

    /// Retries the consumer has asked for, in total.
    pub fn retries_requested(&self) -> u64 {
        self.state.lock().expect("queue lock").retries_requested
    }

    pub fn pulls(&self) -> u64 {
        self.state.lock().expect("queue lock").pulls
    }

    fn with_message<T>(&self, id: &str, f: impl FnOnce(&Message) -> T) -> T {
        let state = self.state.lock().expect("queue lock");
        f(state.messages.iter().find(|m| m.id == id).expect("known message id"))
    }
}

fn check(headers: &HeaderMap, account: &str, queue: &str) -> Result<(), (StatusCode, Json<Value>)> {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {API_TOKEN}"));
    if !authorized {
        return Err(failure(StatusCode::UNAUTHORIZED, 10000, "Authentication error"));
    }
    if account != ACCOUNT_ID || queue != QUEUE_ID {
        return Err(failure(StatusCode::NOT_FOUND, 11000, "Queue not found"));
    }
    Ok(())
}

fn failure(status: StatusCode, code: u32, message: &str) -> (StatusCode, Json<Value>) {
    (
        status,
        Json(
            json!({ "success": false, "errors": [{ "code": code, "message": message }], "messages": [], "result": null }),
        ),
    )
}

async fn pull(
    State(state): State<Shared>,
    Path((account, queue)): Path<(String, String)>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if let Err(e) = check(&headers, &account, &queue) {
        return e;
    }
    let batch_size = request.get("batch_size").and_then(Value::as_u64).unwrap_or(5);
    if !(1..=100).contains(&batch_size) {
        return failure(StatusCode::BAD_REQUEST, 10001, "batch_size must be between 1 and 100");
    }
    let visibility = Duration::from_millis(
        request.get("visibility_timeout_ms").and_then(Value::as_u64).unwrap_or(30_000),
    );
    let now = Instant::now();
    let mut state = state.lock().expect("queue lock");
    state.pulls += 1;
    let mut leased = Vec::new();
    for message in state
        .messages
        .iter_mut()
        .filter(|m| !m.acked && m.visible_at <= now)
        .take(batch_size as usize)
    {
        message.attempts += 1;
        message.visible_at = now + visibility;
        let lease_id = format!("lease.{}.{}", message.id, message.attempts);
        message.leases.push(lease_id.clone());
        leased.push(json!({
            "body": message.body,
            "id": message.id,
            "timestamp_ms": message.timestamp_ms,
            "attempts": message.attempts,
            "metadata": { "CF-sourceMessageSource": "r2", "CF-Content-Type": message.content_type },
            "lease_id": lease_id,
        }));
    }
    let backlog = state.messages.iter().filter(|m| !m.acked).count();
    (
        StatusCode::OK,
        Json(json!({
            "success": true, "errors": [], "messages": [],
            "result": { "message_backlog_count": backlog, "messages": leased,
                        "metadata": { "metrics": { "backlog_count": backlog, "backlog_bytes": 0 } } }
        })),
    )
}

async fn ack(
    State(state): State<Shared>,
    Path((account, queue)): Path<(String, String)>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if let Err(e) = check(&headers, &account, &queue) {
        return e;
    }
    let lease_ids = |field: &str| -> Vec<(String, u64)> {
        request
            .get(field)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| {
                        Some((
                            i.get("lease_id")?.as_str()?.to_owned(),
                            i.get("delay_seconds").and_then(Value::as_u64).unwrap_or(0),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (acks, retries) = (lease_ids("acks"), lease_ids("retries"));
    let mut state = state.lock().expect("queue lock");
    let mut warnings = HashMap::new();
    let (mut ack_count, mut retry_count) = (0, 0);
    for (lease, _) in &acks {
        match state.messages.iter_mut().find(|m| m.leases.contains(lease)) {
            Some(message) => {
                message.acked = true;
                ack_count += 1;
            }
            None => {
                warnings.insert(lease.clone(), "unknown lease".to_owned());
            }
        }
    }
    for (lease, delay) in &retries {
        match state.messages.iter_mut().find(|m| m.leases.contains(lease)) {
            Some(message) => {
                message.visible_at = Instant::now() + Duration::from_secs(*delay);
                retry_count += 1;
            }
            None => {
                warnings.insert(lease.clone(), "unknown lease".to_owned());
            }
        }
    }
    state.retries_requested += retry_count;
    (
        StatusCode::OK,
        Json(json!({ "success": true, "errors": [], "messages": [],
                     "result": { "ackCount": ack_count, "retryCount": retry_count, "warnings": warnings } })),
    )
}
