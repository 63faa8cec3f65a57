//! A seeded chaos run (reliability case T39): jobs are submitted through the real API (every
//! other one a split title, its parts spread over the workers) while faults are injected at
//! random — kill -9 of a worker, SIGSTOP of a worker past its lease,
//! kill -9 and restart of nats-server, redis-server (AOF, fsync always), the dispatcher and
//! ingest, and a 30 s Redis outage. Then a quiet drain, and an oracle built from what users
//! see: the API, the `EVENTS` stream, the stored files and ffprobe.
//!
//! `TCODER_CHAOS_SEED` replays a run (the seed is printed); `TCODER_CHAOS_SECS` sets how long
//! faults are injected (CI: 75 s; `make soak`: 30 minutes); `TCODER_CHAOS_REPORT` names a
//! Markdown file the run's figures are written to.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tcoder::events::subjects;
use tcoder::jobs::Tenant;
use testkit::{ServiceProcess, TestEnv, corpus};

use crate::harness::{SECRET, binary, fast_env};

/// `SplitMix64`: a seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillWorker,
    StopWorkerPastLease,
    RestartNats,
    RestartRedis,
    RestartDispatcher,
    RestartIngest,
    RedisOutage,
}

const FAULTS: [Fault; 7] = [
    Fault::KillWorker,
    Fault::StopWorkerPastLease,
    Fault::RestartNats,
    Fault::RestartRedis,
    Fault::RestartDispatcher,
    Fault::RestartIngest,
    Fault::RedisOutage,
];

/// How long the Redis outage fault lasts.
const REDIS_OUTAGE: Duration = Duration::from_secs(30);
/// How long a stopped worker stays stopped: twice its lease (3 s in tests).
const STOPPED_FOR: Duration = Duration::from_secs(6);
const WORKERS: usize = 2;

/// The services as separate processes (ingest and the dispatcher too, so they can be killed),
/// on servers that keep their data across restarts.
struct Stack {
    env: TestEnv,
    vars: Vec<(String, String)>,
    api: String,
    ingest: ServiceProcess,
    dispatcher: ServiceProcess,
    workers: Vec<ServiceProcess>,
}

impl Stack {
    fn start() -> Stack {
        let env = TestEnv::start_persistent();
        let api = std::net::SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
        let mut vars = env.service_env();
        vars.extend(fast_env());
        // Every other job is split (an HLS title over 2 s, in 1 s chunks): its parts run
        // on both workers through the same faults.
        vars.push(("TCODER__WORKER__SPLIT_MIN_DURATION".into(), "2s".into()));
        vars.push(("TCODER__WORKER__CHUNK_DURATION".into(), "1s".into()));
        // A fixed API port, so clients find ingest again after it restarts.
        vars.push(("TCODER__INGEST__HTTP_BIND".into(), api.to_string()));
        let ingest = Self::spawn_ready("tcoder-ingest", &vars);
        let dispatcher = Self::spawn_ready("tcoder-dispatcher", &vars);
        let workers = (0..WORKERS).map(|_| Self::spawn_worker(&vars)).collect();
        Stack { env, vars, api: format!("http://{api}"), ingest, dispatcher, workers }
    }

    fn spawn_ready(name: &str, vars: &[(String, String)]) -> ServiceProcess {
        let mut service = ServiceProcess::spawn(&binary(name), vars);
        service.wait_ready(Duration::from_secs(60));
        service
    }

    fn spawn_worker(vars: &[(String, String)]) -> ServiceProcess {
        let mut worker = ServiceProcess::spawn(&binary("tcoder-worker"), vars);
        worker.wait_alive(Duration::from_secs(60));
        worker
    }

