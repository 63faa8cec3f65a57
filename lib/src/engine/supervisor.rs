//! Runs the engine child under limits and watches it.
//!
//! The child gets its own process group (so the whole group can be killed), `no_new_privs`,
//! rlimits (address space, CPU seconds, file size, open files), the job directory as working
//! directory, and a wall-clock deadline. Its exit is classified: `limits.memory`,
//! `limits.cpu`, `limits.timeout`, `limits.disk`, `engine.crashed`, or whatever typed error
//! the child reported itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::protocol::{ChildMessage, EXIT_REPORTED_ERROR};
use super::{EngineError, EngineJob, EngineReport, ErrorCode, Progress};

/// Resource limits of one engine run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SandboxLimits {
    /// Address-space limit (RLIMIT_AS) in bytes.
    pub memory_bytes: u64,
    /// CPU-time limit (RLIMIT_CPU) in seconds, all threads together.
    pub cpu_secs: u64,
    /// Largest file the child may write (RLIMIT_FSIZE), in bytes.
    pub file_size_bytes: u64,
    /// Open file descriptors (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Wall-clock deadline; the process group is killed when it passes.
    pub wall_deadline: Duration,
    /// Once the source is probed, the deadline shrinks to `deadline_base` plus this many
    /// seconds per second of media (if that is earlier): a hang on a short clip is caught in
    /// minutes, not hours.
    pub deadline_per_media_second: f64,
    pub deadline_base: Duration,
}

/// How the engine child shares the machine's CPU with the worker's other children.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    #[default]
    Normal,
    /// The lowest: it takes only what children at [`Priority::Normal`] leave idle (their
    /// ramp-up, flushes and waits), so running it alongside them slows them hardly at all.
    Background,
}

impl Priority {
    /// The child's nice value.
    fn nice(self) -> libc::c_int {
        match self {
            Priority::Normal => 0,
            Priority::Background => 19,
        }
    }
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct EngineRun {
    pub report: EngineReport,
    /// User + system CPU seconds of the child and everything it ran.
    pub cpu_secs: f64,
    pub wall_secs: f64,
    pub max_rss_bytes: u64,
    /// How the child was confined.
    pub sandbox: super::protocol::SandboxReport,
}

/// Starts engine children.
#[derive(Debug, Clone)]
pub struct Supervisor {
    /// The program and arguments that run the child (e.g. `tcoder-worker engine`).
    pub program: PathBuf,
    pub args: Vec<String>,
    pub limits: SandboxLimits,
}

/// How the child ended, as seen by the reaper thread.
struct Exit {
    status: libc::c_int,
    cpu_secs: f64,
    max_rss_bytes: u64,
}

/// How long to wait for the rest of the child's stdout after it exited.
const STDOUT_DRAIN: Duration = Duration::from_secs(5);
const STDERR_TAIL: usize = 8 * 1024;

impl Supervisor {
    /// Runs `job` with `workdir` as the child's working directory. Progress goes to
    /// `progress` (best effort); `cancel` kills the child at once.
    ///
    /// Error messages reach job records, events and webhooks: any path of the worker's file
    /// system in them (the job directory, the source, the output folder) is replaced by a
    /// name relative to the job.
    pub async fn run(
        &self,
        job: &EngineJob,
        workdir: &Path,
        progress: Option<mpsc::Sender<Progress>>,
        cancel: CancellationToken,
    ) -> Result<EngineRun, EngineError> {
        self.run_at(Priority::Normal, job, workdir, progress, cancel).await
    }

    /// As [`Supervisor::run`], the child at `priority`.
    pub async fn run_at(
        &self,
        priority: Priority,
        job: &EngineJob,
        workdir: &Path,
        progress: Option<mpsc::Sender<Progress>>,
        cancel: CancellationToken,
    ) -> Result<EngineRun, EngineError> {
        self.run_in(priority, job, workdir, progress, cancel).await.map_err(|mut error| {
            error.message = scrub_paths(&error.message, &[&job.output_dir, &job.input, workdir]);
            error
        })
    }

