use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use testkit::{ChildProcess, http_get};

/// The `tcoder up` command (not started): every port picked freely, data and the CLI profile
/// in `data_dir`, `extra` more `TCODER__*` variables.
fn up_command(data_dir: &Path, extra: &[(&str, &str)]) -> Command {
    let tcoder = Path::new(env!("CARGO_BIN_EXE_tcoder"));
    let bin_dir = tcoder.parent().unwrap();
    for binary in ["tcoder-ingest", "tcoder-dispatcher"] {
        assert!(
            bin_dir.join(binary).is_file(),
            "{binary} is not built; run the workspace tests (`make test` / `cargo test --workspace`)"
        );
    }
    let mut command = Command::new(tcoder);
    command
        .arg("up")
        .current_dir(testkit::workspace_root())
        .env("TCODER__UP__DATA_DIR", data_dir)
        // The CLI profile `tcoder up` writes goes to the test's folder, not the user's home.
        .env("TCODER_PROFILE", data_dir.join("cli.toml"))
        .env("TCODER__NATS__URL", "nats://127.0.0.1:0")
        .env("TCODER__REDIS__URL", "redis://127.0.0.1:0/")
        .env("TCODER__ADMIN__BIND", "127.0.0.1:0")
        .env("TCODER__INGEST__HTTP_BIND", "127.0.0.1:0")
        .env("TCODER__INGEST__LOCAL_STORE__BIND", "127.0.0.1:0")
        .env("TCODER__SHUTDOWN__DRAIN_DEADLINE", "5s")
        .envs(extra.iter().copied());
    command
}

/// `tcoder up` with every port picked freely and data in a temp dir; `extra` sets more
/// `TCODER__*` variables.
pub(crate) fn spawn_up(
    data_dir: &Path,
    extra: &[(&str, &str)],
) -> (ChildProcess, mpsc::Receiver<String>) {
    spawn_up_command(up_command(data_dir, extra))
}

/// [`spawn_up`] with a command of the caller's.
fn spawn_up_command(mut command: Command) -> (ChildProcess, mpsc::Receiver<String>) {
    let log = testkit::test_log();
    command.stdout(Stdio::piped()).stderr(if log { Stdio::inherit() } else { Stdio::piped() });
    let mut process = ChildProcess::spawn("tcoder up", &mut command).unwrap();
    let stdout = process.take_stdout().unwrap();
    let (lines, received) = mpsc::channel();
    // Its logs come along, marked, so a `tcoder up` that ends before its summary says why.
    if let Some(stderr) = process.take_stderr() {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(format!("{STDERR}{line}")).is_err() {
                    break;
                }
            }
        });
    }
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (process, received)
}

/// Marks a line of `tcoder up`'s stderr among its stdout's.
const STDERR: &str = "stderr: ";

/// Reads the summary `tcoder up` prints once every part is ready: `name -> (address, pid)`.
pub(crate) fn read_summary(
    lines: &mpsc::Receiver<String>,
) -> HashMap<String, (String, Option<u32>)> {
    let mut summary = HashMap::new();
    let mut logs = std::collections::VecDeque::new();
    loop {
        let line = match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(e) => {
                let logs: Vec<&str> = logs.iter().map(String::as_str).collect();
                panic!(
                    "no tcoder up summary within 60 s ({e}); its last logs:\n{}",
                    logs.join("\n")
                )
            }
        };
        if let Some(log) = line.strip_prefix(STDERR) {
            if logs.len() == 40 {
                logs.pop_front();
            }
            logs.push_back(log.to_owned());
            continue;
        }
        if line.starts_with("admin endpoints") {
            return summary;
        }
        let Some(rest) = line.strip_prefix("  ") else { continue };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let url_at = words.iter().position(|w| w.contains("://")).unwrap_or(words.len() - 1);
        let name = words[..url_at].join(" ");
        let pid = words.iter().position(|w| *w == "pid").and_then(|i| words[i + 1].parse().ok());
        summary.insert(name, (words[url_at].to_owned(), pid));
    }
}

pub(crate) fn addr(url: &str) -> SocketAddr {
    url.split("://").nth(1).unwrap().trim_end_matches('/').parse().unwrap()
}

