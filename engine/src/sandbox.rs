//! The engine child's confinement, entered before it reads a byte of media. Layers, each
//! stopping what the previous ones might miss:
//! - every inherited descriptor above stderr closed;
//! - namespaces: network (empty: no interface but a down loopback), mount (private), PID (the
//!   engine is PID 1 of its own), IPC, UTS, and a user namespace mapping only its own uid;
//! - an unprivileged uid: a worker running as root hands the job folder to
//!   [`SANDBOX_UID`] and the child switches to it, so it owns nothing else on the host;
//! - Landlock: files only inside the job folder (plus read-only `/proc/self` and the CPU list),
//!   no TCP at all;
//! - no capabilities (bounding set included), no new privileges, `RLIMIT_NPROC`;
//! - a seccomp allowlist: what FFmpeg and the encoders call, nothing that opens sockets, enters
//!   namespaces, mounts, traces or loads code; anything else fails with `EPERM`.
//!
//! Where the kernel refuses a layer (no unprivileged user namespaces, no Landlock) the others
//! still hold and the report says which is missing; the worker logs it loudly and counts it.

use std::collections::BTreeMap;
use std::path::Path;

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use tcoder::engine::protocol::{SANDBOX_GID, SANDBOX_UID, SandboxReport};

/// Processes (threads included) the sandbox uid may have: a fork bomb stops here.
const MAX_PROCESSES: u64 = 4096;

/// Confines this (single-threaded) process. Forks once: the returned report is the confined
/// engine's (PID 1 of its namespace); the parent stays behind, waits, and exits as it does.
pub(crate) fn enter(job_dir: &Path) -> SandboxReport {
    let mut report = SandboxReport::default();
    // SAFETY: getppid(2) cannot fail.
    let worker = unsafe { libc::getppid() };
    close_inherited_fds();
    // SAFETY: geteuid(2) cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        // Root can make every namespace but the user one directly; then it drops to the
        // sandbox uid, which owns the job folder and nothing else.
        report.namespaces = unshare(NAMESPACES).is_ok();
        private_mounts(&mut report);
        drop_bounding_set();
        match become_sandbox_user() {
            Ok(()) => report.uid = SANDBOX_UID,
            Err(e) => report.missing.push(format!("unprivileged uid ({e})")),
        }
        report.user_namespace = enter_user_namespace(0).is_ok();
    } else {
        report.user_namespace = enter_user_namespace(NAMESPACES).is_ok();
        report.namespaces = report.user_namespace;
        private_mounts(&mut report);
        // SAFETY: getuid(2) cannot fail.
        report.uid = unsafe { libc::getuid() };
    }
    if !report.user_namespace {
        report.missing.push("user namespace".into());
    }
    if !report.namespaces {
        report.missing.push("network, mount and PID namespaces".into());
    }
    report.network_isolated = report.namespaces;
    die_with(worker);
    if report.namespaces {
        wait_in_parent_for_pid_one();
        // The engine itself (PID 1 of its namespace): killed when the process above it dies.
        // SAFETY: prctl(2) on the calling process.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        }
    }
    restrict_files(job_dir, &mut report);
    set_process_limit();
    match drop_capabilities() {
        Ok(()) => report.no_capabilities = true,
        Err(e) => report.missing.push(format!("dropping capabilities ({e})")),
    }
    match apply_seccomp() {
        Ok(()) => report.seccomp = true,
        Err(e) => report.missing.push(format!("seccomp ({e})")),
    }
    // Sockets are refused by seccomp and Landlock even without a network namespace.
    report.network_isolated |= report.seccomp;
    report
}

const NAMESPACES: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

