//! The engine as the worker runs it: a sandboxed child process, fed the malicious and
//! malformed corpus of docs/DESIGN.md ("Untrusted media").

use std::path::{Path, PathBuf};
use std::time::Duration;

use tcoder::engine::{
    EncoderSettings, EngineError, EngineJob, EngineRun, EngineSpec, ErrorCode, Limits,
    SandboxLimits, Supervisor,
};
use tcoder::jobs::{AutoLadder, OutputKind, Preset, Qualities, Quality, VideoCodec};
use testkit::corpus;
use tokio_util::sync::CancellationToken;

fn limits() -> SandboxLimits {
    SandboxLimits {
        memory_bytes: 4 << 30,
        cpu_secs: 600,
        file_size_bytes: 1 << 30,
        open_files: 256,
        wall_deadline: Duration::from_secs(120),
        deadline_per_media_second: 20.0,
        deadline_base: Duration::from_secs(60),
    }
}

fn supervisor(limits: SandboxLimits) -> Supervisor {
    Supervisor {
        program: PathBuf::from(env!("CARGO_BIN_EXE_tcoder-worker")),
        args: vec!["engine".into()],
        limits,
    }
}

fn hls_spec() -> EngineSpec {
    EngineSpec::new(
        Preset::Hls,
        Qualities::Auto(AutoLadder::Auto),
        &[OutputKind::Hls, OutputKind::Thumbnails],
    )
}

/// A job directory like the worker's: `<dir>/in/source` (a copy of `source`) and `<dir>/out`.
fn job_dir(root: &Path, source: &Path) -> (PathBuf, EngineJob) {
    let dir = root.join("job");
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::copy(source, dir.join("in/source")).unwrap();
    let job = EngineJob {
        input: dir.join("in/source"),
        output_dir: dir.join("out"),
        spec: hls_spec(),
        limits: Limits::default(),
        settings: EncoderSettings {
            x264_preset: "ultrafast".into(),
            segment_secs: 2.0,
            threads: 0,
        },
        task: Default::default(),
        sidecars: Vec::new(),
        ladder: None,
    };
    (dir, job)
}

async fn run_with(
    source: &Path,
    limits: SandboxLimits,
    adjust: impl FnOnce(&mut EngineJob),
) -> Result<EngineRun, EngineError> {
    let root = tempfile::tempdir().unwrap();
    let (dir, mut job) = job_dir(root.path(), source);
    adjust(&mut job);
    supervisor(limits).run(&job, &dir, None, CancellationToken::new()).await
}

async fn run(source: &Path) -> Result<EngineRun, EngineError> {
    run_with(source, limits(), |_| {}).await
}

#[tokio::test]
async fn valid_inputs_transcode_inside_an_isolated_network() {
    for source in [corpus::ok_mp4(), corpus::ok_webm(), corpus::ok_hevc_mkv()] {
        let (progress_tx, mut progress) = tokio::sync::mpsc::channel(16);
        let root = tempfile::tempdir().unwrap();
        let (dir, job) = job_dir(root.path(), &source);
        let done =
            supervisor(limits()).run(&job, &dir, Some(progress_tx), CancellationToken::new()).await;
        let done = done.unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        assert!(done.sandbox.network_isolated, "the engine must run without network");
        assert!(done.cpu_secs > 0.0);
        assert!(progress.try_recv().is_ok(), "progress is reported");
        assert!(done.report.hls_master.is_some());
    }
}

