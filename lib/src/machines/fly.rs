//! The `fly` provider: worker machines are Fly.io Machines, driven through the Machines API
//! (`https://api.machines.dev/v1`, shapes as in Fly's published Swagger spec).
//!
//! - Requests respect the documented limits: 1 request/s per action with a burst of 3 (Get
//!   Machine: 5/s, burst 10), with client-side token buckets, and back off on 429, 5xx and
//!   `insufficient_capacity` (bounded attempts).
//! - Create is made idempotent by metadata: every machine carries `tcoder_pool` and
//!   `tcoder_slot`; before creating, the slot is looked up, because a create that timed out may
//!   still have happened (Fly's POSTs are not idempotent).
//! - Machines are created with `restart.policy = "no"` (a poison input must not reboot ten times)
//!   and without `auto_destroy`, so a machine that exits stays `stopped` for reuse.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use super::provider::{MachineProvider, ProviderError, ProviderMachine, ProviderState};
use crate::config::Secret;
use base64::Engine as _;

/// `[dispatcher.fly]` settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub api_base: String,
    pub app: String,
    pub token: Secret,
    pub image: String,
    pub region: String,
    pub cpu_kind: String,
    pub cpus: u32,
    pub memory_mb: u32,
    /// Extra environment of worker machines (e.g. `TCODER__NATS__URL`); secrets are better
    /// set as Fly app secrets.
    pub env: BTreeMap<String, String>,
    /// Marks the machines of this pool (metadata `tcoder_pool`), so several pools can share an app.
    pub pool: String,
}

impl Config {
    pub fn validate(&self) -> Result<(), crate::config::Invalid> {
        use crate::config::Invalid;
        if self.app.is_empty() || self.image.is_empty() {
            return Err(Invalid::new(
                "fly.app",
                "fly.app and fly.image are required with provider = \"fly\"",
            ));
        }
        if self.token.expose().is_empty() {
            return Err(Invalid::new(
                "fly.token",
                "required with provider = \"fly\" (prefer TCODER__DISPATCHER__FLY__TOKEN)",
            ));
        }
        if self.memory_mb < 256 || !self.memory_mb.is_multiple_of(256) {
            return Err(Invalid::new("fly.memory_mb", "a multiple of 256, at least 256"));
        }
        if self.cpus == 0 {
            return Err(Invalid::new("fly.cpus", "at least 1"));
        }
        Ok(())
    }
}

/// A token bucket: `rate` per second, at most `burst` at once.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Bucket {
        Bucket { tokens: burst, last: Instant::now(), rate, burst }
    }

    /// Takes a token, or says how long until one is available.
    fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Fraction of the documented refill rate the client uses. Fly counts requests when they
/// arrive, not when they are sent: a burst whose first request waited on a new connection
/// arrives later than the next token is spent, and at exactly the documented rate that next
/// request lands a few milliseconds early and meets a 429 (seen in CI). 20% headroom absorbs
/// that jitter for a negligible cost in a path that makes a handful of calls per minute.
const PACING_MARGIN: f64 = 0.8;

/// Attempts per API call (the first plus retries).
const ATTEMPTS: u32 = 5;

#[derive(Debug, Deserialize, serde::Serialize)]
struct FlyMachine {
    id: String,
    state: String,
    #[serde(default)]
    config: Option<FlyMachineConfig>,
    #[serde(default)]
    created_at: Option<String>,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
struct FlyMachineConfig {
    #[serde(default)]
    metadata: HashMap<String, String>,
}

/// Calls the Fly Machines API.
#[derive(Debug)]
pub struct FlyProvider {
    config: Config,
    http: reqwest::Client,
    buckets: Mutex<HashMap<&'static str, Bucket>>,
    /// Environment every machine gets (worker settings).
    env: BTreeMap<String, String>,
    /// The settings file every machine gets at [`WORKER_SETTINGS_PATH`], without credentials.
    settings: Option<String>,
}

/// Where a worker Machine finds the settings the dispatcher hands it (`TCODER_CONFIG`).
pub const WORKER_SETTINGS_PATH: &str = "/etc/tcoder/worker.toml";

impl FlyProvider {
    pub fn new(
        config: Config,
        worker_env: BTreeMap<String, String>,
    ) -> anyhow::Result<FlyProvider> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        let mut env = worker_env;
        env.extend(config.env.clone());
        Ok(FlyProvider { config, http, buckets: Mutex::default(), env, settings: None })
    }

