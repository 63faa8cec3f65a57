//! Gauges that describe the system rather than one service's work: jobs by state, and per
//! priority the queue depth and the age of the oldest waiting work item. Sampled every few
//! seconds by the dispatcher.

use std::time::Duration;

use prometheus::{IntGaugeVec, Opts};
use tcoder::events::subjects;
use tcoder::jobs::{JobStatus, Priority};
use tcoder::metrics::Metrics;
use tcoder::redis::Conn;
use tokio_util::sync::CancellationToken;

use crate::periodic::{FirstRound, Periodic};

const INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub(crate) struct Observer {
    pub redis: Conn,
    pub js: async_nats::jetstream::Context,
    jobs: IntGaugeVec,
    depth: IntGaugeVec,
    oldest: prometheus::GaugeVec,
}

impl Observer {
    pub(crate) fn new(
        metrics: &Metrics,
        redis: Conn,
        js: async_nats::jetstream::Context,
    ) -> Observer {
        let jobs = IntGaugeVec::new(
            Opts::new(
                "tcoder_jobs",
                "Jobs not yet finished, by state (awaiting_upload, uploaded, queued, running).",
            ),
            &["state"],
        )
        .expect("valid metric");
        let depth = IntGaugeVec::new(
            Opts::new("tcoder_queue_depth", "Work items waiting or in flight, by priority."),
            &["priority"],
        )
        .expect("valid metric");
        let oldest = prometheus::GaugeVec::new(
            Opts::new(
                "tcoder_queue_oldest_age_seconds",
                "Age of the oldest work item still in the queue, by priority (0 when empty).",
            ),
            &["priority"],
        )
        .expect("valid metric");
        metrics.register(&jobs);
        metrics.register(&depth);
        metrics.register(&oldest);
        Observer { redis, js, jobs, depth, oldest }
    }

    pub(crate) async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let periodic =
            Periodic { quiet: true, ..Periodic::every("gauges", INTERVAL, FirstRound::Now) };
        periodic.run(stop, || self.sample()).await
    }

    pub(crate) async fn sample(&self) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        for status in
            [JobStatus::AwaitingUpload, JobStatus::Uploaded, JobStatus::Queued, JobStatus::Running]
        {
            let count: i64 = redis::cmd("ZCARD")
                .arg(tcoder::redis::keys::status_index(status))
                .query_async(&mut redis)
                .await?;
            self.jobs.with_label_values(&[status.as_str()]).set(count);
        }
        let stream = self.js.get_stream(subjects::JOBS_STREAM).await?;
        let now = tcoder::jobs::now_secs_f64();
        for priority in Priority::ALL {
            let depth = tcoder::events::queue_depth(&stream, priority).await?;
            self.depth
                .with_label_values(&[priority.as_str()])
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
            let age = match stream
                .get_first_raw_message_by_subject(subjects::jobs(priority), 1)
                .await
            {
                Ok(message) => (now - message.time.unix_timestamp_nanos() as f64 / 1e9).max(0.0),
                Err(_) => 0.0,
            };
            self.oldest.with_label_values(&[priority.as_str()]).set(age);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tcoder::config::{EnvVars, Service, Settings};
    use tcoder::events::subjects;
    use tcoder::jobs::Priority;
    use tcoder::metrics::Metrics;

    use super::Observer;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find(|l| l.starts_with(series))?.rsplit(' ').next()?.parse().ok()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queue_gauges_count_waiting_work_and_age_the_oldest_item_per_priority() {
        let env = testkit::TestEnv::start();
        let settings =
            Settings::load_from(Service::Dispatcher, None, EnvVars::from_pairs(env.service_env()))
                .unwrap();
        let nats = tcoder::events::connect(&settings.nats, "test").await.unwrap();
        let js = async_nats::jetstream::new(nats);
        tcoder::events::ensure_topology(&js, &settings.nats).await.unwrap();
        let mut redis = tcoder::redis::connect(&settings.redis).await.unwrap();
        for job in ["job_a", "job_b"] {
            let _: i64 = redis::cmd("ZADD")
                .arg(format!("{}status:queued", tcoder::redis::KEY_PREFIX))
                .arg(1)
                .arg(job)
                .query_async(&mut redis)
                .await
                .unwrap();
            let subject = subjects::job(Priority::Normal, job);
            js.publish(subject, "{}".into()).await.unwrap().await.unwrap();
        }
        let metrics = Metrics::new("dispatcher");
        let observer = Observer::new(&metrics, redis, js);

        // Two jobs queued; two items wait at normal priority, none elsewhere; the oldest ages
        // as time passes.
        testkit::eventually_async(Duration::from_secs(10), || async {
            observer.sample().await.map_err(|e| e.to_string())?;
            let text = metrics.render();
            let depth = sample(&text, r#"tcoder_queue_depth{priority="normal"}"#);
            let high = sample(&text, r#"tcoder_queue_depth{priority="high"}"#);
            let age = sample(&text, r#"tcoder_queue_oldest_age_seconds{priority="normal"}"#);
            let idle = sample(&text, r#"tcoder_queue_oldest_age_seconds{priority="high"}"#);
            let queued = sample(&text, r#"tcoder_jobs{state="queued"}"#);
            let running = sample(&text, r#"tcoder_jobs{state="running"}"#);
            match (depth, high, age, idle, queued, running) {
                (Some(2.0), Some(0.0), Some(age), Some(0.0), Some(2.0), Some(0.0))
                    if age >= 1.0 =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
}