    /// Injects `fault`; returns once the stack is whole again.
    async fn inject(&mut self, fault: Fault, rng: &mut Rng) {
        let pick = rng.next() as usize % self.workers.len();
        match fault {
            Fault::KillWorker => {
                self.workers[pick].signal(libc::SIGKILL);
                let vars = self.vars.clone();
                self.workers[pick] = tokio::task::block_in_place(|| Self::spawn_worker(&vars));
            }
            Fault::StopWorkerPastLease => {
                self.workers[pick].signal(libc::SIGSTOP);
                tokio::time::sleep(STOPPED_FOR).await;
                self.workers[pick].signal(libc::SIGCONT);
            }
            Fault::RestartNats => tokio::task::block_in_place(|| self.env.nats.restart()),
            Fault::RestartRedis => tokio::task::block_in_place(|| self.env.redis.restart()),
            Fault::RestartDispatcher => {
                self.dispatcher.signal(libc::SIGKILL);
                let vars = self.vars.clone();
                self.dispatcher =
                    tokio::task::block_in_place(|| Self::spawn_ready("tcoder-dispatcher", &vars));
            }
            Fault::RestartIngest => {
                self.ingest.signal(libc::SIGKILL);
                let vars = self.vars.clone();
                self.ingest =
                    tokio::task::block_in_place(|| Self::spawn_ready("tcoder-ingest", &vars));
            }
            Fault::RedisOutage => {
                tokio::task::block_in_place(|| self.env.redis.kill());
                tokio::time::sleep(REDIS_OUTAGE).await;
                tokio::task::block_in_place(|| self.env.redis.start_again());
            }
        }
    }
}

/// A client that keeps trying through the faults, as a real integration would (bounded).
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    api: String,
    key: String,
    bucket: String,
}

