//! What each service's Redis user may read and write — the one table `tcoder up` writes into
//! redis-server's ACL file and deploy/redis/redis.conf shows for production (a test keeps them
//! equal). Redis 7 selectors: `%RW~pattern` read and write, `%R~pattern` read only. Lua
//! scripts are checked key by key as they run, so a script cannot reach past its caller's keys.
//!
//! Why per role: with one `~tcoder:*` user for every service, a worker's password could mint an
//! API key for any tenant (`HSET tcoder:apikeys <sha256> <tenant>`) or replace a tenant's
//! webhook secret. Now API keys are written by the operator (`cli`) alone; tenant secrets by
//! ingest alone (it creates them with the first job that has a webhook); workers touch only
//! job state, the outbox and their own machine records.

use crate::config::Service;

/// Job state every job-handling role moves: job hashes (with leases, parts and history), the
/// per-tenant and per-status indexes the scripts update, and the outbox of terminal events.
const JOB_STATE: &[&str] = &["tcoder:job:*", "tcoder:jobs:*", "tcoder:status:*", "tcoder:outbox"];

/// `(read-write patterns, read-only patterns)` of `service`'s user.
pub fn key_patterns(service: Service) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut write: Vec<&'static str> = JOB_STATE.to_vec();
    let read: Vec<&'static str> = match service {
        // Jobs from the API, NATS and watch folders; idempotency records; the per-key rate
        // limit; watch rules and rejected versions; tenant webhook secrets; API keys (read).
        Service::Ingest => {
            write.extend([
                "tcoder:idem:*",
                "tcoder:rate:*",
                "tcoder:watch:*",
                "tcoder:webhook_secret:*",
                "tcoder:leader:*",
            ]);
            vec!["tcoder:apikeys", "tcoder:apikeys:revoked"]
        }
        // Queues and fails jobs, admits and tracks machines, leads singleton loops, signs
        // webhooks with the tenant's secret (read).
        Service::Dispatcher => {
            write.extend([
                "tcoder:machines*",
                "tcoder:capacity:*",
                "tcoder:pool",
                "tcoder:leader:*",
            ]);
            vec!["tcoder:webhook_secret:*"]
        }
        // Claims, renews and commits its attempts; heartbeats its own machine record.
        Service::Worker => {
            write.push("tcoder:machines*");
            Vec::new()
        }
        Service::Cli => return (vec!["*"], Vec::new()),
    };
    (write, read)
}

/// The rule of `service`'s user after its password: keys as [`key_patterns`] says, every
/// channel, every command but the administrative ones (the operator: everything).
pub fn rights(service: Service) -> String {
    if service == Service::Cli {
        return "~* &* +@all".to_owned();
    }
    let (write, read) = key_patterns(service);
    let mut rule: Vec<String> = write.iter().map(|p| format!("%RW~{p}")).collect();
    rule.extend(read.iter().map(|p| format!("%R~{p}")));
    rule.push("&* +@all -@dangerous".to_owned());
    rule.join(" ")
}

/// A redis-server ACL file: the default user off (it keeps its rights: Redis replays the AOF
/// as that user at start, and without them the replay fails and the data is lost), and one
/// user per `(service, password)`.
pub fn acl_file(users: &[(Service, &str)]) -> String {
    let mut acl = String::from("user default off ~* &* +@all\n");
    for (service, password) in users {
        acl.push_str(&format!("user {} on >{password} {}\n", service.name(), rights(*service)));
    }
    acl
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `pattern` (Redis glob, `*` only) matches `key`.
    fn glob(pattern: &str, key: &str) -> bool {
        match pattern.split_once('*') {
            None => pattern == key,
            Some((head, tail)) => {
                key.starts_with(head) && {
                    let rest = &key[head.len()..];
                    (0..=rest.len()).any(|i| glob(tail, &rest[i..]))
                }
            }
        }
    }

    fn may_write(service: Service, key: &str) -> bool {
        key_patterns(service).0.iter().any(|p| glob(p, key))
    }

    #[test]
    fn only_the_operator_writes_api_keys_and_only_ingest_tenant_secrets() {
        for service in [Service::Ingest, Service::Dispatcher, Service::Worker] {
            assert!(!may_write(service, "tcoder:apikeys"), "{service:?}");
            assert!(!may_write(service, "tcoder:apikeys:revoked"), "{service:?}");
            assert!(may_write(service, "tcoder:job:job_1:lease"), "{service:?}");
            assert!(may_write(service, "tcoder:status:queued"), "{service:?}");
        }
        assert!(may_write(Service::Cli, "tcoder:apikeys"));
        assert!(may_write(Service::Ingest, "tcoder:webhook_secret:acme"));
        for service in [Service::Dispatcher, Service::Worker] {
            assert!(!may_write(service, "tcoder:webhook_secret:acme"), "{service:?}");
            assert!(!may_write(service, "tcoder:watch:rules"), "{service:?}");
            assert!(!may_write(service, "tcoder:idem:acme:x"), "{service:?}");
        }
        assert!(!may_write(Service::Worker, "tcoder:capacity:reservations"));
        assert!(!may_write(Service::Worker, "tcoder:leader:reaper"));
        assert_eq!(
            rights(Service::Worker),
            "%RW~tcoder:job:* %RW~tcoder:jobs:* %RW~tcoder:status:* %RW~tcoder:outbox \
             %RW~tcoder:machines* &* +@all -@dangerous"
        );
    }
}
