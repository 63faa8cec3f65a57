//! tcoder-dispatcher: the control plane. It turns upload events into queued jobs (one work
//! item each on `tcoder.jobs.<priority>.<job>`), reconciles stuck jobs, dead-letters poison
//! jobs, delivers signed webhooks, and relays committed-but-unpublished job events.

mod dead_letters;
mod discovery;
mod gauges;
mod leadership;
mod metrics;
mod periodic;
mod queue;
mod reconcile;
mod scaler;
mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tcoder::config::{ProviderKind, Service as ServiceName, Settings};
use tcoder::jobs::JobStore;
use tcoder::machines::MachineProvider;
use tcoder::machines::fly::FlyProvider;
use tcoder::machines::local::LocalProvider;
use tcoder::service::{Common, Service, Tasks};
use tcoder::shutdown::Shutdown;
use tcoder::webhooks::Deliverer;

use crate::metrics::DispatcherMetrics;

/// The dispatcher service, bound and connected, not yet running.
#[derive(Debug)]
pub struct App {
    common: Common,
    jobs: JobStore,
    queue: queue::Queue,
    reconciler: reconcile::Reconciler,
    webhooks: webhooks::WebhookSender,
    scaler: Option<scaler::Scaler>,
    local: Option<Arc<LocalProvider>>,
    observer: gauges::Observer,
    /// Workers' lease TTL: how long a dead attempt's lease outlives it.
    undeliverable: dead_letters::Undeliverable,
}

impl App {
    pub fn admin_addr(&self) -> SocketAddr {
        self.common.admin.local_addr()
    }

    /// The local provider, when it is the one in use (tests read its counters).
    pub fn local_provider(&self) -> Option<Arc<LocalProvider>> {
        self.local.clone()
    }
}

/// Writes the effective settings (secrets included) to a file only this user can read, for the
/// worker processes the local provider starts.
/// The folder (a fresh temporary one per dispatcher, removed when the local provider that
/// owns it is dropped: several dispatchers may share a process, e.g. in tests) and the file.
fn write_worker_settings(settings: &Settings) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let settings = settings.for_workers();
    let dir = tempfile::Builder::new().prefix("tcoder-dispatcher-").tempdir()?;
    let path = dir.path().join("worker-settings.toml");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(settings.to_toml().as_bytes())?;
    Ok((dir, path))
}

/// `dispatcher.worker_program`, else `tcoder-worker` next to this binary.
fn worker_program(configured: &str) -> anyhow::Result<PathBuf> {
    if !configured.is_empty() {
        return Ok(PathBuf::from(configured));
    }
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .map(|d| d.join("tcoder-worker"))
        .unwrap_or_else(|| PathBuf::from("tcoder-worker")))
}

impl Service for App {
    const NAME: ServiceName = ServiceName::Dispatcher;

