//! Handles the JOBS advisories captured on the `DLQ` stream. A `MAX_DELIVERIES` advisory means
//! a work item was delivered `max_deliver` times without an ack or term — its worker crashed or
//! was killed every time. The job is failed with `job.poison`, recorded on `tcoder.dlq.jobs`
//! with its history, announced once (`<job>.failed`), and its message removed from `JOBS`.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use futures_util::StreamExt;
use prometheus::IntCounterVec;
use serde::Deserialize;
use tcoder::dlq::{self, DeadLetter};
use tcoder::events::{self, JobEvent, WorkItem, subjects};
use tcoder::jobs::{JobError, JobStatus, JobStore, TransitionError};
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
struct Advisory {
    #[serde(rename = "type")]
    kind: String,
    stream_seq: u64,
    #[serde(default)]
    deliveries: i64,
}

pub(crate) async fn run(
    jobs: JobStore,
    js: async_nats::jetstream::Context,
    actions: IntCounterVec,
    lease_ttl: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut messages =
        events::durable_messages(&js, subjects::DLQ_STREAM, subjects::DLQ_CONSUMER).await?;
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
                dead_letter(&jobs, &js, &advisory, lease_ttl)
            }),
        )
        .await;
        match done {
            Ok(outcome) => {
                actions.with_label_values(&[outcome]).inc();
                let _ = message.double_ack().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot dead-letter after waiting; retrying later");
                let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(30)))).await;
            }
        }
    }
}

/// Whether `job`'s lease is still held after more than one TTL (renewed: a live attempt), or
/// the job left `running` meanwhile (it finished).
async fn attempt_alive(
    jobs: &JobStore,
    job: &tcoder::jobs::JobId,
    lease_ttl: Duration,
) -> anyhow::Result<bool> {
    let deadline = tokio::time::Instant::now() + lease_ttl + lease_ttl / 2;
    loop {
        if !jobs.lease_held(job).await? {
            return Ok(false);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn dead_letter(
    jobs: &JobStore,
    js: &async_nats::jetstream::Context,
    advisory: &Advisory,
    lease_ttl: Duration,
) -> anyhow::Result<&'static str> {
    let stream = js.get_stream(subjects::JOBS_STREAM).await?;
    let Ok(raw) = stream.get_raw_message(advisory.stream_seq).await else {
        return Ok("gone");
    };
    let Ok(item) = serde_json::from_slice::<WorkItem>(&raw.payload) else {
        stream.delete_message(advisory.stream_seq).await?;
        return Ok("malformed");
    };
    let Some(job) = jobs.get(&item.job_id).await? else {
        stream.delete_message(advisory.stream_seq).await?;
        return Ok("unknown_job");
    };
    // Deliveries can run out while an attempt is alive (its worker cut off from NATS, other
    // workers finding the lease held): that is no poison. A killed worker's lease also lingers
    // up to one TTL, so look for longer than that: a lease still held then is being renewed.
    // The item goes; if that attempt dies after all, the reconciler requeues the job
    // (running, no lease, no item).
    if job.status == JobStatus::Running && attempt_alive(jobs, &job.id, lease_ttl).await? {
        stream.delete_message(advisory.stream_seq).await?;
        return Ok("running_elsewhere");
    }
    let Some(job) = jobs.get(&job.id).await? else {
        stream.delete_message(advisory.stream_seq).await?;
        return Ok("unknown_job");
    };
    if !job.status.is_terminal() {
        let error = JobError {
            code: "job.poison".into(),
            message: format!(
                "the job's worker failed on {} deliveries in a row (crashed or was killed)",
                advisory.deliveries
            ),
        };
        let recorded = serde_json::to_string(&error)?;
        match jobs
            .transition(&job.id, JobStatus::Failed, "dead-lettered", &[("error", recorded)])
            .await
        {
            Ok(_) | Err(TransitionError::Illegal { .. }) => {}
            Err(TransitionError::Missing) => return Ok("unknown_job"),
            Err(TransitionError::Store(e)) => return Err(e.into()),
        }
        let history = jobs.history(&job.id).await?;
        let letter = DeadLetter::new(
            job.id.clone(),
            job.tenant.clone(),
            error.message.clone(),
            advisory.deliveries,
            history,
        );
        dlq::record(js, &letter, job.queued_count).await?;
        let failed = JobEvent::failed(&job, None, &error);
        events::publish_event(js, &failed).await?;
    }
    stream.delete_message(advisory.stream_seq).await?;
    Ok("dead_lettered")
}
