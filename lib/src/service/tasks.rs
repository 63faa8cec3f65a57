//! A service's long-running tasks (servers, consumers, loops) and how they stop together.

use std::future::Future;

use tokio::task::JoinSet;

use crate::shutdown::Shutdown;

/// The tasks of one service. Any task ending before shutdown is a failure of the service (a
/// server that stopped serving must not leave a half-alive process behind).
#[derive(Debug, Default)]
pub struct Tasks {
    set: JoinSet<(&'static str, anyhow::Result<()>)>,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Runs `task` until it finishes; it must watch the shutdown token and return after it.
    pub fn spawn<F, E>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<anyhow::Error> + Send + 'static,
    {
        self.set.spawn(async move { (name, task.await.map_err(Into::into)) });
    }

    /// Waits for shutdown (or for a task to end early, which starts shutdown), then gives the
    /// remaining tasks the drain deadline to finish and aborts the rest.
    pub async fn run_until_stopped(mut self, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut failure: Option<anyhow::Error> = None;
        tokio::select! {
            biased;
            () = shutdown.triggered() => {}
            Some(joined) = self.set.join_next() => {
                // A task that returns cleanly because shutdown began meanwhile is not a failure.
                failure = match joined {
                    Ok((_, Ok(()))) if shutdown.is_triggered() => None,
                    Ok((name, Ok(()))) => Some(anyhow::anyhow!("{name} stopped unexpectedly")),
                    Ok((name, Err(e))) => Some(e.context(format!("{name} failed"))),
                    Err(e) => Some(anyhow::anyhow!("a task panicked: {e}")),
                };
                shutdown.trigger();
            }
        }
        let started = tokio::time::Instant::now();
        let drained = shutdown
            .drain(async {
                while let Some(joined) = self.set.join_next().await {
                    match joined {
                        Ok((_, Ok(()))) => {}
                        Ok((name, Err(e))) => {
                            tracing::warn!(
                                task = name,
                                error = format!("{e:#}"),
                                "task failed while stopping"
                            );
                        }
                        Err(e) => tracing::warn!(error = %e, "task panicked while stopping"),
                    }
                }
            })
            .await;
        if drained {
            tracing::info!(elapsed = ?started.elapsed(), "drained");
        } else {
            tracing::warn!(deadline = ?shutdown.drain_deadline(), "drain deadline passed; abandoning remaining work");
            self.set.abort_all();
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_task_ending_early_stops_the_service_with_its_error() {
        let shutdown = Shutdown::manual(Duration::from_secs(1));
        let mut tasks = Tasks::new();
        let token = shutdown.token();
        tasks.spawn("server", async move {
            token.cancelled().await;
            anyhow::Ok(())
        });
        tasks.spawn("consumer", async { Err(anyhow::anyhow!("connection lost")) });
        let err = tasks.run_until_stopped(shutdown.clone()).await.unwrap_err();
        assert!(format!("{err:#}").contains("consumer failed"), "{err:#}");
        assert!(shutdown.is_triggered());
    }

    #[tokio::test(start_paused = true)]
    async fn work_past_the_drain_deadline_is_abandoned() {
        let shutdown = Shutdown::manual(Duration::from_secs(2));
        let mut tasks = Tasks::new();
        tasks.spawn("stuck", std::future::pending::<anyhow::Result<()>>());
        shutdown.trigger();
        let started = tokio::time::Instant::now();
        tasks.run_until_stopped(shutdown).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
