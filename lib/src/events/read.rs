//! Reading what a stream keeps, oldest first: the dead-letter listing, and tests that check
//! what was published.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use futures_util::StreamExt;

use super::NatsError;

/// One stored message.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub subject: String,
    pub payload: bytes::Bytes,
}

/// Up to `limit` messages `stream` keeps under `filter`, oldest first, through an ephemeral
/// ordered consumer (nothing is acked or removed). Each read waits at most 5 s.
pub async fn stored_messages(
    js: &Context,
    stream: &str,
    filter: &str,
    limit: usize,
) -> Result<Vec<StoredMessage>, NatsError> {
    let failed = |e: &dyn std::fmt::Display| NatsError::Read(format!("{stream} {filter}: {e}"));
    let mut consumer = js
        .get_stream(stream)
        .await
        .map_err(|e| failed(&e))?
        .create_consumer(OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| failed(&e))?;
    let pending = consumer.info().await.map_err(|e| failed(&e))?.num_pending;
    let pending = usize::try_from(pending).unwrap_or(usize::MAX).min(limit);
    let mut found = Vec::with_capacity(pending);
    if pending == 0 {
        return Ok(found);
    }
    let mut messages = consumer.messages().await.map_err(|e| failed(&e))?.take(pending);
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_secs(5), messages.next()).await
    {
        let message = message.map_err(|e| failed(&e))?;
        found.push(StoredMessage {
            subject: message.subject.to_string(),
            payload: message.payload.clone(),
        });
    }
    Ok(found)
}
