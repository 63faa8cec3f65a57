//! tcoder-dispatcher against real NATS, Redis and S3.

mod lifecycle;
