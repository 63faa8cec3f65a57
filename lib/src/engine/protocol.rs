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

/// How much of a source the worker has downloaded so far, in a file beside it
/// (`<source>.arrived`, see [`Arrived::beside`]): the engine may start while the source still
/// arrives — a long title plays seconds after its upload, not after the whole file came down
/// — and reads a byte only once it is here, waiting for it otherwise. Bytes `[0, head)` and
/// `[tail, size)` are on disk (the worker fetches the start, then the end, where an MP4's
/// index often sits, then the rest in order). No such file: the source is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrived {
    pub head: u64,
    pub tail: u64,
    pub size: u64,
    /// The download failed: nothing more comes (the worker stops the engine too).
    pub failed: bool,
}

impl Arrived {
    /// Nothing yet of a `size`-byte source.
    pub fn nothing(size: u64) -> Arrived {
        Arrived { head: 0, tail: size, size, failed: false }
    }

    /// Where the record for `source` lives.
    pub fn beside(source: &std::path::Path) -> std::path::PathBuf {
        let mut name = source.as_os_str().to_owned();
        name.push(".arrived");
        std::path::PathBuf::from(name)
    }

    /// Bytes readable from `offset` on without waiting (0 at or past the end).
    pub fn readable_at(&self, offset: u64) -> u64 {
        if offset < self.head {
            self.head - offset
        } else if offset >= self.tail {
            self.size.saturating_sub(offset)
        } else {
            0
        }
    }

    /// Every byte is here.
    pub fn complete(&self) -> bool {
        self.head >= self.tail
    }

    pub fn encode(&self) -> String {
        let state = if self.failed { "failed" } else { "arriving" };
        format!("{} {} {} {state}\n", self.head, self.tail, self.size)
    }

    /// The record as [`Arrived::encode`] wrote it; `None` for anything else (a torn or foreign
    /// file is never trusted to say bytes are there).
    pub fn parse(text: &str) -> Option<Arrived> {
        let mut fields = text.split_ascii_whitespace();
        let mut number = || fields.next()?.parse::<u64>().ok();
        let (head, tail, size) = (number()?, number()?, number()?);
        let failed = match fields.next()? {
            "arriving" => false,
            "failed" => true,
            _ => return None,
        };
        (fields.next().is_none() && head <= size && tail <= size).then_some(Arrived {
            head,
            tail,
            size,
            failed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arrival_record_reads_back_and_says_what_can_be_read() {
        let record = Arrived { head: 100, tail: 900, size: 1000, failed: false };
        assert_eq!(Arrived::parse(&record.encode()), Some(record));
        assert_eq!(record.readable_at(0), 100);
        assert_eq!(record.readable_at(99), 1);
        assert_eq!(record.readable_at(100), 0);
        assert_eq!(record.readable_at(899), 0);
        assert_eq!(record.readable_at(900), 100);
        assert_eq!(record.readable_at(1000), 0);
        assert!(!record.complete());
        assert!(Arrived { head: 1000, ..record }.complete());
        assert!(Arrived { head: 500, tail: 500, ..record }.complete());
        let failed = Arrived { failed: true, ..record };
        assert_eq!(Arrived::parse(&failed.encode()), Some(failed));
        for torn in [
            "",
            "100 900",
            "100 900 1000",
            "100 900 1000 done",
            "2000 0 1000 arriving",
            "1 2 3 arriving extra",
            "-1 2 3 arriving",
        ] {
            assert_eq!(Arrived::parse(torn), None, "{torn:?}");
        }
        assert_eq!(
            Arrived::beside(std::path::Path::new("/w/in/source")),
            std::path::Path::new("/w/in/source.arrived")
        );
    }
}
