//! `tcoder dlq list|replay`: dead-lettered jobs (operator commands; they talk to NATS and Redis
//! with the configured settings).

use anyhow::Context as _;
use tcoder::config::Settings;
use tcoder::jobs::{JobId, JobStore};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead-lettered jobs, oldest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put a dead-lettered (failed) job back on the work queue.
    Replay { job: String },
}

pub(crate) async fn run(settings: &Settings, command: DlqCommand) -> anyhow::Result<()> {
    let nats = tcoder::events::connect(&settings.nats, "tcoder-cli").await?;
    let js = async_nats::jetstream::new(nats);
    match command {
        DlqCommand::List { limit } => {
            let letters = tcoder::dlq::list(&js, limit).await?;
            println!("{:<38} {:<12} {:>10}  {:<24} REASON", "JOB", "TENANT", "DELIVERIES", "AT");
            for letter in letters {
                println!(
                    "{:<38} {:<12} {:>10}  {:<24} {}",
                    letter.job_id, letter.tenant, letter.deliveries, letter.at, letter.reason
                );
            }
        }
        DlqCommand::Replay { job } => {
            let id = JobId::parse(&job).context("not a job id")?;
            let jobs = JobStore::new(tcoder::redis::connect(&settings.redis).await?);
            tcoder::dlq::replay(&jobs, &js, &id).await?;
            println!("{id} queued again");
        }
    }
    Ok(())
}
