//! `tcoder-worker`: one worker machine. See `tcoder_worker::App`.
//!
//! `tcoder-worker engine` is the sandboxed engine child the worker starts for every job; it
//! must be dispatched before anything else runs (it isolates its network while the process is
//! still single-threaded).

fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("engine") {
        return tcoder_engine::child::main();
    }
    tcoder::service::main::<tcoder_worker::App>()
}
