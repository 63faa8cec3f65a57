//! Every request tcoder makes of the object store, with errors sorted by what the caller should
//! do about them: a missing object is not retried, a refused request needs an operator, and
//! only the rest (network, timeouts, throttling, 5xx, local disk trouble while streaming) is
//! worth another try.

use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;

use super::{Key, KeyPrefix};

/// Why an object-store request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3Error {
    /// The object or bucket does not exist (404, `NoSuchKey`, `NoSuchBucket`).
    #[error("not found: {0}")]
    NotFound(String),
    /// Credentials or policy refused the request (401, 403): retrying will not help.
    #[error("denied: {0}")]
    Denied(String),
    /// The byte range asked for lies outside the object (416, `InvalidRange`).
    #[error("range not satisfiable: {0}")]
    RangeNotSatisfiable(String),
    /// The local side of a transfer failed (the machine's scratch disk), not the store;
    /// `full`: no space left on it (`ENOSPC`).
    #[error("local disk: {what}")]
    Disk { what: String, full: bool },
    /// An object read whole ([`get_small`]) is larger than the reader takes.
    #[error("too large: {0}")]
    TooLarge(String),
    /// Anything else: worth retrying later.
    #[error("{0}")]
    Transient(String),
}

impl S3Error {
    pub fn is_transient(&self) -> bool {
        matches!(self, S3Error::Transient(_))
    }
}

/// Sorts an SDK error of request `what` into an [`S3Error`].
pub(crate) fn classify<E>(what: &str, error: SdkError<E, HttpResponse>) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = match &error {
        SdkError::ServiceError(service) => service.err().code().map(str::to_owned),
        _ => None,
    };
    let message = format!("{what}: {}", aws_sdk_s3::error::DisplayErrorContext(error));
    match (status, code.as_deref()) {
        (_, Some("NoSuchKey" | "NoSuchBucket" | "NotFound")) | (Some(404), _) => {
            S3Error::NotFound(message)
        }
        (_, Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch"))
        | (Some(401 | 403), _) => S3Error::Denied(message),
        (_, Some("InvalidRange")) | (Some(416), _) => S3Error::RangeNotSatisfiable(message),
        _ => S3Error::Transient(message),
    }
}

/// What `HeadObject` says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    /// Without the quotes S3 puts around it.
    pub etag: String,
    /// `Last-Modified` in ms since the epoch (0 when the store does not say).
    pub modified_ms: u64,
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: Key,
    pub size: u64,
    pub etag: String,
    /// `LastModified` in ms since the epoch (0 when the store does not say).
    pub modified_ms: u64,
}

fn epoch_ms(time: Option<&aws_sdk_s3::primitives::DateTime>) -> u64 {
    time.and_then(|t| t.to_millis().ok()).and_then(|ms| u64::try_from(ms).ok()).unwrap_or(0)
}

/// A presigned request: the URL and the headers the client must send with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

impl From<aws_sdk_s3::presigning::PresignedRequest> for Presigned {
    fn from(presigned: aws_sdk_s3::presigning::PresignedRequest) -> Presigned {
        Presigned {
            url: presigned.uri().to_owned(),
            headers: presigned
                .headers()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
        }
    }
}

/// `HeadObject`; a missing object is `Ok(None)`.
pub async fn head(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &Key,
) -> Result<Option<ObjectHead>, S3Error> {
    match s3.head_object().bucket(bucket).key(key.as_str()).send().await {
        Ok(head) => Ok(Some(ObjectHead {
            size: head.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            etag: head.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
            modified_ms: epoch_ms(head.last_modified()),
        })),
        Err(error) => match classify("HeadObject", error) {
            S3Error::NotFound(_) => Ok(None),
            other => Err(other),
        },
    }
}

/// `DeleteObject`; a missing object is fine (already gone).
pub async fn delete(s3: &aws_sdk_s3::Client, bucket: &str, key: &Key) -> Result<(), S3Error> {
    match s3.delete_object().bucket(bucket).key(key.as_str()).send().await {
        Ok(_) => Ok(()),
        Err(error) => match classify("DeleteObject", error) {
            S3Error::NotFound(_) => Ok(()),
            other => Err(other),
        },
    }
}

