//! `tcoder compare-engine`: runs the engine (sandboxed, as the worker does) and the equivalent
//! FFmpeg CLI commands on the same clip, side by side, and reports CPU seconds (user + system
//! of the whole process tree) and wall time, min and median over repeats, with ratios.
//!
//! "Equivalent" means the same renditions, encoder, bit rates, GOP, forced keyframes, scaler and
//! audio settings, taken from the engine's own plan: (1) one `ffmpeg` run with a `split`
//! filter feeding every rendition, as a careful FFmpeg user would write it, and (2) one
//! `ffmpeg` run per rendition, as the pipeline we replace did.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;
use tcoder::engine::{
    self, EncoderSettings, EngineJob, EngineSpec, Limits, RenditionPlan, SandboxLimits, Supervisor,
};
use tcoder::jobs::{OutputKind, Preset, Qualities, Quality};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub(crate) struct CompareArgs {
    /// The clip to transcode.
    #[arg(long)]
    input: PathBuf,
    /// `web-optimized` (one MP4 per quality) or `hls`.
    #[arg(long, default_value = "web-optimized")]
    preset: String,
    /// Qualities (comma-separated).
    #[arg(long, default_value = "720p,360p,144p", value_delimiter = ',')]
    qualities: Vec<String>,
    /// x264 preset for every encoder.
    #[arg(long, default_value = "fast")]
    x264_preset: String,
    /// Runs of each variant (min and median are reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Folder holding `tcoder-worker` (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Folder holding another `tcoder-worker` (an earlier commit's) to run as a fourth
    /// variant, interleaved with the others: what a change to the engine costs, measured
    /// side by side on the same job.
    #[arg(long)]
    baseline_bin_dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Instead: the whole-title encode against the same title split into chunks of about this
    /// many seconds (plus its audio item and the stitch), HLS and MP4 (see `compare_split`);
    /// fails when the split output is not equivalent (see `split_equivalence`).
    #[arg(long)]
    split_chunk_secs: Option<f64>,
    /// With `--split-chunk-secs`: how far (dB, against the source) the split title's PSNR
    /// may fall below the whole encode's and still count as the same.
    #[arg(long, default_value_t = 0.1)]
    psnr_tolerance_db: f64,
}

/// CPU and wall seconds of one run.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    pub cpu: f64,
    pub wall: f64,
}

