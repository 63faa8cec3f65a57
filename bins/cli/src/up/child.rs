//! One process of the stack: spawned in its own process group (so Ctrl-C reaches only
//! `tcoder up`, which then stops the parts in order) and tied to our lifetime with a
//! parent-death signal (so a killed `tcoder up` leaves nothing behind).

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

/// A running part of the stack.
#[derive(Debug)]
pub(crate) struct StackChild {
    pub name: &'static str,
    child: Child,
    /// How long it may take to stop after SIGTERM before it is killed.
    grace: Duration,
}

impl StackChild {
    pub(crate) fn spawn(
        name: &'static str,
        mut command: Command,
        grace: Duration,
    ) -> anyhow::Result<StackChild> {
        command.stdin(Stdio::null()).process_group(0).kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches only the child being created.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| {
            let program = command.as_std().get_program().to_string_lossy().into_owned();
            anyhow::anyhow!("cannot start {name} ({program}): {e}")
        })?;
        Ok(StackChild { name, child, grace })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Waits for the process to exit by itself.
    pub(crate) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Whether it has already exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL. Returns whether it stopped cleanly
    /// (exit status 0, or a clean signal exit) within the grace period.
    pub(crate) async fn stop(&mut self) -> bool {
        if let Some(status) = self.exited() {
            return status.success();
        }
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(self.grace, self.child.wait()).await {
            Ok(Ok(status)) => {
                let clean = status.success();
                if !clean {
                    tracing::warn!(part = self.name, %status, "stopped with an error");
                }
                clean
            }
            Ok(Err(e)) => {
                tracing::warn!(part = self.name, error = %e, "cannot wait for process");
                false
            }
            Err(_) => {
                tracing::warn!(part = self.name, grace = ?self.grace, "did not stop in time; killing");
                let _ = self.child.kill().await;
                false
            }
        }
    }
}
