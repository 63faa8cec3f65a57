//! API keys. Keys are random (256 bits), shown once, and stored only as their SHA-256: a
//! dump of the config or of Redis reveals no usable key. The tenant comes from the key, never
//! from the request.
//!
//! Lookup hashes the presented key and finds the digest in a map; the comparison that decides
//! is between digests, so response timing reveals nothing about a valid key.

use std::collections::HashMap;

use crate::redis::Conn;
use base64::Engine as _;
use redis::AsyncCommands;
use sha2::{Digest, Sha256};

use crate::config::ApiKeyEntry;
use crate::jobs::Tenant;
use crate::redis::RedisError;

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
    redis: Conn,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").field("configured", &self.configured.len()).finish()
    }
}

impl ApiKeys {
    /// `entries` were validated with the settings (tenant syntax, 64 hex digits).
    pub fn new(entries: &[ApiKeyEntry], redis: Conn) -> ApiKeys {
        let configured = entries
            .iter()
            .filter_map(|e| Some((e.sha256.to_ascii_lowercase(), Tenant::parse(&e.tenant)?)))
            .collect();
        ApiKeys { configured, redis }
    }

    /// The tenant a key belongs to, or `None` for an unknown key.
    pub async fn tenant_of(&self, key: &str) -> Result<Option<Tenant>, RedisError> {
        if !key.starts_with(KEY_PREFIX_TEXT) || key.len() > 128 {
            return Ok(None);
        }
        let digest = hash_key(key);
        let mut redis = self.redis.clone();
        let revoked: bool =
            redis.sismember(crate::redis::keys::revoked_api_keys(), &digest).await?;
        if revoked {
            return Ok(None);
        }
        if let Some(tenant) = self.configured.get(&digest) {
            return Ok(Some(tenant.clone()));
        }
        let stored: Option<String> = redis.hget(redis_key(), &digest).await?;
        Ok(stored.and_then(|t| Tenant::parse(&t)))
    }

    /// Every key known: configured ones and those stored in Redis, with whether each is
    /// revoked, sorted by tenant.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, RedisError> {
        let mut redis = self.redis.clone();
        let stored: HashMap<String, String> = redis.hgetall(redis_key()).await?;
        let revoked: std::collections::HashSet<String> =
            redis.smembers(crate::redis::keys::revoked_api_keys()).await?;
        let mut keys: Vec<KeyInfo> = self
            .configured
            .iter()
            .map(|(hash, tenant)| (hash.clone(), tenant.as_str().to_owned(), "config"))
            .chain(stored.into_iter().map(|(hash, tenant)| (hash, tenant, "redis")))
            .map(|(sha256, tenant, source)| KeyInfo {
                revoked: revoked.contains(&sha256),
                sha256,
                tenant,
                source,
            })
            .collect();
        keys.sort_by(|a, b| (&a.tenant, &a.sha256).cmp(&(&b.tenant, &b.sha256)));
        Ok(keys)
    }
}

/// One key as `tcoder keys list` shows it (never the key itself: only its hash is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub sha256: String,
    pub tenant: String,
    /// `config` (`ingest.api_keys`) or `redis`.
    pub source: &'static str,
    pub revoked: bool,
}

/// Whether `key` was revoked.
pub async fn is_revoked(redis: &mut Conn, key: &str) -> Result<bool, RedisError> {
    Ok(redis.sismember(crate::redis::keys::revoked_api_keys(), hash_key(key)).await?)
}

/// Stores a key's hash for `tenant` in Redis (used by `tcoder keys create` and `tcoder up`).
pub async fn store_key(redis: &mut Conn, key: &str, tenant: &Tenant) -> Result<(), RedisError> {
    let _: () = redis.hset(redis_key(), hash_key(key), tenant.as_str()).await?;
    Ok(())
}

/// Revokes a key (by the key or by its hash), for good: its hash is removed from Redis and
/// recorded as revoked, which also disables a configured key and keeps the key from coming
/// back if something stores it again.
pub async fn revoke_key(redis: &mut Conn, key_or_hash: &str) -> Result<(), RedisError> {
    let digest = digest_of(key_or_hash);
    let _: u32 = redis.hdel(redis_key(), &digest).await?;
    let _: u32 = redis.sadd(crate::redis::keys::revoked_api_keys(), &digest).await?;
    Ok(())
}

/// The hash of a key given as the key itself or as its hash.
pub fn digest_of(key_or_hash: &str) -> String {
    if key_or_hash.starts_with(KEY_PREFIX_TEXT) {
        hash_key(key_or_hash)
    } else {
        key_or_hash.to_ascii_lowercase()
    }
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
    redis: &mut Conn,
    key: &str,
    rate: CreateRate,
) -> Result<Option<std::time::Duration>, RedisError> {
    take_token(redis, crate::redis::keys::create_rate(&hash_key(key)), rate).await
}

/// Takes one NATS submission from `tenant`'s bucket (the same rate as [`take_create_token`],
/// per tenant: a producer user is its tenant's).
pub async fn take_submit_token(
    redis: &mut Conn,
    tenant: &Tenant,
    rate: CreateRate,
) -> Result<Option<std::time::Duration>, RedisError> {
    take_token(redis, crate::redis::keys::submit_rate(tenant), rate).await
}

async fn take_token(
    redis: &mut Conn,
    bucket: String,
    rate: CreateRate,
) -> Result<Option<std::time::Duration>, RedisError> {
    let (taken, wait_ms): (u32, u64) = TOKEN_BUCKET
        .key(bucket)
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
