//! The `tcoder` command against real processes.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod compare;
mod observability;
mod up;
