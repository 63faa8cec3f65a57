//! The parts of a split job (docs/DESIGN.md, "Split titles"): each part — a video chunk, or
//! the title's audio — is claimed, renewed and committed like a job, with an epoch and a lease
//! of its own, so a part's attempts are fenced against each other whichever machine runs
//! them and whichever coordinator holds the job. Every step also checks that the job still
//! runs: a canceled or finished job hands out and accepts nothing.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use serde::{Deserialize, Serialize};

use super::{JobId, JobStore, now_ms};
use crate::engine::{EngineError, Part};
use crate::redis::RedisError;
use crate::redis::keys::{job as job_key, job_part, job_part_lease, job_part_prefix};

static PLAN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/parts_plan.lua")));
static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/parts_claim.lua")));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/parts_renew.lua")));
static COMMIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/parts_commit.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/parts_release.lua")));
static REOPEN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/parts_reopen.lua")));

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

/// The part hash's field names (the Lua scripts beside this file write the same ones).
mod field {
    pub(super) const STATUS: &str = "status";
    pub(super) const EPOCH: &str = "epoch";
    pub(super) const DEFINITION: &str = "def";
    pub(super) const RESULT: &str = "result";
    pub(super) const ERROR: &str = "error";
}

/// Where a part is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartStatus {
    /// Planned, or given back: the next claim gets it.
    Pending,
    /// An attempt holds it (its lease may have lapsed: see [`PartState::leased`]).
    Running,
    /// Committed.
    Done,
    /// Its attempts failed too often (see [`JobStore::release_part`]).
    Failed,
}

impl PartStatus {
    fn parse(status: &str) -> Option<PartStatus> {
        match status {
            "pending" => Some(PartStatus::Pending),
            "running" => Some(PartStatus::Running),
            "done" => Some(PartStatus::Done),
            "failed" => Some(PartStatus::Failed),
            _ => None,
        }
    }
}

/// What a committed part attempt made: where its files are and what they took (stored as
/// JSON on the part when it commits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartResult {
    pub prefix: crate::s3::KeyPrefix,
    pub files: Vec<crate::engine::OutputFile>,
    pub cpu_secs: f64,
    /// How long its machine was occupied (download, encode, upload).
    pub machine_secs: f64,
    pub frames: u64,
    pub worker: String,
}

/// A part as Redis has it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartState {
    pub part: u32,
    pub status: PartStatus,
    /// Its latest attempt's epoch (0 before the first claim).
    pub epoch: u64,
    /// Whether an attempt holds a live lease on it.
    pub leased: bool,
    /// What it encodes, from the plan (`None`: unreadable).
    pub definition: Option<Part>,
    /// What its committing attempt recorded.
    pub result: Option<PartResult>,
    /// The error of its last failed attempt.
    pub error: Option<EngineError>,
}

impl PartState {
    /// Committed.
    pub fn is_done(&self) -> bool {
        self.status == PartStatus::Done
    }

    /// Its attempts failed too often (see [`JobStore::release_part`]).
    pub fn is_failed(&self) -> bool {
        self.status == PartStatus::Failed
    }

    /// Attempt `epoch` is the one working on it.
    pub fn runs_at(&self, epoch: u64) -> bool {
        self.status == PartStatus::Running && self.epoch == epoch
    }

    /// Nobody works on it and it is not done: the next claim gets it.
    pub fn is_claimable(&self) -> bool {
        matches!(self.status, PartStatus::Pending | PartStatus::Running) && !self.leased
    }

    /// A part of this number in this state, as planned, with nothing recorded yet.
    pub fn new(part: u32, status: PartStatus, epoch: u64, leased: bool) -> PartState {
        PartState { part, status, epoch, leased, definition: None, result: None, error: None }
    }
}

