//! The whole pipeline on real servers: ingest and dispatcher in this process, workers as real
//! `tcoder-worker` processes (so they can be killed and paused by pid).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tcoder::api::{Client, CreatedView, JobPageView, JobView, JobsQuery};
use tcoder::config::{EnvVars, Service as ServiceName, Settings};
use tcoder::events::subjects;
use tcoder::jobs::{JobRequest, JobStatus, Tenant};
use tcoder::service::Service;
use tcoder::shutdown::Shutdown;
use testkit::{ServiceProcess, TestEnv};

pub(crate) const SECRET: &str = "notify";

/// Timings short enough for tests: leases of 3 s, AckWait 2 s.
pub(crate) fn fast_env() -> Vec<(String, String)> {
    [
        ("TCODER__NATS__JOBS_ACK_WAIT", "2s"),
        ("TCODER__NATS__JOBS_MAX_DELIVER", "3"),
        ("TCODER__DISPATCHER__RECONCILE_INTERVAL", "500ms"),
        ("TCODER__DISPATCHER__PROVIDER", "none"),
        ("TCODER__DISPATCHER__STUCK_AFTER", "6s"),
        ("TCODER__WORKER__LEASE_TTL", "3s"),
        ("TCODER__WORKER__IDLE_TIMEOUT", "0s"),
        ("TCODER__WORKER__RETRY_DELAY", "1s"),
        ("TCODER__WORKER__PROGRESS_INTERVAL", "200ms"),
        ("TCODER__WORKER__ENGINE__X264_PRESET", "ultrafast"),
        ("TCODER__WORKER__ENGINE__HLS_SEGMENT_DURATION", "1s"),
        ("TCODER__SHUTDOWN__DRAIN_DEADLINE", "4s"),
        ("TCODER__INGEST__NOTIFICATION_SECRET", SECRET),
        ("TCODER__DISPATCHER__WEBHOOK_SCHEDULE", r#"["300ms", "300ms", "300ms"]"#),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub(crate) struct Pipeline {
    pub env: TestEnv,
    pub api: String,
    pub key: String,
    /// A second tenant's key.
    pub other_key: String,
    pub http: reqwest::Client,
    /// Tenant `acme`'s API client (with `key`).
    pub client: Client,
    pub js: jetstream::Context,
    pub nats: async_nats::Client,
    pub scratch: tempfile::TempDir,
    /// The dispatcher's local provider, when autoscaling is on.
    pub local: Option<std::sync::Arc<tcoder::machines::local::LocalProvider>>,
    pub redis: tcoder::redis::Conn,
    /// Ingest's admin server (`/metrics`).
    pub ingest_admin: std::net::SocketAddr,
    /// An S3 client of the test endpoint, with the services' credentials.
    pub s3: aws_sdk_s3::Client,
    shutdown: Shutdown,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl Pipeline {
    pub(crate) async fn start() -> Pipeline {
        Pipeline::start_with(&[]).await
    }

    /// As [`Pipeline::start`], with extra settings for ingest and the dispatcher.
    pub(crate) async fn start_with(extra: &[(&str, String)]) -> Pipeline {
        Pipeline::start_on(TestEnv::start(), extra).await
    }

    /// As [`Pipeline::start_with`], on servers already started.
    pub(crate) async fn start_on(env: TestEnv, extra: &[(&str, String)]) -> Pipeline {
        // Every worker scratches in this temporary folder: those this test starts, and those
        // the dispatcher's local provider starts (with its settings).
        let scratch = tempfile::tempdir().unwrap();
        let mut vars = env.service_env();
        vars.push(("TCODER__WORKER__SCRATCH_DIR".into(), scratch.path().display().to_string()));
        vars.extend(fast_env());
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let load = |service| {
            Settings::load_from(service, None, EnvVars::from_pairs(vars.clone())).unwrap()
        };
        let ingest = tcoder_ingest::App::build(load(ServiceName::Ingest)).await.unwrap();
        let dispatcher =
            tcoder_dispatcher::App::build(load(ServiceName::Dispatcher)).await.unwrap();
        let local = dispatcher.local_provider();
        let api = format!("http://{}", ingest.api_addr());
        let ingest_admin = ingest.admin_addr();
        let shutdown = Shutdown::manual(Duration::from_secs(5));
        tokio::spawn(ingest.run_until_stopped(shutdown.clone()));
        tokio::spawn(dispatcher.run_until_stopped(shutdown.clone()));
        let settings = load(ServiceName::Worker);
        let mut redis = tcoder::redis::connect(&settings.redis).await.unwrap();
        let key = tcoder::auth::generate_key();
        tcoder::auth::store_key(&mut redis, &key, &Tenant::parse("acme").unwrap()).await.unwrap();
        let other_key = tcoder::auth::generate_key();
        tcoder::auth::store_key(&mut redis, &other_key, &Tenant::parse("globex").unwrap())
            .await
            .unwrap();
        let nats = tcoder::events::connect(&settings.nats, "test").await.unwrap();
        let s3 = tcoder::s3::client(&settings.s3).await;
        let client = Client::new(&api, &key).unwrap();
        Pipeline {
            env,
            api,
            key,
            other_key,
            http: reqwest::Client::new(),
            client,
            js: jetstream::new(nats.clone()),
            nats,
            scratch,
            local,
            redis,
            ingest_admin,
            s3,
            shutdown,
        }
    }

    /// A worker's environment: the servers, the fast timings, the shared scratch folder, then
    /// `extra` (which overrides any of them).
    pub(crate) fn worker_env(&self, extra: &[(&str, String)]) -> Vec<(String, String)> {
        let mut vars = self.env.service_env();
        vars.extend(fast_env());
        vars.push((
            "TCODER__WORKER__SCRATCH_DIR".into(),
            self.scratch.path().display().to_string(),
        ));
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        vars
    }

    /// Starts a worker process; `extra` overrides settings (e.g. a slower preset, a proxy).
    pub(crate) fn worker(&self, extra: &[(&str, String)]) -> ServiceProcess {
        let vars = self.worker_env(extra);
        let mut worker =
            ServiceProcess::spawn(Path::new(env!("CARGO_BIN_EXE_tcoder-worker")), &vars);
        // Alive is enough: a worker pulls jobs even while one dependency is unhealthy.
        worker.wait_alive(Duration::from_secs(30));
        worker
    }

    /// Creates a job, uploads `file` with its presigned URL and notifies ingest (as S3 would).
    pub(crate) async fn submit(&self, file: &Path, request: Value) -> String {
        self.submit_as(&self.key, "acme", file, request).await
    }

    /// As [`Pipeline::submit`], with another tenant's key.
    pub(crate) async fn submit_as(
        &self,
        key: &str,
        tenant: &str,
        file: &Path,
        request: Value,
    ) -> String {
        let (api, notify) = (&self.api, std::slice::from_ref(&self.api));
        self.submit_at(api, notify, key, tenant, file, request).await
    }

    /// As [`Pipeline::submit`], through the ingest at `api` (another of the cluster's), the
    /// upload's notification sent to every ingest in `notify` at once (as redundant
    /// notification endpoints would).
    pub(crate) async fn submit_through(
        &self,
        api: &str,
        notify: &[String],
        file: &Path,
        request: Value,
    ) -> String {
        self.submit_at(api, notify, &self.key, "acme", file, request).await
    }

    async fn submit_at(
        &self,
        api: &str,
        notify: &[String],
        key: &str,
        tenant: &str,
        file: &Path,
        request: Value,
    ) -> String {
        let created = self.create_at(api, key, request).await;
        let id = created.job.id.to_string();
        let upload = created.upload.expect("a new job awaits its upload");
        let client = Client::new(api, key).unwrap();
        client.upload_bytes(&upload, std::fs::read(file).unwrap()).await.unwrap();
        let key = format!("uploads/{tenant}/{id}/source");
        futures_util::future::join_all(notify.iter().map(|api| self.notify_upload(api, &key)))
            .await;
        id
    }

    /// Sends ingest at `api` the S3 notification of `key`, again while it answers 503 (a
    /// dependency is failing over), as S3 does; it must be accepted within the bound. Returns
    /// what ingest made of it (`accepted`, `awaiting_files`, `unknown_key`, …).
    pub(crate) async fn notify_upload(&self, api: &str, key: &str) -> String {
        let notification = json!({ "Records": [{ "eventName": "ObjectCreated:Put", "s3": { "bucket": { "name": self.env.s3.bucket() }, "object": { "key": key } } }] });
        let answer: Value = testkit::eventually_async(Duration::from_secs(30), || async {
            let notified = self
                .http
                .post(format!("{api}/v1/notifications/s3"))
                .bearer_auth(SECRET)
                .json(&notification)
                .send()
                .await
                .unwrap();
            match notified.status() {
                StatusCode::OK => Ok(notified.json().await.unwrap()),
                StatusCode::SERVICE_UNAVAILABLE => Err("503: retry"),
                other => panic!("the notification was refused: {other}"),
            }
        })
        .await;
        answer["events"][0]["outcome"].as_str().unwrap_or_default().to_owned()
    }

    /// `POST /v1/jobs` with `key`: the created job and its upload (nothing uploaded yet). As a
    /// careful client does, it sends an `Idempotency-Key` and repeats the request while ingest
    /// answers 503 (a dependency is failing over), within a bound: one job either way.
    pub(crate) async fn create_as(&self, key: &str, request: Value) -> CreatedView {
        self.create_at(&self.api, key, request).await
    }

    /// As [`Pipeline::create_as`], through the ingest at `api`.
    async fn create_at(&self, api: &str, key: &str, request: Value) -> CreatedView {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).unwrap();
        let idempotency_key: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let request: JobRequest = serde_json::from_value(request).unwrap();
        let client = Client::new(api, key).unwrap();
        testkit::eventually_async(Duration::from_secs(30), || async {
            match client.create_job(&request, Some(&idempotency_key)).await {
                Ok(created) => Ok(created),
                Err(e) if e.is_transient() => Err(format!("retry: {e}")),
                Err(e) => panic!("the job was refused: {e}"),
            }
        })
        .await
    }

    pub(crate) async fn job_as(&self, key: &str, id: &str) -> JobView {
        Client::new(&self.api, key).unwrap().job(id).await.unwrap()
    }

    /// `GET /v1/jobs?limit=100` of tenant `acme`.
    pub(crate) async fn job_list(&self) -> JobPageView {
        let query = JobsQuery { limit: Some(100), ..JobsQuery::default() };
        self.client.jobs(&query).await.unwrap()
    }

    /// Adds the watch rule `name`: objects created under `prefix` become `tenant`'s HLS jobs
    /// (144p).
    pub(crate) async fn watch_folder(&self, name: &str, prefix: &str, tenant: &str) {
        let rule = tcoder::watch::WatchRuleRequest {
            name: name.into(),
            prefix: prefix.into(),
            tenant: tenant.into(),
            job: json!({ "preset": "hls", "qualities": ["144p"] }),
        }
        .validate(1 << 30, &[])
        .unwrap();
        tcoder::watch::put(&mut self.redis.clone(), &rule).await.unwrap();
    }

    pub(crate) async fn job(&self, id: &str) -> JobView {
        self.client.job(id).await.unwrap()
    }

    /// `POST /v1/jobs/{id}/cancel` as `acme`.
    pub(crate) async fn cancel(&self, id: &str) -> Result<JobView, tcoder::api::ClientError> {
        self.client.cancel(id).await
    }

    /// Waits (bounded) until the job satisfies `done`; a 503 (ingest waiting for a
    /// dependency) is asked again, as a client would.
    pub(crate) async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&JobView) -> bool,
    ) -> JobView {
        testkit::eventually_async(timeout, || async {
            match self.client.job(id).await {
                Ok(job) if done(&job) => Ok(job),
                Ok(job) => Err(format!("{} (attempts {})", job.status, job.attempts)),
                Err(e) if e.is_transient() => Err(e.to_string()),
                Err(e) => panic!("GET /v1/jobs/{id}: {e}"),
            }
        })
        .await
    }

    pub(crate) async fn wait_status(
        &self,
        id: &str,
        status: JobStatus,
        timeout: Duration,
    ) -> JobView {
        self.wait_for(id, timeout, |job| job.status == status).await
    }

    /// Events of `kind` stored on the `EVENTS` stream for the job.
    pub(crate) async fn events(&self, id: &str, kind: &str) -> Vec<Value> {
        let filter = subjects::event("*", id, kind);
        let stored = self.stored_messages(subjects::EVENTS_STREAM, &filter).await;
        stored.into_iter().map(|(_, payload)| payload).collect()
    }

    /// Every message `stream` holds under `filter`, as (subject, JSON payload).
    pub(crate) async fn stored_messages(&self, stream: &str, filter: &str) -> Vec<(String, Value)> {
        let stored = tcoder::events::stored_messages(&self.js, stream, filter, usize::MAX);
        let stored = stored.await.unwrap();
        stored
            .iter()
            .map(|m| (m.subject.clone(), serde_json::from_slice(&m.payload).unwrap()))
            .collect()
    }

    /// The local file behind an output URL (the test S3 endpoint stores objects as files).
    pub(crate) fn stored(&self, url: &str) -> PathBuf {
        let path = url.split_once(&format!("/{}/", self.env.s3.bucket())).unwrap().1;
        self.env.s3.data_dir().join(self.env.s3.bucket()).join(path)
    }
}

