//! Joining the chunks of a split job (see `tcoder::engine::Chunk`) into the title's HLS set,
//! without re-encoding: each chunk's segments already carry the title's timestamps and are
//! numbered where the chunks before it end, so a rendition's playlist is the chunks' playlists
//! one after another. Chunks' initialization segments differ only in their edit lists (each
//! chunk's track starts later), which fMP4 segments with absolute `tfdt` times do not need: the
//! first chunk's serves them all while the sample descriptions (codec headers) are the same. A
//! chunk whose codec header differs gets its own `EXT-X-MAP`, which players honour but which
//! restarts some demuxers' timelines (FFmpeg's), so it is the exception.

use std::path::{Path, PathBuf};

use ffmpeg_next as ffmpeg;
use tcoder::engine::{EngineError, ErrorCode};

use crate::transcode::files::{THUMBNAIL_PARTS_DIR, list_files};
use crate::transcode::output::{self, Muxer, Track};
use crate::transcode::thumbs::Thumbnails;
use crate::transcode::validate;

use crate::transcode::hls::{AudioRendition, VariantInfo};
use crate::transcode::{captions, mp4_text};
use tcoder::engine::plan::AudioRenditionPlan;
use tcoder::hls;

/// The default audio rendition's folder (the title's first audio track), which the MP4s carry.
const AUDIO_DIR: &str = "hls/audio";

fn invalid(message: String) -> EngineError {
    EngineError::new(ErrorCode::OutputInvalid, message)
}

fn io(what: &str, e: &std::io::Error) -> EngineError {
    let disk = crate::error::disk(e);
    EngineError::new(disk.code, format!("{what}: {e}"))
}

/// Stitches the HLS outputs of `chunks` (each a chunk's output directory, in title order) and
/// of the title's `audio` ranges (their output directories, in order) into `out/hls/`: every
/// rendition's `index.m3u8` with the parts' segments (moved there), the audio renditions,
/// and the variants for `master.m3u8` (bit rates are measured over the whole title later).
fn stitch_hls(
    chunks: &[PathBuf],
    audio: &[PathBuf],
    tracks: &[AudioRenditionPlan],
    out: &Path,
) -> Result<(Vec<VariantInfo>, Vec<AudioRendition>), EngineError> {
    let first = chunks.first().ok_or_else(|| invalid("no chunks to stitch".into()))?;
    let variants = read_master(&first.join("hls/master.m3u8"))?;
    for variant in &variants {
        let dirs: Vec<PathBuf> = chunks.iter().map(|c| c.join("hls").join(&variant.name)).collect();
        join(&dirs, &out.join("hls").join(&variant.name), &variant.name)?;
    }
    let mut renditions = Vec::new();
    for track in tracks.iter().filter(|_| !audio.is_empty()) {
        let dirs: Vec<PathBuf> = audio.iter().map(|a| a.join("hls").join(&track.dir)).collect();
        // A silent title's audio items write no playlist.
        if !dirs[0].join("index.m3u8").exists() {
            continue;
        }
        let target = out.join("hls").join(&track.dir);
        join(&dirs, &target, &track.dir)?;
        let bytes = std::fs::read(target.join("init.mp4"))
            .map_err(|e| io("read the audio init segment", &e))?;
        // The sample entry's type: after the stsd header (8), version and flags (4), the
        // entry count (4) and the entry's size (4).
        let codecs = match hls::sample_description(&bytes).and_then(|stsd| stsd.get(20..24)) {
            Some(b"mp4a") => "mp4a.40.2",
            Some(b"Opus") => "opus",
            _ => return Err(invalid("audio: not AAC or Opus".into())),
        };
        let mut rendition = AudioRendition::planned(track, Default::default());
        rendition.codecs = codecs.to_owned();
        renditions.push(rendition);
    }
    Ok((variants, renditions))
}

