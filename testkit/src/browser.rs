//! A real browser for tests: Debian's chromium, headless, driven through chromedriver's
//! WebDriver endpoint (both installed by the set-up). Only loopback; one session per
//! `Browser`; the driver process (and its browser) end with it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::ChildProcess;

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

#[derive(Debug)]
pub struct Browser {
    session: String,
    driver_addr: SocketAddr,
    _driver: ChildProcess,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless chromium session.
    pub fn start() -> Browser {
        let port = crate::free_port();
        let driver_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let driver = ChildProcess::spawn(
            "chromedriver",
            Command::new(crate::tool_path("chromedriver", "TCODER_CHROMEDRIVER"))
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("chromedriver starts (run scripts/setup.sh)");
        crate::eventually(Duration::from_secs(20), || {
            TcpStream::connect_timeout(&driver_addr, Duration::from_secs(1))
                .map_err(|e| e.to_string())?;
            match request(driver_addr, "GET", "/status", None) {
                (200, answer) if answer["value"]["ready"] == true => Ok(()),
                (status, answer) => Err(format!("{status} {answer}")),
            }
        });
        let profile = tempfile::tempdir().expect("profile folder");
        let chromium = crate::tool_path("chromium", "TCODER_CHROMIUM");
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Tests may run as root, where chromium's own sandbox cannot start; the
                    // browser only loads the local console.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--mute-audio",
                    "--autoplay-policy=no-user-gesture-required",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let (status, answer) = request(driver_addr, "POST", "/session", Some(&capabilities));
        assert_eq!(status, 200, "new session: {answer}");
        let session = answer["value"]["sessionId"].as_str().expect("a session id").to_owned();
        Browser { session, driver_addr, _driver: driver, _profile: profile }
    }

    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (status, answer) = request(self.driver_addr, method, &path, body);
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }

    pub fn open(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({ "url": url })));
    }

    /// The element `css` selects (the first one).
    pub fn find(&self, css: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            Some(&json!({ "using": "css selector", "value": css })),
        );
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {found}")).to_owned()
    }

    /// Types `text` into the element (for a file input: the file's absolute path).
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.command("POST", &format!("/element/{element}/value"), Some(&json!({ "text": text })));
    }

    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.command("POST", &format!("/element/{element}/click"), Some(&json!({})));
    }

    /// Runs `script` (a function body; `return` a value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.command("POST", "/execute/sync", Some(&json!({ "script": script, "args": [] })))
    }

    /// Waits (bounded) until `script` returns something truthy, and returns it.
    pub fn wait_for(&self, timeout: Duration, script: &str) -> Value {
        crate::eventually(timeout, || {
            let value = self.eval(script);
            let truthy = !matches!(value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy { Ok(value) } else { Err(format!("`{script}` is {value}")) }
        })
    }

    /// Saves a PNG of the page at `path`.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let png = self.command("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .expect("valid base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        std::fs::write(path, bytes).expect("screenshot written");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = request(self.driver_addr, "DELETE", &path, None);
    }
}

/// Where tests keep artifacts a person may want to look at (screenshots): `target/artifacts`.
pub fn artifact_path(name: &str) -> PathBuf {
    crate::workspace_root().join("target/artifacts").join(name)
}

/// One WebDriver request (HTTP/1.1, one connection each); the status and the JSON answer.
fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("chromedriver");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request sent");
    // The driver may keep the connection open: read the head, then exactly its body.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).expect("answer read");
        assert!(n > 0, "chromedriver closed the connection mid-answer");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(length) => {
            while raw.len() < head_end + length {
                let n = stream.read(&mut buf).expect("answer read");
                assert!(n > 0, "chromedriver closed the connection mid-answer");
                raw.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            stream.read_to_end(&mut raw).expect("answer read");
        }
    }
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let payload = String::from_utf8_lossy(&raw[head_end..]).into_owned();
    let payload =
        if head.contains("transfer-encoding: chunked") { dechunk(&payload) } else { payload };
    (status, serde_json::from_str(&payload).unwrap_or(Value::String(payload)))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}
