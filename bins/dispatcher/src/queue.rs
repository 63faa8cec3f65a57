//! Upload events → queued jobs. For each event on `UPLOADS` the job moves `uploaded → queued`
//! and one work item goes to `tcoder.jobs.<priority>` with a deterministic `Nats-Msg-Id`
//! (`<job>.queued.<n>`), then the event is acked. A crash between the two steps redelivers the
//! event; the job is then already queued and the work item is published again under the same id,
//! which the broker drops if the first one landed.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use futures_util::StreamExt;
use prometheus::IntCounterVec;
use serde_json::json;
use tcoder::events::{self, EventKind, JobEvent, UploadEvent, subjects};
use tcoder::jobs::{Job, JobStatus, JobStore, TransitionError};
use tokio_util::sync::CancellationToken;

/// Consumes `UPLOADS` until `stop`.
pub(crate) async fn run(
    jobs: JobStore,
    js: async_nats::jetstream::Context,
    decisions: IntCounterVec,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let stream = js.get_stream(subjects::UPLOADS_STREAM).await?;
    let consumer: PullConsumer = stream
        .get_consumer(subjects::UPLOADS_CONSUMER)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut messages = consumer
        .stream()
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?;
    loop {
        let message = tokio::select! {
            message = messages.next() => message,
            () = stop.cancelled() => return Ok(()),
        };
        let Some(message) = message else { anyhow::bail!("the UPLOADS consumer stream ended") };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(error = %e, "UPLOADS consumer error");
                continue;
            }
        };
        let event: UploadEvent = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(e) => {
                tracing::error!(error = %e, "malformed upload event; terminating it");
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            }
        };
        match queue(&jobs, &js, &event).await {
            Ok(outcome) => {
                decisions.with_label_values(&[outcome]).inc();
                let _ = message.double_ack().await;
            }
            Err(e) => {
                tracing::warn!(job = %event.job_id, error = %e, "cannot queue yet; retrying");
                decisions.with_label_values(&["retry"]).inc();
                let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(2)))).await;
            }
        }
    }
}

/// Queues the job of one upload event; returns what happened.
pub(crate) async fn queue(
    jobs: &JobStore,
    js: &async_nats::jetstream::Context,
    event: &UploadEvent,
) -> anyhow::Result<&'static str> {
    let Some(job) = jobs.get(&event.job_id).await? else { return Ok("unknown_job") };
    queue_job(jobs, js, job).await
}

/// Moves an uploaded job to `queued` and publishes its work item (again, if already queued).
pub(crate) async fn queue_job(
    jobs: &JobStore,
    js: &async_nats::jetstream::Context,
    job: Job,
) -> anyhow::Result<&'static str> {
    match job.status {
        JobStatus::Uploaded => {}
        // Queued before (a redelivered event): make sure its work item is out.
        JobStatus::Queued => {
            events::publish_work_item(js, &job).await?;
            return Ok("republished");
        }
        _ => return Ok("not_uploaded"),
    }
    let n = job.queued_count + 1;
    match jobs
        .transition(
            &job.id,
            JobStatus::Queued,
            "upload accepted",
            &[("queued_count", n.to_string())],
        )
        .await
    {
        Ok(_) => {}
        Err(TransitionError::Illegal { .. } | TransitionError::Missing) => return Ok("raced"),
        Err(TransitionError::Store(e)) => return Err(e.into()),
    }
    let job = Job { status: JobStatus::Queued, queued_count: n, ..job };
    events::publish_work_item(js, &job).await?;
    let queued = JobEvent::new(
        format!("{}.queued.{n}", job.id),
        EventKind::Queued,
        &job.id,
        &job.tenant,
        json!({ "priority": job.spec.priority }),
    );
    if let Err(e) = events::publish_event(js, &queued).await {
        tracing::warn!(error = %e, "queued event not published");
    }
    Ok("queued")
}
