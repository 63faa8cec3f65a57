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
//! | [`admin`] | the admin HTTP server every service runs: `/metrics`, `/healthz`, `/readyz` |
//! | [`metrics`] | the Prometheus registry and process metrics |
//! | [`dlq`] | dead-lettered jobs: record, list, replay |
//! | [`engine`] | probe, plan, decode-once transcode (FFmpeg libraries), sandboxed child + supervisor |
//! | [`events`] | NATS JetStream: subject, stream and consumer names, idempotent set-up |
//! | [`store`] | Redis: connection and Lua scripts |
//! | [`machines`] | the worker machine pool in Redis (records and leases) |
//! | [`jobs`] | the job model: priority, spec, state machine |
//! | [`storage`] | S3: client, object keys, and the embedded local object store |
//! | [`service`] | the `main` every service binary shares |
//! | [`webhooks`] | webhook destination checks (SSRF guard), signing, delivery |
//!
//! Binaries (`bins/*`) stay thin: they parse arguments, load [`config::Settings`], and run an
//! `App` built from these pieces.

pub mod admin;
pub mod auth;
pub mod config;
pub mod cost;
pub mod dlq;
pub mod engine;
pub mod events;
pub mod jobs;
pub mod machines;
pub mod metrics;
pub mod service;
pub mod shutdown;
pub mod storage;
pub mod store;
pub mod telemetry;
pub mod webhooks;

/// Selects the process-wide TLS crypto provider.
///
/// Why: the dependency graph enables both of rustls' providers (`ring` and `aws-lc-rs`), and
/// rustls then refuses to pick one, panicking at the first TLS connection. Call this first in
/// every `main`; calling it again is harmless.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