#[test]
fn up_starts_every_part_healthy_and_stops_them_all_on_sigterm() {
    let _stack = crate::one_stack_at_a_time();
    let data = tempfile::tempdir().unwrap();
    // A media server on this host the stack may import from (as a private one would be
    // allowed in [ingest.import]).
    let media = MediaServer::start();
    let (mut up, lines) = spawn_up(data.path(), &media.allowed_with(&SPLIT_AND_SMALL_PARTS));
    let summary = read_summary(&lines);

    for service in ["ingest admin", "dispatcher admin"] {
        let admin = addr(&summary[service].0);
        for path in ["/healthz", "/readyz"] {
            let (status, body) = http_get(admin, path).unwrap();
            assert_eq!(status, 200, "{service} {path}: {body}");
        }
        let (status, metrics) = http_get(admin, "/metrics").unwrap();
        assert_eq!(status, 200);
        assert!(metrics.contains("# TYPE process_cpu_seconds_total counter"), "{metrics}");
    }
    // The object store answers S3 (unsigned requests are refused, as on R2).
    let (status, _) = http_get(addr(&summary["object store"].0), "/tcoder/x").unwrap();
    assert_eq!(status, 403);
    // The store got random credentials of its own, readable only by the owner.
    let credentials = data.path().join("s3-credentials");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&credentials).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&credentials).unwrap();
    assert!(!text.contains("tcoder-local-secret") && text.len() > 40, "{text}");
    // NATS keeps JetStream data (and Redis its AOF) under the data dir.
    assert!(data.path().join("nats/nats-server.conf").is_file());
    assert!(
        std::fs::read_to_string(data.path().join("nats/nats-server.conf"))
            .unwrap()
            .contains("sync_interval: always")
    );

    let job = submit_transcodes_a_video_with_the_stacks_key(data.path(), &summary["api"].0);
    results_play_without_credentials_and_pages_may_call(&job, &summary);
    producers_and_watch_folders_work_on_the_stack(data.path(), &summary);
    a_long_title_is_split_on_the_stack(data.path());
    an_interrupted_large_upload_resumes_with_the_parts_it_lacks(data.path());
    a_url_is_imported_and_jobs_deleted_from_the_cli(data.path(), &media);
    // The control plane authenticates: anonymous NATS and Redis clients are refused, and each
    // service's user speaks only its own subjects (a worker cannot queue work).
    let nats = addr(&summary["nats"].0);
    let (info, anonymous) = nats_session(nats, "{\"verbose\":false}", "");
    assert!(info.contains("\"auth_required\":true"), "{info}");
    assert!(anonymous.contains("Authorization Violation"), "{anonymous}");
    let passwords = std::fs::read_to_string(data.path().join("control-plane-passwords")).unwrap();
    let password_of = |name: &str| {
        passwords.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).unwrap().to_owned()
    };
    let worker =
        format!("{{\"verbose\":false,\"user\":\"worker\",\"pass\":\"{}\"}}", password_of("worker"));
    let (_, forged) = nats_session(nats, &worker, "PUB tcoder.jobs.normal.job_x 2\r\nhi\r\n");
    assert!(forged.contains("Permissions Violation for Publish"), "{forged}");
    // Nor change a stream (`max_age` 1 s emptied every tenant's event history), nor read
    // another stream's messages.
    for api in [
        "$JS.API.STREAM.UPDATE.EVENTS",
        "$JS.API.STREAM.CREATE.EVENTS2",
        "$JS.API.CONSUMER.CREATE.UPLOADS.spy",
        "$JS.API.STREAM.MSG.GET.DLQ",
    ] {
        let (_, refused) = nats_session(nats, &worker, &format!("PUB {api} 2\r\nhi\r\n"));
        assert!(refused.contains("Permissions Violation for Publish"), "{api}: {refused}");
    }
    // Ingest may create a missing stream, never change one (an update is a purge).
    let ingest =
        format!("{{\"verbose\":false,\"user\":\"ingest\",\"pass\":\"{}\"}}", password_of("ingest"));
    let (_, update) = nats_session(nats, &ingest, "PUB $JS.API.STREAM.UPDATE.EVENTS 2\r\nhi\r\n");
    assert!(update.contains("Permissions Violation for Publish"), "ingest: {update}");
    let (_, allowed) =
        nats_session(nats, &worker, "PUB tcoder.events.local.job_x.progress 2\r\nhi\r\n");
    assert!(!allowed.contains("-ERR"), "{allowed}");
    // A split job's coordinator invites helpers to its parts (one token below a job's item).
    let (_, part) = nats_session(nats, &worker, "PUB tcoder.jobs.normal.job_x.p1 2\r\nhi\r\n");
    assert!(!part.contains("-ERR"), "{part}");
    let mut redis = std::net::TcpStream::connect(addr(&summary["redis"].0)).unwrap();
    std::io::Write::write_all(&mut redis, b"PING\r\n").unwrap();
    let mut reply = [0u8; 7];
    std::io::Read::read_exact(&mut redis, &mut reply).unwrap();
    assert_eq!(&reply, b"-NOAUTH", "an anonymous Redis client is refused");
    // Each service's Redis user moves only its role's keys: a worker's password cannot mint
    // an API key for any tenant or replace a tenant's webhook secret (issue 27's finding).
    let worker_redis = |command: &str| {
        let mut redis = std::net::TcpStream::connect(addr(&summary["redis"].0)).unwrap();
        redis.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let auth = format!("AUTH worker {}\r\n{command}\r\n", password_of("worker"));
        std::io::Write::write_all(&mut redis, auth.as_bytes()).unwrap();
        let mut answer = String::new();
        let mut buf = [0u8; 512];
        while answer.matches("\r\n").count() < 2 {
            match std::io::Read::read(&mut redis, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        answer
    };
    let minted = worker_redis(&format!("HSET tcoder:apikeys {} local", "ab".repeat(32)));
    assert!(minted.starts_with("+OK\r\n-NOPERM"), "{minted}");
    let secret = worker_redis("SET tcoder:webhook_secret:local whsec_stolen");
    assert!(secret.starts_with("+OK\r\n-NOPERM"), "{secret}");
    let own = worker_redis("EXISTS tcoder:job:job_x");
    assert_eq!(own, "+OK\r\n:0\r\n", "a worker reads job state");
    // The operator's commands reach them with the access `tcoder up` put in the profile.
    let keys = Command::new(env!("CARGO_BIN_EXE_tcoder"))
        .args(["keys", "list"])
        .env("TCODER_PROFILE", data.path().join("cli.toml"))
        .output()
        .unwrap();
    assert!(keys.status.success(), "{}", String::from_utf8_lossy(&keys.stderr));
    assert!(String::from_utf8_lossy(&keys.stdout).contains(" local "));

    // Media, the AOF and JetStream's files are the user's alone. (A file can go between the
    // listing and the look at it — JetStream compacts, the store prunes emptied folders — and
    // what is gone is nobody's to read.)
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .map_or(0, |m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
    };
    assert_eq!(mode(data.path()), 0o700);
    let mut private = vec![data.path().join("redis/appendonlydir")];
    let outputs = data.path().join("objects/tcoder/outputs/local");
    for entry in walkdir(&outputs).into_iter().chain(walkdir(&data.path().join("nats"))) {
        private.push(entry);
    }
    assert!(private.len() > 5);
    for path in private {
        assert_eq!(mode(&path) & 0o077, 0, "{} is readable by others", path.display());
    }

    let pids: Vec<u32> = summary.values().filter_map(|(_, pid)| *pid).collect();
    assert_eq!(
        pids.len(),
        4,
        "nats, redis, ingest, dispatcher (workers are started on demand): {summary:?}"
    );

    let (status, in_time) = up.terminate(Duration::from_secs(30)).expect("tcoder up was running");
    assert!(in_time, "tcoder up did not stop in time");
    assert!(status.success(), "{status}");
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} still running");
    }
}

