//! tcoder-dispatcher: the control plane. It turns upload events into queued jobs (one work
//! item each on `tcoder.jobs.<priority>.<job>`), reconciles stuck jobs, dead-letters poison
//! jobs, delivers signed webhooks, and relays committed-but-unpublished job events.

mod dead_letters;
mod metrics;
mod queue;
mod reconcile;
mod webhooks;

use std::net::SocketAddr;
use std::time::Duration;

use tcoder::config::{Service as ServiceName, Settings};
use tcoder::jobs::JobStore;
use tcoder::service::{Common, Service, Tasks};
use tcoder::shutdown::Shutdown;
use tcoder::webhooks::Deliverer;

use crate::metrics::DispatcherMetrics;

/// The dispatcher service, bound and connected, not yet running.
#[derive(Debug)]
pub struct App {
    common: Common,
    jobs: JobStore,
    metrics: DispatcherMetrics,
    reconciler: reconcile::Reconciler,
    webhooks: webhooks::WebhookSender,
}

impl App {
    pub fn admin_addr(&self) -> SocketAddr {
        self.common.admin.local_addr()
    }
}

impl Service for App {
    const NAME: ServiceName = ServiceName::Dispatcher;

    async fn build(settings: Settings) -> anyhow::Result<App> {
        let common = Common::build(&settings, Self::NAME).await?;
        let metrics = DispatcherMetrics::register(&common.metrics);
        let jobs = JobStore::new(common.connections.redis.clone());
        let js = common.connections.jetstream.clone();
        let config = &settings.dispatcher;
        let reconciler = reconcile::Reconciler {
            jobs: jobs.clone(),
            js: js.clone(),
            interval: config.reconcile_interval,
            stuck_after: config.stuck_after,
            actions: metrics.reconcile_actions.clone(),
            dlq_depth: metrics.dlq_depth.clone(),
        };
        let webhooks = webhooks::WebhookSender {
            jobs: jobs.clone(),
            redis: common.connections.redis.clone(),
            js,
            deliverer: Deliverer {
                allowed: config.webhook_allowed.clone(),
                timeout: config.webhook_timeout,
            },
            schedule: config.webhook_schedule.clone(),
            attempts: metrics.webhook_attempts.clone(),
            latency: metrics.webhook_latency.clone(),
        };
        let app = App { common, jobs, metrics, reconciler, webhooks };
        tracing::info!(admin = %app.admin_addr(), "dispatcher listening");
        Ok(app)
    }

    async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut tasks = Tasks::new();
        let token = shutdown.token();
        let js = self.common.connections.jetstream.clone();
        tasks.spawn("admin server", self.common.admin.serve(token.clone()));
        tasks.spawn(
            "upload queue",
            queue::run(
                self.jobs.clone(),
                js.clone(),
                self.metrics.upload_events.clone(),
                token.clone(),
            ),
        );
        tasks.spawn("reconciler", self.reconciler.run(token.clone()));
        tasks.spawn(
            "dead letters",
            dead_letters::run(
                self.jobs.clone(),
                js.clone(),
                self.metrics.dead_letters.clone(),
                token.clone(),
            ),
        );
        tasks.spawn("webhooks", self.webhooks.run(token.clone()));
        tasks.spawn(
            "outbox relay",
            tcoder::events::run_outbox_relay(
                self.jobs.clone(),
                js,
                Duration::from_secs(5),
                token.clone(),
            ),
        );
        tasks.run_until_stopped(shutdown).await
    }
}
