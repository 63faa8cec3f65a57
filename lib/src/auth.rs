//! API keys. Keys are random (256 bits), shown once, and stored only as their SHA-256: a
//! dump of the config or of Redis reveals no usable key. The tenant comes from the key, never
//! from the request.
//!
//! Lookup hashes the presented key and finds the digest in a map; the comparison that decides
//! is between digests, so response timing reveals nothing about a valid key.

use std::collections::HashMap;

use base64::Engine as _;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use crate::config::ApiKeyEntry;
use crate::jobs::Tenant;
use crate::redis::StoreError;

/// Prefix of every key tcoder issues (recognisable in logs and secret scanners).
pub const KEY_PREFIX_TEXT: &str = "tk_";

/// Redis hash of runtime-created keys: SHA-256 hex → tenant.
pub use crate::redis::keys::api_keys as redis_key;

/// A new random API key.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!("{KEY_PREFIX_TEXT}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of a key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Resolves keys to tenants: configured keys first, then those stored in Redis.
#[derive(Clone)]
pub struct ApiKeys {
    configured: HashMap<String, Tenant>,
    redis: ConnectionManager,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").field("configured", &self.configured.len()).finish()
    }
}

impl ApiKeys {
    /// `entries` were validated with the settings (tenant syntax, 64 hex digits).
    pub fn new(entries: &[ApiKeyEntry], redis: ConnectionManager) -> ApiKeys {
        let configured = entries
            .iter()
            .filter_map(|e| Some((e.sha256.to_ascii_lowercase(), Tenant::parse(&e.tenant)?)))
            .collect();
        ApiKeys { configured, redis }
    }

    /// The tenant a key belongs to, or `None` for an unknown key.
    pub async fn tenant_of(&self, key: &str) -> Result<Option<Tenant>, StoreError> {
        if !key.starts_with(KEY_PREFIX_TEXT) || key.len() > 128 {
            return Ok(None);
        }
        let digest = hash_key(key);
        if let Some(tenant) = self.configured.get(&digest) {
            return Ok(Some(tenant.clone()));
        }
        let mut redis = self.redis.clone();
        let stored: Option<String> = redis.hget(redis_key(), &digest).await?;
        Ok(stored.and_then(|t| Tenant::parse(&t)))
    }
}

/// Stores a key's hash for `tenant` in Redis (used by `tcoder keys create` and `tcoder up`).
pub async fn store_key(
    redis: &mut ConnectionManager,
    key: &str,
    tenant: &Tenant,
) -> Result<(), StoreError> {
    let _: () = redis.hset(redis_key(), hash_key(key), tenant.as_str()).await?;
    Ok(())
}

/// Removes a key (by the key or by its hash).
pub async fn revoke_key(
    redis: &mut ConnectionManager,
    key_or_hash: &str,
) -> Result<bool, StoreError> {
    let digest = if key_or_hash.starts_with(KEY_PREFIX_TEXT) {
        hash_key(key_or_hash)
    } else {
        key_or_hash.to_owned()
    };
    let removed: u32 = redis.hdel(redis_key(), digest).await?;
    Ok(removed > 0)
}

/// A per-key limit on how fast jobs are created: a token bucket in Redis (shared by every
/// ingest process) of `burst` tokens refilled at `per_second`.
#[derive(Debug, Clone, Copy)]
pub struct CreateRate {
    pub burst: u32,
    pub per_second: f64,
}

static TOKEN_BUCKET: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("redis/token_bucket.lua")));

/// Takes one job creation from `key`'s bucket: `Ok(None)` when allowed, `Ok(Some(wait))`
/// when the key must wait that long.
pub async fn take_create_token(
    redis: &mut ConnectionManager,
    key: &str,
    rate: CreateRate,
) -> Result<Option<std::time::Duration>, StoreError> {
    let (taken, wait_ms): (u32, u64) = TOKEN_BUCKET
        .key(crate::redis::keys::create_rate(&hash_key(key)))
        .arg(rate.burst)
        .arg(rate.per_second)
        .arg(crate::jobs::now_ms())
        .invoke_async(redis)
        .await?;
    Ok((taken == 0).then(|| std::time::Duration::from_millis(wait_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_prefixed_and_hash_to_hex() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX_TEXT) && a.len() == 3 + 43);
        assert_eq!(hash_key(&a).len(), 64);
        assert_eq!(hash_key("tk_x"), hash_key("tk_x"));
    }
}
