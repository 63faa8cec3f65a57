//! Jobs: what a user asked for ([`JobSpec`]), where it stands ([`JobStatus`], the state
//! machine) and the Redis store that holds both ([`JobStore`]).

mod captions;
mod fencing;
mod ids;
mod parts;
mod priority;
mod record;
mod result;
mod spec;
mod status;
mod store;

pub use self::captions::{
    CaptionFile, CaptionObject, CaptionRequest, CaptionSpec, MAX_SIDECAR_BYTES, MAX_SIDECARS,
};
pub use self::fencing::{
    Admission, Attempt, ClaimOutcome, FinishOutcome, Playable, Recovery, RenewOutcome, outbox_key,
};
pub use self::ids::{JobId, Tenant};
pub use self::parts::{
    PartAttempt, PartClaim, PartCommit, PartRelease, PartResult, PartState, PartStatus,
};
pub use self::priority::Priority;
pub use self::record::{Job, JobError, JobOrigin, MultipartUpload, SourceObject, WebhookStatus};
pub use self::result::{
    EngineUsage, JobResult, MANIFEST_FILE, RenditionResult, SourceSummary, StoredFile,
    ThumbnailUrls,
};
pub use self::spec::{
    AudioCodec, AutoLadder, DEFAULT_LOUDNESS_TARGET, HdrMode, ImportRules, JobRequest, JobSpec,
    LOUDNESS_TARGETS, OutputKind, Preset, Qualities, Quality, SpecError, SpecLimits, UploadMethod,
    VideoCodec,
};
pub use self::status::JobStatus;
pub use self::store::{CreateOutcome, DeleteOutcome, JobPage, JobStore, TransitionError};

/// Milliseconds since the Unix epoch (the store's clock for timestamps; leases use Redis's).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Seconds since the Unix epoch with sub-millisecond precision: comparable across processes
/// on one host (the engine start time in a manifest, queue ages, the control-plane benchmark).
pub fn now_secs_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The job's stable playback URL, relative to the API's base: its HLS master, the same
/// whichever attempt made it and whether the job is still encoding (progressive) or done.
pub fn playback_path(id: &JobId) -> String {
    format!("/v1/jobs/{id}/hls/master.m3u8")
}

/// RFC 3339 with milliseconds, for API responses and events.
pub fn rfc3339(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// A sample result for other modules' unit tests.
#[cfg(test)]
pub(crate) fn result_sample() -> JobResult {
    result::tests::sample()
}
