//! How an attempt ends, decided from the stop reason, the engine's result and the delivery
//! count alone: pure, so it is table-tested without servers.

use std::time::Duration;

use tcoder::engine::EngineError;

use crate::keeper::StopReason;

/// What to do with an attempt's message, decided from how the attempt ended alone (no I/O):
/// a stop reason wins over the engine's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Canceled through the API: ack, nothing else.
    Canceled,
    /// A newer attempt owns the job or the lease lapsed: neither ack nor nak.
    Fenced,
    /// The worker is shutting down: requeue and nak at once.
    Release,
    /// The engine finished: commit the outputs, then ack.
    Commit,
    /// A failure another attempt may not have: requeue, nak with this delay.
    Retry(Duration),
    /// A failure no retry can fix (or the last delivery): fail the job, term the message.
    Fail,
}

/// The verdict for an attempt that ended with `result` (`Ok` = outputs ready) after the
/// message's `delivered`-th delivery of `max_deliver`. Retries wait `retry_delay`, doubling
/// with each delivery, at most ten minutes.
pub(crate) fn verdict(
    stop: Option<StopReason>,
    result: Result<(), &EngineError>,
    delivered: i64,
    max_deliver: i64,
    retry_delay: Duration,
) -> Verdict {
    match (stop, result) {
        (Some(StopReason::Canceled), _) => Verdict::Canceled,
        (Some(StopReason::Lost | StopReason::SelfFenced), _) => Verdict::Fenced,
        (Some(StopReason::Released), _) => Verdict::Release,
        (None, Ok(())) => Verdict::Commit,
        (None, Err(error)) if error.code.is_retryable() && delivered < max_deliver => {
            let doublings = (delivered - 1).clamp(0, 10) as u32;
            Verdict::Retry(retry_delay.saturating_mul(1 << doublings).min(MAX_RETRY_DELAY))
        }
        (None, Err(_)) => Verdict::Fail,
    }
}

/// The longest wait before a retried attempt.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;
    use tcoder::engine::ErrorCode;

    const SECOND: Duration = Duration::from_secs(1);

    fn failed(code: ErrorCode) -> EngineError {
        EngineError::new(code, "x")
    }

    #[test]
    fn a_stop_reason_decides_before_the_engine_result() {
        let crashed = failed(ErrorCode::Crashed);
        for result in [Ok(()), Err(&crashed)] {
            assert_eq!(
                verdict(Some(StopReason::Canceled), result, 1, 5, SECOND),
                Verdict::Canceled
            );
            assert_eq!(verdict(Some(StopReason::Lost), result, 1, 5, SECOND), Verdict::Fenced);
            assert_eq!(
                verdict(Some(StopReason::SelfFenced), result, 1, 5, SECOND),
                Verdict::Fenced
            );
            assert_eq!(verdict(Some(StopReason::Released), result, 5, 5, SECOND), Verdict::Release);
        }
        assert_eq!(verdict(None, Ok(()), 5, 5, SECOND), Verdict::Commit);
    }

    #[test]
    fn engine_faults_retry_with_doubling_delays_until_the_last_delivery() {
        let crashed = failed(ErrorCode::Crashed);
        let delays: Vec<Verdict> =
            (1..=5).map(|delivered| verdict(None, Err(&crashed), delivered, 5, SECOND)).collect();
        assert_eq!(
            delays,
            [
                Verdict::Retry(SECOND),
                Verdict::Retry(2 * SECOND),
                Verdict::Retry(4 * SECOND),
                Verdict::Retry(8 * SECOND),
                Verdict::Fail,
            ]
        );
        // Capped at ten minutes however many deliveries are allowed.
        assert_eq!(verdict(None, Err(&crashed), 30, 100, SECOND), Verdict::Retry(MAX_RETRY_DELAY));
    }

    #[test]
    fn input_and_limit_errors_fail_at_once() {
        for code in [
            ErrorCode::Corrupt,
            ErrorCode::TooSmallDimensions,
            ErrorCode::Memory,
            ErrorCode::OutputInvalid,
        ] {
            assert_eq!(verdict(None, Err(&failed(code)), 1, 5, SECOND), Verdict::Fail, "{code}");
        }
    }
}
