use std::time::Duration;

use tcoder::config::{EnvVars, Service as ServiceName, Settings};
use tcoder::service::Service;
use tcoder::shutdown::Shutdown;
use tcoder_worker::App;
use testkit::{ServiceProcess, TestEnv};

#[tokio::test]
async fn serves_health_readiness_and_metrics_then_stops_within_the_deadline() {
    let env = TestEnv::start();
    let vars = EnvVars::from_pairs(env.service_env());
    let app =
        App::build(Settings::load_from(ServiceName::Worker, None, vars).unwrap()).await.unwrap();
    let admin = app.admin_addr();
    let shutdown = Shutdown::manual(Duration::from_secs(5));
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = reqwest::get(format!("http://{admin}{path}")).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let metrics =
        reqwest::get(format!("http://{admin}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tcoder_build_info{service=\"worker\""), "{metrics}");

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), running).await.unwrap().unwrap().unwrap();
}

#[test]
fn the_binary_becomes_ready_and_exits_cleanly_on_sigterm_within_its_drain_deadline() {
    let env = TestEnv::start();
    let mut vars = env.service_env();
    vars.push(("TCODER__SHUTDOWN__DRAIN_DEADLINE".to_owned(), "5s".to_owned()));
    let mut service = ServiceProcess::spawn(env!("CARGO_BIN_EXE_tcoder-worker").as_ref(), &vars);
    service.wait_ready(Duration::from_secs(30));

    let (status, in_time) = service.terminate(Duration::from_secs(5));
    assert!(in_time, "did not stop within the drain deadline");
    assert!(status.success(), "{status}");
}
