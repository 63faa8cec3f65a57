//! A real nats-server with JetStream, on free loopback ports, with its store in a temp dir.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{ChildProcess, eventually, free_port, http_get, tool_path};

/// A running nats-server. Stopped (by pid) on drop; its store dir is removed then.
#[derive(Debug)]
pub struct NatsServer {
    process: ChildProcess,
    port: u16,
    monitor_port: u16,
    dir: TempDir,
    /// Configuration beyond the single-node defaults (a cluster node's name and routes).
    extra: String,
}

impl NatsServer {
    /// Starts nats-server (`.tools/bin/nats-server` or `$TCODER_NATS_SERVER`) with JetStream and
    /// `sync_interval: always`, and waits (bounded) until JetStream answers health checks.
    pub fn start() -> NatsServer {
        let dir = tempfile::Builder::new().prefix("tcoder-nats-").tempdir().expect("temp dir");
        let mut last_error = String::new();
        for _ in 0..5 {
            let (port, monitor_port) = (free_port(), free_port());
            match Self::spawn(&dir, port, monitor_port, "") {
                Ok(process) => {
                    return NatsServer { process, port, monitor_port, dir, extra: String::new() };
                }
                Err(e) => last_error = e,
            }
        }
        panic!("nats-server did not start: {last_error}");
    }

    /// Starts `nodes` nats-servers clustered over loopback routes (JetStream on each), and
    /// waits until every node reports JetStream healthy with a meta leader.
    pub fn cluster(nodes: usize) -> Vec<NatsServer> {
        let routes: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
        let list = routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let servers: Vec<NatsServer> = routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                let dir = tempfile::Builder::new().prefix("tcoder-nats-").tempdir().expect("temp dir");
                let extra = format!(
                    "server_name: n{i}\ncluster {{\n  name: tcoder-test\n  listen: 127.0.0.1:{route}\n  routes: [{list}]\n}}\n"
                );
                let (port, monitor_port) = (free_port(), free_port());
                let process = Self::spawn(&dir, port, monitor_port, &extra)
                    .unwrap_or_else(|e| panic!("cluster node {i}: {e}"));
                NatsServer { process, port, monitor_port, dir, extra }
            })
            .collect();
        for server in &servers {
            eventually(Duration::from_secs(30), || {
                match http_get(server.monitor_addr(), "/healthz") {
                    Ok((200, _)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            });
        }
        servers
    }

    fn spawn(
        dir: &TempDir,
        port: u16,
        monitor_port: u16,
        extra: &str,
    ) -> Result<ChildProcess, String> {
        let store = dir.path().join("jetstream");
        let conf = dir.path().join("nats-server.conf");
        let text = format!(
            "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\n\
             jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n{extra}",
            store.display()
        );
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("nats-server.log")).map_err(|e| e.to_string())?;
        let mut process = ChildProcess::spawn(
            "nats-server",
            Command::new(tool_path("nats-server", "TCODER_NATS_SERVER"))
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(log),
        )
        .map_err(|e| e.to_string())?;
        let monitor = SocketAddr::from(([127, 0, 0, 1], monitor_port));
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Some(status) = process.try_status() {
                let log =
                    std::fs::read_to_string(dir.path().join("nats-server.log")).unwrap_or_default();
                return Err(format!("exited with {status}: {log}"));
            }
            if matches!(http_get(monitor, "/healthz?js-enabled-only=true"), Ok((200, _))) {
                return Ok(process);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("not healthy within 15s".to_owned())
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The HTTP monitoring endpoint (`/varz`, `/jsz`, `/healthz`).
    pub fn monitor_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.monitor_port))
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Kills the server (SIGKILL) and starts it again on the same ports and store.
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Kills the server (SIGKILL); `start_again` brings it back.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same ports, store and configuration.
    pub fn start_again(&mut self) {
        let process = eventually(Duration::from_secs(20), || {
            Self::spawn(&self.dir, self.port, self.monitor_port, &self.extra)
        });
        self.process = process;
    }

    /// Sends a signal (e.g. `libc::SIGSTOP` / `libc::SIGCONT`) to the server.
    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }
}
