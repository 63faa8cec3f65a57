//! The audio items of a split job, and the audio renditions of a title with several audio
//! tracks: each track encoded into an HLS audio rendition (`hls/audio/`, `hls/audio-1/`, …),
//! on the same timeline as the chunks' video. Video packets are read (not decoded) so the
//! audio is cut or padded to the video's end exactly as the whole-title encode does, and so a
//! truncated source is refused here as it would be there. Its timestamps move by the same
//! delay as the chunks' (see `split_delay_secs`).
//!
//! **Ranges.** A split title's audio is encoded in ranges (so its start is playable before
//! the rest is encoded). Each range decodes the track from the title's start — decoding is
//! hundreds of times faster than encoding, and it puts every sample where the whole encode
//! puts it: the filter graph re-chunks from the title's first sample, so the encoder's frames
//! fall on the same 1024-sample grid — and encodes from [`PREROLL_SECS`] before its start,
//! keeping only the packets whose timestamps lie in the range. The ranges' packets therefore
//! tile the stream one encoder makes (each transform window over the true samples, so the
//! decoder's overlap across a seam adds up), and each was made by an encoder that had already
//! heard a second of what precedes it: no priming, padding or click lands at a range's edge.

use ffmpeg_next as ffmpeg;
use ffmpeg_next::frame;

use tcoder::engine::plan::AudioPlan;
use tcoder::engine::{
    Chunk, EngineError, EngineJob, EnginePlan, EngineReport, ErrorCode, LoudnessReport, MediaInfo,
    Mode,
};

use super::audio::{AudioEncoder, SourceAudio};
use super::decode::{Source, check_complete, feed, open_audio_decoder};
use super::files::{io_error, list_files};
use super::loudness::{Normalisation, REPORT_FILE};
use super::output::{self, Muxer};
use super::timeline::Timeline;

/// How long before its range an audio range's encoder starts: what it encodes there is
/// dropped, but its adaptive state (psychoacoustic model, bit reservoir) has settled on the
/// sound by the range's start instead of starting from silence there.
const PREROLL_SECS: f64 = 1.0;

/// The audio of `range` of the title (the whole title by default), each track into its own
/// HLS audio rendition.
pub(super) fn run(
    job: &EngineJob,
    input: &mut ffmpeg::format::context::Input,
    media: &MediaInfo,
    plan: &EnginePlan,
    source: &Source,
    (range, delay_secs): (&Chunk, f64),
) -> Result<EngineReport, EngineError> {
    let (errors, loudness) =
        encode_tracks(job, Some(input), media, plan, source, (range, delay_secs))?;
    if let Some(loudness) = loudness {
        // For the stitch, which reports the title's loudness (see `stitch::run`).
        let json = serde_json::to_vec(&loudness).expect("a loudness report serializes");
        std::fs::write(job.output_dir.join(REPORT_FILE), json).map_err(io_error)?;
    }
    report(job, media, errors)
}

