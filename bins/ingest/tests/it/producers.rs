//! The contract producers and subscribers build on: docs/asyncapi.yaml (valid, served, naming
//! the subjects the code uses) and watch folders configured in `[[ingest.watch]]`.

use std::time::Duration;

use reqwest::StatusCode;
use tcoder::events::subjects;
use tcoder::jobs::JobOrigin;
use testkit::contracts;

use crate::helpers::{Store, spawn};

#[tokio::test]
async fn the_asyncapi_document_is_valid_served_and_names_the_subjects_the_code_uses() {
    let doc = contracts::asyncapi_document();
    let report = contracts::validate_document(&doc).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.contains("is valid"), "{report}");

    let ingest = spawn(Store::External, &[]).await;
    let served = ingest.http.get(format!("{}/asyncapi.yaml", ingest.api)).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.headers()["content-type"], "application/yaml");
    assert_eq!(served.text().await.unwrap(), std::fs::read_to_string(&doc).unwrap());

    let mut expected = vec![
        subjects::submit("{tenant}"),
        "_INBOX_{tenant}.{reply}".to_owned(),
        subjects::uploads("{bucket}"),
        subjects::event("{tenant}", "{job_id}", "{kind}"),
        subjects::rejected("{tenant}"),
        subjects::DLQ_JOBS.to_owned(),
    ];
    expected.sort();
    assert_eq!(contracts::channel_addresses(&doc), expected);
}

#[tokio::test]
async fn a_configured_watch_folder_makes_one_job_per_object_put_into_the_embedded_store() {
    let rules = r#"[{ name = "incoming", prefix = "incoming/acme/", tenant = "acme", job = { preset = "hls", qualities = ["144p"], priority = "high" } }]"#;
    let ingest = spawn(
        Store::Embedded,
        &[
            ("TCODER__INGEST__WATCH", rules.to_owned()),
            ("TCODER__INGEST__SWEEP_INTERVAL", "200ms".to_owned()),
        ],
    )
    .await;
    ingest.put_object("incoming/acme/clip.mp4", vec![7u8; 4096]).await;
    ingest.put_object("incoming/acme/.partial", vec![7u8; 4096]).await;
    ingest.put_object("incoming/acme/empty.mp4", Vec::new()).await;
    let events = ingest.wait_upload_events(1).await;
    let event = &events[0];
    assert_eq!((event.key.as_str(), event.tenant.as_str()), ("incoming/acme/clip.mp4", "acme"));
    let (_, job) = ingest.get_job(&ingest.key_a, event.job_id.as_str()).await;
    assert_eq!(job["origin"], serde_json::json!({ "kind": "watch", "rule": "incoming" }));
    assert_eq!((&job["preset"], &job["priority"]), (&"hls".into(), &"high".into()));
    assert_eq!(job["source"]["key"], "incoming/acme/clip.mp4");

    // The empty file is announced as rejected, not made a job.
    let rejected = testkit::eventually_async(Duration::from_secs(10), || async {
        let found: Vec<serde_json::Value> =
            ingest.stored(subjects::EVENTS_STREAM, subjects::REJECTED_ALL).await;
        if found.is_empty() { Err("no rejection yet") } else { Ok(found) }
    })
    .await;
    assert_eq!(rejected[0]["key"], "incoming/acme/empty.mp4");
    assert_eq!(
        (&rejected[0]["watch_rule"], &rejected[0]["error"]["code"]),
        (&"incoming".into(), &"source.empty".into())
    );

    // Sweeps see the objects again and make nothing more: no second job, and the rejected
    // file is remembered rather than rejected again.
    let metrics = || async {
        let response = reqwest::get(format!("{}/metrics", ingest.admin)).await.unwrap();
        let text = response.text().await.unwrap();
        let sum = |outcome: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with("tcoder_bridge_events_total{") && l.contains(outcome))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        (sum(r#"outcome="rejected""#), sum(r#"outcome="duplicate",source="sweep""#))
    };
    let (rejected_before, swept_before) = metrics().await;
    testkit::eventually_async(Duration::from_secs(10), || async {
        // Each sweep sees the clip and the empty file: two more sweeps at least.
        let (_, swept) = metrics().await;
        if swept >= swept_before + 4.0 { Ok(()) } else { Err(swept) }
    })
    .await;
    assert_eq!(metrics().await.0, rejected_before, "rejected again by a sweep");
    assert_eq!(ingest.upload_events().await.len(), 1);
    let listed = ingest.list_jobs(&ingest.key_a).await;
    assert_eq!(listed.jobs.len(), 1, "{listed:?}");
}

/// `docs/examples/rust/nats_producer.rs` (built with this package's tests) gets its job id back
/// and hears the job's first event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_producer_example_submits_and_follows_its_job() {
    use std::io::BufRead as _;
    let ingest = spawn(Store::External, &[]).await;
    ingest.put_object("uploads/acme/clip.mp4", vec![7u8; 2048]).await;
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/nats-producer");
    assert!(example.is_file(), "{} is not built (cargo test builds examples)", example.display());
    let mut command = std::process::Command::new(&example);
    command
        .args([&ingest.nats_url, "acme", "uploads/acme/clip.mp4", r#"{"preset": "hls"}"#])
        .stdout(std::process::Stdio::piped());
    let mut producer = testkit::ChildProcess::spawn("nats-producer", &mut command).unwrap();
    let stdout = producer.take_stdout().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        // The reply, then the job's `accepted` event: enough to know it follows its job.
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).take(2).collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(30), lines).await.unwrap().unwrap();
    let reply: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let job_id = reply["job_id"].as_str().unwrap_or_else(|| panic!("{reply}"));
    let event: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(
        (event["job_id"].as_str(), event["type"].as_str()),
        (Some(job_id), Some("accepted"))
    );
    assert_eq!(event["data"]["origin"]["kind"], "nats");
}

