//! The `tcoder` command against real processes.

mod up;
