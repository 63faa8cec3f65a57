//! Settings sections that belong to one service each. They live in `lib` (not in the bins) so
//! one `default.toml` documents every key and `tcoder up` can read the services' addresses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Invalid, Secret, require_positive};
use crate::jobs::Tenant;

/// `[ingest]`: the public HTTP API and the notification bridge.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub http_bind: SocketAddr,
    #[serde(with = "humantime_serde")]
    pub upload_url_ttl: Duration,
    pub max_upload_bytes: u64,
    /// A job declaring a longer source gets a multipart upload (a presigned PUT per part).
    pub multipart_threshold: u64,
    /// Preferred part size of a multipart upload (larger for sources of over 1000 parts).
    pub multipart_part_size: u64,
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    pub notification_secret: Secret,
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// A job still awaiting its upload this long after creation expires (status `expired`).
    #[serde(with = "humantime_serde")]
    pub upload_expiry: Duration,
    /// Ended jobs are deleted — outputs, source, record — this long after they ended; zero
    /// keeps them until a client deletes them.
    #[serde(with = "humantime_serde")]
    pub job_retention: Duration,
    pub api_keys: Vec<ApiKeyEntry>,
    /// Origins whose pages may call the API and the embedded store (`*`: any).
    pub cors_origins: Vec<String>,
    /// How result URLs reach players: public object URLs, or signed playback URLs.
    pub delivery: Delivery,
    /// How long a signed playback URL works.
    #[serde(with = "humantime_serde")]
    pub playback_url_ttl: Duration,
    /// Key of the playback tokens (`delivery = "signed"`).
    pub playback_secret: Secret,
    /// Base URL of this API as players reach it (signed playback URLs); empty:
    /// `http://<http_bind>`.
    pub public_api_url: String,
    /// Event streams (`GET /v1/jobs/{id}/events`) one ingest process keeps open at once, in
    /// all and per tenant; past either a new stream gets 429.
    pub max_event_streams: usize,
    pub max_event_streams_per_tenant: usize,
    /// Jobs one API key may create at once, and per second after that (token bucket).
    pub create_burst: u32,
    pub create_per_second: f64,
    /// A client must send a request's head within this long (API and embedded store).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Connections each listener (API, embedded store) keeps open at once.
    pub max_connections: usize,
    /// Connections each listener keeps open at once from one peer address.
    pub max_connections_per_peer: usize,
    /// A request body (an upload, a JSON body) that sends nothing for this long is cut off.
    #[serde(with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    /// A request body slower than this on average, once `body_idle_timeout` has passed, is
    /// cut off.
    pub min_body_bytes_per_second: u64,
    /// Watch folders written to Redis at start (`tcoder watch` manages them at run time).
    pub watch: Vec<crate::watch::WatchRuleRequest>,
    pub local_store: LocalStoreConfig,
    pub r2_queue: R2QueueConfig,
    pub import: ImportConfig,
}

/// `[ingest.import]`: jobs whose source is fetched from a URL (`source_url`).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImportConfig {
    /// Whether `POST /v1/jobs` takes a `source_url`.
    pub enabled: bool,
    /// Also fetch `http://` URLs (default: `https://` only).
    pub allow_http: bool,
    /// Non-public `ip:port` addresses a source URL may name (tests, a private media server);
    /// every other loopback, private or link-local address is refused, also after a redirect.
    pub allowed: Vec<SocketAddr>,
    /// Redirects followed at most (each one checked again).
    pub max_redirects: u32,
    /// One import may take this long in all.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A source that sends nothing for this long is given up.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Imports one ingest process runs at once (each buffers one part, 16 MiB).
    pub concurrency: usize,
}

/// `[ingest] delivery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Result URLs are `<s3.public_url>/<key>`: a public bucket, custom domain or CDN.
    Public,
    /// Outputs stay private; results carry time-limited `/v1/play/<token>/<key>` URLs.
    Signed,
}

/// One configured API key: the hex SHA-256 of the key (never the key) and its tenant.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    pub tenant: String,
    pub sha256: String,
}

