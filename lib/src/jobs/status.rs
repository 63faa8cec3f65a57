//! The job state machine. The table here is the single source of truth; the Redis scripts
//! receive the allowed "from" states as arguments and enforce them atomically.
//!
//! ```text
//! awaiting_upload → uploaded → queued → running → completed | failed | canceled
//!        ↓                         ↑________|  (retryable failure)
//!     expired (no upload arrived within `ingest.upload_expiry`)
//! any non-terminal state → canceled | failed
//! ```
//!
//! A job in a terminal state may be deleted (`DELETE /v1/jobs/{id}`, or by the retention
//! sweep): its record goes, so deletion is not a state.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    AwaitingUpload,
    Uploaded,
    Queued,
    Running,
    Completed,
    Failed,
    Canceled,
    /// No upload arrived within `ingest.upload_expiry`.
    Expired,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        JobStatus::AwaitingUpload,
        JobStatus::Uploaded,
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Canceled,
        JobStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::AwaitingUpload => "awaiting_upload",
            JobStatus::Uploaded => "uploaded",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
            JobStatus::Expired => "expired",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Canceled | JobStatus::Expired
        )
    }

    /// The states a job may move to `self` from.
    pub fn allowed_from(self) -> &'static [JobStatus] {
        use JobStatus::*;
        match self {
            AwaitingUpload => &[],
            Uploaded => &[AwaitingUpload],
            Queued => &[Uploaded, Running],
            Running => &[Queued],
            Completed => &[Running],
            Failed | Canceled => &[AwaitingUpload, Uploaded, Queued, Running],
            Expired => &[AwaitingUpload],
        }
    }

    pub fn can_move_to(self, to: JobStatus) -> bool {
        to.allowed_from().contains(&self)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<JobStatus, String> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown status `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::JobStatus::*;
    use super::*;

    #[test]
    fn terminal_states_are_final() {
        for from in [Completed, Failed, Canceled, Expired] {
            for to in JobStatus::ALL {
                assert!(!from.can_move_to(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn the_happy_path_and_retry_are_legal_and_skipping_is_not() {
        for (from, to) in [
            (AwaitingUpload, Uploaded),
            (Uploaded, Queued),
            (Queued, Running),
            (Running, Completed),
            (Running, Queued),
        ] {
            assert!(from.can_move_to(to), "{from} -> {to}");
        }
        for (from, to) in [
            (AwaitingUpload, Queued),
            (Uploaded, Running),
            (Queued, Completed),
            (AwaitingUpload, Running),
        ] {
            assert!(!from.can_move_to(to), "{from} -> {to}");
        }
    }

    #[test]
    fn names_round_trip() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>().unwrap(), status);
        }
    }
}
