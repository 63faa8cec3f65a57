//! Logging set-up: `tracing` with human-readable output for terminals or JSON lines for log
//! collectors. One span per job is opened by the code that runs the job, not here.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

use crate::config::Invalid;

/// `[telemetry]` settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub format: LogFormat,
    /// `EnvFilter` directives, e.g. `info,tcoder=debug`. `RUST_LOG` overrides it.
    pub filter: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        EnvFilter::try_new(&self.filter)
            .map(|_| ())
            .map_err(|e| Invalid::new("filter", format!("not a valid log filter: {e}")))
    }
}

/// Installs the global subscriber, writing to stderr (stdout is kept for program output such
/// as the engine's JSON lines). A second call is a no-op, so tests may call it freely.
pub fn init(service: &str, config: &Config) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(&config.filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match config.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
    if installed.is_ok() {
        tracing::debug!(service, "telemetry initialised");
    }
}
