//! Multipart uploads of large sources through the API: parts PUT to presigned URLs, a
//! resume that sends only the missing parts, completion from what the store lists; and
//! boto3's own multipart upload into the embedded store.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Store, TestIngest, spawn};

const MIB: usize = 1 << 20;

/// Multipart from 6 MiB, in parts of 5 MiB (S3's smallest).
async fn spawn_small_parts() -> TestIngest {
    spawn(
        Store::Embedded,
        &[
            ("TCODER__INGEST__MULTIPART_THRESHOLD", (6 * MIB).to_string()),
            ("TCODER__INGEST__MULTIPART_PART_SIZE", (5 * MIB).to_string()),
        ],
    )
    .await
}

/// A source of `len` bytes that differ by position, so a part in the wrong place shows.
fn source(len: usize) -> Vec<u8> {
    (0..len).map(|i| u8::try_from((i / 4096 + i) % 251).unwrap()).collect()
}

async fn put_part(ingest: &TestIngest, part: &Value, body: &[u8]) -> StatusCode {
    let upload = &part["upload"];
    let mut request = ingest.http.put(upload["url"].as_str().unwrap());
    for (name, value) in upload["headers"].as_object().unwrap() {
        if name != "content-length" {
            request = request.header(name, value.as_str().unwrap());
        }
    }
    request.body(body.to_vec()).send().await.unwrap().status()
}

fn part_bytes<'a>(view: &Value, part: &Value, body: &'a [u8]) -> &'a [u8] {
    let size = usize::try_from(view["part_size"].as_u64().unwrap()).unwrap();
    let number = usize::try_from(part["part_number"].as_u64().unwrap()).unwrap();
    let start = (number - 1) * size;
    &body[start..(start + size).min(body.len())]
}

