use std::path::Path;
use std::process::Command;

use tcoder::engine::{EncoderSettings, EngineJob, EngineSpec, Limits};
use tcoder::jobs::{AudioCodec, AutoLadder, OutputKind, Preset, Qualities, Quality, VideoCodec};
use testkit::media::{ClipSpec, clip};

pub(crate) fn spec(preset: Preset, qualities: Qualities, outputs: &[OutputKind]) -> EngineSpec {
    EngineSpec::new(preset, qualities, outputs)
}

pub(crate) fn job(input: &Path, out: &Path, spec: EngineSpec) -> EngineJob {
    EngineJob {
        input: input.to_path_buf(),
        output_dir: out.to_path_buf(),
        spec,
        limits: Limits::default(),
        settings: EncoderSettings {
            x264_preset: "ultrafast".into(),
            segment_secs: 1.0,
            threads: 0,
        },
        task: Default::default(),
        sidecars: Vec::new(),
        ladder: None,
    }
}

/// `ffprobe` JSON of a file.
pub(crate) fn ffprobe(path: &Path) -> serde_json::Value {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-show_format", "-show_streams", "-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn duration(probe: &serde_json::Value) -> f64 {
    probe["format"]["duration"].as_str().unwrap().parse().unwrap()
}

fn source(audio: bool) -> std::path::PathBuf {
    clip(&ClipSpec { width: 640, height: 360, duration_ms: 3000, audio, ..ClipSpec::default() })
}

fn stream<'a>(probe: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    probe["streams"].as_array().unwrap().iter().find(|s| s["codec_type"] == kind)
}

/// Asserts an MP4 rendition: codec, size, duration ±0.1 s, audio iff expected, index first.
fn assert_mp4(path: &Path, codec: &str, size: (u64, u64), audio: Option<&str>) {
    let probe = ffprobe(path);
    let video = stream(&probe, "video").expect("video stream");
    assert_eq!(video["codec_name"], codec, "{}", path.display());
    assert_eq!(
        (video["width"].as_u64().unwrap(), video["height"].as_u64().unwrap()),
        size,
        "{}",
        path.display()
    );
    assert!(
        (duration(&probe) - 3.0).abs() <= 0.1,
        "{}: duration {}",
        path.display(),
        duration(&probe)
    );
    assert_eq!(
        stream(&probe, "audio").map(|a| a["codec_name"].as_str().unwrap()),
        audio,
        "{}",
        path.display()
    );
    let bytes = std::fs::read(path).unwrap();
    let find = |tag: &[u8]| bytes.windows(4).position(|w| w == tag).unwrap();
    assert!(find(b"moov") < find(b"mdat"), "{} is not faststart", path.display());
}

fn run(spec: EngineSpec, input: &Path) -> (tempfile::TempDir, tcoder::engine::EngineReport) {
    let out = tempfile::tempdir().unwrap();
    let report = tcoder_engine::run(&job(input, out.path(), spec), &mut |_| {}).unwrap();
    (out, report)
}

#[test]
fn default_preset_copies_the_streams_into_a_faststart_mp4() {
    let (out, report) =
        run(spec(Preset::Default, Qualities::List(vec![]), &[OutputKind::Mp4]), &source(true));
    assert_eq!(report.mode, tcoder::engine::Mode::Copy);
    assert_eq!(report.frames, 75);
    assert_mp4(&out.path().join("mp4/source.mp4"), "h264", (640, 360), Some("aac"));
}

#[test]
fn default_preset_with_one_quality_transcodes_it() {
    let (out, report) = run(
        spec(Preset::Default, Qualities::List(vec![Quality::P144]), &[OutputKind::Mp4]),
        &source(true),
    );
    assert_eq!(report.renditions.len(), 1);
    assert_mp4(&out.path().join("mp4/144p.mp4"), "h264", (256, 144), Some("aac"));
}

