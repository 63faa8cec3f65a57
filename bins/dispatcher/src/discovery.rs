//! The worker discovery Prometheus uses: workers come and go on ports nobody configured, so
//! the dispatcher serves them from the machine pool.

use axum::response::IntoResponse as _;
use tcoder::redis::Conn;

/// `GET /sd/workers` on the dispatcher's admin port: Prometheus HTTP service discovery
/// (`http_sd_configs`), one target group per registered worker with a known admin address.
pub(crate) fn discovery_routes(redis: Conn) -> axum::Router {
    axum::Router::new().route(
        "/sd/workers",
        axum::routing::get(move || {
            let mut redis = redis.clone();
            async move {
                match tcoder::machines::list(&mut redis).await {
                    Ok(machines) => {
                        let groups: Vec<serde_json::Value> = machines
                            .iter()
                            .filter(|m| m.state != tcoder::machines::MachineState::Stopping)
                            .filter_map(tcoder::machines::MachineRecord::scrape_target)
                            .collect();
                        axum::Json(groups).into_response()
                    }
                    Err(e) => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        format!("machine pool unavailable: {e}\n"),
                    )
                        .into_response(),
                }
            }
        }),
    )
}