/// Encodes `range` of every audio rendition of `plan` (the source's audio tracks) into
/// `<output>/hls/<dir>/`, each in a pass of its own: over `input` for the first when given,
/// over a new opening of the file otherwise. Returns the decode errors and the default
/// track's loudness normalisation.
pub(super) fn encode_tracks(
    job: &EngineJob,
    mut input: Option<&mut ffmpeg::format::context::Input>,
    media: &MediaInfo,
    plan: &EnginePlan,
    source: &Source,
    (range, delay_secs): (&Chunk, f64),
) -> Result<(u64, Option<LoudnessReport>), EngineError> {
    let segment_secs = plan
        .hls_segment_secs
        .filter(|_| plan.mode == Mode::Transcode)
        .ok_or_else(|| EngineError::new(ErrorCode::Failed, "only an HLS transcode is split"))?;
    // The best-planned audio (renditions' audio differs only in bit rate): one for all.
    let audio_plan =
        plan.renditions.iter().filter_map(|r| r.audio.clone()).max_by_key(|a| a.bit_rate);
    let (Some(audio_plan), false) = (audio_plan, plan.audio_renditions.is_empty()) else {
        if range.end_secs.is_some() {
            return Ok((0, None));
        }
        // A silent title: nothing to encode, but the source is still read whole.
        let mut timeline = Timeline::for_source(source, media.video.fps);
        match input {
            Some(input) => read_all(input, source, &mut timeline)?,
            None => read_all(
                &mut crate::probe::open(&job.input, &job.limits)?.0,
                source,
                &mut timeline,
            )?,
        }
        check_complete(media, &timeline)?;
        return Ok((0, None));
    };
    let (mut errors, mut loudness) = (0, None);
    for rendition in &plan.audio_renditions {
        let mut reopened;
        let input = match input.take() {
            Some(input) => input,
            None => {
                reopened = crate::probe::open(&job.input, &job.limits)?.0;
                &mut reopened
            }
        };
        let dir = job.output_dir.join("hls").join(&rendition.dir);
        let track = Track { index: rendition.index, dir: &dir, segment_secs, delay_secs, range };
        let (track_errors, track_loudness) =
            encode_track(job, input, media, &audio_plan, source, &track)?;
        errors += track_errors;
        if rendition.default {
            loudness = track_loudness;
        }
    }
    Ok((errors, loudness))
}

/// Where one track goes and how it is cut.
struct Track<'a> {
    /// The source stream.
    index: usize,
    dir: &'a std::path::Path,
    segment_secs: f64,
    delay_secs: f64,
    range: &'a Chunk,
}

impl Track<'_> {
    /// Where the range's packets start and end, in the encoder's samples (`rate` a second):
    /// the first range keeps the encoder's priming packet (before zero) too.
    fn bounds(&self, rate: i64) -> (i64, Option<i64>) {
        let at = |secs: f64| (secs * rate as f64).round() as i64;
        let start = match self.range.start_secs > 0.0 {
            true => at(self.range.start_secs),
            false => i64::MIN,
        };
        (start, self.range.end_secs.map(at))
    }

    /// The segments' file name pattern: a range after the first names its segments after its
    /// first chunk's first segment, so the ranges' names never collide however the muxer
    /// cuts them.
    fn segment_names(&self) -> String {
        match self.range.start_secs > 0.0 {
            true => format!("seg_{:05}_%03d.m4s", self.range.first_segment),
            false => "seg_%05d.m4s".to_owned(),
        }
    }
}

