//! A second, independent S3 implementation for tests: `moto` in server mode (the Python
//! package `moto[server]`, installed into `.tools/venv` by the set-up), on a free loopback
//! port, with one bucket.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::ChildProcess;

#[derive(Debug)]
pub struct MotoServer {
    _process: ChildProcess,
    addr: SocketAddr,
    bucket: String,
}

impl MotoServer {
    /// Starts moto and creates `bucket` (moto takes any credentials).
    pub fn start(bucket: &str) -> MotoServer {
        let port = crate::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let program = crate::workspace_root().join(".tools/venv/bin/moto_server");
        let process = ChildProcess::spawn(
            "moto_server",
            Command::new(program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("moto_server starts (run scripts/setup.sh)");
        crate::eventually(Duration::from_secs(30), || {
            crate::http_get(addr, "/moto-api/").map_err(|e| e.to_string())
        });
        // CreateBucket: moto accepts an unsigned request.
        let created = crate::http::request(addr, "PUT", &format!("/{bucket}"), b"");
        assert!(matches!(created, Ok(200)), "create bucket: {created:?}");
        MotoServer { _process: process, addr, bucket: bucket.to_owned() }
    }

    /// `TCODER__S3__*` settings that point a service at this server.
    pub fn service_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TCODER__S3__ENDPOINT", format!("http://{}", self.addr)),
            ("TCODER__S3__BUCKET", self.bucket.clone()),
            ("TCODER__S3__REGION", "us-east-1".to_owned()),
            ("TCODER__S3__FORCE_PATH_STYLE", "true".to_owned()),
            ("TCODER__S3__ACCESS_KEY_ID", "moto".to_owned()),
            ("TCODER__S3__SECRET_ACCESS_KEY", "moto-secret".to_owned()),
        ]
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
