//! Ending and removing jobs outside an attempt: a client cancels or deletes one, the sweep
//! expires one whose upload never came or deletes one past `ingest.job_retention`. Each is one
//! state change in Redis and one event; the objects go first, the record last, so a failure
//! half-way leaves a record to try again with.

use tcoder::events::{self, JobEvent};
use tcoder::jobs::{DeleteOutcome, Job, JobError, JobStatus, TransitionError};
use tcoder::s3::{self, KeyPrefix, keys, multipart};

use super::{Bridge, Transient};

/// Listing pages (1,000 keys each) removed per folder per round; a folder with more is
/// removed over several rounds.
const DELETE_PAGES: usize = 10;
/// Rounds of removal per folder before the deletion is reported unfinished (1M objects: far
/// more than any job writes).
const DELETE_ROUNDS: usize = 100;

/// What asking to cancel a job found.
#[derive(Debug)]
pub(crate) enum Canceled {
    /// Canceled by this call (its `canceled` event is out).
    Now,
    /// It had already ended, as this status.
    AlreadyEnded(JobStatus),
    /// No such job any more.
    Missing,
}

/// What asking to delete a job found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Deleted {
    /// Its objects and record are gone (its `deleted` event is out).
    Now,
    /// No such job any more (deleted by another caller meanwhile).
    Missing,
}

impl Bridge {
    /// Drops the job's multipart upload and the parts the store holds (best effort: an R2/S3
    /// lifecycle rule removes what is left, docs/DEPLOY.md).
    pub(crate) async fn abort_multipart(&self, job: &Job) {
        let Some(upload) = &job.multipart else { return };
        if let Err(e) =
            multipart::abort(&self.s3, &self.bucket, &job.upload_key, &upload.upload_id).await
        {
            tracing::warn!(job = %job.id, error = %e, "multipart upload not aborted");
        }
    }

    /// Cancels a job that has not ended: its attempt stops at its next lease renewal (or at
    /// once, on the `canceled` event) and removes what it wrote.
    pub(crate) async fn cancel(&self, job: &Job) -> Result<Canceled, Transient> {
        match self.jobs.transition(&job.id, JobStatus::Canceled, "canceled by client", &[]).await {
            Ok(_) => {}
            Err(TransitionError::Illegal { current, .. }) => {
                return Ok(Canceled::AlreadyEnded(current));
            }
            Err(TransitionError::Missing) => return Ok(Canceled::Missing),
            Err(TransitionError::Store(e)) => return Err(Transient(e.to_string())),
        }
        self.abort_multipart(job).await;
        if let Err(e) = events::publish_event(&self.js, &JobEvent::canceled(job)).await {
            tracing::warn!(job = %job.id, error = %e, "canceled event not published");
        }
        Ok(Canceled::Now)
    }

    /// Expires a job whose upload never came (status `expired`, with an `expired` event).
    /// Returns whether this call expired it.
    pub(crate) async fn expire(&self, job: &Job) -> anyhow::Result<bool> {
        let error = JobError {
            code: "upload.expired".into(),
            message: "no upload arrived within ingest.upload_expiry".into(),
        };
        self.abort_multipart(job).await;
        let to = JobStatus::Expired;
        Ok(events::end_and_announce(&self.js, &self.jobs, job, to, &error).await?)
    }

    /// Deletes a job: canceled first when it has not ended, then every attempt's outputs and
    /// tcoder's own uploads for it (the source and caption files under
    /// `uploads/<tenant>/<job>/`; an object a producer or watch folder named stays the
    /// user's), then the record, with a `deleted` event (`by`: `client` or `retention`).
    pub(crate) async fn delete(
        &self,
        job: &Job,
        by: &str,
        tombstone_ttl_secs: u64,
    ) -> Result<Deleted, Transient> {
        if !job.status.is_terminal()
            && let Canceled::Missing = self.cancel(job).await?
        {
            return Ok(Deleted::Missing);
        }
        let folders = [
            keys::job_outputs_prefix(&job.tenant, &job.id),
            keys::job_uploads_prefix(&job.tenant, &job.id),
        ];
        for folder in &folders {
            self.empty_folder(folder).await?;
        }
        match self.jobs.delete(&job.id, tombstone_ttl_secs).await {
            Ok(DeleteOutcome::Deleted) => {}
            Ok(DeleteOutcome::Missing) => return Ok(Deleted::Missing),
            // Moved again since (an operator's replay): not ours to delete now.
            Ok(DeleteOutcome::Active(status)) => {
                return Err(Transient(format!("the job is {status} again; delete it later")));
            }
            Err(e) => return Err(Transient(e.to_string())),
        }
        if let Err(e) = events::publish_event(&self.js, &JobEvent::deleted(job, by)).await {
            tracing::warn!(job = %job.id, error = %e, "deleted event not published");
        }
        Ok(Deleted::Now)
    }

    /// Removes every object under `folder`, a bounded number of rounds.
    async fn empty_folder(&self, folder: &KeyPrefix) -> Result<(), Transient> {
        for _ in 0..DELETE_ROUNDS {
            let removed = s3::delete_prefix(&self.s3, &self.bucket, folder, None, DELETE_PAGES)
                .await
                .map_err(|e| Transient(format!("cannot remove {folder}: {e}")))?;
            if removed < DELETE_PAGES * 1000 {
                return Ok(());
            }
        }
        Err(Transient(format!("{folder} still holds objects; the deletion goes on later")))
    }
}