    /// Hands every machine `settings` (TOML without credentials: the Machines API stores a
    /// machine's files and environment in its config, readable with the app's token) as its
    /// settings file. Its credentials are the worker app's own Fly secrets, which Fly gives
    /// every machine of the app as environment variables — and those win over the file.
    pub fn with_settings(mut self, settings: String) -> FlyProvider {
        self.env.insert("TCODER_CONFIG".to_owned(), WORKER_SETTINGS_PATH.to_owned());
        self.settings = Some(settings);
        self
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/apps/{}/machines{path}",
            self.config.api_base.trim_end_matches('/'),
            self.config.app
        )
    }

    /// Waits for the action's rate-limit token.
    async fn throttle(&self, action: &'static str) {
        loop {
            let wait = {
                let mut buckets = self.buckets.lock().expect("bucket lock");
                let bucket = buckets.entry(action).or_insert_with(|| {
                    let (rate, burst) = if action == "get" { (5.0, 10.0) } else { (1.0, 3.0) };
                    Bucket::new(rate * PACING_MARGIN, burst)
                });
                match bucket.take() {
                    Ok(()) => return,
                    Err(wait) => wait,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// One API call with throttling and bounded retries of transient failures.
    async fn call(
        &self,
        action: &'static str,
        method: reqwest::Method,
        url: String,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ProviderError> {
        let mut backoff = Duration::from_millis(500);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            self.throttle(action).await;
            let mut request =
                self.http.request(method.clone(), &url).bearer_auth(self.config.token.expose());
            if let Some(body) = &body {
                request = request.json(body);
            }
            let (status, text) = match request.send().await {
                Ok(response) => (response.status(), response.text().await.unwrap_or_default()),
                Err(e) => {
                    last = e.to_string();
                    self.record(action, "network_error");
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                    continue;
                }
            };
            self.record(action, status.as_str());
            if status.is_success() {
                return Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null));
            }
            let capacity = text.contains("insufficient_capacity") || text.contains("no capacity");
            if status == reqwest::StatusCode::NOT_FOUND {
                return Err(ProviderError::NotFound(url));
            }
            let transient = status.as_u16() == 429
                || status.is_server_error()
                || capacity
                || status == reqwest::StatusCode::REQUEST_TIMEOUT;
            last = format!("{action}: HTTP {status}: {text:.300}");
            if !transient {
                return Err(ProviderError::Permanent(last));
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        Err(ProviderError::Transient(last))
    }

    /// Every API call's outcome, for debugging (the dispatcher counts calls in its metrics).
    fn record(&self, action: &'static str, outcome: &str) {
        tracing::debug!(action, outcome, "fly machines api");
    }

    fn machine(&self, raw: FlyMachine) -> ProviderMachine {
        let metadata = raw.config.unwrap_or_default().metadata;
        let created_at = raw
            .created_at
            .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        ProviderMachine {
            id: raw.id,
            state: ProviderState::parse(&raw.state),
            slot: metadata.get("tcoder_slot").cloned(),
            created_at,
        }
    }

    async fn machines(&self, slot: Option<&str>) -> Result<Vec<ProviderMachine>, ProviderError> {
        let mut query = format!("?metadata.tcoder_pool={}", self.config.pool);
        if let Some(slot) = slot {
            query.push_str(&format!("&metadata.tcoder_slot={slot}"));
        }
        let value = self.call("list", reqwest::Method::GET, self.url(&query), None).await?;
        let raw: Vec<FlyMachine> = serde_json::from_value(value)
            .map_err(|e| ProviderError::Permanent(format!("list: unexpected response: {e}")))?;
        Ok(raw
            .into_iter()
            // Filter here too: the metadata query is documented but not in the Swagger spec.
            .filter(|m| {
                m.config
                    .as_ref()
                    .is_some_and(|c| c.metadata.get("tcoder_pool") == Some(&self.config.pool))
            })
            .map(|m| self.machine(m))
            .filter(|m| {
                m.state != ProviderState::Destroyed
                    && slot.is_none_or(|s| m.slot.as_deref() == Some(s))
            })
            .collect())
    }

    /// The create request body (Fly's `CreateMachineRequest`).
    pub fn create_body(&self, slot: &str) -> serde_json::Value {
        json!({
            "name": format!("tcoder-{}-{slot}", self.config.pool),
            "region": self.config.region,
            "config": {
                "image": self.config.image,
                "guest": { "cpu_kind": self.config.cpu_kind, "cpus": self.config.cpus, "memory_mb": self.config.memory_mb },
                "env": self.env,
                "files": self.settings.iter().map(|toml| json!({
                    "guest_path": WORKER_SETTINGS_PATH,
                    "raw_value": base64::engine::general_purpose::STANDARD.encode(toml),
                })).collect::<Vec<_>>(),
                "auto_destroy": false,
                "restart": { "policy": "no" },
                "metadata": { "tcoder_pool": self.config.pool, "tcoder_slot": slot, "role": "tcoder-worker" },
                "stop_config": { "signal": "SIGTERM" },
            },
        })
    }
}

#[async_trait::async_trait]
impl MachineProvider for FlyProvider {
    fn name(&self) -> &'static str {
        "fly"
    }

    async fn create(&self, slot: &str) -> Result<ProviderMachine, ProviderError> {
        // A create that timed out earlier may have happened: look the slot up first.
        if let Some(existing) = self.machines(Some(slot)).await?.into_iter().next() {
            return Ok(existing);
        }
        let value = self
            .call("create", reqwest::Method::POST, self.url(""), Some(self.create_body(slot)))
            .await?;
        let raw: FlyMachine = serde_json::from_value(value)
            .map_err(|e| ProviderError::Permanent(format!("create: unexpected response: {e}")))?;
        Ok(self.machine(raw))
    }

    async fn start(&self, id: &str) -> Result<(), ProviderError> {
        self.call("start", reqwest::Method::POST, self.url(&format!("/{id}/start")), None)
            .await
            .map(|_| ())
    }

    async fn stop(&self, id: &str) -> Result<(), ProviderError> {
        self.call(
            "stop",
            reqwest::Method::POST,
            self.url(&format!("/{id}/stop")),
            Some(json!({ "signal": "SIGTERM" })),
        )
        .await
        .map(|_| ())
    }

    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        self.call("destroy", reqwest::Method::DELETE, self.url(&format!("/{id}?force=true")), None)
            .await
            .map(|_| ())
    }

    async fn list(&self) -> Result<Vec<ProviderMachine>, ProviderError> {
        self.machines(None).await
    }
}
