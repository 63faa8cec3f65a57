//! Live job events for `GET /v1/jobs/{id}/events`: one core NATS subscription per ingest
//! process on `tcoder.events.>`, fanned out in memory. A JetStream consumer per open stream
//! made the `EVENTS` stream's consumer limit a resource one tenant could exhaust for all;
//! here an open stream costs a broadcast receiver, and streams are capped per tenant and in
//! all (429 past either).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use prometheus::IntGauge;
use tcoder::events::{JobEvent, subjects};
use tcoder::jobs::Tenant;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Live events buffered per receiver; a stream that falls this far behind is closed (its
/// client reconnects and gets the history again).
const LIVE_BUFFER: usize = 4096;

#[derive(Debug)]
pub(crate) struct EventHub {
    live: broadcast::Sender<Arc<JobEvent>>,
    open: Mutex<Open>,
    max_total: usize,
    max_per_tenant: usize,
    gauge: IntGauge,
    /// Cancelled when the process stops feeding the hub (shutting down): open streams end at
    /// once, so a stop does not wait out its drain deadline for them — their clients reconnect
    /// elsewhere with `Last-Event-ID`.
    closing: CancellationToken,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_tenant: HashMap<Tenant, usize>,
}

/// Why a stream was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The tenant has `max_event_streams_per_tenant` open.
    Tenant,
    /// This process has `max_event_streams` open.
    Global,
}

/// One open stream; closing it (drop) frees its place.
#[derive(Debug)]
pub(crate) struct StreamPermit {
    hub: Arc<EventHub>,
    tenant: Tenant,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.hub.open.lock().expect("event hub lock");
        open.total -= 1;
        if let Some(n) = open.by_tenant.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                open.by_tenant.remove(&self.tenant);
            }
        }
        self.hub.gauge.set(i64::try_from(open.total).unwrap_or(i64::MAX));
    }
}

impl EventHub {
    pub(crate) fn new(max_total: usize, max_per_tenant: usize, gauge: IntGauge) -> Arc<EventHub> {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let closing = CancellationToken::new();
        Arc::new(EventHub {
            live,
            open: Mutex::default(),
            max_total,
            max_per_tenant,
            gauge,
            closing,
        })
    }

    /// A place for one more stream of `tenant`, unless a cap is reached.
    pub(crate) fn admit(self: &Arc<Self>, tenant: &Tenant) -> Result<StreamPermit, Refused> {
        let mut open = self.open.lock().expect("event hub lock");
        if open.by_tenant.get(tenant).copied().unwrap_or(0) >= self.max_per_tenant {
            return Err(Refused::Tenant);
        }
        if open.total >= self.max_total {
            return Err(Refused::Global);
        }
        open.total += 1;
        *open.by_tenant.entry(tenant.clone()).or_default() += 1;
        self.gauge.set(i64::try_from(open.total).unwrap_or(i64::MAX));
        Ok(StreamPermit { hub: self.clone(), tenant: tenant.clone() })
    }

    /// Resolves when the hub stops (the process is shutting down).
    pub(crate) fn closing(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.closing.clone().cancelled_owned()
    }

    /// Every live event from now on (all jobs: the caller filters).
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<JobEvent>> {
        self.live.subscribe()
    }

    /// Feeds the hub from NATS until `stop` (the client resubscribes by itself after a
    /// reconnect; events missed meanwhile are in the history a reconnecting client gets).
    pub(crate) async fn run(
        self: Arc<Self>,
        nats: async_nats::Client,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let _closing = self.closing.clone().drop_guard();
        let mut events = nats.subscribe(subjects::EVENTS_ALL).await?;
        loop {
            let message = tokio::select! {
                message = events.next() => message,
                () = stop.cancelled() => return Ok(()),
            };
            let Some(message) = message else { anyhow::bail!("the events subscription ended") };
            if let Ok(event) = serde_json::from_slice::<JobEvent>(&message.payload) {
                // No receiver (no open stream) is not an error.
                let _ = self.live.send(Arc::new(event));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_tenant_and_in_all_and_places_come_back_on_close() {
        let gauge = IntGauge::new("open", "open streams").unwrap();
        let hub = EventHub::new(3, 2, gauge.clone());
        let (a, b, c) =
            (Tenant::parse("a").unwrap(), Tenant::parse("b").unwrap(), Tenant::parse("c").unwrap());
        let first = hub.admit(&a).unwrap();
        let _second = hub.admit(&a).unwrap();
        assert_eq!(hub.admit(&a).unwrap_err(), Refused::Tenant);
        let _third = hub.admit(&b).unwrap();
        assert_eq!(hub.admit(&c).unwrap_err(), Refused::Global);
        assert_eq!(gauge.get(), 3);
        drop(first);
        assert_eq!(gauge.get(), 2);
        let _again = hub.admit(&c).unwrap();
    }
}
