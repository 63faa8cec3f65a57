//! Publishing to JetStream with a `Nats-Msg-Id`, waiting for the broker's acknowledgement,
//! with bounded retries. A publish whose ack times out is "unknown", so it is retried with the
//! same id: the broker drops it if the first attempt did land.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use serde::Serialize;

use super::subjects;
use super::types::{JobEvent, UploadEvent, WorkItem};
use crate::jobs::{Job, now_ms, rfc3339};

/// Attempts per publish (the first plus retries).
const ATTEMPTS: u32 = 4;

/// The broker did not acknowledge a publish after every attempt.
#[derive(Debug, thiserror::Error)]
#[error("publish to {subject} not acknowledged after {ATTEMPTS} attempts: {reason}")]
pub struct PublishError {
    pub subject: String,
    pub reason: String,
}

/// Publishes `payload` as JSON with `msg_id`; returns the ack (`duplicate` is set when the
/// broker had already stored this id).
pub async fn publish_json<T: Serialize>(
    js: &Context,
    subject: String,
    msg_id: &str,
    payload: &T,
) -> Result<PublishAck, PublishError> {
    let body = serde_json::to_vec(payload).expect("event payloads always serialize");
    let mut delay = Duration::from_millis(100);
    let mut reason = String::new();
    for attempt in 1..=ATTEMPTS {
        let message = PublishMessage::build().payload(body.clone().into()).message_id(msg_id);
        match js.send_publish(subject.clone(), message).await {
            Ok(pending) => match pending.await {
                Ok(ack) => return Ok(ack),
                Err(e) => reason = e.to_string(),
            },
            Err(e) => reason = e.to_string(),
        }
        if attempt < ATTEMPTS {
            tracing::debug!(%subject, attempt, %reason, "publish not acknowledged; retrying");
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    Err(PublishError { subject, reason })
}

/// Publishes a job event on `tcoder.events.<job>.<kind>`.
pub async fn publish_event(js: &Context, event: &JobEvent) -> Result<PublishAck, PublishError> {
    publish_json(js, event.subject(), &event.id, event).await
}

/// Publishes a normalized upload event on `tcoder.uploads.<bucket>`.
pub async fn publish_upload(js: &Context, event: &UploadEvent) -> Result<PublishAck, PublishError> {
    publish_json(js, event.subject(), &event.id, event).await
}

/// Publishes the job's work item on `tcoder.jobs.<priority>.<job>`, with the dedup id of its
/// current queuing (`queued_count`): publishing again for the same queuing is dropped.
pub async fn publish_work_item(js: &Context, job: &Job) -> Result<PublishAck, PublishError> {
    let item = WorkItem {
        job_id: job.id.clone(),
        tenant: job.tenant.clone(),
        queued_at: rfc3339(now_ms()),
    };
    let id = WorkItem::id_for(&job.id, job.queued_count.max(1));
    publish_json(js, subjects::job(job.spec.priority, job.id.as_str()), &id, &item).await
}
