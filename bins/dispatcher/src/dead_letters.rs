//! Work items JetStream will not deliver again. A `MAX_DELIVERIES` advisory (captured on the
//! `DLQ` stream) says a work item used up `max_deliver` deliveries; the reconciler finds the
//! same when a running job has neither a live lease nor a delivery coming. Deliveries are not
//! attempts — an outage, a busy lease or a worker shutting down spend them too — so neither is a
//! verdict: the job is dead-lettered as `job.poison` only when `max_attempts` attempts were
//! really lost (their worker crashed or was killed, counted in the job's `lost_attempts`);
//! otherwise its work item is replaced by a fresh one. Either way the old item is removed, so
//! no message is left in silence.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::stream::DeleteMessageErrorKind;
use futures_util::StreamExt;
use prometheus::IntCounterVec;
use serde::Deserialize;
use tcoder::dlq::{self, DeadLetter};
use tcoder::events::{self, JobEvent, WorkItem, subjects};
use tcoder::jobs::{Job, JobError, JobStatus, JobStore, Recovery, TransitionError};
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
struct Advisory {
    #[serde(rename = "type")]
    kind: String,
    stream_seq: u64,
    #[serde(default)]
    deliveries: i64,
}

/// Decides and carries out the fate of a job whose work item will not be delivered again.
#[derive(Debug, Clone)]
pub(crate) struct Undeliverable {
    pub jobs: JobStore,
    pub js: async_nats::jetstream::Context,
    pub lease_ttl: Duration,
    /// Lost attempts at which a job is poison (`nats.jobs_max_deliver`).
    pub max_attempts: u32,
    /// `tcoder_dead_letters_total`, by outcome.
    pub outcomes: IntCounterVec,
}

/// What becomes of a job whose work item is undeliverable — decided from its record alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// It ended meanwhile: only the item goes.
    Ended,
    /// An attempt still renews its lease (its worker cut off from NATS): only the item goes;
    /// if that attempt dies after all, the reconciler requeues the job.
    RunningElsewhere,
    /// `max_attempts` attempts were lost: failed as `job.poison`, dead-lettered.
    Poison,
    /// The deliveries went on something else: a fresh work item.
    Requeue,
}

/// The fate of a job in `status` whose latest attempt is `alive` (lease renewed) or not, after
/// `lost_attempts` lost attempts recorded so far. A running job without a live lease has lost
/// one more, not yet counted (it is when the job is recovered).
pub(crate) fn fate(status: JobStatus, alive: bool, lost_attempts: u32, max_attempts: u32) -> Fate {
    if status.is_terminal() {
        return Fate::Ended;
    }
    if status == JobStatus::Running && alive {
        return Fate::RunningElsewhere;
    }
    if lost_with_current(status, lost_attempts) >= max_attempts {
        Fate::Poison
    } else {
        Fate::Requeue
    }
}

/// Lost attempts, counting a running job's current one (its lease is gone: it died too).
fn lost_with_current(status: JobStatus, lost_attempts: u32) -> u32 {
    lost_attempts.saturating_add(u32::from(status == JobStatus::Running))
}

impl Undeliverable {
    /// Settles `job_id`, whose work item (`item`, a `JOBS` sequence, when it still exists) got
    /// `deliveries` deliveries; returns what was done, for the metrics.
    pub(crate) async fn settle(
        &self,
        job_id: &tcoder::jobs::JobId,
        item: Option<u64>,
        deliveries: i64,
    ) -> anyhow::Result<&'static str> {
        let outcome = self.decide_and_act(job_id, deliveries).await?;
        self.outcomes.with_label_values(&[outcome]).inc();
        if let Some(seq) = item {
            let stream = self.js.get_stream(subjects::JOBS_STREAM).await?;
            match stream.delete_message(seq).await {
                Ok(_) => {}
                // Already gone (a replay of this advisory): nothing left to remove.
                Err(e) if is_no_message(e.kind()) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if outcome == "requeued" {
            // After the old item is gone: at most one work item per job at any time.
            let job =
                self.jobs.get(job_id).await?.ok_or_else(|| anyhow::anyhow!("job vanished"))?;
            events::publish_work_item(&self.js, &job).await?;
        }
        Ok(outcome)
    }

    async fn decide_and_act(
        &self,
        job_id: &tcoder::jobs::JobId,
        deliveries: i64,
    ) -> anyhow::Result<&'static str> {
        let Some(job) = self.jobs.get(job_id).await? else { return Ok("unknown_job") };
        // A killed worker's lease lingers up to one TTL: look for longer than that (only when
        // it matters), so a lease still held is being renewed.
        let alive = job.status == JobStatus::Running
            && attempt_alive(&self.jobs, &job.id, self.lease_ttl).await?;
        let Some(job) = self.jobs.get(job_id).await? else { return Ok("unknown_job") };
        match fate(job.status, alive, job.lost_attempts, self.max_attempts) {
            Fate::Ended => Ok("ended"),
            Fate::RunningElsewhere => Ok("running_elsewhere"),
            Fate::Requeue => {
                let recovery = if job.status == JobStatus::Running {
                    Recovery::Lapsed
                } else {
                    Recovery::Bump
                };
                // Skipped when the job moved meanwhile (claimed, finished): its new state owns it.
                match self.jobs.recover(&job.id, recovery).await? {
                    Some(_) => Ok("requeued"),
                    None => Ok("moved"),
                }
            }
            Fate::Poison => self.dead_letter(&job, deliveries).await,
        }
    }

