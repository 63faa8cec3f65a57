//! The same binaries on more than one of everything: a three-node NATS cluster with streams
//! at three replicas, one node killed mid-run; Redis behind Sentinel, its primary killed
//! mid-run; two dispatchers and two ingest processes sharing one machine cap, one dispatcher
//! killed mid-run.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use tcoder::events::subjects;
use tcoder::jobs::JobStatus;
use testkit::fly::FakeFly;
use testkit::{NatsServer, RedisSentinels, RedisServer, S3Server, ServiceProcess, TestEnv};

use crate::harness::{Pipeline, binary, fast_env, metric};

const JOB: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_flow_on_a_three_node_nats_cluster_while_the_stream_leader_is_killed() {
    let mut nodes = NatsServer::cluster(3);
    let urls = nodes.iter().map(NatsServer::url).collect::<Vec<_>>().join(",");
    let first = nodes.remove(0);
    let env = TestEnv {
        nats: first,
        redis: RedisServer::start(),
        s3: S3Server::start(),
        scratch: tempfile::tempdir().unwrap(),
    };
    let extra = [("TCODER__NATS__URL", urls), ("TCODER__NATS__REPLICAS", "3".to_owned())];
    let mut pipeline = Pipeline::start_on(env, &extra).await;
    let _worker = pipeline.worker(&extra);
    let request = json!({ "preset": "hls", "qualities": ["144p"] });
    let clip = testkit::media::tiny_mp4();

    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(pipeline.submit(&clip, request.clone()).await);
    }
    // The node leading the work queue goes away while jobs are queued and running.
    let mut jobs = pipeline.js.get_stream(subjects::JOBS_STREAM).await.unwrap();
    let info = jobs.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    let leader = info.cluster.as_ref().and_then(|c| c.leader.clone()).expect("a stream leader");
    let node = |name: &str| name.trim_start_matches('n').parse::<usize>().unwrap();
    let killed = node(&leader);
    match killed {
        0 => pipeline.env.nats.kill(),
        i => nodes[i - 1].kill(),
    }
    for _ in 0..3 {
        ids.push(pipeline.submit(&clip, request.clone()).await);
    }
    pipeline.wait_status(&ids[0], JobStatus::Completed, JOB).await;
    match killed {
        0 => pipeline.env.nats.start_again(),
        i => nodes[i - 1].start_again(),
    }
    for id in &ids {
        pipeline.wait_status(id, JobStatus::Completed, JOB).await;
    }

    // Exactly one completion per job, as the EVENTS stream (R3) recorded them.
    let completed =
        pipeline.stored_messages(subjects::EVENTS_STREAM, "tcoder.events.*.*.completed");
    let mut per_job: HashMap<String, usize> = HashMap::new();
    for (_, event) in completed.await {
        *per_job.entry(event["job_id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(per_job.len(), ids.len(), "{per_job:?}");
    assert!(per_job.values().all(|n| *n == 1), "{per_job:?}");
}

/// Redis behind Sentinel (a primary, a replica, three sentinels): the primary is killed while
/// jobs run, the sentinels promote the replica, and every service (ingest and dispatcher here,
/// two worker processes) follows the new primary by itself. With `wait_replicas = 1` a claim or
/// commit counts only once the replica has it, so the failover loses none: no epoch is handed
/// out twice and no job completes twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_flow_through_a_redis_sentinel_failover_and_no_epoch_goes_back() {
    let mut redis = RedisSentinels::start();
    let env = TestEnv {
        nats: NatsServer::start(),
        // TestEnv wants one; with sentinels set, services take only credentials from its URL.
        redis: RedisServer::start(),
        s3: S3Server::start(),
        scratch: tempfile::tempdir().unwrap(),
    };
    let extra = [
        ("TCODER__REDIS__SENTINELS", redis.addresses()),
        ("TCODER__REDIS__SENTINEL_MASTER", redis.master_name().to_owned()),
        ("TCODER__REDIS__WAIT_REPLICAS", "1".to_owned()),
        ("TCODER__REDIS__TIMEOUT", "2s".to_owned()),
    ];
    let pipeline = Pipeline::start_on(env, &extra).await;
    let workers = [pipeline.worker(&extra), pipeline.worker(&extra)];
    let request = json!({ "preset": "hls", "qualities": ["144p"] });
    let clip = testkit::media::tiny_mp4();

    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(pipeline.submit(&clip, request.clone()).await);
    }
    pipeline.wait_status(&ids[0], JobStatus::Completed, JOB).await;
    // The primary goes away while the other jobs are queued or running.
    let old = redis.primary_index();
    let old_port = redis.nodes[old].addr().port();
    redis.nodes[old].kill();
    let new_port = redis.wait_for_failover_from(old_port, Duration::from_secs(30));
    // Back as a replica of the new primary: writes that need one replica's `WAIT` go on.
    redis.start_again_as_replica(old);
    redis.wait_until_replica(old, Duration::from_secs(60));
    assert_eq!(redis.primary_port(), Some(new_port));
    for _ in 0..2 {
        ids.push(pipeline.submit(&clip, request.clone()).await);
    }
    for id in &ids {
        pipeline.wait_status(id, JobStatus::Completed, JOB).await;
    }

    // One completion per job in the EVENTS stream, each job's attempts started with rising
    // epochs and completed with the last, and no more completed commits across the workers
    // than jobs. (Fewer is possible: a commit whose replica confirmation came too late is
    // reported failed by its worker, and its redelivery finds the job completed.)
    let mut completions: HashMap<String, Vec<u64>> = HashMap::new();
    let mut started: HashMap<String, Vec<u64>> = HashMap::new();
    for (subject, event) in
        pipeline.stored_messages(subjects::EVENTS_STREAM, "tcoder.events.>").await
    {
        let job = event["job_id"].as_str().unwrap().to_owned();
        let epoch = event["data"]["epoch"].as_u64();
        if subject.ends_with(".completed") {
            completions.entry(job).or_default().push(epoch.expect("a completion names its epoch"));
        } else if subject.ends_with(".started") {
            started.entry(job).or_default().push(epoch.expect("a start names its epoch"));
        }
    }
    assert_eq!(completions.len(), ids.len(), "{completions:?}");
    for id in &ids {
        let epochs = &started[id];
        assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{id} started with epochs {epochs:?}");
        assert_eq!(completions[id], [*epochs.last().unwrap()], "{id}: {epochs:?}");
    }
    let committed: f64 =
        workers.iter().map(|w| metric(w, r#"tcoder_worker_jobs_total{outcome="completed"}"#)).sum();
    assert!(committed <= ids.len() as f64, "{committed} completed commits for {} jobs", ids.len());
}

/// Two dispatchers and two ingest processes at once, sharing one Fly app (the fake, whose
/// machines are real workers) capped at two machines: every upload, notified to both ingests
/// at the same moment, becomes one job; the cap holds across both dispatchers; and killing one
/// dispatcher (kill -9) mid-run loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_and_two_ingests_keep_the_cap_and_make_one_job_per_upload() {
    let scratch = tempfile::tempdir().unwrap();
    let env = TestEnv::start();
    let fake = FakeFly::start(
        crate::fly::worker(),
        crate::fly::secrets(env.service_env(), scratch.path(), &[]),
    );
    let settings = crate::fly::fly_settings(&fake, 2);
    // The first ingest and dispatcher run in this process, the second of each as processes.
    let pipeline = Pipeline::start_on(env, &settings).await;
    let second_api = std::net::SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let mut vars = pipeline.env.service_env();
    vars.extend(fast_env());
    vars.extend(settings.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    vars.push(("TCODER__WORKER__SCRATCH_DIR".into(), scratch.path().display().to_string()));
    vars.push(("TCODER__INGEST__HTTP_BIND".into(), second_api.to_string()));
    let spawn_ready = |name: &str| {
        let mut service = ServiceProcess::spawn(&binary(name), &vars);
        service.wait_ready(Duration::from_secs(60));
        service
    };
    let _second_ingest = spawn_ready("tcoder-ingest");
    let second_dispatcher = spawn_ready("tcoder-dispatcher");
    let ingests = [pipeline.api.clone(), format!("http://{second_api}")];

    pipeline.watch_folder("acme-incoming", "incoming/acme/", "acme").await;
    let clip = testkit::media::tiny_mp4();
    let request = json!({ "preset": "hls", "qualities": ["144p"] });

    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(pipeline.submit_through(&ingests[n % 2], &ingests, &clip, request.clone()).await);
    }
    for name in ["a.mp4", "b.mp4"] {
        let key = format!("incoming/acme/{name}");
        let body = std::fs::read(&clip).unwrap();
        let put = pipeline.s3.put_object().bucket(pipeline.env.s3.bucket()).key(&key);
        put.body(body.into()).send().await.unwrap();
        futures_util::future::join_all(ingests.iter().map(|api| pipeline.notify_upload(api, &key)))
            .await;
    }
    pipeline.wait_status(&ids[0], JobStatus::Completed, JOB).await;
    second_dispatcher.signal(libc::SIGKILL);
    for n in 4..6 {
        ids.push(pipeline.submit_through(&ingests[n % 2], &ingests, &clip, request.clone()).await);
    }

    // Eight uploads, eight jobs (six through the API, two from the watch folder), all completed.
    let jobs = testkit::eventually_async(JOB, || async {
        let jobs = pipeline.job_list().await.jobs;
        let done = jobs.iter().filter(|j| j.status == JobStatus::Completed).count();
        if jobs.len() >= 8 && done == jobs.len() { Ok(jobs) } else { Err(jobs) }
    })
    .await;
    assert_eq!(jobs.len(), 8, "{jobs:?}");
    let listed: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    assert!(ids.iter().all(|id| listed.contains(&id.as_str())), "{ids:?} in {listed:?}");
    let completed =
        pipeline.stored_messages(subjects::EVENTS_STREAM, "tcoder.events.*.*.completed");
    let mut per_job: HashMap<String, usize> = HashMap::new();
    for (_, event) in completed.await {
        *per_job.entry(event["job_id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(per_job.len(), 8, "{per_job:?}");
    assert!(per_job.values().all(|n| *n == 1), "{per_job:?}");
    assert!(fake.peak_alive() <= 2, "{} machines at once for a cap of 2", fake.peak_alive());
}
