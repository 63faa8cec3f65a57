//! Keeps an attempt's lease alive while the engine runs, and decides when to stop: the job was
//! canceled, another attempt took it over, or the lease could not be renewed for nearly a full
//! TTL (self-fencing: better to stop than to run on while another worker may have started).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use tcoder::jobs::{Attempt, JobStore, RenewOutcome};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::WorkerMetrics;

/// Why an attempt was stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// The job was canceled (API): ack the message, nothing else to do.
    Canceled,
    /// A newer attempt owns the job: no ack, no nak.
    Lost,
    /// The lease could not be renewed in time: no ack, no nak.
    SelfFenced,
    /// The worker is shutting down: requeue and nak at once.
    Released,
}

/// A stop signal with its reason (the first reason wins).
#[derive(Debug, Clone, Default)]
pub(crate) struct Stop {
    token: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
}

impl Stop {
    pub(crate) fn stop(&self, reason: StopReason) {
        let mut current = self.reason.lock().expect("stop lock");
        if current.is_none() {
            *current = Some(reason);
        }
        drop(current);
        self.token.cancel();
    }

    pub(crate) fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().expect("stop lock")
    }

    pub(crate) fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub(crate) async fn stopped(&self) {
        self.token.cancelled().await;
    }
}

/// Stops `stop` with the reason `cancelled` resolves to (a worker's release, an outer
/// attempt's stop); ends when `stop` does.
pub(crate) fn stop_on(
    stop: &Stop,
    cancelled: impl Future<Output = StopReason> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            reason = cancelled => stop.stop(reason),
            () = stop.stopped() => {}
        }
    })
}

/// One attempt's lease, as the keeper sees it.
pub(crate) trait Lease {
    /// Renews the lease for another TTL; `Err` is a failure to reach the store.
    fn renew(&self) -> impl Future<Output = Result<RenewOutcome, String>> + Send;
    /// Called after each successful renewal (tells JetStream the message is in progress).
    fn renewed(&self) -> impl Future<Output = ()> + Send;
    /// Called after each failed or timed-out renewal.
    fn renewal_failed(&self, error: &str);
}

/// The lease of `attempt` in Redis, with in-progress acks of its message.
pub(crate) struct RedisLease {
    pub jobs: JobStore,
    pub attempt: Attempt,
    pub message: Arc<Message>,
    pub ttl: Duration,
    pub metrics: WorkerMetrics,
    /// The worker's "Redis may be unreachable" flag (see `Worker::redis_suspect`).
    pub redis_suspect: Arc<std::sync::atomic::AtomicBool>,
}

impl Lease for RedisLease {
    async fn renew(&self) -> Result<RenewOutcome, String> {
        self.jobs.renew(&self.attempt, self.ttl).await.map_err(|e| e.to_string())
    }

    async fn renewed(&self) {
        if let Err(e) = self.message.ack_with(AckKind::Progress).await {
            tracing::debug!(error = %e, "in-progress ack failed");
        }
    }

    fn renewal_failed(&self, error: &str) {
        self.redis_suspect.store(true, std::sync::atomic::Ordering::Relaxed);
        self.metrics.lease_renewals_failed.inc();
        tracing::warn!(job = %self.attempt.job_id, error, "lease renewal failed");
    }
}

/// When the keeper renews and when it gives up, relative to the last successful renewal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaseTiming {
    pub ttl: Duration,
}

impl LeaseTiming {
    /// How often the keeper wakes up (renewal is due every third of the TTL; the extra ticks
    /// retry failures, each bounded by one tick).
    pub(crate) fn tick(self) -> Duration {
        self.ttl / 6
    }

    pub(crate) fn renewal_due(self, since_ok: Duration) -> bool {
        since_ok >= self.ttl / 3
    }

    /// Self-fence: the lease may lapse before another renewal could land, and another worker
    /// may then take the job over; better to stop first.
    pub(crate) fn overdue(self, since_ok: Duration) -> bool {
        since_ok >= self.ttl * 5 / 6
    }
}

/// Keeps the lease of `attempt` in Redis alive until `stop`.
pub(crate) async fn keep_lease(
    jobs: JobStore,
    attempt: Attempt,
    message: Arc<Message>,
    ttl: Duration,
    stop: Stop,
    metrics: WorkerMetrics,
    redis_suspect: Arc<std::sync::atomic::AtomicBool>,
) {
    let job = attempt.job_id.to_string();
    let epoch = attempt.epoch;
    let lease = RedisLease { jobs, attempt, message, ttl, metrics: metrics.clone(), redis_suspect };
    if let Some(reason) = keep(&lease, LeaseTiming { ttl }, &stop).await {
        match reason {
            StopReason::Lost => {
                tracing::warn!(job, epoch, "lease lost to a newer attempt; stopping");
                metrics.self_fences.inc();
            }
            StopReason::SelfFenced => {
                tracing::error!(
                    job,
                    epoch,
                    "cannot keep the lease; stopping the engine and letting the job go"
                );
                metrics.self_fences.inc();
            }
            StopReason::Canceled | StopReason::Released => {}
        }
    }
}