/// The job's caption files are read inside the sandbox (they lie in the job folder, like the
/// source, and are named from it), and one that is not text is left out with a warning, not a failure.
#[tokio::test]
async fn caption_files_are_read_inside_the_sandbox() {
    let root = tempfile::tempdir().unwrap();
    // As a service's data folder is: closed to other users, the sandbox uid included — so
    // the engine reaches the job's files only through the job folder it starts in.
    std::fs::set_permissions(root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .unwrap();
    let (dir, mut job) = job_dir(root.path(), &corpus::ok_mp4());
    std::fs::write(dir.join("in/caption-0"), "WEBVTT\n\n00:00:00.100 --> 00:00:00.500\nInside\n")
        .unwrap();
    std::fs::copy(corpus::ok_mp4(), dir.join("in/caption-1")).unwrap();
    job.spec.captions = ["en", "de"]
        .map(|code| tcoder::engine::plan::CaptionLabel {
            language: tcoder::engine::TrackLanguage::parse(code).unwrap(),
            name: tcoder::engine::TrackName::clean(code).unwrap(),
            default: false,
            forced: false,
        })
        .to_vec();
    job.sidecars = ["in/caption-0", "in/caption-1"]
        .map(|name| tcoder::engine::SidecarFile::Fetched(dir.join(name)))
        .to_vec();
    let done = supervisor(limits()).run(&job, &dir, None, CancellationToken::new()).await.unwrap();
    assert_eq!(done.report.captions.len(), 1, "{:?}", done.report.media.warnings);
    let vtt = std::fs::read_to_string(job.output_dir.join(&done.report.captions[0].vtt)).unwrap();
    assert!(vtt.contains("\nInside\n"), "{vtt}");
    let warnings = &done.report.media.warnings;
    assert!(warnings.len() == 1 && warnings[0].contains("SRT or WebVTT"), "{warnings:?}");
}

#[tokio::test]
async fn each_corpus_file_gets_its_expected_class() {
    let cases: Vec<(PathBuf, &[ErrorCode])> = vec![
        (corpus::zero(), &[ErrorCode::Corrupt]),
        (corpus::text(), &[ErrorCode::UnsupportedFormat]),
        (corpus::trunc_header(), &[ErrorCode::Corrupt]),
        (corpus::trunc50(), &[ErrorCode::Corrupt]),
        (corpus::long_lie(), &[ErrorCode::TooLong]),
        (corpus::fps_bomb(), &[ErrorCode::UnsupportedFrameRate]),
        (corpus::streams_bomb(), &[ErrorCode::TooManyStreams]),
        (corpus::magic(), &[ErrorCode::UnsupportedCodec]),
        (corpus::sub_only(), &[ErrorCode::NoVideo]),
        (corpus::audio_only(), &[ErrorCode::NoVideo]),
    ];
    for (source, expected) in cases {
        let error =
            run(&source).await.err().unwrap_or_else(|| panic!("{} must fail", source.display()));
        assert!(expected.contains(&error.code), "{}: got {error}", source.display());
    }
}

#[tokio::test]
async fn corrupted_and_odd_timestamps_never_crash_or_pass_short() {
    // Bit flips: either rejected as corrupt or transcoded within the error budget and full length.
    match run(&corpus::bitflip()).await {
        Ok(done) => assert!(done.report.decode_errors > 0),
        Err(error) => assert_eq!(error.code, ErrorCode::Corrupt, "{error}"),
    }
    let weird = run(&corpus::vfr_weird()).await;
    if let Err(error) = &weird {
        assert!(error.code.as_str().starts_with("input."), "a clear input error, not {error}");
    }
}

#[tokio::test]
async fn playlists_and_concat_scripts_reach_neither_the_network_nor_other_files() {
    let canary = testkit::Canary::start();
    let root = tempfile::tempdir().unwrap();
    let (canary_video, cross) = corpus::cross_tenant(root.path());
    let mut sources = vec![corpus::ssrf(root.path(), canary.port()), corpus::lfi_hls(root.path())];
    sources.extend(cross);
    sources.extend(corpus::concat_tricks(root.path()));
    let canary_bytes = std::fs::read(&canary_video).unwrap();
    for source in sources {
        let workdir = tempfile::tempdir().unwrap();
        let (dir, job) = job_dir(workdir.path(), &source);
        let error =
            supervisor(limits()).run(&job, &dir, None, CancellationToken::new()).await.err();
        let error = error.unwrap_or_else(|| panic!("{} must be rejected", source.display()));
        assert_eq!(error.code, ErrorCode::UnsupportedFormat, "{}: {error}", source.display());
        // Nothing of the canary reaches an output.
        for entry in walk(&dir.join("out")) {
            let bytes = std::fs::read(&entry).unwrap();
            assert!(
                !contains(&bytes, &canary_bytes[..4096]),
                "{} leaked into {}",
                canary_video.display(),
                entry.display()
            );
        }
    }
    assert_eq!(canary.hits(), 0, "the SSRF canary was contacted");
}

#[tokio::test]
async fn the_16k_bomb_is_refused_before_decode_with_bounded_memory() {
    let root = tempfile::tempdir().unwrap();
    let (dir, job) = job_dir(root.path(), &corpus::bomb16k());
    let started = std::time::Instant::now();
    let error =
        supervisor(limits()).run(&job, &dir, None, CancellationToken::new()).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::TooLargeDimensions, "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Under a 320 MiB address-space limit (barely enough to load the engine, far too little
    // for one 16000x16000 frame) it is refused the same way: no frame is ever allocated.
    let tight = SandboxLimits { memory_bytes: 320 << 20, ..limits() };
    let error = run_with(&corpus::bomb16k(), tight, |_| {}).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::TooLargeDimensions, "{error}");
}

