//! Admission control and the reaper.
//!
//! Admission (every `scale_interval`, and at once when work is published): demand is the
//! number of work items nobody has taken (the JOBS consumers' pending counts); capacity is the
//! idle workers plus machines still booting. For the difference, machine slots are granted by
//! one Redis script that never lets machines alive + reserved exceed `max_machines`; each
//! granted slot starts a stopped machine if there is one (reuse: faster, and stopped machines
//! cost nothing) and creates a new one otherwise. Deferred uploads (tenant cap) are promoted.
//!
//! The reaper (every `reap_interval`): stops machines whose worker has idled past
//! `idle_stop_after`, destroys machines whose worker lease expired while they ran (hung or
//! crashed), destroys orphans (listed by the provider, unknown to the pool, no worker, older
//! than `boot_grace`), and destroys stopped machines beyond `max_stopped`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tcoder::events::subjects;
use tcoder::jobs::{Priority, now_ms};
use tcoder::machines::{
    self, MachineProvider, MachineRecord, MachineState, ProviderMachine, ProviderState,
};
use tokio_util::sync::CancellationToken;

use crate::metrics::DispatcherMetrics;
use crate::queue::Queue;

/// How long a granted slot counts against the cap before its machine shows up at the provider.
const RESERVATION_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub(crate) struct Scaler {
    pub provider: Arc<dyn MachineProvider>,
    pub redis: ConnectionManager,
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub queue: Queue,
    pub max_machines: u32,
    pub max_stopped: u32,
    pub idle_stop_after: Duration,
    pub boot_grace: Duration,
    pub interval: Duration,
    pub reap_interval: Duration,
    pub metrics: DispatcherMetrics,
}

/// What admission sees in one pass.
struct View {
    machines: Vec<ProviderMachine>,
    records: HashMap<String, (MachineRecord, bool)>,
}

