//! Captions: the source's text subtitle tracks (SRT, ASS/SSA, MP4 timed text, WebVTT) and the
//! caption files the job names (SRT or WebVTT, timed from the title's start) as WebVTT — a
//! whole file per track (`captions/<slug>.vtt`, for an MP4 player's `<track>`), and
//! for HLS a subtitle rendition per track (`hls/<slug>/`, segmented on the video's segment
//! boundaries, each segment carrying the cues that overlap it), which the master playlist
//! lists as `EXT-X-MEDIA:TYPE=SUBTITLES`.
//!
//! FFmpeg's text decoders turn every format into ASS dialogue lines; styling is dropped
//! (override blocks, positioning), line breaks kept. Cue text comes from the file and is
//! untrusted: it is escaped for WebVTT (`&`, `<`, `>`), blank lines (which would end a cue)
//! and `-->` cannot survive, and both cue length and cue count are bounded.

use std::fmt::Write as _;
use std::path::Path;

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;
use ffmpeg_next::packet::Ref as _;

use tcoder::engine::plan::CaptionPlan;
use tcoder::engine::{CaptionReport, EngineError, EngineJob, MediaInfo, Mode, SidecarFile};

use super::decode::{Source, open_subtitle_decoder};
use super::timeline::seconds;

/// Cues kept per track at most (a feature film has ~1 500; more is a hostile file).
const MAX_CUES: usize = 20_000;
/// Characters kept per cue at most.
const MAX_CUE_CHARS: usize = 500;
/// How long a cue whose end nobody says lasts at most (until the next one otherwise).
const OPEN_CUE_SECS: f64 = 5.0;

/// One caption on the title's timeline (seconds from the first video frame).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cue {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// A caption rendition for the master playlist.
#[derive(Debug, Clone)]
pub(crate) struct CaptionRendition {
    pub plan: CaptionPlan,
    /// Its playlist, relative to the master.
    pub uri: String,
}

/// What [`write`] made.
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub reports: Vec<CaptionReport>,
    pub renditions: Vec<CaptionRendition>,
    /// The cues of each track written, for MP4 timed text.
    pub cues: Vec<(CaptionPlan, Vec<Cue>)>,
    /// Caption files of the job that could not be read (left out).
    pub warnings: Vec<String>,
}

/// Writes every caption track of `plan`: the WebVTT file, and the HLS rendition when
/// `hls_boundaries` (the top variant's segment ends, seconds) are given; `hls_start_secs`
/// is where the variants' first picture is on their own timeline (for `X-TIMESTAMP-MAP`).
/// A caption file of the job that is not SRT or WebVTT, or was not fetched, is left out with
/// a warning: the title still plays.
pub(crate) fn write(
    job: &EngineJob,
    media: &MediaInfo,
    tracks: &[CaptionPlan],
    duration_secs: f64,
    hls: Option<(&[f64], f64)>,
) -> Result<Written, EngineError> {
    let mut written = Written::default();
    if tracks.is_empty() {
        return Ok(written);
    }
    let out = &job.output_dir;
    let disk = |e: std::io::Error| crate::error::disk(&e);
    let cues = read_cues(job, media, tracks, duration_secs)?;
    for (track, cues) in tracks.iter().zip(cues) {
        let cues = match cues {
            Ok(cues) => cues,
            Err(problem) => {
                written.warnings.push(problem);
                continue;
            }
        };
        std::fs::create_dir_all(out.join("captions")).map_err(disk)?;
        let vtt = format!("captions/{}.vtt", track.slug);
        std::fs::write(out.join(&vtt), webvtt(&cues, None)).map_err(disk)?;
        let hls_uri = match hls {
            Some((boundaries, start)) => {
                write_hls(&out.join("hls").join(&track.slug), &cues, boundaries, start)?;
                let uri = format!("{}/index.m3u8", track.slug);
                written.renditions.push(CaptionRendition { plan: track.clone(), uri: uri.clone() });
                Some(format!("hls/{uri}"))
            }
            None => None,
        };
        written.reports.push(CaptionReport {
            name: track.name.as_str().to_owned(),
            language: track.language.as_ref().map(|l| l.as_str().to_owned()),
            default: track.default,
            forced: track.forced,
            vtt,
            hls: hls_uri,
        });
        written.cues.push((track.clone(), cues));
    }
    Ok(written)
}