/// A JSON field of a part hash; an unreadable one is as good as none (the code that wants it
/// reports that it is missing).
fn json_field<T: serde::de::DeserializeOwned>(
    fields: &std::collections::HashMap<String, String>,
    name: &str,
) -> Option<T> {
    fields.get(name).and_then(|raw| serde_json::from_str(raw).ok())
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
        definitions: &[Part],
    ) -> Result<Option<u32>, RedisError> {
        let mut invocation = PLAN.key(job_key(id));
        invocation.arg(epoch).arg(job_part_prefix(id));
        for definition in definitions {
            invocation.arg(serde_json::to_string(definition).expect("a part serializes"));
        }
        let reply: Vec<String> = self.conn().write_replicated(&invocation).await?;
        match (reply.first().map(String::as_str), reply.get(1)) {
            (Some("ok"), Some(n)) => {
                n.parse().map(Some).map_err(|_| RedisError::Corrupt("parts".into()))
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
        error: Option<&EngineError>,
    ) -> Result<PartRelease, RedisError> {
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
            _ => Err(RedisError::Corrupt(format!("unexpected part release reply {reply:?}"))),
        }
    }

    /// Claims part `part` of the job for `worker` with a lease of `ttl`.
    pub async fn claim_part(
        &self,
        id: &JobId,
        part: u32,
        worker: &str,
        ttl: Duration,
    ) -> Result<PartClaim, RedisError> {
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
                epoch: epoch.parse().map_err(|_| RedisError::Corrupt("part epoch".into()))?,
                worker: worker.to_owned(),
            })),
            (Some("busy"), Some(left)) => Ok(PartClaim::Busy {
                retry_in: Duration::from_millis(left.parse::<i64>().unwrap_or(1000).max(100) as u64),
            }),
            (Some("done"), _) => Ok(PartClaim::Done),
            (Some("job"), Some(status)) => Ok(PartClaim::JobNotRunning(status.to_owned())),
            (Some("missing"), _) => Ok(PartClaim::JobNotRunning("unplanned".to_owned())),
            _ => Err(RedisError::Corrupt(format!("unexpected part claim reply {reply:?}"))),
        }
    }

    /// Extends the attempt's lease by `ttl` while it is the part's current one and the job
    /// runs (see [`super::RenewOutcome`]).
    pub async fn renew_part(
        &self,
        attempt: &PartAttempt,
        ttl: Duration,
    ) -> Result<super::RenewOutcome, RedisError> {
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
            other => Err(RedisError::Corrupt(format!("unexpected part renew reply {other}"))),
        }
    }

    /// Commits the attempt with its `result` recorded on the part (where its outputs are,
    /// what it cost), if it is still the part's current attempt and the job runs.
    pub async fn commit_part(
        &self,
        attempt: &PartAttempt,
        result: &PartResult,
    ) -> Result<PartCommit, RedisError> {
        let (id, part) = (&attempt.job_id, attempt.part);
        let mut invocation = COMMIT.key(job_key(id));
        invocation.key(job_part(id, part)).key(job_part_lease(id, part));
        invocation.arg(attempt.epoch).arg(now_ms());
        let result = serde_json::to_string(result).expect("a part result serializes");
        invocation.arg(field::RESULT).arg(result);
        let reply: Vec<String> = self.conn().write_replicated(&invocation).await?;
        let number = |n: Option<&String>| n.and_then(|n| n.parse().ok()).unwrap_or(0);
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(PartCommit::Committed {
                done: number(reply.get(1)),
                parts: number(reply.get(2)),
            }),
            Some("fenced") => Ok(PartCommit::Fenced),
            _ => Err(RedisError::Corrupt(format!("unexpected part commit reply {reply:?}"))),
        }
    }

    /// Hands committed part `part` (done at `part_epoch`) out again because its outputs are
    /// gone, if the job still runs at the coordinator's `job_epoch` and the part has not
    /// moved; `true` when it did.
    pub async fn reopen_part(
        &self,
        id: &JobId,
        job_epoch: u64,
        part: u32,
        part_epoch: u64,
    ) -> Result<bool, RedisError> {
        let mut invocation = REOPEN.key(job_key(id));
        invocation.key(job_part(id, part)).arg(job_epoch).arg(part_epoch).arg(now_ms());
        let reopened: i64 = self.conn().write_replicated(&invocation).await?;
        Ok(reopened == 1)
    }

    /// Every part of the job, in order (empty when the job was never split).
    pub async fn parts(&self, id: &JobId) -> Result<Vec<PartState>, RedisError> {
        let count: Option<u32> =
            redis::cmd("HGET").arg(job_key(id)).arg("parts").query_async(&mut self.conn()).await?;
        let mut parts = Vec::new();
        for part in 0..count.unwrap_or(0) {
            parts.extend(self.part(id, part).await?);
        }
        Ok(parts)
    }

    /// Part `part` of the job, if the job has it.
    pub async fn part(&self, id: &JobId, part: u32) -> Result<Option<PartState>, RedisError> {
        let mut conn = self.conn();
        let mut fields: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(job_part(id, part)).query_async(&mut conn).await?;
        let Some(status) = fields.remove(field::STATUS) else { return Ok(None) };
        let status = PartStatus::parse(&status)
            .ok_or_else(|| RedisError::Corrupt(format!("part {part} status `{status}`")))?;
        let leased: bool =
            redis::cmd("EXISTS").arg(job_part_lease(id, part)).query_async(&mut conn).await?;
        let epoch = fields.remove(field::EPOCH).and_then(|e| e.parse().ok()).unwrap_or(0);
        Ok(Some(PartState {
            part,
            status,
            epoch,
            leased,
            definition: json_field(&fields, field::DEFINITION),
            result: json_field(&fields, field::RESULT),
            error: json_field(&fields, field::ERROR),
        }))
    }
}