#[test]
fn web_optimized_makes_one_h264_aac_mp4_per_quality_and_thumbnails() {
    let (out, report) = run(
        spec(
            Preset::WebOptimized,
            Qualities::Auto(AutoLadder::Auto),
            &[OutputKind::Mp4, OutputKind::Thumbnails, OutputKind::Preview],
        ),
        &source(true),
    );
    let names: Vec<&str> = report.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["360p", "144p"]);
    assert_mp4(&out.path().join("mp4/360p.mp4"), "h264", (640, 360), Some("aac"));
    assert_mp4(&out.path().join("mp4/144p.mp4"), "h264", (256, 144), Some("aac"));
    let poster = ffprobe(&out.path().join("thumbs/poster.jpg"));
    assert_eq!(stream(&poster, "video").unwrap()["codec_name"], "mjpeg");
    let sprite = ffprobe(&out.path().join("thumbs/storyboard.jpg"));
    assert_eq!(stream(&sprite, "video").unwrap()["width"], 160 * 3);
    let vtt = std::fs::read_to_string(out.path().join("thumbs/storyboard.vtt")).unwrap();
    assert!(vtt.starts_with("WEBVTT"));
    assert_eq!(vtt.matches("storyboard.jpg#xywh=").count(), 3, "{vtt}");
    assert!(
        vtt.contains("00:00:01.000 --> 00:00:02.000\nstoryboard.jpg#xywh=160,0,160,90"),
        "{vtt}"
    );
    // The animated preview, read by Pillow: the whole 3 s title (it is too short to start at
    // the poster), 10 pictures a second, 320 wide, looping forever, moving.
    let preview =
        testkit::contracts::animated_webp(&out.path().join("thumbs/preview.webp")).unwrap();
    assert_eq!(
        (&preview["format"], &preview["animated"], &preview["loop"]),
        (&serde_json::json!("WEBP"), &serde_json::json!(true), &serde_json::json!(0)),
        "{preview}"
    );
    assert_eq!((preview["width"].as_u64(), preview["height"].as_u64()), (Some(320), Some(180)));
    assert_eq!(preview["frames"], 30, "{preview}");
    assert!(preview["durations"].as_array().unwrap().iter().all(|d| d == 100), "{preview}");
    assert!(preview["changes"].as_u64().unwrap() > 10, "{preview}");
    assert!(report.thumbnails.unwrap().contains(&"thumbs/preview.webp".to_owned()));
}

#[test]
fn a_silent_source_gives_silent_renditions() {
    let (out, _) = run(
        spec(Preset::WebOptimized, Qualities::List(vec![Quality::P360]), &[OutputKind::Mp4]),
        &source(false),
    );
    assert_mp4(&out.path().join("mp4/360p.mp4"), "h264", (640, 360), None);
}

#[test]
fn hevc_av1_vp9_and_opus_are_selectable() {
    for (video, audio, codec_name, audio_name) in [
        (VideoCodec::Hevc, AudioCodec::Aac, "hevc", "aac"),
        (VideoCodec::Av1, AudioCodec::Opus, "av1", "opus"),
        (VideoCodec::Vp9, AudioCodec::Opus, "vp9", "opus"),
    ] {
        let mut spec =
            spec(Preset::Default, Qualities::List(vec![Quality::P144]), &[OutputKind::Mp4]);
        spec.video_codec = video;
        spec.audio_codec = audio;
        let (out, _) = run(spec, &source(true));
        assert_mp4(&out.path().join("mp4/144p.mp4"), codec_name, (256, 144), Some(audio_name));
        // Every encoder writes the colour tags: the source's, completed as players assume
        // them for its size (BT.601 for a 360-line picture that says nothing).
        let probe = ffprobe(&out.path().join("mp4/144p.mp4"));
        let picture = stream(&probe, "video").unwrap();
        let tags = ["color_primaries", "color_transfer", "color_space", "color_range"]
            .map(|tag| picture[tag].as_str().unwrap_or("none"));
        assert_eq!(tags, ["smpte170m", "smpte170m", "smpte170m", "tv"], "{codec_name}");
        if video == VideoCodec::Hevc {
            let probe = ffprobe(&out.path().join("mp4/144p.mp4"));
            assert_eq!(
                stream(&probe, "video").unwrap()["codec_tag_string"],
                "hvc1",
                "Apple players need hvc1"
            );
        }
    }
}

/// Presentation times of the keyframes of a playlist's video.
fn keyframes(playlist: &Path) -> Vec<String> {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=key_frame,pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(playlist)
        .output()
        .unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('1'))
        .map(|l| l.split(',').nth(1).unwrap().to_owned())
        .collect()
}

