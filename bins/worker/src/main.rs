//! `tcoder-worker`: one worker machine. See `tcoder_worker::App`.
//!
//! `tcoder-worker engine` is the sandboxed engine child the worker starts for every job; it
//! must be dispatched before anything else runs (it enters namespaces while the process is
//! still single-threaded). `tcoder-worker sandbox-check` enters the same sandbox and reports
//! what this host's kernel grants and refuses.

fn main() -> std::process::ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("engine") => return tcoder_engine::child::main(),
        Some("sandbox-check") => return tcoder_engine::sandbox_check(),
        _ => {}
    }
    tcoder::service::main::<tcoder_worker::App>()
}