/// Joins one rendition's playlists, one per part (`dirs`, in title order), into `target`
/// (`tcoder::hls::join`, the rule the API's progressive playlists follow too): the parts'
/// segments moved there, the initialization segments the joined playlist names written
/// there, and `index.m3u8` listing them all.
fn join(dirs: &[PathBuf], target: &Path, name: &str) -> Result<(), EngineError> {
    std::fs::create_dir_all(target).map_err(|e| io("create the rendition folder", &e))?;
    let mut playlists = Vec::new();
    let mut inits: Vec<Option<Vec<u8>>> = Vec::new();
    for (n, dir) in dirs.iter().enumerate() {
        let text = std::fs::read_to_string(dir.join("index.m3u8"))
            .map_err(|e| invalid(format!("part {n} has no playlist for {name}: {e}")))?;
        let playlist =
            hls::parse_media(&text).map_err(|e| invalid(format!("part {n}, {name}: {e}")))?;
        let init = match &playlist.init {
            Some(init) => {
                let bytes =
                    std::fs::read(dir.join(init)).map_err(|e| io("read an init segment", &e))?;
                if hls::sample_description(&bytes).is_none() {
                    return Err(invalid(format!("part {n}, {name}: init segment without stsd")));
                }
                Some(bytes)
            }
            None => None,
        };
        playlists.push(playlist);
        inits.push(init);
    }
    let parts: Vec<hls::PartRendition<'_>> = playlists
        .iter()
        .zip(&inits)
        .map(|(playlist, init)| hls::PartRendition {
            playlist,
            codec: init.as_deref().and_then(hls::sample_description),
        })
        .collect();
    let joined = hls::join(&parts, hls::Listing::Complete);
    for &n in &joined.inits {
        let bytes = inits[n].as_deref().ok_or_else(|| invalid(format!("part {n}: no init")))?;
        std::fs::write(target.join(hls::init_name(n)), bytes)
            .map_err(|e| io("write an init segment", &e))?;
    }
    for (n, (dir, playlist)) in dirs.iter().zip(&playlists).enumerate() {
        for segment in &playlist.segments {
            let to = target.join(&segment.name);
            if to.exists() {
                return Err(invalid(format!(
                    "{name}: segment {} of part {n} overlaps an earlier part",
                    segment.name
                )));
            }
            std::fs::rename(dir.join(&segment.name), &to).map_err(|e| io("move a segment", &e))?;
        }
    }
    std::fs::write(target.join("index.m3u8"), joined.text).map_err(|e| io("write a playlist", &e))
}

/// The variants of a chunk's master playlist (name, size, rate and codecs; bit rates are
/// measured again over the stitched title).
fn read_master(path: &Path) -> Result<Vec<VariantInfo>, EngineError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| io("read the first chunk's master playlist", &e))?;
    let mut variants = Vec::new();
    let mut pending: Option<&str> = None;
    for line in text.lines() {
        if let Some(attributes) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            pending = Some(attributes);
        } else if let Some(attributes) = pending.take().filter(|_| !line.starts_with('#')) {
            let name = line.trim().strip_suffix("/index.m3u8").ok_or_else(|| {
                invalid(format!("unexpected variant URI {line} in a chunk's master playlist"))
            })?;
            let attribute = |key: &str| {
                let at = attributes.find(&format!("{key}="))? + key.len() + 1;
                let rest = &attributes[at..];
                Some(match rest.strip_prefix('"') {
                    Some(quoted) => quoted.split('"').next().unwrap_or_default(),
                    None => rest.split(',').next().unwrap_or_default(),
                })
            };
            let (width, height) = attribute("RESOLUTION")
                .and_then(|r| r.split_once('x'))
                .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                .ok_or_else(|| invalid(format!("variant {name} has no RESOLUTION")))?;
            variants.push(VariantInfo {
                name: name.to_owned(),
                width,
                height,
                fps: attribute("FRAME-RATE").and_then(|f| f.parse().ok()).unwrap_or(0.0),
                codecs: attribute("CODECS").unwrap_or_default().to_owned(),
                video_range: attribute("VIDEO-RANGE").unwrap_or("SDR").to_owned(),
            });
        }
    }
    if variants.is_empty() {
        return Err(invalid("the first chunk's master playlist lists no variant".into()));
    }
    Ok(variants)
}

/// Makes `out/mp4/<rendition>.mp4` for each of `renditions` from the stitched HLS set in
/// `out/hls/` (see [`stitch_hls`]): the rendition's video segments and the title's audio,
/// remuxed (no re-encode) into a faststart MP4.
fn stitch_mp4(out: &Path, renditions: &[String]) -> Result<(), EngineError> {
    let audio = out.join(AUDIO_DIR).join("index.m3u8");
    std::fs::create_dir_all(out.join("mp4")).map_err(|e| io("create the mp4 folder", &e))?;
    for name in renditions {
        let video = out.join("hls").join(name).join("index.m3u8");
        let target = out.join("mp4").join(format!("{name}.mp4"));
        remux(&video, audio.exists().then_some(audio.as_path()), &target)?;
    }
    Ok(())
}

