use std::time::Duration;

use async_nats::jetstream;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tcoder::api::{Client, JobPageView, JobView, JobsQuery};
use tcoder::config::{EnvVars, Service as ServiceName, Settings};
use tcoder::events::{UploadEvent, subjects};
use tcoder::jobs::{JobStatus, Tenant};
use tcoder::service::Service;
use tcoder::shutdown::Shutdown;
use tcoder_ingest::App;
use testkit::TestEnv;

pub(crate) const NOTIFY_SECRET: &str = "notify-secret";

/// Where uploads go in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Store {
    /// The embedded store inside ingest (single-host default): uploads notify by themselves.
    Embedded,
    /// The test kit's S3 endpoint: notifications must be delivered explicitly.
    External,
}

/// A running ingest with two tenants' keys.
pub(crate) struct TestIngest {
    _env: TestEnv,
    pub api: String,
    pub admin: String,
    /// The embedded store's address, when it runs.
    pub store: Option<std::net::SocketAddr>,
    pub http: reqwest::Client,
    pub key_a: String,
    pub key_b: String,
    pub s3: aws_sdk_s3::Client,
    /// The store's access key id and secret (what an operator's own S3 client signs with).
    pub s3_keys: (String, String),
    pub bucket: String,
    pub js: jetstream::Context,
    /// A core NATS client (as a producer or a relay publishes).
    pub nats: async_nats::Client,
    /// The test NATS server's URL.
    pub nats_url: String,
    shutdown: Shutdown,
    /// The running ingest (ends after `shutdown`).
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    settings: Settings,
    _data: tempfile::TempDir,
}

pub(crate) async fn spawn(store: Store, extra: &[(&str, String)]) -> TestIngest {
    let env = TestEnv::start();
    let nats_url = env.nats.url();
    let data = tempfile::tempdir().unwrap();
    let mut vars = env.service_env();
    vars.push(("TCODER__INGEST__NOTIFICATION_SECRET".into(), NOTIFY_SECRET.into()));
    if store == Store::Embedded {
        let port = testkit::free_port();
        vars.push(("TCODER__INGEST__LOCAL_STORE__ENABLED".into(), "true".into()));
        vars.push(("TCODER__INGEST__LOCAL_STORE__BIND".into(), format!("127.0.0.1:{port}")));
        vars.push((
            "TCODER__INGEST__LOCAL_STORE__DATA_DIR".into(),
            data.path().display().to_string(),
        ));
        vars.push(("TCODER__S3__ENDPOINT".into(), format!("http://127.0.0.1:{port}")));
    }
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let settings =
        Settings::load_from(ServiceName::Ingest, None, EnvVars::from_pairs(vars)).unwrap();
    let s3 = tcoder::s3::client(&settings.s3).await;
    let bucket = settings.s3.bucket.clone();
    let s3_keys =
        (settings.s3.access_key_id.clone(), settings.s3.secret_access_key.expose().to_owned());
    let mut redis = tcoder::redis::connect(&settings.redis).await.unwrap();
    let (key_a, key_b) = (tcoder::auth::generate_key(), tcoder::auth::generate_key());
    tcoder::auth::store_key(&mut redis, &key_a, &Tenant::parse("acme").unwrap()).await.unwrap();
    tcoder::auth::store_key(&mut redis, &key_b, &Tenant::parse("globex").unwrap()).await.unwrap();
    let nats = tcoder::events::connect(&settings.nats, "test").await.unwrap();
    let app = App::build(settings.clone()).await.unwrap();
    let (api, admin) =
        (format!("http://{}", app.api_addr()), format!("http://{}", app.admin_addr()));
    let store = app.local_store_addr();
    let shutdown = Shutdown::manual(settings.shutdown.drain_deadline);
    let running = Some(tokio::spawn(app.run_until_stopped(shutdown.clone())));
    TestIngest {
        _env: env,
        api,
        admin,
        store,
        // Idle pooled connections are let go before the shortest header timeout a test sets
        // (1 s), at which the server closes an idle kept-alive connection: a request sent on
        // one just as the server closes it fails with an incomplete message.
        http: reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_millis(500))
            .build()
            .unwrap(),
        key_a,
        key_b,
        s3,
        s3_keys,
        bucket,
        js: jetstream::new(nats.clone()),
        nats,
        nats_url,
        shutdown,
        running,
        settings,
        _data: data,
    }
}

impl Drop for TestIngest {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl TestIngest {
    /// Stops this ingest as SIGTERM would and waits (bounded by `within`) until it has;
    /// returns whether it stopped in time.
    pub(crate) async fn stop(&mut self, within: Duration) -> bool {
        self.shutdown.trigger();
        let running = self.running.take().expect("running");
        tokio::time::timeout(within, running).await.is_ok()
    }

