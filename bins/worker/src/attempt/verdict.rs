//! How an attempt ends, decided from the stop reason, the engine's result and the delivery
//! count alone: pure, so it is table-tested without servers.

use std::time::Duration;

use tcoder::engine::{EngineError, ErrorCode, Part};
use tcoder::jobs::{PartRelease, PartState};

use super::Outcome;
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

/// How a part attempt ended.
#[derive(Debug)]
pub(crate) enum PartEnd {
    Committed,
    /// Another attempt owns the part now.
    Fenced,
    Stopped(StopReason),
    /// Failed; the part is free again ([`PartRelease::Pending`]) or failed for good.
    Failed(EngineError, PartRelease),
    /// Its commit got no answer and Redis could not be read back: it may have landed, so its
    /// outputs stay; the part's state settles it (a later claim finds it done, or redoes it
    /// once the lease lapsed).
    Uncertain,
}

/// What to do with a part item's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Done with it (committed, owned by another attempt, canceled, failed for good: the
    /// coordinator decides for the job).
    Ack,
    /// Give it back, after this long (`None`: at once).
    Nak(Option<Duration>),
}

/// How a part item's message is settled, and what the runner counts, once its attempt ended.
pub(crate) fn part_verdict(end: &PartEnd, retry_delay: Duration) -> (Settle, Outcome) {
    match end {
        PartEnd::Committed => (Settle::Ack, Outcome::Completed),
        PartEnd::Fenced | PartEnd::Stopped(StopReason::Lost | StopReason::SelfFenced) => {
            (Settle::Ack, Outcome::Fenced)
        }
        PartEnd::Stopped(StopReason::Canceled) => (Settle::Ack, Outcome::Canceled),
        PartEnd::Stopped(StopReason::Released) => (Settle::Nak(None), Outcome::Released),
        PartEnd::Failed(error, PartRelease::Pending) if error.code.is_retryable() => {
            (Settle::Nak(Some(retry_delay)), Outcome::Retried)
        }
        PartEnd::Failed(error, _) => (Settle::Ack, Outcome::Failed(error.code)),
        PartEnd::Uncertain => (Settle::Nak(Some(retry_delay)), Outcome::Retried),
    }
}

/// The coordinator's next step, from the parts as Redis has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CoordinatorStep {
    /// Every part is committed: stitch.
    Done,
    /// A part failed for good, or the wall-clock deadline passed: the job fails with this.
    Fail(EngineError),
    /// Nobody works on this part: claim and run it here.
    Run(u32),
    /// Others hold the remaining parts: look again later.
    Wait,
}

/// Decides the coordinator's next step: a failure or the deadline first, then done, then a
/// free part (lowest first), else wait.
pub(crate) fn coordinator_step(
    parts: &[PartState],
    now: tokio::time::Instant,
    deadline: tokio::time::Instant,
) -> CoordinatorStep {
    if now >= deadline {
        return CoordinatorStep::Fail(EngineError::new(
            ErrorCode::Timeout,
            "the title's parts were not all done by the wall-clock deadline",
        ));
    }
    if let Some(failed) = parts.iter().find(|p| p.is_failed()) {
        return CoordinatorStep::Fail(failed.error.clone().unwrap_or_else(unknown_part_failure));
    }
    if parts.iter().all(PartState::is_done) {
        return CoordinatorStep::Done;
    }
    match playback_order(parts).into_iter().find(|p| p.is_claimable()) {
        Some(part) => CoordinatorStep::Run(part.part),
        None => CoordinatorStep::Wait,
    }
}

/// Whether the committed parts make the title playable: the chunk that starts it, and the
/// audio range that starts it when the title has audio (what a progressive playlist lists
/// first).
pub(crate) fn is_playable(parts: &[PartState]) -> bool {
    let starts = |audio: bool| {
        parts.iter().find(|p| {
            p.definition.as_ref().is_some_and(|d| {
                matches!(d, Part::Audio(_)) == audio && d.range().start_secs <= 0.0
            })
        })
    };
    let has_audio = parts.iter().any(|p| matches!(p.definition, Some(Part::Audio(_))));
    starts(false).is_some_and(PartState::is_done)
        && (!has_audio || starts(true).is_some_and(PartState::is_done))
}

/// The parts in the order playback needs them: by where their range starts in the title, the
/// video before the audio of the same start (then by number). Taking parts in this order
/// makes the title playable after its first chunk and first audio range, and the playable
/// run grow from there, on one machine as on many.
pub(crate) fn playback_order(parts: &[PartState]) -> Vec<&PartState> {
    let key = |p: &PartState| match &p.definition {
        Some(part) => (part.range().start_secs, matches!(part, Part::Audio(_)), p.part),
        None => (f64::INFINITY, true, p.part),
    };
    let mut ordered: Vec<&PartState> = parts.iter().collect();
    ordered.sort_by(|a, b| key(a).partial_cmp(&key(b)).unwrap_or(std::cmp::Ordering::Equal));
    ordered
}

