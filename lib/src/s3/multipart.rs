//! Multipart uploads of a job's source (S3's `CreateMultipartUpload` / `UploadPart` /
//! `ListParts` / `CompleteMultipartUpload`, which R2 speaks too): one presigned PUT carries at
//! most [`SINGLE_PUT_MAX_BYTES`], and a connection dropped an hour into a large upload should
//! cost one part, not the whole file.
//!
//! The client only ever PUTs parts, each to a URL signed for its part number and exact length;
//! ingest creates the upload and completes it from what the store lists, so a client cannot
//! assemble an object of other parts or sizes than the job declared.

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::objects::classify;
use super::{Key, Presigned, S3Error};

/// The most one presigned PUT carries on R2 and S3 (5 GiB): a larger source needs a multipart
/// upload.
pub const SINGLE_PUT_MAX_BYTES: u64 = 5 << 30;
/// S3's and R2's smallest part (all but the last), 5 MiB.
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// S3's and R2's largest part, 5 GiB.
pub const MAX_PART_BYTES: u64 = 5 << 30;
/// The most parts tcoder plans for one upload (S3 allows 10,000): the part size grows with the
/// source instead, so an answer listing every part's URL stays small.
pub const MAX_PARTS: u64 = 1000;

/// How a source of `length` bytes is cut into parts: every part `part_size` bytes but the
/// last, which holds the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartPlan {
    pub length: u64,
    pub part_size: u64,
}

impl PartPlan {
    /// Parts of `preferred` bytes (clamped to what S3 allows), larger when the source would
    /// otherwise need more than [`MAX_PARTS`]; sizes are whole MiB.
    pub fn new(length: u64, preferred: u64) -> PartPlan {
        const MIB: u64 = 1 << 20;
        let least = length.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
        let part_size = preferred.max(least).clamp(MIN_PART_BYTES, MAX_PART_BYTES);
        PartPlan { length, part_size }
    }

    /// How many parts (at least one: an empty source is refused before a plan is made).
    pub fn count(&self) -> u32 {
        u32::try_from(self.length.div_ceil(self.part_size).max(1)).unwrap_or(u32::MAX)
    }

    /// The size of part `number` (1-based), `None` past the last.
    pub fn size_of(&self, number: u32) -> Option<u64> {
        if number == 0 || number > self.count() {
            return None;
        }
        let start = u64::from(number - 1) * self.part_size;
        Some((self.length - start).min(self.part_size))
    }

    /// The byte range `[start, end)` of part `number` in the source.
    pub fn range_of(&self, number: u32) -> Option<(u64, u64)> {
        let size = self.size_of(number)?;
        let start = u64::from(number - 1) * self.part_size;
        Some((start, start + size))
    }
}

/// A part the store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    pub number: u32,
    pub size: u64,
    pub etag: String,
}

/// Starts a multipart upload at `key`; returns its upload id.
pub async fn create(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &Key,
    content_type: Option<&str>,
) -> Result<String, S3Error> {
    let mut request = s3.create_multipart_upload().bucket(bucket).key(key.as_str());
    if let Some(content_type) = content_type {
        request = request.content_type(content_type);
    }
    let output = request.send().await.map_err(|e| classify("CreateMultipartUpload", e))?;
    output
        .upload_id
        .ok_or_else(|| S3Error::Transient("CreateMultipartUpload answered no upload id".into()))
}

/// A presigned `UploadPart` for part `number`, signed with its exact length: the store refuses
/// any other size.
pub async fn presign_part(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &Key,
    upload_id: &str,
    number: u32,
    length: u64,
    expires_in: Duration,
) -> Result<Presigned, S3Error> {
    let config = PresigningConfig::expires_in(expires_in)
        .map_err(|e| S3Error::Transient(format!("presigning config: {e}")))?;
    let part = i32::try_from(number).map_err(|_| S3Error::Transient("part number".into()))?;
    let presigned = s3
        .upload_part()
        .bucket(bucket)
        .key(key.as_str())
        .upload_id(upload_id)
        .part_number(part)
        .customize()
        .mutate_request(move |request| {
            request.headers_mut().insert("content-length", length.to_string());
        })
        .presigned(config)
        .await
        .map_err(|e| classify("presign UploadPart", e))?;
    Ok(presigned.into())
}

/// Uploads `body` as part `number` of `upload_id` (the importer's parts, sent by tcoder itself).
pub async fn upload_part(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &Key,
    upload_id: &str,
    number: u32,
    body: bytes::Bytes,
) -> Result<StoredPart, S3Error> {
    let size = body.len() as u64;
    let part = i32::try_from(number).map_err(|_| S3Error::Transient("part number".into()))?;
    let uploaded = s3
        .upload_part()
        .bucket(bucket)
        .key(key.as_str())
        .upload_id(upload_id)
        .part_number(part)
        .body(body.into())
        .send()
        .await
        .map_err(|e| classify("UploadPart", e))?;
    let etag = uploaded.e_tag().unwrap_or_default().trim_matches('"').to_owned();
    Ok(StoredPart { number, size, etag })
}

