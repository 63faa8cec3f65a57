//! The `tcoder` command against real processes.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod compare;
mod console;
mod observability;
mod up;

/// The CLI profile a `tcoder up` with `data_dir` wrote (tests point `TCODER_PROFILE` there).
fn profile_of(data_dir: &std::path::Path) -> String {
    std::fs::read_to_string(data_dir.join("cli.toml")).unwrap_or_default()
}
