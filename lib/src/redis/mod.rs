//! Redis: the authoritative job state machine, fencing epochs, machine leases and the pool.
//! Every multi-key change is one Lua script, so no reader ever sees half a transition.
//!
//! Key prefix `tcoder:`; every key is built in [`keys`] (see docs/DESIGN.md, "Redis").

pub mod keys;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Deserialize;

use crate::config::{Invalid, require_positive};

/// Prefix of every key tcoder writes.
pub const KEY_PREFIX: &str = "tcoder:";

/// `[redis]` settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: String,
    /// PEM file of the CA that signed the server's certificate, for `rediss://` URLs (TLS);
    /// empty: the system's trusted roots.
    #[serde(default)]
    pub tls_ca_file: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        redis::Client::open(self.url.as_str())
            .map_err(|e| Invalid::new("url", format!("not a Redis URL: {e}")))?;
        if !self.tls_ca_file.is_empty() {
            if !self.url.starts_with("rediss://") {
                return Err(Invalid::new("tls_ca_file", "is for rediss:// (TLS) URLs"));
            }
            std::fs::metadata(&self.tls_ca_file)
                .map_err(|e| Invalid::new("tls_ca_file", format!("{}: {e}", self.tls_ca_file)))?;
        }
        require_positive("timeout", self.timeout)
    }

    fn client(&self) -> Result<redis::Client, StoreError> {
        if self.tls_ca_file.is_empty() {
            return Ok(redis::Client::open(self.url.as_str())?);
        }
        let root = std::fs::read(&self.tls_ca_file).map_err(|e| {
            StoreError::Corrupt(format!("cannot read redis.tls_ca_file {}: {e}", self.tls_ca_file))
        })?;
        let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(root) };
        Ok(redis::Client::build_with_tls(self.url.as_str(), certificates)?)
    }
}

/// Why Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to Redis at {url} within {timeout:?}: {source}")]
    Connect { url: String, timeout: Duration, source: redis::RedisError },
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("corrupt record in Redis: {0}")]
    Corrupt(String),
}

/// `url` without its password (for messages): `redis://user:***@host/`.
pub fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(at)) if at > scheme.len() => {
            let credentials = &rest[..at - scheme.len() - 3];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{}", &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Connects with a [`ConnectionManager`], which reconnects by itself after the first success.
/// The first connection is retried until `timeout` so services may start in any order.
pub async fn connect(config: &Config) -> Result<ConnectionManager, StoreError> {
    let client = config.client()?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(1));
    let deadline = tokio::time::Instant::now() + config.timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        match client.get_connection_manager_with_config(manager_config.clone()).await {
            Ok(manager) => return Ok(manager),
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::debug!(error = %e, "Redis not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(source) => {
                return Err(StoreError::Connect {
                    url: redacted(&config.url),
                    timeout: config.timeout,
                    source,
                });
            }
        }
    }
}

/// `PING`, for readiness checks.
pub async fn ping(conn: &mut ConnectionManager) -> Result<(), StoreError> {
    let _: String = redis::cmd("PING").query_async(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            super::redacted("redis://worker:s3cret@10.0.0.1:6379/"),
            "redis://worker:***@10.0.0.1:6379/"
        );
        assert_eq!(super::redacted("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
    }
}
