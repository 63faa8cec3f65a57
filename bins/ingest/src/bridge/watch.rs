//! Watch-folder rules as the bridge sees them: read from Redis for every object outside
//! `uploads/` (one HGETALL, well under a millisecond), so `tcoder watch add` takes effect
//! with the next object.

use tcoder::redis::RedisError;
use tcoder::watch::{self, WatchRule};

#[derive(Clone)]
pub(crate) struct WatchRules {
    redis: tcoder::redis::Conn,
}

impl std::fmt::Debug for WatchRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchRules").finish_non_exhaustive()
    }
}

impl WatchRules {
    pub(crate) fn new(redis: tcoder::redis::Conn) -> WatchRules {
        WatchRules { redis }
    }

    /// The rules now.
    pub(crate) async fn current(&self) -> Result<Vec<WatchRule>, RedisError> {
        watch::list(&mut self.redis.clone()).await
    }

    /// Marks an object version (`<bucket>/<key>/<etag>`) as rejected for the dedup window.
    pub(crate) async fn remember_rejected(&self, version: &str) -> Result<(), RedisError> {
        watch::remember_rejected(&mut self.redis.clone(), version).await
    }

    /// Whether the object version was rejected before.
    pub(crate) async fn was_rejected(&self, version: &str) -> Result<bool, RedisError> {
        watch::was_rejected(&mut self.redis.clone(), version).await
    }

    /// Writes the configured rules (`[[ingest.watch]]`) to Redis.
    pub(crate) async fn install(&self, rules: &[WatchRule]) -> Result<(), RedisError> {
        let mut redis = self.redis.clone();
        for rule in rules {
            watch::put(&mut redis, rule).await?;
        }
        Ok(())
    }
}
