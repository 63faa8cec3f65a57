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

/// Standard error that a closed reader cannot turn into a crash: `tcoder up 2>&1 | tee log`
/// and a Ctrl-C kill `tee` first, and every later log line meets `EPIPE`. The subscriber's
/// own report of a failed write went to stderr with `eprintln!`, which panics on that error:
/// every service died with exit code 101 mid-shutdown, before releasing its jobs. Lines
/// nobody can read any more are dropped instead.
#[derive(Debug, Clone, Copy)]
pub struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::io::stderr().write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(buf.len()),
            other => other,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match std::io::stderr().flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}

/// Installs the global subscriber, writing to stderr (stdout is kept for program output such
/// as the engine's JSON lines). A second call is a no-op, so tests may call it freely.
pub fn init(service: &str, config: &Config) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(&config.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        .log_internal_errors(false);
    let installed = match config.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
    if installed.is_ok() {
        tracing::debug!(service, "telemetry initialised");
    }
}
