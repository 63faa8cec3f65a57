//! Jobs that lose their message or kill every worker: the reconciler and the dead-letter queue.

use std::time::Duration;

use serde_json::json;
use tcoder::events::subjects;
use tcoder::jobs::{JobId, JobStatus, JobStore};
use testkit::corpus;

use crate::harness::{Pipeline, engine_children, webhook_types_until, webhooks_allowed};

const LONG: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_whose_work_item_vanished_is_republished() {
    let pipeline = Pipeline::start().await;
    let id = pipeline.submit(&corpus::ok_mp4(), json!({})).await;
    pipeline.wait_status(&id, JobStatus::Queued, LONG).await;
    // Lose the work item, as a stale ack from a paused worker would.
    let stream = pipeline.js.get_stream(subjects::JOBS_STREAM).await.unwrap();
    let subject = subjects::job(tcoder::jobs::Priority::Normal, &id);
    stream.purge().filter(&subject).await.unwrap();
    assert!(stream.get_last_raw_message_by_subject(&subject).await.is_err());

    // The reconciler notices (after `stuck_after`) and publishes it again.
    testkit::eventually_async(LONG, || async {
        stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    let _worker = pipeline.worker(&[]);
    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    assert_eq!(job.attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_kills_every_worker_is_dead_lettered_once_and_can_be_replayed() {
    let receiver = testkit::webhook::WebhookReceiver::start(&[]);
    let pipeline = Pipeline::start_with(&[webhooks_allowed(&receiver)]).await;
    let request = json!({ "preset": "hls", "qualities": "auto", "webhook_url": receiver.url() });
    let id = pipeline.submit(&corpus::heavy_720p(), request).await;
    // max_deliver is 3: kill the worker in the middle of each attempt.
    for attempt in 1..=3u32 {
        let worker = pipeline.worker(&[("TCODER__WORKER__ENGINE__X264_PRESET", "medium".into())]);
        pipeline
            .wait_for(&id, LONG, |job| job.status == JobStatus::Running && job.attempts == attempt)
            .await;
        testkit::eventually_async(LONG, || async {
            if engine_children(worker.pid()).is_empty() { Err("no engine yet") } else { Ok(()) }
        })
        .await;
        worker.signal(libc::SIGKILL);
    }
    // A healthy worker asks for work: the server, finding the message out of deliveries,
    // publishes the MAX_DELIVERIES advisory instead of a fourth delivery.
    let _healthy = pipeline.worker(&[]);
    let job = pipeline.wait_status(&id, JobStatus::Failed, LONG).await;
    assert_eq!(job.error.as_ref().map(|e| e.code.as_str()), Some("job.poison"), "{job:?}");
    assert_eq!(job.lost_attempts, 3, "{job:?}");
    assert_eq!(pipeline.events(&id, "failed").await.len(), 1);
    let letters = tcoder::dlq::list(&pipeline.js, 100).await.unwrap();
    let letter = letters.iter().find(|l| l.job_id.as_str() == id).expect("a dead letter");
    assert_eq!(letter.deliveries, 3);
    assert!(letter.history.iter().any(|h| h["to"] == "running"));

    // The cause is fixed (no more kills): replay, and a worker finishes it.
    let settings = tcoder::config::Settings::load_from(
        tcoder::config::Service::Cli,
        None,
        tcoder::config::EnvVars::from_pairs(pipeline.env.service_env()),
    )
    .unwrap();
    let jobs = JobStore::new(tcoder::redis::connect(&settings.redis).await.unwrap());
    tcoder::dlq::replay(&jobs, &pipeline.js, &JobId::parse(&id).unwrap()).await.unwrap();
    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    assert!(job.error.is_none());
    assert_eq!(pipeline.events(&id, "completed").await.len(), 1);
    // One `failed` webhook (the dead-lettering), then one `completed` (the replay).
    let received = webhook_types_until(&receiver, "job.completed").await;
    assert_eq!(received, ["job.failed", "job.completed"]);
}

/// Workers shutting down release their attempt (requeue and nak): that spends a delivery but
/// loses no attempt. Released `max_deliver` times, the job's work item runs out of deliveries;
/// the dead-letter handler replaces it instead of failing the job as poison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_released_by_stopping_workers_is_requeued_not_dead_lettered() {
    let pipeline = Pipeline::start().await;
    let request = json!({ "preset": "hls", "qualities": "auto" });
    let id = pipeline.submit(&corpus::heavy_720p(), request).await;
    // max_deliver is 3: each worker is stopped (SIGTERM, drain deadline 1 s) mid-attempt.
    for attempt in 1..=3u32 {
        let mut worker = pipeline.worker(&[
            ("TCODER__WORKER__ENGINE__X264_PRESET", "medium".into()),
            ("TCODER__SHUTDOWN__DRAIN_DEADLINE", "1s".into()),
        ]);
        pipeline
            .wait_for(&id, LONG, |job| job.status == JobStatus::Running && job.attempts == attempt)
            .await;
        let (status, in_time) =
            tokio::task::block_in_place(|| worker.terminate(Duration::from_secs(20)));
        assert!(status.success() && in_time, "worker stopped cleanly: {status:?}");
        let job = pipeline.wait_status(&id, JobStatus::Queued, LONG).await;
        assert_eq!(job.lost_attempts, 0, "a release is not a lost attempt: {job:?}");
    }
    let _healthy = pipeline.worker(&[]);
    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    assert_eq!(job.attempts, 4, "{job:?}");
    assert_eq!(job.lost_attempts, 0, "{job:?}");
    // The fourth attempt ran on a fresh work item, put there by the dead-letter handler.
    let jobs = JobStore::new(pipeline.redis.clone());
    let history = jobs.history(&JobId::parse(&id).unwrap()).await.unwrap();
    assert!(history.iter().any(|h| h["reason"] == "recovered: bump"), "{history:?}");
    assert!(pipeline.events(&id, "failed").await.is_empty());
    assert_eq!(pipeline.events(&id, "completed").await.len(), 1);
}