    async fn run_in(
        &self,
        priority: Priority,
        job: &EngineJob,
        workdir: &Path,
        progress: Option<mpsc::Sender<Progress>>,
        cancel: CancellationToken,
    ) -> Result<EngineRun, EngineError> {
        #[cfg(feature = "bench")]
        if let Some(run) = super::bench::in_process(job) {
            return run;
        }
        let started = Instant::now();
        let mut child = self.spawn(priority, job, workdir)?;
        let watched = self.watch(&mut child, started, progress, cancel).await;
        let stderr = child.stderr_tail.join().unwrap_or_default();
        let exit = watched.exit.ok_or_else(|| {
            EngineError::new(ErrorCode::Crashed, "lost track of the engine process")
        })?;
        if let Some(code) = watched.killed {
            let message = match code {
                ErrorCode::Timeout => {
                    format!("killed at the {:?} wall-clock deadline", self.limits.wall_deadline)
                }
                _ => "canceled".to_owned(),
            };
            return Err(EngineError::new(code, message));
        }
        match (watched.outcome, classify(exit.status, exit.cpu_secs, &self.limits, &stderr)) {
            (Some(Ok(report)), None) => Ok(EngineRun {
                report: *report,
                cpu_secs: exit.cpu_secs,
                wall_secs: started.elapsed().as_secs_f64(),
                max_rss_bytes: exit.max_rss_bytes,
                sandbox: watched.sandbox,
            }),
            (Some(Err(error)), None) => Err(error),
            (_, Some(error)) => Err(error),
            (None, None) => Err(EngineError::new(
                ErrorCode::Crashed,
                format!("the engine exited without a result: {}", last_line(&stderr)),
            )),
        }
    }

