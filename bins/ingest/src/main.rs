//! `tcoder-ingest`: the public HTTP API, the notification bridge and (on one host) the
//! embedded object store. See `tcoder_ingest::App`.

fn main() -> std::process::ExitCode {
    tcoder::service::main::<tcoder_ingest::App>()
}
