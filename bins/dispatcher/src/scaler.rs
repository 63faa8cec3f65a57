//! Admission control and the reaper.
//!
//! Admission (every `scale_interval`, and at once when work is published): demand is the
//! number of work items nobody has taken (the JOBS consumers' pending counts); capacity is the
//! idle workers plus machines still booting. For the difference, machine slots are granted by
//! one Redis script that never lets machines alive + reserved exceed `max_machines`; each
//! granted slot starts a stopped machine if there is one (reuse: faster, and stopped machines
//! cost nothing) and creates a new one otherwise. Deferred uploads (tenant cap) are promoted.
//! The cap is counted at the provider and in Redis, not in this process, so it holds with
//! several dispatchers sharing one provider (see [`MAX_VIEW_AGE`], [`BOUND_RESERVATION`]).
//!
//! The reaper (every `reap_interval`): stops machines whose worker has idled past
//! `idle_stop_after`, destroys machines whose worker lease expired while they ran (hung or
//! crashed), destroys orphans (listed by the provider, unknown to the pool, no worker, older
//! than `boot_grace`), and destroys stopped machines beyond `max_stopped`. One dispatcher reaps
//! at a time (a leader lease).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tcoder::events::subjects;
use tcoder::jobs::{Priority, now_ms};
use tcoder::machines::{
    self, MachineProvider, MachineRecord, MachineState, ProviderMachine, ProviderState,
};
use tcoder::redis::Conn;
use tokio_util::sync::CancellationToken;

use crate::periodic::{FirstRound, Periodic};

use crate::metrics::DispatcherMetrics;
use crate::queue::Queue;

/// How long a granted slot counts against the cap while its machine is being had.
const RESERVATION_TTL: Duration = Duration::from_secs(60);
/// An admission pass acts on a view of the provider at most this old; older, it starts over.
/// Several dispatchers share the cap: one's view may predate a machine another just made.
const MAX_VIEW_AGE: Duration = Duration::from_secs(15);
/// How long a slot keeps counting once its machine exists (as that machine, so not twice):
/// longer than [`MAX_VIEW_AGE`], so no view that misses the machine can miss the reservation.
const BOUND_RESERVATION: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub(crate) struct Scaler {
    pub provider: Arc<dyn MachineProvider>,
    pub redis: Conn,
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub queue: Queue,
    pub max_machines: u32,
    pub max_stopped: u32,
    pub idle_stop_after: Duration,
    pub boot_grace: Duration,
    pub interval: Duration,
    pub reap_interval: Duration,
    /// Reaper passes run in one dispatcher at a time.
    pub reaper: crate::leadership::Leadership,
    pub metrics: DispatcherMetrics,
    /// Machines this dispatcher (re)started, and when (milliseconds since the epoch).
    pub started_at: Arc<std::sync::Mutex<HashMap<String, u64>>>,
}

/// What admission and the reaper see in one pass: the provider's machines, and the workers'
/// records with whether each worker's lease is live.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    pub machines: Vec<ProviderMachine>,
    pub records: HashMap<String, (MachineRecord, bool)>,
    /// When this dispatcher last started each (stopped) machine, in milliseconds: a restarted
    /// machine keeps its old creation time, yet it is booting all the same.
    pub started_at: HashMap<String, u64>,
}

/// Timing of the machine decisions (milliseconds since the epoch, durations).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub now_ms: u64,
    /// A machine without a live worker this young is still booting.
    pub boot_grace: Duration,
    /// A started machine whose worker idled this long is stopped.
    pub idle_stop_after: Duration,
}

impl Clock {
    fn older_than(&self, since_ms: u64, age: Duration) -> bool {
        self.now_ms.saturating_sub(since_ms) > u64::try_from(age.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The reaper's decisions: (machine, action) for every machine that needs one, and
/// (machine, slot) of machines with a live worker that are not members of the pool (adopted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReapPlan {
    pub actions: Vec<(String, ReapAction)>,
    pub adopt: Vec<(String, String)>,
}

/// What the reaper does to one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReapAction {
    /// Listed by the provider, unknown to us, no worker, past its boot grace.
    DestroyOrphan,
    /// Its worker idled past `idle_stop_after`: stopped (kept for reuse).
    StopIdle,
    /// Started, but its worker's lease expired (hung or crashed).
    ReclaimDead,
    /// A stopped machine beyond `max_stopped` (the oldest go first).
    DestroySurplus,
}

impl ReapAction {
    pub(crate) fn label(self) -> &'static str {
        match self {
            ReapAction::DestroyOrphan => "destroyed_orphan",
            ReapAction::StopIdle => "stopped_idle",
            ReapAction::ReclaimDead => "reclaimed_dead",
            ReapAction::DestroySurplus => "destroyed_surplus",
        }
    }

