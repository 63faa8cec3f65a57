//! The periodic sweep: catches uploads whose notification was lost, re-publishes upload
//! events a crash may have swallowed, and expires jobs whose upload can no longer arrive.
//!
//! It costs in proportion to pending uploads, not bucket size: one ListObjectsV2 per tenant
//! that has jobs awaiting upload (prefix `uploads/<tenant>/`), matched against those jobs.
//! Watch folders are listed too (bounded pages per rule); only objects a rule may still take
//! (newer than the rule, within the dedup window) are looked at, each one Redis read when its
//! job exists already.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tcoder::events::UploadSource;
use tcoder::jobs::{Job, JobStatus, Tenant, now_ms};
use tcoder::s3::{self, Key, ObjectCreated, keys};
use tokio_util::sync::CancellationToken;

use super::Bridge;
use super::lifecycle::Deleted;

/// Jobs looked at per status per sweep (the rest wait for the next one).
const BATCH: usize = 1000;
/// Listing pages per tenant per sweep.
const MAX_PAGES: usize = 20;

/// What one sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SweepReport {
    pub found: usize,
    /// Objects in watch folders whose job the sweep made (their notification was lost).
    pub watched: usize,
    pub republished: usize,
    pub expired: usize,
    /// Ended jobs deleted for being older than `ingest.job_retention`.
    pub retired: usize,
    /// Imports started again (their process stopped).
    pub imports: usize,
}

/// The sweep's schedule and limits.
#[derive(Debug, Clone)]
pub(crate) struct Sweeper {
    pub bridge: Bridge,
    /// Imports whose process died are started again.
    pub importer: super::import::Importer,
    pub interval: Duration,
    /// Jobs still awaiting their upload this long after creation expire (`ingest.upload_expiry`).
    pub upload_expiry: Duration,
    /// Ended jobs are deleted this long after they ended (`ingest.job_retention`; zero: never).
    pub retention: Duration,
    /// How long a deleted job's tombstone lasts.
    pub tombstone_ttl: Duration,
}

impl Sweeper {
    pub(crate) async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = stop.cancelled() => return Ok(()),
            }
            match self.sweep_once().await {
                Ok(report) if report != SweepReport::default() => {
                    tracing::info!(?report, "upload sweep")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "upload sweep failed; trying again next interval")
                }
            }
        }
    }

    pub(crate) async fn sweep_once(&self) -> anyhow::Result<SweepReport> {
        let mut report = SweepReport::default();
        let jobs = &self.bridge.jobs;
        let now = now_ms();
        let deadline_ms = u64::try_from(self.upload_expiry.as_millis()).unwrap_or(u64::MAX);
        let mut awaiting: BTreeMap<Tenant, HashMap<Key, Job>> = BTreeMap::new();
        for id in jobs.in_status(JobStatus::AwaitingUpload, BATCH).await? {
            let Some(job) = jobs.get(&id).await? else { continue };
            if job.status != JobStatus::AwaitingUpload {
                continue;
            }
            if now.saturating_sub(job.created_at) > deadline_ms {
                report.expired += usize::from(self.bridge.expire(&job).await?);
                continue;
            }
            if super::import::wants_import(&job) && !self.importer.running(&job).await? {
                self.importer.start(job.clone());
                report.imports += 1;
            }
            awaiting.entry(job.tenant.clone()).or_default().insert(job.upload_key.clone(), job);
        }
        for (tenant, waiting) in &awaiting {
            for (key, size, etag) in self.list_uploads(tenant).await? {
                if waiting.contains_key(&key) {
                    let event = ObjectCreated {
                        bucket: self.bridge.bucket.clone(),
                        key: key.into(),
                        size: Some(size),
                        etag: Some(etag),
                    };
                    if self.bridge.handle(&event, UploadSource::Sweep).await?
                        == super::Outcome::Accepted
                    {
                        report.found += 1;
                    }
                }
            }
        }
        report.watched = self.sweep_watch_folders().await?;
        // Uploaded but not yet queued for a while: the event may not have been published.
        let stale_ms = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        for id in jobs.in_status(JobStatus::Uploaded, BATCH).await? {
            let Some(job) = jobs.get(&id).await? else { continue };
            if job.status == JobStatus::Uploaded && now.saturating_sub(job.updated_at) >= stale_ms {
                // Its upload event again (the broker drops it if the first one landed),
                // counted as the duplicate notification it stands for.
                self.bridge.publish(&job, UploadSource::Sweep).await?;
                let labels = [UploadSource::Sweep.as_str(), super::Outcome::Duplicate.as_str()];
                self.bridge.metrics.bridge_events.with_label_values(&labels).inc();
                report.republished += 1;
            }
        }
        report.retired = self.retire(now).await?;
        Ok(report)
    }

    /// Deletes jobs that ended longer than the retention ago; how many.
    async fn retire(&self, now: u64) -> anyhow::Result<usize> {
        if self.retention.is_zero() {
            return Ok(0);
        }
        let retention_ms = u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX);
        let jobs = &self.bridge.jobs;
        let mut retired = 0;
        for id in jobs.ended_before(now.saturating_sub(retention_ms), BATCH).await? {
            let Some(job) = jobs.get(&id).await? else { continue };
            let ttl = self.tombstone_ttl.as_secs();
            if self.bridge.delete(&job, "retention", ttl).await? == Deleted::Now {
                retired += 1;
            }
        }
        Ok(retired)
    }

    /// Objects in watch folders without a job yet; how many got one.
    async fn sweep_watch_folders(&self) -> anyhow::Result<usize> {
        let bridge = &self.bridge;
        let rules = bridge.watch.current().await?;
        let mut made = 0;
        for rule in rules.iter() {
            let listed = s3::list(&bridge.s3, &bridge.bucket, &rule.prefix, MAX_PAGES).await?;
            for object in listed {
                // Each object is the business of the rule with the longest prefix only.
                let ours = tcoder::watch::matching(&rules, &object.key)
                    .is_some_and(|matched| matched.name == rule.name);
                if !ours || !super::rule_may_take(rule, object.modified_ms, now_ms()) {
                    continue;
                }
                let event = ObjectCreated {
                    bucket: bridge.bucket.clone(),
                    key: object.key.into(),
                    size: Some(object.size),
                    etag: Some(object.etag),
                };
                let outcome = bridge.handle_with(&event, UploadSource::Sweep, Some(&rules)).await?;
                if outcome == super::Outcome::Watched {
                    made += 1;
                }
            }
        }
        Ok(made)
    }

    /// Objects under `uploads/<tenant>/`: (key, size, etag).
    async fn list_uploads(&self, tenant: &Tenant) -> anyhow::Result<Vec<(Key, u64, String)>> {
        let prefix = keys::tenant_uploads(tenant);
        let found = s3::list(&self.bridge.s3, &self.bridge.bucket, &prefix, MAX_PAGES)
            .await?
            .into_iter()
            .map(|o| (o.key, o.size, o.etag))
            .collect();
        Ok(found)
    }
}
