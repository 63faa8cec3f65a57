//! Running a tcoder service binary as a real process, for start / probe / SIGTERM tests.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{ChildProcess, eventually, free_port, http_get};

/// A service binary started with its admin server on a known free port.
#[derive(Debug)]
pub struct ServiceProcess {
    process: ChildProcess,
    admin: SocketAddr,
}

impl ServiceProcess {
    /// Starts `binary` with `env` (plus `TCODER__ADMIN__BIND` on a free port).
    pub fn spawn(binary: &Path, env: &[(String, String)]) -> ServiceProcess {
        ServiceProcess::spawn_wrapped(&[], binary, env)
    }

    /// As [`ServiceProcess::spawn`], through `wrapper` (a program and its arguments that end
    /// by executing the binary, given as the last argument): e.g. `unshare` to run it in a
    /// namespace of its own. The wrapper must `exec`, so the pid is the service's.
    pub fn spawn_wrapped(
        wrapper: &[&str],
        binary: &Path,
        env: &[(String, String)],
    ) -> ServiceProcess {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut command = match wrapper {
            [] => Command::new(binary),
            [program, args @ ..] => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
        };
        command
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("TCODER__ADMIN__BIND", admin.to_string())
            .stdout(Stdio::null())
            .stderr(if crate::test_log() { Stdio::inherit() } else { Stdio::null() });
        let name = binary.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let process = ChildProcess::spawn(&name, &mut command).expect("spawn service binary");
        ServiceProcess { process, admin }
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends a signal (e.g. `libc::SIGKILL`, `libc::SIGSTOP`, `libc::SIGCONT`).
    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }

    /// Waits (bounded) until `/readyz` answers 200; panics with the last answer otherwise.
    pub fn wait_ready(&mut self, timeout: Duration) {
        self.wait_for("/readyz", timeout);
    }

    /// Waits (bounded) until `/healthz` answers 200 (alive, whatever its dependencies say).
    pub fn wait_alive(&mut self, timeout: Duration) {
        self.wait_for("/healthz", timeout);
    }

    fn wait_for(&mut self, path: &str, timeout: Duration) {
        let admin = self.admin;
        let process = &mut self.process;
        eventually(timeout, || {
            if let Some(status) = process.try_status() {
                panic!("service exited before becoming ready: {status}");
            }
            match http_get(admin, path) {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    }

    /// Waits (bounded) until the process exits by itself (after a signal sent with
    /// [`ServiceProcess::signal`]); returns its exit status, panics if it runs on.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let process = &mut self.process;
        eventually(within, || process.try_status().ok_or("still running"))
    }

    /// SIGTERM and wait up to `grace`; returns the exit status and whether it stopped in time.
    pub fn terminate(&mut self, grace: Duration) -> (ExitStatus, bool) {
        self.process.terminate(grace).expect("service was running")
    }
}

/// The admin server every service runs: `/healthz`, `/readyz` and `/metrics` answer 200 and the
/// metrics name the service (`tcoder_build_info{service="<service>"…}`). Blocking: call it from
/// `spawn_blocking` in async tests.
pub fn assert_admin_endpoints(admin: SocketAddr, service: &str) {
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, body) = http_get(admin, path).expect("admin server answers");
        assert_eq!(status, 200, "{service} {path}: {body}");
    }
    let (_, metrics) = http_get(admin, "/metrics").expect("admin server answers");
    let build_info = format!("tcoder_build_info{{service=\"{service}\"");
    assert!(metrics.contains(&build_info), "{service} metrics lack {build_info}: {metrics}");
}

/// The service binary becomes ready with `env`, then exits 0 on SIGTERM within its 5 s drain
/// deadline.
pub fn assert_binary_stops_cleanly(binary: &Path, env: &[(String, String)]) {
    let mut vars = env.to_vec();
    vars.push(("TCODER__SHUTDOWN__DRAIN_DEADLINE".to_owned(), "5s".to_owned()));
    let mut service = ServiceProcess::spawn(binary, &vars);
    service.wait_ready(Duration::from_secs(30));
    let (status, in_time) = service.terminate(Duration::from_secs(5));
    assert!(in_time, "{} did not stop within the drain deadline", binary.display());
    assert!(status.success(), "{}: {status}", binary.display());
}