fn unshare(flags: libc::c_int) -> std::io::Result<()> {
    // SAFETY: unshare(2) on the calling, single-threaded process.
    if unsafe { libc::unshare(flags) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Closes every descriptor above stderr the child inherited by accident (a worker's socket or
/// key file opened without close-on-exec): the engine needs only its three pipes.
fn close_inherited_fds() {
    // SAFETY: close_range(2) on descriptors this process does not use; nothing here holds one.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
}

/// Mount events no longer propagate either way (the mount namespace is the engine's own).
fn private_mounts(report: &mut SandboxReport) {
    let root = c"/";
    // SAFETY: mount(2) with valid C strings; changes propagation in this mount namespace only.
    let changed = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    } == 0;
    if !changed && report.namespaces {
        report.missing.push("private mounts".into());
    }
}

/// A user namespace (plus `extra` namespaces) in which this process's uid and gid map to
/// themselves: it is the same unprivileged user inside, with no power over the one outside.
fn enter_user_namespace(extra: libc::c_int) -> std::io::Result<()> {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    unshare(libc::CLONE_NEWUSER | extra)?;
    // A process that changed its uid is not "dumpable", and its /proc files stay root's: it
    // could not write its own maps. Dumpable just for that (ptrace is refused by seccomp).
    set_dumpable(true);
    let mapped = (|| {
        std::fs::write("/proc/self/setgroups", "deny")?;
        std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
        std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))
    })();
    set_dumpable(false);
    mapped
}

fn set_dumpable(dumpable: bool) {
    // SAFETY: prctl(2) on the calling process with the documented arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(dumpable), 0, 0, 0);
    }
}

/// Drops every capability from the bounding set (so none can come back through exec); needs
/// `CAP_SETPCAP`, so before giving up root.
fn drop_bounding_set() {
    for cap in 0..64 {
        // SAFETY: prctl(2) on the calling process; an unknown number returns EINVAL.
        unsafe {
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
    }
}

/// Sets the parent-death signal again: the kernel clears the one set at spawn on every
/// credential change (the switch to the sandbox uid, a new user namespace), and without it a
/// worker killed with SIGKILL left its engine encoding on the machine's cores. A worker that
/// died before this point is seen by the parent id having changed: leave at once.
fn die_with(worker: libc::pid_t) {
    // SAFETY: prctl(2) and getppid(2) on the calling process; _exit(2) ends it without
    // running anything else.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != worker {
            libc::_exit(137);
        }
    }
}

/// No supplementary groups, then the sandbox gid and uid (real, effective, saved): from here
/// the process has no capabilities in the worker's namespaces.
fn become_sandbox_user() -> std::io::Result<()> {
    // SAFETY: setgroups/setresgid/setresuid on the calling process with valid arguments.
    let ok = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setresgid(SANDBOX_GID, SANDBOX_GID, SANDBOX_GID) == 0
            && libc::setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID) == 0
    };
    if ok { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// The PID namespace applies to children: fork once. The parent confines itself too, waits,
/// and leaves exactly as the engine did (same code, same signal); only the child returns.
fn wait_in_parent_for_pid_one() {
    // SAFETY: fork(2) in a single-threaded process; the child continues normally.
    let pid = unsafe { libc::fork() };
    if pid <= 0 {
        return; // the child, or fork failed (then this process runs the engine itself)
    }
    let _ = drop_capabilities();
    let _ = apply_seccomp();
    let mut status = 0;
    loop {
        // SAFETY: waitpid(2) on our own child with a valid status pointer.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        if waited == pid {
            break;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            std::process::exit(70);
        }
    }
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // SAFETY: restoring the default action and raising the engine's signal on ourselves,
        // so the supervisor sees the same death (e.g. SIGXCPU at the CPU limit).
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
    std::process::exit(libc::WEXITSTATUS(status));
}

/// Landlock: read and write inside the job folder only; read `/proc/self` (memory figures)
/// and the CPU list (thread counts); no TCP bind or connect.
fn restrict_files(job_dir: &Path, report: &mut SandboxReport) {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
        path_beneath_rules,
    };
    let abi = ABI::V5;
    let restricted = (|| -> Result<RulesetStatus, landlock::RulesetError> {
        let status = Ruleset::default()
            .handle_access(AccessFs::from_all(abi))?
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)?
            .create()?
            .add_rules(path_beneath_rules([job_dir], AccessFs::from_all(abi)))?
            .add_rules(path_beneath_rules(
                ["/proc/self", "/sys/devices/system/cpu"],
                AccessFs::from_read(abi),
            ))?
            .restrict_self()?;
        Ok(status.ruleset)
    })();
    match restricted {
        Ok(RulesetStatus::FullyEnforced) => report.landlock = "enforced".into(),
        Ok(RulesetStatus::PartiallyEnforced) => report.landlock = "partly enforced".into(),
        Ok(RulesetStatus::NotEnforced) => report.missing.push("Landlock (kernel)".into()),
        Err(e) => report.missing.push(format!("Landlock ({e})")),
    }
}

