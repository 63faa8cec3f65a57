//! Caption files named by a job, through the whole pipeline: uploaded to the URLs the job's
//! creation returns or named in the tenant's uploads, the job starting when its last file is
//! in, and coming out as WebVTT tracks in the HLS master and timed text in the MP4.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use serde_json::{Value, json};
use tcoder::api::Client;
use tcoder::jobs::{JobRequest, JobResult, JobStatus};
use testkit::corpus;

use crate::harness::Pipeline;

const LONG: Duration = Duration::from_secs(90);

const SRT: &str = "1\r\n00:00:00,200 --> 00:00:00,900\r\nHello from the upload\r\n";
const VTT: &str = "WEBVTT\n\n00:00:00.300 --> 00:00:00.800\nBonjour du fichier\n";

impl Pipeline {
    /// Puts `body` at `key` in the bucket, as a producer writing there itself would.
    async fn put(&self, key: &str, body: &[u8]) {
        self.s3
            .put_object()
            .bucket(self.env.s3.bucket())
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await
            .unwrap();
    }

    /// What ingest made of an S3 notification of `key`.
    async fn notification_outcome(&self, key: &str) -> String {
        self.notify_upload(&self.api, key).await
    }

    /// `POST /v1/jobs` as tenant acme; the problem's `code` when refused.
    async fn create_or_code(&self, request: Value) -> Result<tcoder::api::CreatedView, String> {
        let request: JobRequest = serde_json::from_value(request).unwrap();
        self.client.create_job(&request, None).await.map_err(|e| match e {
            tcoder::api::ClientError::Refused { problem, .. } => problem.code,
            other => panic!("{other}"),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caption_files_named_by_a_job_come_out_as_tracks_once_every_file_is_in() {
    let pipeline = Pipeline::start().await;
    let _worker = pipeline.worker(&[]);
    pipeline.put("uploads/acme/subs/fr.vtt", VTT.as_bytes()).await;
    pipeline.put("uploads/globex/subs/fr.vtt", VTT.as_bytes()).await;

    // Objects are named by their canonical key in the tenant's own uploads, and must exist.
    for key in [
        "uploads/globex/subs/fr.vtt",
        "uploads/acme/../globex/subs/fr.vtt",
        "uploads/acme/%2e%2e/globex/subs/fr.vtt",
        "uploads/acme//subs/fr.vtt",
        "uploads/acme/subs/missing.vtt",
        "outputs/acme/x/1/captions/captions-0.vtt",
    ] {
        let refused = pipeline
            .create_or_code(json!({ "captions": [{ "language": "fr", "key": key }] }))
            .await;
        assert_eq!(refused.err().as_deref(), Some("validation.captions"), "{key}");
    }

    let created = pipeline
        .create_or_code(json!({
            "preset": "hls", "qualities": ["144p"], "outputs": ["hls", "mp4"],
            "mp4_captions": true,
            "captions": [
                { "language": "en", "upload": true, "default": true },
                { "language": "fr", "key": "uploads/acme/subs/fr.vtt" },
            ],
        }))
        .await
        .unwrap();
    let id = created.job.id.to_string();
    assert_eq!(created.caption_uploads.len(), 1);
    assert_eq!(created.caption_uploads[0].caption, 0);
    let client = Client::new(&pipeline.api, &pipeline.key).unwrap();
    let source = std::fs::read(corpus::ok_mp4()).unwrap();
    client.upload_bytes(created.upload.as_ref().unwrap(), source).await.unwrap();

    // The source alone does not start the job: its caption file is not in yet.
    let source_key = format!("uploads/acme/{id}/source");
    assert_eq!(pipeline.notification_outcome(&source_key).await, "awaiting_files");
    assert_eq!(pipeline.job(&id).await.status, JobStatus::AwaitingUpload);
    // Notifications naming a caption the job has not, or another tenant's folder, are not it.
    for key in [format!("uploads/acme/{id}/captions/1"), format!("uploads/globex/{id}/captions/0")]
    {
        assert_eq!(pipeline.notification_outcome(&key).await, "unknown_key", "{key}");
    }
    assert_eq!(
        pipeline.notification_outcome(&format!("uploads/acme/{id}/captions/../source")).await,
        "invalid_key"
    );

    client.upload_bytes(&created.caption_uploads[0].upload, SRT.as_bytes().to_vec()).await.unwrap();
    let caption_key = format!("uploads/acme/{id}/captions/0");
    assert_eq!(pipeline.notification_outcome(&caption_key).await, "accepted");

    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    let result: JobResult = job.result.unwrap();
    let tracks: Vec<(&str, Option<&str>, bool)> = result
        .captions
        .iter()
        .map(|c| (c.name.as_str(), c.language.as_deref(), c.default))
        .collect();
    assert_eq!(tracks, [("English", Some("en"), true), ("French", Some("fr"), false)]);
    let english = std::fs::read_to_string(pipeline.stored(&result.captions[0].vtt)).unwrap();
    assert!(english.contains("00:00:00.200 --> 00:00:00.900\nHello from the upload"), "{english}");
    let master =
        std::fs::read_to_string(pipeline.stored(result.hls_master.as_deref().unwrap())).unwrap();
    assert_eq!(master.matches("TYPE=SUBTITLES").count(), 2, "{master}");
    // The MP4 carries both as timed text, which FFmpeg reads back.
    let mp4 = pipeline.stored(result.renditions[0].mp4.as_deref().unwrap());
    let srt = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&mp4)
        .args(["-map", "0:s:1", "-f", "srt", "-"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&srt.stdout).contains("Bonjour du fichier"), "{srt:?}");
    // The caption it uploaded is removed with its source; the named object is the tenant's.
    let bucket = pipeline.env.s3.bucket();
    assert!(!pipeline.stored(&format!("/{bucket}/{caption_key}")).exists());
    assert!(pipeline.stored(&format!("/{bucket}/uploads/acme/subs/fr.vtt")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_caption_upload_fails_the_job_and_is_not_kept() {
    let pipeline = Pipeline::start().await;
    let created = pipeline
        .create_or_code(json!({ "captions": [{ "language": "en", "upload": true }] }))
        .await
        .unwrap();
    let id = created.job.id.to_string();
    let client = Client::new(&pipeline.api, &pipeline.key).unwrap();
    let source = std::fs::read(corpus::ok_mp4()).unwrap();
    client.upload_bytes(created.upload.as_ref().unwrap(), source).await.unwrap();
    let too_large = vec![b'a'; (tcoder::jobs::MAX_SIDECAR_BYTES + 1) as usize];
    client.upload_bytes(&created.caption_uploads[0].upload, too_large).await.unwrap();
    let caption_key = format!("uploads/acme/{id}/captions/0");
    assert_eq!(pipeline.notification_outcome(&caption_key).await, "caption_rejected");
    let job = pipeline.job(&id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error.unwrap().code, "upload.caption_size");
    let bucket = pipeline.env.s3.bucket();
    assert!(!pipeline.stored(&format!("/{bucket}/{caption_key}")).exists());
}