/// A title longer than the stack's `split_min_duration` is encoded in parts by the stack's
/// workers, under their own NATS and Redis users, and stitched: its master names the title's
/// audio as a rendition of its own, and it plays for the whole title.
fn a_long_title_is_split_on_the_stack(data_dir: &Path) {
    let clip = testkit::media::clip(&testkit::media::ClipSpec {
        duration_ms: 12_000,
        audio: true,
        ..Default::default()
    });
    let submitted = Command::new(env!("CARGO_BIN_EXE_tcoder"))
        .args(["submit", clip.to_str().unwrap(), "--preset", "hls", "--quality", "144p"])
        .args(["--wait", "--json", "--timeout", "2m"])
        .env("TCODER_PROFILE", data_dir.join("cli.toml"))
        .output()
        .unwrap();
    assert!(submitted.status.success(), "{}", String::from_utf8_lossy(&submitted.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&submitted.stdout).unwrap();
    assert_eq!(summary["status"], "completed", "{summary}");
    // Nothing failed on the way: the first attempt committed it.
    assert_eq!(summary["result"]["epoch"], 1, "{summary}");
    // It played before it completed, from its stable URL, which `--wait` announced.
    let (playable, completed) = (&summary["playable_at"], &summary["completed_at"]);
    assert!(playable.as_str().unwrap() < completed.as_str().unwrap(), "{summary}");
    let id = summary["id"].as_str().unwrap();
    assert_eq!(summary["playback_url"], format!("/v1/jobs/{id}/hls/master.m3u8"));
    let stderr = String::from_utf8_lossy(&submitted.stderr);
    let announced = format!("/v1/jobs/{id}/hls/master.m3u8");
    assert!(stderr.contains("playable  http://") && stderr.contains(&announced), "{stderr}");
    let master = summary["result"]["hls_master"].as_str().unwrap();
    let stored = data_dir.join("objects/tcoder").join(master.split_once("/tcoder/").unwrap().1);
    let playlist = std::fs::read_to_string(&stored).unwrap();
    assert!(playlist.contains("#EXT-X-MEDIA:TYPE=AUDIO"), "not split: {playlist}");
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
        .arg(&stored)
        .output()
        .unwrap();
    let seconds: f64 = String::from_utf8_lossy(&probe.stdout).trim().parse().unwrap();
    assert!((seconds - 12.0).abs() <= 0.04, "{seconds} s");
}

/// Files served over HTTP from a folder, by Python's `http.server` (a server nobody here wrote),
/// on a free loopback port.
pub(crate) struct MediaServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    _process: ChildProcess,
    /// `[ingest.import] allowed` naming it.
    allowed: String,
}

impl MediaServer {
    pub(crate) fn start() -> MediaServer {
        let dir = tempfile::tempdir().unwrap();
        let port = testkit::free_port();
        let mut command = Command::new("python3");
        command
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = ChildProcess::spawn("http.server", &mut command).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        testkit::eventually(Duration::from_secs(10), || http_get(addr, "/"));
        MediaServer { addr, dir, _process: process, allowed: format!(r#"["{addr}"]"#) }
    }

    /// `settings` and those that let a stack import from this server.
    pub(crate) fn allowed_with<'a>(
        &'a self,
        settings: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut settings = settings.to_vec();
        settings.push(("TCODER__INGEST__IMPORT__ALLOW_HTTP", "true"));
        settings.push(("TCODER__INGEST__IMPORT__ALLOWED", &self.allowed));
        settings
    }
}

/// `tcoder submit <url>` makes a job whose source the stack fetches (with the file's name and
/// its import reported), and `tcoder delete` removes a job with everything it wrote.
fn a_url_is_imported_and_jobs_deleted_from_the_cli(data_dir: &Path, media: &MediaServer) {
    std::fs::copy(testkit::media::tiny_mp4(), media.dir.path().join("holiday.mp4")).unwrap();
    let tcoder = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tcoder"))
            .args(args)
            .env("TCODER_PROFILE", data_dir.join("cli.toml"))
            .output()
            .unwrap()
    };
    let url = format!("http://{}/holiday.mp4", media.addr);
    let submitted =
        tcoder(&["submit", &url, "--preset", "web-optimized", "--quality", "144p", "--wait"]);
    let said = String::from_utf8_lossy(&submitted.stderr);
    assert!(submitted.status.success(), "{said}");
    let summary: serde_json::Value = {
        let id = said.split_whitespace().nth(1).unwrap().to_owned();
        let status = tcoder(&["status", &id]);
        serde_json::from_slice(&status.stdout).unwrap()
    };
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(summary["filename"], "holiday.mp4");
    let id = summary["id"].as_str().unwrap().to_owned();
    let outputs = data_dir.join(format!("objects/tcoder/outputs/local/{id}"));
    assert!(outputs.is_dir());

