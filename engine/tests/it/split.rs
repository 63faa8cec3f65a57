//! Split jobs: the title's video encoded in chunks (each its own engine run, as on separate
//! machines) and stitched must be the whole-title encode's HLS: the same frames at the same
//! times, the same keyframes and segments, one continuous timeline.

use std::path::Path;
use std::process::Command;

use tcoder::engine::plan::SplitRule;
use tcoder::engine::{Chunk, Part, StitchParts, Task};
use tcoder::jobs::{OutputKind, Preset, Qualities, Quality};
use testkit::media::{ClipSpec, clip};

use crate::engine::{ffprobe, job, spec};

/// (pts, duration, keyframe) of every video packet of a playlist, as ffprobe reads them.
fn packets(playlist: &Path) -> Vec<(f64, f64, bool)> {
    packets_of(playlist, "v:0")
}

/// As [`packets`], of the stream `selector` (`v:0`, `a:0`).
fn packets_of(playlist: &Path, selector: &str) -> Vec<(f64, f64, bool)> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", selector])
        .args(["-show_entries", "packet=pts_time,duration_time,flags", "-of", "csv=p=0"])
        .arg(playlist)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let pts = fields[0].parse().unwrap_or_else(|_| panic!("{line}"));
            // Some demuxers leave an audio packet's duration unknown (N/A).
            (pts, fields[1].parse().unwrap_or(0.0), fields[2].starts_with('K'))
        })
        .collect()
}

/// The EXTINF durations of a media playlist.
fn segment_durations(playlist: &Path) -> Vec<String> {
    std::fs::read_to_string(playlist)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|d| d.trim_end_matches(',').to_owned())
        .collect()
}

