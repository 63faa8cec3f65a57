//! Upload events → queued jobs. For each event on `UPLOADS` the job is admitted
//! (`uploaded → queued`, under the tenant's cap of jobs in flight) and one work item goes to
//! `tcoder.jobs.<priority>.<job>` with a deterministic `Nats-Msg-Id` (`<job>.queued.<n>`), then the
//! event is acked. A crash between the two steps redelivers the event; the job is then already
//! queued and the work item is published again under the same id, which the broker drops if
//! the first one landed. A capped job waits in `uploaded`; admission control promotes it when
//! the tenant's jobs finish.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use futures_util::StreamExt;
use prometheus::IntCounterVec;
use tcoder::events::{self, JobEvent, UploadEvent, subjects};
use tcoder::jobs::{Admission, Job, JobStatus, JobStore};
use tokio_util::sync::CancellationToken;

/// Admits uploaded jobs to the work queue.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    pub jobs: JobStore,
    pub js: async_nats::jetstream::Context,
    /// Jobs one tenant may have queued or running (0 = no limit).
    pub tenant_cap: u32,
    pub outcomes: IntCounterVec,
}

/// Upload events handled at once.
const CONCURRENT_EVENTS: usize = 16;

impl Queue {
    /// Consumes `UPLOADS` until `stop`.
    pub(crate) async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let messages = events::durable_messages(
            &self.js,
            subjects::UPLOADS_STREAM,
            subjects::UPLOADS_CONSUMER,
            CONCURRENT_EVENTS,
        )
        .await?;
        // Events of different jobs are independent, and each transition is one atomic script
        // (a duplicate event of the same job finds it already queued): handle several at
        // once, so one event's publish round trips do not hold up the next.
        let this = &self;
        messages
            .take_until(stop.cancelled())
            .for_each_concurrent(CONCURRENT_EVENTS, |message| async move {
                if let Ok(message) = message {
                    this.handle(message).await;
                }
            })
            .await;
        if stop.is_cancelled() {
            Ok(())
        } else {
            anyhow::bail!("the UPLOADS consumer stream ended")
        }
    }

    async fn handle(&self, message: async_nats::jetstream::Message) {
        let event: UploadEvent = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(e) => {
                tracing::error!(error = %e, "malformed upload event; terminating it");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        match self.queue(&event).await {
            Ok(outcome) => {
                self.outcomes.with_label_values(&[outcome]).inc();
                let _ = message.double_ack().await;
            }
            Err(e) => {
                tracing::warn!(job = %event.job_id, error = %e, "cannot queue yet; retrying");
                self.outcomes.with_label_values(&["retry"]).inc();
                let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(2)))).await;
            }
        }
    }

    async fn queue(&self, event: &UploadEvent) -> anyhow::Result<&'static str> {
        let Some(job) = self.jobs.get(&event.job_id).await? else { return Ok("unknown_job") };
        self.queue_job(job).await
    }

    /// Admits an uploaded job and publishes its work item (again, if already queued).
    pub(crate) async fn queue_job(&self, job: Job) -> anyhow::Result<&'static str> {
        match job.status {
            JobStatus::Uploaded => {}
            // Queued before (a redelivered event): make sure its work item is out.
            JobStatus::Queued => {
                events::publish_work_item(&self.js, &job).await?;
                return Ok("republished");
            }
            _ => return Ok("not_uploaded"),
        }
        let n = match self.jobs.admit(&job.id, self.tenant_cap).await? {
            Admission::Admitted(n) => n,
            Admission::Capped(_) => return Ok("deferred"),
            Admission::Skipped => return Ok("raced"),
        };
        let job = Job { status: JobStatus::Queued, queued_count: n, ..job };
        events::publish_work_item(&self.js, &job).await?;
        let queued = JobEvent::queued(&job, n);
        if let Err(e) = events::publish_event(&self.js, &queued).await {
            tracing::warn!(error = %e, "queued event not published");
        }
        Ok("queued")
    }

    /// Admits jobs that wait in `uploaded` (deferred by the tenant cap), oldest first.
    pub(crate) async fn promote_deferred(&self, limit: usize) -> anyhow::Result<usize> {
        let mut admitted = 0;
        for id in self.jobs.in_status(JobStatus::Uploaded, limit).await? {
            let Some(job) = self.jobs.get(&id).await? else { continue };
            if self.queue_job(job).await? == "queued" {
                admitted += 1;
            }
        }
        Ok(admitted)
    }
}