/// Another workspace binary (`tcoder-ingest`, `tcoder-dispatcher`), built next to the worker.
pub(crate) fn binary(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_tcoder-worker")).with_file_name(name);
    assert!(path.is_file(), "{name} is not built; run the workspace tests (`make test`)");
    path
}

/// A metric's value from a worker's `/metrics` (0 when absent).
pub(crate) fn metric(worker: &ServiceProcess, series: &str) -> f64 {
    let (_, text) = testkit::http_get(worker.admin_addr(), "/metrics").unwrap_or_default();
    sum_series(&text, series)
}

/// Sums the samples of `series` (`name` or `name{label="value",…}`) in a text exposition:
/// a sample matches when it has the name and every label given (others may be present).
pub(crate) fn sum_series(text: &str, series: &str) -> f64 {
    let (name, wanted) = match series.split_once('{') {
        Some((name, labels)) => (name, labels.trim_end_matches('}')),
        None => (series, ""),
    };
    let wanted: Vec<&str> = wanted.split(',').filter(|l| !l.is_empty()).collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let (sample, labels) = match head.split_once('{') {
                Some((sample, labels)) => (sample, labels.trim_end_matches('}')),
                None => (head, ""),
            };
            let labels: Vec<&str> = labels.split(',').collect();
            (sample == name && wanted.iter().all(|w| labels.contains(w)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Whether `pid` runs (a zombie waiting to be reaped has ended).
pub(crate) fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().to_owned()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// Pids of processes whose parent is `pid` (the engine children of a worker).
pub(crate) fn engine_children(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let parent = after_name.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) {
            children.push(child);
        }
    }
    children
}

/// Waits (bounded) until `receiver` got a webhook of type `wanted`; returns the types received
/// so far, in order.
pub(crate) async fn webhook_types_until(
    receiver: &testkit::webhook::WebhookReceiver,
    wanted: &str,
) -> Vec<String> {
    testkit::eventually_async(Duration::from_secs(120), || async {
        let types: Vec<String> = receiver
            .received()
            .iter()
            .map(|r| r.json()["type"].as_str().unwrap_or_default().to_owned())
            .collect();
        if types.iter().any(|t| t == wanted) { Ok(types) } else { Err(types) }
    })
    .await
}

/// The setting that lets jobs name a test receiver on loopback and the dispatcher deliver to it.
pub(crate) fn webhooks_allowed(
    receiver: &testkit::webhook::WebhookReceiver,
) -> (&'static str, String) {
    ("TCODER__WEBHOOKS__ALLOWED", format!(r#"["{}"]"#, receiver.addr()))
}

impl Pipeline {
    /// The tenant's webhook secret, as a user reads it from the API.
    pub(crate) async fn webhook_secret(&self) -> String {
        self.client.webhook_secret().await.unwrap().secret
    }
}
