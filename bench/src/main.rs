//! `tcoder-bench`: the benchmarks `make bench` runs besides `tcoder compare-engine`.
//!
//! - `control-plane`: the pipeline on real servers (nats-server with `sync_interval: always`,
//!   redis-server, an S3 endpoint), ingest and the dispatcher in this process, one warm worker
//!   process whose engine child is a no-op (a worker built with the `bench` feature). Measures
//!   the latency from the upload notification to the engine starting, one job at a time, and
//!   end-to-end jobs per second, against raw JetStream publish + ack throughput on the same
//!   server in the same run.
//! - `memory`: a worker's peak resident memory (`VmHWM`, the engine child excluded: it is
//!   another process) idle, during a normal job with the real engine, and while uploading a
//!   1 GB output.
//!
//! - `playable`: time from the upload notification to the `playable` and `completed` events
//!   of an HLS job on one worker with the real engine, for each source, under the shipped
//!   settings (a short first chunk, titles over 15 s split) and under the settings before
//!   progressive playback (titles over 3 min split, every chunk 60 s), side by side.
//!
//! Each prints one JSON object; `scripts/bench_report.py` turns them into docs/BENCHMARKS.md.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tcoder::config::{EnvVars, Service as ServiceName, Settings};
use tcoder::service::Service as _;
use tcoder::shutdown::Shutdown;
use testkit::{ServiceProcess, TestEnv};

const SECRET: &str = "bench-notify";

