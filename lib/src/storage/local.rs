//! The embedded S3-compatible object store for the single-host stack: `s3s` (the S3 protocol,
//! with real SigV4 checking, so presigned URLs behave as on R2) over `s3s-fs` (one file per
//! object under a data folder). It runs inside ingest, so one host needs no cloud account and
//! no extra binary.

use std::net::SocketAddr;
use std::path::Path;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    ) -> std::io::Result<LocalStore> {
        let root = absolute(&config.data_dir)?;
        tokio::fs::create_dir_all(root.join(bucket)).await?;
        let fs = s3s_fs::FileSystem::new(&root).map_err(|e| {
            std::io::Error::other(format!("local store at {}: {e:?}", root.display()))
        })?;
        let mut builder = S3ServiceBuilder::new(fs);
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
