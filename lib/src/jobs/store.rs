//! The Redis job store. Every change is one Lua script, so readers never see half a
//! transition and two writers can never both win.
//!
//! Keys (prefix `tcoder:`): `job:<id>` (hash), `job:<id>:history` (list, last 100 changes),
//! `jobs:<tenant>` and `jobs:<tenant>:<status>` (sorted sets of ids, lexically = by creation),
//! `status:<status>` (non-terminal jobs by last change, for sweeps and the reconciler),
//! `idem:<tenant>:<key>` (idempotency records).

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::redis::Conn;
use redis::{AsyncCommands, Script};

use super::{Job, JobId, JobOrigin, JobSpec, JobStatus, SourceObject, Tenant, now_ms};
use crate::redis::{KEY_PREFIX, RedisError};
use crate::s3::keys;

/// Every job script starts with the shared helpers (`move_status`, `record`).
pub(super) fn script(body: &str) -> Script {
    Script::new(&format!(
        "{}
{body}",
        include_str!("lua/prelude.lua")
    ))
}

static CREATE: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/create.lua")));
static TRANSITION: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/transition.lua")));
static DELETE: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/delete.lua")));

/// What `create` did.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    Created(Box<Job>),
    /// The idempotency key was used before with the same parameters: the earlier job.
    Replayed(JobId),
    /// The idempotency key was used before with different parameters.
    Conflict(JobId),
}

/// A job about to be inserted.
struct NewJob<'a> {
    id: JobId,
    upload_key: crate::s3::Key,
    status: JobStatus,
    source: Option<&'a SourceObject>,
    origin: &'a JobOrigin,
    fingerprint: String,
}

/// Why a transition did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("job not found")]
    Missing,
    #[error("job is {current}; cannot move to {to}")]
    Illegal { current: JobStatus, to: JobStatus },
    #[error(transparent)]
    Store(#[from] RedisError),
}

/// What `delete` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The record is gone; a tombstone names its tenant for a while.
    Deleted,
    /// No such record.
    Missing,
    /// The job has not ended (cancel it first).
    Active(JobStatus),
}

/// One page of a listing, newest first.
#[derive(Debug, Clone)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass back as `after` to get the next page; `None` on the last page.
    pub next_cursor: Option<JobId>,
}

/// Jobs in Redis. Cheap to clone.
#[derive(Clone)]
pub struct JobStore {
    conn: Conn,
}

impl std::fmt::Debug for JobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobStore").finish_non_exhaustive()
    }
}

pub(super) use crate::redis::keys::job as job_key;
use crate::redis::keys::{status_index, tenant_index};

impl JobStore {
    pub fn new(conn: Conn) -> JobStore {
        JobStore { conn }
    }

    pub(super) fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Creates a job awaiting its upload. With an idempotency key, a repeat with the same
    /// parameters returns the first job and one with different parameters is a conflict.
    pub async fn create(
        &self,
        tenant: &Tenant,
        spec: &JobSpec,
        idempotency_key: Option<&str>,
        idempotency_ttl_secs: u64,
    ) -> Result<CreateOutcome, RedisError> {
        let id = JobId::generate();
        let new = NewJob {
            upload_key: keys::upload_key(tenant, &id),
            id,
            status: JobStatus::AwaitingUpload,
            source: None,
            origin: &JobOrigin::Api,
            fingerprint: spec.fingerprint(),
        };
        self.insert(tenant, spec, new, idempotency_key, idempotency_ttl_secs).await
    }

