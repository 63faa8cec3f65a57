use std::path::Path;
use std::process::Command;

use tcoder::engine::{self, EncoderSettings, EngineJob, EngineSpec, Limits};
use tcoder::jobs::{AudioCodec, AutoLadder, OutputKind, Preset, Qualities, Quality, VideoCodec};
use testkit::media::{ClipSpec, clip};

pub(crate) fn spec(preset: Preset, qualities: Qualities, outputs: &[OutputKind]) -> EngineSpec {
    EngineSpec {
        preset,
        qualities,
        outputs: outputs.to_vec(),
        video_codec: VideoCodec::H264,
        audio_codec: AudioCodec::Aac,
    }
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

#[test]
fn hls_ladder_from_one_decode() {
    let source =
        clip(&ClipSpec { width: 640, height: 360, duration_ms: 3000, ..ClipSpec::default() });
    let out = tempfile::tempdir().unwrap();
    let job = job(
        &source,
        out.path(),
        spec(
            Preset::Hls,
            Qualities::Auto(AutoLadder::Auto),
            &[OutputKind::Hls, OutputKind::Thumbnails],
        ),
    );
    let report = engine::run(&job, &mut |_| {}).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    let master = std::fs::read_to_string(out.path().join("hls/master.m3u8")).unwrap();
    eprintln!("{master}");
    let probe = ffprobe(&out.path().join("hls/master.m3u8"));
    eprintln!("{probe}");
    assert!((duration(&probe) - 3.0).abs() <= 0.1);
    let _ = Quality::P360;
}
