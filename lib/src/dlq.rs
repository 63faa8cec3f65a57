//! Dead letters: jobs whose work item used up its deliveries (the worker crashed or was killed
//! every time — a poison input). The job is failed with `job.poison` and its history is kept on
//! `tcoder.dlq.jobs` (stream `DLQ`, 30 days) for inspection and replay.

use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use serde::{Deserialize, Serialize};

use crate::events::{self, subjects};
use crate::jobs::{JobId, JobStore, Recovery, Tenant, now_ms, rfc3339};

/// One dead-lettered job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub job_id: JobId,
    pub tenant: Tenant,
    pub reason: String,
    pub deliveries: i64,
    /// The job's state changes up to the dead-lettering.
    pub history: Vec<serde_json::Value>,
    pub at: String,
}

/// Records a dead letter (dedup id: job + queuing, so a repeated advisory adds nothing).
pub async fn record(js: &Context, letter: &DeadLetter, queued_count: u64) -> anyhow::Result<()> {
    let id = format!("{}.dlq.{queued_count}", letter.job_id);
    events::publish_json(js, subjects::DLQ_JOBS.to_owned(), &id, letter).await?;
    Ok(())
}

/// Every dead letter still kept, oldest first (bounded by `limit`).
pub async fn list(js: &Context, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
    let stored =
        events::stored_messages(js, subjects::DLQ_STREAM, subjects::DLQ_JOBS, limit).await?;
    Ok(stored.iter().filter_map(|m| serde_json::from_slice(&m.payload).ok()).collect())
}

/// How many dead letters the stream keeps.
pub async fn depth(js: &Context) -> anyhow::Result<u64> {
    Ok(reader(js).await?.info().await?.num_pending)
}

/// An ephemeral ordered consumer over every dead letter kept.
async fn reader(
    js: &Context,
) -> anyhow::Result<async_nats::jetstream::consumer::Consumer<OrderedConfig>> {
    let stream = js.get_stream(subjects::DLQ_STREAM).await?;
    Ok(stream
        .create_consumer(OrderedConfig {
            filter_subject: subjects::DLQ_JOBS.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?)
}

/// Puts a dead-lettered (failed) job back on the work queue.
pub async fn replay(jobs: &JobStore, js: &Context, id: &JobId) -> anyhow::Result<()> {
    let Some(_) = jobs.recover(id, Recovery::Replay).await? else {
        anyhow::bail!("job {id} is not failed (only failed jobs can be replayed)");
    };
    let job = jobs.get(id).await?.ok_or_else(|| anyhow::anyhow!("job {id} vanished"))?;
    events::publish_work_item(js, &job).await?;
    Ok(())
}

impl DeadLetter {
    pub fn new(
        job_id: JobId,
        tenant: Tenant,
        reason: String,
        deliveries: i64,
        history: Vec<serde_json::Value>,
    ) -> DeadLetter {
        DeadLetter { job_id, tenant, reason, deliveries, history, at: rfc3339(now_ms()) }
    }
}
