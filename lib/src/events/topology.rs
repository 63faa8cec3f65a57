//! The streams and durable consumers of docs/DESIGN.md, created or updated idempotently at start by
//! every service (whichever starts first creates them; the rest find them in place).
//!
//! The server itself must run with `jetstream { sync_interval: always }` so an acknowledged
//! publish is on disk (deploy/nats/nats-server.conf); that is server configuration, not
//! something a client can set.

use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};

use super::{Config, NatsError, subjects};
use crate::jobs::Priority;

/// The five streams, configured from `[nats]`.
pub fn stream_configs(config: &Config) -> Vec<stream::Config> {
    let base = |name: &str, subject: &str, retention, max_age| stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        retention,
        max_age,
        storage: StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        // A full stream refuses new messages rather than silently dropping old ones.
        discard: DiscardPolicy::New,
        ..Default::default()
    };
    vec![
        base(
            subjects::UPLOADS_STREAM,
            subjects::UPLOADS_ALL,
            RetentionPolicy::Limits,
            config.uploads_max_age,
        ),
        // Work-queue retention: an acked (or termed) job is removed; nothing else removes it.
        base(
            subjects::JOBS_STREAM,
            subjects::JOBS_ALL,
            RetentionPolicy::WorkQueue,
            Default::default(),
        ),
        stream::Config {
            subjects: vec![subjects::EVENTS_ALL.to_owned(), subjects::REJECTED_ALL.to_owned()],
            ..base(
                subjects::EVENTS_STREAM,
                subjects::EVENTS_ALL,
                RetentionPolicy::Limits,
                config.events_max_age,
            )
        },
        // Submissions wait here while ingest is away. No acks: a producer's request is
        // answered by ingest (the job id), not by the stream; a plain publish is kept all
        // the same.
        stream::Config {
            no_ack: true,
            ..base(
                subjects::SUBMIT_STREAM,
                subjects::SUBMIT_ALL,
                RetentionPolicy::WorkQueue,
                config.uploads_max_age,
            )
        },
        stream::Config {
            subjects: vec![
                subjects::DLQ_ALL.to_owned(),
                subjects::MAX_DELIVERIES_ADVISORIES.to_owned(),
                subjects::TERMINATED_ADVISORIES.to_owned(),
            ],
            ..base(
                subjects::DLQ_STREAM,
                subjects::DLQ_ALL,
                RetentionPolicy::Limits,
                config.dlq_max_age,
            )
        },
    ]
}

/// The durable pull consumers, as `(stream, config)`.
pub fn consumer_configs(config: &Config) -> Vec<(&'static str, pull::Config)> {
    let mut consumers = vec![
        (
            subjects::DLQ_STREAM,
            pull::Config {
                durable_name: Some(subjects::DLQ_CONSUMER.to_owned()),
                filter_subject: "$JS.EVENT.ADVISORY.CONSUMER.*.JOBS.>".to_owned(),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: std::time::Duration::from_secs(30),
                max_deliver: 20,
                num_replicas: config.replicas,
                ..Default::default()
            },
        ),
        (
            subjects::EVENTS_STREAM,
            pull::Config {
                durable_name: Some(subjects::WEBHOOKS_CONSUMER.to_owned()),
                filter_subject: subjects::EVENTS_ALL.to_owned(),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::New,
                ack_wait: std::time::Duration::from_secs(60),
                // Enough for the retry schedule; the webhook deliverer stops earlier itself.
                max_deliver: 20,
                num_replicas: config.replicas,
                ..Default::default()
            },
        ),
        (
            subjects::SUBMIT_STREAM,
            pull::Config {
                durable_name: Some(subjects::SUBMIT_CONSUMER.to_owned()),
                filter_subject: subjects::SUBMIT_ALL.to_owned(),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: std::time::Duration::from_secs(30),
                // Only an outage makes ingest give one back (bad input is answered and
                // acked): no delivery limit, the stream's max age bounds a message's life.
                max_deliver: -1,
                num_replicas: config.replicas,
                ..Default::default()
            },
        ),
        (
            subjects::UPLOADS_STREAM,
            pull::Config {
                durable_name: Some(subjects::UPLOADS_CONSUMER.to_owned()),
                filter_subject: subjects::UPLOADS_ALL.to_owned(),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: std::time::Duration::from_secs(30),
                max_deliver: 10,
                num_replicas: config.replicas,
                ..Default::default()
            },
        ),
    ];
    for priority in Priority::ALL {
        consumers.push((
            subjects::JOBS_STREAM,
            pull::Config {
                durable_name: Some(subjects::jobs_consumer(priority)),
                filter_subject: subjects::jobs(priority),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: config.jobs_ack_wait,
                // Finite, so a poison job ends in the dead-letter queue instead of looping.
                max_deliver: config.jobs_max_deliver,
                num_replicas: config.replicas,
                ..Default::default()
            },
        ));
    }
    consumers
}

