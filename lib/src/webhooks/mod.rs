//! Webhooks: destination checks (SSRF guard), Standard Webhooks signing, delivery of one
//! attempt, and the per-tenant signing secret.

mod at_rest;
mod delivery;
mod destination;
mod signing;

use crate::redis::Conn;
use redis::AsyncCommands;

pub use self::at_rest::{AtRest, SealError};
pub use self::delivery::{AddressError, Deliverer, Delivery, checked_address};
pub use self::destination::{DestinationError, check_url, is_public_ip, parse_url};
pub use self::signing::WebhookSecret;
use crate::jobs::Tenant;
use crate::redis::RedisError;

use crate::redis::keys::webhook_secret as secret_key;

/// `[webhooks]`: honoured alike by ingest (when a job is created) and the dispatcher (when it
/// delivers), so a development receiver needs one setting, not two.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Socket addresses (ip:port) webhooks may reach although they are not public: a receiver
    /// on this host or in a private network. Empty in production.
    pub allowed: Vec<std::net::SocketAddr>,
    /// Key sealing tenants' signing secrets in Redis (64 hex digits); empty: stored in plaintext.
    #[serde(default)]
    pub secret_key: crate::config::Secret,
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), crate::config::Invalid> {
        AtRest::new(self.secret_key.expose())
            .map(|_| ())
            .map_err(|e| crate::config::Invalid::new("secret_key", e))
    }

    /// The sealing of signing secrets this configuration asks for.
    pub fn at_rest(&self) -> AtRest {
        AtRest::new(self.secret_key.expose()).expect("validated with the settings")
    }
}

/// The tenant's signing secret if ingest has made it: read only, for the dispatcher, whose
/// Redis user may not write secrets (`redis::acl`). A secret still stored unsealed is used as
/// it is; the next `tenant_secret` call (ingest) seals it.
pub async fn stored_tenant_secret(
    redis: &mut Conn,
    tenant: &Tenant,
    at_rest: &AtRest,
) -> Result<Option<WebhookSecret>, RedisError> {
    let stored: Option<String> = redis.get(secret_key(tenant)).await?;
    let Some(stored) = stored else { return Ok(None) };
    let (secret, _) = at_rest.open(&stored).map_err(|e| RedisError::Corrupt(e.to_string()))?;
    WebhookSecret::parse(&secret)
        .map(Some)
        .ok_or_else(|| RedisError::Corrupt("webhook secret".into()))
}

/// The tenant's signing secret, created on first use (one per tenant, stable afterwards),
/// stored sealed under `at_rest`'s key when there is one.
pub async fn tenant_secret(
    redis: &mut Conn,
    tenant: &Tenant,
    at_rest: &AtRest,
) -> Result<WebhookSecret, RedisError> {
    let fresh = at_rest.seal(&WebhookSecret::generate().display());
    let _: bool = redis.set_nx(secret_key(tenant), &fresh).await?;
    let stored: String = redis.get(secret_key(tenant)).await?;
    let (secret, reseal) = at_rest.open(&stored).map_err(|e| RedisError::Corrupt(e.to_string()))?;
    if reseal {
        let _: () = redis.set(secret_key(tenant), at_rest.seal(&secret)).await?;
    }
    WebhookSecret::parse(&secret).ok_or_else(|| RedisError::Corrupt("webhook secret".into()))
}