impl Client {
    /// Retries `send` through connection errors and 5xx answers (a part restarting, a
    /// dependency away) until it succeeds, for at most five minutes; any 4xx is a bug.
    async fn retrying(&self, send: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Response {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            match send().timeout(Duration::from_secs(10)).send().await {
                Ok(response) if response.status().is_success() => return response,
                Ok(response) if response.status().is_client_error() => {
                    let status = response.status();
                    panic!("refused: {status} {}", response.text().await.unwrap_or_default())
                }
                other if Instant::now() >= deadline => panic!("gave up: {other:?}"),
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// Creates (idempotently), uploads and notifies one job; returns its id. Odd jobs are HLS
    /// (with the MP4 the oracle probes), split into parts.
    async fn submit(&self, n: usize, file: &Path) -> String {
        let request = match n % 2 {
            0 => json!({ "preset": "web-optimized", "qualities": ["144p"], "outputs": ["mp4"] }),
            _ => json!({ "preset": "hls", "qualities": ["144p"], "outputs": ["hls", "mp4"] }),
        };
        let create = || {
            self.http
                .post(format!("{}/v1/jobs", self.api))
                .bearer_auth(&self.key)
                .header("idempotency-key", format!("chaos-{n}"))
                .json(&request)
        };
        // A retried create after a lost answer returns the same job.
        let created: Value = self.retrying(create).await.json().await.unwrap();
        let id = created["job"]["id"].as_str().unwrap().to_owned();
        let url = created["upload"]["url"].as_str().unwrap().to_owned();
        let body = std::fs::read(file).unwrap();
        self.retrying(|| self.http.put(&url).body(body.clone())).await;
        let key = format!("uploads/acme/{id}/source");
        let notification = json!({ "Records": [{ "eventName": "ObjectCreated:Put",
            "s3": { "bucket": { "name": self.bucket }, "object": { "key": key } } }] });
        self.retrying(|| {
            self.http
                .post(format!("{}/v1/notifications/s3", self.api))
                .bearer_auth(SECRET)
                .json(&notification)
        })
        .await;
        id
    }

    async fn job(&self, id: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/v1/jobs/{id}", self.api))
            .bearer_auth(&self.key)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        if response.status() == StatusCode::OK { response.json().await.ok() } else { None }
    }
}

#[derive(Debug, Default)]
struct Verdicts {
    /// Jobs that were split into parts (not a failure: the split path was exercised).
    split: usize,
    lost: Vec<String>,
    duplicate: Vec<String>,
    stale: Vec<String>,
    leftover: Vec<String>,
    invalid: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_random_faults_none_lost_duplicated_or_stale() {
    let seed = std::env::var("TCODER_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) ^ tcoder::jobs::now_ms());
    let window = std::env::var("TCODER_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(75), Duration::from_secs);
    eprintln!("chaos: seed {seed} (replay with TCODER_CHAOS_SEED={seed}), faults for {window:?}");
    let mut rng = Rng(seed);

    let mut stack = tokio::task::block_in_place(Stack::start);
    let key = tcoder::auth::generate_key();
    {
        let settings = tcoder::config::Settings::load_from(
            tcoder::config::Service::Cli,
            None,
            tcoder::config::EnvVars::from_pairs(stack.vars.clone()),
        )
        .unwrap();
        let mut redis = tcoder::redis::connect(&settings.redis).await.unwrap();
        tcoder::auth::store_key(&mut redis, &key, &Tenant::parse("acme").unwrap()).await.unwrap();
    }
    let client = Client {
        http: reqwest::Client::new(),
        api: stack.api.clone(),
        key,
        bucket: stack.env.s3.bucket().to_owned(),
    };

    // Load: a job every 2–5 s for the whole window, each submitted through the faults.
    let submitted: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let started = Instant::now();
    let load = {
        let (client, submitted, mut rng) = (client.clone(), submitted.clone(), Rng(seed ^ 1));
        tokio::spawn(async move {
            let clip = corpus::ok_mp4();
            let mut n = 0;
            while started.elapsed() < window {
                let id = client.submit(n, &clip).await;
                submitted.lock().unwrap().push((id, Instant::now()));
                n += 1;
                tokio::time::sleep(Duration::from_millis(rng.between(2000, 5000))).await;
            }
        })
    };
    let mut injected: BTreeMap<Fault, u32> = BTreeMap::new();
    while started.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(rng.between(4000, 12000))).await;
        let fault = FAULTS[rng.next() as usize % FAULTS.len()];
        eprintln!("chaos: {:>5.1}s {fault:?}", started.elapsed().as_secs_f64());
        stack.inject(fault, &mut rng).await;
        *injected.entry(fault).or_default() += 1;
    }
    load.await.unwrap();
    let ids: Vec<(String, Instant)> = submitted.lock().unwrap().clone();
    eprintln!("chaos: {} jobs submitted, faults {injected:?}; draining", ids.len());

    // Quiet drain: every job must end, bounded.
    let drain = Instant::now();
    let mut jobs = BTreeMap::new();
    for (id, _) in &ids {
        let job = testkit::eventually_async(Duration::from_secs(300), || async {
            match client.job(id).await {
                Some(job)
                    if ["completed", "failed", "canceled"]
                        .contains(&job["status"].as_str().unwrap_or("")) =>
                {
                    Ok(job)
                }
                other => Err(other.map(|j| j["status"].clone())),
            }
        })
        .await;
        jobs.insert(id.clone(), job);
    }
    let drained_in = drain.elapsed();

    let verdicts = judge(&stack, &jobs).await;
    let report = format!(
        "# Chaos run\n\nseed {seed}; faults for {:.0} s; drain {:.1} s\n\n\
         | jobs | lost | duplicate | stale commit | leftover epoch outputs | invalid output |\n\
         |---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} |\n\n\
         faults injected: {injected:?}\n\nlost attempts: {}; split jobs: {}\n",
        window.as_secs_f64(),
        drained_in.as_secs_f64(),
        jobs.len(),
        verdicts.lost.len(),
        verdicts.duplicate.len(),
        verdicts.stale.len(),
        verdicts.leftover.len(),
        verdicts.invalid.len(),
        jobs.values().map(|j| j["lost_attempts"].as_u64().unwrap_or(0)).sum::<u64>(),
        verdicts.split,
    );
    eprintln!("{report}");
    if let Ok(path) = std::env::var("TCODER_CHAOS_REPORT") {
        std::fs::write(&path, &report).unwrap();
    }
    assert!(!jobs.is_empty());
    assert!(jobs.len() < 2 || verdicts.split > 0, "no job was split: {verdicts:?}");
    assert!(
        verdicts.lost.is_empty()
            && verdicts.duplicate.is_empty()
            && verdicts.stale.is_empty()
            && verdicts.leftover.is_empty()
            && verdicts.invalid.is_empty(),
        "seed {seed}: {verdicts:#?}"
    );
}

/// The oracle: every job completed (none lost), with exactly one `completed` event on the
/// `EVENTS` stream (none duplicated) naming the epoch the job's result names (no stale
/// commit; a split job's parts each committed by their latest attempt), only that epoch's
/// outputs in the store (no leftovers), and an MP4 that ffprobe reads with the source's
/// duration.
async fn judge(stack: &Stack, jobs: &BTreeMap<String, Value>) -> Verdicts {
    let mut verdicts = Verdicts::default();
    let nats = async_nats::connect(stack.env.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let bucket_dir = stack.env.s3.data_dir().join(stack.env.s3.bucket());
    let settings = tcoder::config::Settings::load_from(
        tcoder::config::Service::Cli,
        None,
        tcoder::config::EnvVars::from_pairs(stack.vars.clone()),
    )
    .unwrap();
    let store = tcoder::jobs::JobStore::new(tcoder::redis::connect(&settings.redis).await.unwrap());
    let s3 = tcoder::s3::client(&settings.s3).await;
    for (id, job) in jobs {
        if job["status"] != "completed" {
            verdicts.lost.push(format!("{id}: {}", job["status"]));
            continue;
        }
        let epoch = job["result"]["epoch"].as_u64().unwrap();
        let completed = stored_events(&js, id, "completed").await;
        if completed.len() != 1 {
            verdicts.duplicate.push(format!("{id}: {} completed events", completed.len()));
        }
        if completed.iter().any(|e| e["data"]["epoch"].as_u64() != Some(epoch)) {
            verdicts.stale.push(format!("{id}: events {completed:?} vs result epoch {epoch}"));
        }
        // A split job: every part committed, each by its part's latest attempt.
        let job_id = tcoder::jobs::JobId::parse(id).unwrap();
        let parts = store.parts(&job_id).await.unwrap_or_default();
        verdicts.split += usize::from(!parts.is_empty());
        for part in parts {
            let prefix = part.result.as_ref().map(|r| r.prefix.to_string());
            let latest = format!("/parts/{}/{}/", part.part, part.epoch);
            if !part.is_done() || !prefix.as_ref().is_some_and(|p| p.ends_with(&latest)) {
                verdicts
                    .stale
                    .push(format!("{id}: part {} {:?} by {prefix:?}", part.part, part.status));
            }
        }
        // What a client listing the bucket sees (S3 has no folders: an emptied epoch is gone).
        let prefix = format!("outputs/acme/{id}/");
        let folder = tcoder::s3::KeyPrefix::parse(&prefix).unwrap();
        let keys: Vec<String> = tcoder::s3::list(&s3, &settings.s3.bucket, &folder, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key.into())
            .collect();
        let winner = format!("{prefix}{epoch}/");
        let left: Vec<&String> = keys.iter().filter(|k| !k.starts_with(&winner)).collect();
        if !left.is_empty() || keys.is_empty() {
            // With the job's state changes: enough to tell which attempt wrote it and how that
            // attempt ended.
            let history = store.history(&tcoder::jobs::JobId::parse(id).unwrap()).await.ok();
            verdicts.leftover.push(format!(
                "{id}: winner {epoch}, left {left:?} ({} keys), history {history:?}",
                keys.len()
            ));
        }
        let mp4 = job["result"]["renditions"][0]["mp4"].as_str().unwrap_or_default();
        let file = bucket_dir
            .join(mp4.split_once(&format!("/{}/", stack.env.s3.bucket())).map_or("", |(_, k)| k));
        let (duration, height) = ffprobe(&file);
        if !(duration.is_some_and(|d| (d - 3.0).abs() < 0.2) && height == Some(144)) {
            verdicts.invalid.push(format!("{id}: {} {duration:?} {height:?}", file.display()));
        }
    }
    verdicts
}

/// What ffprobe (not our code) reads in `file`: its duration and the video's height.
fn ffprobe(file: &Path) -> (Option<f64>, Option<u64>) {
    let output = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_format", "-show_streams", "-of", "json"])
        .arg(file)
        .output()
        .unwrap();
    let probe: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let duration = probe["format"]["duration"].as_str().and_then(|d| d.parse().ok());
    let height = probe["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["codec_type"] == "video"))
        .and_then(|v| v["height"].as_u64());
    (duration, height)
}

/// The events of `kind` stored for `job`.
async fn stored_events(js: &async_nats::jetstream::Context, job: &str, kind: &str) -> Vec<Value> {
    use futures_util::StreamExt;
    let stream = js.get_stream(subjects::EVENTS_STREAM).await.unwrap();
    let mut consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: subjects::event("*", job, kind),
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = consumer.info().await.unwrap().num_pending as usize;
    let mut events = Vec::new();
    if pending > 0 {
        let mut messages = consumer.messages().await.unwrap().take(pending);
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(5), messages.next()).await
        {
            events.push(serde_json::from_slice(&message.payload).unwrap());
        }
    }
    events
}
