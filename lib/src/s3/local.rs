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
    public_prefix: Option<String>,
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
        let key = cx.s3_path().get_object_key().unwrap_or_default();
        if cx.s3_op().name() == "PutObject" && key.starts_with(super::keys::UPLOADS_PREFIX) {
            let length = ["x-amz-decoded-content-length", "content-length"]
                .iter()
                .find_map(|name| cx.headers().get(*name)?.to_str().ok()?.parse::<u64>().ok());
            match length {
                None => {
                    return Err(s3s::s3_error!(MissingContentLength, "an upload needs its length"));
                }
                Some(n) if n > self.max_upload_bytes => {
                    return Err(s3s::s3_error!(
                        EntityTooLarge,
                        "uploads are limited to {} bytes",
                        self.max_upload_bytes
                    ));
                }
                Some(_) => {}
            }
        }
        if cx.credentials().is_some() {
            return Ok(());
        }
        let reading = matches!(cx.s3_op().name(), "GetObject" | "HeadObject");
        let public = match (&self.public_prefix, cx.s3_path().get_object_key()) {
            (Some(prefix), Some(key)) => key.starts_with(prefix.as_str()),
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
        let mut builder = S3ServiceBuilder::new(NotifyingStore { inner: fs, notify });
        builder.set_auth(SimpleAuth::from_single(access_key_id, secret_access_key));
        builder.set_access(Access {
            public_prefix: config.public_outputs.then(|| super::keys::OUTPUTS_PREFIX.to_owned()),
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
    notify: Option<mpsc::Sender<ObjectCreated>>,
}

impl NotifyingStore {
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

    delegate! {
        create_bucket: CreateBucketInput => CreateBucketOutput;
        delete_bucket: DeleteBucketInput => DeleteBucketOutput;
        delete_object: DeleteObjectInput => DeleteObjectOutput;
        delete_objects: DeleteObjectsInput => DeleteObjectsOutput;
        get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput;
        get_object: GetObjectInput => GetObjectOutput;
        head_bucket: HeadBucketInput => HeadBucketOutput;
        head_object: HeadObjectInput => HeadObjectOutput;
        list_buckets: ListBucketsInput => ListBucketsOutput;
        list_objects: ListObjectsInput => ListObjectsOutput;
        list_objects_v2: ListObjectsV2Input => ListObjectsV2Output;
        create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput;
        upload_part: UploadPartInput => UploadPartOutput;
        list_parts: ListPartsInput => ListPartsOutput;
        abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput;
    }
}