    // A URL the stack may not fetch is refused with a typed error before any job exists.
    let refused = tcoder(&["submit", "http://127.0.0.1:9/x.mp4"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("validation.source_url"));

    let deleted = tcoder(&["delete", &id]);
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    assert!(!outputs.exists(), "the outputs are gone");
    let gone = tcoder(&["status", &id]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("job.not_found"));
}

/// A large file's upload stops after its first part (a client that lost its connection); `tcoder
/// submit --resume` sends only the parts the store lacks, completes the upload, and the job
/// transcodes the whole file.
fn an_interrupted_large_upload_resumes_with_the_parts_it_lacks(data_dir: &Path) {
    let work = tempfile::tempdir().unwrap();
    let clip = large_clip(work.path());
    let profile: toml::Table = toml::from_str(&crate::profile_of(data_dir)).unwrap();
    let (api, key) = (profile["api"].as_str().unwrap(), profile["api_key"].as_str().unwrap());
    let (id, parts) = stop_after_the_first_part(api, key, &clip);

    let resumed = Command::new(env!("CARGO_BIN_EXE_tcoder"))
        .args(["submit", clip.to_str().unwrap(), "--resume", &id, "--wait", "--json"])
        .args(["--timeout", "2m"])
        .env("TCODER_PROFILE", data_dir.join("cli.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    let report = format!("in {parts} parts: {} sent now, 1 already stored", parts - 1);
    assert!(stderr.contains(&report), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(
        (summary["id"].as_str(), &summary["status"]),
        (Some(id.as_str()), &serde_json::json!("completed"))
    );
    // The whole file arrived: the rendition lasts the source's two seconds.
    let stored = data_dir.join(format!("objects/tcoder/outputs/local/{id}/1/hls/master.m3u8"));
    assert!(stored.is_file(), "{summary}");
    let variant = std::fs::read_to_string(&stored).unwrap();
    let playlist = variant.lines().find(|l| l.ends_with(".m3u8")).unwrap();
    let playlist = stored.parent().unwrap().join(playlist);
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
        .arg(&playlist)
        .output()
        .unwrap();
    let seconds: f64 = String::from_utf8_lossy(&probe.stdout).trim().parse().unwrap();
    assert!((seconds - 2.0).abs() <= 0.1, "{seconds} s");
    // Resuming a job whose upload is done is refused, with the job's state.
    let again = Command::new(env!("CARGO_BIN_EXE_tcoder"))
        .args(["submit", clip.to_str().unwrap(), "--resume", &id])
        .env("TCODER_PROFILE", data_dir.join("cli.toml"))
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("job.not_awaiting_upload"));
}

/// Titles over 4 s are split into 4 s chunks (one HLS segment each); sources over 6 MiB are
/// uploaded in parts of 5 MiB (S3's smallest).
pub(crate) const SPLIT_AND_SMALL_PARTS: [(&str, &str); 4] = [
    ("TCODER__WORKER__SPLIT_MIN_DURATION", "4s"),
    ("TCODER__WORKER__CHUNK_DURATION", "4s"),
    ("TCODER__INGEST__MULTIPART_THRESHOLD", "6291456"),
    ("TCODER__INGEST__MULTIPART_PART_SIZE", "5242880"),
];

/// Two seconds of noise, lossless: a real video of about 16 MiB, four parts of 5 MiB.
pub(crate) fn large_clip(dir: &Path) -> std::path::PathBuf {
    let clip = dir.join("large.mp4");
    let made = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-f", "lavfi", "-i"])
        .arg("nullsrc=s=640x360:r=25,geq=random(1)*255:128:128")
        .args(["-t", "2", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(made.success());
    clip
}

/// Creates a job for `clip` (uploaded in parts of 5 MiB) and sends its first part only, as a
/// client whose connection dropped; returns the job id and its number of parts.
pub(crate) fn stop_after_the_first_part(api: &str, key: &str, clip: &Path) -> (String, u64) {
    let length = std::fs::metadata(clip).unwrap().len();
    let parts = length.div_ceil(5 << 20);
    assert!(parts >= 3, "{length} bytes");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let id = runtime.block_on(async {
        let client = tcoder::api::Client::new(api, key).unwrap();
        let request = tcoder::jobs::JobRequest {
            preset: Some("hls".into()),
            qualities: Some(serde_json::json!(["144p"])),
            content_length: Some(length),
            ..Default::default()
        };
        let created = client.create_job(&request, None).await.unwrap();
        let view = created.multipart_upload.clone().expect("a multipart upload");
        assert_eq!(u64::from(view.part_count), parts);
        let first = &view.parts[0];
        let signed = first.upload.headers.iter().filter(|(name, _)| *name != "content-length");
        let mut request = reqwest::Client::new().put(&first.upload.url);
        for (name, value) in signed {
            request = request.header(name, value);
        }
        let bytes = std::fs::read(clip).unwrap()[..usize::try_from(first.size).unwrap()].to_vec();
        assert!(request.body(bytes).send().await.unwrap().status().is_success());
        created.job.id.to_string()
    });
    (id, parts)
}

/// `tcoder submit --wait` (reading the key `tcoder up` wrote) uploads the file to the embedded
/// store; the dispatcher queues it, the worker transcodes it, and the command prints the result.
pub(crate) fn submit_transcodes_a_video_with_the_stacks_key(
    data_dir: &Path,
    api: &str,
) -> serde_json::Value {
    // From another folder, with neither flags nor a data dir: the profile `tcoder up` wrote
    // says where the API is and which key to use.
    let elsewhere = tempfile::tempdir().unwrap();
    let profile = crate::profile_of(data_dir);
    assert!(profile.contains(api), "{profile}");
    let tcoder = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tcoder"))
            .args(args)
            .current_dir(elsewhere.path())
            .env("TCODER_PROFILE", data_dir.join("cli.toml"))
            .output()
            .unwrap()
    };
    let clip = testkit::media::tiny_mp4();
    // The README's quick start: submit, wait, get renditions.
    let submitted = tcoder(&[
        "submit",
        clip.to_str().unwrap(),
        "--preset",
        "hls",
        "--quality",
        "144p",
        "--metadata",
        "order=42",
        "--wait",
        "--json",
        "--timeout",
        "2m",
    ]);
    assert!(submitted.status.success(), "{}", String::from_utf8_lossy(&submitted.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&submitted.stdout).unwrap();
    assert_eq!(summary["status"], "completed", "{summary}");
    let id = summary["id"].as_str().unwrap().to_owned();
    let master = summary["result"]["hls_master"].as_str().unwrap();
    assert!(master.ends_with(&format!("/outputs/local/{id}/1/hls/master.m3u8")), "{master}");
    // The renditions are in the embedded store, under the winning epoch.
    let stored = data_dir.join(format!("objects/tcoder/outputs/local/{id}/1/hls/master.m3u8"));
    let playlist = std::fs::read_to_string(&stored).unwrap();
    // The 4:3 clip keeps its aspect ratio: 144p is 192x144.
    assert!(playlist.contains("RESOLUTION=192x144"), "{playlist}");

    let shown = tcoder(&["status", &id]);
    let job: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(job["source"]["size"], std::fs::metadata(&clip).unwrap().len());
    assert_eq!(job["preset"], "hls");
    assert_eq!(job["metadata"]["order"], "42");

    // `follow` on a finished job replays its events to the end and prints the summary.
    let followed = tcoder(&["follow", &id]);
    assert!(followed.status.success(), "{}", String::from_utf8_lossy(&followed.stderr));
    let text = String::from_utf8_lossy(&followed.stdout);
    assert!(text.starts_with(&format!("job {id} completed\n")), "{text}");
    let master_key = master.split_once("/outputs/").unwrap().1;
    assert!(text.contains(master_key) && text.contains("144p"), "{text}");

    // `download` fetches every file the manifest lists, with the listed sizes.
    let target = tempfile::tempdir().unwrap();
    let fetched = tcoder(&["download", &id, target.path().to_str().unwrap()]);
    assert!(fetched.status.success(), "{}", String::from_utf8_lossy(&fetched.stderr));
    let manifest_key =
        format!("{}{}", job["result"]["prefix"].as_str().unwrap(), tcoder::jobs::MANIFEST_FILE);
    let manifest: tcoder::jobs::JobResult = serde_json::from_slice(
        &std::fs::read(data_dir.join("objects/tcoder").join(&manifest_key)).unwrap(),
    )
    .unwrap();
    assert!(!manifest.files.is_empty());
    for file in &manifest.files {
        let relative = file.key.strip_prefix(&manifest.prefix).unwrap();
        let size = std::fs::metadata(target.path().join(relative)).map(|m| m.len());
        assert_eq!(size.ok(), Some(file.bytes), "{relative}");
    }
    let listed = tcoder(&["jobs"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&id));
    job
}

/// The stack's event producer (`producer-local`, nats-py + boto3, docs/examples) gets a job
/// for a file it put in the store, and may not submit for another tenant; a watch folder
/// added with `tcoder watch add` turns a file boto3 puts into the embedded store into a job
/// with the rule's parameters.
fn producers_and_watch_folders_work_on_the_stack(
    data_dir: &Path,
    summary: &HashMap<String, (String, Option<u32>)>,
) {
    let tcoder = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_tcoder"))
            .args(args)
            .env("TCODER_PROFILE", data_dir.join("cli.toml"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let wait_completed = |id: &str| {
        testkit::eventually(Duration::from_secs(90), || {
            let job: serde_json::Value = serde_json::from_str(&tcoder(&["status", id])).unwrap();
            if job["status"] == "completed" { Ok(job) } else { Err(job["status"].clone()) }
        })
    };
    let password = std::fs::read_to_string(data_dir.join("nats-producer-password")).unwrap();
    let password = password.trim();
    let credentials = std::fs::read_to_string(data_dir.join("s3-credentials")).unwrap();
    let (key_id, secret) = credentials.trim().split_once(':').unwrap();
    let store = summary["object store"].0.clone();
    let nats = summary["nats"].0.clone();
    let clip = testkit::media::tiny_mp4();

    let reply = testkit::contracts::run_producer(
        &[
            clip.to_str().unwrap(),
            "--tenant",
            "local",
            "--nats",
            &nats,
            "--user",
            "producer-local",
            "--password",
            password,
            "--s3-endpoint",
            &store,
            "--job",
            r#"{"preset": "web-optimized", "qualities": ["144p"]}"#,
        ],
        &[("AWS_ACCESS_KEY_ID", key_id), ("AWS_SECRET_ACCESS_KEY", secret)],
    );
    let id = reply["job_id"].as_str().unwrap_or_else(|| panic!("{reply}")).to_owned();
    let job = wait_completed(&id);
    assert_eq!(job["origin"]["kind"], "nats");
    assert_eq!(job["preset"], "web-optimized");
    // Another tenant's subject is refused by the server itself.
    let producer =
        format!("{{\"verbose\":false,\"user\":\"producer-local\",\"pass\":\"{password}\"}}");
    let (_, forged) = nats_session(addr(&nats), &producer, "PUB tcoder.submit.other 2\r\nhi\r\n");
    assert!(forged.contains("Permissions Violation for Publish"), "{forged}");
    // It follows its own tenant's events, and no other tenant's.
    let (_, others) = nats_session(addr(&nats), &producer, "SUB tcoder.events.other.> 1\r\n");
    assert!(others.contains("Permissions Violation for Subscription"), "{others}");
    let (_, everyone) = nats_session(addr(&nats), &producer, "SUB tcoder.events.> 1\r\n");
    assert!(everyone.contains("Permissions Violation for Subscription"), "{everyone}");
    let (_, own) = nats_session(addr(&nats), &producer, "SUB tcoder.events.local.> 1\r\n");
    assert!(!own.contains("-ERR"), "{own}");

    let added = tcoder(&[
        "watch",
        "add",
        "incoming",
        "--prefix",
        "incoming/local/",
        "--tenant",
        "local",
        "--job",
        r#"{"preset": "hls", "qualities": ["144p"]}"#,
    ]);
    assert!(added.contains("watching incoming/local/"), "{added}");
    assert!(tcoder(&["watch", "list"]).contains("incoming  incoming/local/  tenant=local"));
    let python = testkit::workspace_root().join(".tools/venv/bin/python");
    let put = Command::new(python)
        .args([
            "-c",
            "import boto3,sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='auto').upload_file(sys.argv[2], 'tcoder', 'incoming/local/phone.mp4')",
            &store,
            clip.to_str().unwrap(),
        ])
        .env("AWS_ACCESS_KEY_ID", key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .output()
        .unwrap();
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let watched = testkit::eventually(Duration::from_secs(30), || {
        let listed = tcoder(&["jobs"]);
        let line = listed.lines().find(|line| line.contains(" watch:incoming "));
        line.and_then(|l| l.split_whitespace().next()).map(str::to_owned).ok_or(listed)
    });
    let job = wait_completed(&watched);
    assert_eq!(
        (&job["preset"], &job["source"]["key"]),
        (&"hls".into(), &"incoming/local/phone.mp4".into())
    );
    assert!(tcoder(&["watch", "remove", "incoming"]).contains("removed incoming"));
}

/// One NATS session: the server's INFO line, then what it answers (until its PONG) to
/// `CONNECT <connect>` followed by `commands` and a PING.
fn nats_session(addr: SocketAddr, connect: &str, commands: &str) -> (String, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut info = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    info.read_line(&mut line).unwrap();
    stream.write_all(format!("CONNECT {connect}\r\n{commands}PING\r\n").as_bytes()).unwrap();
    let mut answer = String::new();
    let mut buf = [0u8; 1024];
    while !answer.contains("PONG") && !answer.contains("-ERR 'Authorization") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    (line, answer)
}

/// Every file and folder under `dir`.
fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walkdir(&path));
        }
        found.push(path);
    }
    found
}

/// `curl` (no credentials) with `extra` arguments: (status, headers lower-cased, body).
pub(crate) fn curl(url: &str, extra: &[&str]) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let output = Command::new("curl")
        .args(["-sS", "-o", "-", "-D"])
        .arg(&headers)
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(output.status.success(), "curl {url}: {}", String::from_utf8_lossy(&output.stderr));
    let head = std::fs::read_to_string(&headers).unwrap().to_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, output.stdout)
}

/// Delivery out of the box: the result URLs work in real clients without credentials (curl,
/// ffprobe over HTTP), with the right headers; pages on another origin may call the API and
/// the store.
fn results_play_without_credentials_and_pages_may_call(
    job: &serde_json::Value,
    summary: &HashMap<String, (String, Option<u32>)>,
) {
    let master = job["result"]["hls_master"].as_str().unwrap();
    let (status, headers, body) = curl(master, &[]);
    assert_eq!(status, 200, "{headers}");
    assert!(headers.contains("content-type: application/vnd.apple.mpegurl"), "{headers}");
    assert!(!headers.contains("content-encoding"), "{headers}");
    let master_text = String::from_utf8(body).unwrap();
    let variant = master_text.lines().find(|l| l.ends_with(".m3u8")).unwrap();
    let base = master.rsplit_once('/').unwrap().0;
    let media = format!("{base}/{variant}");
    let (status, headers, body) = curl(&media, &[]);
    assert_eq!(status, 200, "{headers}");
    let playlist = String::from_utf8(body).unwrap();
    let segment = playlist.lines().find(|l| l.ends_with(".m4s")).unwrap();
    let segment = format!("{}/{segment}", media.rsplit_once('/').unwrap().0);
    let (status, headers, body) = curl(&segment, &["-H", "Range: bytes=0-99"]);
    assert_eq!((status, body.len()), (206, 100), "{headers}");
    assert!(headers.contains("content-range: bytes 0-99/"), "{headers}");
    assert!(headers.contains("content-type: video/iso.segment"), "{headers}");
    assert!(headers.contains("cache-control: public, max-age=31536000, immutable"), "{headers}");
    assert!(!headers.contains("content-encoding"), "{headers}");
    // A player (ffprobe over HTTP) finds every variant from the master URL.
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=nb_programs", "-of", "csv=p=0", master])
        .output()
        .unwrap();
    assert!(probe.status.success(), "{}", String::from_utf8_lossy(&probe.stderr));
    let variants = master_text.matches("#EXT-X-STREAM-INF").count();
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), variants.to_string());
    // And from the job's stable URL (no epoch in it): the same title, as long.
    let stable =
        format!("{}/v1/jobs/{}/hls/master.m3u8", summary["api"].0, job["id"].as_str().unwrap());
    let duration = |url: &str| {
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", url])
            .output()
            .unwrap();
        assert!(probe.status.success(), "{url}: {}", String::from_utf8_lossy(&probe.stderr));
        String::from_utf8_lossy(&probe.stdout).trim().parse::<f64>().unwrap()
    };
    assert!((duration(&stable) - duration(master)).abs() < 1e-3, "{stable}");
    // Uploads stay signed.
    let upload = master.replace("/outputs/", "/uploads/");
    assert_eq!(curl(&upload, &[]).0, 403);
    // CORS preflights from another origin, to the store (a presigned PUT) and the API.
    let store = &summary["object store"].0;
    for (url, method) in [
        (format!("{store}/tcoder/uploads/x/y/source"), "PUT"),
        (format!("{}/v1/jobs", summary["api"].0), "POST"),
    ] {
        let (status, headers, _) = curl(
            &url,
            &[
                "-X",
                "OPTIONS",
                "-H",
                "Origin: https://app.example",
                "-H",
                &format!("Access-Control-Request-Method: {method}"),
                "-H",
                "Access-Control-Request-Headers: content-type",
            ],
        );
        assert!((200..300).contains(&status), "{url}: {headers}");
        assert!(headers.contains("access-control-allow-origin: *"), "{url}: {headers}");
        assert!(headers.contains("access-control-allow-methods:"), "{url}: {headers}");
    }
}

