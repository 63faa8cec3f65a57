//! The dispatcher's metrics. Labels are bounded (outcomes, actions, states), never ids.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use tcoder::metrics::{Metrics, init_series};

#[derive(Clone, Debug)]
pub(crate) struct DispatcherMetrics {
    pub upload_events: IntCounterVec,
    pub reconcile_actions: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub dlq_depth: IntGauge,
    pub webhook_attempts: IntCounterVec,
    pub webhook_latency: Histogram,
    pub admission: IntCounterVec,
    pub machines: IntGaugeVec,
    pub provider_calls: IntCounterVec,
    pub reaper_actions: IntCounterVec,
    pub leader: IntGaugeVec,
}

/// A counter vector registered with its known label values at zero (see [`init_series`]).
fn counter(
    metrics: &Metrics,
    name: &str,
    help: &str,
    labels: &[&str],
    known: &[&[&str]],
) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    metrics.register(&counter);
    init_series(&counter, known);
    counter
}

impl DispatcherMetrics {
    pub(crate) fn register(metrics: &Metrics) -> DispatcherMetrics {
        let webhook_latency = Histogram::with_opts(
            HistogramOpts::new(
                "tcoder_webhook_duration_seconds",
                "Time of one webhook attempt (connect to answer).",
            )
            .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .expect("valid metric");
        metrics.register(&webhook_latency);
        let dlq_depth = IntGauge::new("tcoder_dlq_jobs", "Dead letters kept on the DLQ stream.")
            .expect("valid metric");
        metrics.register(&dlq_depth);
        let machines = IntGaugeVec::new(
            Opts::new("tcoder_machines", "Worker machines in the pool, by provider and state."),
            &["provider", "state"],
        )
        .expect("valid metric");
        metrics.register(&machines);
        let leader = IntGaugeVec::new(
            Opts::new(
                "tcoder_dispatcher_leader",
                "1 while this dispatcher runs the singleton loop (reconciler, reaper), else 0.",
            ),
            &["role"],
        )
        .expect("valid metric");
        metrics.register(&leader);
        for role in ["reconciler", "reaper"] {
            leader.with_label_values(&[role]).set(0);
        }
        DispatcherMetrics {
            upload_events: counter(
                metrics,
                "tcoder_dispatcher_upload_events_total",
                "Upload events handled by the dispatcher, by outcome (queued, republished, deferred, not_uploaded, unknown_job, raced, retry).",
                &["outcome"],
                &[
                    &["queued"],
                    &["republished"],
                    &["deferred"],
                    &["not_uploaded"],
                    &["unknown_job"],
                    &["raced"],
                    &["retry"],
                ],
            ),
            reconcile_actions: counter(
                metrics,
                "tcoder_reconciler_actions_total",
                "Stuck jobs the reconciler moved, by action (queued_upload, republished, requeued_lapsed, dead_lettered).",
                &["action"],
                &[&["queued_upload"], &["republished"], &["requeued_lapsed"], &["dead_lettered"]],
            ),
            dead_letters: counter(
                metrics,
                "tcoder_dead_letters_total",
                "Undeliverable work items settled (MAX_DELIVERIES advisories, and lapsed jobs the reconciler found), by outcome (dead_lettered, requeued, running_elsewhere, ended, moved, gone, unknown_job, malformed, part).",
                &["outcome"],
                &[
                    &["dead_lettered"],
                    &["requeued"],
                    &["running_elsewhere"],
                    &["gone"],
                    &["unknown_job"],
                    &["malformed"],
                ],
            ),
            dlq_depth,
            leader,
            webhook_attempts: counter(
                metrics,
                "tcoder_webhook_attempts_total",
                "Webhook attempts, by outcome (delivered, failed, gone, refused, exhausted; duplicate: a redelivered event whose webhook had already ended, not sent; contradicted: an event the job record contradicts — forged or stale — not sent).",
                &["outcome"],
                &[
                    &["delivered"],
                    &["failed"],
                    &["gone"],
                    &["refused"],
                    &["exhausted"],
                    &["duplicate"],
                    &["contradicted"],
                ],
            ),
            webhook_latency,
            admission: counter(
                metrics,
                "tcoder_admission_decisions_total",
                "Admission control decisions, by decision (start, create, at_capacity, tenant_capped, none_needed).",
                &["decision"],
                &[&["start"], &["create"], &["at_capacity"], &["tenant_capped"], &["none_needed"]],
            ),
            machines,
            provider_calls: counter(
                metrics,
                "tcoder_provider_calls_total",
                "Machine provider API calls, by provider, action and outcome.",
                &["provider", "action", "outcome"],
                &[],
            ),
            reaper_actions: counter(
                metrics,
                "tcoder_reaper_actions_total",
                "Reaper actions, by action (stopped_idle, reclaimed_dead, destroyed_orphan).",
                &["action"],
                &[&["stopped_idle"], &["reclaimed_dead"], &["destroyed_orphan"]],
            ),
        }
    }
}
