//! tcoder-dispatcher: the control plane. It turns upload events into jobs, applies admission
//! control, starts and stops worker machines, reaps and reconciles, and delivers webhooks.
//!
//! Until those parts land it connects, creates the JetStream topology and serves its admin
//! port, so the stack can be started, probed and stopped.

use std::net::SocketAddr;

use tcoder::config::{Service as ServiceName, Settings};
use tcoder::service::{Common, Service, Tasks};
use tcoder::shutdown::Shutdown;

/// The dispatcher service, bound and connected, not yet running.
#[derive(Debug)]
pub struct App {
    common: Common,
}

impl App {
    pub fn admin_addr(&self) -> SocketAddr {
        self.common.admin.local_addr()
    }
}

impl Service for App {
    const NAME: ServiceName = ServiceName::Dispatcher;

    async fn build(settings: Settings) -> anyhow::Result<App> {
        let common = Common::build(&settings, Self::NAME).await?;
        let app = App { common };
        tracing::info!(admin = %app.admin_addr(), "dispatcher listening");
        Ok(app)
    }

    async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut tasks = Tasks::new();
        tasks.spawn("admin server", self.common.admin.serve(shutdown.token()));
        tasks.run_until_stopped(shutdown).await
    }
}
