use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, stream::RetentionPolicy};
use futures_util::StreamExt;
use tcoder::events::{self, subjects};
use tcoder::jobs::Priority;
use testkit::{TestEnv, http_get};

use crate::helpers::settings;

#[tokio::test]
async fn topology_is_created_idempotently_with_the_designed_retention() {
    let env = TestEnv::start();
    let settings = settings(&env);
    let client = events::connect(&settings.nats, "test").await.unwrap();
    let js = jetstream::new(client);

    events::ensure_topology(&js, &settings.nats).await.unwrap();
    // A second service starting later runs the same set-up; it must succeed and change nothing.
    events::ensure_topology(&js, &settings.nats).await.unwrap();

    let mut jobs = js.get_stream(subjects::JOBS_STREAM).await.unwrap();
    let info = jobs.info().await.unwrap();
    assert_eq!(info.config.retention, RetentionPolicy::WorkQueue);
    assert_eq!(info.config.subjects, vec![subjects::JOBS_ALL.to_owned()]);
    for (name, retention) in [
        (subjects::UPLOADS_STREAM, RetentionPolicy::Limits),
        (subjects::EVENTS_STREAM, RetentionPolicy::Limits),
        (subjects::DLQ_STREAM, RetentionPolicy::Limits),
    ] {
        let mut stream = js.get_stream(name).await.unwrap();
        assert_eq!(stream.info().await.unwrap().config.retention, retention, "{name}");
    }
    for priority in Priority::ALL {
        let consumer: PullConsumer =
            jobs.get_consumer(&subjects::jobs_consumer(priority)).await.unwrap();
        let config = &consumer.cached_info().config;
        assert_eq!(config.max_deliver, settings.nats.jobs_max_deliver);
        assert_eq!(config.filter_subject, subjects::jobs(priority));
    }
}

#[tokio::test]
async fn a_job_message_is_deduplicated_consumed_and_removed_on_explicit_ack() {
    let env = TestEnv::start();
    let settings = settings(&env);
    let client = events::connect(&settings.nats, "test").await.unwrap();
    let js = jetstream::new(client);
    events::ensure_topology(&js, &settings.nats).await.unwrap();

    let publish = |payload: &'static str| {
        let js = js.clone();
        async move {
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .message_id("job-1/attempt-1");
            js.send_publish(subjects::job(Priority::Normal, "job-1"), message)
                .await
                .unwrap()
                .await
                .unwrap()
        }
    };
    let first = publish("job-1").await;
    let again = publish("job-1").await;
    assert!(!first.duplicate);
    assert!(again.duplicate, "same Nats-Msg-Id within the window must be dropped");
    assert_eq!(again.sequence, first.sequence);

    let stream = js.get_stream(subjects::JOBS_STREAM).await.unwrap();
    let consumer: PullConsumer =
        stream.get_consumer(&subjects::jobs_consumer(Priority::Normal)).await.unwrap();
    let mut batch =
        consumer.fetch().max_messages(1).expires(Duration::from_secs(5)).messages().await.unwrap();
    let message = batch.next().await.expect("one message").unwrap();
    assert_eq!(&message.payload[..], b"job-1");
    message.ack_with(AckKind::Ack).await.unwrap();
    // double-ack semantics are not needed: wait (bounded) until the work queue drops it.
    testkit::eventually_async(Duration::from_secs(5), || {
        let mut stream = stream.clone();
        async move {
            let messages = stream.info().await.map_err(|e| e.to_string())?.state.messages;
            if messages == 0 { Ok(()) } else { Err(format!("{messages} messages left")) }
        }
    })
    .await;
}

#[test]
fn the_test_server_runs_with_sync_interval_always() {
    let env_nats = testkit::NatsServer::start();
    let (status, varz) = http_get(env_nats.monitor_addr(), "/varz").unwrap();
    assert_eq!(status, 200);
    let varz: serde_json::Value = serde_json::from_str(&varz).unwrap();
    assert_eq!(varz["jetstream"]["config"]["sync_always"], serde_json::Value::Bool(true), "{varz}");
}
