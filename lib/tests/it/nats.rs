use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, stream::RetentionPolicy};
use futures_util::StreamExt;
use tcoder::events::{self, subjects};
use tcoder::jobs::Priority;
use testkit::{TestEnv, http_get};

use crate::helpers::settings;

#[tokio::test]
async fn topology_is_created_idempotently_with_the_designed_retention() {
    let env = TestEnv::start();
    let settings = settings(&env);
    let client = events::connect(&settings.nats, "test").await.unwrap();
    let js = jetstream::new(client);

    events::ensure_topology(&js, &settings.nats).await.unwrap();
    // A second service starting later runs the same set-up; it must succeed and change nothing.
    events::ensure_topology(&js, &settings.nats).await.unwrap();

    let mut jobs = js.get_stream(subjects::JOBS_STREAM).await.unwrap();
    let info = jobs.info().await.unwrap();
    assert_eq!(info.config.retention, RetentionPolicy::WorkQueue);
    assert_eq!(info.config.subjects, vec![subjects::JOBS_ALL.to_owned()]);
    for (name, retention) in [
        (subjects::UPLOADS_STREAM, RetentionPolicy::Limits),
        (subjects::EVENTS_STREAM, RetentionPolicy::Limits),
        (subjects::DLQ_STREAM, RetentionPolicy::Limits),
    ] {
        let mut stream = js.get_stream(name).await.unwrap();
        assert_eq!(stream.info().await.unwrap().config.retention, retention, "{name}");
    }
    for priority in Priority::ALL {
        let consumer: PullConsumer =
            jobs.get_consumer(&subjects::jobs_consumer(priority)).await.unwrap();
        let config = &consumer.cached_info().config;
        assert_eq!(config.max_deliver, settings.nats.jobs_max_deliver);
        assert_eq!(config.filter_subject, subjects::jobs(priority));
    }
}

#[tokio::test]
async fn a_job_message_is_deduplicated_consumed_and_removed_on_explicit_ack() {
    let env = TestEnv::start();
    let settings = settings(&env);
    let client = events::connect(&settings.nats, "test").await.unwrap();
    let js = jetstream::new(client);
    events::ensure_topology(&js, &settings.nats).await.unwrap();

    let publish = |payload: &'static str| {
        let js = js.clone();
        async move {
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .message_id("job-1/attempt-1");
            js.send_publish(subjects::job(Priority::Normal, "job-1"), message)
                .await
                .unwrap()
                .await
                .unwrap()
        }
    };
    let first = publish("job-1").await;
    let again = publish("job-1").await;
    assert!(!first.duplicate);
    assert!(again.duplicate, "same Nats-Msg-Id within the window must be dropped");
    assert_eq!(again.sequence, first.sequence);

    let stream = js.get_stream(subjects::JOBS_STREAM).await.unwrap();
    let consumer: PullConsumer =
        stream.get_consumer(&subjects::jobs_consumer(Priority::Normal)).await.unwrap();
    let mut batch =
        consumer.fetch().max_messages(1).expires(Duration::from_secs(5)).messages().await.unwrap();
    let message = batch.next().await.expect("one message").unwrap();
    assert_eq!(&message.payload[..], b"job-1");
    message.ack_with(AckKind::Ack).await.unwrap();
    // double-ack semantics are not needed: wait (bounded) until the work queue drops it.
    testkit::eventually_async(Duration::from_secs(5), || {
        let mut stream = stream.clone();
        async move {
            let messages = stream.info().await.map_err(|e| e.to_string())?.state.messages;
            if messages == 0 { Ok(()) } else { Err(format!("{messages} messages left")) }
        }
    })
    .await;
}

#[test]
fn the_test_server_runs_with_sync_interval_always() {
    let env_nats = testkit::NatsServer::start();
    let (status, varz) = http_get(env_nats.monitor_addr(), "/varz").unwrap();
    assert_eq!(status, 200);
    let varz: serde_json::Value = serde_json::from_str(&varz).unwrap();
    assert_eq!(varz["jetstream"]["config"]["sync_always"], serde_json::Value::Bool(true), "{varz}");
}

