//! Scratch folders of attempts that died (a killed worker, a crashed machine) are removed
//! when a worker starts and every [`SWEEP_INTERVAL`] after, so a host's disk does not fill up
//! with their sources and outputs. A full scratch disk is the machine's fault, not the job's.
//! Several workers may share one scratch folder (the local provider's machines do), so only
//! folders no live attempt can own are removed: the job's current attempt is not theirs, or
//! the job is not running.

use std::path::{Path, PathBuf};

use tcoder::engine::{EngineError, ErrorCode};
use tcoder::jobs::{JobId, JobStatus, JobStore};

/// Whose a scratch folder is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// `job_<id>-<epoch>-<random>`: an attempt at the job.
    Job(JobId, u64),
    /// `job_<id>.p<k>-<epoch>-<random>`: an attempt at part `k` of a split job.
    Part(JobId, u32, u64),
}

impl Owner {
    /// A new folder for this attempt under `dir` (named as [`parse`] reads it, with a random
    /// suffix: a retried attempt never reuses a dead one's files).
    pub(crate) fn folder(&self, dir: &Path) -> PathBuf {
        let mut bytes = [0u8; 6];
        let _ = getrandom::fill(&mut bytes);
        let random: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        dir.join(match self {
            Owner::Job(job, epoch) => format!("{job}-{epoch}-{random}"),
            Owner::Part(job, part, epoch) => format!("{job}.p{part}-{epoch}-{random}"),
        })
    }
}

pub(crate) fn parse(name: &str) -> Option<Owner> {
    let mut parts = name.rsplitn(3, '-');
    let _random = parts.next()?;
    let epoch = parts.next()?.parse().ok()?;
    let head = parts.next()?;
    if let Some((job, part)) = head.split_once(".p") {
        return Some(Owner::Part(JobId::parse(job)?, part.parse().ok()?, epoch));
    }
    Some(Owner::Job(JobId::parse(head)?, epoch))
}

/// Whether no live attempt can own the folder: the job does not run, or the attempt is not
/// the current one (of the job, or of the part).
async fn stale(owner: &Owner, jobs: &JobStore) -> Result<bool, tcoder::redis::RedisError> {
    let (job, epoch) = match owner {
        Owner::Job(job, epoch) | Owner::Part(job, _, epoch) => (job, *epoch),
    };
    let Some(current) = jobs.get(job).await? else { return Ok(true) };
    if current.status != JobStatus::Running {
        return Ok(true);
    }
    Ok(match owner {
        Owner::Job(..) => current.epoch != epoch,
        Owner::Part(_, k, _) => jobs.part(job, *k).await?.is_none_or(|p| !p.runs_at(epoch)),
    })
}

/// How often a running worker looks for dead attempts' folders (another worker sharing the
/// folder may have died since this one started).
pub(crate) const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Free space under which a failed attempt is blamed on the machine: its scratch disk filled
/// up. FFmpeg's muxers do not always report `ENOSPC` as such (a playlist cut short reads as an
/// invalid output), so the disk itself is looked at.
const NEARLY_FULL_BYTES: u64 = 4 * 1024 * 1024;

/// Bytes an unprivileged writer may still write on the file system of `dir`.
fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: statvfs(3) with a NUL-terminated path and a pointer to writable memory of the
    // right type; read only when it succeeded.
    let stats = unsafe {
        if libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) != 0 {
            return None;
        }
        stats.assume_init()
    };
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// `error` (an attempt's failure, found before its folder in `dir` is removed) as the machine's
/// fault when the scratch disk has next to no room left: another machine retries the job.
pub(crate) fn blame_full_disk(dir: &Path, error: EngineError) -> EngineError {
    let full = available_bytes(dir).is_some_and(|free| free < NEARLY_FULL_BYTES);
    match error.code {
        ErrorCode::Canceled | ErrorCode::DiskFull => error,
        _ if full => EngineError::new(
            ErrorCode::DiskFull,
            format!("the scratch disk is full ({})", error.message),
        ),
        _ => error,
    }
}

/// Removes stale attempt folders under `dir`; returns how many. Folders whose job cannot be
/// read (Redis down) are kept for the next start.
pub(crate) async fn remove_stale(dir: &Path, jobs: &JobStore) -> usize {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else { return 0 };
    let mut removed = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(parse) else { continue };
        let stale = match stale(&owner, jobs).await {
            Ok(stale) => stale,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check scratch folders now");
                return removed;
            }
        };
        if stale && tokio::fs::remove_dir_all(entry.path()).await.is_ok() {
            tracing::info!(folder = %entry.path().display(), "removed a dead attempt's scratch");
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_the_job_s_unless_the_scratch_disk_is_full() {
        let dir = tempfile::tempdir().unwrap();
        // This test's temporary folder has room: the error stays what it was.
        let invalid = EngineError::new(ErrorCode::OutputInvalid, "playlist cut short");
        assert_eq!(blame_full_disk(dir.path(), invalid.clone()), invalid);
        assert!(available_bytes(dir.path()).is_some_and(|free| free >= NEARLY_FULL_BYTES));
        assert_eq!(available_bytes(Path::new("/no/such/folder")), None);
    }

    #[test]
    fn attempt_folders_name_their_job_and_epoch() {
        let job = JobId::generate();
        assert_eq!(parse(&format!("{job}-3-a1b2c3")), Some(Owner::Job(job.clone(), 3)));
        assert_eq!(parse(&format!("{job}.p12-2-a1b2c3")), Some(Owner::Part(job.clone(), 12, 2)));
        assert_eq!(parse(&format!("{job}.px-2-a1b2c3")), None);
        assert_eq!(parse(&format!("{job}-x-a1b2c3")), None);
        assert_eq!(parse("lost+found"), None);
        assert_eq!(parse("job_123-1-abc"), None);
        // The folders attempts make are the names read back.
        let dir = Path::new("/scratch");
        for owner in [Owner::Job(job.clone(), 3), Owner::Part(job.clone(), 12, 2)] {
            let folder = owner.folder(dir);
            assert_eq!(folder.parent(), Some(dir));
            assert_eq!(parse(folder.file_name().unwrap().to_str().unwrap()), Some(owner));
        }
    }
}
