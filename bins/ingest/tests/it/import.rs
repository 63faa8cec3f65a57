//! Jobs whose source is a URL: ingest fetches it from a real HTTP server on loopback (allowed
//! by `[ingest.import] allowed`, as a private media server would be), streams it into the
//! store, and refuses every way out of the allowed address — a redirect to another private
//! address, literal spellings of loopback, other schemes — with typed errors.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode as AxumStatus, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tcoder::events::{JobEvent, subjects};
use tcoder::jobs::JobStatus;

use crate::helpers::{Store, TestIngest, spawn};

/// An HTTP server on a free loopback port, until the test ends.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// The media server the tests import from; `private` is another loopback server, not allowed.
fn media_server(video: Vec<u8>, private: SocketAddr) -> Router {
    let clip = video.clone();
    Router::new()
        .route("/media/clip.mp4", get(move || async move { clip.clone() }))
        .route(
            "/moved",
            get(|| async { (AxumStatus::FOUND, [(header::LOCATION, "/media/clip.mp4")]) }),
        )
        .route(
            "/to-private",
            get(move || async move {
                let location = format!("http://{private}/media/clip.mp4");
                (AxumStatus::FOUND, [(header::LOCATION, location)]).into_response()
            }),
        )
        .route("/loop", get(|| async { (AxumStatus::FOUND, [(header::LOCATION, "/loop")]) }))
        .route("/gone", get(|| async { AxumStatus::NOT_FOUND }))
        // 3 MB, said up front.
        .route("/big", get(|| async { vec![0u8; 3_000_000] }))
        // 3 MB in 64 KiB chunks with no length said: counted as it streams.
        .route(
            "/big-stream",
            get(|| async {
                let chunks = (0..46).map(|_| Ok::<_, std::io::Error>(vec![1u8; 65536]));
                Response::new(Body::from_stream(futures_util::stream::iter(chunks)))
            }),
        )
        // 40 MiB streamed: stored in parts.
        .route(
            "/long",
            get(|| async {
                let chunks =
                    (0..640).map(|i| Ok::<_, std::io::Error>(vec![(i % 251) as u8; 65536]));
                Response::new(Body::from_stream(futures_util::stream::iter(chunks)))
            }),
        )
}

async fn import(ingest: &TestIngest, url: &str) -> (StatusCode, Value) {
    ingest.create(json!({ "preset": "hls", "source_url": url })).await
}

/// Waits (bounded) until the job ended or its source arrived; its view.
async fn settled(ingest: &TestIngest, id: &str) -> tcoder::api::JobView {
    let client = ingest.client(&ingest.key_a);
    testkit::eventually_async(Duration::from_secs(20), || async {
        let job = client.job(id).await.unwrap();
        match job.status {
            JobStatus::AwaitingUpload => Err(job.status),
            _ => Ok(job),
        }
    })
    .await
}

