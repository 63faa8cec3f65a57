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
    Sandbox {
        network_isolated: bool,
        detail: String,
    },
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

/// Exit status of a child that reported an error line (it did not crash).
pub const EXIT_REPORTED_ERROR: u8 = 3;
