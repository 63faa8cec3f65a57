//! The engine's quality measurement and per-title rates (docs/MEDIA.md, "Quality"), judged by
//! FFmpeg's own libvmaf filter on the files written.

use std::path::Path;

use tcoder::engine::quality::{
    fmp4_first_sample_bytes, measure_every, measure_windows, scored_in_window,
};
use tcoder::engine::{EngineError, ErrorCode, FloorAction, QualityFloor, QualityGoal};
use tcoder::jobs::{OutputKind, Preset, Qualities, Quality};
use testkit::media::{ClipSpec, clip, vmaf_per_frame};

use crate::engine::{job, spec};

fn source(pattern: &str, seconds: u32) -> std::path::PathBuf {
    clip(&ClipSpec {
        width: 640,
        height: 360,
        duration_ms: seconds * 1000,
        source: pattern.to_owned(),
        audio: false,
        ..ClipSpec::default()
    })
}

fn run(
    input: &Path,
    out: &Path,
    spec: tcoder::engine::EngineSpec,
) -> Result<tcoder::engine::EngineReport, EngineError> {
    tcoder_engine::run(&job(input, out, spec), &mut |_| {})
}

#[test]
fn each_rendition_reports_the_vmaf_ffmpeg_measures_on_its_file() {
    let input = source("testsrc2", 6);
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(
        Preset::WebOptimized,
        Qualities::List(vec![Quality::P360, Quality::P144]),
        &[OutputKind::Mp4],
    );
    spec.quality = QualityGoal::Fixed;
    let report = run(&input, dir.path(), spec).unwrap();
    assert_eq!(report.ladder, None, "fixed: no probe");
    for rendition in &report.renditions {
        let quality = rendition.quality.as_ref().expect("measured");
        assert_eq!(quality.metric, "vmaf");
        // A quarter second at 0, 2 and 4 s of this 6 s title, a few pictures of each scored
        // (a short title's measurement costs what a long one's does).
        let windows = measure_windows(6.0, 2.0);
        let every = measure_every(6.0, &windows);
        let fps = f64::from(ClipSpec::default().fps);
        assert!(every > 1);
        let scored: Vec<usize> = windows
            .iter()
            .flat_map(|&(start, end)| {
                let (first, end) = ((start * fps).ceil() as usize, (end * fps).ceil() as usize);
                scored_in_window(end - first, every).into_iter().map(move |i| first + i)
            })
            .collect();
        assert_eq!(quality.frames as usize, scored.len(), "{}", rendition.name);
        let file = dir.path().join(rendition.mp4.as_deref().unwrap());
        let all = vmaf_per_frame(&file, &input, (rendition.width, rendition.height));
        assert_eq!(all.len(), 150, "FFmpeg scores every picture of the 6 s at 25 fps");
        let mean = scored.iter().map(|&i| all[i]).sum::<f64>() / scored.len() as f64;
        assert!(
            (quality.mean - mean).abs() < 0.5,
            "{}: we report {quality:?}, FFmpeg's libvmaf measures {mean:.2}",
            rendition.name
        );
        assert!(quality.p5 <= quality.mean && quality.min <= quality.p5);
    }
}

/// Bytes of a rendition's HLS segments.
fn segment_bytes(report: &tcoder::engine::EngineReport, name: &str) -> u64 {
    let folder = format!("hls/{name}/");
    report.files.iter().filter(|f| f.path.starts_with(&folder)).map(|f| f.bytes).sum()
}

