//! Parsers for the notification bodies of each store, all producing [`ObjectCreated`]. Only
//! object-created events are kept; deletions and test events yield nothing.
//!
//! - Cloudflare R2: `{"action":"PutObject","bucket":…,"object":{"key","size","eTag"},…}`;
//!   keys arrive as stored.
//! - AWS S3 / Ceph: `{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name"},
//!   "object":{"key","size","eTag"}}}]}`; keys are form-URL-encoded (`+` is a space); Ceph
//!   sends `size` as a string.
//! - MinIO: the same records inside `{"EventName","Key","Records"}`, with `s3:`-prefixed names.
//! - An SNS HTTPS delivery wraps the S3 body in `{"Type":"Notification","Message":"…"}`.

use percent_encoding::percent_decode_str;
use serde::Deserialize;
use tcoder::s3::ObjectCreated;

/// A body that is not a notification we understand.
#[derive(Debug, thiserror::Error)]
#[error("unrecognised notification body: {0}")]
pub(crate) struct Malformed(String);

#[derive(Deserialize)]
struct R2Event {
    action: String,
    bucket: String,
    object: R2Object,
}

#[derive(Deserialize)]
struct R2Object {
    key: String,
    size: Option<u64>,
    #[serde(rename = "eTag")]
    etag: Option<String>,
}

/// R2 actions that create an object (per Cloudflare's event-notification docs).
const R2_CREATE_ACTIONS: [&str; 3] = ["PutObject", "CopyObject", "CompleteMultipartUpload"];

/// Parses one R2 event notification body.
pub(crate) fn parse_r2(body: &[u8]) -> Result<Vec<ObjectCreated>, Malformed> {
    let event: R2Event = serde_json::from_slice(body).map_err(|e| Malformed(e.to_string()))?;
    if !R2_CREATE_ACTIONS.contains(&event.action.as_str()) {
        return Ok(Vec::new());
    }
    Ok(vec![ObjectCreated {
        bucket: event.bucket,
        key: event.object.key,
        size: event.object.size,
        etag: event.object.etag,
    }])
}

#[derive(Deserialize)]
struct S3Body {
    #[serde(rename = "Records", default)]
    records: Vec<S3Record>,
    /// SNS envelope.
    #[serde(rename = "Type")]
    sns_type: Option<String>,
    #[serde(rename = "Message")]
    sns_message: Option<String>,
}

#[derive(Deserialize)]
struct S3Record {
    #[serde(rename = "eventName")]
    event_name: String,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: S3Bucket,
    object: S3Object,
}

#[derive(Deserialize)]
struct S3Bucket {
    name: String,
}

#[derive(Deserialize)]
struct S3Object {
    key: String,
    #[serde(default)]
    size: Option<NumberOrString>,
    #[serde(rename = "eTag")]
    etag: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Number(u64),
    Text(String),
}

/// Parses an S3-style event body (AWS, MinIO, Ceph, or an SNS envelope around one).
pub(crate) fn parse_s3(body: &[u8]) -> Result<Vec<ObjectCreated>, Malformed> {
    let parsed: S3Body = serde_json::from_slice(body).map_err(|e| Malformed(e.to_string()))?;
    if parsed.sns_type.as_deref() == Some("Notification") {
        let inner = parsed
            .sns_message
            .ok_or_else(|| Malformed("SNS notification without Message".into()))?;
        return parse_s3(inner.as_bytes());
    }
    let mut created = Vec::new();
    for record in parsed.records {
        let name = record.event_name.strip_prefix("s3:").unwrap_or(&record.event_name);
        if !name.starts_with("ObjectCreated:") {
            continue;
        }
        let size = match record.s3.object.size {
            Some(NumberOrString::Number(n)) => Some(n),
            Some(NumberOrString::Text(t)) => t.parse().ok(),
            None => None,
        };
        created.push(ObjectCreated {
            bucket: record.s3.bucket.name,
            key: decode_form_key(&record.s3.object.key)?,
            size,
            etag: record.s3.object.etag,
        });
    }
    Ok(created)
}

/// S3 event keys are form-encoded: `+` is a space, then percent-decoding (`%2B` is `+`).
fn decode_form_key(key: &str) -> Result<String, Malformed> {
    let spaced = key.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| Malformed(format!("key `{key}` is not UTF-8 after decoding")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r2_create_actions_are_kept_and_deletes_ignored() {
        let put = br#"{"account":"3f4b","action":"PutObject","bucket":"media","object":{"key":"uploads/a/b/source","size":65536,"eTag":"c846ff"},"eventTime":"2024-05-24T19:36:44.379Z"}"#;
        let created = parse_r2(put).unwrap();
        assert_eq!(
            created,
            vec![ObjectCreated {
                bucket: "media".into(),
                key: "uploads/a/b/source".into(),
                size: Some(65536),
                etag: Some("c846ff".into()),
            }]
        );
        let delete = br#"{"account":"3f4b","action":"DeleteObject","bucket":"media","object":{"key":"x"},"eventTime":"2024-05-24T19:36:44.379Z"}"#;
        assert!(parse_r2(delete).unwrap().is_empty());
        assert!(parse_r2(b"not json").is_err());
    }

    #[test]
    fn s3_keys_are_form_decoded_and_sizes_may_be_strings() {
        let aws = br#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"media"},"object":{"key":"my+video%2B1.mp4","size":1024,"eTag":"d41d8c"}}}]}"#;
        let created = parse_s3(aws).unwrap();
        assert_eq!(created[0].key, "my video+1.mp4");
        assert_eq!(created[0].size, Some(1024));
        let ceph = br#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"k","size":"2048","eTag":"e"}}}]}"#;
        assert_eq!(parse_s3(ceph).unwrap()[0].size, Some(2048));
    }

    #[test]
    fn minio_sns_and_test_events() {
        let minio = br#"{"EventName":"s3:ObjectCreated:Put","Key":"media/a b","Records":[{"eventVersion":"2.0","eventSource":"minio:s3","eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"media"},"object":{"key":"a+b","size":5,"eTag":"x"}}},{"eventName":"s3:ObjectRemoved:Delete","s3":{"bucket":{"name":"media"},"object":{"key":"gone"}}}]}"#;
        let created = parse_s3(minio).unwrap();
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].key, "a b");
        let inner = r#"{"Records":[{"eventName":"ObjectCreated:CompleteMultipartUpload","s3":{"bucket":{"name":"m"},"object":{"key":"k","size":1}}}]}"#;
        let sns = serde_json::json!({"Type": "Notification", "Message": inner}).to_string();
        assert_eq!(parse_s3(sns.as_bytes()).unwrap()[0].key, "k");
        let test_event = br#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-01-01T00:00:00Z","Bucket":"media"}"#;
        assert!(parse_s3(test_event).unwrap().is_empty());
    }
}
