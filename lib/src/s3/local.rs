//! The embedded S3-compatible object store for the single-host stack: `s3s` (the S3 protocol,
//! with real SigV4 checking, so presigned URLs behave as on R2) over `s3s-fs` (one file per
//! object under a data folder). It runs inside ingest, so one host needs no cloud account and
//! no extra binary, and it reports every created object (PutObject, CompleteMultipartUpload;
//! copies are refused) on a channel: the embedded equivalent of an R2 event notification.
//!
//! Delivery works out of the box: objects under `outputs/` can be read (GET, HEAD, byte
//! ranges) without credentials, as from an R2 bucket with a public custom domain, so players,
//! browsers and `curl` can use the result URLs; everything else (uploads, listings, writes)
//! needs a signature. CORS preflights are answered for the configured origins.

use std::net::SocketAddr;
use std::path::Path;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3, S3Request, S3Response, S3Result};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ObjectCreated;
use crate::config::LocalStoreConfig;
use crate::cors::Cors;

/// A bound (not yet serving) local object store.
#[derive(Debug)]
pub struct LocalStore {
    listener: TcpListener,
    service: S3Service,
    cors: Cors,
}

/// Who may do what: signed requests anything but copies and oversized uploads; unsigned ones
/// only read objects under `public_prefix` (when set).
struct Access {
    public_prefix: Option<super::KeyPrefix>,
    /// `uploads/`, where an upload's size is checked.
    uploads: super::KeyPrefix,
    /// Largest object accepted under `uploads/` (a presigned URL names no length when the job
    /// declared none): refused from its `Content-Length` before a byte is written.
    max_upload_bytes: u64,
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        // tcoder never copies objects: a copy could read another tenant's upload or outputs
        // into one's own key (a presigned PUT plus an unsigned `x-amz-copy-source` header).
        if matches!(cx.s3_op().name(), "CopyObject" | "UploadPartCopy") {
            return Err(s3s::s3_error!(AccessDenied, "copying objects is not allowed"));
        }
        // Every decision below is made on the canonical key, and only a canonical key reaches
        // the file system: `outputs/x/../../uploads/…` would pass a prefix test on the raw
        // string and be served from `uploads/` (the folder walk resolves `..`).
        let key = match cx.s3_path().get_object_key() {
            Some(raw) => Some(
                super::Key::parse(raw)
                    .map_err(|e| s3s::s3_error!(AccessDenied, "the key is not canonical: {e}"))?,
            ),
            None => None,
        };
        if let Some(prefix) = listing_prefix(cx.uri()) {
            // A listing's prefix may end mid-name (`uploads/a/cl`), so it is checked as the
            // start of some key: with any name after it, it must be canonical.
            super::Key::parse(&format!("{prefix}x")).map_err(|e| {
                s3s::s3_error!(AccessDenied, "the listing prefix is not canonical: {e}")
            })?;
        }
        let upload = key.as_ref().is_some_and(|k| k.is_in(&self.uploads));
        // As on R2 and S3: one PUT carries at most 5 GiB, one part too; a larger source comes
        // in parts (and its total is checked when ingest completes it).
        let most = match cx.s3_op().name() {
            "PutObject" => self.max_upload_bytes.min(super::multipart::SINGLE_PUT_MAX_BYTES),
            "UploadPart" => self.max_upload_bytes.min(super::multipart::MAX_PART_BYTES),
            _ => u64::MAX,
        };
        if upload && most < u64::MAX {
            let length = ["x-amz-decoded-content-length", "content-length"]
                .iter()
                .find_map(|name| cx.headers().get(*name)?.to_str().ok()?.parse::<u64>().ok());
            match length {
                None => {
                    return Err(s3s::s3_error!(MissingContentLength, "an upload needs its length"));
                }
                Some(n) if n > most => {
                    return Err(s3s::s3_error!(
                        EntityTooLarge,
                        "one request uploads at most {most} bytes"
                    ));
                }
                Some(_) => {}
            }
        }
        if cx.credentials().is_some() {
            return Ok(());
        }
        let reading = matches!(cx.s3_op().name(), "GetObject" | "HeadObject");
        let public = match (&self.public_prefix, &key) {
            (Some(prefix), Some(key)) => key.is_in(prefix),
            _ => false,
        };
        if reading && public {
            Ok(())
        } else {
            Err(s3s::s3_error!(AccessDenied, "Signature is required"))
        }
    }
}

