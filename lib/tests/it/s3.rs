use aws_sdk_s3::primitives::ByteStream;
use tcoder::config::LocalStoreConfig;
use tcoder::s3::{self, local::LocalStore};
use testkit::TestEnv;
use tokio_util::sync::CancellationToken;

use crate::helpers::settings;
use std::time::Duration;

fn key(spelling: &str) -> s3::Key {
    s3::Key::parse(spelling).unwrap()
}

#[tokio::test]
async fn objects_round_trip_through_the_s3_client() {
    let env = TestEnv::start();
    let settings = settings(&env);
    let client = s3::client(&settings.s3).await;
    s3::check_bucket(&client, &settings.s3.bucket).await.unwrap();

    let body = b"not really a video".to_vec();
    client
        .put_object()
        .bucket(&settings.s3.bucket)
        .key("uploads/t1/j1/source")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let got = client
        .get_object()
        .bucket(&settings.s3.bucket)
        .key("uploads/t1/j1/source")
        .send()
        .await
        .unwrap();
    assert_eq!(got.body.collect().await.unwrap().into_bytes().to_vec(), body);
}

/// A large source comes down in ranges, several at once, each written at its place: the file
/// is the object byte for byte; a size that is not the object's is an error, not a file of
/// the wrong length.
#[tokio::test]
async fn a_large_object_downloads_in_parallel_ranges_byte_for_byte() {
    let env = TestEnv::start();
    let settings = settings(&env);
    let client = s3::client(&settings.s3).await;
    let dir = tempfile::tempdir().unwrap();
    // Just over the threshold and not a whole number of ranges: the last one is short.
    let size = s3::transfer::RANGED_THRESHOLD + 3 * 1024 * 1024 + 17;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let body: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let source = dir.path().join("upload");
    std::fs::write(&source, &body).unwrap();
    let object = key("uploads/t1/j1/source");
    let bucket = &settings.s3.bucket;
    s3::transfer::upload(&client, bucket, &object, &source, "video/mp4", "no-store").await.unwrap();

    let path = dir.path().join("source");
    let written = s3::transfer::download_sized(&client, bucket, &object, &path, size).await;
    assert_eq!(written.unwrap(), size);
    assert!(std::fs::read(&path).unwrap() == body, "the download differs from the object");
    // Told a size the object does not have: refused.
    let longer = s3::transfer::download_sized(&client, bucket, &object, &path, size + 1).await;
    assert!(longer.is_err(), "{longer:?}");
}

#[tokio::test]
async fn a_missing_bucket_fails_the_bucket_check() {
    let env = TestEnv::start();
    let client = s3::client(&settings(&env).s3).await;
    let err = s3::check_bucket(&client, "no-such-bucket").await.unwrap_err();
    assert!(err.contains("no-such-bucket"), "{err}");
}

