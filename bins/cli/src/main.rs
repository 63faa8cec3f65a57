//! `tcoder`: the command-line tool. `tcoder up` runs the whole pipeline on this host.

mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tcoder::config::{Service, Settings};

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
}

fn main() -> ExitCode {
    tcoder::install_crypto_provider();
    let cli = Cli::parse();
    let settings = match Settings::load(Service::Cli, cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("tcoder: {e}");
            return ExitCode::from(2);
        }
    };
    tcoder::telemetry::init("cli", &settings.telemetry);
    // One thread: `up` spawns its children from this thread, which matters for the
    // parent-death signal they inherit (it fires when the spawning thread exits).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let Ok(runtime) = runtime else {
        eprintln!("tcoder: cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Up => up::run(settings, cli.config.as_deref()).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcoder: {e:#}");
            ExitCode::FAILURE
        }
    }
}
