//! The reconciler: nothing is left stuck. Periodically, jobs that have sat in one state longer
//! than `dispatcher.stuck_after` are checked against reality:
//! - `uploaded` (the upload event was lost, or the sweep found the upload): queued;
//! - `queued` with no work item left in `JOBS` (lost, or removed by a stale ack): published again;
//! - `running` with no live lease: its attempt died, and either its message was removed or
//!   JetStream will not deliver it again (past its delivery limit, the advisory lost) — settled
//!   as an undeliverable item (`dead_letters`): a fresh work item, or dead-lettered when its
//!   attempts were lost too often.
//!
//! A queued job whose work item still exists is left alone: JetStream will deliver it.
//!
//! With several dispatchers, one reconciles at a time (a leader lease): two would both find a
//! lost work item and publish two.

use std::time::Duration;

use async_nats::jetstream::Context;
use prometheus::IntCounterVec;
use tcoder::events::{self, subjects};
use tcoder::jobs::{Job, JobStatus, JobStore, Recovery, now_ms};
use tokio_util::sync::CancellationToken;

use crate::periodic::{FirstRound, Periodic};

/// Jobs looked at per state per pass.
const BATCH: usize = 1000;

#[derive(Debug, Clone)]
pub(crate) struct Reconciler {
    /// Passes run in one dispatcher at a time.
    pub leadership: crate::leadership::Leadership,
    pub undeliverable: crate::dead_letters::Undeliverable,
    pub jobs: JobStore,
    pub js: Context,
    pub queue: crate::queue::Queue,
    pub interval: Duration,
    pub stuck_after: Duration,
    pub actions: IntCounterVec,
    pub dlq_depth: prometheus::IntGauge,
}

impl Reconciler {
    pub(crate) async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let periodic = Periodic::every("reconciler", self.interval, FirstRound::AfterWait);
        periodic.run(stop, || self.round()).await
    }

    /// A pass while this process leads, and the DLQ gauge either way.
    async fn round(&self) -> anyhow::Result<()> {
        let passed = match self.leadership.hold().await {
            true => self.pass().await.map(|_| ()),
            false => Ok(()),
        };
        match tcoder::dlq::depth(&self.js).await {
            Ok(depth) => self.dlq_depth.set(i64::try_from(depth).unwrap_or(i64::MAX)),
            Err(e) => tracing::debug!(error = %e, "cannot read the DLQ depth"),
        }
        passed
    }

    /// One pass; returns how many jobs it moved.
    pub(crate) async fn pass(&self) -> anyhow::Result<usize> {
        let mut moved = 0;
        let stuck_ms = u64::try_from(self.stuck_after.as_millis()).unwrap_or(u64::MAX);
        for status in [JobStatus::Uploaded, JobStatus::Queued, JobStatus::Running] {
            for id in self.jobs.in_status(status, BATCH).await? {
                let Some(job) = self.jobs.get(&id).await? else { continue };
                if job.status != status || now_ms().saturating_sub(job.updated_at) < stuck_ms {
                    continue;
                }
                if let Some(action) = self.reconcile(&job).await? {
                    tracing::info!(job = %job.id, status = %job.status, action, "reconciled");
                    self.actions.with_label_values(&[action]).inc();
                    moved += 1;
                }
            }
        }
        Ok(moved)
    }

    async fn reconcile(&self, job: &Job) -> anyhow::Result<Option<&'static str>> {
        match job.status {
            JobStatus::Uploaded => {
                let outcome = self.queue.queue_job(job.clone()).await?;
                Ok((outcome == "queued").then_some("queued_upload"))
            }
            JobStatus::Queued if self.work_item(job).await?.is_none() => {
                self.republish(job, Recovery::Bump, "republished").await
            }
            JobStatus::Running if !self.jobs.lease_alive(&job.id).await? => {
                let item = self.work_item(job).await?;
                let outcome = self.undeliverable.settle(&job.id, item, 0).await?;
                Ok(Some(match outcome {
                    "requeued" => "requeued_lapsed",
                    "dead_lettered" => "dead_lettered",
                    _ => return Ok(None),
                }))
            }
            _ => Ok(None),
        }
    }

    async fn republish(
        &self,
        job: &Job,
        recovery: Recovery,
        action: &'static str,
    ) -> anyhow::Result<Option<&'static str>> {
        if self.jobs.recover(&job.id, recovery).await?.is_none() {
            return Ok(None);
        }
        let job = self.jobs.get(&job.id).await?.ok_or_else(|| anyhow::anyhow!("job vanished"))?;
        events::publish_work_item(&self.js, &job).await?;
        Ok(Some(action))
    }

    /// The `JOBS` sequence of the job's work item, if it is still in the work-queue stream.
    async fn work_item(&self, job: &Job) -> anyhow::Result<Option<u64>> {
        let stream = self.js.get_stream(subjects::JOBS_STREAM).await?;
        match stream
            .get_last_raw_message_by_subject(&subjects::job(job.spec.priority, job.id.as_str()))
            .await
        {
            Ok(raw) => Ok(Some(raw.sequence)),
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(None)
            }
            Err(e) => Err(anyhow::anyhow!("looking up the work item of {}: {e}", job.id)),
        }
    }
}
