//! A child process that is stopped by pid when dropped.

use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A spawned server process. Dropping it kills the process (SIGKILL) and reaps it; only the
/// process we started is touched.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    /// Behind a lock so `signal(&self)` can check the child is unreaped before signalling it.
    child: Mutex<Option<Child>>,
}

impl ChildProcess {
    pub fn spawn(name: &str, command: &mut Command) -> std::io::Result<ChildProcess> {
        let child = command.spawn()?;
        Ok(ChildProcess { name: name.to_owned(), child: Mutex::new(Some(child)) })
    }

    /// The child's stdout, when spawned with `Stdio::piped()`.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.get_mut().expect("child lock").as_mut().and_then(|c| c.stdout.take())
    }

    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.get_mut().expect("child lock").as_mut().and_then(|c| c.stderr.take())
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().expect("child lock").as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`) to the process, unless it already exited (its
    /// pid, once reaped by `try_status`, may belong to another process by now).
    pub fn signal(&self, signal: i32) {
        let mut guard = self.child.lock().expect("child lock");
        if let Some(child) = guard.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            let pid = i32::try_from(child.id()).expect("pid fits in i32");
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped (checked
            // just above, under the lock every wait on it takes).
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Whether the process has exited (and its status if so).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.get_mut().expect("child lock").as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, then wait up to `grace`; SIGKILL if still running. Returns the exit status and
    /// whether it exited within the grace period.
    pub fn terminate(&mut self, grace: Duration) -> Option<(ExitStatus, bool)> {
        let mut child = self.child.get_mut().expect("child lock").take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some((status, true));
        }
        let pid = i32::try_from(child.id()).expect("pid fits in i32");
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((status, true));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        child.wait().ok().map(|status| (status, false))
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.get_mut().expect("child lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.child.get_mut().expect("child lock").is_some() {
            self.kill();
            eprintln!("testkit: stopped {}", self.name);
        }
    }
}
