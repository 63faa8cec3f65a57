//! Every NATS subject, stream and consumer name, and nowhere else.
//!
//! | stream | subjects | retention |
//! |---|---|---|
//! | `UPLOADS` | `tcoder.uploads.<bucket>` | limits (7 d) |
//! | `JOBS` | `tcoder.jobs.<priority>.<job_id>`, a split job's parts `….<job_id>.p<k>` | work queue |
//! | `EVENTS` | `tcoder.events.<tenant>.<job_id>.<kind>` | limits (7 d) |
//! | `DLQ` | `tcoder.dlq.jobs`, and the JOBS `MAX_DELIVERIES` / `MSG_TERMINATED` advisories | limits (30 d) |
//! | `SUBMIT` | `tcoder.submit.<tenant>` (no acks: ingest's reply is the answer) | work queue (uploads' max age) |
//!
//! `EVENTS` also keeps `tcoder.rejected.<tenant>`: submissions and watched objects that could
//! not become a job.
//!
//! Work items carry the job id in their subject so the reconciler can ask the stream, per job,
//! whether a message is still waiting (a work-queue stream drops acked messages).

use crate::jobs::Priority;

pub const UPLOADS_STREAM: &str = "UPLOADS";
pub const JOBS_STREAM: &str = "JOBS";
pub const EVENTS_STREAM: &str = "EVENTS";
pub const DLQ_STREAM: &str = "DLQ";
pub const SUBMIT_STREAM: &str = "SUBMIT";

/// Wildcards the streams capture.
pub const UPLOADS_ALL: &str = "tcoder.uploads.>";
pub const JOBS_ALL: &str = "tcoder.jobs.>";
pub const EVENTS_ALL: &str = "tcoder.events.>";
pub const DLQ_ALL: &str = "tcoder.dlq.>";
/// One token: a tenant. Nothing deeper is a submission.
pub const SUBMIT_ALL: &str = "tcoder.submit.*";
pub const REJECTED_ALL: &str = "tcoder.rejected.>";

/// Durable consumer through which ingest turns stored submissions into jobs.
pub const SUBMIT_CONSUMER: &str = "ingest-submit";
/// Core-NATS queue group in which ingest answers submissions sent as requests.
pub const SUBMIT_QUEUE_GROUP: &str = "tcoder-ingest";

/// Where a tenant's producers submit jobs.
pub fn submit(tenant: &str) -> String {
    format!("tcoder.submit.{tenant}")
}

/// The tenant a submission subject names, if it is one.
pub fn submit_tenant(subject: &str) -> Option<crate::jobs::Tenant> {
    crate::jobs::Tenant::parse(subject.strip_prefix("tcoder.submit.")?)
}

/// The inbox prefix a tenant's producers connect with: their requests' replies arrive under
/// `<prefix>.>`, which only they may read.
pub fn producer_inbox(tenant: &crate::jobs::Tenant) -> String {
    format!("_INBOX_{tenant}")
}

/// Whether ingest may answer a submission on `tenant`'s subject at `reply`: only inside that
/// tenant's producer inbox, and only a plain subject (tokens of printable characters, no
/// wildcard). A producer names the reply subject; ingest must not publish for it anywhere else.
pub fn is_producer_reply(tenant: &crate::jobs::Tenant, reply: &str) -> bool {
    let Some(rest) = reply.strip_prefix(&producer_inbox(tenant)).and_then(|r| r.strip_prefix('.'))
    else {
        return false;
    };
    reply.len() <= 256
        && rest.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && token.bytes().all(|b| b.is_ascii_graphic())
        })
}

/// Where a tenant's rejected submissions and watched objects are announced.
pub fn rejected(tenant: &str) -> String {
    format!("tcoder.rejected.{tenant}")
}

/// The one subject dead-lettered jobs are published to.
pub const DLQ_JOBS: &str = "tcoder.dlq.jobs";

/// Durable consumer through which the dispatcher turns upload events into jobs.
pub const UPLOADS_CONSUMER: &str = "dispatcher";

