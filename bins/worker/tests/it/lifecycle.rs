use std::time::Duration;

use tcoder::config::{EnvVars, Service as ServiceName, Settings};
use tcoder::service::Service;
use tcoder::shutdown::Shutdown;
use tcoder_worker::App;
use testkit::TestEnv;

#[tokio::test]
async fn serves_health_readiness_and_metrics_then_stops_within_the_deadline() {
    let env = TestEnv::start();
    let vars = EnvVars::from_pairs(env.service_env());
    let app =
        App::build(Settings::load_from(ServiceName::Worker, None, vars).unwrap()).await.unwrap();
    let admin = app.admin_addr();
    let shutdown = Shutdown::manual(Duration::from_secs(5));
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    tokio::task::spawn_blocking(move || testkit::assert_admin_endpoints(admin, "worker"))
        .await
        .unwrap();
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), running).await.unwrap().unwrap().unwrap();
}

#[test]
fn the_binary_becomes_ready_and_exits_cleanly_on_sigterm_within_its_drain_deadline() {
    let env = TestEnv::start();
    testkit::assert_binary_stops_cleanly(
        env!("CARGO_BIN_EXE_tcoder-worker").as_ref(),
        &env.service_env(),
    );
}