/// `delivery = "signed"`: outputs are private; the job's URLs are signed playback URLs that
/// play through every playlist and segment, and stop working when they expire.
#[test]
fn signed_delivery_plays_through_the_whole_tree_and_expires() {
    let _stack = crate::one_stack_at_a_time();
    const SECRET: &str = "a-playback-secret-for-tests";
    let data = tempfile::tempdir().unwrap();
    let (mut up, lines) = spawn_up(
        data.path(),
        &[("TCODER__INGEST__DELIVERY", "signed"), ("TCODER__INGEST__PLAYBACK_SECRET", SECRET)],
    );
    let summary = read_summary(&lines);
    let job = submit_transcodes_a_video_with_the_stacks_key(data.path(), &summary["api"].0);
    let result = &job["result"];
    let master = result["hls_master"].as_str().unwrap();
    assert!(master.starts_with(&format!("{}/v1/play/", summary["api"].0)), "{master}");

    // A player opens the signed master and reaches every variant and segment through it.
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=nb_programs,duration",
            "-of",
            "json",
            master,
        ])
        .output()
        .unwrap();
    assert!(probe.status.success(), "{}", String::from_utf8_lossy(&probe.stderr));
    let probed: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    assert_eq!(probed["format"]["nb_programs"], 1, "{probed}");
    let (status, headers, body) = curl(master, &[]);
    assert_eq!(status, 200, "{headers}");
    let variant = String::from_utf8(body).unwrap();
    let variant = variant.lines().find(|l| l.ends_with(".m3u8")).unwrap().to_owned();
    let media = format!("{}/{variant}", master.rsplit_once('/').unwrap().0);
    let (_, _, playlist) = curl(&media, &[]);
    let segment = String::from_utf8(playlist).unwrap();
    let segment = segment.lines().find(|l| l.ends_with(".m4s")).unwrap().to_owned();
    let segment = format!("{}/{segment}", media.rsplit_once('/').unwrap().0);
    let (status, headers, body) = curl(&segment, &["-H", "Range: bytes=0-9"]);
    assert_eq!((status, body.len()), (206, 10), "{headers}");
    // A range past the end is the client's mistake (416), not an outage (503).
    let (status, headers, _) = curl(&segment, &["-H", "Range: bytes=999999999-"]);
    assert_eq!(status, 416, "{headers}");
    // A key that climbs out of the token's attempt names nothing: 403, never another object.
    let (token, rest) = master.split_once("/v1/play/").unwrap().1.split_once('/').unwrap();
    let tenant_job = rest.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    for climbing in [
        format!("{tenant_job}/1/../../../../uploads/local/x/source"),
        format!("{tenant_job}/1/%2e%2e/%2e%2e/%2e%2e/%2e%2e/uploads/local/x/source"),
    ] {
        let url = format!("{}/v1/play/{token}/{climbing}", summary["api"].0);
        let (status, headers, _) = curl(&url, &["--path-as-is"]);
        assert!(status == 403 || status == 404, "{climbing}: {status} {headers}");
    }

    // The object's own URL in the store is not public in this mode.
    let key = master.split_once("/v1/play/").unwrap().1.split_once('/').unwrap().1;
    let store = &summary["object store"].0;
    assert_eq!(curl(&format!("{store}/tcoder/{key}"), &[]).0, 403);
    // A forged, another attempt's, or an expired token: 403.
    let prefix = result["prefix"].as_str().unwrap();
    let api = &summary["api"].0;
    let expired = tcoder::playback::sign(SECRET.as_bytes(), prefix, 1);
    let forged = tcoder::playback::sign(b"not-the-secret-at-all", prefix, u64::MAX / 2);
    for token in [expired, forged] {
        assert_eq!(curl(&format!("{api}/v1/play/{token}/{key}"), &[]).0, 403, "{token}");
    }

    let (status, in_time) = up.terminate(Duration::from_secs(30)).expect("tcoder up was running");
    assert!(in_time && status.success(), "{status}");
}