/// Normalized object-created events for one bucket.
pub fn uploads(bucket: &str) -> String {
    format!("tcoder.uploads.{bucket}")
}

/// The work item of one job at one priority.
pub fn job(priority: Priority, job_id: &str) -> String {
    format!("tcoder.jobs.{priority}.{job_id}")
}

/// The work item of part `part` of a split job (see `WorkItem::part`).
pub fn job_part(priority: Priority, job_id: &str, part: u32) -> String {
    format!("tcoder.jobs.{priority}.{job_id}.p{part}")
}

/// Every work item of one priority (a consumer's filter).
pub fn jobs(priority: Priority) -> String {
    format!("tcoder.jobs.{priority}.>")
}

/// Advisories the DLQ stream captures so none is lost while the dispatcher is down.
pub const MAX_DELIVERIES_ADVISORIES: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.JOBS.>";
pub const TERMINATED_ADVISORIES: &str = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.JOBS.>";

/// Durable consumer through which the dispatcher handles advisories on `DLQ`.
pub const DLQ_CONSUMER: &str = "dead-letters";

/// Durable consumer through which the dispatcher delivers webhooks.
pub const WEBHOOKS_CONSUMER: &str = "webhooks";

/// Durable consumer workers pull jobs of one priority from (one per priority, so a worker can
/// drain `high` before `normal` before `low`).
pub fn jobs_consumer(priority: Priority) -> String {
    format!("workers-{priority}")
}

/// One lifecycle event of one job, e.g. `tcoder.events.<tenant>.<job>.completed`. The tenant
/// leads, so a tenant's subscribers (its producer user) are limited to its own events.
pub fn event(tenant: &str, job_id: &str, kind: &str) -> String {
    format!("tcoder.events.{tenant}.{job_id}.{kind}")
}

/// Every event of one tenant's jobs: what its producer user may subscribe to.
pub fn tenant_events(tenant: &str) -> String {
    format!("tcoder.events.{tenant}.>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_answers_a_producer_only_on_its_own_tenant_s_inbox() {
        let local = crate::jobs::Tenant::parse("local").unwrap();
        assert!(is_producer_reply(&local, "_INBOX_local.abc123"));
        assert!(is_producer_reply(&local, "_INBOX_local.abc.def"));
        // Every reply subject the attack named, and relatives.
        for refused in [
            "tcoder.events.job_x.completed",
            "tcoder.events.a.job_x.completed",
            "tcoder.dlq.jobs",
            "tcoder.uploads.tcoder",
            "tcoder.submit.a",
            "tcoder.rejected.a",
            "tcoder.jobs.normal.job_x",
            "$JS.API.STREAM.PURGE.EVENTS",
            "_INBOX_a.abc",
            "_INBOX_localx.abc",
            "_INBOX_local",
            "_INBOX_local.",
            "_INBOX_local.>",
            "_INBOX_local.*",
            "_INBOX_local..x",
            "_INBOX_local.a b",
            "_INBOX.local.abc",
        ] {
            assert!(!is_producer_reply(&local, refused), "{refused}");
        }
    }

    #[test]
    fn subjects_fall_under_their_stream_wildcards() {
        let under = |subject: &str, all: &str| subject.starts_with(all.trim_end_matches('>'));
        assert!(under(&uploads("tcoder"), UPLOADS_ALL));
        assert!(under(&job(Priority::High, "job_1"), JOBS_ALL));
        assert!(under(&job(Priority::High, "job_1"), &jobs(Priority::High)));
        assert!(under(&job_part(Priority::Low, "job_1", 3), &jobs(Priority::Low)));
        assert!(under(&event("acme", "j1", "completed"), EVENTS_ALL));
        assert!(under(DLQ_JOBS, DLQ_ALL));
        assert!(under(&rejected("acme"), REJECTED_ALL));
        assert_eq!(submit_tenant(&submit("acme")).unwrap().as_str(), "acme");
        assert_eq!(submit_tenant("tcoder.submit.acme.x"), None);
        assert_eq!(submit_tenant("tcoder.submit.ACME"), None);
    }
}