    /// Starts the child sandboxed (own process group, no new privileges, death with the
    /// worker, rlimits, a cleared environment, `workdir` as its directory), hands it the job
    /// and starts the threads that read its output and reap it.
    fn spawn(
        &self,
        priority: Priority,
        job: &EngineJob,
        workdir: &Path,
    ) -> Result<RunningChild, EngineError> {
        hand_to_sandbox_user(workdir).map_err(|e| {
            EngineError::new(ErrorCode::Failed, format!("cannot prepare the job folder: {e}"))
        })?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir(workdir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.env_clear().env("PATH", "/usr/bin:/bin");
        #[cfg(feature = "bench")]
        command.envs(super::bench::forwarded_env());
        let limits = self.limits.clone();
        let nice = priority.nice();
        // SAFETY: only async-signal-safe calls (setpgid, prctl, setrlimit, setpriority) between
        // fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Own process group (killed as a whole), no privilege gain, and killed if the
                // worker dies (no orphaned encode burning CPU).
                if libc::setpgid(0, 0) != 0
                    || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                set_limit(libc::RLIMIT_AS, limits.memory_bytes, limits.memory_bytes)?;
                // Soft limit: SIGXCPU; hard limit a little later: SIGKILL.
                set_limit(libc::RLIMIT_CPU, limits.cpu_secs, limits.cpu_secs + 5)?;
                set_limit(libc::RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes)?;
                set_limit(libc::RLIMIT_NOFILE, limits.open_files, limits.open_files)?;
                // No core dumps: one would copy the process's memory (media, keys) to disk.
                set_limit(libc::RLIMIT_CORE, 0, 0)?;
                // Inherited by every thread the engine starts; raising it needs no privilege.
                if nice != 0 && libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| {
            EngineError::new(ErrorCode::Failed, format!("cannot start the engine: {e}"))
        })?;
        let pid = child.id() as libc::pid_t;
        let job_line = serde_json::to_string(job).expect("jobs serialize");
        if let Some(mut stdin) = child.stdin.take() {
            // The child reads one line; if it died already, the exit status tells why.
            let _ = writeln!(stdin, "{job_line}");
        }
        let (lines_tx, lines) = mpsc::unbounded_channel::<ChildMessage>();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(message) = serde_json::from_str(&line) {
                    let _ = lines_tx.send(message);
                }
            }
        });
        let mut stderr = child.stderr.take().expect("piped");
        let stderr_tail = std::thread::spawn(move || {
            let mut tail = Vec::new();
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buffer[..n]);
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            String::from_utf8_lossy(&tail).into_owned()
        });
        // The child is reaped with wait4 (not std's wait) to get its resource usage.
        std::mem::forget(child);
        let (exit_tx, exit) = tokio::sync::oneshot::channel::<Exit>();
        std::thread::spawn(move || {
            let _ = exit_tx.send(reap(pid));
        });
        Ok(RunningChild { pid, lines, stderr_tail, exit })
    }

    /// Follows the child until it exits: forwards progress, tightens the deadline once the
    /// source is probed, kills the process group at the deadline or on `cancel`, and keeps its
    /// last word (result or error).
    async fn watch(
        &self,
        child: &mut RunningChild,
        started: Instant,
        progress: Option<mpsc::Sender<Progress>>,
        cancel: CancellationToken,
    ) -> Watched {
        let deadline = tokio::time::sleep(self.limits.wall_deadline);
        tokio::pin!(deadline);
        let mut watched =
            Watched { outcome: None, sandbox: Default::default(), killed: None, exit: None };
        let lines = &mut child.lines;
        let exit = loop {
            tokio::select! {
                message = lines.recv(), if !lines.is_closed() => match message {
                    Some(ChildMessage::Sandbox(report)) => {
                        if !report.missing.is_empty() {
                            tracing::warn!(missing = ?report.missing, network_isolated = report.network_isolated, "the engine sandbox lacks layers this kernel refused");
                        }
                        watched.sandbox = report;
                    }
                    Some(ChildMessage::Probed { media }) => {
                        let budget = self.limits.deadline_base.as_secs_f64() + media.duration_secs * self.limits.deadline_per_media_second;
                        let tighter = started + Duration::from_secs_f64(budget.max(1.0));
                        if tighter < started + self.limits.wall_deadline {
                            deadline.as_mut().reset(tokio::time::Instant::from_std(tighter));
                        }
                    }
                    Some(ChildMessage::Progress(p)) => {
                        if let Some(tx) = &progress {
                            let _ = tx.try_send(p);
                        }
                    }
                    Some(message) => watched.last_word(message),
                    None => {}
                },
                exit = &mut child.exit => break exit.ok(),
                () = &mut deadline, if watched.killed.is_none() => {
                    kill_group(child.pid);
                    watched.killed = Some(ErrorCode::Timeout);
                }
                () = cancel.cancelled(), if watched.killed.is_none() => {
                    kill_group(child.pid);
                    watched.killed = Some(ErrorCode::Canceled);
                }
            }
        };
        // The rest of stdout: the exit status can arrive before the reader thread has read
        // and forwarded the final line (seen under load with fast jobs), so read until EOF —
        // which comes as soon as the process group is gone, bounded in case it is not.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(STDOUT_DRAIN, async {
            while let Some(message) = lines.recv().await {
                rest.push(message);
            }
        })
        .await;
        for message in rest {
            watched.last_word(message);
        }
        watched.exit = exit;
        watched
    }
}

/// A started engine child and the threads that follow it.
struct RunningChild {
    pid: libc::pid_t,
    /// Its stdout, line by line.
    lines: mpsc::UnboundedReceiver<ChildMessage>,
    /// The last few KiB of its stderr, once it closed.
    stderr_tail: std::thread::JoinHandle<String>,
    /// Its exit, from the reaper thread.
    exit: tokio::sync::oneshot::Receiver<Exit>,
}

/// What watching the child found out.
struct Watched {
    outcome: Option<Result<Box<EngineReport>, EngineError>>,
    sandbox: super::protocol::SandboxReport,
    /// Why we killed it, if we did.
    killed: Option<ErrorCode>,
    exit: Option<Exit>,
}

impl Watched {
    /// Keeps a result or error line (the last one counts).
    fn last_word(&mut self, message: ChildMessage) {
        match message {
            ChildMessage::Result { report } => self.outcome = Some(Ok(report)),
            ChildMessage::Error { error } => self.outcome = Some(Err(error)),
            _ => {}
        }
    }
}

/// `message` with every occurrence of `paths` (and whatever lies below them) replaced by the
/// part below the path, or by the file name for the path itself.
pub fn scrub_paths(message: &str, paths: &[&Path]) -> String {
    let mut scrubbed = message.to_owned();
    for path in paths {
        let Some(text) = path.to_str().filter(|t| t.len() > 1) else { continue };
        let text = text.trim_end_matches('/');
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        scrubbed = scrubbed.replace(&format!("{text}/"), "").replace(text, &name);
    }
    scrubbed
}