#[tokio::test]
async fn a_hanging_engine_is_killed_at_its_deadline() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("job");
    std::fs::create_dir_all(dir.join("in")).unwrap();
    // A FIFO nobody writes: opening it blocks forever.
    let fifo = dir.join("in/source");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let job = EngineJob {
        input: fifo,
        output_dir: dir.join("out"),
        spec: hls_spec(),
        limits: Limits::default(),
        settings: EncoderSettings::default(),
        task: Default::default(),
        sidecars: Vec::new(),
        ladder: None,
    };
    let deadline = SandboxLimits { wall_deadline: Duration::from_secs(2), ..limits() };
    let started = std::time::Instant::now();
    // A descriptor opened without close-on-exec, as a careless library in the worker might.
    // SAFETY: open(2) of a NUL-terminated path; closed below.
    let stray = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
    assert!(stray > 2);
    let supervisor = supervisor(deadline);
    let run = supervisor.run(&job, &dir, None, CancellationToken::new());
    // While it hangs, look at the child as the kernel sees it: no capabilities, a seccomp
    // filter, its own namespaces, no core dumps, nothing inherited but its three pipes. The
    // child forks once (its PID namespace applies to children): the engine is the grandchild.
    let inspect = async {
        testkit::eventually_async(Duration::from_secs(5), || async {
            // This test's engine: other tests of this process run servers and workers too.
            let in_job = |pid: &u32| {
                std::fs::read_link(format!("/proc/{pid}/cwd")).ok() == dir.canonicalize().ok()
            };
            let children: Vec<u32> = crate::harness::engine_children(std::process::id())
                .into_iter()
                .filter(in_job)
                .collect();
            let Some(engine) =
                children.iter().flat_map(|pid| crate::harness::engine_children(*pid)).find(in_job)
            else {
                return Err("no sandboxed engine yet");
            };
            let children = [children, vec![engine]].concat();
            let read = |file: &str| {
                children
                    .iter()
                    .find_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok())
            };
            // Descriptors above stderr with what they point at; the engine may briefly hold a
            // file of its own job, so the check is on what it could only have inherited.
            let fds: Option<Vec<(u32, String)>> = children.iter().find_map(|pid| {
                let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
                Some(
                    entries
                        .flatten()
                        .filter_map(|e| {
                            let fd: u32 = e.file_name().to_str()?.parse().ok()?;
                            let target = std::fs::read_link(e.path()).ok()?;
                            (fd > 2).then(|| (fd, target.display().to_string()))
                        })
                        .collect(),
                )
            });
            // The engine installs its seccomp filter last; wait for that moment and no longer
            // (an engine that never does fails this wait).
            let engine_status = std::fs::read_to_string(format!("/proc/{engine}/status"));
            let namespaces: Vec<(&str, Option<std::path::PathBuf>)> =
                ["user", "net", "mnt", "pid", "ipc", "uts"]
                    .into_iter()
                    .map(|ns| (ns, std::fs::read_link(format!("/proc/{engine}/ns/{ns}")).ok()))
                    .collect();
            match (engine_status, read("limits"), fds) {
                (Ok(status), Some(limits), Some(fds)) if status.contains("Seccomp:\t2") => {
                    Ok((status, limits, fds, namespaces))
                }
                _ => Err("no engine under its seccomp filter yet"),
            }
        })
        .await
    };
    let (error, (status, limits, fds, namespaces)) = tokio::join!(run, inspect);
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(stray) };
    assert!(
        !fds.iter().any(|(_, target)| {
            target == "/dev/null"
                || target.starts_with("socket:")
                || target.starts_with("anon_inode:")
        }),
        "the child kept inherited descriptors: {fds:?}"
    );
    let error = error.unwrap_err();
    assert_eq!(error.code, ErrorCode::Timeout, "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let cap = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert_eq!(cap("CapEff:"), "0000000000000000", "{status}");
    assert_eq!(cap("CapBnd:"), "0000000000000000", "{status}");
    assert_eq!(cap("NoNewPrivs:"), "1", "{status}");
    assert_eq!(cap("Seccomp:"), "2", "{status}");
    // A worker running as root hands the job to an unprivileged uid.
    // SAFETY: geteuid(2) cannot fail.
    let expected_uid = match unsafe { libc::geteuid() } {
        0 => tcoder::engine::protocol::SANDBOX_UID,
        uid => uid,
    };
    assert_eq!(cap("Uid:"), expected_uid.to_string(), "{status}");
    // Its own namespaces: none shared with the worker (this test process).
    for (ns, its) in namespaces {
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(its, Some(ours), "the engine shares the worker's {ns} namespace");
    }
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
}

