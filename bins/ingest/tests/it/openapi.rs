//! /openapi.json: valid for an independent validator, and every operation it lists answers
//! as documented — statuses it names, bodies that match its schemas.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{NOTIFY_SECRET, Store, s3_body, spawn};

#[tokio::test]
async fn every_operation_of_the_openapi_document_answers_as_documented() {
    let ingest = spawn(Store::External, &[]).await;
    let document: Value =
        reqwest::get(format!("{}/openapi.json", ingest.api)).await.unwrap().json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");

    let mut answers = Vec::new();
    let mut call = async |method: Method,
                          template: &str,
                          path: &str,
                          auth: Option<&str>,
                          body: Option<Value>| {
        let mut request = ingest.http.request(method.clone(), format!("{}{path}", ingest.api));
        if let Some(key) = auth {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        // An event stream stays open: its head is the answer.
        let body =
            if content_type.contains("json") { response.json::<Value>().await.ok() } else { None };
        answers.push(json!({ "method": method.as_str(), "path": template, "status": status, "content_type": content_type, "body": body }));
        body.unwrap_or(Value::Null)
    };
    let key = ingest.key_a.clone();
    let key = Some(key.as_str());
    let created =
        call(Method::POST, "/v1/jobs", "/v1/jobs", key, Some(json!({ "preset": "hls" }))).await;
    let id = created["job"]["id"].as_str().unwrap().to_owned();
    call(Method::POST, "/v1/jobs", "/v1/jobs", key, Some(json!({ "preset": "nope" }))).await;
    call(Method::POST, "/v1/jobs", "/v1/jobs", None, Some(json!({}))).await;
    call(Method::GET, "/v1/jobs", "/v1/jobs?limit=5", key, None).await;
    call(Method::GET, "/v1/jobs", "/v1/jobs?limit=500", key, None).await;
    call(Method::GET, "/v1/jobs/{id}", &format!("/v1/jobs/{id}"), key, None).await;
    call(Method::GET, "/v1/jobs/{id}", "/v1/jobs/job_0", key, None).await;
    call(Method::GET, "/v1/jobs/{id}/events", &format!("/v1/jobs/{id}/events"), key, None).await;
    let thumbnail = "/v1/jobs/{id}/thumbnail.jpg";
    call(Method::GET, thumbnail, &format!("/v1/jobs/{id}/thumbnail.jpg?time=1"), key, None).await;
    call(Method::GET, thumbnail, &format!("/v1/jobs/{id}/thumbnail.jpg?width=1"), key, None).await;
    let hls = "/v1/jobs/{id}/hls/{path}";
    call(Method::GET, hls, &format!("/v1/jobs/{id}/hls/master.m3u8"), key, None).await;
    call(Method::GET, hls, &format!("/v1/jobs/{id}/hls/master.m3u8"), None, None).await;
    let (upload, complete) = ("/v1/jobs/{id}/upload", "/v1/jobs/{id}/upload/complete");
    call(Method::GET, upload, &format!("/v1/jobs/{id}/upload"), key, None).await;
    call(Method::GET, upload, "/v1/jobs/job_0/upload", key, None).await;
    call(Method::POST, complete, &format!("/v1/jobs/{id}/upload/complete"), key, None).await;
    let large = json!({ "preset": "hls", "content_length": 200u64 << 20 });
    let parts = call(Method::POST, "/v1/jobs", "/v1/jobs", key, Some(large)).await;
    let parts_id = parts["job"]["id"].as_str().unwrap().to_owned();
    call(Method::POST, complete, &format!("/v1/jobs/{parts_id}/upload/complete"), key, None).await;
    call(Method::POST, "/v1/jobs/{id}/cancel", &format!("/v1/jobs/{id}/cancel"), key, None).await;
    call(Method::POST, "/v1/jobs/{id}/cancel", &format!("/v1/jobs/{id}/cancel"), key, None).await;
    call(Method::GET, upload, &format!("/v1/jobs/{id}/upload"), key, None).await;
    for _ in 0..2 {
        call(Method::DELETE, "/v1/jobs/{id}", &format!("/v1/jobs/{id}"), key, None).await;
    }
    call(
        Method::DELETE,
        "/v1/jobs/{id}",
        "/v1/jobs/job_00000000000000000000000000000000",
        key,
        None,
    )
    .await;
    call(Method::GET, "/v1/webhook-secret", "/v1/webhook-secret", key, None).await;
    // Public delivery: signed playback URLs are off.
    for method in [Method::GET, Method::HEAD] {
        call(method, "/v1/play/{token}/{key}", "/v1/play/t/outputs/a/b", None, None).await;
    }
    let notification = s3_body(&ingest.bucket, "uploads/acme/x/source", 1);
    call(
        Method::POST,
        "/v1/notifications/s3",
        "/v1/notifications/s3",
        Some(NOTIFY_SECRET),
        Some(notification),
    )
    .await;
    call(
        Method::POST,
        "/v1/notifications/s3",
        "/v1/notifications/s3",
        Some("guess"),
        Some(json!({})),
    )
    .await;
    let r2 = json!({ "account": "a", "action": "PutObject", "bucket": ingest.bucket, "object": { "key": "elsewhere/x.mp4", "size": 1, "eTag": "e" }, "eventTime": "2026-12-01T00:00:00Z" });
    call(
        Method::POST,
        "/v1/notifications/r2",
        "/v1/notifications/r2",
        Some(NOTIFY_SECRET),
        Some(r2),
    )
    .await;
    for (template, path) in [
        ("/asyncapi.yaml", "/asyncapi.yaml"),
        ("/openapi.json", "/openapi.json"),
        ("/", "/"),
        ("/console/{file}", "/console/console.js"),
        ("/console/{file}", "/console/nothing.js"),
    ] {
        call(Method::GET, template, path, None, None).await;
    }
    let operations =
        testkit::contracts::check_openapi(&document, &answers).unwrap_or_else(|e| panic!("{e}"));
    assert!(operations >= 16, "{operations}");
}

/// A client generated from /openapi.json by openapi-python-client, used as an app developer
/// would: typed options (enums, not strings), the presigned upload, the job read back with its
/// types, a typed problem for a bad preset, a cancel and a delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_generated_from_the_document_creates_reads_and_cancels_jobs() {
    let ingest = spawn(Store::Embedded, &[]).await;
    let document = reqwest::get(format!("{}/openapi.json", ingest.api)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, document.bytes().await.unwrap()).unwrap();
    let (api, key, video) = (ingest.api.clone(), ingest.key_a.clone(), testkit::media::tiny_mp4());
    let report = tokio::task::spawn_blocking(move || {
        testkit::contracts::run_generated_client(&path, &api, &key, &video)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"));
    // Every schema became a model: the only thing left out is the YAML answer of
    // /asyncapi.yaml (the generator reads JSON only).
    let said = report["generator_said"].as_str().unwrap();
    assert!(!said.contains("Unable to process schema"), "{said}");
    assert_eq!(said.matches("WARNING parsing").count(), 1, "{said}");
    assert!(said.contains("WARNING parsing GET /asyncapi.yaml"), "{said}");
    assert_eq!((&report["preset"], &report["priority"]), (&json!("hls"), &json!("high")));
    assert_eq!(report["status_is_enum"], true);
    assert_eq!(report["problem"], json!({ "status": 422, "code": "validation.unknown_preset" }));
    assert_eq!(report["canceled"], "canceled");
    // Deleted, deleted again (idempotent), then gone.
    assert_eq!(report["deleted"], json!([204, 204, 404]));
    let id = report["id"].as_str().unwrap();
    // The upload it made through the presigned URL reached the job.
    let job = ingest.wait_status(id, tcoder::jobs::JobStatus::Uploaded).await;
    let size = std::fs::metadata(testkit::media::tiny_mp4()).unwrap().len();
    assert_eq!(job.source.map(|s| s.size), Some(size));
}