/// The embedded store on a free port over `dir`, its bucket `local`, and a client of it.
struct Local {
    endpoint: String,
    client: aws_sdk_s3::Client,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Local {
    async fn start(env: &TestEnv, dir: &std::path::Path, max_upload: u64) -> Local {
        let config = LocalStoreConfig {
            enabled: true,
            bind: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.to_path_buf(),
            public_outputs: true,
        };
        let store = LocalStore::bind(
            &config,
            "local",
            "key-id",
            "secret",
            max_upload,
            None,
            Default::default(),
        )
        .await
        .unwrap();
        let endpoint = format!("http://{}", store.local_addr());
        let stop = CancellationToken::new();
        let limits = tcoder::http_serve::Limits {
            header_timeout: std::time::Duration::from_secs(10),
            max_connections: 64,
            max_connections_per_peer: 64,
            body_idle_timeout: std::time::Duration::from_secs(10),
            min_body_bytes_per_second: 1024,
        };
        let server = tokio::spawn(store.serve(limits, stop.clone()));
        let mut s3 = settings(env).s3;
        s3.endpoint = endpoint.clone();
        s3.bucket = "local".to_owned();
        s3.access_key_id = "key-id".to_owned();
        s3.secret_access_key = tcoder::config::Secret::new("secret");
        let client = s3::client(&s3).await;
        Local { endpoint, client, stop, server }
    }

    /// Stores `body` at `key` with a signed PUT.
    async fn put(&self, key: &str, body: &'static [u8]) {
        self.client
            .put_object()
            .bucket("local")
            .key(key)
            .body(ByteStream::from_static(body))
            .send()
            .await
            .unwrap();
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), self.server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn the_embedded_local_store_serves_signed_requests_only() {
    let env = TestEnv::start();
    let dir = tempfile::tempdir().unwrap();
    let max_upload = 1000;
    let local = Local::start(&env, dir.path(), max_upload).await;
    let (endpoint, client) = (local.endpoint.clone(), local.client.clone());
    local.put("a/b", b"hello").await;
    assert_eq!(std::fs::read(dir.path().join("local/a/b")).unwrap(), b"hello");

    let unsigned = reqwest::get(format!("{endpoint}/local/a/b")).await.unwrap();
    assert_eq!(unsigned.status(), reqwest::StatusCode::FORBIDDEN);

    // The cross-tenant copy: a presigned PUT for one's own key plus an unsigned
    // `x-amz-copy-source` naming another tenant's object is refused, and writes nothing.
    let victim = "uploads/b/job_victim/source";
    local.put(victim, b"secret video").await;
    let own = "uploads/a/job_attacker/source";
    let presigned =
        s3::presign_put(&client, "local", &key(own), Some(5), None, Duration::from_secs(60))
            .await
            .unwrap();
    let http = reqwest::Client::new();
    let put = |copy_source: Option<&str>| {
        let mut request = http.put(&presigned.url).body("hello");
        for (name, value) in &presigned.headers {
            request = request.header(name, value);
        }
        if let Some(source) = copy_source {
            request = request.header("x-amz-copy-source", source);
        }
        request.send()
    };
    let copied = put(Some(&format!("/local/{victim}"))).await.unwrap();
    assert_eq!(copied.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(!dir.path().join("local").join(own).exists(), "nothing was written");
    // A signed CopyObject is refused too: tcoder never copies.
    let signed_copy = client
        .copy_object()
        .bucket("local")
        .key(own)
        .copy_source(format!("local/{victim}"))
        .send()
        .await;
    assert!(signed_copy.is_err());
    assert!(!dir.path().join("local").join(own).exists());
    // The presigned PUT itself works.
    assert_eq!(put(None).await.unwrap().status(), reqwest::StatusCode::OK);
    assert_eq!(std::fs::read(dir.path().join("local").join(own)).unwrap(), b"hello");

    // A job that declared no length gets a URL without one: the store still refuses an upload
    // over the ceiling, from its Content-Length, and keeps nothing.
    let unbounded = "uploads/a/job_big/source";
    let presigned =
        s3::presign_put(&client, "local", &key(unbounded), None, None, Duration::from_secs(60))
            .await
            .unwrap();
    let too_big = http.put(&presigned.url).body(vec![0u8; max_upload as usize + 1]).send();
    let too_big = too_big.await.unwrap();
    assert_eq!(too_big.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(too_big.text().await.unwrap().contains("EntityTooLarge"));
    assert!(!dir.path().join("local").join(unbounded).exists(), "nothing was kept");
    let fits = http.put(&presigned.url).body(vec![0u8; max_upload as usize]).send().await;
    assert_eq!(fits.unwrap().status(), reqwest::StatusCode::OK);
    local.stop().await;
}

/// Listings answer as S3 does (keys under the prefix in order, pages joined by continuation
/// tokens) while walking only the prefix's folder.
#[tokio::test]
async fn the_embedded_local_store_lists_a_prefix_in_pages() {
    let env = TestEnv::start();
    let dir = tempfile::tempdir().unwrap();
    let local = Local::start(&env, dir.path(), 1000).await;
    let keys = [
        "outputs/acme/job_1/1/hls/master.m3u8",
        "outputs/acme/job_1/1/mp4/720p.mp4",
        "outputs/acme/job_1/parts/0/1/seg.m4s",
        "outputs/acme/job_10/1/poster.jpg",
        "outputs/acme/job_2/1/poster.jpg",
        "uploads/acme/job_3/source",
        "top-level",
    ];
    for key in keys {
        local.put(key, b"x").await;
    }
    let listed = |prefix: &'static str| {
        let client = local.client.clone();
        async move {
            let page = client.list_objects_v2().bucket("local").prefix(prefix).send().await;
            let page = page.unwrap();
            page.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect::<Vec<_>>()
        }
    };
    // tcoder's own listing (folders only) agrees.
    let folder = s3::KeyPrefix::parse("outputs/acme/job_1/").unwrap();
    let ours = s3::list(&local.client, "local", &folder, 10).await.unwrap();
    assert_eq!(ours.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), keys[..3].to_vec());
    assert_eq!(listed("outputs/acme/job_1/").await, keys[..3].to_vec());
    // A prefix ends anywhere, not only at a folder.
    assert_eq!(listed("outputs/acme/job_1").await, keys[..4].to_vec());
    assert_eq!(listed("uploads/").await, vec![keys[5]]);
    assert!(listed("outputs/other/").await.is_empty());
    let mut everything = keys.to_vec();
    everything.sort_unstable();
    assert_eq!(listed("").await, everything);
    // Two keys a page: three pages, each continuing after the last key of the one before.
    let (mut pages, mut token, mut joined) = (0, None::<String>, Vec::new());
    loop {
        let page = local
            .client
            .list_objects_v2()
            .bucket("local")
            .prefix("outputs/")
            .max_keys(2)
            .set_continuation_token(token.take())
            .send()
            .await
            .unwrap();
        pages += 1;
        joined.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
            _ => break,
        }
    }
    assert_eq!((pages, joined), (3, keys[..5].iter().map(|k| (*k).to_owned()).collect::<Vec<_>>()));

    // Deleting a job's outputs leaves no empty folders behind (listings would walk them):
    // job_1's tree goes, its neighbours and the top folder stay.
    let job_1 = s3::KeyPrefix::parse("outputs/acme/job_1/").unwrap();
    assert_eq!(s3::delete_prefix(&local.client, "local", &job_1, None, 10).await.unwrap(), 3);
    let bucket = dir.path().join("local");
    assert!(!bucket.join("outputs/acme/job_1").exists(), "an empty folder tree was left");
    assert!(bucket.join("outputs/acme/job_10/1/poster.jpg").is_file());
    let one = s3::Key::parse("uploads/acme/job_3/source").unwrap();
    s3::delete(&local.client, "local", &one).await.unwrap();
    assert!(bucket.join("uploads").is_dir() && !bucket.join("uploads/acme").exists());
    local.stop().await;
}

/// One request written as-is (no client normalises its path): the status and the body.
async fn raw_get(endpoint: &str, path: &str) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = endpoint.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the store answers")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

const SECRET: &[u8] = b"tenant b's secret video";

/// The spellings seen in the attack (issue 27): each read tenant b's upload (or watched file)
/// through the public `outputs/` folder. Every one is refused, and none answers its bytes.
#[tokio::test]
async fn the_embedded_store_refuses_every_spelling_that_is_not_a_canonical_key() {
    let env = TestEnv::start();
    let dir = tempfile::tempdir().unwrap();
    let local = Local::start(&env, dir.path(), 1000).await;
    local.put("uploads/b/job_victim/source", SECRET).await;
    local.put("incoming/b/file.mp4", SECRET).await;
    local.put("outputs/a/job_1/1/poster.jpg", b"public poster").await;
    let victim = "uploads/b/job_victim/source";
    let refused = [
        format!("/local/outputs/x/../../{victim}"),
        format!("/local/outputs/%2e%2e/{victim}"),
        format!("/local/outputs/%2E%2E/{victim}"),
        format!("/local/outputs/x/..%2f..%2f{victim}"),
        format!("/local/outputs/x/%2e%2e/%2e%2e/{victim}"),
        format!("/local/outputs/.%2e/{victim}"),
        format!("/local/outputs//../{victim}"),
        format!("/local/outputs/./../{victim}"),
        format!("/local/outputs/x/%5c..%5c..%5c{victim}"),
        format!("/local/outputs/%252e%252e/{victim}"),
        "/local/outputs/x/../../incoming/b/file.mp4".to_owned(),
        "/local/outputs/a/job_1/1/../../../../incoming/b/file.mp4".to_owned(),
    ];
    for path in &refused {
        let (status, body) = raw_get(&local.endpoint, path).await;
        assert_eq!(status, 403, "{path}: {}", String::from_utf8_lossy(&body));
        assert!(!body.windows(SECRET.len()).any(|w| w == SECRET), "{path} leaked the object");
    }
    // Canonical public reads still work; the upload itself still needs a signature.
    assert_eq!(raw_get(&local.endpoint, "/local/outputs/a/job_1/1/poster.jpg").await.0, 200);
    assert_eq!(raw_get(&local.endpoint, &format!("/local/{victim}")).await.0, 403);

    // Signed requests are held to the same keys: no read, write or listing through `..`.
    let read = local.client.get_object().bucket("local").key(format!("outputs/../{victim}"));
    assert!(read.send().await.is_err());
    let write = local.client.put_object().bucket("local").key("uploads/a/../b/job_victim/source");
    assert!(write.body(ByteStream::from_static(b"overwritten")).send().await.is_err());
    assert_eq!(std::fs::read(dir.path().join("local").join(victim)).unwrap(), SECRET);
    let listing = local.client.list_objects_v2().bucket("local").prefix("outputs/../uploads/");
    assert!(listing.send().await.is_err());
    local.stop().await;
}

/// Generated spellings against the running store: whatever a path is made of, an unsigned
/// read never answers tenant b's bytes, and only a canonical key is ever served.
#[test]
fn no_generated_spelling_reads_another_tenant_s_object_from_the_store() {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let env = TestEnv::start();
    let dir = tempfile::tempdir().unwrap();
    let local = runtime.block_on(async {
        let local = Local::start(&env, dir.path(), 1000).await;
        local.put("uploads/b/job_victim/source", SECRET).await;
        local.put("outputs/a/job_1/1/poster.jpg", b"public poster").await;
        local
    });
    // Some names, then some ways up, then the victim's key: the shape of every attack seen.
    let name = prop_oneof![
        Just("x".to_owned()),
        Just(".".to_owned()),
        Just(String::new()),
        Just("a".to_owned()),
        Just("%2e".to_owned()),
        Just("%5c".to_owned()),
    ];
    let up = prop_oneof![
        Just("..".to_owned()),
        Just("%2e%2e".to_owned()),
        Just("%2E.".to_owned()),
        Just(".%2e".to_owned()),
        Just("%252e%252e".to_owned()),
        Just("..%2f..".to_owned()),
        Just("..%5c..".to_owned()),
        Just("..\\..".to_owned()),
    ];
    let target = prop_oneof![
        Just("uploads/b/job_victim/source".to_owned()),
        Just("outputs/a/job_1/1/poster.jpg".to_owned()),
        Just("a/job_1/1/poster.jpg".to_owned()),
    ];
    let strategy =
        (proptest::collection::vec(name, 0..3), proptest::collection::vec(up, 0..4), target);
    let config = proptest::test_runner::Config { cases: 128, ..Default::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner
        .run(&strategy, |(names, ups, target)| {
            let mut segments = names;
            segments.extend(ups);
            segments.push(target);
            let spelling = format!("outputs/{}", segments.join("/"));
            let (status, body) =
                runtime.block_on(raw_get(&local.endpoint, &format!("/local/{spelling}")));
            prop_assert!(!body.windows(SECRET.len()).any(|w| w == SECRET), "{}", spelling);
            if status == 200 {
                // What the store decoded (once) is a canonical key inside `outputs/`.
                let decoded = percent_encoding::percent_decode_str(&spelling).decode_utf8_lossy();
                prop_assert!(s3::Key::parse(&decoded).is_ok(), "{} served", spelling);
            }
            Ok(())
        })
        .unwrap();
    runtime.block_on(local.stop());
}