/// The error of a part found failed without a recorded one.
pub(crate) fn unknown_part_failure() -> EngineError {
    EngineError::new(ErrorCode::Failed, "a part of the title failed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcoder::jobs::PartStatus;

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

    fn part(part: u32, status: &str, leased: bool) -> PartState {
        let status = match status {
            "pending" => PartStatus::Pending,
            "running" => PartStatus::Running,
            "done" => PartStatus::Done,
            _ => PartStatus::Failed,
        };
        PartState::new(part, status, 1, leased)
    }

    #[test]
    fn a_part_item_is_acked_unless_it_is_released_or_may_be_retried() {
        let (retryable, input) = (failed(ErrorCode::Crashed), failed(ErrorCode::Corrupt));
        let cases = [
            (PartEnd::Committed, Settle::Ack, Outcome::Completed),
            (PartEnd::Fenced, Settle::Ack, Outcome::Fenced),
            (PartEnd::Stopped(StopReason::Lost), Settle::Ack, Outcome::Fenced),
            (PartEnd::Stopped(StopReason::SelfFenced), Settle::Ack, Outcome::Fenced),
            (PartEnd::Stopped(StopReason::Canceled), Settle::Ack, Outcome::Canceled),
            (PartEnd::Stopped(StopReason::Released), Settle::Nak(None), Outcome::Released),
            (
                PartEnd::Failed(retryable.clone(), PartRelease::Pending),
                Settle::Nak(Some(SECOND)),
                Outcome::Retried,
            ),
            // Out of attempts: failed for good, the coordinator fails the job.
            (
                PartEnd::Failed(retryable, PartRelease::Failed),
                Settle::Ack,
                Outcome::Failed(ErrorCode::Crashed),
            ),
            // The source's fault: no other attempt would do better.
            (
                PartEnd::Failed(input, PartRelease::Pending),
                Settle::Ack,
                Outcome::Failed(ErrorCode::Corrupt),
            ),
            // A commit that may have landed: the item comes back; its claim finds the truth.
            (PartEnd::Uncertain, Settle::Nak(Some(SECOND)), Outcome::Retried),
        ];
        for (end, settle, outcome) in cases {
            assert_eq!(part_verdict(&end, SECOND), (settle, outcome), "{end:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_coordinator_runs_free_parts_waits_for_held_ones_and_fails_at_the_deadline() {
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(60);
        let step =
            |parts: &[PartState]| coordinator_step(parts, tokio::time::Instant::now(), deadline);
        let free = [part(0, "done", false), part(1, "running", true), part(2, "pending", false)];
        assert_eq!(step(&free), CoordinatorStep::Run(2));
        // A running part whose lease lapsed (its worker died) is free again.
        let lapsed = [part(0, "running", false), part(1, "pending", false)];
        assert_eq!(step(&lapsed), CoordinatorStep::Run(0));
        let held = [part(0, "done", false), part(1, "running", true)];
        assert_eq!(step(&held), CoordinatorStep::Wait);
        assert_eq!(step(&[part(0, "done", false), part(1, "done", false)]), CoordinatorStep::Done);
        let mut failed = part(1, "failed", false);
        let recorded = EngineError::new(ErrorCode::Memory, "part 1 ran out of memory");
        failed.error = Some(recorded.clone());
        let with_failure = [part(0, "pending", false), failed, part(2, "running", true)];
        assert_eq!(step(&with_failure), CoordinatorStep::Fail(recorded));
        assert_eq!(
            step(&[part(0, "failed", false)]),
            CoordinatorStep::Fail(unknown_part_failure())
        );
        // Past the wall-clock deadline nothing else matters.
        tokio::time::advance(Duration::from_secs(61)).await;
        let CoordinatorStep::Fail(late) = step(&free) else { panic!("not failed at the deadline") };
        assert_eq!(late.code, ErrorCode::Timeout);
    }

    #[test]
    fn parts_are_taken_in_the_order_playback_needs_them() {
        use tcoder::engine::Chunk;
        let range = |start: f64, end: Option<f64>| Chunk {
            start_secs: start,
            end_secs: end,
            first_segment: (start / 4.0) as u32,
            ladder: None,
        };
        // The plan as stored: chunks, then audio ranges.
        let definitions = [
            Part::Video(range(0.0, Some(4.0))),
            Part::Video(range(4.0, Some(64.0))),
            Part::Video(range(64.0, None)),
            Part::Audio(range(0.0, Some(4.0))),
            Part::Audio(range(4.0, None)),
        ];
        let parts: Vec<PartState> = definitions
            .iter()
            .enumerate()
            .map(|(k, definition)| PartState {
                definition: Some(definition.clone()),
                ..part(k as u32, "pending", false)
            })
            .collect();
        let order: Vec<u32> = playback_order(&parts).iter().map(|p| p.part).collect();
        // The first chunk and its audio (playable), then on through the title.
        assert_eq!(order, [0, 3, 1, 4, 2]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        assert_eq!(
            coordinator_step(&parts, tokio::time::Instant::now(), deadline),
            CoordinatorStep::Run(0)
        );
        let mut started = parts.clone();
        started[0] = PartState { status: PartStatus::Done, ..started[0].clone() };
        assert_eq!(
            coordinator_step(&started, tokio::time::Instant::now(), deadline),
            CoordinatorStep::Run(3),
            "the first audio range before the second chunk"
        );
        // Playable once the first chunk and the first audio range are in, whatever else is.
        assert!(!is_playable(&parts));
        assert!(!is_playable(&started), "no audio yet");
        let mut later = parts.clone();
        for k in [1, 2, 3, 4] {
            later[k].status = PartStatus::Done;
        }
        assert!(!is_playable(&later), "no first chunk yet");
        started[3].status = PartStatus::Done;
        assert!(is_playable(&started));
        // A silent title: the first chunk alone.
        assert!(is_playable(&started[..3]));
    }
}