impl R2QueueConfig {
    /// The queue's ids and token, needed only by ingest (which pulls).
    pub(super) fn validate_credentials(&self) -> Result<(), Invalid> {
        if !self.enabled {
            return Ok(());
        }
        for (name, value) in
            [("r2_queue.account_id", &self.account_id), ("r2_queue.queue_id", &self.queue_id)]
        {
            if value.is_empty() {
                return Err(Invalid::new(name, "required when r2_queue.enabled"));
            }
        }
        if self.api_token.expose().is_empty() {
            return Err(Invalid::new("r2_queue.api_token", "required when r2_queue.enabled"));
        }
        Ok(())
    }
}

/// `[ingest.r2_queue]`: the Cloudflare Queues HTTP pull consumer for R2 notifications.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct R2QueueConfig {
    pub enabled: bool,
    pub api_base: String,
    pub account_id: String,
    pub queue_id: String,
    pub api_token: Secret,
    pub batch_size: u32,
    #[serde(with = "humantime_serde")]
    pub visibility_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
}

/// `[ingest.local_store]`: the embedded S3-compatible store for the single-host stack.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalStoreConfig {
    pub enabled: bool,
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// Objects under `outputs/` are readable without credentials (the result URLs work in
    /// players and browsers); uploads and writes stay signed.
    pub public_outputs: bool,
}

impl IngestConfig {
    /// The per-key job-creation limit.
    pub fn create_rate(&self) -> crate::auth::CreateRate {
        crate::auth::CreateRate { burst: self.create_burst, per_second: self.create_per_second }
    }

