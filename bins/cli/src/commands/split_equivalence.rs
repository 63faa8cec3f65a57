//! Is a split-and-stitched title what the whole-title encode makes? Checked with FFmpeg's own
//! tools (`ffprobe`, `ffmpeg`'s `psnr` filter) on both output folders, rendition by rendition:
//! the same frame count and duration (± one frame), the same segment boundaries, PSNR against
//! the source within a tolerance (0.1 dB by default), one continuous timeline (no gap or
//! overlap at a chunk's edge), continuous audio, a master that plays, faststart MP4s with as
//! many frames.
//!
//! PSNR is the one figure that may move, and only one way. Rate control is capped constant
//! quality (`RenditionPlan::crf`), which decides each frame from the frames around it, so
//! where the encoder stays under its cap the chunks make the whole encode's picture. Where it
//! is held at the cap, each chunk's encoder starts with the full VBV buffer the whole encode
//! had only at its start: the first second of a chunk gets up to one buffer (two seconds of
//! the cap) more bits, a slightly better picture. So the check is: PSNR no more than the
//! tolerance below the whole encode's, and no more bytes than the whole encode's plus one
//! buffer per later chunk.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tcoder::engine::plan::RenditionPlan;

fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command.output().with_context(|| format!("{command:?}"))?;
    if !output.status.success() {
        bail!("{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// (pts, duration) of every packet of stream `selector`, in presentation order.
fn packets(path: &Path, selector: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    let text = run(Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", selector])
        .args(["-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0"])
        .arg(path))?;
    let mut packets = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut fields = line.split(',');
        let pts: f64 = fields.next().unwrap_or_default().parse().context(line.to_owned())?;
        let duration = fields.next().and_then(|d| d.parse().ok()).unwrap_or(0.0);
        packets.push((pts, duration));
    }
    packets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(packets)
}

/// The video stream's size: the sum of its packets.
fn video_bytes(path: &Path) -> anyhow::Result<u64> {
    let text = run(Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=size", "-of", "csv=p=0"])
        .arg(path))?;
    Ok(text.lines().filter_map(|l| l.trim().parse::<u64>().ok()).sum())
}

fn duration(path: &Path) -> anyhow::Result<f64> {
    let text = run(Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
        .arg(path))?;
    text.trim().parse().with_context(|| format!("duration of {}", path.display()))
}

fn segment_durations(playlist: &Path) -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_to_string(playlist)?
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(str::to_owned)
        .collect())
}

/// Average PSNR (dB) of `output`'s video against `source` scaled to the output's size, both
/// timelines started at zero (the outputs start after the encoder delay).
fn psnr(output: &Path, source: &Path, width: u64, height: u64) -> anyhow::Result<f64> {
    let graph = format!(
        "[0:v]setpts=PTS-STARTPTS[out];[1:v]setpts=PTS-STARTPTS,scale={width}:{height}:flags=bicubic[ref];[out][ref]psnr"
    );
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(output)
        .arg("-i")
        .arg(source)
        .args(["-lavfi", &graph, "-f", "null", "-"])
        .output()?;
    let log = String::from_utf8_lossy(&output.stderr);
    let average = log
        .lines()
        .filter_map(|l| l.split_once(" average:"))
        .filter_map(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok())
        .next_back();
    average.with_context(|| format!("no PSNR in ffmpeg's log: {log}"))
}

/// The renditions' names and sizes, from the whole encode's master playlist.
fn renditions(master: &Path) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let text = std::fs::read_to_string(master)?;
    let mut found = Vec::new();
    let mut size = None;
    for line in text.lines() {
        if let Some(attributes) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            size = attributes.split(',').find_map(|a| {
                let (w, h) = a.strip_prefix("RESOLUTION=")?.split_once('x')?;
                Some((w.parse().ok()?, h.parse().ok()?))
            });
        } else if let (Some((w, h)), Some(name)) = (size.take(), line.strip_suffix("/index.m3u8")) {
            found.push((name.to_owned(), w, h));
        }
    }
    anyhow::ensure!(!found.is_empty(), "no variant in {}", master.display());
    Ok(found)
}

/// What a split title is held to.
pub(crate) struct Tolerance<'a> {
    /// How far the split title's PSNR may fall below the whole encode's.
    pub psnr_db: f64,
    /// The planned renditions: each one's cap sets its buffer.
    pub planned: &'a [RenditionPlan],
}