pub(crate) async fn run(args: CompareArgs) -> anyhow::Result<()> {
    let preset = match args.preset.as_str() {
        "web-optimized" => Preset::WebOptimized,
        "hls" => Preset::Hls,
        other => bail!("preset must be web-optimized or hls, not {other}"),
    };
    let qualities = args
        .qualities
        .iter()
        .map(|q| {
            serde_json::from_value::<Quality>(json!(q))
                .with_context(|| format!("unknown quality {q}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let outputs = match (preset, args.split_chunk_secs) {
        // A split title's MP4s are remuxed by the stitch: compared too.
        (Preset::Hls, Some(_)) => vec![OutputKind::Hls, OutputKind::Mp4],
        (Preset::Hls, None) => vec![OutputKind::Hls],
        _ => vec![OutputKind::Mp4],
    };
    let spec = EngineSpec {
        // The FFmpeg CLI it is compared with encodes at the fixed setting.
        quality: tcoder::engine::QualityGoal::Fixed,
        ..EngineSpec::new(preset, Qualities::List(qualities), &outputs)
    };
    let settings =
        EncoderSettings { x264_preset: args.x264_preset.clone(), segment_secs: 4.0, threads: 0 };
    let (_, media) = tcoder_engine::probe::open(&args.input, &Limits::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let limits = Limits::default();
    let plan = engine::plan(&spec, &media, settings.segment_secs, limits.max_output_fps);
    let worker = match &args.bin_dir {
        Some(dir) => dir.canonicalize().context("--bin-dir")?.join("tcoder-worker"),
        None => std::env::current_exe()?.parent().context("binary folder")?.join("tcoder-worker"),
    };
    if let Some(chunk_secs) = args.split_chunk_secs {
        if preset != Preset::Hls {
            bail!("--split-chunk-secs compares HLS encodes (--preset hls)");
        }
        // Equal chunks (the first too): the figures compare encoding work, not time to play.
        let rule = engine::plan::SplitRule {
            segment_secs: settings.segment_secs,
            first_chunk_secs: chunk_secs,
            chunk_secs,
            split_min_secs: 0.0,
        };
        let chunks = engine::plan::chunks(media.duration_secs, &rule);
        let report = super::compare_split::run(
            &worker,
            &args.input,
            &spec,
            &settings,
            &chunks,
            args.repeats,
            &super::split_equivalence::Tolerance {
                psnr_db: args.psnr_tolerance_db,
                planned: &plan.renditions,
            },
        )
        .await?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        if report["equivalence"]["ok"] != true {
            bail!("the split title differs from the whole encode: {}", report["equivalence"]);
        }
        return Ok(());
    }
    let supervisor =
        Supervisor { program: worker, args: vec!["engine".into()], limits: bench_limits() };
    // Absolute: the engine is started from inside its job folder.
    let baseline = match &args.baseline_bin_dir {
        Some(dir) => Some(Supervisor {
            program: dir.canonicalize().context("--baseline-bin-dir")?.join("tcoder-worker"),
            args: vec!["engine".into()],
            limits: bench_limits(),
        }),
        None => None,
    };
    let (mut engine_runs, mut split_runs, mut separate_runs) = (Vec::new(), Vec::new(), Vec::new());
    let mut baseline_runs = Vec::new();
    // Interleaved, so machine noise hits every variant alike.
    for _ in 0..args.repeats.max(1) {
        let scratch = tempfile::tempdir()?;
        engine_runs
            .push(run_engine(&supervisor, &args.input, &spec, &settings, scratch.path()).await?);
        if let Some(baseline) = &baseline {
            let scratch = tempfile::tempdir()?;
            baseline_runs
                .push(run_engine(baseline, &args.input, &spec, &settings, scratch.path()).await?);
        }

        let dir = scratch.path().join("split");
        split_runs.push(ffmpeg(&split_command(
            &args.input,
            &plan.renditions,
            preset,
            &settings,
            &dir,
        ))?);
        let mut total = Sample { cpu: 0.0, wall: 0.0 };
        for (i, rendition) in plan.renditions.iter().enumerate() {
            let dir = scratch.path().join(format!("separate{i}"));
            let sample = ffmpeg(&split_command(
                &args.input,
                std::slice::from_ref(rendition),
                preset,
                &settings,
                &dir,
            ))?;
            total.cpu += sample.cpu;
            total.wall += sample.wall;
        }
        separate_runs.push(total);
    }
    let summary = |runs: &[Sample]| {
        let stat = |f: fn(&Sample) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(f).collect();
            values.sort_by(f64::total_cmp);
            (values[0], values[values.len() / 2])
        };
        (stat(|s| s.cpu), stat(|s| s.wall))
    };
    let (engine_cpu, engine_wall) = summary(&engine_runs);
    let (split_cpu, split_wall) = summary(&split_runs);
    let (separate_cpu, separate_wall) = summary(&separate_runs);
    let mut report = json!({
        "input": args.input, "preset": args.preset, "qualities": args.qualities, "x264_preset": args.x264_preset,
        "repeats": args.repeats,
        "renditions": plan.renditions.iter().map(|r| json!({"name": r.name, "width": r.width, "height": r.height, "video_bit_rate": r.video_bit_rate})).collect::<Vec<_>>(),
        "engine": {"cpu_min": engine_cpu.0, "cpu_median": engine_cpu.1, "wall_min": engine_wall.0, "wall_median": engine_wall.1},
        "ffmpeg_split": {"cpu_min": split_cpu.0, "cpu_median": split_cpu.1, "wall_min": split_wall.0, "wall_median": split_wall.1},
        "ffmpeg_per_quality": {"cpu_min": separate_cpu.0, "cpu_median": separate_cpu.1, "wall_min": separate_wall.0, "wall_median": separate_wall.1},
        "ratio_engine_to_split_cpu_median": engine_cpu.1 / split_cpu.1,
        "ratio_engine_to_per_quality_cpu_median": engine_cpu.1 / separate_cpu.1,
        "ratio_engine_to_split_cpu_min": engine_cpu.0 / split_cpu.0,
        "ratio_engine_to_per_quality_cpu_min": engine_cpu.0 / separate_cpu.0,
    });
    if !baseline_runs.is_empty() {
        let (cpu, wall) = summary(&baseline_runs);
        report["baseline"] = json!({"cpu_min": cpu.0, "cpu_median": cpu.1, "wall_min": wall.0, "wall_median": wall.1});
        report["ratio_engine_to_baseline_cpu_median"] = json!(engine_cpu.1 / cpu.1);
        report["ratio_engine_to_baseline_cpu_min"] = json!(engine_cpu.0 / cpu.0);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{:<22} {:>10} {:>10} {:>10} {:>10}",
            "variant", "cpu min", "cpu med", "wall min", "wall med"
        );
        for (name, (cpu, wall)) in [
            ("engine", (engine_cpu, engine_wall)),
            ("ffmpeg split", (split_cpu, split_wall)),
            ("ffmpeg per quality", (separate_cpu, separate_wall)),
        ] {
            println!(
                "{name:<22} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                cpu.0, cpu.1, wall.0, wall.1
            );
        }
        println!(
            "engine / split (CPU, median): {:.3}   engine / per quality (CPU, median): {:.3}",
            engine_cpu.1 / split_cpu.1,
            engine_cpu.1 / separate_cpu.1
        );
        if let Some(ratio) = report["ratio_engine_to_baseline_cpu_median"].as_f64() {
            println!("engine / baseline engine (CPU, median): {ratio:.3}");
        }
    }
    Ok(())
}

/// One sandboxed engine run of the whole title, as the worker makes it, in `scratch`: its
/// CPU and wall seconds.
async fn run_engine(
    supervisor: &Supervisor,
    source: &Path,
    spec: &EngineSpec,
    settings: &EncoderSettings,
    scratch: &Path,
) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let done = engine_run(supervisor, source, spec, settings, scratch).await?;
    Ok(Sample { cpu: done.cpu_secs, wall: started.elapsed().as_secs_f64() })
}

/// One sandboxed engine run of the whole title, as the worker makes it: the source copied to
/// `scratch/source` (inside the job folder, as the worker does: the engine's sandbox reaches
/// nothing else), the outputs in `scratch/engine`.
pub(super) async fn engine_run(
    supervisor: &Supervisor,
    source: &Path,
    spec: &EngineSpec,
    settings: &EncoderSettings,
    scratch: &Path,
) -> anyhow::Result<tcoder::engine::EngineRun> {
    let input = scratch.join("source");
    std::fs::copy(source, &input)?;
    let job = EngineJob {
        input,
        output_dir: scratch.join("engine"),
        spec: spec.clone(),
        limits: Limits::default(),
        settings: settings.clone(),
        task: Default::default(),
        sidecars: Vec::new(),
        ladder: None,
    };
    supervisor
        .run(&job, scratch, None, CancellationToken::new())
        .await
        .map_err(|e| anyhow::anyhow!("engine ({}): {e}", supervisor.program.display()))
}

/// Sandbox limits for measuring: generous, so nothing but the work decides the figures.
pub(super) fn bench_limits() -> SandboxLimits {
    SandboxLimits {
        memory_bytes: 8 << 30,
        cpu_secs: 3600,
        file_size_bytes: 20 << 30,
        open_files: 256,
        wall_deadline: Duration::from_secs(3600),
        deadline_per_media_second: 100.0,
        deadline_base: Duration::from_secs(600),
    }
}

/// One ffmpeg command producing `renditions` from one decode (a `split` when there are several).
fn split_command(
    input: &Path,
    renditions: &[RenditionPlan],
    preset: Preset,
    settings: &EncoderSettings,
    dir: &Path,
) -> Vec<String> {
    let mut args: Vec<String> =
        ["-nostdin", "-v", "error", "-y", "-i"].iter().map(|s| (*s).to_owned()).collect();
    args.push(input.display().to_string());
    let labels: String = (0..renditions.len()).map(|i| format!("[s{i}]")).collect();
    let mut graph = format!("[0:v]split={}{labels}", renditions.len());
    for (i, r) in renditions.iter().enumerate() {
        graph.push_str(&format!(
            ";[s{i}]scale={}:{}:flags=bicubic,format=yuv420p[v{i}]",
            r.width, r.height
        ));
    }
    args.extend(["-filter_complex".to_owned(), graph]);
    let key_step = if preset == Preset::Hls { settings.segment_secs } else { 2.0 };
    for (i, r) in renditions.iter().enumerate() {
        args.extend(["-map".to_owned(), format!("[v{i}]"), "-map".to_owned(), "0:a?".to_owned()]);
        for (k, v) in [
            ("-c:v", "libx264".to_owned()),
            ("-preset", settings.x264_preset.clone()),
            ("-profile:v", "high".to_owned()),
            ("-crf", r.crf.to_string()),
            ("-maxrate", r.video_bit_rate.to_string()),
            ("-bufsize", r.vbv_buffer_bits().to_string()),
            ("-g", r.gop.to_string()),
            ("-keyint_min", r.gop.to_string()),
            ("-sc_threshold", "0".to_owned()),
            ("-forced-idr", "1".to_owned()),
            ("-force_key_frames", format!("expr:gte(t,n_forced*{key_step})")),
        ] {
            args.extend([k.to_owned(), v]);
        }
        if let Some(audio) = &r.audio {
            for (k, v) in [
                ("-c:a", "aac".to_owned()),
                ("-b:a", audio.bit_rate.to_string()),
                ("-ar", audio.sample_rate.to_string()),
                ("-ac", audio.channels.to_string()),
            ] {
                args.extend([k.to_owned(), v]);
            }
        }
        let out = dir.join(&r.name);
        let _ = std::fs::create_dir_all(&out);
        if preset == Preset::Hls {
            for (k, v) in [
                ("-f", "hls".to_owned()),
                ("-hls_time", settings.segment_secs.to_string()),
                ("-hls_playlist_type", "vod".to_owned()),
                ("-hls_segment_type", "fmp4".to_owned()),
                ("-hls_segment_filename", out.join("seg_%05d.m4s").display().to_string()),
            ] {
                args.extend([k.to_owned(), v]);
            }
            args.push(out.join("index.m3u8").display().to_string());
        } else {
            args.extend([
                "-movflags".to_owned(),
                "+faststart".to_owned(),
                out.join("out.mp4").display().to_string(),
            ]);
        }
    }
    args
}

/// Runs ffmpeg and returns its CPU (user + system, children included) and wall seconds.
fn ffmpeg(args: &[String]) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let child = Command::new("ffmpeg").args(args).spawn().context("run ffmpeg")?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter; waiting for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for (`child` is forgotten, never waited).
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    std::mem::forget(child);
    if reaped != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("ffmpeg failed: {}", args.join(" "));
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Sample {
        cpu: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        wall: started.elapsed().as_secs_f64(),
    })
}
