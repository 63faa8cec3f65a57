//! The pull loop: as many messages as there are free slots, `high` before `normal` before
//! `low`.
//!
//! Idle workers do not poll: a core subscription on `tcoder.jobs.>` (every JetStream publish is
//! also a core message) wakes them the moment work arrives, then they fetch without waiting in
//! priority order. The loop also enforces the machine's budgets (idle time, job count,
//! consecutive failures) and, on shutdown, stops taking work and gives running jobs the drain
//! deadline before releasing them.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use futures_util::StreamExt;
use tcoder::events::subjects;
use tcoder::jobs::Priority;
use tcoder::machines::MachineState;
use tcoder::shutdown::Shutdown;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Worker;
use crate::attempt::{self, Outcome};

/// Safety net for a missed wake-up (e.g. during a reconnect).
const POLL_FALLBACK: Duration = Duration::from_secs(1);
/// After a wake-up whose fetch found nothing, look again this soon: the core message of a
/// publish can arrive before the consumer offers the stored message (seen as 1 s outliers in
/// the control-plane benchmark).
const RECHECK_AFTER_EMPTY_WAKEUP: Duration = Duration::from_millis(20);
/// Time kept back from the drain deadline to requeue and nak released jobs.
const RELEASE_MARGIN: Duration = Duration::from_secs(2);

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitReason {
    Shutdown,
    Idle,
    JobBudget,
    FailureBudget,
}

pub(crate) async fn run(worker: Worker, shutdown: Shutdown) -> anyhow::Result<ExitReason> {
    let stream = worker.js.get_stream(subjects::JOBS_STREAM).await?;
    let mut consumers: Vec<PullConsumer> = Vec::new();
    for priority in Priority::ALL {
        let consumer = stream.get_consumer(&subjects::jobs_consumer(priority)).await;
        consumers.push(consumer.map_err(|e| anyhow::anyhow!("consumer {priority}: {e}"))?);
    }
    let mut wakeups = worker.nats.subscribe(subjects::JOBS_ALL).await?;
    let concurrency = worker.config.concurrency as usize;
    let release = CancellationToken::new();
    let mut running: JoinSet<Outcome> = JoinSet::new();
    let mut last_activity = Instant::now();
    let (mut finished, mut failures_in_row) = (0u64, 0u32);
    // Whether this round of the loop follows a wake-up, and whether the next wait is a quick
    // re-check after a wake-up that found nothing.
    let (mut woken, mut recheck) = (false, false);
    let reason = loop {
        while let Some(done) = running.try_join_next() {
            account(&worker, done, &mut finished, &mut failures_in_row, &mut last_activity);
        }
        if shutdown.is_triggered() {
            break ExitReason::Shutdown;
        }
        if worker.config.max_jobs > 0 && finished + running.len() as u64 >= worker.config.max_jobs {
            if running.is_empty() {
                break ExitReason::JobBudget;
            }
        } else if failures_in_row >= worker.config.max_failures {
            if running.is_empty() {
                break ExitReason::FailureBudget;
            }
        } else if running.len() < concurrency {
            let messages = fetch(&consumers, concurrency - running.len()).await;
            // Only the first empty fetch after a wake-up earns a quick re-check.
            recheck = messages.is_empty() && woken && !recheck;
            woken = false;
            if !messages.is_empty() {
                last_activity = Instant::now();
                worker.set_state(MachineState::Busy);
                for message in messages {
                    let (worker, release) = (worker.clone(), release.clone());
                    running.spawn(async move { attempt::handle(&worker, message, release).await });
                }
                continue;
            }
        }
        let idle = worker.config.idle_timeout;
        if running.is_empty() {
            worker.set_state(MachineState::Idle);
            if !idle.is_zero() && last_activity.elapsed() >= idle {
                break ExitReason::Idle;
            }
        }
        let poll = if recheck { RECHECK_AFTER_EMPTY_WAKEUP } else { POLL_FALLBACK };
        tokio::select! {
            _ = wakeups.next() => woken = true,
            Some(done) = running.join_next(), if !running.is_empty() => {
                account(&worker, done, &mut finished, &mut failures_in_row, &mut last_activity);
            }
            () = tokio::time::sleep(poll) => {}
            () = shutdown.triggered() => {}
        }
    };
    if !running.is_empty() {
        worker.set_state(MachineState::Stopping);
        // Finish within the drain deadline if possible; release what is left just before it.
        let finish_by = shutdown.drain_deadline().saturating_sub(RELEASE_MARGIN);
        let drained = tokio::time::timeout(finish_by, async {
            while let Some(done) = running.join_next().await {
                account(&worker, done, &mut finished, &mut failures_in_row, &mut last_activity);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(jobs = running.len(), "drain deadline near; releasing running jobs");
            release.cancel();
            while let Some(done) = running.join_next().await {
                account(&worker, done, &mut finished, &mut failures_in_row, &mut last_activity);
            }
        }
    }
    tracing::info!(?reason, jobs = finished, "worker loop ended");
    Ok(reason)
}

fn account(
    worker: &Worker,
    done: Result<Outcome, tokio::task::JoinError>,
    finished: &mut u64,
    failures: &mut u32,
    last_activity: &mut Instant,
) {
    *last_activity = Instant::now();
    let outcome = match done {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::error!(error = %e, "a job task panicked");
            Outcome::Failed("engine.crashed".into())
        }
    };
    worker.metrics.jobs.with_label_values(&[outcome.label(), outcome.code()]).inc();
    if outcome == Outcome::Skipped {
        return;
    }
    *finished += 1;
    worker.record_job();
    if outcome.is_machine_failure() {
        *failures += 1;
    } else {
        *failures = 0;
    }
}

/// The next message, `high` first; `None` when every priority is empty.
/// Up to `free` messages, highest priority first, in one request per priority: a busy
/// worker fills all its free slots with one round trip instead of one per job.
async fn fetch(consumers: &[PullConsumer], free: usize) -> Vec<async_nats::jetstream::Message> {
    let mut messages = Vec::new();
    for consumer in consumers {
        let wanted = free - messages.len();
        if wanted == 0 {
            break;
        }
        // Without `expires` the server answers at once (no wait) when nothing is pending.
        match consumer.fetch().max_messages(wanted).messages().await {
            Ok(mut batch) => {
                while let Some(Ok(message)) = batch.next().await {
                    messages.push(message);
                }
            }
            Err(e) => tracing::warn!(error = %e, "fetch failed"),
        }
    }
    messages
}
