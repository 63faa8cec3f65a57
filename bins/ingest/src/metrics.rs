//! Ingest's metrics: API requests, jobs created, uploads accepted or rejected, bridge events.
//! Labels are bounded (routes are templates, never ids).

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};
use tcoder::metrics::{Metrics, init_series};

/// Request latency buckets: an API call is milliseconds, an upload notification a few more.
const HTTP_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Clone, Debug)]
pub(crate) struct IngestMetrics {
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub jobs_created: IntCounterVec,
    pub uploads: IntCounterVec,
    pub bridge_events: IntCounterVec,
    pub submissions: IntCounterVec,
    pub imports: IntCounterVec,
    pub auth_failures: IntCounter,
    pub event_streams_open: IntGauge,
    pub event_streams_refused: IntCounterVec,
}

impl IngestMetrics {
    pub(crate) fn register(metrics: &Metrics) -> IngestMetrics {
        let m = IngestMetrics {
            http_requests: IntCounterVec::new(
                Opts::new("tcoder_http_requests_total", "HTTP requests answered, by route template, method and status."),
                &["route", "method", "status"],
            )
            .expect("valid metric"),
            http_duration: HistogramVec::new(
                HistogramOpts::new("tcoder_http_request_duration_seconds", "Time to answer an HTTP request.")
                    .buckets(HTTP_BUCKETS.to_vec()),
                &["route", "method"],
            )
            .expect("valid metric"),
            jobs_created: IntCounterVec::new(
                Opts::new("tcoder_jobs_created_total", "Jobs created through the API, by preset."),
                &["preset"],
            )
            .expect("valid metric"),
            uploads: IntCounterVec::new(
                Opts::new("tcoder_uploads_total", "Upload notifications for known jobs, by outcome (accepted or the rejection reason)."),
                &["outcome"],
            )
            .expect("valid metric"),
            bridge_events: IntCounterVec::new(
                Opts::new("tcoder_bridge_events_total", "Object-created notifications handled by the bridge, by source and outcome."),
                &["source", "outcome"],
            )
            .expect("valid metric"),
            submissions: IntCounterVec::new(
                Opts::new("tcoder_submissions_total", "Jobs submitted on tcoder.submit.<tenant>, by path (request, stored) and outcome (created, replayed, rejected, retry; unanswerable: a request whose reply subject is outside its tenant's inbox)."),
                &["path", "outcome"],
            )
            .expect("valid metric"),
            imports: IntCounterVec::new(
                Opts::new("tcoder_imports_total", "Fetches of jobs' source_url, by outcome (imported; stopped: the job was canceled or deleted meanwhile; retry: the store or Redis failed, the sweep tries again; or the job's error code: source.unreachable, source.too_large, source.forbidden_address)."),
                &["outcome"],
            )
            .expect("valid metric"),
            auth_failures: IntCounter::new("tcoder_auth_failures_total", "Requests with an unknown API key.")
                .expect("valid metric"),
            event_streams_open: IntGauge::new("tcoder_event_streams_open", "Server-sent event streams open on this ingest process.")
                .expect("valid metric"),
            event_streams_refused: IntCounterVec::new(
                Opts::new("tcoder_event_streams_refused_total", "Event streams refused with 429, by the cap reached (tenant, global)."),
                &["scope"],
            )
            .expect("valid metric"),
        };
        metrics.register(&m.http_requests);
        metrics.register(&m.http_duration);
        metrics.register(&m.jobs_created);
        metrics.register(&m.uploads);
        metrics.register(&m.bridge_events);
        metrics.register(&m.submissions);
        metrics.register(&m.imports);
        metrics.register(&m.auth_failures);
        metrics.register(&m.event_streams_open);
        metrics.register(&m.event_streams_refused);
        init_series(&m.imports, &[&["imported"], &["retry"]]);
        init_series(&m.event_streams_refused, &[&["tenant"], &["global"]]);
        init_series(&m.jobs_created, &[&["default"], &["web-optimized"], &["hls"]]);
        init_series(
            &m.uploads,
            &[
                &["accepted"],
                &["not_awaiting"],
                &["missing_object"],
                &["size_mismatch"],
                &["empty"],
                &["too_large"],
            ],
        );
        m
    }
}
