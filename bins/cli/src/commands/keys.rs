//! `tcoder keys create|list|hash|revoke`: API keys, stored hashed in Redis (or listed hashed in
//! the config's `ingest.api_keys`). Revocations are recorded in Redis and hold for both kinds.

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
    /// List every key (its hash, tenant, where it is defined, whether it is revoked).
    List,
    /// Revoke a key (given as the key or its hash), in Redis or in the config, for good.
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
        KeysCommand::List => {
            let redis = tcoder::redis::connect(&settings.redis).await?;
            let keys = auth::ApiKeys::new(&settings.ingest.api_keys, redis).list().await?;
            println!("{:<64}  {:<20}  {:<6}  state", "sha256", "tenant", "source");
            for key in keys {
                let state = if key.revoked { "revoked" } else { "active" };
                println!("{:<64}  {:<20}  {:<6}  {state}", key.sha256, key.tenant, key.source);
            }
        }
        KeysCommand::Revoke { key_or_hash } => {
            let redis = tcoder::redis::connect(&settings.redis).await?;
            let digest = auth::digest_of(&key_or_hash);
            let keys = auth::ApiKeys::new(&settings.ingest.api_keys, redis.clone()).list().await?;
            let key = keys.iter().find(|k| k.sha256 == digest).context("no such key")?;
            auth::revoke_key(&mut redis.clone(), &digest).await?;
            match key.source {
                "config" => println!(
                    "revoked (it stays refused; remove it from ingest.api_keys when convenient)"
                ),
                _ => println!("revoked"),
            }
        }
    }
    Ok(())
}
