//! Scratch folders of attempts that died (a killed worker, a crashed machine) are removed
//! when a worker starts, so a host's disk does not fill up with their sources and outputs.
//! Several workers may share one scratch folder (the local provider's machines do), so only
//! folders no live attempt can own are removed: the job's current attempt is not theirs, or
//! the job is not running.

use std::path::Path;

use tcoder::jobs::{JobId, JobStatus, JobStore};

/// `job_<id>-<epoch>-<random>` → (job id, epoch).
pub(crate) fn parse(name: &str) -> Option<(JobId, u64)> {
    let mut parts = name.rsplitn(3, '-');
    let _random = parts.next()?;
    let epoch = parts.next()?.parse().ok()?;
    let job = JobId::parse(parts.next()?)?;
    Some((job, epoch))
}

/// Removes stale attempt folders under `dir`; returns how many. Folders whose job cannot be
/// read (Redis down) are kept for the next start.
pub(crate) async fn remove_stale(dir: &Path, jobs: &JobStore) -> usize {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else { return 0 };
    let mut removed = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name();
        let Some((job, epoch)) = name.to_str().and_then(parse) else { continue };
        let stale = match jobs.get(&job).await {
            Ok(Some(current)) => current.status != JobStatus::Running || current.epoch != epoch,
            Ok(None) => true,
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
        assert_eq!(parse(&format!("{job}-3-a1b2c3")), Some((job.clone(), 3)));
        assert_eq!(parse(&format!("{job}-x-a1b2c3")), None);
        assert_eq!(parse("lost+found"), None);
        assert_eq!(parse("job_123-1-abc"), None);
    }
}
