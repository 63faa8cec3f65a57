//! `tcoder up`: the whole pipeline on this host, with no cloud account.
//!
//! Starts nats-server (JetStream, `sync_interval: always`) and redis-server (AOF, fsync always)
//! with their data under `up.data_dir`, then tcoder-ingest (with the embedded object store) and
//! tcoder-dispatcher (local machine provider), waits until each is ready, prints where
//! everything listens, and on Ctrl-C / SIGTERM stops the parts in reverse order.

/// `println!` that cannot panic: `tcoder up | tee log` and a closed pipe must not crash the
/// stack's supervisor (a panic here would SIGKILL every part instead of stopping it cleanly).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that cannot panic (see `say!`).
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod child;
mod plan;
mod prometheus;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tcoder::config::{Service, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use self::child::StackChild;
use self::plan::StackPlan;

/// Grace period for nats-server and redis-server to stop after SIGTERM.
const SERVER_GRACE: Duration = Duration::from_secs(10);

pub(crate) async fn run(cli: Settings, config_file: Option<&Path>) -> anyhow::Result<()> {
    // Everything under the data dir (objects, the AOF, JetStream's store, keys) is private,
    // and so is what the parts started from here create.
    tcoder::service::private_files();
    let ingest = Settings::load(Service::Ingest, config_file)?;
    let dispatcher = Settings::load(Service::Dispatcher, config_file)?;
    let mut plan = StackPlan::resolve(&cli, &ingest, &dispatcher)?;
    let logs = plan.data_dir.join("logs");
    for dir in [&plan.data_dir, &logs, &plan.data_dir.join("nats"), &plan.data_dir.join("redis")] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::set_permissions(&plan.data_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("cannot restrict {}", plan.data_dir.display()))?;
    if cli.s3.has_shipped_credentials() {
        (plan.s3_access_key_id, plan.s3_secret_access_key) = store_credentials(&plan.data_dir)?;
    }
    plan.passwords = control_plane_passwords(&plan.data_dir)?;
    plan.producer_password = Some(kept_secret(
        &plan.data_dir,
        PRODUCER_PASSWORD_FILE,
        |p| !p.is_empty(),
        || random_hex(24),
    )?);
    if cli.webhooks.secret_key.expose().is_empty() {
        plan.webhook_secret_key = Some(webhook_secret_key(&plan.data_dir)?);
    }
    let bin_dir = bin_dir(&cli.up.bin_dir)?;
    let ready_timeout = cli.up.ready_timeout;
    let service_grace = ingest.shutdown.drain_deadline + Duration::from_secs(5);

    // Started parts, in start order; stopped in reverse.
    let mut parts: Vec<StackChild> = Vec::new();
    let mut user = UserProfile::None;
    let started = async {
        parts.push(start_nats(&cli, &plan, &logs)?);
        wait_http_ok(
            plan.nats_monitor,
            "/healthz?js-enabled-only=true",
            ready_timeout,
            "nats-server",
        )
        .await?;
        parts.push(start_redis(&cli, &plan, &logs)?);
        wait_redis(plan.redis, ready_timeout).await?;
        user = ensure_local_api_key(&plan).await?;

        let mut env = plan.shared_env();
        env.extend(plan.credentials_env(Service::Ingest));
        env.push(("TCODER__ADMIN__BIND".to_owned(), plan.ingest_admin.to_string()));
        let command = service_command(&bin_dir, "tcoder-ingest", config_file, &env);
        parts.push(StackChild::spawn("tcoder-ingest", command, service_grace)?);
        wait_http_ok(plan.ingest_admin, "/readyz", ready_timeout, "tcoder-ingest").await?;

        let mut env = plan.shared_env();
        env.extend(plan.credentials_env(Service::Dispatcher));
        env.push(("TCODER__ADMIN__BIND".to_owned(), plan.dispatcher_admin.to_string()));
        let command = service_command(&bin_dir, "tcoder-dispatcher", config_file, &env);
        parts.push(StackChild::spawn("tcoder-dispatcher", command, service_grace)?);
        wait_http_ok(plan.dispatcher_admin, "/readyz", ready_timeout, "tcoder-dispatcher").await?;

        for _ in 0..cli.up.workers {
            let mut env = plan.shared_env();
            env.extend(plan.credentials_env(Service::Worker));
            env.push(("TCODER__ADMIN__BIND".to_owned(), "127.0.0.1:0".to_owned()));
            env.push(("TCODER__WORKER__IDLE_TIMEOUT".to_owned(), "0s".to_owned()));
            let command = service_command(&bin_dir, "tcoder-worker", config_file, &env);
            parts.push(StackChild::spawn("tcoder-worker", command, service_grace)?);
        }
        if let Some(bind) = plan.prometheus {
            let scrape = prometheus::config(
                plan.ingest_admin,
                plan.dispatcher_admin,
                cli.up.scrape_interval,
            );
            let log = log_file(&logs, "prometheus")?;
            parts.push(prometheus::start(
                &cli.up.prometheus_server,
                &plan.data_dir,
                bind,
                &scrape,
                log,
            )?);
            wait_http_ok(bind, "/-/ready", ready_timeout, "prometheus").await?;
        }
        anyhow::Ok(())
    };
    let outcome = tokio::select! {
        result = started => result,
        signal = wait_for_signal() => Err(anyhow::anyhow!("interrupted by {signal} while starting")),
    };
    if let Err(e) = outcome {
        stop_all(&mut parts).await;
        return Err(e);
    }
    print_summary(&plan, &parts, &logs, &user);

    let outcome = tokio::select! {
        signal = wait_for_signal() => {
            note!("tcoder up: {signal} received, stopping");
            Ok(())
        }
        (name, status) = first_exit(&mut parts) => Err(anyhow::anyhow!("{name} exited unexpectedly ({status})")),
    };
    let clean = stop_all(&mut parts).await;
    outcome?;
    if !clean {
        bail!("some parts did not stop cleanly (see the log above)");
    }
    note!("tcoder up: stopped");
    Ok(())
}

/// The services' NATS and Redis passwords (each service's user is its name), one line each in
/// `<data_dir>/control-plane-passwords`.
fn control_plane_passwords(data_dir: &Path) -> anyhow::Result<Vec<(Service, String)>> {
    let parse = |text: &str| -> Vec<(Service, String)> {
        text.lines()
            .filter_map(|line| {
                let (name, password) = line.split_once(' ')?;
                let service = Service::ALL.into_iter().find(|s| s.name() == name)?;
                Some((service, password.trim().to_owned()))
            })
            .collect()
    };
    let text = kept_secret(
        data_dir,
        "control-plane-passwords",
        |text| parse(text).len() == Service::ALL.len(),
        || Service::ALL.iter().map(|s| format!("{} {}\n", s.name(), random_hex(24))).collect(),
    )?;
    Ok(parse(&text))
}

/// The NATS password of tenant `local`'s event producer (user `producer-local`).
pub(crate) const PRODUCER_PASSWORD_FILE: &str = "nats-producer-password";

/// The key sealing webhook signing secrets in Redis, in `<data_dir>/webhook-secret-key`.
fn webhook_secret_key(data_dir: &Path) -> anyhow::Result<String> {
    kept_secret(
        data_dir,
        "webhook-secret-key",
        |key| !key.is_empty() && tcoder::webhooks::AtRest::new(key).is_ok(),
        || random_hex(32),
    )
}

/// The embedded store's credentials when the settings still have the shipped example ones,
/// in `<data_dir>/s3-credentials`: no two stacks share a key anyone could look up.
fn store_credentials(data_dir: &Path) -> anyhow::Result<(String, String)> {
    let text = kept_secret(
        data_dir,
        "s3-credentials",
        |text| {
            text.split_once(':').is_some_and(|(id, secret)| !id.is_empty() && !secret.is_empty())
        },
        || format!("tcoder-{}:{}", random_hex(8), random_hex(24)),
    )?;
    let (id, secret) = text.split_once(':').expect("validated above");
    Ok((id.to_owned(), secret.to_owned()))
}

/// A secret `tcoder up` makes once and keeps in `<data_dir>/<name>` (readable only by the
/// owner): the stored one when `valid` accepts it, else `fresh()`, written for next time.
fn kept_secret(
    data_dir: &Path,
    name: &str,
    valid: impl Fn(&str) -> bool,
    fresh: impl FnOnce() -> String,
) -> anyhow::Result<String> {
    let path = data_dir.join(name);
    if let Ok(text) = std::fs::read_to_string(&path)
        && valid(text.trim())
    {
        return Ok(text.trim().to_owned());
    }
    let text = fresh();
    crate::profile::write_private(&path, &format!("{}\n", text.trim()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(text.trim().to_owned())
}

/// `bytes` random bytes, in hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source is available");
    hex::encode(buf)
}

/// The single-host stack's API key (tenant `local`): created once in `<data_dir>/api-key`
/// (readable only by the owner), its hash registered in Redis on every start. A key revoked
/// with `tcoder keys revoke` stays revoked: the stack gets a new one.
async fn ensure_local_api_key(plan: &StackPlan) -> anyhow::Result<UserProfile> {
    let redis_config =
        tcoder::redis::Config::direct(plan.redis_url(Service::Cli), Duration::from_secs(5));
    let mut redis = tcoder::redis::connect(&redis_config).await?;
    let path = plan.api_key_path();
    let existing = match std::fs::read_to_string(&path) {
        Ok(key) if key.trim().starts_with(tcoder::auth::KEY_PREFIX_TEXT) => {
            let key = key.trim().to_owned();
            if tcoder::auth::is_revoked(&mut redis, &key).await? {
                note!(
                    "tcoder up: the stack's API key was revoked; a new one is in {}",
                    path.display()
                );
                None
            } else {
                Some(key)
            }
        }
        _ => None,
    };
    let key = match existing {
        Some(key) => key,
        None => {
            let key = tcoder::auth::generate_key();
            crate::profile::write_private(&path, &key)
                .with_context(|| format!("cannot write {}", path.display()))?;
            key
        }
    };
    let tenant = tcoder::jobs::Tenant::parse("local").expect("valid tenant");
    tcoder::auth::store_key(&mut redis, &key, &tenant).await?;
    // The client commands find the stack through these profiles: its own, read in the
    // stack's folder, and the per-user one, from anywhere.
    let profile = crate::profile::Profile {
        api: format!("http://{}", plan.api),
        api_key: key,
        control: Some(crate::profile::ControlPlane {
            nats_url: format!("nats://{}", plan.nats),
            nats_user: Service::Cli.name().to_owned(),
            nats_password: plan.password(Service::Cli).unwrap_or_default().to_owned(),
            redis_url: plan.redis_url(Service::Cli),
        }),
        data_dir: Some(plan.data_dir.clone()),
    };
    let own = crate::profile::of_stack(&plan.data_dir);
    if let Err(e) = crate::profile::write(&own, &profile) {
        note!("tcoder up: cannot write the CLI profile {}: {e}", own.display());
    }
    Ok(user_profile(&profile, &plan.data_dir))
}

/// Where the per-user profile stands after `tcoder up` for `data_dir`.
#[derive(Debug)]
enum UserProfile {
    /// Written (or the same file as the stack's own): `tcoder` finds this stack from anywhere.
    Ours(PathBuf),
    /// Another running stack's (whose data folder exists): left as it is.
    Theirs { path: PathBuf, stack: PathBuf },
    /// No home or config folder, or it could not be written.
    None,
}

/// Writes the per-user profile for this stack unless it is another live stack's
/// (`TCODER_PROFILE` names it explicitly: always written).
fn user_profile(profile: &crate::profile::Profile, data_dir: &Path) -> UserProfile {
    let Some(path) = crate::profile::path() else { return UserProfile::None };
    let explicit = std::env::var_os("TCODER_PROFILE").is_some();
    let existing = crate::profile::read(&path);
    if !explicit && !crate::profile::may_claim(existing.as_ref(), data_dir) {
        let stack = existing.and_then(|p| p.data_dir).unwrap_or_default();
        return UserProfile::Theirs { path, stack };
    }
    match crate::profile::write(&path, profile) {
        Ok(()) => UserProfile::Ours(path),
        Err(e) => {
            note!("tcoder up: cannot write the CLI profile {}: {e}", path.display());
            UserProfile::None
        }
    }
}

fn start_nats(cli: &Settings, plan: &StackPlan, logs: &Path) -> anyhow::Result<StackChild> {
    let conf = plan.data_dir.join("nats/nats-server.conf");
    std::fs::write(&conf, plan.nats_config())
        .with_context(|| format!("cannot write {}", conf.display()))?;
    let mut command = Command::new(nats_server_path(&cli.up.nats_server));
    command.arg("-c").arg(&conf).stdout(Stdio::null()).stderr(log_file(logs, "nats-server")?);
    StackChild::spawn("nats-server", command, SERVER_GRACE)
}

fn start_redis(cli: &Settings, plan: &StackPlan, logs: &Path) -> anyhow::Result<StackChild> {
    let acl = plan.data_dir.join("redis/users.acl");
    std::fs::write(&acl, plan.redis_acl())
        .with_context(|| format!("cannot write {}", acl.display()))?;
    let program =
        if cli.up.redis_server.is_empty() { "redis-server" } else { &cli.up.redis_server };
    let mut command = Command::new(program);
    command
        .args(["--bind", &plan.redis.ip().to_string(), "--port", &plan.redis.port().to_string()])
        .arg("--dir")
        .arg(plan.data_dir.join("redis"))
        // Job state and fencing epochs must survive a crash: append-only file, fsync always.
        .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
        .arg("--aclfile")
        .arg(&acl)
        .stdout(log_file(logs, "redis-server")?)
        .stderr(Stdio::null());
    StackChild::spawn("redis-server", command, SERVER_GRACE)
}

fn service_command(
    bin_dir: &Path,
    binary: &str,
    config_file: Option<&Path>,
    env: &[(String, String)],
) -> Command {
    let mut command = Command::new(bin_dir.join(binary));
    if let Some(file) = config_file {
        command.arg("--config").arg(file);
    }
    command.envs(env.iter().map(|(k, v)| (k, v))).stdout(Stdio::null()).stderr(Stdio::inherit());
    command
}

fn log_file(logs: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    let path = logs.join(format!("{name}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// `up.bin_dir`, or the folder of this `tcoder` binary (cargo puts all binaries together).
fn bin_dir(configured: &str) -> anyhow::Result<PathBuf> {
    if !configured.is_empty() {
        return Ok(PathBuf::from(configured));
    }
    let exe = std::env::current_exe().context("cannot find the tcoder binary's folder")?;
    let dir = exe.parent().context("tcoder binary has no folder")?.to_path_buf();
    if !dir.join("tcoder-ingest").is_file() {
        bail!(
            "tcoder-ingest not found next to {} (build the workspace with `cargo build`, or set up.bin_dir)",
            exe.display()
        );
    }
    Ok(dir)
}

/// `up.nats_server`, else `.tools/bin/nats-server` (installed by scripts/setup.sh), else PATH.
fn nats_server_path(configured: &str) -> PathBuf {
    if !configured.is_empty() {
        return PathBuf::from(configured);
    }
    let local = Path::new(".tools/bin/nats-server");
    if local.exists() { local.to_path_buf() } else { PathBuf::from("nats-server") }
}

/// Polls `GET path` until it answers 200, for at most `timeout`.
async fn wait_http_ok(
    addr: std::net::SocketAddr,
    path: &str,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let url = format!("http://{addr}{path}");
    poll_until(timeout, what, || async {
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{} {}", r.status(), r.text().await.unwrap_or_default())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

/// Polls Redis with `PING` until it answers `+PONG`.
async fn wait_redis(addr: std::net::SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    poll_until(timeout, "redis-server", || async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream.write_all(b"PING\r\n").await.map_err(|e| e.to_string())?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.map_err(|e| e.to_string())?;
        // With no default user, an anonymous PING is answered NOAUTH: up all the same.
        if &reply == b"+PONG\r\n" || &reply == b"-NOAUTH" {
            Ok(())
        } else {
            Err("unexpected reply".to_owned())
        }
    })
    .await
}

async fn poll_until<F, Fut>(timeout: Duration, what: &str, mut probe: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("{what} not ready within {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resolves when any part exits; returns its name and status.
async fn first_exit(parts: &mut [StackChild]) -> (&'static str, String) {
    let waits = parts.iter_mut().map(|part| {
        Box::pin(async move {
            let status = part.wait().await;
            (part.name, status.map_or_else(|e| e.to_string(), |s| s.to_string()))
        })
    });
    futures_util::future::select_all(waits).await.0
}

/// Stops the parts in reverse start order; returns whether all stopped cleanly.
async fn stop_all(parts: &mut Vec<StackChild>) -> bool {
    let mut clean = true;
    while let Some(mut part) = parts.pop() {
        clean &= part.stop().await;
    }
    clean
}

fn print_summary(plan: &StackPlan, parts: &[StackChild], logs: &Path, user: &UserProfile) {
    let pid = |name: &str| parts.iter().find(|p| p.name == name).map_or(0, StackChild::pid);
    say!("tcoder is up (data in {})", plan.data_dir.display());
    say!("  api               http://{}", plan.api);
    say!("  object store      http://{}  bucket {}", plan.store_endpoint(), plan.bucket);
    say!(
        "  s3 credentials    AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} (aws --endpoint-url http://{} s3 ls s3://{}/)",
        plan.s3_access_key_id,
        plan.s3_secret_access_key,
        plan.store_endpoint(),
        plan.bucket
    );
    say!("  nats              nats://{}  pid {}", plan.nats, pid("nats-server"));
    say!("  redis             redis://{}/  pid {}", plan.redis, pid("redis-server"));
    say!("  ingest admin      http://{}  pid {}", plan.ingest_admin, pid("tcoder-ingest"));
    say!("  dispatcher admin  http://{}  pid {}", plan.dispatcher_admin, pid("tcoder-dispatcher"));
    if let Some(bind) = plan.prometheus {
        say!("  prometheus        http://{bind}  pid {}", pid("prometheus"));
    }
    for worker in parts.iter().filter(|p| p.name == "tcoder-worker") {
        say!("  worker            pid {}", worker.pid());
    }
    say!("  api key           {} (tenant local)", plan.api_key_path().display());
    if plan.producer_password.is_some() {
        say!(
            "  nats producer     user producer-local, password in {} (submit on tcoder.submit.local; inbox prefix _INBOX_local)",
            plan.data_dir.join(PRODUCER_PASSWORD_FILE).display()
        );
    }
    let own = crate::profile::of_stack(&plan.data_dir);
    match user {
        UserProfile::Ours(path) => {
            say!("  cli profile       {} (tcoder submit works from any folder)", path.display());
        }
        UserProfile::Theirs { path, stack } => say!(
            "  cli profile       {} — {} stays the stack's in {}: run tcoder from this folder, or export TCODER_PROFILE={}",
            own.display(),
            path.display(),
            stack.display(),
            own.display()
        ),
        UserProfile::None => {
            say!("  cli profile       {} (run tcoder from this folder)", own.display())
        }
    }
    say!("  logs              {} (services log to this terminal)", logs.display());
    say!("admin endpoints: /healthz /readyz /metrics. Press Ctrl-C to stop.");
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
