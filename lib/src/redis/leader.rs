//! Leader leases: a loop that should run in one process at a time (the dispatcher's reconciler
//! and reaper) runs a pass only while its process holds the loop's lease, so several
//! dispatchers can run side by side for availability. A holder renews the lease at every pass;
//! when it dies the lease lapses after its TTL and another dispatcher takes over. The passes
//! themselves are scripts that check the state they change, so the rare overlap (a pass longer
//! than the TTL) does no harm; the lease keeps the common case from doing the work twice
//! (e.g. two work items for one stuck job).

use std::sync::LazyLock;
use std::time::Duration;

use super::{Conn, RedisError, keys};

static HOLD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
",
    )
});

/// Takes or renews the lease on `role` for `holder` (for `ttl`); whether `holder` has it.
pub async fn hold(
    redis: &mut Conn,
    role: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool, RedisError> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let held: i32 =
        HOLD.key(keys::leader(role)).arg(holder).arg(ttl_ms).invoke_async(redis).await?;
    Ok(held == 1)
}
