//! The HTTP side of the kit's fakes (Cloudflare Queues, Fly Machines, webhook receivers): an
//! axum router served on a free loopback port from its own thread and runtime, so it works
//! under both sync and async tests, until dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

#[derive(Debug)]
pub(crate) struct FakeServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    pub(crate) fn start(name: &str, router: axum::Router) -> FakeServer {
        FakeServer::start_with(name, router, std::future::pending)
    }

    /// As [`FakeServer::start`], with `background` (built on the server's runtime) running
    /// alongside it until it stops.
    pub(crate) fn start_with<F, B>(name: &str, router: axum::Router, background: B) -> FakeServer
    where
        B: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()>,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("bind {name}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let server = axum::serve(listener, router).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                tokio::select! {
                    _ = server => {}
                    () = background() => {}
                }
            });
        });
        FakeServer { addr, stop: Some(stop), thread: Some(thread) }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
