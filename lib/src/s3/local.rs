//! The embedded S3-compatible object store for the single-host stack: `s3s` (the S3 protocol,
//! with real SigV4 checking, so presigned URLs behave as on R2) over `s3s-fs` (one file per
//! object under a data folder). It runs inside ingest, so one host needs no cloud account and
//! no extra binary, and it reports every created object (PutObject, CopyObject,
//! CompleteMultipartUpload) on a channel: the embedded equivalent of an R2 event notification.

use std::net::SocketAddr;
use std::path::Path;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3, S3Request, S3Response, S3Result};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ObjectCreated;
use crate::config::LocalStoreConfig;

/// A bound (not yet serving) local object store.
#[derive(Debug)]
pub struct LocalStore {
    listener: TcpListener,
    service: S3Service,
}

impl LocalStore {
    /// Creates the data folder and `bucket` in it, and binds `config.bind`. Requests must be
    /// signed with `access_key_id` / `secret_access_key`.
    pub async fn bind(
        config: &LocalStoreConfig,
        bucket: &str,
        access_key_id: &str,
        secret_access_key: &str,
        notify: Option<mpsc::Sender<ObjectCreated>>,
    ) -> std::io::Result<LocalStore> {
        let root = absolute(&config.data_dir)?;
        tokio::fs::create_dir_all(root.join(bucket)).await?;
        let fs = s3s_fs::FileSystem::new(&root).map_err(|e| {
            std::io::Error::other(format!("local store at {}: {e:?}", root.display()))
        })?;
        let mut builder = S3ServiceBuilder::new(NotifyingStore { inner: fs, notify });
        builder.set_auth(SimpleAuth::from_single(access_key_id, secret_access_key));
        let listener = TcpListener::bind(config.bind).await?;
        Ok(LocalStore { listener, service: builder.build() })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves until `stop` is cancelled, then lets open requests finish.
    pub async fn serve(self, stop: CancellationToken) -> std::io::Result<()> {
        let http = ConnBuilder::new(TokioExecutor::new());
        let graceful = GracefulShutdown::new();
        loop {
            let socket = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((socket, _)) => socket,
                    Err(e) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "local store: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = stop.cancelled() => break,
            };
            // Small responses (a HEAD, a short GET) must not wait on Nagle + delayed ACK.
            let _ = socket.set_nodelay(true);
            let conn = http.serve_connection(TokioIo::new(socket), self.service.clone());
            let conn = graceful.watch(conn.into_owned());
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        graceful.shutdown().await;
        Ok(())
    }
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
        // Like an R2 notification rule with prefix `uploads/`: outputs are not uploads.
        if !key.starts_with(super::keys::UPLOADS_PREFIX) {
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

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.inner.copy_object(req).await?;
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
        upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput;
        list_parts: ListPartsInput => ListPartsOutput;
        abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput;
    }
}
