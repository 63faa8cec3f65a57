//! The same binaries on more than one of everything: a three-node NATS cluster with streams
//! at three replicas, one node killed mid-run.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use tcoder::events::subjects;
use testkit::{NatsServer, RedisServer, S3Server, TestEnv};

use crate::harness::Pipeline;

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
    pipeline.wait_status(&ids[0], "completed", JOB).await;
    match killed {
        0 => pipeline.env.nats.start_again(),
        i => nodes[i - 1].start_again(),
    }
    for id in &ids {
        pipeline.wait_status(id, "completed", JOB).await;
    }

    // Exactly one completion per job, as the EVENTS stream (R3) recorded them.
    let completed = pipeline.stored_messages(subjects::EVENTS_STREAM, "tcoder.events.*.completed");
    let mut per_job: HashMap<String, usize> = HashMap::new();
    for (_, event) in completed.await {
        *per_job.entry(event["job_id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(per_job.len(), ids.len(), "{per_job:?}");
    assert!(per_job.values().all(|n| *n == 1), "{per_job:?}");
}
