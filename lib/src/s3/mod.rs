//! S3-compatible object storage (Cloudflare R2, AWS S3, MinIO, or the embedded local store):
//! one `aws-sdk-s3` client for everything, including presigning and multipart.

mod key;
pub mod keys;
pub mod local;
pub mod multipart;
mod objects;
pub mod transfer;

pub use self::key::{Key, KeyError, KeyPrefix, MAX_KEY_BYTES};
pub use self::objects::{
    ListedObject, ObjectHead, ObjectRead, Presigned, S3Error, delete, delete_prefix, get,
    get_small, head, list, presign_put, put_bytes,
};

use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, timeout::TimeoutConfig};
use serde::Deserialize;

use crate::config::{Invalid, Secret, require_positive};

/// An object-created notification, before normalization: the bucket and key, and size and
/// ETag when the source reported them (they are re-read with `HeadObject` either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectCreated {
    pub bucket: String,
    pub key: String,
    pub size: Option<u64>,
    pub etag: Option<String>,
}

impl ObjectCreated {
    pub fn new(bucket: &str, key: &str) -> ObjectCreated {
        ObjectCreated { bucket: bucket.to_owned(), key: key.to_owned(), size: None, etag: None }
    }
}

/// `[s3]` settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Empty means AWS S3's own endpoints.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Empty means the AWS default credential chain (environment, profile, instance role).
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// Base of published output URLs; empty means `<endpoint>/<bucket>`.
    pub public_url: String,
    pub force_path_style: bool,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// The example credentials in config/default.toml, the same in every copy of tcoder.
const SHIPPED_CREDENTIALS: (&str, &str) = ("tcoder-local", "tcoder-local-secret");

impl Config {
    /// Whether these are the example credentials every copy of tcoder ships with.
    pub fn has_shipped_credentials(&self) -> bool {
        (self.access_key_id.as_str(), self.secret_access_key.expose()) == SHIPPED_CREDENTIALS
    }

    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        let is_http = self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://");
        if !self.endpoint.is_empty() && !is_http {
            return Err(Invalid::new("endpoint", "must start with http:// or https://"));
        }
        // Presigned upload URLs and output URLs are built from these: a listening wildcard is
        // no address a client can reach.
        for (key, url) in [("endpoint", &self.endpoint), ("public_url", &self.public_url)] {
            let host = url.split("://").nth(1).unwrap_or_default();
            if host.starts_with("0.0.0.0") || host.starts_with("[::]") {
                return Err(Invalid::new(
                    key,
                    "names a wildcard address (0.0.0.0 / [::]); use an address clients reach",
                ));
            }
        }
        if self.region.is_empty() {
            return Err(Invalid::new("region", "must not be empty (use \"auto\" for R2)"));
        }
        validate_bucket_name(&self.bucket).map_err(|m| Invalid::new("bucket", m))?;
        if self.access_key_id.is_empty() != self.secret_access_key.expose().is_empty() {
            return Err(Invalid::new(
                "secret_access_key",
                "access_key_id and secret_access_key must be set together",
            ));
        }
        require_positive("timeout", self.timeout)
    }
}

/// S3 bucket naming rules (the subset every provider agrees on).
fn validate_bucket_name(name: &str) -> Result<(), &'static str> {
    let ok_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !(3..=63).contains(&name.len()) || !ok_chars || name.starts_with('-') || name.ends_with('-')
    {
        return Err("must be 3-63 characters of a-z, 0-9 and '-', not starting or ending with '-'");
    }
    Ok(())
}

/// Builds the S3 client. Static keys when configured, else the AWS default chain.
pub async fn client(config: &Config) -> aws_sdk_s3::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5).min(config.timeout))
        .operation_attempt_timeout(config.timeout)
        .build();
    let mut builder = if config.access_key_id.is_empty() {
        let shared = aws_config::defaults(BehaviorVersion::latest()).load().await;
        aws_sdk_s3::config::Builder::from(&shared)
    } else {
        let credentials = Credentials::new(
            config.access_key_id.clone(),
            config.secret_access_key.expose().to_owned(),
            None,
            None,
            "tcoder-config",
        );
        aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(credentials)
    };
    builder = builder
        .region(Region::new(config.region.clone()))
        .force_path_style(config.force_path_style)
        .timeout_config(timeouts)
        // Checksums only where an operation requires them: the SDK's default sends streamed
        // bodies `aws-chunked` with a trailing checksum, and stores that speak S3 loosely (the
        // embedded one, some S3-compatible services) then serve the objects with
        // `Content-Encoding: aws-chunked`, which players and browsers cannot read.
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired);
    if !config.endpoint.is_empty() {
        builder = builder.endpoint_url(config.endpoint.clone());
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

impl Config {
    /// The URL an object is published under.
    pub fn public_url_of(&self, key: &str) -> String {
        if !self.public_url.is_empty() {
            return format!("{}/{key}", self.public_url.trim_end_matches('/'));
        }
        let endpoint = if self.endpoint.is_empty() {
            format!("https://s3.{}.amazonaws.com", self.region)
        } else {
            self.endpoint.trim_end_matches('/').to_owned()
        };
        format!("{endpoint}/{}/{key}", self.bucket)
    }
}

/// `HeadBucket`, for readiness checks: proves the endpoint answers, the credentials work and
/// the bucket exists.
pub async fn check_bucket(client: &aws_sdk_s3::Client, bucket: &str) -> Result<(), String> {
    client
        .head_bucket()
        .bucket(bucket)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("HeadBucket {bucket}: {}", aws_sdk_s3::error::DisplayErrorContext(e)))
}