#[tokio::test]
async fn resource_limits_bite_with_their_own_classes() {
    let heavy = corpus::heavy_720p();
    let cpu = SandboxLimits { cpu_secs: 1, ..limits() };
    let error =
        run_with(&heavy, cpu, |job| job.settings.x264_preset = "medium".into()).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::Cpu, "{error}");

    let disk = SandboxLimits { file_size_bytes: 64 * 1024, ..limits() };
    let error = run_with(&heavy, disk, |job| {
        job.spec.preset = Preset::WebOptimized;
        job.spec.qualities = Qualities::List(vec![Quality::P720]);
        job.spec.outputs = vec![OutputKind::Mp4];
    })
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::Disk, "{error}");

    // A deadline scaled to the probed duration: 0.05 s per media second for a 10 s clip.
    let scaled = SandboxLimits {
        deadline_base: Duration::ZERO,
        deadline_per_media_second: 0.05,
        ..limits()
    };
    let error = run_with(&heavy, scaled, |_| {}).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::Timeout, "{error}");

    let memory = SandboxLimits { memory_bytes: 400 << 20, ..limits() };
    let error = run_with(&heavy, memory, |_| {}).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::Memory, "{error}");
}

#[tokio::test]
async fn cancellation_stops_the_engine_at_once() {
    let root = tempfile::tempdir().unwrap();
    let (dir, job) = job_dir(root.path(), &corpus::heavy_720p());
    let cancel = CancellationToken::new();
    let (progress_tx, mut progress) = tokio::sync::mpsc::channel(16);
    let running = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            supervisor(limits()).run(&job, &dir, Some(progress_tx), cancel).await
        })
    };
    // Cancel once it is really encoding.
    tokio::time::timeout(Duration::from_secs(30), progress.recv()).await.unwrap();
    let canceled_at = std::time::Instant::now();
    cancel.cancel();
    let error = running.await.unwrap().unwrap_err();
    assert_eq!(error.code, ErrorCode::Canceled);
    assert!(canceled_at.elapsed() < Duration::from_secs(1));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What an exploited decoder would try, from inside the engine's sandbox (`tcoder-worker
