//! Attempts: how a worker claims a job, keeps it, and ends it — each step a Lua script checked
//! against the job's fencing epoch. JetStream accepts a late ack from a worker whose AckWait
//! has expired, so the broker cannot tell a stale worker from the current one; Redis can: only
//! the holder of the current epoch may renew, commit or fail (docs/DESIGN.md, "Leases and epochs").
//!
//! The terminal event is written to an outbox (`tcoder:outbox`) in the same script as the
//! state, and published afterwards with its id as `Nats-Msg-Id`; a crash in between is healed
//! by the outbox relay, and the broker's dedup keeps it to one event.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, Script};

use super::store::{job_key, script};
use super::{JobError, JobId, JobStatus, JobStore, now_ms};
use crate::events::JobEvent;
use crate::redis::{KEY_PREFIX, RedisError};

static CLAIM: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/claim.lua")));
static RENEW: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/renew.lua")));
static FINISH: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/finish.lua")));
static PLAYABLE: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/playable.lua")));
static RECOVER: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/recover.lua")));
static ADMIT: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/admit.lua")));

/// What admission did with an uploaded job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Queued; this is its `queued_count`.
    Admitted(u64),
    /// The tenant has this many jobs queued or running: it waits.
    Capped(u64),
    /// Not `uploaded` (any more).
    Skipped,
}

/// Recovery moves (see `lua/recover.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// running → queued, when its lease lapsed and its message is gone.
    Lapsed,
    /// failed → queued (dead-letter replay).
    Replay,
    /// queued → queued, when its work item was lost.
    Bump,
}

use crate::redis::keys::job_lease as lease_key;
pub use crate::redis::keys::outbox as outbox_key;

/// One claimed attempt: the fencing token every later step is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub job_id: JobId,
    pub epoch: u64,
    pub worker: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed(Attempt),
    /// Another worker holds a live lease; try again after this long.
    Busy {
        retry_in: Duration,
    },
    /// The job already ended (completed, failed, canceled): drop the message.
    Done(JobStatus),
    /// The job is not queued (yet): a message that arrived out of order.
    NotReady(JobStatus),
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    Renewed,
    /// The job was canceled: stop the engine.
    Canceled,
    /// A newer attempt owns the job (or it ended): stop, and do not ack.
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishOutcome {
    Finished,
    /// Not the current attempt any more; nothing was written.
    Fenced,
}

/// What marking a job playable did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playable {
    Marked,
    /// It was playable already (an earlier coordinator marked it).
    Already,
    /// Not the current attempt, or the job no longer runs; nothing was written.
    Fenced,
}

impl JobStore {
    /// Claims `id` for `worker` with a lease of `ttl`. A running job whose lease lapsed (its
    /// worker died) is taken over — but not within 1.5 TTL of this process reconnecting to
    /// Redis: after an outage of Redis every lease has lapsed, live attempts' too, and they
    /// take theirs back with their next renewal (the claim answers `Busy` meanwhile).
    pub async fn claim(
        &self,
        id: &JobId,
        worker: &str,
        ttl: Duration,
    ) -> Result<ClaimOutcome, RedisError> {
        // A request first, so a reconnect it needs is known before deciding.
        self.ping().await?;
        let takeover = self.redis_reconnected_at().is_none_or(|at| at.elapsed() >= ttl * 3 / 2);
        let reply: Vec<String> = self
            .conn()
            .write_replicated(
                CLAIM
                    .key(job_key(id))
                    .key(lease_key(id))
                    .arg(worker)
                    .arg(ttl_ms(ttl))
                    .arg(now_ms())
                    .arg(KEY_PREFIX)
                    .arg(if takeover { "1" } else { "0" }),
            )
            .await?;
        let status = |raw: &str| raw.parse::<JobStatus>().map_err(RedisError::Corrupt);
        match (reply.first().map(String::as_str), reply.get(1).map(String::as_str)) {
            (Some("claimed"), Some(epoch)) => Ok(ClaimOutcome::Claimed(Attempt {
                job_id: id.clone(),
                epoch: epoch.parse().map_err(|_| RedisError::Corrupt("epoch".into()))?,
                worker: worker.to_owned(),
            })),
            (Some("busy"), Some(ms)) => Ok(ClaimOutcome::Busy {
                retry_in: Duration::from_millis(ms.parse::<i64>().unwrap_or(1000).max(100) as u64),
            }),
            (Some("done"), Some(raw)) => Ok(ClaimOutcome::Done(status(raw)?)),
            (Some("not_ready"), Some(raw)) => Ok(ClaimOutcome::NotReady(status(raw)?)),
            (Some("missing"), _) => Ok(ClaimOutcome::Missing),
            _ => Err(RedisError::Corrupt(format!("unexpected claim reply {reply:?}"))),
        }
    }

