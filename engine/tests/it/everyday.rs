//! Everyday files (`testkit::everyday`) through the engine, judged with ffprobe/ffmpeg as a
//! viewer would see them: upright, undistorted, progressive, the source's duration, A/V
//! aligned — for both the `hls` and `web-optimized` presets.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tcoder::engine::{EngineReport, SidecarFile};
use tcoder::jobs::{AutoLadder, OutputKind, Preset, Qualities};
use testkit::everyday::{self, Case, Expect};

use crate::engine::{ffprobe, job, spec};

/// What a viewer of the source sees, measured with ffprobe.
#[derive(Debug)]
struct Source {
    display: (f64, f64),
    /// First video packet to the end of the last one.
    video_secs: f64,
    audio: bool,
}

fn ratio(text: Option<&str>) -> Option<f64> {
    let (n, d) = text?.split_once(':')?;
    let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
    (n > 0.0 && d > 0.0).then_some(n / d)
}

fn rotation(stream: &Value) -> i64 {
    stream["side_data_list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["rotation"].as_i64())
        .next()
        .unwrap_or(0)
}

/// (start, end) of a stream's packets in seconds: end = last pts + its duration.
fn packet_span(path: &Path, selector: &str) -> Option<(f64, f64, f64)> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", selector])
        .args(["-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let packets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(',');
            let pts = parts.next()?.parse().ok()?;
            let duration = parts.next().and_then(|d| d.parse().ok()).unwrap_or(0.0);
            Some((pts, duration))
        })
        .collect();
    let start = packets.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let last = packets.iter().copied().max_by(|a, b| a.0.total_cmp(&b.0))?;
    Some((start, last.0 + last.1, last.1))
}

fn source(path: &Path) -> Source {
    let probe = ffprobe(path);
    let streams = probe["streams"].as_array().unwrap();
    let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    let (w, h) = (video["width"].as_f64().unwrap(), video["height"].as_f64().unwrap());
    let sar = ratio(video["sample_aspect_ratio"].as_str()).unwrap_or(1.0);
    let mut display = (w * sar, h);
    if rotation(video).rem_euclid(180) == 90 {
        display = (display.1, display.0);
    }
    let (start, end, _) = packet_span(path, "v:0").unwrap();
    // What a viewer hears: an audio stream with samples in the file.
    let audio_span = packet_span(path, "a:0");
    // Sound before the first picture plays over it, held.
    let frame = 1.0 / 25.0;
    let lead = tcoder::engine::audio_lead_secs(Some(start), audio_span.map(|a| a.0), frame);
    Source { display, video_secs: end - start + lead, audio: audio_span.is_some() }
}

