//! tcoder-ingest against real NATS, Redis and S3.

mod lifecycle;
