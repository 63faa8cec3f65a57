//! tcoder-ingest: where users and their event producers meet tcoder.
//!
//! - the public HTTP API (`/v1/...`) on `ingest.http_bind`;
//! - the embedded S3-compatible store on `ingest.local_store.bind` (single-host stack);
//! - the admin server (`/metrics`, `/healthz`, `/readyz`) on `admin.bind`.

mod routes;

use std::net::SocketAddr;

use anyhow::Context as _;
use tcoder::config::{Service as ServiceName, Settings};
use tcoder::service::{Common, Service, Tasks};
use tcoder::shutdown::Shutdown;
use tcoder::storage::local::LocalStore;
use tokio::net::TcpListener;

/// The ingest service, bound and connected, not yet serving.
#[derive(Debug)]
pub struct App {
    common: Common,
    api: TcpListener,
    local_store: Option<LocalStore>,
}

impl App {
    pub fn api_addr(&self) -> SocketAddr {
        self.api.local_addr().expect("bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.common.admin.local_addr()
    }

    /// Where the embedded object store listens, when it runs.
    pub fn local_store_addr(&self) -> Option<SocketAddr> {
        self.local_store.as_ref().map(LocalStore::local_addr)
    }
}

impl Service for App {
    const NAME: ServiceName = ServiceName::Ingest;

    async fn build(settings: Settings) -> anyhow::Result<App> {
        // The store binds first: with the single-host default, S3 is this process.
        let local_store = if settings.ingest.local_store.enabled {
            let store = &settings.ingest.local_store;
            let bound = LocalStore::bind(
                store,
                &settings.s3.bucket,
                &settings.s3.access_key_id,
                settings.s3.secret_access_key.expose(),
            )
            .await
            .with_context(|| {
                format!("cannot start the local store on ingest.local_store.bind {}", store.bind)
            })?;
            Some(bound)
        } else {
            None
        };
        let common = Common::build(&settings, Self::NAME).await?;
        let api = TcpListener::bind(settings.ingest.http_bind).await.with_context(|| {
            format!("cannot bind ingest.http_bind {}", settings.ingest.http_bind)
        })?;
        let app = App { common, api, local_store };
        tracing::info!(
            api = %app.api_addr(),
            admin = %app.admin_addr(),
            local_store = ?app.local_store_addr(),
            "ingest listening"
        );
        Ok(app)
    }

    async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut tasks = Tasks::new();
        let token = shutdown.token();
        tasks.spawn("admin server", self.common.admin.serve(token.clone()));
        if let Some(store) = self.local_store {
            tasks.spawn("local store", store.serve(token.clone()));
        }
        let api = axum::serve(self.api, routes::router())
            .with_graceful_shutdown(token.cancelled_owned())
            .into_future();
        tasks.spawn("api server", api);
        tasks.run_until_stopped(shutdown).await
    }
}
