//! NATS JetStream: connection, the streams and consumers tcoder uses (created idempotently at
//! start), and the names of everything ([`subjects`]).
//!
//! The broker is the transport, not the record of truth: job state lives in Redis with fencing
//! epochs (see `store`), because JetStream accepts a late ack from a worker whose AckWait has
//! expired.

mod outbox;
pub mod permissions;
mod publish;
mod read;
pub mod subjects;
mod topology;
mod types;

use std::time::Duration;

use serde::Deserialize;

use crate::config::{Invalid, require_positive};

pub use self::outbox::{relay_outbox, run_outbox_relay};
pub use self::publish::{
    AnnounceError, PublishError, end_and_announce, fail_and_announce, latest_event, publish_event,
    publish_json, publish_part_item, publish_rejection, publish_upload, publish_work_item,
};
pub use self::read::{StoredMessage, stored_messages};
pub use self::topology::{
    await_jobs_topology, consumer_configs, durable_messages, ensure_topology,
    ensure_topology_without_updates, queue_depth, stream_configs,
};
pub use self::types::{
    EventKind, JobEvent, Rejection, RejectionKind, Submission, SubmissionSource, SubmitReply,
    UploadEvent, UploadSource, WorkItem,
};

/// `[nats]` settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: String,
    /// This service's NATS user (empty: connect anonymously, for servers without
    /// authorization).
    pub user: String,
    pub password: crate::config::Secret,
    /// A PEM file of the CA that signed the server's certificate: the connection then requires
    /// TLS and verifies the server against it.
    pub tls_ca_file: String,
    pub replicas: usize,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    #[serde(with = "humantime_serde")]
    pub uploads_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub events_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub dlq_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub jobs_ack_wait: Duration,
    pub jobs_max_deliver: i64,
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if self.url.trim().is_empty() {
            return Err(Invalid::new("url", "must not be empty"));
        }
        for server in self.url.split(',') {
            let server = server.trim();
            let valid = server
                .parse::<async_nats::ServerAddr>()
                .is_ok_and(|_| !server.ends_with(':') && !server.contains(' '));
            if !valid {
                return Err(Invalid::new(
                    "url",
                    format!("`{server}` is not a NATS server address"),
                ));
            }
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(Invalid::new("replicas", "must be between 1 and 5"));
        }
        require_positive("connect_timeout", self.connect_timeout)?;
        require_positive("duplicate_window", self.duplicate_window)?;
        require_positive("uploads_max_age", self.uploads_max_age)?;
        require_positive("events_max_age", self.events_max_age)?;
        require_positive("dlq_max_age", self.dlq_max_age)?;
        require_positive("jobs_ack_wait", self.jobs_ack_wait)?;
        if self.jobs_max_deliver < 1 {
            return Err(Invalid::new("jobs_max_deliver", "must be at least 1 (finite)"));
        }
        if self.duplicate_window > self.uploads_max_age {
            return Err(Invalid::new("duplicate_window", "must not exceed uploads_max_age"));
        }
        Ok(())
    }
}

/// Why NATS could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url} within {timeout:?}: {reason}")]
    Connect { url: String, timeout: Duration, reason: String },
    #[error("cannot create JetStream {what}: {reason}")]
    Topology { what: String, reason: String },
    #[error("cannot read stream {0}")]
    Read(String),
}

impl Config {
    /// The servers of `url`: one URL, or several separated by commas (the nodes of a cluster;
    /// the client picks one and fails over to the others).
    pub fn servers(&self) -> Result<Vec<async_nats::ServerAddr>, NatsError> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| {
                url.parse::<async_nats::ServerAddr>().map_err(|e| NatsError::Connect {
                    url: url.to_owned(),
                    timeout: Duration::ZERO,
                    reason: format!("not a NATS URL: {e}"),
                })
            })
            .collect()
    }
}

/// Connects, retrying (bounded by `connect_timeout`) so services may start in any order.
/// After the first connection the client reconnects by itself.
pub async fn connect(config: &Config, client_name: &str) -> Result<async_nats::Client, NatsError> {
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        let mut options = async_nats::ConnectOptions::new()
            .name(client_name)
            .connection_timeout(config.connect_timeout.min(Duration::from_secs(5)));
        if !config.user.is_empty() {
            options =
                options.user_and_password(config.user.clone(), config.password.expose().to_owned());
        }
        if !config.tls_ca_file.is_empty() {
            options =
                options.require_tls(true).add_root_certificates(config.tls_ca_file.clone().into());
        }
        match options.connect(config.servers()?).await {
            Ok(client) => return Ok(client),
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::debug!(error = %e, "NATS not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                return Err(NatsError::Connect {
                    url: config.url.clone(),
                    timeout: config.connect_timeout,
                    reason: e.to_string(),
                });
            }
        }
    }
}

/// Runs `work` while keeping `message` in progress (an in-progress ack every `every`), so a
/// wait on a dependency (Redis down) spends no delivery of the message.
pub async fn holding<T>(
    message: &async_nats::jetstream::Message,
    every: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    let keep = async {
        loop {
            tokio::time::sleep(every).await;
            let _ = message.ack_with(async_nats::jetstream::AckKind::Progress).await;
        }
    };
    tokio::select! {
        out = work => out,
        never = keep => never,
    }
}

/// How long a consumer holding a message waits for an unreachable dependency (Redis, NATS)
/// before giving the message back.
pub const OUTAGE_PATIENCE: Duration = Duration::from_secs(30 * 60);

/// Retries `attempt` on errors with backoff (250 ms doubling to 5 s) until it succeeds or
/// `give_up_after` passed; returns the last result. For consumers that must not turn an
/// outage of a dependency into a verdict on the message (see [`holding`]).
pub async fn retry_through_outage<T, E: std::fmt::Display, Fut>(
    what: &str,
    give_up_after: Duration,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, E>
where
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let started = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(250);
    loop {
        match attempt().await {
            Err(e) if started.elapsed() < give_up_after => {
                tracing::warn!(error = %e, retry_in = ?backoff, "{what}: dependency unreachable; waiting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod outage_tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_waited_out_and_a_lasting_one_given_up_in_bounded_time() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let result: Result<u32, String> =
            retry_through_outage("test", Duration::from_secs(60), || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 5 { Err(format!("down #{n}")) } else { Ok(n) }
            })
            .await;
        assert_eq!(result, Ok(5));
        // 250 ms, 500 ms, 1 s, 2 s, 4 s of backoff.
        assert_eq!(started.elapsed(), Duration::from_millis(7750));

        let started = tokio::time::Instant::now();
        let result: Result<(), String> =
            retry_through_outage("test", Duration::from_secs(60), || async {
                Err("still down".to_owned())
            })
            .await;
        assert!(result.is_err());
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(60) && waited < Duration::from_secs(66),
            "{waited:?}"
        );
    }
}
