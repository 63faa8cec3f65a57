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

/// The split comparison encodes the title whole and in chunks (stitched), reports both, and
/// checks with FFmpeg's tools that the stitched title is the whole one (frames, segments,
/// PSNR against the source, one timeline, faststart MP4s).
#[test]
fn compare_engine_split_checks_the_stitched_title_against_the_whole_encode() {
    let clip = testkit::media::clip(&testkit::media::ClipSpec {
        width: 320,
        height: 240,
        duration_ms: 16_000,
        audio: true,
        source: "testsrc".to_owned(),
        ..Default::default()
    });
    let output = Command::new(env!("CARGO_BIN_EXE_tcoder"))
        .args(["compare-engine", "--input", clip.to_str().unwrap(), "--preset", "hls"])
        .args(["--qualities", "360p,144p", "--repeats", "1", "--x264-preset", "ultrafast"])
        // Chunks of 8 s, the default tolerance (0.1 dB). `testsrc` at 240p stays under its
        // cap; at 144p it is held at the cap, where each chunk starts with a full buffer.
        .args(["--split-chunk-secs", "8"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["chunks"], 2, "{report}");
    let equivalence = &report["equivalence"];
    assert_eq!(equivalence["ok"], true, "{equivalence}");
    let renditions = equivalence["renditions"].as_array().unwrap();
    assert_eq!(renditions.len(), 2, "{equivalence}");
    for rendition in renditions {
        assert_eq!(rendition["frames"]["split"], 16 * 25, "{rendition}");
        let psnr = &rendition["psnr_db"];
        let (split, whole) = (psnr["split"].as_f64().unwrap(), psnr["whole"].as_f64().unwrap());
        assert!(whole > 25.0, "{rendition}");
        if rendition["rendition"] == "240p" {
            // Under the cap, the chunks make the whole encode's picture, either way (at the
            // cap the check allows a better picture for at most a buffer's bytes a chunk).
            assert!((split - whole).abs() <= 0.1, "{rendition}");
        }
        assert_eq!(rendition["mp4"]["faststart"], true, "{rendition}");
    }
    assert!(report["ratio_split_to_whole_cpu_median"].as_f64().unwrap() > 0.0, "{report}");
}
