//! Redis with Sentinel on loopback, as docs/OPERATIONS.md sets it up for production: a primary
//! and a replica (both AOF with `appendfsync always`) and three redis-sentinel processes, with
//! short detection times so a failover takes seconds.

use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{ChildProcess, RedisServer, eventually, free_port, tool_path};

/// The name the sentinels monitor the primary under.
const MASTER_NAME: &str = "tcoder";

/// A primary, a replica and three sentinels. Everything is stopped (by pid) on drop.
#[derive(Debug)]
pub struct RedisSentinels {
    /// The data nodes; the first started as primary, the second as its replica.
    pub nodes: Vec<RedisServer>,
    sentinels: Vec<(u16, ChildProcess)>,
    /// The sentinels' configuration files (removed on drop).
    _config_dir: TempDir,
}

impl RedisSentinels {
    /// Starts the nodes and the sentinels and waits until the replica is in sync and every
    /// sentinel sees it and the other two sentinels (before that a failover could not happen).
    pub fn start() -> RedisSentinels {
        // A replica's first sync starts at once (Redis waits 5 s by default, for more replicas).
        let no_delay = ["--repl-diskless-sync-delay", "0"];
        let primary = RedisServer::start_with_args(true, &no_delay);
        let primary_port = primary.addr().port().to_string();
        let replica = RedisServer::start_with_args(
            true,
            &[&no_delay[..], &["--replicaof", "127.0.0.1", &primary_port]].concat(),
        );
        let dir = tempfile::Builder::new().prefix("tcoder-sentinels-").tempdir().expect("dir");
        let sentinels = (0..3)
            .map(|_| {
                let port = free_port();
                (port, spawn_sentinel(&dir, port, &primary_port))
            })
            .collect();
        let group = RedisSentinels { nodes: vec![primary, replica], sentinels, _config_dir: dir };
        group.wait_until_replica(1, Duration::from_secs(30));
        eventually(Duration::from_secs(30), || group.check_ready());
        group
    }

    /// The name the sentinels monitor the primary under (`[redis] sentinel_master`).
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// `host:port` of every sentinel, comma-separated (`[redis] sentinels`).
    pub fn addresses(&self) -> String {
        let addresses: Vec<String> =
            self.sentinels.iter().map(|(port, _)| format!("127.0.0.1:{port}")).collect();
        addresses.join(",")
    }

    /// The port of the node the sentinels name primary (asked of the first that answers).
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|(port, _)| {
            let reply = cli(*port, &["SENTINEL", "get-master-addr-by-name", MASTER_NAME]).ok()?;
            reply.lines().nth(1)?.trim().parse().ok()
        })
    }

    /// The index in [`RedisSentinels::nodes`] of the current primary.
    pub fn primary_index(&self) -> usize {
        let port = self.primary_port().expect("the sentinels name a primary");
        self.nodes.iter().position(|n| n.addr().port() == port).expect("a node of this group")
    }

    /// Waits until every sentinel names a primary other than `old_port` and that node says it
    /// is one: the failover is over.
    pub fn wait_for_failover_from(&self, old_port: u16, within: Duration) -> u16 {
        eventually(within, || {
            let named: Vec<Option<u16>> = self
                .sentinels
                .iter()
                .map(|(port, _)| {
                    let reply =
                        cli(*port, &["SENTINEL", "get-master-addr-by-name", MASTER_NAME]).ok()?;
                    reply.lines().nth(1)?.trim().parse().ok()
                })
                .collect();
            match named.first() {
                Some(Some(new)) if *new != old_port && named.iter().all(|n| n == &Some(*new)) => {
                    let role = cli(*new, &["ROLE"]).map_err(|e| format!("ROLE: {e}"))?;
                    if role.lines().next() == Some("master") {
                        Ok(*new)
                    } else {
                        Err(format!("{new} is not primary yet: {role}"))
                    }
                }
                _ => Err(format!("sentinels name {named:?}")),
            }
        })
    }

    /// Starts a killed `node` again as a replica of the current primary, as it comes back in
    /// production: Sentinel rewrites a node's configuration file (`CONFIG REWRITE`) when it
    /// reconfigures it, and the test nodes have their configuration on the command line.
    pub fn start_again_as_replica(&mut self, node: usize) {
        let primary = self.primary_port().expect("the sentinels name a primary").to_string();
        self.nodes[node].start_again_with_args(&[
            "--repl-diskless-sync-delay",
            "0",
            "--replicaof",
            "127.0.0.1",
            &primary,
        ]);
    }

    /// Waits until `node` replicates from the current primary with its link up (a restarted
    /// old primary is turned into a replica by the sentinels).
    pub fn wait_until_replica(&self, node: usize, within: Duration) {
        let port = self.nodes[node].addr().port();
        eventually(within, || {
            let info = cli(port, &["INFO", "replication"])?;
            if info.contains("role:slave") && info.contains("master_link_status:up") {
                Ok(())
            } else {
                Err(format!("node {node} is not a synced replica yet"))
            }
        });
    }

    fn check_ready(&self) -> Result<(), String> {
        for (port, _) in &self.sentinels {
            let replicas = cli(*port, &["SENTINEL", "replicas", MASTER_NAME])?;
            if !replicas.contains("name") {
                return Err(format!("sentinel {port} sees no replica yet"));
            }
            let quorum = cli(*port, &["SENTINEL", "ckquorum", MASTER_NAME])?;
            if !quorum.contains("3 usable Sentinels") {
                return Err(format!("sentinel {port}: {quorum}"));
            }
        }
        Ok(())
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        // Sentinels first, so none reconfigures a node while the nodes stop.
        for (_, sentinel) in &mut self.sentinels {
            sentinel.kill();
        }
    }
}

/// Short detection and failover times: a primary is down after 1 s without answers.
fn spawn_sentinel(dir: &TempDir, port: u16, primary_port: &str) -> ChildProcess {
    // A sentinel rewrites its configuration file (the state it learns), so each has its own.
    let config = dir.path().join(format!("sentinel-{port}.conf"));
    std::fs::write(
        &config,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = dir.path().display()
        ),
    )
    .expect("write sentinel.conf");
    let mut command = Command::new(tool_path("redis-sentinel", "TCODER_REDIS_SENTINEL"));
    command.arg(&config).stdout(Stdio::null()).stderr(Stdio::null());
    let sentinel = ChildProcess::spawn("redis-sentinel", &mut command).expect("redis-sentinel");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    eventually(Duration::from_secs(10), || {
        crate::redis::ping(addr).map_err(|e| format!("sentinel {port}: {e}"))
    });
    sentinel
}

/// Runs redis-cli against a loopback port; its output, or why not.
fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    let output = Command::new(tool_path("redis-cli", "TCODER_REDIS_CLI"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("redis-cli: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
