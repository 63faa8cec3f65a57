//! [`Conn`]: the one Redis connection a process shares. It reconnects by itself, and behind
//! Sentinel it asks the sentinels where the primary is each time it (re)connects, so a failover
//! is a short pause for its callers rather than a process stuck on a demoted or dead node.
//!
//! redis-rs' `ConnectionManager` reconnects only to the address it was built with, which after
//! a failover is a replica (every write answered `READONLY`) or nothing at all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, RedisFuture, Value};

use super::RedisError;

/// Where connections go.
pub(super) enum Target {
    Direct(redis::Client),
    /// The primary the sentinels name at the time of connecting.
    Sentinel(SentinelClient),
}

/// A shared Redis connection (cheap to clone; clones share one socket). Implements
/// [`ConnectionLike`], so commands, pipelines and scripts run on it as on any redis-rs
/// connection.
#[derive(Clone)]
pub struct Conn {
    shared: Arc<Shared>,
}

struct Shared {
    /// The live connection and its generation; `None` after a failure until someone reconnects.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Held while connecting, so a burst of failed requests makes one reconnect, not many.
    target: tokio::sync::Mutex<Target>,
    /// When the last connection attempt failed, and why: requests that waited behind it fail
    /// with it instead of each trying (and waiting `timeout`) in turn.
    last_failure: Mutex<Option<(tokio::time::Instant, String)>>,
    generation: AtomicU64,
    /// When the connection was last opened again after a failure (not the first time).
    reconnected_at: Mutex<Option<tokio::time::Instant>>,
    config: AsyncConnectionConfig,
    timeout: Duration,
    db: i64,
    wait_replicas: u32,
    /// For messages: the URL without its password, or the sentinel addresses.
    describe: String,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("redis", &self.shared.describe).finish_non_exhaustive()
    }
}

impl Conn {
    pub(super) fn new(
        target: Target,
        timeout: Duration,
        db: i64,
        wait_replicas: u32,
        describe: String,
    ) -> Conn {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Conn {
            shared: Arc::new(Shared {
                current: Mutex::new(None),
                target: tokio::sync::Mutex::new(target),
                last_failure: Mutex::new(None),
                generation: AtomicU64::new(0),
                reconnected_at: Mutex::new(None),
                config,
                timeout,
                db,
                wait_replicas,
                describe,
            }),
        }
    }

    /// When this process last reconnected to Redis after losing it, if it ever did. After
    /// an outage of Redis itself every lease has lapsed, live attempts' too: whoever judges
    /// attempts by their leases gives them a TTL from this moment to take them back.
    pub fn reconnected_at(&self) -> Option<tokio::time::Instant> {
        *self.shared.reconnected_at.lock().expect("not poisoned")
    }

    /// Connects now (the first connection; later ones happen on demand).
    pub(super) async fn connect(&self) -> Result<(), redis::RedisError> {
        self.shared.live().await.map(|_| ())
    }

