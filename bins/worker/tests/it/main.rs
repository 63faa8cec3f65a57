//! tcoder-worker against real NATS, Redis, S3 and FFmpeg.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod autoscale;
mod captions;
mod chaos;
mod engine_sandbox;
mod fly;
mod harness;
mod lifecycle;
mod moto;
mod outages;
mod pipeline;
mod producers;
mod recovery;
mod scale;
mod split;