/// sandbox-check` enters the same one): no socket of any kind, no `setns` or `unshare`, no
/// ptrace or exec, no file outside its folder — only its own folder is writable.
#[test]
fn inside_the_sandbox_sockets_namespaces_and_other_files_are_refused() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tcoder-worker"))
        .arg("sandbox-check")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let check: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let sandbox = &check["sandbox"];
    assert_eq!(sandbox["missing"], serde_json::json!([]), "{check}");
    for layer in ["network_isolated", "namespaces", "user_namespace", "no_capabilities", "seccomp"]
    {
        assert_eq!(sandbox[layer], true, "{layer}: {check}");
    }
    assert_eq!(sandbox["landlock"], "enforced", "{check}");
    let probes = check["probes"].as_object().unwrap();
    for (probe, answer) in probes {
        let answer = answer.as_str().unwrap();
        if probe == "write_inside" {
            assert_eq!(answer, "allowed");
        } else {
            assert!(answer.starts_with("refused"), "{probe}: {answer}");
        }
    }
    // clone3's flags are out of the filter's reach: "not implemented", so threads fall back
    // to clone, whose flags it checks.
    assert!(probes["clone3"].as_str().unwrap().contains("os error 38)"), "{check}");
    // Refused by the seccomp filter itself (EPERM before the kernel looks at the arguments).
    for probe in ["socket_inet", "setns", "unshare"] {
        assert!(probes[probe].as_str().unwrap().contains("os error 1)"), "{probe}: {check}");
    }
}

/// The sandbox takes nothing an ordinary file needs: every everyday file (phones, cameras,
/// screen recorders, broadcast and legacy containers) comes out of the confined engine as it
/// does unconfined — played, or refused with its own `input.*` code, never a denied call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyday_files_transcode_inside_the_sandbox() {
    let mut failures = Vec::new();
    for case in testkit::everyday::all() {
        let outcome = run(&case.path).await;
        match (case.expect, outcome) {
            (testkit::everyday::Expect::Plays { .. }, Ok(_)) => {}
            (testkit::everyday::Expect::Refused(code), Err(e)) if e.code.as_str() == code => {}
            (expected, got) => {
                failures.push(format!("{}: expected {expected:?}, got {got:?}", case.name))
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The options that read the source a second time inside the confined engine — loudness
/// normalisation (a measuring pass), HDR kept (the first picture's mastering metadata) — and
/// the tone mapping's filters: all work under the sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_passes_and_tone_mapping_work_inside_the_sandbox() {
    let normalised = run_with(&testkit::everyday::quiet_recording(), limits(), |job| {
        job.spec.loudness_target = Some(-16);
    })
    .await
    .unwrap();
    let loudness = normalised.report.loudness.expect("a loudness report");
    assert!((loudness.after.integrated_lufs + 16.0).abs() < 1.0, "{loudness:?}");
    let hdr = testkit::everyday::hdr(testkit::everyday::Transfer::Hlg);
    let kept = run_with(&hdr, limits(), |job| {
        job.spec.video_codec = VideoCodec::Hevc;
        job.spec.hdr = tcoder::jobs::HdrMode::Keep;
    })
    .await
    .unwrap();
    assert_eq!(kept.report.renditions[0].dynamic_range, tcoder::engine::DynamicRange::Hlg);
    let mapped = run(&hdr).await.unwrap();
    assert_eq!(mapped.report.renditions[0].dynamic_range, tcoder::engine::DynamicRange::Sdr);
}
