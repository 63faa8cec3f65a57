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

/// Objects at least this large are downloaded in ranges, several at once: one connection to a
/// store (R2, S3, the embedded one) carries far less than the machine can take, and a source
/// is what a job waits for before anything plays.
pub const RANGED_THRESHOLD: u64 = 64 * 1024 * 1024;
/// Bytes of each range request.
const RANGE_BYTES: u64 = 16 * 1024 * 1024;
/// Range requests in flight at once.
const PARALLEL_RANGES: usize = 4;
/// What a range request holds in memory before writing it to its place in the file.
const WRITE_BUFFER: usize = 1024 * 1024;

/// Downloads `bucket/key`, of `size` bytes, to `path`: in ranges fetched [`PARALLEL_RANGES`] at a
/// time when it is at least [`RANGED_THRESHOLD`] bytes, each written at its offset (memory is
/// a buffer per range in flight, whatever the size); streamed whole otherwise. Returns the
/// bytes written.
pub async fn download_sized(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &Key,
    path: &Path,
    size: u64,
) -> Result<u64, S3Error> {
    use futures_util::{StreamExt as _, TryStreamExt as _};
    if size < RANGED_THRESHOLD {
        return download(s3, bucket, key, path).await;
    }
    let file = std::fs::File::create(path)
        .and_then(|file| file.set_len(size).map(|()| file))
        .map_err(|e| disk(&format!("create {}", path.display()), &e))?;
    let file = std::sync::Arc::new(file);
    let ranges = (0..size.div_ceil(RANGE_BYTES))
        .map(|n| (n * RANGE_BYTES, ((n + 1) * RANGE_BYTES).min(size)));
    let written: Vec<u64> = futures_util::stream::iter(ranges)
        .map(|(start, end)| {
            download_range(s3, bucket, key, (file.clone(), path), start, end, &|_, _| {})
        })
        .buffer_unordered(PARALLEL_RANGES)
        .try_collect()
        .await?;
    Ok(written.into_iter().sum())
}

/// Bytes `[start, end)` of `bucket/key`, written at their place in `file`; `written(start,
/// upto)` is told as each buffer lands (`[start, upto)` is on disk).
async fn download_range(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &Key,
    (file, path): (std::sync::Arc<std::fs::File>, &Path),
    start: u64,
    end: u64,
    written: &(dyn Fn(u64, u64) + Sync),
) -> Result<u64, S3Error> {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key.as_str())
        .range(format!("bytes={start}-{}", end - 1))
        .send()
        .await
        .map_err(|e| sdk("GetObject", e))?;
    let mut body = object.body;
    let (mut at, mut buffer) = (start, Vec::with_capacity(WRITE_BUFFER));
    loop {
        let chunk = body
            .try_next()
            .await
            .map_err(|e| S3Error::Transient(format!("download {key}: {e}")))?;
        if let Some(chunk) = &chunk {
            buffer.extend_from_slice(chunk);
        }
        if buffer.len() >= WRITE_BUFFER || (chunk.is_none() && !buffer.is_empty()) {
            if at + buffer.len() as u64 > end {
                return Err(S3Error::Transient(format!("download {key}: a range ran long")));
            }
            let (file, offset) = (file.clone(), at);
            let full = std::mem::replace(&mut buffer, Vec::with_capacity(WRITE_BUFFER));
            at += full.len() as u64;
            tokio::task::spawn_blocking(move || {
                std::os::unix::fs::FileExt::write_all_at(&*file, &full, offset)
            })
            .await
            .map_err(|e| S3Error::Transient(format!("download {key}: {e}")))?
            .map_err(|e| disk(&format!("write {}", path.display()), &e))?;
            written(start, at);
        }
        if chunk.is_none() {
            break;
        }
    }
    if at != end {
        return Err(S3Error::Transient(format!(
            "download {key}: a range ended at {at}, not {end}"
        )));
    }
    Ok(end - start)
}

/// Bytes of each range of a download read while it arrives: small, so that the first bytes
/// (and the end) land within moments.
const ARRIVING_RANGE_BYTES: u64 = 4 * 1024 * 1024;