/// Opens one of our own playlists (local files, HLS of fMP4 only).
fn open_playlist(path: &Path) -> Result<ffmpeg::format::context::Input, EngineError> {
    validate::open_output(path)
        .map_err(|e| crate::error::output(&format!("open {}", relative(path)), &e))
}

/// `hls/<rendition>/index.m3u8` of a playlist path, for messages (never a worker path).
fn relative(path: &Path) -> String {
    let parts: Vec<_> = path.iter().rev().take(3).collect();
    parts.iter().rev().map(|p| p.to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// The first stream of `input` of `kind`, as (index, time base).
fn stream_of(
    input: &ffmpeg::format::context::Input,
    kind: ffmpeg::media::Type,
) -> Option<(usize, ffmpeg::Rational, ffmpeg::codec::Parameters)> {
    input
        .streams()
        .find(|s| s.parameters().medium() == kind)
        .map(|s| (s.index(), s.time_base(), s.parameters()))
}

/// One input of the remux: its stream and the next packet waiting to be written.
struct Feed {
    input: ffmpeg::format::context::Input,
    index: usize,
    time_base: ffmpeg::Rational,
    track: Track,
    next: Option<ffmpeg::Packet>,
}

impl Feed {
    fn advance(&mut self) {
        self.next = None;
        for (stream, packet) in self.input.packets() {
            if stream.index() == self.index {
                self.next = Some(packet);
                return;
            }
        }
    }

    /// Decode time of the waiting packet, in seconds (for interleaving).
    fn next_secs(&self) -> Option<f64> {
        let packet = self.next.as_ref()?;
        let ts = packet.dts().or(packet.pts())?;
        Some(ts as f64 * f64::from(self.time_base))
    }
}

fn remux(video: &Path, audio: Option<&Path>, target: &Path) -> Result<(), EngineError> {
    use ffmpeg::media::Type;
    let mut muxer = Muxer::create(target, "mp4", output::mp4_options())?;
    let mut feeds = Vec::new();
    let video_input = open_playlist(video)?;
    let (index, time_base, parameters) = stream_of(&video_input, Type::Video)
        .ok_or_else(|| invalid(format!("{}: no video", relative(video))))?;
    muxer.add_copied_stream(Track::Video, parameters, time_base, None)?;
    feeds.push(Feed { input: video_input, index, time_base, track: Track::Video, next: None });
    if let Some(audio) = audio {
        let audio_input = open_playlist(audio)?;
        let (index, time_base, parameters) = stream_of(&audio_input, Type::Audio)
            .ok_or_else(|| invalid(format!("{}: no audio", relative(audio))))?;
        muxer.add_copied_stream(Track::Audio, parameters, time_base, None)?;
        feeds.push(Feed { input: audio_input, index, time_base, track: Track::Audio, next: None });
    }
    muxer.write_header()?;
    for feed in &mut feeds {
        feed.advance();
    }
    // The HLS set starts its video where the whole encode's HLS muxer put it (after the
    // audio's priming or the B-frames' lead); an MP4 starts its video at zero and keeps those
    // in edit lists, as the whole encode's MP4 does.
    let video_start = feeds[0].next.as_ref().and_then(|p| p.pts()).unwrap_or(0);
    muxer.delay_by(-(video_start as f64 * f64::from(feeds[0].time_base)));
    // Bounded: every turn writes one packet and reads the next; the inputs are finite files.
    while let Some(feed) = feeds
        .iter_mut()
        .filter(|f| f.next.is_some())
        .min_by(|a, b| a.next_secs().unwrap_or(0.0).total_cmp(&b.next_secs().unwrap_or(0.0)))
    {
        let packet = feed.next.take().expect("filtered on a waiting packet");
        muxer.write(feed.track, &packet, feed.time_base)?;
        feed.advance();
    }
    muxer.finish()
}

/// Writes the title's `thumbs/` (poster, storyboard sprite and its WebVTT) into `out` from the
/// chunks' shares (each chunk keeps the tiles due in its range and the poster if it falls
/// there), as the whole-title encode would make them for `plan` and `duration_secs`.
fn stitch_thumbnails(
    chunks: &[PathBuf],
    plan: &tcoder::engine::plan::ThumbnailPlan,
    duration_secs: f64,
    out: &Path,
) -> Result<Vec<String>, EngineError> {
    let parts: Vec<PathBuf> = chunks.iter().map(|c| c.join(THUMBNAIL_PARTS_DIR)).collect();
    let dirs: Vec<&Path> = parts.iter().map(PathBuf::as_path).collect();
    Thumbnails::from_parts(plan, &dirs)?.finish(&out.join("thumbs"), duration_secs)
}

/// A split title's stitch item (`Task::Stitch`): the title's HLS set, MP4s and thumbnails from
/// the parts' outputs, each checked as the whole encode checks its own. `report` is the
/// planned one (renditions and their paths); the files are filled in.
pub(crate) fn run(
    job: &tcoder::engine::EngineJob,
    mut report: tcoder::engine::EngineReport,
    plan: &tcoder::engine::EnginePlan,
    parts: &tcoder::engine::StitchParts,
) -> Result<tcoder::engine::EngineReport, EngineError> {
    let out = &job.output_dir;
    let chunks: Vec<PathBuf> = (0..parts.chunks).map(|k| parts.chunk_dir(k)).collect();
    let audio: Vec<PathBuf> = (0..parts.audio).map(|j| parts.audio_dir(j)).collect();
    let (variants, audio_renditions) = stitch_hls(&chunks, &audio, &plan.audio_renditions, out)?;
    // Captions from the source, segmented as the stitched video is.
    let top = variants.first().map(|v| out.join("hls").join(&v.name).join("index.m3u8"));
    let top = top.ok_or_else(|| invalid("no variant to time the captions by".into()))?;
    let (boundaries, start) =
        (captions::segment_boundaries(&top)?, validate::first_video_secs(&top)?);
    let duration = report.media.duration_secs;
    let written =
        captions::write(job, &report.media, &plan.captions, duration, Some((&boundaries, start)))?;
    report.captions = written.reports;
    report.media.warnings.extend(written.warnings);
    crate::transcode::hls::write_master(
        &out.join("hls"),
        &variants,
        &audio_renditions,
        &written.renditions,
    )?;
    let names: Vec<String> = plan.renditions.iter().map(|r| r.name.clone()).collect();
    if plan.mp4 {
        stitch_mp4(out, &names)?;
        if job.spec.mp4_captions {
            mp4_text::add_to_renditions(out, plan, &written.cues)?;
        }
    }
    let duration = report.media.duration_secs;
    if let Some(thumbs) = &plan.thumbnails {
        report.thumbnails = Some(stitch_thumbnails(&chunks, thumbs, duration, out)?);
    }
    for (rendition, planned) in plan.renditions.iter().zip(&report.renditions) {
        let expected =
            |audio: bool| validate::Expected { rendition, duration, audio, check_dimensions: true };
        // A rendition's playlist is its video; the title's audio is a rendition of its own.
        if let Some(hls) = &planned.hls {
            validate::check(out, hls, &expected(false))?;
        }
        if let Some(mp4) = &planned.mp4 {
            validate::check(out, mp4, &expected(parts.audio > 0))?;
        }
    }
    // The (one, whole) audio item measured the title's loudness, when asked to normalise it.
    if let Some(audio) = audio.first() {
        match std::fs::read(audio.join(crate::transcode::loudness::REPORT_FILE)) {
            Ok(json) => {
                report.loudness = Some(serde_json::from_slice(&json).map_err(|e| {
                    invalid(format!("the audio item's loudness report is unreadable: {e}"))
                })?);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("loudness report", &e)),
        }
    }
    report.hls_master = Some("hls/master.m3u8".to_owned());
    // A split title's audio renditions always have playlists of their own.
    report.audio_tracks = crate::transcode::audio_track_reports(plan, parts.audio > 0);
    crate::quality::pool(&chunks, &mut report)?;
    report.ladder = job.ladder.clone();
    crate::quality::check_floor(&job.spec, &mut report)?;
    report.files = list_files(out)?;
    Ok(report)
}