/// The parts the store holds for `upload_id`, by number; `None` when the upload is not there
/// (completed or aborted).
pub async fn list_parts(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &Key,
    upload_id: &str,
) -> Result<Option<Vec<StoredPart>>, S3Error> {
    let mut parts = Vec::new();
    let mut marker: Option<String> = None;
    // 1000 parts a page (S3's most), [`MAX_PARTS`] at most: bounded, with room to spare.
    for _ in 0..=MAX_PARTS.div_ceil(1000) * 10 {
        let mut request =
            s3.list_parts().bucket(bucket).key(key.as_str()).upload_id(upload_id).max_parts(1000);
        if let Some(marker) = &marker {
            request = request.part_number_marker(marker);
        }
        let page = match request.send().await {
            Ok(page) => page,
            Err(e) => {
                let code = e.as_service_error().and_then(|e| {
                    aws_sdk_s3::error::ProvideErrorMetadata::code(e).map(str::to_owned)
                });
                return match (code.as_deref(), classify("ListParts", e)) {
                    (Some("NoSuchUpload"), _) | (_, S3Error::NotFound(_)) => Ok(None),
                    (_, other) => Err(other),
                };
            }
        };
        for part in page.parts.unwrap_or_default() {
            let (Some(number), Some(size), Some(etag)) = (part.part_number, part.size, part.e_tag)
            else {
                continue;
            };
            let (Ok(number), Ok(size)) = (u32::try_from(number), u64::try_from(size)) else {
                continue;
            };
            parts.push(StoredPart { number, size, etag: etag.trim_matches('"').to_owned() });
        }
        match (page.is_truncated, page.next_part_number_marker) {
            (Some(true), Some(next)) if marker.as_deref() != Some(next.as_str()) => {
                marker = Some(next);
            }
            _ => {
                parts.sort_by_key(|part| part.number);
                parts.dedup_by_key(|part| part.number);
                return Ok(Some(parts));
            }
        }
    }
    Err(S3Error::Transient("ListParts did not end after the most pages an upload has".into()))
}

/// Assembles the object from `parts` (in order).
pub async fn complete(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &Key,
    upload_id: &str,
    parts: &[StoredPart],
) -> Result<(), S3Error> {
    let completed: Vec<CompletedPart> = parts
        .iter()
        .map(|part| {
            CompletedPart::builder()
                .part_number(i32::try_from(part.number).unwrap_or(i32::MAX))
                .e_tag(format!("\"{}\"", part.etag))
                .build()
        })
        .collect();
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key.as_str())
        .upload_id(upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
        .send()
        .await
        .map_err(|e| classify("CompleteMultipartUpload", e))?;
    Ok(())
}

/// Drops an upload and its parts (an upload already gone is fine).
pub async fn abort(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &Key,
    upload_id: &str,
) -> Result<(), S3Error> {
    match s3
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key.as_str())
        .upload_id(upload_id)
        .send()
        .await
        .map_err(|e| classify("AbortMultipartUpload", e))
    {
        Ok(_) | Err(S3Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_source_exactly_within_s3_limits() {
        const MIB: u64 = 1 << 20;
        for (length, preferred) in [
            (1, 64 * MIB),
            (5 * MIB, 5 * MIB),
            (12 * MIB + 7, 5 * MIB),
            (100 * MIB, 64 * MIB),
            (SINGLE_PUT_MAX_BYTES + 1, 64 * MIB),
            (200 << 30, 64 * MIB),
            (4 << 40, 64 * MIB),
            (10 * MIB, 1),
        ] {
            let plan = PartPlan::new(length, preferred);
            assert!((MIN_PART_BYTES..=MAX_PART_BYTES).contains(&plan.part_size), "{plan:?}");
            assert!(u64::from(plan.count()) <= MAX_PARTS, "{plan:?}");
            let mut covered = 0;
            for n in 1..=plan.count() {
                let (start, end) = plan.range_of(n).unwrap();
                assert_eq!(start, covered, "{plan:?} part {n}");
                assert!(end > start);
                if n < plan.count() {
                    assert_eq!(end - start, plan.part_size);
                }
                covered = end;
            }
            assert_eq!(covered, length, "{plan:?}");
            assert_eq!(plan.size_of(0), None);
            assert_eq!(plan.size_of(plan.count() + 1), None);
        }
        assert_eq!(PartPlan::new(12 * MIB, 5 * MIB).count(), 3);
    }
}
