//! `tcoder submit <file>`: create a job, upload the file to its presigned URL with a progress
//! bar, and (with `--wait`) follow its events until it is done. `tcoder submit https://…`
//! makes a job whose source ingest fetches from that URL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tcoder::api::{Client, JobView};
use tcoder::events::EventKind;
use tcoder::jobs::{CaptionRequest, JobRequest};

#[derive(Debug, clap::Args)]
pub(crate) struct SubmitArgs {
    /// The video to transcode: a file, or an `https://` URL for ingest to fetch.
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
    /// HDR sources: tonemap (default, SDR outputs) or keep (10-bit HDR; needs --video-codec
    /// hevc or av1).
    #[arg(long)]
    hdr: Option<String>,
    /// Normalise the audio's loudness (EBU R128, -23 LUFS unless --loudness-target says).
    #[arg(long)]
    normalize_audio: bool,
    /// Integrated loudness to normalise to, in LUFS (-40 to -5; -16 for the web).
    #[arg(long, allow_negative_numbers = true)]
    loudness_target: Option<i64>,
    /// A caption file (SRT or WebVTT) to upload with the video: `LANG=FILE` or
    /// `LANG:NAME=FILE`, e.g. `en=talk.srt` or `fr:Français=talk.fr.vtt` (repeatable; the
    /// first is the default).
    #[arg(long = "caption", value_parser = caption_file)]
    captions: Vec<CaptionFileArg>,
    /// Also carry the captions in the MP4s as MP4 timed text.
    #[arg(long)]
    mp4_captions: bool,
    /// How each rung's quality setting is chosen: standard (default, per title aiming at
    /// VMAF 93, never more than 0.5 below what fixed would give), high (likewise, VMAF 96), a
    /// VMAF from 50 to 99 exactly (`94` or `target:vmaf=94`), or fixed.
    #[arg(long, value_parser = quality_target)]
    quality_target: Option<String>,
    /// Fail the job when a rendition is measured below this VMAF (see --quality-floor-action).
    #[arg(long)]
    quality_floor: Option<f64>,
    /// fail (default) or warn: what a rendition below --quality-floor does to the job.
    #[arg(long, requires = "quality_floor")]
    quality_floor_action: Option<String>,
    /// A `key=value` pair returned with the job and its events (repeatable).
    #[arg(long = "metadata", value_parser = key_value)]
    metadata: Vec<(String, String)>,
    /// Follow the job until it completes, fails or is canceled.
    #[arg(long)]
    wait: bool,
    /// With --wait: print the job's result as JSON instead of a summary.
    #[arg(long)]
    json: bool,
    /// Finish the upload of this job (created by an earlier `tcoder submit` whose upload
    /// stopped) instead of creating one: parts the store holds are not sent again.
    #[arg(long, value_name = "JOB_ID")]
    resume: Option<String>,
    /// Give up waiting after this long (e.g. 30m).
    #[arg(long, default_value = "1h", value_parser = humantime_duration)]
    timeout: Duration,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// A `--caption`: its language, name and file.
#[derive(Debug, Clone)]
struct CaptionFileArg {
    language: String,
    name: Option<String>,
    file: PathBuf,
}

fn caption_file(s: &str) -> Result<CaptionFileArg, String> {
    let (label, file) = s.split_once('=').ok_or_else(|| format!("`{s}` is not LANG=FILE"))?;
    let (language, name) = match label.split_once(':') {
        Some((language, name)) => (language, Some(name.to_owned())),
        None => (label, None),
    };
    Ok(CaptionFileArg { language: language.to_owned(), name, file: PathBuf::from(file) })
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not key=value"))
}

/// The URL `file` names, when it is one.
fn source_url(file: &Path) -> Option<&str> {
    file.to_str().filter(|s| s.starts_with("https://") || s.starts_with("http://"))
}

/// Outcome of a submit: the process exit code follows it.
pub(crate) async fn run(client: &Client, args: SubmitArgs) -> anyhow::Result<bool> {
    if let Some(url) = source_url(&args.file) {
        if args.resume.is_some() || !args.captions.is_empty() {
            bail!("--resume and --caption upload files; a URL source takes neither");
        }
        let request = JobRequest {
            source_url: Some(url.to_owned()),
            content_length: None,
            content_type: None,
            filename: None,
            ..job_request(&args, 0)
        };
        let created = client.create_job(&request, None).await?;
        let id = created.job.id.to_string();
        eprintln!("job {id} created; ingest fetches {url}");
        return finish(client, &args, &id).await;
    }
    let length = std::fs::metadata(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?
        .len();
    if length == 0 {
        bail!("{} is empty", args.file.display());
    }
    for caption in &args.captions {
        std::fs::metadata(&caption.file)
            .with_context(|| format!("cannot read {}", caption.file.display()))?;
    }
    let created = match &args.resume {
        None => client.create_job(&job_request(&args, length), None).await?,
        Some(id) => {
            let id = tcoder::jobs::JobId::parse(id)
                .with_context(|| format!("`{id}` is not a job id (job_…)"))?;
            let created = client.upload_urls(&id.to_string()).await?;
            if created.job.spec.content_length != Some(length) {
                bail!(
                    "{} is {length} bytes; job {id} was created for {} bytes",
                    args.file.display(),
                    created.job.spec.content_length.unwrap_or_default()
                );
            }
            created
        }
    };
    let id = created.job.id.to_string();
    match (&args.resume, &created.multipart_upload) {
        (Some(_), _) => eprintln!("resuming the upload of job {id}"),
        // Said now: an upload stopped by Ctrl-C or a closed terminal says nothing after.
        (None, Some(view)) => eprintln!(
            "job {id} created; its upload goes in {} parts — if it stops, resume it with\n  \
             tcoder submit {} --resume {id}",
            view.part_count,
            args.file.display()
        ),
        (None, None) => eprintln!("job {id} created"),
    }
    // The job starts when its last file is in: the captions go first, they are small.
    for caption_upload in &created.caption_uploads {
        let caption = args.captions.get(caption_upload.caption).with_context(|| {
            format!(
                "job {id} uploads caption file {} too: pass the --caption options it was \
                 created with",
                caption_upload.caption + 1
            )
        })?;
        client.upload(&caption_upload.upload, &caption.file, |_| {}).await?;
        eprintln!("uploaded {}", caption.file.display());
    }

    let bar = ProgressBar::new(length).with_style(
        ProgressStyle::with_template(
            "{spinner} uploading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    if let Some(view) = &created.multipart_upload {
        bar.set_position(view.uploaded.iter().map(|part| part.size).sum());
    }
    let ticker = bar.clone();
    let report = match client.upload_source(&created, &args.file, move |n| ticker.inc(n)).await {
        Ok(report) => report,
        Err(e) => {
            bar.abandon();
            if created.multipart_upload.is_some() {
                eprintln!(
                    "the upload stopped; the parts already sent are kept: resume with\n  \
                     tcoder submit {} --resume {id}",
                    args.file.display()
                );
            }
            return Err(e.into());
        }
    };
    bar.finish_and_clear();
    match &created.multipart_upload {
        None => eprintln!("uploaded {length} bytes"),
        Some(view) => eprintln!(
            "uploaded {length} bytes in {} parts: {} sent now, {} already stored",
            view.part_count, report.parts_sent, report.parts_already_stored
        ),
    }

    finish(client, &args, &id).await
}

/// Prints the job id, or (with `--wait`) follows the job and prints its outcome.
async fn finish(client: &Client, args: &SubmitArgs, id: &str) -> anyhow::Result<bool> {
    if !args.wait {
        println!("{id}");
        return Ok(true);
    }
    let last = super::follow::with_progress_bar(client, id, args.timeout).await?;
    let job = client.job(id).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary(&job)).unwrap_or_default());
    } else {
        print!("{}", super::follow::describe(&job));
    }
    Ok(last.kind == EventKind::Completed)
}

