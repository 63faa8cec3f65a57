//! tcoder-worker: one worker machine. It registers itself in the machine pool, pulls jobs from
//! JetStream (`high` before `normal` before `low`), holds each job's lease in Redis with a
//! fencing epoch, runs the engine in a sandboxed child process, uploads outputs under the
//! attempt's epoch and commits them — and only then acks. It exits after an idle period, a
//! job budget or a failure budget (the machine then costs nothing), or on SIGTERM.

mod attempt;
mod keeper;
mod metrics;
mod part;
mod runner;
mod scratch;
mod split;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tcoder::config::{Service as ServiceName, Settings, WorkerConfig};
use tcoder::engine::Supervisor;
use tcoder::jobs::JobStore;
use tcoder::machines::{self, MachineRecord, MachineState};
use tcoder::service::{Common, Service, Tasks};
use tcoder::shutdown::Shutdown;

use crate::metrics::WorkerMetrics;

/// Everything a job handler needs. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Worker {
    pub id: String,
    pub jobs: JobStore,
    pub js: async_nats::jetstream::Context,
    pub nats: async_nats::Client,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub s3_config: tcoder::s3::Config,
    pub config: Arc<WorkerConfig>,
    pub supervisor: Supervisor,
    pub max_deliver: i64,
    /// JOBS consumer AckWait: a held message needs an in-progress ack within it.
    pub ack_wait: Duration,
    pub metrics: WorkerMetrics,
    machine: Arc<Mutex<MachineRecord>>,
    /// Set when a Redis call of this worker failed, cleared when one succeeds: while set, the
    /// pull loop checks Redis before taking more work, so a worker cut off from Redis (but not
    /// from NATS) does not hold work items other workers could run.
    pub redis_suspect: Arc<std::sync::atomic::AtomicBool>,
}

impl Worker {
    pub(crate) fn note_redis(&self, reachable: bool) {
        self.redis_suspect.store(!reachable, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this worker can reach Redis now: a recent call succeeded, or a quick PING does.
    pub(crate) async fn redis_reachable(&self) -> bool {
        if !self.redis_suspect.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        let ping = self.jobs.ping();
        let reachable =
            matches!(tokio::time::timeout(Duration::from_secs(1), ping).await, Ok(Ok(())));
        self.note_redis(reachable);
        reachable
    }

    /// The engine run of `job` (its `part`, or all of it) on `input`, into `output_dir`, with
    /// this worker's limits and encoder settings.
    pub(crate) fn engine_job(
        &self,
        job: &tcoder::jobs::Job,
        input: std::path::PathBuf,
        output_dir: std::path::PathBuf,
        part: Option<tcoder::engine::Part>,
    ) -> tcoder::engine::EngineJob {
        tcoder::engine::EngineJob {
            input,
            output_dir,
            spec: tcoder::engine::EngineSpec::from(&job.spec),
            limits: self.config.engine.limits(),
            settings: self.config.engine.settings(),
            part,
        }
    }

    pub(crate) fn set_state(&self, state: MachineState) {
        let mut machine = self.machine.lock().expect("machine lock");
        if machine.state != state {
            machine.state = state;
            machine.last_active_at = tcoder::jobs::now_ms();
        }
    }

    pub(crate) fn record_job(&self) {
        let mut machine = self.machine.lock().expect("machine lock");
        machine.jobs += 1;
        machine.last_active_at = tcoder::jobs::now_ms();
    }

    fn record(&self) -> MachineRecord {
        self.machine.lock().expect("machine lock").clone()
    }
}

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
