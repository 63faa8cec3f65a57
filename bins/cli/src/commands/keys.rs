//! `tcoder keys create|hash|revoke`: API keys, stored hashed in Redis (or listed hashed in the
//! config's `ingest.api_keys`).

use anyhow::Context as _;
use tcoder::auth;
use tcoder::config::Settings;
use tcoder::jobs::Tenant;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeysCommand {
    /// Make a new key for a tenant, store its hash in Redis and print the key (shown once).
    Create {
        #[arg(long)]
        tenant: String,
    },
    /// Print the SHA-256 of a key, for `ingest.api_keys` in a config file.
    Hash { key: String },
    /// Remove a key (given as the key or its hash) from Redis.
    Revoke { key_or_hash: String },
}

pub(crate) async fn run(settings: &Settings, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Hash { key } => println!("{}", auth::hash_key(&key)),
        KeysCommand::Create { tenant } => {
            let tenant = Tenant::parse(&tenant)
                .context("tenant must be 1-64 characters of a-z, 0-9, -, _")?;
            let mut redis = tcoder::redis::connect(&settings.redis).await?;
            let key = auth::generate_key();
            auth::store_key(&mut redis, &key, &tenant).await?;
            println!("{key}");
        }
        KeysCommand::Revoke { key_or_hash } => {
            let mut redis = tcoder::redis::connect(&settings.redis).await?;
            let removed = auth::revoke_key(&mut redis, &key_or_hash).await?;
            anyhow::ensure!(removed, "no such key in Redis");
            println!("revoked");
        }
    }
    Ok(())
}