fn set_process_limit() {
    let limit = libc::rlimit { rlim_cur: MAX_PROCESSES, rlim_max: MAX_PROCESSES };
    // SAFETY: setrlimit(2) on the calling process with a valid struct.
    unsafe {
        libc::setrlimit(libc::RLIMIT_NPROC, &limit);
    }
}

/// Drops every capability: the bounding set and the effective, permitted and inheritable
/// sets; then no exec can gain privileges (setuid binaries, file capabilities).
fn drop_capabilities() -> std::io::Result<()> {
    drop_bounding_set();
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // _LINUX_CAPABILITY_VERSION_3: two 32-bit data words.
    let mut header = Header { version: 0x2008_0522, pid: 0 };
    let data = [Data::default(); 2];
    // SAFETY: capset(2) with a valid header and two data words, on the calling thread (the
    // process is still single-threaded here).
    let result =
        unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: prctl(2) on the calling process with the documented arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// System calls the engine makes (FFmpeg's demuxers, decoders, filters, x264/x265, libvpx,
/// the muxers writing files), found by tracing it over the corpus, plus what the C library
/// and the Rust runtime call on rarer paths (errors, aborts, thread exits). Sockets,
/// namespaces, mounts, tracing, keyrings, BPF, module loading and exec are not among them.
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_lseek,
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
    libc::SYS_readlinkat,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_ftruncate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_ioctl,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_mlock,
    libc::SYS_munlock,
    libc::SYS_get_mempolicy,
    libc::SYS_set_mempolicy,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_rseq,
    libc::SYS_set_tid_address,
    libc::SYS_clone,
    // Only ever answered ENOSYS, by a filter of its own (see `apply_seccomp`).
    libc::SYS_clone3,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getppid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_tgkill,
    libc::SYS_tkill,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_times,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_getrandom,
    libc::SYS_prlimit64,
    libc::SYS_getrusage,
    libc::SYS_sysinfo,
    libc::SYS_uname,
    libc::SYS_prctl,
    libc::SYS_membarrier,
    libc::SYS_restart_syscall,
    libc::SYS_umask,
];

/// The x86-64 forms of calls newer architectures only have as `*at`/`p*` variants.
#[cfg(target_arch = "x86_64")]
const ALLOWED_X86_64: &[libc::c_long] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_mkdir,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_dup2,
    libc::SYS_poll,
    libc::SYS_select,
    libc::SYS_time,
    libc::SYS_arch_prctl,
    libc::SYS_getrlimit,
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_X86_64: &[libc::c_long] = &[];

/// Installs the allowlist: any other system call fails with `EPERM` (an error a decoder
/// reports, not a crash); `clone` only without namespace flags; `clone3` fails with `ENOSYS`.
///
/// Why `ENOSYS` for `clone3`: its flags sit in a struct in memory, which a seccomp filter
/// cannot read, so allowing it would allow new namespaces. "Not implemented" makes the C
/// library fall back to `clone` (glibc does since 2.34), whose flags the filter checks:
/// threads still start, namespaces do not.
fn apply_seccomp() -> Result<(), seccompiler::Error> {
    // Installed first (the allowlist refuses `seccomp` itself). The kernel runs every filter
    // and takes the strictest answer: this one's errno over the allowlist's "allow".
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        std::env::consts::ARCH.try_into()?,
    )?;
    let program: seccompiler::BpfProgram = clone3.try_into()?;
    seccompiler::apply_filter(&program)?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().chain(ALLOWED_X86_64).map(|&call| (call, Vec::new())).collect();
    let no_new_namespaces = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq((NAMESPACES | libc::CLONE_NEWUSER | libc::CLONE_NEWCGROUP) as u64),
        0,
    )?;
    rules.insert(libc::SYS_clone, vec![SeccompRule::new(vec![no_new_namespaces])?]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        std::env::consts::ARCH.try_into()?,
    )?;
    let program: seccompiler::BpfProgram = filter.try_into()?;
    seccompiler::apply_filter(&program)
}

