//! The admin HTTP server every service runs: `/metrics` (Prometheus text), `/healthz` (the
//! process is alive) and `/readyz` (its dependencies answer).
//!
//! Liveness and readiness are separate on purpose: a service whose Redis is down is alive (do
//! not restart it, it reconnects by itself) but not ready (do not send it work).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Invalid, require_positive};
use crate::metrics::Metrics;

/// `[admin]` settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub bind: SocketAddr,
    #[serde(with = "humantime_serde")]
    pub readiness_timeout: Duration,
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        require_positive("readiness_timeout", self.readiness_timeout)
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One dependency probed by `/readyz`.
#[derive(Clone)]
pub struct ReadinessCheck {
    name: &'static str,
    probe: Arc<dyn Fn() -> CheckFuture + Send + Sync>,
}

impl std::fmt::Debug for ReadinessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadinessCheck").field("name", &self.name).finish()
    }
}

impl ReadinessCheck {
    /// A check named `name` (e.g. "nats") whose probe returns `Err(reason)` when not ready.
    pub fn new<F, Fut>(name: &'static str, probe: F) -> ReadinessCheck
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        ReadinessCheck { name, probe: Arc::new(move || Box::pin(probe())) }
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    checks: Arc<Vec<ReadinessCheck>>,
    timeout: Duration,
}

/// A bound (not yet serving) admin server.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    router: Router,
}

impl AdminServer {
    /// Binds `config.bind` (port 0 picks a free port).
    pub async fn bind(
        config: &Config,
        metrics: Metrics,
        checks: Vec<ReadinessCheck>,
    ) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(config.bind).await?;
        let state =
            AdminState { metrics, checks: Arc::new(checks), timeout: config.readiness_timeout };
        let router = Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz_handler))
            .with_state(state);
        Ok(AdminServer { listener, router })
    }

    /// Adds a service's own routes (e.g. the dispatcher's worker discovery) next to the
    /// standard ones.
    pub fn with_routes(mut self, routes: Router) -> AdminServer {
        self.router = self.router.merge(routes);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves until `stop` is cancelled, then finishes open requests.
    pub async fn serve(self, stop: CancellationToken) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    }
}

async fn metrics_handler(State(state): State<AdminState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
        .into_response()
}

async fn readyz_handler(State(state): State<AdminState>) -> Response {
    let probes = state.checks.iter().map(|check| {
        let timeout = state.timeout;
        async move {
            let outcome = match tokio::time::timeout(timeout, (check.probe)()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
            (check.name, outcome)
        }
    });
    let results = futures_util::future::join_all(probes).await;
    let ready = results.iter().all(|(_, r)| r.is_ok());
    let body: serde_json::Map<String, serde_json::Value> = results
        .into_iter()
        .map(|(name, r)| {
            let status = match r {
                Ok(()) => "ok".to_owned(),
                Err(reason) => reason,
            };
            (name.to_owned(), serde_json::Value::String(status))
        })
        .collect();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(serde_json::json!({ "ready": ready, "checks": body }))).into_response()
}
