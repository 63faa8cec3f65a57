//! Keeps an attempt's lease alive while the engine runs, and decides when to stop: the job was
//! canceled, another attempt took it over, or the lease could not be renewed for nearly a full
//! TTL (self-fencing: better to stop than to run on while another worker may have started).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use tcoder::jobs::{Attempt, JobStore, RenewOutcome};
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

/// Renews every sixth of the TTL (renewal is due every third; the extra ticks retry failures),
/// sends an in-progress ack with each successful renewal, and stops the attempt on
/// cancellation, loss, or when the last success is older than five sixths of the TTL.
pub(crate) async fn keep_lease(
    jobs: JobStore,
    attempt: Attempt,
    message: Arc<Message>,
    ttl: Duration,
    stop: Stop,
    metrics: WorkerMetrics,
) {
    let tick = ttl / 6;
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = stop.stopped() => return,
        }
        if last_ok.elapsed() < ttl / 3 {
            continue;
        }
        match tokio::time::timeout(tick, jobs.renew(&attempt, ttl)).await {
            Ok(Ok(RenewOutcome::Renewed)) => {
                last_ok = Instant::now();
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %e, "in-progress ack failed");
                }
            }
            Ok(Ok(RenewOutcome::Canceled)) => return stop.stop(StopReason::Canceled),
            Ok(Ok(RenewOutcome::Lost)) => {
                tracing::warn!(job = %attempt.job_id, epoch = attempt.epoch, "lease lost to a newer attempt; stopping");
                metrics.self_fences.inc();
                return stop.stop(StopReason::Lost);
            }
            Ok(Err(e)) => {
                if fence_if_overdue(&attempt, last_ok, ttl, &e.to_string(), &stop, &metrics) {
                    return;
                }
            }
            Err(_) => {
                if fence_if_overdue(&attempt, last_ok, ttl, "timed out", &stop, &metrics) {
                    return;
                }
            }
        }
    }
}

/// Records a failed renewal; stops the attempt when the lease is about to lapse.
fn fence_if_overdue(
    attempt: &Attempt,
    last_ok: Instant,
    ttl: Duration,
    error: &str,
    stop: &Stop,
    metrics: &WorkerMetrics,
) -> bool {
    metrics.lease_renewals_failed.inc();
    tracing::warn!(job = %attempt.job_id, error, "lease renewal failed");
    if last_ok.elapsed() < ttl * 5 / 6 {
        return false;
    }
    tracing::error!(job = %attempt.job_id, epoch = attempt.epoch, "cannot keep the lease; stopping the engine and letting the job go");
    metrics.self_fences.inc();
    stop.stop(StopReason::SelfFenced);
    true
}
