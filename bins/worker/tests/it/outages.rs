//! Redis outages are pauses, not verdicts: jobs queued or running through one all complete,
//! once, none as poison; a webhook waiting for Redis is delivered once it is back; a commit
//! that meets a Redis restart is retried rather than redone.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{ChaosMode, ChaosProxy, TestEnv, corpus};

use crate::harness::{Pipeline, engine_children, metric, webhooks_allowed};
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

/// Every job completed exactly once, none failed, and at most the attempt running when Redis
/// went away was lost.
async fn assert_all_completed_once(pipeline: &Pipeline, ids: &[String]) {
    for id in ids {
        let job = pipeline.wait_status(id, JobStatus::Completed, LONG).await;
        assert!(job.lost_attempts <= 1, "{job:?}");
        assert!(pipeline.events(id, "failed").await.is_empty(), "{id} failed once");
        assert_eq!(pipeline.events(id, "completed").await.len(), 1, "{id}");
    }
}

/// Redis hangs (SIGSTOP: connections open, no answers) for 30 s with one job running and two
/// queued: the running attempt self-fences, its redelivery and the queued items wait, and all
/// three complete once Redis answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30s_redis_hang_pauses_running_and_queued_jobs_and_all_complete() {
    let pipeline = Pipeline::start().await;
    let worker = pipeline.worker(&[("TCODER__WORKER__ENGINE__X264_PRESET", "medium".into())]);
    let (busy, queued) = busy_and_queued(&pipeline).await;

    pipeline.env.redis.signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(30)).await; // the outage itself
    let fenced = metric(&worker, "tcoder_self_fences_total");
    pipeline.env.redis.signal(libc::SIGCONT);

    assert_eq!(fenced, 1.0, "the running attempt stopped itself when its lease could not renew");
    let all: Vec<String> = std::iter::once(busy).chain(queued).collect();
    assert_all_completed_once(&pipeline, &all).await;
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
    let store = ChaosProxy::start(pipeline.env.s3.addr());
    let worker = pipeline.worker(&[
        ("TCODER__S3__ENDPOINT", format!("http://{}", store.addr())),
        ("TCODER__WORKER__ENGINE__X264_PRESET", "veryfast".into()),
    ]);
    // One small rendition: after the hold, the uploads take milliseconds, so Redis is down for
    // well under a second.
    let request = json!({ "preset": "web-optimized", "qualities": ["360p"], "outputs": ["mp4"] });
    let id = pipeline.submit(&corpus::heavy_720p(), request).await;
    testkit::eventually_async(LONG, || async {
        if engine_children(worker.pid()).is_empty() { Err("no engine yet") } else { Ok(()) }
    })
    .await;
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
