//! tcoder-dispatcher against real NATS, Redis and S3.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod lifecycle;
