use std::process::Command;

/// The comparison command runs the engine and both FFmpeg variants on the same clip and
/// reports their CPU time and ratios.
#[test]
fn compare_engine_reports_cpu_of_engine_and_ffmpeg_variants() {
    let clip = testkit::media::clip(&testkit::media::ClipSpec {
        width: 640,
        height: 360,
        duration_ms: 2000,
        ..Default::default()
    });
    let output = Command::new(env!("CARGO_BIN_EXE_tcoder"))
        .args([
            "compare-engine",
            "--input",
            clip.to_str().unwrap(),
            "--qualities",
            "360p,144p",
            "--repeats",
            "1",
            "--x264-preset",
            "ultrafast",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for variant in ["engine", "ffmpeg_split", "ffmpeg_per_quality"] {
        assert!(report[variant]["cpu_median"].as_f64().unwrap() > 0.0, "{report}");
    }
    assert_eq!(report["renditions"].as_array().unwrap().len(), 2);
    let ratio = report["ratio_engine_to_split_cpu_median"].as_f64().unwrap();
    assert!(ratio.is_finite() && ratio > 0.0);
}
