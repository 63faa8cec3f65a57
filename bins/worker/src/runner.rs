//! The pull loop: as many messages as there are free slots, `high` before `normal` before
//! `low`.
//!
//! Idle workers do not poll: a core subscription on `tcoder.jobs.>` (every JetStream publish is
//! also a core message) wakes them the moment work arrives, then they fetch without waiting in
//! priority order. The loop also enforces the machine's budgets (idle time, job count,
//! consecutive failures) and, on shutdown, stops taking work and gives running jobs the drain
//! deadline before releasing them.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use futures_util::StreamExt;
use tcoder::engine::ErrorCode;
use tcoder::events::{WorkItem, subjects};
use tcoder::jobs::Priority;
use tcoder::machines::MachineState;
use tcoder::shutdown::Shutdown;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Worker;
use crate::attempt::{Outcome, part, whole};

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
    /// The scratch disk filled up (`machine.disk_full`).
    DiskFull,
}

/// The machine's budgets (from `[worker]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budgets {
    pub concurrency: usize,
    /// Jobs this machine takes in its life (0 = no limit).
    pub max_jobs: u64,
    /// Machine failures in a row after which it stops taking work.
    pub max_failures: u32,
    /// Idle time after which it exits (zero = never).
    pub idle_timeout: Duration,
}

/// What the loop has done so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tally {
    pub finished: u64,
    pub failures_in_row: u32,
    pub last_activity: Instant,
}

/// The loop's next move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    Exit(ExitReason),
    /// Fetch up to this many messages.
    Fetch(usize),
    /// Wait for a wake-up, a finished job or the fallback poll.
    Wait,
}

impl Tally {
    pub(crate) fn new(now: Instant) -> Tally {
        Tally { finished: 0, failures_in_row: 0, last_activity: now }
    }

    /// Records a finished attempt. Skipped messages are no work; machine failures in a row
    /// count toward the failure budget, anything else resets it.
    pub(crate) fn account(&mut self, outcome: &Outcome, now: Instant) {
        self.last_activity = now;
        if *outcome == Outcome::Skipped {
            return;
        }
        self.finished += 1;
        self.failures_in_row =
            if outcome.is_machine_failure() { self.failures_in_row + 1 } else { 0 };
    }

    /// What to do with `running` jobs in flight: exhausted budgets or an unfit machine (its
    /// disk full) stop the intake (and end the loop once nothing runs), free slots are filled.
    pub(crate) fn next(
        &self,
        budgets: &Budgets,
        running: usize,
        shutdown: bool,
        fit: bool,
    ) -> Next {
        let spent = budgets.max_jobs > 0 && self.finished + running as u64 >= budgets.max_jobs;
        let failing = self.failures_in_row >= budgets.max_failures;
        match (shutdown, spent, failing) {
            (true, ..) => Next::Exit(ExitReason::Shutdown),
            _ if !fit && running == 0 => Next::Exit(ExitReason::DiskFull),
            _ if !fit => Next::Wait,
            (_, true, _) if running == 0 => Next::Exit(ExitReason::JobBudget),
            (_, false, true) if running == 0 => Next::Exit(ExitReason::FailureBudget),
            (_, true, _) | (_, _, true) => Next::Wait,
            _ if running < budgets.concurrency => {
                // Never more than the job budget has left (a concurrent worker's last slots).
                let left = match budgets.max_jobs {
                    0 => usize::MAX,
                    max => {
                        usize::try_from(max - self.finished - running as u64).unwrap_or(usize::MAX)
                    }
                };
                Next::Fetch((budgets.concurrency - running).min(left))
            }
            _ => Next::Wait,
        }
    }

    /// Whether an idle machine (nothing running, nothing fetched) has waited long enough.
    pub(crate) fn idle_expired(&self, budgets: &Budgets, running: usize, now: Instant) -> bool {
        running == 0
            && !budgets.idle_timeout.is_zero()
            && now.duration_since(self.last_activity) >= budgets.idle_timeout
    }
}

