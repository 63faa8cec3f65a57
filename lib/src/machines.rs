//! The machine pool in Redis: `tcoder:machines` (machine id → record) and
//! `tcoder:machines:<id>:lease` (expires unless the machine renews it). A worker registers
//! itself, renews while it lives and deregisters on a clean exit; the dispatcher's reaper
//! treats an expired lease as a dead machine.

use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use crate::jobs::now_ms;
use crate::store::{KEY_PREFIX, StoreError};

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
}

pub fn pool_key() -> String {
    format!("{KEY_PREFIX}machines")
}

pub fn lease_key(id: &str) -> String {
    format!("{KEY_PREFIX}machines:{id}:lease")
}

/// Writes the record and renews the lease, atomically.
pub async fn heartbeat(
    redis: &mut ConnectionManager,
    record: &MachineRecord,
    ttl: Duration,
) -> Result<(), StoreError> {
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
pub async fn deregister(redis: &mut ConnectionManager, id: &str) -> Result<(), StoreError> {
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
pub async fn list(redis: &mut ConnectionManager) -> Result<Vec<MachineRecord>, StoreError> {
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
        }
    }

    fn state_label(&self) -> &'static str {
        match self.state {
            MachineState::Idle => "idle",
            MachineState::Busy => "busy",
            MachineState::Stopping => "stopping",
        }
    }
}
