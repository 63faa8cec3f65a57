//! `GET /v1/jobs/<id>/events`: the job's lifecycle as server-sent events — everything so far
//! (read from the `EVENTS` stream), then live from the process's shared subscription
//! ([`crate::event_hub`]), ending after a terminal event.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::RawMessageErrorKind;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tcoder::events::{JobEvent, subjects};
use tcoder::jobs::Job;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::event_hub::Refused;
use crate::routes::jobs::load;
use crate::state::AppState;
use tcoder::api::Problem;

/// An event stream is closed after this long even if the job is still running; clients
/// reconnect (and get the history again).
const MAX_STREAM: Duration = Duration::from_secs(3600);
/// Events of one job replayed at most (a job reports progress every couple of seconds).
const MAX_HISTORY: usize = 5000;
/// When a refused client should try again.
const RETRY_AFTER_SECS: u64 = 5;

/// The job's events as server-sent events: its history, then live ones, ending after the
/// terminal event (`event:` is the kind, `id:` the event id, `data:` the event as JSON). A
/// reconnecting client sends `Last-Event-ID`: the history resumes after that event.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/events", operation_id = "stream_job_events", tag = "jobs", security(("api_key" = [])),
    params(
        ("id" = String, Path, description = "The job id"),
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received: the stream resumes after it"),
    ),
    responses(
        (status = 200, description = "A text/event-stream of job events", body = tcoder::events::JobEvent, content_type = "text/event-stream"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job of this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many event streams open (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn stream(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let permit = state.events.admit(&tenant).map_err(|refused| {
        let scope = match refused {
            Refused::Tenant => "tenant",
            Refused::Global => "global",
        };
        state.metrics.event_streams_refused.with_label_values(&[scope]).inc();
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate.event_streams",
            match refused {
                Refused::Tenant => "too many event streams open for this tenant",
                Refused::Global => "too many event streams open on this server",
            },
        )
        .retry_after(RETRY_AFTER_SECS)
    })?;
    let job = load(&state, &tenant, &id).await?;
    // Live first, then the history: an event published in between is in both, and the
    // duplicate (same id) is skipped.
    let live = state.events.subscribe();
    let mut history = history(&state, &job).await?;
    // Every event once: the history's, and a live event a relay published twice (core NATS
    // delivers each publish; only the stream deduplicates).
    let seen: HashSet<String> = history.iter().map(|e| e.id.clone()).collect();
    let seen = Arc::new(std::sync::Mutex::new(seen));
    let ended = history.iter().any(|e| e.kind.is_terminal());
    // Resumed: the client has everything up to that event (the skipped ones stay seen, so
    // their live copies are not sent either). An id not in the history resumes nothing.
    let last_seen = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    if let Some(at) = last_seen.and_then(|id| history.iter().position(|e| e.id == id)) {
        history.drain(..=at);
    }
    let job_id = job.id.clone();
    let store = state.jobs.clone();
    // Lagged (too far behind to know what it missed) or closed: the stream ends and the
    // client reconnects.
    let live = futures_util::stream::unfold(live, |mut live| async move {
        live.recv().await.ok().map(|event| (event, live))
    })
    .filter_map(move |event| {
        let (store, seen) = (store.clone(), seen.clone());
        let ours = event.job_id == job_id;
        async move {
            let unseen = |event: &JobEvent| !seen.lock().expect("seen lock").contains(&event.id);
            if !ours || !unseen(&event) {
                return None;
            }
            // Marked seen only once believed: a forged event must not shadow the real one.
            if event.kind.is_terminal() && !confirmed(&store, &event).await {
                return None;
            }
            seen.lock().expect("seen lock").insert(event.id.clone()).then_some(event)
        }
    });
    let live = if ended { futures_util::stream::empty().boxed() } else { live.boxed() };
    let all = futures_util::stream::iter(history.into_iter().map(Arc::new))
        .chain(live)
        .take_until(ends(state.events.closing()));
    // Ends right after the first terminal event (sending it); the permit lives as long as
    // the stream, so a client that goes away frees its place.
    let events = futures_util::stream::unfold(
        (Box::pin(all), false, permit),
        |(mut all, finished, permit)| async move {
            if finished {
                return None;
            }
            let event = all.next().await?;
            let finished = event.kind.is_terminal();
            let data = serde_json::to_string(&*event).unwrap_or_default();
            let sse = Event::default().event(event.kind.as_str()).id(event.id.clone()).data(data);
            Some((Ok::<_, Infallible>(sse), (all, finished, permit)))
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// When a stream ends though its job has not: after [`MAX_STREAM`], or at once when the
/// process shuts down (the client reconnects, with `Last-Event-ID`).
async fn ends(closing: tokio_util::sync::WaitForCancellationFutureOwned) {
    tokio::select! {
        () = tokio::time::sleep(MAX_STREAM) => {}
        () = closing => {}
    }
}

/// The job's stored events, oldest first (bounded), read message by message with the
/// stream's direct lookups rather than a consumer.
async fn history(state: &AppState, job: &Job) -> Result<Vec<JobEvent>, ApiError> {
    let stream = state
        .js
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .map_err(|e| ApiError::unavailable("cannot open the event stream", e))?;
    let subject = subjects::event(job.tenant.as_str(), job.id.as_str(), "*");
    let mut events = Vec::new();
    let mut from = 1;
    while events.len() < MAX_HISTORY {
        match stream.get_first_raw_message_by_subject(&subject, from).await {
            Ok(message) => {
                from = message.sequence + 1;
                if let Ok(event) = serde_json::from_slice::<JobEvent>(&message.payload)
                    && (!event.kind.is_terminal()
                        || event.agrees_with(job)
                        || confirmed(&state.jobs, &event).await)
                {
                    events.push(event);
                }
            }
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(ApiError::unavailable("cannot read the job's events", e)),
        }
    }
    Ok(events)
}

/// Whether the job's record, read now, confirms terminal `event`: anyone holding a worker's
/// NATS user can publish a `completed`; a tenant's stream (the console, `submit --wait`)
/// shows only what the record says happened. Unreadable (Redis away): not shown — the client
/// reconnects and gets it with the history.
async fn confirmed(store: &tcoder::jobs::JobStore, event: &JobEvent) -> bool {
    match store.get(&event.job_id).await {
        Ok(Some(job)) => event.agrees_with(&job),
        _ => false,
    }
}
