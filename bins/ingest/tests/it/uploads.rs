use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tcoder::events::UploadSource;
use tcoder::jobs::JobStatus;

use crate::helpers::{Store, s3_body, spawn};

#[tokio::test]
async fn a_presigned_upload_to_the_embedded_store_yields_one_upload_event_even_if_notified_again() {
    let ingest = spawn(Store::Embedded, &[]).await;
    let video = vec![7u8; 4096];
    let (status, created) = ingest
        .create(
            json!({"preset": "hls", "content_length": video.len(), "content_type": "video/mp4"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["job"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["upload"]["method"], "PUT");
    let key = format!("uploads/acme/{id}/source");
    assert!(created["upload"]["url"].as_str().unwrap().contains(&key));

    assert_eq!(ingest.upload(&created, video.clone()).await, StatusCode::OK);
    let job = ingest.wait_status(&id, JobStatus::Uploaded).await;
    assert_eq!(job.source.map(|s| s.size), Some(video.len() as u64));

    // The same object reported three more times, by the store's S3-format notification.
    for _ in 0..3 {
        let (status, answer) = ingest.notify("s3", &s3_body(&ingest.bucket, &key, 4096)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["events"][0]["outcome"], "duplicate");
    }
    let events = ingest.wait_upload_events(1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(
        (event.source, event.key.as_str(), event.size),
        (UploadSource::Local, key.as_str(), 4096)
    );
    assert_eq!(event.etag, ingest.etag(&key).await);
    assert_eq!((event.job_id.as_str(), event.tenant.as_str()), (id.as_str(), "acme"));
    assert_eq!(event.id, format!("{id}/{}/{key}/{}", ingest.bucket, event.etag));
}

#[tokio::test]
async fn the_presigned_url_is_bound_to_its_key_method_length_and_expiry() {
    let ingest =
        spawn(Store::Embedded, &[("TCODER__INGEST__UPLOAD_URL_TTL", "2s".to_owned())]).await;
    let (_, created) = ingest.create(json!({"content_length": 1000})).await;
    let url = created["upload"]["url"].as_str().unwrap().to_owned();

    // More bytes than declared: the signed Content-Length does not match.
    assert_eq!(ingest.upload(&created, vec![1u8; 2000]).await, StatusCode::FORBIDDEN);
    // Another key with the same signature.
    let id = created["job"]["id"].as_str().unwrap();
    let other = url.replace(&format!("{id}/source"), &format!("{id}/other"));
    let response = ingest.http.put(&other).body(vec![1u8; 1000]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Another method.
    assert_eq!(ingest.http.get(&url).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    // After expiry (wait, bounded, until the advertised expiry time has passed).
    let expires_at =
        humantime::parse_rfc3339(created["upload"]["expires_at"].as_str().unwrap()).unwrap();
    testkit::eventually_async(Duration::from_secs(10), || async {
        if std::time::SystemTime::now() > expires_at + Duration::from_secs(1) {
            Ok(())
        } else {
            Err("not expired yet")
        }
    })
    .await;
    assert_eq!(ingest.upload(&created, vec![1u8; 1000]).await, StatusCode::FORBIDDEN);
    assert_eq!(ingest.get_job(&ingest.key_a, id).await.1["status"], "awaiting_upload");
    assert!(ingest.upload_events().await.is_empty());
}

#[tokio::test]
async fn a_standard_s3_client_can_use_the_presigned_url() {
    let ingest = spawn(Store::Embedded, &[]).await;
    let (_, created) = ingest.create(json!({})).await;
    let url = created["upload"]["url"].as_str().unwrap();
    let file = testkit::media::tiny_mp4();
    // curl, as a user would.
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "--upload-file"])
        .arg(&file)
        .arg(url)
        .output()
        .await
        .expect("curl runs");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = created["job"]["id"].as_str().unwrap();
    let job = ingest.wait_status(id, JobStatus::Uploaded).await;
    assert_eq!(job.source.map(|s| s.size), Some(std::fs::metadata(&file).unwrap().len()));
}

/// Outputs are public to read; a key that names one of their folders is no object: 404 to an
/// anonymous GET or HEAD (it was a 500, logged as an error).
#[tokio::test]
async fn a_folder_of_the_public_outputs_is_not_found_not_an_error() {
    let ingest = spawn(Store::Embedded, &[]).await;
    let store = format!("http://{}/{}", ingest.store.unwrap(), ingest.bucket);
    let file = "outputs/acme/job_x/1/hls/master.m3u8";
    ingest.put_object(file, b"#EXTM3U\n".to_vec()).await;
    let response = ingest.http.get(format!("{store}/{file}")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    for folder in ["outputs/acme/job_x/1/hls", "outputs/acme/job_x", "outputs/acme"] {
        let url = format!("{store}/{folder}");
        assert_eq!(ingest.http.get(&url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
        assert_eq!(ingest.http.head(&url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    }
}