/// A tenant submitting over NATS faster than its rate (burst 3, 4 per second here) is told
/// `rate.limited` — a pause, not a verdict: every submission is kept and becomes its job when
/// the tenant's bucket allows, one job each (issue 27: 2,000 submissions were answered in 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_submissions_are_rate_limited_per_tenant_and_kept() {
    use futures_util::StreamExt as _;
    let limits = [
        ("TCODER__INGEST__CREATE_BURST", "3".to_owned()),
        ("TCODER__INGEST__CREATE_PER_SECOND", "4".to_owned()),
    ];
    let ingest = spawn(Store::External, &limits).await;
    ingest.put_object("uploads/acme/clip.mp4", vec![7u8; 2048]).await;
    let client = async_nats::ConnectOptions::new()
        .custom_inbox_prefix("_INBOX_acme")
        .connect(&ingest.nats_url)
        .await
        .unwrap();
    let sent = 12;
    let mut replies = futures_util::stream::FuturesUnordered::new();
    for n in 0..sent {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("burst-{n}").as_str());
        let body = serde_json::json!({ "source": { "key": "uploads/acme/clip.mp4" } }).to_string();
        let client = client.clone();
        replies.push(async move {
            let reply = client
                .request_with_headers(subjects::submit("acme"), headers, body.into())
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap()
        });
    }
    let mut limited = 0;
    while let Some(reply) = replies.next().await {
        match reply["error"]["code"].as_str() {
            Some("rate.limited") => limited += 1,
            None => assert_eq!(reply["replayed"], false, "{reply}"),
            Some(other) => panic!("{other}: {reply}"),
        }
    }
    assert!(limited >= sent - 3 - 2, "{limited} of {sent} limited with a burst of 3");
    // Every one of them becomes exactly one job, at the tenant's rate.
    let jobs = testkit::eventually_async(Duration::from_secs(20), || async {
        let jobs = ingest.list_jobs(&ingest.key_a).await.jobs;
        if jobs.len() >= sent { Ok(jobs) } else { Err(jobs.len()) }
    })
    .await;
    let mut ids: Vec<&str> = jobs
        .iter()
        .filter_map(|j| match &j.origin {
            JobOrigin::Nats { submission_id } => Some(submission_id.as_str()),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), sent, "one job per submission: {jobs:?}");
    // Each job made from the one object has its own upload event (one object version, many
    // jobs: the broker dropped all but the first as duplicates).
    let events = ingest.wait_upload_events(sent).await;
    let mut jobs: Vec<String> = events.iter().map(|e| e.job_id.to_string()).collect();
    jobs.sort_unstable();
    jobs.dedup();
    assert_eq!(jobs.len(), sent, "{events:?}");
}