    /// The bounds of the API's and the embedded store's listeners.
    pub fn listener_limits(&self) -> crate::http_serve::Limits {
        crate::http_serve::Limits {
            header_timeout: self.header_timeout,
            max_connections: self.max_connections,
            max_connections_per_peer: self.max_connections_per_peer,
            body_idle_timeout: self.body_idle_timeout,
            min_body_bytes_per_second: self.min_body_bytes_per_second,
        }
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.local_store.enabled && self.local_store.data_dir.as_os_str().is_empty() {
            return Err(Invalid::new("local_store.data_dir", "must not be empty"));
        }
        // S3 and R2 presigned URLs are valid for 1 s to 7 days.
        if self.upload_url_ttl < Duration::from_secs(1)
            || self.upload_url_ttl > Duration::from_secs(7 * 86_400)
        {
            return Err(Invalid::new("upload_url_ttl", "must be between 1s and 7days"));
        }
        // R2 drops an unfinished multipart upload after 7 days; a job cannot wait longer.
        if self.upload_expiry < self.upload_url_ttl
            || self.upload_expiry > Duration::from_secs(7 * 86_400)
        {
            return Err(Invalid::new(
                "upload_expiry",
                "must be at least upload_url_ttl and at most 7days",
            ));
        }
        use crate::s3::multipart::{
            MAX_PART_BYTES, MAX_PARTS, MIN_PART_BYTES, SINGLE_PUT_MAX_BYTES,
        };
        if self.max_upload_bytes == 0 || self.max_upload_bytes > MAX_PARTS * MAX_PART_BYTES {
            return Err(Invalid::new(
                "max_upload_bytes",
                format!("must be between 1 and {} bytes", MAX_PARTS * MAX_PART_BYTES),
            ));
        }
        if self.multipart_threshold == 0 || self.multipart_threshold > SINGLE_PUT_MAX_BYTES {
            return Err(Invalid::new(
                "multipart_threshold",
                format!("must be between 1 and {SINGLE_PUT_MAX_BYTES} bytes (one PUT's most)"),
            ));
        }
        if !(MIN_PART_BYTES..=MAX_PART_BYTES).contains(&self.multipart_part_size) {
            return Err(Invalid::new(
                "multipart_part_size",
                format!(
                    "must be between {MIN_PART_BYTES} and {MAX_PART_BYTES} bytes (S3's part limits)"
                ),
            ));
        }
        require_positive("header_timeout", self.header_timeout)?;
        require_positive("body_idle_timeout", self.body_idle_timeout)?;
        if self.create_burst == 0
            || self.create_per_second.is_nan()
            || self.create_per_second <= 0.0
        {
            return Err(Invalid::new(
                "create_burst",
                "create_burst and create_per_second must be positive",
            ));
        }
        if self.max_connections == 0 {
            return Err(Invalid::new("max_connections", "must be at least 1"));
        }
        if self.max_connections_per_peer == 0
            || self.max_connections_per_peer > self.max_connections
        {
            return Err(Invalid::new(
                "max_connections_per_peer",
                "must be at least 1 and at most max_connections",
            ));
        }
        if self.max_event_streams_per_tenant == 0
            || self.max_event_streams < self.max_event_streams_per_tenant
        {
            return Err(Invalid::new(
                "max_event_streams_per_tenant",
                "must be at least 1 and at most max_event_streams",
            ));
        }
        if self.delivery == Delivery::Signed && self.playback_secret.expose().len() < 16 {
            return Err(Invalid::new(
                "playback_secret",
                "delivery = \"signed\" needs a playback_secret of at least 16 characters",
            ));
        }
        require_positive("playback_url_ttl", self.playback_url_ttl)?;
        require_positive("idempotency_ttl", self.idempotency_ttl)?;
        require_positive("sweep_interval", self.sweep_interval)?;
        for (i, key) in self.api_keys.iter().enumerate() {
            if Tenant::parse(&key.tenant).is_none() {
                return Err(Invalid::new(
                    &format!("api_keys[{i}].tenant"),
                    "use a-z, 0-9, -, _ (1-64 chars)",
                ));
            }
            if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Invalid::new(
                    &format!("api_keys[{i}].sha256"),
                    "must be 64 hex digits (SHA-256)",
                ));
            }
        }
        let import = &self.import;
        require_positive("import.timeout", import.timeout)?;
        require_positive("import.idle_timeout", import.idle_timeout)?;
        if import.max_redirects > 20 {
            return Err(Invalid::new("import.max_redirects", "must be at most 20"));
        }
        if import.concurrency == 0 {
            return Err(Invalid::new("import.concurrency", "must be at least 1"));
        }
        let queue = &self.r2_queue;
        if queue.enabled {
            if !(queue.api_base.starts_with("https://") || queue.api_base.starts_with("http://")) {
                return Err(Invalid::new("r2_queue.api_base", "must be an http(s) URL"));
            }
            if !(1..=100).contains(&queue.batch_size) {
                return Err(Invalid::new("r2_queue.batch_size", "must be between 1 and 100"));
            }
            if queue.visibility_timeout < Duration::from_secs(1)
                || queue.visibility_timeout > Duration::from_secs(12 * 3600)
            {
                return Err(Invalid::new(
                    "r2_queue.visibility_timeout",
                    "must be between 1s and 12h",
                ));
            }
            require_positive("r2_queue.poll_interval", queue.poll_interval)?;
            if queue.retry_delay > Duration::from_secs(12 * 3600) {
                return Err(Invalid::new("r2_queue.retry_delay", "must be at most 12h"));
            }
        }
        Ok(())
    }
}

/// Where worker machines run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Worker processes on this host (the single-host default).
    Local,
    /// Fly.io Machines.
    Fly,
    /// No autoscaling: workers are run by something else (a static pool, systemd, Kubernetes).
    None,
}

/// `[dispatcher]`: admission control and machine provider.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DispatcherConfig {
    pub provider: ProviderKind,
    pub max_machines: u32,
    pub max_jobs_per_tenant: u32,
    #[serde(with = "humantime_serde")]
    pub scale_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub reap_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_stop_after: Duration,
    #[serde(with = "humantime_serde")]
    pub boot_grace: Duration,
    pub max_stopped: u32,
    pub worker_program: String,
    /// The control-plane credentials the local provider's workers get instead of the
    /// dispatcher's own (empty: the same), so a worker holds only a worker's permissions.
    pub worker_nats_user: String,
    pub worker_nats_password: crate::config::Secret,
    pub worker_redis_url: crate::config::Secret,
    /// Whether workers of the local provider log to the dispatcher's stderr.
    pub local_worker_logs: bool,
    pub fly: crate::machines::fly::Config,
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub stuck_after: Duration,
    #[serde(with = "humantime_serde_vec")]
    pub webhook_schedule: Vec<Duration>,
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
}