fn job_request(args: &SubmitArgs, length: u64) -> JobRequest {
    let qualities = match args.qualities.as_slice() {
        [] => None,
        [auto] if auto == "auto" => Some(json!("auto")),
        list => Some(json!(list)),
    };
    let metadata = (!args.metadata.is_empty()).then(|| args.metadata.iter().cloned().collect());
    JobRequest {
        preset: Some(args.preset.clone()),
        qualities,
        outputs: (!args.outputs.is_empty()).then(|| args.outputs.clone()),
        priority: args.priority.clone(),
        webhook_url: args.webhook_url.clone(),
        video_codec: args.video_codec.clone(),
        audio_codec: args.audio_codec.clone(),
        hdr: args.hdr.clone(),
        normalize_audio: args.normalize_audio.then_some(true),
        loudness_target: args.loudness_target,
        captions: (!args.captions.is_empty()).then(|| {
            args.captions
                .iter()
                .enumerate()
                .map(|(n, caption)| CaptionRequest {
                    language: caption.language.clone(),
                    name: caption.name.clone(),
                    default: (n == 0).then_some(true),
                    upload: Some(true),
                    ..CaptionRequest::default()
                })
                .collect()
        }),
        mp4_captions: args.mp4_captions.then_some(true),
        quality: args.quality_target.clone(),
        quality_floor: args.quality_floor,
        quality_floor_action: args.quality_floor_action.clone(),
        metadata,
        filename: args.file.file_name().map(|name| name.to_string_lossy().into_owned()),
        content_length: Some(length),
        content_type: Some(content_type(&args.file).to_owned()),
        ..JobRequest::default()
    }
}