/// Reads the cues of every track: the source's in one pass over a new opening of it, each
/// caption file of the job from its own file. A caption file's problem is its track's
/// `Err` (a warning); the source's is the job's.
fn read_cues(
    job: &EngineJob,
    media: &MediaInfo,
    tracks: &[CaptionPlan],
    duration_secs: f64,
) -> Result<Vec<Result<Vec<Cue>, String>>, EngineError> {
    let streams: Vec<usize> =
        tracks.iter().filter(|t| t.sidecar.is_none()).map(|t| t.index).collect();
    let mut from_source = read_stream_cues(job, media, &streams)?.into_iter();
    let mut cues: Vec<Result<Vec<Cue>, String>> = tracks
        .iter()
        .map(|track| match track.sidecar {
            None => Ok(from_source.next().expect("one list per stream track")),
            Some(n) => read_caption_file(job, n, track),
        })
        .collect();
    for track in cues.iter_mut().filter_map(|c| c.as_mut().ok()) {
        track.sort_by(|a, b| a.start.total_cmp(&b.start));
        // Cues whose end is unknown last until the next one (at most OPEN_CUE_SECS).
        for n in 0..track.len() {
            if track[n].end.is_nan() {
                let next = track.get(n + 1).map_or(f64::INFINITY, |c| c.start);
                track[n].end = next.min(track[n].start + OPEN_CUE_SECS);
            }
        }
        // The title's timeline: nothing before its start or after its end.
        track.retain_mut(|cue| {
            cue.start = cue.start.max(0.0);
            cue.end = cue.end.min(duration_secs);
            cue.end > cue.start
        });
    }
    Ok(cues)
}

/// The cues of the source's subtitle streams `indices`, on the title's timeline.
fn read_stream_cues(
    job: &EngineJob,
    media: &MediaInfo,
    indices: &[usize],
) -> Result<Vec<Vec<Cue>>, EngineError> {
    if indices.is_empty() {
        return Ok(Vec::new());
    }
    let (mut input, _) = crate::probe::open(&job.input, &job.limits)?;
    let origin = Source::read(&input, media, Mode::Transcode).origin_secs;
    let mut decoders = Vec::with_capacity(indices.len());
    for index in indices {
        let stream = input.stream(*index).expect("probed stream");
        decoders.push((*index, stream.time_base(), open_subtitle_decoder(stream.parameters())?));
    }
    let mut cues: Vec<Vec<Cue>> = vec![Vec::new(); indices.len()];
    for (stream, packet) in input.packets() {
        let Some(at) = decoders.iter().position(|(index, ..)| *index == stream.index()) else {
            continue;
        };
        let (_, time_base, decoder) = &mut decoders[at];
        push_cue(&mut cues[at], decoder, &packet, *time_base, origin);
    }
    Ok(cues)
}

/// The cues of the job's caption file `n` (timed from the title's start, as a player of the
/// source shows them), or why it is left out.
fn read_caption_file(job: &EngineJob, n: usize, track: &CaptionPlan) -> Result<Vec<Cue>, String> {
    let label = format!("caption file {n} ({})", track.name.as_str());
    let path = match job.sidecars.get(n) {
        Some(SidecarFile::Fetched(path)) => path,
        Some(SidecarFile::Unavailable(problem)) => return Err(problem.clone()),
        None => return Err(format!("{label} was not fetched")),
    };
    let left_out = |e: EngineError| format!("{label} was left out: {}", e.message);
    let (mut input, index) = crate::probe::open_caption_file(path).map_err(left_out)?;
    let stream = input.stream(index).expect("the found stream");
    let time_base = stream.time_base();
    let mut decoder = open_subtitle_decoder(stream.parameters()).map_err(left_out)?;
    let mut cues = Vec::new();
    for (stream, packet) in input.packets() {
        if stream.index() == index {
            push_cue(&mut cues, &mut decoder, &packet, time_base, 0.0);
        }
    }
    if cues.is_empty() {
        return Err(format!("{label} was left out: it has no cue"));
    }
    Ok(cues)
}