/// Hands `file`, written into a job folder after the engine started, to the user the engine
/// runs as (see [`SANDBOX_UID`](super::protocol::SANDBOX_UID)); nothing to do unless root.
pub fn give_to_engine(file: &Path) -> std::io::Result<()> {
    match running_as_root() {
        true => chown_to_sandbox_user(file),
        false => Ok(()),
    }
}

/// A worker running as root gives the job folder (and what the worker put in it) to the
/// sandbox uid the engine switches to: that uid owns nothing else. Otherwise nothing to do.
fn hand_to_sandbox_user(dir: &Path) -> std::io::Result<()> {
    fn hand_over(dir: &Path) -> std::io::Result<()> {
        chown_to_sandbox_user(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                hand_over(&entry.path())?;
            } else {
                chown_to_sandbox_user(&entry.path())?;
            }
        }
        Ok(())
    }
    match running_as_root() {
        true => hand_over(dir),
        false => Ok(()),
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn chown_to_sandbox_user(path: &Path) -> std::io::Result<()> {
    let (uid, gid) = (super::protocol::SANDBOX_UID, super::protocol::SANDBOX_GID);
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
    let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: setrlimit on the calling process.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn kill_group(pid: libc::pid_t) {
    // SAFETY: the child leads its own process group (setpgid in pre_exec).
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Waits for `pid` and returns its status and resource usage.
fn reap(pid: libc::pid_t) -> Exit {
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting for our own child.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid
            || (reaped < 0
                && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted)
        {
            break;
        }
    }
    // Its threads' and reaped descendants' usage is included; kill stragglers of the group.
    kill_group(pid);
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Exit {
        status,
        cpu_secs: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        max_rss_bytes: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
    }
}

fn last_line(stderr: &str) -> String {
    stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").to_owned()
}

/// Classifies an exit that is not a clean report; `None` when the child exited normally.
fn classify(
    status: libc::c_int,
    cpu_secs: f64,
    limits: &SandboxLimits,
    stderr: &str,
) -> Option<EngineError> {
    if libc::WIFEXITED(status) {
        let code = libc::WEXITSTATUS(status);
        if code == 0 || code == i32::from(EXIT_REPORTED_ERROR) {
            return None;
        }
        if ["memory allocation of", "failed to map segment", "Cannot allocate memory"]
            .iter()
            .any(|m| stderr.contains(m))
        {
            return Some(EngineError::new(
                ErrorCode::Memory,
                "out of memory (address-space limit)",
            ));
        }
        return Some(EngineError::new(
            ErrorCode::Crashed,
            format!("the engine exited with {code}: {}", last_line(stderr)),
        ));
    }
    let signal = libc::WTERMSIG(status);
    let error = match signal {
        libc::SIGXCPU => {
            EngineError::new(ErrorCode::Cpu, format!("CPU limit of {} s reached", limits.cpu_secs))
        }
        libc::SIGKILL if cpu_secs + 0.5 >= limits.cpu_secs as f64 => {
            EngineError::new(ErrorCode::Cpu, format!("CPU limit of {} s reached", limits.cpu_secs))
        }
        libc::SIGKILL => EngineError::new(ErrorCode::Memory, "killed (out of memory)"),
        libc::SIGXFSZ => EngineError::new(
            ErrorCode::Disk,
            format!("output file size limit of {} bytes reached", limits.file_size_bytes),
        ),
        libc::SIGABRT if stderr.contains("memory allocation of") => {
            EngineError::new(ErrorCode::Memory, "out of memory (address-space limit)")
        }
        other => EngineError::new(
            ErrorCode::Crashed,
            format!("the engine died of signal {other}: {}", last_line(stderr)),
        ),
    };
    Some(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EncoderSettings, EngineSpec, MediaInfo, Mode};
    use crate::jobs::{Preset, Qualities};

    #[test]
    fn worker_paths_never_reach_error_messages() {
        let job = Path::new("/var/lib/tcoder/scratch/job-1");
        let out = job.join("out");
        let source = job.join("source");
        let message = "hls/360p/index.m3u8: /var/lib/tcoder/scratch/job-1/out/hls/360p/seg_00001.m4s: \
            No such file; cannot open /var/lib/tcoder/scratch/job-1/source; in /var/lib/tcoder/scratch/job-1";
        let scrubbed = scrub_paths(message, &[&out, &source, job]);
        assert_eq!(
            scrubbed,
            "hls/360p/index.m3u8: hls/360p/seg_00001.m4s: No such file; cannot open source; in job-1"
        );
        assert!(!scrubbed.contains("/var/"), "{scrubbed}");
    }

    /// A child that prints its result and exits at once: the exit status often arrives before
    /// the stdout reader forwarded the line. Every run must still report the result.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_result_printed_just_before_exit_is_never_lost() {
        let media: MediaInfo = serde_json::from_value(serde_json::json!({
            "format": "mov", "duration_secs": 1.0, "bit_rate": null, "streams": 1, "audio": null,
            "video": { "index": 0, "codec": "h264", "width": 16, "height": 16, "fps": 1.0,
                       "bit_rate": null, "pixel_format": "yuv420p" },
        }))
        .unwrap();
        let report = EngineReport {
            media,
            mode: Mode::Copy,
            renditions: Vec::new(),
            hls_master: None,
            thumbnails: None,
            files: Vec::new(),
            frames: 0,
            decode_errors: 0,
            probe_secs: 0.0,
            deinterlaced: false,
            loudness: None,
            captions: Vec::new(),
            audio_tracks: Vec::new(),
            ladder: None,
        };
        let line =
            serde_json::to_string(&ChildMessage::Result { report: Box::new(report) }).unwrap();
        let supervisor = shell(r#"printf '%s\n' "$0""#, line);
        let dir = tempfile::tempdir().unwrap();
        let job = test_job(dir.path());
        let runs =
            (0..256).map(|_| supervisor.run(&job, dir.path(), None, CancellationToken::new()));
        let results = futures_util::future::join_all(runs).await;
        let lost = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(lost, 0, "results lost: {:?}", results.iter().find(|r| r.is_err()));
    }

    /// A supervisor whose child is `sh -c script arg`.
    fn shell(script: &str, arg: String) -> Supervisor {
        Supervisor {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into(), arg],
            limits: SandboxLimits {
                memory_bytes: 1 << 30,
                cpu_secs: 10,
                file_size_bytes: 1 << 20,
                open_files: 64,
                wall_deadline: Duration::from_secs(10),
                deadline_per_media_second: 10.0,
                deadline_base: Duration::from_secs(10),
            },
        }
    }

    fn test_job(dir: &Path) -> EngineJob {
        EngineJob {
            input: dir.join("in"),
            output_dir: dir.join("out"),
            spec: EngineSpec::new(Preset::Default, Qualities::List(Vec::new()), &[]),
            limits: crate::engine::Limits::default(),
            settings: EncoderSettings::default(),
            task: Default::default(),
            sidecars: Vec::new(),
            ladder: None,
        }
    }

    /// The nice value in a `/proc/<pid>/stat` line (its 19th field).
    fn nice_of(stat: &str) -> i32 {
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    /// A part run beside another is started at the lowest priority (every thread it starts
    /// inherits it); a normal run keeps the worker's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_background_child_runs_at_the_lowest_cpu_priority() {
        let error = EngineError::new(ErrorCode::Failed, "STAT");
        let line = serde_json::to_string(&ChildMessage::Error { error }).unwrap();
        // The child reports its own /proc stat line in place of STAT.
        let script = r#"s=$(tr -d '\n/' < /proc/self/stat); printf '%s\n' "$0" | sed "s/STAT/$s/""#;
        let supervisor = shell(script, line);
        let dir = tempfile::tempdir().unwrap();
        let job = test_job(dir.path());
        let nice = |priority| {
            let run = supervisor.run_at(priority, &job, dir.path(), None, CancellationToken::new());
            async move { nice_of(&run.await.unwrap_err().message) }
        };
        let own = nice_of(&std::fs::read_to_string("/proc/self/stat").unwrap());
        assert_eq!(nice(Priority::Normal).await, own);
        assert_eq!(nice(Priority::Background).await, 19);
    }
}
