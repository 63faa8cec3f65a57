//! Following a job across an ingest restart: the stop ends open event streams at once (it
//! does not wait out its drain deadline for them), and the follower reconnects with
//! `Last-Event-ID` — every event once, the ones published while ingest was away included.

use std::time::Duration;

use serde_json::json;
use tcoder::events::{EventKind, JobEvent};
use tcoder::jobs::{JobId, Tenant};

use crate::helpers::{Store, spawn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_keeps_its_job_across_an_ingest_restart_every_event_once() {
    // A long drain deadline: an open event stream must not hold the stop for it.
    let drain = ("TCODER__SHUTDOWN__DRAIN_DEADLINE", "60s".to_owned());
    let mut ingest = spawn(Store::External, &[drain]).await;
    let (_, created) = ingest.create(json!({ "preset": "hls" })).await;
    let id = created["job"]["id"].as_str().unwrap().to_owned();
    let (job, tenant) = (JobId::parse(&id).unwrap(), Tenant::parse("acme").unwrap());
    let progress = |n: u64| {
        let id = format!("{job}.progress.test.{n}");
        JobEvent::new(id, EventKind::Progress, &job, &tenant, json!({ "percent": n * 10 }))
    };

    let (heard, mut hearing) = tokio::sync::mpsc::unbounded_channel();
    let client = ingest.client(&ingest.key_a);
    let followed = id.clone();
    let follower = tokio::spawn(async move {
        client
            .follow(&followed, Duration::from_secs(90), |event| {
                let _ = heard.send(event.clone());
            })
            .await
    });
    assert_eq!(next(&mut hearing).await.kind, EventKind::Accepted);
    tcoder::events::publish_event(&ingest.js, &progress(1)).await.unwrap();
    assert_eq!(next(&mut hearing).await.id, progress(1).id);

    // Stopped with the stream open: well within the 60 s drain deadline.
    assert!(ingest.stop(Duration::from_secs(20)).await, "the stop waited for the open stream");
    // Published while no ingest runs: stored in EVENTS, for the follower's resume.
    for n in 2..=3 {
        tcoder::events::publish_event(&ingest.js, &progress(n)).await.unwrap();
    }
    ingest.start_again().await;
    let mut after: Vec<JobEvent> = Vec::new();
    for _ in 2..=3 {
        after.push(next(&mut hearing).await);
    }
    tcoder::events::publish_event(&ingest.js, &progress(4)).await.unwrap();
    after.push(next(&mut hearing).await);
    let cancel = ingest
        .http
        .post(format!("{}/v1/jobs/{id}/cancel", ingest.api))
        .bearer_auth(&ingest.key_a)
        .send()
        .await
        .unwrap();
    assert!(cancel.status().is_success());
    let last = follower.await.unwrap().unwrap();
    assert_eq!(last.kind, EventKind::Canceled);
    after.push(next(&mut hearing).await);

    // Resumed after progress 1: 2, 3, 4, then the end — none again, none missed.
    let ids: Vec<String> = after.iter().map(|e| e.id.clone()).collect();
    let expected: Vec<String> =
        (2..=4).map(|n| progress(n).id).chain(std::iter::once(last.id.clone())).collect();
    assert_eq!(ids, expected);
    assert!(hearing.recv().await.is_none(), "nothing after the terminal event");

    // What any SSE client gets with `Last-Event-ID`: the history after that event only.
    let resumed = ingest
        .http
        .get(format!("{}/v1/jobs/{id}/events", ingest.api))
        .bearer_auth(&ingest.key_a)
        .header("last-event-id", progress(3).id)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sent: Vec<&str> = resumed.lines().filter_map(|l| l.strip_prefix("id:")).collect();
    let sent: Vec<&str> = sent.iter().map(|id| id.trim()).collect();
    assert_eq!(sent, [progress(4).id.as_str(), last.id.as_str()], "{resumed}");
}

/// The follower's next event, within 30 s.
async fn next(hearing: &mut tokio::sync::mpsc::UnboundedReceiver<JobEvent>) -> JobEvent {
    let wait = tokio::time::timeout(Duration::from_secs(30), hearing.recv());
    wait.await.expect("an event within 30 s").expect("the follower is on")
}
