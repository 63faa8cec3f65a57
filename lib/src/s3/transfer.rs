//! Moving objects between the bucket and local disk without holding them in memory: downloads
//! are streamed chunk by chunk to a file; uploads are streamed from the file, as multipart
//! uploads of fixed-size parts when large (so memory is one part, whatever the file size).

use std::path::Path;

use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::io::AsyncWriteExt;

/// Files at least this large are uploaded in parts.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// Size of each part (S3 requires at least 5 MiB for all but the last).
pub const PART_SIZE: u64 = 8 * 1024 * 1024;

use super::objects::classify as sdk;
use super::{Key, S3Error};

/// Local disk trouble while streaming (the worker's scratch space): the machine's, not the
/// store's — so not waited out as a store outage.
fn disk(what: &str, error: &std::io::Error) -> S3Error {
    let full = error.raw_os_error() == Some(libc::ENOSPC);
    S3Error::Disk { what: format!("{what}: {error}"), full }
}

/// A file to upload that cannot be read.
fn unreadable(path: &Path, error: &dyn std::fmt::Display) -> S3Error {
    S3Error::Disk { what: format!("read {}: {error}", path.display()), full: false }
}

/// Streams `bucket/key` to `path`; returns the bytes written.
pub async fn download(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &Key,
    path: &Path,
) -> Result<u64, S3Error> {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key.as_str())
        .send()
        .await
        .map_err(|e| sdk("GetObject", e))?;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| disk(&format!("create {}", path.display()), &e))?;
    let mut body = object.body;
    let mut written = 0u64;
    while let Some(chunk) =
        body.try_next().await.map_err(|e| S3Error::Transient(format!("download {key}: {e}")))?
    {
        file.write_all(&chunk).await.map_err(|e| disk(&format!("write {}", path.display()), &e))?;
        written += chunk.len() as u64;
    }
    file.flush().await.map_err(|e| disk(&format!("flush {}", path.display()), &e))?;
    Ok(written)
}

/// `Cache-Control` of outputs: each attempt writes under its own epoch prefix and never
/// rewrites an object, so browsers and CDNs may keep them for good.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Streams `path` to `bucket/key`, stored with `content_type` and `cache_control`.
pub async fn upload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &Key,
    path: &Path,
    content_type: &str,
    cache_control: &str,
) -> Result<(), S3Error> {
    let key = key.as_str();
    let size =
        tokio::fs::metadata(path).await.map_err(|e| disk(&path.display().to_string(), &e))?.len();
    if size < MULTIPART_THRESHOLD {
        let body = ByteStream::from_path(path).await.map_err(|e| unreadable(path, &e))?;
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .cache_control(cache_control)
            .body(body)
            .send()
            .await
            .map_err(|e| sdk("PutObject", e))?;
        return Ok(());
    }
    let created = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .cache_control(cache_control)
        .send()
        .await
        .map_err(|e| sdk("CreateMultipartUpload", e))?;
    let upload_id =
        created.upload_id().ok_or_else(|| S3Error::Transient("no upload id".into()))?.to_owned();
    match upload_parts(s3, bucket, key, path, size, &upload_id).await {
        Ok(parts) => {
            s3.complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder().set_parts(Some(parts)).build(),
                )
                .send()
                .await
                .map_err(|e| sdk("CompleteMultipartUpload", e))?;
            Ok(())
        }
        Err(e) => {
            // Do not leave parts billed in the bucket.
            let _ = s3
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            Err(e)
        }
    }
}

async fn upload_parts(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    path: &Path,
    size: u64,
    upload_id: &str,
) -> Result<Vec<CompletedPart>, S3Error> {
    let mut parts = Vec::new();
    let mut offset = 0u64;
    let mut number = 1i32;
    while offset < size {
        let length = PART_SIZE.min(size - offset);
        let body = ByteStream::read_from()
            .path(path)
            .offset(offset)
            .length(Length::Exact(length))
            .build()
            .await
            .map_err(|e| unreadable(path, &e))?;
        let part = s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(body)
            .send()
            .await
            .map_err(|e| sdk("UploadPart", e))?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(part.e_tag().map(str::to_owned))
                .build(),
        );
        offset += length;
        number += 1;
    }
    Ok(parts)
}
