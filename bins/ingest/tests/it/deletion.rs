//! Deleting jobs (`DELETE /v1/jobs/{id}`), jobs whose upload never came (`expired`), and the
//! retention sweep — against the real store, Redis and NATS.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tcoder::events::{JobEvent, subjects};
use tcoder::jobs::JobStatus;

use crate::helpers::{Store, TestIngest, spawn};

/// Every key in the bucket under `prefix`.
async fn keys_under(ingest: &TestIngest, prefix: &str) -> Vec<String> {
    let listed =
        ingest.s3.list_objects_v2().bucket(&ingest.bucket).prefix(prefix).send().await.unwrap();
    listed.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect()
}

/// The events of job `id` the EVENTS stream holds, by kind.
async fn event_kinds(ingest: &TestIngest, tenant: &str, id: &str) -> Vec<String> {
    let filter = subjects::event(tenant, id, "*");
    let events: Vec<JobEvent> = ingest.stored(subjects::EVENTS_STREAM, &filter).await;
    events.iter().map(|e| e.kind.as_str().to_owned()).collect()
}

async fn delete(ingest: &TestIngest, key: &str, id: &str) -> StatusCode {
    let url = format!("{}/v1/jobs/{id}", ingest.api);
    ingest.http.delete(url).bearer_auth(key).send().await.unwrap().status()
}

/// A job that has not ended is canceled, then its uploads, every attempt's outputs and its
/// record go; a repeat answers 204 again; another tenant — and any spelling of an id that is
/// not this job's — gets 404 and removes nothing; the job's neighbours are untouched.
#[tokio::test]
async fn deleting_a_job_removes_its_files_and_record_and_only_its_tenant_may() {
    let ingest = spawn(Store::Embedded, &[]).await;
    let video = testkit::media::tiny_mp4();
    let body = std::fs::read(&video).unwrap();
    let (_, created) = ingest.create(json!({ "content_length": body.len() })).await;
    let id = created["job"]["id"].as_str().unwrap().to_owned();
    assert_eq!(ingest.upload(&created, body).await, StatusCode::OK);
    ingest.wait_status(&id, JobStatus::Uploaded).await;
    // What attempts wrote (two epochs), and a neighbour job's files.
    let (_, neighbour) = ingest.create(json!({})).await;
    let other = neighbour["job"]["id"].as_str().unwrap().to_owned();
    for key in [
        format!("outputs/acme/{id}/1/hls/master.m3u8"),
        format!("outputs/acme/{id}/2/mp4/144p.mp4"),
        format!("outputs/acme/{other}/1/hls/master.m3u8"),
        format!("uploads/acme/{other}/source"),
    ] {
        ingest.put_object(&key, b"x".to_vec()).await;
    }

    // Not another tenant's to delete, nor by a spelling of its id.
    assert_eq!(delete(&ingest, &ingest.key_b, &id).await, StatusCode::NOT_FOUND);
    for spelling in [
        format!("{id}/"),
        format!("{id}%2F..%2F{other}"),
        id.to_uppercase(),
        format!("..%2F{id}"),
        "job_".to_owned(),
    ] {
        let status = delete(&ingest, &ingest.key_a, &spelling).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{spelling}");
    }
    assert_eq!(keys_under(&ingest, &format!("outputs/acme/{id}/")).await.len(), 2);

    assert_eq!(delete(&ingest, &ingest.key_a, &id).await, StatusCode::NO_CONTENT);
    assert!(keys_under(&ingest, &format!("outputs/acme/{id}/")).await.is_empty());
    assert!(keys_under(&ingest, &format!("uploads/acme/{id}/")).await.is_empty());
    assert_eq!(ingest.get_job(&ingest.key_a, &id).await.0, StatusCode::NOT_FOUND);
    assert!(ingest.list_jobs(&ingest.key_a).await.jobs.iter().all(|j| j.id.as_str() != id));
    // Idempotent for its tenant; still nothing for another.
    assert_eq!(delete(&ingest, &ingest.key_a, &id).await, StatusCode::NO_CONTENT);
    assert_eq!(delete(&ingest, &ingest.key_b, &id).await, StatusCode::NOT_FOUND);
    // Canceled first (it had not ended), then deleted; followers hear both.
    let kinds = event_kinds(&ingest, "acme", &id).await;
    assert_eq!(kinds, ["accepted", "canceled", "deleted"]);
    // The neighbour keeps everything.
    assert_eq!(keys_under(&ingest, &format!("outputs/acme/{other}/")).await.len(), 1);
    assert_eq!(keys_under(&ingest, &format!("uploads/acme/{other}/")).await.len(), 1);
    assert_eq!(ingest.get_job(&ingest.key_a, &other).await.0, StatusCode::OK);
}

