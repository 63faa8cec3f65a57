//! Where worker machines come from. A provider creates, starts, stops, destroys and lists
//! machines; everything else (how many, which to reuse, when to stop) is the dispatcher's.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A machine's state as its provider reports it (Fly's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderState {
    Created,
    Starting,
    Started,
    Stopping,
    Stopped,
    Destroying,
    Destroyed,
    Failed,
}

impl ProviderState {
    pub fn parse(state: &str) -> ProviderState {
        match state {
            "created" => ProviderState::Created,
            "starting" => ProviderState::Starting,
            "started" => ProviderState::Started,
            "stopping" | "suspending" => ProviderState::Stopping,
            "stopped" | "suspended" => ProviderState::Stopped,
            "destroying" => ProviderState::Destroying,
            "destroyed" | "replaced" | "migrated" => ProviderState::Destroyed,
            _ => ProviderState::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderState::Created => "created",
            ProviderState::Starting => "starting",
            ProviderState::Started => "started",
            ProviderState::Stopping => "stopping",
            ProviderState::Stopped => "stopped",
            ProviderState::Destroying => "destroying",
            ProviderState::Destroyed => "destroyed",
            ProviderState::Failed => "failed",
        }
    }

    /// Counts against `max_machines` (it runs, or is about to).
    pub fn is_alive(self) -> bool {
        matches!(
            self,
            ProviderState::Created
                | ProviderState::Starting
                | ProviderState::Started
                | ProviderState::Stopping
        )
    }
}

/// A machine as the provider lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderMachine {
    pub id: String,
    pub state: ProviderState,
    /// The admission slot it was created for (its idempotency key).
    pub slot: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at: u64,
}

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying later (rate limited, out of capacity, 5xx, network).
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
    #[error("machine {0} not found")]
    NotFound(String),
}

/// A source of worker machines.
#[async_trait::async_trait]
pub trait MachineProvider: Send + Sync + fmt::Debug {
    /// `local` or `fly` (a metric label).
    fn name(&self) -> &'static str;

    /// Creates and starts a machine for `slot`. Idempotent: a machine that already exists for
    /// the slot is returned instead of a second one.
    async fn create(&self, slot: &str) -> Result<ProviderMachine, ProviderError>;

    /// Starts a stopped machine (reuse: it costs nothing while stopped).
    async fn start(&self, id: &str) -> Result<(), ProviderError>;

    /// Stops a machine (SIGTERM to its worker, which drains).
    async fn stop(&self, id: &str) -> Result<(), ProviderError>;

    /// Destroys a machine (stopping it first if it runs).
    async fn destroy(&self, id: &str) -> Result<(), ProviderError>;

    /// Every machine of this pool that is not destroyed.
    async fn list(&self) -> Result<Vec<ProviderMachine>, ProviderError>;
}
