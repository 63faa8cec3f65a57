//! Outages are pauses, not verdicts: jobs queued or running through an outage of Redis or of
//! the object store all complete, once, with the attempt that was running (none lost, none as
//! poison); a webhook waiting for Redis is delivered once it is back; a commit that meets a
//! Redis restart is retried rather than redone; a machine whose scratch disk fills up hands
//! its job to another and stops.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{ChaosMode, ChaosProxy, TestEnv, corpus};

use crate::harness::{Pipeline, engine_children, metric, process_alive, webhooks_allowed};
use tcoder::jobs::JobStatus;

const LONG: Duration = Duration::from_secs(180);

/// A job kept busy for a while (a 10 s 720p clip at a slow preset), plus two small ones that
/// queue behind it on a one-slot worker.
async fn busy_and_queued(pipeline: &Pipeline) -> (String, Vec<String>) {
    let busy = pipeline.submit(&corpus::heavy_720p(), json!({ "preset": "hls" })).await;
    pipeline.wait_for(&busy, LONG, |job| job.status == JobStatus::Running).await;
    let mut queued = Vec::new();
    for _ in 0..2 {
        queued.push(pipeline.submit(&corpus::ok_mp4(), json!({})).await);
    }
    for id in &queued {
        pipeline.wait_status(id, JobStatus::Queued, LONG).await;
    }
    (busy, queued)
}

/// A worker that reaches the store through a proxy (so the store can be taken away from it
/// alone), running the engine on one small rendition of a 720p clip: the proxy, the worker
/// and the job, once the source is downloaded and the engine runs.
async fn encoding_behind_a_store_proxy(
    pipeline: &Pipeline,
) -> (ChaosProxy, testkit::ServiceProcess, String) {
    let store = ChaosProxy::start(pipeline.env.s3.addr());
    let worker = pipeline.worker(&[
        ("TCODER__S3__ENDPOINT", format!("http://{}", store.addr())),
        ("TCODER__WORKER__ENGINE__X264_PRESET", "veryfast".into()),
    ]);
    let request = json!({ "preset": "web-optimized", "qualities": ["360p"], "outputs": ["mp4"] });
    let id = pipeline.submit(&corpus::heavy_720p(), request).await;
    // The engine starts while the source still arrives: wait for both.
    testkit::eventually_async(LONG, || async {
        let downloaded =
            metric(&worker, "tcoder_job_stage_duration_seconds_count{stage=\"download\"}");
        match (engine_children(worker.pid()).is_empty(), downloaded) {
            (true, _) => Err("no engine yet"),
            (false, 0.0) => Err("the source is still arriving"),
            (false, _) => Ok(()),
        }
    })
    .await;
    (store, worker, id)
}

/// Every job completed exactly once, none failed, each with its first attempt: the outage
/// lost none.
async fn assert_all_completed_once(pipeline: &Pipeline, ids: &[String]) {
    for id in ids {
        let job = pipeline.wait_status(id, JobStatus::Completed, LONG).await;
        assert_eq!((job.attempts, job.lost_attempts), (1, 0), "{job:?}");
        assert!(pipeline.events(id, "failed").await.is_empty(), "{id} failed once");
        assert_eq!(pipeline.events(id, "completed").await.len(), 1, "{id}");
    }
}

/// Redis hangs (SIGSTOP: connections open, no answers) five times for 5 s — each longer than
/// the 3 s lease and the 2 s AckWait — with one job encoding and two queued: the running
/// attempt holds (its engine keeps encoding, its work item keeps its in-progress acks) and
/// takes its lease back after each hang; the queued claims wait. Every job completes with its
/// first attempt, none lost, no attempt stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_redis_hangs_during_one_encode_are_paused_through_by_its_one_attempt() {
    let pipeline = Pipeline::start().await;
    let worker = pipeline.worker(&[("TCODER__WORKER__ENGINE__X264_PRESET", "medium".into())]);
    let (busy, queued) = busy_and_queued(&pipeline).await;

    for hang in 0..5 {
        pipeline.env.redis.signal(libc::SIGSTOP);
        tokio::time::sleep(Duration::from_secs(5)).await; // the outage itself
        pipeline.env.redis.signal(libc::SIGCONT);
        if hang == 0 {
            assert!(!engine_children(worker.pid()).is_empty(), "the encode ran through the hang");
        }
        tokio::time::sleep(Duration::from_secs(2)).await; // Redis answers between the hangs
    }
    let all: Vec<String> = std::iter::once(busy).chain(queued).collect();
    assert_all_completed_once(&pipeline, &all).await;
    assert_eq!(metric(&worker, "tcoder_self_fences_total"), 0.0, "no attempt stopped");
    assert!(
        metric(&worker, "tcoder_lease_renewals_failed_total") >= 5.0,
        "the hangs were felt by the running attempt"
    );
}

