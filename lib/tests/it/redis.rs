use tcoder::redis::{KEY_PREFIX, connect, ping};
use testkit::TestEnv;

use crate::helpers::settings;

/// The shape every tcoder state change takes: read-check-write in one script, atomically.
const FENCED_SET: &str = r"
local current = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if tonumber(ARGV[1]) < current then return 0 end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'value', ARGV[2])
return 1
";

#[tokio::test]
async fn lua_scripts_run_atomically_on_the_shared_connection() {
    let env = TestEnv::start();
    let mut conn = connect(&settings(&env).redis).await.unwrap();
    ping(&mut conn).await.unwrap();
    let script = redis::Script::new(FENCED_SET);
    let key = format!("{}test:fenced", KEY_PREFIX);

    let newer: i32 =
        script.key(&key).arg(2).arg("from-epoch-2").invoke_async(&mut conn).await.unwrap();
    let stale: i32 =
        script.key(&key).arg(1).arg("from-epoch-1").invoke_async(&mut conn).await.unwrap();

    assert_eq!((newer, stale), (1, 0));
    let value: String =
        redis::cmd("HGET").arg(&key).arg("value").query_async(&mut conn).await.unwrap();
    assert_eq!(value, "from-epoch-2");
}

/// A `rediss://` URL with `tls_ca_file` talks TLS to a server whose certificate that CA signed
/// (and a user's password in the URL authenticates); without the CA the server is not
/// trusted, and a plain connection to the TLS port gets nowhere.
#[tokio::test]
async fn rediss_urls_connect_over_tls_verified_against_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=tcoder test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.path().join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.crt",
        "-days",
        "1",
        "-extfile",
        "ext",
    ]);
    let port = testkit::free_port();
    let mut command =
        std::process::Command::new(testkit::tool_path("redis-server", "TCODER_REDIS_SERVER"));
    command
        .args(["--bind", "127.0.0.1", "--port", "0", "--tls-port", &port.to_string()])
        .args(["--tls-cert-file", "srv.crt", "--tls-key-file", "srv.key"])
        .args(["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no", "--save", ""])
        .args(["--requirepass", "s3cret"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null());
    let _server = testkit::ChildProcess::spawn("redis-server (TLS)", &mut command).unwrap();
    let config = |url: String, ca: &str| tcoder::redis::Config {
        url,
        tls_ca_file: ca.to_owned(),
        timeout: std::time::Duration::from_secs(2),
    };
    let ca = dir.path().join("ca.crt").display().to_string();
    let tls = config(format!("rediss://:s3cret@127.0.0.1:{port}/"), &ca);
    let mut conn = testkit::eventually_async(std::time::Duration::from_secs(10), || async {
        connect(&tls).await.map_err(|e| e.to_string())
    })
    .await;
    ping(&mut conn).await.unwrap();
    let untrusted = connect(&config(format!("rediss://:s3cret@127.0.0.1:{port}/"), "")).await;
    assert!(untrusted.is_err(), "a server the configured roots do not vouch for is refused");
    let plain = connect(&config(format!("redis://:s3cret@127.0.0.1:{port}/"), "")).await;
    assert!(plain.is_err(), "the TLS port does not speak plain Redis");
}