impl Scaler {
    pub(crate) async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut wakeups = self.nats.subscribe(subjects::JOBS_ALL).await?;
        let mut last_reap = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                _ = wakeups.next() => {}
                () = stop.cancelled() => return Ok(()),
            }
            if let Err(e) = self.admit().await {
                tracing::warn!(error = %e, "admission pass failed");
            }
            if last_reap.elapsed() >= self.reap_interval {
                last_reap = Instant::now();
                if let Err(e) = self.reap().await {
                    tracing::warn!(error = %e, "reaper pass failed");
                }
            }
        }
    }

    async fn view(&self) -> anyhow::Result<View> {
        let provider = self.provider.name();
        let machines = match self.provider.list().await {
            Ok(machines) => {
                self.metrics.provider_calls.with_label_values(&[provider, "list", "ok"]).inc();
                machines
            }
            Err(e) => {
                self.metrics.provider_calls.with_label_values(&[provider, "list", "error"]).inc();
                return Err(e.into());
            }
        };
        let mut redis = self.redis.clone();
        let mut records = HashMap::new();
        for record in machines::list(&mut redis).await? {
            let alive = machines::is_alive(&mut redis, &record.id).await?;
            records.insert(record.id.clone(), (record, alive));
        }
        for state in [ProviderState::Started, ProviderState::Stopped, ProviderState::Created] {
            let count = machines.iter().filter(|m| m.state == state).count();
            self.metrics
                .machines
                .with_label_values(&[provider, state.as_str()])
                .set(i64::try_from(count).unwrap_or(0));
        }
        Ok(View { machines, records })
    }

    /// Work items waiting or in flight (`num_pending` + `num_ack_pending`). In-flight items
    /// whose worker died are redelivered only to a worker that asks: they need a machine too.
    async fn demand(&self) -> anyhow::Result<u64> {
        let stream = self.js.get_stream(subjects::JOBS_STREAM).await?;
        let mut pending = 0;
        for priority in Priority::ALL {
            pending += tcoder::events::queue_depth(&stream, priority).await?;
        }
        Ok(pending)
    }

    pub(crate) async fn admit(&self) -> anyhow::Result<()> {
        if self.queue.tenant_cap > 0 {
            self.queue.promote_deferred(100).await?;
        }
        let demand = self.demand().await?;
        if demand == 0 {
            // Nothing to place: no provider call (the reaper keeps the machine view fresh).
            return Ok(());
        }
        let view = self.view().await?;
        let now = now_ms();
        let boot_grace_ms = u64::try_from(self.boot_grace.as_millis()).unwrap_or(u64::MAX);
        // Alive machines whose worker is registered, live and in `state`.
        let with_worker_in = |state: MachineState| {
            view.machines
                .iter()
                .filter(|m| m.state.is_alive())
                .filter(|m| {
                    view.records.get(&m.id).is_some_and(|(r, live)| *live && r.state == state)
                })
                .count() as u64
        };
        let idle = with_worker_in(MachineState::Idle);
        let booting = view
            .machines
            .iter()
            .filter(|m| {
                m.state.is_alive() && !view.records.get(&m.id).is_some_and(|(_, live)| *live)
            })
            .filter(|m| now.saturating_sub(m.created_at) < boot_grace_ms || m.created_at == 0)
            .count() as u64;
        let busy = with_worker_in(MachineState::Busy);
        let wanted = demand.saturating_sub(busy + idle + booting);
        if wanted == 0 {
            return Ok(());
        }
        let alive = view.machines.iter().filter(|m| m.state.is_alive()).count();
        let candidates: Vec<String> = (0..wanted.min(u64::from(self.max_machines)))
            .map(|_| format!("s{}", uuid::Uuid::now_v7().simple()))
            .collect();
        let mut redis = self.redis.clone();
        let granted =
            machines::admit(&mut redis, self.max_machines, alive, &candidates, RESERVATION_TTL)
                .await?;
        if (granted.len() as u64) < wanted {
            self.metrics.admission.with_label_values(&["at_capacity"]).inc();
        }
        let mut stopped: Vec<&ProviderMachine> =
            view.machines.iter().filter(|m| m.state == ProviderState::Stopped).collect();
        stopped.sort_by_key(|m| m.created_at);
        for slot in granted {
            let provider = self.provider.name();
            let result = match stopped.pop() {
                Some(machine) => {
                    self.provider.start(&machine.id).await.map(|()| ("start", machine.id.clone()))
                }
                None => self.provider.create(&slot).await.map(|m| ("create", m.id)),
            };
            match result {
                Ok((action, id)) => {
                    self.metrics.admission.with_label_values(&[action]).inc();
                    self.metrics.provider_calls.with_label_values(&[provider, action, "ok"]).inc();
                    machines::remember(&mut redis, &id, &slot).await?;
                    tracing::info!(machine = %id, action, demand, "admitted a machine");
                }
                Err(e) => {
                    self.metrics
                        .provider_calls
                        .with_label_values(&[provider, "create_or_start", "error"])
                        .inc();
                    tracing::warn!(error = %e, "cannot get a machine");
                }
            }
            machines::release(&mut redis, &slot).await?;
        }
        Ok(())
    }

    pub(crate) async fn reap(&self) -> anyhow::Result<()> {
        let view = self.view().await?;
        let mut redis = self.redis.clone();
        let members = machines::members(&mut redis).await?;
        let now = now_ms();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut stopped = Vec::new();
        for machine in &view.machines {
            let record = view.records.get(&machine.id);
            let live = record.is_some_and(|(_, live)| *live);
            if live && !members.contains(&machine.id) {
                // A worker we did not record (e.g. a create whose reply we lost): adopt it.
                machines::remember(
                    &mut redis,
                    &machine.id,
                    machine.slot.as_deref().unwrap_or("adopted"),
                )
                .await?;
            }
            let known = members.contains(&machine.id) || live;
            let old = now.saturating_sub(machine.created_at) > ms(self.boot_grace);
            let action = if !known && old {
                Some(("destroyed_orphan", true))
            } else if machine.state == ProviderState::Started {
                match record {
                    Some((r, true))
                        if r.state == MachineState::Idle
                            && now.saturating_sub(r.last_active_at) > ms(self.idle_stop_after) =>
                    {
                        Some(("stopped_idle", false))
                    }
                    Some((_, false)) => Some(("reclaimed_dead", true)),
                    _ => None,
                }
            } else {
                if machine.state == ProviderState::Stopped {
                    stopped.push(machine);
                }
                None
            };
            if let Some((action, destroy)) = action {
                let result = if destroy {
                    self.provider.destroy(&machine.id).await
                } else {
                    self.provider.stop(&machine.id).await
                };
                let outcome = if result.is_ok() { "ok" } else { "error" };
                self.metrics
                    .provider_calls
                    .with_label_values(&[
                        self.provider.name(),
                        if destroy { "destroy" } else { "stop" },
                        outcome,
                    ])
                    .inc();
                if result.is_ok() {
                    self.metrics.reaper_actions.with_label_values(&[action]).inc();
                    tracing::info!(machine = %machine.id, action, "reaper");
                    if destroy {
                        machines::forget(&mut redis, &machine.id).await?;
                        machines::deregister(&mut redis, &machine.id).await?;
                    }
                }
            }
        }
        // Records of machines that are gone or stopped, whose lease expired: drop them.
        for (id, (_, live)) in &view.records {
            if !live {
                machines::deregister(&mut redis, id).await?;
            }
        }
        // Keep a few stopped machines for reuse; destroy the oldest beyond that.
        stopped.sort_by_key(|m| std::cmp::Reverse(m.created_at));
        for machine in stopped.into_iter().skip(self.max_stopped as usize) {
            if self.provider.destroy(&machine.id).await.is_ok() {
                self.metrics.reaper_actions.with_label_values(&["destroyed_surplus"]).inc();
                machines::forget(&mut redis, &machine.id).await?;
            }
        }
        Ok(())
    }
}
