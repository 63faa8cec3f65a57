//! tcoder-dispatcher: the control plane. It turns upload events into queued jobs (one work
//! item each on `tcoder.jobs.<priority>`) and relays committed-but-unpublished job events.
//! Admission control, machine providers, the reaper, the reconciler, dead letters and webhooks
//! build on this.

mod dead_letters;
mod queue;
mod reconcile;

use std::net::SocketAddr;
use std::time::Duration;

use prometheus::{IntCounterVec, Opts};
use tcoder::config::{Service as ServiceName, Settings};
use tcoder::jobs::JobStore;
use tcoder::service::{Common, Service, Tasks};
use tcoder::shutdown::Shutdown;

/// The dispatcher service, bound and connected, not yet running.
#[derive(Debug)]
pub struct App {
    common: Common,
    jobs: JobStore,
    queue_decisions: IntCounterVec,
    reconciler: reconcile::Reconciler,
    dead_letters: IntCounterVec,
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
        let queue_decisions = IntCounterVec::new(
            Opts::new(
                "tcoder_dispatcher_upload_events_total",
                "Upload events handled by the dispatcher, by outcome (queued, republished, not_uploaded, unknown_job, raced, retry).",
            ),
            &["outcome"],
        )?;
        common.metrics.register(&queue_decisions);
        let reconcile_actions = IntCounterVec::new(
            Opts::new(
                "tcoder_reconciler_actions_total",
                "Stuck jobs the reconciler moved, by action (queued_upload, republished, requeued_lapsed).",
            ),
            &["action"],
        )?;
        common.metrics.register(&reconcile_actions);
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "tcoder_dead_letters_total",
                "MAX_DELIVERIES advisories handled, by outcome (dead_lettered, gone, unknown_job, malformed).",
            ),
            &["outcome"],
        )?;
        common.metrics.register(&dead_letters);
        let jobs = JobStore::new(common.connections.redis.clone());
        let reconciler = reconcile::Reconciler {
            jobs: jobs.clone(),
            js: common.connections.jetstream.clone(),
            interval: settings.dispatcher.reconcile_interval,
            stuck_after: settings.dispatcher.stuck_after,
            actions: reconcile_actions,
        };
        let app = App { common, jobs, queue_decisions, reconciler, dead_letters };
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
            queue::run(self.jobs.clone(), js.clone(), self.queue_decisions.clone(), token.clone()),
        );
        tasks.spawn("reconciler", self.reconciler.run(token.clone()));
        tasks.spawn(
            "dead letters",
            dead_letters::run(
                self.jobs.clone(),
                js.clone(),
                self.dead_letters.clone(),
                token.clone(),
            ),
        );
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
