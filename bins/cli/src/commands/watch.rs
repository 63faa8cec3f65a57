//! `tcoder watch list|add|remove`: watch folders, kept in Redis (ingest picks changes up within
//! seconds). Rules in `[[ingest.watch]]` are written there each time ingest starts.

use anyhow::Context as _;
use tcoder::config::Settings;
use tcoder::watch::{self, WatchRuleRequest};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum WatchCommand {
    /// List the rules.
    List,
    /// Add (or replace) a rule: every object created under PREFIX from now on becomes a job.
    Add {
        /// The rule's name (a-z, 0-9, -, _), recorded on its jobs.
        name: String,
        /// The folder watched, e.g. `incoming/acme/` (outside uploads/ and outputs/).
        #[arg(long)]
        prefix: String,
        /// The tenant the jobs belong to.
        #[arg(long)]
        tenant: String,
        /// The job each object gets, as the JSON body of POST /v1/jobs, e.g.
        /// `{"preset": "hls", "qualities": "auto"}`.
        #[arg(long, default_value = "{}")]
        job: String,
    },
    /// Remove a rule (jobs it made stay).
    Remove { name: String },
}

pub(crate) async fn run(settings: &Settings, command: WatchCommand) -> anyhow::Result<()> {
    let mut redis = tcoder::redis::connect(&settings.redis).await?;
    match command {
        WatchCommand::List => {
            let rules = watch::list(&mut redis).await?;
            if rules.is_empty() {
                println!("no watch rules");
            }
            for rule in rules {
                let job = serde_json::to_string(&rule.job).expect("a spec serializes");
                let since = tcoder::jobs::rfc3339(rule.created_at);
                println!(
                    "{}  {}  tenant={}  since={since}  job={job}",
                    rule.name, rule.prefix, rule.tenant
                );
            }
        }
        WatchCommand::Add { name, prefix, tenant, job } => {
            let job = serde_json::from_str(&job).context("--job is not JSON")?;
            let request = WatchRuleRequest { name, prefix, tenant, job };
            let rule = request
                .validate(settings.ingest.max_upload_bytes, &settings.webhooks.allowed)
                .map_err(anyhow::Error::msg)?;
            let rule = watch::put(&mut redis, &rule).await?;
            println!(
                "watching {} for tenant {} (objects created from {} on)",
                rule.prefix,
                rule.tenant,
                tcoder::jobs::rfc3339(rule.created_at)
            );
        }
        WatchCommand::Remove { name } => {
            if !watch::remove(&mut redis, &name).await? {
                anyhow::bail!("no watch rule named `{name}`");
            }
            println!("removed {name}");
        }
    }
    Ok(())
}