/// `tcoder-worker sandbox-check`: enters the engine's sandbox in a fresh folder and tries what
/// an exploited decoder would, printing one JSON object — the sandbox report and each probe's
/// answer. Operators run it on a new host to see which layers its kernel grants; the test
/// suite runs it to prove each is refused.
pub fn check() -> std::process::ExitCode {
    let dir = std::env::temp_dir().join(format!("tcoder-sandbox-check-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&dir).and_then(|()| std::env::set_current_dir(&dir)) {
        eprintln!("sandbox-check: cannot prepare {}: {e}", dir.display());
        return std::process::ExitCode::FAILURE;
    }
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let _ = std::os::unix::fs::lchown(&dir, Some(SANDBOX_UID), Some(SANDBOX_GID));
    }
    // The probes run in a child; this process stays outside to remove the folder after it.
    // SAFETY: fork(2) in a single-threaded process.
    let pid = unsafe { libc::fork() };
    if pid > 0 {
        let mut status = 0;
        // SAFETY: waitpid(2) on our own child with a valid status pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let _ = std::fs::remove_dir_all(&dir);
        return std::process::ExitCode::from(u8::try_from(libc::WEXITSTATUS(status)).unwrap_or(1));
    }
    let report = enter(Path::new("."));
    let outcome = |result: libc::c_long| -> String {
        if result >= 0 {
            "allowed".into()
        } else {
            format!("refused ({})", std::io::Error::last_os_error())
        }
    };
    let open = |path: &std::ffi::CStr, flags: libc::c_int| {
        // SAFETY: open(2) of a NUL-terminated path; a descriptor it returns is closed.
        let fd = unsafe { libc::open(path.as_ptr(), flags, 0o600) };
        let answer = outcome(fd.into());
        if fd >= 0 {
            // SAFETY: closing the descriptor just opened.
            unsafe { libc::close(fd) };
        }
        answer
    };
    // SAFETY: socket(2) with constant arguments; a descriptor is never returned here.
    let socket_inet = outcome(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) }.into());
    // SAFETY: as above.
    let socket_unix = outcome(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) }.into());
    // SAFETY: setns(2) on an invalid descriptor: EPERM from the filter before the kernel even
    // looks at it (EBADF would mean the call got through).
    let setns = outcome(unsafe { libc::setns(999, libc::CLONE_NEWNET) }.into());
    // SAFETY: unshare(2) with a constant flag.
    let unshare = outcome(unsafe { libc::unshare(libc::CLONE_NEWNET) }.into());
    // clone3(2) asking for new user and network namespaces (struct clone_args, version 0: 64
    // bytes, flags first). Were it let through, the child returns 0 and leaves at once.
    let mut clone_args = [0u64; 8];
    clone_args[0] = (libc::CLONE_NEWUSER | libc::CLONE_NEWNET) as u64;
    clone_args[4] = libc::SIGCHLD as u64; // exit_signal
    // SAFETY: clone3(2) with a valid, fully initialised clone_args of the size passed.
    let cloned = unsafe {
        libc::syscall(libc::SYS_clone3, clone_args.as_mut_ptr(), std::mem::size_of_val(&clone_args))
    };
    if cloned == 0 {
        // SAFETY: _exit(2) in the child the probe made; nothing of the parent is touched.
        unsafe { libc::_exit(0) };
    }
    let clone3 = outcome(cloned);
    // SAFETY: ptrace(2) asking to be traced; no memory is passed.
    let ptrace = outcome(unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) });
    let no_args: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: execve(2) of a NUL-terminated path with NULL-terminated, empty argument and
    // environment arrays.
    let execve = outcome(
        unsafe { libc::execve(c"/bin/true".as_ptr(), no_args.as_ptr(), no_args.as_ptr()) }.into(),
    );
    let probes = serde_json::json!({
        "socket_inet": socket_inet,
        "socket_unix": socket_unix,
        "setns": setns,
        "unshare": unshare,
        "ptrace": ptrace,
        "clone3": clone3,
        "execve": execve,
        "read_outside": open(c"/etc/hostname", libc::O_RDONLY),
        "write_outside": open(c"/tmp/tcoder-sandbox-escape", libc::O_WRONLY | libc::O_CREAT),
        "write_inside": open(c"./inside", libc::O_WRONLY | libc::O_CREAT),
    });
    println!("{}", serde_json::json!({ "sandbox": report, "probes": probes }));
    std::process::ExitCode::SUCCESS
}
