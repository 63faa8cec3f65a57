//! Split titles through the whole pipeline: a long source is planned into parts, the parts run
//! on several workers (and survive their workers killed and paused), and the stitched result
//! is what a user of the unsplit job would get: one completed event, every frame, one
//! continuous timeline, a master that plays, faststart MP4s.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tcoder::jobs::{JobId, JobResult, JobStatus, JobStore};
use testkit::media::{ClipSpec, clip};

use crate::harness::{Pipeline, engine_children, metric};

const LONG: Duration = Duration::from_secs(120);

/// Split anything longer than 4 s into chunks of two 1 s segments (the tests' segments).
fn split_settings() -> Vec<(&'static str, String)> {
    vec![
        ("TCODER__WORKER__SPLIT_MIN_DURATION", "4s".into()),
        ("TCODER__WORKER__CHUNK_DURATION", "2s".into()),
    ]
}

/// (pts, duration) of every packet of stream `selector` of `playlist`, as ffprobe reads them.
fn packets(playlist: &Path, selector: &str) -> Vec<(f64, f64)> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", selector])
        .args(["-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0"])
        .arg(playlist)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut packets: Vec<(f64, f64)> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (pts, duration) = line.split_once(',').unwrap_or_else(|| panic!("{line:?}"));
            (pts.parse().unwrap(), duration.trim_end_matches(',').parse().unwrap_or(0.0))
        })
        .collect();
    packets.sort_by(|a, b| a.0.total_cmp(&b.0));
    packets
}

/// What a user checks of a split job's result: every rendition has every frame of the
/// `secs`-long source at `fps` on one continuous timeline, the master plays for the source's
/// duration with audio, and each MP4 is faststart with video and audio.
fn assert_whole_title(pipeline: &Pipeline, result: &JobResult, secs: f64, fps: f64) {
    let frame = 1.0 / fps;
    let master = pipeline.stored(result.hls_master.as_deref().unwrap());
    assert!((testkit::media::format_duration(&master) - secs).abs() <= frame, "master duration");
    let text = std::fs::read_to_string(&master).unwrap();
    assert!(text.contains("#EXT-X-MEDIA:TYPE=AUDIO"), "{text}");
    for rendition in &result.renditions {
        let playlist = pipeline.stored(rendition.hls.as_deref().unwrap());
        let video = packets(&playlist, "v:0");
        assert_eq!(video.len(), (secs * fps).round() as usize, "{}: frame count", rendition.name);
        for pair in video.windows(2) {
            assert!((pair[0].0 + frame - pair[1].0).abs() < 1e-3, "{}: {pair:?}", rendition.name);
        }
        let mp4 = pipeline.stored(rendition.mp4.as_deref().unwrap());
        assert!(
            (testkit::media::format_duration(&mp4) - secs).abs() <= 2.0 * frame,
            "{} mp4",
            rendition.name
        );
        assert_eq!(packets(&mp4, "v:0").len(), video.len(), "{} mp4 frames", rendition.name);
        assert!(!packets(&mp4, "a:0").is_empty(), "{} mp4 has no audio", rendition.name);
        let bytes = std::fs::read(&mp4).unwrap();
        let find = |tag: &[u8]| bytes.windows(4).position(|w| w == tag).unwrap();
        assert!(find(b"moov") < find(b"mdat"), "{} is not faststart", rendition.name);
    }
    // The audio plays from the first picture to the last, with no gap.
    let audio_playlist = master.parent().unwrap().join("audio/index.m3u8");
    let audio = packets(&audio_playlist, "a:0");
    // One AAC frame each (the demuxer leaves some durations unknown: the steps tell).
    let step = audio[1].0 - audio[0].0;
    for pair in audio.windows(2) {
        assert!((pair[1].0 - pair[0].0 - step).abs() < 1e-3, "audio: {pair:?}");
    }
    let end = audio.last().unwrap().0 + step - audio[0].0;
    assert!((end - secs).abs() <= 0.05, "audio lasts {end} s");
}

/// How many files are in `dir` and its subfolders (none when it does not exist).
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 }).sum()
}

