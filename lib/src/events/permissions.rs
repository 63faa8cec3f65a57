//! What each service may publish and subscribe to on NATS — one user per service, so a
//! compromised or buggy part can only speak its own subjects: a worker cannot queue work,
//! announce uploads or write dead letters, ingest cannot ack jobs, and nobody but the
//! administrator (the `cli` user) may delete streams. `tcoder up` writes these into its
//! nats-server configuration ([`authorization_block`]); deploy/nats/nats-server.conf shows the
//! same for production.

use crate::config::Service;

/// Subjects of one user (NATS wildcards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: &'static [&'static str],
    pub publish_deny: &'static [&'static str],
    pub subscribe: &'static [&'static str],
}

/// JetStream API calls that destroy data: the administrator's alone.
const DESTRUCTIVE: &[&str] =
    &["$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>", "$JS.API.CONSUMER.DELETE.>"];

/// [`DESTRUCTIVE`], removing single messages (work items: the dispatcher's alone) and
/// updating a stream (an update is a purge: `max_age` 1 s empties it; the dispatcher keeps the
/// streams' settings, ingest only creates a missing one).
const DESTRUCTIVE_OR_REMOVING_MESSAGES: &[&str] = &[
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.CONSUMER.DELETE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.STREAM.UPDATE.>",
];

/// The permissions of `service`'s user.
pub fn for_service(service: Service) -> Permissions {
    match service {
        // Announces uploads, job events and rejections; follows events for the SSE streams;
        // acks submissions. It answers a producer only on that producer's tenant's inbox
        // (`_INBOX_<tenant>.>`), added per producer tenant by [`authorization_block_with_producers`]:
        // never `allow_responses`, which would let a producer name any reply subject — another
        // tenant's events, the DLQ, JetStream's API — and have ingest publish there.
        Service::Ingest => Permissions {
            publish: &[
                "$JS.API.>",
                "$JS.ACK.SUBMIT.>",
                "tcoder.uploads.>",
                "tcoder.events.>",
                "tcoder.rejected.>",
            ],
            publish_deny: DESTRUCTIVE_OR_REMOVING_MESSAGES,
            subscribe: &["_INBOX.>", "tcoder.events.>", "tcoder.submit.*"],
        },
        // Queues work, dead-letters, announces, acks the uploads, webhooks and DLQ consumers,
        // removes settled work items.
        Service::Dispatcher => Permissions {
            publish: &[
                "$JS.API.>",
                "$JS.ACK.>",
                "tcoder.jobs.>",
                "tcoder.events.>",
                "tcoder.dlq.>",
            ],
            publish_deny: DESTRUCTIVE,
            // Wake-ups of new work (the scaler sizes the pool on them).
            subscribe: &["_INBOX.>", "tcoder.jobs.>"],
        },
        // Pulls and acks work items, publishes its jobs' events, hears wake-ups and cancels —
        // and no other JetStream API: it finds the JOBS stream and its consumers made by the
        // dispatcher or ingest, and cannot create, update or purge a stream (a `max_age` of
        // 1 s would empty every tenant's event history) or read another stream's messages;
        // as a split job's coordinator, invites helpers with part items — one token longer
        // than a job's item (`tcoder.jobs.<priority>.<job>.p<k>`), so it still cannot queue
        // a job.
        Service::Worker => Permissions {
            publish: &[
                "$JS.API.INFO",
                "$JS.API.STREAM.INFO.JOBS",
                "$JS.API.CONSUMER.INFO.JOBS.*",
                "$JS.API.CONSUMER.MSG.NEXT.JOBS.*",
                "$JS.ACK.JOBS.>",
                "tcoder.jobs.*.*.*",
                "tcoder.events.>",
            ],
            publish_deny: DESTRUCTIVE_OR_REMOVING_MESSAGES,
            subscribe: &["_INBOX.>", "tcoder.jobs.>", "tcoder.events.>"],
        },
        // The operator's tools (dead-letter replay, inspection): everything.
        Service::Cli => Permissions { publish: &[">"], publish_deny: &[], subscribe: &[">"] },
    }
}

/// The permissions of one tenant's event producer (user `producer-<tenant>`): it may submit
/// for its own tenant only, hear the answers (on its own inbox prefix, `_INBOX_<tenant>.>` —
/// connect with that inbox prefix — so it cannot read another producer's replies), follow
/// its own tenant's job events (`tcoder.events.<tenant>.>`) and rejections.
pub fn producer(tenant: &crate::jobs::Tenant) -> (String, Vec<String>, Vec<String>) {
    (
        format!("producer-{tenant}"),
        vec![super::subjects::submit(tenant.as_str())],
        vec![
            format!("{}.>", super::subjects::producer_inbox(tenant)),
            super::subjects::tenant_events(tenant.as_str()),
            super::subjects::rejected(tenant.as_str()),
        ],
    )
}

