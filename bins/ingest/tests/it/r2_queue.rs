use std::time::Duration;

use serde_json::json;
use tcoder::events::UploadSource;
use tcoder::jobs::JobStatus;
use testkit::cloudflare::{ACCOUNT_ID, API_TOKEN, FakeCloudflareQueue, QUEUE_ID};
use testkit::{ChaosMode, ChaosProxy};

use crate::helpers::{Store, r2_body, spawn};

#[tokio::test]
async fn the_queue_consumer_handles_base64_bodies_and_retries_transient_failures() {
    let queue = FakeCloudflareQueue::start();
    let s3_env = testkit::S3Server::start();
    // S3 reached through a proxy so its outage can be staged.
    let proxy = ChaosProxy::start(s3_env.addr());
    let ingest = spawn(
        Store::External,
        &[
            ("TCODER__INGEST__R2_QUEUE__ENABLED", "true".to_owned()),
            ("TCODER__INGEST__R2_QUEUE__API_BASE", queue.api_base()),
            ("TCODER__INGEST__R2_QUEUE__ACCOUNT_ID", ACCOUNT_ID.to_owned()),
            ("TCODER__INGEST__R2_QUEUE__QUEUE_ID", QUEUE_ID.to_owned()),
            ("TCODER__INGEST__R2_QUEUE__API_TOKEN", API_TOKEN.to_owned()),
            ("TCODER__INGEST__R2_QUEUE__POLL_INTERVAL", "50ms".to_owned()),
            ("TCODER__INGEST__R2_QUEUE__RETRY_DELAY", "1s".to_owned()),
            ("TCODER__S3__ENDPOINT", format!("http://{}", proxy.addr())),
            ("TCODER__S3__BUCKET", s3_env.bucket().to_owned()),
            ("TCODER__S3__ACCESS_KEY_ID", s3_env.access_key_id().to_owned()),
            ("TCODER__S3__SECRET_ACCESS_KEY", s3_env.secret_access_key().to_owned()),
            ("TCODER__S3__TIMEOUT", "2s".to_owned()),
        ],
    )
    .await;
    let mut jobs = Vec::new();
    for _ in 0..2 {
        let (_, created) = ingest.create(json!({})).await;
        let id = created["job"]["id"].as_str().unwrap().to_owned();
        let key = format!("uploads/acme/{id}/source");
        ingest.put_object(&key, vec![3u8; 700]).await;
        jobs.push((id, key));
    }

    // S3 is down when the first (base64 JSON) notification is pulled: it must be retried.
    proxy.set_mode(ChaosMode::Drop);
    let first = queue.push_json(&r2_body(&ingest.bucket, &jobs[0].1, 700));
    testkit::eventually_async(Duration::from_secs(15), || async {
        if queue.retries_requested() >= 1 { Ok(()) } else { Err(queue.pulls()) }
    })
    .await;
    assert!(!queue.is_acked(&first));
    assert_eq!(ingest.get_job(&ingest.key_a, &jobs[0].0).await.1["status"], "awaiting_upload");

    proxy.set_mode(ChaosMode::Pass);
    let second = queue.push_text(&r2_body(&ingest.bucket, &jobs[1].1, 700).to_string());
    for (id, _) in &jobs {
        ingest.wait_status(id, JobStatus::Uploaded).await;
    }
    testkit::eventually_async(Duration::from_secs(10), || async {
        if queue.is_acked(&first) && queue.is_acked(&second) {
            Ok(())
        } else {
            Err("not acked yet")
        }
    })
    .await;
    assert!(queue.attempts(&first) >= 2, "the first message was redelivered after its retry");
    assert_eq!(queue.attempts(&second), 1);
    let events = ingest.wait_upload_events(2).await;
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.source == UploadSource::R2));
}
