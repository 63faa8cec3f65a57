//! A TCP chaos proxy for fault tests: put it between a service and NATS or Redis, then switch
//! between passing traffic, dropping connections and blackholing them.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChaosMode {
    /// Forward everything.
    Pass,
    /// Close every open connection and every new one at once (like a crashed peer).
    Drop,
    /// Keep connections open but forward nothing (like a network partition): bytes wait in
    /// the kernel's buffers and flow again when the mode returns to `Pass`, as they would
    /// when a partition heals before TCP gives up.
    Blackhole,
}

/// A running proxy from [`ChaosProxy::addr`] to an upstream address.
#[derive(Debug)]
pub struct ChaosProxy {
    addr: SocketAddr,
    mode: watch::Sender<ChaosMode>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ChaosProxy {
    /// Starts a proxy on a free loopback port, in `Pass` mode.
    pub fn start(upstream: SocketAddr) -> ChaosProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy port");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let (mode, mode_rx) = watch::channel(ChaosMode::Pass);
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("testkit-chaos".into())
            .spawn(move || run(listener, upstream, mode_rx, stopped))
            .expect("spawn proxy thread");
        ChaosProxy { addr, mode, stop: Some(stop), thread: Some(thread) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_mode(&self, mode: ChaosMode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> ChaosMode {
        *self.mode.borrow()
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.mode.send_replace(ChaosMode::Drop);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    listener: std::net::TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<ChaosMode>,
    mut stopped: oneshot::Receiver<()>,
) {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("proxy runtime");
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        loop {
            let client = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((client, _)) => client,
                    Err(_) => continue,
                },
                _ = &mut stopped => break,
            };
            tokio::spawn(connection(client, upstream, mode.clone()));
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
}

async fn connection(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<ChaosMode>) {
    // A new connection during a blackhole hangs until the partition heals (or drops).
    if wait_while_blackholed(&mut mode).await == ChaosMode::Drop {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = pump(client_read, server_write, mode.clone()) => {}
        _ = pump(server_read, client_write, mode.clone()) => {}
        _ = mode.wait_for(|m| *m == ChaosMode::Drop) => {}
    }
}

/// Waits until the mode is not `Blackhole`; returns the mode then.
async fn wait_while_blackholed(mode: &mut watch::Receiver<ChaosMode>) -> ChaosMode {
    match mode.wait_for(|m| *m != ChaosMode::Blackhole).await {
        Ok(m) => *m,
        Err(_) => ChaosMode::Drop,
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<ChaosMode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if wait_while_blackholed(&mut mode).await == ChaosMode::Drop {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            // Re-check the mode (e.g. a blackhole started while we waited for bytes).
            _ = mode.changed() => continue,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if wait_while_blackholed(&mut mode).await == ChaosMode::Drop {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
