//! tcoder-ingest: where users and their event producers meet tcoder.
//!
//! - the public HTTP API (`/v1/jobs…`, `/v1/notifications/…`) on `ingest.http_bind`;
//! - the notification bridge: object-created notifications from R2 (Cloudflare Queue pull or
//!   pushed bodies), S3/MinIO, the embedded store and a periodic sweep, normalized into one
//!   event per upload on `tcoder.uploads.<bucket>` — for jobs' uploads, and for new objects in
//!   watch folders (which become jobs);
//! - job submission over NATS (`tcoder.submit.<tenant>`);
//! - the `AsyncAPI` description of every subject (`GET /asyncapi.yaml`);
//! - the embedded S3-compatible store on `ingest.local_store.bind` (single-host stack);
//! - the admin server (`/metrics`, `/healthz`, `/readyz`) on `admin.bind`.

// The bridge's futures nest deeply (notification → job creation → a replicated Redis write);
// the default limit of 128 stops the compiler computing their layout.
#![recursion_limit = "256"]

mod auth;
mod bridge;
mod error;
mod event_hub;
mod metrics;
mod routes;
mod state;
mod submit;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tcoder::auth::ApiKeys;
use tcoder::config::{IngestConfig, Service as ServiceName, Settings};
use tcoder::jobs::JobStore;
use tcoder::s3::ObjectCreated;
use tcoder::s3::local::LocalStore;
use tcoder::service::{Common, Service, Tasks};
use tcoder::shutdown::Shutdown;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::bridge::Bridge;
use crate::bridge::r2_queue::R2QueueConsumer;
use crate::bridge::sweep::Sweeper;
use crate::metrics::IngestMetrics;
use crate::state::AppState;

/// Notifications the embedded store may have in flight to the bridge.
const LOCAL_EVENT_BUFFER: usize = 1024;

/// The ingest service, bound and connected, not yet serving.
#[derive(Debug)]
pub struct App {
    common: Common,
    api: TcpListener,
    state: AppState,
    local_store: Option<(LocalStore, mpsc::Receiver<ObjectCreated>)>,
}

impl App {
    pub fn api_addr(&self) -> SocketAddr {
        self.api.local_addr().expect("bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.common.admin.local_addr()
    }

    /// Where the embedded object store listens, when it runs.
    pub fn local_store_addr(&self) -> Option<SocketAddr> {
        self.local_store.as_ref().map(|(store, _)| store.local_addr())
    }
}

impl Service for App {
    const NAME: ServiceName = ServiceName::Ingest;

