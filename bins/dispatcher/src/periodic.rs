//! The one shape of the dispatcher's background loops: wait for the next round (the interval,
//! or a wake-up such as a new work item), do the round's work, log a failed round and go on —
//! until the stop. Admission, the reconciler, the gauges and the deferred-upload promotion
//! are each a `Periodic` plus their work.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

/// When a loop's first round runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstRound {
    /// At once (a gauge is worth having from the start).
    Now,
    /// After the first wait (the work needs the stack settled, or was just done at start).
    AfterWait,
}

/// A background loop: `name` in its log lines, a round every `interval`, sooner on a message
/// of `wake`.
#[derive(Debug)]
pub(crate) struct Periodic {
    pub name: &'static str,
    pub interval: Duration,
    pub first: FirstRound,
    pub wake: Option<async_nats::Subscriber>,
    /// A failed round is logged at debug level (gauges: the next round tells) rather than as
    /// a warning.
    pub quiet: bool,
}

impl Periodic {
    pub(crate) fn every(name: &'static str, interval: Duration, first: FirstRound) -> Periodic {
        Periodic { name, interval, first, wake: None, quiet: false }
    }

    /// Runs `round` until `stop`; each round's failure is logged, never the end of the loop.
    pub(crate) async fn run<F, R>(
        mut self,
        stop: CancellationToken,
        mut round: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> R,
        R: Future<Output = anyhow::Result<()>>,
    {
        let mut waited = self.first == FirstRound::Now;
        loop {
            if !waited {
                let woken = async {
                    match &mut self.wake {
                        Some(wake) => {
                            wake.next().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(self.interval) => {}
                    () = woken => {}
                    () = stop.cancelled() => return Ok(()),
                }
            }
            waited = false;
            if stop.is_cancelled() {
                return Ok(());
            }
            if let Err(e) = round().await {
                match self.quiet {
                    true => tracing::debug!(task = self.name, error = %e, "round failed"),
                    false => {
                        tracing::warn!(task = self.name, error = %e, "round failed; trying again next round")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rounds come at the interval (the first at once or after a wait), a failed round does not
    /// end the loop, and the stop ends it between rounds — under paused time.
    #[tokio::test(start_paused = true)]
    async fn rounds_come_at_the_interval_survive_failures_and_end_at_the_stop() {
        for (first, expected) in [(FirstRound::Now, 4), (FirstRound::AfterWait, 3)] {
            let stop = CancellationToken::new();
            let rounds = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
            let counted = rounds.clone();
            let periodic = Periodic::every("test", Duration::from_secs(10), first);
            let task = tokio::spawn(periodic.run(stop.clone(), move || {
                let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n.is_multiple_of(2) {
                        Err(anyhow::anyhow!("round {n} failed"))
                    } else {
                        Ok(())
                    }
                }
            }));
            tokio::time::sleep(Duration::from_secs(35)).await;
            stop.cancel();
            task.await.unwrap().unwrap();
            assert_eq!(rounds.load(std::sync::atomic::Ordering::SeqCst), expected, "{first:?}");
        }
    }
}