/// Creates (or brings up to date) every stream and consumer. Safe to run concurrently from
/// several services and on every start. The dispatcher's; the operator's `cli` may too.
pub async fn ensure_topology(js: &Context, config: &Config) -> Result<(), NatsError> {
    ensure(js, config, true).await
}

/// As [`ensure_topology`], but a stream that exists is left as it is: for ingest, whose user
/// may not update streams (an update is a purge: `max_age` 1 s empties a stream).
pub async fn ensure_topology_without_updates(
    js: &Context,
    config: &Config,
) -> Result<(), NatsError> {
    ensure(js, config, false).await
}

async fn ensure(js: &Context, config: &Config, update: bool) -> Result<(), NatsError> {
    for stream in stream_configs(config) {
        let name = stream.name.clone();
        let topology =
            |e: String| NatsError::Topology { what: format!("stream {name}"), reason: e };
        if update {
            js.create_or_update_stream(stream).await.map_err(|e| topology(e.to_string()))?;
        } else if js.get_stream(&name).await.is_err() {
            js.create_stream(stream).await.map_err(|e| topology(e.to_string()))?;
        }
    }
    for (stream_name, consumer) in consumer_configs(config) {
        let what = format!(
            "consumer {stream_name}/{}",
            consumer.durable_name.as_deref().unwrap_or_default()
        );
        let stream = js
            .get_stream(stream_name)
            .await
            .map_err(|e| NatsError::Topology { what: what.clone(), reason: e.to_string() })?;
        stream
            .create_consumer(consumer)
            .await
            .map_err(|e| NatsError::Topology { what, reason: e.to_string() })?;
    }
    Ok(())
}

/// Waits (bounded) until the JOBS stream and its consumers exist, for a role that may not
/// create them (workers: see `permissions`). The dispatcher makes them at its start; a worker
/// is started by it, so this normally answers at once.
pub async fn await_jobs_topology(
    js: &Context,
    patience: std::time::Duration,
) -> Result<(), NatsError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        let found = async {
            let stream = js.get_stream(subjects::JOBS_STREAM).await.map_err(|e| e.to_string())?;
            for priority in Priority::ALL {
                let name = subjects::jobs_consumer(priority);
                let _: async_nats::jetstream::consumer::PullConsumer =
                    stream.get_consumer(&name).await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }
        .await;
        match found {
            Ok(()) => return Ok(()),
            Err(reason) if tokio::time::Instant::now() + delay > deadline => {
                return Err(NatsError::Topology { what: "the JOBS stream".into(), reason });
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(2));
            }
        }
    }
}

/// Work items of `priority` waiting or in flight (delivered, not yet acked) on the JOBS
/// stream: the demand the scaler serves and the depth operators watch.
pub async fn queue_depth(
    stream: &async_nats::jetstream::stream::Stream,
    priority: crate::jobs::Priority,
) -> anyhow::Result<u64> {
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(&super::subjects::jobs_consumer(priority))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = consumer.info().await?;
    Ok(info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or(0))
}

/// The messages of durable consumer `consumer` on `stream` (both created by
/// [`ensure_topology`]), as a long-running service reads them: heartbeats reveal a dead
/// connection, and each pull expires and is renewed. At most `batch` messages are pulled
/// ahead — as many as the caller handles at once: a message left waiting in the client's
/// buffer while a handler holds out an outage runs down its AckWait, and JetStream delivers it
/// again into the same buffer, so it would be handled twice (a webhook sent twice).
pub async fn durable_messages(
    js: &Context,
    stream: &str,
    consumer: &str,
    batch: usize,
) -> anyhow::Result<async_nats::jetstream::consumer::pull::Stream> {
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(stream)
        .await?
        .get_consumer(consumer)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(consumer
        .stream()
        .max_messages_per_batch(batch.max(1))
        .heartbeat(std::time::Duration::from_secs(5))
        .expires(std::time::Duration::from_secs(30))
        .messages()
        .await?)
}
