//! `tcoder-worker`: one worker machine. See `tcoder_worker::App`.

fn main() -> std::process::ExitCode {
    tcoder::service::main::<tcoder_worker::App>()
}