/// Downloads `bucket/key`, of `size` bytes, to `path` for a reader that starts before it
/// ends: in ranges, [`PARALLEL_RANGES`] at a time, the first, then the last few (an MP4's
/// index often sits at the end), then the rest in order. `arrived(head, tail)` is told
/// whenever what is on disk from the start (`[0, head)`) or up to the end (`[tail, size)`)
/// grew. The file is not truncated first: run again after a failure, it only rewrites the
/// same bytes.
/// Returns the bytes written.
pub async fn download_arriving(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &Key,
    path: &Path,
    size: u64,
    arrived: &(dyn Fn(u64, u64) + Sync),
) -> Result<u64, S3Error> {
    use futures_util::{StreamExt as _, TryStreamExt as _};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .and_then(|file| file.set_len(size).map(|()| file))
        .map_err(|e| disk(&format!("create {}", path.display()), &e))?;
    let file = std::sync::Arc::new(file);
    let ranges = arriving_order(size.div_ceil(ARRIVING_RANGE_BYTES))
        .map(|n| (n * ARRIVING_RANGE_BYTES, ((n + 1) * ARRIVING_RANGE_BYTES).min(size)));
    let progress = std::sync::Mutex::new(Progress::new(size));
    let written = |start: u64, upto: u64| {
        let mut progress = progress.lock().expect("progress lock");
        if let Some((head, tail)) = progress.record(start, upto) {
            arrived(head, tail);
        }
    };
    let written: Vec<u64> = futures_util::stream::iter(ranges)
        .map(|(start, end)| {
            download_range(s3, bucket, key, (file.clone(), path), start, end, &written)
        })
        .buffered(PARALLEL_RANGES)
        .try_collect()
        .await?;
    Ok(written.into_iter().sum())
}

/// Ranges at the end fetched right after the first: an MP4 written without `faststart` keeps
/// its index (`moov`, about 1 MiB per 15 minutes of 1080p30 with audio) there, and nothing
/// plays before it is read. 16 MiB: titles of three hours and more.
const TAIL_RANGES: u64 = 4;

/// Range numbers `0..count` in the order they are fetched: the first, the last
/// [`TAIL_RANGES`] from the end backwards, then the rest in order.
fn arriving_order(count: u64) -> impl Iterator<Item = u64> {
    let tail_start = count.saturating_sub(TAIL_RANGES).max(1);
    (0..count.min(1)).chain((tail_start..count).rev()).chain(1..tail_start)
}

/// What of an arriving download is on disk: each range's bytes written from its start.
#[derive(Debug)]
struct Progress {
    size: u64,
    /// Per range (of [`ARRIVING_RANGE_BYTES`]), the end of what is written.
    upto: Vec<u64>,
    told: (u64, u64),
}

impl Progress {
    fn new(size: u64) -> Progress {
        let count = size.div_ceil(ARRIVING_RANGE_BYTES);
        let upto = (0..count).map(|n| n * ARRIVING_RANGE_BYTES).collect();
        Progress { size, upto, told: (0, size) }
    }

    /// Notes `[start, upto)` written; returns the new `(head, tail)` when either grew.
    fn record(&mut self, start: u64, upto: u64) -> Option<(u64, u64)> {
        let n = usize::try_from(start / ARRIVING_RANGE_BYTES).ok()?;
        let slot = self.upto.get_mut(n)?;
        *slot = (*slot).max(upto);
        let end_of = |n: usize| ((n as u64 + 1) * ARRIVING_RANGE_BYTES).min(self.size);
        let mut head = 0;
        for (n, upto) in self.upto.iter().enumerate() {
            head = *upto;
            if *upto < end_of(n) {
                break;
            }
        }
        let mut tail = self.size;
        for (n, upto) in self.upto.iter().enumerate().rev() {
            if *upto < end_of(n) {
                break;
            }
            tail = n as u64 * ARRIVING_RANGE_BYTES;
        }
        let told = (head.max(self.told.0), tail.min(self.told.1));
        (told != self.told).then(|| {
            self.told = told;
            told
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arriving_download_takes_the_start_then_the_end_then_the_rest() {
        // Each range once.
        let mut all: Vec<u64> = arriving_order(100).collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        let order = |count| arriving_order(count).collect::<Vec<_>>();
        assert_eq!(order(0), Vec::<u64>::new());
        assert_eq!(order(1), [0]);
        assert_eq!(order(2), [0, 1]);
        assert_eq!(order(5), [0, 4, 3, 2, 1]);
        assert_eq!(order(10), [0, 9, 8, 7, 6, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn what_arrived_grows_from_the_start_and_from_the_end_only_over_whole_ranges() {
        let r = ARRIVING_RANGE_BYTES;
        let size = 3 * r + 10;
        let mut progress = Progress::new(size);
        // A partial first range counts; a partial last one does not (the end is whole ranges).
        assert_eq!(progress.record(0, 100), Some((100, size)));
        assert_eq!(progress.record(3 * r, 3 * r + 5), None);
        assert_eq!(progress.record(3 * r, size), Some((100, 3 * r)));
        // The middle ranges finishing before the first do not move the head past it.
        assert_eq!(progress.record(r, 2 * r), None);
        assert_eq!(progress.record(2 * r, 3 * r), Some((100, r)));
        assert_eq!(progress.record(0, r), Some((size, 0)));
    }
}
