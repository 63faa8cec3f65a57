//! Dev-only test kit: real servers on free loopback ports, sample media, bounded waits and a
//! chaos proxy.
//!
//! - [`NatsServer`]: nats-server with JetStream (`sync_interval: always`) in a temp store dir.
//! - [`RedisServer`]: redis-server without persistence (or with AOF `always` when asked).
//! - [`S3Server`]: an S3 endpoint (s3s + s3s-fs, the same code as tcoder's embedded store) with
//!   SigV4 auth, in a temp dir.
//! - [`RedisSentinels`]: a Redis primary, its replica and three redis-sentinel processes.
//! - [`TestEnv`]: all three at once.
//! - [`corpus`]: the malicious/malformed input corpus (docs/DESIGN.md, "Untrusted media"); [`Canary`] for SSRF.
//! - [`media`]: tiny clips generated with FFmpeg's lavfi sources, cached under `target/`.
//! - [`eventually`] / [`eventually_async`]: bounded polling, instead of sleeping.
//! - [`ChaosProxy`]: a TCP proxy that can pass, drop or blackhole traffic.
//! - [`cloudflare::FakeCloudflareQueue`]: the Cloudflare Queues pull API (R2 notifications).
//! - [`webhook::WebhookReceiver`]: records webhooks; verifies them with the `standardwebhooks` package.
//! - [`fly::FakeFly`]: the Fly Machines API (schema-checked, rate-limited, real worker processes).
//! - [`ServiceProcess`]: a tcoder service binary run as a real process (start, probe, SIGTERM).
//!
//! Processes are stopped by pid when their handle drops; servers run in-process stop with
//! their handle too. This crate does not depend on `tcoder` (no dev-dependency cycle).

pub mod browser;
mod canary;
mod chaos;
pub mod cloudflare;
pub mod contracts;
pub mod corpus;
mod env;
pub mod everyday;
mod fake_server;
pub mod fly;
pub(crate) mod http;
pub mod media;
mod moto;
mod nats;
mod ports;
mod process;
mod redis;
mod s3;
mod sentinel;
mod service;
mod wait;
pub mod webhook;

pub use canary::Canary;
pub use chaos::{ChaosMode, ChaosProxy};
pub use env::TestEnv;
pub use http::http_get;
pub use moto::MotoServer;
pub use nats::NatsServer;
pub use ports::free_port;
pub use process::ChildProcess;
pub use redis::RedisServer;
pub use s3::S3Server;
pub use sentinel::RedisSentinels;
pub use service::{ServiceProcess, assert_admin_endpoints, assert_binary_stops_cleanly};
pub use wait::{eventually, eventually_async};

use std::path::PathBuf;

/// The workspace root (where `.tools/` and `target/` live).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// Finds a tool: `$<env_var>` if set, else `.tools/bin/<name>` in the workspace, else `name` on
/// PATH. Panics with a hint to run the set-up when none exists.
pub fn tool_path(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let local = workspace_root().join(".tools/bin").join(name);
    if local.exists() {
        return local;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("{name} not found (set {env_var}, or run scripts/setup.sh to install it)");
}

/// Whether the services and workers tests start write their logs to the test's stderr:
/// `TEST_LOG=1 cargo test …` to see them (they are discarded otherwise, so a passing run stays
/// readable).
pub fn test_log() -> bool {
    std::env::var_os("TEST_LOG").is_some_and(|v| !v.is_empty() && v != "0")
}