#[test]
fn chunks_encoded_apart_and_stitched_are_the_whole_titles_hls_and_mp4() {
    let source = clip(&ClipSpec {
        width: 640,
        height: 360,
        duration_ms: 9000,
        audio: true,
        // Source keyframes every 1.4 s, never on a chunk's start: each chunk seeks to the one
        // before its start and decodes the frames in between without showing them.
        keyframe_interval: Some(35),
        ..ClipSpec::default()
    });
    let mut spec = spec(
        Preset::Hls,
        Qualities::List(vec![Quality::P144, Quality::P360]),
        &[OutputKind::Hls, OutputKind::Mp4, OutputKind::Thumbnails, OutputKind::Preview],
    );
    // Loudness normalised: the audio item measures and normalises the whole title's audio.
    spec.loudness_target = Some(-16);
    // A preset with B-frames (production's kind): the video's decode times lead its pictures.
    let job = |input: &Path, out: &Path, spec: tcoder::engine::EngineSpec| {
        let mut job = job(input, out, spec);
        job.settings.x264_preset = "veryfast".into();
        job
    };
    let whole = tempfile::tempdir().unwrap();
    let whole_report =
        tcoder_engine::run(&job(&source, whole.path(), spec.clone()), &mut |_| {}).unwrap();

    // The probe item plans without encoding; the worker cuts the title from its report: three
    // chunks of three 1 s segments, the last running to the end.
    let mut probe_job = job(&source, &whole.path().join("probe"), spec.clone());
    probe_job.task = Task::Probe;
    let probe = tcoder_engine::run(&probe_job, &mut |_| {}).unwrap();
    assert!(probe.files.is_empty());
    let unmeasured = |report: &tcoder::engine::EngineReport| -> Vec<_> {
        report
            .renditions
            .iter()
            .map(|r| tcoder::engine::RenditionReport { quality: None, ..r.clone() })
            .collect()
    };
    assert_eq!(unmeasured(&probe), unmeasured(&whole_report));
    // One per-title decision, the same whether the title is encoded whole or split.
    let decision = |report: &tcoder::engine::EngineReport| {
        report
            .ladder
            .clone()
            .map(|ladder| tcoder::engine::LadderReport { probe_cpu_secs: 0.0, ..ladder })
    };
    assert!(probe.ladder.is_some());
    assert_eq!(decision(&probe), decision(&whole_report));
    let rule = SplitRule {
        segment_secs: 1.0,
        first_chunk_secs: 3.0,
        chunk_secs: 3.0,
        split_min_secs: 4.0,
    };
    let planned = tcoder::engine::plan::split_parts(&probe, &rule, 60.0, true);
    let parts: Vec<Chunk> = planned.iter().filter_map(|p| p.chunk().cloned()).collect();
    assert_eq!(
        parts,
        [
            Chunk { start_secs: 0.0, end_secs: Some(3.0), first_segment: 0, ladder: None },
            Chunk { start_secs: 3.0, end_secs: Some(6.0), first_segment: 3, ladder: None },
            Chunk { start_secs: 6.0, end_secs: None, first_segment: 6, ladder: None },
        ]
    );
    // Loudness normalisation: the audio is one part, the whole title.
    assert_eq!(planned[3..], [Part::Audio(Chunk::default())]);
    // Each item's outputs where the worker puts them for the stitch: `parts/<k>`,
    // `parts/audio/0`.
    let items = tempfile::tempdir().unwrap();
    let layout = StitchParts { dir: items.path().to_path_buf(), chunks: 3, audio: 1 };
    for (k, chunk) in (0..).zip(&parts) {
        let mut chunk_job = job(&source, &layout.chunk_dir(k), spec.clone());
        // As the coordinator stores them: each chunk with the title's decision.
        chunk_job.task = Task::Chunk(Chunk { ladder: probe.ladder.clone(), ..chunk.clone() });
        let report = tcoder_engine::run(&chunk_job, &mut |_| {}).unwrap();
        assert!(report.renditions.iter().all(|r| r.audio_codec.is_none() && r.mp4.is_none()));
    }
    // The audio, once for the whole title.
    let mut audio_job = job(&source, &layout.audio_dir(0), spec.clone());
    audio_job.task = Task::Audio(Chunk::default());
    let report = tcoder_engine::run(&audio_job, &mut |_| {}).unwrap();
    assert!(report.files.iter().any(|f| f.path == "hls/audio/index.m3u8"), "{:?}", report.files);

    // The stitch item: the title's HLS set (segments aside), MP4s and thumbnails, no re-encode.
    let stitched = tempfile::tempdir().unwrap();
    let mut stitch_job = job(&source, stitched.path(), spec.clone());
    stitch_job.task = Task::Stitch(layout.clone());
    stitch_job.ladder = probe.ladder.clone();
    let report = tcoder_engine::run(&stitch_job, &mut |_| {}).unwrap();
    let mut written: Vec<&str> = report
        .files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| !p.ends_with(".m4s") && !p.starts_with("thumbs/frames/"))
        .collect();
    written.sort_unstable();
    assert_eq!(
        written,
        [
            "hls/144p/index.m3u8",
            "hls/144p/init.mp4",
            "hls/360p/index.m3u8",
            "hls/360p/init.mp4",
            "hls/audio/index.m3u8",
            "hls/audio/init.mp4",
            "hls/master.m3u8",
            "mp4/144p.mp4",
            "mp4/360p.mp4",
            "thumbs/frames.json",
            "thumbs/poster.jpg",
            "thumbs/preview.webp",
            "thumbs/storyboard.jpg",
            "thumbs/storyboard.vtt",
        ]
    );
    // The preview runs from 0.9 s to 3.9 s, across the first chunk's end: assembled from two
    // chunks' pictures, it is the whole encode's, byte for byte.
    let preview = |root: &Path| std::fs::read(root.join("thumbs/preview.webp")).unwrap();
    assert!(preview(stitched.path()) == preview(whole.path()), "the previews differ");
    // The stills, one per storyboard tile, as many and as indexed as the whole encode's.
    let index = |root: &Path| std::fs::read_to_string(root.join("thumbs/frames.json")).unwrap();
    assert_eq!(index(stitched.path()), index(whole.path()));
    let stills = |root: &Path| std::fs::read_dir(root.join("thumbs/frames")).unwrap().count();
    assert_eq!(stills(stitched.path()), stills(whole.path()));
    assert!(stills(whole.path()) > 1);
    assert_eq!(report.hls_master.as_deref(), Some("hls/master.m3u8"));
    // The chunks' scores are pooled over the same frames, in the same windows, as the whole
    // encode's, and the split title looks no worse (VMAF's noise: 1 point, as the ladder
    // benchmark counts it). It may look better: each chunk's encoder starts afresh with its
    // VBV buffer nearly full, so a rung its cap holds gets up to a buffer more bits a chunk.
    assert_eq!(unmeasured(&report), unmeasured(&whole_report));
    for (split, whole) in report.renditions.iter().zip(&whole_report.renditions) {
        let name = &split.name;
        let (split, whole) = (split.quality.as_ref().unwrap(), whole.quality.as_ref().unwrap());
        assert_eq!(split.frames, whole.frames);
        assert!(split.mean > whole.mean - 1.0, "{name}: split {split:?}, whole {whole:?}");
    }
    assert_eq!(report.ladder, probe.ladder);
    let (split_loudness, whole_loudness) =
        (report.loudness.unwrap(), whole_report.loudness.unwrap());
    assert_eq!(split_loudness.before, whole_loudness.before);
    assert!(
        (split_loudness.after.integrated_lufs - whole_loudness.after.integrated_lufs).abs() < 0.2
            && (split_loudness.after.integrated_lufs + 16.0).abs() < 1.0,
        "split {split_loudness:?}, whole {whole_loudness:?}"
    );

    for rendition in ["144p", "360p"] {
        let playlist = |root: &Path| root.join("hls").join(rendition).join("index.m3u8");
        let (expected, got) =
            (packets(&playlist(whole.path())), packets(&playlist(stitched.path())));
        assert_eq!(got.len(), expected.len(), "{rendition}: frame count");
        // Times from each output's first frame: the whole encode's muxed AAC shifts its video
        // by the encoder's priming (21 ms); a split title's audio is a rendition of its own.
        let (zero_want, zero_have) = (expected[0].0, got[0].0);
        for (n, (want, have)) in expected.iter().zip(&got).enumerate() {
            assert!(
                (want.0 - zero_want - (have.0 - zero_have)).abs() < 1e-3
                    && (want.1 - have.1).abs() < 1e-3
                    && want.2 == have.2,
                "{rendition} frame {n}: whole {want:?}, stitched {have:?}"
            );
        }
        // One continuous timeline: each picture starts where the one before it ends.
        let mut shown = got.clone();
        shown.sort_by(|a, b| a.0.total_cmp(&b.0));
        for pair in shown.windows(2) {
            assert!((pair[0].0 + pair[0].1 - pair[1].0).abs() < 1e-3, "{rendition}: {pair:?}");
        }
        assert_eq!(
            segment_durations(&playlist(stitched.path())),
            segment_durations(&playlist(whole.path())),
            "{rendition}: segment boundaries"
        );
    }
    // The MP4 renditions, remuxed from the stitched segments and the audio, are the whole
    // encode's: the same frames and times, the audio along, the index first.
    for mp4 in ["mp4/144p.mp4", "mp4/360p.mp4"] {
        let (whole_mp4, split_mp4) = (whole.path().join(mp4), stitched.path().join(mp4));
        let (expected, got) = (packets(&whole_mp4), packets(&split_mp4));
        assert_eq!(got.len(), expected.len(), "{mp4}: frame count");
        for (n, (want, have)) in expected.iter().zip(&got).enumerate() {
            assert!(
                (want.0 - have.0).abs() < 1e-3 && want.2 == have.2,
                "{mp4} frame {n}: whole {want:?}, stitched {have:?}"
            );
        }
        let (whole_probe, split_probe) = (ffprobe(&whole_mp4), ffprobe(&split_mp4));
        let seconds = |probe: &serde_json::Value| -> f64 {
            probe["format"]["duration"].as_str().unwrap().parse().unwrap()
        };
        assert!((seconds(&whole_probe) - seconds(&split_probe)).abs() <= 0.04, "{mp4} duration");
        let codecs = |probe: &serde_json::Value| -> Vec<String> {
            let streams = probe["streams"].as_array().unwrap();
            streams.iter().map(|s| s["codec_name"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(codecs(&split_probe), ["h264", "aac"], "{mp4}");
        let bytes = std::fs::read(&split_mp4).unwrap();
        let find = |tag: &[u8]| bytes.windows(4).position(|w| w == tag).unwrap();
        assert!(find(b"moov") < find(b"mdat"), "{mp4} is not faststart");
    }

    // The thumbnails, each chunk keeping the tiles due in its range (and the poster where it
    // falls), assemble into the whole encode's: the same frames, so the same JPEG bytes.
    let thumbs = report.thumbnails.unwrap();
    for file in &thumbs {
        let (want, got) = (
            std::fs::read(whole.path().join(file)).unwrap(),
            std::fs::read(stitched.path().join(file)).unwrap(),
        );
        assert!(
            want == got,
            "{file} differs from the whole encode's ({} vs {} bytes)",
            want.len(),
            got.len()
        );
    }

    // Players open the stitched master and every variant in it, each with the audio.
    let master = stitched.path().join("hls/master.m3u8");
    let text = std::fs::read_to_string(&master).unwrap();
    assert!(text.contains("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\""), "{text}");
    assert_eq!(text.matches(",mp4a.40.2\",").count(), 2, "{text}");
    assert_eq!(text.matches("AUDIO=\"audio\"").count(), 2, "{text}");
    let probe = ffprobe(&master);
    assert_eq!(probe["format"]["nb_programs"].as_u64(), Some(2));
    let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - 9.0).abs() <= 0.04, "duration {duration}");
    // The audio lasts as long as the video and starts with it, as in the whole encode.
    let first_and_end = |playlist: &Path| {
        let packets = packets_of(playlist, "a:0");
        let last = packets.last().unwrap();
        (packets[0].0, last.0 + last.1)
    };
    let (whole_start, whole_end) = first_and_end(&whole.path().join("hls/360p/index.m3u8"));
    let (split_start, split_end) = first_and_end(&stitched.path().join("hls/audio/index.m3u8"));
    let whole_video = packets(&whole.path().join("hls/360p/index.m3u8"))[0].0;
    let split_video = packets(&stitched.path().join("hls/360p/index.m3u8"))[0].0;
    assert!(
        ((whole_start - whole_video) - (split_start - split_video)).abs() < 1e-3,
        "audio starts {whole_start} vs video {whole_video} whole, {split_start} vs {split_video} split"
    );
    assert!(
        ((whole_end - whole_video) - (split_end - split_video)).abs() < 0.03,
        "audio ends {whole_end} whole, {split_end} split"
    );
}

