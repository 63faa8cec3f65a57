//! `tcoder follow <job>`: a live progress bar (stage, percent, ETA) from the job's event
//! stream, and the summary a person reads at the end.

use std::fmt::Write as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::client::{ApiClient, StreamEvent};

/// Follows `id` to its end with a progress bar on stderr; returns the terminal event.
pub(crate) async fn with_progress_bar(
    client: &ApiClient,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<StreamEvent> {
    let bar = ProgressBar::new(100).with_style(
        ProgressStyle::with_template("{spinner} {msg:<12} [{bar:30}] {pos:>3}% {prefix}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.set_message("waiting");
    let last = client
        .follow(id, timeout, |event| match event.kind.as_str() {
            "progress" => {
                let data = &event.data["data"];
                bar.set_message("transcoding");
                bar.set_position(data["percent"].as_f64().unwrap_or(0.0).round() as u64);
                // A split title reports its parts; a whole encode its time left.
                let prefix = match (data["parts"]["done"].as_u64(), data["parts"]["total"].as_u64())
                {
                    (Some(done), Some(total)) => format!("parts {done}/{total}"),
                    _ => {
                        data["eta_secs"].as_f64().map_or(String::new(), |s| format!("eta {s:.0}s"))
                    }
                };
                bar.set_prefix(prefix);
            }
            "queued" => bar.set_message("queued"),
            "started" => bar.set_message("downloading"),
            "rendition" => bar.set_message("uploading"),
            "completed" => {
                bar.set_position(100);
                bar.set_message("completed");
            }
            kind => bar.set_message(kind.to_owned()),
        })
        .await;
    bar.finish_and_clear();
    last
}

/// What a person wants to read about a finished job: status, the master playlist, each
/// rendition, the poster, the manifest; or the error.
pub(crate) fn describe(job: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "job {} {}",
        job["id"].as_str().unwrap_or("?"),
        job["status"].as_str().unwrap_or("?")
    );
    if let Some(error) = job["error"].as_object() {
        let _ = writeln!(
            out,
            "  error     {}: {}",
            error.get("code").and_then(Value::as_str).unwrap_or("?"),
            error.get("message").and_then(Value::as_str).unwrap_or("")
        );
    }
    let result = &job["result"];
    if let Some(master) = result["hls_master"].as_str() {
        let _ = writeln!(out, "  master    {master}");
    }
    for rendition in result["renditions"].as_array().into_iter().flatten() {
        let codecs = [&rendition["video_codec"], &rendition["audio_codec"]]
            .iter()
            .filter_map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join("/");
        let url = rendition["mp4"].as_str().or(rendition["hls"].as_str()).unwrap_or("");
        let _ = writeln!(
            out,
            "  {:<9} {}x{} {} {} kb/s  {url}",
            rendition["name"].as_str().unwrap_or("?"),
            rendition["width"],
            rendition["height"],
            codecs,
            rendition["video_bit_rate"].as_u64().unwrap_or(0) / 1000
        );
    }
    if let Some(poster) = result["thumbnails"]["poster"].as_str() {
        let _ = writeln!(out, "  poster    {poster}");
    }
    if let Some(manifest) = result["manifest"].as_str() {
        let _ = writeln!(out, "  manifest  {manifest} ({} files)", result["file_count"]);
    }
    out
}

/// `tcoder follow <job>`.
pub(crate) async fn run(client: &ApiClient, id: &str, timeout: Duration) -> anyhow::Result<bool> {
    let last = with_progress_bar(client, id, timeout).await?;
    let job = client.job(id).await?;
    print!("{}", describe(&job));
    Ok(last.kind == "completed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_job_reads_in_a_few_lines() {
        let job = serde_json::json!({
            "id": "job_1", "status": "completed",
            "result": {
                "hls_master": "http://s/hls/master.m3u8",
                "renditions": [{ "name": "360p", "width": 640, "height": 360,
                                 "video_codec": "h264", "audio_codec": "aac",
                                 "video_bit_rate": 400000, "mp4": null,
                                 "hls": "http://s/hls/360p/index.m3u8" }],
                "thumbnails": { "poster": "http://s/thumbs/poster.jpg" },
                "manifest": "http://s/manifest.json", "file_count": 7,
            }
        });
        assert_eq!(
            describe(&job),
            "job job_1 completed\n  master    http://s/hls/master.m3u8\n  360p      640x360 h264/aac 400 kb/s  http://s/hls/360p/index.m3u8\n  poster    http://s/thumbs/poster.jpg\n  manifest  http://s/manifest.json (7 files)\n"
        );
        let failed = serde_json::json!({ "id": "job_2", "status": "failed",
            "error": { "code": "input.corrupt", "message": "bad" } });
        assert_eq!(describe(&failed), "job job_2 failed\n  error     input.corrupt: bad\n");
    }
}