/// `Vec<Duration>` written as humantime strings.
mod humantime_serde_vec {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &[Duration],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(value.iter().map(|d| humantime::format_duration(*d).to_string()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Duration>, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        texts
            .iter()
            .map(|t| humantime::parse_duration(t).map_err(serde::de::Error::custom))
            .collect()
    }
}

impl DispatcherConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.max_machines == 0 {
            return Err(Invalid::new("max_machines", "must be at least 1"));
        }
        require_positive("reconcile_interval", self.reconcile_interval)?;
        require_positive("scale_interval", self.scale_interval)?;
        require_positive("reap_interval", self.reap_interval)?;
        require_positive("boot_grace", self.boot_grace)?;
        require_positive("webhook_timeout", self.webhook_timeout)?;
        if self.webhook_schedule.len() > 15 {
            return Err(Invalid::new("webhook_schedule", "at most 15 retries"));
        }
        require_positive("stuck_after", self.stuck_after)
    }
}

/// `[worker]`: one worker machine.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub concurrency: u32,
    pub scratch_dir: PathBuf,
    /// Keep a job's uploaded source after it completed (else it is deleted).
    pub keep_sources: bool,
    pub machine_id: String,
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub max_jobs: u64,
    pub max_failures: u32,
    #[serde(with = "humantime_serde")]
    pub progress_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    /// An HLS transcode of a source longer than this is split into chunks many workers encode
    /// (zero: never).
    #[serde(with = "humantime_serde")]
    pub split_min_duration: Duration,
    /// About how long the first chunk of a split title is: the title is playable once it
    /// (and the first audio range) is in.
    #[serde(with = "humantime_serde")]
    pub first_chunk_duration: Duration,
    /// About how long a chunk of a split title is (a whole number of HLS segments).
    #[serde(with = "humantime_serde")]
    pub chunk_duration: Duration,
    /// Parts of a split title its coordinator runs at once on its own machine (the first in
    /// playback order at normal priority, the others in the background).
    pub coordinator_parts: u32,
    pub engine: crate::engine::Config,
    pub cost: crate::cost::Prices,
}

impl WorkerConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.concurrency == 0 {
            return Err(Invalid::new("concurrency", "must be at least 1"));
        }
        if self.scratch_dir.as_os_str().is_empty() {
            return Err(Invalid::new("scratch_dir", "must not be empty"));
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(Invalid::new("lease_ttl", "must be at least 1s"));
        }
        if self.max_failures == 0 {
            return Err(Invalid::new("max_failures", "must be at least 1"));
        }
        if !(1..=16).contains(&self.coordinator_parts) {
            return Err(Invalid::new("coordinator_parts", "must be 1 to 16"));
        }
        require_positive("progress_interval", self.progress_interval)?;
        require_positive("retry_delay", self.retry_delay)?;
        require_positive("chunk_duration", self.chunk_duration)?;
        require_positive("first_chunk_duration", self.first_chunk_duration)?;
        if !self.machine_id.is_empty()
            && !self.machine_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Invalid::new("machine_id", "use letters, digits, - and _"));
        }
        self.cost.validate()?;
        self.engine.validate()
    }
}

/// `[up]`: the single-host stack started by `tcoder up`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpConfig {
    pub data_dir: PathBuf,
    pub nats_server: String,
    pub redis_server: String,
    pub bin_dir: String,
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
    pub workers: u32,
    pub prometheus: bool,
    pub prometheus_server: String,
    pub prometheus_bind: SocketAddr,
    #[serde(with = "humantime_serde")]
    pub scrape_interval: Duration,
}

impl UpConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        require_positive("ready_timeout", self.ready_timeout)?;
        if self.scrape_interval < Duration::from_secs(1) {
            return Err(Invalid::new("scrape_interval", "must be at least 1s"));
        }
        Ok(())
    }
}