    async fn dead_letter(&self, job: &Job, deliveries: i64) -> anyhow::Result<&'static str> {
        let lost = lost_with_current(job.status, job.lost_attempts);
        let error = JobError {
            code: "job.poison".into(),
            message: format!(
                "{lost} attempts of this job were lost (their worker crashed or was killed)"
            ),
        };
        let recorded = serde_json::to_string(&error)?;
        match self
            .jobs
            .transition(
                &job.id,
                JobStatus::Failed,
                "dead-lettered",
                &[("error", recorded), ("lost_attempts", lost.to_string())],
            )
            .await
        {
            Ok(_) => {}
            // It moved meanwhile (a late commit, a cancel): that state stands.
            Err(TransitionError::Illegal { .. }) => return Ok("moved"),
            Err(TransitionError::Missing) => return Ok("unknown_job"),
            Err(TransitionError::Store(e)) => return Err(e.into()),
        }
        let history = self.jobs.history(&job.id).await?;
        let letter = DeadLetter::new(
            job.id.clone(),
            job.tenant.clone(),
            error.message.clone(),
            deliveries,
            history,
        );
        dlq::record(&self.js, &letter, job.queued_count).await?;
        events::publish_event(&self.js, &JobEvent::failed(job, None, &error)).await?;
        Ok("dead_lettered")
    }
}

pub(crate) async fn run(
    undeliverable: Undeliverable,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let js = &undeliverable.js;
    let mut messages =
        events::durable_messages(js, subjects::DLQ_STREAM, subjects::DLQ_CONSUMER, 1).await?;
    loop {
        let message = tokio::select! {
            message = messages.next() => message,
            () = stop.cancelled() => return Ok(()),
        };
        let Some(message) = message else { anyhow::bail!("the DLQ consumer stream ended") };
        let Ok(message) = message else { continue };
        let Ok(advisory) = serde_json::from_slice::<Advisory>(&message.payload) else {
            let _ = message.ack_with(AckKind::Term).await;
            continue;
        };
        if !advisory.kind.ends_with("max_deliver") {
            // MSG_TERMINATED: a worker already failed that job with its own error code.
            let _ = message.ack().await;
            continue;
        }
        // Redis or NATS unreachable: wait (holding the advisory) rather than spend its
        // deliveries — a dead letter must never be dropped for want of a dependency.
        let done = events::holding(
            &message,
            Duration::from_secs(10),
            events::retry_through_outage("dead letter", events::OUTAGE_PATIENCE, || {
                settle_advisory(&undeliverable, &advisory)
            }),
        )
        .await;
        match done {
            Ok(()) => {
                let _ = message.double_ack().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot settle a dead letter after waiting; retrying later");
                let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(30)))).await;
            }
        }
    }
}

fn is_no_message(kind: DeleteMessageErrorKind) -> bool {
    matches!(kind, DeleteMessageErrorKind::JetStream(e) if e.error_code() == ErrorCode::NO_MESSAGE_FOUND)
}

/// Whether `job`'s lease is still held after more than one TTL (renewed: a live attempt), or
/// the job left `running` meanwhile (it finished).
async fn attempt_alive(
    jobs: &JobStore,
    job: &tcoder::jobs::JobId,
    lease_ttl: Duration,
) -> anyhow::Result<bool> {
    let window = lease_ttl + lease_ttl / 2;
    let deadline = tokio::time::Instant::now() + window;
    // Redis itself was away a moment ago: every lease lapsed meanwhile, live attempts' too,
    // and they take theirs back with their next renewal. Until the window after the reconnect
    // has passed, a missing lease proves nothing (a 220 s outage handed a finished job on the
    // instant Redis came back).
    let grace_until = jobs.redis_reconnected_at().map(|at| at + window);
    loop {
        let now = tokio::time::Instant::now();
        let held = jobs.lease_held(job).await?;
        if !held && grace_until.is_none_or(|until| now >= until) {
            return Ok(false);
        }
        if held && now >= deadline {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn settle_advisory(undeliverable: &Undeliverable, advisory: &Advisory) -> anyhow::Result<()> {
    let stream = undeliverable.js.get_stream(subjects::JOBS_STREAM).await?;
    let count = |outcome: &str| undeliverable.outcomes.with_label_values(&[outcome]).inc();
    let Ok(raw) = stream.get_raw_message(advisory.stream_seq).await else {
        count("gone");
        return Ok(());
    };
    let Ok(item) = serde_json::from_slice::<WorkItem>(&raw.payload) else {
        stream.delete_message(advisory.stream_seq).await?;
        count("malformed");
        return Ok(());
    };
    if item.part.is_some() {
        // A split job's part item only invites helpers; the job's coordinator runs any part
        // nobody holds, and fails or retries the job when a part fails too often.
        stream.delete_message(advisory.stream_seq).await?;
        count("part");
        return Ok(());
    }
    undeliverable.settle(&item.job_id, Some(advisory.stream_seq), advisory.deliveries).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lost_attempts_make_poison() {
        use JobStatus::*;
        // Deliveries spent while queued (outages, busy leases, shutdowns): a fresh item.
        assert_eq!(fate(Queued, false, 0, 3), Fate::Requeue);
        assert_eq!(fate(Queued, false, 2, 3), Fate::Requeue);
        assert_eq!(fate(Queued, false, 3, 3), Fate::Poison);
        // Running without a lease: its attempt died too, and counts.
        assert_eq!(fate(Running, false, 1, 3), Fate::Requeue);
        assert_eq!(fate(Running, false, 2, 3), Fate::Poison);
        // A live attempt is never poison, however many were lost before.
        assert_eq!(fate(Running, true, 9, 3), Fate::RunningElsewhere);
        for ended in [Completed, Failed, Canceled] {
            assert_eq!(fate(ended, false, 9, 3), Fate::Ended);
        }
    }
}
