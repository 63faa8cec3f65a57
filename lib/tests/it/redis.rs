use tcoder::redis::{KEY_PREFIX, connect, ping};
use testkit::TestEnv;

use crate::helpers::settings;

/// The shape every tcoder state change takes: read-check-write in one script, atomically.
const FENCED_SET: &str = r"
local current = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if tonumber(ARGV[1]) < current then return 0 end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'value', ARGV[2])
return 1
";

#[tokio::test]
async fn lua_scripts_run_atomically_on_the_shared_connection() {
    let env = TestEnv::start();
    let mut conn = connect(&settings(&env).redis).await.unwrap();
    ping(&mut conn).await.unwrap();
    let script = redis::Script::new(FENCED_SET);
    let key = format!("{}test:fenced", KEY_PREFIX);

    let newer: i32 =
        script.key(&key).arg(2).arg("from-epoch-2").invoke_async(&mut conn).await.unwrap();
    let stale: i32 =
        script.key(&key).arg(1).arg("from-epoch-1").invoke_async(&mut conn).await.unwrap();

    assert_eq!((newer, stale), (1, 0));
    let value: String =
        redis::cmd("HGET").arg(&key).arg("value").query_async(&mut conn).await.unwrap();
    assert_eq!(value, "from-epoch-2");
}