/// Reads a message's work item and hands it to its kind of work — a whole title or one part
/// of a split one — once, here; an unreadable item, or one on another item's subject, is
/// dropped.
async fn handle(
    worker: &Worker,
    message: async_nats::jetstream::Message,
    release: CancellationToken,
) -> Outcome {
    let message = std::sync::Arc::new(message);
    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
    if delivered > 1 {
        worker.metrics.redeliveries.inc();
    }
    let item: WorkItem = match serde_json::from_slice(&message.payload) {
        Ok(item) => item,
        Err(e) => {
            tracing::error!(error = %e, "malformed work item; terminating it");
            let _ = message.ack_with(AckKind::Term).await;
            return Outcome::Skipped;
        }
    };
    if !item.matches_subject(&message.subject) {
        // Dropped with a plain ack: a termination would be read as the job's dead letter.
        tracing::error!(subject = %message.subject, job = %item.job_id, part = ?item.part, "work item on another item's subject; dropping it");
        let _ = message.double_ack().await;
        return Outcome::Skipped;
    }
    match item.part {
        Some(k) => part::handle_item(worker, message, &item, k, release).await,
        None => whole::handle(worker, message, &item, delivered, release).await,
    }
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
    let budgets = Budgets {
        concurrency,
        max_jobs: worker.config.max_jobs,
        max_failures: worker.config.max_failures,
        idle_timeout: worker.config.idle_timeout,
    };
    let mut tally = Tally::new(Instant::now());
    // Whether this round of the loop follows a wake-up, and whether the next wait is a quick
    // re-check after a wake-up that found nothing.
    let (mut woken, mut recheck) = (false, false);
    let reason = loop {
        while let Some(done) = running.try_join_next() {
            account(&worker, done, &mut tally);
        }
        match tally.next(&budgets, running.len(), shutdown.is_triggered(), worker.fit_for_work()) {
            Next::Exit(reason) => break reason,
            // Cut off from Redis: leave the work to workers that can run it.
            Next::Fetch(_) if !worker.redis_reachable().await => {}
            Next::Fetch(free) => {
                let messages = fetch(&consumers, free).await;
                // Only the first empty fetch after a wake-up earns a quick re-check.
                recheck = messages.is_empty() && woken && !recheck;
                woken = false;
                if !messages.is_empty() {
                    tally.last_activity = Instant::now();
                    worker.set_state(MachineState::Busy);
                    for message in messages {
                        let (worker, release) = (worker.clone(), release.clone());
                        running.spawn(async move { handle(&worker, message, release).await });
                    }
                    continue;
                }
            }
            Next::Wait => {}
        }
        if running.is_empty() {
            worker.set_state(MachineState::Idle);
            if tally.idle_expired(&budgets, running.len(), Instant::now()) {
                break ExitReason::Idle;
            }
        }
        let poll = if recheck { RECHECK_AFTER_EMPTY_WAKEUP } else { POLL_FALLBACK };
        tokio::select! {
            _ = wakeups.next() => woken = true,
            Some(done) = running.join_next(), if !running.is_empty() => {
                account(&worker, done, &mut tally);
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
                account(&worker, done, &mut tally);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(jobs = running.len(), "drain deadline near; releasing running jobs");
            release.cancel();
            while let Some(done) = running.join_next().await {
                account(&worker, done, &mut tally);
            }
        }
    }
    tracing::info!(?reason, jobs = tally.finished, "worker loop ended");
    Ok(reason)
}

fn account(worker: &Worker, done: Result<Outcome, tokio::task::JoinError>, tally: &mut Tally) {
    let outcome = match done {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::error!(error = %e, "a job task panicked");
            Outcome::Failed(ErrorCode::Crashed)
        }
    };
    worker.metrics.jobs.with_label_values(&[outcome.label(), outcome.code()]).inc();
    if outcome != Outcome::Skipped {
        worker.record_job();
    }
    tally.account(&outcome, Instant::now());
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets(max_jobs: u64, max_failures: u32, idle_secs: u64) -> Budgets {
        Budgets {
            concurrency: 2,
            max_jobs,
            max_failures,
            idle_timeout: Duration::from_secs(idle_secs),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn free_slots_are_filled_and_shutdown_ends_the_intake() {
        let tally = Tally::new(Instant::now());
        let b = budgets(0, 3, 60);
        assert_eq!(tally.next(&b, 0, false, true), Next::Fetch(2));
        assert_eq!(tally.next(&b, 1, false, true), Next::Fetch(1));
        assert_eq!(tally.next(&b, 2, false, true), Next::Wait);
        assert_eq!(tally.next(&b, 2, true, true), Next::Exit(ExitReason::Shutdown));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_machine_exits_after_the_idle_timeout_from_its_last_activity() {
        let b = budgets(0, 3, 60);
        let mut tally = Tally::new(Instant::now());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!tally.idle_expired(&b, 0, Instant::now()));
        tally.account(&Outcome::Completed, Instant::now());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!tally.idle_expired(&b, 0, Instant::now()), "activity restarts the clock");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!tally.idle_expired(&b, 1, Instant::now()), "a busy machine is not idle");
        assert!(tally.idle_expired(&b, 0, Instant::now()));
        let never = budgets(0, 3, 0);
        tokio::time::advance(Duration::from_secs(86_400)).await;
        assert!(!tally.idle_expired(&never, 0, Instant::now()), "zero means never");
    }

    #[tokio::test(start_paused = true)]
    async fn the_job_budget_counts_running_jobs_and_ends_when_they_finish() {
        let b = budgets(2, 3, 0);
        let mut tally = Tally::new(Instant::now());
        tally.account(&Outcome::Completed, Instant::now());
        assert_eq!(tally.next(&b, 0, false, true), Next::Fetch(1));
        assert_eq!(tally.next(&b, 1, false, true), Next::Wait, "1 done + 1 running = budget");
        tally.account(&Outcome::Skipped, Instant::now());
        assert_eq!(tally.next(&b, 1, false, true), Next::Wait, "a skipped message is no job");
        tally.account(&Outcome::Failed(ErrorCode::Corrupt), Instant::now());
        assert_eq!(tally.next(&b, 0, false, true), Next::Exit(ExitReason::JobBudget));
    }

    #[tokio::test(start_paused = true)]
    async fn machine_failures_in_a_row_stop_the_machine_and_a_success_resets_them() {
        let b = budgets(0, 2, 0);
        let mut tally = Tally::new(Instant::now());
        tally.account(&Outcome::Retried, Instant::now());
        tally.account(&Outcome::Completed, Instant::now());
        tally.account(&Outcome::Failed(ErrorCode::Crashed), Instant::now());
        // Input errors say nothing about the machine.
        tally.account(&Outcome::Failed(ErrorCode::Corrupt), Instant::now());
        assert_eq!(tally.failures_in_row, 0);
        tally.account(&Outcome::Failed(ErrorCode::Memory), Instant::now());
        tally.account(&Outcome::Retried, Instant::now());
        assert_eq!(
            tally.next(&b, 1, false, true),
            Next::Wait,
            "no intake; the running job finishes"
        );
        assert_eq!(tally.next(&b, 0, false, true), Next::Exit(ExitReason::FailureBudget));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_disk_stops_the_intake_and_ends_the_loop_once_nothing_runs() {
        let tally = Tally::new(Instant::now());
        let b = budgets(0, 3, 0);
        assert_eq!(tally.next(&b, 1, false, false), Next::Wait, "the running job finishes");
        assert_eq!(tally.next(&b, 0, false, false), Next::Exit(ExitReason::DiskFull));
        assert_eq!(tally.next(&b, 0, true, false), Next::Exit(ExitReason::Shutdown));
    }
}