    /// Creates a job for an object already in the bucket (a NATS submission, a watch folder):
    /// it starts `uploaded`, with `source` recorded. `idempotency_key` is required — the same
    /// submission or object must never make two jobs — and a repeat naming another object or
    /// asking for something else is a conflict.
    pub async fn create_for_object(
        &self,
        tenant: &Tenant,
        spec: &JobSpec,
        source: &SourceObject,
        origin: &JobOrigin,
        idempotency_key: &str,
        idempotency_ttl_secs: u64,
    ) -> Result<CreateOutcome, RedisError> {
        use sha2::Digest as _;
        let fingerprint =
            hex::encode(sha2::Sha256::digest(format!("{}\n{}", spec.fingerprint(), source.key)));
        let new = NewJob {
            id: JobId::generate(),
            upload_key: source.key.clone(),
            status: JobStatus::Uploaded,
            source: Some(source),
            origin,
            fingerprint,
        };
        self.insert(tenant, spec, new, Some(idempotency_key), idempotency_ttl_secs).await
    }

    async fn insert(
        &self,
        tenant: &Tenant,
        spec: &JobSpec,
        new: NewJob<'_>,
        idempotency_key: Option<&str>,
        idempotency_ttl_secs: u64,
    ) -> Result<CreateOutcome, RedisError> {
        let NewJob { id, upload_key, status, source, origin, fingerprint } = new;
        let idem_key = match idempotency_key {
            // Hashed, so any client string is a safe key part.
            Some(k) => crate::redis::keys::idempotency(tenant, k),
            None => crate::redis::keys::idempotency(tenant, ""),
        };
        let spec_json = serde_json::to_string(spec).expect("a spec always serializes");
        let reply: Vec<String> = self
            .conn
            .write_replicated(
                CREATE
                    .key(job_key(&id))
                    .key(tenant_index(tenant, None))
                    .key(tenant_index(tenant, Some(status)))
                    .key(status_index(status))
                    .key(&idem_key)
                    .arg(id.as_str())
                    .arg(tenant.as_str())
                    .arg(&spec_json)
                    .arg(now_ms())
                    .arg(&fingerprint)
                    .arg(idempotency_ttl_secs.max(1))
                    .arg(upload_key.as_str())
                    .arg(if idempotency_key.is_some() { "1" } else { "0" })
                    .arg(status.as_str())
                    .arg(
                        source
                            .map(|s| serde_json::to_string(s).expect("serializable"))
                            .unwrap_or_default(),
                    )
                    .arg(serde_json::to_string(origin).expect("serializable")),
            )
            .await?;
        match reply.first().map(String::as_str) {
            Some("created") => {
                let job = self
                    .get(&id)
                    .await?
                    .ok_or_else(|| RedisError::Corrupt("created job vanished".into()))?;
                Ok(CreateOutcome::Created(Box::new(job)))
            }
            Some("existing") if reply.len() == 3 => {
                let earlier = JobId::parse(&reply[1])
                    .ok_or_else(|| RedisError::Corrupt("idempotency record".into()))?;
                if reply[2] == fingerprint {
                    Ok(CreateOutcome::Replayed(earlier))
                } else {
                    Ok(CreateOutcome::Conflict(earlier))
                }
            }
            _ => Err(RedisError::Corrupt(format!("unexpected create reply {reply:?}"))),
        }
    }

    /// The job an idempotency key of `tenant` made, while its record lasts.
    pub async fn idempotent_job(
        &self,
        tenant: &Tenant,
        idempotency_key: &str,
    ) -> Result<Option<JobId>, RedisError> {
        #[derive(serde::Deserialize)]
        struct Record {
            job_id: String,
        }
        let mut conn = self.conn.clone();
        let raw: Option<String> =
            conn.get(crate::redis::keys::idempotency(tenant, idempotency_key)).await?;
        let Some(raw) = raw else { return Ok(None) };
        let record: Record = serde_json::from_str(&raw)
            .map_err(|e| RedisError::Corrupt(format!("idempotency record: {e}")))?;
        Ok(JobId::parse(&record.job_id))
    }

    pub async fn get(&self, id: &JobId) -> Result<Option<Job>, RedisError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = conn.hgetall(job_key(id)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Job::from_hash(&fields).map(Some).map_err(RedisError::Corrupt)
    }

