//! The engine child's protocol (`tcoder-worker engine`): one [`EngineJob`](super::EngineJob)
//! as JSON on stdin; JSON lines on stdout: `{"type":"sandbox",…}`, then `{"type":"probed",…}`,
//! `{"type":"progress",…}` at most once a second, then exactly one `{"type":"result",…}` or
//! `{"type":"error",…}`. The child lives in the `tcoder-engine` crate (it links FFmpeg); the
//! [`Supervisor`](super::Supervisor) here only speaks this protocol.

use serde::{Deserialize, Serialize};

use super::{EngineError, EngineReport, MediaInfo, Progress};

/// One line of the child's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ChildMessage {
    /// How the child is confined (sent once, before it touches the media).
    Sandbox(SandboxReport),
    /// The source passed the probe; the supervisor tightens the deadline to its duration.
    Probed {
        media: Box<MediaInfo>,
    },
    Progress(Progress),
    Result {
        report: Box<EngineReport>,
    },
    Error {
        error: EngineError,
    },
}

/// The uid and gid the engine runs as when the worker is root (`nobody` on Debian): the
/// worker hands the job folder to it, so the engine owns nothing else on the machine.
pub const SANDBOX_UID: u32 = 65534;
pub const SANDBOX_GID: u32 = 65534;

/// Which confinement layers the child entered (see the engine crate's `sandbox` module).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    /// No socket can reach anything: an empty network namespace, or sockets refused.
    pub network_isolated: bool,
    /// Its own network, mount, PID, IPC and UTS namespaces.
    pub namespaces: bool,
    /// Its own user namespace (its uid mapped to itself).
    pub user_namespace: bool,
    /// The uid it runs as (outside its user namespace).
    pub uid: u32,
    /// `enforced` / `partly enforced`; empty when Landlock is unavailable.
    pub landlock: String,
    pub no_capabilities: bool,
    pub seccomp: bool,
    /// Layers the kernel refused, with why.
    pub missing: Vec<String>,
}

/// Exit status of a child that reported an error line (it did not crash).
pub const EXIT_REPORTED_ERROR: u8 = 3;