    /// Extends the lease of `attempt` by `ttl`, if it is still the current one.
    pub async fn renew(
        &self,
        attempt: &Attempt,
        ttl: Duration,
    ) -> Result<RenewOutcome, RedisError> {
        let mut conn = self.conn();
        let reply: String = RENEW
            .key(job_key(&attempt.job_id))
            .key(lease_key(&attempt.job_id))
            .arg(&attempt.worker)
            .arg(attempt.epoch)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut conn)
            .await?;
        match reply.as_str() {
            "ok" => Ok(RenewOutcome::Renewed),
            "canceled" => Ok(RenewOutcome::Canceled),
            "lost" => Ok(RenewOutcome::Lost),
            other => Err(RedisError::Corrupt(format!("unexpected renew reply {other}"))),
        }
    }

    /// Commits: the job is completed with `outputs` (the manifest), and `event` goes to the
    /// outbox — only if `attempt` is still current. With `playable` (the job has an HLS set),
    /// a job not yet playable becomes so at the same moment, and that event goes first.
    pub async fn complete(
        &self,
        attempt: &Attempt,
        outputs: &super::JobResult,
        event: &JobEvent,
        playable: Option<&JobEvent>,
    ) -> Result<FinishOutcome, RedisError> {
        let outputs = serde_json::to_string(outputs).expect("a result serializes");
        let fields = [("outputs", outputs), ("completed_at", now_ms().to_string())];
        let events = (Some(event), playable);
        self.finish(attempt, JobStatus::Completed, "completed", events, &fields).await
    }

    /// Records that the job `attempt` runs is playable (its first chunk and audio are in),
    /// once; `event` (its `playable` event) goes to the outbox in the same step.
    pub async fn mark_playable(
        &self,
        attempt: &Attempt,
        event: &JobEvent,
    ) -> Result<Playable, RedisError> {
        let event = serde_json::to_string(event).expect("serializable");
        let mut invocation = PLAYABLE.key(job_key(&attempt.job_id));
        invocation.key(outbox_key()).arg(attempt.epoch).arg(now_ms()).arg(event);
        let reply: String = self.conn().write_replicated(&invocation).await?;
        match reply.as_str() {
            "ok" => Ok(Playable::Marked),
            "already" => Ok(Playable::Already),
            "fenced" => Ok(Playable::Fenced),
            other => Err(RedisError::Corrupt(format!("unexpected playable reply {other}"))),
        }
    }

    /// Fails the job permanently with `error` (and `event` to the outbox) if still current.
    pub async fn fail(
        &self,
        attempt: &Attempt,
        error: &JobError,
        event: &JobEvent,
    ) -> Result<FinishOutcome, RedisError> {
        let recorded = serde_json::to_string(error).expect("serializable");
        let events = (Some(event), None);
        self.finish(attempt, JobStatus::Failed, &error.code, events, &[("error", recorded)]).await
    }

    /// Puts the job back to `queued` for another attempt (after a retryable failure or when
    /// the worker shuts down), if still current.
    pub async fn requeue(
        &self,
        attempt: &Attempt,
        reason: &str,
    ) -> Result<FinishOutcome, RedisError> {
        self.finish(attempt, JobStatus::Queued, reason, (None, None), &[]).await
    }

    async fn finish(
        &self,
        attempt: &Attempt,
        to: JobStatus,
        reason: &str,
        (event, playable): (Option<&JobEvent>, Option<&JobEvent>),
        fields: &[(&str, String)],
    ) -> Result<FinishOutcome, RedisError> {
        let json = |e: Option<&JobEvent>| {
            e.map(|e| serde_json::to_string(e).expect("serializable")).unwrap_or_default()
        };
        let (event, playable) = (json(event), json(playable));
        let mut invocation = FINISH.key(job_key(&attempt.job_id));
        invocation.key(lease_key(&attempt.job_id)).key(outbox_key());
        invocation
            .arg(attempt.epoch)
            .arg(to.as_str())
            .arg(now_ms())
            .arg(KEY_PREFIX)
            .arg(reason)
            .arg(&event)
            .arg(&playable);
        for (name, value) in fields {
            invocation.arg(*name).arg(value);
        }
        let reply: Vec<String> = self.conn().write_replicated(&invocation).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(FinishOutcome::Finished),
            Some("fenced") => Ok(FinishOutcome::Fenced),
            _ => Err(RedisError::Corrupt(format!("unexpected finish reply {reply:?}"))),
        }
    }

    /// Applies a recovery move; `Some(queued_count)` when it happened.
    pub async fn recover(&self, id: &JobId, recovery: Recovery) -> Result<Option<u64>, RedisError> {
        let mode = match recovery {
            Recovery::Lapsed => "lapsed",
            Recovery::Replay => "replay",
            Recovery::Bump => "bump",
        };
        let reply: Vec<String> = self
            .conn()
            .write_replicated(
                RECOVER.key(job_key(id)).key(lease_key(id)).arg(mode).arg(now_ms()).arg(KEY_PREFIX),
            )
            .await?;
        match (reply.first().map(String::as_str), reply.get(1)) {
            (Some("ok"), Some(n)) => Ok(n.parse().ok()),
            _ => Ok(None),
        }
    }

    /// Admits an uploaded job to `queued` unless its tenant is at `cap` jobs in flight.
    pub async fn admit(&self, id: &JobId, cap: u32) -> Result<Admission, RedisError> {
        let mut conn = self.conn();
        let reply: Vec<String> = ADMIT
            .key(job_key(id))
            .arg(cap)
            .arg(now_ms())
            .arg(KEY_PREFIX)
            .invoke_async(&mut conn)
            .await?;
        let number = |raw: &String| raw.parse::<u64>().unwrap_or(0);
        match (reply.first().map(String::as_str), reply.get(1)) {
            (Some("ok"), Some(n)) => Ok(Admission::Admitted(number(n))),
            (Some("capped"), Some(n)) => Ok(Admission::Capped(number(n))),
            _ => Ok(Admission::Skipped),
        }
    }

    /// Whether a worker holds a live lease on the job.
    pub async fn lease_alive(&self, id: &JobId) -> Result<bool, RedisError> {
        let mut conn = self.conn();
        Ok(conn.exists(lease_key(id)).await?)
    }

    /// Outbox entries not yet confirmed published (oldest first), raw and parsed.
    pub async fn outbox(&self, limit: usize) -> Result<Vec<(String, JobEvent)>, RedisError> {
        let mut conn = self.conn();
        let raw: Vec<String> =
            conn.lrange(outbox_key(), 0, isize::try_from(limit).unwrap_or(100) - 1).await?;
        Ok(raw.into_iter().filter_map(|r| serde_json::from_str(&r).ok().map(|e| (r, e))).collect())
    }

    /// Removes an outbox entry once its event is on the stream.
    pub async fn outbox_done(&self, raw: &str) -> Result<(), RedisError> {
        let mut conn = self.conn();
        let _: i64 = conn.lrem(outbox_key(), 1, raw).await?;
        Ok(())
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}
