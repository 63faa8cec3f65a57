use aws_sdk_s3::primitives::ByteStream;
use tcoder::config::LocalStoreConfig;
use tcoder::s3::{self, local::LocalStore};
use testkit::TestEnv;
use tokio_util::sync::CancellationToken;

use crate::helpers::settings;

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
            body_idle_timeout: std::time::Duration::from_secs(10),
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
        s3::presign_put(&client, "local", own, Some(5), None, std::time::Duration::from_secs(60))
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
    let presigned = s3::presign_put(
        &client,
        "local",
        unbounded,
        None,
        None,
        std::time::Duration::from_secs(60),
    )
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
            s3::list(&client, "local", prefix, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|o| o.key)
                .collect::<Vec<_>>()
        }
    };
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
    local.stop().await;
}
