//! The worker's context: its connections, settings, engine supervisor and machine record —
//! everything a job handler needs, shared by every kind of attempt.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tcoder::config::WorkerConfig;
use tcoder::engine::Supervisor;
use tcoder::jobs::JobStore;
use tcoder::machines::{MachineRecord, MachineState};

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
    pub machine: Arc<Mutex<MachineRecord>>,
    /// Set when a Redis call of this worker failed, cleared when one succeeds: while set, the
    /// pull loop checks Redis before taking more work, so a worker cut off from Redis (but not
    /// from NATS) does not hold work items other workers could run.
    pub redis_suspect: Arc<std::sync::atomic::AtomicBool>,
    /// Set when an attempt found the scratch disk full: the machine takes no more work and
    /// exits once its running jobs end (their jobs are retried elsewhere).
    pub disk_full: Arc<std::sync::atomic::AtomicBool>,
    /// Jobs this worker runs an attempt of now (see [`Worker::running`]).
    pub running: Arc<Mutex<std::collections::HashSet<tcoder::jobs::JobId>>>,
}

/// Marks a job as running on this worker while it lives.
#[derive(Debug)]
pub(crate) struct Running {
    worker: Worker,
    job: tcoder::jobs::JobId,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.worker.running.lock().expect("running lock").remove(&self.job);
    }
}

impl Worker {
    /// How often a held work item gets an in-progress ack: three times per AckWait.
    pub(crate) fn hold_interval(&self) -> Duration {
        (self.ack_wait / 3).max(Duration::from_millis(100))
    }

    /// Marks `job` as running here, unless it already is: then `None` — the message is a
    /// redelivery of the work item an attempt on this worker holds (its in-progress acks came
    /// late, on a starved machine), not work for another attempt.
    pub(crate) fn running(&self, job: &tcoder::jobs::JobId) -> Option<Running> {
        let fresh = self.running.lock().expect("running lock").insert(job.clone());
        fresh.then(|| Running { worker: self.clone(), job: job.clone() })
    }

    /// Looks at how an attempt failed: a full scratch disk makes this machine unfit for work.
    pub(crate) fn note_failure(&self, error: &tcoder::engine::EngineError) {
        if error.code == tcoder::engine::ErrorCode::DiskFull
            && !self.disk_full.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::error!(%error, dir = %self.config.scratch_dir.display(), "the scratch disk is full: this machine takes no more work and exits when its running jobs end");
        }
    }

    /// Whether this machine may take more work (its scratch disk has room).
    pub(crate) fn fit_for_work(&self) -> bool {
        !self.disk_full.load(std::sync::atomic::Ordering::Relaxed)
    }

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

    /// The engine run of `job` (`task`: all of it, or one task of a split title) on `input`, into `output_dir`, with
    /// this worker's limits and encoder settings.
    pub(crate) fn engine_job(
        &self,
        job: &tcoder::jobs::Job,
        input: std::path::PathBuf,
        output_dir: std::path::PathBuf,
        task: tcoder::engine::Task,
    ) -> tcoder::engine::EngineJob {
        let mut spec = tcoder::engine::EngineSpec::from(&job.spec);
        // The job's own floor, else the worker's.
        spec.quality_floor = spec.quality_floor.or(self.config.engine.quality_floor());
        tcoder::engine::EngineJob {
            input,
            output_dir,
            spec,
            limits: self.config.engine.limits(),
            settings: self.config.engine.settings(),
            task,
            sidecars: Vec::new(),
            ladder: None,
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

    pub(crate) fn record(&self) -> MachineRecord {
        self.machine.lock().expect("machine lock").clone()
    }
}
