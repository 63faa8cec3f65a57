//! Graceful shutdown: one cancellation token per process, tripped by SIGTERM or SIGINT, and a
//! drain deadline after which work still in flight is abandoned.
//!
//! Why a deadline: an orchestrator (Fly, systemd, `tcoder up`) sends SIGTERM and kills a little
//! later; finishing by ourselves first means every in-flight job is either completed or handed
//! back (nak) rather than left to time out.

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Invalid, require_positive};

/// `[shutdown]` settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Time allowed for in-flight work after the shutdown signal.
    #[serde(with = "humantime_serde")]
    pub drain_deadline: Duration,
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        require_positive("drain_deadline", self.drain_deadline)
    }
}

/// The shutdown signal handed to `App::run_until_stopped`.
#[derive(Debug, Clone)]
pub struct Shutdown {
    token: CancellationToken,
    drain_deadline: Duration,
}

impl Shutdown {
    /// A shutdown that only fires when [`Shutdown::trigger`] is called (tests, embedding).
    pub fn manual(drain_deadline: Duration) -> Shutdown {
        Shutdown { token: CancellationToken::new(), drain_deadline }
    }

    /// A shutdown tripped by SIGTERM or SIGINT. Must be called inside a Tokio runtime.
    pub fn on_signals(drain_deadline: Duration) -> Shutdown {
        let shutdown = Shutdown::manual(drain_deadline);
        let token = shutdown.token.clone();
        tokio::spawn(async move {
            let signal = wait_for_signal().await;
            tracing::info!(signal, "shutdown requested");
            token.cancel();
        });
        shutdown
    }

    /// Starts the shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has started.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }

    /// A token that is cancelled when shutdown starts (for tasks and servers).
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub fn drain_deadline(&self) -> Duration {
        self.drain_deadline
    }

    /// Waits for `work` to finish, but no longer than the drain deadline; returns whether it
    /// finished in time.
    pub async fn drain<F: Future>(&self, work: F) -> bool {
        tokio::time::timeout(self.drain_deadline, work).await.is_ok()
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::warn!("cannot install signal handlers; only Ctrl-C is watched");
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_reports_whether_work_finished_in_time() {
        let shutdown = Shutdown::manual(Duration::from_millis(50));
        assert!(shutdown.drain(async {}).await);
        assert!(!shutdown.drain(std::future::pending::<()>()).await);
    }

    #[tokio::test]
    async fn trigger_wakes_waiters() {
        let shutdown = Shutdown::manual(Duration::from_secs(1));
        let waiter = {
            let s = shutdown.clone();
            tokio::spawn(async move { s.triggered().await })
        };
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
        assert!(shutdown.is_triggered());
    }
}
