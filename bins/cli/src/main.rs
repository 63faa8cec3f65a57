//! `tcoder`: the command-line tool. `tcoder up` runs the whole pipeline on this host; the
//! other commands talk to a running tcoder through its API.

mod commands;
mod profile;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tcoder::config::{Service, Settings};

use crate::commands::ApiArgs;
use crate::commands::keys::KeysCommand;
use crate::commands::submit::SubmitArgs;

#[derive(Debug, Parser)]
#[command(name = "tcoder", version, about = "Self-hosted, event-driven video transcoding")]
struct Cli {
    /// A TOML file layered over the built-in defaults (see config/default.toml).
    #[arg(long, global = true, env = "TCODER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the whole stack on this host (NATS, Redis, object store, ingest, dispatcher) and
    /// stop it cleanly on Ctrl-C.
    Up,
    /// Create a job for a video file, upload it, and optionally wait for the result.
    Submit {
        #[command(flatten)]
        api: ApiArgs,
        // Boxed: the largest arguments by far, so every other command stays small.
        #[command(flatten)]
        args: Box<SubmitArgs>,
    },
    /// Show one job.
    Status {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
    /// List jobs, newest first.
    Jobs {
        #[command(flatten)]
        api: ApiArgs,
        /// Only jobs in this status (`awaiting_upload`, uploaded, queued, running, completed,
        /// failed, canceled, expired).
        #[arg(long)]
        status: Option<tcoder::jobs::JobStatus>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// The next page: the cursor the previous page printed.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Follow a job with a live progress bar until it ends, then print its summary.
    Follow {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        /// Give up after this long (e.g. 30m).
        #[arg(long, default_value = "1h", value_parser = |s: &str| humantime::parse_duration(s).map_err(|e| e.to_string()))]
        timeout: std::time::Duration,
    },
    /// Download every file of a completed job (as its manifest lists them) into a folder.
    Download {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        /// Where to (default: a folder named after the job).
        dir: Option<PathBuf>,
    },
    /// Cancel a job.
    Cancel {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
    /// Delete jobs: their outputs, uploaded sources and records (a job that has not ended is
    /// canceled first).
    Delete {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Run the engine and the equivalent FFmpeg CLI commands on one clip and compare their CPU
    /// and wall time (see docs/BENCHMARKS.md).
    #[cfg(feature = "engine")]
    CompareEngine {
        #[command(flatten)]
        args: commands::compare::CompareArgs,
    },
    /// Run sources through the fixed and the per-title ladder and compare their bytes and
    /// measured quality, checked with FFmpeg's libvmaf (see docs/BENCHMARKS.md).
    #[cfg(feature = "engine")]
    CompareLadder {
        #[command(flatten)]
        args: commands::compare_ladder::CompareLadderArgs,
    },
    /// Inspect and replay dead-lettered jobs.
    Dlq {
        #[command(subcommand)]
        command: commands::dlq::DlqCommand,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage watch folders: prefixes of the bucket whose new objects become jobs.
    Watch {
        #[command(subcommand)]
        command: commands::watch::WatchCommand,
    },
}

fn main() -> ExitCode {
    tcoder::install_crypto_provider();
    let cli = Cli::parse();
    let settings = match Settings::load(Service::Cli, cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            say_on_stderr(&format!("tcoder: {e}"));
            return ExitCode::from(2);
        }
    };
    tcoder::telemetry::init("cli", &settings.telemetry);
    // One thread: `up` spawns its children from this thread, which matters for the
    // parent-death signal they inherit (it fires when the spawning thread exits).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let Ok(runtime) = runtime else {
        say_on_stderr("tcoder: cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Up => up::run(settings, cli.config.as_deref()).await.map(|()| true),
            Command::Submit { api, args } => {
                commands::submit::run(&api.client(&settings)?, *args).await
            }
            Command::Status { api, id } => {
                commands::jobs::status(&api.client(&settings)?, &id).await.map(|()| true)
            }
            Command::Jobs { api, status, limit, cursor } => {
                let query = tcoder::api::JobsQuery { status, limit: Some(limit), cursor };
                commands::jobs::list(&api.client(&settings)?, &query).await.map(|()| true)
            }
            Command::Follow { api, id, timeout } => {
                commands::follow::run(&api.client(&settings)?, &id, timeout).await
            }
            Command::Download { api, id, dir } => {
                commands::download::run(&api.client(&settings)?, &id, dir).await.map(|()| true)
            }
            Command::Cancel { api, id } => {
                commands::jobs::cancel(&api.client(&settings)?, &id).await.map(|()| true)
            }
            Command::Delete { api, ids } => {
                commands::jobs::delete(&api.client(&settings)?, &ids).await.map(|()| true)
            }
            #[cfg(feature = "engine")]
            Command::CompareEngine { args } => commands::compare::run(args).await.map(|()| true),
            #[cfg(feature = "engine")]
            Command::CompareLadder { args } => {
                commands::compare_ladder::run(args).await.map(|()| true)
            }
            Command::Dlq { command } => {
                let settings = profile::with_control_plane(settings, cli.config.is_some());
                commands::dlq::run(&settings, command).await.map(|()| true)
            }
            Command::Keys { command } => {
                let settings = profile::with_control_plane(settings, cli.config.is_some());
                commands::keys::run(&settings, command).await.map(|()| true)
            }
            Command::Watch { command } => {
                let settings = profile::with_control_plane(settings, cli.config.is_some());
                commands::watch::run(&settings, command).await.map(|()| true)
            }
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            say_on_stderr(&format!("tcoder: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// A line for a person on stderr; nothing (rather than a panic) when nobody reads it (`tcoder
/// up 2>&1 | tee log` after Ctrl-C).
fn say_on_stderr(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}
