//! Keeps an attempt's lease alive while the engine runs, and decides when to stop: the job was
//! canceled, another attempt took it over, or Redis stayed unreachable for longer than
//! [`OUTAGE_PATIENCE`].
//!
//! An outage of Redis is a pause, not a verdict: the engine keeps encoding, the work item is
//! kept with in-progress acks (so JetStream gives it to nobody else), renewals are retried every
//! tick, and the first one that lands after the outage takes the lease back at the same epoch
//! (`renew.lua` re-sets a lapsed lease while the job still runs at this epoch; a newer claim
//! would answer `lost`). Nobody can take the job over meanwhile: a claim needs the work item
//! and Redis, and the reconciler watches a lapsed lease for longer than a TTL — in which the
//! keeper's next tick has renewed it. Commits are fenced by the epoch whatever happens.

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
    /// Redis stayed unreachable for longer than [`OUTAGE_PATIENCE`]: no ack, no nak.
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

/// How long an attempt waits for an unreachable Redis — its claim, its lease, its commit —
/// before it gives up (docs/OPERATIONS.md, "Redis unreachable").
pub(crate) const OUTAGE_PATIENCE: Duration = Duration::from_secs(15 * 60);

/// One attempt's lease, as the keeper sees it.
pub(crate) trait Lease {
    /// Renews the lease for another TTL; `Err` is a failure to reach the store.
    fn renew(&self) -> impl Future<Output = Result<RenewOutcome, String>> + Send;
    /// Called after each renewal that did not stop the attempt, renewed or not: tells
    /// JetStream the work item is in progress, so an outage of Redis does not hand it on.
    fn hold_work_item(&self) -> impl Future<Output = ()> + Send;
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