/// Redis is down (killed, then started again with its AOF) for 220 s — longer than any delivery
/// or ack deadline, and than the 150 s that once left jobs stuck — with one job running, two
/// queued, and a `completed` webhook waiting for a retry: all three jobs complete once, none as
/// poison, and the webhook is delivered exactly once, after Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_220s_redis_outage_loses_no_job_and_delivers_the_waiting_webhook_once() {
    let receiver = testkit::webhook::WebhookReceiver::start(&[500]);
    let mut pipeline = Pipeline::start_on(
        TestEnv::start_persistent(),
        &[
            webhooks_allowed(&receiver),
            // The retry after the first (failed) attempt falls inside the outage.
            ("TCODER__DISPATCHER__WEBHOOK_SCHEDULE", r#"["20s", "300ms", "300ms"]"#.into()),
        ],
    )
    .await;
    let worker = pipeline.worker(&[("TCODER__WORKER__ENGINE__X264_PRESET", "medium".into())]);
    let notified =
        pipeline.submit(&corpus::ok_mp4(), json!({ "webhook_url": receiver.url() })).await;
    pipeline.wait_status(&notified, JobStatus::Completed, LONG).await;
    testkit::eventually_async(LONG, || async {
        if receiver.received().is_empty() { Err("no attempt yet") } else { Ok(()) }
    })
    .await;
    let (busy, queued) = busy_and_queued(&pipeline).await;

    tokio::task::block_in_place(|| pipeline.env.redis.kill());
    let down = Instant::now();
    // While Redis is away the worker says it is not ready and fetches nothing: no delivery
    // is spent.
    testkit::eventually_async(LONG, || async {
        match testkit::http_get(worker.admin_addr(), "/readyz") {
            Ok((503, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(220).saturating_sub(down.elapsed())).await;
    assert_eq!(receiver.received().len(), 1, "the webhook retry waited for Redis");
    tokio::task::block_in_place(|| pipeline.env.redis.start_again());

    let all: Vec<String> = std::iter::once(busy).chain(queued).collect();
    assert_all_completed_once(&pipeline, &all).await;
    let job = pipeline
        .wait_for(&notified, LONG, |job| {
            job.webhook.as_ref().is_some_and(|w| w.state == "delivered")
        })
        .await;
    let received = receiver.received();
    assert_eq!(received.len(), 2, "one failed attempt, then exactly one delivery: {job:?}");
    assert_eq!(received[1].json()["type"], "job.completed");
    assert_eq!(received[1].json()["data"]["job_id"], notified.as_str());
    assert_eq!(received[0].header("webhook-id"), received[1].header("webhook-id"));
    let (status, _) = testkit::http_get(worker.admin_addr(), "/readyz").unwrap();
    assert_eq!(status, 200, "ready again");
}

/// Redis restarts (killed, started again; well under a second of downtime) exactly while a
/// worker commits a finished job: the commit is retried and lands; the job is not redone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_during_a_redis_restart_is_retried_not_redone() {
    let mut pipeline = Pipeline::start_on(TestEnv::start_persistent(), &[]).await;
    // The worker reaches the store through a proxy, so its uploads (the step just before the
    // commit) can be held until Redis is down.
    // One small rendition: after the hold, the uploads take milliseconds, so Redis is down for
    // well under a second.
    let (store, worker, id) = encoding_behind_a_store_proxy(&pipeline).await;
    // Downloaded (the engine runs): hold the uploads, and let the engine finish.
    store.set_mode(ChaosMode::Blackhole);
    testkit::eventually_async(LONG, || async {
        if engine_children(worker.pid()).is_empty() { Ok(()) } else { Err("engine still running") }
    })
    .await;
    tokio::task::block_in_place(|| pipeline.env.redis.kill());
    let down = Instant::now();
    store.set_mode(ChaosMode::Pass);
    testkit::eventually_async(LONG, || async {
        let retries = metric(&worker, "tcoder_commit_retries_total");
        if retries >= 1.0 { Ok(()) } else { Err(retries) }
    })
    .await;
    tokio::task::block_in_place(|| pipeline.env.redis.start_again());
    eprintln!("Redis was down for {:?} during the commit", down.elapsed());

    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    assert_eq!((Some(job.attempts), job.result.as_ref().map(|r| r.epoch)), (Some(1), Some(1)));
    assert_eq!(pipeline.events(&id, "completed").await.len(), 1);
    assert_eq!(pipeline.events(&id, "started").await.len(), 1, "not redone");
    assert_eq!(metric(&worker, "tcoder_self_fences_total"), 0.0);
}

/// The engine starts on the source before a byte of it has arrived (the store refuses the
/// worker at first): it waits for the bytes rather than reading the empty file or failing,
/// the attempt holds, and once the store answers the title comes out whole, with that one
/// attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_waits_for_a_source_that_has_not_arrived_through_a_store_outage() {
    let pipeline = Pipeline::start().await;
    let store = ChaosProxy::start(pipeline.env.s3.addr());
    let worker = pipeline.worker(&[("TCODER__S3__ENDPOINT", format!("http://{}", store.addr()))]);
    store.set_mode(ChaosMode::Drop);
    let request = json!({ "preset": "web-optimized", "qualities": ["360p"], "outputs": ["mp4"] });
    let id = pipeline.submit(&corpus::ok_mp4(), request).await;
    // Several refused downloads (backing off from 250 ms) while an engine runs on nothing.
    testkit::eventually_async(LONG, || async {
        let retries = metric(&worker, "tcoder_store_retries_total");
        match (engine_children(worker.pid()).is_empty(), retries) {
            (false, r) if r >= 4.0 => Ok(()),
            (alive, r) => Err(format!("engine running: {}, store retries: {r}", !alive)),
        }
    })
    .await;
    let job = pipeline.job(&id).await;
    assert_eq!((job.status, job.attempts), (JobStatus::Running, 1), "{job:?}");
    assert!(!engine_children(worker.pid()).is_empty(), "the waiting engine gave up");
    store.set_mode(ChaosMode::Pass);

    assert_all_completed_once(&pipeline, std::slice::from_ref(&id)).await;
    let job = pipeline.job(&id).await;
    let mp4 = pipeline.stored(job.result.as_ref().unwrap().renditions[0].mp4.as_deref().unwrap());
    let seconds = testkit::media::format_duration(&mp4);
    let source_seconds = testkit::media::format_duration(corpus::ok_mp4());
    assert!((seconds - source_seconds).abs() < 0.1, "{seconds} s of {source_seconds} s");
}

/// The object store refuses every connection for three minutes while a finished encode
/// uploads: the attempt holds (lease renewed, work item kept) and retries; when the store is
/// back the job completes with that one attempt, and no other attempt's outputs exist. (Before,
/// each store error requeued the job with a growing delay, spending a delivery each time, and
/// the last failed a healthy job.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_minute_object_store_outage_is_a_pause_and_the_job_completes_once() {
    let pipeline = Pipeline::start().await;
    let (store, worker, id) = encoding_behind_a_store_proxy(&pipeline).await;
    // Downloaded (the engine runs): the store goes away before the outputs upload.
    store.set_mode(ChaosMode::Drop);
    let down = Instant::now();
    testkit::eventually_async(LONG, || async {
        let retries = metric(&worker, "tcoder_store_retries_total");
        if retries >= 1.0 { Ok(()) } else { Err(retries) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(180).saturating_sub(down.elapsed())).await;
    let job = pipeline.job(&id).await;
    assert_eq!((job.status, job.attempts), (JobStatus::Running, 1), "still its first attempt");
    assert_eq!(metric(&worker, "tcoder_worker_attempts_waiting_for_store"), 1.0);
    store.set_mode(ChaosMode::Pass);

    assert_all_completed_once(&pipeline, std::slice::from_ref(&id)).await;
    // Only the winning attempt's outputs are in the bucket.
    let bucket = pipeline.env.s3.bucket();
    let outputs = pipeline.stored(&format!("/{bucket}/outputs/acme/{id}/"));
    let epochs: Vec<String> = std::fs::read_dir(&outputs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(epochs, ["1"], "{outputs:?}");
}

/// A worker whose scratch disk (a 256 KiB-roomier-than-the-source tmpfs in a mount namespace
/// of its own) fills up while its engine writes the renditions: the attempt ends as the
/// machine's fault (`machine.disk_full`, not the job's `limits.disk`), the job is retried and
/// completed by another worker, and the full machine takes no more work and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_scratch_disk_is_the_machine_s_fault_the_job_goes_elsewhere() {
    let pipeline = Pipeline::start().await;
    let source = corpus::heavy_720p();
    let room = (std::fs::metadata(&source).unwrap().len() + 256 * 1024).div_ceil(4096) * 4096;
    let scratch = tempfile::tempdir_in(pipeline.scratch.path()).unwrap();
    let mount = format!("mount -t tmpfs -o size={room} tcoder-test-scratch \"$0\" && exec \"$1\"");
    let vars = pipeline
        .worker_env(&[("TCODER__WORKER__SCRATCH_DIR", scratch.path().display().to_string())]);
    let small = testkit::ServiceProcess::spawn_wrapped(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &mount,
            &scratch.path().display().to_string(),
        ],
        std::path::Path::new(env!("CARGO_BIN_EXE_tcoder-worker")),
        &vars,
    );
    let request = json!({ "preset": "hls", "qualities": ["720p", "360p"] });
    let id = pipeline.submit(&source, request).await;
    // The full machine gives the job back and leaves.
    testkit::eventually_async(LONG, || async {
        if process_alive(small.pid()) { Err("the full worker still runs") } else { Ok(()) }
    })
    .await;
    let job = pipeline.job(&id).await;
    assert_eq!(job.status, JobStatus::Queued, "requeued, not failed: {job:?}");
    let _roomy = pipeline.worker(&[]);
    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    assert_eq!((job.attempts, job.lost_attempts), (2, 0), "{job:?}");
    assert!(pipeline.events(&id, "failed").await.is_empty());
}
