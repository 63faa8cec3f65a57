//! Settings sections that belong to one service each. They live in `lib` (not in the bins) so
//! one `default.toml` documents every key and `tcoder up` can read the services' addresses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Invalid, require_positive};

/// `[ingest]`: the public HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub http_bind: SocketAddr,
    pub local_store: LocalStoreConfig,
}

/// `[ingest.local_store]`: the embedded S3-compatible store for the single-host stack.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalStoreConfig {
    pub enabled: bool,
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
}

impl IngestConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.local_store.enabled && self.local_store.data_dir.as_os_str().is_empty() {
            return Err(Invalid::new("local_store.data_dir", "must not be empty"));
        }
        Ok(())
    }
}

/// Where worker machines run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Worker processes on this host (the single-host default).
    Local,
    /// Fly.io Machines.
    Fly,
}

/// `[dispatcher]`: admission control and machine provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatcherConfig {
    pub provider: ProviderKind,
    pub max_machines: u32,
}

impl DispatcherConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.max_machines == 0 {
            return Err(Invalid::new("max_machines", "must be at least 1"));
        }
        Ok(())
    }
}

/// `[worker]`: one worker machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub concurrency: u32,
    pub scratch_dir: PathBuf,
}

impl WorkerConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.concurrency == 0 {
            return Err(Invalid::new("concurrency", "must be at least 1"));
        }
        if self.scratch_dir.as_os_str().is_empty() {
            return Err(Invalid::new("scratch_dir", "must not be empty"));
        }
        Ok(())
    }
}

/// `[up]`: the single-host stack started by `tcoder up`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpConfig {
    pub data_dir: PathBuf,
    pub nats_server: String,
    pub redis_server: String,
    pub bin_dir: String,
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
}

impl UpConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        require_positive("ready_timeout", self.ready_timeout)
    }
}
