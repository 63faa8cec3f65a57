//! The Fly provider against the fake Fly Machines API, whose machines are real worker processes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tcoder::jobs::JobStatus;
use tcoder::machines::MachineProvider;
use tcoder::machines::fly::{Config, FlyProvider};
use testkit::corpus;
use testkit::fly::{APP, FakeFly, TOKEN};

use crate::harness::{Pipeline, fast_env};

const LONG: Duration = Duration::from_secs(180);

pub(crate) fn worker() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tcoder-worker"))
}

pub(crate) fn fly_settings(fake: &FakeFly, max_machines: u32) -> Vec<(&'static str, String)> {
    vec![
        ("TCODER__DISPATCHER__PROVIDER", "fly".into()),
        ("TCODER__DISPATCHER__MAX_MACHINES", max_machines.to_string()),
        ("TCODER__DISPATCHER__SCALE_INTERVAL", "200ms".into()),
        ("TCODER__DISPATCHER__REAP_INTERVAL", "500ms".into()),
        ("TCODER__DISPATCHER__FLY__API_BASE", fake.api_base()),
        ("TCODER__DISPATCHER__FLY__APP", APP.into()),
        ("TCODER__DISPATCHER__FLY__TOKEN", TOKEN.into()),
        ("TCODER__DISPATCHER__FLY__IMAGE", "registry.fly.io/tcoder-worker:test".into()),
    ]
}

/// What every fake machine gets, like the worker app's Fly secrets: the credentials (the test
/// servers' store keys and Redis URL), short timings and a scratch folder. Everything else —
/// where NATS and the store are, the bucket — comes from the settings the dispatcher hands
/// each machine, as on Fly.
pub(crate) fn secrets(
    pipeline_env: Vec<(String, String)>,
    scratch: &std::path::Path,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    const CREDENTIALS: [&str; 3] =
        ["TCODER__S3__ACCESS_KEY_ID", "TCODER__S3__SECRET_ACCESS_KEY", "TCODER__REDIS__URL"];
    let mut vars: Vec<(String, String)> =
        pipeline_env.into_iter().filter(|(k, _)| CREDENTIALS.contains(&k.as_str())).collect();
    vars.extend(fast_env());
    vars.push(("TCODER__WORKER__SCRATCH_DIR".into(), scratch.display().to_string()));
    vars.push(("TCODER__ADMIN__BIND".into(), "127.0.0.1:0".into()));
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    vars
}

