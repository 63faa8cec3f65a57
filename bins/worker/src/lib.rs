//! tcoder-worker: one worker machine. It registers itself in the machine pool, pulls jobs from
//! JetStream (`high` before `normal` before `low`), holds each job's lease in Redis with a
//! fencing epoch, runs the engine in a sandboxed child process, uploads outputs under the
//! attempt's epoch and commits them — and only then acks. It exits after an idle period, a
//! job budget or a failure budget (the machine then costs nothing), or on SIGTERM.

mod attempt;
mod context;
mod keeper;
mod metrics;
mod runner;
mod scratch;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tcoder::config::{Service as ServiceName, Settings};
use tcoder::engine::Supervisor;
use tcoder::jobs::JobStore;
use tcoder::machines::{self, MachineRecord};
use tcoder::service::{Common, Service, Tasks};
use tcoder::shutdown::Shutdown;

pub(crate) use crate::context::Worker;
use crate::metrics::WorkerMetrics;

/// The worker service, connected and registered, not yet pulling.
#[derive(Debug)]
pub struct App {
    common: Common,
    worker: Worker,
}

impl App {
    pub fn admin_addr(&self) -> SocketAddr {
        self.common.admin.local_addr()
    }

    pub fn machine_id(&self) -> &str {
        &self.worker.id
    }
}

/// `worker.machine_id`, else `FLY_MACHINE_ID` (set on Fly), else `local-<host>-<pid>`.
fn machine_id(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    if let Ok(id) = std::env::var("FLY_MACHINE_ID")
        && !id.is_empty()
    {
        return id;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String =
        host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    format!("local-{}-{}", if host.is_empty() { "host" } else { &host }, std::process::id())
}

impl Service for App {
    const NAME: ServiceName = ServiceName::Worker;

    async fn build(mut settings: Settings) -> anyhow::Result<App> {
        let common = Common::build(&settings, Self::NAME).await?;
        let id = machine_id(&settings.worker.machine_id);
        std::fs::create_dir_all(&settings.worker.scratch_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create worker.scratch_dir {}: {e}",
                settings.worker.scratch_dir.display()
            )
        })?;
        // Absolute: the engine child runs inside the job directory.
        settings.worker.scratch_dir = settings.worker.scratch_dir.canonicalize()?;
        let program = std::env::current_exe()?;
        let provider = if std::env::var_os("FLY_MACHINE_ID").is_some() { "fly" } else { "local" };
        let mut record = MachineRecord::new(&id, provider);
        record.admin = advertised_admin(common.admin.local_addr());
        let worker = Worker {
            machine: Arc::new(Mutex::new(record)),
            id,
            jobs: JobStore::new(common.connections.redis.clone()),
            js: common.connections.jetstream.clone(),
            nats: common.connections.nats.clone(),
            s3: common.connections.s3.clone(),
            bucket: settings.s3.bucket.clone(),
            s3_config: settings.s3.clone(),
            supervisor: Supervisor {
                program,
                args: vec!["engine".into()],
                limits: settings.worker.engine.sandbox(),
            },
            max_deliver: settings.nats.jobs_max_deliver,
            ack_wait: settings.nats.jobs_ack_wait,
            metrics: WorkerMetrics::register(&common.metrics),
            config: Arc::new(settings.worker),
            redis_suspect: Arc::default(),
            disk_full: Arc::default(),
            running: Arc::default(),
        };
        let removed = scratch::remove_stale(&worker.config.scratch_dir, &worker.jobs).await;
        if removed > 0 {
            tracing::info!(removed, "removed scratch folders of dead attempts");
        }
        let mut redis = common.connections.redis.clone();
        machines::heartbeat(&mut redis, &worker.record(), worker.config.lease_ttl).await?;
        let app = App { common, worker };
        tracing::info!(machine = %app.worker.id, admin = %app.admin_addr(), "worker ready");
        Ok(app)
    }

    async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut tasks = Tasks::new();
        let token = shutdown.token();
        tasks.spawn("admin server", self.common.admin.serve(token.clone()));
        tasks.spawn(
            "machine heartbeat",
            heartbeat(self.worker.clone(), self.common.connections.redis.clone(), token.clone()),
        );
        tasks.spawn("scratch sweep", sweep_scratch(self.worker.clone(), token.clone()));
        tasks.spawn(
            "outbox relay",
            tcoder::events::run_outbox_relay(
                self.worker.jobs.clone(),
                self.worker.js.clone(),
                Duration::from_secs(5),
                token.clone(),
            ),
        );
        let (worker, stop) = (self.worker.clone(), shutdown.clone());
        tasks.spawn("job runner", async move {
            let reason = runner::run(worker, stop.clone()).await?;
            if reason != runner::ExitReason::Shutdown {
                tracing::info!(?reason, "machine done; exiting");
            }
            // The machine is done either way: stop the other tasks too.
            stop.trigger();
            anyhow::Ok(())
        });
        let result = tasks.run_until_stopped(shutdown).await;
        let mut redis = self.common.connections.redis.clone();
        if let Err(e) = machines::deregister(&mut redis, &self.worker.id).await {
            tracing::warn!(error = %e, "cannot deregister the machine; its lease will expire");
        }
        result
    }
}

/// The admin address other hosts can scrape: the bound address, or on a wildcard bind the
/// machine's private address (Fly sets `FLY_PRIVATE_IP`); unknown otherwise.
fn advertised_admin(bound: std::net::SocketAddr) -> Option<String> {
    if !bound.ip().is_unspecified() {
        return Some(bound.to_string());
    }
    let ip: std::net::IpAddr = std::env::var("FLY_PRIVATE_IP").ok()?.parse().ok()?;
    Some(std::net::SocketAddr::new(ip, bound.port()).to_string())
}

/// Removes dead attempts' scratch folders every [`scratch::SWEEP_INTERVAL`].
async fn sweep_scratch(
    worker: Worker,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = tokio::time::sleep(scratch::SWEEP_INTERVAL) => {}
            () = stop.cancelled() => return Ok(()),
        }
        let removed = scratch::remove_stale(&worker.config.scratch_dir, &worker.jobs).await;
        if removed > 0 {
            tracing::info!(removed, "removed scratch folders of dead attempts");
        }
    }
}

/// Renews the machine's lease and record every third of the lease TTL.
async fn heartbeat(
    worker: Worker,
    mut redis: tcoder::redis::Conn,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let ttl = worker.config.lease_ttl;
    loop {
        tokio::select! {
            () = tokio::time::sleep(ttl / 3) => {}
            () = stop.cancelled() => return Ok(()),
        }
        if let Err(e) = machines::heartbeat(&mut redis, &worker.record(), ttl).await {
            tracing::warn!(error = %e, "machine heartbeat failed");
        }
    }
}
