//! Redis: the authoritative job state machine, fencing epochs, machine leases and the pool.
//! Every multi-key change is one Lua script, so no reader ever sees half a transition.
//!
//! Key prefix `tcoder:`; every key is built in [`keys`] (see docs/DESIGN.md, "Redis").

pub mod acl;
mod connection;
pub mod keys;
pub mod leader;

use std::time::Duration;

use redis::IntoConnectionInfo;
use serde::Deserialize;

pub use self::connection::Conn;

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
    /// Comma-separated `host:port` of Redis Sentinels; empty: connect to `url` directly.
    #[serde(default)]
    pub sentinels: String,
    /// The name the sentinels monitor the primary under.
    #[serde(default)]
    pub sentinel_master: String,
    /// The sentinels' own password (their `requirepass`), if they have one.
    #[serde(default)]
    pub sentinel_password: String,
    /// Replicas that must confirm each fencing write (`WAIT`) before it counts.
    #[serde(default)]
    pub wait_replicas: u32,
}

impl Config {
    /// A plain connection to `url`: no TLS roots of its own, no Sentinel, no `WAIT`.
    pub fn direct(url: String, timeout: Duration) -> Config {
        Config {
            url,
            tls_ca_file: String::new(),
            timeout,
            sentinels: String::new(),
            sentinel_master: String::new(),
            sentinel_password: String::new(),
            wait_replicas: 0,
        }
    }

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
        if !self.sentinels.is_empty() {
            self.sentinel_nodes()?;
            if self.sentinel_master.is_empty() {
                return Err(Invalid::new("sentinel_master", "is required with sentinels"));
            }
        }
        require_positive("timeout", self.timeout)
    }

    /// The sentinel addresses, parsed.
    fn sentinel_nodes(&self) -> Result<Vec<redis::ConnectionAddr>, Invalid> {
        self.sentinels
            .split(',')
            .map(str::trim)
            .filter(|node| !node.is_empty())
            .map(|node| {
                let bad = || Invalid::new("sentinels", format!("{node:?} is not host:port"));
                let (host, port) = node.rsplit_once(':').ok_or_else(bad)?;
                let port = port.parse::<u16>().map_err(|_| bad())?;
                Ok(redis::ConnectionAddr::Tcp(host.to_owned(), port))
            })
            .collect()
    }

    /// The root certificate from `tls_ca_file`, if set.
    fn root_certificate(&self) -> Result<Option<Vec<u8>>, RedisError> {
        if self.tls_ca_file.is_empty() {
            return Ok(None);
        }
        std::fs::read(&self.tls_ca_file).map(Some).map_err(|e| {
            RedisError::Corrupt(format!("cannot read redis.tls_ca_file {}: {e}", self.tls_ca_file))
        })
    }

    /// What connections go to: `url`, or the primary the sentinels name (with the
    /// credentials, database and TLS of `url`).
    fn target(&self) -> Result<connection::Target, RedisError> {
        if self.sentinels.is_empty() {
            return Ok(connection::Target::Direct(self.client()?));
        }
        let nodes = self.sentinel_nodes().map_err(|e| RedisError::Corrupt(format!("{e:?}")))?;
        let info = self.url.as_str().into_connection_info()?;
        let primary = info.redis_settings();
        let mut builder = redis::sentinel::SentinelClientBuilder::new(
            nodes,
            &self.sentinel_master,
            redis::sentinel::SentinelServerType::Master,
        )?
        .set_client_to_redis_db(primary.db());
        if let Some(user) = primary.username() {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = primary.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        if !self.sentinel_password.is_empty() {
            builder = builder.set_client_to_sentinel_password(&self.sentinel_password);
        }
        if self.url.starts_with("rediss://") {
            builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
            if let Some(root) = self.root_certificate()? {
                builder = builder.set_client_to_redis_certificates(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root),
                });
            }
        }
        Ok(connection::Target::Sentinel(builder.build()?))
    }

    /// For messages: where this connects, without passwords.
    fn describe(&self) -> String {
        if self.sentinels.is_empty() {
            redacted(&self.url)
        } else {
            format!("primary {:?} of sentinels {}", self.sentinel_master, self.sentinels)
        }
    }

    fn client(&self) -> Result<redis::Client, RedisError> {
        let Some(root) = self.root_certificate()? else {
            return Ok(redis::Client::open(self.url.as_str())?);
        };
        let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(root) };
        Ok(redis::Client::build_with_tls(self.url.as_str(), certificates)?)
    }
}

/// Why Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("cannot connect to Redis at {url} within {timeout:?}: {source}")]
    Connect { url: String, timeout: Duration, source: redis::RedisError },
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(
        "the write reached the Redis primary but only {acked} of {wanted} replicas confirmed it \
         within {timeout:?}"
    )]
    NotReplicated { wanted: u32, acked: u32, timeout: Duration },
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

/// Connects (see [`Conn`]), which reconnects by itself after the first success. The first
/// connection is retried until `timeout` so services may start in any order.
pub async fn connect(config: &Config) -> Result<Conn, RedisError> {
    let db = config.url.as_str().into_connection_info()?.redis_settings().db();
    let conn =
        Conn::new(config.target()?, config.timeout, db, config.wait_replicas, config.describe());
    let deadline = tokio::time::Instant::now() + config.timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        match conn.connect().await {
            Ok(()) => return Ok(conn),
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::debug!(error = %e, "Redis not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(source) => {
                return Err(RedisError::Connect {
                    url: config.describe(),
                    timeout: config.timeout,
                    source,
                });
            }
        }
    }
}

/// `PING`, for readiness checks.
pub async fn ping(conn: &mut Conn) -> Result<(), RedisError> {
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