impl LocalStore {
    /// Creates the data folder and `bucket` in it, and binds `config.bind`. Requests must be
    /// signed with `access_key_id` / `secret_access_key`, except reads of `outputs/` when
    /// `config.public_outputs`; uploads are at most `max_upload_bytes`.
    pub async fn bind(
        config: &LocalStoreConfig,
        bucket: &str,
        access_key_id: &str,
        secret_access_key: &str,
        max_upload_bytes: u64,
        notify: Option<mpsc::Sender<ObjectCreated>>,
        cors: Cors,
    ) -> std::io::Result<LocalStore> {
        let root = absolute(&config.data_dir)?;
        tokio::fs::create_dir_all(root.join(bucket)).await?;
        let fs = s3s_fs::FileSystem::new(&root).map_err(|e| {
            std::io::Error::other(format!("local store at {}: {e:?}", root.display()))
        })?;
        let mut builder =
            S3ServiceBuilder::new(NotifyingStore { inner: fs, root: root.clone(), notify });
        builder.set_auth(SimpleAuth::from_single(access_key_id, secret_access_key));
        builder.set_access(Access {
            public_prefix: config.public_outputs.then(super::keys::outputs),
            uploads: super::keys::uploads(),
            max_upload_bytes,
        });
        let listener = TcpListener::bind(config.bind).await?;
        Ok(LocalStore { listener, service: builder.build(), cors })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves within `limits` until `stop` is cancelled, then lets open requests finish.
    pub async fn serve(
        self,
        limits: crate::http_serve::Limits,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        let (service, cors) = (self.service, self.cors);
        let with_cors = hyper::service::service_fn(move |request| {
            let (service, cors) = (service.clone(), cors.clone());
            async move { with_cors(&service, &cors, request).await }
        });
        crate::http_serve::serve(self.listener, with_cors, limits, stop).await
    }
}

/// Answers CORS preflights itself; passes everything else to the S3 service and adds the CORS
/// headers to its answer.
async fn with_cors(
    service: &S3Service,
    cors: &Cors,
    request: hyper::Request<crate::http_serve::IdleBody<hyper::body::Incoming>>,
) -> Result<hyper::Response<s3s::Body>, s3s::HttpError> {
    if Cors::is_preflight(request.method(), request.headers()) {
        let mut response = hyper::Response::new(s3s::Body::empty());
        *response.status_mut() = hyper::StatusCode::NO_CONTENT;
        response.headers_mut().extend(cors.preflight_headers(request.headers()));
        return Ok(response);
    }
    if let Some(header) = unsigned_amz_header(&request) {
        let mut response = hyper::Response::new(s3s::Body::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>{header} is not signed by this URL</Message></Error>"
        )));
        *response.status_mut() = hyper::StatusCode::FORBIDDEN;
        cors.decorate(request.headers(), response.headers_mut());
        return Ok(response);
    }
    let asked = request.headers().clone();
    let mut response = service.call(request.map(s3s::Body::http_body_unsync)).await?;
    cors.decorate(&asked, response.headers_mut());
    Ok(response)
}

/// A presigned URL (query-string SigV4) signs only the headers it lists in
/// `X-Amz-SignedHeaders`; an `x-amz-*` header outside that list would change what the request
/// does (a copy source, a storage class, metadata) without the signer's consent. Returns the
/// first such header.
fn unsigned_amz_header<B>(request: &hyper::Request<B>) -> Option<String> {
    let query = request.uri().query()?;
    let mut presigned = false;
    let mut signed: Vec<String> = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name.eq_ignore_ascii_case("X-Amz-Signature") {
            presigned = true;
        } else if name.eq_ignore_ascii_case("X-Amz-SignedHeaders") {
            let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
            signed = value.split(';').map(str::to_ascii_lowercase).collect();
        }
    }
    if !presigned {
        return None;
    }
    request
        .headers()
        .keys()
        .map(|name| name.as_str())
        .filter(|name| name.starts_with("x-amz-"))
        .find(|name| !signed.iter().any(|s| s == name))
        .map(str::to_owned)
}

/// The `prefix` of a listing request (decoded), if it names one.
fn listing_prefix(uri: &hyper::Uri) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(name, value)| name == "prefix" && !value.is_empty())
        .map(|(_, value)| value.into_owned())
}

fn absolute(path: &Path) -> std::io::Result<std::path::PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

/// s3s-fs plus creation notifications. Everything else is delegated unchanged.
struct NotifyingStore {
    inner: s3s_fs::FileSystem,
    /// The data folder: bucket `b`'s object `k` is the file `root/b/k`.
    root: std::path::PathBuf,
    notify: Option<mpsc::Sender<ObjectCreated>>,
}