    pub(crate) fn destroys(self) -> bool {
        self != ReapAction::StopIdle
    }
}

impl View {
    /// How many more machines `demand` work items need: demand minus workers busy or idle and
    /// machines still booting (alive, no live worker yet, within the boot grace).
    pub(crate) fn machines_wanted(&self, demand: u64, clock: &Clock) -> u64 {
        let live_worker = |id: &str| self.records.get(id).is_some_and(|(_, live)| *live);
        let with_worker_in = |state: MachineState| {
            self.machines
                .iter()
                .filter(|m| m.state.is_alive())
                .filter(|m| {
                    self.records.get(&m.id).is_some_and(|(r, live)| *live && r.state == state)
                })
                .count() as u64
        };
        let booting = self
            .machines
            .iter()
            .filter(|m| m.state.is_alive() && !live_worker(&m.id))
            .filter(|m| {
                let since = self.started_at.get(&m.id).copied().unwrap_or(0).max(m.created_at);
                m.created_at == 0 || !clock.older_than(since, clock.boot_grace)
            })
            .count() as u64;
        let capacity =
            with_worker_in(MachineState::Idle) + with_worker_in(MachineState::Busy) + booting;
        demand.saturating_sub(capacity)
    }

    /// Machines alive at the provider (counted against `max_machines`).
    pub(crate) fn alive_ids(&self) -> Vec<&str> {
        self.machines.iter().filter(|m| m.state.is_alive()).map(|m| m.id.as_str()).collect()
    }

    /// Stopped machines to start before creating new ones, the newest last (popped first).
    pub(crate) fn reusable(&self) -> Vec<&ProviderMachine> {
        let mut stopped: Vec<&ProviderMachine> =
            self.machines.iter().filter(|m| m.state == ProviderState::Stopped).collect();
        stopped.sort_by_key(|m| m.created_at);
        stopped
    }

    /// The reaper's decisions for one pass.
    pub(crate) fn reap_plan(
        &self,
        members: &std::collections::HashSet<String>,
        clock: &Clock,
        max_stopped: u32,
    ) -> ReapPlan {
        let mut actions = Vec::new();
        let mut adopt = Vec::new();
        let mut stopped = Vec::new();
        for machine in &self.machines {
            let record = self.records.get(&machine.id);
            let live = record.is_some_and(|(_, live)| *live);
            let member = members.contains(&machine.id);
            if live && !member {
                // A worker we did not record (e.g. a create whose reply we lost).
                adopt.push((
                    machine.id.clone(),
                    machine.slot.clone().unwrap_or_else(|| "adopted".to_owned()),
                ));
            }
            let action =
                if !(member || live) && clock.older_than(machine.created_at, clock.boot_grace) {
                    Some(ReapAction::DestroyOrphan)
                } else if machine.state == ProviderState::Started {
                    match record {
                        Some((r, true))
                            if r.state == MachineState::Idle
                                && clock.older_than(r.last_active_at, clock.idle_stop_after) =>
                        {
                            Some(ReapAction::StopIdle)
                        }
                        Some((_, false)) => Some(ReapAction::ReclaimDead),
                        _ => None,
                    }
                } else {
                    if machine.state == ProviderState::Stopped {
                        stopped.push(machine);
                    }
                    None
                };
            if let Some(action) = action {
                actions.push((machine.id.clone(), action));
            }
        }
        // Keep a few stopped machines for reuse; destroy the oldest beyond that.
        stopped.sort_by_key(|m| std::cmp::Reverse(m.created_at));
        for machine in stopped.into_iter().skip(max_stopped as usize) {
            actions.push((machine.id.clone(), ReapAction::DestroySurplus));
        }
        ReapPlan { actions, adopt }
    }
}