    async fn build(settings: Settings) -> anyhow::Result<App> {
        // The store binds first: with the single-host default, S3 is this process.
        let local_store = if settings.ingest.local_store.enabled {
            let mut store = settings.ingest.local_store.clone();
            // Signed delivery: outputs are served only through signed playback URLs.
            store.public_outputs &= settings.ingest.delivery == tcoder::config::Delivery::Public;
            let store = &store;
            let (sender, receiver) = mpsc::channel(LOCAL_EVENT_BUFFER);
            let bound = LocalStore::bind(
                store,
                &settings.s3.bucket,
                &settings.s3.access_key_id,
                settings.s3.secret_access_key.expose(),
                settings.ingest.max_upload_bytes,
                Some(sender),
                tcoder::cors::Cors::new(&settings.ingest.cors_origins),
            )
            .await
            .with_context(|| {
                format!("cannot start the local store on ingest.local_store.bind {}", store.bind)
            })?;
            Some((bound, receiver))
        } else {
            None
        };
        let common = Common::build(&settings, Self::NAME).await?;
        let api = TcpListener::bind(settings.ingest.http_bind).await.with_context(|| {
            format!("cannot bind ingest.http_bind {}", settings.ingest.http_bind)
        })?;
        let connections = &common.connections;
        let metrics = IngestMetrics::register(&common.metrics);
        let jobs = JobStore::new(connections.redis.clone());
        let watch = bridge::watch::WatchRules::new(connections.redis.clone());
        let configured = settings
            .ingest
            .watch
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                rule.validate(settings.ingest.max_upload_bytes, &settings.webhooks.allowed)
                    .map_err(|e| anyhow::anyhow!("ingest.watch[{i}]: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        watch.install(&configured).await.context("cannot write the watch rules to Redis")?;
        let bridge = Bridge {
            jobs: jobs.clone(),
            s3: connections.s3.clone(),
            js: connections.jetstream.clone(),
            bucket: settings.s3.bucket.clone(),
            max_upload_bytes: settings.ingest.max_upload_bytes,
            metrics: metrics.clone(),
            watch,
            redis: connections.redis.clone(),
            webhook_secrets: Arc::new(settings.webhooks.at_rest()),
        };
        let events = event_hub::EventHub::new(
            settings.ingest.max_event_streams,
            settings.ingest.max_event_streams_per_tenant,
            metrics.event_streams_open.clone(),
        );
        let importer =
            bridge::import::Importer::new(bridge.clone(), settings.ingest.import.clone());
        let state = AppState {
            importer,
            thumbnails: Arc::default(),
            part_files: Arc::default(),
            store: Arc::new(settings.s3.clone()),
            events,
            jobs,
            redis: connections.redis.clone(),
            keys: ApiKeys::new(&settings.ingest.api_keys, connections.redis.clone()),
            js: connections.jetstream.clone(),
            s3: connections.s3.clone(),
            bucket: settings.s3.bucket.clone(),
            cors: Arc::new(tcoder::cors::Cors::new(&settings.ingest.cors_origins)),
            allowed_webhooks: Arc::new(settings.webhooks.allowed.clone()),
            webhook_secrets: Arc::new(settings.webhooks.at_rest()),
            console_policy: routes::console_policy(
                &settings.s3.endpoint,
                &settings.s3.public_url,
                &settings.ingest.public_api_url,
            )
            .into(),
            config: Arc::new(settings.ingest),
            bridge,
            metrics,
        };
        let app = App { common, api, state, local_store };
        tracing::info!(
            api = %app.api_addr(),
            admin = %app.admin_addr(),
            local_store = ?app.local_store_addr(),
            "ingest listening"
        );
        Ok(app)
    }

    async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut tasks = Tasks::new();
        let token = shutdown.token();
        let config: &IngestConfig = &self.state.config;
        tasks.spawn("admin server", self.common.admin.serve(token.clone()));
        if let Some((store, created)) = self.local_store {
            tasks.spawn("local store", store.serve(config.listener_limits(), token.clone()));
            tasks.spawn(
                "local store notifications",
                bridge::local::run(self.state.bridge.clone(), created, token.clone()),
            );
        }
        if config.r2_queue.enabled {
            let consumer =
                R2QueueConsumer::new(config.r2_queue.clone(), self.state.bridge.clone())?;
            tasks.spawn("r2 queue consumer", consumer.run(token.clone()));
        }
        let sweeper = Sweeper {
            bridge: self.state.bridge.clone(),
            importer: self.state.importer.clone(),
            interval: config.sweep_interval,
            upload_expiry: config.upload_expiry,
            retention: config.job_retention,
            tombstone_ttl: config.idempotency_ttl,
        };
        tasks.spawn("upload sweep", sweeper.run(token.clone()));
        let submitter = submit::Submitter {
            bridge: self.state.bridge.clone(),
            allowed_webhooks: self.state.allowed_webhooks.clone(),
            idempotency_ttl: config.idempotency_ttl,
            rate: config.create_rate(),
        };
        tasks.spawn(
            "submission requests",
            submitter.clone().serve_requests(self.common.connections.nats.clone(), token.clone()),
        );
        tasks.spawn(
            "stored submissions",
            submitter.consume_stored(self.common.connections.jetstream.clone(), token.clone()),
        );
        tasks.spawn(
            "event fan-out",
            self.state.events.clone().run(self.common.connections.nats.clone(), token.clone()),
        );
        let limits = config.listener_limits();
        let router = hyper_util::service::TowerToHyperService::new(routes::router(self.state));
        tasks.spawn(
            "api server",
            tcoder::http_serve::serve(self.api, router, limits, token.clone()),
        );
        tasks.run_until_stopped(shutdown).await
    }
}
