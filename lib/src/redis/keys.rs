//! Every Redis key tcoder uses, in one place. All start with [`KEY_PREFIX`](super::KEY_PREFIX).
//! The Lua scripts (`jobs/lua/*.lua`, `machines/admit.lua`) get the keys they touch first as
//! `KEYS`; the per-tenant and per-status indexes a state change updates are derived inside the
//! scripts from the prefix passed as an argument, with the same shapes as [`tenant_index`] and
//! [`status_index`] (the `prelude.lua` helpers).

use super::KEY_PREFIX;
use crate::jobs::{JobId, JobStatus, Tenant};

/// The job's hash: status, tenant, spec, epoch, attempts, outputs, error, timestamps.
pub fn job(id: &JobId) -> String {
    format!("{KEY_PREFIX}job:{id}")
}

/// The job's lease: `<worker>:<epoch>` with a TTL (a liveness hint; the epoch is the authority).
pub fn job_lease(id: &JobId) -> String {
    format!("{}:lease", job(id))
}

/// Which ingest process is fetching the job's `source_url`: its holder id, with a TTL it
/// renews while the fetch goes on (another process takes the import over once it lapses).
pub fn job_import_lease(id: &JobId) -> String {
    format!("{}:import", job(id))
}

/// The parts of a split job share this prefix; part `k` is `<prefix><k>` (hash).
pub fn job_part_prefix(id: &JobId) -> String {
    format!("{}:part:", job(id))
}

/// Part `k` of a split job: status, epoch, holder, outputs (hash).
pub fn job_part(id: &JobId, k: u32) -> String {
    format!("{}{k}", job_part_prefix(id))
}

/// The lease of part `k`'s current attempt, `<worker>:<epoch>` with a TTL.
pub fn job_part_lease(id: &JobId, k: u32) -> String {
    format!("{}:lease", job_part(id, k))
}

/// A tenant's jobs by creation time, all or in one status (sorted set).
pub fn tenant_index(tenant: &Tenant, status: Option<JobStatus>) -> String {
    match status {
        None => format!("{KEY_PREFIX}jobs:{tenant}"),
        Some(status) => format!("{KEY_PREFIX}jobs:{tenant}:{status}"),
    }
}

/// Every tenant's jobs in one status (sorted set), for the gauges and the reconciler.
pub fn status_index(status: JobStatus) -> String {
    format!("{KEY_PREFIX}status:{status}")
}

/// An idempotency key of a tenant; the client's key is hashed, so any string is safe here.
pub fn idempotency(tenant: &Tenant, client_key: &str) -> String {
    use sha2::Digest as _;
    format!(
        "{KEY_PREFIX}idem:{tenant}:{}",
        hex::encode(sha2::Sha256::digest(client_key.as_bytes()))
    )
}

/// Every ended job (completed, failed, canceled, expired) by when it ended (sorted set): what
/// the retention sweep deletes from, oldest first. Kept by `move_status` in `prelude.lua`.
pub fn ended_index() -> String {
    format!("{KEY_PREFIX}status:ended")
}

/// What is left of a deleted job for a while: its tenant, so a repeated `DELETE` by that
/// tenant answers as the first did while any other caller still gets `404`.
pub fn job_tombstone(id: &JobId) -> String {
    format!("{}:deleted", job(id))
}

/// Terminal events written with their state change, not yet confirmed published.
pub fn outbox() -> String {
    format!("{KEY_PREFIX}outbox")
}

/// Worker records by machine id (hash of JSON).
pub fn machines() -> String {
    format!("{KEY_PREFIX}machines")
}

/// A worker's lease, renewed while it lives.
pub fn machine_lease(id: &str) -> String {
    format!("{KEY_PREFIX}machines:{id}:lease")
}

/// Admission reservations: granted machine slots, counted against the cap until they expire
/// (sorted set by expiry).
pub fn reservations() -> String {
    format!("{KEY_PREFIX}capacity:reservations")
}

/// The machine each reservation got, once it has one (hash slot → machine id).
pub fn reserved_machines() -> String {
    format!("{KEY_PREFIX}capacity:reservations:machines")
}

/// Machines the dispatcher created or adopted, with their admission slot (hash).
pub fn pool_members() -> String {
    format!("{KEY_PREFIX}pool")
}

/// API keys created at run time: SHA-256 hex → tenant (hash).
pub fn api_keys() -> String {
    format!("{KEY_PREFIX}apikeys")
}

/// A tenant's webhook signing secret.
pub fn webhook_secret(tenant: &Tenant) -> String {
    format!("{KEY_PREFIX}webhook_secret:{tenant}")
}

/// The job-creation token bucket of one API key (by the key's hash).
pub fn create_rate(key_hash: &str) -> String {
    format!("{KEY_PREFIX}rate:create:{key_hash}")
}

/// The NATS submission token bucket of one tenant.
pub fn submit_rate(tenant: &Tenant) -> String {
    format!("{KEY_PREFIX}rate:submit:{tenant}")
}

/// Hashes of revoked API keys (a set): checked before both stored and configured keys, so a
/// revocation holds for keys in config files too and survives a key being stored again.
pub fn revoked_api_keys() -> String {
    format!("{KEY_PREFIX}apikeys:revoked")
}

/// Which process runs a singleton loop (`reconciler`, `reaper`) for now: holder id, with a TTL.
pub fn leader(role: &str) -> String {
    format!("{KEY_PREFIX}leader:{role}")
}
