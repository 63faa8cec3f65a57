//! Admission control with the local machine provider: the dispatcher starts and reuses worker
//! processes on demand, never more than `max_machines`.

use std::time::Duration;

use serde_json::json;
use testkit::corpus;

use crate::harness::Pipeline;
use tcoder::jobs::JobStatus;

const LONG: Duration = Duration::from_secs(240);

pub(crate) fn autoscaling(max_machines: u32) -> Vec<(&'static str, String)> {
    vec![
        ("TCODER__DISPATCHER__PROVIDER", "local".into()),
        ("TCODER__DISPATCHER__MAX_MACHINES", max_machines.to_string()),
        ("TCODER__DISPATCHER__SCALE_INTERVAL", "200ms".into()),
        ("TCODER__DISPATCHER__REAP_INTERVAL", "500ms".into()),
        ("TCODER__DISPATCHER__WORKER_PROGRAM", env!("CARGO_BIN_EXE_tcoder-worker").into()),
        // Workers leave soon when idle, so machines stop and must be reused.
        ("TCODER__WORKER__IDLE_TIMEOUT", "1s".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_jobs_never_run_on_more_than_three_machines_and_stopped_ones_are_reused() {
    let pipeline = Pipeline::start_with(&autoscaling(3)).await;
    let local = pipeline.local.clone().expect("local provider");
    let clip = corpus::ok_mp4();
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(
            pipeline.submit(&clip, json!({ "preset": "default", "qualities": ["144p"] })).await,
        );
    }
    for id in &ids {
        pipeline.wait_status(id, JobStatus::Completed, LONG).await;
    }
    assert!(local.peak_alive() <= 3, "{} machines were alive at once", local.peak_alive());
    let created = local.created();
    assert!((1..=3).contains(&created), "{created} machines created");

    // Every worker idles out; new work starts stopped machines instead of creating more.
    testkit::eventually_async(LONG, || async {
        let alive = local.list_alive().await;
        if alive == 0 { Ok(()) } else { Err(alive) }
    })
    .await;
    let more: Vec<String> =
        futures_util::future::join_all((0..3).map(|_| pipeline.submit(&clip, json!({})))).await;
    for id in &more {
        pipeline.wait_status(id, JobStatus::Completed, LONG).await;
    }
    assert_eq!(
        local.created(),
        created,
        "stopped machines must be reused before new ones are created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_s_burst_does_not_starve_another() {
    let pipeline =
        Pipeline::start_with(&[("TCODER__DISPATCHER__MAX_JOBS_PER_TENANT", "2".into())]).await;
    let clip = corpus::ok_mp4();
    let mut burst = Vec::new();
    for _ in 0..5 {
        burst.push(pipeline.submit(&clip, json!({})).await);
    }
    let other = pipeline.submit_as(&pipeline.other_key.clone(), "globex", &clip, json!({})).await;
    // The other tenant's job is queued at once; the burst waits beyond its cap of 2.
    testkit::eventually_async(LONG, || async {
        let job = pipeline.job_as(&pipeline.other_key, &other).await;
        if job.status == JobStatus::Queued { Ok(()) } else { Err(job.status) }
    })
    .await;
    let mut statuses = Vec::new();
    for id in &burst {
        statuses.push(pipeline.job(id).await.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == JobStatus::Queued).count(), 2, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == JobStatus::Uploaded).count(), 3, "{statuses:?}");
    // As jobs finish, the rest are admitted.
    let _worker = pipeline.worker(&[]);
    for id in &burst {
        pipeline.wait_status(id, JobStatus::Completed, LONG).await;
    }
    assert_eq!(pipeline.job_as(&pipeline.other_key, &other).await.status, JobStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_machine_is_reclaimed_and_its_job_finishes_on_another() {
    let mut extra = autoscaling(2);
    extra.push(("TCODER__WORKER__ENGINE__X264_PRESET", "medium".into()));
    let pipeline = Pipeline::start_with(&extra).await;
    let local = pipeline.local.clone().unwrap();
    let id = pipeline
        .submit(&corpus::heavy_720p(), json!({ "preset": "hls", "qualities": "auto" }))
        .await;
    pipeline.wait_for(&id, LONG, |job| job.status == JobStatus::Running).await;
    let redis = pipeline.redis.clone();
    let busy = testkit::eventually_async(LONG, || {
        let mut redis = redis.clone();
        async move {
            let records = tcoder::machines::list(&mut redis).await.map_err(|e| e.to_string())?;
            records
                .into_iter()
                .find(|r| r.state == tcoder::machines::MachineState::Busy)
                .ok_or_else(|| "no busy machine".to_owned())
        }
    })
    .await;
    let pid = local.pid(&busy.id).expect("the busy machine runs");
    // SAFETY: kill(2) on the pid the local provider reports for a machine it runs.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    assert_eq!(job.result.as_ref().unwrap().epoch, 2);
    // The dead machine's record is dropped by the reaper.
    let busy_id = busy.id.clone();
    testkit::eventually_async(LONG, || {
        let (mut redis, busy_id) = (redis.clone(), busy_id.clone());
        async move {
            let records = tcoder::machines::list(&mut redis).await.map_err(|e| e.to_string())?;
            if records
                .iter()
                .any(|r| r.id == busy_id && r.state == tcoder::machines::MachineState::Busy)
            {
                Err("still listed busy".to_owned())
            } else {
                Ok(())
            }
        }
    })
    .await;
}