/// A nats-server `authorization` block with one user per `(service, password)`, each limited
/// to [`for_service`]; anonymous clients are refused. A password `$NAME` is written as the
/// server's variable `NAME` (deploy/nats/nats-server.conf).
pub fn authorization_block(users: &[(Service, &str)]) -> String {
    authorization_block_with_producers(users, &[])
}

/// [`authorization_block`] plus one producer user per `(tenant, password)` ([`producer`]).
pub fn authorization_block_with_producers(
    users: &[(Service, &str)],
    producers: &[(crate::jobs::Tenant, &str)],
) -> String {
    let list = |subjects: &[&str]| {
        subjects.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
    };
    // `$NAME` is a nats-server variable (the deployment's secret), used unquoted.
    let quoted = |password: &str| match password.starts_with('$') {
        true => password.to_owned(),
        false => format!("\"{password}\""),
    };
    let mut block = String::from("authorization {\n  users: [\n");
    // Ingest answers each producer tenant on that tenant's inbox, and nowhere else.
    let inboxes: Vec<String> = producers
        .iter()
        .map(|(tenant, _)| format!("{}.>", super::subjects::producer_inbox(tenant)))
        .collect();
    for (service, password) in users {
        let p = for_service(*service);
        let password = quoted(password);
        let mut publish: Vec<&str> = p.publish.to_vec();
        if *service == Service::Ingest {
            publish.extend(inboxes.iter().map(String::as_str));
        }
        block.push_str(&format!(
            "    {{ user: \"{}\", password: {password}, permissions: {{ publish: {{ allow: [{}], deny: [{}] }}, subscribe: {{ allow: [{}] }} }} }}\n",
            service.name(),
            list(&publish),
            list(p.publish_deny),
            list(p.subscribe),
        ));
    }
    for (tenant, password) in producers {
        let (user, publish, subscribe) = producer(tenant);
        let password = quoted(password);
        let publish: Vec<&str> = publish.iter().map(String::as_str).collect();
        let subscribe: Vec<&str> = subscribe.iter().map(String::as_str).collect();
        block.push_str(&format!(
            "    {{ user: \"{user}\", password: {password}, permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }} }} }}\n",
            list(&publish),
            list(&subscribe),
        ));
    }
    block.push_str("  ]\n}\n");
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_dispatcher_queues_work_and_only_the_operator_destroys() {
        let may_publish = |service, subject: &str| {
            let p = for_service(service);
            // NATS wildcards: `*` one token, `>` the rest.
            let matches = |pattern: &&str| {
                let (mut want, mut have) = (pattern.split('.'), subject.split('.'));
                loop {
                    match (want.next(), have.next()) {
                        (Some(">"), Some(_)) => return true,
                        (Some("*"), Some(_)) => {}
                        (Some(w), Some(h)) if w == h => {}
                        (None, None) => return true,
                        _ => return false,
                    }
                }
            };
            p.publish.iter().any(matches) && !p.publish_deny.iter().any(matches)
        };
        let work = "tcoder.jobs.normal.job_1";
        assert!(may_publish(Service::Dispatcher, work));
        assert!(!may_publish(Service::Worker, work));
        // A coordinator invites helpers to the parts of its split job.
        assert!(may_publish(Service::Worker, "tcoder.jobs.normal.job_1.p3"));
        assert!(!may_publish(Service::Worker, "tcoder.jobs.normal.job_1.p3.x"));
        assert!(!may_publish(Service::Ingest, work));
        assert!(!may_publish(Service::Worker, "tcoder.uploads.tcoder"));
        assert!(!may_publish(Service::Worker, "tcoder.dlq.jobs"));
        for denied in [
            "$JS.API.STREAM.UPDATE.EVENTS",
            "$JS.API.STREAM.CREATE.EVENTS",
            "$JS.API.CONSUMER.CREATE.UPLOADS.x",
            "$JS.API.CONSUMER.MSG.NEXT.DLQ.dlq",
            "$JS.API.STREAM.MSG.GET.UPLOADS",
            "$JS.API.DIRECT.GET.DLQ",
        ] {
            assert!(!may_publish(Service::Worker, denied), "{denied}");
        }
        assert!(may_publish(Service::Worker, "$JS.API.CONSUMER.MSG.NEXT.JOBS.jobs-normal"));
        // Only the dispatcher (and the operator) may change a stream's settings.
        assert!(!may_publish(Service::Ingest, "$JS.API.STREAM.UPDATE.EVENTS"));
        assert!(may_publish(Service::Ingest, "$JS.API.STREAM.CREATE.EVENTS"));
        assert!(may_publish(Service::Dispatcher, "$JS.API.STREAM.UPDATE.EVENTS"));
        for service in [Service::Ingest, Service::Dispatcher, Service::Worker] {
            assert!(!may_publish(service, "$JS.API.STREAM.DELETE.JOBS"), "{service:?}");
            assert!(!may_publish(service, "$JS.API.STREAM.PURGE.EVENTS"), "{service:?}");
        }
        assert!(may_publish(Service::Cli, "$JS.API.STREAM.DELETE.JOBS"));
    }
}
