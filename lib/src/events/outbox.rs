//! The outbox relay: publishes terminal events that were committed to Redis (in the same
//! script as the job's state) but not yet confirmed on the stream — e.g. because the worker
//! died between commit and publish. The event id is the `Nats-Msg-Id`, so a relay racing the
//! worker still produces one event.

use std::time::Duration;

use async_nats::jetstream::Context;
use tokio_util::sync::CancellationToken;

use super::publish_event;
use crate::jobs::JobStore;

/// Entries handled per pass.
const BATCH: usize = 100;

/// One pass; returns how many events were (re)published.
pub async fn relay_outbox(jobs: &JobStore, js: &Context) -> anyhow::Result<usize> {
    let mut published = 0;
    for (raw, event) in jobs.outbox(BATCH).await? {
        publish_event(js, &event).await?;
        jobs.outbox_done(&raw).await?;
        published += 1;
    }
    Ok(published)
}

/// Relays every `interval` until `stop`.
pub async fn run_outbox_relay(
    jobs: JobStore,
    js: Context,
    interval: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return Ok(()),
        }
        match relay_outbox(&jobs, &js).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "outbox relay published pending events"),
            Err(e) => tracing::warn!(error = %e, "outbox relay failed; retrying next interval"),
        }
    }
}