/// Checks the recorded calls never exceeded the documented limits (per action and scope: at
/// most 3 in any second for writes, 10 for gets) and never met a 429.
fn assert_within_rate_limits(fake: &FakeFly) {
    let calls = fake.calls();
    assert!(
        calls.iter().all(|c| c.status != 429),
        "the fake answered 429: the client did not pace itself"
    );
    for call in &calls {
        let burst = if call.action == "get" { 10 } else { 3 };
        let window = calls
            .iter()
            .filter(|o| {
                o.action == call.action
                    && o.scope == call.scope
                    && o.at >= call.at
                    && o.at.duration_since(call.at) < Duration::from_secs(1)
            })
            .count();
        assert!(
            window <= burst,
            "{} calls to {} on {} within a second",
            window,
            call.action,
            call.scope
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_on_fly_machines_created_with_valid_requests_within_the_rate_limits() {
    let scratch = tempfile::tempdir().unwrap();
    let env = testkit::TestEnv::start();
    let fake = FakeFly::start(
        worker(),
        secrets(env.service_env(), scratch.path(), &[("TCODER__WORKER__IDLE_TIMEOUT", "2s")]),
    );
    let pipeline = Pipeline::start_on(env, &fly_settings(&fake, 2)).await;
    let clip = corpus::ok_mp4();
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(pipeline.submit(&clip, json!({})).await);
    }
    for id in &ids {
        pipeline.wait_status(id, JobStatus::Completed, LONG).await;
    }
    assert!(fake.peak_alive() <= 2, "{} machines at once", fake.peak_alive());
    let creates: Vec<_> = fake.calls().into_iter().filter(|c| c.action == "create").collect();
    assert!(!creates.is_empty());
    assert!(
        creates.iter().all(|c| c.status == 200),
        "every create body matched the spec: {creates:?}"
    );
    assert_within_rate_limits(&fake);

    // Workers idle out (2 s): their machines stop, and new work restarts them.
    testkit::eventually_async(LONG, || async {
        let states = fake.states();
        if states.values().all(|s| s == "stopped") { Ok(()) } else { Err(states) }
    })
    .await;
    let machines_before = fake.states().len();
    let again = pipeline.submit(&clip, json!({})).await;
    pipeline.wait_status(&again, JobStatus::Completed, LONG).await;
    assert_eq!(
        fake.states().len(),
        machines_before,
        "a stopped machine was started instead of creating one"
    );
    assert!(fake.calls().iter().any(|c| c.action == "start" && c.status == 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_idempotent_per_slot_and_retries_when_fly_is_out_of_capacity() {
    let scratch = tempfile::tempdir().unwrap();
    let env = testkit::TestEnv::start();
    let fake = FakeFly::start(worker(), secrets(env.service_env(), scratch.path(), &[]));
    let config = Config {
        api_base: fake.api_base(),
        app: APP.into(),
        token: tcoder::config::Secret::new(TOKEN),
        image: "registry.fly.io/tcoder-worker:test".into(),
        region: "iad".into(),
        cpu_kind: "performance".into(),
        cpus: 2,
        memory_mb: 4096,
        env: BTreeMap::new(),
        pool: "tcoder".into(),
    };
    let provider = FlyProvider::new(config.clone(), BTreeMap::new()).unwrap();
    fake.fail_next_creates(1);
    let first = provider.create("slot-1").await.unwrap();
    // A dispatcher that crashed after this create and retries it (or another dispatcher) gets
    // the same machine back, not a second one.
    let restarted = FlyProvider::new(config, BTreeMap::new()).unwrap();
    let again = restarted.create("slot-1").await.unwrap();
    assert_eq!(first.id, again.id);
    assert_eq!(fake.states().len(), 1);
    assert!(
        fake.calls().iter().any(|c| c.action == "create" && c.status == 412),
        "the capacity failure was retried"
    );
    restarted.destroy(&first.id).await.unwrap();
    assert_eq!(fake.states()[&first.id], "destroyed");
    assert_within_rate_limits(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_machines_are_stopped_and_orphans_destroyed() {
    let scratch = tempfile::tempdir().unwrap();
    let env = testkit::TestEnv::start();
    // Workers never idle out by themselves here: the reaper must stop them.
    let fake = FakeFly::start(worker(), secrets(env.service_env(), scratch.path(), &[]));
    let mut settings = fly_settings(&fake, 2);
    settings.push(("TCODER__DISPATCHER__IDLE_STOP_AFTER", "1s".into()));
    settings.push(("TCODER__DISPATCHER__BOOT_GRACE", "3s".into()));
    let pipeline = Pipeline::start_on(env, &settings).await;
    let id = pipeline.submit(&corpus::ok_mp4(), json!({})).await;
    pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    testkit::eventually_async(LONG, || async {
        let states = fake.states();
        if !states.is_empty() && states.values().all(|s| s == "stopped") {
            Ok(())
        } else {
            Err(states)
        }
    })
    .await;

    // A machine of this pool the dispatcher never made (created straight through the API),
    // whose worker never registers (it cannot reach Redis).
    let body = json!({
        "name": "stray",
        "config": {
            "image": "registry.fly.io/tcoder-worker:test",
            "env": { "TCODER__REDIS__URL": "redis://127.0.0.1:1/" },
            "restart": { "policy": "no" },
            "metadata": { "tcoder_pool": "tcoder", "tcoder_slot": "not-from-the-dispatcher" },
        },
    });
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/apps/{APP}/machines", fake.api_base()))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let orphan = created["id"].as_str().unwrap().to_owned();
    testkit::eventually_async(LONG, || async {
        let state = fake.states()[&orphan].clone();
        if state == "destroyed" { Ok(()) } else { Err(state) }
    })
    .await;
}