/// A 3-hour video's HLS ladder has thousands of segments; its completion must still be
/// published (NATS refuses payloads over 1 MiB): the event carries a bounded summary and the
/// manifest object lists every file.
#[tokio::test]
async fn a_three_hour_ladder_completes_with_a_bounded_event_and_a_full_manifest() {
    use tcoder::engine::{EngineReport, OutputFile, RenditionReport};
    use tcoder::events::JobEvent;
    use tcoder::jobs::{EngineUsage, JobResult};

    let mut report: EngineReport = serde_json::from_value(serde_json::json!({
        "media": { "format": "mov", "duration_secs": 10800.0, "bit_rate": null, "streams": 2,
                   "audio": null,
                   "video": { "index": 0, "codec": "h264", "width": 1920, "height": 1080,
                              "fps": 30.0, "bit_rate": null, "pixel_format": "yuv420p" } },
        "mode": "transcode", "renditions": [], "hls_master": "hls/master.m3u8",
        "thumbnails": ["thumbs/poster.jpg", "thumbs/storyboard.jpg", "thumbs/storyboard.vtt"],
        "files": [], "frames": 324000, "decode_errors": 0,
    }))
    .unwrap();
    let segments = 10_800 / 4;
    for (name, width, height) in
        [("1080p", 1920, 1080), ("720p", 1280, 720), ("360p", 640, 360), ("144p", 256, 144)]
    {
        report.renditions.push(RenditionReport {
            name: name.into(),
            width,
            height,
            video_codec: tcoder::jobs::VideoCodec::H264,
            audio_codec: Some(tcoder::jobs::AudioCodec::Aac),
            video_bit_rate: 1_000_000,
            mp4: Some(format!("mp4/{name}.mp4")),
            hls: Some(format!("hls/{name}/index.m3u8")),
            dynamic_range: Default::default(),
            quality: None,
        });
        for n in 0..segments {
            report.files.push(OutputFile {
                path: format!("hls/{name}/seg_{n:05}.m4s"),
                bytes: 2_000_000,
                content_type: "video/iso.segment".into(),
            });
        }
    }
    let job_id = tcoder::jobs::JobId::generate();
    let prefix = format!("outputs/acme/{job_id}/1/");
    let full = JobResult::new(
        1,
        &prefix,
        &report,
        EngineUsage { cpu_secs: 1.0, wall_secs: 1.0, started_at_ms: 0.0 },
        tcoder::cost::JobCost::new(Default::default(), &Default::default()),
        &|key| format!("https://cdn.example/{key}"),
    );
    let manifest = serde_json::to_vec(&full).unwrap();
    assert_eq!(full.files.len(), 4 * segments);
    assert!(
        manifest.len() > 1 << 20,
        "the full list alone is over NATS' limit: {}",
        manifest.len()
    );

    let summary = full.summary(format!("https://cdn.example/{prefix}manifest.json"));
    assert_eq!((summary.file_count, summary.files.len()), (4 * segments, 0));
    let env = TestEnv::start();
    let settings = settings(&env);
    let js = jetstream::new(events::connect(&settings.nats, "test").await.unwrap());
    events::ensure_topology(&js, &settings.nats).await.unwrap();
    let request = tcoder::jobs::JobRequest::default();
    let limits = tcoder::jobs::SpecLimits {
        max_upload_bytes: 1 << 30,
        allowed_webhooks: &[],
        tenant: &tcoder::jobs::Tenant::parse("acme").unwrap(),
        presigned: true,
        multipart_threshold: u64::MAX,
        import: None,
    };
    let job = tcoder::jobs::Job {
        id: job_id,
        tenant: tcoder::jobs::Tenant::parse("acme").unwrap(),
        status: tcoder::jobs::JobStatus::Running,
        spec: tcoder::jobs::JobSpec::from_request(request, limits).unwrap(),
        epoch: 1,
        attempts: 1,
        lost_attempts: 0,
        queued_count: 1,
        created_at: 0,
        updated_at: 0,
        playable_at: None,
        completed_at: None,
        upload_key: tcoder::s3::Key::parse("uploads/acme/job/source").unwrap(),
        source: None,
        origin: tcoder::jobs::JobOrigin::Api,
        outputs: None,
        error: None,
        webhook: None,
        multipart: None,
    };
    let event = JobEvent::completed(&job, 1, &summary);
    let payload = serde_json::to_vec(&event).unwrap();
    assert!(payload.len() < 64 * 1024, "completed event of {} bytes", payload.len());
    events::publish_event(&js, &event).await.unwrap();
}
