//! A webhook receiver for tests: records every request (headers and raw body) and answers with
//! a scripted sequence of statuses (then 200), or redirects.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::fake_server::FakeServer;

/// One received request.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

#[derive(Debug, Default)]
struct Script {
    statuses: VecDeque<u16>,
    redirect: Option<String>,
    received: Vec<Received>,
}

type Shared = Arc<Mutex<Script>>;

/// A running receiver. Stops on drop.
#[derive(Debug)]
pub struct WebhookReceiver {
    server: FakeServer,
    script: Shared,
}

impl WebhookReceiver {
    /// Answers `statuses` in order, then 200 forever.
    pub fn start(statuses: &[u16]) -> WebhookReceiver {
        Self::start_with(Script {
            statuses: statuses.iter().copied().collect(),
            ..Script::default()
        })
    }

    /// Answers every request with `302 Location: <location>`.
    pub fn redirecting_to(location: &str) -> WebhookReceiver {
        Self::start_with(Script { redirect: Some(location.to_owned()), ..Script::default() })
    }

    fn start_with(script: Script) -> WebhookReceiver {
        let script: Shared = Arc::new(Mutex::new(script));
        let router = axum::Router::new().fallback(receive).with_state(script.clone());
        WebhookReceiver { server: FakeServer::start("webhook receiver", router), script }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.server.addr())
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().expect("receiver lock").received.clone()
    }
}

async fn receive(State(script): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut script = script.lock().expect("receiver lock");
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    script.received.push(Received { headers, body: body.to_vec() });
    if let Some(location) = script.redirect.clone() {
        return (StatusCode::FOUND, [(header::LOCATION, location)]).into_response();
    }
    let status = script.statuses.pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK).into_response()
}

/// Verifies a received webhook with the independent Python `standardwebhooks` package (installed
/// into `.tools/venv` by the set-up); returns its error text when verification fails.
pub fn verify_with_standardwebhooks(secret: &str, received: &Received) -> Result<(), String> {
    let python = crate::workspace_root().join(".tools/venv/bin/python");
    let headers: serde_json::Map<String, serde_json::Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .filter_map(|h| {
                Some(((*h).to_owned(), serde_json::Value::String(received.header(h)?.to_owned())))
            })
            .collect();
    let script = "import json,sys\nfrom standardwebhooks.webhooks import Webhook\nsecret, headers, body = sys.argv[1], json.loads(sys.argv[2]), sys.stdin.buffer.read()\nWebhook(secret).verify(body, headers)\n";
    let mut child = std::process::Command::new(python)
        .args(["-c", script, secret, &serde_json::Value::Object(headers).to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("run python: {e}"))?;
    use std::io::Write as _;
    child.stdin.take().expect("piped").write_all(&received.body).map_err(|e| e.to_string())?;
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
