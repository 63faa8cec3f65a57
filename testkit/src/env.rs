//! All real servers a tcoder service needs, started together.

use crate::{NatsServer, RedisServer, S3Server};

/// nats-server + redis-server + an S3 endpoint, each on free loopback ports. Dropping it stops
/// them all.
#[derive(Debug)]
pub struct TestEnv {
    pub nats: NatsServer,
    pub redis: RedisServer,
    pub s3: S3Server,
    /// The workers' scratch folder (removed with the environment): a worker started with
    /// `service_env` never writes into the source tree.
    pub scratch: tempfile::TempDir,
}

impl TestEnv {
    pub fn start() -> TestEnv {
        Self::start_with(RedisServer::start)
    }

    /// As [`TestEnv::start`], with Redis persisting every write (AOF, `appendfsync always`), as
    /// production runs it: it can be killed and started again without losing jobs.
    pub fn start_persistent() -> TestEnv {
        Self::start_with(RedisServer::start_persistent)
    }

    fn start_with(start_redis: fn() -> RedisServer) -> TestEnv {
        let (nats, redis) = std::thread::scope(|scope| {
            let nats = scope.spawn(NatsServer::start);
            let redis = scope.spawn(start_redis);
            (nats.join().expect("nats start"), redis.join().expect("redis start"))
        });
        let scratch = tempfile::tempdir().expect("scratch folder");
        TestEnv { nats, redis, s3: S3Server::start(), scratch }
    }

    /// `TCODER__*` variables that run a tcoder service against these servers, with its own
    /// ports picked freely and the embedded object store off.
    pub fn service_env(&self) -> Vec<(String, String)> {
        [
            ("TCODER__ADMIN__BIND", "127.0.0.1:0".to_owned()),
            ("TCODER__INGEST__HTTP_BIND", "127.0.0.1:0".to_owned()),
            ("TCODER__INGEST__LOCAL_STORE__ENABLED", "false".to_owned()),
            ("TCODER__NATS__URL", self.nats.url()),
            ("TCODER__REDIS__URL", self.redis.url()),
            ("TCODER__S3__ENDPOINT", self.s3.endpoint()),
            ("TCODER__S3__BUCKET", self.s3.bucket().to_owned()),
            ("TCODER__S3__ACCESS_KEY_ID", self.s3.access_key_id().to_owned()),
            ("TCODER__S3__SECRET_ACCESS_KEY", self.s3.secret_access_key().to_owned()),
            ("TCODER__DISPATCHER__LOCAL_WORKER_LOGS", crate::test_log().to_string()),
            ("TCODER__WORKER__SCRATCH_DIR", self.scratch.path().display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}
