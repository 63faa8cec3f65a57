//! The kinds of work a worker takes from the JOBS stream, each in its own room: a whole title
//! ([`whole`]), one part of a split title ([`part`]) and a split title's coordinator
//! ([`coordinator`]), over the steps they share ([`steps`]: download, upload, output paths,
//! commit retries, stop helpers) and the pure decision of how an attempt ends ([`verdict`]).
//! The runner reads each message's item and picks the kind once; `steps` and `verdict` know
//! no kind.

pub(crate) mod coordinator;
pub(crate) mod part;
pub(crate) mod steps;
pub(crate) mod verdict;
pub(crate) mod whole;

use tcoder::engine::ErrorCode;

/// What became of a message (drives the runner's budgets and the metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    /// Failed permanently with this code.
    Failed(ErrorCode),
    /// Requeued for another attempt.
    Retried,
    /// Released at shutdown.
    Released,
    /// Another attempt owns the job, or the lease could not be kept.
    Fenced,
    Canceled,
    /// Nothing to do (job already finished, not ready, unknown).
    Skipped,
}

impl Outcome {
    /// The `outcome` label: `failed` for every failure code (the code is its own label).
    pub(crate) fn label(&self) -> &str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed(_) => "failed",
            Outcome::Retried => "retried",
            Outcome::Released => "released",
            Outcome::Fenced => "fenced",
            Outcome::Canceled => "canceled",
            Outcome::Skipped => "skipped",
        }
    }

    /// The `code` label: the error code of a failure, `none` otherwise.
    pub(crate) fn code(&self) -> &str {
        match self {
            Outcome::Failed(code) => code.as_str(),
            _ => "none",
        }
    }

    /// Failures that say something about this machine rather than the input.
    pub(crate) fn is_machine_failure(&self) -> bool {
        match self {
            Outcome::Retried => true,
            Outcome::Failed(code) => !code.as_str().starts_with("input."),
            _ => false,
        }
    }
}