/// Every part of the job committed, each by its part's current (latest) attempt.
async fn assert_parts_committed_by_latest_epochs(pipeline: &Pipeline, id: &str) -> Vec<Value> {
    let store = JobStore::new(pipeline.redis.clone());
    let parts = store.parts(&JobId::parse(id).unwrap()).await.unwrap();
    assert!(!parts.is_empty(), "the job was not split");
    parts
        .iter()
        .map(|part| {
            assert_eq!(part.status, tcoder::jobs::PartStatus::Done, "part {}", part.part);
            let result = serde_json::to_value(part.result.as_ref().unwrap()).unwrap();
            let suffix = format!("/parts/{}/{}/", part.part, part.epoch);
            assert!(result["prefix"].as_str().unwrap().ends_with(&suffix), "{result}");
            json!({
                "part": part.part,
                "epoch": part.epoch,
                "worker": result["worker"],
                "cpu_secs": result["cpu_secs"],
                "machine_secs": result["machine_secs"],
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_title_is_split_over_two_workers_and_stitched_into_one_result() {
    let pipeline = Pipeline::start().await;
    let source = clip(&ClipSpec {
        width: 320,
        height: 240,
        fps: 25,
        duration_ms: 8000,
        audio: true,
        ..ClipSpec::default()
    });
    let workers = [pipeline.worker(&split_settings()), pipeline.worker(&split_settings())];
    let id = pipeline
        .submit(&source, json!({ "preset": "hls", "outputs": ["hls", "mp4", "preview"] }))
        .await;
    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    let result: JobResult = job.result.clone().unwrap();
    // Nothing failed on the way: the coordinator's first attempt committed it.
    assert_eq!(result.epoch, 1, "{job:?}");
    assert_whole_title(&pipeline, &result, 8.0, 25.0);
    let thumbs = result.thumbnails.as_ref().unwrap();
    assert!(pipeline.stored(&thumbs.poster).is_file());
    // Every chunk's frames were stitched: one per second of the title, each a still the API
    // answers from.
    let frames: serde_json::Value = serde_json::from_slice(
        &std::fs::read(pipeline.stored(thumbs.frames.as_deref().unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(frames["count"], 8, "{frames}");
    let frames_dir = pipeline.stored(thumbs.frames.as_deref().unwrap()).with_file_name("frames");
    assert_eq!(files_under(&frames_dir), 8);
    let still = pipeline
        .http
        .get(format!("{}/v1/jobs/{id}/thumbnail.jpg?time=6.2&width=160", pipeline.api))
        .bearer_auth(&pipeline.key)
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), 200);
    // The animated preview (asked for; the thumbnails come with it), from the engine in its
    // sandbox, assembled from the chunks: 3 s from 0.8 s, read by Pillow.
    let preview = pipeline.stored(thumbs.preview.as_deref().unwrap());
    let preview = testkit::contracts::animated_webp(&preview).unwrap();
    assert_eq!((preview["frames"].as_u64(), preview["width"].as_u64()), (Some(30), Some(320)));
    assert!(preview["changes"].as_u64().unwrap() > 10, "{preview}");
    assert_eq!(pipeline.events(&id, "completed").await.len(), 1);

    // Four chunks of 2 s and the audio, each committed once; the cost counts them all.
    let parts = assert_parts_committed_by_latest_epochs(&pipeline, &id).await;
    assert_eq!(parts.len(), 5, "{parts:?}");
    let sum = |field: &str| parts.iter().map(|p| p[field].as_f64().unwrap()).sum::<f64>();
    let (parts_cpu, parts_machine) = (sum("cpu_secs"), sum("machine_secs"));
    assert!(parts_cpu > 0.0, "{parts:?}");
    assert!(result.cost.usage.cpu_secs >= parts_cpu, "{:?} vs {parts_cpu}", result.cost);
    assert_eq!(result.engine.cpu_secs, result.cost.usage.cpu_secs);
    // The helper's machine time is the job's too: at least the parts it ran elsewhere.
    assert!(result.cost.usage.machine_secs > 0.0 && parts_machine > 0.0, "{:?}", result.cost);
    // Progress went chunk by chunk to all of them.
    let progress = pipeline.events(&id, "progress").await;
    let done: Vec<u64> =
        progress.iter().filter_map(|e| e["data"]["parts"]["done"].as_u64()).collect();
    assert_eq!(done.first(), Some(&0), "{done:?}");
    assert_eq!(done.last(), Some(&5), "{done:?}");
    // Both machines worked on the title (the coordinator's job and parts, the helper's
    // parts): each completed something.
    for worker in &workers {
        let completed = metric(worker, "tcoder_worker_jobs_total{outcome=\"completed\"}");
        assert!(completed >= 1.0, "a worker did nothing: {parts:?}");
    }
    // The parts' own uploads are gone once the title committed; the stitched outputs stay.
    let bucket = pipeline.env.s3.bucket();
    let parts_dir = pipeline.stored(&format!("/{bucket}/outputs/acme/{id}/parts/"));
    testkit::eventually_async(LONG, || async {
        match files_under(&parts_dir) {
            0 => Ok(()),
            left => Err(format!("{left} part outputs left")),
        }
    })
    .await;
    assert!(pipeline.stored(result.hls_master.as_deref().unwrap()).is_file());
}

/// One worker runs every part itself, the audio range included, and stitches them: its first
/// attempt commits the title (a failure in gathering its own parts would cost a retry, seconds
/// a viewer waits for the MP4s and the final playlist).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_runs_every_part_of_a_split_title_and_commits_it_at_once() {
    let pipeline = Pipeline::start().await;
    let source = clip(&ClipSpec { duration_ms: 5000, audio: true, ..ClipSpec::default() });
    let _worker = pipeline.worker(&split_settings());
    let id = pipeline.submit(&source, json!({ "preset": "hls", "outputs": ["hls"] })).await;
    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    let parts = assert_parts_committed_by_latest_epochs(&pipeline, &id).await;
    assert!(parts.len() >= 3, "not split into chunks and audio: {parts:?}");
    assert_eq!(job.result.as_ref().unwrap().epoch, 1, "{job:?}");
}

/// Waits (bounded) until the job's progress events report `at_least` parts committed.
async fn wait_parts_done(pipeline: &Pipeline, id: &str, at_least: u64) {
    testkit::eventually_async(LONG, || async {
        let progress = pipeline.events(id, "progress").await;
        match progress.iter().filter_map(|e| e["data"]["parts"]["done"].as_u64()).max() {
            Some(done) if done >= at_least => Ok(()),
            other => Err(format!("parts done: {other:?}")),
        }
    })
    .await;
}

/// A 12 s title (six chunks and the audio) and settings under which its parts take a while.
fn slow_title() -> (std::path::PathBuf, Vec<(&'static str, String)>) {
    let source = clip(&ClipSpec {
        width: 640,
        height: 360,
        fps: 25,
        duration_ms: 12_000,
        audio: true,
        ..ClipSpec::default()
    });
    let mut settings = split_settings();
    settings.push(("TCODER__WORKER__ENGINE__X264_PRESET", "medium".into()));
    (source, settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_job_survives_its_coordinator_killed_and_a_helper_paused_past_its_lease() {
    let pipeline = Pipeline::start().await;
    // A slower preset, so the parts are still under way when the faults strike.
    let (source, settings) = slow_title();
    let workers = [pipeline.worker(&settings), pipeline.worker(&settings)];
    let id = pipeline.submit(&source, json!({ "preset": "hls", "outputs": ["hls", "mp4"] })).await;

    // One part committed, the rest under way: kill the coordinator, pause the other worker.
    wait_parts_done(&pipeline, &id, 1).await;
    let mut redis = pipeline.redis.clone();
    let key = tcoder::redis::keys::job(&JobId::parse(&id).unwrap());
    let coordinator: String =
        redis::cmd("HGET").arg(&key).arg("worker").query_async(&mut redis).await.unwrap();
    let (dead, helper) = match &workers {
        [a, b] if coordinator.ends_with(&format!("-{}", a.pid())) => (a, b),
        [a, b] => (b, a),
    };
    assert!(coordinator.ends_with(&format!("-{}", dead.pid())), "{coordinator}");
    dead.signal(libc::SIGKILL);
    helper.signal(libc::SIGSTOP);
    let _third = pipeline.worker(&settings);
    // Paused for twice its lease: whatever part it held is taken over meanwhile.
    tokio::time::sleep(Duration::from_secs(6)).await;
    helper.signal(libc::SIGCONT);

    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    let result: JobResult = job.result.clone().unwrap();
    assert!(result.epoch >= 2, "the coordinator was not replaced: {job:?}");
    assert_eq!(pipeline.events(&id, "completed").await.len(), 1);
    assert_whole_title(&pipeline, &result, 12.0, 25.0);
    let parts = assert_parts_committed_by_latest_epochs(&pipeline, &id).await;
    assert_eq!(parts.len(), 7, "{parts:?}");
    // The part the killed or the paused worker held was taken over by a later attempt.
    assert!(parts.iter().any(|p| p["epoch"].as_u64() >= Some(2)), "{parts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_split_job_scales_out_to_several_machines_and_no_more_than_the_cap() {
    let (source, mut settings) = slow_title();
    settings.extend(crate::autoscale::autoscaling(3));
    let pipeline = Pipeline::start_with(&settings).await;
    let local = pipeline.local.clone().expect("local provider");
    let id = pipeline.submit(&source, json!({ "preset": "hls", "outputs": ["hls"] })).await;
    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    // The job's part items are demand: machines were started for them, never beyond the cap,
    // and the parts ran on more than one of them.
    let peak = local.peak_alive();
    assert!((2..=3).contains(&peak), "{peak} machines alive at the peak");
    let parts = assert_parts_committed_by_latest_epochs(&pipeline, &id).await;
    let mut machines: Vec<&str> = parts.iter().filter_map(|p| p["worker"].as_str()).collect();
    machines.sort_unstable();
    machines.dedup();
    assert!(machines.len() >= 2, "every part ran on one machine: {parts:?}");
    assert_eq!(pipeline.events(&id, "completed").await.len(), 1, "{job:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_a_split_job_stops_every_part_at_once_and_leaves_no_outputs() {
    let pipeline = Pipeline::start().await;
    let (source, settings) = slow_title();
    let workers = [pipeline.worker(&settings), pipeline.worker(&settings)];
    let id = pipeline.submit(&source, json!({ "preset": "hls", "outputs": ["hls", "mp4"] })).await;
    // Both machines encode a part.
    testkit::eventually_async(LONG, || async {
        let busy = workers.iter().filter(|w| !engine_children(w.pid()).is_empty()).count();
        if busy == 2 { Ok(()) } else { Err(format!("{busy} machines encoding")) }
    })
    .await;
    pipeline.cancel(&id).await.unwrap();
    let canceled_at = std::time::Instant::now();
    testkit::eventually_async(Duration::from_secs(5), || async {
        let left: Vec<u32> = workers.iter().flat_map(|w| engine_children(w.pid())).collect();
        if left.is_empty() { Ok(()) } else { Err(left) }
    })
    .await;
    let stopped_after = canceled_at.elapsed();
    assert!(stopped_after < Duration::from_secs(1), "engines stopped after {stopped_after:?}");
    assert_eq!(pipeline.job(&id).await.status, JobStatus::Canceled);
    // Nothing the parts uploaded is left, and no part runs again.
    let bucket = pipeline.env.s3.bucket();
    let outputs = pipeline.stored(&format!("/{bucket}/outputs/acme/{id}/"));
    testkit::eventually_async(LONG, || async {
        match files_under(&outputs) {
            0 => Ok(()),
            left => Err(format!("{left} outputs left")),
        }
    })
    .await;
    assert!(workers.iter().all(|w| engine_children(w.pid()).is_empty()));
    assert!(pipeline.events(&id, "completed").await.is_empty());
}

/// With `wait_replicas = 1`, the replica stops answering (SIGSTOP) for 8 s while the parts
/// commit: a commit lands on the primary but its confirmation does not come. The attempt waits
/// for it (holding its work) and, lacking an answer, reads the part back before deciding —
/// it no longer gives the part up and deletes outputs Redis has as committed (the stitch then
/// found them gone and the job failed after all its deliveries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_commits_a_paused_replica_does_not_confirm_keep_their_outputs() {
    let env = testkit::TestEnv::start();
    let primary_port = env.redis.addr().port().to_string();
    let replica =
        testkit::RedisServer::start_with_args(false, &["--replicaof", "127.0.0.1", &primary_port]);
    let client = redis::Client::open(replica.url()).unwrap();
    testkit::eventually_async(LONG, || async {
        let mut conn =
            client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if info.contains("master_link_status:up") { Ok(()) } else { Err(info) }
    })
    .await;
    let confirmed = [
        ("TCODER__REDIS__WAIT_REPLICAS", "1".to_owned()),
        ("TCODER__REDIS__TIMEOUT", "1s".to_owned()),
    ];
    let pipeline = Pipeline::start_on(env, &confirmed).await;
    let (source, mut settings) = slow_title();
    settings.extend(confirmed.iter().cloned());
    let workers = [pipeline.worker(&settings), pipeline.worker(&settings)];
    let id = pipeline.submit(&source, json!({ "preset": "hls", "outputs": ["hls", "mp4"] })).await;
    wait_parts_done(&pipeline, &id, 1).await;
    replica.signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(8)).await; // the replica's silence itself
    replica.signal(libc::SIGCONT);

    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    assert_eq!(pipeline.events(&id, "completed").await.len(), 1);
    assert!(pipeline.events(&id, "failed").await.is_empty());
    assert_whole_title(&pipeline, &job.result.clone().unwrap(), 12.0, 25.0);
    let parts = assert_parts_committed_by_latest_epochs(&pipeline, &id).await;
    assert_eq!(parts.len(), 7, "{parts:?}");
    let retried: f64 = workers.iter().map(|w| metric(w, "tcoder_commit_retries_total")).sum();
    assert!(retried >= 1.0, "no commit met the replica's silence");
}

/// Versions of the job's stable `rung` playlist as a player polling it saw them (every
/// answered one, in order), until the finished one; and the bytes of its first segment as the
/// first version's URL gave them, with where that URL led.
async fn watch_stable_playlist(
    http: reqwest::Client,
    api: String,
    key: String,
    id: String,
    rung: &'static str,
) -> (Vec<String>, Vec<u8>, String) {
    let stable = format!("{api}/v1/jobs/{id}/hls/{rung}");
    let (mut versions, mut first_segment) = (Vec::<String>::new(), None);
    // A player's reloads, at a tenth of a second: sampled, bounded by LONG.
    for _ in 0..LONG.as_millis() / 100 {
        let answer = http.get(format!("{stable}/index.m3u8")).bearer_auth(&key).send().await;
        if let Ok(answer) = answer
            && answer.status() == 200
        {
            let text = answer.text().await.unwrap();
            if first_segment.is_none() {
                // Followed as a player would (redirect to the signed playback URL).
                let segment = http.get(format!("{stable}/seg_00000.m4s")).bearer_auth(&key);
                let segment = segment.send().await.unwrap();
                assert_eq!(segment.status(), 200, "{}", segment.url());
                let at = segment.url().to_string();
                first_segment = Some((segment.bytes().await.unwrap().to_vec(), at));
            }
            let finished = text.contains("#EXT-X-ENDLIST");
            versions.push(text);
            if finished {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (bytes, at) = first_segment.expect("the playlist never answered");
    (versions, bytes, at)
}

/// One header tag of a playlist.
fn tag<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(name))
}

/// A split title plays from its stable URL while it encodes, in signed delivery, through the
/// death of the worker encoding its first chunk: the growing playlist lists the first chunk
/// only once it is committed (by the attempt that took it over), never twice, never changed;
/// every version keeps the one before; the segment a player fetched while the job ran is the
/// very one the finished set serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_title_plays_while_it_encodes_through_a_killed_worker_in_signed_delivery() {
    let port = testkit::free_port();
    let api = format!("http://127.0.0.1:{port}");
    let pipeline = Pipeline::start_with(&[
        ("TCODER__INGEST__HTTP_BIND", format!("127.0.0.1:{port}")),
        ("TCODER__INGEST__DELIVERY", "signed".into()),
        ("TCODER__INGEST__PLAYBACK_SECRET", "progressive-test-playback-secret".into()),
        ("TCODER__INGEST__PUBLIC_API_URL", api.clone()),
    ])
    .await;
    assert_eq!(pipeline.api, api);
    let (source, mut settings) = slow_title();
    settings.push(("TCODER__WORKER__FIRST_CHUNK_DURATION", "2s".into()));
    // The first worker is slow enough to be caught encoding the first chunk.
    let mut slow = settings.clone();
    slow.push(("TCODER__WORKER__ENGINE__X264_PRESET", "veryslow".into()));
    let first = pipeline.worker(&slow);
    let id = pipeline
        .submit(
            &source,
            json!({ "preset": "hls", "qualities": ["144p", "360p"], "outputs": ["hls", "mp4"] }),
        )
        .await;
    let watcher = tokio::spawn(watch_stable_playlist(
        pipeline.http.clone(),
        api.clone(),
        pipeline.key.clone(),
        id.clone(),
        "360p",
    ));
    // Not playable before anything is encoded: a clear answer, not an empty playlist.
    let early = pipeline.http.get(format!("{api}/v1/jobs/{id}/hls/master.m3u8"));
    let early = early.bearer_auth(&pipeline.key).send().await.unwrap();
    assert_eq!(early.status(), 409);

    // Killed while it encodes the first chunk; another worker takes the job over.
    let store = JobStore::new(pipeline.redis.clone());
    let job_id = JobId::parse(&id).unwrap();
    testkit::eventually_async(LONG, || async {
        let parts = store.parts(&job_id).await.unwrap();
        let running = parts.first().is_some_and(|p| p.status == tcoder::jobs::PartStatus::Running);
        if running && !engine_children(first.pid()).is_empty() { Ok(()) } else { Err(parts) }
    })
    .await;
    first.signal(libc::SIGKILL);
    let _second = pipeline.worker(&settings);

    let job = pipeline.wait_status(&id, JobStatus::Completed, LONG).await;
    let (versions, segment, fetched_at) = watcher.await.unwrap();
    let parts = assert_parts_committed_by_latest_epochs(&pipeline, &id).await;
    let first_epoch = parts[0]["epoch"].as_u64().unwrap();
    assert!(first_epoch >= 2, "the first chunk was not taken over: {parts:?}");
    // While the job ran, the first segment came from the first chunk's committed folder,
    // through a signed playback URL.
    assert!(
        fetched_at.contains("/v1/play/")
            && fetched_at.contains(&format!("/parts/0/{first_epoch}/")),
        "{fetched_at}"
    );
    // Playable before complete, once.
    let (playable, completed) =
        (job.playable_at.clone().unwrap(), job.completed_at.clone().unwrap());
    assert!(playable < completed, "playable {playable}, completed {completed}");
    assert_eq!(pipeline.events(&id, "playable").await.len(), 1);

    let growing: Vec<&String> = versions.iter().filter(|v| !v.contains("#EXT-X-ENDLIST")).collect();
    assert!(!growing.is_empty(), "no version of the playlist while the job ran");
    for version in &growing {
        assert_eq!(tag(version, "#EXT-X-PLAYLIST-TYPE"), Some("#EXT-X-PLAYLIST-TYPE:EVENT"));
    }
    for pair in versions.windows(2) {
        for name in ["#EXT-X-TARGETDURATION", "#EXT-X-MEDIA-SEQUENCE"] {
            assert_eq!(tag(&pair[0], name), tag(&pair[1], name), "{name}");
        }
        let (before, after) = (
            testkit::media::playlist_lines(&pair[0]).1,
            testkit::media::playlist_lines(&pair[1]).1,
        );
        assert_eq!(after[..before.len()], before[..], "a segment went away or changed");
    }
    for version in &versions {
        let mut names: Vec<&str> = version.lines().filter(|l| l.ends_with(".m4s")).collect();
        let listed = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), listed, "a segment listed twice: {version}");
    }
    // The finished set, at the same URL: the same first segment, byte for byte.
    let stable = format!("{api}/v1/jobs/{id}/hls/360p/seg_00000.m4s");
    let now = pipeline.http.get(stable).bearer_auth(&pipeline.key).send().await.unwrap();
    assert_eq!(now.status(), 200);
    let epoch = job.result.as_ref().unwrap().epoch;
    assert!(now.url().path().contains(&format!("/{id}/{epoch}/hls/360p/")), "{}", now.url());
    assert_eq!(now.bytes().await.unwrap().to_vec(), segment);
    // The whole title, as the job record has it (the API signs its URLs).
    let result = store.get(&job_id).await.unwrap().unwrap().outputs.unwrap();
    assert_whole_title(&pipeline, &result, 12.0, 25.0);
}