/// The README's way to keep a log, `tcoder up 2>&1 | tee up.log`, then Ctrl-C while a job runs:
/// the terminal's SIGINT reaches `tcoder up` and `tee` (one process group), so `tee` is gone
/// while the stack is still stopping and every later line meets a closed pipe. `tcoder up`
/// still exits 0 after stopping every part cleanly: the worker releases its job, nats-server and
/// redis-server log a clean shutdown, and the job completes once the stack is up again.
#[test]
fn ctrl_c_through_tee_stops_cleanly_the_job_completes_after_restart_and_revocations_hold() {
    let _stack = crate::one_stack_at_a_time();
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("up.log");
    let (reader, writer) = std::io::pipe().unwrap();
    // Slow enough that the job is still running when Ctrl-C comes.
    let mut command = up_command(data.path(), &[("TCODER__WORKER__ENGINE__X264_PRESET", "medium")]);
    command.stdout(writer.try_clone().unwrap()).stderr(writer).process_group(0);
    let mut up = ChildProcess::spawn("tcoder up", &mut command).unwrap();
    let group = i32::try_from(up.pid()).unwrap();
    // tee joins tcoder up's process group, as both would be in a shell's foreground job.
    let mut tee = Command::new("tee");
    tee.arg(&log).stdin(reader).stdout(Stdio::null()).process_group(group);
    let tee = ChildProcess::spawn("tee", &mut tee).unwrap();
    drop(command); // our copies of the pipe's write end: tee sees EOF only when the stack's do

    let summary = testkit::eventually(Duration::from_secs(90), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("admin endpoints") { Ok(text) } else { Err(text) }
    });
    assert!(summary.contains("tcoder is up"), "{summary}");
    let tcoder = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_tcoder"))
            .args(args)
            .env("TCODER_PROFILE", data.path().join("cli.toml"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let clip = testkit::corpus::heavy_720p();
    // Without --wait, submit prints the job id once the upload is done.
    let id = tcoder(&["submit", clip.to_str().unwrap(), "--preset", "hls"]).trim().to_owned();
    let status =
        |id: &str| -> serde_json::Value { serde_json::from_str(&tcoder(&["status", id])).unwrap() };
    testkit::eventually(Duration::from_secs(120), || {
        let job = status(&id);
        if job["status"] == "running" { Ok(()) } else { Err(job["status"].to_string()) }
    });

    // Ctrl-C: SIGINT to the whole foreground group.
    // SAFETY: kill(2) on the process group of a child we spawned (it leads it).
    unsafe {
        libc::kill(-group, libc::SIGINT);
    }
    let exited = testkit::eventually(Duration::from_secs(60), || match up.try_status() {
        Some(status) => Ok(status),
        None => Err("tcoder up still stopping"),
    });
    assert!(exited.success(), "tcoder up exited with {exited}");
    drop(tee);
    let logs = data.path().join("logs");
    let nats = std::fs::read_to_string(logs.join("nats-server.log")).unwrap();
    assert!(nats.contains("Server Exiting"), "nats-server did not stop cleanly:\n{nats}");
    let redis = std::fs::read_to_string(logs.join("redis-server.log")).unwrap();
    assert!(
        redis.contains("ready to exit, bye bye"),
        "redis-server did not stop cleanly:\n{redis}"
    );

    // Up again on the same data: the released job is picked up and completes, once.
    let (mut again, lines) = spawn_up(data.path(), &[]);
    read_summary(&lines);
    let job = testkit::eventually(Duration::from_secs(180), || {
        let job = status(&id);
        if job["status"] == "completed" { Ok(job) } else { Err(job["status"].to_string()) }
    });
    assert_eq!(job["attempts"], 2, "released at Ctrl-C, then run again: {job}");
    assert_eq!(job["lost_attempts"], 0, "the first attempt was released, not lost: {job}");

    // The stack's key, revoked, stays revoked across a restart: the stack makes a new one.
    let old_key = std::fs::read_to_string(data.path().join("api-key")).unwrap();
    let revoked = Command::new(env!("CARGO_BIN_EXE_tcoder"))
        .args(["keys", "revoke", old_key.trim()])
        .env("TCODER_PROFILE", data.path().join("cli.toml"))
        .output()
        .unwrap();
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    let (exit, in_time) = again.terminate(Duration::from_secs(30)).unwrap();
    assert!(exit.success() && in_time, "{exit}");
    let (mut third, lines) = spawn_up(data.path(), &[]);
    let summary = read_summary(&lines);
    let new_key = std::fs::read_to_string(data.path().join("api-key")).unwrap();
    assert_ne!(new_key, old_key);
    let with_old = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("authorization: Bearer {}", old_key.trim()))
        .arg(format!("{}/v1/jobs", summary["api"].0))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&with_old.stdout), "401");
    assert_eq!(status(&id)["status"], "completed", "the new key (in the profile) works");
    let (exit, in_time) = third.terminate(Duration::from_secs(30)).unwrap();
    assert!(exit.success() && in_time, "{exit}");
}