#[test]
fn the_probe_spends_fewer_bits_on_an_easy_title_and_no_fewer_on_a_hard_one() {
    let dir = tempfile::tempdir().unwrap();
    let encode = |pattern: &str, quality: QualityGoal| {
        let out = dir.path().join(format!("{pattern}-{quality}"));
        let mut spec = spec(
            Preset::Hls,
            Qualities::List(vec![Quality::P360, Quality::P144]),
            &[OutputKind::Hls],
        );
        spec.quality = quality;
        let report = run(&source(pattern, 8), &out, spec).unwrap();
        assert!(!out.join(".probe").exists(), "the probe's files are left behind");
        report
    };
    // Static colour bars: every setting looks the same, so the highest allowed is chosen.
    let (easy, fixed) =
        (encode("smptebars", QualityGoal::Standard), encode("smptebars", QualityGoal::Fixed));
    let ladder = easy.ladder.as_ref().expect("a per-title decision");
    assert_eq!((ladder.goal.as_str(), ladder.target), ("standard", 93.0));
    assert!(ladder.probe_cpu_secs > 0.0 && ladder.probe_media_secs > 0.0);
    for (rendition, before) in easy.renditions.iter().zip(&fixed.renditions) {
        let choice = ladder.rung(&rendition.name).unwrap();
        assert!(choice.crf > 23 && choice.kept, "{choice:?}");
        assert!(choice.reason.contains("target 93"), "{}", choice.reason);
        let (now, then) = (rendition.quality.as_ref().unwrap(), before.quality.as_ref().unwrap());
        assert!(now.mean >= ladder.target, "{}: {now:?}", rendition.name);
        assert!(now.mean > then.mean - 1.0, "{}: {now:?} against {then:?}", rendition.name);
        let (bytes, fixed_bytes) =
            (segment_bytes(&easy, &rendition.name), segment_bytes(&fixed, &rendition.name));
        assert!(bytes < fixed_bytes, "{}: {bytes} bytes, fixed {fixed_bytes}", rendition.name);
    }
    // A zoom into the Mandelbrot set: below the target at every setting the caps allow, so
    // no setting above the fixed one (and none below it that bought nothing).
    let hard = encode("mandelbrot", QualityGoal::Standard);
    let ladder = hard.ladder.as_ref().unwrap();
    for choice in &ladder.rungs {
        assert!(choice.crf <= 23, "{choice:?}");
        assert!(choice.expected_vmaf < 93.0, "{choice:?}");
    }
}

#[test]
fn the_keyframe_size_the_probe_reads_from_a_segment_is_what_ffprobe_reads() {
    // The probe counts a window's keyframe only as often as the title has one (`title_rate`),
    // reading its size from the window's fMP4 segment.
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(Preset::Hls, Qualities::List(vec![Quality::P144]), &[OutputKind::Hls]);
    spec.quality = QualityGoal::Fixed;
    run(&source("testsrc2", 3), dir.path(), spec).unwrap();
    let folder = dir.path().join("hls/144p");
    let segment = std::fs::read(folder.join("seg_00000.m4s")).unwrap();
    let ours = fmp4_first_sample_bytes(&segment).expect("a first sample");
    let joined = dir.path().join("joined.mp4");
    let init = std::fs::read(folder.join("init.mp4")).unwrap();
    std::fs::write(&joined, [init, segment.clone()].concat()).unwrap();
    let output = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=size,flags"])
        .args(["-of", "csv=p=0"])
        .arg(&joined)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    let first = text.lines().next().expect("a packet");
    let (size, flags) = first.split_once(',').unwrap();
    assert!(flags.starts_with('K'), "the first packet is a keyframe: {first}");
    assert_eq!(ours, size.parse::<u64>().unwrap());
    assert!(ours < segment.len() as u64 && text.lines().count() > 1, "{text}");
}

#[test]
fn a_rendition_below_the_quality_floor_fails_the_job_or_warns() {
    let input = source("mandelbrot", 3);
    let dir = tempfile::tempdir().unwrap();
    let floored = |action: FloorAction| {
        let mut spec =
            spec(Preset::WebOptimized, Qualities::List(vec![Quality::P144]), &[OutputKind::Mp4]);
        spec.quality = QualityGoal::Fixed;
        spec.quality_floor = Some(QualityFloor { vmaf: 99.5, action });
        run(&input, &dir.path().join(format!("{action:?}")), spec)
    };
    let error = floored(FloorAction::Fail).unwrap_err();
    assert_eq!(error.code, ErrorCode::QualityBelowFloor);
    assert!(error.message.contains("144p VMAF"), "{}", error.message);
    let report = floored(FloorAction::Warn).unwrap();
    assert!(
        report.media.warnings.iter().any(|w| w.contains("below the quality floor of VMAF 99.5")),
        "{:?}",
        report.media.warnings
    );
}
