//! Jobs through the whole pipeline, with workers killed, paused and starved on purpose.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tcoder::engine::Orientation;
use tcoder::events::subjects;
use tcoder::jobs::{JobResult, JobStatus};
use testkit::{ChaosMode, ChaosProxy, corpus, everyday};

use crate::harness::{
    Pipeline, engine_children, metric, process_alive, webhook_types_until, webhooks_allowed,
};

const LONG: Duration = Duration::from_secs(90);

/// A job that keeps a worker busy for a few seconds (720p source, full ladder).
fn heavy_request() -> serde_json::Value {
    // The fixed ladder: these tests time faults against one encode, not the per-title probe.
    json!({ "preset": "hls", "qualities": "auto", "quality": "fixed" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_flows_end_to_end_and_completes_exactly_once() {
    let pipeline = Pipeline::start().await;
    let mut completed = pipeline.nats.subscribe("tcoder.events.*.*.completed").await.unwrap();
    let _worker = pipeline.worker(&[]);
    let id = pipeline
        .submit(
            &corpus::ok_mp4(),
            json!({ "preset": "hls", "outputs": ["hls", "mp4", "thumbnails"] }),
        )
        .await;

    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    assert_eq!(job.attempts, 1);
    let result: JobResult = job.result.clone().unwrap();
    assert_eq!(result.epoch, 1);
    let master = result.hls_master.as_deref().unwrap();
    assert!(master.contains(&format!("/outputs/acme/{id}/1/hls/master.m3u8")), "{master}");
    // The outputs are real: ffprobe reads the master playlist and the MP4 from the bucket.
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_format"])
        .arg(pipeline.stored(master))
        .output()
        .unwrap();
    assert!(probe.status.success(), "{}", String::from_utf8_lossy(&probe.stderr));
    let mp4 = result.renditions[0].mp4.as_deref().unwrap();
    assert!(pipeline.stored(mp4).is_file());
    assert!(pipeline.stored(&result.thumbnails.as_ref().unwrap().poster).is_file());
    // The summary is bounded; the manifest beside the outputs lists every file.
    let manifest: JobResult = serde_json::from_slice(
        &std::fs::read(pipeline.stored(result.manifest.as_deref().unwrap())).unwrap(),
    )
    .unwrap();
    assert!(result.files.is_empty());
    assert_eq!(manifest.files.len(), result.file_count);
    assert!(manifest.files.iter().all(|f| pipeline.stored(&f.url).is_file()));
    // The source is deleted once the job completed (keep_sources = false).
    let bucket = pipeline.env.s3.bucket();
    assert!(!pipeline.stored(&format!("/{bucket}/uploads/acme/{id}/source")).exists());

    let event =
        tokio::time::timeout(Duration::from_secs(10), completed.next()).await.unwrap().unwrap();
    let event: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(
        (event["type"].as_str(), event["job_id"].as_str()),
        (Some("completed"), Some(id.as_str()))
    );
    assert_eq!(event["data"]["outputs"]["hls_master"], master);
    // Every rendition's measured quality, and the per-title decision (the default `standard`),
    // in the result, the manifest and the completion event.
    let ladder = result.ladder.as_ref().expect("a per-title decision");
    assert_eq!((ladder.goal.as_str(), ladder.target), ("standard", 93.0));
    assert_eq!(manifest.ladder, result.ladder);
    for rendition in &result.renditions {
        let quality = rendition.quality.as_ref().expect("measured");
        assert!(quality.frames > 0 && (0.0..=100.0).contains(&quality.mean), "{quality:?}");
        assert!(ladder.rung(&rendition.name).is_some_and(|c| c.kept), "{}", rendition.name);
    }
    assert_eq!(event["data"]["outputs"]["ladder"]["goal"], "standard");
    assert_eq!(event["data"]["outputs"]["renditions"][0]["quality"]["metric"], "vmaf");
    assert_eq!(pipeline.events(&id, "completed").await.len(), 1);
    for kind in ["accepted", "queued", "started", "rendition"] {
        assert!(!pipeline.events(&id, kind).await.is_empty(), "no {kind} event");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), completed.next()).await.is_err(),
        "a second completed event"
    );

    thumbnails_at_any_time_and_width(&pipeline, &id).await;
    the_stable_hls_url_plays(&pipeline, &id, &result).await;

    // Deleted: every attempt's outputs and the record go, and the thumbnails with them.
    let url = format!("{}/v1/jobs/{id}", pipeline.api);
    let deleted = pipeline.http.delete(&url).bearer_auth(&pipeline.key).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert!(!pipeline.stored(master).exists());
    assert!(!pipeline.stored(mp4).exists());
    let gone = pipeline.http.get(&url).bearer_auth(&pipeline.key).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    let thumb = format!("{url}/thumbnail.jpg?time=1");
    assert_eq!(pipeline.http.get(&thumb).send().await.unwrap().status(), 404);
}

/// `GET /v1/jobs/{id}/hls/…`: the job's HLS set at a URL without its epoch — playlists come
/// from the API (their relative URIs stay under it), segments are redirected to their
/// objects; a path that leaves the set, or another tenant, gets 404. (ffprobe plays it on
/// the single-host stack, whose outputs are public: `tcoder-cli`'s `up` test.)
async fn the_stable_hls_url_plays(pipeline: &Pipeline, id: &str, result: &JobResult) {
    let stable = format!("{}/v1/jobs/{id}/hls", pipeline.api);
    let no_redirects =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let master = no_redirects.get(format!("{stable}/master.m3u8")).send().await.unwrap();
    assert_eq!(master.status(), 200);
    assert_eq!(master.headers()["content-type"], "application/vnd.apple.mpegurl");
    let stored = std::fs::read(pipeline.stored(result.hls_master.as_deref().unwrap())).unwrap();
    assert!(master.bytes().await.unwrap() == stored, "the master as stored");
    // A variant's playlist, then its first segment: redirected to the object.
    let variant = result.renditions[0].hls.as_deref().unwrap();
    let (base, rung) = variant.rsplit_once("/hls/").unwrap();
    let playlist = no_redirects.get(format!("{stable}/{rung}")).send().await.unwrap();
    assert_eq!(playlist.status(), 200);
    let text = playlist.text().await.unwrap();
    let segment = text.lines().find(|l| !l.is_empty() && !l.starts_with('#')).unwrap();
    let folder = rung.rsplit_once('/').map_or("", |(folder, _)| folder);
    let redirected = no_redirects.get(format!("{stable}/{folder}/{segment}")).send().await.unwrap();
    assert_eq!(redirected.status(), 302);
    assert_eq!(redirected.headers()["location"], format!("{base}/hls/{folder}/{segment}"));
    for escape in ["..%2Fmanifest.json", "../manifest.json", "%2e%2e/manifest.json", "x//y.m4s"] {
        let status = no_redirects.get(format!("{stable}/{escape}")).send().await.unwrap().status();
        assert_eq!(status, 404, "{escape}");
    }
    let other = pipeline
        .http
        .get(format!("{stable}/master.m3u8"))
        .bearer_auth(&pipeline.other_key)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

/// `GET /v1/jobs/{id}/thumbnail.jpg`: stills of a completed title at the times and widths
/// asked, decoded by ffprobe (a JPEG of the asked width, the title's aspect), never wider
/// than the stored frame; only for the job's tenant (or anyone, as outputs are public here).
async fn thumbnail_of(
    pipeline: &Pipeline,
    id: &str,
    query: &str,
    key: Option<&str>,
) -> reqwest::Response {
    let url = format!("{}/v1/jobs/{id}/thumbnail.jpg{query}", pipeline.api);
    let mut request = pipeline.http.get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

async fn thumbnails_at_any_time_and_width(pipeline: &Pipeline, id: &str) {
    let key = Some(pipeline.key.as_str());
    let size = |bytes: &[u8]| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jpg");
        std::fs::write(&path, bytes).unwrap();
        let probe = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width,height",
                "-of",
                "csv=p=0",
            ])
            .arg(&path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&probe.stdout).trim().to_owned()
    };
    let early = thumbnail_of(pipeline, id, "?time=0.5&width=320", key).await;
    assert_eq!(early.status(), 200);
    assert_eq!(early.headers()["content-type"], "image/jpeg");
    let etag = early.headers()["etag"].to_str().unwrap().to_owned();
    let early = early.bytes().await.unwrap();
    // The corpus clip is 4:3 (its displayed size): 320 wide is 240 high.
    assert_eq!(size(&early), "mjpeg,320,240");
    let late = thumbnail_of(pipeline, id, "?time=1.9&width=320", key).await.bytes().await.unwrap();
    assert_eq!(size(&late), "mjpeg,320,240");
    assert_ne!(early, late, "another time is another picture");
    // Asked again: not modified.
    let again = pipeline
        .http
        .get(format!("{}/v1/jobs/{id}/thumbnail.jpg?time=0.5&width=320", pipeline.api))
        .bearer_auth(&pipeline.key)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    // Never upscaled: the title is 320 wide, so is its widest still.
    let wide = thumbnail_of(pipeline, id, "?width=1920", key).await.bytes().await.unwrap();
    assert_eq!(size(&wide), "mjpeg,320,240");
    // Past the end: the last frame.
    let end = thumbnail_of(pipeline, id, "?time=9999&width=320", key).await;
    assert_eq!(end.status(), 200);
    for (query, code) in [
        ("?width=8", "validation.width"),
        ("?time=-1", "validation.time"),
        ("?time=NaN", "validation.time"),
    ] {
        let refused = thumbnail_of(pipeline, id, query, key).await;
        assert_eq!(refused.status(), 422, "{query}");
        let problem: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(problem["code"], code, "{query}");
    }
    // Another tenant's key: no such job. No key: outputs are public, so the still is too.
    let other = thumbnail_of(pipeline, id, "?time=1", Some(&pipeline.other_key)).await;
    assert_eq!(other.status(), 404);
    assert_eq!(thumbnail_of(pipeline, id, "?time=1", None).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_job_is_finished_by_another_with_one_commit() {
    let pipeline = Pipeline::start().await;
    let first = pipeline.worker(&[("TCODER__WORKER__ENGINE__X264_PRESET", "medium".into())]);
    let id = pipeline.submit(&corpus::heavy_720p(), heavy_request()).await;
    pipeline.wait_for(&id, LONG, |job| job.status == JobStatus::Running).await;
    testkit::eventually_async(LONG, || async {
        if pipeline.events(&id, "progress").await.is_empty() {
            Err("no progress yet")
        } else {
            Ok(())
        }
    })
    .await;
    // The engine dies with its worker: none of its processes outlives it by a second (the
    // switch to the sandbox uid clears the parent-death signal; it is set again after it).
    let engine: Vec<u32> = engine_children(first.pid())
        .into_iter()
        .flat_map(|child| [vec![child], engine_children(child)].concat())
        .collect();
    assert!(!engine.is_empty(), "an engine runs");
    first.signal(libc::SIGKILL);
    testkit::eventually_async(Duration::from_secs(1), || async {
        let alive: Vec<&u32> = engine.iter().filter(|pid| process_alive(**pid)).collect();
        if alive.is_empty() { Ok(()) } else { Err(format!("engine processes alive: {alive:?}")) }
    })
    .await;
    // What the killed attempt had uploaded (as if it died mid-upload).
    let bucket = pipeline.env.s3.bucket();
    let leftover =
        pipeline.stored(&format!("/{bucket}/outputs/acme/{id}/1/hls/360p/seg_00000.m4s"));
    std::fs::create_dir_all(leftover.parent().unwrap()).unwrap();
    std::fs::write(&leftover, b"half a segment").unwrap();
    let _second = pipeline.worker(&[]);

    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    assert_eq!(job.result.as_ref().unwrap().epoch, 2, "{job:?}");
    assert!(
        job.result.as_ref().unwrap().hls_master.as_deref().unwrap().contains(&format!("/{id}/2/"))
    );
    assert_eq!(pipeline.events(&id, "completed").await.len(), 1);
    // The losing attempt's outputs are removed once the winner committed; the winner's stay.
    testkit::eventually_async(LONG, || async {
        if leftover.exists() { Err("still there") } else { Ok(()) }
    })
    .await;
    let master = job.result.as_ref().unwrap().hls_master.as_deref().unwrap();
    assert!(pipeline.stored(master).is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_past_its_lease_cannot_commit_or_ack() {
    let pipeline = Pipeline::start().await;
    let stale = pipeline.worker(&[("TCODER__WORKER__ENGINE__X264_PRESET", "medium".into())]);
    let id = pipeline.submit(&corpus::heavy_720p(), heavy_request()).await;
    pipeline.wait_for(&id, LONG, |job| job.status == JobStatus::Running).await;
    stale.signal(libc::SIGSTOP);
    let _current = pipeline.worker(&[]);
    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    assert_eq!(job.result.as_ref().unwrap().epoch, 2);
    stale.signal(libc::SIGCONT);

    // The stale worker notices it lost the job and stops without acking or committing.
    testkit::eventually_async(LONG, || async {
        let fenced = metric(&stale, "tcoder_worker_jobs_total{outcome=\"fenced\"}");
        if fenced >= 1.0 { Ok(()) } else { Err(fenced) }
    })
    .await;
    assert!(metric(&stale, "tcoder_self_fences_total") >= 1.0);
    assert_eq!(metric(&stale, "tcoder_worker_jobs_total{outcome=\"completed\"}"), 0.0);
    let job = pipeline.job(&id).await;
    assert_eq!(
        (Some(job.status.as_str()), job.result.as_ref().map(|r| r.epoch)),
        (Some("completed"), Some(2))
    );
    assert_eq!(pipeline.events(&id, "completed").await.len(), 1);
}

/// The store is down when the worker starts the job: the attempt waits for it (its download
/// retried, its lease and work item held) instead of failing, and completes as the first and
/// only attempt once the store answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_outage_is_waited_out_by_the_running_attempt() {
    let pipeline = Pipeline::start().await;
    // The worker reaches S3 through a proxy that is down at first.
    let proxy = ChaosProxy::start(pipeline.env.s3.addr());
    proxy.set_mode(ChaosMode::Drop);
    let worker = pipeline.worker(&[
        ("TCODER__S3__ENDPOINT", format!("http://{}", proxy.addr())),
        ("TCODER__S3__TIMEOUT", "2s".into()),
    ]);
    let id = pipeline.submit(&corpus::ok_mp4(), json!({})).await;
    testkit::eventually_async(LONG, || async {
        let retried = metric(&worker, "tcoder_store_retries_total");
        if retried >= 1.0 { Ok(()) } else { Err(retried) }
    })
    .await;
    assert_eq!(metric(&worker, "tcoder_worker_attempts_waiting_for_store"), 1.0);
    proxy.set_mode(ChaosMode::Pass);
    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    assert_eq!((job.attempts, job.lost_attempts), (1, 0), "{job:?}");
    assert_eq!(metric(&worker, "tcoder_worker_jobs_total{outcome=\"retried\"}"), 0.0);
    // Permanent failures (one attempt, one event) are decided by `attempt::verdict` (unit
    // tests) and seen end to end in the tiny-file and deleted-source tests.
}

/// A worker encoding a heavy job, its engine running: the worker and the job's id.
async fn encoding_a_heavy_job(pipeline: &Pipeline) -> (testkit::ServiceProcess, String) {
    let worker = pipeline.worker(&[("TCODER__WORKER__ENGINE__X264_PRESET", "medium".into())]);
    let id = pipeline.submit(&corpus::heavy_720p(), heavy_request()).await;
    pipeline.wait_for(&id, LONG, |job| job.status == JobStatus::Running).await;
    testkit::eventually_async(LONG, || async {
        if engine_children(worker.pid()).is_empty() { Err("engine not started") } else { Ok(()) }
    })
    .await;
    (worker, id)
}

/// Waits (5 s at most) until `worker` runs no engine.
async fn engine_stopped(worker: &testkit::ServiceProcess) {
    testkit::eventually_async(Duration::from_secs(5), || async {
        let left = engine_children(worker.pid());
        if left.is_empty() { Ok(()) } else { Err(left) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_job_stops_its_engine_within_a_second() {
    let pipeline = Pipeline::start().await;
    let (worker, id) = encoding_a_heavy_job(&pipeline).await;

    pipeline.cancel(&id).await.unwrap();
    let canceled_at = Instant::now();
    engine_stopped(&worker).await;
    assert!(
        canceled_at.elapsed() < Duration::from_secs(1),
        "engine stopped after {:?}",
        canceled_at.elapsed()
    );
    assert_eq!(pipeline.job(&id).await.status, JobStatus::Canceled);
}

/// Deleting a job while a worker encodes it: canceled first (the engine stops), then none of
/// its files stay — not what it had uploaded, not what it wrote while the cancel reached it —
/// and the record is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_job_stops_it_and_leaves_none_of_its_files() {
    let pipeline = Pipeline::start().await;
    let (worker, id) = encoding_a_heavy_job(&pipeline).await;
    // What the attempt had uploaded so far.
    let bucket = pipeline.env.s3.bucket();
    let outputs = pipeline.stored(&format!("/{bucket}/outputs/acme/{id}/"));
    let uploaded = outputs.join("1/hls/360p/seg_00000.m4s");
    std::fs::create_dir_all(uploaded.parent().unwrap()).unwrap();
    std::fs::write(&uploaded, b"a segment").unwrap();

    let url = format!("{}/v1/jobs/{id}", pipeline.api);
    let deleted = pipeline.http.delete(&url).bearer_auth(&pipeline.key).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    engine_stopped(&worker).await;
    let gone = pipeline.http.get(&url).bearer_auth(&pipeline.key).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    let count = |dir: &std::path::Path| walk(dir).len();
    testkit::eventually_async(LONG, || async {
        match count(&outputs) {
            0 => Ok(()),
            left => Err(format!("{left} output files left")),
        }
    })
    .await;
    assert_eq!(count(&pipeline.stored(&format!("/{bucket}/uploads/acme/{id}/"))), 0);
    let kinds: Vec<String> = pipeline
        .stored_messages(subjects::EVENTS_STREAM, &subjects::event("acme", &id, "*"))
        .await
        .into_iter()
        .map(|(_, event)| event["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    // Canceled first, then deleted (a progress report in flight may land anywhere).
    let at = |kind: &str| kinds.iter().position(|k| k == kind);
    assert!(at("canceled").is_some() && at("canceled") < at("deleted"), "{kinds:?}");
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .flat_map(|e| if e.path().is_dir() { walk(&e.path()) } else { vec![e.path()] })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_a_running_job_to_another_worker() {
    let pipeline = Pipeline::start().await;
    let mut first = pipeline.worker(&[("TCODER__WORKER__ENGINE__X264_PRESET", "medium".into())]);
    let id = pipeline.submit(&corpus::heavy_720p(), heavy_request()).await;
    pipeline.wait_for(&id, LONG, |job| job.status == JobStatus::Running).await;
    let (status, in_time) = first.terminate(Duration::from_secs(10));
    assert!(in_time && status.success(), "{status}");
    // Released: back in the queue at once (not after a lease or AckWait), then done by another.
    assert_eq!(pipeline.job(&id).await.status, JobStatus::Queued);
    let _second = pipeline.worker(&[]);
    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    assert_eq!(job.result.as_ref().unwrap().epoch, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_completed_webhook_is_retried_with_the_same_id_and_verifies() {
    let receiver = testkit::webhook::WebhookReceiver::start(&[500]);
    let pipeline = Pipeline::start_with(&[webhooks_allowed(&receiver)]).await;
    let _worker = pipeline.worker(&[]);
    let id = pipeline.submit(&corpus::ok_mp4(), json!({ "webhook_url": receiver.url() })).await;
    pipeline.wait_status(&id, JobStatus::Completed, LONG).await;

    let attempts = testkit::eventually_async(LONG, || async {
        let received = receiver.received();
        if received.len() >= 2 { Ok(received) } else { Err(received.len()) }
    })
    .await;
    assert_eq!(attempts.len(), 2, "one 500, then one delivery");
    assert_eq!(attempts[0].header("webhook-id"), attempts[1].header("webhook-id"));
    assert_eq!(attempts[1].json()["type"], "job.completed");
    assert_eq!(attempts[1].json()["data"]["job_id"], id.as_str());
    let secret = pipeline.webhook_secret().await;
    for attempt in &attempts {
        testkit::webhook::verify_with_standardwebhooks(&secret, attempt).unwrap();
    }
    // The job shows how its webhook fared: delivered on the second attempt.
    let job = pipeline
        .wait_for(&id, LONG, |job| job.webhook.as_ref().is_some_and(|w| w.state == "delivered"))
        .await;
    assert_eq!(
        job.webhook.as_ref().map(|w| (w.event.as_str(), w.attempts)),
        Some(("job.completed", 2)),
        "{job:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portrait_phone_video_comes_out_upright_and_a_tiny_one_is_refused_once() {
    let pipeline = Pipeline::start().await;
    let _worker = pipeline.worker(&[]);
    let phone = pipeline
        .submit(
            &everyday::portrait_phone(),
            json!({ "preset": "hls", "outputs": ["hls", "mp4", "thumbnails"] }),
        )
        .await;
    let tiny = pipeline.submit(&everyday::tiny(), json!({ "preset": "web-optimized" })).await;

    let job = pipeline.wait_status(&phone, JobStatus::Completed, LONG).await;
    let result: JobResult = job.result.clone().unwrap();
    assert_eq!(
        (result.source.display_width, result.source.display_height, result.source.orientation),
        (180, 320, Orientation::Clockwise),
        "{result:?}"
    );
    let top = &result.renditions[0];
    assert_eq!((top.width, top.height), (180, 320), "{top:?}");
    // What a viewer sees, decoded by ffmpeg from the bucket: upright poster and video.
    for url in [
        result.thumbnails.as_ref().unwrap().poster.as_str(),
        top.mp4.as_deref().unwrap(),
        top.hls.as_deref().unwrap(),
    ] {
        everyday::marker_top_left(&pipeline.stored(url)).unwrap();
    }

    let job = pipeline.wait_status(&tiny, JobStatus::Failed, LONG).await;
    assert_eq!(
        (job.error.as_ref().map(|e| e.code.as_str()), Some(job.attempts)),
        (Some("input.too_small_dimensions"), Some(1)),
        "{job:?}"
    );
    let failed = pipeline.events(&tiny, "failed").await;
    assert_eq!(failed.len(), 1);
    let message = job.error.as_ref().unwrap().message.as_str();
    assert!(!message.contains('/'), "no worker path in the error: {message}");
    assert!(!failed[0].to_string().contains("/tmp/"), "no worker path in the event: {}", failed[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_deleted_after_its_upload_fails_the_job_once_without_retries() {
    let pipeline = Pipeline::start().await;
    // No worker yet: the job waits, queued, while its source disappears from the bucket.
    let id = pipeline.submit(&corpus::ok_mp4(), json!({})).await;
    pipeline.wait_status(&id, JobStatus::Queued, LONG).await;
    let source =
        pipeline.stored(&format!("/{}/uploads/acme/{id}/source", pipeline.env.s3.bucket()));
    std::fs::remove_file(&source).unwrap();

    let _worker = pipeline.worker(&[]);
    let job = pipeline.wait_status(&id, JobStatus::Failed, LONG).await;
    assert_eq!(
        (job.error.as_ref().map(|e| e.code.as_str()), Some(job.attempts)),
        (Some("input.source_missing"), Some(1)),
        "{job:?}"
    );
    assert_eq!(pipeline.events(&id, "failed").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_worker_removes_scratch_folders_of_dead_attempts() {
    let pipeline = Pipeline::start().await;
    // A folder left by an attempt whose job is gone (its worker was killed long ago).
    let dead =
        pipeline.scratch.path().join(format!("{}-1-0a1b2c", tcoder::jobs::JobId::generate()));
    std::fs::create_dir_all(dead.join("in")).unwrap();
    std::fs::write(dead.join("in/source"), b"left behind").unwrap();
    // Not an attempt folder: left alone.
    let other = pipeline.scratch.path().join("notes");
    std::fs::create_dir_all(&other).unwrap();

    let _worker = pipeline.worker(&[]);
    assert!(!dead.exists(), "the dead attempt's folder is gone once the worker is up");
    assert!(other.exists());
}

/// A Redis outage while a work item waits: the claim holds the message (in-progress acks)
/// instead of nak-ing it, so the outage spends none of the job's deliveries and the job runs
/// once Redis is back — before, three naks 2 s apart dead-lettered it as `job.poison`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_pauses_a_claim_instead_of_spending_its_deliveries() {
    let pipeline = Pipeline::start().await;
    let worker = pipeline.worker(&[]);
    // Frozen, the worker fetches nothing: the job waits, queued, for Redis to go away.
    worker.signal(libc::SIGSTOP);
    let id = pipeline.submit(&corpus::ok_mp4(), json!({})).await;
    pipeline.wait_status(&id, JobStatus::Queued, LONG).await;
    pipeline.env.redis.signal(libc::SIGSTOP);
    worker.signal(libc::SIGCONT);
    testkit::eventually_async(LONG, || async {
        let waiting = metric(&worker, "tcoder_worker_claims_waiting_for_redis");
        if waiting >= 1.0 { Ok(()) } else { Err(waiting) }
    })
    .await;
    // The outage lasts longer than max_deliver (3) × AckWait (2 s).
    tokio::time::sleep(Duration::from_secs(8)).await;
    pipeline.env.redis.signal(libc::SIGCONT);

    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    assert_eq!(job.attempts, 1, "{job:?}");
    assert!(pipeline.events(&id, "failed").await.is_empty());
    assert_eq!(metric(&worker, "tcoder_worker_claims_waiting_for_redis"), 0.0);
    assert_eq!(metric(&worker, "tcoder_redeliveries_total"), 0.0, "no delivery was spent");
}

/// A partition between a worker and Redis in the middle of a job (T06): the cut-off worker
/// cannot tell it from an outage and holds its attempt, but the reconciler, which reaches
/// Redis, finds the lease lapsed and hands the job to another worker, which commits it once;
/// when the partition heals the first one's renewal answers `lost`: it stops and neither
/// commits nor acks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_redis_loses_the_job_to_another_that_commits_once() {
    let pipeline = Pipeline::start().await;
    let proxy = ChaosProxy::start(pipeline.env.redis.addr());
    let cut = pipeline.worker(&[
        ("TCODER__REDIS__URL", format!("redis://{}/", proxy.addr())),
        ("TCODER__WORKER__ENGINE__X264_PRESET", "medium".into()),
    ]);
    let id = pipeline.submit(&corpus::heavy_720p(), heavy_request()).await;
    pipeline.wait_for(&id, LONG, |job| job.status == JobStatus::Running).await;
    proxy.set_mode(ChaosMode::Blackhole);
    let _other = pipeline.worker(&[]);
    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    assert_eq!(job.result.as_ref().unwrap().epoch, 2, "{job:?}");
    proxy.set_mode(ChaosMode::Pass);
    testkit::eventually_async(LONG, || async {
        let fenced = metric(&cut, "tcoder_worker_jobs_total{outcome=\"fenced\"}");
        if fenced >= 1.0 { Ok(()) } else { Err(fenced) }
    })
    .await;
    assert_eq!(metric(&cut, "tcoder_worker_jobs_total{outcome=\"completed\"}"), 0.0);
    assert_eq!(pipeline.events(&id, "completed").await.len(), 1);
}

/// A partition between a worker and NATS in the middle of a job (T07): its lease lives in
/// Redis, so it keeps the job and finishes it; the work item redelivered meanwhile finds the
/// lease held and never starts a second attempt; once the partition heals the completion is
/// published (from the outbox) exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_nats_keeps_its_lease_and_commits_once() {
    let pipeline = Pipeline::start().await;
    let proxy = ChaosProxy::start(pipeline.env.nats.addr());
    let cut = pipeline.worker(&[
        ("TCODER__NATS__URL", format!("nats://{}", proxy.addr())),
        ("TCODER__WORKER__ENGINE__X264_PRESET", "medium".into()),
    ]);
    let id = pipeline.submit(&corpus::heavy_720p(), heavy_request()).await;
    pipeline.wait_for(&id, LONG, |job| job.status == JobStatus::Running).await;
    proxy.set_mode(ChaosMode::Blackhole);
    let _other = pipeline.worker(&[]);
    // The cut-off worker still renews in Redis and finishes: the job completes at epoch 1.
    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    assert_eq!(job.result.as_ref().unwrap().epoch, 1, "{job:?}");
    proxy.set_mode(ChaosMode::Pass);
    testkit::eventually_async(LONG, || async {
        let completed = pipeline.events(&id, "completed").await.len();
        if completed == 1 { Ok(()) } else { Err(completed) }
    })
    .await;
    testkit::eventually_async(LONG, || async {
        let completed = metric(&cut, "tcoder_worker_jobs_total{outcome=\"completed\"}");
        if completed == 1.0 { Ok(()) } else { Err(completed) }
    })
    .await;
    assert_eq!(pipeline.events(&id, "started").await.len(), 1, "no second attempt started");
}

/// A `completed` event published on the bus for a job that is still awaiting its upload
/// (anyone who can publish could forge one, carrying their own URLs) is not turned into a
/// signed webhook: the sender checks each event against the job record first. The job's real
/// `canceled` webhook, sent after it, still goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_completed_event_produces_no_webhook() {
    let receiver = testkit::webhook::WebhookReceiver::start(&[]);
    let pipeline = Pipeline::start_with(&[webhooks_allowed(&receiver)]).await;
    let created = pipeline.create_as(&pipeline.key, json!({ "webhook_url": receiver.url() })).await;
    let id = created.job.id.to_string();
    let forged = json!({
        "id": format!("{id}.completed"), "type": "completed", "job_id": id, "tenant": "acme",
        "at": "2026-12-01T00:00:00.000Z",
        "data": { "epoch": 1, "outputs": { "hls_master": "https://attacker.example/x.m3u8" } },
    });
    pipeline
        .nats
        .publish(subjects::event("acme", &id, "completed"), forged.to_string().into())
        .await
        .unwrap();
    pipeline.nats.flush().await.unwrap();
    pipeline.cancel(&id).await.unwrap();

    // The sender takes events in order: once the canceled webhook is in, the forged event
    // was handled before it.
    assert_eq!(webhook_types_until(&receiver, "job.canceled").await, ["job.canceled"]);

    // The tenant's own event stream (what the console and `submit --wait` follow) does not
    // replay it either: it ends with the canceled event the record confirms.
    let stream = pipeline
        .http
        .get(format!("{}/v1/jobs/{id}/events", pipeline.api))
        .bearer_auth(&pipeline.key)
        .send();
    let body = tokio::time::timeout(Duration::from_secs(10), async {
        stream.await.unwrap().text().await.unwrap()
    })
    .await
    .expect("the stream ends after the terminal event");
    let kinds: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(kinds.last(), Some(&"canceled"), "{body}");
    assert!(!kinds.contains(&"completed"), "the forged event was replayed: {body}");
}

/// `tcoder up 2>&1 | tee log`, then Ctrl-C: the shell ends `tee` with everything else, and
/// every log line after it meets a closed pipe. The worker still shuts down as it should —
/// exit 0 (it panicked with 101 on the logger's own report of the failed write), its running
/// job released at once for another attempt, no attempt counted lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_log_reader_is_gone_shuts_down_cleanly_and_releases_its_job() {
    let pipeline = Pipeline::start().await;
    let vars = pipeline.worker_env(&[("TCODER__WORKER__ENGINE__X264_PRESET", "medium".into())]);
    // Standard error is a pipe whose reader has exited, as `tee` after the Ctrl-C.
    let mut worker = testkit::ServiceProcess::spawn_wrapped(
        &["bash", "-c", r#"exec 2> >(exit 0); exec "$0""#],
        std::path::Path::new(env!("CARGO_BIN_EXE_tcoder-worker")),
        &vars,
    );
    worker.wait_alive(LONG);
    let id = pipeline.submit(&corpus::heavy_720p(), heavy_request()).await;
    pipeline.wait_for(&id, LONG, |job| job.status == JobStatus::Running).await;
    testkit::eventually_async(LONG, || async {
        if engine_children(worker.pid()).is_empty() { Err("no engine yet") } else { Ok(()) }
    })
    .await;
    worker.signal(libc::SIGINT);
    let status = worker.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "the worker's exit: {status}");
    let job = pipeline.wait_status(&id, JobStatus::Queued, LONG).await;
    assert_eq!((job.attempts, job.lost_attempts), (1, 0), "released, not lost: {job:?}");
}