    /// Starts ingest again on the same API address (a restart, or a new process behind the
    /// same name).
    pub(crate) async fn start_again(&mut self) {
        let mut settings = self.settings.clone();
        settings.ingest.http_bind = self.api.trim_start_matches("http://").parse().unwrap();
        let app = App::build(settings).await.unwrap();
        self.shutdown = Shutdown::manual(self.settings.shutdown.drain_deadline);
        self.running = Some(tokio::spawn(app.run_until_stopped(self.shutdown.clone())));
    }

    /// `POST /v1/jobs` as tenant A; returns (status, body).
    pub(crate) async fn create(&self, body: Value) -> (StatusCode, Value) {
        self.create_as(&self.key_a, body, None).await
    }

    pub(crate) async fn create_as(
        &self,
        key: &str,
        body: Value,
        idempotency: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request =
            self.http.post(format!("{}/v1/jobs", self.api)).bearer_auth(key).json(&body);
        if let Some(idem) = idempotency {
            request = request.header("Idempotency-Key", idem);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn get_job(&self, key: &str, id: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}/v1/jobs/{id}", self.api))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    /// The typed API client of the tenant whose key is `key`.
    pub(crate) fn client(&self, key: &str) -> Client {
        Client::new(&self.api, key).unwrap()
    }

    /// Waits (bounded) until job `id` of tenant A has `status`.
    pub(crate) async fn wait_status(&self, id: &str, status: JobStatus) -> JobView {
        let client = self.client(&self.key_a);
        testkit::eventually_async(Duration::from_secs(15), || async {
            let job = client.job(id).await.unwrap();
            if job.status == status { Ok(job) } else { Err(job.status) }
        })
        .await
    }

    /// PUTs `body` to a created job's presigned URL with the headers it came with.
    pub(crate) async fn upload(&self, created: &Value, body: Vec<u8>) -> StatusCode {
        let upload = &created["upload"];
        let mut request = self.http.put(upload["url"].as_str().unwrap());
        for (name, value) in upload["headers"].as_object().unwrap() {
            if name != "content-length" {
                request = request.header(name, value.as_str().unwrap());
            }
        }
        request.body(body).send().await.unwrap().status()
    }

    /// Puts an object straight into the bucket (no presigned URL, no notification).
    pub(crate) async fn put_object(&self, key: &str, body: Vec<u8>) {
        self.s3.put_object().bucket(&self.bucket).key(key).body(body.into()).send().await.unwrap();
    }

    pub(crate) async fn notify(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/v1/notifications/{path}", self.api))
            .bearer_auth(NOTIFY_SECRET)
            .json(body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    /// Every message on `tcoder.uploads.>` so far.
    pub(crate) async fn upload_events(&self) -> Vec<UploadEvent> {
        self.stored(subjects::UPLOADS_STREAM, subjects::UPLOADS_ALL).await
    }

    /// Every payload `stream` keeps under `filter`, oldest first.
    pub(crate) async fn stored<T: serde::de::DeserializeOwned>(
        &self,
        stream: &str,
        filter: &str,
    ) -> Vec<T> {
        let stored = tcoder::events::stored_messages(&self.js, stream, filter, usize::MAX);
        stored.await.unwrap().iter().map(|m| serde_json::from_slice(&m.payload).unwrap()).collect()
    }

    /// `GET /v1/jobs` with `key`: the first page of its tenant's jobs.
    pub(crate) async fn list_jobs(&self, key: &str) -> JobPageView {
        self.client(key).jobs(&JobsQuery::default()).await.unwrap()
    }

    /// Waits (bounded) until `n` upload events exist, then returns them.
    pub(crate) async fn wait_upload_events(&self, n: usize) -> Vec<UploadEvent> {
        testkit::eventually_async(Duration::from_secs(15), || async {
            let events = self.upload_events().await;
            if events.len() >= n { Ok(events) } else { Err(events.len()) }
        })
        .await
    }

    pub(crate) async fn etag(&self, key: &str) -> String {
        let head = self.s3.head_object().bucket(&self.bucket).key(key).send().await.unwrap();
        head.e_tag().unwrap().trim_matches('"').to_owned()
    }
}

/// The S3-format notification body for `key` (form-encoded, as S3 sends it).
pub(crate) fn s3_body(bucket: &str, key: &str, size: u64) -> Value {
    let encoded: String = key
        .bytes()
        .map(|b| match b {
            b' ' => "+".to_owned(),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    json!({ "Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-24T12:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": { "s3SchemaVersion": "1.0", "bucket": { "name": bucket, "arn": format!("arn:aws:s3:::{bucket}") },
                "object": { "key": encoded, "size": size, "eTag": "ignored", "sequencer": "0055AED6DCD90281E5" } }
    }]})
}

/// The R2-format notification body for `key`.
pub(crate) fn r2_body(bucket: &str, key: &str, size: u64) -> Value {
    json!({
        "account": testkit::cloudflare::ACCOUNT_ID, "action": "PutObject", "bucket": bucket,
        "object": { "key": key, "size": size, "eTag": "ignored" }, "eventTime": "2026-11-24T12:00:00.379Z"
    })
}