/// `--quality-target`: the API's spelling, with a bare VMAF value as shorthand for
/// `target:vmaf=<value>` (the server validates either).
fn quality_target(text: &str) -> Result<String, String> {
    match text.parse::<f64>() {
        Ok(_) => Ok(format!("target:vmaf={text}")),
        Err(_) => Ok(text.to_owned()),
    }
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
pub(crate) fn summary(job: &JobView) -> Value {
    json!({
        "id": job.id,
        "status": job.status,
        "filename": job.spec.filename,
        "playback_url": job.playback_url,
        "playable_at": job.playable_at,
        "completed_at": job.completed_at,
        "result": job.result,
        "error": job.error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Command {
        #[command(flatten)]
        submit: SubmitArgs,
    }

    #[test]
    fn media_options_reach_the_request() {
        let args = Command::parse_from([
            "tcoder",
            "clip.mkv",
            "--preset",
            "hls",
            "--video-codec",
            "hevc",
            "--hdr",
            "keep",
            "--normalize-audio",
            "--loudness-target",
            "-16",
        ]);
        let request = job_request(&args.submit, 10);
        assert_eq!(request.hdr.as_deref(), Some("keep"));
        assert!(request.captions.is_none() && request.mp4_captions.is_none());
        assert_eq!((request.normalize_audio, request.loudness_target), (Some(true), Some(-16)));
        let args = Command::parse_from([
            "tcoder",
            "clip.mkv",
            "--quality-target",
            "94.5",
            "--quality-floor",
            "80",
            "--quality-floor-action",
            "warn",
        ]);
        let request = job_request(&args.submit, 10);
        assert_eq!(request.quality.as_deref(), Some("target:vmaf=94.5"));
        assert_eq!(
            (request.quality_floor, request.quality_floor_action.as_deref()),
            (Some(80.0), Some("warn"))
        );
        let args = Command::parse_from(["tcoder", "clip.mkv", "--quality-target", "high"]);
        assert_eq!(job_request(&args.submit, 10).quality.as_deref(), Some("high"));
        // Left out when not given: the server's defaults apply.
        let args = Command::parse_from(["tcoder", "clip.mkv"]);
        let request = serde_json::to_value(job_request(&args.submit, 10)).unwrap();
        for field in ["hdr", "normalize_audio", "loudness_target", "quality", "quality_floor"] {
            assert!(request.get(field).is_none(), "{request}");
        }
    }

    #[test]
    fn caption_files_are_uploads_the_first_the_default() {
        let args = Command::parse_from([
            "tcoder",
            "talk.mp4",
            "--caption",
            "en=talk.srt",
            "--caption",
            "fr:Français (SDH)=subs/talk=fr.vtt",
            "--mp4-captions",
        ]);
        assert_eq!(args.submit.captions[1].file, PathBuf::from("subs/talk=fr.vtt"));
        let request = serde_json::to_value(job_request(&args.submit, 10)).unwrap();
        assert_eq!(
            request["captions"],
            json!([
                { "language": "en", "default": true, "upload": true },
                { "language": "fr", "name": "Français (SDH)", "upload": true },
            ])
        );
        assert_eq!(request["mp4_captions"], true);
        assert!(Command::try_parse_from(["tcoder", "a.mp4", "--caption", "talk.srt"]).is_err());
    }
}