async fn call(ingest: &TestIngest, method: reqwest::Method, path: &str) -> (StatusCode, Value) {
    let response = ingest
        .http
        .request(method, format!("{}{path}", ingest.api))
        .bearer_auth(&ingest.key_a)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

fn numbers(parts: &Value) -> Vec<u64> {
    parts.as_array().unwrap().iter().map(|p| p["part_number"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn a_large_source_uploads_in_parts_resumes_without_resending_and_completes_once() {
    let ingest = spawn_small_parts().await;
    let body = source(12 * MIB + 1000);
    let (status, created) = ingest
        .create(json!({"preset": "hls", "content_length": body.len(), "content_type": "video/mp4"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["upload"], Value::Null, "{created}");
    assert_eq!(created["job"]["upload"], "multipart");
    let view = &created["multipart_upload"];
    assert_eq!((view["part_size"].as_u64(), view["part_count"].as_u64()), (Some(5 << 20), Some(3)));
    assert_eq!(numbers(&view["parts"]), [1, 2, 3]);
    let sizes: Vec<u64> =
        view["parts"].as_array().unwrap().iter().map(|p| p["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [5 << 20, 5 << 20, (2 << 20) + 1000]);
    let id = created["job"]["id"].as_str().unwrap().to_owned();
    assert_eq!(view["complete"], format!("/v1/jobs/{id}/upload/complete"));

    // A part URL takes its own length only, and the part must be all there.
    let first = &view["parts"][0];
    assert_eq!(put_part(&ingest, first, &body[..MIB]).await, StatusCode::FORBIDDEN);
    assert_eq!(put_part(&ingest, first, part_bytes(view, first, &body)).await, StatusCode::OK);
    // Its URL names its part and upload: pointed at another part, or sent unsigned, refused.
    let url = first["upload"]["url"].as_str().unwrap();
    assert!(url.contains("partNumber=1"), "{url}");
    let mut moved = first.clone();
    moved["upload"]["url"] = url.replace("partNumber=1", "partNumber=3").into();
    assert_eq!(put_part(&ingest, &moved, &body[..5 << 20]).await, StatusCode::FORBIDDEN);
    let unsigned = url.split("&X-Amz-").next().unwrap().to_owned();
    let response = ingest.http.put(&unsigned).body(vec![1u8; 10]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "{unsigned}");

    // The connection drops here. Completing now names what is missing.
    let complete = format!("/v1/jobs/{id}/upload/complete");
    let (status, problem) = call(&ingest, reqwest::Method::POST, &complete).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("upload.incomplete"))
    );
    assert!(problem["detail"].as_str().unwrap().contains("2 part(s) missing: 2, 3"), "{problem}");
    // The resume: the part the store holds is listed as uploaded, the others with fresh URLs.
    let (status, resumed) =
        call(&ingest, reqwest::Method::GET, &format!("/v1/jobs/{id}/upload")).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    let view = &resumed["multipart_upload"];
    assert_eq!(numbers(&view["uploaded"]), [1]);
    assert_eq!(numbers(&view["parts"]), [2, 3]);
    for part in view["parts"].as_array().unwrap() {
        assert_eq!(put_part(&ingest, part, part_bytes(view, part, &body)).await, StatusCode::OK);
    }
    let (status, job) = call(&ingest, reqwest::Method::POST, &complete).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_ne!(job["status"], "awaiting_upload", "{job}");
    assert_eq!(job["source"]["size"].as_u64(), Some(body.len() as u64));

    // The object is the source, byte for byte.
    let key = format!("uploads/acme/{id}/source");
    let stored = ingest.s3.get_object().bucket(&ingest.bucket).key(&key).send().await.unwrap();
    let stored = stored.body.collect().await.unwrap().into_bytes();
    assert!(stored.as_ref() == body.as_slice(), "the assembled object differs from the source");
    // One upload event, whichever of the store's notification and the complete call came
    // first; completing again answers the same job and makes no second one.
    let events = ingest.wait_upload_events(1).await;
    let (status, again) = call(&ingest, reqwest::Method::POST, &complete).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &job["id"]));
    assert_eq!(ingest.upload_events().await.len(), 1, "{events:?}");
    // Nothing is left to upload.
    let (status, problem) =
        call(&ingest, reqwest::Method::GET, &format!("/v1/jobs/{id}/upload")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("job.not_awaiting_upload"))
    );
}

#[tokio::test]
async fn upload_method_and_length_are_checked_and_other_tenants_cannot_reach_an_upload() {
    let ingest = spawn_small_parts().await;
    for (request, code) in [
        // One PUT carries 5 GiB at most.
        (
            json!({"content_length": (5u64 << 30) + 1, "upload": "single"}),
            "validation.content_length",
        ),
        // Parts are planned from the length.
        (json!({"upload": "multipart"}), "validation.content_length"),
        (json!({"content_length": 10, "upload": "chunked"}), "validation.upload"),
        // Over max_upload_bytes (50 GiB by default) either way.
        (json!({"content_length": 51u64 << 30}), "validation.content_length"),
    ] {
        let (status, problem) = ingest.create(request.clone()).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(code)),
            "{request}"
        );
    }
    // Small sources keep one PUT unless they ask for parts; asking for parts works for any
    // declared length.
    let (_, small) = ingest.create(json!({"content_length": 1000})).await;
    assert!(small["upload"].is_object() && small["multipart_upload"].is_null(), "{small}");
    let (_, asked) = ingest.create(json!({"content_length": 1000, "upload": "multipart"})).await;
    assert_eq!(asked["multipart_upload"]["part_count"], 1, "{asked}");
    let (_, large) = ingest.create(json!({"content_length": 7 * MIB, "upload": "single"})).await;
    assert!(large["upload"].is_object(), "{large}");

    // A single-PUT job has nothing to complete; another tenant sees neither call.
    let small_id = small["job"]["id"].as_str().unwrap();
    let (status, problem) =
        call(&ingest, reqwest::Method::POST, &format!("/v1/jobs/{small_id}/upload/complete")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("upload.not_multipart"))
    );
    let asked_id = asked["job"]["id"].as_str().unwrap();
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/jobs/{asked_id}/upload")),
        (reqwest::Method::POST, format!("/v1/jobs/{asked_id}/upload/complete")),
        (reqwest::Method::GET, "/v1/jobs/..%2Fjobs/upload".to_owned()),
    ] {
        let response = ingest
            .http
            .request(method, format!("{}{path}", ingest.api))
            .bearer_auth(&ingest.key_b)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // Canceled: its upload is dropped, and it cannot be resumed.
    let (status, _) =
        call(&ingest, reqwest::Method::POST, &format!("/v1/jobs/{asked_id}/cancel")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) =
        call(&ingest, reqwest::Method::GET, &format!("/v1/jobs/{asked_id}/upload")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("job.not_awaiting_upload"))
    );
    let part = &asked["multipart_upload"]["parts"][0];
    assert_ne!(
        put_part(&ingest, part, &[1u8; 1000]).await,
        StatusCode::OK,
        "a part of an aborted upload"
    );
}

/// A producer's own boto3 uploads large objects in parts (its `upload_file` does past 8 MiB):
/// the embedded store assembles them and reports the object, as R2 does.
#[tokio::test]
async fn boto3_uploads_a_large_object_in_parts_to_the_embedded_store() {
    let ingest = spawn_small_parts().await;
    let store = ingest.store.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    let body = source(11 * MIB + 17);
    std::fs::write(&file, &body).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = "import boto3, sys\n\
        from boto3.s3.transfer import TransferConfig\n\
        s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='auto')\n\
        config = TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)\n\
        s3.upload_file(sys.argv[2], sys.argv[3], 'uploads/acme/big.bin', Config=config)\n";
    let output = tokio::process::Command::new(root.join(".tools/venv/bin/python"))
        .args(["-c", script, &format!("http://{store}")])
        .arg(&file)
        .arg(&ingest.bucket)
        .env("AWS_ACCESS_KEY_ID", &ingest.s3_keys.0)
        .env("AWS_SECRET_ACCESS_KEY", &ingest.s3_keys.1)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let etag = ingest.etag("uploads/acme/big.bin").await;
    assert!(etag.ends_with("-3"), "a three-part object's ETag: {etag}");
    let stored = ingest.s3.get_object().bucket(&ingest.bucket).key("uploads/acme/big.bin").send();
    let stored = stored.await.unwrap().body.collect().await.unwrap().into_bytes();
    assert!(stored.as_ref() == body.as_slice(), "boto3's parts were assembled wrongly");
}