/// The keeper's loop: renews when due, stops the attempt on cancellation, loss, or when the
/// last success is [`LeaseTiming::overdue`]. Returns the reason it stopped the attempt, or
/// `None` when the attempt was stopped by someone else. Driven by tokio's clock, so paused
/// time tests it.
pub(crate) async fn keep(
    lease: &impl Lease,
    timing: LeaseTiming,
    stop: &Stop,
) -> Option<StopReason> {
    let tick = timing.tick();
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = stop.stopped() => return None,
        }
        if !timing.renewal_due(last_ok.elapsed()) {
            continue;
        }
        let failure = match tokio::time::timeout(tick, lease.renew()).await {
            Ok(Ok(RenewOutcome::Renewed)) => {
                last_ok = Instant::now();
                lease.renewed().await;
                continue;
            }
            Ok(Ok(RenewOutcome::Canceled)) => StopReason::Canceled,
            Ok(Ok(RenewOutcome::Lost)) => StopReason::Lost,
            Ok(Err(error)) => {
                lease.renewal_failed(&error);
                StopReason::SelfFenced
            }
            Err(_) => {
                lease.renewal_failed("timed out");
                StopReason::SelfFenced
            }
        };
        if failure == StopReason::SelfFenced && !timing.overdue(last_ok.elapsed()) {
            continue;
        }
        stop.stop(failure);
        return Some(failure);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const TTL: Duration = Duration::from_secs(30);

    /// A lease whose renewals answer from a script (then keep succeeding), recording when
    /// each renewal was attempted.
    struct Scripted {
        answers: Mutex<Vec<Result<RenewOutcome, String>>>,
        started: Instant,
        attempts: Mutex<Vec<Duration>>,
        failures: AtomicU32,
        hang: bool,
    }

    impl Scripted {
        fn new(answers: Vec<Result<RenewOutcome, String>>) -> Scripted {
            Scripted {
                answers: Mutex::new(answers.into_iter().rev().collect()),
                started: Instant::now(),
                attempts: Mutex::new(Vec::new()),
                failures: AtomicU32::new(0),
                hang: false,
            }
        }
    }

    impl Lease for Scripted {
        async fn renew(&self) -> Result<RenewOutcome, String> {
            self.attempts.lock().unwrap().push(self.started.elapsed());
            if self.hang {
                std::future::pending::<()>().await;
            }
            self.answers.lock().unwrap().pop().unwrap_or(Ok(RenewOutcome::Renewed))
        }

        async fn renewed(&self) {}

        fn renewal_failed(&self, _: &str) {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_come_every_third_of_the_ttl_while_they_succeed() {
        let lease = Scripted::new(vec![]);
        let stop = Stop::default();
        let keeper = keep(&lease, LeaseTiming { ttl: TTL }, &stop);
        let stopper = async {
            tokio::time::sleep(TTL * 2 - Duration::from_secs(1)).await;
            stop.stop(StopReason::Released);
        };
        let (reason, ()) = tokio::join!(keeper, stopper);
        assert_eq!(reason, None, "stopped from outside, not by the keeper");
        let attempts = lease.attempts.lock().unwrap().clone();
        assert_eq!(attempts, [10, 20, 30, 40, 50].map(Duration::from_secs));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_renewals_are_retried_each_tick_then_self_fence_at_five_sixths() {
        let failing = (0..10).map(|_| Err("redis down".to_owned())).collect();
        let lease = Scripted::new(failing);
        let stop = Stop::default();
        let reason = keep(&lease, LeaseTiming { ttl: TTL }, &stop).await;
        assert_eq!(reason, Some(StopReason::SelfFenced));
        assert_eq!(stop.reason(), Some(StopReason::SelfFenced));
        // Due at 10 s, retried every 5 s tick; at 25 s (5/6 of 30 s) it gives up.
        let attempts = lease.attempts.lock().unwrap().clone();
        assert_eq!(attempts, [10, 15, 20, 25].map(Duration::from_secs));
        assert_eq!(lease.failures.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_blip_is_survived_and_the_clock_restarts_from_the_success() {
        let lease = Scripted::new(vec![
            Err("blip".into()),
            Err("blip".into()),
            Ok(RenewOutcome::Renewed),
            Err("blip".into()),
            Err("blip".into()),
            Err("blip".into()),
            Err("blip".into()),
        ]);
        let stop = Stop::default();
        let reason = keep(&lease, LeaseTiming { ttl: TTL }, &stop).await;
        assert_eq!(reason, Some(StopReason::SelfFenced));
        // Renewed at 20 s; then due at 30 s and given up at 45 s (25 s after the success).
        let attempts = lease.attempts.lock().unwrap().clone();
        assert_eq!(attempts, [10, 15, 20, 30, 35, 40, 45].map(Duration::from_secs));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_store_counts_as_failing_and_fences_in_time() {
        let mut lease = Scripted::new(vec![]);
        lease.hang = true;
        let stop = Stop::default();
        let started = Instant::now();
        let reason = keep(&lease, LeaseTiming { ttl: TTL }, &stop).await;
        assert_eq!(reason, Some(StopReason::SelfFenced));
        // Each renewal is cut off after one tick: stopped before the lease could lapse.
        assert!(started.elapsed() < TTL, "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn loss_and_cancellation_stop_at_once() {
        for (answer, expected) in
            [(RenewOutcome::Lost, StopReason::Lost), (RenewOutcome::Canceled, StopReason::Canceled)]
        {
            let lease = Scripted::new(vec![Ok(answer)]);
            let stop = Stop::default();
            assert_eq!(keep(&lease, LeaseTiming { ttl: TTL }, &stop).await, Some(expected));
            assert_eq!(lease.attempts.lock().unwrap().len(), 1);
        }
    }
}