    /// Runs a write the fencing rules depend on (a claim's new epoch, a commit, a recovery, a
    /// new job) and, when `[redis] wait_replicas` is set, returns only once that many replicas
    /// have it (`WAIT`). Redis replicates asynchronously: without this a primary that dies
    /// right after answering takes the write with it, the promoted replica hands the same epoch
    /// to a second worker, and a job completes twice. `WAIT` is sent on the same socket as the
    /// write, so it covers it (a new socket would report on nothing it wrote).
    pub async fn write_replicated<T: FromRedisValue>(
        &self,
        write: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let (generation, mut connection) = self.shared.live().await?;
        let reply = write.invoke_async::<T>(&mut connection).await;
        let reply = self.shared.checked(generation, reply)?;
        let wanted = self.shared.wait_replicas;
        if wanted == 0 {
            return Ok(reply);
        }
        // Half the command timeout, so the server's answer ("only n replicas") arrives before
        // the client gives up on it.
        let patience = self.shared.timeout / 2;
        let patience_ms = u64::try_from(patience.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut wait = redis::cmd("WAIT");
        wait.arg(wanted).arg(patience_ms);
        let acked = wait.query_async(&mut connection).await;
        let acked: u32 = self.shared.checked(generation, acked)?;
        if acked < wanted {
            return Err(RedisError::NotReplicated { wanted, acked, timeout: patience });
        }
        Ok(reply)
    }
}

impl Shared {
    /// The live connection, connecting first if there is none.
    async fn live(&self) -> Result<(u64, MultiplexedConnection), redis::RedisError> {
        if let Some(live) = self.current.lock().expect("not poisoned").clone() {
            return Ok(live);
        }
        let waiting_since = tokio::time::Instant::now();
        let mut target = self.target.lock().await;
        if let Some(live) = self.current.lock().expect("not poisoned").clone() {
            return Ok(live);
        }
        if let Some((at, why)) = self.last_failure.lock().expect("not poisoned").clone()
            && at >= waiting_since
        {
            return Err(not_connected(why));
        }
        let opened = tokio::time::timeout(self.timeout, open(&mut target, &self.config)).await;
        let connection = match opened {
            Ok(Ok(connection)) => connection,
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e,
                    _ => not_connected(format!(
                        "no connection to {} within {:?}",
                        self.describe, self.timeout
                    )),
                };
                let at = tokio::time::Instant::now();
                *self.last_failure.lock().expect("not poisoned") = Some((at, error.to_string()));
                return Err(error);
            }
        };
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        if generation > 1 {
            tracing::info!(redis = %self.describe, "reconnected to Redis");
            *self.reconnected_at.lock().expect("not poisoned") = Some(tokio::time::Instant::now());
        }
        *self.current.lock().expect("not poisoned") = Some((generation, connection.clone()));
        Ok((generation, connection))
    }

    /// Passes `reply` through, dropping the connection it came from when the error says the
    /// socket is gone or the node is no longer the primary (`READONLY`, `MASTERDOWN`): the next
    /// request reconnects (and, behind Sentinel, finds the new primary).
    fn checked<T>(
        &self,
        generation: u64,
        reply: Result<T, redis::RedisError>,
    ) -> Result<T, redis::RedisError> {
        if let Err(e) = &reply {
            let demoted = matches!(
                e.kind(),
                redis::ErrorKind::Server(
                    redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown
                )
            );
            if e.is_unrecoverable_error() || e.is_timeout() || demoted {
                let mut current = self.current.lock().expect("not poisoned");
                if current.as_ref().is_some_and(|(live, _)| *live == generation) {
                    tracing::warn!(redis = %self.describe, error = %e, "dropping the Redis connection");
                    *current = None;
                }
            }
        }
        reply
    }
}

/// An I/O-kind error (callers treat it as Redis being unreachable, a pause).
fn not_connected(why: String) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::NotConnected, why))
}

async fn open(
    target: &mut Target,
    config: &AsyncConnectionConfig,
) -> Result<MultiplexedConnection, redis::RedisError> {
    let client = match target {
        Target::Direct(client) => client.clone(),
        Target::Sentinel(sentinel) => sentinel.async_get_client().await?,
    };
    client.get_multiplexed_async_connection_with_config(config).await
}

/// Commands that only read: sent again on a fresh connection when the socket they went out on
/// turned out dead, they cannot apply twice.
const READS: &[&[u8]] = &[
    b"GET",
    b"MGET",
    b"HGET",
    b"HMGET",
    b"HGETALL",
    b"HEXISTS",
    b"HLEN",
    b"EXISTS",
    b"TTL",
    b"PTTL",
    b"TYPE",
    b"STRLEN",
    b"SISMEMBER",
    b"SMEMBERS",
    b"SCARD",
    b"LRANGE",
    b"LLEN",
    b"ZRANGE",
    b"ZRANGEBYSCORE",
    b"ZSCORE",
    b"ZCARD",
    b"ZCOUNT",
    b"SCAN",
    b"PING",
    b"INFO",
];

fn is_read(cmd: &Cmd) -> bool {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => READS.iter().any(|read| name.eq_ignore_ascii_case(read)),
        _ => false,
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut connection) = self.shared.live().await?;
            let reply = connection.req_packed_command(cmd).await;
            match self.shared.checked(generation, reply) {
                // After a restart of Redis every socket is dead and the first request on each
                // finds out (the API answered its first request 503). A read is sent again,
                // once, on a fresh connection.
                Err(e) if e.is_connection_dropped() && !e.is_timeout() && is_read(cmd) => {
                    let (generation, mut connection) = self.shared.live().await?;
                    let reply = connection.req_packed_command(cmd).await;
                    self.shared.checked(generation, reply)
                }
                reply => reply,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut connection) = self.shared.live().await?;
            let reply = connection.req_packed_commands(pipeline, offset, count).await;
            self.shared.checked(generation, reply)
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.db
    }
}