/// Checks the stitched output folder `split` (made of `chunks` chunks) against the whole
/// encode's `whole`; returns the figures and whether every check passed (`"ok"`).
pub(crate) fn check(
    source: &Path,
    whole: &Path,
    split: &Path,
    chunks: usize,
    tolerance: &Tolerance<'_>,
) -> anyhow::Result<Value> {
    let psnr_tolerance_db = tolerance.psnr_db;
    let mut failures: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    let whole_master = whole.join("hls/master.m3u8");
    let split_master = split.join("hls/master.m3u8");
    for (name, width, height) in renditions(&whole_master)? {
        let playlist = |root: &Path| root.join("hls").join(&name).join("index.m3u8");
        let (want, got) = (packets(&playlist(whole), "v:0")?, packets(&playlist(split), "v:0")?);
        let frame = want.first().map(|p| p.1).filter(|d| *d > 0.0).unwrap_or(1.0 / 30.0);
        if want.len() != got.len() {
            failures.push(format!("{name}: {} frames, whole {}", got.len(), want.len()));
        }
        let seams: Vec<String> = got
            .windows(2)
            .filter(|pair| (pair[0].0 + pair[0].1 - pair[1].0).abs() > 1e-3)
            .map(|pair| format!("{:.3}→{:.3}", pair[0].0 + pair[0].1, pair[1].0))
            .collect();
        if !seams.is_empty() {
            failures.push(format!("{name}: timeline gaps or overlaps at {seams:?}"));
        }
        let (whole_secs, split_secs) = (duration(&playlist(whole))?, duration(&playlist(split))?);
        if (whole_secs - split_secs).abs() > frame + 1e-3 {
            failures.push(format!("{name}: {split_secs:.3} s, whole {whole_secs:.3} s"));
        }
        if segment_durations(&playlist(whole))? != segment_durations(&playlist(split))? {
            failures.push(format!("{name}: segment boundaries differ"));
        }
        let (whole_psnr, split_psnr) = (
            psnr(&playlist(whole), source, width, height)?,
            psnr(&playlist(split), source, width, height)?,
        );
        if split_psnr < whole_psnr - psnr_tolerance_db {
            failures.push(format!("{name}: PSNR {split_psnr:.3} dB, whole {whole_psnr:.3} dB"));
        }
        let buffer_bits =
            tolerance.planned.iter().find(|r| r.name == name).map_or(0, |r| r.vbv_buffer_bits());
        let (whole_bytes, split_bytes) =
            (video_bytes(&playlist(whole))?, video_bytes(&playlist(split))?);
        let allowed = whole_bytes + chunks.saturating_sub(1) as u64 * (buffer_bits / 8);
        if split_bytes > allowed {
            failures.push(format!(
                "{name}: {split_bytes} video bytes, whole {whole_bytes} + one buffer a chunk"
            ));
        }
        let mp4 = split.join("mp4").join(format!("{name}.mp4"));
        let mut mp4_row = Value::Null;
        if mp4.is_file() {
            let bytes = std::fs::read(&mp4)?;
            let at = |tag: &[u8]| bytes.windows(4).position(|w| w == tag);
            let faststart = matches!((at(b"moov"), at(b"mdat")), (Some(m), Some(d)) if m < d);
            let frames = packets(&mp4, "v:0")?.len();
            let whole_mp4 = whole.join("mp4").join(format!("{name}.mp4"));
            let mp4_secs = duration(&mp4)?;
            if !faststart {
                failures.push(format!("{name}.mp4 is not faststart"));
            }
            if frames != want.len() {
                failures.push(format!("{name}.mp4: {frames} frames, whole {}", want.len()));
            }
            if whole_mp4.is_file() && (duration(&whole_mp4)? - mp4_secs).abs() > frame + 1e-3 {
                failures.push(format!("{name}.mp4: duration {mp4_secs:.3} s differs"));
            }
            mp4_row =
                json!({ "faststart": faststart, "frames": frames, "duration_secs": mp4_secs });
        }
        rows.push(json!({
            "rendition": name,
            "video_bytes": { "whole": whole_bytes, "split": split_bytes, "allowed": allowed },
            "frames": { "whole": want.len(), "split": got.len() },
            "duration_secs": { "whole": whole_secs, "split": split_secs },
            "psnr_db": { "whole": whole_psnr, "split": split_psnr },
            "seams": seams.len(),
            "mp4": mp4_row,
        }));
    }
    // The audio: one AAC frame after another, the whole title long.
    let audio = packets(&split.join("hls/audio/index.m3u8"), "a:0")?;
    let step = match audio.as_slice() {
        [first, second, ..] => second.0 - first.0,
        _ => 0.0,
    };
    let audio_gaps = audio.windows(2).filter(|p| (p[1].0 - p[0].0 - step).abs() > 1e-3).count();
    if audio_gaps > 0 || step <= 0.0 {
        failures.push(format!("audio: {audio_gaps} gaps or overlaps"));
    }
    let (whole_master_secs, split_master_secs) =
        (duration(&whole_master)?, duration(&split_master)?);
    Ok(json!({
        "ok": failures.is_empty(),
        "failures": failures,
        "psnr_tolerance_db": psnr_tolerance_db,
        "master_duration_secs": { "whole": whole_master_secs, "split": split_master_secs },
        "audio_packets": audio.len(),
        "renditions": rows,
    }))
}