#[test]
fn hls_is_a_real_abr_set_with_aligned_keyframes() {
    let (out, report) = run(
        spec(Preset::Hls, Qualities::Auto(AutoLadder::Auto), &[OutputKind::Hls]),
        &source(true),
    );
    let hls = out.path().join("hls");
    let master = std::fs::read_to_string(hls.join("master.m3u8")).unwrap();
    assert!(master.starts_with("#EXTM3U"));
    let variants: Vec<&str> =
        master.lines().filter(|l| l.starts_with("#EXT-X-STREAM-INF:")).collect();
    assert_eq!(variants.len(), report.renditions.len());
    for (line, rendition) in variants.iter().zip(&report.renditions) {
        for attribute in [
            "BANDWIDTH=",
            "AVERAGE-BANDWIDTH=",
            "CODECS=\"avc1.",
            ",mp4a.40.2\"",
            "FRAME-RATE=25.000",
        ] {
            assert!(line.contains(attribute), "{line} lacks {attribute}");
        }
        assert!(
            line.contains(&format!("RESOLUTION={}x{}", rendition.width, rendition.height)),
            "{line}"
        );
        let value = |name: &str| -> u64 {
            line.split(name).nth(1).unwrap().split(',').next().unwrap().parse().unwrap()
        };
        assert!(value(",AVERAGE-BANDWIDTH=") <= value(":BANDWIDTH="));
        let playlist =
            std::fs::read_to_string(hls.join(&rendition.name).join("index.m3u8")).unwrap();
        assert!(
            playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD") && playlist.contains("#EXT-X-ENDLIST"),
            "{playlist}"
        );
        assert!(playlist.contains("#EXT-X-MAP:URI=\"init.mp4\""), "{playlist}");
        let durations: Vec<f64> = playlist
            .lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .map(|d| d.trim_end_matches(',').parse().unwrap())
            .collect();
        assert_eq!(durations.len(), 3, "{playlist}");
        assert!(
            durations.iter().all(|d| (d - 1.0).abs() <= 0.1),
            "segments of about the 1 s target: {durations:?}"
        );
    }
    // ffprobe opens the master playlist and reads every variant.
    let probe = ffprobe(&hls.join("master.m3u8"));
    assert_eq!(probe["format"]["nb_programs"].as_u64().unwrap() as usize, report.renditions.len());
    assert!((duration(&probe) - 3.0).abs() <= 0.1);
    // Every rendition has its keyframes at the same times, so players can switch at any segment.
    let first = keyframes(&hls.join(&report.renditions[0].name).join("index.m3u8"));
    assert!(first.len() >= 3, "{first:?}");
    for rendition in &report.renditions[1..] {
        assert_eq!(keyframes(&hls.join(&rendition.name).join("index.m3u8")), first);
    }
}

#[test]
fn progress_is_reported_with_frames_percent_and_rates() {
    let out = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    tcoder_engine::run(
        &job(
            &source(true),
            out.path(),
            spec(Preset::Hls, Qualities::List(vec![Quality::P144]), &[OutputKind::Hls]),
        ),
        &mut |p| seen.push(p.clone()),
    )
    .unwrap();
    let first = seen.first().expect("at least one progress report");
    assert!(
        first.frames >= 1
            && (0.0..=100.0).contains(&first.percent)
            && first.fps > 0.0
            && first.speed >= 0.0,
        "{first:?}"
    );
}

/// Integrated loudness (LUFS) of the audio of `path`, measured by the FFmpeg CLI's `ebur128`.
fn integrated_loudness(path: &Path) -> f64 {
    let output = Command::new("ffmpeg")
        .args(["-v", "info", "-nostats", "-i"])
        .arg(path)
        .args(["-vn", "-af", "ebur128", "-f", "null", "-"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    // The summary at the end: "Integrated loudness:\n    I:  -23.0 LUFS".
    let summary = log.rsplit("Integrated loudness:").next().unwrap();
    summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("I:"))
        .and_then(|v| v.trim().trim_end_matches("LUFS").trim().parse().ok())
        .unwrap_or_else(|| panic!("no integrated loudness in {log}"))
}

/// `normalize_audio`: a quiet recording comes out at the target as FFmpeg's own meter measures
/// it, in HLS and in MP4 (and from the `default` preset, which transcodes instead of copying
/// when asked to normalise); the result says what was measured before and after.
#[test]
fn loudness_is_normalised_to_the_target() {
    let source = testkit::everyday::quiet_recording();
    let before = integrated_loudness(&source);
    assert!(before < -35.0, "the source is quiet: {before} LUFS");
    for (preset, output, target) in [
        (Preset::Hls, OutputKind::Hls, -16),
        (Preset::WebOptimized, OutputKind::Mp4, -23),
        (Preset::Default, OutputKind::Mp4, -23),
    ] {
        let qualities = match preset {
            Preset::Default => Qualities::List(vec![]),
            _ => Qualities::List(vec![Quality::P144]),
        };
        let mut spec = spec(preset, qualities, &[output]);
        spec.loudness_target = Some(target);
        let (out, report) = run(spec, &source);
        let loudness = report.loudness.unwrap_or_else(|| panic!("{preset:?}: no loudness report"));
        let target = f64::from(target);
        assert!((loudness.before.integrated_lufs - before).abs() < 0.5, "{preset:?}: {loudness:?}");
        assert!((loudness.gain_db - (target - before)).abs() < 0.5, "{preset:?}: {loudness:?}");
        assert!((loudness.after.integrated_lufs - target).abs() < 0.5, "{preset:?}: {loudness:?}");
        let rendition = &report.renditions[0];
        let path = out.path().join(match output {
            OutputKind::Hls => rendition.hls.as_ref().unwrap(),
            _ => rendition.mp4.as_ref().unwrap(),
        });
        let measured = integrated_loudness(&path);
        assert!((measured - target).abs() < 1.0, "{preset:?}: {measured} LUFS for {target}");
    }
}
