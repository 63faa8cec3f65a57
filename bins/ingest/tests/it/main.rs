//! tcoder-ingest against real NATS, Redis and S3.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod api;
mod bridge;
mod deletion;
mod follow;
mod helpers;
mod import;
mod lifecycle;
mod multipart;
mod openapi;
mod producers;
mod r2_queue;
mod uploads;