    /// Whether the job's lease is held now (an attempt is alive somewhere).
    pub async fn lease_held(&self, id: &JobId) -> Result<bool, RedisError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("EXISTS")
            .arg(crate::redis::keys::job_lease(id))
            .query_async::<bool>(&mut conn)
            .await?)
    }

    /// When this process last reconnected to Redis after losing it (see
    /// [`crate::redis::Conn::reconnected_at`]).
    pub fn redis_reconnected_at(&self) -> Option<tokio::time::Instant> {
        self.conn.reconnected_at()
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        crate::redis::ping(&mut conn).await
    }

    /// Records how the job's webhook fared (only on a job that still exists).
    pub async fn record_webhook(
        &self,
        id: &JobId,
        status: &super::WebhookStatus,
    ) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let value = serde_json::to_string(status).expect("a webhook status serializes");
        // HSET only if the hash exists: a deleted job is not brought back as a stub.
        let _: i64 = redis::cmd("EVAL")
            .arg("if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], 'webhook', ARGV[1]) end return 0")
            .arg(1)
            .arg(job_key(id))
            .arg(value)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Records the multipart upload of a job still awaiting its upload, unless one is recorded
    /// already; returns the one that stands (`None`: the job is gone or no longer awaits).
    /// Two callers racing to start an upload both learn the same winner.
    pub async fn start_multipart(
        &self,
        id: &JobId,
        upload: &super::MultipartUpload,
    ) -> Result<Option<super::MultipartUpload>, RedisError> {
        let mut conn = self.conn.clone();
        let value = serde_json::to_string(upload).expect("a multipart upload serializes");
        let stored: Option<String> = redis::cmd("EVAL")
            .arg(
                "if redis.call('HGET', KEYS[1], 'status') ~= ARGV[2] then return false end \
                 redis.call('HSETNX', KEYS[1], 'multipart', ARGV[1]) \
                 return redis.call('HGET', KEYS[1], 'multipart')",
            )
            .arg(1)
            .arg(job_key(id))
            .arg(value)
            .arg(JobStatus::AwaitingUpload.as_str())
            .query_async(&mut conn)
            .await?;
        Ok(stored.and_then(|raw| serde_json::from_str(&raw).ok()))
    }

    /// The job if it exists and belongs to `tenant` (another tenant's job looks missing).
    pub async fn get_for_tenant(
        &self,
        tenant: &Tenant,
        id: &JobId,
    ) -> Result<Option<Job>, RedisError> {
        Ok(self.get(id).await?.filter(|job| &job.tenant == tenant))
    }

    /// A page of `tenant`'s jobs, newest first, optionally only those in `status`.
    pub async fn list(
        &self,
        tenant: &Tenant,
        status: Option<JobStatus>,
        limit: usize,
        after: Option<&JobId>,
    ) -> Result<JobPage, RedisError> {
        let limit = limit.clamp(1, 100);
        let max = after.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(tenant_index(tenant, status))
            .arg(&max)
            .arg("-")
            .arg("BYLEX")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1)
            .query_async(&mut conn)
            .await?;
        let has_more = ids.len() > limit;
        let mut jobs = Vec::with_capacity(limit);
        for raw in ids.iter().take(limit) {
            let Some(id) = JobId::parse(raw) else { continue };
            if let Some(job) = self.get(&id).await? {
                jobs.push(job);
            }
        }
        let next_cursor = if has_more { jobs.last().map(|j| j.id.clone()) } else { None };
        Ok(JobPage { jobs, next_cursor })
    }

    /// Moves a job to `to` if the state machine allows it from its current status, setting
    /// `fields` (name, value) in the same step. Returns the previous status.
    pub async fn transition(
        &self,
        id: &JobId,
        to: JobStatus,
        reason: &str,
        fields: &[(&str, String)],
    ) -> Result<JobStatus, TransitionError> {
        let allowed: Vec<&str> = to.allowed_from().iter().map(|s| s.as_str()).collect();
        let mut invocation = TRANSITION.key(job_key(id));
        invocation
            .arg(to.as_str())
            .arg(now_ms())
            .arg(allowed.join(","))
            .arg(reason)
            .arg(KEY_PREFIX);
        for (name, value) in fields {
            invocation.arg(*name).arg(value);
        }
        let reply: Vec<String> = self.conn.write_replicated(&invocation).await?;
        let status =
            |raw: &str| raw.parse::<JobStatus>().map_err(|e| RedisError::Corrupt(e).into());
        match (reply.first().map(String::as_str), reply.get(1)) {
            (Some("ok"), Some(previous)) => status(previous),
            (Some("missing"), _) => Err(TransitionError::Missing),
            (Some("illegal"), Some(current)) => {
                Err(TransitionError::Illegal { current: status(current)?, to })
            }
            _ => Err(RedisError::Corrupt(format!("unexpected transition reply {reply:?}")).into()),
        }
    }

    /// Deletes an ended job's record (see `lua/delete.lua`); a tombstone naming its tenant is
    /// kept for `tombstone_ttl_secs`.
    pub async fn delete(
        &self,
        id: &JobId,
        tombstone_ttl_secs: u64,
    ) -> Result<DeleteOutcome, RedisError> {
        let mut invocation = DELETE.key(job_key(id));
        invocation
            .key(crate::redis::keys::job_tombstone(id))
            .arg(KEY_PREFIX)
            .arg(tombstone_ttl_secs.max(1));
        let reply: Vec<String> = self.conn.write_replicated(&invocation).await?;
        match (reply.first().map(String::as_str), reply.get(1)) {
            (Some("deleted"), _) => Ok(DeleteOutcome::Deleted),
            (Some("missing"), _) => Ok(DeleteOutcome::Missing),
            (Some("active"), Some(status)) => {
                Ok(DeleteOutcome::Active(status.parse().map_err(RedisError::Corrupt)?))
            }
            _ => Err(RedisError::Corrupt(format!("unexpected delete reply {reply:?}"))),
        }
    }

    /// The tenant of a job deleted lately (its tombstone), if any.
    pub async fn deleted_tenant(&self, id: &JobId) -> Result<Option<Tenant>, RedisError> {
        let mut conn = self.conn.clone();
        let tenant: Option<String> = conn.get(crate::redis::keys::job_tombstone(id)).await?;
        Ok(tenant.as_deref().and_then(Tenant::parse))
    }

    /// Jobs that ended before `cutoff_ms` (epoch ms), oldest first: the retention sweep's.
    pub async fn ended_before(
        &self,
        cutoff_ms: u64,
        limit: usize,
    ) -> Result<Vec<JobId>, RedisError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(crate::redis::keys::ended_index())
            .arg("-inf")
            .arg(format!("({cutoff_ms}"))
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        Ok(ids.iter().filter_map(|id| JobId::parse(id)).collect())
    }

    /// Non-terminal jobs in `status`, oldest change first (for sweeps and reconciliation).
    pub async fn in_status(
        &self,
        status: JobStatus,
        limit: usize,
    ) -> Result<Vec<JobId>, RedisError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrange(status_index(status), 0, isize::try_from(limit).unwrap_or(isize::MAX) - 1)
            .await?;
        Ok(ids.iter().filter_map(|id| JobId::parse(id)).collect())
    }

    /// The job's recorded transitions, oldest first (JSON objects).
    pub async fn history(&self, id: &JobId) -> Result<Vec<serde_json::Value>, RedisError> {
        let mut conn = self.conn.clone();
        let entries: Vec<String> = conn.lrange(format!("{}:history", job_key(id)), 0, -1).await?;
        Ok(entries.iter().filter_map(|e| serde_json::from_str(e).ok()).collect())
    }
}
