//! `GET /v1/jobs/<id>/events`: the job's lifecycle as server-sent events — everything so far
//! (replayed from the `EVENTS` stream), then live, ending after a terminal event.

use std::convert::Infallible;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tcoder::events::{JobEvent, subjects};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::jobs::load;
use crate::state::AppState;

/// An event stream is closed after this long even if the job is still running; clients
/// reconnect (and get the history again).
const MAX_STREAM: Duration = Duration::from_secs(3600);

pub(crate) async fn stream(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load(&state, &tenant, &id).await?;
    let stream = state
        .js
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .map_err(|e| ApiError::unavailable("cannot open the event stream", e))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subjects::event(job.id.as_str(), "*"),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::unavailable("cannot follow the job", e))?;
    let messages =
        consumer.messages().await.map_err(|e| ApiError::unavailable("cannot follow the job", e))?;
    let parsed = Box::pin(messages.take_until(tokio::time::sleep(MAX_STREAM)).filter_map(
        |message| async move { serde_json::from_slice::<JobEvent>(&message.ok()?.payload).ok() },
    ));
    // Ends right after the first terminal event (sending it), without waiting for another.
    let events =
        futures_util::stream::unfold((parsed, false), |(mut parsed, finished)| async move {
            if finished {
                return None;
            }
            let event = parsed.next().await?;
            let finished = event.kind.is_terminal();
            let data = serde_json::to_string(&event).unwrap_or_default();
            let sse = Event::default().event(event.kind.as_str()).id(event.id.clone()).data(data);
            Some((Ok::<_, Infallible>(sse), (parsed, finished)))
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}
