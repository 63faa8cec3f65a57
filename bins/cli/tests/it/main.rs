//! The `tcoder` command against real processes.

mod compare;
mod observability;
mod up;
