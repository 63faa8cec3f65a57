use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tcoder::events::UploadSource;
use tcoder::jobs::JobStatus;

use crate::helpers::{Store, r2_body, s3_body, spawn};

#[tokio::test]
async fn r2_and_s3_bodies_produce_the_same_normalized_event() {
    let ingest = spawn(Store::External, &[]).await;
    let mut expected = Vec::new();
    for (path, body_for) in
        [("r2", r2_body as fn(&str, &str, u64) -> serde_json::Value), ("s3", s3_body)]
    {
        let (_, created) = ingest.create(json!({"content_length": 3000})).await;
        let id = created["job"]["id"].as_str().unwrap().to_owned();
        let key = format!("uploads/acme/{id}/source");
        ingest.put_object(&key, vec![9u8; 3000]).await;
        let (status, answer) = ingest.notify(path, &body_for(&ingest.bucket, &key, 3000)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["events"][0]["outcome"], "accepted");
        expected.push((id, key.clone(), ingest.etag(&key).await));
    }
    let events = ingest.wait_upload_events(2).await;
    assert_eq!(events.len(), 2);
    for (event, (source, (id, key, etag))) in
        events.iter().zip([UploadSource::R2, UploadSource::S3].into_iter().zip(expected))
    {
        assert_eq!(event.source, source);
        assert_eq!(
            (event.job_id.as_str(), event.key.as_str(), event.etag.as_str()),
            (id.as_str(), key.as_str(), etag.as_str())
        );
        assert_eq!(
            (event.bucket.as_str(), event.size, event.tenant.as_str()),
            (ingest.bucket.as_str(), 3000, "acme")
        );
    }
}

#[tokio::test]
async fn wrong_sizes_and_unknown_keys_never_become_upload_events() {
    let ingest = spawn(Store::External, &[]).await;
    let (_, created) = ingest.create(json!({"content_length": 1000})).await;
    let id = created["job"]["id"].as_str().unwrap().to_owned();
    let key = format!("uploads/acme/{id}/source");
    ingest.put_object(&key, vec![1u8; 500]).await;
    let (_, answer) = ingest.notify("s3", &s3_body(&ingest.bucket, &key, 500)).await;
    assert_eq!(answer["events"][0]["outcome"], "size_mismatch");
    let (_, job) = ingest.get_job(&ingest.key_a, &id).await;
    assert_eq!(
        (job["status"].as_str(), job["error"]["code"].as_str()),
        (Some("failed"), Some("upload.size_mismatch"))
    );
    // Not the declared upload: not kept in the bucket.
    let kept = ingest.s3.head_object().bucket(&ingest.bucket).key(&key).send().await;
    assert!(kept.is_err(), "the rejected upload was deleted");

    ingest.put_object("somewhere/else.mp4", vec![1u8; 10]).await;
    let unknown_job = "uploads/acme/job_0190a0a0a0a07000800000000000abcd/source";
    ingest.put_object(unknown_job, vec![1u8; 10]).await;
    for key in ["somewhere/else.mp4", unknown_job] {
        let (status, answer) = ingest.notify("r2", &r2_body(&ingest.bucket, key, 10)).await;
        assert_eq!(
            (status, answer["events"][0]["outcome"].as_str()),
            (StatusCode::OK, Some("unknown_key"))
        );
    }
    // Another tenant's key path for our job is not our job.
    let (_, hijack) = ingest
        .notify("r2", &r2_body(&ingest.bucket, &format!("uploads/globex/{id}/source"), 10))
        .await;
    assert_eq!(hijack["events"][0]["outcome"], "unknown_key");
    assert!(ingest.upload_events().await.is_empty());
    let metrics =
        reqwest::get(format!("{}/metrics", ingest.admin)).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"tcoder_bridge_events_total{outcome="unknown_key",source="r2"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"tcoder_uploads_total{outcome="size_mismatch"} 1"#), "{metrics}");
}

#[tokio::test]
async fn notification_endpoints_require_the_shared_secret() {
    let ingest = spawn(Store::External, &[]).await;
    let url = format!("{}/v1/notifications/s3", ingest.api);
    let body = s3_body(&ingest.bucket, "uploads/x", 1);
    let missing = ingest.http.post(&url).json(&body).send().await.unwrap();
    let wrong = ingest.http.post(&url).bearer_auth("guess").json(&body).send().await.unwrap();
    assert_eq!(
        (missing.status(), wrong.status()),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    let garbage = ingest
        .http
        .post(&url)
        .bearer_auth(crate::helpers::NOTIFY_SECRET)
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_sweep_finds_an_upload_whose_notification_was_lost() {
    let ingest =
        spawn(Store::External, &[("TCODER__INGEST__SWEEP_INTERVAL", "200ms".to_owned())]).await;
    let (_, created) = ingest.create(json!({})).await;
    let id = created["job"]["id"].as_str().unwrap().to_owned();
    ingest.put_object(&format!("uploads/acme/{id}/source"), vec![5u8; 100]).await;

    ingest.wait_status(&id, JobStatus::Uploaded).await;
    let events = ingest.wait_upload_events(1).await;
    assert_eq!((events.len(), events[0].source), (1, UploadSource::Sweep));
    // A later sweep re-publishes the still-unqueued upload; the broker drops the duplicate.
    testkit::eventually_async(Duration::from_secs(10), || async {
        let metrics =
            reqwest::get(format!("{}/metrics", ingest.admin)).await.unwrap().text().await.unwrap();
        let republished =
            metrics.contains(r#"tcoder_bridge_events_total{outcome="duplicate",source="sweep"}"#);
        if republished { Ok(()) } else { Err("no second sweep yet") }
    })
    .await;
    assert_eq!(ingest.upload_events().await.len(), 1);
}
