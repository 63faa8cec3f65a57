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

/// Tests that start a `tcoder up` stack take turns: `tcoder up` picks free ports when it starts
/// and its children bind them a moment later, so two stacks starting at once (tests run in
/// parallel threads) can race for a port and one of them fails to start.
fn one_stack_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static STACK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A failed test poisons the lock; the next one may still run.
    STACK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
