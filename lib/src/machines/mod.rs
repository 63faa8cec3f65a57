//! The machine pool in Redis: `tcoder:machines` (machine id → record) and
//! `tcoder:machines:<id>:lease` (expires unless the machine renews it). A worker registers
//! itself, renews while it lives and deregisters on a clean exit; the dispatcher's reaper
//! treats an expired lease as a dead machine.

pub mod fly;
pub mod local;
mod provider;

use std::time::Duration;

pub use self::provider::{MachineProvider, ProviderError, ProviderMachine, ProviderState};

use std::sync::LazyLock;

use crate::redis::Conn;
use serde::{Deserialize, Serialize};

use crate::jobs::now_ms;
use crate::redis::RedisError;

/// What a machine is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineState {
    Idle,
    Busy,
    Stopping,
}

/// A machine as the pool records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub id: String,
    pub state: MachineState,
    /// `local` or `fly`.
    pub provider: String,
    pub started_at: u64,
    pub last_active_at: u64,
    /// Jobs finished (any outcome) by this machine.
    pub jobs: u64,
    /// Where the machine's admin server (`/metrics`) can be reached, when known: Prometheus
    /// discovers workers through the dispatcher's `/sd/workers` from these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
}

pub use crate::redis::keys::{machine_lease as lease_key, machines as pool_key};

/// Writes the record and renews the lease, atomically.
pub async fn heartbeat(
    redis: &mut Conn,
    record: &MachineRecord,
    ttl: Duration,
) -> Result<(), RedisError> {
    let json = serde_json::to_string(record).expect("serializable");
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    redis::pipe()
        .atomic()
        .hset(pool_key(), &record.id, json)
        .ignore()
        .cmd("SET")
        .arg(lease_key(&record.id))
        .arg(record.state_label())
        .arg("PX")
        .arg(ttl_ms)
        .ignore()
        .query_async::<()>(redis)
        .await?;
    Ok(())
}

/// Removes a machine from the pool (clean exit).
pub async fn deregister(redis: &mut Conn, id: &str) -> Result<(), RedisError> {
    redis::pipe()
        .atomic()
        .hdel(pool_key(), id)
        .ignore()
        .del(lease_key(id))
        .ignore()
        .query_async::<()>(redis)
        .await?;
    Ok(())
}

/// Every machine record.
pub async fn list(redis: &mut Conn) -> Result<Vec<MachineRecord>, RedisError> {
    let raw: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(pool_key()).query_async(redis).await?;
    Ok(raw.values().filter_map(|v| serde_json::from_str(v).ok()).collect())
}

impl MachineRecord {
    pub fn new(id: &str, provider: &str) -> MachineRecord {
        let now = now_ms();
        MachineRecord {
            id: id.to_owned(),
            state: MachineState::Idle,
            provider: provider.to_owned(),
            started_at: now,
            last_active_at: now,
            jobs: 0,
            admin: None,
        }
    }

    /// The Prometheus HTTP service-discovery target group for this machine, if it has a
    /// reachable admin address.
    pub fn scrape_target(&self) -> Option<serde_json::Value> {
        let admin = self.admin.as_ref()?;
        Some(serde_json::json!({
            "targets": [admin],
            "labels": { "machine": self.id, "provider": self.provider },
        }))
    }

    fn state_label(&self) -> &'static str {
        match self.state {
            MachineState::Idle => "idle",
            MachineState::Busy => "busy",
            MachineState::Stopping => "stopping",
        }
    }
}

/// Whether the machine's worker holds a live lease.
pub async fn is_alive(redis: &mut Conn, id: &str) -> Result<bool, RedisError> {
    Ok(redis::cmd("EXISTS").arg(lease_key(id)).query_async::<bool>(redis).await?)
}

/// Whether the machine's worker is dead rather than leaving: its record is still there but its
/// lease is not. A worker that exits cleanly removes both at once, so a view that read the
/// record a moment before the worker deregistered (and the lease a moment after) is not taken
/// for a dead worker when this is asked again.
pub async fn is_dead(redis: &mut Conn, id: &str) -> Result<bool, RedisError> {
    let (registered, alive): (bool, bool) = redis::pipe()
        .atomic()
        .cmd("HEXISTS")
        .arg(pool_key())
        .arg(id)
        .cmd("EXISTS")
        .arg(lease_key(id))
        .query_async(redis)
        .await?;
    Ok(registered && !alive)
}

static ADMIT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("admit.lua")));

use crate::redis::keys::{
    reservations as reservations_key, reserved_machines as reserved_machines_key,
};

/// Grants up to `candidates.len()` new machine slots, never more than `max_machines` alive:
/// the `alive` machine ids of the caller's provider view, plus unexpired reservations not bound
/// to one of them (see `admit.lua`). Returns the granted slots.
pub async fn admit(
    redis: &mut Conn,
    max_machines: u32,
    alive: &[&str],
    candidates: &[String],
    ttl: Duration,
) -> Result<Vec<String>, RedisError> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let mut invocation = ADMIT.key(reservations_key());
    invocation
        .key(reserved_machines_key())
        .arg(now_ms())
        .arg(max_machines)
        .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        .arg(alive.len());
    for id in alive {
        invocation.arg(*id);
    }
    for slot in candidates {
        invocation.arg(slot);
    }
    Ok(invocation.invoke_async(redis).await?)
}

/// Binds a granted slot to the machine it got and keeps the reservation `keep_for` longer:
/// until then it counts as that machine, so an admission acting on a view of the provider
/// taken before the machine existed (less than `keep_for` old) cannot over-admit.
pub async fn bind(
    redis: &mut Conn,
    slot: &str,
    machine: &str,
    keep_for: Duration,
) -> Result<(), RedisError> {
    let until = now_ms() + u64::try_from(keep_for.as_millis()).unwrap_or(u64::MAX);
    redis::pipe()
        .atomic()
        .hset(reserved_machines_key(), slot, machine)
        .zadd(reservations_key(), slot, until)
        .query_async::<()>(redis)
        .await?;
    Ok(())
}

/// Ends a reservation whose machine could not be had.
pub async fn release(redis: &mut Conn, slot: &str) -> Result<(), RedisError> {
    redis::pipe()
        .atomic()
        .zrem(reservations_key(), slot)
        .hdel(reserved_machines_key(), slot)
        .query_async::<()>(redis)
        .await?;
    Ok(())
}

use crate::redis::keys::pool_members as pool_members_key;

/// Records that the dispatcher created (or adopted) machine `id` for `slot`.
pub async fn remember(redis: &mut Conn, id: &str, slot: &str) -> Result<(), RedisError> {
    redis::cmd("HSET").arg(pool_members_key()).arg(id).arg(slot).query_async::<()>(redis).await?;
    Ok(())
}

/// Forgets a destroyed machine.
pub async fn forget(redis: &mut Conn, id: &str) -> Result<(), RedisError> {
    redis::cmd("HDEL").arg(pool_members_key()).arg(id).query_async::<()>(redis).await?;
    Ok(())
}

/// Machines the dispatcher knows it created or adopted.
pub async fn members(redis: &mut Conn) -> Result<std::collections::HashSet<String>, RedisError> {
    let ids: Vec<String> = redis::cmd("HKEYS").arg(pool_members_key()).query_async(redis).await?;
    Ok(ids.into_iter().collect())
}
