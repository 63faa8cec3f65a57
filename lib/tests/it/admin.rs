use std::time::Duration;

use tcoder::admin::AdminServer;
use tcoder::metrics::Metrics;
use tcoder::service::Connections;
use testkit::TestEnv;
use tokio_util::sync::CancellationToken;

use crate::helpers::settings;

#[tokio::test]
async fn readyz_follows_dependencies_and_metrics_are_prometheus_text() {
    let mut env = TestEnv::start();
    let settings = settings(&env);
    let connections =
        Connections::establish(&settings, tcoder::config::Service::Ingest).await.unwrap();
    let admin =
        AdminServer::bind(&settings.admin, Metrics::new("test"), connections.readiness_checks())
            .await
            .unwrap();
    let base = format!("http://{}", admin.local_addr());
    let stop = CancellationToken::new();
    let server = tokio::spawn(admin.serve(stop.clone()));
    let http = reqwest::Client::new();

    let healthz = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = metrics.text().await.unwrap();
    assert!(text.contains("tcoder_build_info{service=\"test\""), "{text}");
    assert!(text.contains("process_resident_memory_bytes"), "{text}");

    // Redis goes away: still alive, no longer ready, and the reason names Redis.
    env.redis.signal(libc::SIGSTOP);
    let body: serde_json::Value = testkit::eventually_async(Duration::from_secs(10), || {
        let http = http.clone();
        let url = format!("{base}/readyz");
        async move {
            let response = http.get(url).send().await.map_err(|e| e.to_string())?;
            if response.status() == 503 {
                Ok(response.json().await.unwrap())
            } else {
                Err("still ready".to_owned())
            }
        }
    })
    .await;
    assert_eq!(body["checks"]["nats"], "ok");
    assert_ne!(body["checks"]["redis"], "ok");
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);

    env.redis.signal(libc::SIGCONT);
    env.redis.restart();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
}