/// Decodes `packet` (its time less `origin`) onto `cues`, up to [`MAX_CUES`]. Lines a decoder
/// refuses are left out; the rest of the track still counts.
fn push_cue(
    cues: &mut Vec<Cue>,
    decoder: &mut ffmpeg::decoder::Subtitle,
    packet: &ffmpeg::Packet,
    time_base: ffmpeg::Rational,
    origin: f64,
) {
    if cues.len() >= MAX_CUES {
        return;
    }
    let Some(pts) = packet.pts() else { return };
    let packet_start = seconds(pts, time_base) - origin;
    let packet_end =
        (packet.duration() > 0).then(|| packet_start + seconds(packet.duration(), time_base));
    if let Some(cue) = decode(decoder, packet, packet_start, packet_end) {
        cues.push(cue);
    }
}

/// The cue in `packet`, if it decodes to text.
fn decode(
    decoder: &mut ffmpeg::decoder::Subtitle,
    packet: &ffmpeg::Packet,
    packet_start: f64,
    packet_end: Option<f64>,
) -> Option<Cue> {
    // SAFETY: a zeroed AVSubtitle is what avcodec_decode_subtitle2 expects to fill; what it
    // filled is read while alive and freed with avsubtitle_free before returning.
    unsafe {
        let mut subtitle: ffi::AVSubtitle = std::mem::zeroed();
        let mut got = 0;
        let used = ffi::avcodec_decode_subtitle2(
            decoder.as_mut_ptr(),
            &mut subtitle,
            &mut got,
            packet.as_ptr() as *mut _,
        );
        if used < 0 || got == 0 {
            return None;
        }
        let mut lines = Vec::new();
        for n in 0..subtitle.num_rects as usize {
            let rect = *subtitle.rects.add(n);
            if rect.is_null() {
                continue;
            }
            let text = if !(*rect).ass.is_null() {
                dialogue_text(&std::ffi::CStr::from_ptr((*rect).ass).to_string_lossy())
            } else if !(*rect).text.is_null() {
                std::ffi::CStr::from_ptr((*rect).text).to_string_lossy().into_owned()
            } else {
                continue;
            };
            lines.push(text);
        }
        let (start_ms, end_ms) = (subtitle.start_display_time, subtitle.end_display_time);
        ffi::avsubtitle_free(&mut subtitle);
        let text = cue_text(&lines.join("\n"));
        if text.is_empty() {
            return None;
        }
        let start = packet_start + f64::from(start_ms) / 1000.0;
        let end = match (packet_end, end_ms) {
            (Some(end), _) => end,
            (None, ms) if ms > start_ms && ms != u32::MAX => packet_start + f64::from(ms) / 1000.0,
            _ => f64::NAN,
        };
        Some(Cue { start, end, text })
    }
}

/// The text of an ASS dialogue line as FFmpeg's decoders write it (`ReadOrder, Layer, Style,
/// Name, MarginL, MarginR, MarginV, Effect, Text`, or a whole `Dialogue:` line from older
/// ones): the last field, with override blocks (`{\i1}`) removed and ASS line breaks made
/// real ones.
fn dialogue_text(line: &str) -> String {
    let text = match line.strip_prefix("Dialogue:") {
        Some(rest) => rest.splitn(10, ',').nth(9),
        None => line.splitn(9, ',').nth(8),
    }
    .unwrap_or(line);
    let mut plain = String::with_capacity(text.len());
    let mut in_block = false;
    for c in text.chars() {
        match (in_block, c) {
            (false, '{') => in_block = true,
            (true, '}') => in_block = false,
            (false, c) => plain.push(c),
            (true, _) => {}
        }
    }
    plain.replace("\\N", "\n").replace("\\n", "\n").replace("\\h", " ")
}

/// Cue text safe for WebVTT: escaped, no blank or empty lines, no `-->`, bounded.
fn cue_text(text: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            line.chars()
                .filter(|c| !c.is_control())
                .collect::<String>()
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .trim()
                .to_owned()
        })
        .filter(|line| !line.is_empty())
        .collect();
    lines.join("\n").chars().take(MAX_CUE_CHARS).collect::<String>().trim_end().to_owned()
}

