//! What every request handler can reach.

use std::sync::Arc;

use tcoder::auth::ApiKeys;
use tcoder::config::IngestConfig;
use tcoder::jobs::JobStore;

use crate::bridge::Bridge;
use crate::metrics::IngestMetrics;

#[derive(Clone, Debug)]
pub(crate) struct AppState {
    pub jobs: JobStore,
    pub redis: tcoder::redis::Conn,
    pub keys: ApiKeys,
    pub js: async_nats::jetstream::Context,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub config: Arc<IngestConfig>,
    pub bridge: Bridge,
    /// Fetches jobs' `source_url`s.
    pub importer: crate::bridge::import::Importer,
    pub metrics: IngestMetrics,
    pub cors: Arc<tcoder::cors::Cors>,
    /// `[webhooks] allowed`: non-public webhook destinations jobs may name.
    pub allowed_webhooks: Arc<Vec<std::net::SocketAddr>>,
    /// How tenants' webhook signing secrets are sealed in Redis.
    pub webhook_secrets: Arc<tcoder::webhooks::AtRest>,
    /// The web console's Content Security Policy.
    pub console_policy: Arc<str>,
    /// Where objects are published (`[s3] public_url`), for redirects to them.
    pub store: Arc<tcoder::s3::Config>,
    /// Committed parts' playlists read lately, for progressive HLS.
    pub part_files: Arc<crate::routes::progressive::PartFiles>,
    /// Thumbnails answered lately.
    pub thumbnails: Arc<crate::routes::thumbnail::ThumbnailCache>,
    /// Live job events, shared by every open event stream.
    pub events: Arc<crate::event_hub::EventHub>,
}