impl Scaler {
    pub(crate) async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        // New work items wake admission at once.
        let wake = Some(self.nats.subscribe(subjects::JOBS_ALL).await?);
        let periodic = Periodic {
            wake,
            ..Periodic::every("admission and reaper", self.interval, FirstRound::AfterWait)
        };
        let last_reap = std::sync::Mutex::new(Instant::now());
        periodic.run(stop, || self.round(&last_reap)).await
    }

    /// Admission every round; the reaper every `reap_interval`, while this process leads it.
    async fn round(&self, last_reap: &std::sync::Mutex<Instant>) -> anyhow::Result<()> {
        let admitted = self.admit().await;
        let reap_due = {
            let mut last = last_reap.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = last.elapsed() >= self.reap_interval;
            if due {
                *last = Instant::now();
            }
            due
        };
        if reap_due
            && self.reaper.hold().await
            && let Err(e) = self.reap().await
        {
            tracing::warn!(error = %e, "reaper pass failed");
        }
        admitted
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
        let started_at = {
            // Only starts within the boot grace matter; older ones are forgotten (bounded).
            let mut starts = self.started_at.lock().expect("started_at lock");
            let clock = self.clock(now_ms());
            starts.retain(|_, at| !clock.older_than(*at, clock.boot_grace));
            starts.clone()
        };
        Ok(View { machines, records, started_at })
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
        let viewed = Instant::now();
        let view = self.view().await?;
        let wanted = view.machines_wanted(demand, &self.clock(now_ms()));
        if wanted == 0 {
            return Ok(());
        }
        let candidates: Vec<String> = (0..wanted.min(u64::from(self.max_machines)))
            .map(|_| format!("s{}", uuid::Uuid::now_v7().simple()))
            .collect();
        if viewed.elapsed() > MAX_VIEW_AGE {
            tracing::warn!(took = ?viewed.elapsed(), "the provider view is too old to admit on; next pass");
            return Ok(());
        }
        let mut redis = self.redis.clone();
        let alive = view.alive_ids();
        let granted =
            machines::admit(&mut redis, self.max_machines, &alive, &candidates, RESERVATION_TTL)
                .await?;
        if (granted.len() as u64) < wanted {
            self.metrics.admission.with_label_values(&["at_capacity"]).inc();
        }
        let mut stopped = view.reusable();
        for slot in granted {
            let provider = self.provider.name();
            let result = match stopped.pop() {
                Some(machine) => {
                    let started = self.provider.start(&machine.id).await;
                    if started.is_ok() {
                        let mut starts = self.started_at.lock().expect("started_at lock");
                        starts.insert(machine.id.clone(), now_ms());
                    }
                    started.map(|()| ("start", machine.id.clone()))
                }
                None => self.provider.create(&slot).await.map(|m| ("create", m.id)),
            };
            match result {
                Ok((action, id)) => {
                    self.metrics.admission.with_label_values(&[action]).inc();
                    self.metrics.provider_calls.with_label_values(&[provider, action, "ok"]).inc();
                    machines::remember(&mut redis, &id, &slot).await?;
                    machines::bind(&mut redis, &slot, &id, BOUND_RESERVATION).await?;
                    tracing::info!(machine = %id, action, demand, "admitted a machine");
                }
                Err(e) => {
                    self.metrics
                        .provider_calls
                        .with_label_values(&[provider, "create_or_start", "error"])
                        .inc();
                    tracing::warn!(error = %e, "cannot get a machine");
                    machines::release(&mut redis, &slot).await?;
                }
            }
        }
        Ok(())
    }

    fn clock(&self, now_ms: u64) -> Clock {
        Clock { now_ms, boot_grace: self.boot_grace, idle_stop_after: self.idle_stop_after }
    }

    pub(crate) async fn reap(&self) -> anyhow::Result<()> {
        let view = self.view().await?;
        let mut redis = self.redis.clone();
        let members = machines::members(&mut redis).await?;
        let ReapPlan { actions, adopt } =
            view.reap_plan(&members, &self.clock(now_ms()), self.max_stopped);
        for (id, slot) in adopt {
            machines::remember(&mut redis, &id, &slot).await?;
        }
        for (id, action) in actions {
            // The view read each worker's record and lease one after the other: a worker
            // deregistering in between looked dead. Destroying it would throw away a machine
            // that is about to be stopped and reusable.
            if action == ReapAction::ReclaimDead && !machines::is_dead(&mut redis, &id).await? {
                continue;
            }
            let result = if action.destroys() {
                self.provider.destroy(&id).await
            } else {
                self.provider.stop(&id).await
            };
            let outcome = if result.is_ok() { "ok" } else { "error" };
            let call = if action.destroys() { "destroy" } else { "stop" };
            self.metrics
                .provider_calls
                .with_label_values(&[self.provider.name(), call, outcome])
                .inc();
            if result.is_ok() {
                self.metrics.reaper_actions.with_label_values(&[action.label()]).inc();
                tracing::info!(machine = %id, action = action.label(), "reaper");
                if action.destroys() {
                    machines::forget(&mut redis, &id).await?;
                    if action != ReapAction::DestroySurplus {
                        machines::deregister(&mut redis, &id).await?;
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const NOW: u64 = 10_000_000;
    const MINUTE: u64 = 60_000;

    fn clock() -> Clock {
        Clock {
            now_ms: NOW,
            boot_grace: Duration::from_secs(120),
            idle_stop_after: Duration::from_secs(300),
        }
    }

    fn machine(id: &str, state: ProviderState, age_ms: u64) -> ProviderMachine {
        ProviderMachine {
            id: id.into(),
            state,
            slot: Some(format!("slot-{id}")),
            created_at: NOW - age_ms,
        }
    }

    fn worker(view: &mut View, id: &str, state: MachineState, idle_ms: u64, live: bool) {
        let record = MachineRecord {
            id: id.into(),
            state,
            provider: "local".into(),
            started_at: 0,
            last_active_at: NOW - idle_ms,
            jobs: 0,
            admin: None,
        };
        view.records.insert(id.into(), (record, live));
    }

    #[test]
    fn demand_is_met_by_idle_busy_and_booting_machines_only() {
        let mut view = View {
            machines: vec![
                machine("idle", ProviderState::Started, 10 * MINUTE),
                machine("busy", ProviderState::Started, 10 * MINUTE),
                machine("booting", ProviderState::Started, MINUTE),
                machine("stuck", ProviderState::Started, 10 * MINUTE),
                machine("parked", ProviderState::Stopped, 10 * MINUTE),
            ],
            ..View::default()
        };
        worker(&mut view, "idle", MachineState::Idle, 0, true);
        worker(&mut view, "busy", MachineState::Busy, 0, true);
        // "stuck" has no live worker past its boot grace: it is no capacity.
        assert_eq!(view.machines_wanted(5, &clock()), 2);
        // Unless this dispatcher just restarted it: an old machine booting again.
        view.started_at.insert("stuck".into(), NOW - MINUTE);
        assert_eq!(view.machines_wanted(5, &clock()), 1);
        view.started_at.clear();
        assert_eq!(view.machines_wanted(3, &clock()), 0);
        assert_eq!(view.alive_ids().len(), 4);
        assert_eq!(view.reusable().iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["parked"]);
    }

    #[test]
    fn the_reaper_stops_idlers_reclaims_the_dead_destroys_orphans_and_surplus() {
        let mut view = View {
            machines: vec![
                machine("idler", ProviderState::Started, 60 * MINUTE),
                machine("fresh-idle", ProviderState::Started, 60 * MINUTE),
                machine("dead", ProviderState::Started, 60 * MINUTE),
                machine("orphan", ProviderState::Started, 10 * MINUTE),
                machine("young-orphan", ProviderState::Started, MINUTE),
                machine("unrecorded", ProviderState::Started, 10 * MINUTE),
                machine("stopped-old", ProviderState::Stopped, 50 * MINUTE),
                machine("stopped-new", ProviderState::Stopped, 20 * MINUTE),
            ],
            ..View::default()
        };
        worker(&mut view, "idler", MachineState::Idle, 6 * MINUTE, true);
        worker(&mut view, "fresh-idle", MachineState::Idle, MINUTE, true);
        worker(&mut view, "dead", MachineState::Busy, MINUTE, false);
        worker(&mut view, "unrecorded", MachineState::Busy, 0, true);
        let members: HashSet<String> =
            ["idler", "fresh-idle", "dead", "stopped-old", "stopped-new"].map(String::from).into();
        let ReapPlan { actions, adopt } = view.reap_plan(&members, &clock(), 1);
        assert_eq!(
            actions,
            [
                ("idler".to_owned(), ReapAction::StopIdle),
                ("dead".to_owned(), ReapAction::ReclaimDead),
                ("orphan".to_owned(), ReapAction::DestroyOrphan),
                ("stopped-old".to_owned(), ReapAction::DestroySurplus),
            ]
        );
        assert_eq!(adopt, [("unrecorded".to_owned(), "slot-unrecorded".to_owned())]);
    }
}
