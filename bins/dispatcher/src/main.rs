//! `tcoder-dispatcher`: the control plane. See `tcoder_dispatcher::App`.

fn main() -> std::process::ExitCode {
    tcoder::service::main::<tcoder_dispatcher::App>()
}
