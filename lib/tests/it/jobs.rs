use tcoder::jobs::{
    CreateOutcome, JobRequest, JobSpec, JobStatus, JobStore, SpecLimits, Tenant, TransitionError,
};
use testkit::TestEnv;

use crate::helpers::settings;

async fn store_with_job(env: &TestEnv) -> (JobStore, tcoder::jobs::Job) {
    let conn = tcoder::redis::connect(&settings(env).redis).await.unwrap();
    let store = JobStore::new(conn);
    let limits = SpecLimits {
        max_upload_bytes: 1 << 20,
        allowed_webhooks: &[],
        tenant: &tcoder::jobs::Tenant::parse("acme").unwrap(),
        presigned: true,
        multipart_threshold: u64::MAX,
        import: None,
    };
    let spec = JobSpec::from_request(JobRequest::default(), limits).unwrap();
    let tenant = Tenant::parse("acme").unwrap();
    let CreateOutcome::Created(job) = store.create(&tenant, &spec, None, 60).await.unwrap() else {
        panic!("expected a new job");
    };
    (store, *job)
}

#[tokio::test]
async fn only_legal_transitions_happen_and_each_is_recorded() {
    let env = TestEnv::start();
    let (store, job) = store_with_job(&env).await;
    assert_eq!(job.status, JobStatus::AwaitingUpload);

    let skipped = store.transition(&job.id, JobStatus::Queued, "skip", &[]).await;
    assert!(
        matches!(skipped, Err(TransitionError::Illegal { current: JobStatus::AwaitingUpload, .. })),
        "{skipped:?}"
    );
    store
        .transition(
            &job.id,
            JobStatus::Uploaded,
            "test",
            &[("source", r#"{"key":"k","size":1,"etag":"e"}"#.into())],
        )
        .await
        .unwrap();
    store.transition(&job.id, JobStatus::Canceled, "test", &[]).await.unwrap();
    let after_terminal = store.transition(&job.id, JobStatus::Queued, "late", &[]).await;
    assert!(matches!(
        after_terminal,
        Err(TransitionError::Illegal { current: JobStatus::Canceled, .. })
    ));

    let stored = store.get(&job.id).await.unwrap().unwrap();
    assert_eq!(stored.status, JobStatus::Canceled);
    assert_eq!(stored.source.unwrap().size, 1);
    let history: Vec<String> = store
        .history(&job.id)
        .await
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(history, ["awaiting_upload", "uploaded", "canceled"]);
    // Terminal jobs leave the non-terminal indexes the sweeps and reconciler scan.
    for status in [JobStatus::AwaitingUpload, JobStatus::Uploaded] {
        assert!(!store.in_status(status, 100).await.unwrap().contains(&job.id));
    }
}

#[tokio::test]
async fn of_concurrent_identical_transitions_exactly_one_wins() {
    let env = TestEnv::start();
    let (store, job) = store_with_job(&env).await;
    let attempts = (0..8).map(|i| {
        let (store, id) = (store.clone(), job.id.clone());
        tokio::spawn(async move {
            store.transition(&id, JobStatus::Uploaded, &format!("racer {i}"), &[]).await
        })
    });
    let results = futures_util::future::join_all(attempts).await;
    let winners = results.into_iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert_eq!(winners, 1);
    assert_eq!(store.in_status(JobStatus::Uploaded, 10).await.unwrap(), vec![job.id.clone()]);
}

#[tokio::test]
async fn another_tenant_cannot_read_a_job() {
    let env = TestEnv::start();
    let (store, job) = store_with_job(&env).await;
    let other = Tenant::parse("globex").unwrap();
    assert!(store.get_for_tenant(&other, &job.id).await.unwrap().is_none());
    assert!(store.get_for_tenant(&job.tenant, &job.id).await.unwrap().is_some());
}

#[tokio::test]
async fn only_the_current_epoch_can_renew_commit_or_fail() {
    use std::time::Duration;
    use tcoder::events::{EventKind, JobEvent};
    use tcoder::jobs::{ClaimOutcome, FinishOutcome, JobError, Playable, RenewOutcome};

    let env = TestEnv::start();
    let (store, job) = store_with_job(&env).await;
    store.transition(&job.id, JobStatus::Uploaded, "test", &[]).await.unwrap();
    store.transition(&job.id, JobStatus::Queued, "test", &[]).await.unwrap();
    let ClaimOutcome::Claimed(first) =
        store.claim(&job.id, "worker-a", Duration::from_millis(300)).await.unwrap()
    else {
        panic!("first claim")
    };
    assert!(matches!(
        store.claim(&job.id, "worker-b", Duration::from_secs(5)).await.unwrap(),
        ClaimOutcome::Busy { .. }
    ));
    // A's lease lapses (it stopped renewing); B takes over with a higher epoch.
    let second = testkit::eventually_async(Duration::from_secs(5), || async {
        match store.claim(&job.id, "worker-b", Duration::from_secs(5)).await.unwrap() {
            ClaimOutcome::Claimed(attempt) => Ok(attempt),
            other => Err(other),
        }
    })
    .await;
    assert_eq!((first.epoch, second.epoch), (1, 2));

    let event = JobEvent::new(
        format!("{}.completed", job.id),
        EventKind::Completed,
        &job.id,
        &job.tenant,
        serde_json::json!({}),
    );
    let playable = JobEvent::playable(&job, 2);
    assert_eq!(store.renew(&first, Duration::from_secs(5)).await.unwrap(), RenewOutcome::Lost);
    assert_eq!(
        store.complete(&first, &result(1), &event, None).await.unwrap(),
        FinishOutcome::Fenced
    );
    assert_eq!(store.mark_playable(&first, &playable).await.unwrap(), Playable::Fenced);
    let error = JobError { code: "engine.failed".into(), message: "x".into() };
    assert_eq!(store.fail(&first, &error, &event).await.unwrap(), FinishOutcome::Fenced);
    assert_eq!(store.renew(&second, Duration::from_secs(5)).await.unwrap(), RenewOutcome::Renewed);
    // Playable once: the current attempt marks it, a second mark (or the commit) does not.
    assert_eq!(store.mark_playable(&second, &playable).await.unwrap(), Playable::Marked);
    let marked = store.get(&job.id).await.unwrap().unwrap().playable_at;
    assert!(marked.is_some());
    assert_eq!(store.mark_playable(&second, &playable).await.unwrap(), Playable::Already);
    assert_eq!(
        store.complete(&second, &result(2), &event, Some(&playable)).await.unwrap(),
        FinishOutcome::Finished
    );

    let done = store.get(&job.id).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.epoch, done.outputs.unwrap().epoch),
        (JobStatus::Completed, 2, 2)
    );
    assert_eq!(done.playable_at, marked, "the first mark stands");
    // The events wait in the outbox (one `playable`, then `completed`); a late claim sees a
    // finished job, and a finished job is not marked again.
    let kinds: Vec<EventKind> =
        store.outbox(10).await.unwrap().into_iter().map(|(_, e)| e.kind).collect();
    assert_eq!(kinds, [EventKind::Playable, EventKind::Completed]);
    assert_eq!(store.mark_playable(&second, &playable).await.unwrap(), Playable::Fenced);
    assert_eq!(
        store.claim(&job.id, "worker-c", Duration::from_secs(5)).await.unwrap(),
        ClaimOutcome::Done(JobStatus::Completed)
    );
}

