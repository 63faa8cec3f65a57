//! Every NATS subject, stream and consumer name, and nowhere else.
//!
//! | stream | subjects | retention |
//! |---|---|---|
//! | `UPLOADS` | `tcoder.uploads.<bucket>` | limits (7 d) |
//! | `JOBS` | `tcoder.jobs.<priority>` | work queue |
//! | `EVENTS` | `tcoder.events.<job_id>.<kind>` | limits (7 d) |
//! | `DLQ` | `tcoder.dlq.jobs` | limits (30 d) |

use crate::jobs::Priority;

pub const UPLOADS_STREAM: &str = "UPLOADS";
pub const JOBS_STREAM: &str = "JOBS";
pub const EVENTS_STREAM: &str = "EVENTS";
pub const DLQ_STREAM: &str = "DLQ";

/// Wildcards the streams capture.
pub const UPLOADS_ALL: &str = "tcoder.uploads.>";
pub const JOBS_ALL: &str = "tcoder.jobs.>";
pub const EVENTS_ALL: &str = "tcoder.events.>";
pub const DLQ_ALL: &str = "tcoder.dlq.>";

/// The one subject dead-lettered jobs are published to.
pub const DLQ_JOBS: &str = "tcoder.dlq.jobs";

/// Durable consumer through which the dispatcher turns upload events into jobs.
pub const UPLOADS_CONSUMER: &str = "dispatcher";

/// Normalized object-created events for one bucket.
pub fn uploads(bucket: &str) -> String {
    format!("tcoder.uploads.{bucket}")
}

/// Work items of one priority.
pub fn jobs(priority: Priority) -> String {
    format!("tcoder.jobs.{priority}")
}

/// Durable consumer workers pull jobs of one priority from (one per priority, so a worker can
/// drain `high` before `normal` before `low`).
pub fn jobs_consumer(priority: Priority) -> String {
    format!("workers-{priority}")
}

/// One lifecycle event of one job, e.g. `tcoder.events.<job>.completed`.
pub fn event(job_id: &str, kind: &str) -> String {
    format!("tcoder.events.{job_id}.{kind}")
}

/// Advisory the server publishes when a JOBS message has used up its deliveries.
pub fn max_deliveries_advisory(consumer: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{JOBS_STREAM}.{consumer}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_fall_under_their_stream_wildcards() {
        let under = |subject: &str, all: &str| subject.starts_with(all.trim_end_matches('>'));
        assert!(under(&uploads("tcoder"), UPLOADS_ALL));
        assert!(under(&jobs(Priority::High), JOBS_ALL));
        assert!(under(&event("j1", "completed"), EVENTS_ALL));
        assert!(under(DLQ_JOBS, DLQ_ALL));
    }
}
