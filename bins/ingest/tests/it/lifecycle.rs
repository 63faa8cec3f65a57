use std::time::Duration;

use tcoder::config::{EnvVars, Settings};
use tcoder::service::Service;
use tcoder::shutdown::Shutdown;
use tcoder_ingest::App;
use testkit::TestEnv;

fn settings(env: &TestEnv, extra: &[(&str, String)]) -> Settings {
    let mut vars = env.service_env();
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    Settings::load_from(tcoder::config::Service::Ingest, None, EnvVars::from_pairs(vars)).unwrap()
}

#[tokio::test]
async fn serves_health_readiness_metrics_and_problem_json_then_stops_within_the_deadline() {
    let env = TestEnv::start();
    let app = App::build(settings(&env, &[])).await.unwrap();
    let (admin, api) = (app.admin_addr(), app.api_addr());
    let shutdown = Shutdown::manual(Duration::from_secs(5));
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let http = reqwest::Client::new();

    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = http.get(format!("http://{admin}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let missing = http.get(format!("http://{api}/v1/nothing")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), running).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn with_the_embedded_store_ingest_is_its_own_s3_endpoint() {
    let env = TestEnv::start();
    let data = tempfile::tempdir().unwrap();
    let port = testkit::free_port();
    let settings = settings(
        &env,
        &[
            ("TCODER__INGEST__LOCAL_STORE__ENABLED", "true".to_owned()),
            ("TCODER__INGEST__LOCAL_STORE__BIND", format!("127.0.0.1:{port}")),
            ("TCODER__INGEST__LOCAL_STORE__DATA_DIR", data.path().display().to_string()),
            ("TCODER__S3__ENDPOINT", format!("http://127.0.0.1:{port}")),
        ],
    );
    let bucket = settings.s3.bucket.clone();
    let app = App::build(settings).await.unwrap();
    assert_eq!(app.local_store_addr().unwrap().port(), port);
    let admin = app.admin_addr();
    let shutdown = Shutdown::manual(Duration::from_secs(5));
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    let ready = reqwest::get(format!("http://{admin}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    assert!(data.path().join(&bucket).is_dir());

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), running).await.unwrap().unwrap().unwrap();
}

#[test]
fn the_binary_becomes_ready_and_exits_cleanly_on_sigterm_within_its_drain_deadline() {
    let env = TestEnv::start();
    testkit::assert_binary_stops_cleanly(
        env!("CARGO_BIN_EXE_tcoder-ingest").as_ref(),
        &env.service_env(),
    );
}
