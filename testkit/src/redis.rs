//! A real redis-server on a free loopback port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{ChildProcess, eventually, free_port, tool_path};

/// A running redis-server. Stopped (by pid) on drop.
#[derive(Debug)]
pub struct RedisServer {
    process: ChildProcess,
    port: u16,
    persistent: bool,
    /// More redis-server arguments (e.g. `--replicaof`), kept for restarts.
    extra_args: Vec<String>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts redis-server without persistence (`--save "" --appendonly no`).
    pub fn start() -> RedisServer {
        Self::start_with(false)
    }

    /// Starts redis-server with AOF `appendfsync always`, so [`RedisServer::restart`] keeps data.
    pub fn start_persistent() -> RedisServer {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> RedisServer {
        Self::start_with_args(persistent, &[])
    }

    /// Starts redis-server with more arguments (`["--replicaof", "127.0.0.1 6379"]`).
    pub fn start_with_args(persistent: bool, extra_args: &[&str]) -> RedisServer {
        let dir = tempfile::Builder::new().prefix("tcoder-redis-").tempdir().expect("temp dir");
        let extra_args: Vec<String> = extra_args.iter().map(|a| (*a).to_owned()).collect();
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            match Self::spawn(&dir, port, persistent, &extra_args) {
                Ok(process) => return RedisServer { process, port, persistent, extra_args, dir },
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    fn spawn(
        dir: &TempDir,
        port: u16,
        persistent: bool,
        extra_args: &[String],
    ) -> Result<ChildProcess, String> {
        let mut command = Command::new(tool_path("redis-server", "TCODER_REDIS_SERVER"));
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
            .arg("--dir")
            .arg(dir.path())
            .args(["--appendonly", if persistent { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut process =
            ChildProcess::spawn("redis-server", &mut command).map_err(|e| e.to_string())?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Some(status) = process.try_status() {
                return Err(format!("exited with {status}"));
            }
            if ping(addr).is_ok() {
                return Ok(process);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("no PONG within 10s".to_owned())
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Kills the server (SIGKILL) and starts it again on the same port (and, when persistent,
    /// the same data).
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Kills the server (SIGKILL): clients meet refused connections until
    /// [`RedisServer::start_again`].
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts a killed server again on the same port (and, when persistent, the same data).
    pub fn start_again(&mut self) {
        let process = eventually(Duration::from_secs(20), || {
            Self::spawn(&self.dir, self.port, self.persistent, &self.extra_args)
        });
        self.process = process;
    }

    /// As [`RedisServer::start_again`], with these extra arguments from now on (what a
    /// node's rewritten configuration file would hold, e.g. `--replicaof`).
    pub fn start_again_with_args(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|a| (*a).to_owned()).collect();
        self.start_again();
    }

    /// Sends a signal (e.g. `libc::SIGSTOP` / `libc::SIGCONT`) to the server.
    pub fn signal(&self, signal: i32) {
        self.process.signal(signal);
    }
}

pub(crate) fn ping(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf)?;
    if &buf == b"+PONG\r\n" { Ok(()) } else { Err(std::io::Error::other("unexpected reply")) }
}