    async fn build(settings: Settings) -> anyhow::Result<App> {
        let mut common = Common::build(&settings, Self::NAME).await?;
        common.admin =
            common.admin.with_routes(discovery::discovery_routes(common.connections.redis.clone()));
        let metrics = DispatcherMetrics::register(&common.metrics);
        let jobs = JobStore::new(common.connections.redis.clone());
        let js = common.connections.jetstream.clone();
        let config = &settings.dispatcher;
        let queue = queue::Queue {
            jobs: jobs.clone(),
            js: js.clone(),
            tenant_cap: config.max_jobs_per_tenant,
            outcomes: metrics.upload_events.clone(),
        };
        let undeliverable = dead_letters::Undeliverable {
            jobs: jobs.clone(),
            js: js.clone(),
            lease_ttl: settings.worker.lease_ttl,
            max_attempts: u32::try_from(settings.nats.jobs_max_deliver).unwrap_or(u32::MAX),
            outcomes: metrics.dead_letters.clone(),
        };
        // Several dispatchers may run at once; the loops that should run once per cluster take
        // turns by lease, which outlives a dispatcher that dies by a few of its intervals.
        let holder = leadership::holder_id();
        let lease = |role: &'static str, interval: Duration| {
            leadership::Leadership::new(
                common.connections.redis.clone(),
                role,
                holder.clone(),
                (interval * 3).max(Duration::from_secs(5)),
                metrics.leader.with_label_values(&[role]),
            )
        };
        let reconciler = reconcile::Reconciler {
            leadership: lease("reconciler", config.reconcile_interval),
            undeliverable: undeliverable.clone(),
            jobs: jobs.clone(),
            js: js.clone(),
            queue: queue.clone(),
            interval: config.reconcile_interval,
            stuck_after: config.stuck_after,
            actions: metrics.reconcile_actions.clone(),
            dlq_depth: metrics.dlq_depth.clone(),
        };
        let (provider, local): (Option<Arc<dyn MachineProvider>>, Option<Arc<LocalProvider>>) =
            match config.provider {
                ProviderKind::Local => {
                    // Workers get this dispatcher's effective settings, as a Fly machine gets its env.
                    let (dir, settings_file) = write_worker_settings(&settings)?;
                    let env =
                        vec![("TCODER_CONFIG".to_owned(), settings_file.display().to_string())];
                    let local = Arc::new(
                        LocalProvider::new(worker_program(&config.worker_program)?, env)
                            .owning(dir)
                            .with_worker_logs(config.local_worker_logs),
                    );
                    (Some(local.clone()), Some(local))
                }
                // Workers get this dispatcher's effective settings as the local ones do, but
                // without a credential: theirs are the worker app's own secrets.
                ProviderKind::Fly => {
                    let worker = settings.for_workers().to_toml_without_secrets();
                    let fly = FlyProvider::new(config.fly.clone(), Default::default())?
                        .with_settings(worker);
                    (Some(Arc::new(fly)), None)
                }
                ProviderKind::None => (None, None),
            };
        let scaler = provider.map(|provider| scaler::Scaler {
            provider,
            redis: common.connections.redis.clone(),
            nats: common.connections.nats.clone(),
            js: js.clone(),
            queue: queue.clone(),
            max_machines: config.max_machines,
            max_stopped: config.max_stopped,
            idle_stop_after: config.idle_stop_after,
            boot_grace: config.boot_grace,
            interval: config.scale_interval,
            reap_interval: config.reap_interval,
            reaper: lease("reaper", config.reap_interval),
            metrics: metrics.clone(),
            started_at: Arc::default(),
        });
        let webhooks = webhooks::WebhookSender {
            jobs: jobs.clone(),
            redis: common.connections.redis.clone(),
            js,
            deliverer: Deliverer {
                allowed: settings.webhooks.allowed.clone(),
                timeout: config.webhook_timeout,
            },
            schedule: config.webhook_schedule.clone(),
            attempts: metrics.webhook_attempts.clone(),
            latency: metrics.webhook_latency.clone(),
            at_rest: Arc::new(settings.webhooks.at_rest()),
        };
        let observer = gauges::Observer::new(
            &common.metrics,
            common.connections.redis.clone(),
            common.connections.jetstream.clone(),
        );
        let app = App {
            common,
            jobs,
            queue,
            reconciler,
            webhooks,
            scaler,
            local,
            observer,
            undeliverable,
        };
        tracing::info!(admin = %app.admin_addr(), "dispatcher listening");
        Ok(app)
    }

    async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut tasks = Tasks::new();
        let token = shutdown.token();
        let js = self.common.connections.jetstream.clone();
        tasks.spawn("admin server", self.common.admin.serve(token.clone()));
        tasks.spawn("upload queue", self.queue.clone().run(token.clone()));
        if let Some(scaler) = self.scaler {
            tasks.spawn("admission and reaper", scaler.run(token.clone()));
        } else if self.queue.tenant_cap > 0 {
            let (queue, stop) = (self.queue.clone(), token.clone());
            let periodic = periodic::Periodic::every(
                "deferred uploads",
                Duration::from_secs(1),
                periodic::FirstRound::AfterWait,
            );
            tasks.spawn("deferred uploads", async move {
                periodic.run(stop, || async { queue.promote_deferred(100).await.map(|_| ()) }).await
            });
        }
        tasks.spawn("reconciler", self.reconciler.run(token.clone()));
        tasks.spawn("gauges", self.observer.run(token.clone()));
        tasks.spawn("dead letters", dead_letters::run(self.undeliverable.clone(), token.clone()));
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
