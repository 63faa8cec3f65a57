//! Watch-folder rules as the bridge sees them: read from Redis, kept for a moment so a burst
//! of notifications costs one read, and fresh enough that `tcoder watch add` takes effect
//! within seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tcoder::redis::StoreError;
use tcoder::watch::{self, WatchRule};
use tokio::sync::Mutex;

/// How long a read of the rules is used.
const FRESH_FOR: Duration = Duration::from_secs(2);

/// The rules and when they were read.
type Cached = Option<(Instant, Arc<Vec<WatchRule>>)>;

#[derive(Clone)]
pub(crate) struct WatchRules {
    redis: redis::aio::ConnectionManager,
    cached: Arc<Mutex<Cached>>,
}

impl std::fmt::Debug for WatchRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchRules").finish_non_exhaustive()
    }
}

impl WatchRules {
    pub(crate) fn new(redis: redis::aio::ConnectionManager) -> WatchRules {
        WatchRules { redis, cached: Arc::default() }
    }

    /// The rules now (at most [`FRESH_FOR`] old).
    pub(crate) async fn current(&self) -> Result<Arc<Vec<WatchRule>>, StoreError> {
        let mut cached = self.cached.lock().await;
        if let Some((at, rules)) = cached.as_ref()
            && at.elapsed() < FRESH_FOR
        {
            return Ok(rules.clone());
        }
        let rules = Arc::new(watch::list(&mut self.redis.clone()).await?);
        *cached = Some((Instant::now(), rules.clone()));
        Ok(rules)
    }

    /// Marks an object version (`<bucket>/<key>/<etag>`) as rejected for the dedup window.
    pub(crate) async fn remember_rejected(&self, version: &str) -> Result<(), StoreError> {
        watch::remember_rejected(&mut self.redis.clone(), version).await
    }

    /// Whether the object version was rejected before.
    pub(crate) async fn was_rejected(&self, version: &str) -> Result<bool, StoreError> {
        watch::was_rejected(&mut self.redis.clone(), version).await
    }

    /// Writes the configured rules (`[[ingest.watch]]`) to Redis.
    pub(crate) async fn install(&self, rules: &[WatchRule]) -> Result<(), StoreError> {
        let mut redis = self.redis.clone();
        for rule in rules {
            watch::put(&mut redis, rule).await?;
        }
        *self.cached.lock().await = None;
        Ok(())
    }
}
