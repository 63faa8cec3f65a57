//! An S3 endpoint for tests: s3s (with real SigV4 checks, so presigned URLs are verified as on
//! R2) over s3s-fs in a temp dir — the same libraries as tcoder's embedded store. It runs on
//! its own thread and runtime so it outlives any one test runtime, and stops on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::thread::JoinHandle;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// A running S3 endpoint with one bucket.
#[derive(Debug)]
pub struct S3Server {
    addr: SocketAddr,
    bucket: String,
    dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

const ACCESS_KEY_ID: &str = "testkit-access";
const SECRET_ACCESS_KEY: &str = "testkit-secret";

impl S3Server {
    /// Starts an endpoint with bucket `tcoder-test`.
    pub fn start() -> S3Server {
        Self::start_with_bucket("tcoder-test")
    }

    pub fn start_with_bucket(bucket: &str) -> S3Server {
        let dir = tempfile::Builder::new().prefix("tcoder-s3-").tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join(bucket)).expect("bucket dir");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind S3 port");
        std_listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = std_listener.local_addr().expect("local addr");
        let root = dir.path().to_path_buf();
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("testkit-s3".into())
            .spawn(move || serve(std_listener, &root, stopped))
            .expect("spawn S3 thread");
        S3Server { addr, bucket: bucket.to_owned(), dir, stop: Some(stop), thread: Some(thread) }
    }

    /// `http://127.0.0.1:<port>` (use path-style addressing).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn access_key_id(&self) -> &str {
        ACCESS_KEY_ID
    }

    pub fn secret_access_key(&self) -> &str {
        SECRET_ACCESS_KEY
    }

    /// Where objects are stored: `<data_dir>/<bucket>/<key>`.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: std::net::TcpListener, root: &Path, mut stopped: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("S3 runtime");
    runtime.block_on(async move {
        let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs root");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY_ID, SECRET_ACCESS_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let socket = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => socket,
                    Err(_) => continue,
                },
                _ = &mut stopped => break,
            };
            // As a real S3 endpoint: small responses are not held back by Nagle.
            let _ = socket.set_nodelay(true);
            let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
}
