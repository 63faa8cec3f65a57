//! The engine child process (`tcoder-worker engine`): reads one [`EngineJob`] as JSON on
//! stdin, isolates itself from the network, runs it, and writes JSON lines on stdout:
//! `{"type":"sandbox",…}`, then `{"type":"progress",…}` at most once a second, then exactly
//! one `{"type":"result","report":…}` or `{"type":"error","error":{"code","message"}}`.
//!
//! It is the only process that parses untrusted media. Whatever a decoder bug lets an
//! attacker do here, it happens without network, inside the job directory, under rlimits, and
//! is killed at the wall-clock deadline (see `supervisor`).

use std::io::{BufRead, Write};
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

/// Drops every capability: the bounding set (so none can come back through exec) and the
/// effective, permitted and inheritable sets. Must run after `isolate_network`, which needs
/// one.
pub fn drop_capabilities() -> std::io::Result<()> {
    // Highest capability number the kernel knows (CAP_LAST_CAP is 40 on current kernels);
    // dropping unknown numbers fails harmlessly.
    for cap in 0..64 {
        // SAFETY: prctl(2) on the calling process; an invalid number returns EINVAL.
        unsafe {
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // _LINUX_CAPABILITY_VERSION_3: two 32-bit data words.
    let mut header = Header { version: 0x2008_0522, pid: 0 };
    let data = [Data::default(); 2];
    // SAFETY: capset(2) with a valid header and two data words, on the calling thread (the
    // child is still single-threaded here).
    let result =
        unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // No exec from here on can gain privileges (setuid binaries, file capabilities).
    // SAFETY: prctl(2) on the calling process with the documented arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every descriptor above stderr the child inherited by accident (a worker's socket or
/// key file opened without close-on-exec): the engine needs only its three pipes.
pub fn close_inherited_fds() {
    // SAFETY: close_range(2) on descriptors this process does not use; nothing here holds one.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
}

/// Enters an empty network namespace: no interface but a down loopback, so nothing in this
/// process can open a connection anywhere. Must run before any thread is started.
pub fn isolate_network() -> (bool, String) {
    // SAFETY: unshare(2) on the calling (single-threaded) process.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0 {
        return (true, "empty network namespace".to_owned());
    }
    let direct = std::io::Error::last_os_error();
    // Unprivileged: a user namespace grants the capability for a network namespace.
    // SAFETY: as above.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) } == 0 {
        return (true, "empty network namespace (in a user namespace)".to_owned());
    }
    let user = std::io::Error::last_os_error();
    (false, format!("cannot create a network namespace ({direct}; with a user namespace: {user})"))
}

/// The whole child: returns its exit code.
pub fn main() -> ExitCode {
    close_inherited_fds();
    let (network_isolated, mut detail) = isolate_network();
    // Nothing the engine does needs a capability; without them it cannot setns back into the
    // worker's network namespace, change owners, or raise its limits.
    match drop_capabilities() {
        Ok(()) => detail.push_str("; no capabilities, no new privileges"),
        Err(e) => detail.push_str(&format!("; capabilities kept ({e})")),
    }
    emit(&ChildMessage::Sandbox { network_isolated, detail });
    let mut line = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
        emit(&ChildMessage::Error {
            error: EngineError::new(ErrorCode::Failed, format!("cannot read the job: {e}")),
        });
        return ExitCode::from(EXIT_REPORTED_ERROR);
    }
    let job: EngineJob = match serde_json::from_str(&line) {
        Ok(job) => job,
        Err(e) => {
            emit(&ChildMessage::Error {
                error: EngineError::new(ErrorCode::Failed, format!("malformed job: {e}")),
            });
            return ExitCode::from(EXIT_REPORTED_ERROR);
        }
    };
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
