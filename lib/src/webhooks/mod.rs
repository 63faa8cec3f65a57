//! Webhooks: destination checks (SSRF guard), Standard Webhooks signing, delivery of one
//! attempt, and the per-tenant signing secret.

mod delivery;
mod destination;
mod signing;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

pub use self::delivery::{Deliverer, Delivery};
pub use self::destination::{DestinationError, check_url, is_public_ip, parse_url};
pub use self::signing::WebhookSecret;
use crate::jobs::Tenant;
use crate::redis::StoreError;

use crate::redis::keys::webhook_secret as secret_key;

/// `[webhooks]`: honoured alike by ingest (when a job is created) and the dispatcher (when it
/// delivers), so a development receiver needs one setting, not two.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Socket addresses (ip:port) webhooks may reach although they are not public: a receiver
    /// on this host or in a private network. Empty in production.
    pub allowed: Vec<std::net::SocketAddr>,
}

/// The tenant's signing secret, created on first use (one per tenant, stable afterwards).
pub async fn tenant_secret(
    redis: &mut ConnectionManager,
    tenant: &Tenant,
) -> Result<WebhookSecret, StoreError> {
    let fresh = WebhookSecret::generate().display();
    let _: bool = redis.set_nx(secret_key(tenant), &fresh).await?;
    let stored: String = redis.get(secret_key(tenant)).await?;
    WebhookSecret::parse(&stored).ok_or_else(|| StoreError::Corrupt("webhook secret".into()))
}
