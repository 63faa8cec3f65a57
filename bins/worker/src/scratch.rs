//! Scratch folders of attempts that died (a killed worker, a crashed machine) are removed
//! when a worker starts, so a host's disk does not fill up with their sources and outputs.
//! Several workers may share one scratch folder (the local provider's machines do), so only
//! folders no live attempt can own are removed: the job's current attempt is not theirs, or
//! the job is not running.

use std::path::{Path, PathBuf};

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
