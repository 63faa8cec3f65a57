//! The parts of a split job (docs/DESIGN.md, "Split titles"): each part — a video chunk, or
//! the title's audio — is claimed, renewed and committed like a job, with an epoch and a lease
//! of its own, so a part's attempts are fenced against each other whichever machine runs
//! them and whichever coordinator holds the job. Every step also checks that the job still
//! runs: a canceled or finished job hands out and accepts nothing.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{JobId, JobStore, now_ms};
use crate::redis::StoreError;
use crate::redis::keys::{job as job_key, job_part, job_part_lease, job_part_prefix};

static PLAN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/parts_plan.lua")));
static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/parts_claim.lua")));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/parts_renew.lua")));
static COMMIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/parts_commit.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/parts_release.lua")));

/// One claimed attempt at a part: the fencing token its later steps are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartAttempt {
    pub job_id: JobId,
    pub part: u32,
    pub epoch: u64,
    pub worker: String,
}

/// What a claim of a part found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartClaim {
    Claimed(PartAttempt),
    /// Another attempt holds a live lease on the part; look again after this long.
    Busy {
        retry_in: Duration,
    },
    /// Already committed.
    Done,
    /// The job is not running (canceled, finished, or gone): nothing to do.
    JobNotRunning(String),
}

/// What a part commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartCommit {
    /// Committed; this many of the job's parts are in.
    Committed { done: u32, parts: u32 },
    /// Not the part's current attempt, or the job no longer runs: nothing was written.
    Fenced,
}

/// What a part release did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartRelease {
    /// The part waits for its next claim.
    Pending,
    /// Its attempts failed too often: the job fails (or is retried) with its error.
    Failed,
    /// Not the part's current attempt: nothing was written.
    Fenced,
}

/// A part as Redis has it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartState {
    pub part: u32,
    /// `pending`, `running`, `done` or `failed`.
    pub status: String,
    pub epoch: u64,
    /// Whether an attempt holds a live lease on it.
    pub leased: bool,
    /// Its definition (from the plan), the error of its last failed attempt, and what its
    /// committing attempt recorded (e.g. where its outputs are).
    pub fields: std::collections::HashMap<String, String>,
}

impl PartState {
    /// Committed.
    pub fn is_done(&self) -> bool {
        self.status == "done"
    }

    /// Its attempts failed too often (see [`JobStore::release_part`]).
    pub fn is_failed(&self) -> bool {
        self.status == "failed"
    }

    /// Attempt `epoch` is the one working on it.
    pub fn runs_at(&self, epoch: u64) -> bool {
        self.status == "running" && self.epoch == epoch
    }

    /// Nobody works on it and it is not done: the next claim gets it.
    pub fn is_claimable(&self) -> bool {
        (self.status == "pending" || self.status == "running") && !self.leased
    }

