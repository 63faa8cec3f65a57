//! `tcoder compare-ladder`: each source through the fixed ladder (`quality: fixed`, every rung
//! at CRF 23) and through the per-title ladder (`quality: standard`), side by side in one run
//! — bytes and measured VMAF per rung, the probe's CPU against the encode's — and the VMAF the
//! engine reports checked against FFmpeg's own libvmaf filter on the written files, on the
//! same frames (docs/BENCHMARKS.md, "Per-title ladder").

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tcoder::engine::quality::measure_windows;
use tcoder::engine::{
    EncoderSettings, EngineJob, EngineReport, EngineSpec, Limits, QualityGoal, Supervisor,
};
use tcoder::jobs::{AudioCodec, AutoLadder, OutputKind, Preset, Qualities, VideoCodec};
use tokio_util::sync::CancellationToken;

/// The MP4 GOP: where the engine's measured windows start.
const MP4_KEYFRAME_SECS: f64 = 2.0;

#[derive(Debug, clap::Args)]
pub(crate) struct CompareLadderArgs {
    /// The sources (repeatable).
    #[arg(long = "input", required = true)]
    inputs: Vec<PathBuf>,
    /// x264 preset for every encode.
    #[arg(long, default_value = "fast")]
    x264_preset: String,
    /// An FFmpeg built with libvmaf, for the independent measurement.
    #[arg(long)]
    vmaf_ffmpeg: PathBuf,
    /// Folder holding `tcoder-worker` (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

pub(crate) async fn run(args: CompareLadderArgs) -> anyhow::Result<()> {
    let worker = match &args.bin_dir {
        Some(dir) => dir.canonicalize().context("--bin-dir")?.join("tcoder-worker"),
        None => std::env::current_exe()?.parent().context("binary folder")?.join("tcoder-worker"),
    };
    let supervisor = Supervisor {
        program: worker,
        args: vec!["engine".into()],
        limits: super::compare::bench_limits(),
    };
    let settings =
        EncoderSettings { x264_preset: args.x264_preset.clone(), segment_secs: 4.0, threads: 0 };
    let mut sources = Vec::new();
    for input in &args.inputs {
        let scratch = tempfile::tempdir()?;
        let fixed = encode(
            &supervisor,
            input,
            QualityGoal::Fixed,
            &settings,
            &scratch.path().join("fixed"),
        )
        .await?;
        let titled = encode(
            &supervisor,
            input,
            QualityGoal::Standard,
            &settings,
            &scratch.path().join("standard"),
        )
        .await?;
        sources.push(compare(input, &fixed, &titled, &args.vmaf_ffmpeg)?);
    }
    println!("{}", serde_json::to_string_pretty(&json!({ "sources": sources }))?);
    Ok(())
}

/// One sandboxed whole-title run, as the worker makes it: the report, its CPU seconds and
/// where its files are.
struct Run {
    report: EngineReport,
    cpu_secs: f64,
    out: PathBuf,
    input: PathBuf,
}

async fn encode(
    supervisor: &Supervisor,
    source: &Path,
    quality: QualityGoal,
    settings: &EncoderSettings,
    scratch: &Path,
) -> anyhow::Result<Run> {
    std::fs::create_dir_all(scratch)?;
    let input = scratch.join("source");
    std::fs::copy(source, &input)?;
    let job = EngineJob {
        input: input.clone(),
        output_dir: scratch.join("engine"),
        spec: EngineSpec {
            preset: Preset::WebOptimized,
            qualities: Qualities::Auto(AutoLadder::Auto),
            outputs: vec![OutputKind::Mp4],
            video_codec: VideoCodec::H264,
            audio_codec: AudioCodec::Aac,
            hdr: Default::default(),
            loudness_target: None,
            captions: Vec::new(),
            mp4_captions: false,
            quality,
            quality_floor: None,
        },
        limits: Limits::default(),
        settings: settings.clone(),
        task: Default::default(),
        sidecars: Vec::new(),
        ladder: None,
    };
    let done = supervisor
        .run(&job, scratch, None, CancellationToken::new())
        .await
        .map_err(|e| anyhow::anyhow!("engine: {e}"))?;
    Ok(Run { report: done.report, cpu_secs: done.cpu_secs, out: job.output_dir, input })
}

fn compare(source: &Path, fixed: &Run, titled: &Run, vmaf_ffmpeg: &Path) -> anyhow::Result<Value> {
    let ladder = titled.report.ladder.as_ref().context("no per-title decision")?;
    let bytes = |run: &Run, name: &str| {
        run.report.files.iter().find(|f| f.path == format!("mp4/{name}.mp4")).map(|f| f.bytes)
    };
    let duration = titled.report.media.duration_secs;
    let mut rungs = Vec::new();
    for before in &fixed.report.renditions {
        let name = &before.name;
        let after = titled.report.renditions.iter().find(|r| &r.name == name);
        let choice = ladder.rung(name);
        let independent = match after {
            Some(after) => Some(ffmpeg_vmaf(
                vmaf_ffmpeg,
                &titled.out.join(format!("mp4/{name}.mp4")),
                &titled.input,
                (after.width, after.height),
                duration,
            )?),
            None => None,
        };
        rungs.push(json!({
            "name": name,
            "fixed": { "bytes": bytes(fixed, name), "quality": before.quality },
            "per_title": after.map(|a| json!({
                "bytes": bytes(titled, name),
                "quality": a.quality,
                "crf": choice.map(|c| c.crf),
            })),
            "kept": choice.is_none_or(|c| c.kept),
            "reason": choice.map(|c| c.reason.clone()),
            "ffmpeg_vmaf_same_frames": independent,
        }));
    }
    Ok(json!({
        "source": source.file_name().map(|n| n.to_string_lossy().into_owned()),
        "duration_secs": duration,
        "fixed_cpu_secs": fixed.cpu_secs,
        "per_title_cpu_secs": titled.cpu_secs,
        "probe_cpu_secs": ladder.probe_cpu_secs,
        "probe_media_secs": ladder.probe_media_secs,
        "rungs": rungs,
    }))
}

/// Mean VMAF, by FFmpeg's libvmaf filter, of the rendition `file` against `source` scaled to
/// its size, over the frames of the windows the engine measures.
fn ffmpeg_vmaf(
    ffmpeg: &Path,
    file: &Path,
    source: &Path,
    (width, height): (u32, u32),
    duration: f64,
) -> anyhow::Result<f64> {
    let mut scores = Vec::new();
    for (start, end) in measure_windows(duration, MP4_KEYFRAME_SECS) {
        let log = tempfile::NamedTempFile::new()?;
        let graph = format!(
            "[0:v]format=yuv420p[d];[1:v]scale={width}:{height}:flags=bicubic,format=yuv420p[r];\
             [d][r]libvmaf=model=version=vmaf_v0.6.1:n_threads=2:log_fmt=json:log_path={}",
            log.path().display()
        );
        let window = |path: &Path| {
            vec![
                "-ss".to_owned(),
                format!("{start:.3}"),
                "-t".to_owned(),
                format!("{:.3}", end - start),
                "-i".to_owned(),
                path.display().to_string(),
            ]
        };
        let output = Command::new(ffmpeg)
            .args(["-nostdin", "-v", "error"])
            .args(window(file))
            .args(window(source))
            .args(["-lavfi", &graph, "-f", "null", "-"])
            .output()
            .context("run the libvmaf FFmpeg")?;
        if !output.status.success() {
            bail!("libvmaf: {}", String::from_utf8_lossy(&output.stderr));
        }
        let json: Value = serde_json::from_slice(&std::fs::read(log.path())?)?;
        for frame in json["frames"].as_array().context("libvmaf frames")? {
            scores.push(frame["metrics"]["vmaf"].as_f64().context("a frame's vmaf")?);
        }
    }
    if scores.is_empty() {
        bail!("libvmaf scored no frame of {}", file.display());
    }
    Ok(((scores.iter().sum::<f64>() / scores.len() as f64) * 100.0).round() / 100.0)
}