impl NotifyingStore {
    /// Removes the folders a deleted object leaves empty, deepest first, up to (not
    /// including) the key's top folder (`outputs/`, `uploads/`): s3s-fs keeps them, and every
    /// listing walked a finished job's empty folder tree. `remove_dir` refuses a folder that is
    /// not empty, which is where pruning stops.
    async fn prune_empty_folders(&self, bucket: &str, key: &str) {
        let parts: Vec<&str> = key.split('/').collect();
        if !plain(bucket) || !parts.iter().copied().all(plain) {
            return;
        }
        let top = self.root.join(bucket).join(parts[0]);
        let mut folder = self.root.join(bucket).join(key);
        while let Some(parent) = folder.parent() {
            if parent == top || !parent.starts_with(&top) {
                break;
            }
            if tokio::fs::remove_dir(parent).await.is_err() {
                break;
            }
            folder = parent.to_path_buf();
        }
    }

    /// A key that names a folder of the store (`outputs/<tenant>/<job>/1/hls`) is no object:
    /// s3s-fs opens the folder and fails reading it, a 500 logged as an error for what is an
    /// anonymous reader's typo. Answered `NoSuchKey`, as S3 answers a prefix.
    fn not_a_folder(&self, bucket: &str, key: &str) -> S3Result<()> {
        let parts_plain = plain(bucket) && key.split('/').all(plain);
        if parts_plain && self.root.join(bucket).join(key).is_dir() {
            return Err(s3s::s3_error!(NoSuchKey, "no such key"));
        }
        Ok(())
    }

    /// Reports a created object. Waits for room on the channel (back-pressure rather than a
    /// lost event); if ingest is shutting down and the receiver is gone, the periodic sweep
    /// finds the object instead.
    async fn created(&self, bucket: &str, key: &str) {
        // Like an R2 notification rule excluding `outputs/`: renditions are not sources. The
        // bridge decides about the rest (a job's upload, a watch folder, or nothing).
        if key.starts_with(super::keys::OUTPUTS_PREFIX) {
            return;
        }
        if let Some(notify) = &self.notify {
            let event = ObjectCreated::new(bucket, key);
            if notify.send(event).await.is_err() {
                tracing::warn!(
                    bucket,
                    key,
                    "object created but nobody is listening; the sweep will pick it up"
                );
            }
        }
    }
}

