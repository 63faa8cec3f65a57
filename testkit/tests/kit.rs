//! The kit's own parts behave as later fault tests rely on.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use testkit::media::{ClipSpec, clip};
use testkit::{ChaosMode, ChaosProxy};

/// An echo server on a free port, answering each connection until it closes.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    stream
}

fn round_trip(stream: &mut TcpStream, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(payload)?;
    let mut buf = vec![0u8; payload.len()];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

#[test]
fn chaos_proxy_passes_blackholes_and_drops_traffic() {
    let proxy = ChaosProxy::start(echo_server());
    let mut stream = connect(proxy.addr());
    assert_eq!(round_trip(&mut stream, b"ping").unwrap(), b"ping");

    proxy.set_mode(ChaosMode::Blackhole);
    let err = round_trip(&mut stream, b"lost?").unwrap_err();
    assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));

    // The partition heals: bytes held back are delivered, as TCP would after retransmission.
    proxy.set_mode(ChaosMode::Pass);
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut held = [0u8; 5];
    stream.read_exact(&mut held).unwrap();
    assert_eq!(&held, b"lost?");

    proxy.set_mode(ChaosMode::Drop);
    let mut buf = [0u8; 1];
    let closed = stream.read(&mut buf);
    assert!(matches!(closed, Ok(0) | Err(_)), "connection must be closed: {closed:?}");
}

#[test]
fn sample_clips_are_real_media_with_the_requested_shape() {
    let spec = ClipSpec { width: 160, height: 120, duration_ms: 500, ..ClipSpec::default() };
    let path = clip(&spec);
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_type,width,height", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success());
    let streams = String::from_utf8(output.stdout).unwrap();
    assert!(streams.contains("video,160,120"), "{streams}");
    assert!(streams.contains("audio"), "{streams}");
    // Cached: asking again returns the same file without re-encoding.
    assert_eq!(clip(&spec), path);
}

#[test]
fn the_fake_fly_api_checks_bodies_against_the_published_spec() {
    let path = testkit::workspace_root().join("testkit/fixtures/fly-machines-swagger.json");
    let swagger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let schema = serde_json::json!({ "$ref": "#/definitions/CreateMachineRequest" });
    let valid = serde_json::json!({
        "name": "w", "region": "iad",
        "config": { "image": "img", "guest": { "cpu_kind": "shared", "cpus": 1, "memory_mb": 256 },
                    "env": { "A": "b" }, "auto_destroy": false, "restart": { "policy": "no" },
                    "metadata": { "tcoder_pool": "p" }, "stop_config": { "signal": "SIGTERM" } }
    });
    testkit::fly::validate(&swagger, &schema, &valid, "$").unwrap();
    for (bad, why) in [
        (
            serde_json::json!({ "config": { "image": "img", "restart": { "policy": "sometimes" } } }),
            "is not one of",
        ),
        (
            serde_json::json!({ "config": { "image": "img", "guest": { "cpus": "two" } } }),
            "integer",
        ),
        (serde_json::json!({ "config": { "image": "img", "env": { "A": 1 } } }), "string"),
        (serde_json::json!({ "config": { "imagee": "img" } }), "not a field"),
    ] {
        let error = testkit::fly::validate(&swagger, &schema, &bad, "$").unwrap_err();
        assert!(error.contains(why), "{bad}: {error}");
    }
}
