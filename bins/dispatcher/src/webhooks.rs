//! Webhook delivery from the `EVENTS` stream (durable consumer `webhooks`): terminal events
//! (and `progress`, when the job opted in) are posted to the job's `webhook_url`, signed per
//! Standard Webhooks with the tenant's secret. The `webhook-id` is derived from the event id, so
//! it is the same on every attempt and after a dispatcher restart. Retries follow the configured
//! schedule with jitter, as delayed naks: the schedule position is the message's delivery count,
//! kept by JetStream, so a crash does not reset it.

use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use futures_util::StreamExt;
use prometheus::{Histogram, IntCounterVec};
use serde_json::json;
use tcoder::events::{
    EventKind, JobEvent, OUTAGE_PATIENCE, holding, retry_through_outage, subjects,
};
use tcoder::jobs::JobStore;
use tcoder::redis::Conn;
use tcoder::webhooks::{Deliverer, Delivery, stored_tenant_secret};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub(crate) struct WebhookSender {
    pub jobs: JobStore,
    pub redis: Conn,
    pub js: async_nats::jetstream::Context,
    pub deliverer: Deliverer,
    pub schedule: Vec<Duration>,
    pub attempts: IntCounterVec,
    pub latency: Histogram,
    /// How tenants' signing secrets are sealed in Redis.
    pub at_rest: std::sync::Arc<tcoder::webhooks::AtRest>,
}

/// The `webhook-id` of an event: Standard Webhooks signs `{id}.{timestamp}.{body}`, so the id
/// must not contain dots.
pub(crate) fn webhook_id(event: &JobEvent) -> String {
    format!("msg_{}", event.id.replace('.', "_"))
}