/// Objects under `prefix`, at most `max_pages` pages of `ListObjectsV2` (1,000 keys each).
/// Objects whose keys are not canonical ([`Key`]) are left out: nothing tcoder does may name
/// them (an S3 bucket stores `a/../b` as it is; the embedded store would read `b`).
pub async fn list(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &KeyPrefix,
    max_pages: usize,
) -> Result<Vec<ListedObject>, S3Error> {
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..max_pages {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix.as_str())
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| classify(&format!("ListObjectsV2 {prefix}"), e))?;
        for object in page.contents() {
            let (Some(key), Some(size)) = (object.key(), object.size()) else { continue };
            let Ok(key) = Key::parse(key) else {
                tracing::debug!(key, "listed object with a non-canonical key left out");
                continue;
            };
            found.push(ListedObject {
                key,
                size: u64::try_from(size).unwrap_or(0),
                etag: object.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
                modified_ms: epoch_ms(object.last_modified()),
            });
        }
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
            _ => break,
        }
    }
    Ok(found)
}

/// A presigned `PutObject` of `key`, valid for `expires_in`. A declared `content_length` is
/// signed (the SDK leaves it out of presigned requests; it is added before signing so the store
/// refuses any other size), and so is `content_type`.
pub async fn presign_put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &Key,
    content_length: Option<u64>,
    content_type: Option<&str>,
    expires_in: Duration,
) -> Result<Presigned, S3Error> {
    let mut put = s3.put_object().bucket(bucket).key(key.as_str());
    if let Some(content_type) = content_type {
        put = put.content_type(content_type);
    }
    let config = PresigningConfig::expires_in(expires_in)
        .map_err(|e| S3Error::Transient(format!("presigning config: {e}")))?;
    let presigned = put
        .customize()
        .mutate_request(move |request| {
            if let Some(length) = content_length {
                request.headers_mut().insert("content-length", length.to_string());
            }
        })
        .presigned(config)
        .await
        .map_err(|e| classify("presign PutObject", e))?;
    Ok(presigned.into())
}

/// An object being read (`GetObject`): its headers and a streamed body.
#[derive(Debug)]
pub struct ObjectRead {
    /// A byte range was asked for and is being served (206).
    pub partial: bool,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    pub content_range: Option<String>,
    pub etag: Option<String>,
    pub body: aws_sdk_s3::primitives::ByteStream,
}

/// `GetObject`, with an HTTP `Range` (`bytes=…`) passed through.
pub async fn get(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &Key,
    range: Option<&str>,
) -> Result<ObjectRead, S3Error> {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key.as_str())
        .set_range(range.map(str::to_owned))
        .send()
        .await
        .map_err(|e| classify("GetObject", e))?;
    Ok(ObjectRead {
        partial: object.content_range().is_some(),
        content_type: object.content_type().map(str::to_owned),
        content_length: object.content_length().and_then(|n| u64::try_from(n).ok()),
        content_range: object.content_range().map(str::to_owned),
        etag: object.e_tag().map(str::to_owned),
        body: object.body,
    })
}

/// A small object (a playlist, an index, a still) read whole into memory; one larger than
/// `limit` bytes is refused ([`S3Error::TooLarge`]), by its length before its body is read.
pub async fn get_small(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &Key,
    limit: usize,
) -> Result<Vec<u8>, S3Error> {
    let too_large =
        |bytes: u64| S3Error::TooLarge(format!("{key}: {bytes} bytes, at most {limit}"));
    let object = get(s3, bucket, key, None).await?;
    if let Some(length) = object.content_length.filter(|&n| n > limit as u64) {
        return Err(too_large(length));
    }
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|e| S3Error::Transient(format!("GetObject {key}: {e}")))?
        .into_bytes();
    if bytes.len() > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes.to_vec())
}

/// Puts `body` (held in memory: small objects only) at `key`.
pub async fn put_bytes(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &Key,
    body: bytes::Bytes,
    content_type: Option<&str>,
) -> Result<(), S3Error> {
    s3.put_object()
        .bucket(bucket)
        .key(key.as_str())
        .set_content_type(content_type.map(str::to_owned))
        .body(body.into())
        .send()
        .await
        .map_err(|e| classify("PutObject", e))?;
    Ok(())
}

/// Deletes every object under `prefix` except those under `keep` (at most `max_pages` pages of
/// 1,000); returns how many were deleted. `DeleteObjects` batches of up to 1,000 keys.
pub async fn delete_prefix(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &KeyPrefix,
    keep: Option<&KeyPrefix>,
    max_pages: usize,
) -> Result<usize, S3Error> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let doomed: Vec<Key> = list(s3, bucket, prefix, max_pages)
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|key| keep.is_none_or(|keep| !key.is_in(keep)))
        .collect();
    for batch in doomed.chunks(1000) {
        let objects: Vec<ObjectIdentifier> = batch
            .iter()
            .filter_map(|key| ObjectIdentifier::builder().key(key.as_str()).build().ok())
            .collect();
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| S3Error::Transient(format!("DeleteObjects request: {e}")))?;
        s3.delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| classify("DeleteObjects", e))?;
    }
    Ok(doomed.len())
}
