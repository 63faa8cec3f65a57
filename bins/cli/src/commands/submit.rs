//! `tcoder submit <file>`: create a job, upload the file to its presigned URL with a progress
//! bar, and (with `--wait`) follow its events until it is done.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::client::ApiClient;

#[derive(Debug, clap::Args)]
pub(crate) struct SubmitArgs {
    /// The video to transcode.
    file: PathBuf,
    /// default, web-optimized or hls.
    #[arg(long, default_value = "default")]
    preset: String,
    /// A quality (144p, 360p, 720p, 1080p); repeat for several, or `auto` for the full ladder.
    #[arg(long = "quality")]
    qualities: Vec<String>,
    /// What to write: mp4, hls, thumbnails (repeatable; default depends on the preset).
    #[arg(long = "output")]
    outputs: Vec<String>,
    /// high, normal or low.
    #[arg(long)]
    priority: Option<String>,
    /// Where to POST signed completion events.
    #[arg(long)]
    webhook_url: Option<String>,
    /// h264 (default), hevc, av1 or vp9.
    #[arg(long)]
    video_codec: Option<String>,
    /// aac (default) or opus.
    #[arg(long)]
    audio_codec: Option<String>,
    /// A `key=value` pair returned with the job and its events (repeatable).
    #[arg(long = "metadata", value_parser = key_value)]
    metadata: Vec<(String, String)>,
    /// Follow the job until it completes, fails or is canceled.
    #[arg(long)]
    wait: bool,
    /// With --wait: print the job's result as JSON instead of a summary.
    #[arg(long)]
    json: bool,
    /// Give up waiting after this long (e.g. 30m).
    #[arg(long, default_value = "1h", value_parser = humantime_duration)]
    timeout: Duration,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not key=value"))
}

/// Outcome of a submit: the process exit code follows it.
pub(crate) async fn run(client: &ApiClient, args: SubmitArgs) -> anyhow::Result<bool> {
    let length = std::fs::metadata(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?
        .len();
    if length == 0 {
        bail!("{} is empty", args.file.display());
    }
    let request = job_request(&args, length);
    let created = client.create_job(&request).await?;
    let id = created["job"]["id"].as_str().context("the API returned no job id")?.to_owned();
    eprintln!("job {id} created");

    let bar = ProgressBar::new(length).with_style(
        ProgressStyle::with_template(
            "{spinner} uploading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let ticker = bar.clone();
    client.upload(&created["upload"], &args.file, move |n| ticker.inc(n)).await?;
    bar.finish_and_clear();
    eprintln!("uploaded {length} bytes");

    if !args.wait {
        println!("{id}");
        return Ok(true);
    }
    let last = super::follow::with_progress_bar(client, &id, args.timeout).await?;
    let job = client.job(&id).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary(&job)).unwrap_or_default());
    } else {
        print!("{}", super::follow::describe(&job));
    }
    Ok(last.kind == "completed")
}

fn job_request(args: &SubmitArgs, length: u64) -> Value {
    let mut request = json!({ "preset": args.preset, "content_length": length, "content_type": content_type(&args.file) });
    match args.qualities.as_slice() {
        [] => {}
        [auto] if auto == "auto" => request["qualities"] = json!("auto"),
        list => request["qualities"] = json!(list),
    }
    if !args.outputs.is_empty() {
        request["outputs"] = json!(args.outputs);
    }
    if let Some(priority) = &args.priority {
        request["priority"] = json!(priority);
    }
    if let Some(url) = &args.webhook_url {
        request["webhook_url"] = json!(url);
    }
    if let Some(codec) = &args.video_codec {
        request["video_codec"] = json!(codec);
    }
    if let Some(codec) = &args.audio_codec {
        request["audio_codec"] = json!(codec);
    }
    if !args.metadata.is_empty() {
        let pairs: serde_json::Map<String, Value> =
            args.metadata.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        request["metadata"] = Value::Object(pairs);
    }
    request
}

/// A label only: the worker probes the bytes, whatever they claim to be.
fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("mp4" | "m4v") => "video/mp4",
        Some("mov") => "video/quicktime",
        Some("mkv") => "video/x-matroska",
        Some("webm") => "video/webm",
        Some("avi") => "video/x-msvideo",
        _ => "application/octet-stream",
    }
}

/// What a user wants to see at the end: status, outputs or error.
pub(crate) fn summary(job: &Value) -> Value {
    json!({ "id": job["id"], "status": job["status"], "result": job["result"], "error": job["error"] })
}
