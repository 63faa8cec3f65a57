//! tcoder-ingest against real NATS, Redis and S3.

mod api;
mod bridge;
mod helpers;
mod lifecycle;
mod r2_queue;
mod uploads;