    /// The error its last failed attempt recorded.
    pub fn error(&self) -> Option<crate::engine::EngineError> {
        self.fields.get("error").and_then(|e| serde_json::from_str(e).ok())
    }
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl JobStore {
    /// Records the job's parts (claimed by its coordinator at `epoch`), one per definition; a
    /// job planned before keeps its plan (and its failed parts get another round). Returns the
    /// job's number of parts, or `None` when `epoch` is no longer the job's (another
    /// coordinator took over).
    pub async fn plan_parts(
        &self,
        id: &JobId,
        epoch: u64,
        definitions: &[String],
    ) -> Result<Option<u32>, StoreError> {
        let mut invocation = PLAN.key(job_key(id));
        invocation.arg(epoch).arg(job_part_prefix(id));
        for definition in definitions {
            invocation.arg(definition);
        }
        let reply: Vec<String> = self.conn().write_replicated(&invocation).await?;
        match (reply.first().map(String::as_str), reply.get(1)) {
            (Some("ok"), Some(n)) => {
                n.parse().map(Some).map_err(|_| StoreError::Corrupt("parts".into()))
            }
            _ => Ok(None),
        }
    }

    /// Ends `attempt` without a commit (`failed` or given back at shutdown) while it is the
    /// part's current one: the part is claimable again, or failed once `max_failures` of its
    /// attempts failed. `error` is recorded on the part.
    pub async fn release_part(
        &self,
        attempt: &PartAttempt,
        failed: bool,
        max_failures: u32,
        error: Option<&crate::engine::EngineError>,
    ) -> Result<PartRelease, StoreError> {
        let (id, part) = (&attempt.job_id, attempt.part);
        let error = error.map(|e| serde_json::to_string(e).expect("an error serializes"));
        let reply: Vec<String> = self
            .conn()
            .write_replicated(
                RELEASE
                    .key(job_part(id, part))
                    .key(job_part_lease(id, part))
                    .arg(attempt.epoch)
                    .arg(now_ms())
                    .arg(if failed { "1" } else { "0" })
                    .arg(max_failures.max(1))
                    .arg(error.unwrap_or_default()),
            )
            .await?;
        match reply.first().map(String::as_str) {
            Some("pending") => Ok(PartRelease::Pending),
            Some("failed") => Ok(PartRelease::Failed),
            Some("fenced") => Ok(PartRelease::Fenced),
            _ => Err(StoreError::Corrupt(format!("unexpected part release reply {reply:?}"))),
        }
    }

    /// Claims part `part` of the job for `worker` with a lease of `ttl`.
    pub async fn claim_part(
        &self,
        id: &JobId,
        part: u32,
        worker: &str,
        ttl: Duration,
    ) -> Result<PartClaim, StoreError> {
        let reply: Vec<String> = self
            .conn()
            .write_replicated(
                CLAIM
                    .key(job_key(id))
                    .key(job_part(id, part))
                    .key(job_part_lease(id, part))
                    .arg(worker)
                    .arg(ms(ttl))
                    .arg(now_ms()),
            )
            .await?;
        match (reply.first().map(String::as_str), reply.get(1).map(String::as_str)) {
            (Some("claimed"), Some(epoch)) => Ok(PartClaim::Claimed(PartAttempt {
                job_id: id.clone(),
                part,
                epoch: epoch.parse().map_err(|_| StoreError::Corrupt("part epoch".into()))?,
                worker: worker.to_owned(),
            })),
            (Some("busy"), Some(left)) => Ok(PartClaim::Busy {
                retry_in: Duration::from_millis(left.parse::<i64>().unwrap_or(1000).max(100) as u64),
            }),
            (Some("done"), _) => Ok(PartClaim::Done),
            (Some("job"), Some(status)) => Ok(PartClaim::JobNotRunning(status.to_owned())),
            (Some("missing"), _) => Ok(PartClaim::JobNotRunning("unplanned".to_owned())),
            _ => Err(StoreError::Corrupt(format!("unexpected part claim reply {reply:?}"))),
        }
    }

    /// Extends the attempt's lease by `ttl` while it is the part's current one and the job
    /// runs (see [`super::RenewOutcome`]).
    pub async fn renew_part(
        &self,
        attempt: &PartAttempt,
        ttl: Duration,
    ) -> Result<super::RenewOutcome, StoreError> {
        let (id, part) = (&attempt.job_id, attempt.part);
        let reply: String = RENEW
            .key(job_key(id))
            .key(job_part(id, part))
            .key(job_part_lease(id, part))
            .arg(&attempt.worker)
            .arg(attempt.epoch)
            .arg(ms(ttl))
            .invoke_async(&mut self.conn())
            .await?;
        match reply.as_str() {
            "ok" => Ok(super::RenewOutcome::Renewed),
            "canceled" => Ok(super::RenewOutcome::Canceled),
            "lost" => Ok(super::RenewOutcome::Lost),
            other => Err(StoreError::Corrupt(format!("unexpected part renew reply {other}"))),
        }
    }

    /// Commits the attempt with `fields` recorded on the part (where its outputs are, what
    /// it cost), if it is still the part's current attempt and the job runs.
    pub async fn commit_part(
        &self,
        attempt: &PartAttempt,
        fields: &[(&str, String)],
    ) -> Result<PartCommit, StoreError> {
        let (id, part) = (&attempt.job_id, attempt.part);
        let mut invocation = COMMIT.key(job_key(id));
        invocation.key(job_part(id, part)).key(job_part_lease(id, part));
        invocation.arg(attempt.epoch).arg(now_ms());
        for (name, value) in fields {
            invocation.arg(*name).arg(value);
        }
        let reply: Vec<String> = self.conn().write_replicated(&invocation).await?;
        let number = |n: Option<&String>| n.and_then(|n| n.parse().ok()).unwrap_or(0);
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(PartCommit::Committed {
                done: number(reply.get(1)),
                parts: number(reply.get(2)),
            }),
            Some("fenced") => Ok(PartCommit::Fenced),
            _ => Err(StoreError::Corrupt(format!("unexpected part commit reply {reply:?}"))),
        }
    }

    /// Every part of the job, in order (empty when the job was never split).
    pub async fn parts(&self, id: &JobId) -> Result<Vec<PartState>, StoreError> {
        let count: Option<u32> =
            redis::cmd("HGET").arg(job_key(id)).arg("parts").query_async(&mut self.conn()).await?;
        let mut parts = Vec::new();
        for part in 0..count.unwrap_or(0) {
            parts.extend(self.part(id, part).await?);
        }
        Ok(parts)
    }

    /// Part `part` of the job, if the job has it.
    pub async fn part(&self, id: &JobId, part: u32) -> Result<Option<PartState>, StoreError> {
        let mut conn = self.conn();
        let mut fields: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(job_part(id, part)).query_async(&mut conn).await?;
        let Some(status) = fields.remove("status") else { return Ok(None) };
        let leased: bool =
            redis::cmd("EXISTS").arg(job_part_lease(id, part)).query_async(&mut conn).await?;
        let epoch = fields.remove("epoch").and_then(|e| e.parse().ok()).unwrap_or(0);
        Ok(Some(PartState { part, status, epoch, leased, fields }))
    }
}