/// A job result of attempt `epoch` with no outputs (what the store keeps is all that matters).
fn result(epoch: u64) -> tcoder::jobs::JobResult {
    let report: tcoder::engine::EngineReport = serde_json::from_value(serde_json::json!({
        "media": { "format": "mov", "duration_secs": 1.0, "bit_rate": null, "streams": 1,
                   "audio": null,
                   "video": { "index": 0, "codec": "h264", "width": 64, "height": 64,
                              "fps": 25.0, "bit_rate": null, "pixel_format": "yuv420p" } },
        "mode": "copy", "renditions": [], "hls_master": null, "thumbnails": null, "files": [],
        "frames": 25, "decode_errors": 0,
    }))
    .unwrap();
    let usage = tcoder::cost::Usage::default();
    tcoder::jobs::JobResult::new(
        epoch,
        "outputs/",
        &report,
        tcoder::jobs::EngineUsage { cpu_secs: 0.0, wall_secs: 0.0, started_at_ms: 0.0 },
        tcoder::cost::JobCost::new(usage, &tcoder::cost::Prices::default()),
        &|key| key.to_owned(),
    )
}

/// A split job's parts are fenced on their own epochs: a part's stale attempt cannot renew or
/// commit; the plan survives a change of coordinator (a new job epoch) with the committed
/// parts kept; commits count up to the total; and a canceled job hands out and accepts
/// nothing more.
/// After Redis restarts every lease has lapsed, a live attempt's too: a claim made by a
/// process that just reconnected does not take the running job over at once (the attempt
/// takes its lease back with its next renewal); 1.5 TTL later it does, if nobody did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_is_not_taken_over_right_after_a_redis_restart() {
    use std::time::Duration;
    use tcoder::jobs::ClaimOutcome;

    let mut env = TestEnv::start_persistent();
    let (store, job) = store_with_job(&env).await;
    store.transition(&job.id, JobStatus::Uploaded, "test", &[]).await.unwrap();
    store.transition(&job.id, JobStatus::Queued, "test", &[]).await.unwrap();
    let ttl = Duration::from_secs(1);
    let claimed = store.claim(&job.id, "worker-a", ttl).await.unwrap();
    assert!(matches!(claimed, ClaimOutcome::Claimed(_)), "{claimed:?}");
    tokio::task::block_in_place(|| env.redis.restart());
    testkit::eventually_async(Duration::from_secs(5), || async {
        match store.lease_held(&job.id).await {
            Ok(false) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let soon = store.claim(&job.id, "worker-b", ttl).await.unwrap();
    assert!(matches!(soon, ClaimOutcome::Busy { .. }), "taken over at once: {soon:?}");
    let later = testkit::eventually_async(Duration::from_secs(5), || async {
        match store.claim(&job.id, "worker-b", ttl).await.unwrap() {
            ClaimOutcome::Claimed(attempt) => Ok(attempt),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(later.epoch, 2);
    let job = store.get(&job.id).await.unwrap().unwrap();
    assert_eq!(job.lost_attempts, 1, "the attempt that never came back counts as lost");
}

#[tokio::test]
async fn parts_of_a_split_job_are_fenced_on_their_own_epochs_and_stop_with_the_job() {
    use std::time::Duration;
    use tcoder::jobs::{
        ClaimOutcome, PartClaim, PartCommit, PartRelease, PartStatus, RenewOutcome,
    };

    let env = TestEnv::start();
    let (store, job) = store_with_job(&env).await;
    store.transition(&job.id, JobStatus::Uploaded, "test", &[]).await.unwrap();
    store.transition(&job.id, JobStatus::Queued, "test", &[]).await.unwrap();
    let ttl = Duration::from_millis(300);
    let ClaimOutcome::Claimed(coordinator) = store.claim(&job.id, "w1", ttl).await.unwrap() else {
        panic!("coordinator claim")
    };
    // Chunks of 10 s each; a later plan with other chunks must not replace the first.
    let plan = |n: u32| -> Vec<tcoder::engine::Part> {
        (0..n)
            .map(|k| {
                tcoder::engine::Part::Video(tcoder::engine::Chunk {
                    start_secs: f64::from(k * 10),
                    end_secs: Some(f64::from(k * 10 + 10)),
                    first_segment: k * 5,
                    ladder: None,
                })
            })
            .collect()
    };
    assert_eq!(store.plan_parts(&job.id, coordinator.epoch, &plan(3)).await.unwrap(), Some(3));
    assert_eq!(store.plan_parts(&job.id, coordinator.epoch + 1, &plan(3)).await.unwrap(), None);

    let claim = |part: u32, worker: &'static str, ttl: Duration| {
        let store = store.clone();
        let id = job.id.clone();
        async move { store.claim_part(&id, part, worker, ttl).await.unwrap() }
    };
    let PartClaim::Claimed(a0) = claim(0, "w1", ttl).await else { panic!("part 0") };
    assert!(matches!(claim(0, "w2", ttl).await, PartClaim::Busy { .. }));
    // w1 stops renewing part 0: w2 takes it over with the next epoch of that part.
    let b0 = testkit::eventually_async(Duration::from_secs(5), || async {
        match claim(0, "w2", Duration::from_secs(5)).await {
            PartClaim::Claimed(attempt) => Ok(attempt),
            other => Err(other),
        }
    })
    .await;
    assert_eq!((a0.epoch, b0.epoch), (1, 2));
    assert_eq!(store.renew_part(&a0, ttl).await.unwrap(), RenewOutcome::Lost);
    let outputs = |n: u32| tcoder::jobs::PartResult {
        prefix: tcoder::s3::KeyPrefix::parse(&format!("outputs/acme/{}/parts/{n}/", job.id))
            .unwrap(),
        files: Vec::new(),
        cpu_secs: 1.0,
        machine_secs: 2.0,
        frames: 250,
        worker: "w2".into(),
    };
    assert_eq!(store.commit_part(&a0, &outputs(0)).await.unwrap(), PartCommit::Fenced);
    assert_eq!(
        store.commit_part(&b0, &outputs(0)).await.unwrap(),
        PartCommit::Committed { done: 1, parts: 3 }
    );
    // A retried commit of the same attempt is the same commit.
    assert_eq!(
        store.commit_part(&b0, &outputs(0)).await.unwrap(),
        PartCommit::Committed { done: 1, parts: 3 }
    );
    assert_eq!(claim(0, "w3", ttl).await, PartClaim::Done);

    // The coordinator dies; its successor (a new job epoch) finds the plan and part 0 done.
    let successor = testkit::eventually_async(Duration::from_secs(5), || async {
        match store.claim(&job.id, "w3", Duration::from_secs(5)).await.unwrap() {
            ClaimOutcome::Claimed(attempt) => Ok(attempt),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(store.plan_parts(&job.id, successor.epoch, &plan(5)).await.unwrap(), Some(3));
    let parts = store.parts(&job.id).await.unwrap();
    let summary: Vec<(u32, PartStatus, u64)> =
        parts.iter().map(|p| (p.part, p.status, p.epoch)).collect();
    assert_eq!(
        summary,
        [(0, PartStatus::Done, 2), (1, PartStatus::Pending, 0), (2, PartStatus::Pending, 0)]
    );
    assert_eq!(parts[0].result, Some(outputs(0)));
    assert_eq!(parts[2].definition, Some(plan(3)[2].clone()), "the first plan");

    // A failed attempt frees the part for the next; the second failure (of two allowed)
    // fails it, with its error, until a new coordinator plans again.
    let crashed = tcoder::engine::EngineError::new(tcoder::engine::ErrorCode::Crashed, "boom");
    for expected in [PartRelease::Pending, PartRelease::Failed] {
        let PartClaim::Claimed(attempt) = claim(1, "w3", Duration::from_secs(5)).await else {
            panic!("part 1")
        };
        let released = store.release_part(&attempt, true, 2, Some(&crashed)).await.unwrap();
        assert_eq!(released, expected);
        assert_eq!(store.release_part(&attempt, true, 2, None).await.unwrap(), PartRelease::Fenced);
    }
    let failed = &store.parts(&job.id).await.unwrap()[1];
    assert_eq!((failed.status, failed.error.clone()), (PartStatus::Failed, Some(crashed.clone())));
    assert!(!failed.is_claimable());
    assert_eq!(store.plan_parts(&job.id, successor.epoch, &plan(3)).await.unwrap(), Some(3));
    assert!(store.parts(&job.id).await.unwrap()[1].is_claimable(), "another round");

    let PartClaim::Claimed(c1) = claim(1, "w3", Duration::from_secs(5)).await else {
        panic!("part 1")
    };
    assert_eq!(
        store.commit_part(&c1, &outputs(1)).await.unwrap(),
        PartCommit::Committed { done: 2, parts: 3 }
    );
    // Part 1's outputs turn out gone from the store: the current coordinator hands it out
    // again — once, and only at the epoch it was committed with — and it counts as not done
    // until its next attempt commits.
    let reopen = |job_epoch: u64, part_epoch: u64| {
        let (store, id) = (store.clone(), job.id.clone());
        async move { store.reopen_part(&id, job_epoch, 1, part_epoch).await.unwrap() }
    };
    assert!(!reopen(coordinator.epoch, c1.epoch).await, "a replaced coordinator");
    assert!(!reopen(successor.epoch, c1.epoch + 1).await, "another attempt's commit");
    assert!(reopen(successor.epoch, c1.epoch).await);
    assert!(!reopen(successor.epoch, c1.epoch).await, "once");
    let reopened = &store.parts(&job.id).await.unwrap()[1];
    assert_eq!((reopened.status, reopened.result.clone()), (PartStatus::Pending, None));
    let PartClaim::Claimed(d1) = claim(1, "w3", Duration::from_secs(5)).await else {
        panic!("part 1 again")
    };
    assert_eq!(d1.epoch, c1.epoch + 1);
    assert_eq!(
        store.commit_part(&d1, &outputs(1)).await.unwrap(),
        PartCommit::Committed { done: 2, parts: 3 }
    );
    // Canceled: the part in flight loses its lease renewal and cannot commit; nothing more
    // is handed out.
    let PartClaim::Claimed(c2) = claim(2, "w3", Duration::from_secs(5)).await else {
        panic!("part 2")
    };
    store.transition(&job.id, JobStatus::Canceled, "test", &[]).await.unwrap();
    assert_eq!(store.renew_part(&c2, ttl).await.unwrap(), RenewOutcome::Canceled);
    assert_eq!(store.commit_part(&c2, &outputs(2)).await.unwrap(), PartCommit::Fenced);
    assert_eq!(claim(2, "w4", ttl).await, PartClaim::JobNotRunning("canceled".into()));
    assert_eq!(store.parts(&job.id).await.unwrap(), [], "an ended job forgets its parts");
}
