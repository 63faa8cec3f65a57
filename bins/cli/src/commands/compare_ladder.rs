//! `tcoder compare-ladder`: each source through the fixed ladder (`quality: fixed`, every rung
//! at CRF 23) and through the per-title ladder (`quality: standard`, or the goal given),
//! side by side in one run
//! — bytes and measured VMAF per rung, the probe's CPU against the encode's — and the VMAF the
//! engine reports checked against FFmpeg's own libvmaf filter on the written files, on the
//! same frames (docs/BENCHMARKS.md, "Per-title ladder").

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tcoder::engine::quality::{measure_every, measure_windows};
use tcoder::engine::{EncoderSettings, EngineReport, EngineSpec, QualityGoal, Supervisor};
use tcoder::jobs::{AutoLadder, OutputKind, Preset, Qualities};

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
    /// The per-title goal set against `fixed` (`standard`, `high`, `target:vmaf=N`).
    #[arg(long, default_value = "standard", value_parser = QualityGoal::parse)]
    quality: QualityGoal,
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
        let mut runs = Vec::new();
        for quality in [QualityGoal::Fixed, args.quality] {
            let dir = scratch.path().join(quality.to_string());
            runs.push(encode(&supervisor, input, quality, &settings, &dir).await?);
        }
        sources.push(compare(input, &runs[0], &runs[1], &args.vmaf_ffmpeg)?);
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
    let spec = EngineSpec {
        quality,
        ..EngineSpec::new(
            Preset::WebOptimized,
            Qualities::Auto(AutoLadder::Auto),
            &[OutputKind::Mp4],
        )
    };
    let done = super::compare::engine_run(supervisor, source, &spec, settings, scratch).await?;
    Ok(Run {
        report: done.report,
        cpu_secs: done.cpu_secs,
        out: scratch.join("engine"),
        input: scratch.join("source"),
    })
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
            "cap_bits_per_sec": before.video_bit_rate,
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
        "goal": ladder.goal,
        "probe_cpu_secs": ladder.probe_cpu_secs,
        "probe_media_secs": ladder.probe_media_secs,
        "rungs": rungs,
    }))
}

/// Mean VMAF, by FFmpeg's libvmaf filter, of the rendition `file` against `source` scaled to
/// its size, over the pictures of the windows the engine scores. Windows are on each file's
/// own timeline from its first picture (as the engine's are): the timestamps are kept
/// (`-copyts`) and each file's start is taken off before the window is cut, so a file whose
/// first picture is not at 0 is still paired frame for frame.
fn ffmpeg_vmaf(
    ffmpeg: &Path,
    file: &Path,
    source: &Path,
    (width, height): (u32, u32),
    duration: f64,
) -> anyhow::Result<f64> {
    let (file_start, source_start) = (video_start(file)?, video_start(source)?);
    // The source's pictures as the engine took them: its values under the rendition's tags
    // (the engine writes what players assume for an untagged source; FFmpeg would otherwise
    // convert one side's matrix to the other's before scoring).
    let tags = colour_tags(file)?;
    let mut scores = Vec::new();
    let windows = measure_windows(duration, MP4_KEYFRAME_SECS);
    // The pictures the engine scores: a window's first, then every `every`th.
    let every = measure_every(duration, &windows);
    for (start, end) in windows {
        let log = tempfile::NamedTempFile::new()?;
        let cut = |first: f64| {
            format!(
                "setpts=PTS-{first}/TB,trim=start={start}:end={end},setpts=PTS-STARTPTS,format=yuv420p"
            )
        };
        let graph = format!(
            "[0:v]{}[d];[1:v]{tags}{},scale={width}:{height}:flags=bicubic[r];\
             [d][r]libvmaf=model=version=vmaf_v0.6.1:n_subsample={every}:n_threads=2:\
             log_fmt=json:log_path={}",
            cut(file_start),
            cut(source_start),
            log.path().display()
        );
        // Decoding starts a keyframe interval early; the trim keeps the window.
        let seek = format!("{:.3}", (start - 2.0 * MP4_KEYFRAME_SECS).max(0.0));
        let output = Command::new(ffmpeg)
            .args(["-nostdin", "-v", "error", "-copyts", "-ss", &seek, "-i"])
            .arg(file)
            .args(["-copyts", "-ss", &seek, "-i"])
            .arg(source)
            .args(["-lavfi", &graph, "-f", "null", "-"])
            .output()
            .context("run the libvmaf FFmpeg")?;
        if !output.status.success() {
            bail!("libvmaf: {}", String::from_utf8_lossy(&output.stderr));
        }
        let json: Value = serde_json::from_slice(&std::fs::read(log.path())?)?;
        let frames = json["frames"].as_array().context("libvmaf frames")?;
        // The engine leaves out a window's first picture (scored as still) unless it is the
        // only one.
        for frame in &frames[usize::from(frames.len() > 1)..] {
            scores.push(frame["metrics"]["vmaf"].as_f64().context("a frame's vmaf")?);
        }
    }
    if scores.is_empty() {
        bail!("libvmaf scored no frame of {}", file.display());
    }
    Ok(((scores.iter().sum::<f64>() / scores.len() as f64) * 100.0).round() / 100.0)
}

/// `setparams=…,` giving a picture `path`'s colour tags (those ffprobe reads), or nothing.
fn colour_tags(path: &Path) -> anyhow::Result<String> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["stream=color_space,color_primaries,color_transfer,color_range", "-of", "json"])
        .arg(path)
        .output()
        .context("run ffprobe")?;
    let json: Value = serde_json::from_slice(&output.stdout)?;
    let stream = &json["streams"][0];
    let params: Vec<String> = [
        ("colorspace", "color_space"),
        ("color_primaries", "color_primaries"),
        ("color_trc", "color_transfer"),
        ("range", "color_range"),
    ]
    .iter()
    .filter_map(|(param, field)| {
        let value = stream[*field].as_str().filter(|v| *v != "unknown")?;
        Some(format!("{param}={value}"))
    })
    .collect();
    Ok(if params.is_empty() { String::new() } else { format!("setparams={},", params.join(":")) })
}

/// The time of a file's first video picture, as ffprobe reads it.
fn video_start(path: &Path) -> anyhow::Result<f64> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=start_time"])
        .args(["-of", "default=noprint_wrappers=1:nokey=1"])
        .arg(path)
        .output()
        .context("run ffprobe")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim().parse().with_context(|| format!("start time of {}: {text:?}", path.display()))
}
