//! tcoder's shared library: everything two binaries use, and every adapter to an external
//! system, each behind one module.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | layered settings (defaults → service file → `--config` → env) and validation |
//! | [`telemetry`] | tracing set-up (human or JSON logs) |
//! | [`shutdown`] | signal handling, cancellation token, drain deadline |
//! | [`auth`] | API keys: generation, hashed storage, key → tenant |
//! | [`api`] | the HTTP API's views (what the routes write, OpenAPI describes) and the typed client the CLI and tests use |
//! | [`admin`] | the admin HTTP server every service runs: `/metrics`, `/healthz`, `/readyz` |
//! | [`metrics`] | the Prometheus registry and process metrics |
//! | [`dlq`] | dead-lettered jobs: record, list, replay |
//! | [`engine`] | the engine's contract (job, plan, limits, report, errors, child protocol) and the supervisor of the sandboxed child; the FFmpeg work is the `tcoder-engine` crate |
//! | [`events`] | NATS JetStream: subject, stream and consumer names, idempotent set-up |
//! | [`redis`] | Redis: connection, key prefix and errors (each domain module's keys and Lua scripts use it) |
//! | [`machines`] | the worker machine pool in Redis (records and leases) |
//! | [`jobs`] | the job model: priority, spec, state machine |
//! | [`s3`] | S3: client, every request with typed errors, streamed transfers, object keys, the embedded local object store |
//! | [`service`] | the `main` every service binary shares |
//! | [`webhooks`] | webhook destination checks (SSRF guard), signing, delivery |
//!
//! Binaries (`bins/*`) stay thin: they parse arguments, load [`config::Settings`], and run an
//! `App` built from these pieces.

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod cors;
pub mod cost;
pub mod dlq;
pub mod engine;
pub mod events;
pub mod hls;
pub mod http_serve;
pub mod isobmff;
pub mod jobs;
pub mod machines;
pub mod metrics;
pub mod playback;
pub mod redis;
pub mod s3;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod watch;
pub mod webhooks;

/// Selects the process-wide TLS crypto provider.
///
/// Why: the dependency graph enables both of rustls' providers (`ring` and `aws-lc-rs`), and
/// rustls then refuses to pick one, panicking at the first TLS connection. Call this first in
/// every `main`; calling it again is harmless.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