/// Delegates S3 operations to the inner store, in `async_trait`'s desugared form (a macro
/// cannot emit `async fn` into an `#[async_trait]` impl).
macro_rules! delegate {
    ($($op:ident: $input:ident => $output:ident;)*) => {
        $(
            fn $op<'s, 'f>(
                &'s self,
                req: S3Request<$input>,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = S3Result<S3Response<$output>>> + Send + 'f>>
            where
                's: 'f,
                Self: 'f,
            {
                self.inner.$op(req)
            }
        )*
    };
}

#[async_trait::async_trait]
impl S3 for NotifyingStore {
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.inner.put_object(req).await?;
        self.created(&bucket, &key).await;
        Ok(response)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.inner.complete_multipart_upload(req).await?;
        self.created(&bucket, &key).await;
        Ok(response)
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.inner.delete_object(req).await?;
        self.prune_empty_folders(&bucket, &key).await;
        Ok(response)
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bucket = req.input.bucket.clone();
        let keys: Vec<String> =
            req.input.delete.objects.iter().map(|object| object.key.clone()).collect();
        let response = self.inner.delete_objects(req).await?;
        for key in &keys {
            self.prune_empty_folders(&bucket, key).await;
        }
        Ok(response)
    }

    /// s3s-fs walks the whole bucket for every listing and filters by prefix afterwards: on
    /// a bucket that keeps every job's outputs, each listing (ingest's sweep of `uploads/`, a
    /// commit removing a split title's parts) read every file ever stored. Without a
    /// delimiter only the folder the prefix names can hold a match: walk that one.
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = &req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let folder = &prefix[..prefix.rfind('/').map_or(0, |end| end + 1)];
        let bucket = self.root.join(&input.bucket);
        // Anything unusual (a delimiter, a path-like prefix, no such bucket) takes s3s-fs's
        // own way, which answers it correctly if slowly.
        if input.delimiter.is_some()
            || !plain(&input.bucket)
            || prefix.starts_with('/')
            || !folder.strip_suffix('/').is_none_or(|folders| folders.split('/').all(plain))
            || !bucket.is_dir()
        {
            return self.inner.list_objects_v2(req).await;
        }
        let mut found = objects_under(&bucket, &bucket.join(folder), &prefix)
            .await
            .map_err(|e| s3s::s3_error!(InternalError, "listing {prefix}: {e}"))?;
        found.sort_by(|a, b| a.key.cmp(&b.key));
        let after = match (input.continuation_token.as_deref(), input.start_after.as_deref()) {
            (Some(token), Some(start)) => Some(token.max(start)),
            (token, start) => token.or(start),
        };
        if let Some(after) = after {
            found.retain(|object| object.key.as_deref().is_some_and(|key| key > after));
        }
        let max_keys = input.max_keys.unwrap_or(1000).clamp(0, 1000);
        let page = usize::try_from(max_keys).unwrap_or(0);
        let is_truncated = found.len() > page;
        found.truncate(page);
        let next_continuation_token =
            if is_truncated { found.last().and_then(|object| object.key.clone()) } else { None };
        let output = ListObjectsV2Output {
            name: Some(input.bucket.clone()),
            prefix: input.prefix.clone(),
            max_keys: Some(max_keys),
            key_count: Some(i32::try_from(found.len()).unwrap_or(i32::MAX)),
            continuation_token: input.continuation_token.clone(),
            start_after: input.start_after.clone(),
            is_truncated: Some(is_truncated),
            next_continuation_token,
            contents: Some(found),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.not_a_folder(&req.input.bucket, &req.input.key)?;
        self.inner.get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.not_a_folder(&req.input.bucket, &req.input.key)?;
        self.inner.head_object(req).await
    }

    /// s3s-fs lists a multipart upload's parts without their `ETag`s and in no order; S3 and R2
    /// give both, and completing an upload from its listing (as ingest does) needs them. The
    /// `ETag` of a part is the MD5 of its bytes, as S3's is.
    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let upload_id = uuid::Uuid::parse_str(&req.input.upload_id)
            .map_err(|_| s3s::s3_error!(NoSuchUpload, "no such upload"))?;
        let mut response = self.inner.list_parts(req).await?;
        let parts = response.output.parts.get_or_insert_with(Vec::new);
        parts.sort_by_key(|part| part.part_number);
        for part in parts.iter_mut() {
            let Some(number) = part.part_number else { continue };
            let path = self.root.join(format!(".upload_id-{upload_id}.part-{number}"));
            let digest = md5_of(&path)
                .await
                .map_err(|e| s3s::s3_error!(InternalError, "reading part {number}: {e}"))?;
            part.e_tag = Some(ETag::Strong(digest));
        }
        Ok(response)
    }

    delegate! {
        create_bucket: CreateBucketInput => CreateBucketOutput;
        delete_bucket: DeleteBucketInput => DeleteBucketOutput;
        get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput;
        head_bucket: HeadBucketInput => HeadBucketOutput;
        list_buckets: ListBucketsInput => ListBucketsOutput;
        list_objects: ListObjectsInput => ListObjectsOutput;
        create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput;
        upload_part: UploadPartInput => UploadPartOutput;
        abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput;
    }
}

/// The hex MD5 of a file's bytes, read in 1 MiB pieces.
async fn md5_of(path: &Path) -> std::io::Result<String> {
    use md5::Digest as _;
    use tokio::io::AsyncReadExt as _;
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = md5::Md5::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..read]);
    }
}

/// A path part the store may join as is: not empty, no `.`/`..`, no backslash.
fn plain(part: &str) -> bool {
    !matches!(part, "" | "." | "..") && !part.contains('\\')
}

/// Every file under `folder` (inside `bucket`) whose key starts with `prefix`, as listed
/// objects. The walk is bounded by the files there; a folder that does not exist holds none.
async fn objects_under(bucket: &Path, folder: &Path, prefix: &str) -> std::io::Result<Vec<Object>> {
    let mut found = Vec::new();
    let mut folders = vec![folder.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let mut entries = match tokio::fs::read_dir(&folder).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            if entry.file_type().await?.is_dir() {
                folders.push(path);
                continue;
            }
            let Ok(relative) = path.strip_prefix(bucket) else { continue };
            let Some(key) = relative.to_str().map(|k| k.replace(std::path::MAIN_SEPARATOR, "/"))
            else {
                continue;
            };
            if !key.starts_with(prefix) {
                continue;
            }
            let metadata = entry.metadata().await?;
            found.push(Object {
                key: Some(key),
                size: Some(i64::try_from(metadata.len()).unwrap_or(i64::MAX)),
                last_modified: metadata.modified().ok().map(Timestamp::from),
                ..Default::default()
            });
        }
    }
    Ok(found)
}
