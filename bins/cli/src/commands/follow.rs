//! `tcoder follow <job>`: a live progress bar (stage, percent, ETA) from the job's event
//! stream — with the job's stable playback URL as soon as it plays — and the summary a person
//! reads at the end.

use std::fmt::Write as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tcoder::api::{Client, JobView};
use tcoder::engine::Progress;
use tcoder::events::{EventKind, JobEvent};

/// Follows `id` to its end with a progress bar on stderr; returns the terminal event.
pub(crate) async fn with_progress_bar(
    client: &Client,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<JobEvent> {
    let bar = ProgressBar::new(100).with_style(
        ProgressStyle::with_template("{spinner} {msg:<12} [{bar:30}] {pos:>3}% {prefix}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.set_message("waiting");
    let last = client
        .follow(id, timeout, |event| match event.kind {
            EventKind::Progress => {
                bar.set_message("transcoding");
                if let Ok(progress) = serde_json::from_value::<Progress>(event.data.clone()) {
                    bar.set_position(progress.percent.round() as u64);
                    bar.set_prefix(progress_note(&progress));
                }
            }
            EventKind::Importing => {
                bar.set_message("importing");
                if let Some(percent) = event.data["percent"].as_f64() {
                    bar.set_position(percent.round() as u64);
                }
                let bytes = event.data["bytes"].as_u64().unwrap_or(0);
                bar.set_prefix(format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20)));
            }
            EventKind::Queued => bar.set_message("queued"),
            EventKind::Started => bar.set_message("downloading"),
            EventKind::Rendition => bar.set_message("uploading"),
            EventKind::Playable => {
                // It plays now, while the rest of a long title encodes: say where, once.
                if let Some(path) = event.data["playback_url"].as_str() {
                    bar.suspend(|| eprintln!("playable  {}{path}", client.base()));
                }
            }
            EventKind::Completed => {
                bar.set_position(100);
                bar.set_message("completed");
            }
            kind => bar.set_message(kind.as_str()),
        })
        .await;
    bar.finish_and_clear();
    Ok(last?)
}

/// A split title reports its parts; a whole encode its time left.
fn progress_note(progress: &Progress) -> String {
    match (progress.parts, progress.eta_secs) {
        (Some(parts), _) => format!("parts {}/{}", parts.done, parts.total),
        (None, Some(eta)) => format!("eta {eta:.0}s"),
        (None, None) => String::new(),
    }
}

/// What a person wants to read about a finished job: status, the master playlist, each
/// rendition, the poster, the manifest; or the error.
pub(crate) fn describe(job: &JobView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "job {} {}", job.id, job.status);
    if let Some(error) = &job.error {
        let _ = writeln!(out, "  error     {}: {}", error.code, error.message);
    }
    let Some(result) = &job.result else { return out };
    if let Some(master) = &result.hls_master {
        let _ = writeln!(out, "  master    {master}");
    }
    for rendition in &result.renditions {
        let audio = rendition.audio_codec.map(|codec| format!("/{}", codec_name(codec)));
        let url = rendition.mp4.as_deref().or(rendition.hls.as_deref()).unwrap_or("");
        let quality = rendition
            .quality
            .as_ref()
            .map(|q| format!("  VMAF {:.1} (p5 {:.1})", q.mean, q.p5))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<9} {}x{} {}{} {} kb/s{quality}  {url}",
            rendition.name,
            rendition.width,
            rendition.height,
            codec_name(rendition.video_codec),
            audio.unwrap_or_default(),
            rendition.video_bit_rate / 1000
        );
    }
    if let Some(thumbnails) = &result.thumbnails {
        let _ = writeln!(out, "  poster    {}", thumbnails.poster);
    }
    if let Some(manifest) = &result.manifest {
        let _ = writeln!(out, "  manifest  {manifest} ({} files)", result.file_count);
    }
    out
}

/// A codec as the API spells it (`h264`, `aac`, …).
fn codec_name(codec: impl serde::Serialize) -> String {
    serde_json::to_value(codec).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// `tcoder follow <job>`.
pub(crate) async fn run(client: &Client, id: &str, timeout: Duration) -> anyhow::Result<bool> {
    let last = with_progress_bar(client, id, timeout).await?;
    let job = client.job(id).await?;
    print!("{}", describe(&job));
    Ok(last.kind == EventKind::Completed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job as `GET /v1/jobs/{id}` shows it, read through the API's own view type.
    fn job(extra: serde_json::Value) -> JobView {
        let mut job = serde_json::json!({
            "id": "job_0190f0e0c1a27f3e9b1c2d3e4f5a6b7c", "status": "completed",
            "preset": "hls", "qualities": ["360p"], "outputs": ["hls"], "priority": "normal",
            "attempts": 1, "lost_attempts": 0, "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:05Z", "source": null, "origin": { "kind": "api" },
            "result": null, "error": null,
        });
        job.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(job).unwrap()
    }

    #[test]
    fn a_finished_job_reads_in_a_few_lines() {
        let completed = job(serde_json::json!({ "result": {
            "epoch": 1, "prefix": "outputs/acme/job_1/1/", "mode": "transcode",
            "source": { "duration_secs": 2.0, "width": 640, "height": 360,
                        "video_codec": "h264", "audio_codec": "aac" },
            "renditions": [{ "name": "360p", "width": 640, "height": 360,
                             "video_codec": "h264", "audio_codec": "aac",
                             "video_bit_rate": 400000, "mp4": null,
                             "hls": "http://s/hls/360p/index.m3u8",
                             "quality": { "metric": "vmaf", "mean": 94.26, "p5": 90.1,
                                          "min": 88.0, "frames": 150 } }],
            "hls_master": "http://s/hls/master.m3u8",
            "thumbnails": { "poster": "http://s/thumbs/poster.jpg",
                            "storyboard": "http://s/thumbs/storyboard.jpg",
                            "storyboard_vtt": "http://s/thumbs/storyboard.vtt" },
            "manifest": "http://s/manifest.json", "file_count": 7,
            "engine": { "cpu_secs": 1.0, "wall_secs": 1.0, "started_at_ms": 0.0 },
            "cost": { "cpu_secs": 1.0, "machine_secs": 1.0, "bytes_stored": 0, "put_requests": 0,
                      "estimated_usd": 0.0,
                      "prices": tcoder::cost::Prices::default() },
        }}));
        assert_eq!(
            describe(&completed),
            "job job_0190f0e0c1a27f3e9b1c2d3e4f5a6b7c completed\n  master    http://s/hls/master.m3u8\n  360p      640x360 h264/aac 400 kb/s  VMAF 94.3 (p5 90.1)  http://s/hls/360p/index.m3u8\n  poster    http://s/thumbs/poster.jpg\n  manifest  http://s/manifest.json (7 files)\n"
        );
        let failed = job(serde_json::json!({ "status": "failed",
            "error": { "code": "input.corrupt", "message": "bad" } }));
        assert_eq!(
            describe(&failed),
            "job job_0190f0e0c1a27f3e9b1c2d3e4f5a6b7c failed\n  error     input.corrupt: bad\n"
        );
    }

    #[test]
    fn progress_shows_parts_of_a_split_title_else_the_time_left() {
        let whole: Progress = serde_json::from_value(serde_json::json!({
            "frames": 10, "percent": 40.0, "fps": 50.0, "speed": 2.0, "eta_secs": 12.4 }))
        .unwrap();
        assert_eq!(progress_note(&whole), "eta 12s");
        let split =
            Progress { parts: Some(tcoder::engine::PartsProgress { done: 2, total: 5 }), ..whole };
        assert_eq!(progress_note(&split), "parts 2/5");
    }
}
