//! Integration tests of `tcoder`'s adapters against real servers started by the test kit.

mod admin;
mod config_files;
mod helpers;
mod nats;
mod redis;
mod s3;
