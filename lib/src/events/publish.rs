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

/// Publishes a job event on `tcoder.events.<tenant>.<job>.<kind>`.
pub async fn publish_event(js: &Context, event: &JobEvent) -> Result<PublishAck, PublishError> {
    publish_json(js, event.subject(), &event.id, event).await
}

/// Publishes a normalized upload event on `tcoder.uploads.<bucket>`.
pub async fn publish_upload(js: &Context, event: &UploadEvent) -> Result<PublishAck, PublishError> {
    publish_json(js, event.subject(), &event.id, event).await
}

/// Publishes a rejected submission or watched object on `tcoder.rejected.<tenant>`.
pub async fn publish_rejection(
    js: &Context,
    rejection: &super::Rejection,
) -> Result<PublishAck, PublishError> {
    publish_json(js, rejection.subject(), &rejection.id, rejection).await
}

/// Publishes the job's work item on `tcoder.jobs.<priority>.<job>`, with the dedup id of its
/// current queuing (`queued_count`): publishing again for the same queuing is dropped.
pub async fn publish_work_item(js: &Context, job: &Job) -> Result<PublishAck, PublishError> {
    let item = WorkItem {
        job_id: job.id.clone(),
        tenant: job.tenant.clone(),
        queued_at: rfc3339(now_ms()),
        part: None,
    };
    let id = WorkItem::id_for(&job.id, job.queued_count.max(1));
    publish_json(js, subjects::job(job.spec.priority, job.id.as_str()), &id, &item).await
}

/// Publishes the item of part `part` of a split job on `tcoder.jobs.<priority>.<job>.p<k>`
/// (so the consumers, the dispatcher's demand and the machine cap count it), deduplicated per
/// coordinator (`epoch`): a new coordinator invites helpers again.
pub async fn publish_part_item(
    js: &Context,
    job: &Job,
    epoch: u64,
    part: u32,
) -> Result<PublishAck, PublishError> {
    let item = WorkItem {
        job_id: job.id.clone(),
        tenant: job.tenant.clone(),
        queued_at: rfc3339(now_ms()),
        part: Some(part),
    };
    let id = format!("{}.e{epoch}.p{part}", job.id);
    publish_json(js, subjects::job_part(job.spec.priority, job.id.as_str(), part), &id, &item).await
}

/// Why a job could not be failed and announced; either way nothing is lost: the caller
/// retries.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error(transparent)]
    Store(#[from] crate::redis::RedisError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Fails `job` outside an attempt (an unacceptable upload) and announces it with one `failed`
/// event. Returns whether this call failed it. See [`end_and_announce`].
pub async fn fail_and_announce(
    js: &Context,
    jobs: &crate::jobs::JobStore,
    job: &Job,
    error: &crate::jobs::JobError,
) -> Result<bool, AnnounceError> {
    end_and_announce(js, jobs, job, crate::jobs::JobStatus::Failed, error).await
}

/// Ends `job` outside an attempt — `failed`, or `expired` when no upload arrived in time — with
/// `error` recorded, and announces it with one event of that kind. Returns whether this call
/// ended it. A job that already ended so with the same code is announced again (a retry after
/// the event was lost; the event's id makes the broker drop a duplicate); a job that moved on
/// (uploaded, queued, …) is left alone.
pub async fn end_and_announce(
    js: &Context,
    jobs: &crate::jobs::JobStore,
    job: &Job,
    to: crate::jobs::JobStatus,
    error: &crate::jobs::JobError,
) -> Result<bool, AnnounceError> {
    use crate::jobs::TransitionError;
    let recorded = serde_json::to_string(error).expect("a JobError serializes");
    let ended_now = match jobs.transition(&job.id, to, &error.code, &[("error", recorded)]).await {
        Ok(_) => true,
        Err(TransitionError::Missing) => return Ok(false),
        Err(TransitionError::Illegal { .. }) => {
            let current = jobs.get(&job.id).await?;
            let same = current.as_ref().is_some_and(|c| {
                c.status == to && c.error.as_ref().is_some_and(|e| e.code == error.code)
            });
            if !same {
                return Ok(false);
            }
            false
        }
        Err(TransitionError::Store(e)) => return Err(e.into()),
    };
    let event = match to {
        crate::jobs::JobStatus::Expired => JobEvent::expired(job, error),
        _ => JobEvent::failed(job, None, error),
    };
    publish_event(js, &event).await?;
    Ok(ended_now)
}

/// The latest `kind` event of `job` on the EVENTS stream (e.g. its last progress report), or
/// `None` when there is none or the stream cannot be read (this is informational).
pub async fn latest_event(js: &Context, job: &crate::jobs::Job, kind: &str) -> Option<JobEvent> {
    let stream = js.get_stream(subjects::EVENTS_STREAM).await.ok()?;
    let subject = subjects::event(job.tenant.as_str(), job.id.as_str(), kind);
    let message = stream.get_last_raw_message_by_subject(&subject).await.ok()?;
    serde_json::from_slice(&message.payload).ok()
}
