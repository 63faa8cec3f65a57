//! The audio item of a split job, and the audio renditions of a title with several audio
//! tracks: each track of the whole title encoded once into an HLS audio rendition
//! (`hls/audio/`, `hls/audio-1/`, …), on the same timeline as the chunks' video. Video packets are read
//! (not decoded) so the audio is cut or padded to the video's end exactly as the whole-title
//! encode does, and so a truncated source is refused here as it would be there. Its timestamps
//! move by the same delay as the chunks' (see `split_delay_secs`).

use ffmpeg_next as ffmpeg;
use ffmpeg_next::frame;

use tcoder::engine::plan::AudioPlan;
use tcoder::engine::{
    EngineError, EngineJob, EnginePlan, EngineReport, ErrorCode, LoudnessReport, MediaInfo, Mode,
};

use super::audio::{AudioEncoder, SourceAudio};
use super::decode::{Source, check_complete, feed, open_audio_decoder};
use super::files::{io_error, list_files};
use super::loudness::{Normalisation, REPORT_FILE};
use super::output::{self, Muxer};
use super::timeline::Timeline;

pub(super) fn run(
    job: &EngineJob,
    input: &mut ffmpeg::format::context::Input,
    media: &MediaInfo,
    plan: &EnginePlan,
    source: &Source,
    delay_secs: f64,
) -> Result<EngineReport, EngineError> {
    let (errors, loudness) = encode_tracks(job, Some(input), media, plan, source, delay_secs)?;
    if let Some(loudness) = loudness {
        // For the stitch, which reports the title's loudness (see `stitch::run`).
        let json = serde_json::to_vec(&loudness).expect("a loudness report serializes");
        std::fs::write(job.output_dir.join(REPORT_FILE), json).map_err(io_error)?;
    }
    report(job, media, errors)
}

/// Encodes every audio rendition of `plan` (the source's audio tracks) into
/// `<output>/hls/<dir>/`, each in a pass of its own: over `input` for the first when given,
/// over a new opening of the file otherwise. Returns the decode errors and the default
/// track's loudness normalisation.
pub(super) fn encode_tracks(
    job: &EngineJob,
    mut input: Option<&mut ffmpeg::format::context::Input>,
    media: &MediaInfo,
    plan: &EnginePlan,
    source: &Source,
    delay_secs: f64,
) -> Result<(u64, Option<LoudnessReport>), EngineError> {
    let segment_secs = plan
        .hls_segment_secs
        .filter(|_| plan.mode == Mode::Transcode)
        .ok_or_else(|| EngineError::new(ErrorCode::Failed, "only an HLS transcode is split"))?;
    // The best-planned audio (renditions' audio differs only in bit rate): one for all.
    let audio_plan =
        plan.renditions.iter().filter_map(|r| r.audio.clone()).max_by_key(|a| a.bit_rate);
    let (Some(audio_plan), false) = (audio_plan, plan.audio_renditions.is_empty()) else {
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
        let track = Track { index: rendition.index, dir: &dir, segment_secs, delay_secs };
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
    std::fs::create_dir_all(track.dir).map_err(io_error)?;
    let mut muxer = Muxer::create(
        &track.dir.join("index.m3u8"),
        "hls",
        output::hls_options(track.dir, track.segment_secs, Some(0)),
    )?;
    muxer.add_stream(output::Track::Audio, encoder.context(), None)?;
    muxer.delay_by(track.delay_secs);
    muxer.write_header()?;
    let write = |encoder: &mut AudioEncoder, muxer: &mut Muxer| -> Result<(), EngineError> {
        while let Some(packet) = encoder.receive() {
            muxer.write(output::Track::Audio, &packet, encoder.time_base)?;
        }
        Ok(())
    };

    let (mut frame, mut errors, mut packets) = (frame::Audio::empty(), 0u64, 0u64);
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
        write(&mut encoder, &mut muxer)?;
    }
    feed(&mut decoder, None);
    errors += receive(&mut decoder, &mut frame, &mut encoder)?;
    let allowed = (packets as f64 * job.limits.max_error_rate).floor() as u64;
    if errors > allowed {
        return Err(EngineError::new(
            ErrorCode::Corrupt,
            format!(
                "{errors} audio decode errors in {packets} packets (at most {allowed} tolerated)"
            ),
        ));
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
    })
}
