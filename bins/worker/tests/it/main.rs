//! tcoder-worker against real NATS, Redis, S3 and FFmpeg.

mod autoscale;
mod engine_sandbox;
mod fly;
mod harness;
mod lifecycle;
mod pipeline;
mod recovery;