/// `HH:MM:SS.mmm`.
fn timestamp(secs: f64) -> String {
    let ms = (secs.max(0.0) * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// A WebVTT file of `cues`; `map`: the `X-TIMESTAMP-MAP` of an HLS segment (the 90 kHz time
/// of the variants' first picture, which is cue time 0).
fn webvtt(cues: &[Cue], map: Option<u64>) -> String {
    let mut text = String::from("WEBVTT\n");
    if let Some(mpegts) = map {
        let _ = writeln!(text, "X-TIMESTAMP-MAP=MPEGTS:{mpegts},LOCAL:00:00:00.000");
    }
    for cue in cues {
        let _ =
            write!(text, "\n{} --> {}\n{}\n", timestamp(cue.start), timestamp(cue.end), cue.text);
    }
    text
}

/// An HLS subtitle rendition in `dir`: one WebVTT segment per video segment (ending at each of
/// `boundaries`), each with the cues overlapping it.
fn write_hls(
    dir: &Path,
    cues: &[Cue],
    boundaries: &[f64],
    start_secs: f64,
) -> Result<(), EngineError> {
    let disk = |e: std::io::Error| crate::error::disk(&e);
    std::fs::create_dir_all(dir).map_err(disk)?;
    let mpegts = (start_secs.max(0.0) * 90_000.0).round() as u64;
    let longest = boundaries.iter().scan(0.0, |from, end| {
        let length = end - *from;
        *from = *end;
        Some(length)
    });
    let target = longest.fold(1.0_f64, f64::max).ceil() as u64;
    let mut playlist = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-PLAYLIST-TYPE:VOD\n"
    );
    let mut from = 0.0;
    for (n, end) in boundaries.iter().enumerate() {
        let inside: Vec<Cue> =
            cues.iter().filter(|c| c.start < *end && c.end > from).cloned().collect();
        let name = format!("seg_{n:05}.vtt");
        std::fs::write(dir.join(&name), webvtt(&inside, Some(mpegts))).map_err(disk)?;
        let _ = write!(playlist, "#EXTINF:{:.6},\n{name}\n", end - from);
        from = *end;
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    std::fs::write(dir.join("index.m3u8"), playlist).map_err(disk)
}

/// The segment ends (seconds from the first) of a media playlist, from its `EXTINF`s.
pub(crate) fn segment_boundaries(playlist: &Path) -> Result<Vec<f64>, EngineError> {
    let text = std::fs::read_to_string(playlist).map_err(|e| crate::error::disk(&e))?;
    let mut end = 0.0;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|d| d.split(',').next()?.parse::<f64>().ok())
        .map(|d| {
            end += d;
            end
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ass_lines_become_plain_escaped_cue_text() {
        assert_eq!(
            dialogue_text("0,0,Default,,0,0,0,,Hello {\\i1}world{\\i0}\\Nline two"),
            "Hello world\nline two"
        );
        assert_eq!(dialogue_text("Dialogue: 0,0:00:01.00,0:00:02.00,Default,,0,0,0,,a, b"), "a, b");
        // What a hostile file could use to end a cue early or inject markup.
        assert_eq!(
            cue_text("x\n\n00:00:09.000 --> 00:00:10.000\ny"),
            "x\n00:00:09.000 --&gt; 00:00:10.000\ny"
        );
        assert_eq!(cue_text("<script>&</script>\u{7}"), "&lt;script&gt;&amp;&lt;/script&gt;");
        assert_eq!(cue_text(" \n\t\n"), "");
        assert_eq!(cue_text(&"a".repeat(2000)).len(), MAX_CUE_CHARS);
        assert_eq!(timestamp(3723.4567), "01:02:03.457");
    }

    #[test]
    fn segments_carry_the_cues_that_overlap_them() {
        let dir = tempfile::tempdir().unwrap();
        let cues = [
            Cue { start: 0.5, end: 1.5, text: "one".into() },
            Cue { start: 2.5, end: 2.8, text: "two".into() },
        ];
        write_hls(dir.path(), &cues, &[1.0, 2.0, 3.0], 0.021).unwrap();
        let segment =
            |n: usize| std::fs::read_to_string(dir.path().join(format!("seg_{n:05}.vtt"))).unwrap();
        assert!(
            segment(0).contains("one") && segment(1).contains("one"),
            "a cue over a boundary is in both"
        );
        assert!(!segment(1).contains("two") && segment(2).contains("two"));
        assert!(segment(0).starts_with("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:1890,LOCAL:00:00:00.000\n"));
        let playlist = std::fs::read_to_string(dir.path().join("index.m3u8")).unwrap();
        assert_eq!(playlist.matches("#EXTINF:1.000000,").count(), 3, "{playlist}");
        assert!(playlist.ends_with("#EXT-X-ENDLIST\n"));
    }
}