    async fn hold_work_item(&self) {
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
    /// How long renewals may fail before the attempt stops.
    pub patience: Duration,
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

    /// The outage outlasted the patience: stop the attempt (its work item is redelivered
    /// once the worker stops holding it).
    pub(crate) fn overdue(self, since_ok: Duration) -> bool {
        since_ok >= self.patience
    }
}

impl LeaseTiming {
    /// A lease of `ttl`, held through outages up to [`OUTAGE_PATIENCE`].
    pub(crate) fn of(ttl: Duration) -> LeaseTiming {
        LeaseTiming { ttl, patience: OUTAGE_PATIENCE }
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
    if let Some(reason) = keep(&lease, LeaseTiming::of(ttl), &stop).await {
        match reason {
            StopReason::Lost => {
                tracing::warn!(job, epoch, "lease lost to a newer attempt; stopping");
                metrics.self_fences.inc();
            }
            StopReason::SelfFenced => {
                tracing::error!(
                    job,
                    epoch,
                    patience = ?OUTAGE_PATIENCE,
                    "Redis unreachable for longer than the outage patience; stopping the engine and letting the job go"
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
                lease.hold_work_item().await;
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
            lease.hold_work_item().await;
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
    const TIMING: LeaseTiming = LeaseTiming { ttl: TTL, patience: Duration::from_secs(120) };

    /// A lease whose renewals answer from a script (then keep succeeding), recording when
    /// each renewal was attempted.
    struct Scripted {
        answers: Mutex<Vec<Result<RenewOutcome, String>>>,
        started: Instant,
        attempts: Mutex<Vec<Duration>>,
        failures: AtomicU32,
        holds: AtomicU32,
        hang: bool,
    }

    impl Scripted {
        fn new(answers: Vec<Result<RenewOutcome, String>>) -> Scripted {
            Scripted {
                answers: Mutex::new(answers.into_iter().rev().collect()),
                started: Instant::now(),
                attempts: Mutex::new(Vec::new()),
                failures: AtomicU32::new(0),
                holds: AtomicU32::new(0),
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

        async fn hold_work_item(&self) {
            self.holds.fetch_add(1, Ordering::SeqCst);
        }

        fn renewal_failed(&self, _: &str) {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_come_every_third_of_the_ttl_while_they_succeed() {
        let lease = Scripted::new(vec![]);
        let stop = Stop::default();
        let keeper = keep(&lease, TIMING, &stop);
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
    async fn an_outage_holds_the_work_item_each_tick_and_gives_up_after_the_patience() {
        let failing = (0..100).map(|_| Err("redis down".to_owned())).collect();
        let lease = Scripted::new(failing);
        let stop = Stop::default();
        let reason = keep(&lease, TIMING, &stop).await;
        assert_eq!(reason, Some(StopReason::SelfFenced));
        assert_eq!(stop.reason(), Some(StopReason::SelfFenced));
        // Due at 10 s, retried every 5 s tick; at 120 s without a renewal it gives up.
        let attempts = lease.attempts.lock().unwrap().clone();
        let expected: Vec<Duration> = (2..=24).map(|tick| Duration::from_secs(tick * 5)).collect();
        assert_eq!(attempts, expected);
        assert_eq!(lease.failures.load(Ordering::SeqCst), 23);
        // The work item was kept after every failure but the last.
        assert_eq!(lease.holds.load(Ordering::SeqCst), 22);
    }

    #[tokio::test(start_paused = true)]
    async fn outages_longer_than_the_lease_are_paused_through_and_renewals_resume() {
        // Five outages of 40 s (longer than the 30 s lease), each followed by two renewals.
        let mut answers = Vec::new();
        for _ in 0..5 {
            answers.extend((0..8).map(|_| Err("redis down".to_owned())));
            answers.extend([Ok(RenewOutcome::Renewed), Ok(RenewOutcome::Renewed)]);
        }
        let lease = Scripted::new(answers);
        let stop = Stop::default();
        let keeper = keep(&lease, TIMING, &stop);
        let stopper = async {
            tokio::time::sleep(Duration::from_secs(600)).await;
            stop.stop(StopReason::Released);
        };
        let (reason, ()) = tokio::join!(keeper, stopper);
        assert_eq!(reason, None, "the keeper never stopped the attempt");
        assert_eq!(lease.failures.load(Ordering::SeqCst), 40);
    }

    #[tokio::test(start_paused = true)]
    async fn a_blip_is_survived_and_the_clock_restarts_from_the_success() {
        let lease =
            Scripted::new(vec![Err("blip".into()), Err("blip".into()), Ok(RenewOutcome::Renewed)]);
        let stop = Stop::default();
        let keeper = keep(&lease, TIMING, &stop);
        let stopper = async {
            tokio::time::sleep(Duration::from_secs(41)).await;
            stop.stop(StopReason::Released);
        };
        let (reason, ()) = tokio::join!(keeper, stopper);
        assert_eq!(reason, None);
        // Renewed at 20 s; the next is due a third of the TTL after that success.
        let attempts = lease.attempts.lock().unwrap().clone();
        assert_eq!(attempts, [10, 15, 20, 30, 40].map(Duration::from_secs));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_store_counts_as_an_outage_and_is_given_up_in_bounded_time() {
        let mut lease = Scripted::new(vec![]);
        lease.hang = true;
        let stop = Stop::default();
        let started = Instant::now();
        let reason = keep(&lease, TIMING, &stop).await;
        assert_eq!(reason, Some(StopReason::SelfFenced));
        // Each renewal is cut off after one tick; the patience bounds the whole wait.
        let waited = started.elapsed();
        assert!(waited >= TIMING.patience && waited <= TIMING.patience + TTL, "{waited:?}");
        assert!(lease.holds.load(Ordering::SeqCst) > 0, "the work item was held meanwhile");
    }

    #[tokio::test(start_paused = true)]
    async fn loss_and_cancellation_stop_at_once() {
        for (answer, expected) in
            [(RenewOutcome::Lost, StopReason::Lost), (RenewOutcome::Canceled, StopReason::Canceled)]
        {
            let lease = Scripted::new(vec![Ok(answer)]);
            let stop = Stop::default();
            assert_eq!(keep(&lease, TIMING, &stop).await, Some(expected));
            assert_eq!(lease.attempts.lock().unwrap().len(), 1);
        }
    }
}