async fn error_code(ingest: &TestIngest, url: &str) -> String {
    let (status, created) = import(ingest, url).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let job = settled(ingest, created["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job.status, JobStatus::Failed, "{url}: {job:?}");
    job.error.unwrap().code
}

#[tokio::test]
async fn a_source_url_is_fetched_into_the_store_through_an_allowed_redirect() {
    let video = std::fs::read(testkit::media::tiny_mp4()).unwrap();
    let private = serve(media_server(video.clone(), "127.0.0.1:9".parse().unwrap())).await;
    let media = serve(media_server(video.clone(), private)).await;
    // The test kit's S3 endpoint (it sends no notifications: the import's own report starts
    // the job).
    let ingest = spawn(
        Store::External,
        &[
            ("TCODER__INGEST__IMPORT__ALLOW_HTTP", "true".to_owned()),
            ("TCODER__INGEST__IMPORT__ALLOWED", format!(r#"["{media}"]"#)),
        ],
    )
    .await;
    let (status, created) = import(&ingest, &format!("http://{media}/moved")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    // Nothing to upload: ingest fetches it.
    assert!(created["upload"].is_null() && created["multipart_upload"].is_null(), "{created}");
    let id = created["job"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["job"]["filename"], "moved");
    let job = settled(&ingest, &id).await;
    assert_eq!(job.status, JobStatus::Uploaded, "{job:?}");
    let source = job.source.unwrap();
    assert_eq!(source.size, video.len() as u64);
    let key = format!("uploads/acme/{id}/source");
    let stored = ingest.s3.get_object().bucket(&ingest.bucket).key(&key);
    let stored = stored.send().await.unwrap().body.collect().await.unwrap().into_bytes();
    assert!(stored == video, "the stored source is the served file");
    let uploads = ingest.wait_upload_events(1).await;
    assert_eq!(uploads[0].source, tcoder::events::UploadSource::Import);
    let filter = subjects::event("acme", &id, "importing");
    let reports: Vec<JobEvent> = ingest.stored(subjects::EVENTS_STREAM, &filter).await;
    let last = reports.last().expect("an importing report");
    assert_eq!(last.data["bytes"], video.len());
    assert_eq!(last.data["percent"], 100.0);

    // 40 MiB with no length said: stored in 16 MiB parts, the same bytes.
    let (_, created) = import(&ingest, &format!("http://{media}/long")).await;
    let job = settled(&ingest, created["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job.status, JobStatus::Uploaded, "{job:?}");
    assert_eq!(job.source.unwrap().size, 40 << 20);
}

#[tokio::test]
async fn a_source_url_that_leads_anywhere_but_an_allowed_public_place_is_refused() {
    let video = std::fs::read(testkit::media::tiny_mp4()).unwrap();
    // A second loopback server holding the same file: were the guard to let the redirect
    // through, the import would succeed.
    let private = serve(media_server(video.clone(), "127.0.0.1:9".parse().unwrap())).await;
    let media = serve(media_server(video, private)).await;
    // Allowed, but nothing listens there.
    let closed = testkit::free_port();
    let ingest = spawn(
        Store::Embedded,
        &[
            ("TCODER__INGEST__IMPORT__ALLOW_HTTP", "true".to_owned()),
            ("TCODER__INGEST__IMPORT__ALLOWED", format!(r#"["{media}", "127.0.0.1:{closed}"]"#)),
            ("TCODER__INGEST__MAX_UPLOAD_BYTES", "2000000".to_owned()),
            ("TCODER__INGEST__MULTIPART_THRESHOLD", "1000000".to_owned()),
        ],
    )
    .await;
    let at = |path: &str| format!("http://{media}{path}");
    assert_eq!(error_code(&ingest, &at("/to-private")).await, "source.forbidden_address");
    assert_eq!(error_code(&ingest, &at("/gone")).await, "source.unreachable");
    assert_eq!(error_code(&ingest, &at("/loop")).await, "source.unreachable");
    assert_eq!(error_code(&ingest, &at("/big")).await, "source.too_large");
    assert_eq!(error_code(&ingest, &at("/big-stream")).await, "source.too_large");
    let nobody = format!("http://127.0.0.1:{closed}/x");
    assert_eq!(error_code(&ingest, &nobody).await, "source.unreachable");
    // Refused when the job is created: addresses spelled out, other schemes, credentials.
    for refused in [
        format!("http://{private}/media/clip.mp4"),
        "http://127.0.0.1/x".to_owned(),
        "http://0x7f000001/x".to_owned(),
        "http://2130706433/x".to_owned(),
        "http://[::1]/x".to_owned(),
        "http://[::ffff:127.0.0.1]/x".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://10.0.0.1/x".to_owned(),
        "http://localhost/x".to_owned(),
        format!("http://localhost.:{}/x", media.port()),
        "http://redis.internal/x".to_owned(),
        "file:///etc/passwd".to_owned(),
        "ftp://example.com/x".to_owned(),
        "gopher://127.0.0.1:6379/_INFO".to_owned(),
        "https://user:pass@example.com/x".to_owned(),
        "https://example.com/a b".to_owned(),
        "https://example.com/x\r\nHost: evil".to_owned(),
        "not a url".to_owned(),
        format!("https://example.com/{}", "a".repeat(2048)),
    ] {
        let (status, problem) = import(&ingest, &refused).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}: {problem}");
        assert_eq!(problem["code"], "validation.source_url", "{refused}");
    }
    // A source URL is the source: no upload to declare.
    let (status, problem) =
        ingest.create(json!({ "source_url": at("/media/clip.mp4"), "content_length": 10 })).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation.source_url"))
    );
    let listed = ingest.list_jobs(&ingest.key_a).await;
    assert!(listed.jobs.iter().all(|j| j.status == JobStatus::Failed), "{listed:?}");
}

#[tokio::test]
async fn plain_http_is_refused_unless_allowed() {
    let ingest = spawn(Store::External, &[]).await;
    let (status, problem) = import(&ingest, "http://example.com/clip.mp4").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem["detail"].as_str().unwrap().contains("https"), "{problem}");
}
