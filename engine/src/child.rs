//! The engine child process (`tcoder-worker engine`): reads one [`EngineJob`] as JSON on
//! stdin, isolates itself from the network, runs it, and writes JSON lines on stdout:
//! `{"type":"sandbox",…}`, then `{"type":"progress",…}` at most once a second, then exactly
//! one `{"type":"result","report":…}` or `{"type":"error","error":{"code","message"}}`.
//!
//! It is the only process that parses untrusted media. Whatever a decoder bug lets an
//! attacker do here, it happens inside the sandbox (`crate::sandbox`: namespaces, an
//! unprivileged uid, Landlock, no capabilities, a seccomp allowlist), under rlimits, and is
//! killed at the wall-clock deadline (see `supervisor`).

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use tcoder::engine::protocol::{ChildMessage, EXIT_REPORTED_ERROR};
use tcoder::engine::{EngineError, EngineJob, ErrorCode, MediaInfo};

fn emit(message: &ChildMessage) {
    let mut stdout = std::io::stdout().lock();
    let line = serde_json::to_string(message).expect("messages serialize");
    // A broken pipe means the supervisor is gone; nothing useful is left to do.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// The whole child: returns its exit code.
pub fn main() -> ExitCode {
    // The job first (from the supervisor, trusted), then the sandbox, then the media.
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    let job_dir = std::env::current_dir().unwrap_or_default();
    let report = crate::sandbox::enter(Path::new("."));
    emit(&ChildMessage::Sandbox(report));
    if let Err(e) = read {
        emit(&ChildMessage::Error {
            error: EngineError::new(ErrorCode::Failed, format!("cannot read the job: {e}")),
        });
        return ExitCode::from(EXIT_REPORTED_ERROR);
    }
    let mut job: EngineJob = match serde_json::from_str(&line) {
        Ok(job) => job,
        Err(e) => {
            emit(&ChildMessage::Error {
                error: EngineError::new(ErrorCode::Failed, format!("malformed job: {e}")),
            });
            return ExitCode::from(EXIT_REPORTED_ERROR);
        }
    };
    // Paths relative to the job folder (our working directory): the folders above it may not
    // be reachable from inside the sandbox.
    let mut paths = vec![&mut job.input, &mut job.output_dir];
    if let tcoder::engine::Task::Stitch(parts) = &mut job.task {
        paths.push(&mut parts.dir);
    }
    for sidecar in &mut job.sidecars {
        if let tcoder::engine::SidecarFile::Fetched(path) = sidecar {
            paths.push(path);
        }
    }
    for path in paths {
        if let Ok(relative) = path.strip_prefix(&job_dir) {
            *path = Path::new(".").join(relative);
        }
    }
    #[cfg(feature = "bench")]
    if let Some(outcome) = tcoder::engine::bench::noop(&job) {
        return match outcome {
            Ok(report) => {
                emit(&ChildMessage::Result { report: Box::new(report) });
                ExitCode::SUCCESS
            }
            Err(error) => {
                emit(&ChildMessage::Error { error });
                ExitCode::from(EXIT_REPORTED_ERROR)
            }
        };
    }
    let on_probed =
        &mut |media: &MediaInfo| emit(&ChildMessage::Probed { media: Box::new(media.clone()) });
    match crate::run_with(&job, on_probed, &mut |progress| {
        emit(&ChildMessage::Progress(progress.clone()))
    }) {
        Ok(report) => {
            emit(&ChildMessage::Result { report: Box::new(report) });
            ExitCode::SUCCESS
        }
        Err(error) => {
            emit(&ChildMessage::Error { error: classify_memory(error) });
            ExitCode::from(EXIT_REPORTED_ERROR)
        }
    }
}

/// Libraries report a failed allocation as a generic error ("Generic error in an external
/// library"). When such a failure happens close to the address-space limit, memory is the
/// cause: report `limits.memory` so it is not retried as an engine fault.
fn classify_memory(error: EngineError) -> EngineError {
    if error.code != ErrorCode::Failed {
        return error;
    }
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit on this process.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return error;
    }
    let used = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmPeak:")
                    .map(|v| v.trim().trim_end_matches(" kB").trim().to_owned())
            })
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024);
    let headroom = used.map(|used| limit.rlim_cur.saturating_sub(used));
    if headroom.is_some_and(|h| h < (limit.rlim_cur / 4).max(256 << 20)) {
        return EngineError::new(
            ErrorCode::Memory,
            format!(
                "{} (near the {} MiB address-space limit)",
                error.message,
                limit.rlim_cur >> 20
            ),
        );
    }
    error
}
