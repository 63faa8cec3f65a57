//! The three external systems every service talks to, connected once at start, and the
//! `/readyz` checks that watch them afterwards.

use std::time::Duration;

use crate::redis::Conn;
use async_nats::connection::State as NatsState;

use crate::admin::ReadinessCheck;
use crate::config::Settings;
use crate::events;

/// How long a worker waits at start for the JOBS stream the dispatcher creates.
const TOPOLOGY_PATIENCE: Duration = Duration::from_secs(60);

/// Live clients for NATS (with JetStream), Redis and S3. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Connections {
    pub nats: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub redis: Conn,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
}

impl Connections {
    /// Connects to everything and creates the JetStream streams and consumers (idempotent) —
    /// except as a worker, whose NATS user may not: it waits for them instead.
    pub async fn establish(
        settings: &Settings,
        service: crate::config::Service,
    ) -> anyhow::Result<Connections> {
        let client_name = format!("tcoder-{}", service.name());
        let nats = events::connect(&settings.nats, &client_name).await?;
        let jetstream = async_nats::jetstream::new(nats.clone());
        if service == crate::config::Service::Worker {
            // Normally the dispatcher that started this worker made the topology. Where it is
            // missing and the worker's user may create it (a deployment without per-role
            // users), it does; else it waits for the dispatcher's.
            let present = events::await_jobs_topology(&jetstream, Duration::ZERO).await.is_ok();
            let made = || events::ensure_topology_without_updates(&jetstream, &settings.nats);
            if !present && let Err(e) = made().await {
                tracing::info!(error = %e, "waiting for the dispatcher to create the JOBS stream");
                events::await_jobs_topology(&jetstream, TOPOLOGY_PATIENCE).await?;
            }
        } else if service == crate::config::Service::Ingest {
            events::ensure_topology_without_updates(&jetstream, &settings.nats).await?;
        } else {
            events::ensure_topology(&jetstream, &settings.nats).await?;
        }
        let redis = crate::redis::connect(&settings.redis).await?;
        let s3 = crate::s3::client(&settings.s3).await;
        Ok(Connections { nats, jetstream, redis, s3, bucket: settings.s3.bucket.clone() })
    }

    /// `/readyz` checks for NATS (connected), Redis (`PING`) and S3 (`HeadBucket`).
    pub fn readiness_checks(&self) -> Vec<ReadinessCheck> {
        let nats = self.nats.clone();
        let redis = self.redis.clone();
        let s3 = self.s3.clone();
        let bucket = self.bucket.clone();
        vec![
            ReadinessCheck::new("nats", move || {
                let state = nats.connection_state();
                async move {
                    match state {
                        NatsState::Connected => Ok(()),
                        other => Err(format!("not connected ({other})")),
                    }
                }
            }),
            ReadinessCheck::new("redis", move || {
                let mut redis = redis.clone();
                async move { crate::redis::ping(&mut redis).await.map_err(|e| e.to_string()) }
            }),
            ReadinessCheck::new("s3", move || {
                let s3 = s3.clone();
                let bucket = bucket.clone();
                async move { crate::s3::check_bucket(&s3, &bucket).await }
            }),
        ]
    }
}
