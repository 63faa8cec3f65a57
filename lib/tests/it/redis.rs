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

/// After a restart of Redis every open socket is dead: the first read on the shared
/// connection is sent again on a fresh one and answers (the API's first request after a
/// restart was a 503), while a write that met the dead socket is not repeated (it might have
/// applied) and fails for its caller to decide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_read_after_a_redis_restart_succeeds_and_a_write_is_not_repeated() {
    let mut env = TestEnv::start_persistent();
    let mut conn = connect(&settings(&env).redis).await.unwrap();
    let key = format!("{}test:restart", KEY_PREFIX);
    let () = redis::cmd("SET").arg(&key).arg("kept").query_async(&mut conn).await.unwrap();
    tokio::task::block_in_place(|| env.redis.restart());
    let read: redis::RedisResult<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await;
    assert_eq!(read.unwrap(), "kept");

    tokio::task::block_in_place(|| env.redis.restart());
    let counted: redis::RedisResult<i64> =
        redis::cmd("INCR").arg(format!("{key}:n")).query_async(&mut conn).await;
    assert!(counted.is_err(), "a write on a dead socket is not sent again: {counted:?}");
    let counted: i64 =
        redis::cmd("INCR").arg(format!("{key}:n")).query_async(&mut conn).await.unwrap();
    assert_eq!(counted, 1, "the caller's retry applies it once");
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
        tls_ca_file: ca.to_owned(),
        ..tcoder::redis::Config::direct(url, std::time::Duration::from_secs(2))
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

/// Behind Sentinel, a write the fencing rules depend on counts once a replica has it: it
/// succeeds with the replica connected and is refused, typed, while the replica is down (the
/// caller retries; nothing is confirmed that a failover could take back).
#[tokio::test]
async fn replicated_writes_wait_for_the_replica_and_are_refused_without_one() {
    let mut group = testkit::RedisSentinels::start();
    let config = tcoder::redis::Config {
        sentinels: group.addresses(),
        sentinel_master: group.master_name().to_owned(),
        wait_replicas: 1,
        ..tcoder::redis::Config::direct(
            "redis://ignored.invalid:1/".to_owned(),
            std::time::Duration::from_secs(2),
        )
    };
    let conn = connect(&config).await.unwrap();
    let script = redis::Script::new(FENCED_SET);
    let key = format!("{}test:replicated", KEY_PREFIX);

    let written: i32 = conn.write_replicated(script.key(&key).arg(1).arg("one")).await.unwrap();
    assert_eq!(written, 1);

    let replica = 1 - group.primary_index();
    group.nodes[replica].kill();
    let refused = conn.write_replicated::<i32>(script.key(&key).arg(2).arg("two")).await;
    assert!(
        matches!(
            refused,
            Err(tcoder::redis::RedisError::NotReplicated { wanted: 1, acked: 0, .. })
        ),
        "{refused:?}"
    );
    group.start_again_as_replica(replica);
    group.wait_until_replica(replica, std::time::Duration::from_secs(60));
    let written: i32 = conn.write_replicated(script.key(&key).arg(3).arg("three")).await.unwrap();
    assert_eq!(written, 1);
}

/// The machine cap holds for several dispatchers: a slot granted to one keeps counting once
/// its machine exists (as that machine, not twice), so another dispatcher acting on a view of
/// the provider taken before the machine appeared is not granted it again.
#[tokio::test]
async fn machine_slots_count_against_the_cap_even_for_a_view_older_than_their_machine() {
    use tcoder::machines::{admit, bind};
    let env = TestEnv::start();
    let mut conn = connect(&settings(&env).redis).await.unwrap();
    let ttl = std::time::Duration::from_secs(60);
    let slots = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();

    let granted = admit(&mut conn, 2, &[], &slots(&["s1", "s2", "s3"]), ttl).await.unwrap();
    assert_eq!(granted, ["s1", "s2"], "two of three for a cap of two");
    let keep = std::time::Duration::from_millis(600);
    bind(&mut conn, "s1", "m1", keep).await.unwrap();
    bind(&mut conn, "s2", "m2", keep).await.unwrap();

    // A dispatcher whose view predates both machines: nothing.
    assert!(admit(&mut conn, 2, &[], &slots(&["s4"]), ttl).await.unwrap().is_empty());
    // One whose view lists them: counted once each, so still nothing.
    assert!(admit(&mut conn, 2, &["m1", "m2"], &slots(&["s4"]), ttl).await.unwrap().is_empty());
    // Once the bound reservations lapse, the view alone counts: m2 stopped, one slot free.
    testkit::eventually_async(std::time::Duration::from_secs(5), || {
        let mut conn = conn.clone();
        async move {
            let granted = admit(&mut conn, 2, &["m1"], &slots(&["s5"]), ttl).await.unwrap();
            if granted == ["s5"] { Ok(()) } else { Err(granted) }
        }
    })
    .await;
}

/// One dispatcher at a time holds a singleton loop's lease; it renews it, and another takes
/// over only once the holder stops renewing and the lease lapses.
#[tokio::test]
async fn a_leader_lease_has_one_holder_and_passes_on_when_it_lapses() {
    use tcoder::redis::leader::hold;
    let env = TestEnv::start();
    let mut conn = connect(&settings(&env).redis).await.unwrap();
    let ttl = std::time::Duration::from_millis(500);
    assert!(hold(&mut conn, "reaper", "a", ttl).await.unwrap());
    assert!(!hold(&mut conn, "reaper", "b", ttl).await.unwrap(), "a holds it");
    assert!(hold(&mut conn, "reaper", "a", ttl).await.unwrap(), "a renews");
    assert!(hold(&mut conn, "reconciler", "b", ttl).await.unwrap(), "roles are separate");
    testkit::eventually_async(std::time::Duration::from_secs(5), || {
        let mut conn = conn.clone();
        async move {
            if hold(&mut conn, "reaper", "b", ttl).await.unwrap() {
                Ok(())
            } else {
                Err("a still holds it")
            }
        }
    })
    .await;
    assert!(!hold(&mut conn, "reaper", "a", ttl).await.unwrap(), "b holds it now");
}

/// A worker is dead only when its record outlives its lease: one that deregistered (a clean
/// exit, both gone at once) is not — the reaper asks again before destroying a machine, so a
/// view that caught the record before the exit and the lease after it spares the machine.
#[tokio::test]
async fn a_worker_is_dead_only_while_its_record_outlives_its_lease() {
    use tcoder::machines::{MachineRecord, deregister, heartbeat, is_dead};
    let env = TestEnv::start();
    let mut conn = connect(&settings(&env).redis).await.unwrap();
    let record = MachineRecord::new("m1", "local");
    heartbeat(&mut conn, &record, std::time::Duration::from_secs(60)).await.unwrap();
    assert!(!is_dead(&mut conn, "m1").await.unwrap(), "a live worker");
    let _: () = redis::cmd("DEL")
        .arg(tcoder::machines::lease_key("m1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(is_dead(&mut conn, "m1").await.unwrap(), "a lease that lapsed");
    heartbeat(&mut conn, &record, std::time::Duration::from_secs(60)).await.unwrap();
    deregister(&mut conn, "m1").await.unwrap();
    assert!(!is_dead(&mut conn, "m1").await.unwrap(), "a clean exit");
}