/// `tcoder up` for a second stack leaves the per-user profile of another stack (whose data
/// folder exists) alone, and writes its own into its data folder, where `tcoder` run for that
/// folder finds it; once the other stack's folder is gone, the profile is this stack's.
#[test]
fn a_second_stack_does_not_repoint_the_cli_of_another() {
    let _stack = crate::one_stack_at_a_time();
    let home = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let user_profile = home.path().join(".config/tcoder/cli.toml");
    std::fs::create_dir_all(user_profile.parent().unwrap()).unwrap();
    let theirs = format!(
        "api = \"http://127.0.0.1:9\"\napi_key = \"tk_other\"\ndata_dir = \"{}\"\n",
        other.path().display()
    );
    std::fs::write(&user_profile, &theirs).unwrap();
    let data = tempfile::tempdir().unwrap();
    let start = || {
        let mut command = up_command(data.path(), &[]);
        command.env_remove("TCODER_PROFILE").env_remove("XDG_CONFIG_HOME").env("HOME", home.path());
        let (up, lines) = spawn_up_command(command);
        read_summary(&lines);
        up
    };
    let tcoder = |args: &[&str], data_dir: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tcoder"));
        command
            .args(args)
            .current_dir(home.path())
            .env_remove("TCODER_PROFILE")
            .env_remove("XDG_CONFIG_HOME")
            .env("HOME", home.path());
        if let Some(dir) = data_dir {
            command.env("TCODER__UP__DATA_DIR", dir);
        }
        command.output().unwrap()
    };

    let mut up = start();
    assert_eq!(std::fs::read_to_string(&user_profile).unwrap(), theirs, "repointed");
    let own: toml::Table = toml::from_str(&crate::profile_of(data.path())).unwrap();
    assert_eq!(own["data_dir"].as_str(), data.path().to_str());
    // For this stack's data folder, the commands reach this stack…
    let listed = tcoder(&["jobs"], Some(data.path()));
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    // …and elsewhere the user's profile still names the other one.
    let elsewhere = tcoder(&["jobs"], None);
    assert!(!elsewhere.status.success());
    assert!(String::from_utf8_lossy(&elsewhere.stderr).contains("127.0.0.1:9"));
    let (_, in_time) = up.terminate(Duration::from_secs(30)).unwrap();
    assert!(in_time);

    // The other stack's folder is gone: its profile is stale, and this stack takes it.
    drop(other);
    let mut up = start();
    let user: toml::Table =
        toml::from_str(&std::fs::read_to_string(&user_profile).unwrap()).unwrap();
    assert_eq!(user["data_dir"].as_str(), data.path().to_str());
    let anywhere = tcoder(&["jobs"], None);
    assert!(anywhere.status.success(), "{}", String::from_utf8_lossy(&anywhere.stderr));
    let (_, in_time) = up.terminate(Duration::from_secs(30)).unwrap();
    assert!(in_time);
}