/// One audio track of the whole title, encoded into an HLS audio rendition in `track.dir`.
fn encode_track(
    job: &EngineJob,
    input: &mut ffmpeg::format::context::Input,
    media: &MediaInfo,
    audio_plan: &AudioPlan,
    source: &Source,
    track: &Track<'_>,
) -> Result<(u64, Option<LoudnessReport>), EngineError> {
    let mut timeline = Timeline::for_source(source, media.video.fps);
    let stream = input.stream(track.index).expect("probed stream");
    let time_base = stream.time_base();
    let mut decoder = open_audio_decoder(stream.parameters())?;
    let decoded = SourceAudio::of(&decoder, time_base);
    let normalisation = Normalisation::of(job, media, track.index)?;
    let gain_db = normalisation.map(|n| n.gain_db);
    let mut encoder =
        AudioEncoder::open(audio_plan, &decoded, source.offset_in(time_base), gain_db)?;
    let rate = i64::from(audio_plan.sample_rate);
    let (start, end) = track.bounds(rate);
    if start > i64::MIN {
        encoder.skip_before(start - (PREROLL_SECS * rate as f64) as i64);
    }
    std::fs::create_dir_all(track.dir).map_err(io_error)?;
    let mut options = output::hls_options(track.dir, track.segment_secs, Some(0));
    for (name, value) in &mut options {
        if *name == "hls_segment_filename" {
            *value = track.dir.join(track.segment_names()).display().to_string();
        }
    }
    let mut muxer = Muxer::create(&track.dir.join("index.m3u8"), "hls", options)?;
    muxer.add_stream(output::Track::Audio, encoder.context(), None)?;
    muxer.delay_by(track.delay_secs);
    muxer.write_header()?;
    // Writes the range's packets; true once the encoder is past the range's end.
    let write = |encoder: &mut AudioEncoder, muxer: &mut Muxer| -> Result<bool, EngineError> {
        while let Some(packet) = encoder.receive() {
            let pts = packet.pts().unwrap_or(0);
            if end.is_some_and(|end| pts >= end) {
                return Ok(true);
            }
            if pts >= start {
                muxer.write(output::Track::Audio, &packet, encoder.time_base)?;
            }
        }
        Ok(false)
    };

    let (mut frame, mut errors, mut packets) = (frame::Audio::empty(), 0u64, 0u64);
    let mut past_end = false;
    for (stream_in, packet) in input.packets() {
        let index = stream_in.index();
        timeline.packet(&packet, source.bases[index], source.kinds.get(index).copied());
        if index != track.index {
            continue;
        }
        packets += 1;
        if !feed(&mut decoder, Some(&packet)) {
            errors += 1;
            continue;
        }
        errors += receive(&mut decoder, &mut frame, &mut encoder)?;
        encoder.release(timeline.video_end)?;
        if write(&mut encoder, &mut muxer)? {
            past_end = true;
            break;
        }
    }
    if !past_end {
        feed(&mut decoder, None);
        errors += receive(&mut decoder, &mut frame, &mut encoder)?;
    }
    let allowed = (packets as f64 * job.limits.max_error_rate).floor() as u64;
    if errors > allowed {
        return Err(EngineError::new(
            ErrorCode::Corrupt,
            format!(
                "{errors} audio decode errors in {packets} packets (at most {allowed} tolerated)"
            ),
        ));
    }
    if past_end {
        // The rest is the next range's: no flush (its packets would end the stream here).
        muxer.finish()?;
        return Ok((errors, None));
    }
    check_complete(media, &timeline)?;
    encoder.finish(timeline.video_end)?;
    write(&mut encoder, &mut muxer)?;
    muxer.finish()?;
    Ok((errors, normalisation.and_then(|n| n.report(encoder.loudness()))))
}

/// Demuxes every packet (for the timeline) without decoding any.
fn read_all(
    input: &mut ffmpeg::format::context::Input,
    source: &Source,
    timeline: &mut Timeline,
) -> Result<(), EngineError> {
    for (stream, packet) in input.packets() {
        let index = stream.index();
        timeline.packet(&packet, source.bases[index], source.kinds.get(index).copied());
    }
    Ok(())
}

fn receive(
    decoder: &mut ffmpeg::decoder::Audio,
    frame: &mut frame::Audio,
    encoder: &mut AudioEncoder,
) -> Result<u64, EngineError> {
    let mut errors = 0;
    loop {
        match decoder.receive_frame(frame) {
            Ok(()) => encoder.send(frame)?,
            Err(ffmpeg::Error::Eof) => return Ok(errors),
            Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                return Ok(errors);
            }
            Err(_) => errors += 1,
        }
    }
}

/// The report of an audio item: no video renditions; its files (`hls/audio/…`) say the rest.
fn report(
    job: &EngineJob,
    media: &MediaInfo,
    decode_errors: u64,
) -> Result<EngineReport, EngineError> {
    std::fs::create_dir_all(&job.output_dir).map_err(io_error)?;
    Ok(EngineReport {
        media: media.clone(),
        mode: Mode::Transcode,
        renditions: Vec::new(),
        hls_master: None,
        thumbnails: None,
        files: list_files(&job.output_dir)?,
        frames: 0,
        decode_errors,
        probe_secs: 0.0,
        deinterlaced: false,
        loudness: None,
        captions: Vec::new(),
        audio_tracks: Vec::new(),
        ladder: None,
    })
}
