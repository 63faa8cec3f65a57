//! What every service binary shares: argument parsing, settings, telemetry, the runtime, the
//! connections to NATS / Redis / S3 with their readiness checks, and the exit code.
//!
//! A binary's `main` is one line: `tcoder::service::main::<App>()`.

mod connections;
mod tasks;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::config::{Service as ServiceName, Settings};
use crate::shutdown::Shutdown;

pub use self::connections::Connections;
pub use self::tasks::Tasks;

use crate::admin::AdminServer;
use crate::metrics::Metrics;

/// What every service has: connections, a metric registry and a bound admin server.
#[derive(Debug)]
pub struct Common {
    pub connections: Connections,
    pub metrics: Metrics,
    pub admin: AdminServer,
}

impl Common {
    /// Connects to NATS / Redis / S3 (creating the JetStream topology) and binds the admin port.
    pub async fn build(settings: &Settings, service: ServiceName) -> anyhow::Result<Common> {
        let connections = Connections::establish(settings, service).await?;
        let metrics = Metrics::new(service.name());
        let admin =
            AdminServer::bind(&settings.admin, metrics.clone(), connections.readiness_checks())
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot bind admin.bind {}: {e}", settings.admin.bind)
                })?;
        Ok(Common { connections, metrics, admin })
    }
}

/// A long-running tcoder service (ingest, dispatcher, worker).
pub trait Service: Sized {
    /// Which `config/<service>.toml` layer applies.
    const NAME: ServiceName;

    /// Binds ports and connects; fails fast with a message naming what is wrong.
    fn build(settings: Settings) -> impl Future<Output = anyhow::Result<Self>> + Send;

    /// Serves until `shutdown` fires, then drains within its deadline.
    fn run_until_stopped(
        self,
        shutdown: Shutdown,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Command-line arguments shared by the services.
#[derive(Debug, Parser)]
#[command(version)]
pub struct ServiceArgs {
    /// A TOML file layered over the built-in defaults (see config/default.toml).
    #[arg(long, env = "TCODER_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Files a service creates — the embedded store's objects, workers' scratch folders, settings
/// handed to workers — hold tenants' media and secrets: readable by this user only (0600 files,
/// 0700 folders), whatever the umask it was started with.
pub fn private_files() {
    // SAFETY: umask(2) only sets this process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// The whole `main` of a service binary.
pub fn main<S: Service>() -> ExitCode {
    let args = ServiceArgs::parse();
    run::<S>(args.config)
}

/// A line for a person on stderr; nothing (rather than a panic) when nobody reads it.
fn say_on_stderr(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Loads settings, starts telemetry and the runtime, and runs the service until a signal.
pub fn run<S: Service>(config_file: Option<PathBuf>) -> ExitCode {
    crate::install_crypto_provider();
    private_files();
    let settings = match Settings::load(S::NAME, config_file.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            say_on_stderr(&format!("tcoder-{}: {e}", S::NAME.name()));
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(S::NAME.name(), &settings.telemetry);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let shutdown = Shutdown::on_signals(settings.shutdown.drain_deadline);
        let app = S::build(settings).await?;
        app.run_until_stopped(shutdown).await
    });
    match outcome {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting after error");
            say_on_stderr(&format!("tcoder-{}: {e:#}", S::NAME.name()));
            ExitCode::FAILURE
        }
    }
}