/// Progressive according to ffmpeg's `idet` (multi-frame detection).
fn judged_progressive(path: &Path) -> Result<(), String> {
    let output = Command::new("ffmpeg")
        .args(["-v", "info", "-nostats", "-i"])
        .arg(path)
        .args(["-an", "-vf", "idet", "-f", "null", "-"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    let line = log.lines().find(|l| l.contains("Multi frame detection:")).ok_or("no idet")?;
    let count = |label: &str| -> u64 {
        line.split(label).nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
    };
    let (tff, bff, progressive) = (count("TFF:"), count("BFF:"), count("Progressive:"));
    if progressive > tff + bff { Ok(()) } else { Err(format!("{}: idet {line}", path.display())) }
}

/// One output (an MP4 or a rendition playlist, with its audio in `audio` when that is a
/// rendition of its own) as a viewer sees it.
fn check_output(path: &Path, audio: Option<&Path>, source: &Source) -> Result<(), String> {
    let name = path.display();
    let probe = ffprobe(path);
    let streams = probe["streams"].as_array().unwrap();
    let video = streams.iter().find(|s| s["codec_type"] == "video").ok_or("no video")?;
    let (w, h) = (video["width"].as_f64().unwrap(), video["height"].as_f64().unwrap());
    let (dw, dh) = source.display;
    if (w - h * dw / dh).abs() > 2.0 && (h - w * dh / dw).abs() > 2.0 {
        return Err(format!("{name}: {w}x{h} does not show {dw:.0}x{dh:.0}"));
    }
    if let Some(sar) = ratio(video["sample_aspect_ratio"].as_str())
        && (sar - 1.0).abs() > 1e-9
    {
        return Err(format!("{name}: SAR {sar}"));
    }
    if rotation(video) != 0 {
        return Err(format!("{name}: rotation left to apply"));
    }
    if video["pix_fmt"] != "yuv420p" || !matches!(video["profile"].as_str(), Some("Main" | "High"))
    {
        return Err(format!("{name}: {} {}", video["pix_fmt"], video["profile"]));
    }
    // Tagged, so every player shows the colours the same way (a 360p rendition of a 1080p
    // source is not guessed to be BT.601).
    for tag in ["color_primaries", "color_transfer", "color_space", "color_range"] {
        if !video[tag].as_str().is_some_and(|t| !matches!(t, "unknown" | "reserved")) {
            return Err(format!("{name}: no {tag} ({})", video[tag]));
        }
    }
    let (v_start, v_end, last) = packet_span(path, "v:0").ok_or("no video packets")?;
    if last <= 0.0 {
        return Err(format!("{name}: the last video sample has no duration"));
    }
    let frame = last.max(0.001);
    if ((v_end - v_start) - source.video_secs).abs() > frame + 1e-3 {
        return Err(format!(
            "{name}: video lasts {:.3} s, source video {:.3} s",
            v_end - v_start,
            source.video_secs
        ));
    }
    let audio = packet_span(audio.unwrap_or(path), "a:0");
    match (&audio, source.audio) {
        (Some((a_start, a_end, _)), true) => {
            let a_start = a_start.max(0.0);
            if (a_start - v_start).abs() > 0.05 {
                return Err(format!("{name}: audio starts at {a_start:.3}, video {v_start:.3}"));
            }
            if (a_end - v_end).abs() > 0.05 {
                return Err(format!("{name}: audio ends at {a_end:.3}, video {v_end:.3}"));
            }
        }
        (None, false) => {}
        (found, _) => {
            return Err(format!("{name}: audio {found:?}, source has audio: {}", source.audio));
        }
    }
    Ok(())
}

fn run_case(case: &Case, preset: Preset) -> Result<(), String> {
    let outputs = match preset {
        Preset::Hls => vec![OutputKind::Hls, OutputKind::Thumbnails],
        _ => vec![OutputKind::Mp4, OutputKind::Thumbnails],
    };
    let out = tempfile::tempdir().unwrap();
    let mut job =
        job(&case.path, out.path(), spec(preset, Qualities::Auto(AutoLadder::Auto), &outputs));
    // `ultrafast` turns the deblocking filter off; its block edges read as combing to `idet`.
    job.settings.x264_preset = "superfast".into();
    let result = tcoder_engine::run(&job, &mut |_| {});
    let (marker, interlaced) = match (case.expect, result) {
        (Expect::Refused(code), Err(error)) => {
            if error.code.as_str() != code {
                return Err(format!("refused with {error}, expected {code}"));
            }
            if error.message.contains(out.path().to_str().unwrap())
                || error.message.contains(case.path.to_str().unwrap())
            {
                return Err(format!("the error names a worker path: {error}"));
            }
            return Ok(());
        }
        (Expect::Refused(code), Ok(_)) => return Err(format!("completed, expected {code}")),
        (Expect::Plays { .. }, Err(error)) => return Err(format!("failed: {error}")),
        (Expect::Plays { marker, interlaced }, Ok(report)) => {
            check_report(&report, out.path(), case, preset)?;
            (marker, interlaced)
        }
    };
    let source = source(&case.path);
    let report_dir = out.path();
    let poster = report_dir.join("thumbs/poster.jpg");
    let poster_probe = ffprobe(&poster);
    let p = &poster_probe["streams"][0];
    let (pw, ph) = (p["width"].as_f64().unwrap(), p["height"].as_f64().unwrap());
    let (dw, dh) = source.display;
    if (pw - ph * dw / dh).abs() > 2.0 && (ph - pw * dh / dw).abs() > 2.0 {
        return Err(format!("poster {pw}x{ph} does not show {dw:.0}x{dh:.0}"));
    }
    if marker {
        everyday::marker_top_left(&poster)?;
    }
    let _ = interlaced;
    Ok(())
}

/// Every rendition of the report, each checked; the top one for uprightness and progressiveness.
fn check_report(
    report: &EngineReport,
    dir: &Path,
    case: &Case,
    preset: Preset,
) -> Result<(), String> {
    let source = source(&case.path);
    let Expect::Plays { marker, interlaced } = case.expect else { unreachable!() };
    let top = report.renditions.first().ok_or("no renditions")?;
    let short = f64::from(top.width.min(top.height));
    let want = source.display.0.min(source.display.1).min(1080.0);
    if short < want - 2.0 {
        return Err(format!(
            "top rung {}x{} below the source's {want:.0} lines",
            top.width, top.height
        ));
    }
    for rendition in &report.renditions {
        let path = match preset {
            Preset::Hls => rendition.hls.as_ref(),
            _ => rendition.mp4.as_ref(),
        }
        .ok_or("missing output")?;
        // Several audio tracks: renditions of their own, the default's played with the video.
        let audio = match preset {
            Preset::Hls => report.audio_tracks.first().and_then(|t| t.hls.as_ref()),
            _ => None,
        };
        check_output(&dir.join(path), audio.map(|a| dir.join(a)).as_deref(), &source)?;
    }
    let top_path = dir.join(match preset {
        Preset::Hls => top.hls.as_ref().unwrap(),
        _ => top.mp4.as_ref().unwrap(),
    });
    if marker {
        everyday::marker_top_left(&top_path)?;
    }
    if interlaced {
        judged_progressive(&top_path)?;
    }
    Ok(())
}

#[test]
fn the_generated_files_are_what_they_claim() {
    // The generator itself, judged by FFmpeg: markers are top-left once FFmpeg applies the
    // display matrix, interlaced sources are judged interlaced.
    for case in everyday::all() {
        if let Expect::Plays { marker: true, .. } = case.expect {
            everyday::marker_top_left(&case.path).unwrap();
        }
        if let Expect::Plays { interlaced: true, .. } = case.expect {
            assert!(judged_progressive(&case.path).is_err(), "{} is not interlaced", case.name);
        }
    }
    // The kinds that failed before, as FFmpeg reads them: PCM naming no channel layout, a
    // WebM that does not say how long it is, a file whose fonts alone pass the stream limit.
    for channels in [1, 2] {
        let probe = ffprobe(&everyday::dashcam_avi(channels));
        let audio = &probe["streams"][1];
        assert_eq!(audio["channels"], channels, "{probe}");
        assert!(audio["channel_layout"].as_str().is_none_or(|l| l == "unknown"), "{probe}");
    }
    let webm = ffprobe(&everyday::browser_recording());
    assert!(webm["format"]["duration"].is_null(), "a MediaRecorder WebM has no duration: {webm}");
    let fansub = ffprobe(&everyday::fansub_mkv());
    let streams = fansub["streams"].as_array().unwrap();
    let fonts = streams.iter().filter(|s| s["codec_type"] == "attachment").count();
    assert!(streams.len() > 16 && fonts == 24, "{} streams, {fonts} fonts", streams.len());
}

#[test]
fn everyday_files_come_out_upright_undistorted_progressive_and_whole() {
    let cases = everyday::all();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(case) = cases.get(i) else { break };
                    for preset in [Preset::Hls, Preset::WebOptimized] {
                        if let Err(error) = run_case(case, preset) {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{} ({preset:?}): {error}", case.name));
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len() * 2,
        failures.join("\n")
    );
}

#[test]
fn an_audio_track_stored_in_another_file_is_dropped_with_a_warning() {
    let source = everyday::external_audio();
    let probe = ffprobe(&source);
    assert!(
        probe["streams"].as_array().unwrap().iter().any(|s| s["codec_type"] == "audio"),
        "the file declares an audio track"
    );
    assert!(packet_span(&source, "a:0").is_none(), "FFmpeg reads no audio samples from it");
    let out = tempfile::tempdir().unwrap();
    let report = tcoder_engine::run(
        &job(
            &source,
            out.path(),
            spec(Preset::WebOptimized, Qualities::Auto(AutoLadder::Auto), &[OutputKind::Mp4]),
        ),
        &mut |_| {},
    )
    .unwrap();
    assert!(report.media.audio.is_none());
    assert_eq!(report.media.warnings.len(), 1, "{:?}", report.media.warnings);
    assert!(report.media.warnings[0].contains("another file"), "{:?}", report.media.warnings);
    let mp4 = out.path().join(report.renditions[0].mp4.as_ref().unwrap());
    assert!(packet_span(&mp4, "a:0").is_none(), "no empty or silent audio track in the output");
}

#[test]
fn the_default_preset_copies_upright_and_reports_what_it_copied() {
    let copy = |source: &Path| {
        let out = tempfile::tempdir().unwrap();
        let report = tcoder_engine::run(
            &job(
                source,
                out.path(),
                spec(Preset::Default, Qualities::List(vec![]), &[OutputKind::Mp4]),
            ),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(report.mode, tcoder::engine::Mode::Copy);
        (out, report)
    };
    let (out, report) = copy(&everyday::hevc_opus_mkv());
    let rendition = &report.renditions[0];
    assert_eq!(
        (rendition.video_codec, rendition.audio_codec),
        (tcoder::jobs::VideoCodec::Hevc, Some(tcoder::jobs::AudioCodec::Opus))
    );
    let probe = ffprobe(&out.path().join(rendition.mp4.as_ref().unwrap()));
    let codecs: Vec<&str> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap())
        .collect();
    assert_eq!(codecs, ["hevc", "opus"]);
    // Tagged as Apple's players require (the Matroska source has no tag; MP4's default is
    // `hev1`, which they refuse).
    assert_eq!(probe["streams"][0]["codec_tag_string"], "hvc1", "{probe}");
    assert!(rendition.video_bit_rate > 0, "{rendition:?}");

    // A phone's portrait video copied as it is keeps its display matrix: still upright.
    let (out, report) = copy(&everyday::portrait_phone());
    let rendition = &report.renditions[0];
    assert_eq!((rendition.width, rendition.height), (180, 320));
    everyday::marker_top_left(&out.path().join(rendition.mp4.as_ref().unwrap())).unwrap();
}

/// Video packets (frames) of `path` as ffprobe counts them (a playlist's segments together).
fn video_frames(path: &Path) -> u64 {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=pts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().filter(|l| !l.trim().is_empty()).count()
        as u64
}

/// A screen recording that only emits frames when something changes, and a recording with a
/// 10 s pause: every frame of the source is in every output, each shown until the next one
/// (the last for one frame), so the outputs last as long as the source — in HLS and in MP4.
/// Before, the frames were timed on the average rate (most of them collided and were dropped)
/// and each took the gap *before* it, so the MP4 of the paused one claimed 23 s for 16.
#[test]
fn sparse_frame_rates_keep_every_frame_and_the_source_s_timing() {
    for source in [everyday::sparse_screen_recording(), everyday::recording_with_pause()] {
        let frames = video_frames(&source);
        let (start, end, _) = packet_span(&source, "v:0").unwrap();
        let source_secs = end - start;
        for (preset, output) in
            [(Preset::Hls, OutputKind::Hls), (Preset::WebOptimized, OutputKind::Mp4)]
        {
            let out = tempfile::tempdir().unwrap();
            let spec = spec(preset, Qualities::List(vec![tcoder::jobs::Quality::P144]), &[output]);
            let report = tcoder_engine::run(&job(&source, out.path(), spec), &mut |_| {}).unwrap();
            let rendition = &report.renditions[0];
            let path = out.path().join(match output {
                OutputKind::Hls => rendition.hls.as_ref().unwrap(),
                _ => rendition.mp4.as_ref().unwrap(),
            });
            let name = format!("{} ({preset:?})", source.display());
            assert_eq!(video_frames(&path), frames, "{name}: frames kept");
            let (start, end, _) = packet_span(&path, "v:0").unwrap();
            assert!(
                ((end - start) - source_secs).abs() < 0.05,
                "{name}: {:.3} s of video for {source_secs:.3}",
                end - start
            );
            if output == OutputKind::Mp4 {
                let duration: f64 =
                    ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
                assert!(
                    (duration - source_secs).abs() < 0.1,
                    "{name}: the MP4 claims {duration} s"
                );
            }
        }
    }
}

/// Mean saturation (`signalstats` SATAVG, 8-bit scale) of the pictures ffmpeg decodes from
/// `input` through `filter` (e.g. a scale to the size of what it is compared with).
fn saturation(input: &[&str], filter: &str) -> f64 {
    let mut args: Vec<&str> = vec!["-v", "info", "-nostats"];
    args.extend_from_slice(input);
    let filter = format!("{filter},signalstats,metadata=print:key=lavfi.signalstats.SATAVG");
    args.extend_from_slice(&["-vf", &filter, "-an", "-f", "null", "-"]);
    let output = Command::new("ffmpeg").args(&args).output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    let values: Vec<f64> = log
        .lines()
        .filter_map(|l| l.split("lavfi.signalstats.SATAVG=").nth(1))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    assert!(!values.is_empty(), "no signalstats from {input:?}: {log}");
    values.iter().sum::<f64>() / values.len() as f64
}

/// SSIM (All) of `output` against `source` tone-mapped by the FFmpeg CLI with the operator its
/// documentation gives (zscale reading the pictures' own tags, the Möbius curve), scaled to the
/// output's size.
fn ssim_against_cli_tone_mapping(output: &Path, source: &Path, size: (u64, u64)) -> f64 {
    let graph = format!(
        "[1:v]zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,\
         tonemap=tonemap=mobius:desat=0,zscale=t=bt709:m=bt709:r=tv,format=yuv420p,\
         scale={}:{}[reference];[0:v][reference]ssim",
        size.0, size.1
    );
    let run = Command::new("ffmpeg")
        .args(["-v", "info", "-nostats", "-i"])
        .arg(output)
        .arg("-i")
        .arg(source)
        .args(["-lavfi", &graph, "-f", "null", "-"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&run.stderr);
    log.lines()
        .filter_map(|l| l.split(" All:").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .next()
        .unwrap_or_else(|| panic!("no SSIM: {log}"))
}

/// Colour tags of the first video stream, as ffprobe names them.
fn colour_tags(path: &Path) -> [String; 4] {
    let probe = ffprobe(path);
    let video = probe["streams"].as_array().unwrap().iter().find(|s| s["codec_type"] == "video");
    let video = video.unwrap();
    ["color_primaries", "color_transfer", "color_space", "color_range"]
        .map(|tag| video[tag].as_str().unwrap_or("none").to_owned())
}

/// HDR phone videos (HDR10 PQ and an iPhone's HLG) come out as SDR BT.709 a person sees with
/// its colours: tagged BT.709, as saturated as the SDR picture the HDR file was made from
/// (washed-out PQ/HLG code values shown as BT.709 were a quarter of it), and the same picture
/// as the FFmpeg CLI's own tone mapping — in HLS and in MP4, poster included.
#[test]
fn hdr_sources_are_tone_mapped_to_tagged_sdr() {
    let original = everyday::hdr_original();
    let original: Vec<&str> = original.iter().map(String::as_str).collect();
    for transfer in [everyday::Transfer::Pq, everyday::Transfer::Hlg] {
        let source = everyday::hdr(transfer);
        let source_tags = colour_tags(&source);
        assert_eq!(
            source_tags[1],
            if transfer == everyday::Transfer::Pq { "smpte2084" } else { "arib-std-b67" }
        );
        for (preset, output) in
            [(Preset::Hls, OutputKind::Hls), (Preset::WebOptimized, OutputKind::Mp4)]
        {
            let out = tempfile::tempdir().unwrap();
            let spec = spec(
                preset,
                Qualities::List(vec![tcoder::jobs::Quality::P360]),
                &[output, OutputKind::Thumbnails],
            );
            let report = tcoder_engine::run(&job(&source, out.path(), spec), &mut |_| {}).unwrap();
            assert_eq!(
                report.media.video.colour.dynamic_range(),
                match transfer {
                    everyday::Transfer::Pq => tcoder::engine::DynamicRange::Pq,
                    everyday::Transfer::Hlg => tcoder::engine::DynamicRange::Hlg,
                }
            );
            let rendition = &report.renditions[0];
            assert_eq!(rendition.dynamic_range, tcoder::engine::DynamicRange::Sdr);
            let path = out.path().join(match output {
                OutputKind::Hls => rendition.hls.as_ref().unwrap(),
                _ => rendition.mp4.as_ref().unwrap(),
            });
            let name = format!("{transfer:?} ({preset:?})");
            assert_eq!(colour_tags(&path), ["bt709", "bt709", "bt709", "tv"], "{name}");
            let size = (u64::from(rendition.width), u64::from(rendition.height));
            let scale = format!("scale={}:{}", size.0, size.1);
            let wanted = saturation(&original, &scale);
            let got = saturation(&["-i", path.to_str().unwrap()], "null");
            let washed_out =
                saturation(&["-i", source.to_str().unwrap()], &format!("{scale},format=yuv420p"));
            assert!(
                got > 0.6 * wanted && washed_out < 0.5 * wanted,
                "{name}: saturation {got:.1}, the SDR original {wanted:.1}, untouched HDR {washed_out:.1}"
            );
            let ssim = ssim_against_cli_tone_mapping(&path, &source, size);
            assert!(ssim > 0.9, "{name}: SSIM {ssim} against the CLI's tone mapping");
            let poster = out.path().join("thumbs/poster.jpg");
            let poster_saturation = saturation(&["-i", poster.to_str().unwrap()], "null");
            assert!(
                poster_saturation > 0.6 * wanted,
                "{name}: poster saturation {poster_saturation:.1} of {wanted:.1}"
            );
            if output == OutputKind::Hls {
                let master = std::fs::read_to_string(out.path().join("hls/master.m3u8")).unwrap();
                assert!(master.contains("VIDEO-RANGE=SDR"), "{master}");
            }
        }
    }
}

/// `hdr: keep` with HEVC: 10-bit Main 10 renditions with the source's PQ transfer, BT.2020
/// primaries and matrix, and its mastering display and content light levels in the bitstream;
/// the master playlist says `VIDEO-RANGE=PQ` and a Main 10 codec; the poster JPEG is still
/// tone-mapped SDR.
#[test]
fn hdr_is_kept_in_ten_bit_hevc_when_asked() {
    let source = everyday::hdr(everyday::Transfer::Pq);
    let out = tempfile::tempdir().unwrap();
    let mut spec = spec(
        Preset::Hls,
        Qualities::List(vec![tcoder::jobs::Quality::P360]),
        &[OutputKind::Hls, OutputKind::Mp4, OutputKind::Thumbnails],
    );
    spec.video_codec = tcoder::jobs::VideoCodec::Hevc;
    spec.hdr = tcoder::jobs::HdrMode::Keep;
    let report = tcoder_engine::run(&job(&source, out.path(), spec), &mut |_| {}).unwrap();
    let rendition = &report.renditions[0];
    assert_eq!(rendition.dynamic_range, tcoder::engine::DynamicRange::Pq);
    for path in [rendition.hls.as_ref().unwrap(), rendition.mp4.as_ref().unwrap()] {
        let path = out.path().join(path);
        assert_eq!(colour_tags(&path), ["bt2020", "smpte2084", "bt2020nc", "tv"], "{path:?}");
        let probe = ffprobe(&path);
        assert_eq!(probe["streams"][0]["pix_fmt"], "yuv420p10le");
        assert_eq!(probe["streams"][0]["profile"], "Main 10");
        let frames = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1"])
            .args(["-show_frames", "-show_entries", "frame_side_data", "-of", "json"])
            .arg(&path)
            .output()
            .unwrap();
        let frames: Value = serde_json::from_slice(&frames.stdout).unwrap();
        let side_data =
            frames["frames"][0]["side_data_list"].as_array().cloned().unwrap_or_default();
        let mastering = side_data
            .iter()
            .find(|d| d["side_data_type"] == "Mastering display metadata")
            .unwrap_or_else(|| panic!("{path:?}: no mastering display: {frames}"));
        assert_eq!(mastering["red_x"], "34000/50000");
        assert_eq!(mastering["max_luminance"], "10000000/10000");
        let light = side_data
            .iter()
            .find(|d| d["side_data_type"] == "Content light level metadata")
            .unwrap_or_else(|| panic!("{path:?}: no content light level: {frames}"));
        assert_eq!(
            (light["max_content"].as_u64().unwrap(), light["max_average"].as_u64().unwrap()),
            (u64::from(everyday::HDR10_MAX_CLL.0), u64::from(everyday::HDR10_MAX_CLL.1))
        );
    }
    let master = std::fs::read_to_string(out.path().join("hls/master.m3u8")).unwrap();
    assert!(master.contains("VIDEO-RANGE=PQ") && master.contains("hvc1.2.4."), "{master}");
    let original = everyday::hdr_original();
    let original: Vec<&str> = original.iter().map(String::as_str).collect();
    let wanted = saturation(&original, "null");
    let poster = out.path().join("thumbs/poster.jpg");
    let got = saturation(&["-i", poster.to_str().unwrap()], "null");
    assert!(got > 0.6 * wanted, "poster saturation {got:.1} of the SDR original's {wanted:.1}");
}

/// The dominant pitch (Hz) of the first audio stream of `path`, from zero crossings of 0.5 s
/// of decoded mono samples: which language a player would be playing.
fn pitch(path: &Path) -> f64 {
    pitch_at(path, 0.5)
}

/// As [`pitch`], of the half second from `from` (seconds of the output's timeline).
fn pitch_at(path: &Path, from: f64) -> f64 {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:a:0", "-ss", &from.to_string(), "-t", "0.5", "-ac", "1", "-ar", "48000"])
        .args(["-f", "s16le", "-"])
        .output()
        .unwrap();
    let samples: Vec<i16> =
        output.stdout.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    assert!(samples.len() > 20_000, "{}: {} samples", path.display(), samples.len());
    let crossings = samples.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    crossings as f64 / 2.0 / (samples.len() as f64 / 48_000.0)
}

/// A film with two audio languages keeps both as HLS audio renditions — named and tagged for
/// a player's menu (the default, English, first), the French one's hostile title made harmless
/// — each carrying its own track; MP4s carry the default. The same through a split title
/// (chunks, the audio item, the stitch).
#[test]
fn audio_languages_become_hls_audio_renditions() {
    let source = everyday::two_languages();
    let check = |dir: &Path, report: &EngineReport, what: &str| {
        let names: Vec<(&str, Option<&str>, bool)> = report
            .audio_tracks
            .iter()
            .map(|t| (t.name.as_str(), t.language.as_deref(), t.default))
            .collect();
        assert_eq!(
            names,
            [("English", Some("en"), true), ("Français VF #EXT-X-ENDLIST", Some("fr"), false)],
            "{what}"
        );
        let master = std::fs::read_to_string(dir.join("hls/master.m3u8")).unwrap();
        let media: Vec<&str> = master.lines().filter(|l| l.starts_with("#EXT-X-MEDIA:")).collect();
        assert_eq!(
            media,
            [
                "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"English\",LANGUAGE=\"en\",DEFAULT=YES,AUTOSELECT=YES,URI=\"audio/index.m3u8\"",
                "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"Français VF #EXT-X-ENDLIST\",LANGUAGE=\"fr\",DEFAULT=NO,AUTOSELECT=YES,URI=\"audio-1/index.m3u8\"",
            ],
            "{what}: {master}"
        );
        assert!(master.lines().all(|l| !l.starts_with("#EXT-X-ENDLIST")), "{what}: {master}");
        assert_eq!(master.matches("AUDIO=\"audio\"").count(), report.renditions.len());
        for (track, hz) in report.audio_tracks.iter().zip([440.0, 880.0]) {
            let playlist = dir.join(track.hls.as_ref().unwrap());
            let heard = pitch(&playlist);
            assert!((heard - hz).abs() < 20.0, "{what}: {} plays {heard} Hz", track.name);
        }
        for rendition in &report.renditions {
            let variant = dir.join(rendition.hls.as_ref().unwrap());
            assert!(packet_span(&variant, "a:0").is_none(), "{what}: audio muxed in the video");
        }
    };
    let out = tempfile::tempdir().unwrap();
    let spec = spec(
        Preset::Hls,
        Qualities::List(vec![tcoder::jobs::Quality::P144]),
        &[OutputKind::Hls, OutputKind::Mp4],
    );
    let whole = tcoder_engine::run(&job(&source, out.path(), spec.clone()), &mut |_| {}).unwrap();
    check(out.path(), &whole, "whole");
    let mp4 = out.path().join(whole.renditions[0].mp4.as_ref().unwrap());
    let audio_streams = ffprobe(&mp4)["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["codec_type"] == "audio")
        .count();
    assert_eq!(audio_streams, 1, "the MP4 carries the default track");
    assert!((pitch(&mp4) - 440.0).abs() < 20.0, "the MP4 plays English");
    // The default track's audio starts and ends with the video, as a muxed one does.
    check_output(
        &out.path().join(whole.renditions[0].hls.as_ref().unwrap()),
        Some(&out.path().join("hls/audio/index.m3u8")),
        &self::source(&source),
    )
    .unwrap();

    // Split: two chunks, two audio ranges (both tracks), the stitch.
    let (stitched, split) = split_encode(&source, spec);
    check(stitched.path(), &split, "split");
}

/// `source` encoded as a split title: two chunks (at 1 s), the audio in the same two ranges,
/// the stitch; the stitched outputs and their report.
fn split_encode(
    source: &Path,
    spec: tcoder::engine::EngineSpec,
) -> (tempfile::TempDir, EngineReport) {
    split_encode_with(source, spec, Vec::new())
}

/// As [`split_encode`], the stitch given the job's caption files.
fn split_encode_with(
    source: &Path,
    spec: tcoder::engine::EngineSpec,
    sidecars: Vec<SidecarFile>,
) -> (tempfile::TempDir, EngineReport) {
    let items = tempfile::tempdir().unwrap();
    let layout =
        tcoder::engine::StitchParts { dir: items.path().to_path_buf(), chunks: 2, audio: 2 };
    let chunks = [
        tcoder::engine::Chunk {
            start_secs: 0.0,
            end_secs: Some(1.0),
            first_segment: 0,
            ladder: None,
        },
        tcoder::engine::Chunk { start_secs: 1.0, end_secs: None, first_segment: 1, ladder: None },
    ];
    for (k, chunk) in (0..).zip(&chunks) {
        let mut chunk_job = job(source, &layout.chunk_dir(k), spec.clone());
        chunk_job.task = tcoder::engine::Task::Chunk(chunk.clone());
        tcoder_engine::run(&chunk_job, &mut |_| {}).unwrap();
        // The audio in the same two ranges.
        let mut audio_job = job(source, &layout.audio_dir(k), spec.clone());
        audio_job.task = tcoder::engine::Task::Audio(chunk.clone());
        tcoder_engine::run(&audio_job, &mut |_| {}).unwrap();
    }
    let stitched = tempfile::tempdir().unwrap();
    let mut stitch_job = job(source, stitched.path(), spec);
    stitch_job.task = tcoder::engine::Task::Stitch(layout);
    stitch_job.sidecars = sidecars;
    let report = tcoder_engine::run(&stitch_job, &mut |_| {}).unwrap();
    (stitched, report)
}

/// Cues of a WebVTT file as FFmpeg's own WebVTT demuxer reads them: (start, end) seconds.
fn vtt_cues(path: &Path) -> Vec<(f64, f64)> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-f", "webvtt", "-show_entries", "packet=pts_time,duration_time"])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (start, duration) = l.split_once(',')?;
            let start: f64 = start.parse().ok()?;
            Some((start, start + duration.parse::<f64>().ok()?))
        })
        .collect()
}

/// Subtitled films: the text tracks become WebVTT captions — a file each, and HLS subtitle
/// renditions named, tagged and flagged for players' menus, segmented as the video is —
/// with cue text a hostile file cannot break out of; MP4 timed text too; and a split title.
#[test]
fn subtitles_become_webvtt_captions() {
    let source = everyday::subtitled();
    let check = |dir: &Path, report: &EngineReport, what: &str| {
        let tracks: Vec<(&str, Option<&str>, bool, bool)> = report
            .captions
            .iter()
            .map(|c| (c.name.as_str(), c.language.as_deref(), c.default, c.forced))
            .collect();
        assert_eq!(
            tracks,
            [("English", Some("en"), true, false), ("French", Some("fr"), false, true)],
            "{what}"
        );
        let master = std::fs::read_to_string(dir.join("hls/master.m3u8")).unwrap();
        let media: Vec<&str> =
            master.lines().filter(|l| l.starts_with("#EXT-X-MEDIA:TYPE=SUBTITLES")).collect();
        assert_eq!(
            media,
            [
                "#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"English\",LANGUAGE=\"en\",DEFAULT=YES,AUTOSELECT=YES,FORCED=NO,URI=\"subtitles-0/index.m3u8\"",
                "#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"French\",LANGUAGE=\"fr\",DEFAULT=NO,AUTOSELECT=YES,FORCED=YES,URI=\"subtitles-1/index.m3u8\"",
            ],
            "{what}: {master}"
        );
        assert_eq!(master.matches("SUBTITLES=\"subs\"").count(), report.renditions.len(), "{what}");
        let english = dir.join(&report.captions[0].vtt);
        let text = std::fs::read_to_string(&english).unwrap();
        assert!(text.contains("Hello &amp; world"), "{what}: {text}");
        let cues = vtt_cues(&english);
        // Only the cues we wrote: none injected by the hostile one, none past the title.
        assert_eq!(cues.len(), text.matches(" --> ").count(), "{what}: {text}");
        assert!(cues.iter().all(|(_, end)| *end <= 3.0 + 1e-3), "{what}: {cues:?}");
        assert!(
            cues.iter().any(|(s, e)| (s - 0.5).abs() < 0.01 && (e - 0.9).abs() < 0.01),
            "{what}: {cues:?}"
        );
        let french = std::fs::read_to_string(dir.join(&report.captions[1].vtt)).unwrap();
        assert!(french.contains("\nBonjour\nle monde\n"), "{what}: {french}");
        // The HLS rendition: one WebVTT segment per video segment, a cue over a boundary in
        // both segments it spans.
        let video = dir.join(report.renditions[0].hls.as_ref().unwrap());
        let subs = dir.join(report.captions[0].hls.as_ref().unwrap());
        let count = |p: &Path| std::fs::read_to_string(p).unwrap().matches("#EXTINF:").count();
        assert_eq!(count(&subs), count(&video), "{what}");
        let segment = |n: usize| {
            std::fs::read_to_string(subs.with_file_name(format!("seg_{n:05}.vtt"))).unwrap()
        };
        assert!(segment(0).contains("across") && segment(1).contains("across"), "{what}");
        assert!(segment(0).contains("X-TIMESTAMP-MAP=MPEGTS:"), "{what}");
    };
    let spec =
        spec(Preset::Hls, Qualities::List(vec![tcoder::jobs::Quality::P144]), &[OutputKind::Hls]);
    let out = tempfile::tempdir().unwrap();
    let whole = tcoder_engine::run(&job(&source, out.path(), spec.clone()), &mut |_| {}).unwrap();
    check(out.path(), &whole, "whole");
    let (stitched, split) = split_encode(&source, spec);
    check(stitched.path(), &split, "split");

    // MP4 timed text, through an MP4 job: the WebVTT file a player's <track> loads.
    let out = tempfile::tempdir().unwrap();
    let spec = spec_mp4();
    let report =
        tcoder_engine::run(&job(&everyday::subtitled_mp4(), out.path(), spec), &mut |_| {})
            .unwrap();
    assert_eq!(report.captions.len(), 1);
    assert!(report.captions[0].hls.is_none());
    assert!(report.media.warnings.is_empty(), "{:?}", report.media.warnings);
    let vtt = out.path().join(&report.captions[0].vtt);
    assert!(std::fs::read_to_string(&vtt).unwrap().contains("Hello &amp; world"));
    assert!(!vtt_cues(&vtt).is_empty());
}

/// Caption files named by the job (an SRT from a subtitling tool — BOM, CRLF, italics — and a
/// WebVTT file) join the source's own tracks: listed after them in the master playlist, the
/// job's default the only default, names kept apart; each also an MP4 timed-text track that
/// FFmpeg reads back with the same text and times. A file that is not captions, and one the
/// worker could not fetch, are left out with a warning — the title still plays.
#[test]
fn caption_files_named_by_the_job_become_tracks_in_hls_and_mp4() {
    let source = everyday::subtitled();
    let files = tempfile::tempdir().unwrap();
    let srt = files.path().join("caption-0");
    std::fs::write(
        &srt,
        "\u{feff}1\r\n00:00:00,200 --> 00:00:01,000\r\n<i>Sidecar</i> one\r\n\r\n\
         2\r\n00:00:01,500 --> 00:00:02,500\r\nSecond & last\r\n\r\n",
    )
    .unwrap();
    let vtt = files.path().join("caption-1");
    std::fs::write(&vtt, "WEBVTT\n\n00:00:00.500 --> 00:00:01.250\nVTT <b>cue</b>\n").unwrap();
    let binary = files.path().join("caption-2");
    std::fs::copy(&source, &binary).unwrap();
    let sidecars = vec![
        SidecarFile::Fetched(srt),
        SidecarFile::Fetched(vtt),
        SidecarFile::Fetched(binary),
        SidecarFile::Unavailable("caption 3 (es) is no longer in the bucket".into()),
    ];
    let label = |language: &str, name: &str, default: bool| tcoder::engine::plan::CaptionLabel {
        language: tcoder::engine::TrackLanguage::parse(language).unwrap(),
        name: tcoder::engine::TrackName::clean(name).unwrap(),
        default,
        forced: false,
    };
    let mut spec = spec(
        Preset::Hls,
        Qualities::List(vec![tcoder::jobs::Quality::P144]),
        &[OutputKind::Hls, OutputKind::Mp4],
    );
    spec.captions = vec![
        label("en", "English", true),
        label("de", "German", false),
        label("fr", "Broken", false),
        label("es", "Gone", false),
    ];
    spec.mp4_captions = true;
    let check = |dir: &Path, report: &EngineReport, what: &str| {
        let tracks: Vec<(&str, bool)> =
            report.captions.iter().map(|c| (c.name.as_str(), c.default)).collect();
        // The source's English track keeps its name; the job's file gets "English (2)".
        assert_eq!(
            tracks,
            [("English", false), ("French", false), ("English (2)", true), ("German", false)],
            "{what}"
        );
        let warnings = &report.media.warnings;
        assert_eq!(warnings.len(), 2, "{what}: {warnings:?}");
        assert!(
            warnings[0].contains("Broken") && warnings[0].contains("SRT or WebVTT"),
            "{warnings:?}"
        );
        assert!(warnings[1].contains("no longer in the bucket"), "{warnings:?}");
        let master = std::fs::read_to_string(dir.join("hls/master.m3u8")).unwrap();
        assert!(
            master.contains("NAME=\"English (2)\",LANGUAGE=\"en\",DEFAULT=YES,AUTOSELECT=YES,FORCED=NO,URI=\"captions-0/index.m3u8\""),
            "{what}: {master}"
        );
        assert!(master.contains("URI=\"captions-1/index.m3u8\""), "{what}: {master}");
        let defaults =
            master.lines().filter(|l| l.contains("TYPE=SUBTITLES") && l.contains("DEFAULT=YES"));
        assert_eq!(defaults.count(), 1, "{what}: {master}");
        let sidecar = dir.join(&report.captions[2].vtt);
        let text = std::fs::read_to_string(&sidecar).unwrap();
        assert!(
            text.contains("\nSidecar one\n") && text.contains("Second &amp; last"),
            "{what}: {text}"
        );
        let cues = vtt_cues(&sidecar);
        assert!(
            (cues[0].0 - 0.2).abs() < 0.01 && (cues[0].1 - 1.0).abs() < 0.01,
            "{what}: {cues:?}"
        );
        let german = std::fs::read_to_string(dir.join(&report.captions[3].vtt)).unwrap();
        assert!(german.contains("\nVTT cue\n"), "{what}: {german}");
        // MP4 timed text, read back by FFmpeg: the job's SRT, its text and times.
        let mp4 = dir.join(report.renditions[0].mp4.as_ref().unwrap());
        let probe = ffprobe(&mp4);
        let texts: Vec<&Value> = probe["streams"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["codec_type"] == "subtitle")
            .collect();
        assert_eq!(texts.len(), 4, "{what}: {probe}");
        assert!(texts.iter().all(|s| s["codec_name"] == "mov_text"), "{what}: {probe}");
        assert_eq!(texts[2]["tags"]["language"], "eng", "{what}: {probe}");
        assert_eq!(texts[2]["disposition"]["default"], 1, "{what}: {probe}");
        let srt = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&mp4)
            .args(["-map", "0:s:2", "-f", "srt", "-"])
            .output()
            .unwrap();
        // FFmpeg's decoder writes the sample description's font as markup: only text counts.
        let srt = String::from_utf8_lossy(&srt.stdout)
            .replace("<font face=\"Serif\" size=\"18\">", "")
            .replace("</font>", "");
        assert!(
            srt.contains("00:00:00,200 --> 00:00:01,000\nSidecar one")
                && srt.contains("00:00:01,500 --> 00:00:02,500\nSecond & last"),
            "{what}: {srt}"
        );
        // Still fast-starting: the index before the media.
        let bytes = std::fs::read(&mp4).unwrap();
        let at = |atom: &[u8]| bytes.windows(4).position(|w| w == atom).unwrap();
        assert!(at(b"moov") < at(b"mdat"), "{what}: not faststart");
        // Still the title it was: video and sound, three seconds.
        let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
        assert!((duration - 3.0).abs() < 0.1, "{what}: {duration}");
        assert!(probe["streams"].as_array().unwrap().iter().any(|s| s["codec_type"] == "audio"));
    };
    let out = tempfile::tempdir().unwrap();
    let mut whole = job(&source, out.path(), spec.clone());
    whole.sidecars = sidecars.clone();
    let report = tcoder_engine::run(&whole, &mut |_| {}).unwrap();
    check(out.path(), &report, "whole");
    let (stitched, split) = split_encode_with(&source, spec, sidecars);
    check(stitched.path(), &split, "split");
}

/// A copied title with captions in the MP4: adding the timed-text track keeps what the copy
/// kept — the display matrix of a portrait phone video (still upright) and the `hvc1` tag of
/// HEVC (Apple's players refuse `hev1`) — and writes the WebVTT file beside it.
#[test]
fn captions_added_to_a_copy_keep_its_orientation_and_tags() {
    let files = tempfile::tempdir().unwrap();
    let srt = files.path().join("caption-0");
    std::fs::write(&srt, "1\n00:00:00,100 --> 00:00:00,900\nUpright\n").unwrap();
    let mut spec = spec(Preset::Default, Qualities::List(vec![]), &[OutputKind::Mp4]);
    spec.captions = vec![tcoder::engine::plan::CaptionLabel {
        language: tcoder::engine::TrackLanguage::parse("en").unwrap(),
        name: tcoder::engine::TrackName::clean("English").unwrap(),
        default: false,
        forced: false,
    }];
    spec.mp4_captions = true;
    for source in [everyday::portrait_phone(), everyday::hevc_opus_mkv()] {
        let out = tempfile::tempdir().unwrap();
        let mut copy = job(&source, out.path(), spec.clone());
        copy.sidecars = vec![SidecarFile::Fetched(srt.clone())];
        let report = tcoder_engine::run(&copy, &mut |_| {}).unwrap();
        assert_eq!(report.mode, tcoder::engine::Mode::Copy);
        assert_eq!(report.captions.len(), 1, "{source:?}");
        let vtt = std::fs::read_to_string(out.path().join(&report.captions[0].vtt)).unwrap();
        assert!(vtt.contains("\nUpright\n"), "{vtt}");
        let mp4 = out.path().join(report.renditions[0].mp4.as_ref().unwrap());
        let probe = ffprobe(&mp4);
        let streams = probe["streams"].as_array().unwrap();
        assert_eq!(streams.last().unwrap()["codec_name"], "mov_text", "{probe}");
        if report.renditions[0].video_codec == tcoder::jobs::VideoCodec::Hevc {
            assert_eq!(streams[0]["codec_tag_string"], "hvc1", "{probe}");
        } else {
            everyday::marker_top_left(&mp4).unwrap();
        }
    }
}

fn spec_mp4() -> tcoder::engine::EngineSpec {
    spec(
        Preset::WebOptimized,
        Qualities::List(vec![tcoder::jobs::Quality::P144]),
        &[OutputKind::Mp4],
    )
}

/// A camera that records sound a second before the picture: the outputs start with the sound
/// and show the first picture over it, held (repeated at the frame rate: a second of 25 fps
/// adds 25 frames, nothing else is added or lost), and last as long as the sound and picture
/// together — in HLS and MP4.
#[test]
fn sound_before_the_first_picture_is_kept_with_the_picture_held() {
    let source = everyday::late_picture();
    let frames = video_frames(&source);
    for (preset, output) in
        [(Preset::Hls, OutputKind::Hls), (Preset::WebOptimized, OutputKind::Mp4)]
    {
        let out = tempfile::tempdir().unwrap();
        let spec = spec(preset, Qualities::List(vec![tcoder::jobs::Quality::P144]), &[output]);
        let report = tcoder_engine::run(&job(&source, out.path(), spec), &mut |_| {}).unwrap();
        assert!((report.media.audio_lead_secs - 1.0).abs() < 0.01, "{:?}", report.media);
        let rendition = &report.renditions[0];
        let path = out.path().join(match output {
            OutputKind::Hls => rendition.hls.as_ref().unwrap(),
            _ => rendition.mp4.as_ref().unwrap(),
        });
        let name = format!("{preset:?}");
        let (v_start, v_end, _) = packet_span(&path, "v:0").unwrap();
        let (a_start, a_end, _) = packet_span(&path, "a:0").unwrap();
        assert!(
            (a_start.max(0.0) - v_start).abs() < 0.05,
            "{name}: audio {a_start}, video {v_start}"
        );
        assert!(((v_end - v_start) - 3.0).abs() < 0.05, "{name}: {v_start}..{v_end}");
        assert!((a_end - v_end).abs() < 0.05, "{name}: audio ends {a_end}, video {v_end}");
        assert_eq!(video_frames(&path), frames + 25, "{name}: the first picture held 1 s");
        // The tone plays from the start, over the held picture.
        let heard = pitch_at(&path, v_start + 0.2);
        assert!((heard - 440.0).abs() < 20.0, "{name}: {heard} Hz in the first second");
    }
}

/// Picture subtitles (a Blu-ray's PGS) cannot become WebVTT: the title plays without them and
/// the result says so.
#[test]
fn picture_subtitles_are_left_out_with_a_warning() {
    let source = everyday::bluray_pgs();
    assert_eq!(ffprobe(&source)["streams"][2]["codec_name"], "hdmv_pgs_subtitle");
    let out = tempfile::tempdir().unwrap();
    let report = tcoder_engine::run(&job(&source, out.path(), spec_mp4()), &mut |_| {}).unwrap();
    assert!(report.captions.is_empty());
    assert_eq!(report.media.warnings.len(), 1, "{:?}", report.media.warnings);
    assert!(
        report.media.warnings[0].contains("hdmv_pgs_subtitle")
            && report.media.warnings[0].contains("picture"),
        "{:?}",
        report.media.warnings
    );
}