fn main() -> anyhow::Result<()> {
    tcoder::install_crypto_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag =
        |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let worker = PathBuf::from(
        flag("--worker").context("--worker <tcoder-worker built with the bench feature>")?,
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let report = match args.first().map(String::as_str) {
        Some("control-plane") => {
            let latency_jobs = flag("--latency-jobs").map_or(Ok(200), |v| v.parse())?;
            let throughput_jobs = flag("--throughput-jobs").map_or(Ok(500), |v| v.parse())?;
            let noop = flag("--noop").unwrap_or_else(|| "child".to_owned());
            runtime.block_on(control_plane(&worker, &noop, latency_jobs, throughput_jobs))?
        }
        Some("memory") => {
            let clip = PathBuf::from(flag("--clip").context("--clip <video>")?);
            let upload = flag("--upload-bytes").map_or(Ok(1 << 30), |v| v.parse())?;
            runtime.block_on(memory(&worker, &clip, upload))?
        }
        Some("playable") => {
            let sources = flag("--sources").context("--sources <video,video,…>")?;
            let sources: Vec<PathBuf> = sources.split(',').map(PathBuf::from).collect();
            let qualities = flag("--qualities").unwrap_or_else(|| "720p,360p,144p".to_owned());
            let settings = flag("--settings").unwrap_or_else(|| "shipped,before".to_owned());
            let settings: Vec<&str> = settings.split(',').collect();
            runtime.block_on(playable(&worker, &sources, &qualities, &settings))?
        }
        _ => bail!("usage: tcoder-bench control-plane|memory|playable --worker <path> [options]"),
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Ingest and the dispatcher in this process, on the servers of `env`.
struct Stack {
    env: TestEnv,
    vars: Vec<(String, String)>,
    api: String,
    key: String,
    http: reqwest::Client,
    nats: async_nats::Client,
    jobs: tcoder::jobs::JobStore,
    shutdown: Shutdown,
}

impl Stack {
    async fn start() -> anyhow::Result<Stack> {
        let env = TestEnv::start();
        let mut vars = env.service_env();
        // `BENCH_LOG` (with `TEST_LOG=1`, which lets the workers' logs through) to see a run's
        // steps, e.g. `info,s3s=off`.
        let filter = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn,s3s=off".into());
        vars.push(("TCODER__TELEMETRY__FILTER".into(), filter));
        for (k, v) in [
            ("TCODER__DISPATCHER__PROVIDER", "none"),
            ("TCODER__INGEST__NOTIFICATION_SECRET", SECRET),
            ("TCODER__WORKER__IDLE_TIMEOUT", "0s"),
            // Throughput runs create jobs as fast as the pipeline takes them.
            ("TCODER__INGEST__CREATE_BURST", "1000000"),
        ] {
            vars.push((k.to_owned(), v.to_owned()));
        }
        let load = |service| Settings::load_from(service, None, EnvVars::from_pairs(vars.clone()));
        let ingest = tcoder_ingest::App::build(load(ServiceName::Ingest)?).await?;
        let dispatcher = tcoder_dispatcher::App::build(load(ServiceName::Dispatcher)?).await?;
        let api = format!("http://{}", ingest.api_addr());
        let shutdown = Shutdown::manual(Duration::from_secs(5));
        tokio::spawn(ingest.run_until_stopped(shutdown.clone()));
        tokio::spawn(dispatcher.run_until_stopped(shutdown.clone()));
        let settings = load(ServiceName::Worker)?;
        let mut redis = tcoder::redis::connect(&settings.redis).await?;
        let key = tcoder::auth::generate_key();
        tcoder::auth::store_key(
            &mut redis,
            &key,
            &tcoder::jobs::Tenant::parse("bench").context("tenant")?,
        )
        .await?;
        let nats = tcoder::events::connect(&settings.nats, "bench").await?;
        let jobs = tcoder::jobs::JobStore::new(redis);
        Ok(Stack { env, vars, api, key, http: reqwest::Client::new(), nats, jobs, shutdown })
    }

    /// A worker process; `extra` adds settings or bench variables.
    fn worker(&self, binary: &Path, scratch: &Path, extra: &[(&str, String)]) -> ServiceProcess {
        let mut vars = self.vars.clone();
        vars.push(("TCODER__WORKER__SCRATCH_DIR".into(), scratch.display().to_string()));
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let mut worker = ServiceProcess::spawn(binary, &vars);
        worker.wait_ready(Duration::from_secs(30));
        worker
    }

    /// Creates a job and uploads its source, without notifying ingest yet.
    async fn prepare(&self, source: &[u8], request: Value) -> anyhow::Result<(String, Value)> {
        let created: Value = self
            .http
            .post(format!("{}/v1/jobs", self.api))
            .bearer_auth(&self.key)
            .json(&request)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = created["job"]["id"].as_str().context("job id")?.to_owned();
        self.http
            .put(created["upload"]["url"].as_str().context("upload url")?)
            .body(source.to_vec())
            .send()
            .await?
            .error_for_status()?;
        let notification = json!({ "Records": [{ "eventName": "ObjectCreated:Put",
            "s3": { "bucket": { "name": self.env.s3.bucket() },
                    "object": { "key": format!("uploads/bench/{id}/source") } } }] });
        Ok((id, notification))
    }

    /// The upload notification, as S3 sends it.
    async fn notify(&self, notification: &Value) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/v1/notifications/s3", self.api))
            .bearer_auth(SECRET)
            .json(notification)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn job(&self, id: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/v1/jobs/{id}", self.api))
            .bearer_auth(&self.key)
            .send()
            .await?
            .json()
            .await?)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Waits (bounded) for `count` completed events of the jobs in `ids`.
async fn wait_completed(
    completed: &mut async_nats::Subscriber,
    ids: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut waiting: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let deadline = tokio::time::Instant::now() + timeout;
    while !waiting.is_empty() {
        let message = tokio::time::timeout_at(deadline, completed.next())
            .await
            .with_context(|| format!("{} jobs not completed within {timeout:?}", waiting.len()))?
            .context("event subscription ended")?;
        let event: Value = serde_json::from_slice(&message.payload)?;
        if let Some(id) = event["job_id"].as_str() {
            waiting.remove(id);
        }
    }
    Ok(())
}

/// `noop` is `child` (the sandboxed engine process is spawned and does nothing) or
/// `in-process` (no engine process: the control plane alone).
async fn control_plane(
    worker_binary: &Path,
    noop: &str,
    latency_jobs: usize,
    throughput_jobs: usize,
) -> anyhow::Result<Value> {
    let stack = Stack::start().await?;
    let scratch = tempfile::tempdir()?;
    let source = vec![0u8; 1024];
    let mut worker = stack.worker(
        worker_binary,
        scratch.path(),
        &[("TCODER_BENCH_NOOP_ENGINE", noop.into()), ("TCODER__WORKER__CONCURRENCY", "16".into())],
    );
    let mut completed = stack.nats.subscribe("tcoder.events.*.*.completed").await?;

    // Latency: one job at a time, the worker warm and idle (waiting on its pull).
    let mut prepared = Vec::new();
    for _ in 0..latency_jobs + 5 {
        prepared.push(stack.prepare(&source, json!({})).await?);
    }
    let mut latencies = Vec::new();
    // Where the latency goes, from the job's state history (millisecond timestamps):
    // ingest (notification → uploaded), dispatcher (→ queued), worker pull and claim
    // (→ running), source download and engine spawn (→ engine started).
    let mut hops: HashMap<&str, Vec<f64>> = HashMap::new();
    for (i, (id, notification)) in prepared.iter().enumerate() {
        let sent = tcoder::jobs::now_secs_f64() * 1000.0;
        stack.notify(notification).await?;
        wait_completed(&mut completed, std::slice::from_ref(id), Duration::from_secs(30)).await?;
        let job = stack.job(id).await?;
        let started = job["result"]["engine"]["started_at_ms"].as_f64().context("started_at_ms")?;
        if i < 5 {
            continue; // the first few warm up connections and caches
        }
        latencies.push(started - sent);
        let history = stack.jobs.history(&tcoder::jobs::JobId::parse(id).context("id")?).await?;
        let at = |to: &str| history.iter().find(|h| h["to"] == to).and_then(|h| h["at"].as_f64());
        if let (Some(uploaded), Some(queued), Some(running)) =
            (at("uploaded"), at("queued"), at("running"))
        {
            hops.entry("ingest").or_default().push(uploaded - sent);
            hops.entry("dispatcher").or_default().push(queued - uploaded);
            hops.entry("worker_claim").or_default().push(running - queued);
            hops.entry("download_and_spawn").or_default().push(started - running);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let hops: serde_json::Map<String, Value> = hops
        .into_iter()
        .map(|(hop, mut values)| {
            values.sort_by(f64::total_cmp);
            (
                hop.to_owned(),
                json!({ "p50": percentile(&values, 50.0), "p99": percentile(&values, 99.0) }),
            )
        })
        .collect();

    // Throughput: every notification at once, until the last job is committed and acked.
    let mut batch = Vec::new();
    for _ in 0..throughput_jobs {
        batch.push(stack.prepare(&source, json!({})).await?);
    }
    let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
    let started = Instant::now();
    let burst_started_ms = tcoder::jobs::now_secs_f64() * 1000.0;
    let sends = futures_util::stream::iter(batch.iter().map(|(_, n)| stack.notify(n)))
        .buffer_unordered(32)
        .collect::<Vec<_>>();
    let (sent, done) =
        tokio::join!(sends, wait_completed(&mut completed, &ids, Duration::from_secs(600)));
    sent.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    done?;
    let pipeline_secs = started.elapsed().as_secs_f64();
    let pipeline_rate = throughput_jobs as f64 / pipeline_secs;
    // When the last job passed each state, from the start of the burst: which stage limits.
    let mut last: HashMap<String, f64> = HashMap::new();
    let mut attempt_ms = Vec::new();
    for id in &ids {
        let history = stack.jobs.history(&tcoder::jobs::JobId::parse(id).context("id")?).await?;
        let mut at_state = HashMap::new();
        for entry in history {
            if let (Some(to), Some(at)) = (entry["to"].as_str(), entry["at"].as_f64()) {
                let slot = last.entry(to.to_owned()).or_insert(0.0);
                *slot = slot.max(at - burst_started_ms);
                at_state.insert(to.to_owned(), at);
            }
        }
        if let (Some(running), Some(done)) = (at_state.get("running"), at_state.get("completed")) {
            attempt_ms.push(done - running);
        }
    }
    attempt_ms.sort_by(f64::total_cmp);

    // Raw JetStream on the same server: publish (awaiting each ack, 32 in flight) and pull +
    // ack every message, as a lower bound on what any JetStream pipeline can do here.
    let raw_rate = raw_jetstream(&stack.nats, throughput_jobs).await?;
    let (_, in_time) = worker.terminate(Duration::from_secs(10));
    Ok(json!({
        "noop_engine": noop,
        "latency_jobs": latencies.len(),
        "latency_ms": { "p50": percentile(&latencies, 50.0), "p90": percentile(&latencies, 90.0),
                        "p99": percentile(&latencies, 99.0), "min": latencies[0],
                        "max": latencies[latencies.len() - 1] },
        "latency_hops_ms": hops,
        "throughput_jobs": throughput_jobs,
        "pipeline_seconds": pipeline_secs,
        "burst_last_state_change_ms": last,
        "burst_attempt_ms": { "p50": percentile(&attempt_ms, 50.0), "p99": percentile(&attempt_ms, 99.0) },
        "pipeline_jobs_per_second": pipeline_rate,
        "raw_jetstream_messages_per_second": raw_rate,
        "ratio_pipeline_to_raw": pipeline_rate / raw_rate,
        "worker_concurrency": 16,
        "worker_stopped_in_time": in_time,
    }))
}

async fn raw_jetstream(nats: &async_nats::Client, count: usize) -> anyhow::Result<f64> {
    use async_nats::jetstream::{self, consumer, stream};
    let js = jetstream::new(nats.clone());
    let stream = js
        .create_stream(stream::Config {
            name: "BENCH".into(),
            subjects: vec!["bench.raw".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let payload = bytes::Bytes::from(vec![b'x'; 256]);
    let started = Instant::now();
    let publish = async {
        let acks = futures_util::stream::iter((0..count).map(|_| {
            let js = js.clone();
            let payload = payload.clone();
            async move {
                js.publish("bench.raw", payload)
                    .await?
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }
        }))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
        acks.into_iter().collect::<anyhow::Result<Vec<()>>>().map(|_| ())
    };
    let consume = async {
        let mut messages = consumer.messages().await?;
        let mut acked = 0;
        while acked < count {
            let message = tokio::time::timeout(Duration::from_secs(60), messages.next())
                .await
                .context("raw consumer stalled")?
                .context("raw consumer ended")?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            message.double_ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            acked += 1;
        }
        anyhow::Ok(())
    };
    let (published, consumed) = tokio::join!(publish, consume);
    published?;
    consumed?;
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// `VmHWM` and `VmRSS` of a process, in bytes.
fn memory_of(pid: u32) -> anyhow::Result<HashMap<&'static str, u64>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mut values = HashMap::new();
    for (field, name) in [("VmHWM:", "peak_rss_bytes"), ("VmRSS:", "rss_bytes")] {
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{field} of pid {pid}"))?;
        values.insert(name, kb * 1024);
    }
    Ok(values)
}

async fn memory(worker_binary: &Path, clip: &Path, upload_bytes: u64) -> anyhow::Result<Value> {
    let stack = Stack::start().await?;
    let mut completed = stack.nats.subscribe("tcoder.events.*.*.completed").await?;
    let scratch = tempfile::tempdir()?;
    let source = std::fs::read(clip)?;

    // A normal job: the real engine (hls ladder) in its child; the worker itself downloads,
    // supervises, uploads and commits.
    let mut worker = stack.worker(worker_binary, scratch.path(), &[]);
    let idle = memory_of(worker.pid())?;
    let (id, notification) = stack.prepare(&source, json!({ "preset": "hls" })).await?;
    stack.notify(&notification).await?;
    wait_completed(&mut completed, std::slice::from_ref(&id), Duration::from_secs(600)).await?;
    let normal = memory_of(worker.pid())?;
    let files = stack.job(&id).await?["result"]["file_count"].as_u64().unwrap_or(0);
    worker.terminate(Duration::from_secs(10));

    // A 1 GB output: the no-op engine writes it, the worker uploads it (multipart).
    let mut worker = stack.worker(
        worker_binary,
        scratch.path(),
        &[
            ("TCODER_BENCH_NOOP_ENGINE", "child".into()),
            ("TCODER_BENCH_OUTPUT_BYTES", upload_bytes.to_string()),
        ],
    );
    let (id, notification) = stack.prepare(&source, json!({})).await?;
    let started = Instant::now();
    stack.notify(&notification).await?;
    wait_completed(&mut completed, std::slice::from_ref(&id), Duration::from_secs(600)).await?;
    let upload_secs = started.elapsed().as_secs_f64();
    let large = memory_of(worker.pid())?;
    let uploaded = stack.job(&id).await?["result"]["total_bytes"].as_u64();
    if uploaded != Some(upload_bytes) {
        bail!("the large output was not uploaded: {uploaded:?}");
    }
    worker.terminate(Duration::from_secs(10));
    Ok(json!({
        "clip": clip, "clip_bytes": source.len(),
        "idle": idle,
        "normal_job": { "memory": normal, "output_files": files },
        "large_upload": { "memory": large, "bytes": upload_bytes, "seconds": upload_secs },
    }))
}

/// Worker settings before progressive playback: only titles over 3 minutes split, the first
/// chunk as long as the others, one part at a time on the coordinator's machine.
const BEFORE_PROGRESSIVE: [(&str, &str); 3] = [
    ("TCODER__WORKER__SPLIT_MIN_DURATION", "3m"),
    ("TCODER__WORKER__FIRST_CHUNK_DURATION", "60s"),
    ("TCODER__WORKER__COORDINATOR_PARTS", "1"),
];

/// Each source as an HLS job (`qualities`) on one fresh worker, under the shipped settings and
/// the ones before progressive playback, one after the other: seconds from the upload
/// notification to `playable` and to `completed`.
async fn playable(
    worker_binary: &Path,
    sources: &[PathBuf],
    qualities: &str,
    only: &[&str],
) -> anyhow::Result<Value> {
    let stack = Stack::start().await?;
    let qualities: Vec<&str> = qualities.split(',').collect();
    let mut runs = Vec::new();
    for source in sources {
        let bytes = std::fs::read(source).with_context(|| source.display().to_string())?;
        let duration = media_duration(source)?;
        let all = [("shipped", &[][..]), ("before", &BEFORE_PROGRESSIVE[..])];
        for (settings, extra) in all.into_iter().filter(|(name, _)| only.contains(name)) {
            let scratch = tempfile::tempdir()?;
            let extra: Vec<(&str, String)> =
                extra.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
            let worker = stack.worker(worker_binary, scratch.path(), &extra);
            let request = json!({ "preset": "hls", "qualities": qualities, "outputs": ["hls", "thumbnails"] });
            let (id, notification) = stack.prepare(&bytes, request).await?;
            let mut events = stack.nats.subscribe(format!("tcoder.events.bench.{id}.>")).await?;
            let sent = Instant::now();
            stack.notify(&notification).await?;
            // Bounded: three times the title's length and ten minutes more.
            let deadline =
                tokio::time::Instant::now() + Duration::from_secs_f64(duration * 3.0 + 600.0);
            let (mut playable_secs, mut completed_secs) = (None, None);
            while completed_secs.is_none() {
                let message = tokio::time::timeout_at(deadline, events.next())
                    .await
                    .with_context(|| format!("{id} did not complete in time"))?
                    .context("event subscription ended")?;
                let event: Value = serde_json::from_slice(&message.payload)?;
                let at = sent.elapsed().as_secs_f64();
                match event["type"].as_str() {
                    Some("playable") => playable_secs = playable_secs.or(Some(at)),
                    Some("completed") => completed_secs = Some(at),
                    Some("failed" | "canceled") => bail!("{id} did not complete: {event}"),
                    _ => {}
                }
            }
            drop(worker);
            let job = stack.job(&id).await?;
            runs.push(json!({
                "source": source.file_name().map(|n| n.to_string_lossy().into_owned()),
                "duration_secs": duration,
                "settings": settings,
                "playable_secs": playable_secs,
                "completed_secs": completed_secs,
                "cpu_secs": job["result"]["cost"]["cpu_secs"],
            }));
            eprintln!("{}", runs.last().expect("just pushed"));
        }
    }
    Ok(json!({ "qualities": qualities, "runs": runs }))
}

/// The duration ffprobe reads from `path`'s container.
fn media_duration(path: &Path) -> anyhow::Result<f64> {
    let output = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .context("ffprobe")?;
    anyhow::ensure!(output.status.success(), "ffprobe {}", path.display());
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
}