/// The audio of `playlist` (or any file) as 48 kHz 32-bit float samples, both channels
/// interleaved, decoded by FFmpeg.
fn pcm(playlist: &Path) -> Vec<f32> {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(playlist)
        .args(["-map", "0:a:0", "-ar", "48000", "-f", "f32le", "-"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[test]
fn audio_encoded_in_ranges_is_the_audio_encoded_whole_without_a_seam() {
    // Rising tones in both channels: a click, a gap or a repeated packet at a range's edge
    // would stand out against them.
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("tones.mp4");
    let made = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=9"])
        .args(["-f", "lavfi", "-i"])
        .arg("aevalsrc=0.4*sin(2*PI*(220+60*t)*t)|0.3*sin(2*PI*(330+40*t)*t):s=44100:d=9")
        .args(["-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"])
        .arg(&source)
        .status()
        .unwrap();
    assert!(made.success());
    let spec = spec(Preset::Hls, Qualities::List(vec![Quality::P144]), &[OutputKind::Hls]);
    let chunks = [
        Chunk { start_secs: 0.0, end_secs: Some(3.0), first_segment: 0, ladder: None },
        Chunk { start_secs: 3.0, end_secs: Some(6.0), first_segment: 3, ladder: None },
        Chunk { start_secs: 6.0, end_secs: None, first_segment: 6, ladder: None },
    ];
    // The same chunks stitched twice: with the audio whole, and in the chunks' three ranges.
    let stitch = |audio: &[Chunk]| {
        let items = tempfile::tempdir().unwrap();
        let layout =
            StitchParts { dir: items.path().to_path_buf(), chunks: 3, audio: audio.len() as u32 };
        for (k, chunk) in (0..).zip(&chunks) {
            let mut chunk_job = job(&source, &layout.chunk_dir(k), spec.clone());
            chunk_job.task = Task::Chunk(chunk.clone());
            tcoder_engine::run(&chunk_job, &mut |_| {}).unwrap();
        }
        for (j, range) in (0..).zip(audio) {
            let mut audio_job = job(&source, &layout.audio_dir(j), spec.clone());
            audio_job.task = Task::Audio(range.clone());
            tcoder_engine::run(&audio_job, &mut |_| {}).unwrap();
        }
        let stitched = tempfile::tempdir().unwrap();
        let mut stitch_job = job(&source, stitched.path(), spec.clone());
        stitch_job.task = Task::Stitch(layout);
        tcoder_engine::run(&stitch_job, &mut |_| {}).unwrap();
        stitched
    };
    let whole = stitch(&[Chunk::default()]);
    let ranges = stitch(&chunks);
    let (whole, ranges) =
        (whole.path().join("hls/audio/index.m3u8"), ranges.path().join("hls/audio/index.m3u8"));

    // The ranges' packets tile the whole encode's: the same count at the same times.
    let (whole_packets, range_packets) = (packets_of(&whole, "a:0"), packets_of(&ranges, "a:0"));
    assert_eq!(whole_packets.len(), range_packets.len());
    for (a, b) in whole_packets.iter().zip(&range_packets) {
        assert!((a.0 - b.0).abs() < 1e-6, "packet at {} whole, {} in ranges", a.0, b.0);
    }
    // And what a listener hears is as close to the source at the seams as anywhere: two
    // encoders started apart quantise differently (the same sound, not the same waveform), so
    // each is measured against the source's own audio (decoded and resampled by FFmpeg), in
    // 10 ms windows. A click, a gap or a doubled packet at a seam would be far off it.
    let reference = pcm(&source);
    let (heard_whole, heard_ranges) = (pcm(&whole), pcm(&ranges));
    assert_eq!(heard_whole.len(), heard_ranges.len());
    const WINDOW: usize = 960; // 10 ms of 48 kHz stereo
    let error = |heard: &[f32], from: usize, lag: usize| {
        let sum: f32 = (from..from + WINDOW).map(|i| (heard[i + lag] - reference[i]).powi(2)).sum();
        (sum / WINDOW as f32).sqrt()
    };
    // The decoded HLS audio keeps the encoder's priming; find that lag once (in samples).
    let lag = (0..4096)
        .step_by(2)
        .min_by(|&a, &b| error(&heard_whole, 48_000, a).total_cmp(&error(&heard_whole, 48_000, b)))
        .unwrap();
    let windows =
        (0..(reference.len().min(heard_whole.len() - lag) - WINDOW) / WINDOW).map(|w| w * WINDOW);
    let whole_errors: Vec<f32> = windows.clone().map(|w| error(&heard_whole, w, lag)).collect();
    let range_errors: Vec<f32> = windows.map(|w| error(&heard_ranges, w, lag)).collect();
    let worst_whole = whole_errors.iter().copied().fold(0.0, f32::max);
    let mean = |errors: &[f32]| errors.iter().sum::<f32>() / errors.len() as f32;
    assert!(mean(&whole_errors) < 0.03, "the whole encode is off the source: {whole_errors:?}");
    assert!(
        mean(&range_errors) <= mean(&whole_errors) * 1.15,
        "ranges {} vs whole {} on average",
        mean(&range_errors),
        mean(&whole_errors)
    );
    for seam in [3usize, 6] {
        // 20 ms either side of the seam.
        let around = &range_errors[seam * 100 - 2..seam * 100 + 2];
        assert!(
            around.iter().all(|&e| e <= worst_whole),
            "at the {seam} s seam {around:?}, the whole encode at worst {worst_whole}"
        );
    }
}
