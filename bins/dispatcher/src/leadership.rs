//! Which dispatcher runs the singleton loops (reconciler, reaper) when several run side by side
//! (see `tcoder::redis::leader`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::IntGauge;
use tcoder::redis::Conn;

/// This dispatcher's claim to one loop. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Leadership {
    pub redis: Conn,
    pub role: &'static str,
    /// This dispatcher process (unique per start).
    pub holder: Arc<str>,
    /// How long the lease outlives a dispatcher that stops renewing it.
    pub ttl: Duration,
    pub gauge: IntGauge,
    pub held: Arc<AtomicBool>,
}

impl Leadership {
    pub(crate) fn new(
        redis: Conn,
        role: &'static str,
        holder: Arc<str>,
        ttl: Duration,
        gauge: IntGauge,
    ) -> Leadership {
        Leadership { redis, role, holder, ttl, gauge, held: Arc::default() }
    }

    /// Takes or renews the lease; whether this dispatcher should run the loop's pass now. A
    /// Redis error answers no: the pass would need Redis anyway.
    pub(crate) async fn hold(&self) -> bool {
        let mut redis = self.redis.clone();
        let held = match tcoder::redis::leader::hold(&mut redis, self.role, &self.holder, self.ttl)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                tracing::debug!(role = self.role, error = %e, "cannot renew the leader lease");
                false
            }
        };
        if self.held.swap(held, Ordering::Relaxed) != held {
            tracing::info!(role = self.role, holder = %self.holder, held, "leadership changed");
        }
        self.gauge.set(i64::from(held));
        held
    }
}

/// An id for this dispatcher process: unique per start, readable in logs.
pub(crate) fn holder_id() -> Arc<str> {
    format!("dispatcher-{}-{}", std::process::id(), uuid::Uuid::now_v7().simple()).into()
}