impl WebhookSender {
    pub(crate) async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut messages = tcoder::events::durable_messages(
            &self.js,
            subjects::EVENTS_STREAM,
            subjects::WEBHOOKS_CONSUMER,
            1,
        )
        .await?;
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                () = stop.cancelled() => return Ok(()),
            };
            let Some(message) = message else {
                anyhow::bail!("the webhooks consumer stream ended")
            };
            let Ok(message) = message else { continue };
            let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
            let settle = match serde_json::from_slice::<JobEvent>(&message.payload) {
                // Held while Redis is unreachable: the delivery count is the retry schedule's
                // index, an outage must not consume it (nor the message).
                Ok(event) => {
                    holding(&message, Duration::from_secs(15), self.handle(&event, delivered)).await
                }
                Err(_) => AckKind::Term,
            };
            let _ = message.ack_with(settle).await;
        }
    }

    /// Delivers one event (attempt number `delivered`); returns how to settle its message.
    async fn handle(&self, event: &JobEvent, delivered: i64) -> AckKind {
        let wanted = event.kind.is_terminal()
            || matches!(event.kind, EventKind::Progress | EventKind::Playable);
        if !wanted {
            return AckKind::Ack;
        }
        let job = retry_through_outage("webhook", OUTAGE_PATIENCE, || self.jobs.get(&event.job_id));
        let job = match job.await {
            Ok(Some(job)) => job,
            Ok(None) => return AckKind::Ack,
            Err(_) => return AckKind::Nak(Some(Duration::from_secs(30))),
        };
        let Some(url) = job.spec.webhook_url.as_deref() else { return AckKind::Ack };
        // A redelivery of an event whose webhook already ended (the ack was lost, or the
        // dispatcher stopped right after sending): never sent twice.
        if job.webhook.as_ref().is_some_and(|w| w.ended(&webhook_id(event))) {
            self.attempts.with_label_values(&["duplicate"]).inc();
            return AckKind::Ack;
        }
        if (event.kind == EventKind::Progress && !job.spec.webhook_progress)
            || (event.kind == EventKind::Playable && !job.spec.webhook_playable)
        {
            return AckKind::Ack;
        }
        // Signed webhooks vouch for what they say: an event the job record contradicts (a
        // forgery on the bus, or a stale one) is not sent.
        if !event.agrees_with(&job) {
            tracing::warn!(job = %job.id, event = %event.id, status = %job.status, "event contradicts the job record; no webhook");
            self.attempts.with_label_values(&["contradicted"]).inc();
            return AckKind::Ack;
        }
        let secret = retry_through_outage("webhook secret", OUTAGE_PATIENCE, || {
            let (mut redis, at_rest) = (self.redis.clone(), self.at_rest.clone());
            let tenant = job.tenant.clone();
            async move { stored_tenant_secret(&mut redis, &tenant, &at_rest).await }
        });
        // Ingest makes the secret with the job; none yet (or Redis away): later.
        let Ok(Some(secret)) = secret.await else {
            tracing::warn!(job = %job.id, tenant = %job.tenant, "no webhook secret for the tenant yet; retrying later");
            return AckKind::Nak(Some(Duration::from_secs(30)));
        };
        let body = json!({
            "type": format!("job.{}", event.kind),
            "timestamp": event.at,
            "data": { "id": event.id, "job_id": event.job_id, "tenant": event.tenant, "event": event.kind, "details": event.data },
        });
        let body = serde_json::to_vec(&body).expect("serializable");
        let started = Instant::now();
        let outcome = self.deliverer.send(url, &webhook_id(event), &body, &secret).await;
        self.latency.observe(started.elapsed().as_secs_f64());
        let label = match &outcome {
            Delivery::Delivered(_) => "delivered",
            Delivery::Gone => "gone",
            Delivery::Refused(_) => "refused",
            Delivery::Failed { .. } => "failed",
        };
        self.attempts.with_label_values(&[label]).inc();
        let verdict = self.verdict(outcome, delivered, &job.id, url);
        if event.kind.is_terminal() {
            let (state, last_error) = match &verdict.1 {
                Some(error) if matches!(verdict.0, AckKind::Ack) && label == "failed" => {
                    ("failed", Some(error.clone()))
                }
                Some(error) if label == "failed" => ("retrying", Some(error.clone())),
                Some(error) => (label, Some(error.clone())),
                None => ("delivered", None),
            };
            let status = tcoder::jobs::WebhookStatus {
                event: format!("job.{}", event.kind),
                id: Some(webhook_id(event)),
                state: state.to_owned(),
                attempts: u32::try_from(delivered).unwrap_or(u32::MAX),
                last_error,
                at: event_time(),
            };
            if let Err(e) = self.jobs.record_webhook(&job.id, &status).await {
                tracing::warn!(job = %job.id, error = %e, "webhook status not recorded");
            }
        }
        verdict.0
    }

    /// How to settle the message after `outcome` (attempt `delivered`), and the error to show
    /// on the job when it was not delivered.
    fn verdict(
        &self,
        outcome: Delivery,
        delivered: i64,
        job: &tcoder::jobs::JobId,
        url: &str,
    ) -> (AckKind, Option<String>) {
        match outcome {
            Delivery::Delivered(_) => (AckKind::Ack, None),
            Delivery::Gone => {
                tracing::warn!(%job, url, "webhook receiver answered 410 Gone; not retrying");
                (AckKind::Ack, Some("the receiver answered 410 Gone".to_owned()))
            }
            Delivery::Refused(reason) => {
                tracing::warn!(%job, url, %reason, "webhook destination refused");
                (AckKind::Ack, Some(reason.to_string()))
            }
            Delivery::Failed { status, reason, retry_after } => {
                let error = match status {
                    Some(status) => format!("{status}: {reason}"),
                    None => reason.to_string(),
                };
                let Some(delay) =
                    usize::try_from(delivered - 1).ok().and_then(|i| self.schedule.get(i))
                else {
                    tracing::error!(%job, url, %reason, attempts = delivered, "webhook given up after the last scheduled attempt");
                    self.attempts.with_label_values(&["exhausted"]).inc();
                    return (AckKind::Ack, Some(error));
                };
                let longest = self.schedule.iter().max().copied().unwrap_or_default();
                let delay = retry_delay(jitter(*delay), retry_after, longest);
                tracing::info!(%job, ?status, %reason, attempt = delivered, retry_in = ?delay, "webhook attempt failed");
                (AckKind::Nak(Some(delay)), Some(error))
            }
        }
    }
}

fn event_time() -> String {
    tcoder::jobs::rfc3339(tcoder::jobs::now_ms())
}

/// The wait before the next attempt: the schedule's, or longer if the receiver asked with
/// `Retry-After` — but never past the schedule's longest step. A receiver's huge value would
/// otherwise overflow the delayed nak (NATS refuses it and redelivers at once, so every retry
/// ran within milliseconds) or park the event for years.
fn retry_delay(scheduled: Duration, retry_after: Option<Duration>, longest: Duration) -> Duration {
    scheduled.max(retry_after.unwrap_or_default().min(longest.max(scheduled)))
}

/// Adds up to 10 % random delay, so retries of many events do not arrive in lockstep.
fn jitter(delay: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    delay + delay.mul_f64(f64::from(byte[0]) / 255.0 * 0.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_lengthens_a_wait_only_up_to_the_schedules_longest_step() {
        let (minute, hour) = (Duration::from_secs(60), Duration::from_secs(3600));
        assert_eq!(retry_delay(minute, None, hour), minute);
        assert_eq!(retry_delay(minute, Some(Duration::from_secs(5)), hour), minute);
        assert_eq!(
            retry_delay(minute, Some(Duration::from_secs(600)), hour),
            Duration::from_secs(600)
        );
        // A receiver answering Retry-After: 10^15 seconds gets the longest step, not a nak
        // delay NATS refuses.
        assert_eq!(
            retry_delay(minute, Some(Duration::from_secs(1_000_000_000_000_000)), hour),
            hour
        );
    }
}
