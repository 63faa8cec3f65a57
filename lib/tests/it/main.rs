//! Integration tests of `tcoder`'s adapters against real servers started by the test kit.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod admin;
mod auth;
mod config_files;
mod helpers;
mod jobs;
mod nats;
mod redis;
mod s3;
mod webhooks;
