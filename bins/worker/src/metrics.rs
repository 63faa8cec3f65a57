//! The worker's metrics. Labels are bounded (outcome codes, stage names), never job ids.

use prometheus::{
    Counter, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
};
use tcoder::cost::JobCost;
use tcoder::metrics::{Metrics, init_series};

/// Seconds to hours: a stage of a job can take milliseconds (a tiny upload) or hours.
pub(crate) const JOB_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

#[derive(Clone, Debug)]
pub(crate) struct WorkerMetrics {
    pub jobs: IntCounterVec,
    pub stage_seconds: HistogramVec,
    pub job_seconds: Histogram,
    pub encode_speed: Histogram,
    pub engine_cpu_seconds: IntCounter,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub redeliveries: IntCounter,
    pub lease_renewals_failed: IntCounter,
    pub self_fences: IntCounter,
    /// Engine runs whose sandbox lacked a layer the kernel refused (see the engine's report).
    pub sandbox_incomplete: IntCounter,
    /// Commits retried after a transient store error (instead of redoing the job).
    pub commit_retries: IntCounter,
    /// Claims holding their message while Redis cannot be reached.
    pub waiting_for_redis: IntGauge,
    /// Object-store requests retried while the store could not be reached (the attempt held).
    pub store_retries: IntCounter,
    /// Attempts waiting for the object store to answer.
    pub waiting_for_store: IntGauge,
    pub cost_usd: Counter,
    pub machine_seconds: Counter,
    pub put_requests: IntCounter,
    pub job_cost: Histogram,
}

impl WorkerMetrics {
    pub(crate) fn register(metrics: &Metrics) -> WorkerMetrics {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let m = WorkerMetrics {
            jobs: IntCounterVec::new(
                Opts::new("tcoder_worker_jobs_total", "Job attempts finished by this worker, by outcome (completed, failed, retried, released, fenced, canceled, skipped) and error code (none unless failed)."),
                &["outcome", "code"],
            )
            .expect("valid metric"),
            stage_seconds: HistogramVec::new(
                HistogramOpts::new("tcoder_job_stage_duration_seconds", "Time spent per stage of a completed job attempt (download, probe, encode, upload, commit).").buckets(JOB_BUCKETS.to_vec()),
                &["stage"],
            )
            .expect("valid metric"),
            job_seconds: Histogram::with_opts(
                HistogramOpts::new("tcoder_job_duration_seconds", "Time from claim to commit of completed attempts.").buckets(JOB_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            encode_speed: Histogram::with_opts(
                HistogramOpts::new("tcoder_encode_speed_ratio", "Media seconds transcoded per wall second (x realtime), per completed job.")
                    .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            )
            .expect("valid metric"),
            engine_cpu_seconds: counter("tcoder_engine_cpu_seconds_total", "CPU seconds (user+system) used by engine processes."),
            bytes_in: counter("tcoder_worker_bytes_downloaded_total", "Source bytes downloaded."),
            bytes_out: counter("tcoder_worker_bytes_uploaded_total", "Output bytes uploaded."),
            redeliveries: counter("tcoder_redeliveries_total", "Job messages received more than once."),
            lease_renewals_failed: counter("tcoder_lease_renewals_failed_total", "Lease renewals that failed (Redis unreachable)."),
            self_fences: counter("tcoder_self_fences_total", "Attempts abandoned because the lease could not be kept or another attempt took over."),
            sandbox_incomplete: counter("tcoder_engine_sandbox_incomplete_total", "Engine runs whose sandbox lacked a layer this kernel refused (user namespace, Landlock, seccomp...): see the worker's warning for which."),
            commit_retries: counter("tcoder_commit_retries_total", "Commits retried after a transient Redis error (safe: a commit is fenced by its epoch and idempotent)."),
            waiting_for_redis: IntGauge::new("tcoder_worker_claims_waiting_for_redis", "Work items held (in-progress acks, no delivery spent) while their claim waits for Redis to answer.").expect("valid metric"),
            store_retries: counter("tcoder_store_retries_total", "Object-store requests (download, upload) retried while the store could not be reached: the attempt holds its lease and work item instead of spending a delivery."),
            waiting_for_store: IntGauge::new("tcoder_worker_attempts_waiting_for_store", "Attempts holding their work while the object store does not answer.").expect("valid metric"),
            cost_usd: Counter::new("tcoder_job_cost_usd_total", "Estimated cost of completed jobs in US dollars, from the configured [worker.cost] prices.").expect("valid metric"),
            machine_seconds: Counter::new("tcoder_job_machine_seconds_total", "Machine seconds occupied by completed jobs (download + engine + upload).").expect("valid metric"),
            put_requests: counter("tcoder_storage_put_requests_total", "Object write requests made to store outputs of completed jobs."),
            job_cost: Histogram::with_opts(
                HistogramOpts::new("tcoder_job_cost_usd", "Estimated cost per completed job in US dollars.")
                    .buckets(vec![0.000_01, 0.000_1, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            )
            .expect("valid metric"),
        };
        metrics.register(&m.jobs);
        init_series(
            &m.jobs,
            &[
                &["completed", "none"],
                &["retried", "none"],
                &["released", "none"],
                &["fenced", "none"],
                &["canceled", "none"],
                &["skipped", "none"],
            ],
        );
        init_series(
            &m.stage_seconds,
            &[&["download"], &["probe"], &["encode"], &["upload"], &["commit"]],
        );
        metrics.register(&m.stage_seconds);
        metrics.register(&m.job_seconds);
        metrics.register(&m.encode_speed);
        metrics.register(&m.cost_usd);
        metrics.register(&m.machine_seconds);
        metrics.register(&m.job_cost);
        metrics.register(&m.waiting_for_redis);
        metrics.register(&m.waiting_for_store);
        for c in [
            &m.engine_cpu_seconds,
            &m.bytes_in,
            &m.bytes_out,
            &m.redeliveries,
            &m.lease_renewals_failed,
            &m.self_fences,
            &m.commit_retries,
            &m.store_retries,
            &m.sandbox_incomplete,
            &m.put_requests,
        ] {
            metrics.register(c);
        }
        m
    }

    /// Adds a committed job's cost.
    pub(crate) fn record_cost(&self, cost: &JobCost) {
        self.cost_usd.inc_by(cost.estimated_usd);
        self.job_cost.observe(cost.estimated_usd);
        self.machine_seconds.inc_by(cost.usage.machine_secs);
        self.put_requests.inc_by(cost.usage.put_requests);
    }
}