/// A job whose upload never arrives expires (status `expired`, an `expired` event carrying
/// `upload.expired`); its multipart upload is aborted, so it cannot be resumed.
#[tokio::test]
async fn a_job_whose_upload_never_comes_expires() {
    let ingest = spawn(
        Store::Embedded,
        &[
            ("TCODER__INGEST__UPLOAD_URL_TTL", "1s".to_owned()),
            ("TCODER__INGEST__UPLOAD_EXPIRY", "2s".to_owned()),
            ("TCODER__INGEST__SWEEP_INTERVAL", "200ms".to_owned()),
        ],
    )
    .await;
    let (_, single) = ingest.create(json!({})).await;
    let single = single["job"]["id"].as_str().unwrap().to_owned();
    let (_, parts) =
        ingest.create(json!({ "upload": "multipart", "content_length": 6 * 1024 * 1024 })).await;
    let parts = parts["job"]["id"].as_str().unwrap().to_owned();
    for id in [&single, &parts] {
        let job = ingest.wait_status(id, JobStatus::Expired).await;
        assert_eq!(job.error.map(|e| e.code).as_deref(), Some("upload.expired"));
        assert_eq!(event_kinds(&ingest, "acme", id).await, ["accepted", "expired"]);
    }
    // Its upload is gone from the store: resuming is refused.
    let url = format!("{}/v1/jobs/{parts}/upload", ingest.api);
    let resume = ingest.http.get(url).bearer_auth(&ingest.key_a).send().await.unwrap();
    assert_eq!(resume.status(), StatusCode::CONFLICT);
    let listed = ingest.list_jobs(&ingest.key_a).await;
    assert!(listed.jobs.iter().all(|j| j.status == JobStatus::Expired), "{listed:?}");
}

/// With `ingest.job_retention`, ended jobs are deleted once they are that old (files, record,
/// a `deleted` event by `retention`); a job still awaiting its upload is not.
#[tokio::test]
async fn ended_jobs_are_deleted_after_the_retention() {
    let ingest = spawn(
        Store::Embedded,
        &[
            ("TCODER__INGEST__JOB_RETENTION", "1s".to_owned()),
            ("TCODER__INGEST__SWEEP_INTERVAL", "200ms".to_owned()),
        ],
    )
    .await;
    let (_, ended) = ingest.create(json!({})).await;
    let ended = ended["job"]["id"].as_str().unwrap().to_owned();
    let (_, waiting) = ingest.create(json!({})).await;
    let waiting = waiting["job"]["id"].as_str().unwrap().to_owned();
    ingest.put_object(&format!("outputs/acme/{ended}/1/x"), b"x".to_vec()).await;
    let cancel = format!("{}/v1/jobs/{ended}/cancel", ingest.api);
    ingest.http.post(cancel).bearer_auth(&ingest.key_a).send().await.unwrap();

    testkit::eventually_async(Duration::from_secs(15), || async {
        match ingest.get_job(&ingest.key_a, &ended).await.0 {
            StatusCode::NOT_FOUND => Ok(()),
            other => Err(other),
        }
    })
    .await;
    assert!(keys_under(&ingest, &format!("outputs/acme/{ended}/")).await.is_empty());
    let filter = subjects::event("acme", &ended, "deleted");
    let deleted: Vec<JobEvent> = ingest.stored(subjects::EVENTS_STREAM, &filter).await;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].data["by"], "retention");
    assert_eq!(ingest.get_job(&ingest.key_a, &waiting).await.1["status"], "awaiting_upload");
}
