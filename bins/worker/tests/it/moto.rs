//! The whole pipeline on a second, independent S3 implementation: moto's server mode. The
//! multipart upload of the source through presigned part URLs (resumed after its first part,
//! completed from moto's own part listing), HEAD checks, ranged downloads and a multipart
//! upload of an output (over 16 MiB) all go to moto, and ffprobe reads the result back.

use std::time::Duration;

use serde_json::json;

use crate::harness::Pipeline;
use tcoder::jobs::JobStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_on_moto_with_a_resumed_multipart_upload_and_a_multipart_output() {
    let moto = testkit::MotoServer::start("tcoder-test");
    let s3 = moto.service_env();
    let mut ingest = s3.clone();
    ingest.push(("TCODER__INGEST__MULTIPART_THRESHOLD", (8u64 << 20).to_string()));
    ingest.push(("TCODER__INGEST__MULTIPART_PART_SIZE", (5u64 << 20).to_string()));
    let pipeline = Pipeline::start_with(&ingest).await;
    let _worker = pipeline.worker(&s3);

    // ~22 MB of constant-rate H.264: its stream copy is uploaded in 8 MiB parts.
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("big.mp4");
    let made = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440", "-t", "4", "-c:v", "libx264"])
        .args(["-preset", "ultrafast", "-b:v", "45M", "-minrate", "45M", "-maxrate", "45M"])
        .args(["-bufsize", "10M", "-x264-params", "nal-hrd=cbr", "-c:a", "aac", "-shortest"])
        .arg(&source)
        .status()
        .unwrap();
    assert!(made.success());
    let size = std::fs::metadata(&source).unwrap().len();
    assert!(size > 17 * 1024 * 1024, "{size} bytes: not enough for a multipart output");

    // Over the threshold: parts. The first goes up, then the connection "drops"; the resume
    // lists it as stored and sends the rest; completing needs no notification from moto.
    let request = json!({ "preset": "default", "content_length": size });
    let created = pipeline.create_as(&pipeline.key, request).await;
    let id = created.job.id.to_string();
    let view = created.multipart_upload.clone().expect("a multipart upload");
    assert_eq!(u64::from(view.part_count), size.div_ceil(5 << 20));
    let first = &view.parts[0];
    let bytes = std::fs::read(&source).unwrap()[..usize::try_from(first.size).unwrap()].to_vec();
    let client = tcoder::api::Client::new(&pipeline.api, &pipeline.key).unwrap();
    client.upload_bytes(&first.upload, bytes).await.unwrap();
    let resumed = client.upload_urls(&id).await.unwrap();
    let left = resumed.multipart_upload.as_ref().unwrap();
    assert_eq!(left.uploaded.iter().map(|p| p.part_number).collect::<Vec<_>>(), [1]);
    let report = client.upload_source(&resumed, &source, |_| {}).await.unwrap();
    assert_eq!((report.parts_sent, report.parts_already_stored), (view.part_count - 1, 1));
    let job = pipeline.wait_status(&id, JobStatus::Completed, Duration::from_secs(120)).await;
    assert_eq!(job.source.as_ref().map(|s| s.size), Some(size));
    let mp4 = job.result.as_ref().unwrap().renditions[0].mp4.clone().unwrap();
    assert!(
        mp4.starts_with(&format!("http://{}/tcoder-test/outputs/acme/{id}/", moto.addr())),
        "{mp4}"
    );
    let head = pipeline.http.head(&mp4).send().await.unwrap();
    assert_eq!(head.status(), reqwest::StatusCode::OK);
    let stored: u64 = head.headers()["content-length"].to_str().unwrap().parse().unwrap();
    assert!(stored > 16 * 1024 * 1024, "{stored} bytes: the output went up in one part");

    // An independent reader sees the whole video in the object moto assembled from parts.
    let duration = testkit::media::format_duration(&mp4);
    assert!((duration - 4.0).abs() < 0.1, "{duration}");
}
