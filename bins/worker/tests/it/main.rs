//! tcoder-worker against real NATS, Redis and S3.

mod lifecycle;
